"""One scan's metadata files -> SciCat: the dataset, its origdatablocks, its attachment.

Split from :mod:`scingestor.pipeline` (issue 19): the pipeline decides
whether a scan is to be posted and generates its files; :class:`Poster`
posts them.  It knows a scan and its files only by the few fields it reads
(:class:`Scan`, :class:`MetadataFiles`), so it needs nothing of the pipeline.

On a re-ingestion only what changed since the scan's last record is posted
(everything for a new version).  A block or attachment SciCat rejects is
recorded FAILED, to be tried again, without undoing the dataset.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from .beamtime import Beamtime
from .config import IngestorConfig, proposal_id
from .errors import ScanError, SciCatError, ValidationError
from .outcomes import DatasetAction, OutcomeStatus
from .scicat import SciCatClient
from .state import FAILED, NOT_DONE, IngestedRecord
from .strategy import check_dataset, ingest_dataset, prefixed
from .uploads import SyncResult, sync_attachments, sync_datablocks

logger = logging.getLogger(__name__)


class Scan(Protocol):
    """What posting reads of a scan task (:class:`scingestor.scantask.ScanTask`)."""

    @property
    def key(self) -> str: ...
    @property
    def beamtime(self) -> Beamtime: ...
    @property
    def measurement(self) -> str: ...
    @property
    def reingest(self) -> bool: ...


class MetadataFiles(Protocol):
    """Where a scan's generated metadata files are."""

    @property
    def dataset(self) -> str: ...
    @property
    def datablock(self) -> str: ...
    @property
    def attachment(self) -> str: ...


@dataclass
class Posted:
    """What posting one scan did: the dataset's pid, the status, its new record."""

    pid: str
    status: OutcomeStatus
    record: IngestedRecord
    #: records posted, by kind ("origdatablocks", "attachments")
    posted: Dict[str, int]
    #: what SciCat held beyond the generated set: one line per dataset and kind
    surplus: List[str] = field(default_factory=list)


def load_json(path: str) -> Any:
    """Read a metadata JSON file; errors name the file and the position."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ScanError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScanError(f"{path}: cannot be read: {error}") from None


def mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return NOT_DONE


def metadata_records(path: str, skip_lists: bool) -> List[Dict[str, Any]]:
    """The records a metadata file stands for: itself, or each file it lists."""
    if not os.path.exists(path):
        return []
    content = load_json(path)
    if isinstance(content, dict):
        return [content]
    if isinstance(content, list):
        if skip_lists:
            return []
        records: List[Dict[str, Any]] = []
        for item in content:
            if isinstance(item, str):
                records += metadata_records(item, skip_lists)
            elif isinstance(item, dict):
                records.append(item)
        return records
    raise ScanError(f"{path}: must hold a JSON object or a list of files")


class Poster:
    """Posts scans' metadata files with one SciCat client (thread-safe per scan)."""

    def __init__(self, config: IngestorConfig, client: SciCatClient) -> None:
        self.config = config
        self.client = client

    def post(
        self,
        scan: Scan,
        files: MetadataFiles,
        previous: Optional[IngestedRecord],
        attachment: "Optional[Future[None]]" = None,
    ) -> Posted:
        """Post what changed since *previous* (everything without one).

        *attachment* is the plot being drawn meanwhile: it is waited for
        only once the dataset and its blocks are posted.
        """
        config = self.config
        ds_time, db_time = mtime(files.dataset), mtime(files.datablock)
        pid, action, new_version = self._post_dataset(scan, files.dataset, previous, ds_time)
        posted: Dict[str, int] = {}
        surplus: List[str] = []
        record_db = db_time
        if new_version or previous is None or db_time > previous.db:
            if not self._sync(scan, pid, files.datablock, _DATABLOCKS, posted, surplus):
                record_db = FAILED
        if attachment is not None:
            attachment.result()  # the plot is drawn while the dataset was posted
        att_time = mtime(files.attachment) if config.ingest_dataset_attachment else 0.0
        record_att = att_time if os.path.exists(files.attachment) else NOT_DONE
        if (
            config.ingest_dataset_attachment
            and os.path.exists(files.attachment)
            and (new_version or previous is None or att_time > previous.att)
        ):
            if not self._sync(scan, pid, files.attachment, _ATTACHMENTS, posted, surplus):
                record_att = FAILED
        record = IngestedRecord(scan.key, ds_time, record_db, record_att)
        logger.info(
            "%s: dataset %s %s%s",
            scan.key,
            pid,
            action,
            "".join(f", {n} {kind} posted" for kind, n in posted.items() if n),
        )
        return Posted(pid, _status(action, record, posted), record, posted, surplus)

    def dataset_body(self, scan: Scan, path: str) -> Dict[str, Any]:
        body = load_json(path)
        if not isinstance(body, dict):
            raise ScanError(f"{path}: must hold a JSON object")
        beamtime = scan.beamtime
        check_dataset(
            body,
            beamtime.beamtime_id,
            proposal_id(self.config, beamtime.proposal_id, beamtime.beamtime_id),
            path,
        )
        return body

    def _post_dataset(
        self,
        scan: Scan,
        path: str,
        previous: Optional[IngestedRecord],
        ds_time: float,
    ) -> Tuple[str, DatasetAction, bool]:
        """(pid, what happened to the dataset, whether it is a new version).

        The dataset is posted only when its file is newer than the last
        record.  A version other than the file's pid (posted now, or found
        by a retry whose first POST lost its answer) must get the blocks
        even when their JSON did not change.
        """
        config = self.config
        body = self.dataset_body(scan, path)
        file_pid = prefixed(config, str(body["pid"]))
        if previous is None or ds_time > previous.ds:
            result = ingest_dataset(self.client, config, body, scan.measurement)
            pid, action = result.pid, result.action
        else:
            pid, action = file_pid, DatasetAction.UNCHANGED
        return pid, action, action == DatasetAction.NEW_VERSION or pid != file_pid

    def _sync(
        self,
        scan: Scan,
        pid: str,
        path: str,
        kind: "_RecordKind",
        posted: Dict[str, int],
        surplus: List[str],
    ) -> bool:
        """Make dataset *pid* hold the records of one metadata file; False if SciCat
        rejects them (logged; the record is then marked FAILED by the caller)."""
        config = self.config
        wanted = metadata_records(path, getattr(config, kind.skip_multi))
        try:
            result = kind.sync(
                self.client,
                pid,
                wanted,
                replace=scan.reingest,
                without_delete_right=config.replace_without_delete_right,
            )
        except ValidationError as error:
            logger.error("%s: %s %s rejected: %s", scan.key, kind.name, path, _messages(error))
            return False
        posted[kind.counted] = result.posted
        if result.extra:
            surplus.append(
                f"dataset {pid}: {result.extra} {kind.name}(s) more than generated, "
                f"{result.extra_removed} removed (copies of a generated one)"
            )
        return True


@dataclass(frozen=True)
class _RecordKind:
    """Origdatablocks or attachments, as :meth:`Pipeline._sync` posts them."""

    name: str  #: in messages
    counted: str  #: key in the outcome's ``posted``
    skip_multi: str  #: the configuration variable that keeps only the first record
    sync: Callable[..., SyncResult]


_DATABLOCKS = _RecordKind(
    "origdatablock", "origdatablocks", "skip_multi_datablock_ingestion", sync_datablocks
)
_ATTACHMENTS = _RecordKind(
    "attachment", "attachments", "skip_multi_attachment_ingestion", sync_attachments
)


def _status(action: DatasetAction, record: IngestedRecord, posted: Dict[str, int]) -> OutcomeStatus:
    """The outcome status: FAILED if a block or attachment was rejected, else what
    happened to the dataset (unchanged with new blocks counts as updated)."""
    if record.db == FAILED or record.att == FAILED:
        return OutcomeStatus.FAILED
    if action == DatasetAction.CREATED:
        return OutcomeStatus.INGESTED
    if action in (DatasetAction.PATCHED, DatasetAction.NEW_VERSION):
        return OutcomeStatus.UPDATED
    return OutcomeStatus.UNCHANGED if not posted.get("origdatablocks") else OutcomeStatus.UPDATED


def _messages(error: SciCatError) -> str:
    return "; ".join(error.messages) if error.messages else str(error)
