"""The ingestor service: the one facade the CLI, the Tango device and the macros use.

It owns the pieces and wires them one way: the watcher (one inotify thread)
hands list records to the list intake (:mod:`scingestor.intake`), which
journals them durably and queues them in the job queue
(:mod:`scingestor.jobqueue`); worker threads here take due jobs
(``ingestion_delay_time`` after they were listed) and run them through the
pipeline.  Operators see state, counters and errors here (:meth:`snapshot`,
:meth:`health`), and can start/stop measurements and ask for a
re-ingestion; subscribers (the Tango device) are told about every change.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable, Dict, Hashable, List, Optional, Set

from .commands import ListCommands
from .config import IngestorConfig
from .health import (
    ChangeNotifier,
    ErrorHistory,
    HealthView,
    Listener,
    SciCatProbe,
    ServiceSnapshot,
    unreachable_text,
)
from .intake import ListIntake
from .jobqueue import RETRY_MAX_SECONDS, JobQueue
from .journal import Job, Journal
from .layout import shared_state_dir, state_dir
from .masterfile import master_wait_tries
from .outcomes import OutcomeStatus
from .pipeline import Pipeline
from .scantask import ScanOutcome
from .scicat import ClientSettings, SciCatClient
from .worker import JobRunner, WorkerPool

logger = logging.getLogger(__name__)

# service states (the Tango device maps them onto DevState)
OFF = "OFF"
ON = "ON"
RUNNING = "RUNNING"
ALARM = "ALARM"
FAULT = "FAULT"

#: outcome status -> counter
COUNTED = {
    OutcomeStatus.INGESTED: "ingested",
    OutcomeStatus.UPDATED: "updated",
    OutcomeStatus.UNCHANGED: "unchanged",
    OutcomeStatus.FAILED: "failed",
}


class IngestorService:
    """Watches, queues and ingests; thread-safe; see the module doc."""

    def __init__(
        self,
        config: IngestorConfig,
        client: Optional[SciCatClient] = None,
        pipeline: Optional[Pipeline] = None,
        *,
        device_name: Optional[str] = None,
    ) -> None:
        """*device_name* (the Tango device's) names the default state folder
        instead of the configuration file's path."""
        self.config = config
        self._own_client = client is None
        self._own_pipeline = pipeline is None
        self.client = client or SciCatClient(ClientSettings.from_config(config))
        self.pipeline = pipeline or Pipeline(config, self.client)
        # the default folder is the instance's own; only then is there an
        # older shared journal to take this instance's jobs from
        self.journal = Journal(
            state_dir(config, device_name),
            None if config.ingestor_state_dir else shared_state_dir(),
        )
        self._lock = threading.RLock()
        #: notified when jobs are queued or end, and when a list file was read
        self._work = threading.Condition(self._lock)
        self.queue = JobQueue(config.retry_base_delay)
        self.intake = ListIntake(
            config,
            self.journal,
            self.queue,
            self._work,
            report=self._report,
            changed=self._changed,
            has_plot=lambda beamtime, path, line: self.pipeline.has_plot(beamtime, path, line),
        )
        self.commands = ListCommands(self.intake, self._work, running=lambda: self.state != OFF)
        self.runner = JobRunner(
            config, self.intake, self._work, lambda: self.pipeline, lambda: self.client
        )
        self.workers = WorkerPool(
            self._work, self.queue, self.runner.run, self._finish, started=self._changed
        )
        self._notifier = ChangeNotifier(self.snapshot, self._lock)
        self.watcher: Any = None
        self.counts: Dict[str, int] = {
            "ingested": 0,
            "updated": 0,
            "unchanged": 0,
            "failed": 0,
            "retried": 0,
        }
        #: past error texts with their time; an error is "recent" (shown as LastError)
        #: until a later success: sequence numbers tell which came last
        self.errors = ErrorHistory()
        self._events = itertools.count(1)
        self._error_seq = 0
        self._ok_seq = 0
        #: scans posted from the beamtime metadata alone (no master file), by scan key
        self.without_data_files: Set[Hashable] = set()
        #: jobs of newly listed scans waiting for their master file, by job id
        self.awaiting_master: Set[int] = set()
        self.last_error = ""
        #: client warnings already shown as last_error (each once)
        self._warned: set = set()
        #: why SciCat is unreachable ('' when it answers)
        self.scicat_problem = ""
        #: the latest failed scan and its error while no scan succeeded since ('' if none)
        self.failing = ""
        #: scans SciCat keeps failing for, retried (scan keys): part of FailedCount
        self.failing_scans: Set[Hashable] = set()
        self._failing_logged: Set[str] = set()
        self._probe: Optional[SciCatProbe] = None
        self.last_ingested_scan = ""
        self.last_success_time = 0.0
        self.scicat_reachable: Optional[bool] = None
        #: why the ingested lists / metadata cannot be written ('' when they can)
        self.state_problem = ""
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
        with self._lock:
            self._ok_seq = next(self._events)

    def _report(self, message: str) -> None:
        """Record an error text (the caller notifies)."""
        with self._lock:
            self.last_error = message

    def _error(self, message: str) -> None:
        self._report(message)
        self._changed()

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
                self._retry_now()  # the scans waiting for SciCat go now
        url = self.config.scicat_url
        probe = self._probe
        if not reached and probe is not None:
            probe.wake()  # it pings until SciCat answers again
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

    # -- what operators see ------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(name, value)`` on every change of a :class:`ServiceSnapshot`
        field (named as the field); returns the unsubscriber."""
        return self._notifier.subscribe(listener)

    def snapshot(self) -> ServiceSnapshot:
        """Everything an operator looks at, in one consistent read."""
        with self._lock:
            view = self.health()
            return ServiceSnapshot(
                state=FAULT if self._fault else view.state,
                status=f"Configuration fault: {self._fault}" if self._fault else view.status,
                queue_length=self.queue_length,
                last_error=self._fault or view.last_error,
                last_error_time=self.errors.last_time,
                error_history=tuple(self.errors.lines()),
                ingested_count=self.counts["ingested"] + self.counts["updated"],
                unchanged_count=self.counts["unchanged"],
                failed_count=self.failed_count,
                without_data_files_count=len(self.without_data_files),
                last_ingested_scan=self.last_ingested_scan,
                last_success_time=self.last_success_time,
                current_measurement=self.current_measurement(),
                watched_beamtimes=tuple(self.watched_beamtimes),
                # not known before the first answer: not reachable yet (but no alarm)
                scicat_reachable=self.scicat_reachable is True,
                scicat_url=self.config.scicat_url or "",
                # e.g. an account that may not delete (said once by the client)
                warning="; ".join(self._client_warnings()),
            )

    def _client_warnings(self) -> List[str]:
        return [str(text) for text in getattr(self.client, "warnings", None) or []]

    def _changed(self) -> None:
        """Tell the subscribers what changed since the last notification."""
        self._notifier.changed()

    def health(self) -> HealthView:
        """State, problems and status lines of the running service (see :class:`HealthView`).

        The one health rule: a condition worth an alarm (SciCat away, the
        state not writable, scans failing) is one more ``view.problems`` line;
        a plain status line one more ``view.facts`` line.  The snapshot, so
        the CLI, the metrics and the device, all read it from here.
        """
        with self._lock:
            view = HealthView(running=self._state != OFF, busy=bool(self.queue.in_flight))
            if self.scicat_reachable is False:
                view.problems.append(
                    unreachable_text(self.config.scicat_url, self.scicat_problem, self.queue_length)
                )
            if self.state_problem:
                view.problems.append(f"Cannot write the ingestor state: {self.state_problem}")
            if self.failing:
                view.problems.append(f"Scans are failing: {self.failing}")
            view.facts.append(
                f"Watching {len(self.intake.beamtimes)} beamtime(s), "
                f"{len(self.intake.lists)} list file(s)"
            )
            view.facts.append(f"{self.queue_length} scan(s) pending")
            view.facts.append(
                f"{self.counts['ingested'] + self.counts['updated']} ingested, "
                f"{self.failed_count} failed"
            )
            if self.awaiting_master:
                view.facts.append(
                    f"{len(self.awaiting_master)} waiting for their master file "
                    f"(up to {master_wait_tries(self.config)} tries)"
                )
            if self.without_data_files:
                view.facts.append(
                    f"{len(self.without_data_files)} posted without data files (no master file)"
                )
            if self._error_seq > self._ok_seq:
                view.recent = self.last_error
            view.warnings = self._client_warnings()
            return view

    @property
    def failed_count(self) -> int:
        """Scans given up on, and scans SciCat keeps failing for (retried meanwhile)."""
        with self._lock:
            return self.counts["failed"] + len(self.failing_scans)

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
        watcher = self.watcher
        return (
            self.state not in (OFF, FAULT)
            and self.workers.alive()
            and watcher is not None
            and watcher.running
        )

    @property
    def queue_length(self) -> int:
        with self._lock:
            return self.queue.length

    @property
    def watched_beamtimes(self) -> List[str]:
        with self._lock:
            return sorted(bt.beamtime_id for bt in self.intake.beamtimes.values())

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
            self.workers.stopping = False
            self._fault = ""
            if self._closed:
                self._reopen()
        pending = self.journal.open(adopt=self.intake.may_watch)
        logger.info("Job journal: %s", self.journal.path)
        self.pipeline.runner.prepare()  # nxstools workers ready before the first scan
        try:
            with self._lock:
                self._state = ON
                self.intake.aside = {}
            # the watcher's first scan comes first: it rebuilds the state of
            # each list file (offsets, measurements) that resumed jobs need,
            # and tells which list files this configuration watches
            self.watcher = Watcher(self.config, self.intake, offsets=self.intake.start_point)
            self.watcher.start()
            self.intake.resume(pending)
            self.workers.start(self.config.ingestion_workers)
            self._probe = SciCatProbe(
                self.client, lambda: self.scicat_reachable is True, self._login_failed
            )
            self._probe.start()
        except BaseException:
            self.stop()
            raise
        self._changed()

    def _reopen(self) -> None:
        """New SciCat connections and generator workers after a stop."""
        if self._own_client:
            self.client = SciCatClient(ClientSettings.from_config(self.config))
            self._observe(self.client)
        if self._own_pipeline or self._own_client:
            self.pipeline = Pipeline(self.config, self.client)
        for state in self.intake.lists.values():
            state.resolved_beamtime = None  # groups asked again
        self.scicat_reachable = None
        self.scicat_problem = ""
        self.failing = ""
        self.failing_scans = set()
        self.state_problem = ""
        self._closed = False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, finish the scans being ingested, flush the journal."""
        with self._lock:
            if self._state == OFF and not self.workers.threads:
                return
        self.workers.halt()
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.workers.join(time.monotonic() + timeout)
        with self._lock:
            self.queue.clear()
            self._state = OFF
            self.intake.clear()
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

    # -- workers ---------------------------------------------------------------------

    def _finish(self, job: Job, outcome: ScanOutcome) -> None:
        """Count the outcome, retry or retire the job, then free its scan."""
        if not outcome.ok and not self.intake.watches(job):
            self._park(job)
            return
        retire = True
        with self._lock:
            self.queue.stopped(job)
            for text in self._client_warnings():
                if text not in self._warned:  # new: the operator sees it as LastError
                    self._warned.add(text)
                    self.last_error = f"{job.text}: {text}"
            if outcome.status == OutcomeStatus.RETRY and outcome.cause == "master":
                self.awaiting_master.add(job.id)
            else:
                self.awaiting_master.discard(job.id)
            if outcome.status == OutcomeStatus.RETRY:
                job.attempts += 1
                # why it waits (a refused login, SciCat away, a full disk) is
                # what the operator needs to see (a master file awaited is no error)
                if outcome.cause != "master":
                    self.last_error = f"{job.text}: {outcome.message}"
                # SciCat unreachable, or the state cannot be written: waiting helps,
                # however long it takes; a failing generator gets a few tries
                waiting = outcome.cause in ("scicat", "state", "failing")
                if outcome.cause == "failing":
                    # SciCat answers but keeps failing: the scan counts as
                    # failing (FailedCount, LastError) while it waits; the
                    # backoff is capped (jobqueue.RETRY_MAX_SECONDS)
                    self.failing_scans.add(self.queue.scan_key(job))
                    self.failing = f"{job.text}: {outcome.message}"
                    if outcome.message not in self._failing_logged:
                        self._failing_logged.add(outcome.message)
                        logger.error(
                            "%s: SciCat keeps failing (%s); retried with a backoff "
                            "of at most %.0f s",
                            job.text,
                            outcome.message,
                            RETRY_MAX_SECONDS,
                        )
                if outcome.cause == "state":
                    if not self.state_problem:
                        logger.error(
                            "Cannot write the ingestor state: %s (scans wait until "
                            "it can be written)",
                            outcome.message,
                        )
                    self.state_problem = outcome.message
                if waiting or job.attempts < self.config.max_generator_attempts:
                    retire = False
                    self._retry_later(job)
                else:
                    self.counts["failed"] += 1
                    self.last_error = self.failing = f"{job.text}: {outcome.message}"
            else:
                self.failing_scans.discard(self.queue.scan_key(job))
                if outcome.status in (
                    OutcomeStatus.INGESTED,
                    OutcomeStatus.UPDATED,
                    OutcomeStatus.UNCHANGED,
                ):
                    # (SciCat's reachability follows the client's requests: _scicat_seen)
                    if self.state_problem:
                        logger.warning("The ingestor state can be written again")
                        self._retry_now()
                    self.state_problem = ""
                    if not self.failing_scans:
                        self.failing = ""
                    self._succeeded()
                    self.last_success_time = time.time()
                    if outcome.status != OutcomeStatus.UNCHANGED or outcome.pid:
                        self.last_ingested_scan = job.text
                key = COUNTED.get(outcome.status)
                if key:
                    self.counts[key] += 1
                if outcome.ok and outcome.without_master:
                    self.without_data_files.add(self.queue.scan_key(job))
                if outcome.status == OutcomeStatus.FAILED:
                    self.last_error = self.failing = f"{job.text}: {outcome.message}"
            self._work.notify_all()
        # gave up on a generator: the failure is recorded in the ingested list
        problem = (
            self.runner.record_failure(job)
            if retire and outcome.status == OutcomeStatus.RETRY
            else ""
        )
        if problem:
            retire = False
            logger.error("%s: the failure cannot be recorded: %s", job.text, problem)
            with self._lock:
                self.counts["failed"] -= 1  # not failed yet: it waits for the disk
                self.failing = ""
                self.state_problem = problem
                self._retry_later(job)
        if retire:
            self.journal.retire(job)
        with self._lock:
            self.queue.release(job, retired=retire)
            self._work.notify_all()
        self._changed()

    def _park(self, job: Job) -> None:
        """Its beamtime went while it waited or ran: kept in the journal, run when back.

        Out of the queue (a later line of its scan must not wait behind it),
        not retired: the journal keeps it across a restart too.
        """
        self.intake.park(job)
        with self._lock:
            self.queue.stopped(job)
            self.queue.release(job, retired=True)
            self._work.notify_all()
        self._changed()

    def _retry_later(self, job: Job) -> None:
        """Queue the job again after its backoff; the caller holds the lock."""
        delay = self.queue.retry_later(job, time.monotonic())
        self.counts["retried"] += 1
        self._work.notify_all()
        logger.info("%s: retry %d in %.1f s", job.text, job.attempts, delay)

    def _retry_now(self) -> None:
        """SciCat answers again: the scans waiting for it need not wait longer."""
        with self._lock:
            self.queue.retry_now(time.monotonic())
            self._work.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued or running (tests, graceful stop)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self.queue.idle:
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
        count = self.intake.reingest(beamtime, scan)
        logger.info("Re-ingestion of %d scan(s) queued", count)
        self._succeeded()
        self._changed()
        return count

    # the measurement commands (they append to a list file: scingestor.commands)

    def current_measurement(self, scan_dir: Optional[str] = None) -> str:
        """The active measurement of *scan_dir*'s list file (default: the latest active)."""
        return self.commands.current_measurement(scan_dir)

    def list_file_for(self, scan_dir: Optional[str]) -> str:
        """The dataset list file of *scan_dir* (created if the dir is in a beamtime)."""
        return self.commands.list_file_for(scan_dir)

    def _command_done(self, result: str) -> str:
        """A command succeeded: earlier one-off errors are past; tell it."""
        self._succeeded()
        self._changed()
        return result

    def start_measurement(self, name: str, scan_dir: Optional[str] = None) -> str:
        """Start measurement *name* (closing and ingesting the current one)."""
        return self._command_done(self.commands.start_measurement(name, scan_dir))

    def stop_measurement(self, scan_dir: Optional[str] = None) -> str:
        """Stop the current measurement and ingest it; returns its name ('' if none)."""
        return self._command_done(self.commands.stop_measurement(scan_dir))

    def add_scan(self, record: str, scan_dir: Optional[str] = None) -> str:
        """Ingest an already listed scan again inside the current measurement
        (``make_measurement``'s last scan); returns the line appended."""
        return self._command_done(self.commands.add_scan(record, scan_dir))

    def update_measurement(self, scan_dir: Optional[str] = None) -> str:
        """Ingest the current measurement as it is now and keep it open."""
        return self._command_done(self.commands.update_measurement(scan_dir))
