"""Batch ingestion speed: ``scicat_dataset_ingest`` over a beamtime of N scans.

Builds a beamtime with N small NeXus scans (default 1,000; ``--kind fio``
for FIO) listed in one dataset list file, then runs the batch tool as a
process against the SciCat-compatible server and reports datasets per
second and CPU seconds per scan (the tool and all its children).  Target:
>= 20 scans/s on 2 cores.

    python benchmarks/bench_batch.py [--scans 1000] [--kind nxs|fio] [--bindir DIR]

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
    ``RUSAGE_CHILDREN`` does not see; each pid's last sample is kept.
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
                self.seen[process.pid] = times.user + times.system + \
                    times.children_user + times.children_system
            except psutil.NoSuchProcess:
                continue

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def run(scans: int, kind: str, bindir: str | None, attachments: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="scingestor-batch-") as tmp, \
            SciCatServer() as server:
        root = Path(tmp)
        tree = make_tree(root)
        names = [f"batch_{index:05d}" for index in range(scans)]
        for name in names:
            make_scan(tree["raw"], name, kind=kind)
        tree["list"].write_text("".join(f"\n{name}" for name in names))
        config = write_config(root, server, ingest_dataset_attachment=attachments)
        start = time.monotonic()
        process = subprocess.Popen([script("scicat_dataset_ingest", bindir), "-c", str(config),
                                    "-f", str(root / "batch.log")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=environment(bindir))
        cpu = TreeCpu(process.pid)
        while process.poll() is None:
            cpu.sample()
            time.sleep(0.2)
        seconds = time.monotonic() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = usage.ru_utime + usage.ru_stime  # the tool itself, counted once reaped
        cpu_seconds = max(cpu.total, own)
        created = sum(1 for request in server.recorded("POST")
                      if request.path.lower().endswith("/datasets") and request.status == 201)
        return {"scans": scans, "kind": kind, "attachments": attachments,
                "seconds": seconds, "datasets": created,
                "scans_per_second": created / seconds if seconds else 0.0,
                "cpu_seconds_per_scan": cpu_seconds / max(1, created),
                "exit_code": process.returncode,
                "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--kind", default="nxs", choices=("nxs", "fio"))
    parser.add_argument("--attachments", action="store_true",
                        help="also generate and post attachments (plots)")
    parser.add_argument("--bindir", help="console scripts of another installation to compare")
    args = parser.parse_args()
    report = {}
    for label, bindir in [("ours", None)] + ([("other", args.bindir)] if args.bindir else []):
        result = run(args.scans, args.kind, bindir, args.attachments)
        report[label] = result
        print(f"{label}: {result['datasets']}/{result['scans']} {args.kind} scans in "
              f"{result['seconds']:.1f} s = {result['scans_per_second']:.1f} scans/s, "
              f"{result['cpu_seconds_per_scan'] * 1000:.0f} ms CPU per scan "
              f"(exit {result['exit_code']})")
    if "other" in report:
        ratio = report["ours"]["scans_per_second"] / max(1e-9,
                                                         report["other"]["scans_per_second"])
        print(f"ratio ours/other: {ratio:.1f}x faster")
    print(f"written {save(f'batch-{args.kind}', report)}")


if __name__ == "__main__":
    main()
