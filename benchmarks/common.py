"""Shared set-up of the benchmarks: a beamtime tree, a config, the daemon process.

The benchmarks measure the real thing: the daemon runs as its console
script in a child process, the SciCat-compatible server answers on
loopback in the benchmark's own process, and timings come from the
server's request record.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from scingestor.testing.builders import make_beamtime
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

BEAMTIME_ID = "99001234"


def make_tree(root: Path, scan_dirs: int = 1) -> Dict[str, Path]:
    """A beamtime dir with *scan_dirs* scan directories (``raw/s0000`` …)."""
    if root.exists():
        shutil.rmtree(root)
    beamtime = root / "beamtime"
    raw = beamtime / "raw"
    raw.mkdir(parents=True)
    make_beamtime(beamtime, BEAMTIME_ID)
    for index in range(scan_dirs - 1):
        (raw / f"s{index:05d}").mkdir()
    return {
        "root": root,
        "beamtime": beamtime,
        "raw": raw,
        "list": raw / f"scicat-datasets-{BEAMTIME_ID}.lst",
    }


def write_config(root: Path, server: SciCatServer, **extra: object) -> Path:
    account = DEFAULT_ACCOUNTS[0]
    credential = root / "credential.json"
    credential.write_text(json.dumps({"username": account.username, "password": account.password}))
    credential.chmod(0o600)
    data = {
        "scicat_url": server.url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "beamtime_dirs": [str(root / "beamtime")],
        "ingestor_var_dir": str(root / "var"),
        "ingestor_state_dir": str(root / "state"),
        "max_scandir_depth": -1,
    }
    data.update(extra)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def script(name: str, override: Optional[str] = None) -> str:
    """A console script of this installation, or of another one under *override*."""
    directory = override or os.path.dirname(sys.executable)
    return os.path.join(directory, name)


def environment(bindir: Optional[str] = None) -> Dict[str, str]:
    """The environment of an ingestor process: its own ``bin`` first on PATH.

    Installations run their generator commands (``nxsfileinfo``) by name.
    """
    env = dict(os.environ)
    directory = bindir or os.path.dirname(sys.executable)
    env["PATH"] = directory + os.pathsep + env.get("PATH", "")
    return env


def start_daemon(config: Path, log: Path, bindir: Optional[str] = None) -> subprocess.Popen:
    return subprocess.Popen(
        [script("scicat_dataset_ingestor", bindir), "-c", str(config), "-f", str(log)],
        stdin=subprocess.DEVNULL,
        env=environment(bindir),
    )


def stop_daemon(process: subprocess.Popen, timeout: float = 30.0) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: List[float]) -> Dict[str, float]:
    return {
        "count": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p95": percentile(values, 0.95),
        "max": max(values) if values else float("nan"),
    }


def save(name: str, result: dict) -> Path:
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
