"""``kill -9`` of the daemon at random moments during a burst, round after round.

The kills land anywhere: during start-up (journal replay and compaction),
while lines are read and journaled, while metadata is generated, between a
dataset POST and its origdatablock POST, between the POSTs and the ingested
list record.  After the last restart every scan must be in SciCat exactly
once: one dataset and one origdatablock each.
"""

from __future__ import annotations

import random
import time

import pytest

from scingestor.testing.scicat_server import SciCatServer

from .conftest import Daemon, created, dataset_posts, tally, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ROUNDS = 24
PER_ROUND = 5


def block_posts(server: SciCatServer, beamtime_id: str) -> int:
    """How many origdatablocks of the beamtime SciCat accepted."""
    return sum(created(server, "origdatablocks", "datasetId", beamtime_id).values())


def kill_after_event(
    server: SciCatServer,
    beamtime_id: str,
    daemon: Daemon,
    rng: random.Random,
    count: int,
    blocks: int,
) -> None:
    """Wait until SciCat has seen the round's k-th dataset (or block) POST, nothing longer.

    The moment is chosen by what the daemon did, not by how long it had:
    right after a dataset POST the kill lands before its origdatablock,
    right after a block POST before the ingested-list record (or in the
    next scan's generation).  *count* and *blocks* are the POSTs seen
    before the round's daemon started; each of the round's appended scans
    is new, so the k-th POST since then always comes, however slow the
    machine.
    """
    wanted = rng.randint(1, PER_ROUND)
    if rng.random() < 0.5:

        def reached() -> bool:
            return len(dataset_posts(server, beamtime_id)) >= count + wanted
    else:

        def reached() -> bool:
            return block_posts(server, beamtime_id) >= blocks + wanted

    assert wait_until(lambda: reached() or not daemon.alive(), 180, interval=0.01), (
        "the daemon posted nothing in 180 s"
    )
    assert daemon.alive(), f"the daemon exited: {daemon.text()}"


def test_kill_9_at_random_moments_then_each_scan_once(
    scicat_factory, scenario, reliability_summary
) -> None:
    server = scicat_factory()
    bid = "97000010"
    env = scenario(server, bid)
    names = [f"crash_{index:05d}" for index in range(ROUNDS * PER_ROUND + 20)]
    env.scans(names)
    rng = random.Random(9)
    started = time.monotonic()
    appended = 0
    busy_rounds = 0
    for round_number in range(ROUNDS):
        posted = len(dataset_posts(server, bid))
        posted_blocks = block_posts(server, bid)
        daemon = env.daemon()
        # some lines arrive while the daemon starts, some while it works
        before = rng.randint(0, PER_ROUND)
        env.append(names[appended : appended + before])
        early = round_number % 5 == 4  # killed while starting up
        if early:
            # a random moment of the start-up; nothing below counts on where it lands
            time.sleep(rng.uniform(0.05, 0.6))
        else:
            daemon.wait_started()
        env.append(names[appended + before : appended + PER_ROUND])
        if not early:  # killed while ingesting
            kill_after_event(server, bid, daemon, rng, posted, posted_blocks)
        appended += PER_ROUND
        daemon.kill9()
        busy_rounds += len(dataset_posts(server, bid)) > posted
    kills = env.runs
    daemon = env.daemon()
    env.append(names[appended:])
    assert wait_until(lambda: env.all_recorded(names), 180), "not all scans recorded"
    assert daemon.stop() == 0
    result = reliability_summary.add(
        tally(f"kill -9 ({kills} rounds)", server, bid, names, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result
    blocks = [block["datasetId"] for block in server.origdatablocks.values()]
    assert sorted(blocks) == sorted(f"{bid}/{name}" for name in names)
    assert env.pending_jobs() == 0
    # the kills did hit work in progress: scans were resumed from the journal
    assert "from the journal" in env.logs()
    assert busy_rounds >= ROUNDS // 3, f"only {busy_rounds} rounds got as far as a POST"
