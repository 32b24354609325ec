"""Scale: start-up time and memory with a long history and a wide tree.

Two runs of ``scicat_dataset_ingestor``: a baseline (one scan directory,
an empty list) and a large one (10,000 watched scan directories and a list
file of 100,000 lines that are all recorded in the ingested list, as after
a long beamtime).  Reports the time from the process start to "Ingestor
started" (all watches set and the list read), the time until the list's
lines have been checked, and the resident memory of both.  Target: memory
growth < 50 MB for 100,000 ingested-list lines.

    python benchmarks/bench_scale.py [--lines 100000] [--dirs 10000] [--bindir DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from common import environment, make_tree, save, script, stop_daemon, wait_for, write_config

from scingestor.testing.scicat_server import SciCatServer

BID = "99001234"


def prepare(root: Path, lines: int, dirs: int, server: SciCatServer) -> Path:
    tree = make_tree(root, dirs)
    names = [f"hist_{index:06d}" for index in range(lines)]
    tree["list"].write_text("".join(f"\n{name}" for name in names))
    config = write_config(root, server, ingestion_delay_time=0, ingest_dataset_attachment=False)
    ingested = root / "var" / str(tree["raw"]).lstrip("/") / f"scicat-ingested-datasets-{BID}.lst"
    ingested.parent.mkdir(parents=True, exist_ok=True)
    ingested.write_text(
        "".join(f"{name} 1700000000.123456 1700000000.234567 0\n" for name in names)
    )
    return config


def run(lines: int, dirs: int, bindir: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="scingestor-scale-") as tmp, SciCatServer() as server:
        root = Path(tmp)
        config = prepare(root, lines, dirs, server)
        log = root / "daemon.log"
        start = time.monotonic()
        daemon = subprocess.Popen(
            [script("scicat_dataset_ingestor", bindir), "-c", str(config), "-f", str(log)],
            stdin=subprocess.DEVNULL,
            env=environment(bindir),
        )
        try:
            ready = wait_for(
                lambda: log.exists() and "Ingestor started" in log.read_text(), 600, 0.02
            )
            started = time.monotonic() - start
            # the list is read once the watcher saw it; wait until that settled
            wait_for(lambda: "Watching dataset list" in log.read_text(), 600, 0.02)
            listed = time.monotonic() - start
            time.sleep(2.0)
            process = psutil.Process(daemon.pid)
            rss = process.memory_info().rss + sum(
                child.memory_info().rss for child in process.children(recursive=True)
            )
            posts = sum(
                1
                for request in server.recorded("POST")
                if request.path.lower().endswith("/datasets")
            )
        finally:
            stop_daemon(daemon)
        return {
            "lines": lines,
            "dirs": dirs,
            "ready": ready,
            "start_seconds": started,
            "list_seconds": listed,
            "rss_mb": rss / 2**20,
            "reposted": posts,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--dirs", type=int, default=10_000)
    parser.add_argument("--bindir", help="console scripts of another installation to compare")
    args = parser.parse_args()
    report = {}
    for label, bindir in [("ours", None)] + ([("other", args.bindir)] if args.bindir else []):
        base = run(1, 1, bindir)
        large = run(args.lines, args.dirs, bindir)
        growth = large["rss_mb"] - base["rss_mb"]
        report[label] = {"baseline": base, "large": large, "rss_growth_mb": growth}
        print(
            f"{label}: start {base['start_seconds']:.2f} s -> {large['start_seconds']:.2f} s "
            f"with {args.dirs} dirs; list of {args.lines} lines checked after "
            f"{large['list_seconds']:.2f} s; memory {base['rss_mb']:.0f} MB -> "
            f"{large['rss_mb']:.0f} MB (growth {growth:.0f} MB); "
            f"{large['reposted']} re-posted"
        )
    print(f"written {save('scale', report)}")


if __name__ == "__main__":
    main()
