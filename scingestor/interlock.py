"""One scan at a time across processes: the daemon, the Tango device and batch runs.

Within one process the job queue and the batch's chains already run the
lines of one scan one after the other.  Two processes on one configuration
(an operator's ``scicat_dataset_ingest`` beside the running daemon) did
not know of each other: both read a dataset's blocks, both posted the
missing ones, and both appended a record (see docs/decisions/0006).

:func:`scan_lock` takes a POSIX record lock (``fcntl.lockf``) on one byte
of a lock file beside the ingested list, the byte chosen by the scan's
name.  It is held around a scan's read-then-post and its record, so the
second process finds the first one's record (and blocks) once it gets the
lock.  Record locks work across the hosts of a cluster file system (GPFS,
NFS) where ``flock`` may not, and one lock file serves every scan of a
list.  Such locks belong to the process, so each lock file is opened once
per process and kept open while any thread holds a slot (closing any
descriptor of it would drop all the process's locks) and closed when
none does (an idle daemon must not keep its var dir from a read-only
remount); threads of one process exclude each other with a condition of
their own.  Two names hashing to one byte only wait for
each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
import zlib
from typing import Dict, Iterator, Optional, Set

logger = logging.getLogger(__name__)

#: bytes of the lock file the scan names are spread over
SLOTS = 1 << 20


class _LockFile:
    """One lock file, open while a thread of the process holds one of its slots.

    Closed again when none does: a file open for writing keeps its file
    system from being remounted read-only, and an idle daemon must not.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None
        self.held: Set[int] = set()
        self.free = threading.Condition()

    def opened(self) -> int:
        """The descriptor (the caller holds ``free`` and a slot)."""
        if self.fd is None:
            # the ingested list's directory (under ingestor_var_dir) may not
            # be there before the first record
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        return self.fd

    def leave(self, offset: int) -> None:
        """Give slot *offset* up; the last one out closes (dropping no one's lock)."""
        with self.free:
            self.held.discard(offset)
            if not self.held and self.fd is not None:
                os.close(self.fd)
                self.fd = None
            self.free.notify_all()


_files: Dict[str, _LockFile] = {}
_files_lock = threading.Lock()


def lock_path(ingested_path: str) -> str:
    """The lock file of an ingested list: beside it, named after it.

    Not hidden: the metadata folders hold only our JSON and the ingested
    list otherwise, and a hidden name there means a temporary.
    """
    return ingested_path + ".lock"


def _open(path: str) -> _LockFile:
    with _files_lock:
        found = _files.get(path)
        if found is None:
            found = _files[path] = _LockFile(path)
        return found


def slot(scanname: str) -> int:
    return zlib.crc32(os.path.normpath(scanname).encode("utf-8")) % SLOTS


@contextlib.contextmanager
def scan_lock(ingested_path: str, scanname: str) -> Iterator[bool]:
    """Hold scan *scanname* of the list whose ingested list is *ingested_path*.

    Yields whether another process held it first (the caller waited).
    Raises OSError when the lock file cannot be made (a read-only
    directory: then the ingested list cannot be written either).
    """
    lock = _open(lock_path(ingested_path))
    offset = slot(scanname)
    with lock.free:
        while offset in lock.held:
            lock.free.wait()
        lock.held.add(offset)
        try:
            fd = lock.opened()
        except OSError:
            lock.held.discard(offset)
            lock.free.notify_all()
            raise
    waited = False
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not waited:
                logger.info("%s: waiting for another ingestor process", scanname)
            waited = True
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
                break
            except OSError as error:
                # the kernel sees a cycle between two processes' threads that
                # is none (each thread holds one slot): try again shortly
                if error.errno != errno.EDEADLK:
                    raise
                time.sleep(0.05)
        try:
            yield waited
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
    finally:
        lock.leave(offset)
