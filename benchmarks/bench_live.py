"""Live latency: a line appended to a list file → its dataset POST at SciCat.

Runs ``scicat_dataset_ingestor`` with ``ingestion_delay_time: 0`` against
the SciCat-compatible server and appends scan lines (of small NeXus scans
made beforehand) at 1, 10 and 50 scans/s.  The latency of a scan is the
time from its append to the arrival of its dataset POST at the server;
reported as median, p95 and max per rate, and the first scan's on its own
(the scan that used to wait for the generator workers).  Target: median
<= 50 ms.  The default configuration: attachments (thumbnails) on.

"First dataset posted after start of work" after a daemon start: the
daemon is started with one scan already listed (the work is there when it
starts), and the time from its launch to that dataset's POST is reported
(``--first-runs`` times; target: within 1 s).

    python benchmarks/bench_live.py [--rates 1,10,50] [--scans 20] [--first-runs 3]
                                    [--bindir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import make_tree, save, start_daemon, stop_daemon, summary, wait_for, write_config

from scingestor.testing.builders import append_list_line, make_scan
from scingestor.testing.scicat_server import SciCatServer


def run_rate(rate: float, scans: int, bindir: str | None, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="scingestor-live-") as tmp, SciCatServer() as server:
        root = Path(tmp)
        tree = make_tree(root)
        names = [f"live_{index:05d}" for index in range(scans)]
        for name in names:
            make_scan(tree["raw"], name)
        tree["list"].write_text("")
        config = write_config(root, server, ingestion_delay_time=0)
        daemon = start_daemon(config, root / "daemon.log", bindir)
        try:
            wait_for(
                lambda: (
                    "watch" in (root / "daemon.log").read_text()
                    if (root / "daemon.log").exists()
                    else False
                ),
                30,
            )
            time.sleep(1.0)
            appended = {}
            start = time.monotonic()
            for index, name in enumerate(names):
                target = start + index / rate
                time.sleep(max(0.0, target - time.monotonic()))
                appended[f"{'99001234'}/{name}"] = time.time()
                append_list_line(tree["list"], name)

            def posted() -> dict:
                return dataset_posts(server)

            wait_for(lambda: len(posted()) >= scans, timeout, 0.2)
            arrivals = posted()
        finally:
            stop_daemon(daemon)
        latencies = [arrivals[pid] - at for pid, at in appended.items() if pid in arrivals]
        result = summary(latencies)
        first_pid = f"99001234/{names[0]}"
        result.update(
            rate=rate,
            scans=scans,
            ingested=len(latencies),
            first=arrivals.get(first_pid, float("nan")) - appended[first_pid],
        )
        return result


def dataset_posts(server: SciCatServer) -> dict:
    """pid → arrival time of its first dataset POST (not the attachment POSTs)."""
    found: dict = {}
    for request in server.recorded(method="POST"):
        if (
            request.path.lower().endswith("/datasets")
            and isinstance(request.body, dict)
            and request.status in (200, 201)
            and request.body.get("pid")
        ):
            found.setdefault(request.body["pid"], request.time)
    return found


def first_after_start(bindir: str | None, timeout: float) -> float:
    """Seconds from the daemon's launch to the POST of a scan listed before it started."""
    with tempfile.TemporaryDirectory(prefix="scingestor-first-") as tmp, SciCatServer() as server:
        root = Path(tmp)
        tree = make_tree(root)
        make_scan(tree["raw"], "first_00001")
        append_list_line(tree["list"], "first_00001")
        # listed a while before the daemon starts (else the watcher lets a
        # list file that was just written settle for 2 s before reading it)
        past = time.time() - 60
        os.utime(tree["list"], (past, past))
        config = write_config(root, server, ingestion_delay_time=0)
        started = time.time()
        daemon = start_daemon(config, root / "daemon.log", bindir)
        try:

            def arrival() -> float | None:
                return min(dataset_posts(server).values(), default=None)

            wait_for(lambda: arrival() is not None, timeout, 0.02)
            at = arrival()
        finally:
            stop_daemon(daemon)
        return (at - started) if at is not None else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,10,50")
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--first-runs", type=int, default=3, help="daemon starts with a scan waiting (0: none)"
    )
    parser.add_argument("--bindir", help="console scripts of another installation to compare")
    args = parser.parse_args()
    report = {}
    for label, bindir in [("ours", None)] + ([("other", args.bindir)] if args.bindir else []):
        report[label] = []
        for rate in [float(r) for r in args.rates.split(",") if r]:
            result = run_rate(rate, args.scans, bindir, args.timeout)
            report[label].append(result)
            print(
                f"{label}: {rate:g} scans/s: {result['ingested']}/{result['scans']} ingested, "
                f"latency median {result['median'] * 1000:.0f} ms, "
                f"p95 {result['p95'] * 1000:.0f} ms, max {result['max'] * 1000:.0f} ms, "
                f"first scan {result['first'] * 1000:.0f} ms",
                flush=True,
            )
        firsts = [first_after_start(bindir, args.timeout) for _ in range(args.first_runs)]
        if firsts:
            report[f"{label}_first_after_start"] = firsts
            print(
                f"{label}: first dataset posted after daemon start: "
                + ", ".join(f"{value:.2f} s" for value in firsts),
                flush=True,
            )
    if "other" in report:
        for ours, other in zip(report["ours"], report["other"]):
            print(
                f"ratio other/ours median at {ours['rate']:g}/s: "
                f"{other['median'] / ours['median']:.1f}x"
            )
    print(f"written {save('live', report)}")


if __name__ == "__main__":
    main()
