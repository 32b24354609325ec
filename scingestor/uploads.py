"""Origdatablocks and attachments: post what is missing, exactly once.

Existing installations posted a scan's origdatablocks and attachments
again on every retry, so SciCat collected duplicates.  Here the blocks and
attachments a dataset should have are compared with those it already has
(one GET): what is there already is not posted again, and with
``replace`` (re-ingestion) what is there but no longer wanted is deleted.
A crash or a lost answer at any point therefore ends in the same state
once the scan is processed again.

Replacing needs the right to delete, which sites often do not give the
ingestor account (backend 4.5.0: membership of ``DELETE_GROUPS``).  That
right is known BEFORE a replacement block is posted (the first old block
is deleted before anything is posted, and the answer is remembered for the
client's lifetime), so an account that may not delete never piles up blocks:
``replace_without_delete_right`` says whether the old records then stay
alone (``skip``, the default: nothing posted that could not be cleaned up)
or get the new ones beside them (``add``).  Either way it is said once,
and the scan is done.

Attachments are deleted before their replacements are posted, and the
dataset is read again after every delete: backend 4.5.0's v3 route deletes
the dataset's oldest attachment whatever id it is given, so what a delete
really removed is checked, and a wanted attachment removed by mistake is
posted again.

A file list too large for one request (the backend refuses bodies over
16 MiB, and PSI's ingestor keeps 20,000 files per block) is split into
several blocks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Tuple

from dateutil.parser import isoparse

from .errors import ForbiddenError, NotFoundError, SciCatAmbiguousError, SciCatError
from .scicat import SciCatClient
from .scicat.client import DELETE_RIGHT_HINT

logger = logging.getLogger(__name__)

MAX_FILES_PER_BLOCK = 20_000
MAX_BLOCK_BYTES = 12 * 1024 * 1024
AMBIGUOUS_RETRIES = 3
#: values of ``replace_without_delete_right``
SKIP_REPLACEMENT = "skip"
ADD_BESIDE = "add"
WITHOUT_DELETE_RIGHT = (SKIP_REPLACEMENT, ADD_BESIDE)


@dataclass
class SyncResult:
    """What a sync did: ``kept`` records should have gone but may not be
    deleted; ``skipped`` replacements were not posted because of that."""

    posted: int = 0
    present: int = 0
    deleted: int = 0
    kept: int = 0
    skipped: int = 0
    #: records SciCat held beyond the generated set (without *replace*), and
    #: how many of them, copies of a generated one, were removed
    extra: int = 0
    extra_removed: int = 0

    def __iadd__(self, other: "SyncResult") -> "SyncResult":
        self.posted += other.posted
        self.present += other.present
        self.deleted += other.deleted
        self.kept += other.kept
        self.skipped += other.skipped
        self.extra += other.extra
        self.extra_removed += other.extra_removed
        return self


def _entry_bytes(entry: Dict[str, Any]) -> int:
    return len(json.dumps(entry, separators=(",", ":"))) + 1


def split_block(
    block: Dict[str, Any], max_files: int = MAX_FILES_PER_BLOCK, max_bytes: int = MAX_BLOCK_BYTES
) -> List[Dict[str, Any]]:
    """Split an origdatablock whose file list is too long for one request."""
    files = block.get("dataFileList") or []
    head = {key: value for key, value in block.items() if key != "dataFileList"}
    overhead = len(json.dumps(head, separators=(",", ":"))) + 64
    if len(files) <= max_files and overhead + sum(map(_entry_bytes, files)) <= max_bytes:
        return [block]
    chunks: List[List[Dict[str, Any]]] = [[]]
    used = overhead
    for entry in files:
        cost = _entry_bytes(entry)
        if chunks[-1] and (len(chunks[-1]) >= max_files or used + cost > max_bytes):
            chunks.append([])
            used = overhead
        chunks[-1].append(entry)
        used += cost
    blocks = []
    for chunk in chunks:
        part = dict(head)
        part["dataFileList"] = chunk
        part["size"] = int(sum(int(entry.get("size") or 0) for entry in chunk))
        blocks.append(part)
    return blocks


def _time_key(value: Any) -> Any:
    """A file time as whole seconds: the backend stores times in UTC with ms."""
    try:
        return int(isoparse(str(value)).timestamp())
    except (ValueError, OverflowError):
        return str(value)


def block_signature(block: Dict[str, Any]) -> Tuple:
    """What makes two origdatablocks the same: their files, sizes and times."""
    return tuple(
        sorted(
            (str(entry.get("path")), entry.get("size"), _time_key(entry.get("time")))
            for entry in block.get("dataFileList") or []
        )
    )


def attachment_signature(attachment: Dict[str, Any]) -> Tuple:
    return (attachment.get("thumbnail") or "", attachment.get("caption") or "")


def _match(
    wanted: List[Dict[str, Any]], existing: List[Dict[str, Any]], signature
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], int]:
    """(to post, to delete, already present) — each existing record matches once."""
    pool: Dict[Tuple, List[Dict[str, Any]]] = {}
    for record in existing:
        pool.setdefault(signature(record), []).append(record)
    missing = []
    present = 0
    for record in wanted:
        same = pool.get(signature(record))
        if same:
            same.pop()
            present += 1
        else:
            missing.append(record)
    surplus = [record for records in pool.values() for record in records]
    return missing, surplus, present


def _post_once(post, fetch, record: Dict[str, Any], signature) -> None:
    """POST *record*; after a lost answer, look before posting again."""
    for attempt in range(AMBIGUOUS_RETRIES):
        try:
            post(record)
            return
        except SciCatAmbiguousError:
            if any(signature(other) == signature(record) for other in fetch()):
                return
            if attempt == AMBIGUOUS_RETRIES - 1:
                raise


def _record_id(record: Dict[str, Any]) -> str:
    return str(record.get("_id") or record.get("id") or record.get("aid") or "")


def _warn_no_delete(client: SciCatClient, what: str, policy: str) -> None:
    """Say once per client which right is missing and what is done instead."""
    if policy == ADD_BESIDE:
        doing = (
            f"a re-ingested scan gets its new {what} posted beside the old ones, "
            f"which stay (replace_without_delete_right: add)"
        )
    else:
        doing = (
            f"a re-ingested scan keeps its old {what} and no replacement is posted "
            f"(replace_without_delete_right: skip; 'add' posts the new {what} beside "
            f"the old ones)"
        )
    hint = (
        DELETE_RIGHT_HINT
        if what == "origdatablocks"
        else (DELETE_RIGHT_HINT + " (attachments: or ADMIN_GROUPS)")
    )
    client.warn_once(
        f"delete:{what}",
        (f"SciCat account '{client.account_name}' may not delete {what} (403: {hint}): {doing}"),
    )


def _wanted_body(record: Dict[str, Any], pid: str) -> Dict[str, Any]:
    """A record as posted for dataset *pid* (the caller's dict is left alone)."""
    body = dict(record)
    body["datasetId"] = pid
    return body


def _refused_delete(
    client: SciCatClient,
    what: str,
    policy: str,
    missing: List[Dict[str, Any]],
    surplus: List[Dict[str, Any]],
    result: SyncResult,
) -> List[Dict[str, Any]]:
    """The account may not delete *what*: keep the surplus, and post the missing
    records beside it only with ``add``.  Returns what is still to post."""
    _warn_no_delete(client, what, policy)
    result.kept = len(surplus)
    if policy == ADD_BESIDE:
        return missing
    result.skipped = len(missing)
    return []


def _post_missing(
    post: Any, fetch: Any, missing: List[Dict[str, Any]], signature: Any, result: SyncResult
) -> None:
    """Post each missing record once (a lost answer is checked before posting again)."""
    for record in missing:
        _post_once(post, fetch, record, signature)
        result.posted += 1


def sync_datablocks(
    client: SciCatClient,
    pid: str,
    blocks: Iterable[Dict[str, Any]],
    replace: bool = False,
    without_delete_right: str = SKIP_REPLACEMENT,
) -> SyncResult:
    """Make dataset *pid* hold *blocks* (posted on the standalone route).

    With *replace*, blocks no longer wanted are deleted after the new ones
    are posted; while the client does not know yet whether its account may
    delete, the first old block is deleted BEFORE anything is posted, so an
    account that may not is found out in time (see the module text and
    *without_delete_right*).
    """
    # an empty file list describes nothing (and the backend refuses it)
    wanted = [
        part
        for block in blocks
        if block.get("dataFileList")
        for part in split_block(_wanted_body(block, pid))
    ]
    existing = client.get_origdatablocks(pid)
    missing, surplus, present = _match(wanted, existing, block_signature)
    result = SyncResult(present=present)
    if replace and surplus and client.known_right("delete:origdatablocks") is None:
        # the right is not known yet: the first delete tells, before anything is posted
        if _delete_blocks(client, pid, surplus[:1], result):
            surplus = surplus[1:]
            client.learn_right("delete:origdatablocks", True)
    if replace and surplus and client.known_right("delete:origdatablocks") is False:
        missing = _refused_delete(
            client, "origdatablocks", without_delete_right, missing, surplus, result
        )
        replace = False
        logger.info(
            "Dataset %s: %d origdatablock(s) kept, %d replacement(s) %s: the "
            "account may not delete",
            pid,
            result.kept,
            result.skipped or len(missing),
            "not posted" if result.skipped else "posted beside them",
        )
    if not replace and surplus:
        _remove_block_copies(client, pid, wanted, surplus, result)
    _post_missing(
        client.post_origdatablock,
        lambda: client.get_origdatablocks(pid),
        missing,
        block_signature,
        result,
    )
    if replace and not _delete_blocks(client, pid, surplus, result):
        _warn_no_delete(client, "origdatablocks", ADD_BESIDE)
    return result


def _copies(wanted: List[Dict[str, Any]], surplus: List[Dict[str, Any]], signature) -> List:
    """The surplus records that are copies of a wanted one (a double post)."""
    signatures = {signature(record) for record in wanted}
    return [record for record in surplus if signature(record) in signatures]


def _remove_block_copies(
    client: SciCatClient,
    pid: str,
    wanted: List[Dict[str, Any]],
    surplus: List[Dict[str, Any]],
    result: SyncResult,
) -> None:
    """More blocks than generated, outside a re-ingestion: report them; remove the copies.

    A copy of a generated block can only be a double post (see
    docs/decisions/0006), so it goes whenever the account may delete;
    a different block may be someone's own, and goes only on re-ingestion.
    """
    result.extra = len(surplus)
    copies = _copies(wanted, surplus, block_signature)
    if copies and client.known_right("delete:origdatablocks") is not False:
        removed = SyncResult()
        if _delete_blocks(client, pid, copies, removed):
            client.learn_right("delete:origdatablocks", True)
        else:
            _warn_no_delete(client, "origdatablocks", SKIP_REPLACEMENT)
        result.extra_removed = removed.deleted
    logger.warning(
        "Dataset %s: %d origdatablock(s) more than generated, %d of them "
        "copies of a generated one: %d removed",
        pid,
        len(surplus),
        len(copies),
        result.extra_removed,
    )


def _delete_blocks(
    client: SciCatClient, pid: str, blocks: List[Dict[str, Any]], result: SyncResult
) -> bool:
    """Delete *blocks*; False (the rest counted as kept) when the account may not."""
    for index, block in enumerate(blocks):
        try:
            client.delete_origdatablock(_record_id(block), pid)
        except NotFoundError:
            pass  # gone already: what was wanted
        except ForbiddenError:  # the client remembers it
            result.kept += len(blocks) - index
            return False
        result.deleted += 1
    return True


def _delete_surplus_attachments(
    client: SciCatClient,
    pid: str,
    wanted: List[Dict[str, Any]],
    existing: List[Dict[str, Any]],
    result: SyncResult,
) -> Tuple[List[Dict[str, Any]], bool]:
    """Delete what is not wanted, one at a time, reading the dataset after each.

    Returns the attachments the dataset holds then and whether deleting
    was refused (403).
    """
    _, surplus, _ = _match(wanted, existing, attachment_signature)
    rounds = len(existing) + 1
    while surplus:
        if rounds <= 0:
            raise SciCatError(
                f"dataset {pid}: {len(surplus)} attachment(s) still there "
                f"after {len(existing) + 1} deletes"
            )
        rounds -= 1
        target = _record_id(surplus[0])
        try:
            client.delete_attachment(pid, target)
        except NotFoundError:
            pass  # gone already
        except ForbiddenError:
            return existing, True
        result.deleted += 1
        before = {_record_id(record) for record in existing}
        existing = client.get_attachments(pid)
        after = {_record_id(record) for record in existing}
        removed = before - after
        if target not in removed and removed:
            logger.warning(
                "Dataset %s: deleting attachment %s removed %s instead (the "
                "backend's v3 route deletes the oldest attachment): checking "
                "again",
                pid,
                target,
                ", ".join(sorted(removed)),
            )
        _, surplus, _ = _match(wanted, existing, attachment_signature)
    return existing, False


def sync_attachments(
    client: SciCatClient,
    pid: str,
    attachments: Iterable[Dict[str, Any]],
    replace: bool = False,
    without_delete_right: str = SKIP_REPLACEMENT,
) -> SyncResult:
    """Make dataset *pid* hold *attachments* (matched by thumbnail and caption).

    With *replace* the attachments no longer wanted go first (checked by
    reading the dataset again), then the missing ones are posted: a wanted
    attachment a buggy delete took is posted again.
    """
    wanted = [_wanted_body(attachment, pid) for attachment in attachments]
    for body in wanted:
        body.setdefault("caption", "")
    existing = client.get_attachments(pid)
    result = SyncResult()
    refused = False
    if replace:
        if client.known_right("delete:attachments") is False:
            refused = _match(wanted, existing, attachment_signature)[1] != []
        else:
            existing, refused = _delete_surplus_attachments(client, pid, wanted, existing, result)
    missing, surplus, present = _match(wanted, existing, attachment_signature)
    if not replace and surplus:
        existing = _remove_attachment_copies(client, pid, wanted, existing, surplus, result)
        missing, surplus, present = _match(wanted, existing, attachment_signature)
    result.present = present
    if refused:
        missing = _refused_delete(
            client, "attachments", without_delete_right, missing, surplus, result
        )
    _post_missing(
        lambda body: client.post_attachment(pid, body),
        lambda: client.get_attachments(pid),
        missing,
        attachment_signature,
        result,
    )
    return result


def _remove_attachment_copies(
    client: SciCatClient,
    pid: str,
    wanted: List[Dict[str, Any]],
    existing: List[Dict[str, Any]],
    surplus: List[Dict[str, Any]],
    result: SyncResult,
) -> List[Dict[str, Any]]:
    """As :func:`_remove_block_copies`, for attachments; what the dataset holds after.

    Only the copies are deleted (the other extra attachments count as
    wanted for it), reading the dataset after each delete as a
    re-ingestion does.
    """
    result.extra = len(surplus)
    copies = _copies(wanted, surplus, attachment_signature)
    if copies and client.known_right("delete:attachments") is not False:
        others = [record for record in surplus if not any(record is c for c in copies)]
        removed = SyncResult()
        existing, refused = _delete_surplus_attachments(
            client, pid, wanted + others, existing, removed
        )
        if refused:
            _warn_no_delete(client, "attachments", SKIP_REPLACEMENT)
        result.extra_removed = removed.deleted
    logger.warning(
        "Dataset %s: %d attachment(s) more than generated, %d of them copies "
        "of a generated one: %d removed",
        pid,
        len(surplus),
        len(copies),
        result.extra_removed,
    )
    return existing
