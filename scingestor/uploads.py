"""Origdatablocks and attachments: post what is missing, exactly once.

Existing installations posted a scan's origdatablocks and attachments
again on every retry, so SciCat collected duplicates.  Here the blocks and
attachments a dataset should have are compared with those it already has
(one GET): what is there already is not posted again, and with
``replace`` (re-ingestion) what is there but no longer wanted is deleted.
A crash or a lost answer at any point therefore ends in the same state
once the scan is processed again.

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

from .errors import SciCatAmbiguousError
from .scicat import SciCatClient

logger = logging.getLogger(__name__)

MAX_FILES_PER_BLOCK = 20_000
MAX_BLOCK_BYTES = 12 * 1024 * 1024
AMBIGUOUS_RETRIES = 3


@dataclass
class SyncResult:
    posted: int = 0
    present: int = 0
    deleted: int = 0

    def __iadd__(self, other: "SyncResult") -> "SyncResult":
        self.posted += other.posted
        self.present += other.present
        self.deleted += other.deleted
        return self


def _entry_bytes(entry: Dict[str, Any]) -> int:
    return len(json.dumps(entry, separators=(",", ":"))) + 1


def split_block(block: Dict[str, Any], max_files: int = MAX_FILES_PER_BLOCK,
                max_bytes: int = MAX_BLOCK_BYTES) -> List[Dict[str, Any]]:
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
    return tuple(sorted((str(entry.get("path")), entry.get("size"), _time_key(entry.get("time")))
                        for entry in block.get("dataFileList") or []))


def attachment_signature(attachment: Dict[str, Any]) -> Tuple:
    return (attachment.get("thumbnail") or "", attachment.get("caption") or "")


def _match(wanted: List[Dict[str, Any]], existing: List[Dict[str, Any]], signature
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


def sync_datablocks(client: SciCatClient, pid: str, blocks: Iterable[Dict[str, Any]],
                    replace: bool = False) -> SyncResult:
    """Make dataset *pid* hold *blocks* (posted on the standalone route)."""
    wanted: List[Dict[str, Any]] = []
    for block in blocks:
        if not block.get("dataFileList"):
            continue  # nothing to describe: the backend refuses empty lists
        body = dict(block)
        body["datasetId"] = pid
        wanted += split_block(body)
    existing = client.get_origdatablocks(pid)
    missing, surplus, present = _match(wanted, existing, block_signature)
    result = SyncResult(present=present)
    for block in missing:
        _post_once(client.post_origdatablock, lambda: client.get_origdatablocks(pid), block,
                   block_signature)
        result.posted += 1
    if replace:
        for block in surplus:
            client.delete_origdatablock(block["_id"] if "_id" in block else block["id"])
            result.deleted += 1
    return result


def sync_attachments(client: SciCatClient, pid: str,
                     attachments: Iterable[Dict[str, Any]],
                     replace: bool = False) -> SyncResult:
    """Make dataset *pid* hold *attachments* (matched by thumbnail and caption)."""
    wanted = []
    for attachment in attachments:
        body = dict(attachment)
        body["datasetId"] = pid
        body.setdefault("caption", "")
        wanted.append(body)
    existing = client.get_attachments(pid)
    missing, surplus, present = _match(wanted, existing, attachment_signature)
    result = SyncResult(present=present)
    for attachment in missing:
        _post_once(lambda body: client.post_attachment(pid, body),
                   lambda: client.get_attachments(pid), attachment, attachment_signature)
        result.posted += 1
    if replace:
        for attachment in surplus:
            client.delete_attachment(pid, attachment.get("id") or attachment.get("_id"))
            result.deleted += 1
    return result
