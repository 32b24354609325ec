"""The watched things: each holds an inotify watch and knows what its events mean.

The watcher (:mod:`.discovery`) hands every event of a watch to each of
its owners (:meth:`Owner.on_event`), and tells them when the watched
directory or file itself went (:meth:`Owner.on_gone`), the way watchdog
gives each watch its own callbacks.  So a new kind of watched thing is one
new class here; the watcher's event loop does not change.

The owners act through a :class:`Host` (the watcher): they read its
configuration and call its few verbs (examine a beamtime file, add a
beamtime directory, watch a list file, ...).  All of it runs on the one
event thread.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore

from ..beamtime import Beamtime, is_beamtime_file
from ..config import IngestorConfig
from ..errors import WatchLimitError
from ..layout import PathConverter, scandir_blacklisted
from .inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_UNMOUNT,
    Inotify,
    InotifyEvent,
)
from .tailer import ListFileTailer

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

APPEAR = IN_CREATE | IN_MOVED_TO
VANISH = IN_DELETE | IN_MOVED_FROM
WRITTEN = IN_CLOSE_WRITE | IN_MOVED_TO
SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT

Ident = Tuple[int, int]
Stamp = Tuple[int, int, int]


def stamp(stat: os.stat_result) -> Stamp:
    """What tells a changed file from an unchanged one without reading it."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class Host(Protocol):
    """What the owners may ask of the watcher (on the event thread)."""

    config: IngestorConfig

    def watch(self, path: str, mask: int, owner: "Owner", context: str) -> Optional[int]: ...

    def release(self, owner: "Owner") -> None: ...

    def examine(self, path: str, force: bool) -> None: ...

    def forget_file(self, path: str) -> None: ...

    def forget_files_in(self, directory: str) -> None: ...

    def add_beamtime_dir(self, path: str, source: str) -> None: ...

    def drop_source(self, path: str, source: str) -> None: ...

    def drop_beamtime_dir(self, directory: "BeamtimeDir") -> None: ...

    def beamtime_dir_paths(self) -> List[str]: ...

    def blacklist_changed(self) -> None: ...

    def ensure_list(self, node: "ScanDir", final: Optional[bool]) -> None: ...

    def drop_list(self, node: "ScanDir", report: bool, deleted: bool) -> None: ...

    def request_read(self, watch: "ListWatch", final: Optional[bool]) -> None: ...


class Owner:
    """Something that holds a watch (``wd``); subclasses say what its events mean."""

    path: str
    wd: Optional[int]

    def on_event(self, host: Host, event: InotifyEvent) -> None:
        """An event of the watch (not the watched thing itself going)."""

    def on_gone(self, host: Host) -> None:
        """The watched directory or file itself was deleted, moved or unmounted.

        The watch is already released when this is called.
        """


# ---------------------------------------------------------------------------
# beamtime level


@dataclass(eq=False)
class BaseDir(Owner):
    """``beamtime_base_dir``: its subdirectories are beamtime directories."""

    path: str
    wd: Optional[int] = None

    def on_event(self, host: Host, event: InotifyEvent) -> None:
        mask, name = event.mask, event.name
        if not name:
            return
        path = os.path.join(self.path, name)
        if mask & VANISH:
            host.drop_source(path, "base")
        elif mask & APPEAR and (mask & IN_ISDIR or os.path.isdir(path)):
            host.add_beamtime_dir(path, "base")

    def on_gone(self, host: Host) -> None:
        logger.warning(
            "beamtime_base_dir %s is gone (looked for again at each safety re-scan)", self.path
        )
        for path in host.beamtime_dir_paths():
            host.drop_source(path, "base")


@dataclass(eq=False)
class BeamtimeDir(Owner):
    """A beamtime directory: its beamtime metadata files appear, change and vanish."""

    path: str
    sources: Set[str] = field(default_factory=set)  # "config" and/or "base"
    wd: Optional[int] = None

    def on_event(self, host: Host, event: InotifyEvent) -> None:
        mask, name = event.mask, event.name
        if not name or mask & IN_ISDIR or not is_beamtime_file(name, host.config):
            return
        path = os.path.join(self.path, name)
        if mask & WRITTEN:
            host.examine(path, force=True)
        elif mask & VANISH:
            host.forget_file(path)

    def on_gone(self, host: Host) -> None:
        if "config" in self.sources:  # configured: it stays, to be found again
            host.forget_files_in(self.path)
            logger.warning(
                "Beamtime directory %s is gone (looked for again at each safety re-scan)",
                self.path,
            )
        else:
            host.drop_beamtime_dir(self)


@dataclass(eq=False)
class BlacklistDir(Owner):
    """The directory of the beamtime id blacklist file (editors replace files)."""

    path: str
    name: str
    wd: Optional[int] = None

    def on_event(self, host: Host, event: InotifyEvent) -> None:
        if event.name == self.name and event.mask & (WRITTEN | VANISH):
            host.blacklist_changed()

    def on_gone(self, host: Host) -> None:
        host.blacklist_changed()


@dataclass(eq=False)
class BeamtimeFile:
    """What we know about one beamtime metadata file (no watch of its own)."""

    path: str
    directory: str
    stamp: Optional[Stamp] = None
    beamtime: Optional[Beamtime] = None  # last good content
    tree: Optional["Tree"] = None  # set while it is watched (active)
    skipped: Optional[str] = None  # blacklist reason (logged once)
    error: Optional[str] = None  # last error reported


# ---------------------------------------------------------------------------
# scan directories and list files


@dataclass(eq=False)
class Tree:
    """The scan dirs and list files of one active beamtime."""

    state: BeamtimeFile
    beamtime: Beamtime
    converter: PathConverter
    list_name: str
    root: Optional["ScanDir"] = None
    nodes: Dict[Ident, "ScanDir"] = field(default_factory=dict)  # by (st_dev, st_ino)


@dataclass(eq=False)
class ScanDir(Owner):
    """A scan directory: its list file, and its subdirectories down to the allowed depth."""

    tree: Tree
    path: str
    name: str
    depth: int  # levels still allowed below (-1: unlimited)
    parent: Optional["ScanDir"]
    ident: Ident
    wd: Optional[int] = None
    children: Dict[str, "ScanDir"] = field(default_factory=dict)
    list: Optional["ListWatch"] = None
    alive: bool = True

    def descends(self, config: IngestorConfig) -> bool:
        """Are subdirectories watched? Not below the depth, nor below a list file unless asked."""
        return self.depth != 0 and (config.watch_scandir_subdir or self.list is None)

    def on_event(self, host: Host, event: InotifyEvent) -> None:
        if not self.alive or not event.name:
            return
        mask, name = event.mask, event.name
        if name == self.tree.list_name and not mask & IN_ISDIR:
            if mask & VANISH:
                host.drop_list(self, report=True, deleted=True)
                if self.descends(host.config):
                    self.walk(host)  # subdirs are watched again
            elif mask & (IN_CREATE | WRITTEN):
                had_list = self.list is not None
                # created: a writer is at work and its close will come; written: complete
                host.ensure_list(self, bool(mask & WRITTEN))
                if not had_list and self.list is not None and not self.descends(host.config):
                    for child in list(self.children.values()):
                        child.remove(host, report=True)
            return
        if mask & VANISH:
            gone = self.children.get(name)
            if gone is not None:
                gone.remove(host, report=True)
        elif mask & APPEAR and self.descends(host.config) and name not in self.children:
            path = os.path.join(self.path, name)
            if mask & IN_ISDIR or (os.path.islink(path) and os.path.isdir(path)):
                new = self.new_child(host, name)
                if new is not None:
                    new.walk(host)

    def on_gone(self, host: Host) -> None:
        if not self.alive:
            return
        if self is self.tree.root:
            logger.info("Beamtime directory %s is gone", self.path)
            host.forget_file(self.tree.state.path)
        else:
            self.remove(host, report=True)

    def new_child(self, host: Host, name: str) -> Optional["ScanDir"]:
        """The subdirectory *name* as a new node; None if blacklisted, not a dir or known."""
        tree = self.tree
        path = os.path.join(self.path, name)
        entry = scandir_blacklisted(path, host.config, tree.converter)
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
            ancestor: Optional[ScanDir] = self
            while ancestor is not None and ancestor is not known:
                ancestor = ancestor.parent
            if still or ancestor is not None:  # a symlink loop, or a second path to it
                logger.debug("Scan directory %s is %s, already watched", path, known.path)
                return None
            known.remove(host, report=True)  # stale: its inode was reused
        depth = self.depth - 1 if self.depth > 0 else -1
        child = ScanDir(tree, path, name, depth, self, ident)
        self.children[name] = child
        tree.nodes[ident] = child
        return child

    def walk(self, host: Host) -> None:
        """Watch and list this dir and what is below it; add/remove what changed.

        Listing after adding the watch means nothing created in between is lost.
        """
        stack = [self]
        while stack:
            node = stack.pop()
            if not node.alive:
                continue
            tree = node.tree
            if node.wd is None:
                node.wd = host.watch(node.path, DIR_MASK, node, tree.state.path)
            try:
                entries = list(os.scandir(node.path))
            except OSError:
                if node is not tree.root:
                    node.remove(host, report=True)
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
                host.ensure_list(node, None)
            elif node.list is not None:
                host.drop_list(node, report=True, deleted=True)
            if not node.descends(host.config):
                for child in list(node.children.values()):
                    child.remove(host, report=True)
                continue
            for name, child in list(node.children.items()):
                if name not in subdirs:
                    child.remove(host, report=True)
            for name in sorted(subdirs, reverse=True):
                known = node.children.get(name)
                if known is None:
                    known = node.new_child(host, name)
                if known is not None:
                    stack.append(known)

    def remove(self, host: Host, report: bool) -> None:
        """Stop watching this dir and everything below it."""
        tree = self.tree
        stack = [self]
        while stack:
            current = stack.pop()
            stack.extend(current.children.values())
            current.alive = False
            if current.list is not None:
                host.drop_list(current, report=report, deleted=False)
            host.release(current)
            if tree.nodes.get(current.ident) is current:
                del tree.nodes[current.ident]
        if self.parent is not None and self.parent.children.get(self.name) is self:
            del self.parent.children[self.name]


@dataclass(eq=False)
class ListWatch(Owner):
    """A dataset list file: its writes and its close ask for a read."""

    node: ScanDir
    path: str
    tailer: ListFileTailer
    ident: Optional[Ident] = None
    wd: Optional[int] = None
    alive: bool = True

    def on_event(self, host: Host, event: InotifyEvent) -> None:
        if not self.alive or self.wd != event.wd:
            return
        if event.mask & IN_CLOSE_WRITE:
            host.request_read(self, True)
        elif event.mask & IN_MODIFY:
            host.request_read(self, False)

    def on_gone(self, host: Host) -> None:
        if self.alive:  # deleted or moved away: replaced?
            host.ensure_list(self.node, True)


# ---------------------------------------------------------------------------


class WatchTable:
    """wd bookkeeping: one kernel watch per inode, shared by several owners.

    A beamtime dir is watched for its beamtime files and, as the root scan
    dir, for its list file and subdirs; inotify hands out one wd per inode,
    so the watch is removed only when its last owner lets go.  A watch that
    cannot be added is reported once (*report* for the watch limit, a
    warning otherwise) and gives None: the safety re-scan tries again.
    """

    def __init__(
        self,
        inotify: Inotify,
        report: Callable[[str, Exception], None],
        warn_once: Callable[..., None],
        warned: Set[str],
    ) -> None:
        self.inotify = inotify
        self.owners: Dict[int, List[Owner]] = {}
        self._report = report
        self._warn_once = warn_once
        self._warned = warned
        self.limit_reported = False

    def watch(self, path: str, mask: int, owner: Owner, context: str) -> Optional[int]:
        """Add a watch for *owner*; failures are reported (ENOSPC clearly) and give None."""
        try:
            wd = self.inotify.add_watch(path, mask)
        except WatchLimitError as error:
            if not self.limit_reported:
                self.limit_reported = True
                logger.error("%s", error)
                self._report(context, error)
            return None
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
                self._warn_once(path, "%s cannot be watched: %s", path, error.strerror or error)
            return None
        self._warned.discard(path)
        users = self.owners.setdefault(wd, [])
        if not any(user is owner for user in users):
            users.append(owner)
        return wd

    def release(self, owner: Owner) -> None:
        """*owner* lets go of its watch; the kernel watch goes with its last owner."""
        wd, owner.wd = owner.wd, None
        if wd is None or wd not in self.owners:
            return
        users = self.owners[wd]
        users[:] = [user for user in users if user is not owner]
        if not users:
            del self.owners[wd]
            try:
                self.inotify.rm_watch(wd)
            except OSError as error:  # pragma: no cover - fd trouble
                logger.debug("rm_watch(%d): %s", wd, error)

    def users(self, wd: int) -> List[Owner]:
        return list(self.owners.get(wd, ()))

    def dropped(self, wd: int) -> List[Owner]:
        """The kernel removed the watch (IN_IGNORED): forget it, return its owners."""
        return self.owners.pop(wd, [])

    def __len__(self) -> int:
        return len(self.owners)
