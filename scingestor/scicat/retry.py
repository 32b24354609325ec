"""The retry policy of the SciCat client: pure, immutable, tested as a table.

After each try the client hands the policy the try's :class:`Outcome` and
gets back a :class:`Step`: what to do now (return, re-login, look the
effect up, wait and try again, or raise which error) and the policy that
holds this try in its history.  Nothing here sends, sleeps or reads a
clock, so every rule can be read in one place and checked as a table
(``tests/test_retry_policy.py``), in the manner of urllib3's ``Retry``.

The rules, by :class:`Mode` of the request:

* SAFE (GET, PATCH, isValid, login): any failure is tried again.
* DELETE: idempotent; a 404 after a try that may have been applied is done.
* KEYED_CREATE (a POST with a client key): a 409 after a try that may have
  been applied means the first try landed.
* UNSAFE (a POST creating a new record): never repeated blindly; a lost
  answer, any 5xx (stored, then failed: issue 18) and an answer SciCat
  never sends raise "ambiguous" so the caller checks what is there.
* DELETE_ONCE (the v3 attachment DELETE, which removes the OLDEST
  attachment whatever the id): like UNSAFE, after its look-up.

A look-up, when the request has one, runs after a lost answer or a 5xx and
before the next try.  A 401/403 gets a re-login; a refused token obtained
for that very try is a missing right, a used one gets a few more
re-logins, then ``auth/whoami`` decides.  Answered failures (5xx, garbled
answers) stop at ``failing_limit`` with SciCatFailing: the scan waits in
the queue, no worker is held for half an hour.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

#: statuses worth another try: the server (or a proxy in front) had a problem
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class Mode(enum.Enum):
    """What may be done after a try whose outcome is unknown."""

    SAFE = "safe"
    DELETE = "delete"
    KEYED_CREATE = "keyed"
    UNSAFE = "unsafe"
    DELETE_ONCE = "delete-once"  # a DELETE that may remove another record if repeated


@dataclass(frozen=True)
class Outcome:
    """What one try gave.

    ``status`` is the HTTP status, ``None`` when no answer came; then
    ``failure`` says why: ``"lost"`` (sent, answer lost), ``"refused"``
    (nothing sent) or ``"fatal"`` (trying again cannot help).  ``json`` is
    False for an answer that is not JSON, ``text`` the answer's text (to see
    the same 500 again), ``retry_after`` a server's ``Retry-After``,
    ``empty`` True for an answer without a body, ``fresh`` True when the
    token sent came from a login made for this very try.
    """

    status: Optional[int] = None
    failure: str = ""
    json: bool = True
    text: str = ""
    retry_after: Optional[float] = None
    empty: bool = False
    fresh: bool = False  # the token sent was obtained for this very try

    @property
    def lost(self) -> bool:
        """The request may have been processed but its answer never came."""
        return self.failure == "lost" or self.status in (502, 504)

    @property
    def maybe_applied(self) -> bool:
        """The server may have acted on this try."""
        return self.lost or (self.status in RETRY_STATUSES and self.status != 429)


class Action(enum.Enum):
    """What the client does after a try."""

    RETURN = "return"  # the answer is the result
    FAILING = "failing"  # raise SciCatFailing: answering, but failing (may pass)
    LANDED = "landed"  # a 404 (DELETE) or 409 (KEYED_CREATE) says an earlier try landed
    RELOGIN = "relogin"  # get a new token and try again at once
    RETRY = "retry"  # (look up, then) wait and try again
    ERROR = "error"  # raise the error the answer stands for
    AMBIGUOUS = "ambiguous"  # raise SciCatAmbiguousError: the caller checks first
    UNREACHABLE = "unreachable"  # raise SciCatUnreachable (no use trying again)
    SAME_500 = "same500"  # raise SciCatError: the backend fails alike every time
    CHECK_TOKEN = "check-token"  # ask auth/whoami: a valid token means a missing right


@dataclass(frozen=True)
class Step:
    """The policy's answer: ``action``; for RETRY, ``look_up`` first and, when
    the look-up does not settle it, ``give_up`` (an action) instead of waiting."""

    action: Action
    policy: "RetryPolicy"
    look_up: bool = False
    give_up: Optional[Action] = None


@dataclass(frozen=True)
class RetryPolicy:
    """The retry state of one logical request (immutable: :meth:`after` gives a new one)."""

    mode: Mode = Mode.SAFE
    total: int = 100
    auth: bool = True
    accept_404: bool = False
    can_look_up: bool = False
    same_500_limit: Optional[int] = None
    reads: bool = False  # a GET: an HTML 200 (a proxy's page) is tried again
    needs_body: bool = False  # a create or an update: an empty 2xx is no answer
    failing_limit: Optional[int] = None  # answered failures (5xx, garbled) before giving up
    relogin_limit: int = 3  # re-logins after refusals of tokens that were not fresh
    by_hand: bool = False  # posted by an operator (scicat_ingest -m), who sees each error
    history: Tuple[Outcome, ...] = field(default=())

    # ----------------------------------------------------------------- state
    @property
    def attempts(self) -> int:
        """Tries made so far."""
        return len(self.history)

    def garbled(self, outcome: Outcome) -> bool:
        """A 2xx that is not what SciCat sends: not JSON, or empty where a record is due."""
        status = outcome.status or 0
        return 200 <= status < 300 and (not outcome.json or (outcome.empty and self.needs_body))

    def _unknown(self, outcome: Outcome) -> bool:
        """The try's answer is lost or unreadable: it may have been applied."""
        return outcome.lost or (self.garbled(outcome) and not self.reads)

    @property
    def maybe_applied(self) -> bool:
        """An earlier try may have been processed."""
        return any(o.maybe_applied or self._unknown(o) for o in self.history)

    @property
    def lost(self) -> bool:
        """An earlier try's answer never came (or came unreadable)."""
        return any(self._unknown(o) for o in self.history)

    def same_500(self) -> int:
        """500 answers with the same text at the end of the history."""
        count = 0
        text = None
        for outcome in reversed(self.history):
            if outcome.status is None:
                continue  # a lost answer says nothing about the backend's 500s
            if outcome.status != 500 or (text is not None and outcome.text != text):
                break
            text = outcome.text
            count += 1
        return count

    def increment(self, outcome: Outcome) -> "RetryPolicy":
        """The policy with *outcome* in its history."""
        return replace(self, history=self.history + (outcome,))

    # ------------------------------------------------------------- decisions
    def after(self, outcome: Outcome) -> Step:
        """What to do after a try that gave *outcome*."""
        policy = self.increment(outcome)
        if outcome.status is None:
            return policy._after_failure(outcome)
        return policy._after_answer(outcome)

    def _after_failure(self, outcome: Outcome) -> Step:
        if outcome.failure == "fatal":
            return Step(Action.UNREACHABLE, self)
        if outcome.failure == "lost" and self._once:
            return Step(Action.AMBIGUOUS, self, look_up=self.can_look_up)
        return self._retry(outcome)

    @property
    def _once(self) -> bool:
        """Never sent again after a try that may have been applied."""
        return self.mode in (Mode.UNSAFE, Mode.DELETE_ONCE)

    def _after_answer(self, outcome: Outcome) -> Step:
        status = outcome.status or 0
        if 200 <= status < 300:
            if not self.garbled(outcome):
                return Step(Action.RETURN, self)
            # a proxy's page, a cut or empty answer: not a success, and for a
            # write it may hide a store, as a lost answer does
            if self._once and not self.reads:
                return Step(Action.AMBIGUOUS, self, look_up=self.can_look_up)
            return self._retry(outcome)
        if status in RETRY_STATUSES:
            # any 5xx may come after the store (a failing hook, a proxy's timeout)
            hides_store = status in (502, 504) or (status != 429 and not self.by_hand)
            if self._once and hides_store:
                return Step(Action.AMBIGUOUS, self, look_up=self.can_look_up)
            return self._retry(outcome)
        if status in (401, 403) and self.auth:
            return self._after_refusal(outcome)
        if status == 404 and self.accept_404:
            return Step(Action.RETURN, self)
        if status == 404 and self.mode is Mode.DELETE and self.maybe_applied:
            return Step(Action.LANDED, self)
        if status == 409 and self.mode is Mode.KEYED_CREATE and self.maybe_applied:
            return Step(Action.LANDED, self)
        return Step(Action.ERROR, self)

    def _after_refusal(self, outcome: Outcome) -> Step:
        """A 401/403: an expired token, or a right the account lacks?

        The first refusal gets a re-login.  After that, a refused token that
        was obtained for this very try means a missing right; a used one may
        have died meanwhile (tokens of few uses, other threads): log in
        again, up to a limit, then ask the backend whether the token is valid.
        """
        relogins = sum(1 for o in self.history[:-1] if o.status in (401, 403))
        if relogins == 0:
            return Step(Action.RELOGIN, self)
        if outcome.fresh:
            return Step(Action.ERROR, self)
        if relogins < self.relogin_limit:
            return Step(Action.RELOGIN, self)
        return Step(Action.CHECK_TOKEN, self)

    def answered_failures(self) -> int:
        """Tries answered with a 5xx or with something SciCat never sends."""
        return sum(
            1 for o in self.history if o.status is not None and (o.status >= 500 or self.garbled(o))
        )

    def _retry(self, outcome: Outcome) -> Step:
        look_up = self.can_look_up and (self.lost or (outcome.status or 0) >= 500)
        give_up: Optional[Action] = None
        if self.same_500_limit and self.same_500() >= self.same_500_limit:
            give_up = Action.SAME_500
        elif self.failing_limit and self.answered_failures() >= self.failing_limit:
            give_up = Action.FAILING
        elif self.attempts >= self.total:
            give_up = Action.UNREACHABLE if outcome.status is None else Action.FAILING
        return Step(Action.RETRY, self, look_up=look_up, give_up=give_up)

    def backoff(self, rng: random.Random, base: float, cap: float) -> float:
        """Seconds to wait before the next try: doubling from *base* up to *cap*,
        half of it jitter; a server's ``Retry-After`` (up to *cap*) is honoured."""
        grown = min(cap, base * (2.0 ** min(self.attempts - 1, 60)))
        delay = grown / 2.0 + rng.uniform(0.0, grown / 2.0)
        retry_after = self.history[-1].retry_after if self.history else None
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay
