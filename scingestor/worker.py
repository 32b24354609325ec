"""The worker threads, and one job through the pipeline.

:class:`WorkerPool` is the threads: each takes the earliest due job the
queue lets start, runs it and hands the outcome to the service; a bug
never kills a worker nor loses a job.  :class:`JobRunner` finds the job's
list file and ingested list, resolves the beamtime's groups with SciCat
once, runs the pipeline, and turns what goes wrong into an outcome the
service can act on: SciCat away (``cause="scicat"``) and a state that
cannot be written (``cause="state"``) wait however long it takes; a
failing generator gets a few tries.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional

from . import leftovers
from .beamtime import Beamtime
from .config import IngestorConfig
from .errors import AuthenticationError, SciCatUnreachable, answering_but_failing
from .groups import resolve_groups
from .intake import ListFileState, ListIntake
from .jobqueue import JobQueue
from .journal import Job
from .listfile import ScanLine, parse_line
from .masterfile import master_wait_tries
from .outcomes import OutcomeStatus, RetryCause
from .pipeline import Pipeline
from .scantask import ScanOutcome, ScanTask
from .state import NOT_DONE, IngestedRecord

logger = logging.getLogger(__name__)


class WorkerPool:
    """Worker threads between the queue and the service's *finish*.

    *lock* is the service's condition, notified whenever a job may have
    become free to start; *started* is called as a job starts (the
    service tells its subscribers).
    """

    def __init__(
        self,
        lock: threading.Condition,
        queue: JobQueue,
        run: Callable[[Job], ScanOutcome],
        finish: Callable[[Job, ScanOutcome], None],
        started: Callable[[], None],
    ) -> None:
        self._lock = lock
        self._queue = queue
        self._run = run
        self._finish = finish
        self._started = started
        self.threads: List[threading.Thread] = []
        self.stopping = False

    def start(self, count: int) -> None:
        with self._lock:
            self.stopping = False
            for index in range(count):
                worker = threading.Thread(target=self._loop, name=f"ingest-{index}", daemon=True)
                worker.start()
                self.threads.append(worker)

    def halt(self) -> None:
        """Take no more jobs (the running ones finish)."""
        with self._lock:
            self.stopping = True
            self._lock.notify_all()

    def join(self, deadline: float) -> None:
        """Wait (until the monotonic *deadline*) for the threads to end."""
        for worker in self.threads:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self.threads = []

    def alive(self) -> bool:
        with self._lock:
            workers = list(self.threads)
        return bool(workers) and all(worker.is_alive() for worker in workers)

    def _next_job(self) -> Optional[Job]:
        """The earliest due job allowed to start; waits without polling.

        A due job held back (its scan or its list file busy) is woken by the
        notification of the job it waits for; otherwise the wait lasts until
        the next job falls due.
        """
        with self._lock:
            while not self.stopping:
                now = time.monotonic()
                job, upcoming = self._queue.take(now)
                if job is not None:
                    return job
                self._lock.wait(None if upcoming is None else max(0.0, upcoming - now))
            return None

    def _loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            self._started()
            try:
                outcome = self._run(job)
            except Exception as error:  # never lose the job over a bug
                # one line at the default level; the traceback for a developer (debug)
                logger.error("%s: unexpected error: %s: %s", job.text, type(error).__name__, error)
                logger.debug("%s: unexpected error", job.text, exc_info=True)
                outcome = ScanOutcome(
                    job.text, OutcomeStatus.RETRY, message=f"unexpected error: {error}"
                )
            try:
                self._finish(job, outcome)
            except Exception:  # a worker must not die: the other scans need it
                logger.exception("%s: bookkeeping failed", job.text)
                with self._lock:
                    self._queue.release(job, retired=not self._queue.queued(job))
                    self._lock.notify_all()


class JobRunner:
    """Runs one job; *pipeline* and *client* give the ones of the moment (a restart
    makes new ones); *lock* is the service's."""

    def __init__(
        self,
        config: IngestorConfig,
        intake: ListIntake,
        lock: threading.Condition,
        pipeline: Callable[[], Pipeline],
        client: Callable[[], Any],
    ) -> None:
        self.config = config
        self.intake = intake
        self._lock = lock
        self._pipeline = pipeline
        self._client = client

    def _beamtime_for(self, state: ListFileState) -> Beamtime:
        with self._lock:
            original = state.beamtime
            if original is state.resolved_beamtime:
                return original
        # outside the lock: a SciCat request (one per list file and beamtime file)
        beamtime = resolve_groups(self._client(), self.config, original)
        with self._lock:
            if state.beamtime is original:  # not reloaded meanwhile
                state.beamtime = state.resolved_beamtime = beamtime
        return beamtime

    def run(self, job: Job) -> ScanOutcome:
        if not self.intake.watches(job):
            # the service parks it (see ListIntake.park): nothing to run it on now
            return ScanOutcome(
                job.text, OutcomeStatus.RETRY, message="its beamtime is not watched now"
            )
        state = self.intake.list_state(job)
        pipeline = self._pipeline()
        try:
            ingested = self.intake.ingested(state)
            if not job.forced and ingested.is_done(job.text):
                return ScanOutcome(job.text, OutcomeStatus.UNCHANGED, message="already ingested")
            line = parse_line(job.text, job.lineno, job.list_file)
            assert isinstance(line, ScanLine)
            try:
                beamtime = self._beamtime_for(state)
            except (SciCatUnreachable, AuthenticationError) as error:
                # proposal groups unknown yet: wait rather than keep defaults for good
                cause = RetryCause.FAILING if answering_but_failing(error) else RetryCause.SCICAT
                return ScanOutcome(job.text, OutcomeStatus.RETRY, message=str(error), cause=cause)
            task = ScanTask(
                beamtime,
                job.list_file,
                line,
                measurement=job.measurement,
                last_measurement=job.last_measurement,
                is_measurement=job.is_measurement,
                reingest=job.reingest,
                wait_for_master=job.attempts < master_wait_tries(self.config),
            )
            outcome = pipeline.process(task, ingested)
        except OSError as error:
            # the ingested list (or a metadata file) cannot be written: disk
            # full, read-only; nothing is wrong with the scan, it waits
            return ScanOutcome(
                job.text, OutcomeStatus.RETRY, message=state_message(error), cause="state"
            )
        if outcome.status == OutcomeStatus.RETRY and outcome.cause == "generator":
            # a generator that cannot write its JSON fails like one that
            # cannot read the scan: tell them apart before counting attempts
            problem = self._unwritable(state, job, pipeline)
            if problem:
                return ScanOutcome(job.text, OutcomeStatus.RETRY, message=problem, cause="state")
        return outcome

    def record_failure(self, job: Job) -> str:
        """Record a job given up on as failed in its ingested list; '' or why it cannot.

        So the failure shows, and ``retry_failed_dataset_ingestion`` picks the
        line up on the next start.
        """
        with self._lock:
            state = self.intake.lists.get(job.list_file)
        if state is None:
            return ""
        try:
            self.intake.ingested(state).append(
                IngestedRecord(job.text, NOT_DONE, NOT_DONE, NOT_DONE)
            )
        except OSError as error:
            return state_message(error)
        return ""

    def _unwritable(self, state: ListFileState, job: Job, pipeline: Pipeline) -> str:
        """Why the scan's metadata or ingested-list directory takes no data ('' if it does)."""
        directories = []
        if state.ingested is not None:
            directories.append(os.path.dirname(state.ingested.path))
        try:
            directories.append(
                os.path.dirname(pipeline.dataset_json(state.beamtime, job.list_file, "probe"))
            )
        except Exception:  # only a diagnosis: the generator's error stands
            pass
        for directory in directories:
            problem = _probe_write(directory)
            if problem:
                return problem
        return ""


def state_message(error: OSError) -> str:
    """``<file>: <reason>`` for a state file that cannot be written."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def _probe_write(directory: str) -> str:
    """'' when *directory* takes a byte of data, else why not (``<dir>: <reason>``)."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=leftovers.prefix(leftovers.PROBE), dir=directory)
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
