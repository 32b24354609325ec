"""The values of the template keywords for one scan.

These are the ``{scanname}``, ``{metapath}``, ``{masterfile}`` … that the
generator command templates of the configuration may use; the names and
values are those of existing installations (behaviour.md §4.1) so that
their configured commands keep working unchanged.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Dict, Optional

from ..beamtime import Beamtime
from ..config import IngestorConfig, id_format
from ..templates import homepath, hostname


@dataclass(frozen=True)
class ScanFiles:
    """Where one scan's files are: scan dir (core form), metadata dir, master, plot."""

    scan_dir: str
    meta_dir: str
    relpath: str
    masterfile: Optional[str] = None
    plotfile: Optional[str] = None

    @property
    def ext(self) -> str:
        return _extension(self.masterfile)

    @property
    def plotext(self) -> str:
        return _extension(self.plotfile)


def _extension(path: Optional[str]) -> str:
    if not path:
        return ""
    return os.path.splitext(path)[1].lstrip(".")


def _text(value: object) -> str:
    """Config values as existing installations printed them (unset → ``None``)."""
    return "None" if value is None else str(value)


def scan_keywords(
    config: IngestorConfig,
    beamtime: Beamtime,
    files: ScanFiles,
    *,
    scanname: str,
    masterscanname: str,
    entryname: str = "",
    measurement: str = "",
    lastmeasurement: str = "",
    beamtimefile: Optional[str] = None,
) -> Dict[str, object]:
    """All template keywords for one scan (see behaviour.md §4.1)."""
    scan_subdir = posixpath.dirname(scanname)
    dbrelpath_parts = []
    if config.relative_path_in_datablock and files.relpath not in ("", "."):
        dbrelpath_parts.append(files.relpath)
    if scan_subdir:
        dbrelpath_parts.append(scan_subdir)
    return {
        "scanname": scanname,
        "masterscanname": masterscanname,
        "entryname": entryname,
        "scanpath": files.scan_dir,
        "metapath": files.meta_dir,
        "relpath": files.relpath,
        "dbrelpath": posixpath.join(*dbrelpath_parts) if dbrelpath_parts else "",
        "beamtimeid": beamtime.beamtime_id,
        "beamline": beamtime.beamline,
        "pidprefix": config.dataset_pid_prefix,
        "beamtimefile": beamtimefile or beamtime.path,
        "scanpostfix": config.scan_metadata_postfix,
        "datablockpostfix": config.datablock_metadata_postfix,
        "attachmentpostfix": config.attachment_metadata_postfix,
        "ownergroup": beamtime.effective_owner_group,
        "accessgroups": ",".join(beamtime.effective_access_groups),
        "hostname": hostname(),
        "homepath": homepath(),
        "ext": files.ext,
        "masterfile": files.masterfile or "",
        "plotext": files.plotext,
        "plotfile": files.plotfile or "",
        "chmod": _text(config.chmod_json_files),
        "hiddenattributes": _text(config.hidden_attributes),
        "copymapfile": _text(config.metadata_copy_map_file),
        "groupmapfile": _text(config.metadata_group_map_file),
        "signals": _text(config.attachment_signal_names),
        "axes": _text(config.attachment_axes_names),
        "frame": _text(config.attachment_image_frame_number),
        "maxonedsize": _text(config.max_oned_size),
        "measurement": measurement,
        "lastmeasurement": lastmeasurement,
        "idpattern": id_format(config),
    }
