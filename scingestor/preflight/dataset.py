"""The throw-away dataset: made with a pid of its own, updated, given a block and a thumbnail.

These are the writes the ingestion does for every scan, tried once each on
a dataset made for the purpose (its name, description and keyword say it
is safe to delete).  What was made is recorded in the report as not yet
removed; :mod:`.cleanup` removes it again.
"""

from __future__ import annotations

import base64
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..config import IngestorConfig
from ..errors import ForbiddenError, SciCatError
from ..scicat import SciCatClient
from ..strategy import prefixed
from .report import NO, UNKNOWN, YES, PreflightReport, answer

#: the pid (after ``dataset_pid_prefix``) and keyword of throw-away datasets
PREFLIGHT_PID_STEM = "scingestor-preflight"

_CREATE_HINT = (
    "a dataset with a pid of its own and another group's ownerGroup needs "
    "CREATE_DATASET_WITH_PID_GROUPS and CREATE_DATASET_PRIVILEGED_GROUPS"
)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def png_data_url() -> str:
    """A 1x1 grey PNG as a data URL: a thumbnail as the ingestion posts one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big")
            + kind
            + data
            + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class ThrowAwayDataset:
    """One run's test dataset: what is tried on it, and the ids of what it got.

    ``pid`` is the one sent (or the one the backend stored instead);
    ``block_id`` and ``attachment_id`` stay ``None`` until a post answered
    with an id, so the cleanup knows what there is to delete.
    """

    config: IngestorConfig
    client: SciCatClient
    report: PreflightReport
    host: str
    stamp: str
    pid: str
    block_id: Optional[str] = None
    attachment_id: Optional[str] = None

    @classmethod
    def named(
        cls,
        config: IngestorConfig,
        client: SciCatClient,
        report: PreflightReport,
        host: str,
        stamp: str,
    ) -> "ThrowAwayDataset":
        """The run's dataset, its pid naming the host and the time (after the prefix)."""
        pid = prefixed(config, f"{PREFLIGHT_PID_STEM}/{host}-{stamp}")
        return cls(config, client, report, host, stamp, pid)

    @property
    def patch_needed(self) -> bool:
        return self.config.dataset_update_strategy in ("patch", "mixed")

    @property
    def attachments_needed(self) -> bool:
        return bool(self.config.ingest_dataset_attachment)

    def body(self) -> Dict[str, Any]:
        """A valid raw dataset saying what it is, owned by a group of its own."""
        return {
            "pid": self.pid,
            "type": "raw",
            "datasetName": f"{PREFLIGHT_PID_STEM} {self.host} {self.stamp}",
            "description": (
                f"Throw-away dataset of the scingestor preflight check "
                f"(scicat_dataset_ingest --check) run on {self.host} at "
                f"{self.stamp}; safe to delete"
            ),
            "ownerGroup": PREFLIGHT_PID_STEM,
            "accessGroups": [],
            "owner": "scingestor preflight",
            "contactEmail": "scingestor-preflight@example.org",
            "principalInvestigator": "scingestor-preflight@example.org",
            "creationLocation": f"/scingestor/preflight/{self.host}",
            "sourceFolder": f"/scingestor-preflight/{self.host}-{self.stamp}",
            "creationTime": _utc_now(),
            "keywords": [PREFLIGHT_PID_STEM],
            "isPublished": False,
        }

    def create(self) -> bool:
        """Post the dataset; whether there is one to try the rest on."""
        prefix = self.config.dataset_pid_prefix or ""
        check = "create a dataset with our pid"
        try:
            created = self.client.post_dataset(self.body())
        except SciCatError as exc:
            detail = answer(exc)
            right = None
            if isinstance(exc, ForbiddenError):
                detail += f" ({_CREATE_HINT})"
                right = "CREATE_DATASET_WITH_PID_GROUPS, CREATE_DATASET_PRIVILEGED_GROUPS"
            self.report.add(check, NO, f"{self.pid}: {detail}", right=right)
            return False
        stored = created.get("pid") if isinstance(created, dict) else None
        if stored != self.pid:
            self.report.add(check, NO, f"sent pid {self.pid}, the backend stored {stored!r}")
            if isinstance(stored, str) and stored:
                self.pid = stored
                self.report.made[f"dataset {stored}"] = False
            return bool(stored)
        self.report.made[f"dataset {self.pid}"] = False
        where = f"prefix {prefix!r}" if prefix else "no dataset_pid_prefix configured"
        self.report.add(check, YES, f"201: {self.pid} ({where}, ownerGroup of another group)")
        return True

    def not_tried(self) -> None:
        """Without a dataset the rest cannot be tried: say so, row by row."""
        for check, needed in (
            ("update the dataset", self.patch_needed),
            ("post an origdatablock", True),
            ("post an attachment", self.attachments_needed),
            ("delete the attachment", self.attachments_needed),
            ("delete the origdatablock", True),
        ):
            self.report.add(check, UNKNOWN, "no test dataset to try it on", needed)

    def patch(self) -> None:
        check, needed = "update the dataset", self.patch_needed
        try:
            self.client.patch_dataset(self.pid, {"keywords": [PREFLIGHT_PID_STEM, "patched"]})
        except SciCatError as exc:
            self.report.add(check, NO, "PATCH " + answer(exc), needed)
            return
        self.report.add(
            check,
            YES,
            f"PATCH 200 (dataset_update_strategy {self.config.dataset_update_strategy})",
            needed,
        )

    def post_block(self) -> None:
        check = "post an origdatablock"
        body = {
            "datasetId": self.pid,
            "size": 1,
            "chkAlg": "md5",
            "ownerGroup": PREFLIGHT_PID_STEM,
            "accessGroups": [],
            "dataFileList": [{"path": "scingestor-preflight.txt", "size": 1, "time": _utc_now()}],
        }
        try:
            block = self.client.post_origdatablock(body)
        except SciCatError as exc:
            self.report.add(check, NO, answer(exc))
            return
        block_id = block.get("_id") or block.get("id") if isinstance(block, dict) else None
        if not block_id:
            self.report.add(check, UNKNOWN, f"answered without an id: {block!r}"[:200])
            return
        self.block_id = str(block_id)
        self.report.made[f"origdatablock {self.block_id} (of {self.pid})"] = False
        self.report.add(check, YES, f"201: id {self.block_id}")

    def post_attachment(self) -> None:
        check, needed = "post an attachment", self.attachments_needed
        body = {
            "caption": f"{PREFLIGHT_PID_STEM} {self.host} {self.stamp}",
            "thumbnail": png_data_url(),
            "ownerGroup": PREFLIGHT_PID_STEM,
            "accessGroups": [],
        }
        try:
            made = self.client.post_attachment(self.pid, body)
        except SciCatError as exc:
            self.report.add(check, NO, answer(exc), needed)
            return
        aid = (
            made.get("id") or made.get("aid") or made.get("_id") if isinstance(made, dict) else None
        )
        if not aid:
            self.report.add(check, UNKNOWN, f"answered without an id: {made!r}"[:200], needed)
            return
        self.attachment_id = str(aid)
        self.report.made[f"attachment {self.attachment_id} (of {self.pid})"] = False
        self.report.add(check, YES, f"201: id {self.attachment_id}", needed)
