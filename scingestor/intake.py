"""The list intake: what the watcher finds becomes journaled jobs in the queue.

:class:`ListIntake` is the watcher's sink (``watch.discovery.WatchSink``):
the watcher's one event thread calls it with beamtimes appearing and
changing and with the new complete lines of each list file.  It keeps
what the service knows about each watched list file (:class:`ListFileState`:
its beamtime, read offset, measurement state and ingested list), turns
scan lines into jobs -- in one place, :func:`job_for` -- journals them
durably and pushes them into the :class:`~scingestor.jobqueue.JobQueue`.

Every method takes the service's lock itself.  The operator commands that
write list lines are in :mod:`scingestor.commands`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Union

from .beamtime import Beamtime, read_beamtime, under
from .config import IngestorConfig
from .errors import JournalError, ScingestorError
from .jobqueue import JobQueue
from .journal import Job, Journal, describe_beamtimes
from .layout import ingested_list_for
from .listfile import ScanLine, parse_line, parse_text
from .measurement import MeasurementState
from .readpoint import ReadPoint, check_file
from .state import IngestedList

if TYPE_CHECKING:  # the watcher needs inotify: imported by the daemon only
    from .watch.tailer import ListRecord

logger = logging.getLogger(__name__)

HasPlot = Callable[[Beamtime, str, ScanLine], bool]


@dataclass
class ListFileState:
    """What the service knows about one watched dataset list file."""

    beamtime: Beamtime
    path: str
    measurement: MeasurementState = field(default_factory=MeasurementState)
    read_offset: int = 0
    #: line number of the last record read in this run (0: none yet)
    last_lineno: int = 0
    ingested: Optional[IngestedList] = None
    #: ``beamtime`` once its groups were resolved with SciCat; a reloaded
    #: beamtime file (a new object) is resolved again
    resolved_beamtime: Optional[Beamtime] = None


def job_for(
    journal: Journal,
    state: ListFileState,
    line: ScanLine,
    walk: MeasurementState,
    *,
    forced: bool = False,
) -> Job:
    """The job of a scan line, listed where *walk* says (the measurement then active).

    A forced job (an operator's re-ingestion) re-ingests the scan whatever the
    ingested list says, outside any measurement: it is not a new listing.
    """
    return journal.new_job(
        list_file=state.path,
        beamtime_file=state.beamtime.path,
        lineno=line.lineno or 0,
        text=line.text,
        measurement="" if forced else walk.current,
        last_measurement=walk.last,
        is_measurement=walk.is_measurement(line),
        reingest=forced or line.is_reingestion,
        forced=forced,
    )


class ListIntake:
    """The watcher's sink and the service's knowledge of beamtimes and list files.

    *lock* is the service's condition: it guards everything here and the
    queue, and is notified when jobs are queued or a list file was read.
    *report* records an error text (no notification); *changed* tells the
    service's subscribers; *has_plot* asks the pipeline of the moment
    whether a scan has something to attach.
    """

    def __init__(
        self,
        config: IngestorConfig,
        journal: Journal,
        queue: JobQueue,
        lock: threading.Condition,
        *,
        report: Callable[[str], None],
        changed: Callable[[], None],
        has_plot: HasPlot,
    ) -> None:
        self.config = config
        self.journal = journal
        self.queue = queue
        self._lock = lock
        self._report = report
        self._changed = changed
        self._has_plot = has_plot
        self.lists: Dict[str, ListFileState] = {}
        self.beamtimes: Dict[str, Beamtime] = {}
        #: journaled jobs of list files not watched (yet), per list file: never
        #: run for another configuration; resumed if their list file is watched later
        self.aside: Dict[str, List[Job]] = {}
        #: the list file of the latest activity (a listed scan or a command)
        self.current_list_file: Optional[str] = None

    def clear(self) -> None:
        """Forget the watched things (the service stops; the watcher finds them again)."""
        with self._lock:
            self.beamtimes.clear()
            self.lists.clear()
            self.aside = {}

    def _schedule(self, jobs: Sequence[Job], due: float) -> None:
        with self._lock:
            for job in jobs:
                self.queue.push(job, due)
            self._lock.notify_all()

    # -- start: the journal's jobs ----------------------------------------------------

    def may_watch(self, list_file: str) -> bool:
        """Is *list_file* below a beamtime directory of this configuration?"""
        roots = [os.path.normpath(os.path.abspath(d)) for d in self.config.beamtime_dirs]
        if self.config.beamtime_base_dir:
            roots.append(self.config.beamtime_base_dir)
        return under(list_file, roots) is not None

    def resume(self, pending: List[Job]) -> None:
        """Queue the journal's jobs of watched list files; keep the others aside.

        A job of a list file this configuration does not watch may be
        another configuration's (an explicitly shared ``ingestor_state_dir``)
        or of a beamtime not there now: running it would post that scan to
        this configuration's SciCat.  It stays in the journal, and runs once
        its list file is watched.
        """
        with self._lock:
            resumed = [job for job in pending if job.list_file in self.lists]
            aside = [job for job in pending if job.list_file not in self.lists]
            for job in aside:
                self.aside.setdefault(job.list_file, []).append(job)
        self._schedule(resumed, time.monotonic())
        if resumed:
            logger.info("Resuming %d job(s) from the journal %s", len(resumed), self.journal.path)
        if aside:
            logger.warning(
                "%d job(s) in the journal %s are of list files this configuration does not "
                "watch (beamtimes: %s): not resumed, kept in the journal until their list "
                "file is watched",
                len(aside),
                self.journal.path,
                describe_beamtimes(aside),
            )

    def start_point(self, list_file: str) -> ReadPoint:
        """Where the watcher starts reading *list_file* found for the first time.

        The journal's read point, if the file still holds what was read up
        to it.  A file replaced or truncated while no ingestor watched it
        (and maybe grown again) is read from its start instead, and its old
        offset is forgotten, so that no part of a line is taken for a
        record; the ingested list keeps the lines done from a second
        ingestion.
        """
        point = self.journal.read_point(list_file)
        if point.offset <= 0:
            return point
        try:
            reason = check_file(list_file, point)
        except OSError:
            return point  # the watcher's read reports it
        if reason is None:
            return point
        logger.warning(
            "List file %s %s (it was replaced or truncated while not watched): "
            "reading it again from its start",
            list_file,
            reason,
        )
        try:
            self.journal.forget_offset(list_file)
        except JournalError as error:
            logger.error("%s", error)
        return ReadPoint()

    # -- the watcher's sink (called on the watcher's thread: keep it quick) ------------

    def beamtime_added(self, beamtime: Beamtime) -> None:
        with self._lock:
            self.beamtimes[beamtime.path] = beamtime
        logger.info("Watching beamtime %s (%s)", beamtime.beamtime_id, beamtime.path)
        self._changed()

    def beamtime_changed(self, beamtime: Beamtime) -> None:
        with self._lock:
            self.beamtimes[beamtime.path] = beamtime
            for state in self.lists.values():
                if state.beamtime.path == beamtime.path:
                    state.beamtime = beamtime
        logger.info("Beamtime %s reloaded", beamtime.path)
        self._changed()

    def beamtime_removed(self, path: str) -> None:
        with self._lock:
            self.beamtimes.pop(path, None)
            for name in [n for n, s in self.lists.items() if s.beamtime.path == path]:
                del self.lists[name]
        logger.info("Beamtime %s is no longer watched", path)
        self._changed()

    def beamtime_error(self, path: str, error: Exception) -> None:
        logger.warning("%s cannot be watched: %s", path, error)
        self._report(str(error))
        self._changed()

    def list_file_added(self, beamtime: Beamtime, list_file: str) -> None:
        with self._lock:
            if list_file in self.lists:
                return
            state = ListFileState(beamtime, list_file)
            # checked again: a file deleted and written anew is not the one read
            offset = self.start_point(list_file).offset
            self.lists[list_file] = state
            if offset:
                state.read_offset = offset
                self._recover(state, offset)
            released = self.aside.pop(list_file, [])
        logger.info("Watching dataset list %s", list_file)
        if released:
            logger.info(
                "%s is watched now: resuming its %d job(s) kept aside at start",
                list_file,
                len(released),
            )
            self._schedule(released, time.monotonic())
        self._changed()

    def list_file_removed(self, beamtime: Beamtime, list_file: str) -> None:
        with self._lock:
            self.lists.pop(list_file, None)
        self._changed()

    def list_records(self, beamtime: Beamtime, list_file: str, records: List[ListRecord]) -> None:
        """New complete lines of a list file: journal them, then queue the scans."""
        if not records:
            return
        with self._lock:
            state = self.lists.get(list_file)
            if state is None:
                state = ListFileState(beamtime, list_file)
                self.lists[list_file] = state
            if records[0].lineno <= state.last_lineno or (
                records[0].end_offset <= state.read_offset and records[0].lineno == 1
            ):
                # read again from its start (replaced or truncated): line numbers went
                # back; the measurement of the old file is not this file's
                state.measurement = MeasurementState()
            jobs = []
            ingested = self.ingested(state)
            for item in records:
                try:
                    record = parse_line(item.text, item.lineno, list_file)
                except ScingestorError as error:
                    logger.error("%s", error)
                    self._report(str(error))
                    continue
                if record is None:
                    continue
                if not isinstance(record, ScanLine):
                    state.measurement.apply(record, list_file)
                    continue
                if self.done(state, ingested, record):
                    continue  # e.g. a list read from the start: done lines need no job
                jobs.append(job_for(self.journal, state, record, state.measurement))
            state.read_offset = records[-1].end_offset
            state.last_lineno = records[-1].lineno
            self.current_list_file = list_file
            self._journal_accept(list_file, records[-1].point, jobs)
            self._schedule(jobs, time.monotonic() + self.config.ingestion_delay_time)
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
        ingested = self.ingested(state)
        with self._lock:
            queued = self.queue.queued_texts(state.path)
        queued |= self.journal.pending_texts(state.path)
        jobs = []
        for record in records:
            if not isinstance(record, ScanLine):
                state.measurement.apply(record, state.path)
                continue
            if record.text in queued or self.done(state, ingested, record):
                continue
            queued.add(record.text)
            jobs.append(job_for(self.journal, state, record, state.measurement))
        if jobs:
            logger.info(
                "%s: %d earlier line(s) not ingested yet: queued again", state.path, len(jobs)
            )
            self._journal_accept(state.path, None, jobs)
            self._schedule(jobs, time.monotonic())

    def _journal_accept(
        self, list_file: str, offset: Union[ReadPoint, int, None], jobs: List[Job]
    ) -> None:
        """Journal the jobs; if the journal cannot be written, ingest them all the same.

        The lines stay safe: the list file's offset on disk was not advanced,
        so a crash before they are done makes the next start read them again,
        and the journal writes them with the next lines it can write.
        """
        try:
            self.journal.accept(list_file, offset, jobs)
        except JournalError as error:
            message = (
                f"{error}: {len(jobs)} line(s) of {list_file} are ingested without "
                "being journaled (after a crash they are read again)"
            )
            logger.error("%s", message)
            self._report(message)

    # -- operator: re-ingestion --------------------------------------------------------

    def reingest(self, beamtime: Optional[str] = None, scan: Optional[str] = None) -> int:
        """Queue every matching listed scan for a forced re-ingestion; returns how many.

        *beamtime* is a beamtime id (None: all watched), *scan* a scan or
        measurement name or a whole list line (None: every line).  A list
        file that cannot be read is reported and skipped.
        """
        with self._lock:
            lists = [
                state
                for state in self.lists.values()
                if beamtime is None or state.beamtime.beamtime_id == beamtime
            ]
        count = 0
        for state in lists:
            try:
                with open(state.path, "rb") as handle:
                    text = handle.read().decode("utf-8", errors="replace")
            except OSError as error:
                self._report(f"{state.path}: {error}")
                self._changed()
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
                jobs.append(job_for(self.journal, state, record, walk, forced=True))
            if jobs:
                self._journal_accept(state.path, None, jobs)
                self._schedule(jobs, time.monotonic())
                count += len(jobs)
        return count

    # -- a beamtime gone while its jobs wait ----------------------------------------------

    def watches(self, job: Job) -> bool:
        """Is *job*'s beamtime watched now (its directory there, its file readable)?"""
        with self._lock:
            return job.beamtime_file in self.beamtimes

    def park(self, job: Job) -> None:
        """Keep *job* (journaled, not run) until its list file is watched again.

        Its beamtime directory went (an unmounted GPFS, a directory moved
        away) or its beamtime file did: running the job now could only fail,
        and failing would retire it with no record anywhere (its ingested
        list went with the directory).  :meth:`list_file_added` queues it
        again when the directory is back; until then a restart keeps it
        aside the same way (:meth:`resume`).
        """
        with self._lock:
            first = job.list_file not in self.aside
            self.aside.setdefault(job.list_file, []).append(job)
        if first:
            logger.warning(
                "%s: its beamtime %s is not watched now (directory gone or unmounted?): "
                "its jobs are kept in the journal and run when it is back",
                job.list_file,
                describe_beamtimes([job]),
            )
        self._changed()

    # -- what the workers need of a list file --------------------------------------------

    def list_state(self, job: Job) -> ListFileState:
        """The state of *job*'s list file (made from its beamtime file if not watched now)."""
        with self._lock:
            state = self.lists.get(job.list_file)
            if state is not None:
                return state
            beamtime = self.beamtimes.get(job.beamtime_file)
        state = ListFileState(beamtime or read_beamtime(job.beamtime_file), job.list_file)
        with self._lock:
            self.lists.setdefault(job.list_file, state)
            return self.lists[job.list_file]

    def done(self, state: ListFileState, ingested: IngestedList, line: ScanLine) -> bool:
        """Is the line ingested? A scan with nothing to attach is not retried forever."""
        if ingested.is_done(line.text):
            return True
        return ingested.waits_only_for_attachment(line.text) and not self._has_plot(
            state.beamtime, state.path, line
        )

    def ingested(self, state: ListFileState) -> IngestedList:
        """The ingested list of *state*'s list file (loaded on first use).

        Under the lock: two workers (or a worker and the watcher) must share
        one in-memory list, or records appended to the other copy are lost.
        """
        with self._lock:
            return self._load_ingested(state)

    def _load_ingested(self, state: ListFileState) -> IngestedList:
        if state.ingested is None:
            path = ingested_list_for(self.config, state.beamtime, state.path)
            state.ingested = IngestedList(
                path,
                self.config.retry_failed_dataset_ingestion,
                self.config.retry_failed_attachment_ingestion
                and self.config.ingest_dataset_attachment,
            ).load()
        return state.ingested
