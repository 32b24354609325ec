"""Batch ingestion speed: ``scicat_dataset_ingest`` over a beamtime of N scans.

Builds a beamtime with N small NeXus scans (default 1,000; ``--kind fio``
for FIO), written as beamline writers write them, listed in one dataset list
file, then runs the batch tool as a process against the SciCat-compatible
server with the default configuration: attachments (thumbnails) on, as
``ingest_dataset_attachment`` is by default.  ``--attachments`` chooses
``on``, ``off`` or ``both`` (the default: each figure with and without).
Reported: datasets per second, CPU seconds per scan (the tool and all its
children), attachments posted, and the first dataset's arrival at SciCat
counted from the start of the tool ("first dataset posted after start of
work").  Targets (issue 13, 2 cores): >= 30 scans/s for 1,000 scans with
thumbnails; >= 25x the reference for 60 scans with thumbnails; first
dataset within 1 s.

    python benchmarks/bench_batch.py [--scans 1000] [--kind nxs|fio]
                                     [--attachments on|off|both] [--bindir DIR]

``--bindir`` runs the same scenario with another installation's console
scripts (e.g. the reference ingestor's ``bin`` directory) and prints the
ratio side by side.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from common import environment, make_tree, save, script, write_config

from scingestor.testing.builders import make_scan
from scingestor.testing.scicat_server import SciCatServer


class TreeCpu:
    """CPU seconds of a process and all its descendants, sampled while it runs.

    The generator workers are grandchildren (forkserver), which
    ``RUSAGE_CHILDREN`` does not see; each pid's last sample of its *own*
    CPU time is kept (a process's ``children_*`` times would count the
    workers its fork server reaped a second time).
    """

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict = {}

    def sample(self) -> None:
        try:
            processes = [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                times = process.cpu_times()
                self.seen[process.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def run(scans: int, kind: str, bindir: str | None, attachments: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="scingestor-batch-") as tmp, SciCatServer() as server:
        root = Path(tmp)
        tree = make_tree(root)
        names = [f"batch_{index:05d}" for index in range(scans)]
        for name in names:
            make_scan(tree["raw"], name, kind=kind)
        tree["list"].write_text("".join(f"\n{name}" for name in names))
        # the default configuration, but for the attachments switched off
        extra = {} if attachments else {"ingest_dataset_attachment": False}
        config = write_config(root, server, **extra)
        reaped_before = _children_cpu()
        started = time.time()
        start = time.monotonic()
        process = subprocess.Popen(
            [
                script("scicat_dataset_ingest", bindir),
                "-c",
                str(config),
                "-f",
                str(root / "batch.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment(bindir),
        )
        cpu = TreeCpu(process.pid)
        while process.poll() is None:
            cpu.sample()
            time.sleep(0.1)
        seconds = time.monotonic() - start
        # what the tool's process tree reaped is counted exactly once it is reaped
        # (all of the reference's generator processes; of ours, the tool alone)
        reaped = _children_cpu() - reaped_before
        cpu_seconds = max(cpu.total, reaped)
        posts = [
            request.time
            for request in server.recorded("POST")
            if request.path.lower().endswith("/datasets") and request.status == 201
        ]
        created = len(posts)
        first = min(posts) - started if posts else float("nan")
        return {
            "scans": scans,
            "kind": kind,
            "attachments": attachments,
            "seconds": seconds,
            "datasets": created,
            "attachments_posted": len(server.attachments),
            "scans_per_second": created / seconds if seconds else 0.0,
            "cpu_seconds_per_scan": cpu_seconds / max(1, created),
            "first_dataset_seconds": first,
            "exit_code": process.returncode,
            "cores": os.cpu_count(),
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


MODES = {"on": [True], "off": [False], "both": [True, False]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--kind", default="nxs", choices=("nxs", "fio"))
    parser.add_argument(
        "--attachments",
        default="both",
        choices=tuple(MODES),
        help="generate and post attachments (thumbnails): on (the default "
        "configuration), off, or both one after the other (default)",
    )
    parser.add_argument("--bindir", help="console scripts of another installation to compare")
    args = parser.parse_args()
    report: dict = {}
    installations = [("ours", None)] + ([("other", args.bindir)] if args.bindir else [])
    for attachments in MODES[args.attachments]:
        mode = "attachments on" if attachments else "attachments off"
        for label, bindir in installations:
            result = run(args.scans, args.kind, bindir, attachments)
            report.setdefault(label, {})[mode] = result
            print(
                f"{label}, {mode}: {result['datasets']}/{result['scans']} {args.kind} scans "
                f"in {result['seconds']:.1f} s = {result['scans_per_second']:.1f} scans/s, "
                f"{result['cpu_seconds_per_scan'] * 1000:.0f} ms CPU per scan, "
                f"{result['attachments_posted']} attachments, first dataset after "
                f"{result['first_dataset_seconds']:.2f} s (exit {result['exit_code']})",
                flush=True,
            )
        if "other" in report:
            ours, other = report["ours"][mode], report["other"][mode]
            ratio = ours["scans_per_second"] / max(1e-9, other["scans_per_second"])
            report.setdefault("ratio", {})[mode] = ratio
            print(f"ratio ours/other, {mode}: {ratio:.1f}x faster", flush=True)
    print(f"written {save(f'batch-{args.kind}-{args.scans}', report)}")


if __name__ == "__main__":
    main()
