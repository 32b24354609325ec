"""Reading the records appended to a dataset list file, never half a record.

Writers append ``"\\n" + record`` and close, so the newest record usually
has no newline after it.  The original read the whole file after a fixed
delay and could take a record that was still being written.  Here a record
is complete when a newline follows it, or when the caller says the writer
is done (``final``: the file was closed after writing, or moved into place,
or has not changed for a while).  Only the bytes after the remembered
offset are read; a truncated, replaced (new inode) or rewritten file (the
bytes just before the offset differ) is read again from the start, and its
records are reported again: skipping the ones already done is the
consumer's job.  The same holds for an offset from an earlier run: each
record carries the fingerprint of the file up to its end (see
:mod:`scingestor.readpoint`), and a tailer started from an offset first
checks that the file still holds what was read.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, List, Optional, Tuple, Union

from ..readpoint import Fingerprint, ReadPoint, mismatch

logger = logging.getLogger(__name__)

#: How many bytes before the offset are compared to notice an in-place rewrite.
CHECK_BYTES = 64
#: A partially copied write is only visible with the file size at a page boundary.
PAGE_SIZE = mmap.PAGESIZE

#: ``final`` may be decided from the file's fstat taken inside :meth:`ListFileTailer.read`.
FinalSpec = Union[bool, Callable[[os.stat_result], bool]]


@dataclass(frozen=True)
class ListRecord:
    """One complete, non-blank line of a list file."""

    lineno: int  # 1-based line number in the file
    text: str  # the stripped line (never empty)
    end_offset: int  # byte offset just after this record (where reading resumes)
    #: fingerprint of the file's bytes before ``end_offset`` (for the journal)
    check: str = field(default="", compare=False)

    @property
    def point(self) -> ReadPoint:
        """Where reading resumes after this record, with its fingerprint."""
        return ReadPoint(self.end_offset, self.check)


class ListFileTailer:
    """Hands out the complete records appended to one file since the last read.

    ``offset`` is where the next read starts (settable at construction, e.g.
    from the daemon's journal); ``pending`` says whether the last read left
    an unterminated record behind; ``held_back`` whether that record was
    asked to be final but may still be being written (the size moved during
    the read, or ends on a page boundary): read it again with ``final`` once
    the file is seen unchanged; ``stat`` is the file's fstat at the last
    read.  Not thread-safe: one reader (the event thread).
    """

    def __init__(self, path: str, offset: int = 0, check: str = "") -> None:
        self.path = path
        self.offset = max(0, int(offset))
        self._expected = check  # the fingerprint of the bytes before offset ("" unknown)
        self._print = Fingerprint()  # of the bytes before offset (once counted)
        self.pending = False
        self.held_back = False
        self.stat: Optional[os.stat_result] = None
        self._newlines: Optional[int] = None  # newlines before offset (None: not counted yet)
        self._ident: Optional[Tuple[int, int]] = None
        self._check = b""  # the bytes just before offset

    def _reset(self, reason: str) -> None:
        logger.info("List file %s %s: reading it again from the start", self.path, reason)
        self.offset = 0
        self._newlines = 0
        self._check = b""
        self._print = Fingerprint()
        self.pending = False

    def _count_prefix(self, handle: BinaryIO, size: int) -> None:
        """Count the newlines before the starting offset, once (for line numbers).

        An offset from an earlier run is checked first: a file replaced or
        truncated (and grown again) meanwhile is read from its start.
        """
        reason = mismatch(handle, size, ReadPoint(self.offset, self._expected))
        if reason is not None:
            self._reset(reason + " (changed while it was not watched)")
            return
        handle.seek(0)
        remaining, newlines, tail = min(self.offset, size), 0, b""
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                break
            newlines += block.count(b"\n")
            self._print.update(block)
            tail = (tail + block)[-CHECK_BYTES:]
            remaining -= len(block)
        self._newlines = newlines
        self._check = tail

    def read(self, final: FinalSpec = False) -> List[ListRecord]:
        """The complete records appended since the last read.

        With ``final`` true (the writer closed the file, or it was moved into
        place) the unterminated last record counts as complete (unless it may
        be another writer's record in the making: see ``held_back``);
        otherwise only newline-terminated records are returned.  ``final`` may
        be a function of the file's stat (taken before reading) that decides
        it from the file's age or an unchanged stamp.  Raises OSError when the
        file cannot be opened.
        """
        with open(self.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            ident = (stat.st_dev, stat.st_ino)
            if self._ident is not None and ident != self._ident:
                self._reset("was replaced")
            elif size < self.offset:
                self._reset("was truncated")
            elif self._check:
                handle.seek(self.offset - len(self._check))
                if handle.read(len(self._check)) != self._check:
                    self._reset("was rewritten")
            self._ident = ident
            self.stat = stat
            if self._newlines is None:
                self._count_prefix(handle, size)
            handle.seek(self.offset)
            # only up to the size seen by fstat: ``final`` was decided for those bytes
            data = handle.read(max(0, size - self.offset))
            is_final = final(stat) if callable(final) else bool(final)
            self.held_back = False
            if is_final and data[data.rfind(b"\n") + 1 :].strip():
                # The kernel grows i_size page by page while copying a write, so a
                # record being appended right now by the next writer can show up
                # cut at a page boundary.  Such a tail waits for that writer's close,
                # or for the caller to see the file unchanged a while later (a
                # callable ``final``: the page test does not apply then).
                moved = os.fstat(handle.fileno()).st_size != size
                if moved or (final is True and size % PAGE_SIZE == 0):
                    is_final = False
                    self.held_back = True
        return self._consume(data, is_final)

    def _consume(self, data: bytes, final: bool) -> List[ListRecord]:
        assert self._newlines is not None
        consumed = len(data) if final else data.rfind(b"\n") + 1
        chunk = data[:consumed]
        segments = chunk.split(b"\n")
        records: List[ListRecord] = []
        position, lineno = self.offset, self._newlines + 1
        fed = 0  # bytes of chunk in the fingerprint
        last = len(segments) - 1
        for index, segment in enumerate(segments):
            end = position + len(segment) + (0 if index == last else 1)
            text = segment.decode("utf-8", errors="replace").strip()
            if text:
                self._print.update(chunk[fed : end - self.offset])
                fed = end - self.offset
                records.append(ListRecord(lineno, text, end, self._print.value()))
            position = end
            if index != last:
                lineno += 1
        self._print.update(chunk[fed:])
        self._newlines += chunk.count(b"\n")
        self.offset += consumed
        self._check = (self._check + chunk)[-CHECK_BYTES:]
        self.pending = bool(data[consumed:].strip())
        return records
