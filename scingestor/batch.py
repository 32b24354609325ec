"""Batch (re-)ingestion over every beamtime of a configuration.

What ``scicat_dataset_ingest`` does, usually at the end of a beamtime: find
each beamtime file in the beamtime directories, each dataset list file
below it, and run every scan and measurement line of it through the
pipeline with the re-ingestion rules (a dataset, origdatablock or
attachment is posted again only when its metadata file changed since the
recorded ingestion).  The ingested lists are appended to (never replaced),
so a running daemon can share them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

from .beamtime import (
    Beamtime,
    BeamtimeFilter,
    BeamtimeIdMismatch,
    beamtime_directories,
    find_beamtime_files,
    read_beamtime,
)
from .config import IngestorConfig
from .errors import AuthenticationError, BeamtimeError, SciCatUnreachable, ScingestorError
from .groups import resolve_groups
from .layout import ingested_list_for, list_file_name, scan_paths, scandir_blacklisted
from .listfile import ScanLine, read_list_file
from .measurement import MeasurementState
from .outcomes import OutcomeStatus
from .pipeline import Pipeline
from .scantask import ScanOutcome, ScanTask, scan_path
from .scicat import SciCatClient
from .state import NOT_DONE, IngestedList, IngestedRecord

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class BatchSummary:
    outcomes: List[Tuple[str, ScanOutcome]] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    #: scans that waited for another ingestor process (a running daemon or device)
    waited: int = 0
    #: scans in SciCat from the beamtime metadata alone (no master file):
    #: the scan's path → where it is listed (one entry for ``s``, ``s:1`` …)
    without_data_files: Dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> Dict[str, int]:
        return dict(Counter(str(outcome.status) for _, outcome in self.outcomes))

    @property
    def failures(self) -> List[Tuple[str, ScanOutcome]]:
        return [
            (where, outcome)
            for where, outcome in self.outcomes
            if outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.RETRY)
        ]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors

    def report(self) -> str:
        counts = self.counts
        lines = [
            "Summary: "
            + ", ".join(f"{counts.get(status, 0)} {status}" for status in OutcomeStatus)
            + f"; {len(self.without_data_files)} posted without data files"
        ]
        for where, outcome in self.failures:
            lines.append(f"  {outcome.status}: {where}: {outcome.key}: {outcome.message}")
        if self.waited:
            lines.append(
                f"  waited for another ingestor process (a running daemon or device) "
                f"on {self.waited} scan(s)"
            )
        for where, outcome in self.outcomes:
            for text in outcome.surplus:
                lines.append(f"  more in SciCat than generated: {where}: {outcome.key}: {text}")
        for where in self.without_data_files.values():
            lines.append(f"  posted without data files (no master file): {where}")
        for error in self.errors:
            lines.append(f"  error: {error}")
        return "\n".join(lines)


def find_list_files(config: IngestorConfig, beamtime: Beamtime) -> List[str]:
    """Every dataset list file below the beamtime directory, blacklists respected."""
    name = list_file_name(config, beamtime.beamtime_id)
    converter = scan_paths(config, beamtime)
    found = []
    seen = set()
    for directory, subdirs, files in os.walk(beamtime.directory, followlinks=True):
        # symlinks are followed, so a link to a parent would loop (and find
        # the same list file again under ever longer paths): each directory once
        real = os.path.realpath(directory)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(
            d
            for d in subdirs
            if scandir_blacklisted(os.path.join(directory, d), config, converter) is None
        )
        if name in files:
            found.append(os.path.join(directory, name))
    return found


class BatchIngest:
    """Runs the pipeline over all list files of all configured beamtimes."""

    def __init__(
        self,
        config: IngestorConfig,
        client: SciCatClient,
        pipeline: Optional[Pipeline] = None,
        progress: Optional[Progress] = None,
    ) -> None:
        self.config = config
        self.client = client
        self.pipeline = pipeline or Pipeline(config, client)
        self.progress = progress
        self.filter = BeamtimeFilter(config)

    def beamtimes(self, summary: BatchSummary) -> Iterator[Beamtime]:
        for directory in beamtime_directories(self.config):
            if scandir_blacklisted(directory, self.config) is not None:
                continue
            if not os.path.isdir(directory):
                # a typo in beamtime_dirs must not end as "nothing to do", exit 0
                message = f"Beamtime directory {directory} does not exist: nothing ingested from it"
                logger.error("%s", message)
                summary.errors.append(message)
                continue
            for path in find_beamtime_files(directory, self.config):
                try:
                    beamtime = read_beamtime(path)
                except BeamtimeError as error:
                    level = (
                        logging.ERROR if isinstance(error, BeamtimeIdMismatch) else logging.WARNING
                    )
                    logger.log(level, "%s cannot be ingested: %s", path, error)
                    summary.errors.append(str(error))
                    continue
                reason = self.filter.reason_to_skip(beamtime)
                if reason:
                    logger.info("Beamtime %s skipped: %s", path, reason)
                    continue
                try:
                    beamtime = resolve_groups(self.client, self.config, beamtime)
                except (SciCatUnreachable, AuthenticationError) as error:
                    logger.error("Beamtime %s: proposal groups unknown: %s", path, error)
                    summary.errors.append(f"{path}: {error}")
                    continue
                yield beamtime

    def tasks(
        self, beamtime: Beamtime, list_file: str, ingested: Optional[IngestedList] = None
    ) -> List[ScanTask]:
        """The scan lines of a list file, with their measurement context.

        A measurement the daemon has begun grouping (its dataset JSON is
        there) is not grouped a second time for the scans it took in: those
        recorded done in *ingested*.  A scan listed in it but not ingested
        yet is grouped into it now (campaign seed 3039: a batch run beside
        the daemon posted two scans outside their measurement).
        """
        records, errors = read_list_file(list_file)
        for error in errors:
            logger.error("%s", error)
        state = MeasurementState()
        grouped_already = False
        tasks = []
        for record in records:
            if not isinstance(record, ScanLine):
                state.apply(record, list_file)
                grouped_already = bool(state.current) and os.path.exists(
                    self.pipeline.dataset_json(beamtime, list_file, state.current)
                )
                continue
            measurement = state.current
            if grouped_already and (ingested is None or ingested.is_done(record.text)):
                measurement = ""  # grouped with it when it was ingested
            tasks.append(
                ScanTask(
                    beamtime,
                    list_file,
                    record,
                    measurement=measurement,
                    last_measurement=state.last,
                    is_measurement=state.is_measurement(record),
                    reingest=True,
                )
            )
        return tasks

    def run(self, dry_run: bool = False) -> BatchSummary:
        summary = BatchSummary()
        work: List[Tuple[ScanTask, IngestedList]] = []
        for beamtime in self.beamtimes(summary):
            for list_file in find_list_files(self.config, beamtime):
                try:
                    path = ingested_list_for(self.config, beamtime, list_file)
                except ScingestorError as error:
                    summary.errors.append(str(error))
                    continue
                try:
                    ingested = IngestedList(
                        path,
                        self.config.retry_failed_dataset_ingestion,
                        self.config.retry_failed_attachment_ingestion
                        and self.config.ingest_dataset_attachment,
                    ).load()
                    tasks = self.tasks(beamtime, list_file, ingested)
                except OSError as error:
                    # one unreadable list (or ingested list) fails alone: the
                    # other lists still run, and the summary names it
                    logger.error("%s: cannot be read: %s", error.filename or list_file, error)
                    summary.errors.append(
                        f"{error.filename or list_file}: cannot be read: {error.strerror or error}"
                    )
                    continue
                work += [(task, ingested) for task in tasks]
        self._process(work, summary, dry_run)
        return summary

    def _process(
        self, work: List[Tuple[ScanTask, IngestedList]], summary: BatchSummary, dry_run: bool
    ) -> None:
        """Run the tasks, ``ingestion_workers`` at a time.

        Different scans run side by side.  The lines of one scan (``s``,
        ``s:1`` …: one dataset, one set of metadata files, see
        :func:`~scingestor.scantask.scan_keys`) run one after the other in
        list order, as one chain.  Scans taking part in measurement grouping
        wait for everything listed before them and run alone, so the
        measurement files are merged in list order.
        """
        total = len(work)
        done = 0
        lock = threading.Lock()

        def run(task: ScanTask, ingested: IngestedList) -> None:
            nonlocal done
            try:
                outcome = self.pipeline.process(task, ingested, dry_run=dry_run)
            except Exception as error:  # one scan's surprise must not end the run
                outcome = unexpected(task, ingested, error, dry_run)
            with lock:
                summary.outcomes.append((task.list_file, outcome))
                summary.waited += outcome.waited
                if outcome.ok and outcome.without_master:
                    summary.without_data_files.setdefault(
                        scan_path(task.list_file, task.line.scanname),
                        f"{task.list_file}:{task.line.lineno}: {task.line.scanname}",
                    )
                done += 1
                if self.progress:
                    self.progress(done, total, task.key)

        def run_chain(chain: List[Tuple[ScanTask, IngestedList]]) -> None:
            for task, ingested in chain:
                run(task, ingested)

        if self.progress:
            self.progress(0, total, "")
        with ThreadPoolExecutor(
            max_workers=self.config.ingestion_workers, thread_name_prefix="batch"
        ) as pool:
            side_by_side: List[Tuple[ScanTask, IngestedList]] = []

            def run_side_by_side() -> None:
                futures = [pool.submit(run_chain, chain) for chain in chains(side_by_side)]
                side_by_side.clear()
                for future in futures:
                    future.result()

            for task, ingested in work:
                if task.measurement or task.is_measurement:
                    run_side_by_side()
                    run(task, ingested)
                else:
                    side_by_side.append((task, ingested))
            run_side_by_side()


Item = Tuple[ScanTask, IngestedList]


def unexpected(
    task: ScanTask, ingested: IngestedList, error: Exception, dry_run: bool
) -> ScanOutcome:
    """The scan failed in a way nobody foresaw: failed, recorded, the batch goes on.

    Part of it may be in SciCat already (the dataset is posted before its
    blocks): the failure record lets ``retry_failed_dataset_ingestion``
    take it up on the next run, where the re-ingestion rules complete it.
    """
    logger.exception("%s: unexpected error", task.key)
    message = f"unexpected error: {type(error).__name__}: {error}"
    record = IngestedRecord(task.key, NOT_DONE, NOT_DONE, NOT_DONE)
    if not dry_run:
        try:
            ingested.append(record)
        except OSError as failure:
            message += f" (not recorded: {failure.filename}: {failure.strerror or failure})"
    return ScanOutcome(task.key, OutcomeStatus.FAILED, record=record, message=message)


def chains(work: List[Item]) -> List[List[Item]]:
    """*work* cut into chains: the lines sharing a scan key, each chain in list order.

    A line sharing keys with two chains (``sub/s`` of one list and ``s``
    of the list in ``sub``, both with a line ``s:1`` …) joins them into one.
    Chains are ordered by their first line.
    """
    owner: Dict[Hashable, int] = {}
    found: Dict[int, List[Tuple[int, Item]]] = {}
    for index, item in enumerate(work):
        keys = item[0].scan_keys
        ids = sorted({owner[key] for key in keys if key in owner})
        if ids:
            target = ids[0]
            for other in ids[1:]:
                found[target] += found.pop(other)
                for key, value in owner.items():
                    if value == other:
                        owner[key] = target
            found[target].sort(key=lambda entry: entry[0])
        else:
            target = index
            found[target] = []
        found[target].append((index, item))
        for key in keys:
            owner[key] = target
    return [[item for _index, item in chain] for _first, chain in sorted(found.items())]
