"""The job queue: which accepted list line runs next, and when.

Pure bookkeeping, so the ordering rules can be tested without threads,
files or a clock: no threads, no I/O, and the caller passes the time
(``time.monotonic()`` in the service).  The service holds its lock around
every call and wakes its workers after a change.

The rules:

- a job runs once it is due (the list's ``ingestion_delay_time``, or a
  retry's backoff), the earliest due first, in listing order among equals;
- lines naming one scan (``s``, ``s:1`` …, see :func:`scingestor.scantask.scan_keys`)
  run one at a time, the one listed first first, also while it waits for a
  retry: they share a dataset and metadata files;
- within a list file, a job that takes part in measurement grouping runs
  alone, and not before an earlier grouped job of its list that waits for a
  retry (their callbacks merge into shared files, in list order);
- a retry waits ``retry_base_delay * 2**(attempts - 1)``, at most
  :data:`RETRY_MAX_SECONDS`.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Set, Tuple

from .errors import ScingestorError
from .journal import Job
from .listfile import ScanLine, parse_line
from .scantask import scan_keys

#: the longest wait between two tries of a job
RETRY_MAX_SECONDS = 600.0

ScanKeys = Tuple[Hashable, ...]


def grouped(job: Job) -> bool:
    """Does the job take part in measurement grouping (order matters)?"""
    return bool(job.measurement) or job.is_measurement


def job_scan_keys(job: Job) -> ScanKeys:
    """The scan keys of a job's line (none for a line that does not parse)."""
    try:
        line = parse_line(job.text, job.lineno, job.list_file)
    except ScingestorError:
        return ()
    if not isinstance(line, ScanLine):
        return ()
    return scan_keys(job.list_file, job.beamtime_file, line)


def backoff(attempts: int, base: float) -> float:
    """Seconds before try number *attempts* + 1: doubling from *base*, capped."""
    return min(RETRY_MAX_SECONDS, base * 2 ** min(max(attempts, 1) - 1, 10))


@dataclass
class ListOrder:
    """The jobs of one list file that decide whether another of its jobs may start."""

    #: jobs being ingested (id → takes part in grouping)
    running: Dict[int, bool] = field(default_factory=dict)
    #: grouped jobs waiting for a retry: later grouped jobs wait for them
    retrying_grouped: Set[int] = field(default_factory=set)

    def may_start(self, job: Job) -> bool:
        """Scans run side by side unless measurement grouping needs their order."""
        if grouped(job) and any(other < job.id for other in self.retrying_grouped):
            return False
        if not self.running:
            return True
        return not (any(self.running.values()) or grouped(job))

    @property
    def empty(self) -> bool:
        return not self.running and not self.retrying_grouped


class JobQueue:
    """Due jobs, the ones running, and the rules that hold a due job back.

    *keys* names the scans a job's line touches (the real rule by default;
    tests may pass another).
    """

    def __init__(
        self, retry_base_delay: float, keys: Callable[[Job], ScanKeys] = job_scan_keys
    ) -> None:
        self.retry_base_delay = retry_base_delay
        self._keys = keys
        self._heap: List[Tuple[float, int, Job]] = []
        self._sequence = itertools.count()
        self._orders: Dict[str, ListOrder] = {}
        #: scan key → ids of the jobs of that scan not retired (queued or running)
        self._scan_jobs: Dict[Hashable, Set[int]] = {}
        self._job_keys: Dict[int, ScanKeys] = {}
        self._scans_running: Set[Hashable] = set()
        #: jobs taken by a worker and not stopped yet
        self.in_flight = 0

    # -- what is there ------------------------------------------------------------

    def __len__(self) -> int:
        """Jobs waiting (not counting the running ones)."""
        return len(self._heap)

    @property
    def length(self) -> int:
        """Jobs waiting or running: the operator's queue length."""
        return len(self._heap) + self.in_flight

    @property
    def idle(self) -> bool:
        return not self._heap and not self.in_flight

    def queued(self, job: Job) -> bool:
        """Is this very job waiting (again) in the queue?"""
        return any(entry[2] is job for entry in self._heap)

    def queued_texts(self, list_file: str) -> Set[str]:
        """The lines of *list_file* waiting in the queue."""
        return {job.text for _due, _seq, job in self._heap if job.list_file == list_file}

    def order(self, list_file: str) -> ListOrder:
        """The per-list-file order state (created when first needed)."""
        return self._orders.setdefault(list_file, ListOrder())

    def scan_key(self, job: Job) -> Hashable:
        """One name for the job's scan (its line when it has no scan key)."""
        keys = self._job_keys.get(job.id) or (job.text,)
        return keys[0]

    # -- changes ----------------------------------------------------------------------

    def push(self, job: Job, due: float) -> None:
        """Queue *job* to start at *due* (or later, when the rules hold it back)."""
        if job.id not in self._job_keys:
            keys = self._keys(job)
            self._job_keys[job.id] = keys
            for key in keys:
                self._scan_jobs.setdefault(key, set()).add(job.id)
        heapq.heappush(self._heap, (due, next(self._sequence), job))

    def _scan_free(self, job: Job) -> bool:
        """May *job* start as far as its scan goes (none of its lines runs or goes first)?"""
        for key in self._job_keys.get(job.id, ()):
            if key in self._scans_running or min(self._scan_jobs.get(key, (job.id,))) < job.id:
                return False
        return True

    def may_start(self, job: Job, held: Sequence[Tuple[float, int, Job]] = ()) -> bool:
        """May *job* start now?  *held*: due jobs :meth:`take` took off the heap."""
        order = self._orders.get(job.list_file)
        if order is not None and not order.may_start(job):
            return False
        if grouped(job) and self._earlier_grouped_waiting(job, held):
            return False
        return self._scan_free(job)

    def _earlier_grouped_waiting(self, job: Job, held: Sequence[Tuple[float, int, Job]]) -> bool:
        """Is an earlier grouped line of *job*'s list file still waiting to start?

        Measurement order holds for waiting lines too, not only running ones:
        a grouped scan held back by its own scan's earlier line must not be
        overtaken by the measurement line that needs its metadata.
        """
        return any(
            other.list_file == job.list_file and other.id < job.id and grouped(other)
            for _due, _seq, other in itertools.chain(self._heap, held)
        )

    def take(self, now: float) -> Tuple[Optional[Job], Optional[float]]:
        """The earliest due job allowed to start, marked running; else ``(None, next due)``.

        The next due time is None when nothing is queued; a due job held back
        by the rules does not count: it waits for the job holding it, whose
        end the caller is told about (:meth:`stopped`, :meth:`release`).
        """
        held: List[Tuple[float, int, Job]] = []
        chosen: Optional[Job] = None
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if not self.may_start(entry[2], held):
                held.append(entry)
                continue
            chosen = entry[2]
            break
        upcoming = self._heap[0][0] if self._heap else None
        for entry in held:
            heapq.heappush(self._heap, entry)
        if chosen is None:
            return None, upcoming
        self.order(chosen.list_file).running[chosen.id] = grouped(chosen)
        self._scans_running.update(self._job_keys.get(chosen.id, ()))
        self.in_flight += 1
        return chosen, None

    def stopped(self, job: Job) -> None:
        """*job*'s run ended: its list file may start others (its scan stays taken).

        The scan is released by :meth:`release`, after the job's outcome is
        recorded, so a later line of the same scan never overtakes that record.
        """
        self.in_flight -= 1
        order = self._orders.get(job.list_file)
        if order is not None:
            order.running.pop(job.id, None)
            order.retrying_grouped.discard(job.id)
            if order.empty:
                del self._orders[job.list_file]

    def retry_later(self, job: Job, now: float) -> float:
        """Queue *job* again after its backoff (by ``job.attempts``); returns the delay.

        A grouped job keeps the later grouped jobs of its list waiting until it ran.
        """
        if grouped(job):
            self.order(job.list_file).retrying_grouped.add(job.id)
        delay = backoff(job.attempts, self.retry_base_delay)
        self.push(job, now + delay)
        return delay

    def release(self, job: Job, retired: bool) -> None:
        """The scan of *job* is free again; a retired job no longer goes first."""
        keys = self._job_keys.get(job.id, ())
        self._scans_running.difference_update(keys)
        if retired:
            self._job_keys.pop(job.id, None)
            for key in keys:
                waiting = self._scan_jobs.get(key)
                if waiting is not None:
                    waiting.discard(job.id)
                    if not waiting:
                        del self._scan_jobs[key]

    def retry_now(self, now: float) -> None:
        """The jobs waiting for a retry are due at *now* (what they waited for is back)."""
        self._heap = [
            (min(due, now) if job.attempts else due, seq, job) for due, seq, job in self._heap
        ]
        heapq.heapify(self._heap)

    def clear(self) -> None:
        """Forget every job (the service stops; the journal keeps them)."""
        self._heap = []
        self._orders.clear()
        self._scan_jobs.clear()
        self._job_keys.clear()
        self._scans_running.clear()
        self.in_flight = 0
