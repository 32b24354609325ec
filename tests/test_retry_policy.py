"""The SciCat client's retry policy as a table: mode × outcome × history → action.

The policy is pure (no sending, no clock), so every rule is checked here
apart from the transport; the client tests check that the loop obeys it.
"""

from __future__ import annotations

import random
from typing import Dict, Tuple

import pytest

from scingestor.scicat.retry import Action, Mode, Outcome, RetryPolicy

OK = Outcome(200)
HTML_200 = Outcome(200, json=False, text="<html>maintenance</html>")
LOST = Outcome(failure="lost", text="connection lost")
REFUSED = Outcome(failure="refused", text="connection refused")
FATAL = Outcome(failure="fatal", text="bad certificate")

OUTCOMES: Dict[str, Outcome] = {
    "2xx": OK,
    "403": Outcome(403),
    "404": Outcome(404),
    "409": Outcome(409),
    "429": Outcome(429),
    "500": Outcome(500, text="boom"),
    "503": Outcome(503),
    "502": Outcome(502),
    "lost": LOST,
    "refused": REFUSED,
}

S, D, K, U, D1 = Mode.SAFE, Mode.DELETE, Mode.KEYED_CREATE, Mode.UNSAFE, Mode.DELETE_ONCE
MODES = [S, D, K, U, D1]
RET, LAND, RELOG, RETRY, ERR, AMB = (
    Action.RETURN,
    Action.LANDED,
    Action.RELOGIN,
    Action.RETRY,
    Action.ERROR,
    Action.AMBIGUOUS,
)

#: (mode, outcome) at the first try -> action
FIRST_TRY: Dict[Tuple[Mode, str], Action] = {}
for _mode in MODES:
    FIRST_TRY.update(
        {
            (_mode, "2xx"): RET,
            (_mode, "403"): RELOG,
            (_mode, "404"): ERR,
            (_mode, "409"): ERR,
            (_mode, "429"): RETRY,
            (_mode, "500"): RETRY,
            (_mode, "503"): RETRY,
            (_mode, "502"): RETRY,
            (_mode, "lost"): RETRY,
            (_mode, "refused"): RETRY,
        }
    )
# an unsafe create (or the v3 attachment DELETE) is never sent again after an
# answer that may hide a store: any 5xx, a lost answer (issue 18, rules 1 and 9)
for _mode in (U, D1):
    FIRST_TRY.update({(_mode, n): AMB for n in ("500", "503", "502", "lost")})

#: (mode, outcome) after an earlier try whose answer was lost -> action
AFTER_LOST: Dict[Tuple[Mode, str], Action] = dict(FIRST_TRY)
AFTER_LOST.update({(D, "404"): LAND, (K, "409"): LAND})


@pytest.mark.parametrize("mode,name", sorted(FIRST_TRY, key=lambda k: (k[0].value, k[1])))
def test_first_try(mode: Mode, name: str) -> None:
    step = RetryPolicy(mode=mode).after(OUTCOMES[name])
    assert step.action is FIRST_TRY[(mode, name)]
    assert step.policy.attempts == 1 and step.policy.history[-1] == OUTCOMES[name]


@pytest.mark.parametrize("mode,name", sorted(AFTER_LOST, key=lambda k: (k[0].value, k[1])))
def test_after_a_lost_answer(mode: Mode, name: str) -> None:
    policy = RetryPolicy(mode=mode).increment(LOST)
    assert policy.after(OUTCOMES[name]).action is AFTER_LOST[(mode, name)]


FRESH_403 = Outcome(403, fresh=True)


@pytest.mark.parametrize("mode", MODES)
def test_a_fresh_token_refused_after_a_relogin_is_a_missing_right(mode: Mode) -> None:
    step = RetryPolicy(mode=mode).after(FRESH_403)
    assert step.action is RELOG  # the first refusal always gets a new token
    assert step.policy.after(FRESH_403).action is ERR


@pytest.mark.parametrize("mode", MODES)
def test_a_used_token_refused_gets_new_logins_then_whoami(mode: Mode) -> None:
    """Issue 18 rule 3: a token used meanwhile (by other threads, or on a 500)
    may have died: log in again; when that keeps happening ask auth/whoami."""
    policy = RetryPolicy(mode=mode, relogin_limit=3)
    actions = []
    for outcome in (Outcome(403), Outcome(500), Outcome(403), Outcome(403), Outcome(403)):
        step = policy.after(outcome)
        policy = step.policy
        actions.append(step.action)
        if step.action not in (RELOG, RETRY):
            break
    first = RETRY if mode not in (U, D1) else AMB
    assert actions[0] is RELOG and actions[1] is first
    if first is RETRY:
        assert actions[2:] == [RELOG, RELOG, Action.CHECK_TOKEN]


@pytest.mark.parametrize("mode", MODES)
def test_without_a_token_a_403_is_an_error(mode: Mode) -> None:
    assert RetryPolicy(mode=mode, auth=False).after(Outcome(403)).action is ERR


def test_accept_404_returns_it() -> None:
    assert RetryPolicy(accept_404=True).after(Outcome(404)).action is RET


def test_fatal_transport_errors_are_never_retried() -> None:
    for mode in MODES:
        assert RetryPolicy(mode=mode).after(FATAL).action is Action.UNREACHABLE


EMPTY_200 = Outcome(200, empty=True)


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_scicat_would_not_send_is_never_a_success(mode: Mode) -> None:
    """Issue 22: an HTML page, cut JSON or an empty create answer is retried,
    looked up first; an unsafe create is handed back as ambiguous."""
    assert RetryPolicy(mode=mode, reads=True).after(HTML_200).action is RETRY
    expected = AMB if mode in (U, D1) else RETRY
    for outcome in (HTML_200, Outcome(200, json=False, text='{"pid": "cut')):
        step = RetryPolicy(mode=mode, can_look_up=True).after(outcome)
        assert step.action is expected
        assert step.look_up  # whatever the mode: look before anything is sent again
        assert step.policy.lost and step.policy.maybe_applied
    writes = RetryPolicy(mode=mode, needs_body=True, can_look_up=True)
    assert writes.after(EMPTY_200).action is expected
    assert RetryPolicy(mode=mode).after(EMPTY_200).action is RET  # a DELETE, a login


def test_answered_failures_give_up_as_failing_no_answer_as_unreachable() -> None:
    policy = RetryPolicy(total=1)
    assert policy.after(Outcome(503)).give_up is Action.FAILING
    html_read = RetryPolicy(total=2, reads=True, failing_limit=5).increment(HTML_200)
    assert html_read.after(HTML_200).give_up is Action.FAILING
    assert RetryPolicy(total=1, reads=True).after(HTML_200).give_up is Action.FAILING
    assert policy.after(REFUSED).give_up is Action.UNREACHABLE
    assert policy.after(LOST).give_up is Action.UNREACHABLE


@pytest.mark.parametrize("name", ["500", "503", "502", "lost"])
def test_the_v3_attachment_delete_is_only_looked_up(name: str) -> None:
    step = RetryPolicy(mode=D1, can_look_up=True).after(OUTCOMES[name])
    assert step.action is AMB and step.look_up


def test_an_operator_posting_by_hand_retries_a_500() -> None:
    assert RetryPolicy(mode=U, by_hand=True).after(Outcome(500)).action is RETRY
    assert RetryPolicy(mode=U, by_hand=True).after(Outcome(502)).action is AMB


def test_answered_failures_stop_at_the_common_limit() -> None:
    """Issue 18 rule 7: every request, not only scicat_ingest -m."""
    policy = RetryPolicy(total=100, failing_limit=4)
    gives = []
    for outcome in (Outcome(500, text="a"), REFUSED, Outcome(503), HTML_200, Outcome(502)):
        step = policy.after(outcome)
        policy = step.policy
        gives.append(step.give_up)
    assert gives == [None, None, None, None, Action.FAILING]


@pytest.mark.parametrize("name", ["500", "503", "502", "lost"])
def test_look_up_before_the_next_try(name: str) -> None:
    step = RetryPolicy(mode=K, can_look_up=True).after(OUTCOMES[name])
    assert step.action is RETRY and step.look_up
    assert not RetryPolicy(mode=K).after(OUTCOMES[name]).look_up


@pytest.mark.parametrize("name", ["429", "refused"])
def test_no_look_up_when_nothing_can_have_happened(name: str) -> None:
    assert not RetryPolicy(mode=K, can_look_up=True).after(OUTCOMES[name]).look_up


def test_tries_are_bounded() -> None:
    policy = RetryPolicy(total=3)
    steps = []
    for outcome in (REFUSED, Outcome(503), REFUSED):
        step = policy.after(outcome)
        policy = step.policy
        steps.append(step.give_up)
    assert steps == [None, None, Action.UNREACHABLE]
    assert RetryPolicy(total=1).after(Outcome(503)).give_up is Action.FAILING


def test_the_same_500_stops_a_request_with_a_limit() -> None:
    policy = RetryPolicy(same_500_limit=3)
    gives = []
    for outcome in (Outcome(500, text="a"), LOST, Outcome(500, text="a"), Outcome(500, text="a")):
        step = policy.after(outcome)
        policy = step.policy
        gives.append(step.give_up)
    assert gives == [None, None, None, Action.SAME_500]
    other = RetryPolicy(same_500_limit=2).increment(Outcome(500, text="a"))
    assert other.after(Outcome(500, text="b")).give_up is None


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    after = policy.after(OK).policy
    assert policy.history == () and after.history == (OK,)
    with pytest.raises(AttributeError):
        policy.total = 5  # type: ignore[misc]


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(1)
    one = RetryPolicy().increment(REFUSED)
    four = one.increment(REFUSED).increment(REFUSED).increment(REFUSED)
    assert 0.5 <= one.backoff(rng, 1.0, 30.0) <= 1.0
    assert 4.0 <= four.backoff(rng, 1.0, 30.0) <= 8.0
    assert four.backoff(rng, 1.0, 5.0) <= 5.0
    later = RetryPolicy().increment(Outcome(429, retry_after=20.0))
    assert later.backoff(rng, 1.0, 30.0) == 20.0
