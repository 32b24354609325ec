"""The var dir (metadata JSON, ingested lists) and the journal on a disk that fills up.

The state lives on a small tmpfs of its own.  It is filled to the last
byte while scans arrive, later remounted read-only: the daemon must say
clearly what cannot be written, keep its journal a sequence of whole
entries, stay alive, and ingest everything (once) when the space is back.
Mounting needs root (or CAP_SYS_ADMIN): without it the test is skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Tuple

import pytest

from .conftest import fill, remount, tally, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture
def small_disks(tmpfs) -> Tuple[Path, Path]:
    """Two 16 MiB tmpfs: for the var dir and for the journal (the state dir).

    Two, because a file system with a file open for writing (the journal)
    cannot be remounted read-only: only the var dir's is.
    """
    return tmpfs("var-disk"), tmpfs("state-disk")


def test_disk_full_then_read_only_var_dir(
    small_disks: Tuple[Path, Path], scicat_factory, scenario, reliability_summary
) -> None:
    var_disk, state_disk = small_disks
    server = scicat_factory()
    bid = "97000020"
    env = scenario(server, bid, var=var_disk / "var", state=state_disk / "state")
    names = [f"disk_{index:05d}" for index in range(45)]
    env.scans(names)
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    env.append(names[:10])
    assert wait_until(lambda: env.all_recorded(names[:10]), 60)

    # 1. both disks fill up while scans arrive: metadata, ingested list, journal
    fillers = [fill(var_disk), fill(state_disk)]
    # one burst: its journal entry (20 jobs, > 4 KiB) needs a page of its own
    env.append(names[10:30])
    assert wait_until(lambda: "No space left on device" in daemon.text(), 60), daemon.text()
    time.sleep(1.5)
    assert daemon.alive()
    text = daemon.text()
    assert "Cannot write the ingestor state" in text and str(var_disk) in text
    assert f"journal {state_disk}/state/journal.jsonl cannot be written" in text
    assert env.journal_entries()  # every line whole JSON
    for filler in fillers:
        os.unlink(filler)
    assert wait_until(lambda: env.all_recorded(names[:30]), 90), "not resumed after disk full"
    assert "can be written again" in daemon.text()

    # 2. the var dir turns read-only (remounted, as after an I/O error)
    remount(var_disk, "ro")
    try:
        env.append(names[30:])
        assert wait_until(lambda: "Read-only file system" in daemon.text(), 60), daemon.text()
        time.sleep(1.5)
        assert daemon.alive()
    finally:
        remount(var_disk, "rw")
    assert wait_until(lambda: env.all_recorded(names), 90), "not resumed after read-only"
    assert daemon.stop() == 0
    entries = env.journal_entries()
    assert {entry["op"] for entry in entries} <= {"accept", "done", "offset"}
    assert env.pending_jobs() == 0
    result = reliability_summary.add(
        tally("var dir and journal disk full, var dir read-only", server, bid, names, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result


def test_ingested_list_full_after_the_posts(
    small_disks: Tuple[Path, Path], scicat_factory, scenario, reliability_summary
) -> None:
    # the metadata JSON goes beside the scans: generation and posting work,
    # only the record in the ingested list fails; the retry must find
    # everything in SciCat and post nothing again
    var_disk, state_disk = small_disks
    server = scicat_factory()
    bid = "97000021"
    env = scenario(
        server, bid, var=var_disk / "var", state=state_disk / "state", metadata_in_var_dir=False
    )
    names = [f"record_{index:05d}" for index in range(30)]
    env.scans(names)
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    filler = fill(var_disk)  # before the ingested list has a page of its own
    env.append(names)
    assert wait_until(lambda: len(server.datasets) == len(names), 60)
    assert wait_until(lambda: "No space left on device" in daemon.text(), 30), daemon.text()
    time.sleep(1.0)
    assert daemon.alive()
    assert str(env.ingested_path()) in daemon.text()  # the error names the file
    assert not env.all_recorded(names)
    os.unlink(filler)
    assert wait_until(lambda: env.all_recorded(names), 90), "not resumed after disk full"
    assert daemon.stop() == 0
    result = reliability_summary.add(
        tally("ingested list full after the POSTs", server, bid, names, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result
    assert env.pending_jobs() == 0
