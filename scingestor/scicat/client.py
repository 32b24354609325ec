"""The SciCat client's façade: the endpoints the ingestor uses.

Written for the backend as it really answers (``scicat-backend-next`` v4,
REST API v3, or v4 for a ``…/api/v4`` URL: :mod:`.v4` holds the routes and
turns the ingestor's v3 bodies into v4 ones and back).  Each endpoint says
what to send, in which retry :class:`~.retry.Mode`, and how its effect can
be looked up after a failed try; the rooms behind it do the rest:

* :mod:`.transport`: one try over a keep-alive session, failures classified,
  answers decoded, errors mapped (pids go into a path percent-encoded, a
  body of 16 MiB or more is refused here, the token only in a header);
* :mod:`.retry`: what a try's outcome means, as a pure immutable policy;
* :mod:`.calls`: the short loop stringing tries together;
* :mod:`.tokens`: login (with the ``auth/login`` fallback) and renewal;
* :mod:`.rights`: rights and backend facts learnt once (delete rights, the
  v4 attachment route) and the operator's once-only warnings.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Dict, List, Optional, Union

from ..errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    SciCatError,
    SciCatUnreachable,
    ValidationError,
)
from ..redact import protect_logger, redact
from .calls import Caller, LookUp, unreachable
from .messages import parse_error_messages
from .models import MODEL_SAME_500_LIMIT, as_dict, post_model
from .retry import Mode
from .rights import DELETE_RIGHT_HINT
from .transport import Failure, encode_segment, short
from .v4 import attachments_by_id, with_counts

__all__ = [
    "DELETE_RIGHT_HINT",
    "MODEL_SAME_500_LIMIT",
    "SciCatClient",
    "encode_segment",
]

logger = protect_logger(logging.getLogger(__name__))


class SciCatClient(Caller):
    """One SciCat connection (a keep-alive session) shared by the ingestor's threads.

    ``credentials`` may be :class:`Credentials` (fixed), a
    :class:`CredentialFile` (re-read on change) or ``None``: then
    ``settings.credential_file`` is used if set, else requests go anonymous.
    """

    # ------------------------------------------------------------------ life
    def close(self) -> None:
        """Stop waiting retries and close the connections."""
        self._closed.set()
        self.transport.close()

    def __enter__(self) -> "SciCatClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SciCatClient({self.url!r}, credentials={self.tokens.credentials!r})"

    @property
    def logged_in(self) -> bool:
        """True when a token is at hand (it may still be refused by the server)."""
        return self.tokens.token is not None

    def login(self) -> None:
        """Log in now (or take the token of the credentials); raise if that fails."""
        with self.tokens.lock:
            self.tokens.token = None
            self.tokens.login()

    @property
    def account_name(self) -> str:
        """The user name the client logs in with (for messages)."""
        creds = None
        try:
            creds = self.tokens.current_credentials()
        except Exception:  # an unreadable credential file: the setting names it
            pass
        return creds.username if creds is not None and creds.username else self.settings.username

    def v4_url(self) -> Optional[str]:
        """The API v4 base next to a ``…/api/v3`` URL (``None`` for other URLs)."""
        return self.transport.v4_url()

    # ------------------------------------------------------------- datasets
    def _dataset_path(self, pid: str, *rest: str) -> str:
        return self.transport.routes.dataset(pid, *rest)

    def _shaped(self, body: Any, kind: type, method: str, path: str, what: str) -> Any:
        """*body* if it is a *kind*, else a SciCatError (an empty answer too)."""
        if isinstance(body, kind):
            return body
        url = self.transport.url_of(path)
        raise SciCatError(
            redact(f"{method} {url}: the answer is not {what}: {short(json.dumps(body))}"),
            body=body,
            method=method,
            url=url,
        )

    def get_dataset(self, pid: str) -> Optional[dict]:
        """The dataset, or ``None`` when SciCat does not know the pid (404)."""
        path = self._dataset_path(pid)
        answer = self._call("GET", path, accept_404=True)
        if answer.status == 404 or not answer.body:
            return None
        return self.transport.routes.dataset_in(
            self._shaped(answer.body, dict, "GET", path, "a dataset object")
        )

    def create(
        self,
        path: str,
        body: Any,
        key: Optional[str],
        record_path: Optional[str],
        same_500_limit: Optional[int] = None,
    ) -> dict:
        """POST a new record; with a client ``key`` a lost answer is retried safely.

        *record_path* is the record's own route: a 5xx (or a lost answer)
        is looked up there before the next try; a landed first try is read back.
        """
        lookup: Optional[LookUp] = None
        if key and record_path is not None:
            where = record_path
            lookup = lambda: self._exists(where)  # noqa: E731
        answer = self._call(
            "POST",
            path,
            body=body,
            mode=Mode.KEYED_CREATE if key else Mode.UNSAFE,
            lookup=lookup,
            same_500_limit=same_500_limit,
        )
        if not (answer.landed and key):
            return answer.body
        url = self.transport.url_of(path)
        logger.warning(
            "POST %s for %s: answer lost, but the record exists: taking the first try as applied",
            url,
            key,
        )
        record = self._read_back(record_path) if record_path else None
        if record is None:
            raise ConflictError(
                f"POST {url}: {key} conflicts (409) but cannot be read back",
                status=409,
                body=answer.body,
                method="POST",
                url=url,
                messages=parse_error_messages(answer.body),
            )
        return record

    def _read_back(self, record_path: str) -> Optional[dict]:
        answer = self._call("GET", record_path, accept_404=True)
        if answer.status == 404 or not isinstance(answer.body, dict) or not answer.body:
            return None
        return answer.body

    def post_dataset(self, body: Union[dict, str]) -> dict:
        """Create a dataset; a client ``pid`` makes a lost answer safe to retry."""
        return self.post_dataset_to(self.transport.routes.datasets, body)

    def post_dataset_to(
        self, path: str, body: Union[dict, str], same_500_limit: Optional[int] = None
    ) -> dict:
        """Create a dataset by *path* (the datasets route, or a model's name)."""
        record = as_dict(body)
        pid = record.get("pid") if record else None
        key = pid if isinstance(pid, str) and pid else None
        where = self._dataset_path(key) if key else None
        routes = self.transport.routes
        body = routes.dataset_out(record) if routes.v4 and record is not None else body
        return routes.dataset_in(self.create(path, body, key, where, same_500_limit))

    def patch_dataset(self, pid: str, body: dict) -> dict:
        """Update top-level fields of a dataset (idempotent, so retried).

        Through v4 the dataset's counts are sent along (read just before):
        backend 4.5.0 zeroes ``size``/``numberOfFiles`` a v4 PATCH lacks.
        """
        routes = self.transport.routes
        path = self._dataset_path(pid)
        body = routes.dataset_out(body)
        if routes.v4:
            body = with_counts(body, self.get_dataset(pid))
        return routes.dataset_in(self._call("PATCH", path, body=body).body)

    def is_valid_dataset(self, body: dict) -> dict:
        """``{"valid": bool, "error"?: text}`` (no whitelist check on the server)."""
        path = f"{self.transport.routes.datasets}/isValid"
        body = self.transport.routes.dataset_out(body)
        return self._call("POST", path, body=body, mode=Mode.SAFE).body

    def delete_dataset(self, pid: str) -> Any:
        """Delete a dataset (only its own record: blocks and attachments stay).

        Needs the backend's ``DELETE_GROUPS``; the ingestion never deletes
        datasets, the preflight check removes its throw-away one with it.
        A failed try is looked up before the next (a gone dataset is done).
        """
        path = self._dataset_path(pid)
        return self._call("DELETE", path, mode=Mode.DELETE, lookup=self._gone(path)).body

    # -------------------------------------------------------- origdatablocks
    def post_origdatablock(self, body: dict) -> dict:
        """Create an origdatablock by the standalone route (``datasetId`` required)."""
        if not isinstance(body, dict) or not body.get("datasetId"):
            url = self.transport.url_of(self.transport.routes.blocks)
            raise ValidationError(
                f"POST {url}: origdatablock without datasetId",
                method="POST",
                url=url,
                messages=["datasetId: datasetId is required"],
            )
        return self._call("POST", self.transport.routes.blocks, body=body, mode=Mode.UNSAFE).body

    def get_origdatablocks(self, pid: str) -> list:
        """The dataset's origdatablocks (what to check after an ambiguous POST).

        An answer that is no list is an error, never "no blocks": the blocks
        would be posted again.
        """
        path = self.transport.routes.blocks_of(pid)
        body = self._call("GET", path).body
        return self._shaped(body, list, "GET", path, "a list of origdatablocks")

    def delete_origdatablock(self, block_id: str, dataset_pid: Optional[str] = None) -> Any:
        """Delete one origdatablock (a 404 after a lost answer counts as done).

        With *dataset_pid* a failed try (lost answer, 5xx: backend 4.5.0
        answers 500 for a block already gone) is looked up in the dataset's
        blocks first: a gone block is done.  A 403 is remembered (see
        :meth:`may_delete_origdatablocks`) and raised.
        """
        record = f"{self.transport.routes.blocks}/{encode_segment(block_id)}"
        if dataset_pid:
            lookup = self._unlisted(self.transport.routes.blocks_of(dataset_pid), block_id)
        else:

            def lookup() -> Optional[bool]:
                # backend 4.5.0 answers a gone block's GET with 403, not 404:
                # only a 404 tells here
                return True if self._exists(record) is False else None

        try:
            return self._call("DELETE", record, mode=Mode.DELETE, lookup=lookup).body
        except ForbiddenError:
            self.learn_right("delete:origdatablocks", False)
            raise

    # ---------------------------------------------------------------- rights
    def learn_right(self, right: str, allowed: bool) -> None:
        """Remember a right seen in an answer (a 403 is learnt by the client itself)."""
        self.rights.learn(right, allowed)

    def known_right(self, right: str) -> Optional[bool]:
        """``"delete:origdatablocks"`` / ``"delete:attachments"``: learnt value or None."""
        return self.rights.known(right)

    def may_delete_origdatablocks(self) -> bool:
        """May this account delete origdatablocks?  Asked once, then remembered.

        The probe is a DELETE of a block id that cannot exist: the backend's
        policy guard runs before the look-up, so it answers 403 without the
        right and 500 (or 404) with it; nothing is deleted either way.  An
        unanswered probe says True (not remembered): a real 403 teaches later.
        """
        known = self.known_right("delete:origdatablocks")
        if known is not None:
            return known
        probe = f"{self.transport.routes.blocks}/scingestor-rights-probe-{uuid.uuid4().hex}"
        try:
            self._call("DELETE", probe, mode=Mode.SAFE, max_tries=1, expect_5xx=True)
            allowed = True
        except ForbiddenError:
            allowed = False
        except AuthenticationError:
            raise
        except SciCatUnreachable as exc:
            if exc.status is None:
                return True  # no answer: cannot tell now
            allowed = True  # 500: past the guard (the block is not there)
        except SciCatError:
            allowed = True  # 404 and the like: past the guard
        logger.debug(
            "SciCat account %s %s delete origdatablocks",
            self.account_name,
            "may" if allowed else "may not",
        )
        self.learn_right("delete:origdatablocks", allowed)
        return allowed

    def warn_once(self, key: str, text: str) -> bool:
        """Log *text* as a warning the first time *key* is seen; True then.

        The texts stay in :attr:`warnings` for the client's lifetime, so a
        service can show them (Status, LastError).
        """
        return self.rights.warn_once(key, text)

    @property
    def warnings(self) -> List[str]:
        """Conditions the operator should know about, once each (oldest first)."""
        return self.rights.warnings

    # ----------------------------------------------------------- attachments
    def post_attachment(self, pid: str, body: dict) -> dict:
        """Attach e.g. a thumbnail to a dataset."""
        routes = self.transport.routes
        body = routes.attachment_out(pid, body)
        return routes.attachment_in(
            self._call("POST", routes.attachments(pid), body=body, mode=Mode.UNSAFE).body
        )

    def get_attachments(self, pid: str) -> list:
        """The dataset's attachments (an answer that is no list is an error)."""
        path = self.transport.routes.attachments_of(pid)
        body = self._call("GET", path).body
        return self.transport.routes.attachments_in(
            self._shaped(body, list, "GET", path, "a list of attachments")
        )

    def attachments_v4(self, attachment_id: Optional[str] = None) -> bool:
        """Does the backend delete attachments by id (``/api/v4/attachments/{aid}``)?
        Detected once, see :func:`.v4.attachments_by_id`."""
        return attachments_by_id(self, attachment_id)

    def delete_attachment(self, pid: str, attachment_id: str) -> Any:
        """Delete one attachment of a dataset: by the v4 route where the backend
        has it, else by the v3 one (which on backend 4.5.0 deletes the oldest
        attachment instead: the caller must check what is left).

        A failed try is looked up before the next (by the v3 route it is never
        sent again: SciCatAmbiguousError unless the look-up shows the
        attachment gone); a 403 is remembered
        (``known_right("delete:attachments")``) and raised.
        """
        base = self.v4_url()
        mode = Mode.DELETE
        if base is not None and self.attachments_v4(attachment_id):
            path = f"{base}/attachments/{encode_segment(attachment_id)}"
            lookup = self._gone(path)
        else:
            # repeated, the v3 route removes one more (the oldest) attachment:
            # after a failed try only a look-up at what the dataset holds
            mode = Mode.DELETE_ONCE
            path = f"{self.transport.routes.attachments(pid)}/{encode_segment(attachment_id)}"
            lookup = self._unlisted(self.transport.routes.attachments(pid), attachment_id)
        try:
            return self._call("DELETE", path, mode=mode, lookup=lookup).body
        except ForbiddenError:
            self.learn_right("delete:attachments", False)
            raise

    # ------------------------------------------------ proposals, samples, model
    def get_proposal(self, proposal_id: str) -> Optional[dict]:
        """The proposal, or ``None`` when unknown (404)."""
        path = f"{self.settings.proposals_path}/{encode_segment(proposal_id)}"
        answer = self._call("GET", path, accept_404=True)
        if answer.status == 404 or not answer.body:
            return None
        return answer.body

    def find_proposals(self, where: dict, limit: Optional[int] = None) -> list:
        """Proposals matching a loopback ``where`` filter that the account may read."""
        query: Dict[str, Any] = {"where": where}
        if limit is not None:
            query["limits"] = {"limit": int(limit)}
        path = self.settings.proposals_path
        body = self._call("GET", path, params={"filter": json.dumps(query)}).body
        return self._shaped(body, list, "GET", path, "a list of proposals")

    def get_sample(self, sample_id: str) -> Optional[dict]:
        """The sample, or ``None`` when unknown (404)."""
        answer = self._call("GET", f"Samples/{encode_segment(sample_id)}", accept_404=True)
        if answer.status == 404 or not isinstance(answer.body, dict):
            return None
        return answer.body

    def post_model(self, model: str, body: Union[dict, str]) -> dict:
        """POST to ``{url}/{model}`` (``scicat_ingest -m``); see :func:`.models.post_model`."""
        return post_model(self, model, body)

    def whoami(self) -> dict:
        """The logged-in user (``username``, ``currentGroups``): proves the token works.

        An empty list from an anonymous query looks like "nothing found"; a
        caller that must be sure its token is accepted can ask this first.
        Backend 4.5.0 answers a caller it does not know with 200 and no body:
        that is ``{}`` here (not logged in); with credentials, a token the
        backend no longer knows gets one re-login first.
        """
        token = self.tokens.ensure()
        body = self._call("GET", "auth/whoami").body
        if not (isinstance(body, dict) and body) and token is not None:
            if self.tokens.relogin(token):
                body = self._call("GET", "auth/whoami").body
        return body if isinstance(body, dict) else {}

    # ---------------------------------------------------------------- health
    def ping(self, timeout: Optional[float] = None) -> float:
        """Round-trip time of one cheap request; :class:`SciCatUnreachable` if none.

        One try, no login: any answer below 500 shows a working backend.
        """
        url = self.transport.url_of(self.transport.routes.datasets)
        params = {"filter": json.dumps({"limits": {"limit": 1}})}
        started = time.monotonic()
        answer = self.transport.send(
            "GET",
            url,
            params=params,
            token=self.tokens.token,
            timeout=timeout if timeout is not None else min(self.settings.timeout, 10.0),
        )
        if isinstance(answer, Failure):
            self._observe(False, answer.reason)
            raise unreachable("GET", url, answer.reason, 1, None)
        elapsed = time.monotonic() - started
        status = answer.status_code
        self._observe(status < 500, f"{status} {answer.reason or ''}".strip())
        if status >= 500:
            raise unreachable("GET", url, f"{status} {answer.reason}", 1, status)
        return elapsed
