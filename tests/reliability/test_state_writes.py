"""The journal and the ingested list on a full disk: whole entries or none.

A write cut by a full disk must not leave half an entry behind: half a
journal entry would swallow the next one, half an ingested-list record
(``scan 0``) would read as a done legacy record and the failed scan would
never be retried.  Each test puts the file on a small tmpfs, fills it up
and checks the file byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from scingestor.errors import JournalError
from scingestor.journal import Journal
from scingestor.state import NOT_DONE, IngestedList, IngestedRecord

from .conftest import fill

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def new_jobs(journal: Journal, count: int, first_line: int = 1, name: str = "scan"):
    return [
        journal.new_job(
            list_file="/bt/raw/list.lst",
            beamtime_file="/bt/bt.json",
            lineno=first_line + index,
            text=f"{name}_{first_line + index:05d}",
        )
        for index in range(count)
    ]


def test_journal_on_a_full_disk_keeps_whole_entries_and_carries_the_jobs(tmpfs) -> None:
    disk = tmpfs("journal", size="1m")
    journal = Journal(str(disk / "state"))
    journal.open()
    (done,) = new_jobs(journal, 1)
    journal.accept("/bt/raw/list.lst", 10, [done])
    journal.retire(done)
    before = Path(journal.path).read_bytes()
    filler = fill(disk)
    # an entry larger than what is left in the file's last page
    waiting = new_jobs(journal, 40, 2)
    with pytest.raises(
        JournalError, match=f"journal {journal.path} cannot be written: No space left on device"
    ):
        journal.accept("/bt/raw/list.lst", 500, waiting)
    assert Path(journal.path).read_bytes() == before  # cut back: no half entry
    journal.retire(waiting[0])  # logged, never raised
    assert journal.unsaved_count() == 39
    os.unlink(filler)
    later = new_jobs(journal, 2, 42)
    journal.accept("/bt/raw/list.lst", 600, later)  # carries the 39 along
    assert journal.unsaved_count() == 0
    journal.close()
    lines = Path(journal.path).read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    again = Journal(str(disk / "state"))
    pending = again.open()
    assert [job.text for job in pending] == [job.text for job in waiting[1:] + later]
    assert again.offset("/bt/raw/list.lst") == 600
    again.close()


def test_journal_opens_on_a_full_disk_without_its_torn_entry(tmpfs, caplog) -> None:
    disk = tmpfs("journal", size="1m")
    journal = Journal(str(disk / "state"))
    journal.open()
    jobs = new_jobs(journal, 3)
    journal.accept("/bt/raw/list.lst", 30, jobs)
    journal.retire(jobs[0])
    journal.close()
    with open(journal.path, "a") as handle:  # a crash while writing
        handle.write('{"op": "done", "i')
    filler = fill(disk)
    again = Journal(str(disk / "state"))
    with caplog.at_level(logging.WARNING, logger="scingestor"):
        pending = again.open()  # cannot compact: appends
    assert [job.text for job in pending] == [job.text for job in jobs[1:]]
    assert "cannot be compacted (No space left on device)" in caplog.text
    assert Path(again.path).read_text().endswith("}\n")  # the torn entry is cut off
    os.unlink(filler)
    again.retire(jobs[1])
    again.close()
    third = Journal(str(disk / "state"))
    assert [job.text for job in third.open()] == [jobs[2].text]
    third.close()


def test_ingested_list_on_a_full_disk_gets_no_torn_record(tmpfs) -> None:
    disk = tmpfs("var", size="1m")
    path = disk / "scicat-ingested-datasets-1.lst"
    ingested = IngestedList(str(path))
    # most of a page: a long record fits only partly into what is left
    ingested.append(IngestedRecord("x" * 4000, 1.5, 2.5, 0.0))
    before = path.read_bytes()
    filler = fill(disk)
    failed = IngestedRecord("scan_with_a_long_name_" + "y" * 300, NOT_DONE, NOT_DONE, NOT_DONE)
    with pytest.raises(OSError) as raised:
        ingested.append(failed)
    assert raised.value.filename == str(path) and "No space left" in str(raised.value)
    assert path.read_bytes() == before  # nothing of the record: no "scan 0"
    assert not ingested.is_done(failed.key) and ingested.last(failed.key) is None
    os.unlink(filler)
    ingested.append(failed)
    reread = IngestedList(str(path)).load()
    assert [record.key for record in reread.records] == ["x" * 4000, failed.key]
    assert not reread.is_done(failed.key)  # a failure record: retried later
