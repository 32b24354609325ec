"""The fault suite's exactly-once run: every fault at once, over several seeds (issue 18).

30 scans (each with a plot: one dataset, one origdatablock, one
attachment) reach a running daemon while SciCat answers 20 % of requests
500 (not processed), loses 10 % of its answers (processed, connection
closed) and lets each token serve 15 requests only.  Every scan must end
in SciCat exactly once: no scan lost, no second dataset, block or
attachment.

The suite runs ``SCINGESTOR_EXACTLY_ONCE_RUNS`` seeds (3 by default, to
keep the suite short); docs/reliability.md gives the 20-run figure and
its command.
"""

from __future__ import annotations

import os
import time

import pytest

from .conftest import tally, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RUNS = int(os.environ.get("SCINGESTOR_EXACTLY_ONCE_RUNS", "3"))
SCANS = 30


@pytest.mark.parametrize("seed", range(1, RUNS + 1))
def test_every_scan_once_under_500s_lost_answers_and_short_tokens(
    seed, scicat_factory, scenario, reliability_summary
) -> None:
    server = scicat_factory()
    bid = f"9710{seed:04d}"
    env = scenario(server, bid, ingest_dataset_attachment=True, plot_file_extension_list=["png"])
    names = [f"mixed_{index:05d}" for index in range(SCANS)]
    env.scans(names, plot=True)
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    server.set_error_rate(0.20, 500, seed=seed)
    server.lose_next_responses(0, rate=0.10)
    server.set_token_uses(15)
    try:
        for first in range(0, SCANS, 5):
            env.append(names[first : first + 5])
        assert wait_until(lambda: env.all_recorded(names), 300), "not all scans recorded"
    finally:
        server.reset_faults()
    assert len([r for r in server.recorded() if r.status == 500]) >= 10, "the 500s did not bite"
    assert daemon.stop() == 0
    result = reliability_summary.add(
        tally(
            f"20 % 500s, 10 % lost answers, tokens of 15 uses (seed {seed})",
            server,
            bid,
            names,
            started,
            attachments_per_scan=1,
        )
    )
    assert (result.duplicated, result.lost) == (0, 0), result
    assert env.pending_jobs() == 0
