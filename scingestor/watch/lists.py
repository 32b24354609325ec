"""The list files being watched: when to read them, and from where.

Records are taken only when complete (see :mod:`.tailer`): on ``IN_MODIFY``
only newline-terminated ones, on ``IN_CLOSE_WRITE`` / ``IN_MOVED_TO`` also
the unterminated last one.  A list file found by listing a directory
(start, new directories, re-scan) may have been closed before its watch
existed; its unterminated last record is taken when the file has not
changed for ``settle_time`` seconds (a writer stalled mid-record for that
long would be read early; the writers write ``"\\n" + record`` in one
call).  Reads asked for during one batch of events are done once, at its
end.
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
import time
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

from ..beamtime import Beamtime
from ..readpoint import ReadPoint
from .inotify import EventLoop
from .owners import FILE_MASK, ListWatch, Owner, ScanDir, Stamp, stamp
from .tailer import FinalSpec, ListFileTailer, ListRecord

logger = logging.getLogger(__name__)

#: Where an earlier run stopped reading a list file (0: unknown, read it all); a
#: :class:`ReadPoint` also says what was read, to tell a replaced file.
StartPoint = Callable[[str], Union[int, ReadPoint]]


class ListFiles:
    """Watches, reads and forgets list files for the watcher (event thread only).

    *watch* / *release* hold and let go of a watch, *emit* calls the sink,
    *warn_once* logs a problem once, *loop* gives the event loop (timers).
    """

    def __init__(
        self,
        *,
        watch: Callable[[str, int, Owner, str], Optional[int]],
        release: Callable[[Owner], None],
        emit: Callable[..., None],
        warn_once: Callable[..., None],
        loop: Callable[[], Optional[EventLoop]],
        start_point: Optional[StartPoint],
        settle_time: float,
    ) -> None:
        self._watch = watch
        self._release = release
        self._emit = emit
        self._warn_once = warn_once
        self._loop = loop
        self._start_point = start_point
        self._settle_time = settle_time
        self._pending: Dict[ListWatch, Optional[bool]] = {}
        self._settle: Dict[ListWatch, Tuple[float, Stamp]] = {}
        self._fresh: Set[str] = set()
        self._parked: Dict[str, ListFileTailer] = {}

    def _tailer(self, path: str) -> ListFileTailer:
        """A tailer that resumes where an earlier run stopped (checking it is the same file)."""
        parked = self._parked.pop(path, None)
        if parked is not None:
            return parked
        if path in self._fresh:
            self._fresh.discard(path)
            return ListFileTailer(path)
        point = ReadPoint()
        if self._start_point is not None:
            try:
                found = self._start_point(path)
                point = found if isinstance(found, ReadPoint) else ReadPoint(int(found or 0))
            except Exception:
                logger.exception("Watcher: offsets(%s) failed; reading it from the start", path)
        return ListFileTailer(path, max(0, point.offset), point.check)

    def ensure(self, node: ScanDir, final: Optional[bool]) -> None:
        """Watch the list file of *node* (again if replaced) and ask for a read."""
        tree = node.tree
        path = os.path.join(node.path, tree.list_name)
        try:
            stat = os.stat(path)
        except OSError:
            if node.list is not None:
                self.drop(node, report=True, deleted=True)
            return
        if not stat_module.S_ISREG(stat.st_mode):
            return
        ident = (stat.st_dev, stat.st_ino)
        watch = node.list
        if watch is None:
            watch = ListWatch(node, path, self._tailer(path))
            node.list = watch
            watch.ident = ident
            watch.wd = self._watch(path, FILE_MASK, watch, tree.state.path)
            logger.info("Beamtime %s: list file %s", tree.beamtime.beamtime_id, path)
            self._emit("list_file_added", tree.beamtime, path)
        elif watch.ident != ident or watch.wd is None:
            self._release(watch)
            watch.ident = ident
            watch.wd = self._watch(path, FILE_MASK, watch, tree.state.path)
        self.request_read(watch, final)

    def drop(self, node: ScanDir, report: bool, deleted: bool) -> None:
        """Stop watching *node*'s list file; *deleted*: read it from the start if it comes back."""
        watch = node.list
        if watch is None:
            return
        if watch in self._pending:  # what was asked for before it went
            self._read_now(watch, self._pending.pop(watch))
        watch.alive = False
        node.list = None
        self._settle.pop(watch, None)
        self._release(watch)
        if deleted:
            self._fresh.add(watch.path)
            self._parked.pop(watch.path, None)
        else:  # still there: resume from its offset if watched again
            self._parked[watch.path] = watch.tailer
        if report:
            beamtime: Beamtime = node.tree.beamtime
            logger.info(
                "Beamtime %s: list file %s no longer watched", beamtime.beamtime_id, watch.path
            )
            self._emit("list_file_removed", beamtime, watch.path)

    def request_read(self, watch: ListWatch, final: Optional[bool]) -> None:
        """Read at the end of this batch; the last request decides ``final``.

        None: decide from the file's age (it was found by listing, not by an event).
        """
        self._pending[watch] = final

    def flush(self) -> None:
        """Do the reads asked for in this batch."""
        while self._pending:
            watch = next(iter(self._pending))
            final = self._pending.pop(watch)
            if watch.alive:
                self._read_now(watch, final)
        self._arm_settle_timer()

    def _read_now(self, watch: ListWatch, final: Optional[bool]) -> None:
        node = watch.node
        settle = self._settle.get(watch)
        if final is None:
            settle_time = self._settle_time
            expected = settle[1] if settle is not None else None

            def decide(stat: os.stat_result) -> bool:
                return time.time() - stat.st_mtime >= settle_time or (
                    expected is not None and stamp(stat) == expected
                )

            records = self._tail(watch, decide)
        else:
            records = self._tail(watch, final)
        if records is None:
            return
        if records:
            self._emit("list_records", node.tree.beamtime, watch.path, records)
        stat = watch.tailer.stat
        if stat is not None and (final is None and watch.tailer.pending or watch.tailer.held_back):
            self._settle[watch] = (time.monotonic() + self._settle_time, stamp(stat))
        else:
            self._settle.pop(watch, None)

    def _tail(self, watch: ListWatch, final: FinalSpec) -> Optional[List[ListRecord]]:
        try:
            return watch.tailer.read(final)
        except FileNotFoundError:
            return None  # its directory event follows
        except OSError as error:
            self._warn_once(
                "read:" + watch.path,
                "List file %s cannot be read: %s",
                watch.path,
                error.strerror or error,
            )
            return None

    def _arm_settle_timer(self) -> None:
        loop = self._loop()
        if loop is None:
            return
        if not self._settle:
            loop.cancel_timer("settle")
            return
        deadline = min(entry[0] for entry in self._settle.values())
        loop.set_timer("settle", deadline - time.monotonic(), self._on_settle)

    def _on_settle(self) -> None:
        now = time.monotonic() + EventLoop.SLACK
        for watch, (deadline, _stamp_value) in list(self._settle.items()):
            if deadline <= now and watch.alive:
                self.request_read(watch, None)
        self.flush()
