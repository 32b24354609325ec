"""The schedule generator is pure: a seed gives one schedule, and a sound one."""

from __future__ import annotations

import pytest

from .schedule import FAULT_KINDS, KNOWN_BROKEN, generate, parse_kinds


def test_a_seed_replays_exactly_its_schedule() -> None:
    for seed in range(50):
        first, again = generate(seed, FAULT_KINDS), generate(seed, FAULT_KINDS)
        assert first.describe() == again.describe()
    assert generate(1, FAULT_KINDS).describe() != generate(2, FAULT_KINDS).describe()


@pytest.mark.parametrize("kinds", [FAULT_KINDS, tuple(set(FAULT_KINDS) - KNOWN_BROKEN), ()])
def test_schedules_use_only_their_kinds_and_keep_measurements_defined(kinds) -> None:
    for seed in range(200):
        schedule = generate(seed, kinds)
        assert set(schedule.used_kinds()) <= set(kinds)
        names = {scan.name for scan in schedule.scans}
        assert set(schedule.listed_scans()) | set(schedule.dropped) <= names
        grouped = {name for scans in schedule.groups.values() for name in scans}
        # a truncation drops only scans outside measurements
        assert not grouped & set(schedule.dropped)
        assert grouped <= set(schedule.listed_scans())
        # every scan is listed at the end or was dropped; every episode ends
        assert set(schedule.listed_scans()) | set(schedule.dropped) == names
        kinds_of_steps = [step.kind for step in schedule.steps]
        for start, end in [("down", "up"), ("kill9", "restart"), ("disk_full", "disk_free")]:
            assert kinds_of_steps.count(start) == kinds_of_steps.count(end)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds: nope"):
        parse_kinds("kill9,nope")
    assert parse_kinds(None) == frozenset(FAULT_KINDS)
