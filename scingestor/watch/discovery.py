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
* records are taken only when complete (see :mod:`.lists` and :mod:`.tailer`);
* after adding a watch to a new directory it is listed, so what was created
  in it before the watch existed is not lost (``os.makedirs`` races).

What each watched thing's events mean is in :mod:`.owners` (one class per
kind, with ``on_event`` and ``on_gone``); when list files are read is in
:mod:`.lists`.

Sink calls come from the event thread, in order: ``beamtime_added`` before
the ``list_file_added`` of its list files, before their ``list_records``.
``beamtime_removed`` implies that all its list files are no longer watched
(no ``list_file_removed`` for them); ``list_file_removed`` is for a list file
that disappears, or stops being watched, while its beamtime stays.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Optional, Set, Tuple

from ..beamtime import (
    Beamtime,
    BeamtimeFilter,
    BeamtimeIdMismatch,
    find_beamtime_files,
    read_beamtime,
)
from ..config import IngestorConfig
from ..errors import BeamtimeError, ConfigError
from ..layout import list_file_name, scan_paths, scandir_blacklisted
from .inotify import IN_IGNORED, IN_Q_OVERFLOW, EventLoop, Inotify, InotifyEvent
from .lists import ListFiles, StartPoint
from .owners import (
    DIR_MASK,
    SELF_GONE,
    BaseDir,
    BeamtimeDir,
    BeamtimeFile,
    BlacklistDir,
    ListWatch,
    Owner,
    ScanDir,
    Tree,
    WatchTable,
    stamp,
)
from .sink import WatchSink, core_form
from .thread import EventThread

logger = logging.getLogger(__name__)

#: Seconds a list file found by listing must stay unchanged before its unterminated
#: last record counts as complete.
SETTLE_TIME = 2.0
#: The safety re-scan never runs more often than this (seconds).
MIN_RECHECK = 1.0


class Watcher(EventThread):
    """Watches beamtimes, their scan dirs and list files; reports to a :class:`WatchSink`.

    ``offsets(list_file)`` gives the byte offset up to which a list file's
    records were handed out in an earlier run (0 when unknown), or a
    :class:`~scingestor.readpoint.ReadPoint` with the fingerprint of those
    bytes (a file replaced meanwhile is then read from its start); it is asked
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
        offsets: Optional[StartPoint] = None,
        settle_time: float = SETTLE_TIME,
    ) -> None:
        super().__init__()
        self.config = config
        self.sink = sink
        self._settle_time = settle_time
        self._filter = BeamtimeFilter(config)
        self._table: Optional[WatchTable] = None
        self._base: Optional[BaseDir] = None
        self._blacklist: Optional[BlacklistDir] = None
        self._bt_dirs: Dict[str, BeamtimeDir] = {}
        self._bt_files: Dict[str, BeamtimeFile] = {}
        self._bt_retry: Dict[str, float] = {}
        self._warned: Set[str] = set()
        self._lists = ListFiles(
            watch=self.watch,
            release=self.release,
            emit=self._emit,
            warn_once=self._warn_once,
            loop=lambda: self._loop,
            start_point=offsets,
            settle_time=settle_time,
        )
        self._snapshot: Tuple[Beamtime, ...] = ()
        self._beamtime_interval = self._interval(
            config.recheck_beamtime_file_interval, "recheck_beamtime_file_interval"
        )
        self._list_interval = self._interval(
            config.recheck_dataset_list_interval, "recheck_dataset_list_interval"
        )

    # -- public API ------------------------------------------------------------
    def rescan(self, wait: bool = True, timeout: float = 300.0) -> None:
        """The safety re-scan, on demand: beamtime dirs, scan dirs, list files.

        Runs on the event thread; with ``wait`` this returns when it is done.
        """
        self._run_on_thread(self._rescan_all, "rescan", wait, timeout)

    @property
    def watched_beamtimes(self) -> List[Beamtime]:
        """The beamtimes being watched (not the skipped or broken ones)."""
        return list(self._snapshot)

    @property
    def watch_count(self) -> int:
        """How many inotify watches are held (one per watched directory or list file)."""
        return len(self._table) if self._table is not None else 0

    def core_form(self, beamtime: Beamtime, path: str) -> str:
        """*path* in the form written to files (core path with use_corepath_as_scandir)."""
        return core_form(self.config, beamtime, path)

    def __enter__(self) -> "Watcher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- thread ------------------------------------------------------------------
    def _prepare(self, inotify: Inotify) -> None:
        self._table = WatchTable(
            inotify,
            lambda context, error: self._emit("beamtime_error", context, error),
            self._warn_once,
            self._warned,
        )

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
            self.add_beamtime_dir(os.path.normpath(os.path.abspath(directory)), "config")
        self._lists.flush()
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
                        self._lists.request_read(node.list, None)
        self._lists.flush()
        if self._loop is not None and self._list_interval:
            self._loop.set_timer("lists", self._list_interval, self._on_list_timer)

    def _rescan_all(self) -> None:
        logger.debug("Watcher: safety re-scan")
        if self._table is not None:
            self._table.limit_reported = False
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
                self.add_beamtime_dir(path, "config")
        for state in list(self._bt_files.values()):
            if state.tree is not None and state.tree.root is not None:
                state.tree.root.walk(self)
        self._lists.flush()

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

    # -- what the owners may ask (the Host protocol of .owners) ----------------------
    def watch(self, path: str, mask: int, owner: Owner, context: str) -> Optional[int]:
        """Add a watch for *owner*; a failure is reported and gives None."""
        assert self._table is not None
        return self._table.watch(path, mask, owner, context)

    def release(self, owner: Owner) -> None:
        if self._table is not None:
            self._table.release(owner)
        owner.wd = None

    def ensure_list(self, node: ScanDir, final: Optional[bool]) -> None:
        self._lists.ensure(node, final)

    def drop_list(self, node: ScanDir, report: bool, deleted: bool) -> None:
        self._lists.drop(node, report, deleted)

    def request_read(self, watch: ListWatch, final: Optional[bool]) -> None:
        self._lists.request_read(watch, final)

    def beamtime_dir_paths(self) -> List[str]:
        return list(self._bt_dirs)

    def forget_files_in(self, directory: str) -> None:
        """Forget the beamtime files of *directory* (it went; a re-scan finds them again)."""
        for path, state in list(self._bt_files.items()):
            if state.directory == directory:
                self.forget_file(path)

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
            self._blacklist = BlacklistDir(os.path.dirname(path), os.path.basename(path))
        if self._blacklist.wd is None:
            self._blacklist.wd = self.watch(self._blacklist.path, DIR_MASK, self._blacklist, path)

    def blacklist_changed(self) -> None:
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
            self._base = BaseDir(os.path.normpath(base))
        if self._base.wd is None:
            self._base.wd = self.watch(self._base.path, DIR_MASK, self._base, self._base.path)
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
                self.drop_source(path, "base")
        for path in present:
            self.add_beamtime_dir(path, "base")

    def add_beamtime_dir(self, path: str, source: str) -> None:
        entry = scandir_blacklisted(path, self.config)
        if entry is not None:
            logger.debug("Beamtime directory %s is blacklisted (%s)", path, entry)
            return
        directory = self._bt_dirs.get(path)
        if directory is None:
            directory = self._bt_dirs[path] = BeamtimeDir(path)
            logger.info("Watcher: beamtime directory %s", path)
        directory.sources.add(source)
        self._sync_beamtime_dir(directory)

    def _sync_beamtime_dir(self, directory: BeamtimeDir) -> None:
        if directory.wd is None:
            directory.wd = self.watch(directory.path, DIR_MASK, directory, directory.path)
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
                self.forget_file(path)
        for path in files:
            self.examine(path, force=False)

    def drop_source(self, path: str, source: str) -> None:
        directory = self._bt_dirs.get(path)
        if directory is None:
            return
        directory.sources.discard(source)
        if not directory.sources:
            self.drop_beamtime_dir(directory)

    def drop_beamtime_dir(self, directory: BeamtimeDir) -> None:
        logger.info("Watcher: beamtime directory %s is gone", directory.path)
        for path, state in list(self._bt_files.items()):
            if state.directory == directory.path:
                self.forget_file(path)
        self.release(directory)
        if self._bt_dirs.get(directory.path) is directory:
            del self._bt_dirs[directory.path]

    # -- beamtime files --------------------------------------------------------------
    def examine(self, path: str, force: bool) -> None:
        """(Re)read a beamtime file when it is new or changed (always with *force*)."""
        state = self._bt_files.get(path)
        try:
            stat = os.stat(path)
        except OSError:
            if state is not None:
                self.forget_file(path)
            return
        if state is not None and not force and state.stamp == stamp(stat):
            return
        if state is None:
            state = self._bt_files[path] = BeamtimeFile(path, os.path.dirname(path))
        state.stamp = stamp(stat)
        self._bt_retry.pop(path, None)
        try:
            beamtime = read_beamtime(path)
        except BeamtimeError as error:
            if not os.path.exists(path):
                self.forget_file(path)
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
                    # a file naming another id than its name is an operator's error
                    level = (
                        logging.ERROR if isinstance(error, BeamtimeIdMismatch) else logging.WARNING
                    )
                    logger.log(level, "Beamtime file cannot be watched: %s", error)
                self._emit("beamtime_error", path, error)
            return
        state.error = None
        state.beamtime = beamtime
        self._apply_filter(state)

    def _apply_filter(self, state: BeamtimeFile) -> None:
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

    def _start_tree(self, state: BeamtimeFile, beamtime: Beamtime) -> None:
        try:
            list_name = list_file_name(self.config, beamtime.beamtime_id)
        except ConfigError as error:
            if state.error != str(error):
                state.error = str(error)
                logger.warning("Beamtime file %s cannot be watched: %s", state.path, error)
                self._emit("beamtime_error", state.path, error)
            return
        tree = Tree(state, beamtime, scan_paths(self.config, beamtime), list_name)
        try:
            stat = os.stat(beamtime.directory)
            ident = (stat.st_dev, stat.st_ino)
        except OSError:
            ident = (-1, -1)
        root = ScanDir(
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
        root.walk(self)

    def _end_tree(self, state: BeamtimeFile, report: bool) -> None:
        tree = state.tree
        if tree is None:
            return
        state.tree = None
        if tree.root is not None:
            tree.root.remove(self, report=False)
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
                self.examine(path, force=True)
        self._lists.flush()
        self._arm_retry_timer()

    def forget_file(self, path: str) -> None:
        self._bt_retry.pop(path, None)
        state = self._bt_files.pop(path, None)
        if state is not None and state.tree is not None:
            self._end_tree(state, report=True)

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
                elif event.mask & SELF_GONE:
                    for owner in self._table.users(event.wd):
                        self._gone(owner, event.wd)
                else:
                    for owner in self._table.users(event.wd):
                        owner.on_event(self, event)
            except Exception:
                logger.exception("Watcher: error handling %r", event)
        if overflow:
            logger.warning(
                "Watcher: the inotify queue overflowed (fs.inotify."
                "max_queued_events); re-scanning everything"
            )
            self._rescan_all()
        self._lists.flush()

    def _gone(self, owner: Owner, wd: int) -> None:
        """The watched directory or file itself was deleted, moved or unmounted."""
        if owner.wd != wd:
            return  # already let go (or re-watched)
        self.release(owner)
        owner.on_gone(self)
