"""Dataset update strategies: what to send when a dataset may already exist.

``dataset_update_strategy`` decides what happens when the pid of a scan is
already in SciCat and its metadata changed:

=========  =====================================  ==========================
strategy   other fields changed                   only scientificMetadata
=========  =====================================  ==========================
``no``     nothing is sent                        nothing is sent
``patch``  PATCH the dataset                      PATCH the dataset
``create`` POST a new version (``…/2``, ``…/3``)  POST a new version
``mixed``  POST a new version                     PATCH the dataset
=========  =====================================  ==========================

The comparison is made against what the backend really keeps, not against
what was sent: backend 4.5.0 stores a derived dataset's ``investigator`` as
``principalInvestigator`` (and returns no ``investigator``), writes times
in UTC with milliseconds and adds fields of its own (``valueSI``, …).
Compared naively, an unchanged measurement looked changed on every run.

An unchanged dataset is a success (existing installations reported no pid
and retried it forever).  Fields of ``metadata_fields_without_checks`` are
not compared; server-managed fields and ``patch_dataset_fields_to_skip`` /
``metadata_fields_cannot_be_patched`` are never sent in a PATCH, because the
backend rejects them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from dateutil.parser import isoparse

from .config import IngestorConfig
from .errors import ConflictError, DatasetRejected, ScingestorError
from .outcomes import DatasetAction
from .scicat import SciCatClient

logger = logging.getLogger(__name__)

#: Filled by the backend; a PATCH carrying them is rejected.
SERVER_MANAGED = (
    "pid",
    "type",
    "version",
    "createdBy",
    "createdAt",
    "updatedBy",
    "updatedAt",
    "history",
)
SCIENTIFIC = "scientificMetadata"
MAX_VERSION_PROBES = 1000
#: v3 fields the backend stores under another name: (dataset type, sent, kept).
RENAMED_FIELDS = (("derived", "investigator", "principalInvestigator"),)


@dataclass(frozen=True)
class DatasetResult:
    """The pid the dataset now has in SciCat and what was done to get there.

    ``action`` is one of ``created``, ``patched``, ``new_version``,
    ``unchanged`` (exists, equal) and ``kept`` (exists, strategy ``no``):
    a :class:`~scingestor.outcomes.DatasetAction`.
    """

    pid: str
    action: DatasetAction


def prefixed(config: IngestorConfig, pid: str) -> str:
    """The pid in SciCat: ``dataset_pid_prefix`` + the generated pid."""
    prefix = config.dataset_pid_prefix or ""
    if prefix and pid.startswith(prefix):
        return pid
    return prefix + pid


def unprefixed(config: IngestorConfig, pid: str) -> str:
    prefix = config.dataset_pid_prefix or ""
    return pid[len(prefix) :] if prefix and pid.startswith(prefix) else pid


def normalise_dataset(body: Dict[str, Any]) -> Dict[str, Any]:
    """Fix what nxsfileinfo writes but the v3 backend refuses.

    ``nxsfileinfo groupmetadata`` writes ``usedSoftware`` of a derived
    (measurement) dataset as one string; the backend wants a list.
    """
    fixed = dict(body)
    used = fixed.get("usedSoftware")
    if isinstance(used, str):
        fixed["usedSoftware"] = [used]
    inputs = fixed.get("inputDatasets")
    if isinstance(inputs, str):
        fixed["inputDatasets"] = [inputs]
    return fixed


def check_dataset(
    body: Dict[str, Any], beamtime_id: str, expected_proposal: str, source: str
) -> None:
    """Refuse metadata that would land in the wrong beamtime or proposal."""
    pid = body.get("pid")
    if not isinstance(pid, str) or not pid.startswith(f"{beamtime_id}/"):
        raise DatasetRejected(
            f"{source}: field 'pid': {pid!r} does not start with the beamtime id '{beamtime_id}/'"
        )
    if body.get("type") == "raw" and body.get("proposalId") != expected_proposal:
        raise DatasetRejected(
            f"{source}: field 'proposalId': {body.get('proposalId')!r} "
            f"is not the beamtime's '{expected_proposal}'"
        )


def as_kept(local: Dict[str, Any], server: Dict[str, Any]) -> Dict[str, Any]:
    """*local* renamed as the backend keeps it (see :data:`RENAMED_FIELDS`).

    A field is renamed only when the server lacks the sent name, so a
    backend that keeps the field as sent is compared as before.
    """
    kept = dict(local)
    kind = kept.get("type", server.get("type"))
    for dataset_type, sent, stored in RENAMED_FIELDS:
        if kind == dataset_type and sent in kept and sent not in server:
            value = kept.pop(sent)
            kept.setdefault(stored, value)
    return kept


def _instant(value: Any) -> Optional[float]:
    """Epoch seconds of a full ISO-8601 date-time text, else None."""
    if not isinstance(value, str) or "T" not in value or len(value) < 16:
        return None
    try:
        moment = isoparse(value)
    except (ValueError, OverflowError):
        return None
    if moment.tzinfo is None:
        return None  # no zone: which instant is unknown
    return moment.timestamp()


def same_value(server: Any, local: Any) -> bool:
    """Equal, or the same instant written differently (the backend keeps UTC, ms)."""
    if server == local:
        return True
    left, right = _instant(server), _instant(local)
    return left is not None and right is not None and abs(left - right) < 0.001


def _decode_key(key: str) -> str:
    # the backend may store scientificMetadata keys with '.' as '%2E'
    return key.replace("%2E", ".").replace("%2e", ".")


def differences(server: Any, local: Any, ignore: Iterable[str] = (), path: str = "") -> List[str]:
    """Dotted paths of *local* whose value differs on *server*.

    Keys only the server has (filled by it) do not count; *ignore* holds
    dotted paths that are not compared.
    """
    skip = set(ignore)
    if isinstance(local, dict) and isinstance(server, dict):
        decoded = {_decode_key(k): v for k, v in server.items()}
        found: List[str] = []
        for key, value in local.items():
            where = f"{path}.{key}" if path else key
            if where in skip:
                continue
            if key not in decoded:
                if value not in (None, "", [], {}):
                    found.append(where)
                continue
            found += differences(decoded[key], value, skip, where)
        return found
    return [] if same_value(server, local) else [path or "<value>"]


def next_version(pid: str) -> str:
    """``99001234/s_00001`` → ``…/s_00001/2`` → ``…/s_00001/3``."""
    parts = pid.split("/")
    if len(parts) > 2 and parts[-1].isdigit():
        return "/".join(parts[:-1] + [str(int(parts[-1]) + 1)])
    return f"{pid}/2"


def patch_body(config: IngestorConfig, local: Dict[str, Any]) -> Dict[str, Any]:
    drop = (
        set(SERVER_MANAGED)
        | set(config.patch_dataset_fields_to_skip)
        | set(config.metadata_fields_cannot_be_patched)
    )
    return {key: value for key, value in local.items() if key not in drop}


def with_measurement_keyword(
    config: IngestorConfig, body: Dict[str, Any], measurement: Optional[str]
) -> Dict[str, Any]:
    """Add the active measurement to ``keywords`` (``force_measurement_keyword``)."""
    if not (measurement and config.force_measurement_keyword):
        return body
    keywords = body.get("keywords")
    if isinstance(keywords, list) and measurement not in keywords:
        body = dict(body)
        body["keywords"] = keywords + [measurement]
    return body


def ingest_dataset(
    client: SciCatClient,
    config: IngestorConfig,
    body: Dict[str, Any],
    measurement: Optional[str] = None,
) -> DatasetResult:
    """Create or update one dataset following ``dataset_update_strategy``."""
    local = with_measurement_keyword(config, normalise_dataset(copy.deepcopy(body)), measurement)
    pid = prefixed(config, str(local["pid"]))
    local["pid"] = pid
    existing = client.get_dataset(pid)
    if existing is None:
        logger.info("Post the dataset: %s", pid)
        try:
            client.post_dataset(local)
            return DatasetResult(pid, DatasetAction.CREATED)
        except ConflictError:
            # created meanwhile (another ingestor, or our own lost answer)
            existing = client.get_dataset(pid)
            if existing is None:
                raise
    strategy = config.dataset_update_strategy
    if strategy == "no":
        return DatasetResult(pid, DatasetAction.KEPT)
    ignore = list(config.metadata_fields_without_checks)
    outside = differences(existing, as_kept(local, existing), set(ignore) | {SCIENTIFIC})
    science = (
        differences(
            existing.get(SCIENTIFIC),
            local.get(SCIENTIFIC),
            [i[len(SCIENTIFIC) + 1 :] for i in ignore if i.startswith(SCIENTIFIC + ".")],
        )
        if SCIENTIFIC in local
        else []
    )
    if not outside and not science:
        logger.info("Dataset %s is unchanged", pid)
        return DatasetResult(pid, DatasetAction.UNCHANGED)
    new_version = strategy == "create" or (strategy == "mixed" and bool(outside))
    if not new_version:
        logger.info(
            "Patch dataset %s (changed: %s)",
            pid,
            ", ".join(outside + [f"{SCIENTIFIC}.{path}" for path in science][:10]),
        )
        client.patch_dataset(pid, patch_body(config, local))
        return DatasetResult(pid, DatasetAction.PATCHED)
    return _post_new_version(client, config, local, pid)


def _equal(config: IngestorConfig, server: Dict[str, Any], local: Dict[str, Any]) -> bool:
    ignore = set(config.metadata_fields_without_checks) | {"pid"}
    kept = as_kept(local, server)
    return not differences(server, kept, ignore | {SCIENTIFIC}) and not differences(
        server.get(SCIENTIFIC), local.get(SCIENTIFIC)
    )


def _post_new_version(
    client: SciCatClient, config: IngestorConfig, local: Dict[str, Any], pid: str
) -> DatasetResult:
    """POST the next free version; an existing version equal to *local* is reused.

    The reuse makes a retry after a lost answer find the version it already
    created instead of creating one more.
    """
    candidate = unprefixed(config, pid)
    for _ in range(MAX_VERSION_PROBES):
        candidate = next_version(candidate)
        existing = client.get_dataset(prefixed(config, candidate))
        if existing is None:
            break
        if _equal(config, existing, local):
            logger.info("Dataset version %s already holds this metadata", existing["pid"])
            return DatasetResult(prefixed(config, candidate), DatasetAction.UNCHANGED)
    else:
        raise ScingestorError(f"no free version pid after {pid} ({MAX_VERSION_PROBES} tried)")
    new_pid = prefixed(config, candidate)
    body = dict(local)
    body["pid"] = new_pid
    logger.info("Post the dataset with a new pid: %s", new_pid)
    client.post_dataset(body)
    return DatasetResult(new_pid, DatasetAction.NEW_VERSION)
