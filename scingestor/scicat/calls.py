"""One logical SciCat request: a short loop of tries over the retry policy.

:class:`Caller` owns the parts (transport, token keeper, learnt rights)
and strings tries together: send, ask the policy what the outcome means,
act on its step.  The endpoints (:mod:`.client`) say only what to send and
in which :class:`~.retry.Mode`, and how its effect can be looked up.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

import requests

from ..errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SciCatAmbiguousError,
    SciCatError,
    SciCatFailing,
    SciCatUnreachable,
)
from ..redact import protect_logger, redact
from .credentials import CredentialFile, Credentials
from .messages import parse_error_messages
from .retry import Action, Mode, Outcome, RetryPolicy, Step
from .rights import LearntRights
from .settings import ClientSettings
from .tokens import TokenKeeper
from .transport import NOBODY, Failure, Transport, decode, error_for, short

logger = protect_logger(logging.getLogger(__name__))

#: tries of a look-up made before retrying (it must not take the retry's time)
LOOKUP_TRIES = 2

#: "has this request's effect already happened?" (``None``: cannot tell)
LookUp = Callable[[], Optional[bool]]


@dataclass
class Answer:
    """A request's result: status, decoded body, and whether an earlier try landed."""

    status: int
    body: Any
    landed: bool = False


def _gave_up(
    kind: type,
    text: str,
    method: str,
    url: str,
    last_error: str,
    attempts: int,
    status: Optional[int],
) -> Any:
    """An error of *kind* for a request given up after *attempts* tries (secrets redacted)."""
    err = kind(redact(text), status=status, method=method, url=url)
    err.attempts = attempts
    err.last_error = last_error
    return err


def unreachable(
    method: str, url: str, last_error: str, attempts: int, status: Optional[int]
) -> SciCatUnreachable:
    """The error for a request that found no working server after *attempts* tries."""
    text = (
        f"SciCat unreachable: {method} {url} failed after {attempts} "
        f"tr{'y' if attempts == 1 else 'ies'}: {last_error}"
    )
    return _gave_up(SciCatUnreachable, text, method, url, last_error, attempts, status)


def failing(
    method: str, url: str, last_error: str, attempts: int, status: Optional[int]
) -> SciCatFailing:
    """The error for a request SciCat answered, but with failures, *attempts* times."""
    text = (
        f"{method} {url}: {last_error} (SciCat answered badly {attempts} "
        f"time{'' if attempts == 1 else 's'}; it may pass)"
    )
    return _gave_up(SciCatFailing, text, method, url, last_error, attempts, status)


def _outcome(answer: "requests.Response | Failure", fresh: bool) -> Outcome:
    if isinstance(answer, Failure):
        return Outcome(failure=answer.kind, text=answer.reason)
    decoded, is_json = decode(answer)
    header = answer.headers.get("Retry-After")
    retry_after = float(header.strip()) if header and header.strip().isdigit() else None
    text = short(str(decoded or ""))
    return Outcome(
        answer.status_code, "", is_json, text, retry_after, empty=decoded is None, fresh=fresh
    )


def _reason(answer: "requests.Response | Failure", outcome: Outcome) -> str:
    """The try's failure as a log line shows it."""
    if isinstance(answer, Failure):
        return answer.reason
    if 200 <= answer.status_code < 300:
        if not outcome.json:
            return redact(f"{answer.status_code} answer is not JSON: {outcome.text}")
        return f"{answer.status_code} answer is empty, not what SciCat sends"
    return redact(f"{answer.status_code} {answer.reason or ''}: {outcome.text}").strip()


class Caller:
    """The client's parts and its request loop (see :class:`~.client.SciCatClient`)."""

    def __init__(
        self, settings: ClientSettings, credentials: Union[Credentials, CredentialFile, None] = None
    ) -> None:
        self.settings = settings
        self.transport = Transport(settings)
        self.url = self.transport.url
        if credentials is None and settings.credential_file:
            credentials = CredentialFile(settings.credential_file, settings.username)
        self.tokens = TokenKeeper(
            credentials, settings.login_path, settings.username, self._login_post, self.url
        )
        self.rights = LearntRights()
        self._closed = threading.Event()
        self._rng = random.Random()
        #: told ``(True, "")`` after each answer below 500 and ``(False, reason)`` after
        #: each try that found no working server (no connection, timeout, 5xx), as it
        #: happens: the service's health follows it (see :mod:`scingestor.health`)
        self.observer: Optional[Callable[[bool, str], None]] = None

    @property
    def _session(self) -> requests.Session:
        return self.transport.session

    def _observe(self, reached: bool, reason: str = "") -> None:
        observer = self.observer
        if observer is not None and not self._closed.is_set():
            try:
                observer(reached, reason)
            except Exception:  # noqa: BLE001 - health reporting must not break a request
                logger.debug("SciCat observer failed", exc_info=True)

    def _login_post(self, path: str, body: dict) -> Any:
        answer = self._call("POST", path, body=body, auth=False, mode=Mode.SAFE)
        return self.transport.url_of(path), answer.status, answer.body

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = NOBODY,
        params: Optional[Dict[str, str]] = None,
        mode: Mode = Mode.SAFE,
    ) -> Any:
        """One request under the client's rules, its decoded answer (for tools and
        tests that need a route the endpoints do not cover)."""
        return self._call(method, path, body=body, params=params, mode=mode).body

    # -------------------------------------------------------------- the loop
    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = NOBODY,
        params: Optional[Dict[str, str]] = None,
        auth: bool = True,
        mode: Mode = Mode.SAFE,
        accept_404: bool = False,
        lookup: Optional[LookUp] = None,
        max_tries: Optional[int] = None,
        same_500_limit: Optional[int] = None,
        expect_5xx: bool = False,
    ) -> Answer:
        """Send one logical request: tries as the retry policy says, then its answer.

        *lookup* runs, when the policy says so, before the next try: a DELETE
        whose record is gone is done; a keyed POST whose record exists landed
        (after a lost answer) or was there already (:class:`ConflictError`).
        *expect_5xx*: a 500 is the backend answering (for the health observer).
        """
        url = self.transport.url_of(path)
        data = self.transport.encode(body, method, url)
        policy = self._policy(method, mode, max_tries, auth, accept_404, lookup, same_500_limit)
        began = time.monotonic()
        reason = ""
        while True:
            if self._closed.is_set():
                raise unreachable(method, url, "client closed", policy.attempts, None)
            token = self.tokens.take() if auth else None
            answer = self.transport.send(method, url, data=data, params=params, token=token)
            outcome = _outcome(answer, self.tokens.fresh(token, began))
            reason = _reason(answer, outcome)
            self._observe_try(answer, expect_5xx or lookup is not None)
            step = policy.after(outcome)
            policy = step.policy
            if step.action is Action.RETRY:
                settled = self._retry(method, url, step, lookup, reason)
                if settled is not None:
                    return settled
                continue
            if step.look_up and lookup is not None:  # AMBIGUOUS: settled by a look-up?
                settled = self._settled(method, url, policy, lookup, reason)
                if settled is not None:
                    return settled
            if step.action is Action.CHECK_TOKEN:
                self._check_token(method, url, answer, policy.attempts)
            if step.action is Action.RELOGIN and self.tokens.relogin(token):
                logger.info(
                    "%s %s answered %s: retrying with a new token", method, url, outcome.status
                )
                continue
            return self._finish(method, url, step, answer, reason)

    def _policy(
        self,
        method: str,
        mode: Mode,
        max_tries: Optional[int],
        auth: bool,
        accept_404: bool,
        lookup: Optional[LookUp],
        same_500_limit: Optional[int],
    ) -> RetryPolicy:
        """The retry policy of one request, from its kind and the settings."""
        return RetryPolicy(
            mode=mode,
            total=self.settings.max_tries if max_tries is None else max(1, max_tries),
            auth=auth,
            accept_404=accept_404,
            can_look_up=lookup is not None,
            same_500_limit=same_500_limit,
            reads=method == "GET",
            needs_body=method == "PATCH" or mode in (Mode.KEYED_CREATE, Mode.UNSAFE),
            failing_limit=self.settings.max_failing_answers,
            by_hand=same_500_limit is not None,
        )

    def _observe_try(self, answer: "requests.Response | Failure", backend_500: bool) -> None:
        if isinstance(answer, Failure):
            self._observe(False, answer.reason)
            return
        # a 500 the request expects, or that a look-up settles, is the
        # backend answering; 502-504 (a proxy's) never are
        status = answer.status_code
        self._observe(
            status < 500 or (status == 500 and backend_500),
            f"{status} {answer.reason or ''}".strip(),
        )

    def _retry(
        self, method: str, url: str, step: Step, lookup: Optional[LookUp], reason: str
    ) -> Optional[Answer]:
        """Look up, give up, or wait: an answer when the request is settled."""
        policy = step.policy
        last = policy.history[-1]
        if step.look_up and lookup is not None:
            settled = self._settled(method, url, policy, lookup, reason)
            if settled is not None:
                return settled
        if step.give_up is Action.SAME_500:
            messages = parse_error_messages(last.text) or [last.text]
            raise SciCatError(
                redact(
                    f"{method} {url}: answered 500 {policy.same_500()} times the same way, so "
                    f"not a passing fault; the server says: {'; '.join(messages)}"
                ),
                status=500,
                body=last.text,
                method=method,
                url=url,
                messages=messages,
            )
        if step.give_up is Action.FAILING:
            raise failing(method, url, reason, policy.attempts, last.status)
        if step.give_up is not None:
            raise unreachable(method, url, reason, policy.attempts, last.status)
        delay = policy.backoff(self._rng, self.settings.backoff_base, self.settings.backoff_max)
        logger.warning(
            "SciCat %s %s failed (try %d of %d): %s; retrying in %.2f s",
            method,
            url,
            policy.attempts,
            policy.total,
            reason,
            delay,
        )
        if self._closed.wait(delay):
            raise unreachable(method, url, "client closed", policy.attempts, last.status)
        return None

    def _finish(
        self,
        method: str,
        url: str,
        step: Step,
        answer: "requests.Response | Failure",
        reason: str,
    ) -> Answer:
        """The answer of a request the policy has settled, or its error."""
        attempts = step.policy.attempts
        if isinstance(answer, Failure):
            if step.action is Action.AMBIGUOUS:
                raise self._ambiguous(
                    method,
                    url,
                    f"the request was sent but its answer was lost ({reason})",
                    attempts,
                )
            raise unreachable(method, url, reason, attempts, None)
        if step.action is Action.AMBIGUOUS:
            what = "a proxy lost the answer" if answer.status_code >= 500 else "unreadable answer"
            raise self._ambiguous(method, url, f"{reason}: {what}", attempts)
        decoded, is_json = decode(answer)
        if step.action in (Action.RETURN, Action.LANDED):
            landed = step.action is Action.LANDED
            body = None if landed and answer.status_code == 404 else decoded
            return Answer(answer.status_code, body, landed=landed and answer.status_code == 409)
        if 200 <= answer.status_code < 300 and not is_json:
            raise SciCatError(
                redact(
                    f"{method} {url}: {answer.status_code} answer is not JSON: "
                    f"{short(str(decoded))}"
                ),
                status=answer.status_code,
                body=decoded,
                method=method,
                url=url,
            )
        raise error_for(method, url, answer)

    def _check_token(
        self, method: str, url: str, answer: "requests.Response | Failure", attempts: int
    ) -> None:
        """Refused again after re-logins: a valid token means a missing right."""
        body = self._whoami_now()
        if isinstance(body, dict) and body and not isinstance(answer, Failure):
            raise error_for(method, url, answer)
        raise failing(
            method,
            url,
            "refused although logged in again (the token may have expired meanwhile)",
            attempts,
            403,
        )

    def _whoami_now(self) -> Any:
        """``auth/whoami`` with the token at hand (no re-login, few tries)."""
        whoami = self.transport.url_of("auth/whoami")
        answer = self.transport.send("GET", whoami, token=self.tokens.token)
        if isinstance(answer, Failure) or answer.status_code >= 300:
            return None
        return decode(answer)[0]

    @staticmethod
    def _ambiguous(method: str, url: str, what: str, attempts: int) -> SciCatAmbiguousError:
        err = SciCatAmbiguousError(
            redact(
                f"{method} {url}: {what}; it may have been applied: check before sending it again"
            ),
            method=method,
            url=url,
        )
        err.attempts = attempts
        return err

    def _settled(
        self, method: str, url: str, policy: RetryPolicy, lookup: LookUp, reason: str
    ) -> Optional[Answer]:
        """Look the effect of a failed try up: an answer if nothing is left to do."""
        try:
            done = lookup()
        except SciCatError as exc:  # the look-up failed too: the retry decides
            logger.debug("look-up after %s %s failed: %s", method, url, exc)
            return None
        if not done:
            return None
        last = policy.history[-1]
        if policy.mode in (Mode.DELETE, Mode.DELETE_ONCE):
            logger.info(
                "%s %s: %s, but the record is gone: done",
                method,
                url,
                "answer lost" if last.status is None else reason,
            )
            return Answer(200, None, landed=True)
        if policy.mode is Mode.KEYED_CREATE:
            if policy.lost:
                return Answer(409, None, landed=True)
            text = redact(
                f"{method} {url}: the record already exists (the backend answered "
                f"{reason or last.status} instead of 409 Conflict)"
            )
            raise ConflictError(text, status=last.status, method=method, url=url)
        return None

    # -------------------------------------------------------------- look-ups
    def _exists(self, path: str) -> Optional[bool]:
        """Quick look-up (few tries): True/False, ``None`` when it cannot tell."""
        try:
            answer = self._call("GET", path, accept_404=True, max_tries=LOOKUP_TRIES)
        except (ForbiddenError, SciCatUnreachable):
            return None
        if answer.status == 404:
            return False
        return bool(answer.body) if isinstance(answer.body, (dict, list)) else None

    def _gone(self, path: str) -> LookUp:
        """A look-up: is the record at *path* gone?"""

        def lookup() -> Optional[bool]:
            held = self._exists(path)
            return None if held is None else not held

        return lookup

    def _lists_id(self, path: str, record_id: str) -> Optional[bool]:
        """Does the list at *path* hold a record with id *record_id*? (few tries)"""
        try:
            body = self._call("GET", path, max_tries=LOOKUP_TRIES).body
        except (ForbiddenError, NotFoundError, SciCatUnreachable):
            return None
        if not isinstance(body, list):
            return None
        return any(
            record_id in (item.get("_id"), item.get("id"), item.get("aid"))
            for item in body
            if isinstance(item, dict)
        )

    def _unlisted(self, listing: str, record_id: str) -> LookUp:
        """A look-up: has the list at *listing* lost the record *record_id*?"""

        def lookup() -> Optional[bool]:
            held = self._lists_id(listing, record_id)
            return None if held is None else not held

        return lookup
