"""The dataset list file grammar, in one file that needs nothing but Python.

Two programs read and write ``scicat-datasets-{beamtimeid}.lst``: the
ingestor, and the sardana macros that run inside a MacroServer, often in a
Python without scingestor.  Both must agree on every rule (what a line is,
which measurement is current, which names are allowed), so the rules live
here once.  The ingestor imports this module; the macro folder carries it
as ``macros/_scicat_listgrammar.py``, the same file byte for byte
(``tests/test_listgrammar.py`` ties the two).  Hence: standard library only,
no scingestor import, no logging.

The forms, all kept exactly as existing installations write them:

=================================  ========================================
``scan``                           ingest the scan
``scan det1 ../det2``              … and add these paths (relative to the
                                   scan directory) to its origdatablock
``sub/scan``                       a scan in a subdirectory of the list's
``scan:1702988846.07``             ingest again (the text after the first
                                   ``:`` makes the line a new key)
``base::/entry;scan[:ID]``         one NXentry of a multi-scan master file
``__command__ start NAME``         start grouping scans into measurement NAME
``__command__ stop``               stop grouping
=================================  ========================================

A measurement is ingested by a plain line with its name (``NAME`` or
``NAME:<time>``); a plain line names a measurement when that name was
started earlier in the list (:meth:`MeasurementWalk.is_measurement`).
"""

from __future__ import annotations

import posixpath
import socket
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple, Union

COMMAND_PREFIX = "__command__"
# Longer lines are not records but junk (a scan name is a file name).
MAX_LINE_LENGTH = 8192
#: the default dataset list file: ``<prefix>[<hostname>-]<beamtimeid><ext>``
LIST_PREFIX = "scicat-datasets-"
LIST_EXT = ".lst"


class ListLineError(ValueError):
    """A malformed list line: ``message`` plus where (the caller's file and line)."""

    def __init__(self, message: str, path: Optional[str] = None, line: Optional[int] = None):
        self.message = message
        self.path = path
        self.line = line
        where = str(path or "<list>") + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class ScanLine:
    """A line that asks for a scan (or a measurement) to be ingested.

    ``text`` is the whole stripped line: it is the key of the line in the
    ingested list.  ``masterscanname`` is the master file's base name (it
    differs from ``scanname`` only for ``base::/entry;scan`` lines).
    """

    text: str
    scanname: str
    masterscanname: str
    entryname: str = ""
    reingest_id: Optional[str] = None
    detectors: Tuple[str, ...] = ()
    lineno: Optional[int] = None

    @property
    def is_reingestion(self) -> bool:
        """Lines with a ``:`` in their first token force a re-ingestion."""
        return self.reingest_id is not None or bool(self.entryname)

    @property
    def is_multi_entry(self) -> bool:
        return bool(self.entryname)


@dataclass(frozen=True)
class StartMeasurement:
    """``__command__ start NAME``; ``name`` is None when the line gives none."""

    text: str
    name: Optional[str]
    lineno: Optional[int] = None


@dataclass(frozen=True)
class StopMeasurement:
    """``__command__ stop``."""

    text: str
    lineno: Optional[int] = None


Record = Union[ScanLine, StartMeasurement, StopMeasurement]


def measurement_name_problem(name: str) -> str:
    """Why *name* cannot name a measurement ('' when it can).

    The one rule of the device, the macros and the list parser: a name is one
    word of a ``__command__ start NAME`` line and becomes a plain line
    (``NAME:<time>``) and a dataset name, so no space, ``/`` or ``:``.
    """
    if not name or any(c.isspace() for c in name) or "/" in name or ":" in name:
        return f"invalid measurement name {name!r}: no spaces, '/' or ':'"
    if name in (".", ".."):
        return f"invalid measurement name {name!r}: it names a directory"
    return ""


def list_file_name(
    beamtime_id: str,
    prefix: str = LIST_PREFIX,
    local: bool = False,
    ext: str = LIST_EXT,
    hostname: Optional[str] = None,
) -> str:
    """``<prefix>[<hostname>-]<id><ext>`` (the local form names the host)."""
    if local:
        prefix = f"{prefix}{hostname or socket.gethostname()}-"
    return f"{prefix}{beamtime_id}{ext}"


def _check_relative_name(name: str, what: str, path: Optional[str], lineno: Optional[int]) -> None:
    """A scan name may name a subdirectory, never leave the scan directory."""
    if not name:
        raise ListLineError(f"empty {what}", path, lineno)
    if name.startswith("/"):
        raise ListLineError(f"{what} '{name}' must be relative to the scan directory", path, lineno)
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{name}/":
        raise ListLineError(f"{what} '{name}' leaves the scan directory", path, lineno)
    if name.endswith("/") or normal == ".":
        raise ListLineError(f"{what} '{name}' is a directory, not a scan name", path, lineno)


def _check_characters(text: str, path: Optional[str], lineno: Optional[int]) -> None:
    if len(text) > MAX_LINE_LENGTH:
        raise ListLineError(
            f"line of {len(text)} characters is too long to be a record "
            f"(at most {MAX_LINE_LENGTH})",
            path,
            lineno,
        )
    for char in text:
        if (ord(char) < 32 and char != "\t") or char in "\x7f\ufffd":
            raise ListLineError(
                f"line holds a control or undecodable character {char!r}", path, lineno
            )


def _parse_command(
    tokens: List[str], text: str, path: Optional[str], lineno: Optional[int]
) -> Record:
    if len(tokens) < 2:
        raise ListLineError(
            "command line without a command (expected "
            "'__command__ start NAME' or '__command__ stop')",
            path,
            lineno,
        )
    command = tokens[1].lower()
    if command == "start":
        if len(tokens) > 3:
            raise ListLineError(
                f"a measurement name cannot contain spaces: '{' '.join(tokens[2:])}'", path, lineno
            )
        name = tokens[2] if len(tokens) == 3 else None
        if name is not None:
            _check_relative_name(name, "measurement name", path, lineno)
            if "/" in name or ":" in name:
                raise ListLineError(
                    f"measurement name '{name}' may not contain '/' or ':'", path, lineno
                )
        return StartMeasurement(text=text, name=name, lineno=lineno)
    if command == "stop":
        if len(tokens) > 2:
            raise ListLineError("'__command__ stop' takes no argument", path, lineno)
        return StopMeasurement(text=text, lineno=lineno)
    raise ListLineError(f"unknown command '{tokens[1]}' (expected 'start' or 'stop')", path, lineno)


def _parse_multi_entry(
    first: str, path: Optional[str], lineno: Optional[int]
) -> Tuple[str, str, str, Optional[str]]:
    """``base::/entry;scan[:ID]`` → (master, entry, scan, id)."""
    master, rest = first.split("::", 1)
    if ";" in rest:
        entry_part, scan_part = rest.split(";", 1)
        scan, _, ident = scan_part.partition(":")
        reingest_id = ident if ":" in scan_part else None
    else:
        entry_part, _, ident = rest.partition(":")
        reingest_id = ident if ":" in rest else None
        scan = master
    entry = entry_part.strip("/")
    if not entry:
        raise ListLineError(
            f"'{first}': no NXentry path after '::' (expected base::/entry;scanname)", path, lineno
        )
    if "/" in entry:
        raise ListLineError(
            f"'{first}': the NXentry path '{entry_part}' must be one "
            "group below the root, e.g. /scan12",
            path,
            lineno,
        )
    _check_relative_name(master, "master file name", path, lineno)
    _check_relative_name(scan, "scan name", path, lineno)
    return master, entry, scan, reingest_id


def parse_line(
    line: str, lineno: Optional[int] = None, path: Optional[str] = None
) -> Optional[Record]:
    """Parse one line; None for a blank line; ListLineError when malformed."""
    text = line.strip()
    if not text:
        return None
    _check_characters(text, path, lineno)
    tokens = text.split()
    if tokens[0] == COMMAND_PREFIX:
        return _parse_command(tokens, text, path, lineno)
    first, detectors = tokens[0], tuple(tokens[1:])
    for detector in detectors:
        if not detector or detector.startswith("/"):
            raise ListLineError(
                f"detector path '{detector}' must be relative to the scan directory", path, lineno
            )
    if "::" in first:
        master, entry, scan, reingest_id = _parse_multi_entry(first, path, lineno)
        return ScanLine(text, scan, master, entry, reingest_id, detectors, lineno)
    if ":" in first:
        scan, _, ident = first.partition(":")
        _check_relative_name(scan, "scan name", path, lineno)
        return ScanLine(text, scan, scan, "", ident, detectors, lineno)
    _check_relative_name(first, "scan name", path, lineno)
    return ScanLine(text, first, first, detectors=detectors, lineno=lineno)


def records_of(text: str) -> List[Record]:
    """The well-formed records of a list text; malformed lines are skipped,
    as the ingestor skips them (it reports them, the macros cannot)."""
    records: List[Record] = []
    for line in text.split("\n"):
        try:
            record = parse_line(line)
        except ListLineError:
            continue
        if record is not None:
            records.append(record)
    return records


@dataclass
class MeasurementWalk:
    """Which measurement groups the scans, line by line through a list file.

    ``current`` is the active measurement (``""`` when stopped); ``last``
    the last one started (it survives a stop: ``__command__ start`` without
    a name resumes it); ``started`` every name started so far, to tell a
    measurement line (``NAME``) from a scan line.  The state at a line
    follows from the lines before it, so nothing about measurements needs to
    be stored.  The ingestor overrides the two ``_on_…`` hooks to log.
    """

    current: str = ""
    last: str = ""
    started: Set[str] = field(default_factory=set)

    def apply(self, record: Record, path: Optional[str] = None) -> None:
        """Update the state with a command line; other records are ignored."""
        if isinstance(record, StartMeasurement):
            name = record.name or self.last
            if not name:
                self._on_start_without_name(record, path)
                return
            if self.current and self.current != name:
                self._on_replaced(self.current, name)
            self.current = self.last = name
            self.started.add(name)
        elif isinstance(record, StopMeasurement):
            self.current = ""

    def is_measurement(self, line: ScanLine) -> bool:
        """Does the line ingest a measurement (a name started earlier in the list)?"""
        return line.scanname in self.started and not line.is_multi_entry

    def _on_start_without_name(self, record: StartMeasurement, path: Optional[str]) -> None:
        """``__command__ start`` with no name and none to resume: the line is ignored."""

    def _on_replaced(self, old: str, new: str) -> None:
        """A start while another measurement is current (no stop between)."""


def current_in_text(text: str) -> str:
    """The measurement active at the end of a list file's text ('' if none)."""
    walk = MeasurementWalk()
    for record in records_of(text):
        walk.apply(record)
    return walk.current


def measurement_scans(text: str, name: str) -> int:
    """How many scan lines of the list text are grouped into measurement *name*
    (over all its starts: an update stops and starts it again, its dataset keeps
    the scans).  Lines that ingest a measurement (``NAME:<time>``) are no scans."""
    walk, count = MeasurementWalk(), 0
    for record in records_of(text):
        if not isinstance(record, ScanLine):
            walk.apply(record)
        elif not walk.is_measurement(record) and walk.current == name:
            count += 1
    return count


def is_listed(text: str, record: str) -> bool:
    """Is the scan record in the list text (plain, with ``:ID`` or with datablocks)?"""
    for raw in text.split("\n"):
        words = raw.split()
        if words and (words[0] == record or words[0].startswith(record + ":")):
            return True
    return False
