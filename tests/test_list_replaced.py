"""A list file replaced or truncated, live or while the daemon is stopped (issue 18, item 4).

The journal remembers how far each list file was read.  When the file is
replaced by a shorter one, or truncated, that offset no longer points into
the file that was read: resuming from it cuts a line in two, posts a
dataset named after half a line and loses the real scan.  The daemon must
notice (live, and at a restart), read the new file from its start, and
never take part of a line for a record; the ingested list keeps the lines
already done from being ingested again.

The service runs in the test process, stopped and started again on the
same state folder; real inotify, real NeXus files, our test SciCat server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from scingestor.config import config_from_dict
from scingestor.service import IngestorService
from scingestor.testing.builders import make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from .helpers import posted_pids, wait_until

FIRST = [f"rot_a_scan_name_{index:05d}" for index in range(1, 4)]
SHORT = ["sh_00004"]
LATER = [f"rot_b_long_scan_name_{index:05d}" for index in range(5, 9)]


@pytest.fixture(scope="module")
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


class Setup:
    """One beamtime with its scans, and a service that can be stopped and started again."""

    def __init__(self, tmp_path: Path, server: SciCatServer, bid: str) -> None:
        self.server = server
        self.bid = bid
        gpfs = tmp_path / "gpfs"
        self.raw = gpfs / "raw"
        self.raw.mkdir(parents=True)
        make_beamtime(gpfs, bid)
        for name in FIRST + SHORT + LATER:
            make_scan(self.raw, name)
        self.listing = self.raw / f"scicat-datasets-{bid}.lst"
        account = DEFAULT_ACCOUNTS[0]
        credential = tmp_path / "credential.json"
        credential.write_text(
            json.dumps({"username": account.username, "password": account.password})
        )
        credential.chmod(0o600)
        values: Dict[str, object] = {
            "scicat_url": server.url,
            "ingestor_credential_file": str(credential),
            "scicat_users_login_path": "auth/login",
            "beamtime_dirs": [str(gpfs)],
            "ingestor_var_dir": str(tmp_path / "var"),
            "ingestor_state_dir": str(tmp_path / "state"),
            "ingestion_delay_time": 0.0,
            "ingest_dataset_attachment": False,
        }
        self.service = IngestorService(config_from_dict(values))

    def write(self, names: List[str], mode: str = "a") -> None:
        """Lines the way the writers write them: ``"\\n" + name`` (one write)."""
        with open(self.listing, mode, encoding="utf-8") as handle:
            handle.write("".join(f"\n{name}" for name in names))

    def replace(self, names: List[str]) -> None:
        """A new file (new inode) moved over the list file, as an editor or a copy does."""
        fresh = self.listing.with_suffix(".new")
        fresh.write_text("".join(f"\n{name}" for name in names), encoding="utf-8")
        os.replace(fresh, self.listing)

    def posted(self, names: List[str]) -> bool:
        pids = posted_pids(self.server, self.bid)
        return all(pids[f"{self.bid}/{name}"] >= 1 for name in names)

    def ingest_first(self) -> int:
        """Start, list FIRST, wait until they are in SciCat; the bytes of the list file."""
        self.service.start()
        self.write(FIRST)
        assert wait_until(lambda: self.posted(FIRST), 60)
        assert self.service.wait_idle(30)
        return self.listing.stat().st_size

    def check_final(self, old_offset: int) -> None:
        """Every listed scan once; no dataset named after a piece of a line."""
        content = self.listing.read_bytes()
        # the test means something only if the old offset falls inside a line now
        assert len(content) > old_offset and content[old_offset - 1 : old_offset] != b"\n"
        assert content[old_offset : old_offset + 1] != b"\n"
        assert wait_until(lambda: self.posted(SHORT + LATER), 90), posted_pids(
            self.server, self.bid
        )
        assert self.service.wait_idle(30)
        pids = posted_pids(self.server, self.bid)
        expected = {f"{self.bid}/{name}" for name in FIRST + SHORT + LATER}
        assert set(pids) <= expected, f"datasets of half lines: {set(pids) - expected}"
        assert set(pids.values()) == {1}, pids


@pytest.fixture
def setup(tmp_path: Path, server: SciCatServer) -> Iterator[Setup]:
    made: List[Setup] = []

    def make(bid: str) -> Setup:
        item = Setup(tmp_path, server, bid)
        made.append(item)
        return item

    yield make  # type: ignore[misc]
    for item in made:
        item.service.stop()


def test_replaced_live_by_a_shorter_file_then_grown_while_stopped(setup) -> None:
    env = setup("12000041")
    old_offset = env.ingest_first()
    env.replace(SHORT)
    assert wait_until(lambda: env.posted(SHORT), 60)
    assert env.service.wait_idle(30)
    env.service.stop()
    env.write(LATER)
    env.service.start()
    env.check_final(old_offset)


def test_truncated_live_then_grown_while_stopped(setup) -> None:
    env = setup("12000042")
    old_offset = env.ingest_first()
    env.write(SHORT, mode="w")  # truncated in place (same inode), then a shorter content
    assert wait_until(lambda: env.posted(SHORT), 60)
    assert env.service.wait_idle(30)
    env.service.stop()
    env.write(LATER)
    env.service.start()
    env.check_final(old_offset)


def test_replaced_and_grown_while_stopped(setup) -> None:
    env = setup("12000043")
    old_offset = env.ingest_first()
    env.service.stop()
    env.replace(SHORT + LATER)
    env.service.start()
    env.check_final(old_offset)


# -- the parts: the tail's fingerprint, the journal's read points -------------------------


def test_a_tail_resumed_on_another_file_reads_it_from_its_start(tmp_path: Path) -> None:
    from scingestor.watch.tailer import ListFileTailer

    path = tmp_path / "list.lst"
    path.write_bytes(b"\nscan_one_long\nscan_two_long")
    records = ListFileTailer(str(path)).read(final=True)
    point = records[-1].point
    assert point.offset == path.stat().st_size and point.check
    # the same file grown: resumed where it was
    with open(path, "ab") as handle:
        handle.write(b"\nscan_three")
    assert [r.text for r in ListFileTailer(str(path), point.offset, point.check).read(True)] == [
        "scan_three"
    ]
    # another file, longer than the offset: read from its start, never half a line
    path.write_bytes(b"\nab\nscan_four_is_longer\nscan_five")
    again = ListFileTailer(str(path), point.offset, point.check).read(final=True)
    assert [r.text for r in again] == ["ab", "scan_four_is_longer", "scan_five"]
    # an offset without fingerprint (an older journal) inside a line: from the start too
    legacy = ListFileTailer(str(path), 10).read(final=True)
    assert [r.text for r in legacy] == ["ab", "scan_four_is_longer", "scan_five"]


def test_the_journal_keeps_a_read_point_that_went_back(tmp_path: Path) -> None:
    from scingestor.journal import Journal
    from scingestor.readpoint import ReadPoint

    journal = Journal(str(tmp_path))
    journal.open()
    journal.accept("/a.lst", ReadPoint(60, "aaaa"), [])
    journal.accept("/a.lst", ReadPoint(12, "bbbb"), [])  # the file was read again from its start
    journal.accept("/a.lst", None, [])  # a re-ingestion: the point stays
    assert journal.read_point("/a.lst") == ReadPoint(12, "bbbb")
    journal.close()
    # an older version's entries (no fingerprint) only move the offset forward
    with open(tmp_path / "journal.jsonl", "a") as handle:
        handle.write(json.dumps({"op": "accept", "list": "/b.lst", "offset": 30, "jobs": []}))
        handle.write("\n")
        handle.write(json.dumps({"op": "accept", "list": "/b.lst", "offset": 20, "jobs": []}))
        handle.write("\n")
    again = Journal(str(tmp_path))
    again.open()
    try:
        assert again.read_point("/a.lst") == ReadPoint(12, "bbbb")
        assert again.read_point("/b.lst") == ReadPoint(30)
    finally:
        again.close()
    reopened = Journal(str(tmp_path))  # after the compaction
    reopened.open()
    try:
        assert reopened.read_point("/a.lst") == ReadPoint(12, "bbbb")
    finally:
        reopened.close()


def test_deleted_and_written_again_live(setup) -> None:
    env = setup("12000044")
    old_offset = env.ingest_first()
    env.listing.unlink()
    assert wait_until(lambda: str(env.listing) not in env.service.intake.lists, 30)
    env.replace(SHORT + LATER)  # a new file (moved in), longer than what was read of the old
    env.check_final(old_offset)


def test_a_file_read_again_from_its_start_starts_outside_any_measurement(setup) -> None:
    env = setup("12000045")
    env.service.start()
    env.write(["__command__ start calib", FIRST[0]])
    assert wait_until(lambda: env.posted(FIRST[:1]), 60)
    assert env.service.current_measurement(str(env.raw)) == "calib"
    env.replace(["rot_a_scan_name_00002_is_a_long_first_line", *SHORT])  # no measurement
    assert wait_until(lambda: env.posted(SHORT), 60)
    assert env.service.current_measurement(str(env.raw)) == ""
