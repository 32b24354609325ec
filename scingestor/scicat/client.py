"""The SciCat REST client: login, token, retries with backoff, endpoints.

Written for the backend as it really answers (``scicat-backend-next`` v4,
REST API v3):

* ``Users/login`` answers 201 with an empty body, so a login falls back to
  ``auth/login`` when the configured route gives no token;
* a missing or expired token is never a 401: requests run anonymous, writes
  get 403, so a 403 (or 401) triggers one re-login and one retry;
* pids contain ``/`` and go into a path as one percent-encoded segment;
* a body of 16 MiB or more is answered 500: refused here, never sent;
* the token travels only in the ``Authorization`` header, never in a URL.

Retries (connection errors, timeouts, 5xx) use exponential backoff with
jitter, bounded by ``max_tries``.  A POST whose answer is lost is repeated
only when that is safe: a dataset with a client pid (a 409 on the retry
means the first try landed), not an origdatablock or attachment, which
raise :class:`~scingestor.errors.SciCatAmbiguousError` so the caller can
check with a GET first.

A request whose effect can be looked up (a DELETE, a POST with a client
key) is looked up before it is tried again: backend 4.5.0 answers a
repeated DELETE of a gone origdatablock, and a POST of an existing
sample, with 500 every time, and 100 tries of that take half an hour.

Rights the account lacks (deleting needs the backend's ``DELETE_GROUPS``)
are learnt once, by a cheap probe or from a first 403, and remembered for
the client's lifetime: :meth:`SciCatClient.may_delete_origdatablocks`,
:meth:`SciCatClient.warn_once` and :attr:`SciCatClient.warnings` let the
caller act on them and say so once.
"""

from __future__ import annotations

import enum
import http.client
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import quote

import requests
import urllib3

from ..errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SciCatAmbiguousError,
    SciCatError,
    SciCatUnreachable,
    ValidationError,
)
from ..redact import protect_logger, redact, register_secret
from .credentials import CredentialFile, Credentials
from .messages import parse_error_messages
from .settings import MAX_BODY_BYTES, ClientSettings

logger = protect_logger(logging.getLogger(__name__))

FALLBACK_LOGIN_PATH = "auth/login"
_LEGACY_DATASET_MODELS = {"rawdatasets": "raw", "deriveddatasets": "derived"}
# Statuses worth another try: the server (or a proxy in front) had a problem.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_MAX_ERROR_TEXT = 2000
#: tries of a look-up made before retrying (it must not take the retry's time)
_LOOKUP_TRIES = 2
#: ``scicat_ingest -m``: 500 answers alike in a row before it stops (by hand,
#: an operator waits for the answer: not half an hour of retries)
MODEL_SAME_500_LIMIT = 3
#: where the backend says who may delete (for the operator's message)
DELETE_RIGHT_HINT = "the backend allows deleting only to members of one of its DELETE_GROUPS"


class _Mode(enum.Enum):
    """What may be done after a try whose outcome is unknown."""

    SAFE = "safe"  # idempotent (GET, PATCH, isValid, login): just retry
    DELETE = "delete"  # idempotent; a 404 after an unknown outcome means done
    KEYED_CREATE = "keyed"  # POST with a client key: a 409 after an unknown outcome = landed
    UNSAFE = "unsafe"  # POST creating a new record: never repeat blindly


@dataclass
class _Answer:
    status: int
    body: Any
    landed: bool = False  # KEYED_CREATE: 409 after a try that may have been applied


class _NoBody:
    pass


_NOBODY = _NoBody()


def encode_segment(value: Any) -> str:
    """One URL path segment: every ``/`` (and anything else special) encoded."""
    return quote(str(value), safe="")


def _chain(exc: BaseException) -> List[BaseException]:
    """The exception, its args, reasons and causes: where urllib3 hides the real error."""
    seen: List[BaseException] = []
    todo: List[Any] = [exc]
    while todo and len(seen) < 32:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend(item.args)
        for attr in ("reason", "__cause__", "__context__"):
            todo.append(getattr(item, attr, None))
    return seen


def _classify(exc: requests.RequestException) -> str:
    """``"refused"`` (nothing sent), ``"ambiguous"`` (maybe processed) or ``"fatal"``."""
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader,
            requests.exceptions.URLRequired,
        ),
    ):
        return "fatal"
    if isinstance(exc, requests.exceptions.SSLError):
        return "fatal"  # certificate problems do not go away by trying again
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError)):
        return "refused"
    if isinstance(exc, requests.exceptions.ConnectionError):
        for item in _chain(exc):
            if isinstance(
                item,
                (
                    urllib3.exceptions.NewConnectionError,
                    urllib3.exceptions.ConnectTimeoutError,
                    ConnectionRefusedError,
                ),
            ):
                return "refused"
        return "ambiguous"
    return "ambiguous"  # read timeouts, broken answers


def _describe(exc: requests.RequestException) -> str:
    """A short reason for a transport failure (the full chain is very long)."""
    chain = _chain(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout (no answer in time)"
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return "connection refused"
    for item in chain:
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            return "cannot connect: " + str(item).rsplit(": ", 1)[-1]
    for item in chain:
        if isinstance(
            item,
            (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                http.client.IncompleteRead,
            ),
        ):
            return f"connection lost ({type(item).__name__}: {item})"
    return f"{type(exc).__name__}: {exc}"


def _parse_time(value: Any) -> Optional[float]:
    """Epoch seconds of an ISO-8601 text (``Z`` accepted), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


class SciCatClient:
    """One SciCat connection (a keep-alive session) shared by the ingestor's threads.

    ``credentials`` may be :class:`Credentials` (fixed), a
    :class:`CredentialFile` (re-read on change) or ``None``: then
    ``settings.credential_file`` is used if set, else requests go anonymous.
    """

    def __init__(
        self, settings: ClientSettings, credentials: Union[Credentials, CredentialFile, None] = None
    ) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self._headers: Dict[str, str] = dict(settings.headers)
        if credentials is None and settings.credential_file:
            credentials = CredentialFile(settings.credential_file, settings.username)
        self._credentials = credentials
        self._lock = threading.RLock()
        self._token: Optional[str] = None
        self._token_deadline: Optional[float] = None  # time.monotonic() to renew at
        self._login_path = settings.login_path
        self._closed = threading.Event()
        self._rng = random.Random()
        self._session = requests.Session()
        self._session.verify = settings.verify
        #: rights learnt from the backend: "delete:origdatablocks" / "delete:attachments"
        self._rights: Dict[str, bool] = {}
        self._v4_attachments: Optional[bool] = None
        self._warnings: Dict[str, str] = {}
        #: guards only ``_rights`` and ``_warnings``: a service reads them under its
        #: own lock, while the observer (called under ``_lock``) takes that lock,
        #: so sharing ``_lock`` here would invert the lock order
        self._facts_lock = threading.Lock()
        #: told ``(True, "")`` after each answer below 500 and ``(False, reason)`` after
        #: each try that found no working server (no connection, timeout, 5xx), as it
        #: happens: the service's health follows it (see :mod:`scingestor.health`)
        self.observer: Optional[Callable[[bool, str], None]] = None

    # ------------------------------------------------------------------ life
    def _observe(self, reached: bool, reason: str = "") -> None:
        observer = self.observer
        if observer is not None and not self._closed.is_set():
            try:
                observer(reached, reason)
            except Exception:  # noqa: BLE001 - health reporting must not break a request
                logger.debug("SciCat observer failed", exc_info=True)

    def close(self) -> None:
        """Stop waiting retries and close the connections."""
        self._closed.set()
        self._session.close()

    def __enter__(self) -> "SciCatClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SciCatClient({self.url!r}, credentials={self._credentials!r})"

    # ----------------------------------------------------------------- login
    @property
    def logged_in(self) -> bool:
        """True when a token is at hand (it may still be refused by the server)."""
        return self._token is not None

    def login(self) -> None:
        """Log in now (or take the token of the credentials); raise if that fails."""
        with self._lock:
            self._token = None
            self._login_locked()

    def _current_credentials(self) -> Optional[Credentials]:
        source = self._credentials
        if source is None:
            return None
        if isinstance(source, CredentialFile):
            return source.get()
        return source

    def _login_locked(self) -> None:
        """Obtain a token; the caller holds ``self._lock``."""
        creds = self._current_credentials()
        if creds is None or creds.kind == "none":
            raise AuthenticationError(
                "no SciCat credentials configured (set ingestor_credential_file)", url=self.url
            )
        if creds.kind == "token":
            self._token = creds.token
            self._token_deadline = None
            return
        username = creds.username or self.settings.username
        body = {"username": username, "password": creds.password}
        paths = [self._login_path]
        if self._login_path.lower() != FALLBACK_LOGIN_PATH:
            paths.append(FALLBACK_LOGIN_PATH)
        problems: List[str] = []
        for path in paths:
            url = self._url(path)
            started = time.monotonic()
            try:
                answer = self._call("POST", path, body=body, auth=False, mode=_Mode.SAFE)
            except NotFoundError:
                problems.append(f"{url}: no such route (404)")
                continue
            except (AuthenticationError, ForbiddenError, ValidationError) as exc:
                raise AuthenticationError(
                    f"SciCat login as {username!r} at {url} refused ({exc.status}): "
                    f"{'; '.join(exc.messages) or 'wrong user name or password'}",
                    status=exc.status,
                    body=exc.body,
                    method="POST",
                    url=url,
                    messages=exc.messages,
                ) from None
            token, expires_in, created = self._token_of(answer.body)
            if not token:
                problems.append(f"{url}: answered {answer.status} without a token")
                continue
            if path != self._login_path:
                logger.warning(
                    "SciCat login route %s gives no token; using %s instead "
                    "(set scicat_users_login_path: %s)",
                    self._login_path,
                    path,
                    path,
                )
                self._login_path = path
            register_secret(token)
            self._token = token
            self._token_deadline = self._deadline(started, expires_in, created)
            logger.info("Logged in to SciCat at %s as %s", self.url, username)
            return
        raise AuthenticationError(
            f"SciCat login as {username!r} failed: " + "; ".join(problems),
            method="POST",
            url=self.url,
        )

    @staticmethod
    def _token_of(body: Any) -> Tuple[Optional[str], Optional[float], Optional[float]]:
        if not isinstance(body, dict):
            return None, None, None
        token = body.get("access_token") or body.get("id")
        if not isinstance(token, str) or not token:
            return None, None, None
        expires = body.get("expires_in", body.get("ttl"))
        try:
            expires_in = float(expires) if expires is not None else None
        except (TypeError, ValueError):
            expires_in = None
        return token, expires_in, _parse_time(body.get("created"))

    @staticmethod
    def _deadline(
        started: float, expires_in: Optional[float], created: Optional[float]
    ) -> Optional[float]:
        """When to renew: before ``created + expires_in``, on the local monotonic clock."""
        if not expires_in or expires_in <= 0:
            return None
        remaining = expires_in
        if created is not None:
            by_created = created + expires_in - time.time()
            # trust the server's creation time unless the clocks obviously disagree
            if 0 < by_created < remaining:
                remaining = by_created
        margin = min(60.0, 0.1 * remaining)
        return started + remaining - margin

    def _ensure_token(self) -> Optional[str]:
        """The token to send (logging in when needed), ``None`` to go anonymous."""
        with self._lock:
            source = self._credentials
            if source is None:
                return None
            if isinstance(source, CredentialFile) and source.changed():
                self._token = None
            if self._token is not None and (
                self._token_deadline is None or time.monotonic() < self._token_deadline
            ):
                return self._token
            if self._token is not None:
                logger.debug("SciCat token about to expire: logging in again")
            self._token = None
            self._login_locked()
            return self._token

    def _relogin(self, failed_token: Optional[str]) -> bool:
        """After a 401/403: get a fresh token once; False if that cannot help."""
        with self._lock:
            if self._credentials is None:
                return False
            if self._token is not None and self._token != failed_token:
                return True  # another thread renewed it meanwhile
            self._token = None
            creds = self._current_credentials()
            if creds is not None and creds.kind == "token":
                self._token = creds.token
                self._token_deadline = None
                return creds.token != failed_token
            logger.info("SciCat refused the token: logging in again")
            self._login_locked()
            return True

    # -------------------------------------------------------------- requests
    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path  # another API version of the same backend
        return f"{self.url}/{path.lstrip('/')}"

    def _encode(self, body: Any, method: str, url: str) -> Optional[bytes]:
        if isinstance(body, _NoBody):
            return None
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        if len(data) >= MAX_BODY_BYTES:
            raise ValidationError(
                f"{method} {url}: body of {len(data)} bytes refused: SciCat accepts less "
                f"than {MAX_BODY_BYTES} bytes (16 MiB); split it",
                method=method,
                url=url,
                messages=[f"request body too large: {len(data)} bytes"],
            )
        return data

    def _headers_for(self, token: Optional[str], has_body: bool) -> Dict[str, str]:
        headers = dict(self._headers)
        if has_body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _backoff(self, attempt: int, retry_after: Optional[float] = None) -> float:
        base = min(
            self.settings.backoff_max, self.settings.backoff_base * (2.0 ** min(attempt - 1, 60))
        )
        delay = base / 2.0 + self._rng.uniform(0.0, base / 2.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.backoff_max))
        return delay

    @staticmethod
    def _decode(response: requests.Response) -> Tuple[Any, bool]:
        """(decoded body, is JSON); an empty body is ``None``."""
        if not response.content or not response.content.strip():
            return None, True
        try:
            return response.json(), True
        except ValueError:
            return response.text, False

    def _error(self, method: str, url: str, response: requests.Response) -> SciCatError:
        body, _ = self._decode(response)
        messages = parse_error_messages(body)
        status = response.status_code
        reason = response.reason or ""
        detail = "; ".join(messages) if messages else _short(str(body or ""))
        text = redact(f"{method} {url}: {status} {reason}" + (f": {detail}" if detail else ""))
        cls: type = SciCatError
        if status == 400 or status == 413:
            cls = ValidationError
        elif status == 401:
            cls = AuthenticationError
        elif status == 403:
            cls = ForbiddenError
        elif status == 404:
            cls = NotFoundError
        elif status == 409:
            cls = ConflictError
        return cls(text, status=status, body=body, method=method, url=url, messages=messages)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = _NOBODY,
        params: Optional[Dict[str, str]] = None,
        auth: bool = True,
        mode: _Mode = _Mode.SAFE,
        accept_404: bool = False,
        lookup: Optional[Callable[[], Optional[bool]]] = None,
        max_tries: Optional[int] = None,
        same_500_limit: Optional[int] = None,
        expect_5xx: bool = False,
    ) -> _Answer:
        """Send one logical request, with retries, re-login and error mapping.

        *lookup* answers "has this request's effect already happened?"
        (``None``: cannot tell).  It runs after a lost answer or a 5xx,
        before the next try: a DELETE whose record is gone is done; a keyed
        POST whose record exists landed (after a lost answer) or was there
        already (:class:`ConflictError`, as a 409 would say).

        *same_500_limit*: after that many 500 answers in a row with the same
        body the request is not transient (the backend fails on it every
        time): a :class:`SciCatError` with the server's message, no more tries.
        """
        url = self._url(path)
        data = self._encode(body, method, url)
        max_tries = self.settings.max_tries if max_tries is None else max(1, max_tries)
        relogged = False
        maybe_applied = False  # an earlier try may have been processed
        lost = False  # an earlier try's answer never came
        same_500: Tuple[int, str] = (0, "")  # 500 answers in a row, with this body
        attempt = 0
        last_error = ""
        last_status: Optional[int] = None
        while True:
            if self._closed.is_set():
                raise self._unreachable(method, url, "client closed", attempt, last_status)
            token = self._ensure_token() if auth else None
            headers = self._headers_for(token, data is not None)
            attempt += 1
            started = time.monotonic()
            retry_after: Optional[float] = None
            try:
                response = self._session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    headers=headers,
                    timeout=self.settings.timeout,
                    verify=self.settings.verify,
                )
            except requests.RequestException as exc:
                elapsed = time.monotonic() - started
                kind = _classify(exc)
                last_error = redact(_describe(exc))
                last_status = None
                logger.debug("%s %s -> %s (%.3f s)", method, url, type(exc).__name__, elapsed)
                self._observe(False, last_error)
                if kind == "fatal":
                    raise self._unreachable(method, url, last_error, attempt, None) from None
                if kind == "ambiguous":
                    if mode is _Mode.UNSAFE:
                        err = SciCatAmbiguousError(
                            redact(
                                f"{method} {url}: the request was sent but its answer was "
                                f"lost ({last_error}); it may have been applied: check "
                                f"before sending it again"
                            ),
                            method=method,
                            url=url,
                        )
                        err.attempts = attempt
                        raise err from None
                    maybe_applied = True
                    lost = True
            else:
                elapsed = time.monotonic() - started
                status = response.status_code
                logger.debug("%s %s -> %s (%.3f s)", method, url, status, elapsed)
                # a 500 the request expects, or that a look-up settles, is the
                # backend answering; 502-504 (a proxy's) never are
                self._observe(
                    status < 500 or (status == 500 and (expect_5xx or lookup is not None)),
                    f"{status} {response.reason or ''}".strip(),
                )
                if 200 <= status < 300:
                    decoded, is_json = self._decode(response)
                    if is_json or method != "GET":
                        if not is_json:
                            raise SciCatError(
                                redact(
                                    f"{method} {url}: {status} answer is not JSON: "
                                    f"{_short(str(decoded))}"
                                ),
                                status=status,
                                body=decoded,
                                method=method,
                                url=url,
                            )
                        return _Answer(status, decoded)
                    # a proxy page instead of the backend's JSON: try again
                    last_status = status
                    last_error = f"{status} answer is not JSON"
                elif status in _RETRY_STATUSES:
                    last_status = status
                    decoded, _ = self._decode(response)
                    last_error = redact(
                        f"{status} {response.reason or ''}: {_short(str(decoded or ''))}"
                    ).strip()
                    maybe_applied = maybe_applied or status != 429
                    lost = lost or status in (502, 504)  # a proxy lost the backend's answer
                    if mode is _Mode.UNSAFE and status in (502, 504):
                        # sending it again blindly could make a duplicate: the
                        # caller looks first (uploads match what the dataset holds)
                        err = SciCatAmbiguousError(
                            redact(
                                f"{method} {url}: {last_error}: a proxy lost the answer; "
                                f"it may have been applied: check before sending it again"
                            ),
                            method=method,
                            url=url,
                        )
                        err.attempts = attempt
                        raise err from None
                    text = _short(str(decoded or ""))
                    same_500 = (
                        (same_500[0] + 1, text)
                        if status == 500 and (same_500[0] == 0 or same_500[1] == text)
                        else ((1, text) if status == 500 else (0, ""))
                    )
                    header = response.headers.get("Retry-After")
                    if header and header.strip().isdigit():
                        retry_after = float(header.strip())
                elif status in (401, 403) and auth and not relogged:
                    relogged = True
                    if self._relogin(token):
                        logger.info(
                            "%s %s answered %s: retrying with a new token", method, url, status
                        )
                        continue
                    raise self._error(method, url, response)
                elif status == 404 and accept_404:
                    decoded, _ = self._decode(response)
                    return _Answer(status, decoded)
                elif status == 404 and mode is _Mode.DELETE and maybe_applied:
                    return _Answer(status, None)
                elif status == 409 and mode is _Mode.KEYED_CREATE and maybe_applied:
                    decoded, _ = self._decode(response)
                    return _Answer(status, decoded, landed=True)
                else:
                    raise self._error(method, url, response)
            if lookup is not None and (lost or (last_status or 0) >= 500):
                answer = self._settled(method, url, mode, lookup, lost, last_status, last_error)
                if answer is not None:
                    return answer
            if same_500_limit and same_500[0] >= same_500_limit:
                messages = parse_error_messages(same_500[1]) or [same_500[1]]
                raise SciCatError(
                    redact(
                        f"{method} {url}: answered 500 {same_500[0]} times the same way, so not "
                        f"a passing fault; the server says: {'; '.join(messages)}"
                    ),
                    status=500,
                    body=same_500[1],
                    method=method,
                    url=url,
                    messages=messages,
                )
            if attempt >= max_tries:
                raise self._unreachable(method, url, last_error, attempt, last_status)
            delay = self._backoff(attempt, retry_after)
            logger.warning(
                "SciCat %s %s failed (try %d of %d): %s; retrying in %.2f s",
                method,
                url,
                attempt,
                max_tries,
                last_error,
                delay,
            )
            if self._closed.wait(delay):
                raise self._unreachable(method, url, "client closed", attempt, last_status)

    def _settled(
        self,
        method: str,
        url: str,
        mode: _Mode,
        lookup: Callable[[], Optional[bool]],
        lost: bool,
        status: Optional[int],
        last_error: str,
    ) -> Optional[_Answer]:
        """Look the effect of a failed try up: an answer if nothing is left to do."""
        try:
            done = lookup()
        except SciCatError as exc:  # the look-up failed too: the retry decides
            logger.debug("look-up after %s %s failed: %s", method, url, exc)
            return None
        if not done:
            return None
        if mode is _Mode.DELETE:
            logger.info(
                "%s %s: %s, but the record is gone: done",
                method,
                url,
                "answer lost" if lost and not status else last_error,
            )
            return _Answer(200, None, landed=True)
        if mode is _Mode.KEYED_CREATE:
            if lost:
                return _Answer(409, None, landed=True)
            text = redact(
                f"{method} {url}: the record already exists (the backend answered "
                f"{last_error or status} instead of 409 Conflict)"
            )
            raise ConflictError(text, status=status, method=method, url=url)
        return None

    @staticmethod
    def _unreachable(
        method: str, url: str, last_error: str, attempts: int, status: Optional[int]
    ) -> SciCatUnreachable:
        err = SciCatUnreachable(
            redact(
                f"SciCat unreachable: {method} {url} failed after {attempts} "
                f"tr{'y' if attempts == 1 else 'ies'}: {last_error}"
            ),
            status=status,
            method=method,
            url=url,
        )
        err.attempts = attempts
        err.last_error = last_error  # type: ignore[attr-defined]
        return err

    # ------------------------------------------------------------- endpoints
    def _dataset_path(self, pid: str, *rest: str) -> str:
        return "/".join([self.settings.datasets_path, encode_segment(pid), *rest])

    def _attachments_path(self, pid: str) -> str:
        template = self.settings.attachments_path
        if "{pid}" in template:
            return template.replace("{pid}", encode_segment(pid))
        return f"{template}/{encode_segment(pid)}"

    def _exists(self, path: str) -> Optional[bool]:
        """Quick look-up (few tries): True/False, ``None`` when it cannot tell."""
        try:
            answer = self._call("GET", path, accept_404=True, max_tries=_LOOKUP_TRIES)
        except (ForbiddenError, SciCatUnreachable):
            return None
        if answer.status == 404:
            return False
        return bool(answer.body) if isinstance(answer.body, (dict, list)) else None

    def _lists_id(self, path: str, record_id: str) -> Optional[bool]:
        """Does the list at *path* hold a record with id *record_id*? (few tries)"""
        try:
            body = self._call("GET", path, max_tries=_LOOKUP_TRIES).body
        except (ForbiddenError, NotFoundError, SciCatUnreachable):
            return None
        if not isinstance(body, list):
            return None
        return any(
            record_id in (item.get("_id"), item.get("id"), item.get("aid"))
            for item in body
            if isinstance(item, dict)
        )

    def get_dataset(self, pid: str) -> Optional[dict]:
        """The dataset, or ``None`` when SciCat does not know the pid (404)."""
        path = self._dataset_path(pid)
        answer = self._call("GET", path, accept_404=True)
        if answer.status == 404 or not answer.body:
            return None
        return self._shaped(answer.body, dict, "GET", path, "a dataset object")

    def dataset_exists(self, pid: str) -> bool:
        """Existence check by pid (a 403 after re-login raises ForbiddenError)."""
        return self.get_dataset(pid) is not None

    def _create(
        self,
        path: str,
        body: Any,
        key: Optional[str],
        fetch: Callable[[str], Optional[dict]],
        record_path: Optional[Callable[[str], str]] = None,
        same_500_limit: Optional[int] = None,
    ) -> dict:
        """POST a new record; with a client ``key`` a lost answer is retried safely.

        *record_path* gives the record's own route from its key: a 5xx (or
        a lost answer) is then looked up there before the next try.
        """
        mode = _Mode.KEYED_CREATE if key else _Mode.UNSAFE
        lookup = None
        if key and record_path is not None:
            where = record_path(key)
            lookup = lambda: self._exists(where)  # noqa: E731
        answer = self._call(
            "POST", path, body=body, mode=mode, lookup=lookup, same_500_limit=same_500_limit
        )
        if answer.landed and key:
            logger.warning(
                "POST %s for %s: answer lost, but the record exists: "
                "taking the first try as applied",
                self._url(path),
                key,
            )
            record = fetch(key)
            if record is None:
                raise ConflictError(
                    f"POST {self._url(path)}: {key} conflicts (409) but cannot be read back",
                    status=409,
                    body=answer.body,
                    method="POST",
                    url=self._url(path),
                    messages=parse_error_messages(answer.body),
                )
            return record
        return answer.body

    def _shaped(self, body: Any, kind: type, method: str, path: str, what: str) -> Any:
        """*body* if it is a *kind*, else a SciCatError (an empty answer too)."""
        if isinstance(body, kind):
            return body
        url = self._url(path)
        raise SciCatError(
            redact(f"{method} {url}: the answer is not {what}: {_short(json.dumps(body))}"),
            body=body,
            method=method,
            url=url,
        )

    @staticmethod
    def _as_dict(body: Union[dict, str, bytes]) -> Optional[dict]:
        if isinstance(body, dict):
            return body
        try:
            decoded = json.loads(body)
        except (TypeError, ValueError):
            return None
        return decoded if isinstance(decoded, dict) else None

    def post_dataset(self, body: Union[dict, str]) -> dict:
        """Create a dataset; a client ``pid`` makes a lost answer safe to retry."""
        return self._post_dataset_to(self.settings.datasets_path, body)

    def _post_dataset_to(
        self, path: str, body: Union[dict, str], same_500_limit: Optional[int] = None
    ) -> dict:
        as_dict = self._as_dict(body)
        pid = as_dict.get("pid") if as_dict else None
        key = pid if isinstance(pid, str) and pid else None
        return self._create(path, body, key, self.get_dataset, self._dataset_path, same_500_limit)

    def patch_dataset(self, pid: str, body: dict) -> dict:
        """Update top-level fields of a dataset (idempotent, so retried)."""
        return self._call("PATCH", self._dataset_path(pid), body=body).body

    def is_valid_dataset(self, body: dict) -> dict:
        """``{"valid": bool, "error"?: text}`` (no whitelist check on the server)."""
        return self._call(
            "POST", f"{self.settings.datasets_path}/isValid", body=body, mode=_Mode.SAFE
        ).body

    def post_origdatablock(self, body: dict) -> dict:
        """Create an origdatablock by the standalone route (``datasetId`` required)."""
        if not isinstance(body, dict) or not body.get("datasetId"):
            url = self._url(self.settings.datablocks_path)
            raise ValidationError(
                f"POST {url}: origdatablock without datasetId",
                method="POST",
                url=url,
                messages=["datasetId: datasetId is required"],
            )
        return self._call("POST", self.settings.datablocks_path, body=body, mode=_Mode.UNSAFE).body

    def post_dataset_origdatablock(self, pid: str, body: dict) -> dict:
        """Create an origdatablock by the nested route (no ``datasetId``/group keys)."""
        return self._call(
            "POST", self._dataset_path(pid, "OrigDatablocks"), body=body, mode=_Mode.UNSAFE
        ).body

    def get_origdatablocks(self, pid: str) -> list:
        """The dataset's origdatablocks (what to check after an ambiguous POST).

        An answer that is no list is an error, never "no blocks": the blocks
        would be posted again.
        """
        path = self._dataset_path(pid, "OrigDatablocks")
        body = self._call("GET", path).body
        return self._shaped(body, list, "GET", path, "a list of origdatablocks")

    def delete_origdatablock(self, block_id: str, dataset_pid: Optional[str] = None) -> Any:
        """Delete one origdatablock (a 404 after a lost answer counts as done).

        With *dataset_pid* a failed try (lost answer, 5xx: backend 4.5.0
        answers 500 for a block already gone) is looked up in the dataset's
        blocks first: a gone block is done.  A 403 is remembered (see
        :meth:`may_delete_origdatablocks`) and raised.
        """
        record = f"{self.settings.datablocks_path}/{encode_segment(block_id)}"
        if dataset_pid:
            listing = self._dataset_path(dataset_pid, "OrigDatablocks")

            def lookup() -> Optional[bool]:
                held = self._lists_id(listing, block_id)
                return None if held is None else not held
        else:

            def lookup() -> Optional[bool]:
                # backend 4.5.0 answers a gone block's GET with 403, not 404:
                # only a 404 tells here
                return True if self._exists(record) is False else None

        try:
            return self._call("DELETE", record, mode=_Mode.DELETE, lookup=lookup).body
        except ForbiddenError:
            self._learn("delete:origdatablocks", False)
            raise

    # ---------------------------------------------------------------- rights
    @property
    def account_name(self) -> str:
        """The user name the client logs in with (for messages)."""
        creds = None
        try:
            creds = self._current_credentials()
        except Exception:  # an unreadable credential file: the setting names it
            pass
        return creds.username if creds is not None and creds.username else self.settings.username

    def learn_right(self, right: str, allowed: bool) -> None:
        """Remember a right seen in an answer (a 403 is learnt by the client itself)."""
        with self._facts_lock:
            self._rights[right] = allowed

    _learn = learn_right

    def known_right(self, right: str) -> Optional[bool]:
        """``"delete:origdatablocks"`` / ``"delete:attachments"``: learnt value or None."""
        with self._facts_lock:
            return self._rights.get(right)

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
        probe = f"{self.settings.datablocks_path}/scingestor-rights-probe-{uuid.uuid4().hex}"
        try:
            self._call("DELETE", probe, mode=_Mode.SAFE, max_tries=1, expect_5xx=True)
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
        self._learn("delete:origdatablocks", allowed)
        return allowed

    def warn_once(self, key: str, text: str) -> bool:
        """Log *text* as a warning the first time *key* is seen; True then.

        The texts stay in :attr:`warnings` for the client's lifetime, so a
        service can show them (Status, LastError).
        """
        with self._facts_lock:
            if key in self._warnings:
                return False
            self._warnings[key] = text
        logger.warning("%s", text)
        return True

    @property
    def warnings(self) -> List[str]:
        """Conditions the operator should know about, once each (oldest first)."""
        with self._facts_lock:
            return list(self._warnings.values())

    def post_attachment(self, pid: str, body: dict) -> dict:
        """Attach e.g. a thumbnail to a dataset."""
        return self._call("POST", self._attachments_path(pid), body=body, mode=_Mode.UNSAFE).body

    def get_attachments(self, pid: str) -> list:
        """The dataset's attachments (an answer that is no list is an error)."""
        path = self._attachments_path(pid)
        body = self._call("GET", path).body
        return self._shaped(body, list, "GET", path, "a list of attachments")

    def _v4_url(self) -> Optional[str]:
        """The API v4 base next to a ``…/api/v3`` URL (``None`` for other URLs)."""
        head, sep, tail = self.url.rpartition("/")
        return f"{head}/v4" if sep and tail.lower() == "v3" else None

    def attachments_v4(self, attachment_id: Optional[str] = None) -> bool:
        """Does the backend have ``/api/v4/attachments/{aid}``?  Detected once.

        Backend 4.5.0's v3 ``DELETE Datasets/{pid}/Attachments/{aid}``
        deletes the dataset's oldest attachment whatever ``aid`` is; the v4
        route deletes by id.  Detection reads an existing attachment
        (*attachment_id*) by the v4 route: 200 means the route is there.
        """
        with self._lock:
            if self._v4_attachments is not None:
                return self._v4_attachments
        base = self._v4_url()
        if base is None:
            found: Optional[bool] = False
        elif attachment_id is None:
            return False  # nothing to ask with: not remembered
        else:
            found = self._exists(f"{base}/attachments/{encode_segment(attachment_id)}")
            if found is None:
                return False  # no clear answer: ask again next time
        logger.info(
            "SciCat attachments are deleted by the %s route", "v4 (by id)" if found else "v3"
        )
        with self._lock:
            self._v4_attachments = bool(found)
        return bool(found)

    def delete_attachment(self, pid: str, attachment_id: str) -> Any:
        """Delete one attachment of a dataset: by the v4 route where the backend
        has it, else by the v3 one (which on backend 4.5.0 deletes the oldest
        attachment instead: the caller must check what is left).

        A failed try is looked up before the next; a 403 is remembered
        (``known_right("delete:attachments")``) and raised.
        """
        base = self._v4_url()
        if base is not None and self.attachments_v4(attachment_id):
            path = f"{base}/attachments/{encode_segment(attachment_id)}"

            def lookup() -> Optional[bool]:
                held = self._exists(path)
                return None if held is None else not held
        else:
            path = f"{self._attachments_path(pid)}/{encode_segment(attachment_id)}"
            listing = self._attachments_path(pid)

            def lookup() -> Optional[bool]:
                held = self._lists_id(listing, attachment_id)
                return None if held is None else not held

        try:
            return self._call("DELETE", path, mode=_Mode.DELETE, lookup=lookup).body
        except ForbiddenError:
            self._learn("delete:attachments", False)
            raise

    def get_proposal(self, proposal_id: str) -> Optional[dict]:
        """The proposal, or ``None`` when unknown (404)."""
        answer = self._call(
            "GET", f"{self.settings.proposals_path}/{encode_segment(proposal_id)}", accept_404=True
        )
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

    def delete_dataset(self, pid: str) -> Any:
        """Delete a dataset (only its own record: blocks and attachments stay).

        Needs the backend's ``DELETE_GROUPS``; the ingestion never deletes
        datasets, the preflight check removes its throw-away one with it.
        A failed try is looked up before the next (a gone dataset is done).
        """
        path = self._dataset_path(pid)

        def lookup() -> Optional[bool]:
            held = self._exists(path)
            return None if held is None else not held

        return self._call("DELETE", path, mode=_Mode.DELETE, lookup=lookup).body

    def find_datasets(self, where: dict, limit: Optional[int] = None) -> list:
        """Datasets matching a loopback ``where`` filter (``[]`` if none)."""
        query: Dict[str, Any] = {"where": where}
        if limit is not None:
            query["limits"] = {"limit": int(limit)}
        body = self._call(
            "GET", self.settings.datasets_path, params={"filter": json.dumps(query)}
        ).body
        return body if isinstance(body, list) else []

    def post_model(self, model: str, body: Union[dict, str]) -> dict:
        """POST to ``{url}/{model}`` (``scicat_ingest -m``).

        A 500 is never retried for long: a record with a key (``sampleId``,
        ``proposalId``, ``pid``) is looked up and reported as already there
        (:class:`ConflictError`); otherwise three 500 answers alike stop it
        with the server's message.

        ``RawDatasets``/``DerivedDatasets`` no longer exist in API v3: they go
        to the datasets route with ``type`` set (unless the body has one).
        """
        name = model.strip().strip("/")
        legacy = _LEGACY_DATASET_MODELS.get(name.lower())
        if legacy is not None:
            as_dict = self._as_dict(body)
            if as_dict is None:
                url = self._url(name)
                raise ValidationError(
                    f"POST {url}: the {name} body is not a JSON object",
                    method="POST",
                    url=url,
                    messages=["body is not a JSON object"],
                )
            if "type" not in as_dict:
                as_dict = dict(as_dict, type=legacy)
                body = as_dict
            logger.info(
                "Model %s: posting to %s (type %s)",
                name,
                self.settings.datasets_path,
                as_dict.get("type"),
            )
            return self._post_dataset_to(self.settings.datasets_path, body, MODEL_SAME_500_LIMIT)
        lower = name.lower()
        if lower in ("datasets", self.settings.datasets_path.lower()):
            return self._post_dataset_to(name, body, MODEL_SAME_500_LIMIT)
        if lower in ("proposals", self.settings.proposals_path.lower()):
            as_dict = self._as_dict(body)
            key = as_dict.get("proposalId") if as_dict else None
            return self._create(
                name,
                body,
                key if isinstance(key, str) and key else None,
                self.get_proposal,
                lambda k: f"{self.settings.proposals_path}/{encode_segment(k)}",
                MODEL_SAME_500_LIMIT,
            )
        if lower == "samples":
            # backend 4.5.0 answers an existing sampleId with 500, not 409
            as_dict = self._as_dict(body)
            key = as_dict.get("sampleId") if as_dict else None
            return self._create(
                name,
                body,
                key if isinstance(key, str) and key else None,
                self.get_sample,
                lambda k: f"{name}/{encode_segment(k)}",
                MODEL_SAME_500_LIMIT,
            )
        return self._call(
            "POST", name, body=body, mode=_Mode.UNSAFE, same_500_limit=MODEL_SAME_500_LIMIT
        ).body

    def get_sample(self, sample_id: str) -> Optional[dict]:
        """The sample, or ``None`` when unknown (404)."""
        answer = self._call("GET", f"Samples/{encode_segment(sample_id)}", accept_404=True)
        if answer.status == 404 or not isinstance(answer.body, dict):
            return None
        return answer.body

    def whoami(self) -> dict:
        """The logged-in user (``username``, ``currentGroups``): proves the token works.

        An empty list from an anonymous query looks like "nothing found"; a
        caller that must be sure its token is accepted can ask this first.
        Backend 4.5.0 answers a caller it does not know with 200 and no body:
        that is ``{}`` here (not logged in); with credentials, a token the
        backend no longer knows gets one re-login first.
        """
        token = self._ensure_token()
        body = self._call("GET", "auth/whoami").body
        if not (isinstance(body, dict) and body) and token is not None:
            if self._relogin(token):
                body = self._call("GET", "auth/whoami").body
        return body if isinstance(body, dict) else {}

    # ---------------------------------------------------------------- health
    def ping(self, timeout: Optional[float] = None) -> float:
        """Round-trip time of one cheap request; :class:`SciCatUnreachable` if none.

        One try, no login: any answer below 500 shows a working backend.
        """
        url = self._url(self.settings.datasets_path)
        params = {"filter": json.dumps({"limits": {"limit": 1}})}
        started = time.monotonic()
        try:
            response = self._session.get(
                url,
                params=params,
                headers=self._headers_for(self._token, False),
                timeout=timeout if timeout is not None else min(self.settings.timeout, 10.0),
                verify=self.settings.verify,
            )
        except requests.RequestException as exc:
            self._observe(False, redact(_describe(exc)))
            raise self._unreachable("GET", url, redact(_describe(exc)), 1, None) from None
        elapsed = time.monotonic() - started
        logger.debug("GET %s -> %s (%.3f s)", url, response.status_code, elapsed)
        self._observe(
            response.status_code < 500, f"{response.status_code} {response.reason or ''}".strip()
        )
        if response.status_code >= 500:
            raise self._unreachable(
                "GET", url, f"{response.status_code} {response.reason}", 1, response.status_code
            )
        return elapsed

    def reachable(self, timeout: Optional[float] = None) -> bool:
        """True when SciCat answers (see :meth:`ping`)."""
        try:
            self.ping(timeout)
        except SciCatUnreachable:
            return False
        return True
