"""Linux inotify through ctypes on libc, and the one-fd event loop.

Why not ``inotifyx`` (installed as a dependency): its C binding crashes the
whole process with SIGSEGV as soon as a file whose name is not valid UTF-8
appears in a watched directory (tried with inotifyx-py3 0.3: a Latin-1
``café.lst`` written by an SMB client is enough), and its descriptor is not
close-on-exec.  The kernel interface is three system calls and a fixed
record layout, so we call libc directly: ``inotify_init1(IN_NONBLOCK |
IN_CLOEXEC)``, names decoded with :func:`os.fsdecode` (surrogateescape, so
any name round-trips to the file system), errno kept exact (ENOSPC becomes
a :class:`~scingestor.errors.WatchLimitError` naming the sysctl).

:class:`EventLoop` is the one thread's loop: it blocks in ``poll`` on the
inotify fd and a wake-up pipe, with a timeout only when a timer is due (the
slow safety re-scan), so an idle daemon sleeps in the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import select
import struct
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, List, NamedTuple, Optional, Tuple

from ..errors import WatchError, WatchLimitError

logger = logging.getLogger(__name__)

# <sys/inotify.h>
IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_ONESHOT = 0x80000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: The watch (and everything reached through it) is gone.
IN_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len  (struct inotify_event)
_READ_SIZE = 256 * 1024
_MAX_BATCH = 16384  # events handled before the loop looks at its pipe again

MAX_WATCHES_SYSCTL = "/proc/sys/fs/inotify/max_user_watches"
MAX_INSTANCES_SYSCTL = "/proc/sys/fs/inotify/max_user_instances"


class InotifyEvent(NamedTuple):
    """One ``struct inotify_event``; ``name`` is '' for events about the watch itself."""

    wd: int
    mask: int
    cookie: int
    name: str


def _load_libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


_libc: Optional[ctypes.CDLL] = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = _load_libc()
    return _libc


def _os_error(path: Optional[str] = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), path)


def _raw_init() -> int:
    fd = _lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise _os_error()
    return int(fd)


def _raw_add_watch(fd: int, path: str, mask: int) -> int:
    """``inotify_add_watch``; raises OSError with the errno (tests wrap this one)."""
    wd = _lib().inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        raise _os_error(path)
    return int(wd)


def _raw_rm_watch(fd: int, wd: int) -> None:
    if _lib().inotify_rm_watch(fd, wd) < 0:
        raise _os_error()


def _sysctl(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def watch_limit_error(path: str) -> WatchLimitError:
    """The error for ENOSPC from inotify_add_watch: it is the per-user watch limit."""
    return WatchLimitError(
        "cannot be watched: the inotify watch limit is reached "
        f"(fs.inotify.max_user_watches = {_sysctl(MAX_WATCHES_SYSCTL)}); raise it, e.g. "
        "'sysctl fs.inotify.max_user_watches=1048576' and in /etc/sysctl.d/, "
        "or lower max_scandir_depth / extend scandir_blacklist",
        path,
    )


def parse_events(data: bytes) -> List[InotifyEvent]:
    """Split what ``read`` returned from an inotify fd into events."""
    events: List[InotifyEvent] = []
    pos, size = 0, len(data)
    while pos + _EVENT.size <= size:
        wd, mask, cookie, length = _EVENT.unpack_from(data, pos)
        pos += _EVENT.size
        raw = data[pos : pos + length].split(b"\0", 1)[0]
        pos += length
        events.append(InotifyEvent(wd, mask, cookie, os.fsdecode(raw) if raw else ""))
    return events


class Inotify:
    """An inotify instance: non-blocking, close-on-exec."""

    def __init__(self) -> None:
        try:
            self.fd: int = _raw_init()
        except OSError as error:
            if error.errno == errno.EMFILE:
                raise WatchLimitError(
                    "cannot create an inotify instance: the limit is reached "
                    f"(fs.inotify.max_user_instances = {_sysctl(MAX_INSTANCES_SYSCTL)})"
                ) from None
            raise WatchError(f"cannot create an inotify instance: {error.strerror}") from None

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch *path*; the same inode always gives the same wd (the mask is replaced)."""
        try:
            return _raw_add_watch(self.fd, path, mask)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise watch_limit_error(path) from None
            raise

    def rm_watch(self, wd: int) -> None:
        """Remove a watch; one the kernel already dropped (EINVAL) is fine."""
        try:
            _raw_rm_watch(self.fd, wd)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise

    def read_events(self, limit: int = _MAX_BATCH) -> List[InotifyEvent]:
        """All queued events (up to about *limit*), without blocking."""
        events: List[InotifyEvent] = []
        while len(events) < limit:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if not data:
                break
            events.extend(parse_events(data))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class EventLoop:
    """One thread blocked in ``poll`` on the inotify fd and a wake-up pipe.

    * ``call_soon`` (any thread) queues a function and writes a byte to the
      pipe: this is how ``stop`` and ``rescan`` reach the thread.
    * timers (event thread only) set the poll timeout; with none pending the
      thread sleeps until an event arrives.  Timers due within
      :attr:`SLACK` seconds of each other run on the same wake-up.
    * ``wakeups`` counts the returns from poll (the idle benchmark reads it).
    """

    SLACK = 0.05

    def __init__(self, inotify: Inotify, on_events: Callable[[List[InotifyEvent]], None]) -> None:
        self.inotify = inotify
        self.on_events = on_events
        self.wakeups = 0
        self._read_fd, self._write_fd = os.pipe()  # non-inheritable (PEP 446)
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._calls: Deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._timers: Dict[str, Tuple[float, Callable[[], None]]] = {}
        self._stopping = False

    # -- any thread ----------------------------------------------------------
    def call_soon(self, function: Callable[[], None]) -> None:
        with self._lock:
            self._calls.append(function)
        self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _wake(self) -> None:
        with self._lock:  # never write to a closed (and maybe reused) fd number
            if self._write_fd < 0:
                return
            try:
                os.write(self._write_fd, b"w")
            except OSError:
                pass  # pipe full: a wake-up is pending anyway

    # -- event thread ----------------------------------------------------------
    def set_timer(self, key: str, delay: float, callback: Callable[[], None]) -> None:
        self._timers[key] = (time.monotonic() + max(0.0, delay), callback)

    def cancel_timer(self, key: str) -> None:
        self._timers.pop(key, None)

    def timer_deadline(self, key: str) -> Optional[float]:
        entry = self._timers.get(key)
        return entry[0] if entry else None

    def _timeout_ms(self) -> Optional[int]:
        if not self._timers:
            return None  # sleep until something happens
        deadline = min(entry[0] for entry in self._timers.values())
        return max(0, int((deadline - time.monotonic()) * 1000 + 0.999))

    def _run_timers(self) -> None:
        if not self._timers:
            return
        now = time.monotonic() + self.SLACK
        due = sorted(
            (deadline, key) for key, (deadline, _cb) in self._timers.items() if deadline <= now
        )
        for _deadline, key in due:
            entry = self._timers.pop(key, None)
            if entry is not None:
                self._guarded(entry[1])

    def _run_calls(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._calls:
                    return
                function = self._calls.popleft()
            self._guarded(function)

    @staticmethod
    def _guarded(function: Callable[[], None]) -> None:
        try:
            function()
        except Exception:  # the one event thread must survive anything
            logger.exception("Watcher: unexpected error in the event thread")

    def run(self) -> None:
        """The loop; returns after :meth:`stop`.  Closes both fds on the way out."""
        poller = select.poll()
        poller.register(self.inotify.fileno(), select.POLLIN)
        poller.register(self._read_fd, select.POLLIN)
        try:
            while not self._stopping:
                ready = poller.poll(self._timeout_ms())
                self.wakeups += 1
                fds = {fd for fd, _flags in ready}
                if self._read_fd in fds:
                    self._run_calls()
                if self._stopping:
                    break
                if self.inotify.fileno() in fds:
                    events = self.inotify.read_events()
                    if events:
                        self._guarded(functools.partial(self.on_events, events))
                self._run_timers()
        finally:
            self.close()

    def close(self) -> None:
        self.inotify.close()
        with self._lock:
            for fd in (self._read_fd, self._write_fd):
                if fd >= 0:
                    os.close(fd)
            self._read_fd = self._write_fd = -1
