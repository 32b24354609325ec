"""Temporary files of ours that a killed process left behind, and their removal.

Generators write into a hidden ``.part-*`` directory beside their output
(:func:`scingestor.metadata.files.written_whole`), and the service probes a
directory with a ``.scingestor-probe-*`` file.  Both are removed when the
step ends, but a ``kill -9`` (or a power cut) leaves them for good.

Removing them is only safe for files no live process is still writing:
the metadata directories are shared by the daemon, the Tango device and
batch runs, possibly on several hosts of one GPFS.  So each name carries
its host and process id (``.part-<host>-<pid>-<random>``); a leftover is
removed when it is of this host and its process is gone.  Names from
before (no host and pid) are removed once a day old: no generator or probe
lives that long.  A recycled pid only keeps a leftover a while longer.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import threading
import time
from typing import Set

logger = logging.getLogger(__name__)

PART = ".part-"
PROBE = ".scingestor-probe-"
#: leftovers without host and pid are removed when older than this (s)
UNNAMED_AGE = 24 * 3600.0

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname().split(".")[0]) or "host"
_OWNED = re.compile(r"^(?P<host>[A-Za-z0-9_]+)-(?P<pid>[0-9]+)-")

_swept: Set[str] = set()
_swept_lock = threading.Lock()


def prefix(kind: str) -> str:
    """The name prefix of a temporary of *kind* (:data:`PART`, :data:`PROBE`) made now."""
    return f"{kind}{_HOST}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Is process *pid* alive (on this host)?  Another user's counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def abandoned(name: str, path: str, now: float) -> bool:
    """Is *name* (in its directory at *path*) one of our leftovers nobody writes any more?"""
    for kind in (PART, PROBE):
        if name.startswith(kind):
            rest = name[len(kind) :]
            break
    else:
        return False
    owned = _OWNED.match(rest)
    if owned:
        if owned.group("host") != _HOST:
            return False  # another host's: its own start cleans it
        pid = int(owned.group("pid"))
        return pid != os.getpid() and not pid_alive(pid)
    try:
        age = now - os.lstat(path).st_mtime
    except OSError:
        return False
    return age > UNNAMED_AGE


def sweep(directory: str) -> int:
    """Remove the leftovers in *directory* (once per process and directory); how many.

    Never raises: a directory that cannot be read or cleaned keeps its
    leftovers, which harm nothing but space.
    """
    key = os.path.abspath(directory)
    with _swept_lock:
        if key in _swept:
            return 0
        _swept.add(key)
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(key))
    except OSError:
        return 0
    for entry in entries:
        if not abandoned(entry.name, entry.path, now):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as error:
            logger.debug("%s: left as it is: %s", entry.path, error)
            continue
        removed += 1
    if removed:
        logger.info("%s: removed %d temporary file(s) of killed processes", key, removed)
    return removed
