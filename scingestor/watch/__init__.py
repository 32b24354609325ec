"""File-system watching: beamtimes, scan dirs and list files on one inotify loop.

The service builds a :class:`Watcher` with a :class:`WatchSink` and gets
events from one thread; :class:`ListFileTailer` reads complete list records.
"""

from __future__ import annotations

from ..errors import WatchError, WatchLimitError
from .discovery import SETTLE_TIME, Watcher
from .inotify import EventLoop, Inotify, InotifyEvent
from .sink import WatchSink, core_form
from .tailer import ListFileTailer, ListRecord

__all__ = [
    "Watcher",
    "WatchSink",
    "ListRecord",
    "ListFileTailer",
    "core_form",
    "SETTLE_TIME",
    "WatchError",
    "WatchLimitError",
    "Inotify",
    "InotifyEvent",
    "EventLoop",
]
