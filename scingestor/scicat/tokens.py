"""The token keeper of the SciCat client: log in, renew, fall back, under its own lock.

The backend as it really answers: ``Users/login`` may answer 201 with an
empty body, so a login falls back to ``auth/login`` when the configured
route gives no token; a token past its lifetime is not refused with a 401
but makes requests anonymous, so the keeper renews it a little before the
deadline the login answer gave.  The keeper sends nothing itself: it is
handed the client's "POST without a token" so a login is retried like any
request, and it holds its own lock so that one login serves every thread.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional, Tuple, Union

from ..errors import AuthenticationError, ForbiddenError, NotFoundError, ValidationError
from ..redact import protect_logger, register_secret
from .credentials import CredentialFile, Credentials

logger = protect_logger(logging.getLogger(__name__))

FALLBACK_LOGIN_PATH = "auth/login"
#: logins tried when every route answers without a token (an empty or garbled 2xx)
LOGIN_TRIES = 3
LOGIN_RETRY_DELAY = 0.2
NO_TOKEN = "without a token"

#: ``post(path, body) -> (url, status, decoded body)``: a login request, no token
LoginPost = Callable[[str, dict], Tuple[str, int, Any]]


def parse_time(value: Any) -> Optional[float]:
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


def token_of(body: Any) -> Tuple[Optional[str], Optional[float], Optional[float]]:
    """(token, lifetime in seconds, creation time) of a login answer."""
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
    return token, expires_in, parse_time(body.get("created"))


def renewal_deadline(
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


class TokenKeeper:
    """The token of one client: obtained when needed, renewed, replaced after a refusal.

    ``fresh(token)`` tells whether *token* came from a login made for the
    try that used it (nobody sent it before): a refusal of such a token
    means a missing right, not an expired token.
    """

    def __init__(
        self,
        credentials: Union[Credentials, CredentialFile, None],
        login_path: str,
        username: str,
        post: LoginPost,
        url: str = "",
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.login_path = login_path
        self._username = username
        self._post = post
        self.lock = threading.RLock()
        self.token: Optional[str] = None
        self._deadline: Optional[float] = None  # time.monotonic() to renew at
        self._logged_in_at = float("-inf")  # time.monotonic() of the last login
        self._uses = 0  # tries that sent the current token

    def current_credentials(self) -> Optional[Credentials]:
        """The credentials as they are now (a credential file is re-read on change)."""
        source = self.credentials
        if source is None:
            return None
        if isinstance(source, CredentialFile):
            return source.get()
        return source

    def take(self) -> Optional[str]:
        """The token to send (logging in when needed; ``None``: anonymous), counted
        as one more use (see :meth:`fresh`)."""
        with self.lock:
            token = self.ensure()
            self._uses += 1
            return token

    def fresh(self, token: Optional[str], since: float) -> bool:
        """Was *token* obtained by a login after *since* (``time.monotonic()`` when
        the request began) and sent by one try only, the one just answered?
        Then its refusal is the account's rights, not an expired token."""
        with self.lock:
            return (
                token is not None
                and token == self.token
                and self._uses == 1
                and self._logged_in_at >= since
            )

    def ensure(self) -> Optional[str]:
        """The token to send (logging in when needed), ``None`` to go anonymous."""
        with self.lock:
            source = self.credentials
            if source is None:
                return None
            if isinstance(source, CredentialFile) and source.changed():
                self.token = None
            if self.token is not None and (
                self._deadline is None or time.monotonic() < self._deadline
            ):
                return self.token
            if self.token is not None:
                logger.debug("SciCat token about to expire: logging in again")
            self.token = None
            self.login()
            return self.token

    def relogin(self, failed_token: Optional[str]) -> bool:
        """After a 401/403: get a fresh token once; False if that cannot help."""
        with self.lock:
            if self.credentials is None:
                return False
            if self.token is not None and self.token != failed_token:
                return True  # another thread renewed it meanwhile
            self.token = None
            creds = self.current_credentials()
            if creds is not None and creds.kind == "token":
                self.token = creds.token
                self._deadline = None
                return creds.token != failed_token
            logger.info("SciCat refused the token: logging in again")
            self.login()
            return True

    def login(self) -> None:
        """Obtain a token (the configured route, then the fallback); raise if none."""
        with self.lock:
            creds = self.current_credentials()
            if creds is None or creds.kind == "none":
                raise AuthenticationError(
                    "no SciCat credentials configured (set ingestor_credential_file)",
                    url=self.url,
                )
            if creds.kind == "token":
                self.token = creds.token
                self._deadline = None
                return
            username = creds.username or self._username
            paths = [self.login_path]
            if self.login_path.lower() != FALLBACK_LOGIN_PATH:
                paths.append(FALLBACK_LOGIN_PATH)
            problems: List[str] = []
            for attempt in range(LOGIN_TRIES):
                problems = []
                for path in paths:
                    if self._login_at(path, username, creds.password or "", problems):
                        return
                if not all(NO_TOKEN in problem for problem in problems):
                    break  # a route missing: no retry helps
                # a 2xx without a token on every route is no refusal: a proxy's
                # or a restarting backend's empty answer passes (issue 22)
                time.sleep(LOGIN_RETRY_DELAY * 2**attempt)
            raise AuthenticationError(
                f"SciCat login as {username!r} failed: " + "; ".join(problems),
                method="POST",
                url=self.url,
            )

    def _login_at(self, path: str, username: str, password: str, problems: List[str]) -> bool:
        started = time.monotonic()
        try:
            url, status, body = self._post(path, {"username": username, "password": password})
        except NotFoundError as exc:
            problems.append(f"{exc.url}: no such route (404)")
            return False
        except (AuthenticationError, ForbiddenError, ValidationError) as exc:
            raise AuthenticationError(
                f"SciCat login as {username!r} at {exc.url} refused ({exc.status}): "
                f"{'; '.join(exc.messages) or 'wrong user name or password'}",
                status=exc.status,
                body=exc.body,
                method="POST",
                url=exc.url,
                messages=exc.messages,
            ) from None
        token, expires_in, created = token_of(body)
        if not token:
            problems.append(f"{url}: answered {status} {NO_TOKEN}")
            return False
        if path != self.login_path:
            logger.warning(
                "SciCat login route %s gives no token; using %s instead "
                "(set scicat_users_login_path: %s)",
                self.login_path,
                path,
                path,
            )
            self.login_path = path
        register_secret(token)
        self.token = token
        self._uses = 0
        self._logged_in_at = started
        self._deadline = renewal_deadline(started, expires_in, created)
        logger.info("Logged in to SciCat at %s as %s", self.url, username)
        return True
