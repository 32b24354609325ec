"""The ingestor service: the one facade the CLI, the Tango device and the macros use.

It owns the pieces and wires them one way: the watcher (one inotify thread)
hands list records to the service, which journals them durably and queues
them; worker threads take due jobs (``ingestion_delay_time`` after they
were listed) and run them through the pipeline.  Operators see state,
counters and errors here, and can start/stop measurements and ask for a
re-ingestion; subscribers (the Tango device) are told about every change.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Set, Tuple

from .batch import resolve_groups
from .beamtime import Beamtime, PathConverter, read_beamtime, under
from .config import IngestorConfig
from .errors import ScingestorError, SciCatUnreachable
from .health import ErrorHistory, HealthView, SciCatProbe, unreachable_text
from .journal import Job, Journal, JournalError, describe_beamtimes
from .layout import ingested_list_path, list_file_name, shared_state_dir, state_dir
from .listfile import ScanLine, parse_line, parse_text
from .measurement import MeasurementState
from .pipeline import (FAILED_STATUS, INGESTED, RETRY, UNCHANGED, UPDATED, Pipeline,
                       ScanOutcome, ScanTask, scan_keys)
from .scicat import ClientSettings, SciCatClient
from .state import NOT_DONE, IngestedList, IngestedRecord

logger = logging.getLogger(__name__)

# service states (the Tango device maps them onto DevState)
OFF = "OFF"
ON = "ON"
RUNNING = "RUNNING"
ALARM = "ALARM"
FAULT = "FAULT"

RETRY_MAX_SECONDS = 600.0
CATCH_UP_SECONDS = 3.0

Listener = Callable[[str, Any], None]


@dataclass
class ListFileState:
    """What the service knows about one watched dataset list file."""

    beamtime: Beamtime
    path: str
    measurement: MeasurementState = field(default_factory=MeasurementState)
    read_offset: int = 0
    ingested: Optional[IngestedList] = None
    #: jobs of this list file being ingested, and whether one of them groups a
    #: measurement (those run alone: their callbacks merge into shared files)
    #: jobs being ingested (id → takes part in grouping)
    running: Dict[int, bool] = field(default_factory=dict)
    #: grouped jobs waiting for a retry: later grouped jobs wait for them
    retrying_grouped: Set[int] = field(default_factory=set)

    def may_start(self, job: Job) -> bool:
        """Scans run side by side unless measurement grouping needs their order."""
        if _grouped(job) and any(other < job.id for other in self.retrying_grouped):
            return False
        if not self.running:
            return True
        return not (any(self.running.values()) or _grouped(job))


class IngestorService:
    """Watches, queues and ingests; thread-safe; see the module doc."""

    def __init__(self, config: IngestorConfig, client: Optional[SciCatClient] = None,
                 pipeline: Optional[Pipeline] = None, *,
                 device_name: Optional[str] = None) -> None:
        """*device_name* (the Tango device's) names the default state folder
        instead of the configuration file's path."""
        self.config = config
        self._own_client = client is None
        self._own_pipeline = pipeline is None
        self.client = client or SciCatClient(ClientSettings.from_config(config))
        self.pipeline = pipeline or Pipeline(config, self.client)
        # the default folder is the instance's own; only then is there an
        # older shared journal to take this instance's jobs from
        self.journal = Journal(state_dir(config, device_name),
                               None if config.ingestor_state_dir else shared_state_dir())
        #: journaled jobs of list files not watched (yet), per list file: never
        #: run for another configuration; resumed if their list file is watched later
        self._aside: Dict[str, List[Job]] = {}
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._queue: List[Tuple[float, int, Job]] = []
        self._sequence = itertools.count()
        self._lists: Dict[str, ListFileState] = {}
        self._beamtimes: Dict[str, Beamtime] = {}
        self._groups_resolved: Set[str] = set()
        self._in_flight = 0
        self._workers: List[threading.Thread] = []
        self._stopping = False
        self._listeners: List[Listener] = []
        self._values: Dict[str, Any] = {}
        self.watcher: Any = None
        self.counts: Dict[str, int] = {"ingested": 0, "updated": 0, "unchanged": 0,
                                       "failed": 0, "retried": 0}
        #: past error texts with their time; an error is "recent" (shown as LastError)
        #: until a later success: sequence numbers tell which came last
        self.errors = ErrorHistory()
        self._events = itertools.count(1)
        self._error_seq = 0
        self._ok_seq = 0
        #: scans posted from the beamtime metadata alone (no master file), by scan key
        self.without_data_files: Set[Hashable] = set()
        #: lines of one scan run one at a time, in list order (see _scan_free)
        self._scan_jobs: Dict[Hashable, Set[int]] = {}
        self._job_keys: Dict[int, Tuple[Hashable, ...]] = {}
        self._scans_running: Set[Hashable] = set()
        self.last_error = ""
        #: client warnings already shown as last_error (each once)
        self._warned: set = set()
        #: why SciCat is unreachable ('' when it answers)
        self.scicat_problem = ""
        #: the latest failed scan and its error while no scan succeeded since ('' if none)
        self.failing = ""
        self._probe: Optional[SciCatProbe] = None
        #: list file -> measurement shown while an update rewrites it (no '' in between)
        self._pinned: Dict[str, str] = {}
        self.last_ingested_scan = ""
        self.last_success_time = 0.0
        self.scicat_reachable: Optional[bool] = None
        #: why the ingested lists / metadata cannot be written ('' when they can)
        self.state_problem = ""
        self.current_list_file: Optional[str] = None
        self._state = OFF
        self._fault = ""
        self._closed = False
        self._observe(self.client)

    @property
    def last_error(self) -> str:
        """The latest error text (kept; :meth:`health` says whether it still holds)."""
        return self._last_error

    @last_error.setter
    def last_error(self, text: str) -> None:
        self._last_error = text
        if text:
            self._error_seq = next(self._events)
            self.errors.add(text)

    def _succeeded(self) -> None:
        """A scan was ingested or a command done: earlier one-off errors are past."""
        self._ok_seq = next(self._events)

    def _observe(self, client: Any) -> None:
        """Follow the client's requests: SciCat's reachability is known as it changes."""
        if hasattr(client, "observer"):
            client.observer = self._scicat_seen

    def _scicat_seen(self, reached: bool, reason: str) -> None:
        """A request found SciCat (an answer below 500) or did not (any thread)."""
        with self._lock:
            before, before_reason = self.scicat_reachable, self.scicat_problem
            self.scicat_reachable = reached
            self.scicat_problem = "" if reached else reason
            if reached and before is False:
                self._retry_now()        # the scans waiting for SciCat go now
        url = self.config.scicat_url
        if reached and before is False:
            logger.warning("SciCat at %s answers again", url)
        elif not reached and before is not False:
            logger.error("SciCat unreachable at %s: %s", url, reason)
        if before is not reached or (not reached and reason != before_reason):
            self._changed()

    def _login_failed(self, message: str) -> None:
        logger.error("%s", message)
        self._error(message)

    def command_failed(self, message: str) -> None:
        """A refused operator command (e.g. from the Tango device): show it."""
        self._error(message)

    # -- notifications -------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(name, value)`` on every change; returns the unsubscriber."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def snapshot(self) -> Dict[str, Any]:
        """Everything an operator looks at, in one consistent read."""
        with self._lock:
            view = self.health()
            return {
                "state": FAULT if self._fault else view.state,
                "status": f"Configuration fault: {self._fault}" if self._fault else view.status,
                "queue_length": self.queue_length,
                "last_error": self._fault or view.last_error,
                "last_error_time": self.errors.last_time,
                "error_history": self.errors.lines(),
                "ingested_count": self.counts["ingested"] + self.counts["updated"],
                "unchanged_count": self.counts["unchanged"],
                "failed_count": self.counts["failed"],
                "without_data_files_count": len(self.without_data_files),
                "last_ingested_scan": self.last_ingested_scan,
                "last_success_time": self.last_success_time,
                "current_measurement": self.current_measurement(),
                "watched_beamtimes": self.watched_beamtimes,
                # not known before the first answer: not reachable yet (but no alarm)
                "scicat_reachable": self.scicat_reachable is True,
                "scicat_url": self.config.scicat_url,
                # e.g. an account that may not delete (said once by the client)
                "warning": "; ".join(self._client_warnings()),
            }

    def _client_warnings(self) -> List[str]:
        return [str(text) for text in getattr(self.client, "warnings", None) or []]

    def _changed(self) -> None:
        """Tell listeners what changed since the last notification."""
        with self._lock:
            values = self.snapshot()
            changes = [(name, value) for name, value in values.items()
                       if self._values.get(name, _UNSET) != value]
            self._values = values
            listeners = list(self._listeners)
        for name, value in changes:
            for listener in listeners:
                try:
                    listener(name, value)
                except Exception:  # a broken listener must not stop ingestion
                    logger.exception("change listener failed on %s", name)

    # -- state -------------------------------------------------------------------

    def health(self) -> HealthView:
        """State, problems and status lines of the running service (see :class:`HealthView`).

        A new condition worth an alarm is one more ``view.problems`` line; a
        new plain status line one more ``view.facts`` line.
        """
        with self._lock:
            view = HealthView(running=self._state != OFF, busy=bool(self._in_flight))
            if self.scicat_reachable is False:
                view.problems.append(unreachable_text(self.config.scicat_url,
                                                      self.scicat_problem, self.queue_length))
            if self.state_problem:
                view.problems.append(f"Cannot write the ingestor state: {self.state_problem}")
            if self.failing:
                view.problems.append(f"Scans are failing: {self.failing}")
            view.facts.append(f"Watching {len(self._beamtimes)} beamtime(s), "
                              f"{len(self._lists)} list file(s)")
            view.facts.append(f"{self.queue_length} scan(s) pending")
            view.facts.append(f"{self.counts['ingested'] + self.counts['updated']} ingested, "
                              f"{self.counts['failed']} failed")
            if self.without_data_files:
                view.facts.append(f"{len(self.without_data_files)} posted without data files "
                                  "(no master file)")
            if self._error_seq > self._ok_seq:
                view.recent = self.last_error
            view.warnings = self._client_warnings()
            return view

    @property
    def state(self) -> str:
        with self._lock:
            return FAULT if self._fault else self.health().state

    @property
    def status(self) -> str:
        with self._lock:
            if self._fault:
                return f"Configuration fault: {self._fault}"
            return self.health().status

    @property
    def healthy(self) -> bool:
        """Running, its worker threads and its watcher alive (systemd watchdog)."""
        with self._lock:
            workers = list(self._workers)
        watcher = self.watcher
        return (self.state not in (OFF, FAULT) and bool(workers)
                and all(worker.is_alive() for worker in workers)
                and watcher is not None and watcher.running)

    @property
    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue) + self._in_flight

    @property
    def watched_beamtimes(self) -> List[str]:
        with self._lock:
            return sorted(bt.beamtime_id for bt in self._beamtimes.values())

    def _error(self, message: str) -> None:
        with self._lock:
            self.last_error = message
        self._changed()

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """Replay the journal, start the workers and the watcher.

        A service stopped before starts again with new connections; if any
        part fails to start, what did start is stopped again and the error
        raised.
        """
        from .watch import Watcher  # the watcher needs inotify: only for the daemon
        with self._lock:
            if self._state != OFF:
                return
            self._stopping = False
            self._fault = ""
            if self._closed:
                self._reopen()
        pending = self.journal.open(adopt=self._may_watch)
        logger.info("Job journal: %s", self.journal.path)
        self.pipeline.runner.prepare()  # nxstools workers ready before the first scan
        try:
            with self._lock:
                self._state = ON
                self._aside = {}
            # the watcher's first scan comes first: it rebuilds the state of
            # each list file (offsets, measurements) that resumed jobs need,
            # and tells which list files this configuration watches
            self.watcher = Watcher(self.config, self, offsets=self.journal.offset)
            self.watcher.start()
            self._resume(pending)
            with self._lock:
                for index in range(self.config.ingestion_workers):
                    worker = threading.Thread(target=self._work_loop,
                                              name=f"ingest-{index}", daemon=True)
                    worker.start()
                    self._workers.append(worker)
            self._probe = SciCatProbe(self.client, lambda: self.scicat_reachable is True,
                                      self._login_failed)
            self._probe.start()
        except BaseException:
            self.stop()
            raise
        self._changed()

    def _may_watch(self, list_file: str) -> bool:
        """Is *list_file* below a beamtime directory of this configuration?"""
        roots = [os.path.normpath(os.path.abspath(d)) for d in self.config.beamtime_dirs]
        if self.config.beamtime_base_dir:
            roots.append(self.config.beamtime_base_dir)
        return under(list_file, roots) is not None

    def _resume(self, pending: List[Job]) -> None:
        """Queue the journal's jobs of watched list files; keep the others aside.

        A job of a list file this configuration does not watch may be
        another configuration's (an explicitly shared ``ingestor_state_dir``)
        or of a beamtime not there now: running it would post that scan to
        this configuration's SciCat.  It stays in the journal, and runs once
        its list file is watched.
        """
        with self._lock:
            resumed = [job for job in pending if job.list_file in self._lists]
            aside = [job for job in pending if job.list_file not in self._lists]
            for job in aside:
                self._aside.setdefault(job.list_file, []).append(job)
        now = time.monotonic()
        for job in resumed:
            self._schedule(job, now)
        if resumed:
            logger.info("Resuming %d job(s) from the journal %s", len(resumed),
                        self.journal.path)
        if aside:
            logger.warning(
                "%d job(s) in the journal %s are of list files this configuration does not "
                "watch (beamtimes: %s): not resumed, kept in the journal until their list "
                "file is watched", len(aside), self.journal.path, describe_beamtimes(aside))

    def _reopen(self) -> None:
        """New SciCat connections and generator workers after a stop."""
        if self._own_client:
            self.client = SciCatClient(ClientSettings.from_config(self.config))
            self._observe(self.client)
        if self._own_pipeline or self._own_client:
            self.pipeline = Pipeline(self.config, self.client)
        self._groups_resolved.clear()
        self.scicat_reachable = None
        self.scicat_problem = ""
        self.failing = ""
        self.state_problem = ""
        self._closed = False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, finish the scans being ingested, flush the journal."""
        with self._lock:
            if self._state == OFF and not self._workers:
                return
            self._stopping = True
            self._work.notify_all()
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._workers = []
            self._queue = []
            self._scan_jobs.clear()
            self._job_keys.clear()
            self._scans_running.clear()
            self._in_flight = 0
            self._state = OFF
            self._beamtimes.clear()
            self._lists.clear()
            self._aside = {}
        self.journal.close()
        self.pipeline.close()
        if self._own_client:
            self.client.close()
        self._closed = True
        self._changed()

    def fault(self, message: str) -> None:
        """Mark the service unusable (broken configuration) with a reason."""
        with self._lock:
            self._fault = message
        self._changed()

    # -- watcher sink (called on the watcher's thread: keep it quick) -------------

    def beamtime_added(self, beamtime: Beamtime) -> None:
        with self._lock:
            self._beamtimes[beamtime.path] = beamtime
        logger.info("Watching beamtime %s (%s)", beamtime.beamtime_id, beamtime.path)
        self._changed()

    def beamtime_changed(self, beamtime: Beamtime) -> None:
        with self._lock:
            self._beamtimes[beamtime.path] = beamtime
            self._groups_resolved.discard(beamtime.path)
            for state in self._lists.values():
                if state.beamtime.path == beamtime.path:
                    state.beamtime = beamtime
        logger.info("Beamtime %s reloaded", beamtime.path)
        self._changed()

    def beamtime_removed(self, path: str) -> None:
        with self._lock:
            self._beamtimes.pop(path, None)
            for name in [n for n, s in self._lists.items() if s.beamtime.path == path]:
                del self._lists[name]
        logger.info("Beamtime %s is no longer watched", path)
        self._changed()

    def beamtime_error(self, path: str, error: Exception) -> None:
        logger.warning("%s cannot be watched: %s", path, error)
        self._error(str(error))

    def list_file_added(self, beamtime: Beamtime, list_file: str) -> None:
        with self._lock:
            if list_file in self._lists:
                return
            state = ListFileState(beamtime, list_file)
            offset = self.journal.offset(list_file)
            self._lists[list_file] = state
            if offset:
                state.read_offset = offset
                self._recover(state, offset)
            released = self._aside.pop(list_file, [])
        logger.info("Watching dataset list %s", list_file)
        if released:
            logger.info("%s is watched now: resuming its %d job(s) kept aside at start",
                        list_file, len(released))
            now = time.monotonic()
            for job in released:
                self._schedule(job, now)
        self._changed()

    def _recover(self, state: ListFileState, offset: int) -> None:
        """Queue the lines read in an earlier run that are still not ingested.

        They are the scans recorded as failed (``retry_failed_dataset_ingestion``)
        and lines an older installation left waiting; jobs still in the journal
        are queued already.  Also rebuilds the measurement state at *offset*.
        """
        try:
            with open(state.path, "rb") as handle:
                text = handle.read(offset).decode("utf-8", errors="replace")
        except OSError as error:
            logger.warning("%s cannot be read: %s", state.path, error)
            return
        records, _errors = parse_text(text, state.path)
        ingested = self._ingested(state)
        queued = {job.text for _due, _seq, job in self._queue if job.list_file == state.path}
        queued |= self.journal.pending_texts(state.path)
        jobs = []
        for record in records:
            if not isinstance(record, ScanLine):
                state.measurement.apply(record, state.path)
                continue
            if record.text in queued or self._done(state, ingested, record):
                continue
            queued.add(record.text)
            jobs.append(self.journal.new_job(
                list_file=state.path, beamtime_file=state.beamtime.path,
                lineno=record.lineno or 0, text=record.text,
                measurement=state.measurement.current,
                last_measurement=state.measurement.last,
                is_measurement=state.measurement.is_measurement(record),
                reingest=record.is_reingestion))
        if jobs:
            logger.info("%s: %d earlier line(s) not ingested yet: queued again", state.path,
                        len(jobs))
            self._journal_accept(state.path, offset, jobs)
            now = time.monotonic()
            for job in jobs:
                self._schedule(job, now)

    def list_file_removed(self, beamtime: Beamtime, list_file: str) -> None:
        with self._lock:
            self._lists.pop(list_file, None)
        self._changed()

    def list_records(self, beamtime: Beamtime, list_file: str, records: List[Any]) -> None:
        """New complete lines of a list file: journal them, then queue the scans."""
        if not records:
            return
        with self._lock:
            state = self._lists.get(list_file)
            if state is None:
                state = ListFileState(beamtime, list_file)
                self._lists[list_file] = state
            if records[0].end_offset <= state.read_offset and records[0].lineno == 1:
                # re-read from the start (file replaced or truncated)
                state.measurement = MeasurementState()
            jobs = []
            ingested = self._ingested(state)
            for item in records:
                try:
                    record = parse_line(item.text, item.lineno, list_file)
                except ScingestorError as error:
                    logger.error("%s", error)
                    self.last_error = str(error)
                    continue
                if record is None:
                    continue
                if not isinstance(record, ScanLine):
                    state.measurement.apply(record, list_file)
                    continue
                if self._done(state, ingested, record):
                    continue  # e.g. a list read from the start: done lines need no job
                jobs.append(self.journal.new_job(
                    list_file=list_file, beamtime_file=beamtime.path, lineno=item.lineno,
                    text=record.text, measurement=state.measurement.current,
                    last_measurement=state.measurement.last,
                    is_measurement=state.measurement.is_measurement(record),
                    reingest=record.is_reingestion))
            state.read_offset = records[-1].end_offset
            self.current_list_file = list_file
            self._journal_accept(list_file, records[-1].end_offset, jobs)
            due = time.monotonic() + self.config.ingestion_delay_time
            for job in jobs:
                self._schedule(job, due)
            self._work.notify_all()
        self._changed()

    def _journal_accept(self, list_file: str, offset: int, jobs: List[Job]) -> None:
        """Journal the jobs; if the journal cannot be written, ingest them all the same.

        The lines stay safe: the list file's offset on disk was not advanced,
        so a crash before they are done makes the next start read them again,
        and the journal writes them with the next lines it can write.
        """
        try:
            self.journal.accept(list_file, offset, jobs)
        except JournalError as error:
            message = (f"{error}: {len(jobs)} line(s) of {list_file} are ingested without "
                       "being journaled (after a crash they are read again)")
            logger.error("%s", message)
            with self._lock:
                self.last_error = message

    # -- queue and workers -----------------------------------------------------------

    def _schedule(self, job: Job, due: float) -> None:
        with self._lock:
            if job.id not in self._job_keys:
                keys = _job_scan_keys(job)
                self._job_keys[job.id] = keys
                for key in keys:
                    self._scan_jobs.setdefault(key, set()).add(job.id)
            heapq.heappush(self._queue, (due, next(self._sequence), job))
            self._work.notify_all()

    def _scan_free(self, job: Job) -> bool:
        """May *job* start as far as its scan goes?  The caller holds the lock.

        Lines naming one scan (``s``, ``s:1`` …) share its dataset and its
        metadata files: one runs at a time, and the one listed first (the
        lowest job id, also while it waits for a retry) goes first.
        """
        for key in self._job_keys.get(job.id, ()):
            if key in self._scans_running or min(self._scan_jobs.get(key, (job.id,))) < job.id:
                return False
        return True

    def _scan_finished(self, job: Job, retired: bool) -> None:
        """The scan of *job* is free again; a retired job no longer goes first."""
        with self._lock:
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
            self._work.notify_all()

    def _next_job(self) -> Optional[Job]:
        """The earliest due job allowed to start; waits without polling.

        A due job held back by its list file (measurement order) is woken by
        the notification of the job it waits for; otherwise the wait lasts
        until the next job falls due.
        """
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                held: List[Tuple[float, int, Job]] = []
                chosen = None
                while self._queue and self._queue[0][0] <= now:
                    entry = heapq.heappop(self._queue)
                    state = self._lists.get(entry[2].list_file)
                    if (state is not None and not state.may_start(entry[2])) or \
                            not self._scan_free(entry[2]):
                        held.append(entry)
                        continue
                    chosen = entry[2]
                    break
                upcoming = self._queue[0][0] if self._queue else None
                for entry in held:
                    heapq.heappush(self._queue, entry)
                if chosen is not None:
                    state = self._lists.get(chosen.list_file)
                    if state is not None:
                        state.running[chosen.id] = _grouped(chosen)
                    self._scans_running.update(self._job_keys.get(chosen.id, ()))
                    self._in_flight += 1
                    return chosen
                self._work.wait(None if upcoming is None else max(0.0, upcoming - now))
            return None

    def _work_loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            self._changed()
            try:
                outcome = self._run_job(job)
            except Exception as error:  # never lose the job over a bug
                logger.exception("%s: unexpected error", job.text)
                outcome = ScanOutcome(job.text, RETRY, message=f"unexpected error: {error}")
            try:
                self._finish(job, outcome)
            except Exception:  # a worker must not die: the other scans need it
                logger.exception("%s: bookkeeping failed", job.text)
                with self._lock:
                    queued = any(entry[2] is job for entry in self._queue)
                self._scan_finished(job, retired=not queued)

    def _list_state(self, job: Job) -> ListFileState:
        with self._lock:
            state = self._lists.get(job.list_file)
            if state is not None:
                return state
        beamtime = self._beamtimes.get(job.beamtime_file) or read_beamtime(job.beamtime_file)
        state = ListFileState(beamtime, job.list_file)
        with self._lock:
            self._lists.setdefault(job.list_file, state)
            return self._lists[job.list_file]

    def _done(self, state: ListFileState, ingested: IngestedList, line: ScanLine) -> bool:
        """Is the line ingested? A scan with nothing to attach is not retried forever."""
        if ingested.is_done(line.text):
            return True
        return ingested.waits_only_for_attachment(line.text) and not self.pipeline.has_plot(
            state.beamtime, state.path, line)

    def _ingested(self, state: ListFileState) -> IngestedList:
        if state.ingested is None:
            beamtime = state.beamtime
            converter = PathConverter(beamtime.directory, beamtime.core_path,
                                      self.config.use_corepath_as_scandir)
            path = ingested_list_path(self.config, beamtime.beamtime_id,
                                      converter.to_core(os.path.dirname(state.path)))
            state.ingested = IngestedList(
                path, self.config.retry_failed_dataset_ingestion,
                self.config.retry_failed_attachment_ingestion
                and self.config.ingest_dataset_attachment).load()
        return state.ingested

    def _beamtime_for(self, state: ListFileState) -> Beamtime:
        beamtime = state.beamtime
        if beamtime.path not in self._groups_resolved:
            beamtime = resolve_groups(self.client, self.config, beamtime)
            with self._lock:
                self._groups_resolved.add(beamtime.path)
                state.beamtime = beamtime
        return beamtime

    def _run_job(self, job: Job) -> ScanOutcome:
        state = self._list_state(job)
        try:
            ingested = self._ingested(state)
            if not job.forced and ingested.is_done(job.text):
                return ScanOutcome(job.text, UNCHANGED, message="already ingested")
            line = parse_line(job.text, job.lineno, job.list_file)
            assert isinstance(line, ScanLine)
            try:
                beamtime = self._beamtime_for(state)
            except SciCatUnreachable as error:
                return ScanOutcome(job.text, RETRY, message=str(error), cause="scicat")
            task = ScanTask(beamtime, job.list_file, line,
                            measurement=job.measurement, last_measurement=job.last_measurement,
                            is_measurement=job.is_measurement, reingest=job.reingest)
            outcome = self.pipeline.process(task, ingested)
        except OSError as error:
            # the ingested list (or a metadata file) cannot be written: disk
            # full, read-only; nothing is wrong with the scan, it waits
            return ScanOutcome(job.text, RETRY, message=_state_message(error), cause="state")
        if outcome.status == RETRY and outcome.cause == "generator":
            # a generator that cannot write its JSON fails like one that
            # cannot read the scan: tell them apart before counting attempts
            problem = self._unwritable(state, job)
            if problem:
                return ScanOutcome(job.text, RETRY, message=problem, cause="state")
        return outcome

    def _unwritable(self, state: ListFileState, job: Job) -> str:
        """Why the scan's metadata or ingested-list directory takes no data ('' if it does)."""
        directories = []
        if state.ingested is not None:
            directories.append(os.path.dirname(state.ingested.path))
        try:
            directories.append(os.path.dirname(self.pipeline.dataset_json(
                state.beamtime, job.list_file, "probe")))
        except Exception:  # only a diagnosis: the generator's error stands
            pass
        for directory in directories:
            problem = _probe_write(directory)
            if problem:
                return problem
        return ""

    def _finish(self, job: Job, outcome: ScanOutcome) -> None:
        retire = True
        with self._lock:
            self._in_flight -= 1
            state = self._lists.get(job.list_file)
            if state is not None:
                state.running.pop(job.id, None)
                state.retrying_grouped.discard(job.id)
            for text in self._client_warnings():
                if text not in self._warned:   # new: the operator sees it as LastError
                    self._warned.add(text)
                    self.last_error = f"{job.text}: {text}"
            if outcome.status == RETRY:
                job.attempts += 1
                # why it waits (a refused login, SciCat away, a full disk) is
                # what the operator needs to see
                self.last_error = f"{job.text}: {outcome.message}"
                # SciCat unreachable, or the state cannot be written: waiting helps,
                # however long it takes; a failing generator gets a few tries
                waiting = outcome.cause in ("scicat", "state")
                if outcome.cause == "scicat":
                    self.scicat_reachable = False
                    self.scicat_problem = self.scicat_problem or outcome.message
                if outcome.cause == "state":
                    if not self.state_problem:
                        logger.error("Cannot write the ingestor state: %s (scans wait until "
                                     "it can be written)", outcome.message)
                    self.state_problem = outcome.message
                if waiting or job.attempts < self.config.max_generator_attempts:
                    retire = False
                    self._retry_later(job, state)
                else:
                    self.counts["failed"] += 1
                    self.last_error = self.failing = f"{job.text}: {outcome.message}"
            else:
                if outcome.status in (INGESTED, UPDATED, UNCHANGED):
                    # (SciCat's reachability follows the client's requests: _scicat_seen)
                    if self.state_problem:
                        logger.warning("The ingestor state can be written again")
                        self._retry_now()
                    self.state_problem = ""
                    self.failing = ""
                    self._succeeded()
                    self.last_success_time = time.time()
                    if outcome.status != UNCHANGED or outcome.pid:
                        self.last_ingested_scan = job.text
                key = {INGESTED: "ingested", UPDATED: "updated", UNCHANGED: "unchanged",
                       FAILED_STATUS: "failed"}.get(outcome.status)
                if key:
                    self.counts[key] += 1
                if outcome.ok and outcome.without_master:
                    self.without_data_files.add(self._job_keys.get(job.id, (job.text,))[0])
                if outcome.status == FAILED_STATUS:
                    self.last_error = self.failing = f"{job.text}: {outcome.message}"
            self._work.notify_all()
        if retire and outcome.status == RETRY and state is not None:
            # gave up on a generator: record the failure so it shows and
            # retry_failed_dataset_ingestion picks it up on the next start
            try:
                self._ingested(state).append(IngestedRecord(job.text, NOT_DONE, NOT_DONE,
                                                            NOT_DONE))
            except OSError as error:
                retire = False
                message = _state_message(error)
                logger.error("%s: the failure cannot be recorded: %s", job.text, message)
                with self._lock:
                    self.counts["failed"] -= 1  # not failed yet: it waits for the disk
                    self.failing = ""
                    self.state_problem = message
                    self._retry_later(job, state)
        if retire:
            self.journal.retire(job)
        self._scan_finished(job, retired=retire)
        self._changed()

    def _retry_later(self, job: Job, state: Optional[ListFileState]) -> None:
        """Queue the job again after its backoff; the caller holds the lock."""
        if state is not None and _grouped(job):
            state.retrying_grouped.add(job.id)
        delay = min(RETRY_MAX_SECONDS,
                    self.config.retry_base_delay * 2 ** min(max(job.attempts, 1) - 1, 10))
        self.counts["retried"] += 1
        self._schedule(job, time.monotonic() + delay)
        logger.info("%s: retry %d in %.1f s", job.text, job.attempts, delay)

    def _retry_now(self) -> None:
        """SciCat answers again: the scans waiting for it need not wait longer."""
        now = time.monotonic()
        self._queue = [(min(due, now) if job.attempts else due, seq, job)
                       for due, seq, job in self._queue]
        heapq.heapify(self._queue)
        self._work.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued or running (tests, graceful stop)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._work.wait(min(remaining, 0.5))
            return True

    # -- operator actions ------------------------------------------------------------

    def rescan(self) -> None:
        if self.watcher is not None:
            self.watcher.rescan()

    def reingest(self, beamtime: Optional[str] = None, scan: Optional[str] = None) -> int:
        """Queue every matching listed scan for a forced re-ingestion; returns how many.

        *beamtime* is a beamtime id (None: all watched), *scan* a scan or
        measurement name or a whole list line (None: every line).
        """
        with self._lock:
            lists = [state for state in self._lists.values()
                     if beamtime is None or state.beamtime.beamtime_id == beamtime]
        count = 0
        for state in lists:
            try:
                with open(state.path, "rb") as handle:
                    text = handle.read().decode("utf-8", errors="replace")
            except OSError as error:
                self._error(f"{state.path}: {error}")
                continue
            records, _errors = parse_text(text, state.path)
            walk = MeasurementState()
            jobs = []
            for record in records:
                if not isinstance(record, ScanLine):
                    walk.apply(record, state.path)
                    continue
                if scan is not None and scan not in (record.scanname, record.text):
                    continue
                jobs.append(self.journal.new_job(
                    list_file=state.path, beamtime_file=state.beamtime.path,
                    lineno=record.lineno or 0, text=record.text, measurement="",
                    last_measurement=walk.last, is_measurement=walk.is_measurement(record),
                    reingest=True, forced=True))
            if jobs:
                self._journal_accept(state.path, self.journal.offset(state.path), jobs)
                now = time.monotonic()
                for job in jobs:
                    self._schedule(job, now)
                count += len(jobs)
        logger.info("Re-ingestion of %d scan(s) queued", count)
        self._succeeded()
        self._changed()
        return count

    def current_measurement(self, scan_dir: Optional[str] = None) -> str:
        """The active measurement of *scan_dir*'s list file (default: the latest active)."""
        with self._lock:
            state = self._state_for_dir(scan_dir) if scan_dir else (
                self._lists.get(self.current_list_file) if self.current_list_file else None)
            if state is None:
                return ""
            return self._pinned.get(state.path, state.measurement.current)

    def _state_for_dir(self, scan_dir: str) -> Optional[ListFileState]:
        target = os.path.normpath(scan_dir)
        with self._lock:
            for state in self._lists.values():
                directory = os.path.dirname(state.path)
                converter = PathConverter(state.beamtime.directory, state.beamtime.core_path,
                                          True)
                if target in (directory, converter.to_core(directory)):
                    return state
        return None

    def list_file_for(self, scan_dir: Optional[str]) -> str:
        """The dataset list file of *scan_dir* (created if the dir is in a beamtime)."""
        if scan_dir is None:
            return self._default_list_file()
        state = self._state_for_dir(scan_dir)
        if state is not None:
            return state.path
        with self._lock:
            beamtimes = list(self._beamtimes.values())
        target = os.path.normpath(scan_dir)
        for beamtime in beamtimes:
            converter = PathConverter(beamtime.directory, beamtime.core_path, True)
            local = converter.to_local(target)
            if under(local, [beamtime.directory]) is not None:
                return os.path.join(local, list_file_name(self.config, beamtime.beamtime_id))
        raise ScingestorError(f"{scan_dir} is not below a watched beamtime directory")

    def _default_list_file(self) -> str:
        """The list file meant when a command names no scan directory.

        The one with the latest activity (a listed scan or a command); else the
        only watched one; else the most recently written of those with an
        active measurement.  Several watched and none active: the error lists them.
        """
        with self._lock:
            if self.current_list_file is not None:
                return self.current_list_file
            states = list(self._lists.values())
        if len(states) == 1:
            return states[0].path
        if not states:
            raise ScingestorError("no scan directory given and no list file is watched yet")
        active = [state.path for state in states if state.measurement.current]
        if active:
            return max(active, key=_mtime)
        names = ", ".join(sorted(state.path for state in states))
        raise ScingestorError(f"no scan directory given and none of the {len(states)} watched "
                              f"list files has an active measurement: {names}; give the scan "
                              "directory (the ...In commands)")

    def _append(self, list_file: str, records: List[str]) -> None:
        """Append whole lines to a list file, then wait for the watcher.

        Each record starts on a fresh line (a newline first only when the file
        does not end with one, as after the sardana writers' ``"\\n" + record``)
        and ends with a newline, so whatever anyone appends next cannot merge
        with it.  The lines are durable once written; when the service runs,
        it waits until the watcher has read them, so the caller's next
        question (the current measurement) gets the new answer.  A line the
        watcher will never read (a directory it does not watch) is an error,
        not a silence.
        """
        os.makedirs(os.path.dirname(list_file), exist_ok=True)
        size = write_list_lines(list_file, records)
        logger.info("Appending %s to %s", records, list_file)
        if self.state == OFF:
            return
        deadline = time.monotonic() + CATCH_UP_SECONDS
        with self._lock:
            while time.monotonic() < deadline:
                state = self._lists.get(list_file)
                if state is not None and state.read_offset >= size:
                    return
                self._work.wait(0.05)
        raise ScingestorError(
            f"{list_file}: the lines were appended but the ingestor does not read this "
            "list file (is its directory watched? see max_scandir_depth, "
            "watch_scandir_subdir and scandir_blacklist)")

    def start_measurement(self, name: str, scan_dir: Optional[str] = None) -> str:
        """Start measurement *name* (closing and ingesting the current one)."""
        if not name or any(c.isspace() for c in name) or "/" in name or ":" in name:
            raise ScingestorError(f"invalid measurement name {name!r}: no spaces, '/' or ':'")
        list_file = self.list_file_for(scan_dir)
        current = self.current_measurement(os.path.dirname(list_file))
        records = []
        if current:
            records += ["__command__ stop", f"{current}:{time.time()}"]
        records.append(f"__command__ start {name}")
        self._append(list_file, records)
        self.current_list_file = list_file
        self._succeeded()
        self._changed()
        return name

    def stop_measurement(self, scan_dir: Optional[str] = None) -> str:
        """Stop the current measurement and ingest it; returns its name ('' if none)."""
        list_file = self.list_file_for(scan_dir)
        current = self.current_measurement(os.path.dirname(list_file))
        records = ["__command__ stop"]
        if current:
            records.append(f"{current}:{time.time()}")
        self._append(list_file, records)
        self._succeeded()
        self._changed()
        return current

    def add_scan(self, record: str, scan_dir: Optional[str] = None) -> str:
        """Ingest an already listed scan again inside the current measurement.

        ``make_measurement`` uses it for the last scan: the line
        ``<record>:<time>`` is a re-ingestion that the active measurement
        groups.  Returns the line appended.
        """
        line = parse_line(record)
        if not isinstance(line, ScanLine):
            raise ScingestorError(f"not a scan record: {record!r}")
        tokens = line.text.split()
        if line.reingest_id is None:
            tokens[0] += f":{time.time()}"
        text = " ".join(tokens)
        list_file = self.list_file_for(scan_dir)
        self._append(list_file, [text])
        self._succeeded()
        self._changed()
        return text

    def update_measurement(self, scan_dir: Optional[str] = None) -> str:
        """Ingest the current measurement as it is now and keep it open."""
        list_file = self.list_file_for(scan_dir)
        current = self.current_measurement(os.path.dirname(list_file))
        if not current:
            raise ScingestorError("no measurement is active")
        # it stays the current measurement throughout: readers never see '' in between
        with self._lock:
            self._pinned[list_file] = current
        try:
            self._append(list_file, ["__command__ stop", f"{current}:{time.time()}",
                                     f"__command__ start {current}"])
        finally:
            with self._lock:
                self._pinned.pop(list_file, None)
        self._succeeded()
        self._changed()
        return current


_UNSET = object()


def write_list_lines(list_file: str, records: List[str]) -> int:
    """Append *records* as whole lines in one write, durably; returns the new size.

    A newline goes first only when the file does not end with one (the
    sardana writers leave the last record unterminated); every record ends
    with a newline.  So the records never merge with what is there, nor
    with what a person or another writer appends next.
    """
    with open(list_file, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        fresh = handle.tell() == 0
        if not fresh:
            handle.seek(-1, os.SEEK_END)
            fresh = handle.read(1) == b"\n"
        text = ("" if fresh else "\n") + "".join(record + "\n" for record in records)
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _job_scan_keys(job: Job) -> Tuple[Hashable, ...]:
    """The scan keys of a job's line (none for a line that does not parse)."""
    try:
        line = parse_line(job.text, job.lineno, job.list_file)
    except ScingestorError:
        return ()
    if not isinstance(line, ScanLine):
        return ()
    return scan_keys(job.list_file, job.beamtime_file, line)


def _grouped(job: Job) -> bool:
    """Does the job take part in measurement grouping (order matters)?"""
    return bool(job.measurement) or job.is_measurement


def _state_message(error: OSError) -> str:
    """``<file>: <reason>`` for a state file that cannot be written."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def _probe_write(directory: str) -> str:
    """'' when *directory* takes a byte of data, else why not (``<dir>: <reason>``)."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=".scingestor-probe-", dir=directory)
    except OSError as error:
        return f"{directory}: {error.strerror or error}"
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    except OSError as error:
        return f"{directory}: {error.strerror or error}"
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
    return ""
