"""Where things are: scan paths in both forms, var dir, metadata JSON, ingested lists, journal.

A beamtime is watched in its beamtime directory (``/gpfs/current``) but,
with ``use_corepath_as_scandir``, its scans are named in metadata and in
the ingested lists by their core path (``/asap3/…``).  One
:class:`PathConverter` per beamtime translates between the two
(:func:`scan_paths`); everything that needs the written form of a path asks
it instead of building its own.

Existing installations put the ingested list beside the dataset list file,
or, when ``ingestor_var_dir`` is set, at ``<var dir><absolute list dir>``
(plain string concatenation), and the metadata JSON likewise when
``metadata_in_var_dir`` is on.  These rules decide where old state is found,
so they are kept to the letter.

The daemon's journal (``ingestor_state_dir``) is ours.  Its default is one
folder per ingestor instance below ``~/.local/state/scingestor``, so that
two ingestors of one account (two beamline devices on a host, a test and a
production instance) neither lock each other out nor resume each other's
jobs.  An instance is named by its configuration file or its Tango device.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import Optional

from .beamtime import Beamtime, under
from .config import IngestorConfig
from .errors import ConfigError
from .journal import default_state_dir
from .templates import expand

#: what an instance name keeps of a file stem or device name; the rest becomes '_'
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PathConverter:
    """Between the beamtime directory (what we watch) and the core path.

    With ``use_corepath_as_scandir`` the scan paths written into metadata
    and the list/ingested files use the core path (``/asap3/…``), while
    inotify watches the beamtime directory (``/gpfs/current``).  When not
    *enabled* both directions give paths back unchanged.  Immutable, so one
    instance serves every thread (see :func:`scan_paths`).
    """

    def __init__(self, beamtime_dir: str, core_path: str, enabled: bool) -> None:
        self.local = os.path.normpath(beamtime_dir)
        self.core = os.path.normpath(core_path)
        self.enabled = enabled

    @staticmethod
    def _swap(path: str, old: str, new: str) -> str:
        normal = os.path.normpath(path)
        if normal == old:
            return new
        if normal.startswith(old.rstrip("/") + "/"):
            return new.rstrip("/") + normal[len(old.rstrip("/")) :]
        return path

    def to_core(self, path: str) -> str:
        """*path* (below the beamtime directory) in the written, core-path form."""
        return self._swap(path, self.local, self.core) if self.enabled else path

    def to_local(self, path: str) -> str:
        """*path* (below the core path) in the watched, beamtime-directory form."""
        return self._swap(path, self.core, self.local) if self.enabled else path


@functools.lru_cache(maxsize=1024)
def _converter(beamtime_dir: str, core_path: str, enabled: bool) -> PathConverter:
    return PathConverter(beamtime_dir, core_path, enabled)


def scan_paths(config: IngestorConfig, beamtime: Beamtime) -> PathConverter:
    """The path converter of *beamtime*: core paths when ``use_corepath_as_scandir``.

    One instance per beamtime (and setting), shared by the watcher, the
    pipeline, the service and the batch tool, so they cannot disagree on
    the written form of a path.
    """
    return _converter(beamtime.directory, beamtime.core_path, config.use_corepath_as_scandir)


def both_forms(beamtime: Beamtime) -> PathConverter:
    """The converter of *beamtime* that always translates, whatever the configuration.

    For recognising a directory an operator names in either form (the
    device's commands accept ``/gpfs/current/raw`` and ``/asap3/…/raw``).
    """
    return _converter(beamtime.directory, beamtime.core_path, True)


def list_dir(config: IngestorConfig, beamtime: Beamtime, list_file: str) -> str:
    """The directory of a dataset list file in the written form (core path when enabled)."""
    return scan_paths(config, beamtime).to_core(os.path.dirname(list_file))


def ingested_list_for(config: IngestorConfig, beamtime: Beamtime, list_file: str) -> str:
    """The ingested list of dataset list file *list_file* of *beamtime*."""
    return ingested_list_path(config, beamtime.beamtime_id, list_dir(config, beamtime, list_file))


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
            config.source,
            "ingested_datasets_filename_pattern",
        )
    return path


def shared_state_dir() -> str:
    """``~/.local/state/scingestor``: the base of the default state folders.

    Before state folders were per instance it was every instance's journal
    folder, so a journal found directly in it is an old, shared one.
    """
    return default_state_dir()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def instance_name(config: IngestorConfig, device_name: Optional[str] = None) -> str:
    """The name of this ingestor's default state folder.

    ``device-<device name>-<hash>`` for the Tango device (device names are
    case-insensitive, so it is lower-cased first), else
    ``<configuration file stem>-<hash of its absolute path>``: two files of
    the same name in different folders are different instances.  Without a
    configuration file (built-in defaults) it is ``default``.
    """
    if device_name:
        name = device_name.strip().lower()
        readable = _UNSAFE.sub("_", name.replace("/", "_")).strip("._") or "device"
        return f"device-{readable}-{_short_hash(name)}"
    if not config.source:
        return "default"
    path = os.path.abspath(config.source)
    stem = os.path.splitext(os.path.basename(path))[0]
    readable = _UNSAFE.sub("_", stem).strip("._") or "config"
    return f"{readable}-{_short_hash(path)}"


def state_dir(config: IngestorConfig, device_name: Optional[str] = None) -> str:
    """The effective ``ingestor_state_dir``: as set, else the instance's own folder."""
    if config.ingestor_state_dir:
        return config.ingestor_state_dir
    return os.path.join(shared_state_dir(), instance_name(config, device_name))


def scandir_blacklisted(
    path: str, config: IngestorConfig, converter: Optional[PathConverter] = None
) -> Optional[str]:
    """The blacklist entry that excludes *path* (checked in both path forms).

    A directory below a blacklisted one is excluded too: blacklisting
    ``/gpfs/current/processed`` means everything in it.
    """
    forms = {path}
    if converter is not None:
        forms |= {converter.to_core(path), converter.to_local(path)}
    for form in forms:
        entry = under(form, config.scandir_blacklist)
        if entry is not None:
            return entry
    return None
