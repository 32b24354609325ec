"""``python -m tests.campaign --schedules N --seed S``: run a seeded fault campaign.

Schedule *i* has the seed ``S + i``; a failing schedule prints its seed,
the schedule and the command that replays exactly it.  Exit status 1 when
any schedule broke an invariant.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from .runner import Result, Runner, ScratchDisk, available_kinds
from .schedule import FAULT_KINDS, KNOWN_BROKEN, generate, parse_kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.campaign",
        description="Seeded fault campaign (issue 18): randomised schedules on a real daemon.",
    )
    parser.add_argument("--schedules", type=int, default=1, help="how many schedules (1)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first schedule (default: from the clock)",
    )
    parser.add_argument(
        "--kinds",
        default=None,
        help="comma-separated fault kinds to mix (default: all available): "
        + ", ".join(FAULT_KINDS),
    )
    parser.add_argument(
        "--skip-known-broken",
        action="store_true",
        help="leave out the kinds in KNOWN_BROKEN (what the CI campaign does)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the daemon to settle",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where schedules run (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the folders of passing schedules too"
    )
    parser.add_argument(
        "--no-disk", action="store_true", help="do not mount a tmpfs for the disk_full fault"
    )
    parser.add_argument("--list", action="store_true", help="print the schedules only, run nothing")
    return parser


def replay_command(seed: int, kinds: Sequence[str]) -> str:
    text = f"python -m tests.campaign --seed {seed}"
    if set(kinds) != set(FAULT_KINDS):
        text += " --kinds " + ",".join(sorted(kinds))
    return text


def report(result: Result, kinds: Sequence[str]) -> str:
    schedule = result.schedule
    head = (
        f"seed {schedule.seed}: " + ("ok" if result.ok else "FAILED") + f" ({result.seconds:.1f} s)"
    )
    if result.ok:
        return head
    lines = [head, schedule.describe(), "violations:"]
    lines += [f"  {violation}" for violation in result.violations]
    lines.append(f"files: {result.workdir}")
    lines.append("replay: " + replay_command(schedule.seed, kinds))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    first = args.seed if args.seed is not None else int(time.time()) % 1000000
    asked = parse_kinds(args.kinds)
    if args.skip_known_broken:
        asked = asked - KNOWN_BROKEN
    base = args.workdir or Path(tempfile.mkdtemp(prefix="scingestor-campaign-"))
    base.mkdir(parents=True, exist_ok=True)
    disk = None
    if "disk_full" in asked and not args.no_disk and not args.list:
        disk = ScratchDisk(base / "scratch-disk")
        disk.mount()
    offered, missing = available_kinds(disk)
    if args.list and not args.no_disk:
        # listing runs nothing: show the schedules a run with a disk would play
        missing.pop("disk_full", None)
        offered = [kind for kind in FAULT_KINDS if kind not in missing]
    kinds = sorted(asked & set(offered))
    for kind in sorted(asked - set(offered)):
        print(f"fault kind {kind} left out: {missing[kind]}")
    print("fault kinds: " + ", ".join(kinds))
    failed: List[Result] = []
    try:
        for index in range(args.schedules):
            schedule = generate(first + index, kinds)
            if args.list:
                print(schedule.describe())
                continue
            workdir = base / f"seed-{schedule.seed}"
            if workdir.exists():
                shutil.rmtree(workdir)
            workdir.mkdir()
            result = Runner(schedule, workdir, disk, args.drain_timeout).run()
            print(report(result, kinds), flush=True)
            if result.ok and not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            if not result.ok:
                failed.append(result)
    finally:
        if disk is not None:
            disk.unmount()
    if not args.list:
        print(
            f"{args.schedules} schedules, {len(failed)} failed"
            + (": seeds " + ", ".join(str(r.schedule.seed) for r in failed) if failed else "")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
