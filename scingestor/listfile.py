"""The dataset list file as the ingestor reads it: one line of text → one typed record.

The grammar itself (the line forms, the records, the measurement names) is
:mod:`scingestor.listgrammar`, shared with the sardana macros; this module
gives it the ingestor's error type: a malformed line raises
:class:`~scingestor.errors.ListFileError` naming the file and line, and
:func:`parse_text` collects those errors and goes on with the other lines.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from . import listgrammar
from .errors import ListFileError
from .listgrammar import (
    COMMAND_PREFIX,
    MAX_LINE_LENGTH,
    Record,
    ScanLine,
    StartMeasurement,
    StopMeasurement,
)

__all__ = [
    "COMMAND_PREFIX",
    "MAX_LINE_LENGTH",
    "Record",
    "ScanLine",
    "StartMeasurement",
    "StopMeasurement",
    "parse_line",
    "parse_text",
    "read_list_file",
]


def parse_line(
    line: str, lineno: Optional[int] = None, path: Optional[str] = None
) -> Optional[Record]:
    """Parse one line; None for a blank line; ListFileError when malformed."""
    try:
        return listgrammar.parse_line(line, lineno, path)
    except listgrammar.ListLineError as error:
        raise ListFileError(error.message, path, lineno) from None


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
