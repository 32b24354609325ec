"""``kill -9`` leftovers (``.part-*``, ``.scingestor-probe-*``) go at the next start (issue 18, 5).

A process killed while a generator wrote into its hidden ``.part-*``
directory, or while it probed a directory, leaves them for good.  The next
daemon or batch run removes those of dead processes, and only those: a
live process's temporaries, and unnamed old-style ones younger than a day,
stay.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from scingestor.cli import dataset_ingest

from ..helpers import wait_until
from .conftest import Daemon

# a process that stops inside a generator's write and inside a probe, as a kill finds it
WRITER = """
import os, sys, threading, time
from scingestor import worker
from scingestor.metadata import files
meta = sys.argv[1]
def part():
    with files.written_whole(os.path.join(meta, "scan_09999.scan.json")) as tmp:
        open(tmp, "w").write("{")
        time.sleep(3600)
threading.Thread(target=part, daemon=True).start()
worker.os.fsync = lambda fd: time.sleep(3600)  # the probe stops after its write
worker._probe_write(meta)
"""


def temporaries(directory: Path) -> List[str]:
    return sorted(
        name
        for name in os.listdir(directory)
        if name.startswith(".part-") or name.startswith(".scingestor-probe-")
    )


def writer(meta: Path) -> "subprocess.Popen[bytes]":
    """Start a writer; return once it holds its two temporaries."""
    before = set(temporaries(meta))
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(meta)], start_new_session=True)
    assert wait_until(lambda: len(set(temporaries(meta)) - before) == 2, 60), temporaries(meta)
    return process


def kill9(process: "subprocess.Popen[bytes]") -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)


@pytest.fixture
def env(beamtime, tmp_path: Path):
    env = beamtime(
        ingest_dataset_attachment=False,
        ingestion_delay_time=0.0,
        ingestor_state_dir=str(tmp_path / "state"),
    )
    env.scan("scan_00001")
    env.meta_dir().mkdir(parents=True, exist_ok=True)
    return env


def old_style(meta: Path, age: float) -> List[str]:
    """Leftovers named as before (no host, no pid), *age* seconds old."""
    part = meta / f".part-old{int(age)}x"
    part.mkdir()
    (part / "scan.json").write_text("{")
    probe = meta / f".scingestor-probe-old{int(age)}x"
    probe.write_text("x")
    then = time.time() - age
    for path in (part / "scan.json", part, probe):
        os.utime(path, (then, then))
    return [part.name, probe.name]


def test_batch_removes_dead_processes_leftovers_only(env, capsys, restore_logging) -> None:
    meta = env.meta_dir()
    dead = writer(meta)
    kill9(dead)
    killed = temporaries(meta)
    live = writer(meta)
    try:
        alive = sorted(set(temporaries(meta)) - set(killed))
        stale = old_style(meta, 2 * 24 * 3600)
        recent = old_style(meta, 60)
        env.lines("scan_00001")
        code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
        assert code == 0, capsys.readouterr().out
        assert temporaries(meta) == sorted(alive + recent)
        assert not set(stale) & set(temporaries(meta))
    finally:
        kill9(live)


def test_daemon_removes_dead_processes_leftovers_at_start(env, tmp_path: Path) -> None:
    meta = env.meta_dir()
    kill9(writer(meta))
    assert len(temporaries(meta)) == 2
    env.lines("scan_00001")
    daemon = Daemon(env.config_file, tmp_path / "daemon.log")
    try:
        daemon.wait_started()
        assert wait_until(lambda: env.pid("scan_00001") in env.datasets(), 60), daemon.text()
        assert wait_until(lambda: not temporaries(meta), 30), temporaries(meta)
    finally:
        assert daemon.stop() == 0
