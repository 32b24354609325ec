"""Where the ingestor keeps its files: var dir, metadata JSON, ingested lists.

Existing installations put the ingested list beside the dataset list file,
or, when ``ingestor_var_dir`` is set, at ``<var dir><absolute list dir>``
(plain string concatenation), and the metadata JSON likewise when
``metadata_in_var_dir`` is on.  These rules decide where old state is found,
so they are kept to the letter.
"""

from __future__ import annotations

import os
from typing import Optional

from .config import IngestorConfig, expand
from .errors import ConfigError


def var_dir(config: IngestorConfig, beamtime_id: str) -> Optional[str]:
    """``ingestor_var_dir`` for a beamtime, or None when not set (``''``/``'/'``)."""
    value = expand(config.ingestor_var_dir, {"beamtimeid": beamtime_id})
    value = value.rstrip("/")
    return value or None


def mirrored(base: Optional[str], path: str) -> str:
    """``<base><absolute path>``, the var-dir mirror of *path* (or *path*)."""
    if not base:
        return path
    return base + os.path.abspath(path)


def metadata_dir(config: IngestorConfig, beamtime_id: str, scan_dir: str) -> str:
    """``{metapath}``: where the scan's metadata JSON files are written."""
    if config.metadata_in_var_dir:
        return mirrored(var_dir(config, beamtime_id), scan_dir)
    return scan_dir


def list_file_name(config: IngestorConfig, beamtime_id: str) -> str:
    """The dataset list file name of a beamtime (``datasets_filename_pattern``)."""
    return expand(config.datasets_filename_pattern, {"beamtimeid": beamtime_id})


def ingested_list_path(config: IngestorConfig, beamtime_id: str, list_dir: str) -> str:
    """The ingested list of the list file in *list_dir* (core form when enabled)."""
    name = expand(config.ingested_datasets_filename_pattern, {"beamtimeid": beamtime_id})
    path = os.path.join(mirrored(var_dir(config, beamtime_id), list_dir), name)
    if path == os.path.join(list_dir, list_file_name(config, beamtime_id)):
        # DESY configs give both patterns the same value, which works only
        # because their var dir moves the ingested list elsewhere
        raise ConfigError(
            "the ingested list would be the dataset list file itself: give "
            "ingested_datasets_filename_pattern another name or set ingestor_var_dir",
            config.source, "ingested_datasets_filename_pattern")
    return path
