"""One job through the pipeline: what a worker thread does between taking and finishing.

:class:`JobRunner` finds the job's list file and ingested list, resolves
the beamtime's groups with SciCat once, runs the pipeline, and turns what
goes wrong into an outcome the service can act on: SciCat away
(``cause="scicat"``) and a state that cannot be written (``cause="state"``)
wait however long it takes; a failing generator gets a few tries.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any, Callable

from .batch import resolve_groups
from .beamtime import Beamtime
from .config import IngestorConfig
from .errors import SciCatUnreachable
from .intake import ListFileState, ListIntake
from .journal import Job
from .listfile import ScanLine, parse_line
from .pipeline import RETRY, UNCHANGED, Pipeline, ScanOutcome, ScanTask


class JobRunner:
    """Runs one job; *pipeline* and *client* give the ones of the moment (a restart
    makes new ones); *lock* is the service's."""

    def __init__(self, config: IngestorConfig, intake: ListIntake, lock: threading.Condition,
                 pipeline: Callable[[], Pipeline], client: Callable[[], Any]) -> None:
        self.config = config
        self.intake = intake
        self._lock = lock
        self._pipeline = pipeline
        self._client = client

    def _beamtime_for(self, state: ListFileState) -> Beamtime:
        beamtime = state.beamtime
        if beamtime.path not in self.intake.resolved:
            beamtime = resolve_groups(self._client(), self.config, beamtime)
            with self._lock:
                self.intake.resolved.add(beamtime.path)
                state.beamtime = beamtime
        return beamtime

    def run(self, job: Job) -> ScanOutcome:
        state = self.intake.list_state(job)
        pipeline = self._pipeline()
        try:
            ingested = self.intake.ingested(state)
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
            outcome = pipeline.process(task, ingested)
        except OSError as error:
            # the ingested list (or a metadata file) cannot be written: disk
            # full, read-only; nothing is wrong with the scan, it waits
            return ScanOutcome(job.text, RETRY, message=state_message(error), cause="state")
        if outcome.status == RETRY and outcome.cause == "generator":
            # a generator that cannot write its JSON fails like one that
            # cannot read the scan: tell them apart before counting attempts
            problem = self._unwritable(state, job, pipeline)
            if problem:
                return ScanOutcome(job.text, RETRY, message=problem, cause="state")
        return outcome

    def _unwritable(self, state: ListFileState, job: Job, pipeline: Pipeline) -> str:
        """Why the scan's metadata or ingested-list directory takes no data ('' if it does)."""
        directories = []
        if state.ingested is not None:
            directories.append(os.path.dirname(state.ingested.path))
        try:
            directories.append(os.path.dirname(pipeline.dataset_json(
                state.beamtime, job.list_file, "probe")))
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
