"""SciCat misbehaving under a running daemon: down, random errors, expired tokens, lost answers.

Whatever SciCat does, every listed scan must end up in it exactly once:
one dataset (one 201 for its pid, no new version), one origdatablock (and
one attachment where attachments are on).
"""

from __future__ import annotations

import time

import pytest

from .conftest import dataset_posts, tally, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_scicat_down_while_200_scans_arrive(scicat_factory, scenario, reliability_summary) -> None:
    server = scicat_factory()
    bid = "97000001"
    env = scenario(server, bid, max_request_tries_number=2)
    names = [f"down_{index:05d}" for index in range(200)]
    env.scans(names)
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    server.set_down(True)
    try:
        for first in range(0, len(names), 20):  # ten bursts while SciCat is away
            env.append(names[first : first + 20])
            time.sleep(0.1)
        assert wait_until(lambda: "SciCat unreachable" in daemon.text(), 60), daemon.text()
        time.sleep(2.0)  # some scans wait for their second and third retry
        assert dataset_posts(server, bid) == {}
    finally:
        server.set_down(False)
    assert wait_until(lambda: env.all_recorded(names), 180), "not all scans recorded"
    assert daemon.alive()
    assert daemon.stop() == 0
    result = reliability_summary.add(tally("SciCat down (200 scans)", server, bid, names, started))
    assert (result.duplicated, result.lost) == (0, 0), result
    assert env.pending_jobs() == 0


def test_random_500_and_timeouts(scicat_factory, scenario, reliability_summary) -> None:
    server = scicat_factory()
    bid = "97000002"
    # a hung request is given up after request_timeout: some datasets and
    # blocks are posted again without the client knowing whether the first
    # try landed (it did not: a hung request is not processed; the 500s are
    # not either)
    env = scenario(server, bid, request_timeout=1.0, max_request_tries_number=2)
    names = [f"flaky_{index:05d}" for index in range(100)]
    env.scans(names)
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    server.set_error_rate(0.10, 500, timeout_rate=0.10, seed=20, hang_seconds=1.5)
    try:
        for first in range(0, len(names), 10):
            env.append(names[first : first + 10])
            time.sleep(0.2)
        assert wait_until(lambda: env.all_recorded(names), 240), "not all scans recorded"
    finally:
        server.reset_faults()
    faults = [r for r in server.recorded() if r.status == 500 or r.status == 0]
    assert len(faults) >= 50, "the fault injection did not bite"
    assert daemon.stop() == 0
    result = reliability_summary.add(
        tally("20 % answers 500 or time out", server, bid, names, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result
    assert env.pending_jobs() == 0


def test_token_expiry_mid_run(scicat_factory, scenario, reliability_summary) -> None:
    # tokens live 2 s (the client renews them early) and are also revoked
    # under its feet: requests then run anonymous and get 403
    server = scicat_factory(token_ttl=2.0)
    bid = "97000003"
    env = scenario(server, bid)
    names = [f"token_{index:05d}" for index in range(60)]
    env.scans(names)
    daemon = env.daemon(level="debug")
    started = time.monotonic()
    daemon.wait_started()
    for wave in range(6):
        env.append(names[10 * wave : 10 * wave + 10])
        time.sleep(0.4)
        server.expire_tokens()
        time.sleep(0.4)
    assert wait_until(lambda: env.all_recorded(names), 120), "not all scans recorded"
    assert daemon.stop() == 0
    logins = [r for r in server.recorded("POST", "/login") if r.status == 201]
    refused = [r for r in server.recorded() if r.status == 403]
    assert len(logins) >= 4, "the ingestor did not log in again"
    assert refused, "no request ran with an expired token"
    assert "logging in again" in daemon.text()
    result = reliability_summary.add(
        tally("token expiry (ttl 2 s, revoked 6x)", server, bid, names, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result


def test_lost_answers_are_not_posted_twice(scicat_factory, scenario, reliability_summary) -> None:
    server = scicat_factory()
    bid = "97000004"
    # strategy "no": a dataset already in SciCat is kept as it is, so the
    # scans whose dataset is put there beforehand only post blocks and plots
    env = scenario(server, bid, ingest_dataset_attachment=True, dataset_update_strategy="no")
    names = [
        "lost_warmup",
        "lost_dataset",
        "lost_dataset_twice",
        "lost_block",
        "lost_block_and_plot",
    ]
    env.scans(names, plot=True)
    for name in ("lost_block", "lost_block_and_plot"):
        server.add_dataset(
            {
                "pid": f"{bid}/{name}",
                "type": "raw",
                "datasetName": name,
                "ownerGroup": f"{bid}-dmgt",
                "accessGroups": [],
                "owner": "x",
                "contactEmail": "x@example.org",
                "sourceFolder": str(env.raw),
                "creationTime": "2026-11-20T10:00:00.000Z",
                "principalInvestigator": "x",
                "creationLocation": "p00",
                "proposalId": "99991173.97000004",
            }
        )
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    # the first scan logs in: from then on the only POSTs are the scans' own
    lost = {
        "lost_warmup": 0,
        "lost_dataset": 1,
        "lost_dataset_twice": 2,
        "lost_block": 1,
        "lost_block_and_plot": 2,
    }
    for name in names:
        if lost[name]:
            server.lose_next_responses(lost[name], "POST")
        env.append([name])
        assert wait_until(lambda: env.all_recorded([name]), 60), name
    assert daemon.stop() == 0
    dropped = [r for r in server.recorded("POST") if r.dropped]
    assert len(dropped) == 6, [(r.path, r.status) for r in dropped]
    # the answers lost were for datasets (201, then 409), blocks and attachments
    assert {r.path.rsplit("/", 1)[-1].lower() for r in dropped} == {
        "datasets",
        "origdatablocks",
        "attachments",
    }
    result = reliability_summary.add(
        tally("lost answers (6 POSTs)", server, bid, names, started, attachments_per_scan=1)
    )
    assert (result.duplicated, result.lost) == (0, 0), result
