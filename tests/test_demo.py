"""``scingestor-demo`` as a user runs it: a process that cleans up after itself.

SIGTERM (``kill``, systemd, a CI timeout) must stop what the demo started
-- the Tango database, the device server and its generator workers -- and
remove its scratch folder, as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Set

import pytest

from .helpers import wait_until

pytest.importorskip("tango")


def descendants(pid: int) -> Set[int]:
    """Every living process below *pid* (children, their children, ...)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: Set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (a zombie left to a non-reaping init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_stops_everything_the_demo_started(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where its scratch folder goes
    env.pop("TANGO_HOST", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "scingestor.demo", "--serve", "600"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: List[str] = []

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            output.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(
            lambda: any("Serving for" in line for line in output) or demo.poll() is not None, 240
        ), "".join(output)
        assert demo.poll() is None, "".join(output)
        children = descendants(demo.pid)
        scratch = [path for path in tmp_path.iterdir() if path.name.startswith("scingestor-demo-")]
        assert len(scratch) == 1 and (scratch[0] / "scingestor.yaml").exists()
        # the database, the device server and the device's generator workers
        assert len(children) >= 3, children
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(90) == 128 + signal.SIGTERM
    finally:
        if demo.poll() is None:  # the test failed: leave nothing behind either
            for pid in descendants(demo.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            demo.kill()
            demo.wait(10)
    reader.join(10)
    assert wait_until(lambda: not any(alive(pid) for pid in children), 30), [
        pid for pid in children if alive(pid)
    ]
    assert not scratch[0].exists()
    assert "SIGTERM: stopped" in "".join(output)
