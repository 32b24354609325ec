"""Idle cost of the daemon: CPU seconds and wake-ups while nothing happens.

Starts ``scicat_dataset_ingestor`` watching a beamtime with N scan
directories (default 1,000), waits until it has set up its watches, then
measures for S seconds (default 60) the CPU time and the voluntary context
switches (each one is a wake-up of one of its threads) of the daemon
process.  Target: <= 1 wake-up per second in total and < 0.1 % CPU.

    python benchmarks/bench_idle.py [--dirs 1000] [--seconds 60] [--bindir DIR]

``--bindir`` runs another installation's console scripts (e.g. the
reference ingestor's) on the same scenario for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
from common import make_tree, save, start_daemon, stop_daemon, write_config

from scingestor.testing.scicat_server import SciCatServer


def thread_switches(pid: int) -> int:
    """Voluntary context switches summed over all threads of a process."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def measure(process: psutil.Process, seconds: float) -> dict:
    def totals():
        cpu, switches = 0.0, 0
        for proc in [process] + process.children(recursive=True):
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                switches += thread_switches(proc.pid)
            except (psutil.NoSuchProcess, FileNotFoundError):
                continue
        return cpu, switches

    cpu0, sw0 = totals()
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    cpu1, sw1 = totals()
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu1 - cpu0,
        "cpu_percent": 100.0 * (cpu1 - cpu0) / elapsed,
        "wakeups": sw1 - sw0,
        "wakeups_per_second": (sw1 - sw0) / elapsed,
    }


def run(dirs: int, seconds: float, bindir: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="scingestor-idle-") as tmp, SciCatServer() as server:
        root = Path(tmp)
        make_tree(root, dirs)
        config = write_config(root, server, ingestion_delay_time=0)
        daemon = start_daemon(config, root / "daemon.log", bindir)
        try:
            time.sleep(5.0)  # set-up: initial scan of the tree
            result = measure(psutil.Process(daemon.pid), seconds)
            log = (root / "daemon.log").read_text()
            result["watch_lines"] = [line for line in log.splitlines() if "watch" in line][-2:]
        finally:
            stop_daemon(daemon)
        result["scan_dirs"] = dirs
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dirs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bindir", help="console scripts of another installation to compare")
    args = parser.parse_args()
    ours = run(args.dirs, args.seconds, None)
    report = {"ours": ours}
    print(
        f"ours: {ours['cpu_seconds']:.3f} CPU s ({ours['cpu_percent']:.4f} %), "
        f"{ours['wakeups']} wake-ups ({ours['wakeups_per_second']:.2f}/s) "
        f"over {ours['seconds']:.0f} s, {args.dirs} scan dirs"
    )
    if args.bindir:
        other = run(args.dirs, args.seconds, args.bindir)
        report["other"] = other
        ratio = other["wakeups"] / max(1, ours["wakeups"])
        print(
            f"other: {other['cpu_seconds']:.3f} CPU s ({other['cpu_percent']:.4f} %), "
            f"{other['wakeups']} wake-ups; ratio other/ours wake-ups {ratio:.1f}x"
        )
    print(f"written {save('idle', report)}")


if __name__ == "__main__":
    main()
