"""SciCat answers that are not SciCat's, through the console scripts (issue 22).

A 200 with an empty body, a maintenance page (HTML) or cut JSON used to be
taken for a success (the empty dataset answer) or to leave the scan for
the next restart (the HTML page).  Now each is a retryable error looked
up before any re-post: the daemon ingests the scan without a restart and
the batch tool in the same run, each exactly once.
"""

from __future__ import annotations

import time

import pytest

from scingestor.cli import dataset_ingest

from .conftest import tally, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

KINDS = ("empty", "html", "broken")


@pytest.mark.parametrize("kind", KINDS)
def test_the_daemon_ingests_past_garbled_answers_without_a_restart(
    kind, scicat_factory, scenario, reliability_summary
) -> None:
    server = scicat_factory()
    bid = f"9720000{KINDS.index(kind)}"
    env = scenario(server, bid)
    names = [f"garbled_{index:05d}" for index in range(6)]
    env.scans(names)
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    # every POST's first answers garbled (datasets and blocks alike)
    server.garble_next(count=4, kind=kind, method="POST")
    env.append(names)
    assert wait_until(lambda: env.all_recorded(names), 120), daemon.text()
    assert daemon.stop() == 0
    result = reliability_summary.add(
        tally(f"POST answers garbled ({kind}), daemon", server, bid, names, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result
    assert "Traceback" not in env.logs()


@pytest.mark.parametrize("kind", KINDS)
def test_the_batch_tool_ingests_past_garbled_answers(
    kind, scicat_factory, scenario, capsys, restore_logging
) -> None:
    server = scicat_factory()
    bid = f"9721000{KINDS.index(kind)}"
    env = scenario(server, bid)
    names = [f"garbled_{index:05d}" for index in range(4)]
    env.scans(names)
    env.append(names)
    # the first two POSTs (the login, then a dataset or the login again) garbled
    server.garble_next(count=2, kind=kind, method="POST")
    code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Summary: 4 ingested" in out, out
    result = tally(f"POST answers garbled ({kind}), batch", server, bid, names, 0.0)
    assert (result.duplicated, result.lost) == (0, 0), result
