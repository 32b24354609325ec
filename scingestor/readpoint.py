"""How far a list file was read, and a fingerprint proving it is still the file read.

An offset alone is not enough to resume a list file after a restart: the
file may have been replaced by a shorter one, or truncated, and have grown
again meanwhile.  Resuming from the old offset would then cut a line in two
and take its end for a scan name (issue 18, item 4).  So the journal keeps
with each offset a fingerprint of the bytes before it (a hash: the whole
prefix, not only the last line, so that a new file whose tail happens to
look the same is still told apart), and a file whose prefix no longer
matches is read again from its start; the ingested list keeps the lines
already done from being ingested twice.

Read points written by older versions have no fingerprint; for them the
offset must at least fall on a line boundary, or the file is read from the
start: never take part of a line for a record.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO, Optional

#: hex digits of the fingerprint kept (128 bits)
CHECK_DIGITS = 32


@dataclass(frozen=True)
class ReadPoint:
    """*offset* bytes of a list file were read; *check* is their fingerprint ("" unknown)."""

    offset: int = 0
    check: str = ""


class Fingerprint:
    """The running fingerprint of a file's bytes from its start (fed in order)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def value(self) -> str:
        return self._hash.hexdigest()[:CHECK_DIGITS]

    def copy(self) -> "Fingerprint":
        other = Fingerprint.__new__(Fingerprint)
        other._hash = self._hash.copy()
        return other


def fingerprint(data: bytes) -> str:
    """The fingerprint of *data* (a file's first bytes)."""
    running = Fingerprint()
    running.update(data)
    return running.value()


def mismatch(handle: BinaryIO, size: int, point: ReadPoint) -> Optional[str]:
    """Why the open file (of *size* bytes) is not the one read up to *point*; None if it is.

    Reads the bytes before the offset (the caller seeks afterwards).
    """
    offset = point.offset
    if offset <= 0:
        return None
    if size < offset:
        return "is shorter than what was read"
    handle.seek(0)
    if point.check:
        running = Fingerprint()
        remaining = offset
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                return "is shorter than what was read"
            running.update(block)
            remaining -= len(block)
        return None if running.value() == point.check else "holds other lines than those read"
    # no fingerprint (an older version's journal): a record ends just before the
    # offset, or the offset is just before the newline that starts the next one
    handle.seek(offset - 1)
    around = handle.read(2)
    if around[:1] == b"\n" or around[1:2] in (b"\n", b""):
        return None
    return "was read up to the middle of a line"


def check_file(path: str, point: ReadPoint) -> Optional[str]:
    """:func:`mismatch` for the file at *path*; raises OSError when it cannot be read."""
    with open(path, "rb") as handle:
        return mismatch(handle, os.fstat(handle.fileno()).st_size, point)
