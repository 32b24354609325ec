"""Ingest one list line: generate the metadata, post it, record the result.

For a scan line the steps are those of existing installations: reuse or
generate the dataset JSON (from the master file found for the scan, or
from the beamtime alone), the origdatablock JSON (the scan's files plus the
line's detector paths) and the attachment JSON (from a plot file), run the
measurement callback, post according to the update strategy, and append a
record to the ingested list.  What differs is how failures end: every
error names the scan and the file, a transient one (SciCat unreachable, a
generator that failed) leaves the scan to be retried, and a retry never
posts anything twice (see :mod:`scingestor.uploads`).
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from . import interlock, leftovers
from .beamtime import Beamtime, under
from .config import IngestorConfig
from .errors import (
    AuthenticationError,
    BeamtimeError,
    CredentialError,
    DatasetRejected,
    EmptyMeasurement,
    GeneratorError,
    ScanError,
    SciCatError,
    SciCatUnreachable,
    answering_but_failing,
)
from .layout import PathConverter, metadata_dir, scan_paths
from .listfile import ScanLine
from .masterfile import MasterFileAwaited, check_master, find_scan_file
from .measurement import measurement_files
from .metadata.commands import (
    ATTACHMENT,
    CALLBACK,
    DATABLOCK,
    DATABLOCK_STREAM,
    DATASET,
    FILE_DATASET,
    build_command,
    scanpath_arguments,
)
from .metadata.files import (
    discard,
    names_output,
    redirect,
    restored_on_failure,
    usable,
    write_json,
    written_whole,
)
from .metadata.keywords import ScanFiles, scan_keywords
from .metadata.runner import CommandResult, CommandRunner, reason
from .outcomes import OutcomeStatus, RetryCause
from .posting import Poster, load_json, mtime
from .scantask import ScanOutcome, ScanTask
from .scicat import SciCatClient
from .state import NOT_DONE, IngestedList, IngestedRecord

logger = logging.getLogger(__name__)


@dataclass
class _Artefacts:
    """The metadata files of one scan and what they hold."""

    dataset: str
    datablock: str
    attachment: str
    datablock_files: List[str] = field(default_factory=list)
    attachment_files: List[str] = field(default_factory=list)
    #: a scan line whose master file is not there (see Pipeline._check_master)
    without_master: bool = False


class Pipeline:
    """Processes scan tasks against one SciCat client (thread-safe per task)."""

    def __init__(
        self, config: IngestorConfig, client: SciCatClient, runner: Optional[CommandRunner] = None
    ) -> None:
        self.config = config
        self.client = client
        self.poster = Poster(config, client)
        self.runner = runner or CommandRunner(
            config.execute_commands,
            config.log_generator_commands,
            in_process=config.generator_in_process,
            workers=min(config.ingestion_workers, os.cpu_count() or 2),
        )
        # threads that wait for generator commands, so the commands of one
        # scan (dataset, origdatablock, attachment) run side by side
        self._threads = ThreadPoolExecutor(
            max_workers=3 * config.ingestion_workers, thread_name_prefix="generator"
        )

    def close(self) -> None:
        """Stop the generator workers."""
        self._threads.shutdown(wait=True)
        self.runner.close()

    # -- paths -------------------------------------------------------------

    def _files(self, task: ScanTask) -> Tuple[ScanFiles, str, PathConverter]:
        beamtime = task.beamtime
        converter = scan_paths(self.config, beamtime)
        local_dir = os.path.dirname(os.path.abspath(task.list_file))
        scan_dir = converter.to_core(local_dir)
        relpath = os.path.relpath(local_dir, beamtime.directory)
        files = ScanFiles(
            scan_dir=scan_dir,
            meta_dir=metadata_dir(self.config, beamtime.beamtime_id, scan_dir),
            relpath=relpath,
        )
        return files, local_dir, converter

    def has_plot(self, beamtime: Beamtime, list_file: str, line: ScanLine) -> bool:
        """Is there a plot file (or an attachment JSON) for this scan?"""
        task = ScanTask(beamtime, list_file, line)
        files, local_dir, _converter = self._files(task)
        attachment = (
            os.path.join(files.meta_dir, line.scanname) + self.config.attachment_metadata_postfix
        )
        return (
            os.path.exists(attachment)
            or find_scan_file(local_dir, line.masterscanname, self.config.plot_file_extension_list)
            is not None
        )

    def dataset_json(self, beamtime: Beamtime, list_file: str, name: str) -> str:
        """Where the dataset JSON of scan or measurement *name* of a list file lives."""
        task = ScanTask(beamtime, list_file, ScanLine(name, name, name))
        files, _local, _converter = self._files(task)
        return os.path.join(files.meta_dir, name) + self.config.scan_metadata_postfix

    def _check_detectors(self, task: ScanTask, local_dir: str) -> None:
        """Paths of a list line may point next to the scan dir, never out of the beamtime.

        Checked on the text (``../..``) and on the real path, symlinks
        resolved: a link inside the beamtime pointing elsewhere (``raw/x ->
        /etc``, or another beamtime) would otherwise hand the files behind it
        to the generators and their metadata to SciCat.  Allowed are the
        beamtime directory and its ``corePath`` (both resolved, so a beamtime
        reached through a symlink, ``/gpfs/current`` -> the core path, stays
        fine) and the scan directory itself (resolved: the watcher follows
        symlinked scan directories).
        """
        beamtime = task.beamtime
        line = task.line
        paths = [("detector path", detector) for detector in line.detectors]
        paths.append(("scan name", line.scanname))
        if line.masterscanname != line.scanname:
            paths.append(("master file name", line.masterscanname))
        roots = {os.path.realpath(beamtime.directory), os.path.realpath(local_dir)}
        if beamtime.core_path and os.path.normpath(beamtime.core_path) != "/":
            roots.add(os.path.realpath(beamtime.core_path))
        for label, name in paths:
            target = os.path.normpath(os.path.join(local_dir, name))
            if label == "detector path" and under(target, [beamtime.directory]) is None:
                raise ScanError(
                    f"{task.list_file}:{line.lineno}: detector path "
                    f"'{name}' leaves the beamtime directory "
                    f"{beamtime.directory}"
                )
            for candidate in self._scan_paths(target, label):
                real = os.path.realpath(candidate)
                if under(real, roots) is None:
                    raise ScanError(
                        f"{task.list_file}:{line.lineno}: {label} '{name}' "
                        f"leads out of the beamtime directory "
                        f"{beamtime.directory}: {candidate} is a link to {real}"
                    )

    def _scan_paths(self, target: str, label: str) -> List[str]:
        """*target* and, for a scan, the files the generators would read for it."""
        if label == "detector path":
            return [target]
        directory, name = os.path.split(target)
        found = [target]
        for extensions in (
            self.config.master_file_extension_list,
            self.config.plot_file_extension_list,
        ):
            path = find_scan_file(directory, name, extensions)
            if path is not None and path not in found:
                found.append(path)
        return found

    # -- generation --------------------------------------------------------

    def _run(
        self,
        name: str,
        values: Dict[str, object],
        what: str,
        extra: Sequence[str] = (),
        output: Optional[str] = None,
    ) -> CommandResult:
        """Run generator *name*; its *output* file appears whole or not at all.

        The generators write their JSON in place, so a reader (another line
        of the scan, a retry, a person) could find half a file.  The command
        writes to a file of the same name in a new hidden directory instead
        (see :func:`~scingestor.metadata.files.written_whole`), which then replaces *output* in one
        rename.  A configured command that does not name *output* as an
        argument writes it its own way: lines of one scan run one at a time,
        so no reader of ours sees it half written.
        """
        argv = build_command(self.config, name, values, extra)
        if output is None or not self.runner.execute or not names_output(argv, output):
            return self.runner.run(argv, what)
        try:
            with written_whole(output) as temporary:
                return self.runner.run(redirect(argv, output, temporary), what)
        except OSError as error:
            # as when the command itself cannot write: retried (the service
            # tells a full or read-only disk apart)
            raise GeneratorError(
                f"{what}: {output} cannot be written: {error.strerror or error}", argv
            ) from None

    def _ensure_dataset_json(
        self,
        task: ScanTask,
        values: Dict[str, object],
        files: ScanFiles,
        local_dir: str,
        path: str,
        converter: PathConverter,
    ) -> None:
        master_local = find_scan_file(
            local_dir, task.line.masterscanname, self.config.master_file_extension_list
        )
        if usable(path):
            stale = (
                task.reingest
                and not task.is_measurement
                and master_local is not None
                and mtime(master_local) > mtime(path)
            )
            if not stale:
                return
            logger.info("Master file %s is newer than %s: regenerating", master_local, path)
        if task.is_measurement and not self.config.force_generate_measurement:
            raise EmptyMeasurement(
                f"measurement {task.line.scanname} grouped no scan yet "
                f"({path} does not exist): nothing to ingest"
            )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if master_local is not None:
            master = converter.to_core(master_local)
            values["masterfile"] = master
            values["ext"] = os.path.splitext(master)[1].lstrip(".")
            logger.info("Generating %s metadata: %s %s", values["ext"], task.line.scanname, path)
            result = self._run(FILE_DATASET, values, f"{FILE_DATASET} for {task.key}", output=path)
            if result.executed and not os.path.exists(path):
                # exit 0 and nothing written: the reason, in the one line of the scan
                why = reason(result.stderr) if result.stderr.strip() else "nothing written"
                raise ScanError(f"metadata missing after generation: {path}: {why}")
        else:
            logger.info("Generating metadata: %s %s", task.line.scanname, path)
            self._run(DATASET, values, f"{DATASET} for {task.key}", output=path)

    def _check_master(self, task: ScanTask, local_dir: str) -> bool:
        """Warn of a scan line without master file; True when it has none (see masterfile)."""
        return check_master(task, local_dir, self.config.master_file_extension_list)

    def _datablock_tokens(self, task: ScanTask) -> List[str]:
        first = task.line.masterscanname if task.line.is_multi_entry else task.line.scanname
        return [first, *task.line.detectors]

    def _ensure_datablock_json(
        self, task: ScanTask, values: Dict[str, object], path: str, folder: str
    ) -> None:
        if usable(path) and not self.config.single_datablock_ingestion:
            if task.reingest and not task.is_measurement:
                self._refresh_datablock(task, values, path, folder)
            return
        if task.is_measurement:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        logger.info("Generating origdatablock metadata: %s %s", task.line.scanname, path)
        extra = scanpath_arguments(self.config, values, self._datablock_tokens(task))
        self._run(DATABLOCK, values, f"{DATABLOCK} for {task.key}", extra, output=path)
        _folder_still_there(task, folder, written=path)

    def _refresh_datablock(
        self, task: ScanTask, values: Dict[str, object], path: str, folder: str
    ) -> None:
        """Re-describe the scan's files; rewrite the JSON only when they changed."""
        current = load_json(path)
        if not isinstance(current, dict):
            return  # a measurement's list of files
        logger.info("Checking origdatablock metadata: %s", path)
        extra = scanpath_arguments(self.config, values, self._datablock_tokens(task))
        text = self._run(
            DATABLOCK_STREAM, values, f"{DATABLOCK_STREAM} for {task.key}", extra
        ).stdout
        if not self.runner.execute:
            return
        try:
            fresh = json.loads(text)
        except json.JSONDecodeError:
            raise GeneratorError(f"{DATABLOCK_STREAM} for {task.key} printed no JSON") from None
        if fresh != current:
            _folder_still_there(task, folder)
            if current.get("dataFileList") and not (
                isinstance(fresh, dict) and fresh.get("dataFileList")
            ):
                # all files gone at once is a folder away, not a scan emptied:
                # the block in SciCat is kept (retried; recorded failed at the end)
                raise GeneratorError(
                    f"{DATABLOCK_STREAM} for {task.key} found none of the "
                    f"{len(current['dataFileList'])} files {path} lists: kept as it is"
                )
            write_json(path, fresh, self.config.chmod_mode())

    def _ensure_attachment_json(
        self,
        task: ScanTask,
        values: Dict[str, object],
        local_dir: str,
        path: str,
        converter: PathConverter,
    ) -> None:
        if usable(path) or task.is_measurement:
            return
        plot_local = find_scan_file(
            local_dir, task.line.masterscanname, self.config.plot_file_extension_list
        )
        if plot_local is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        plot = converter.to_core(plot_local)
        values["plotfile"] = plot
        values["plotext"] = os.path.splitext(plot)[1].lstrip(".")
        logger.info("Generating attachment metadata: %s %s", task.line.scanname, path)
        self._run(ATTACHMENT, values, f"{ATTACHMENT} for {task.key}", output=path)

    def _callback(self, task: ScanTask, values: Dict[str, object], artefacts: _Artefacts) -> None:
        wanted = self.config.call_metadata_generated_callback or bool(task.measurement)
        if not wanted or task.is_measurement or not self.config.metadata_generated_callback:
            return
        if not (os.path.exists(artefacts.dataset) and os.path.exists(artefacts.datablock)):
            return
        argv = build_command(self.config, CALLBACK, values)
        logger.info("Metadata generated callback: %s", " ".join(argv))
        name = str(values.get("lastmeasurement") or "")
        meta_dir = os.path.dirname(artefacts.dataset)
        with restored_on_failure(measurement_files(self.config, meta_dir, name)):
            self.runner.run(argv, f"{CALLBACK} for {task.key}")

    # -- the task ------------------------------------------------------------

    def prepare(
        self, task: ScanTask
    ) -> Tuple[_Artefacts, Dict[str, object], "Optional[Future[None]]"]:
        """Make sure the metadata files exist (generating what is missing).

        The dataset and origdatablock JSON are generated side by side and
        awaited; the attachment (a plot: the slowest) is started too and
        handed back as a future, so the dataset can be posted meanwhile.
        """
        files, local_dir, converter = self._files(task)
        # what a killed run of ours left there goes, before this one adds its own
        leftovers.sweep(files.meta_dir)
        self._check_detectors(task, local_dir)
        values = scan_keywords(
            self.config,
            task.beamtime,
            files,
            scanname=task.line.scanname,
            masterscanname=task.line.masterscanname,
            entryname=task.line.entryname,
            measurement=task.measurement,
            lastmeasurement=task.last_measurement,
            beamtimefile=converter.to_core(task.beamtime.path),
        )
        base = os.path.join(files.meta_dir, task.line.scanname)
        artefacts = _Artefacts(
            dataset=base + self.config.scan_metadata_postfix,
            datablock=base + self.config.datablock_metadata_postfix,
            attachment=base + self.config.attachment_metadata_postfix,
            without_master=self._check_master(task, local_dir),
        )
        attachment: Optional[Future[None]] = None
        fresh = [path for path in (artefacts.datablock, artefacts.attachment) if not usable(path)]
        if self.config.ingest_dataset_attachment:
            attachment = self._threads.submit(
                self._ensure_attachment_json,
                task,
                dict(values),
                local_dir,
                artefacts.attachment,
                converter,
            )
        datablock = self._threads.submit(
            self._ensure_datablock_json, task, dict(values), artefacts.datablock, local_dir
        )
        try:
            self._ensure_dataset_json(
                task, dict(values), files, local_dir, artefacts.dataset, converter
            )
        except GeneratorError:
            # the master file cannot be read yet (still being written): blocks
            # and plots described from it now would be stale when the retry
            # succeeds, so what this try generated goes again
            wait([future for future in (datablock, attachment) if future is not None])
            for path in fresh:
                discard(path)
            raise
        finally:
            datablock_error = datablock.exception()
        if datablock_error is not None:
            raise datablock_error
        return artefacts, values, attachment

    def generate(self, task: ScanTask) -> _Artefacts:
        """Only write the scan's metadata files, callback included (nothing posted)."""
        artefacts, values, attachment = self.prepare(task)
        if attachment is not None:
            attachment.result()
        self._callback(task, values, artefacts)
        return artefacts

    def process(self, task: ScanTask, ingested: IngestedList, dry_run: bool = False) -> ScanOutcome:
        """Ingest one scan or measurement line and append its record.

        Another process (the daemon, the device, a batch run) may ingest the
        same scan: the scan's inter-process lock is held from its read of
        the ingested list to its record, so the one that comes second finds
        the first one's record and blocks (docs/decisions/0006).
        """
        if dry_run:
            return self._process(task, ingested, dry_run)
        # a lock file that cannot be made (a read-only or full var dir) is
        # an OSError like the record's: the scan waits, nothing is posted
        with interlock.scan_lock(ingested.path, task.line.scanname) as waited:
            ingested.refresh()
            if not task.reingest and ingested.is_done(task.key):
                outcome = ScanOutcome(
                    task.key, OutcomeStatus.UNCHANGED, message="already ingested by another process"
                )
            else:
                outcome = self._process(task, ingested, dry_run)
        outcome.waited = waited
        return outcome

    def _process(self, task: ScanTask, ingested: IngestedList, dry_run: bool) -> ScanOutcome:
        attachment: Optional[Future[None]] = None
        try:
            if dry_run:
                return self._validate_only(task, self.generate(task))
            artefacts, values, attachment = self.prepare(task)
            outcome = self._post(task, artefacts, ingested, attachment)
            outcome.without_master = artefacts.without_master
            attachment = None
            self._callback(task, values, artefacts)
        except EmptyMeasurement as error:
            logger.info("%s: %s", task.key, error)
            return ScanOutcome(task.key, OutcomeStatus.UNCHANGED, message=str(error))
        except MasterFileAwaited as error:
            logger.info("%s", error)
            return ScanOutcome(
                task.key, OutcomeStatus.RETRY, message=str(error), cause=RetryCause.MASTER
            )
        except (GeneratorError, SciCatUnreachable, AuthenticationError, CredentialError) as error:
            # a refused login, or a credential file missing, empty or too open,
            # is no fault of the scan: it waits like the others until the
            # credentials work again (one line per try, no traceback)
            logger.warning("%s: %s (will be retried)", task.key, error)
            if isinstance(error, GeneratorError):
                cause = RetryCause.GENERATOR
            elif answering_but_failing(error):
                cause = RetryCause.FAILING
            else:
                cause = RetryCause.SCICAT
            return ScanOutcome(task.key, OutcomeStatus.RETRY, message=str(error), cause=cause)
        except OSError as error:
            # our own files (metadata folder, ingested list) cannot be
            # written: nothing is wrong with the scan; it waits for the disk
            logger.error("%s: %s (will be retried)", task.key, error)
            where = f"{error.filename}: " if error.filename else ""
            return ScanOutcome(
                task.key,
                OutcomeStatus.RETRY,
                message=f"{where}{error.strerror or error}",
                cause=RetryCause.STATE,
            )
        except (ScanError, BeamtimeError, DatasetRejected, SciCatError) as error:
            logger.error("%s: %s", task.key, error)
            record = IngestedRecord(task.key, NOT_DONE, NOT_DONE, NOT_DONE)
            if not dry_run:  # a dry run leaves the ingested list alone
                ingested.append(record)
            return ScanOutcome(task.key, OutcomeStatus.FAILED, record=record, message=str(error))
        finally:
            if attachment is not None:
                wait([attachment])  # never leave a generator running behind a result
        if outcome.record is not None and outcome.record != ingested.last(task.key):
            ingested.append(outcome.record)
        return outcome

    def _validate_only(self, task: ScanTask, artefacts: _Artefacts) -> ScanOutcome:
        if not os.path.exists(artefacts.dataset):
            return ScanOutcome(task.key, OutcomeStatus.FAILED, message="no dataset metadata")
        body = self.poster.dataset_body(task, artefacts.dataset)
        answer = self.client.is_valid_dataset(body)
        if not answer.get("valid", False):
            return ScanOutcome(
                task.key,
                OutcomeStatus.FAILED,
                pid=body.get("pid"),
                message=str(answer.get("error") or answer),
            )
        return ScanOutcome(task.key, OutcomeStatus.UNCHANGED, pid=body.get("pid"), message="valid")

    def _post(
        self,
        task: ScanTask,
        artefacts: _Artefacts,
        ingested: IngestedList,
        attachment: "Optional[Future[None]]" = None,
    ) -> ScanOutcome:
        """Post one scan's metadata files (:mod:`scingestor.posting`), unless not to."""
        unposted = self._not_posting(task, artefacts, attachment)
        if unposted is not None:
            return unposted
        previous = ingested.latest(task.key) if task.reingest else None
        done = self.poster.post(task, artefacts, previous, attachment)
        return ScanOutcome(
            task.key,
            done.status,
            pid=done.pid,
            record=done.record,
            posted=done.posted,
            surplus=done.surplus,
        )

    def _not_posting(
        self, task: ScanTask, artefacts: _Artefacts, attachment: "Optional[Future[None]]"
    ) -> Optional[ScanOutcome]:
        """The outcome when nothing is to be posted (skipped, or files not generated here).

        Metadata missing although this ingestor generated it is an error;
        without ``execute_commands`` another program writes it, so it is
        waited for.
        """
        config = self.config
        if config.skip_scan_dataset_ingestion:
            if attachment is not None:
                attachment.result()
            return ScanOutcome(
                task.key, OutcomeStatus.UNCHANGED, message="skip_scan_dataset_ingestion"
            )
        missing = [
            path for path in (artefacts.dataset, artefacts.datablock) if not os.path.exists(path)
        ]
        if not missing:
            return None
        if not config.execute_commands:
            return ScanOutcome(
                task.key,
                OutcomeStatus.RETRY,
                message="metadata files not there (execute_commands is false)",
            )
        raise ScanError(f"metadata missing after generation: {', '.join(missing)}")


def _folder_still_there(task: ScanTask, folder: str, written: Optional[str] = None) -> None:
    """Refuse a block described while the scan's folder was away (an unmount, a move).

    The generator lists what it finds: with the folder gone that is nothing,
    and such a block would replace the scan's real one in SciCat.  The
    block (*written*) is discarded and the try fails as a generator's does:
    retried, and described again once the folder is back (campaign seed 503).
    """
    if os.path.isdir(folder):
        return
    if written is not None:
        discard(written)
    raise GeneratorError(
        f"{task.list_file}: scan {task.line.scanname}: folder {folder} went away while "
        "its files were described (unmounted or moved?): described again when it is back"
    )
