"""The ingested-datasets list: which list lines are done, in the old format.

Existing installations keep, beside (or under ``ingestor_var_dir`` mirroring)
each dataset list file, an *ingested list* with one record per processed
line::

    <list line verbatim> <ds> <db> <att>
    myscan_00001 1656948245.6753829 1656948246.0512307 0

``ds``/``db``/``att`` are the modification times of the dataset,
origdatablock and attachment JSON files that were posted, ``0`` for
"nothing posted" and ``-1`` for "the post failed".  We read and write
exactly this format, so a facility can switch in either direction, and we
append with ``fsync`` so a crash never loses a record that was reported
done.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Dict, Iterable, List, NamedTuple, Optional

from . import leftovers

logger = logging.getLogger(__name__)

NOT_DONE = 0.0
FAILED = -1.0


def format_time(value: float) -> str:
    """``0`` and ``-1`` as integers (as old files have them), others as repr."""
    if value == NOT_DONE:
        return "0"
    if value == FAILED:
        return "-1"
    return repr(float(value))


class IngestedRecord(NamedTuple):
    """One line of an ingested list.

    ``legacy`` marks name-only lines of very old files (no columns), which
    count as done.  A named tuple, not a dataclass: a daemon keeps 100,000s
    of them, and a tuple has no per-instance dictionary.
    """

    key: str
    ds: float = NOT_DONE
    db: float = NOT_DONE
    att: float = NOT_DONE
    legacy: bool = False

    def to_line(self) -> str:
        return f"{self.key} {format_time(self.ds)} {format_time(self.db)} {format_time(self.att)}"

    def succeeded(self, require_attachment: bool = False) -> bool:
        """Dataset and origdatablock posted, attachment not failed (or posted)."""
        if self.legacy:
            return True
        if not (self.ds > 0 and self.db > 0 and self.att != FAILED):
            return False
        return self.att > 0 if require_attachment else True


def _number(token: str) -> Optional[float]:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_ingested_line(line: str) -> Optional[IngestedRecord]:
    """Parse one line; None for blank lines.

    A line whose last three tokens are numbers is ``key ds db att`` (the key
    may hold spaces: detector lists); any other line is a legacy name-only
    record keyed by its first token, as old installations read them.
    """
    text = line.strip()
    if not text:
        return None
    tokens = text.split(" ")
    if len(tokens) > 3:
        values = [_number(token) for token in tokens[-3:]]
        if all(value is not None for value in values):
            ds, db, att = values
            return IngestedRecord(" ".join(tokens[:-3]), ds, db, att)  # type: ignore[arg-type]
    return IngestedRecord(tokens[0], legacy=True)


class IngestedList:
    """An ingested list file, read once and then kept up to date by appends.

    The maps follow what existing installations derive from the file:
    ``done`` keys are skipped, ``latest`` (last successful record per key)
    decides whether a changed metadata file must be posted again.
    """

    def __init__(
        self, path: str, retry_failed: bool = True, require_attachment: bool = False
    ) -> None:
        self.path = path
        self.retry_failed = retry_failed
        self.require_attachment = require_attachment
        self.records: List[IngestedRecord] = []
        # scans of one list file may be ingested side by side
        self._lock = threading.Lock()
        self._done: set = set()
        self._latest: Dict[str, IngestedRecord] = {}
        self._last: Dict[str, IngestedRecord] = {}
        #: how much of the file was read: what other processes append later
        #: is read by :meth:`refresh`
        self._offset = 0

    def load(self) -> "IngestedList":
        """(Re)read the file; a missing file is an empty list.

        A killed process's probe files beside it go first (:mod:`.leftovers`).
        """
        leftovers.sweep(os.path.dirname(self.path) or ".")
        self.records = []
        self._done = set()
        self._latest = {}
        self._last = {}
        self._offset = 0
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return self
        # a record being appended by another process is read again, whole,
        # by the next refresh (it is taken now too: a last line without
        # newline is a record in old files)
        self._offset = data.rfind(b"\n") + 1
        for line in data.decode("utf-8", errors="replace").split("\n"):
            record = parse_ingested_line(line)
            if record is not None:
                self._remember(record)
        return self

    def _remember(self, record: IngestedRecord) -> None:
        self.records.append(record)
        self._last[record.key] = record
        if not self.retry_failed or record.succeeded(self.require_attachment):
            self._done.add(record.key)
        if record.ds > 0 and record.db > 0 and record.att >= 0:
            self._latest[record.key] = record

    def refresh(self) -> None:
        """Take in the records other processes appended since the last read.

        Called under the scan's inter-process lock (:mod:`scingestor.interlock`),
        so a scan another process ingested meanwhile is seen as done.  Only
        whole lines are taken: a record being written is read next time.
        """
        with self._lock:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        """Remember the whole lines of *data*, read at ``_offset``."""
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode("utf-8", errors="replace").split("\n"):
            record = parse_ingested_line(line)
            if record is not None:
                self._remember(record)
        self._offset += end

    def is_done(self, key: str) -> bool:
        return key in self._done

    def waits_only_for_attachment(self, key: str) -> bool:
        """Not done only because no attachment was posted (``att`` 0)?

        With ``retry_failed_attachment_ingestion`` such a scan is retried;
        the caller decides whether there is anything to attach at all.
        """
        record = self._last.get(key)
        return (
            record is not None
            and self.require_attachment
            and not record.legacy
            and record.ds > 0
            and record.db > 0
            and record.att == 0
        )

    def latest(self, key: str) -> Optional[IngestedRecord]:
        """The last successful record of *key* (for "is the JSON newer?")."""
        return self._latest.get(key)

    def last(self, key: str) -> Optional[IngestedRecord]:
        """The last record of *key*, successful or not."""
        return self._last.get(key)

    def pending(self, keys: Iterable[str]) -> List[str]:
        """The keys (in order, duplicates kept) that are not done."""
        return [key for key in keys if key not in self._done]

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: IngestedRecord) -> None:
        """Append one record durably (write, flush, fsync) and remember it."""
        with self._lock:
            self._append(record)

    def _append(self, record: IngestedRecord) -> None:
        """Write the record whole or not at all; the OSError names the file.

        A write that fails half-way (disk full) is cut off again: a torn
        record could read as a done legacy record (``scan 0`` is a name and
        one number) and would keep a failed scan from being retried.
        """
        directory = os.path.dirname(self.path)
        try:
            if directory:
                os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                if size > self._offset:
                    # another process's records first, so ours is not read twice
                    with open(self.path, "rb") as handle:
                        handle.seek(self._offset)
                        self._take(handle.read(size - self._offset))
                line = record.to_line() + "\n"
                if size > 0 and not self._ends_with_newline():
                    line = "\n" + line
                encoded = line.encode("utf-8")
                view = memoryview(encoded)
                try:
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    try:
                        os.ftruncate(fd, size)
                    except OSError:
                        pass
                    raise
                if self._offset == size and os.fstat(fd).st_size == size + len(encoded):
                    self._offset = size + len(encoded)
            finally:
                os.close(fd)
        except OSError as error:
            raise OSError(
                error.errno, error.strerror or str(error), error.filename or self.path
            ) from None
        self._remember(record)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
