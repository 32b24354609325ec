"""The job journal: durable accept, replay after a crash, compaction, locking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scingestor.errors import JournalError
from scingestor.journal import Journal


def accept(journal: Journal, list_file: str, offset: int, *texts: str):
    jobs = [
        journal.new_job(list_file=list_file, beamtime_file="/bt.json", lineno=i + 1, text=text)
        for i, text in enumerate(texts)
    ]
    journal.accept(list_file, offset, jobs)
    return jobs


def test_replay_returns_pending_jobs_and_offsets(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    assert journal.open() == []
    first, second = accept(journal, "/a.lst", 20, "scan_1", "scan_2 det")
    accept(journal, "/b.lst", 7, "other")
    journal.retire(first)
    journal.close()

    again = Journal(str(tmp_path))
    pending = again.open()
    assert [(job.list_file, job.text) for job in pending] == [
        ("/a.lst", "scan_2 det"),
        ("/b.lst", "other"),
    ]
    assert again.offset("/a.lst") == 20 and again.offset("/b.lst") == 7
    assert again.offset("/unknown.lst") == 0
    newer = again.new_job(list_file="/a.lst", beamtime_file="/bt.json", lineno=3, text="x")
    assert newer.id > max(job.id for job in pending)
    again.close()


def test_compaction_drops_retired_jobs(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    journal.open()
    for index in range(50):
        (job,) = accept(journal, "/a.lst", 10 * (index + 1), f"scan_{index}")
        journal.retire(job)
    journal.close()
    again = Journal(str(tmp_path))
    assert again.open() == []
    lines = Path(again.path).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["offset"] == 500
    again.close()


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    journal.open()
    accept(journal, "/a.lst", 9, "scan_1")
    journal.close()
    with open(journal.path, "a") as handle:
        handle.write('{"op": "accept", "list": "/a.lst", "off')
    again = Journal(str(tmp_path))
    assert [job.text for job in again.open()] == ["scan_1"]
    again.close()


def test_survives_kill_after_accept(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from scingestor.journal import Journal\n"
        f"j = Journal({str(tmp_path)!r}); j.open()\n"
        "job = j.new_job(list_file='/a.lst', beamtime_file='/b', lineno=1, text='scan_k')\n"
        "j.accept('/a.lst', 8, [job])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert result.returncode == -9
    again = Journal(str(tmp_path))
    assert [job.text for job in again.open()] == ["scan_k"]
    again.close()


def test_second_daemon_is_refused(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    journal.open()
    with pytest.raises(JournalError, match="another ingestor is running"):
        Journal(str(tmp_path)).open()
    journal.close()
    Journal(str(tmp_path)).open()


def test_unusable_state_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match=str(blocker)):
        Journal(str(blocker / "state")).open()


def test_forget_offset(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path))
    journal.open()
    accept(journal, "/a.lst", 30, "scan_1")
    journal.forget_offset("/a.lst")
    assert journal.offset("/a.lst") == 0
    journal.close()
    again = Journal(str(tmp_path))
    again.open()
    assert again.offset("/a.lst") == 0
    again.close()
    assert os.path.exists(again.path)
