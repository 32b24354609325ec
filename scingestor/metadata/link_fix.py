"""Symlinks among a scan's files: listed as links, never followed out of the beamtime.

Why
    ``nxsfileinfo origdatablock`` describes each file of a scan with
    ``os.stat``, which follows symlinks.  A dangling link (``[Errno 2]``) or
    an ``a -> b -> a`` loop (``[Errno 40]``) stops the whole origdatablock,
    so the scan is retried and given up; a link ``x.raw -> /etc/passwd``
    enters the block with the size and time of a file outside the beamtime.

Policy (documented in ``docs/bad-input.md``)
    A link whose target resolves inside the beamtime directory is described
    as before (its target's size and time: a detector file linked from
    another folder of the beamtime).  A link that dangles, loops, or
    resolves outside the beamtime is listed *as the link itself*
    (``lstat``: permissions ``lrwxrwxrwx``, the link's own size and time);
    its target is never read.  Files in a folder reached through a link out
    of the beamtime (``scan_00001_extra -> /etc``) are not listed at all.
    The scan is ingested and nxsfileinfo writes
    one line (:data:`scingestor.metadata.text_fix.MARK`) naming the links,
    which the runner logs as one warning naming the scan.

    The beamtime directory is the nearest directory above the scan holding
    a ``beamtime-metadata-*.json`` file (the generator has no other way to
    know it); without one, the scan directory itself is the boundary.

Installed with the other nxstools corrections
(:func:`scingestor.metadata.nxstools_fix.apply`).
"""

from __future__ import annotations

import functools
import glob
import os
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from .text_fix import MARK

_APPLIED = "_scingestor_link_fix"
_PERMISSIONS = "rwxrwxrwx"
#: links noted during one origdatablock run: (path, reason)
_noted: List[Tuple[str, str]] = []
_roots: Dict[str, str] = {}


def beamtime_root(directory: str) -> str:
    """The resolved beamtime directory above *directory* (else *directory* itself)."""
    known = _roots.get(directory)
    if known is not None:
        return known
    current = os.path.realpath(directory)
    root = current
    probe: Optional[str] = current
    while probe:
        if glob.glob(os.path.join(glob.escape(probe), "beamtime-metadata-*.json")):
            root = probe
            break
        parent = os.path.dirname(probe)
        probe = parent if parent != probe else None
    _roots[directory] = root
    return root


def unsafe(path: str, root: str) -> Optional[str]:
    """Why the link *path* must not be followed (None: not a link, or safe)."""
    if not os.path.islink(path):
        return None
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as error:
        return "a link loop" if error.errno == 40 else "a dangling link"
    if os.path.commonpath([target, root]) != root:
        return f"a link out of the beamtime to {target}"
    return None


def _outside(path: str, root: str) -> bool:
    """Does *path* really lie outside *root* (links resolved)?"""
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) != root


def _link_record(runner: Any, scanpath: str, scdir: str, name: str, relpath: str) -> Dict[str, Any]:
    """The origdatablock entry of a link, described by itself (``lstat``)."""
    status = os.lstat(os.path.join(scanpath, scdir, name))
    bits = stat.S_IMODE(status.st_mode)
    perm = "l" + "".join(
        char if bits & (1 << (8 - index)) else "-" for index, char in enumerate(_PERMISSIONS)
    )
    directory = os.path.relpath(scdir, scanpath) if scdir and scanpath else scdir
    path = os.path.join(directory, name)
    if relpath:
        path = os.path.join(relpath, path)
    record: Dict[str, Any] = {
        "path": os.path.normpath(path),
        "size": status.st_size,
        "time": runner.isotime(status.st_ctime),
        "perm": perm,
    }
    for key, lookup, value in (
        ("uid", "pwd", status.st_uid),
        ("gid", "grp", status.st_gid),
    ):
        try:
            module = __import__(lookup)
            record[key] = (
                module.getpwuid(value).pw_name if key == "uid" else module.getgrgid(value).gr_name
            )
        except Exception:
            record[key] = value
    return record


def _wrap_datafiles(datafiles: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(datafiles)
    def corrected(
        self: Any,
        scanpath: str,
        scdir: str,
        scfiles: List[str],
        relpath: str,
        filters: Any = None,
    ) -> Any:
        root = beamtime_root(scanpath)
        safe, links = [], []
        # one look at the folder: a file that is no link lies where its folder does
        folder_outside = _outside(os.path.join(scanpath, scdir), root)
        for name in scfiles:
            path = os.path.join(scanpath, scdir, name)
            reason = unsafe(path, root)
            if reason is None and folder_outside and not os.path.islink(path):
                # a file in a folder reached through a link out of the beamtime
                # (``scan_00001_extra -> /etc``): not described at all
                if not self.filterout(path, filters):
                    _noted.append((path, "reached through a link out of the beamtime: skipped"))
                continue
            if reason is None:
                safe.append(name)
            elif not self.filterout(path, filters):
                links.append(name)
                _noted.append((path, reason))
        files, size = datafiles(self, scanpath, scdir, safe, relpath, filters)
        for name in links:
            record = _link_record(self, scanpath, scdir, name, relpath)
            files.append(record)
            size += record["size"]
        return files, size

    setattr(corrected, _APPLIED, True)
    return corrected


def _wrap_run(run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run)
    def reporting(self: Any, options: Any) -> Any:
        _noted.clear()
        try:
            return run(self, options)
        finally:
            if _noted:
                shown = "; ".join(f"{path}: {reason}" for path, reason in _noted[:8])
                more = f" (and {len(_noted) - 8} more)" if len(_noted) > 8 else ""
                sys.stderr.write(f"{MARK}{shown}{more}: listed as the link, not followed\n")
                _noted.clear()

    setattr(reporting, _APPLIED, True)
    return reporting


def apply() -> bool:
    """Install the link policy into the imported nxstools (once); True when in place."""
    try:
        from nxstools.nxsfileinfo import OrigDatablock
    except Exception:  # no nxstools here: the command will report it
        return False
    if not hasattr(OrigDatablock, "datafiles"):
        return False
    if not getattr(OrigDatablock.datafiles, _APPLIED, False):
        OrigDatablock.datafiles = _wrap_datafiles(OrigDatablock.datafiles)
    if not getattr(OrigDatablock.run, _APPLIED, False):
        OrigDatablock.run = _wrap_run(OrigDatablock.run)
    return True
