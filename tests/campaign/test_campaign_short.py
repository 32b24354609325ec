"""The short fault campaign CI runs: a few seeded schedules, each checked whole.

Only the fault kinds today's code survives (all but ``KNOWN_BROKEN``, and
what this machine and the test server offer); the long campaign
(``python -m tests.campaign --schedules 300``) mixes them all.  A failure
names the seed and the command that replays it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .__main__ import report
from .runner import Runner, ScratchDisk, available_kinds
from .schedule import FAULT_KINDS, KNOWN_BROKEN, generate

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

#: fixed seeds: the same schedules on every run (each takes ~5-15 s)
SEEDS = range(1801, 1806)


def test_short_campaign_keeps_every_scan_exactly_once(tmp_path: Path) -> None:
    disk = ScratchDisk(tmp_path / "scratch-disk")
    disk.mount()  # only root can: without it disk_full is left out
    try:
        offered, missing = available_kinds(disk)
        kinds = sorted(set(offered) - KNOWN_BROKEN)
        assert kinds, f"no fault kind left to run (missing: {missing})"
        failures = []
        for seed in SEEDS:
            schedule = generate(seed, kinds)
            workdir = tmp_path / f"seed-{seed}"
            workdir.mkdir()
            result = Runner(schedule, workdir, disk, drain_timeout=60.0).run()
            if not result.ok:
                failures.append(report(result, kinds))
        assert not failures, "\n\n".join(failures)
    finally:
        disk.unmount()
    assert set(kinds) <= set(FAULT_KINDS)
