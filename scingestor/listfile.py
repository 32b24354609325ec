"""The dataset list file grammar: one line of text → one typed record.

A scan writer (sardana hook, macro, a person) appends one record per line to
``scicat-datasets-{beamtimeid}.lst``.  The forms, all kept exactly as
existing installations write them:

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

A measurement is ingested by a plain line with its name; whether a plain
line names a scan or a measurement is decided when it is processed, not
here.  A malformed line raises :class:`~scingestor.errors.ListFileError`
naming the file and line; :func:`parse_text` collects those errors and goes
on with the other lines.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from .errors import ListFileError

COMMAND_PREFIX = "__command__"
# Longer lines are not records but junk (a scan name is a file name).
MAX_LINE_LENGTH = 8192


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


def _check_relative_name(name: str, what: str, path: Optional[str], lineno: Optional[int]) -> None:
    """A scan name may name a subdirectory, never leave the scan directory."""
    if not name:
        raise ListFileError(f"empty {what}", path, lineno)
    if name.startswith("/"):
        raise ListFileError(f"{what} '{name}' must be relative to the scan directory", path, lineno)
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{name}/":
        raise ListFileError(f"{what} '{name}' leaves the scan directory", path, lineno)
    if name.endswith("/") or normal == ".":
        raise ListFileError(f"{what} '{name}' is a directory, not a scan name", path, lineno)


def _check_characters(text: str, path: Optional[str], lineno: Optional[int]) -> None:
    if len(text) > MAX_LINE_LENGTH:
        raise ListFileError(
            f"line of {len(text)} characters is too long to be a record "
            f"(at most {MAX_LINE_LENGTH})",
            path,
            lineno,
        )
    for char in text:
        if (ord(char) < 32 and char != "\t") or char in "\x7f\ufffd":
            raise ListFileError(
                f"line holds a control or undecodable character {char!r}", path, lineno
            )


def _parse_command(
    tokens: List[str], text: str, path: Optional[str], lineno: Optional[int]
) -> Record:
    if len(tokens) < 2:
        raise ListFileError(
            "command line without a command (expected "
            "'__command__ start NAME' or '__command__ stop')",
            path,
            lineno,
        )
    command = tokens[1].lower()
    if command == "start":
        if len(tokens) > 3:
            raise ListFileError(
                f"a measurement name cannot contain spaces: '{' '.join(tokens[2:])}'", path, lineno
            )
        name = tokens[2] if len(tokens) == 3 else None
        if name is not None:
            _check_relative_name(name, "measurement name", path, lineno)
            if "/" in name or ":" in name:
                raise ListFileError(
                    f"measurement name '{name}' may not contain '/' or ':'", path, lineno
                )
        return StartMeasurement(text=text, name=name, lineno=lineno)
    if command == "stop":
        if len(tokens) > 2:
            raise ListFileError("'__command__ stop' takes no argument", path, lineno)
        return StopMeasurement(text=text, lineno=lineno)
    raise ListFileError(f"unknown command '{tokens[1]}' (expected 'start' or 'stop')", path, lineno)


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
        raise ListFileError(
            f"'{first}': no NXentry path after '::' (expected base::/entry;scanname)", path, lineno
        )
    if "/" in entry:
        raise ListFileError(
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
    """Parse one line; None for a blank line; ListFileError when malformed."""
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
            raise ListFileError(
                f"detector path '{detector}' must be relative to the scan directory", path, lineno
            )
    if "::" in first:
        master, entry, scan, reingest_id = _parse_multi_entry(first, path, lineno)
        return ScanLine(
            text=text,
            scanname=scan,
            masterscanname=master,
            entryname=entry,
            reingest_id=reingest_id,
            detectors=detectors,
            lineno=lineno,
        )
    if ":" in first:
        scan, _, ident = first.partition(":")
        _check_relative_name(scan, "scan name", path, lineno)
        return ScanLine(
            text=text,
            scanname=scan,
            masterscanname=scan,
            reingest_id=ident,
            detectors=detectors,
            lineno=lineno,
        )
    _check_relative_name(first, "scan name", path, lineno)
    return ScanLine(
        text=text, scanname=first, masterscanname=first, detectors=detectors, lineno=lineno
    )


def parse_text(
    text: str, path: Optional[str] = None, first_lineno: int = 1
) -> Tuple[List[Record], List[ListFileError]]:
    """Parse a whole list text; malformed lines are returned as errors, not raised."""
    records: List[Record] = []
    errors: List[ListFileError] = []
    for offset, line in enumerate(text.split("\n")):
        try:
            record = parse_line(line, first_lineno + offset, path)
        except ListFileError as error:
            errors.append(error)
            continue
        if record is not None:
            records.append(record)
    return records, errors


def read_list_file(path: str) -> Tuple[List[Record], List[ListFileError]]:
    """Read and parse a list file; bytes that are not UTF-8 make their line an error."""
    with open(path, "rb") as handle:
        data = handle.read()
    return parse_text(data.decode("utf-8", errors="replace"), path)
