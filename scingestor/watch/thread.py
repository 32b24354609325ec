"""One thread blocked on one inotify descriptor: started, stopped and asked to run jobs.

Kept apart from what is watched (:mod:`.discovery`) because its concerns
are the thread's: a start that returns only when the first scan is done
(and raises what it raised), a stop that wakes the thread through its pipe,
and work handed to the thread from other threads, so that everything the
watcher knows is touched by one thread only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Optional

from .inotify import EventLoop, Inotify, InotifyEvent

logger = logging.getLogger(__name__)


class EventThread:
    """The event thread of a watcher; subclasses give the scan and the event handler."""

    #: the name used in log lines and for the thread
    label = "Watcher"

    def __init__(self) -> None:
        self._loop: Optional[EventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._thread_id: Optional[int] = None
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None

    # -- what a subclass gives ------------------------------------------------
    def _prepare(self, inotify: Inotify) -> None:
        """Called on the caller's thread before the event thread starts."""

    def _initial_scan(self) -> None:
        """The first scan, on the event thread; :meth:`start` returns after it."""

    def _on_events(self, events: List[InotifyEvent]) -> None:
        """One batch of events, on the event thread."""

    # -- the thread ------------------------------------------------------------
    def start(self) -> None:
        """Scan everything, then watch; returns when the initial scan is done.

        The scan runs on the event thread (all sink calls come from there).
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.label}.start() called twice")
        inotify = Inotify()
        self._prepare(inotify)
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
                    "%s: the event thread did not stop within %.1f s (a sink call blocks?)",
                    self.label,
                    timeout,
                )

    def _run_on_thread(
        self, job: Callable[[], None], name: str, wait: bool, timeout: float
    ) -> None:
        """Run *job* on the event thread (queued through the wake-up pipe).

        With *wait* this returns when it is done (or after *timeout*, or
        when the thread stops meanwhile).
        """
        loop = self._loop
        if loop is None or not self.running:
            logger.warning("%s.%s(): the watcher is not running", self.label, name)
            return
        if threading.get_ident() == self._thread_id:
            job()
            return
        done = threading.Event()

        def run() -> None:
            try:
                job()
            finally:
                done.set()

        loop.call_soon(run)
        deadline = time.monotonic() + timeout
        while wait and not done.wait(0.2):  # the caller's thread, not the event thread
            if not self.running:
                return  # stopped meanwhile: the job will not run
            if time.monotonic() > deadline:
                logger.warning("%s.%s(): not finished after %.0f s", self.label, name, timeout)
                return

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
