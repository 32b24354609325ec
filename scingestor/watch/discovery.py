"""Beamtimes, scan directories and list files, watched on one inotify fd by one thread.

The tree (behaviour.md §3, the existing installation's discovery rules)::

    beamtime_base_dir/            watched: new/removed subdirs are beamtime dirs
      <beamtime dir>/             watched: beamtime-metadata-*.json appear/change/vanish
        beamtime-metadata-1.json  one tree per (non-blacklisted) file, rooted at its dir
        raw/ ...                  scan dirs, down to max_scandir_depth, minus blacklists;
          scicat-datasets-1.lst   below a dir holding the list file only with
                                  watch_scandir_subdir; the list file has its own watch

What differs from the original on purpose (behaviour.md §10.3-10.5):

* one inotify descriptor and one thread for everything, blocked in ``poll``;
  the ``recheck_*_interval`` settings (old unit: loop passes of
  ``get_event_timeout``) become a slow safety re-scan timer, the only
  reason an idle watcher wakes up;
* ``IN_MOVED_TO``/``IN_MOVED_FROM`` are handled (renames into place count as
  writes), beamtime files are re-read when edited, removed beamtimes end,
  vanished directories are cleaned up, other files in a beamtime dir are
  ignored, the id blacklist can shrink;
* records are taken only when complete (see :mod:`.tailer`): on
  ``IN_MODIFY`` only newline-terminated ones, on ``IN_CLOSE_WRITE`` /
  ``IN_MOVED_TO`` also the unterminated last one.  A list file found by
  listing a directory (start, new directories, re-scan) may have been
  closed before its watch existed; its unterminated last record is taken
  when the file has not changed for ``settle_time`` seconds (a writer
  stalled mid-record for that long would be read early; the writers write
  ``"\\n" + record`` in one call);
* after adding a watch to a new directory it is listed, so what was created
  in it before the watch existed is not lost (``os.makedirs`` races).

Sink calls come from the event thread, in order: ``beamtime_added`` before
the ``list_file_added`` of its list files, before their ``list_records``.
``beamtime_removed`` implies that all its list files are no longer watched
(no ``list_file_removed`` for them); ``list_file_removed`` is for a list file
that disappears, or stops being watched, while its beamtime stays.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore

from ..beamtime import (
    Beamtime,
    BeamtimeFilter,
    find_beamtime_files,
    is_beamtime_file,
    read_beamtime,
)
from ..config import IngestorConfig
from ..errors import BeamtimeError, ConfigError, WatchLimitError
from ..layout import PathConverter, list_file_name, scan_paths, scandir_blacklisted
from .inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    EventLoop,
    Inotify,
    InotifyEvent,
)
from .tailer import FinalSpec, ListFileTailer, ListRecord

logger = logging.getLogger(__name__)

#: Directories: entries appearing/vanishing, files closed after writing, the dir itself going.
DIR_MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CLOSE_WRITE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
#: List files: every write (a newline completes the record before it) and the close.
FILE_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF

_APPEAR = IN_CREATE | IN_MOVED_TO
_VANISH = IN_DELETE | IN_MOVED_FROM
_WRITTEN = IN_CLOSE_WRITE | IN_MOVED_TO
_SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT

#: Seconds a list file found by listing must stay unchanged before its unterminated
#: last record counts as complete.
SETTLE_TIME = 2.0
#: The safety re-scan never runs more often than this (seconds).
MIN_RECHECK = 1.0

_Ident = Tuple[int, int]
_Stamp = Tuple[int, int, int]


class WatchSink(Protocol):
    """Receives what the watcher finds; called from the ONE event thread.

    Implementations must be quick (enqueue and return): the event thread
    does nothing else while a call runs.  Exceptions are logged and ignored.
    """

    def beamtime_added(self, beamtime: Beamtime) -> None: ...

    def beamtime_changed(self, beamtime: Beamtime) -> None: ...

    def beamtime_removed(self, path: str) -> None: ...

    def beamtime_error(self, path: str, error: Exception) -> None: ...

    def list_file_added(self, beamtime: Beamtime, list_file: str) -> None: ...

    def list_records(
        self, beamtime: Beamtime, list_file: str, records: List[ListRecord]
    ) -> None: ...

    def list_file_removed(self, beamtime: Beamtime, list_file: str) -> None: ...


def core_form(config: IngestorConfig, beamtime: Beamtime, path: str) -> str:
    """*path* (as the sink receives it: the watched form) in the form written to files.

    With ``use_corepath_as_scandir`` a path below the beamtime directory is
    rewritten to the beamtime's ``corePath``; otherwise it is returned as is.
    """
    return scan_paths(config, beamtime).to_core(path)


def _stamp(stat: os.stat_result) -> _Stamp:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


# ---------------------------------------------------------------------------
# the watched things (compared by identity: they are watch owners)


@dataclass(eq=False)
class _BaseDir:
    path: str
    wd: Optional[int] = None


@dataclass(eq=False)
class _BeamtimeDir:
    path: str
    sources: Set[str] = field(default_factory=set)  # "config" and/or "base"
    wd: Optional[int] = None


@dataclass(eq=False)
class _BlacklistDir:
    path: str
    name: str
    wd: Optional[int] = None


@dataclass(eq=False)
class _BeamtimeFile:
    """What we know about one beamtime metadata file."""

    path: str
    directory: str
    stamp: Optional[_Stamp] = None
    beamtime: Optional[Beamtime] = None  # last good content
    tree: Optional["_Tree"] = None  # set while it is watched (active)
    skipped: Optional[str] = None  # blacklist reason (logged once)
    error: Optional[str] = None  # last error reported


@dataclass(eq=False)
class _Tree:
    """The scan dirs and list files of one active beamtime."""

    state: _BeamtimeFile
    beamtime: Beamtime
    converter: PathConverter
    list_name: str
    root: Optional["_ScanDir"] = None
    nodes: Dict[_Ident, "_ScanDir"] = field(default_factory=dict)  # by (st_dev, st_ino)


@dataclass(eq=False)
class _ScanDir:
    tree: _Tree
    path: str
    name: str
    depth: int  # levels still allowed below (-1: unlimited)
    parent: Optional["_ScanDir"]
    ident: _Ident
    wd: Optional[int] = None
    children: Dict[str, "_ScanDir"] = field(default_factory=dict)
    list: Optional["_ListWatch"] = None
    alive: bool = True


@dataclass(eq=False)
class _ListWatch:
    node: _ScanDir
    path: str
    tailer: ListFileTailer
    ident: Optional[_Ident] = None
    wd: Optional[int] = None
    alive: bool = True


#: Everything that holds a watch (has a ``wd``).
_Owner = Union[_BaseDir, _BeamtimeDir, _BlacklistDir, _ScanDir, _ListWatch]


class _WatchTable:
    """wd bookkeeping: one kernel watch per inode, shared by several owners.

    A beamtime dir is watched for its beamtime files and, as the root scan
    dir, for its list file and subdirs; inotify hands out one wd per inode,
    so the watch is removed only when its last owner lets go.
    """

    def __init__(self, inotify: Inotify) -> None:
        self.inotify = inotify
        self.owners: Dict[int, List[_Owner]] = {}

    def add(self, path: str, mask: int, owner: _Owner) -> int:
        wd = self.inotify.add_watch(path, mask)
        users = self.owners.setdefault(wd, [])
        if not any(user is owner for user in users):
            users.append(owner)
        return wd

    def release(self, wd: int, owner: _Owner) -> None:
        users = self.owners.get(wd)
        if users is None:
            return
        users[:] = [user for user in users if user is not owner]
        if not users:
            del self.owners[wd]
            try:
                self.inotify.rm_watch(wd)
            except OSError as error:  # pragma: no cover - fd trouble
                logger.debug("rm_watch(%d): %s", wd, error)

    def users(self, wd: int) -> List[_Owner]:
        return list(self.owners.get(wd, ()))

    def dropped(self, wd: int) -> List[_Owner]:
        """The kernel removed the watch (IN_IGNORED): forget it, return its owners."""
        return self.owners.pop(wd, [])

    def __len__(self) -> int:
        return len(self.owners)


# ---------------------------------------------------------------------------


class Watcher:
    """Watches beamtimes, their scan dirs and list files; reports to a :class:`WatchSink`.

    ``offsets(list_file)`` gives the byte offset up to which a list file's
    records were handed out in an earlier run (0 when unknown); it is asked
    when a list file is first found (on the event thread).  A list file seen
    deleted during this run starts again at 0 when it reappears; one that
    only stopped being watched (its beamtime ended, a list file appeared
    above it) resumes where it was.
    """

    def __init__(
        self,
        config: IngestorConfig,
        sink: WatchSink,
        *,
        offsets: Optional[Callable[[str], int]] = None,
        settle_time: float = SETTLE_TIME,
    ) -> None:
        self.config = config
        self.sink = sink
        self._offsets = offsets
        self._settle_time = settle_time
        self._filter = BeamtimeFilter(config)
        self._loop: Optional[EventLoop] = None
        self._table: Optional[_WatchTable] = None
        self._thread: Optional[threading.Thread] = None
        self._thread_id: Optional[int] = None
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._base: Optional[_BaseDir] = None
        self._blacklist: Optional[_BlacklistDir] = None
        self._bt_dirs: Dict[str, _BeamtimeDir] = {}
        self._bt_files: Dict[str, _BeamtimeFile] = {}
        self._pending: Dict[_ListWatch, Optional[bool]] = {}
        self._settle: Dict[_ListWatch, Tuple[float, _Stamp]] = {}
        self._bt_retry: Dict[str, float] = {}
        self._fresh: Set[str] = set()
        self._parked: Dict[str, ListFileTailer] = {}
        self._warned: Set[str] = set()
        self._limit_reported = False
        self._snapshot: Tuple[Beamtime, ...] = ()
        self._beamtime_interval = self._interval(
            config.recheck_beamtime_file_interval, "recheck_beamtime_file_interval"
        )
        self._list_interval = self._interval(
            config.recheck_dataset_list_interval, "recheck_dataset_list_interval"
        )

    # -- public API ------------------------------------------------------------
    def start(self) -> None:
        """Scan everything, then watch; returns when the initial scan is done.

        The scan runs on the event thread (all sink calls come from there).
        """
        if self._thread is not None:
            raise RuntimeError("Watcher.start() called twice")
        inotify = Inotify()
        self._table = _WatchTable(inotify)
        self._loop = EventLoop(inotify, self._on_events)
        self._thread = threading.Thread(
            target=self._thread_main, name="scingestor-watch", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the thread through its pipe and join it; it closes the descriptors."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.stop()
        if thread.ident != threading.get_ident():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "Watcher: the event thread did not stop within %.1f s (a sink call blocks?)",
                    timeout,
                )

    def rescan(self, wait: bool = True, timeout: float = 300.0) -> None:
        """The safety re-scan, on demand: beamtime dirs, scan dirs, list files.

        Runs on the event thread (queued through the wake-up pipe); with
        ``wait`` this returns when it is done.
        """
        loop = self._loop
        if loop is None or not self.running:
            logger.warning("Watcher.rescan(): the watcher is not running")
            return
        if threading.get_ident() == self._thread_id:
            self._rescan_all()
            return
        done = threading.Event()

        def job() -> None:
            try:
                self._rescan_all()
            finally:
                done.set()

        loop.call_soon(job)
        deadline = time.monotonic() + timeout
        while wait and not done.wait(0.2):  # the caller's thread, not the event thread
            if not self.running:
                return  # stopped meanwhile: the job will not run
            if time.monotonic() > deadline:
                logger.warning("Watcher.rescan(): not finished after %.0f s", timeout)
                return

    @property
    def watched_beamtimes(self) -> List[Beamtime]:
        """The beamtimes being watched (not the skipped or broken ones)."""
        return list(self._snapshot)

    @property
    def watch_count(self) -> int:
        """How many inotify watches are held (one per watched directory or list file)."""
        return len(self._table) if self._table is not None else 0

    @property
    def running(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._loop is not None
            and not self._loop.stopping
        )

    @property
    def wakeups(self) -> int:
        """How many times the event thread returned from poll."""
        return self._loop.wakeups if self._loop is not None else 0

    def core_form(self, beamtime: Beamtime, path: str) -> str:
        """*path* in the form written to files (core path with use_corepath_as_scandir)."""
        return core_form(self.config, beamtime, path)

    def __enter__(self) -> "Watcher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- thread ------------------------------------------------------------------
    def _thread_main(self) -> None:
        assert self._loop is not None
        self._thread_id = threading.get_ident()
        try:
            self._initial_scan()
        except BaseException as error:  # handed to start()
            self._start_error = error
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run()

    def _interval(self, value: int, name: str) -> Optional[float]:
        """Old unit (loop passes of get_event_timeout) to seconds; None: disabled."""
        seconds = value * self.config.get_event_timeout
        if value <= 0 or seconds <= 0:
            return None
        if seconds < MIN_RECHECK:
            logger.warning(
                "%s = %d (x get_event_timeout %g = %g s) is shorter than the "
                "safety re-scan allows; using %g s",
                name,
                value,
                self.config.get_event_timeout,
                seconds,
                MIN_RECHECK,
            )
            seconds = MIN_RECHECK
        return seconds

    def _initial_scan(self) -> None:
        config = self.config
        if not config.beamtime_dirs and not config.beamtime_base_dir:
            logger.warning("BeamtimeWatcher: Beamtime directories not defined")
        self._sync_blacklist()
        self._sync_base()
        for directory in config.beamtime_dirs:
            self._add_beamtime_dir(os.path.normpath(os.path.abspath(directory)), "config")
        self._flush_reads()
        assert self._loop is not None
        if self._beamtime_interval:
            self._loop.set_timer("beamtimes", self._beamtime_interval, self._on_beamtime_timer)
        if self._list_interval:
            self._loop.set_timer("lists", self._list_interval, self._on_list_timer)
        logger.info(
            "Watcher: watching %d beamtime(s) with %d inotify watch(es)",
            len(self._snapshot),
            self.watch_count,
        )

    def _on_beamtime_timer(self) -> None:
        self._rescan_all()
        if self._loop is not None and self._beamtime_interval:
            self._loop.set_timer("beamtimes", self._beamtime_interval, self._on_beamtime_timer)

    def _on_list_timer(self) -> None:
        for state in list(self._bt_files.values()):
            if state.tree is not None:
                for node in list(state.tree.nodes.values()):
                    if node.list is not None:
                        self._request_read(node.list, None)
        self._flush_reads()
        if self._loop is not None and self._list_interval:
            self._loop.set_timer("lists", self._list_interval, self._on_list_timer)

    def _rescan_all(self) -> None:
        logger.debug("Watcher: safety re-scan")
        self._limit_reported = False
        self._sync_blacklist()
        self._filter = BeamtimeFilter(self.config)
        for state in list(self._bt_files.values()):
            if state.beamtime is not None and self._bt_files.get(state.path) is state:
                self._apply_filter(state)
        self._sync_base()
        for directory in list(self._bt_dirs.values()):
            if "config" in directory.sources and self._bt_dirs.get(directory.path) is directory:
                self._sync_beamtime_dir(directory)
        for configured in self.config.beamtime_dirs:
            path = os.path.normpath(os.path.abspath(configured))
            if path not in self._bt_dirs:
                self._add_beamtime_dir(path, "config")
        for state in list(self._bt_files.values()):
            if state.tree is not None and state.tree.root is not None:
                self._walk(state.tree.root)
        self._flush_reads()

    # -- helpers -----------------------------------------------------------------
    def _emit(self, name: str, *args: object) -> None:
        try:
            getattr(self.sink, name)(*args)
        except Exception:
            logger.exception("Watcher: the sink failed in %s", name)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _add_watch(self, path: str, mask: int, owner: _Owner, context: str) -> Optional[int]:
        """Add a watch; failures are reported (ENOSPC clearly) and give None."""
        assert self._table is not None
        try:
            wd = self._table.add(path, mask, owner)
        except WatchLimitError as error:
            if not self._limit_reported:
                self._limit_reported = True
                logger.error("%s", error)
                self._emit("beamtime_error", context, error)
            return None
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
                self._warn_once(path, "%s cannot be watched: %s", path, error.strerror or error)
            return None
        self._warned.discard(path)
        return wd

    def _release(self, owner: _Owner) -> None:
        if owner.wd is not None and self._table is not None:
            self._table.release(owner.wd, owner)
        owner.wd = None

    def _update_snapshot(self) -> None:
        self._snapshot = tuple(
            state.tree.beamtime
            for _path, state in sorted(self._bt_files.items())
            if state.tree is not None
        )

    # -- the id blacklist file ---------------------------------------------------
    def _sync_blacklist(self) -> None:
        path = self.config.beamtimeid_blacklist_file
        if not path:
            return
        path = os.path.abspath(path)
        if self._blacklist is None:
            self._blacklist = _BlacklistDir(os.path.dirname(path), os.path.basename(path))
        if self._blacklist.wd is None:
            self._blacklist.wd = self._add_watch(
                self._blacklist.path, DIR_MASK, self._blacklist, path
            )

    def _blacklist_changed(self) -> None:
        logger.info(
            "Watcher: beamtime id blacklist %s changed", self.config.beamtimeid_blacklist_file
        )
        self._filter = BeamtimeFilter(self.config)
        for state in sorted(self._bt_files.values(), key=lambda state: state.path):
            if state.beamtime is not None and self._bt_files.get(state.path) is state:
                self._apply_filter(state)

    # -- beamtime dirs -------------------------------------------------------------
    def _sync_base(self) -> None:
        base = self.config.beamtime_base_dir
        if not base:
            return
        if self._base is None:
            self._base = _BaseDir(os.path.normpath(base))
        if self._base.wd is None:
            self._base.wd = self._add_watch(self._base.path, DIR_MASK, self._base, self._base.path)
        try:
            names = sorted(os.listdir(self._base.path))
        except OSError as error:
            self._warn_once(
                "base:" + self._base.path,
                "beamtime_base_dir %s cannot be listed: %s",
                self._base.path,
                error.strerror or error,
            )
            return
        self._warned.discard("base:" + self._base.path)
        present = [
            os.path.join(self._base.path, name)
            for name in names
            if os.path.isdir(os.path.join(self._base.path, name))
        ]
        present_set = set(present)
        for path, directory in list(self._bt_dirs.items()):
            if "base" in directory.sources and path not in present_set:
                self._drop_source(path, "base")
        for path in present:
            self._add_beamtime_dir(path, "base")

    def _add_beamtime_dir(self, path: str, source: str) -> None:
        entry = scandir_blacklisted(path, self.config)
        if entry is not None:
            logger.debug("Beamtime directory %s is blacklisted (%s)", path, entry)
            return
        directory = self._bt_dirs.get(path)
        if directory is None:
            directory = self._bt_dirs[path] = _BeamtimeDir(path)
            logger.info("Watcher: beamtime directory %s", path)
        directory.sources.add(source)
        self._sync_beamtime_dir(directory)

    def _sync_beamtime_dir(self, directory: _BeamtimeDir) -> None:
        if directory.wd is None:
            directory.wd = self._add_watch(directory.path, DIR_MASK, directory, directory.path)
        if directory.wd is None and not os.path.isdir(directory.path):
            self._warn_once(
                "dir:" + directory.path,
                "Beamtime directory %s does not exist (looked for again at each safety re-scan)",
                directory.path,
            )
        else:
            self._warned.discard("dir:" + directory.path)
        files = find_beamtime_files(directory.path, self.config)
        for path, state in list(self._bt_files.items()):
            if state.directory == directory.path and path not in files:
                self._forget_file(path)
        for path in files:
            self._examine(path, force=False)

    def _drop_source(self, path: str, source: str) -> None:
        directory = self._bt_dirs.get(path)
        if directory is None:
            return
        directory.sources.discard(source)
        if not directory.sources:
            self._drop_beamtime_dir(directory)

    def _drop_beamtime_dir(self, directory: _BeamtimeDir) -> None:
        logger.info("Watcher: beamtime directory %s is gone", directory.path)
        for path, state in list(self._bt_files.items()):
            if state.directory == directory.path:
                self._forget_file(path)
        self._release(directory)
        if self._bt_dirs.get(directory.path) is directory:
            del self._bt_dirs[directory.path]

    # -- beamtime files --------------------------------------------------------------
    def _examine(self, path: str, force: bool) -> None:
        """(Re)read a beamtime file when it is new or changed (always with *force*)."""
        state = self._bt_files.get(path)
        try:
            stat = os.stat(path)
        except OSError:
            if state is not None:
                self._forget_file(path)
            return
        if state is not None and not force and state.stamp == _stamp(stat):
            return
        if state is None:
            state = self._bt_files[path] = _BeamtimeFile(path, os.path.dirname(path))
        state.stamp = _stamp(stat)
        self._bt_retry.pop(path, None)
        try:
            beamtime = read_beamtime(path)
        except BeamtimeError as error:
            if not os.path.exists(path):
                self._forget_file(path)
                return
            if not force and time.time() - stat.st_mtime < self._settle_time:
                # found by listing while maybe still being written: its close event
                # (the dir is watched now) or the retry timer gives the verdict
                state.stamp = None
                self._bt_retry[path] = time.monotonic() + self._settle_time
                self._arm_retry_timer()
                return
            if state.error != str(error):
                state.error = str(error)
                if state.tree is not None:
                    logger.warning(
                        "Beamtime file cannot be read again (its beamtime stays "
                        "watched with the previous content): %s",
                        error,
                    )
                else:
                    logger.warning("Beamtime file cannot be watched: %s", error)
                self._emit("beamtime_error", path, error)
            return
        state.error = None
        state.beamtime = beamtime
        self._apply_filter(state)

    def _apply_filter(self, state: _BeamtimeFile) -> None:
        beamtime = state.beamtime
        assert beamtime is not None
        reason = self._filter.reason_to_skip(beamtime)
        if reason is not None:
            if state.tree is not None:
                self._end_tree(state, report=True)
            if state.skipped != reason:
                state.skipped = reason
                logger.info(
                    "Beamtime %s (%s) skipped: %s", beamtime.beamtime_id, state.path, reason
                )
            return
        state.skipped = None
        tree = state.tree
        if tree is None:
            self._start_tree(state, beamtime)
        elif tree.beamtime.beamtime_id != beamtime.beamtime_id:
            logger.info(
                "Beamtime file %s now names beamtime %s (was %s)",
                state.path,
                beamtime.beamtime_id,
                tree.beamtime.beamtime_id,
            )
            self._end_tree(state, report=True)
            self._start_tree(state, beamtime)
        elif tree.beamtime != beamtime or tree.beamtime.data != beamtime.data:
            tree.beamtime = beamtime
            tree.converter = scan_paths(self.config, beamtime)
            logger.info("Beamtime %s (%s) changed", beamtime.beamtime_id, state.path)
            self._update_snapshot()
            self._emit("beamtime_changed", beamtime)

    def _start_tree(self, state: _BeamtimeFile, beamtime: Beamtime) -> None:
        try:
            list_name = list_file_name(self.config, beamtime.beamtime_id)
        except ConfigError as error:
            if state.error != str(error):
                state.error = str(error)
                logger.warning("Beamtime file %s cannot be watched: %s", state.path, error)
                self._emit("beamtime_error", state.path, error)
            return
        tree = _Tree(state, beamtime, scan_paths(self.config, beamtime), list_name)
        try:
            stat = os.stat(beamtime.directory)
            ident = (stat.st_dev, stat.st_ino)
        except OSError:
            ident = (-1, -1)
        root = _ScanDir(
            tree,
            beamtime.directory,
            os.path.basename(beamtime.directory),
            self.config.max_scandir_depth,
            None,
            ident,
        )
        tree.root = root
        tree.nodes[ident] = root
        state.tree = tree
        logger.info(
            "Beamtime %s (%s): watching %s for %s",
            beamtime.beamtime_id,
            state.path,
            beamtime.directory,
            list_name,
        )
        self._update_snapshot()
        self._emit("beamtime_added", beamtime)
        self._walk(root)

    def _end_tree(self, state: _BeamtimeFile, report: bool) -> None:
        tree = state.tree
        if tree is None:
            return
        state.tree = None
        if tree.root is not None:
            self._remove_node(tree.root, report=False)
        self._update_snapshot()
        logger.info("Beamtime %s (%s): no longer watched", tree.beamtime.beamtime_id, state.path)
        if report:
            self._emit("beamtime_removed", state.path)

    def _arm_retry_timer(self) -> None:
        if self._loop is None:
            return
        if not self._bt_retry:
            self._loop.cancel_timer("beamtime-retry")
            return
        self._loop.set_timer(
            "beamtime-retry",
            min(self._bt_retry.values()) - time.monotonic(),
            self._on_beamtime_retry,
        )

    def _on_beamtime_retry(self) -> None:
        now = time.monotonic() + EventLoop.SLACK
        for path, deadline in sorted(self._bt_retry.items()):
            if deadline <= now:
                self._examine(path, force=True)
        self._flush_reads()
        self._arm_retry_timer()

    def _forget_file(self, path: str) -> None:
        self._bt_retry.pop(path, None)
        state = self._bt_files.pop(path, None)
        if state is not None and state.tree is not None:
            self._end_tree(state, report=True)

    # -- scan dirs ----------------------------------------------------------------------
    def _descend(self, node: _ScanDir) -> bool:
        return node.depth != 0 and (self.config.watch_scandir_subdir or node.list is None)

    def _new_child(self, node: _ScanDir, name: str) -> Optional[_ScanDir]:
        tree = node.tree
        path = os.path.join(node.path, name)
        entry = scandir_blacklisted(path, self.config, tree.converter)
        if entry is not None:
            logger.debug("Scan directory %s is blacklisted (%s)", path, entry)
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        if not stat_module.S_ISDIR(stat.st_mode):
            return None
        ident = (stat.st_dev, stat.st_ino)
        known = tree.nodes.get(ident)
        if known is not None and known.alive:
            try:
                again = os.stat(known.path)
                still = (again.st_dev, again.st_ino) == ident
            except OSError:
                still = False
            ancestor: Optional[_ScanDir] = node
            while ancestor is not None and ancestor is not known:
                ancestor = ancestor.parent
            if still or ancestor is not None:  # a symlink loop, or a second path to it
                logger.debug("Scan directory %s is %s, already watched", path, known.path)
                return None
            self._remove_node(known, report=True)  # stale: its inode was reused
        depth = node.depth - 1 if node.depth > 0 else -1
        child = _ScanDir(tree, path, name, depth, node, ident)
        node.children[name] = child
        tree.nodes[ident] = child
        return child

    def _walk(self, start: _ScanDir) -> None:
        """Watch and list *start* and what is below it; add/remove what changed.

        Listing after adding the watch means nothing created in between is lost.
        """
        stack = [start]
        while stack:
            node = stack.pop()
            if not node.alive:
                continue
            tree = node.tree
            if node.wd is None:
                node.wd = self._add_watch(node.path, DIR_MASK, node, tree.state.path)
            try:
                entries = list(os.scandir(node.path))
            except OSError:
                if node is not tree.root:
                    self._remove_node(node, report=True)
                continue
            has_list = False
            subdirs: List[str] = []
            for entry in entries:
                try:
                    if entry.name == tree.list_name:
                        has_list = entry.is_file()
                    elif entry.is_dir():
                        subdirs.append(entry.name)
                except OSError:
                    continue
            if has_list:
                self._ensure_list(node, None)
            elif node.list is not None:
                self._drop_list(node, report=True, deleted=True)
            if not self._descend(node):
                for child in list(node.children.values()):
                    self._remove_node(child, report=True)
                continue
            for name, child in list(node.children.items()):
                if name not in subdirs:
                    self._remove_node(child, report=True)
            for name in sorted(subdirs, reverse=True):
                known = node.children.get(name)
                if known is None:
                    known = self._new_child(node, name)
                if known is not None:
                    stack.append(known)

    def _remove_node(self, node: _ScanDir, report: bool) -> None:
        tree = node.tree
        stack = [node]
        while stack:
            current = stack.pop()
            stack.extend(current.children.values())
            current.alive = False
            if current.list is not None:
                self._drop_list(current, report=report, deleted=False)
            self._release(current)
            if tree.nodes.get(current.ident) is current:
                del tree.nodes[current.ident]
        if node.parent is not None and node.parent.children.get(node.name) is node:
            del node.parent.children[node.name]

    def _scan_dir_event(self, node: _ScanDir, event: InotifyEvent) -> None:
        if not node.alive or not event.name:
            return
        tree, mask, name = node.tree, event.mask, event.name
        if name == tree.list_name and not mask & IN_ISDIR:
            if mask & _VANISH:
                self._drop_list(node, report=True, deleted=True)
                if self._descend(node):
                    self._walk(node)  # subdirs are watched again
            elif mask & (IN_CREATE | _WRITTEN):
                had_list = node.list is not None
                # created: a writer is at work and its close will come; written: complete
                self._ensure_list(node, bool(mask & _WRITTEN))
                if not had_list and node.list is not None and not self._descend(node):
                    for child in list(node.children.values()):
                        self._remove_node(child, report=True)
            return
        if mask & _VANISH:
            gone = node.children.get(name)
            if gone is not None:
                self._remove_node(gone, report=True)
        elif mask & _APPEAR and self._descend(node) and name not in node.children:
            path = os.path.join(node.path, name)
            if mask & IN_ISDIR or (os.path.islink(path) and os.path.isdir(path)):
                new = self._new_child(node, name)
                if new is not None:
                    self._walk(new)

    # -- list files ---------------------------------------------------------------
    def _start_offset(self, path: str) -> int:
        if path in self._fresh:
            self._fresh.discard(path)
            return 0
        if self._offsets is None:
            return 0
        try:
            return max(0, int(self._offsets(path) or 0))
        except Exception:
            logger.exception("Watcher: offsets(%s) failed; reading it from the start", path)
            return 0

    def _ensure_list(self, node: _ScanDir, final: Optional[bool]) -> None:
        """Watch the list file of *node* (again if replaced) and ask for a read."""
        tree = node.tree
        path = os.path.join(node.path, tree.list_name)
        try:
            stat = os.stat(path)
        except OSError:
            if node.list is not None:
                self._drop_list(node, report=True, deleted=True)
            return
        if not stat_module.S_ISREG(stat.st_mode):
            return
        ident = (stat.st_dev, stat.st_ino)
        watch = node.list
        if watch is None:
            tailer = self._parked.pop(path, None) or ListFileTailer(path, self._start_offset(path))
            watch = _ListWatch(node, path, tailer)
            node.list = watch
            watch.ident = ident
            watch.wd = self._add_watch(path, FILE_MASK, watch, tree.state.path)
            logger.info("Beamtime %s: list file %s", tree.beamtime.beamtime_id, path)
            self._emit("list_file_added", tree.beamtime, path)
        elif watch.ident != ident or watch.wd is None:
            self._release(watch)
            watch.ident = ident
            watch.wd = self._add_watch(path, FILE_MASK, watch, tree.state.path)
        self._request_read(watch, final)

    def _drop_list(self, node: _ScanDir, report: bool, deleted: bool) -> None:
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
            logger.info(
                "Beamtime %s: list file %s no longer watched",
                node.tree.beamtime.beamtime_id,
                watch.path,
            )
            self._emit("list_file_removed", node.tree.beamtime, watch.path)

    def _request_read(self, watch: _ListWatch, final: Optional[bool]) -> None:
        """Read at the end of this batch; the last request decides ``final``.

        None: decide from the file's age (it was found by listing, not by an event).
        """
        self._pending[watch] = final

    def _flush_reads(self) -> None:
        while self._pending:
            watch = next(iter(self._pending))
            final = self._pending.pop(watch)
            if watch.alive:
                self._read_now(watch, final)
        self._arm_settle_timer()

    def _read_now(self, watch: _ListWatch, final: Optional[bool]) -> None:
        node = watch.node
        settle = self._settle.get(watch)
        if final is None:
            settle_time = self._settle_time
            expected = settle[1] if settle is not None else None

            def decide(stat: os.stat_result) -> bool:
                return time.time() - stat.st_mtime >= settle_time or (
                    expected is not None and _stamp(stat) == expected
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
            self._settle[watch] = (time.monotonic() + self._settle_time, _stamp(stat))
        else:
            self._settle.pop(watch, None)

    def _tail(self, watch: _ListWatch, final: FinalSpec) -> Optional[List[ListRecord]]:
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
        if self._loop is None:
            return
        if not self._settle:
            self._loop.cancel_timer("settle")
            return
        deadline = min(entry[0] for entry in self._settle.values())
        self._loop.set_timer("settle", deadline - time.monotonic(), self._on_settle)

    def _on_settle(self) -> None:
        now = time.monotonic() + EventLoop.SLACK
        for watch, (deadline, _stamp_value) in list(self._settle.items()):
            if deadline <= now and watch.alive:
                self._request_read(watch, None)
        self._flush_reads()

    # -- events ---------------------------------------------------------------------
    def _on_events(self, events: List[InotifyEvent]) -> None:
        assert self._table is not None
        overflow = False
        for event in events:
            try:
                if event.mask & IN_Q_OVERFLOW:
                    overflow = True
                elif event.mask & IN_IGNORED:
                    for owner in self._table.dropped(event.wd):
                        self._gone(owner, event.wd)
                elif event.mask & _SELF_GONE:
                    for owner in self._table.users(event.wd):
                        self._gone(owner, event.wd)
                else:
                    for owner in self._table.users(event.wd):
                        self._dispatch(owner, event)
            except Exception:
                logger.exception("Watcher: error handling %r", event)
        if overflow:
            logger.warning(
                "Watcher: the inotify queue overflowed (fs.inotify."
                "max_queued_events); re-scanning everything"
            )
            self._rescan_all()
        self._flush_reads()

    def _dispatch(self, owner: _Owner, event: InotifyEvent) -> None:
        mask, name = event.mask, event.name
        if isinstance(owner, _ListWatch):
            if owner.alive and owner.wd == event.wd:
                if mask & IN_CLOSE_WRITE:
                    self._request_read(owner, True)
                elif mask & IN_MODIFY:
                    self._request_read(owner, False)
        elif isinstance(owner, _ScanDir):
            self._scan_dir_event(owner, event)
        elif isinstance(owner, _BeamtimeDir):
            if name and not mask & IN_ISDIR and is_beamtime_file(name, self.config):
                path = os.path.join(owner.path, name)
                if mask & _WRITTEN:
                    self._examine(path, force=True)
                elif mask & _VANISH:
                    self._forget_file(path)
        elif isinstance(owner, _BaseDir):
            if name:
                path = os.path.join(owner.path, name)
                if mask & _VANISH:
                    self._drop_source(path, "base")
                elif mask & _APPEAR and (mask & IN_ISDIR or os.path.isdir(path)):
                    self._add_beamtime_dir(path, "base")
        elif isinstance(owner, _BlacklistDir):
            if name == owner.name and mask & (_WRITTEN | _VANISH):
                self._blacklist_changed()

    def _gone(self, owner: _Owner, wd: int) -> None:
        """The watched directory or file itself was deleted, moved or unmounted."""
        if owner.wd != wd:
            return  # already let go (or re-watched)
        self._release(owner)
        if isinstance(owner, _ListWatch):
            if owner.alive:  # deleted or moved away: replaced?
                self._ensure_list(owner.node, True)
        elif isinstance(owner, _ScanDir):
            if not owner.alive:
                return
            if owner is owner.tree.root:
                logger.info("Beamtime directory %s is gone", owner.path)
                self._forget_file(owner.tree.state.path)
            else:
                self._remove_node(owner, report=True)
        elif isinstance(owner, _BeamtimeDir):
            if "config" in owner.sources:
                for path, state in list(self._bt_files.items()):
                    if state.directory == owner.path:
                        self._forget_file(path)
                logger.warning(
                    "Beamtime directory %s is gone (looked for again at each safety re-scan)",
                    owner.path,
                )
            else:
                self._drop_beamtime_dir(owner)
        elif isinstance(owner, _BaseDir):
            logger.warning(
                "beamtime_base_dir %s is gone (looked for again at each safety re-scan)", owner.path
            )
            for path in list(self._bt_dirs):
                self._drop_source(path, "base")
        elif isinstance(owner, _BlacklistDir):
            self._blacklist_changed()
