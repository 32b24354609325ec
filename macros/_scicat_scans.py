"""Scan names, records and files, and the scan history: pure helpers of the SciCat macros.

Helper module of ``scmacros.py`` (its name starts with ``_``, so a
MacroServer, which loads every module of a MacroPath folder, skips it as a
macro library).  Standard library and the list grammar only: unit-tested
without sardana or Tango.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from _scicat_listgrammar import measurement_name_problem

#: master-file extensions of NeXus scans, in the order the writers prefer them
NEXUS_EXTENSIONS = (".nxs", ".nx", ".h5", ".ndf")
#: ScanHistory end statuses of aborted scans (no hook runs after an abort; an abort
#: that reaches the scan through the Pool ends it with "Exception")
ABORTED = ("Abort", "Exception")


class MacroProblem(Exception):
    """Something the user has to fix (an unset variable ...): shown with self.error."""


def check_name(name: str) -> str:
    """A measurement name the list file can hold (the list grammar's rule)."""
    problem = measurement_name_problem(name)
    if problem:
        raise MacroProblem(problem)
    return name


def flag(value: Any) -> bool:
    """An environment value as a boolean (``senv X True`` stores True, scripts "true")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on", "y")
    return bool(value)


def check_scan_file(scan_file: Any) -> None:
    """Refuse a ScanFile that is no file name nor list of names.

    ``senv ScanFile a.fio b.nxs`` stores the string ``"(a.fio, b.nxs)"`` (sardana
    joins several values that way and keeps the text when it is no Python
    literal): its "stem" ``(a.fio, b`` would give a list line the ingestor
    splits at the space and a dataset named ``(a.fio,``.  A name with a space
    cannot be listed either.
    """
    names = (
        [scan_file]
        if isinstance(scan_file, str)
        else list(scan_file)
        if isinstance(scan_file, (list, tuple))
        else []
    )
    for name in names:
        text = str(name).strip()
        if not text:
            continue
        joined = "," in text or text[0] in "([" or text[-1] in ")]"
        if joined:
            parts = [part.strip(" '\"") for part in text.strip("()[] ").split(",")]
            parts = [part for part in parts if part and not any(c.isspace() for c in part)]
            example = repr(parts if len(parts) > 1 else ["myscan.fio", "myscan.nxs"])
            raise MacroProblem(
                f"ScanFile is the text {scan_file!r}, not a file name or a list of file "
                "names (senv joins several values into such a text); set it with: "
                f'senv ScanFile "{example}" (one file: senv ScanFile myscan.nxs)'
            )
        if any(c.isspace() for c in text):
            raise MacroProblem(
                f"ScanFile {scan_file!r}: a file name with a space cannot be listed (the "
                "ingestor splits list lines at spaces); use a name without spaces, e.g. "
                "senv ScanFile myscan.nxs"
            )


def scan_stem(scan_file: Any) -> Tuple[str, bool]:
    """(stem, is NeXus) of the ScanFile setting (a name or a list of names).

    The first NeXus file wins, then the first ``.fio``, then any file, like
    the scan writers choose the master file.
    """
    if isinstance(scan_file, str):
        names = [scan_file]
    elif isinstance(scan_file, (list, tuple)):
        names = [str(name) for name in scan_file]
    else:
        names = []
    split = [os.path.splitext(os.path.basename(name)) for name in names]
    for stem, ext in split:
        if stem and ext.lower() in NEXUS_EXTENSIONS:
            return stem, True
    for stem, ext in split:
        if stem and ext.lower() == ".fio":
            return stem, False
    for stem, _ext in split:
        if stem:
            return stem, False
    return "", False


def scan_name(stem: str, scan_id: int) -> str:
    """The scan's name: ``stem_NNNNN``, or the stem formatted with ``{ScanID}``."""
    if "{ScanID" in stem:
        try:
            return stem.format(ScanID=scan_id)
        except (KeyError, IndexError, ValueError):
            pass
    return f"{stem}_{int(scan_id):05d}"


def measurement_name(stem: str) -> str:
    """The auto-grouping measurement of a ScanFile stem: the stem itself
    (``mycalib2.nxs`` -> ``mycalib2``); for a ``{ScanID}`` template the text
    before it (``calib_{ScanID}`` -> ``calib``)."""
    if "{" in stem:
        stem = stem.split("{", 1)[0].rstrip("_-.")
    return stem


def scan_record(stem: str, scan_id: int, nexus: bool = False, entry: Optional[str] = None) -> str:
    """The list-file record of a scan: ``stem_NNNNN``; for a NeXus file whose
    scans are appended as entries ``stem::/<entry><ScanID>;stem_NNNNN``."""
    name = scan_name(stem, scan_id)
    if nexus and entry and "{" not in stem:
        return f"{stem}::/{entry}{int(scan_id)};{name}"
    return name


def below(path: str, directory: str) -> bool:
    """Is *path* *directory* itself or inside it?"""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def find_beamtime_id(scan_dir: str, beamtime_path: str, prefix: str, ext: str) -> Optional[str]:
    """The id of the first (sorted) beamtime file in *beamtime_path*, when
    *scan_dir* is below it; None otherwise."""
    if not beamtime_path or not below(os.path.abspath(scan_dir), os.path.abspath(beamtime_path)):
        return None
    pattern = os.path.join(glob.escape(beamtime_path), glob.escape(prefix) + "*" + glob.escape(ext))
    for path in sorted(glob.glob(pattern)):
        name = os.path.basename(path)
        beamtime_id = name[len(prefix) : len(name) - len(ext)] if ext else name[len(prefix) :]
        if beamtime_id and os.path.isfile(path):
            return beamtime_id
    return None


def append_records(path: str, records: Sequence[str]) -> None:
    """Append records in one write, each on a line of its own.

    A fresh line first, only when the file does not end with one (the scan
    writers append ``"\\n" + record``, so their last line is unterminated),
    and a newline after each record: whatever a writer or a person appends
    next (``echo scan_00005 >> list``) stays a line of its own.
    """
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        lead = b""
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            lead = b"" if handle.read(1) == b"\n" else b"\n"
        handle.write(lead + "".join(record + "\n" for record in records).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def scan_file_names(record: str) -> List[str]:
    """The names a scan's files are found under: ``base::/entry;scan`` -> base and
    scan, else the record (without a ``:<time>``)."""
    head = record.split()[0] if record.split() else record
    if "::/" in head:
        base, _sep, rest = head.partition("::/")
        scan = rest.split(";", 1)[1] if ";" in rest else ""
        return [name for name in (base, scan.split(":", 1)[0]) if name]
    return [head.split(":", 1)[0]]


def scan_has_files(scan_dir: str, record: str, extensions: Iterable[str]) -> bool:
    """Does the scan have a master file (``<name>.<ext>`` or ``<name>/<name>.<ext>``)
    or a directory of its own in *scan_dir*, where the ingestor looks?"""
    for name in scan_file_names(record):
        if os.path.isdir(os.path.join(scan_dir, name)):
            return True
        for ext in extensions:
            if os.path.isfile(os.path.join(scan_dir, name + ext)):
                return True
    return False


def trailing_aborted(
    history: Iterable[Any], scan_dir: str, current_id: Optional[int]
) -> List[Dict[str, Any]]:
    """ScanHistory entries of the aborted scans just before the current one in *scan_dir*.

    No hook runs after an abort (sardana refuses to start macros then), so
    the next scan's hook catches these up.  Oldest first.  Scans that failed
    on their own ("Exception") ran the hook already: the caller skips the
    ones that are listed.
    """
    found: List[Dict[str, Any]] = []
    for entry in reversed(list(history)):
        if not isinstance(entry, dict):
            break
        serial = entry.get("serialno")
        if current_id is not None and serial == current_id:
            continue
        if str(entry.get("endstatus")) not in ABORTED:
            break
        directory = entry.get("ScanDir")
        if (
            isinstance(serial, int)
            and directory
            and os.path.normpath(str(directory)) == os.path.normpath(scan_dir)
        ):
            found.append(entry)
    return sorted(found, key=lambda entry: int(entry["serialno"]))


def hook_place(history: Sequence[Any], scan_id: Any) -> str:
    """Where a hook runs: the scan is in ScanHistory only once it has ended."""
    last = history[-1] if history else None
    if isinstance(last, dict) and scan_id is not None and last.get("serialno") == scan_id:
        return "post-scan"
    return "pre-scan"
