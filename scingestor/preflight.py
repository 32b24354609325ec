"""The preflight check of a site: what may this SciCat account really do?

``scicat_dataset_ingest -c CONFIG --check`` runs it once before going live.
With the site's configuration (URL, routes, credentials, pid prefix) it
logs in and tries, on a throw-away dataset, everything the ingestion does:
create a dataset with a pid of its own, update it, post an origdatablock
and an attachment, read a proposal, delete the block and the attachment
(what re-ingesting a changed scan needs), then removes the dataset.

Rights live in the backend's environment (``CREATE_DATASET_WITH_PID_GROUPS``,
``CREATE_DATASET_PRIVILEGED_GROUPS``, ``ADMIN_GROUPS``, ``PROPOSAL_GROUPS``,
``DELETE_GROUPS``); a site admin reads them from the table, where each row
gives the status code and the server's message and names the setting an
account lacks.  Whatever could not be removed is listed by pid and id, so
the site can delete it by hand.

Why try instead of asking: the backend has no route that tells an
account's rights, and ``auth/whoami`` lists groups, not what the site
grants them.  The backend's release is not published either: the check
shows what answers (health, the OpenAPI title and version, headers).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import socket
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .config import IngestorConfig, proposal_id
from .errors import (
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
    SciCatError,
    SciCatUnreachable,
    ScingestorError,
)
from .redact import redact
from .scicat import ClientSettings, SciCatClient, encode_segment
from .strategy import prefixed

logger = logging.getLogger(__name__)

YES, NO, UNKNOWN = "yes", "no", "unknown"
#: the check asks few times: an operator waits at the terminal
PREFLIGHT_MAX_TRIES = 3
PREFLIGHT_TIMEOUT = 15.0
#: the pid (after ``dataset_pid_prefix``) and keyword of throw-away datasets
PREFLIGHT_PID_STEM = "scingestor-preflight"

_DELETE_HINT = "the account is not in the backend's DELETE_GROUPS; ADMIN_GROUPS is not enough"
_CREATE_HINT = (
    "a dataset with a pid of its own and another group's ownerGroup needs "
    "CREATE_DATASET_WITH_PID_GROUPS and CREATE_DATASET_PRIVILEGED_GROUPS"
)


@dataclass
class Row:
    """One line of the table: what was tried, ``yes``/``no``/``unknown``, why."""

    check: str
    result: str
    detail: str
    needed: bool = True
    #: the backend setting that grants what is missing (for the verdict)
    right: Optional[str] = None


@dataclass
class PreflightReport:
    """The table, what the check left in SciCat, and the verdict."""

    url: str
    account: str
    rows: List[Row] = field(default_factory=list)
    #: what the check made in SciCat (in order) and whether it is gone again
    made: Dict[str, bool] = field(default_factory=dict)
    #: how to remove an item by hand (shown for what is left behind)
    how: Dict[str, str] = field(default_factory=dict)
    #: what the findings mean for this configuration (printed before the verdict)
    notes: List[str] = field(default_factory=list)
    fatal: Optional[str] = None

    @property
    def left_behind(self) -> List[str]:
        """What the check made and could not remove (pids, ids)."""
        return [item for item, gone in self.made.items() if not gone]

    @property
    def removed(self) -> List[str]:
        return [item for item, gone in self.made.items() if gone]

    def add(
        self, check: str, result: str, detail: str, needed: bool = True, right: Optional[str] = None
    ) -> Row:
        row = Row(check, result, redact(detail), needed, right if result == NO else None)
        self.rows.append(row)
        logger.debug("preflight: %s: %s: %s", check, result, row.detail)
        return row

    @property
    def missing(self) -> List[Row]:
        """Needed checks that did not answer ``yes``."""
        return [row for row in self.rows if row.needed and row.result != YES]

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.missing

    @property
    def verdict(self) -> str:
        if self.fatal is not None:
            return f"NOT READY: {self.fatal}"
        if self.ok:
            return (
                f"READY: account {self.account} can do everything this configuration "
                f"needs at {self.url}"
            )
        parts = [
            f"{row.check} ({row.result}" + (f", needs {row.right}" if row.right else "") + ")"
            for row in self.missing
        ]
        return f"NOT READY: account {self.account} cannot: " + "; ".join(parts)

    def render(self) -> str:
        """The table, what is left behind and the one-line verdict (no secrets)."""
        headers = ("CHECK", "RESULT", "NEEDED", "DETAIL")
        lines = [
            (row.check, row.result, "yes" if row.needed else "no", row.detail) for row in self.rows
        ]
        widths = [max([len(headers[i])] + [len(line[i]) for line in lines]) for i in range(3)]

        def fmt(cells: Tuple[str, ...]) -> str:
            return (
                "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells[:3]))
                + "  "
                + cells[3]
            )

        out = [
            f"SciCat preflight check: {self.url} as {self.account}",
            "",
            fmt(headers),
            fmt(tuple("-" * w for w in widths) + ("-" * 6,)),
        ]
        out += [fmt(line) for line in lines]
        out.append("")
        if self.left_behind:
            out.append(
                "Left behind in SciCat (this account could not delete them; a "
                "member of DELETE_GROUPS can):"
            )
            out += [
                f"  {item}" + (f": {self.how[item]}" if item in self.how else "")
                for item in self.left_behind
            ]
        elif self.removed:
            out.append("Left behind in SciCat: nothing; made and removed again:")
            out += [f"  {item}" for item in self.removed]
        else:
            out.append("Left behind in SciCat: nothing")
        out += self.notes
        out.append(self.verdict)
        return redact("\n".join(out))


def _png_data_url() -> str:
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


def _answer(exc: BaseException) -> str:
    """``403: <server message>`` out of a client error (``no answer: …`` without one)."""
    if isinstance(exc, SciCatUnreachable) and exc.status is None:
        return f"no answer: {getattr(exc, 'last_error', '') or exc}"
    if isinstance(exc, SciCatError) and exc.status is not None:
        message = "; ".join(exc.messages) if exc.messages else str(exc).split(": ", 2)[-1]
        return f"{exc.status}: {message}"
    return str(exc)


class Preflight:
    """Runs the checks in order; each step records its row and never raises."""

    def __init__(
        self,
        config: IngestorConfig,
        client: Optional[SciCatClient] = None,
        host: Optional[str] = None,
        now: Optional[float] = None,
    ) -> None:
        self.config = config
        if client is None:
            settings = dataclasses.replace(
                ClientSettings.from_config(config),
                max_tries=min(PREFLIGHT_MAX_TRIES, max(1, config.max_request_tries_number)),
                timeout=min(PREFLIGHT_TIMEOUT, float(config.request_timeout or PREFLIGHT_TIMEOUT)),
            )
            client = SciCatClient(settings)
            self._own_client = True
        else:
            self._own_client = False
        self.client = client
        self.host = host or socket.gethostname()
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        self.report = PreflightReport(client.url, client.account_name)
        self.pid: Optional[str] = None
        self.block_id: Optional[str] = None
        self.attachment_id: Optional[str] = None

    # ----------------------------------------------------------------- run
    def run(self) -> PreflightReport:
        try:
            if self._reachable():
                self._backend()
                if self._login():
                    self._whoami()
                    self._proposals()
                    self._work_on_dataset()
        except ScingestorError as exc:  # e.g. a credential file gone meanwhile
            self.report.fatal = f"the check stopped: {redact(str(exc))}"
        finally:
            if self._own_client:
                self.client.close()
        return self.report

    def _reachable(self) -> bool:
        try:
            elapsed = self.client.ping()
        except SciCatUnreachable as exc:
            reason = getattr(exc, "last_error", "") or str(exc)
            self.report.add("reach SciCat", NO, f"{self.client.url}: {reason}")
            self.report.fatal = f"SciCat at {self.client.url} cannot be reached: {reason}"
            return False
        self.report.add("reach SciCat", YES, f"answered in {elapsed * 1000:.0f} ms")
        return True

    def _get_info(self, url: str) -> Tuple[Optional[int], Any, Dict[str, str]]:
        """One anonymous GET (status, JSON body or None, headers); never raises."""
        return self.client.transport.get_info(url)

    def _backend(self) -> None:
        """Which backend answers: health, the OpenAPI title/version, headers."""
        url = self.client.url
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        facts: List[str] = []
        status, body, headers = self._get_info(f"{url}/health")
        if status == 200 and isinstance(body, dict):
            health = f"health {body.get('status', '?')}"
            info = body.get("info")
            if isinstance(info, dict) and info:
                health += (
                    " ("
                    + ", ".join(
                        f"{name} {value.get('status', '?')}"
                        for name, value in info.items()
                        if isinstance(value, dict)
                    )
                    + ")"
                )
            facts.append(health)
        elif status is not None:
            facts.append(f"no health route ({status})")
        status, body, _ = self._get_info(f"{origin}/explorer-json")
        if status == 200 and isinstance(body, dict) and isinstance(body.get("info"), dict):
            info = body["info"]
            facts.append(f"OpenAPI {info.get('title', '?')!r} {info.get('version', '?')}")
        for name in ("Server", "X-Powered-By", "X-Backend-Version", "X-Api-Version"):
            if headers.get(name, "").strip():
                facts.append(f"{name}: {headers[name].strip()}")
        if not facts:
            self.report.add(
                "backend version",
                UNKNOWN,
                "no health, OpenAPI or version header answered",
                needed=False,
            )
            return
        facts.append("the backend release itself is published by no route")
        self.report.add("backend version", YES, "; ".join(facts), needed=False)

    def _login(self) -> bool:
        try:
            self.client.login()
        except (AuthenticationError, SciCatError, ScingestorError) as exc:
            status = getattr(exc, "status", None)
            detail = _answer(exc) if status else redact(str(exc))
            if status in (400, 401, 403):
                source = self.client.settings.credential_file
                detail += " (wrong user name or password" + (f" in {source})" if source else ")")
            self.report.add("log in", NO, detail)
            self.report.fatal = (
                f"cannot log in to {self.client.url} as {self.client.account_name}: {detail}"
            )
            return False
        self.report.add("log in", YES, f"as {self.client.account_name} (token received)")
        return True

    def _whoami(self) -> None:
        try:
            user = self.client.whoami()
        except SciCatError as exc:
            self.report.add("auth/whoami", UNKNOWN, _answer(exc), needed=False)
            return
        if not user:
            self.report.add("auth/whoami", UNKNOWN, "answered with an empty body", needed=False)
            return
        groups = user.get("currentGroups")
        text = f"user {user.get('username', '?')}"
        if isinstance(groups, list):
            text += ", groups: " + (", ".join(str(g) for g in groups) or "none")
        self.report.add("auth/whoami", YES, text, needed=False)

    # ------------------------------------------------------ throw-away dataset
    def _dataset_body(self) -> Dict[str, Any]:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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
            "creationTime": when,
            "keywords": [PREFLIGHT_PID_STEM],
            "isPublished": False,
        }

    def _work_on_dataset(self) -> None:
        self.pid = prefixed(self.config, f"{PREFLIGHT_PID_STEM}/{self.host}-{self.stamp}")
        if not self._create_dataset():
            for check, needed in (
                ("update the dataset", self._patch_needed()),
                ("post an origdatablock", True),
                ("post an attachment", self._attachments_needed()),
                ("delete the attachment", self._attachments_needed()),
                ("delete the origdatablock", True),
            ):
                self.report.add(check, UNKNOWN, "no test dataset to try it on", needed)
            return
        self._patch_dataset()
        self._post_block()
        self._post_attachment()
        self._delete_attachment()
        self._delete_block()
        self._delete_dataset()

    def _patch_needed(self) -> bool:
        return self.config.dataset_update_strategy in ("patch", "mixed")

    def _attachments_needed(self) -> bool:
        return bool(self.config.ingest_dataset_attachment)

    def _create_dataset(self) -> bool:
        prefix = self.config.dataset_pid_prefix or ""
        check = "create a dataset with our pid"
        try:
            created = self.client.post_dataset(self._dataset_body())
        except SciCatError as exc:
            detail = _answer(exc)
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

    def _patch_dataset(self) -> None:
        check, needed = "update the dataset", self._patch_needed()
        assert self.pid is not None
        try:
            self.client.patch_dataset(self.pid, {"keywords": [PREFLIGHT_PID_STEM, "patched"]})
        except SciCatError as exc:
            self.report.add(check, NO, "PATCH " + _answer(exc), needed)
            return
        self.report.add(
            check,
            YES,
            f"PATCH 200 (dataset_update_strategy {self.config.dataset_update_strategy})",
            needed,
        )

    def _post_block(self) -> None:
        check = "post an origdatablock"
        assert self.pid is not None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "datasetId": self.pid,
            "size": 1,
            "chkAlg": "md5",
            "ownerGroup": PREFLIGHT_PID_STEM,
            "accessGroups": [],
            "dataFileList": [{"path": "scingestor-preflight.txt", "size": 1, "time": when}],
        }
        try:
            block = self.client.post_origdatablock(body)
        except SciCatError as exc:
            self.report.add(check, NO, _answer(exc))
            return
        block_id = block.get("_id") or block.get("id") if isinstance(block, dict) else None
        if not block_id:
            self.report.add(check, UNKNOWN, f"answered without an id: {block!r}"[:200])
            return
        self.block_id = str(block_id)
        self.report.made[f"origdatablock {self.block_id} (of {self.pid})"] = False
        self.report.add(check, YES, f"201: id {self.block_id}")

    def _post_attachment(self) -> None:
        check, needed = "post an attachment", self._attachments_needed()
        assert self.pid is not None
        body = {
            "caption": f"{PREFLIGHT_PID_STEM} {self.host} {self.stamp}",
            "thumbnail": _png_data_url(),
            "ownerGroup": PREFLIGHT_PID_STEM,
            "accessGroups": [],
        }
        try:
            made = self.client.post_attachment(self.pid, body)
        except SciCatError as exc:
            self.report.add(check, NO, _answer(exc), needed)
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

    def _delete(
        self,
        check: str,
        needed: bool,
        delete: Callable[[], Any],
        still_there: Callable[[], Optional[bool]],
        item: str,
        hint: str,
        right: str,
    ) -> bool:
        """Try a delete, then read back whether *item* is gone."""
        try:
            delete()
        except ForbiddenError as exc:
            self.report.add(check, NO, f"{_answer(exc)} ({hint})", needed, right)
            return False
        except NotFoundError as exc:
            self.report.add(check, UNKNOWN, _answer(exc), needed)
            return False
        except SciCatError as exc:
            self.report.add(check, NO, _answer(exc), needed)
            return False
        try:
            held = still_there()
        except SciCatError as exc:
            held = None
            reason = _answer(exc)
        else:
            reason = "cannot be read back"
        if held:
            self.report.add(check, NO, f"answered 200 but {item} is still there", needed)
            return False
        self.report.made[item] = True
        gone = "gone" if held is False else f"answered 200; {reason}"
        self.report.add(check, YES, f"200: {gone}", needed)
        return True

    def _delete_attachment(self) -> None:
        if self.attachment_id is None:
            self.report.add(
                "delete the attachment",
                UNKNOWN,
                "no attachment to delete",
                self._attachments_needed(),
            )
            return
        pid, aid = self.pid, self.attachment_id
        assert pid is not None
        item = f"attachment {aid} (of {pid})"

        def there() -> Optional[bool]:
            return any(
                aid in (a.get("id"), a.get("aid"), a.get("_id"))
                for a in self.client.get_attachments(pid)
                if isinstance(a, dict)
            )

        done = self._delete(
            "delete the attachment",
            self._attachments_needed(),
            lambda: self.client.delete_attachment(pid, aid),
            there,
            item,
            "the backend deletes attachments for ADMIN_GROUPS or DELETE_GROUPS members",
            "ADMIN_GROUPS or DELETE_GROUPS",
        )
        if done:
            route = "v4 (by id)" if self.client.attachments_v4() else "v3"
            self.report.rows[-1].detail += f", by the {route} route"

    def _delete_block(self) -> None:
        if self.block_id is None:
            self.report.add("delete the origdatablock", UNKNOWN, "no origdatablock to delete")
            return
        pid, bid = self.pid, self.block_id
        assert pid is not None
        item = f"origdatablock {bid} (of {pid})"

        def there() -> Optional[bool]:
            return any(
                bid in (b.get("_id"), b.get("id"))
                for b in self.client.get_origdatablocks(pid)
                if isinstance(b, dict)
            )

        self._delete(
            "delete the origdatablock",
            True,
            lambda: self.client.delete_origdatablock(bid, pid),
            there,
            item,
            _DELETE_HINT,
            "DELETE_GROUPS",
        )
        if self.report.rows[-1].right == "DELETE_GROUPS":
            policy = self.config.replace_without_delete_right
            self.report.notes.append(
                "Without the delete right a changed scan keeps its old origdatablocks: with "
                f"replace_without_delete_right: {policy} (configured) the new ones are "
                + ("not posted." if policy == "skip" else "posted beside them.")
            )

    def _delete_dataset(self) -> None:
        pid = self.pid
        assert pid is not None
        item = f"dataset {pid}"

        def there() -> Optional[bool]:
            return self.client.get_dataset(pid) is not None

        self._delete(
            "delete the test dataset",
            False,
            lambda: self.client.delete_dataset(pid),
            there,
            item,
            _DELETE_HINT,
            "DELETE_GROUPS",
        )
        base = self.client.url
        self.report.how[item] = (
            f"DELETE {base}/{self.client.settings.datasets_path}/{encode_segment(pid)}"
        )
        if self.block_id is not None:
            self.report.how[f"origdatablock {self.block_id} (of {pid})"] = (
                f"DELETE {base}/{self.client.settings.datablocks_path}/"
                f"{encode_segment(self.block_id)}"
            )
        v4 = self.client.v4_url() if self.client.attachments_v4() else None
        if self.attachment_id is not None and v4:
            self.report.how[f"attachment {self.attachment_id} (of {pid})"] = (
                f"DELETE {v4}/attachments/{encode_segment(self.attachment_id)}"
            )

    # --------------------------------------------------------------- proposals
    def _beamtime_proposal(self) -> Optional[Tuple[str, str]]:
        """(SciCat proposalId, beamtime file) of the first configured beamtime."""
        from .beamtime import beamtime_directories, find_beamtime_files, read_beamtime

        try:
            for directory in beamtime_directories(self.config):
                for path in find_beamtime_files(directory, self.config):
                    try:
                        beamtime = read_beamtime(path)
                    except ScingestorError:
                        continue
                    return (
                        proposal_id(self.config, beamtime.proposal_id, beamtime.beamtime_id),
                        path,
                    )
        except (OSError, ScingestorError) as exc:
            logger.debug("preflight: no beamtime file: %s", exc)
        return None

    def _proposals(self) -> None:
        check = "read proposals"
        needed = bool(self.config.owner_access_groups_from_proposal)
        found = self._beamtime_proposal()
        try:
            if found is not None:
                wanted, path = found
                record = self.client.get_proposal(wanted)
                if record is None:
                    self.report.add(
                        check,
                        UNKNOWN,
                        f"proposal {wanted} (of {os.path.basename(path)}) is not in SciCat (404)",
                        needed,
                    )
                else:
                    self.report.add(
                        check,
                        YES,
                        f"proposal {wanted} (of "
                        f"{os.path.basename(path)}): ownerGroup "
                        f"{record.get('ownerGroup')!r}",
                        needed,
                    )
                return
            visible = self.client.find_proposals({}, limit=1)
            if not visible:
                self.report.add(
                    check,
                    UNKNOWN,
                    "no beamtime file found and no proposal "
                    "visible to this account (none in SciCat, or none it may "
                    "read: PROPOSAL_GROUPS)",
                    needed,
                )
                return
            first = visible[0].get("proposalId") if isinstance(visible[0], dict) else None
            record = self.client.get_proposal(str(first)) if first else None
            if record is None:
                self.report.add(check, UNKNOWN, f"proposal {first!r} listed but not read", needed)
                return
            self.report.add(
                check,
                YES,
                f"proposal {first} (the first visible): ownerGroup {record.get('ownerGroup')!r}",
                needed,
            )
        except ForbiddenError as exc:
            self.report.add(
                check,
                NO,
                f"{_answer(exc)} (the backend lets PROPOSAL_GROUPS "
                f"and ADMIN_GROUPS members read any proposal)",
                needed,
                "PROPOSAL_GROUPS",
            )
        except SciCatError as exc:
            self.report.add(check, NO, _answer(exc), needed)


def run_check(
    config: IngestorConfig, client: Optional[SciCatClient] = None, host: Optional[str] = None
) -> PreflightReport:
    """Run the preflight check with *config* (a client of its own unless given)."""
    return Preflight(config, client, host=host).run()
