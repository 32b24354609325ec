"""The watching layer: real inotify on real directories (tmp_path), one event thread.

Waits are on a condition variable (up to a few seconds for the expected
event), never fixed sleeps, except where idleness itself is measured.  To
show that something did *not* happen, a marker record is appended to
another list file afterwards: the one event thread handles events in order,
so once the marker is reported the earlier event has been handled.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from scingestor.beamtime import Beamtime
from scingestor.config import IngestorConfig, config_from_dict
from scingestor.errors import WatchLimitError
from scingestor.watch import ListFileTailer, ListRecord, Watcher, core_form
from scingestor.watch import inotify as inotify_module
from scingestor.watch.inotify import Inotify, parse_events

BID = "99001234"
LIST = f"scicat-datasets-{BID}.lst"
WAIT = 30.0  # generous: a loaded 2-core machine; never reached when all is well
SETTLE = 0.3


# ---------------------------------------------------------------------------
# helpers


class RecordingSink:
    """Records every sink call; tests wait on its condition."""

    def __init__(self) -> None:
        self.events: List[Tuple[Any, ...]] = []
        self.cond = threading.Condition()
        self.threads: set = set()

    def _add(self, *item: Any) -> None:
        with self.cond:
            self.threads.add(threading.get_ident())
            self.events.append(item)
            self.cond.notify_all()

    def beamtime_added(self, beamtime: Beamtime) -> None:
        self._add("added", beamtime)

    def beamtime_changed(self, beamtime: Beamtime) -> None:
        self._add("changed", beamtime)

    def beamtime_removed(self, path: str) -> None:
        self._add("removed", path)

    def beamtime_error(self, path: str, error: Exception) -> None:
        self._add("error", path, error)

    def list_file_added(self, beamtime: Beamtime, list_file: str) -> None:
        self._add("list_added", beamtime, list_file)

    def list_records(self, beamtime: Beamtime, list_file: str, records: List[ListRecord]) -> None:
        self._add("records", beamtime, list_file, list(records))

    def list_file_removed(self, beamtime: Beamtime, list_file: str) -> None:
        self._add("list_removed", beamtime, list_file)

    # -- queries ------------------------------------------------------------
    def of(self, kind: str) -> List[Tuple[Any, ...]]:
        with self.cond:
            return [event for event in self.events if event[0] == kind]

    def records(self, list_file: Optional[Path] = None) -> List[Tuple[int, str]]:
        result: List[Tuple[int, str]] = []
        for event in self.of("records"):
            if list_file is None or event[2] == str(list_file):
                result.extend((record.lineno, record.text) for record in event[3])
        return result

    def texts(self, list_file: Optional[Path] = None) -> List[str]:
        return [text for _lineno, text in self.records(list_file)]

    def lists_added(self) -> List[str]:
        return [event[2] for event in self.of("list_added")]

    def wait(
        self, predicate: Callable[["RecordingSink"], bool], what: str = "", timeout: float = WAIT
    ) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(
                    f"timed out waiting for {what or predicate}; events: {self.events}"
                )


def beamtime_file(directory: Path, bid: str = BID, **fields: Any) -> Path:
    data: Dict[str, Any] = {
        "beamtimeId": bid,
        "proposalId": "99991173",
        "beamline": "p00",
        "corePath": str(directory),
        "proposalType": "I",
        "title": "test beamtime",
    }
    data.update(fields)
    data = {key: value for key, value in data.items() if value is not None}
    path = directory / f"beamtime-metadata-{bid}.json"
    path.write_text(json.dumps(data))
    return path


def append(path: Path, record: str) -> None:
    """What the sardana macros do: append "\\n" + record and close."""
    with open(path, "a") as handle:
        handle.write("\n" + record)


def old(path: Path) -> Path:
    """Make a file look long closed (its unterminated last record is complete)."""
    stamp = time.time() - 3600
    os.utime(path, (stamp, stamp))
    return path


def list_with(directory: Path, *records: str, name: str = LIST) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.touch()
    for record in records:
        append(path, record)
    return old(path)


def make_config(**values: Any) -> IngestorConfig:
    values.setdefault("scandir_blacklist", [])
    return config_from_dict(values)


@pytest.fixture
def watch() -> Iterator[Callable[..., Tuple[Watcher, RecordingSink]]]:
    """Start watchers (stopped at the end): ``watch(config_values...) -> (watcher, sink)``."""
    started: List[Watcher] = []

    def start(
        offsets: Optional[Callable[[str], int]] = None, settle_time: float = SETTLE, **values: Any
    ) -> Tuple[Watcher, RecordingSink]:
        sink = RecordingSink()
        watcher = Watcher(make_config(**values), sink, offsets=offsets, settle_time=settle_time)
        started.append(watcher)
        watcher.start()
        return watcher, sink

    yield start
    for watcher in started:
        watcher.stop()
        assert not watcher.running


# ---------------------------------------------------------------------------
# ListFileTailer (no inotify)


def test_tailer_complete_records_only(tmp_path: Path) -> None:
    path = tmp_path / "list.lst"
    append(path, "scan_1")
    tailer = ListFileTailer(str(path))
    assert tailer.read(final=False) == []  # "\nscan_1": not terminated yet
    assert tailer.pending
    append(path, "scan_2")  # the newline completes scan_1
    assert tailer.read(final=False) == [ListRecord(2, "scan_1", len(b"\nscan_1\n"))]
    records = tailer.read(final=True)  # the writer closed the file
    assert records == [ListRecord(3, "scan_2", len(b"\nscan_1\nscan_2"))]
    assert tailer.offset == path.stat().st_size and not tailer.pending
    assert tailer.read(final=True) == []
    append(path, "  scan_3  ")
    with open(path, "a") as handle:
        handle.write("\n\n   \nscan_4\n")
    assert [(r.lineno, r.text) for r in tailer.read(final=False)] == [(4, "scan_3"), (7, "scan_4")]


def test_tailer_start_offset_counts_lines_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "list.lst"
    for name in ("a", "b", "c"):
        append(path, name)
    first = ListFileTailer(str(path)).read(final=True)
    assert [(r.lineno, r.text) for r in first] == [(2, "a"), (3, "b"), (4, "c")]
    for record in first:  # each end_offset is a place to resume from
        again = ListFileTailer(str(path), offset=record.end_offset).read(final=True)
        assert again == [later for later in first if later.lineno > record.lineno]
    assert ListFileTailer(str(path), offset=first[-1].end_offset).read(final=True) == []


def test_tailer_truncated_replaced_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "list.lst"
    for name in ("a", "b"):
        append(path, name)
    tailer = ListFileTailer(str(path))
    assert [r.text for r in tailer.read(final=True)] == ["a", "b"]
    path.write_text("\nx")  # truncated (shorter)
    assert [(r.lineno, r.text) for r in tailer.read(final=True)] == [(2, "x")]
    tmp = tmp_path / "list.tmp"
    tmp.write_text("\nq1\nq2")
    os.rename(tmp, path)  # replaced: new inode
    assert [(r.lineno, r.text) for r in tailer.read(final=True)] == [(2, "q1"), (3, "q2")]
    with open(path, "r+") as handle:  # rewritten in place, longer
        handle.write("\nZ1\nZ2\nZ3")
    assert [r.text for r in tailer.read(final=True)] == ["Z1", "Z2", "Z3"]
    assert ListFileTailer(str(path), offset=10**6).read(final=True)[0].text == "Z1"


def test_tailer_decodes_with_replacement_and_reads_only_new_bytes(tmp_path: Path) -> None:
    path = tmp_path / "list.lst"
    path.write_bytes(b"\ncaf\xe9_scan\n" + b"x" * 200 + b"\nok\n")
    tailer = ListFileTailer(str(path))
    records = tailer.read(final=False)
    assert records[0] == ListRecord(2, "caf\ufffd_scan", 11)
    assert records[2] == ListRecord(4, "ok", path.stat().st_size)
    # bytes well before the offset are not read again: change one in place, append
    with open(path, "r+b") as handle:
        handle.seek(1)
        handle.write(b"C")
    with open(path, "ab") as handle:
        handle.write(b"next\n")
    assert tailer.read(final=False) == [ListRecord(5, "next", path.stat().st_size)]


def test_tailer_final_decided_from_stat(tmp_path: Path) -> None:
    path = tmp_path / "list.lst"
    append(path, "a")
    tailer = ListFileTailer(str(path))
    assert tailer.read(lambda stat: time.time() - stat.st_mtime > 60) == []
    old(path)
    assert [r.text for r in tailer.read(lambda stat: time.time() - stat.st_mtime > 60)] == ["a"]


def test_tailer_holds_back_a_tail_that_may_be_cut_at_a_page_boundary(tmp_path: Path) -> None:
    from scingestor.watch.tailer import PAGE_SIZE

    path = tmp_path / "list.lst"
    head = b"\n" + b"a" * 20 + b"\n"
    path.write_bytes(head + b"b" * (PAGE_SIZE - len(head)))  # ends on a page boundary
    tailer = ListFileTailer(str(path))
    assert [r.text for r in tailer.read(final=True)] == ["a" * 20]
    assert tailer.pending and tailer.held_back  # maybe a write in progress
    with open(path, "ab") as handle:  # ... it was: it goes on
        handle.write(b"cc")
    assert [r.text for r in tailer.read(final=True)] == ["b" * (PAGE_SIZE - 22) + "cc"]
    assert not tailer.pending and not tailer.held_back
    with open(path, "ab") as handle:  # next one ends on a page
        handle.write(b"\n" + b"d" * (PAGE_SIZE - 3))  # size: 2 pages
    assert tailer.read(final=True) == [] and tailer.held_back
    # seen unchanged by the caller a while later: complete
    assert [r.text for r in tailer.read(lambda stat: True)] == ["d" * (PAGE_SIZE - 3)]


def test_parse_events_keeps_undecodable_names() -> None:
    import struct

    name = b"caf\xe9.lst\0\0\0\0"
    data = struct.pack("iIII", 3, 0x100, 0, len(name)) + name
    [event] = parse_events(data)
    assert (event.wd, event.mask) == (3, 0x100)
    assert os.fsencode(event.name) == b"caf\xe9.lst"


# ---------------------------------------------------------------------------
# discovery


def scan_tree(bt_dir: Path) -> Dict[str, Path]:
    """List files at depth 1, 2 and 3 below the beamtime dir (none at the root)."""
    return {
        "raw": list_with(bt_dir / "raw", "scan_r1", "scan_r2"),
        "x/raw2": list_with(bt_dir / "x" / "raw2", "scan_x1"),
        "x/y/z": list_with(bt_dir / "x" / "y" / "z", "scan_z1"),
    }


@pytest.mark.parametrize(
    "depth, expected",
    [(-1, ["raw", "x/raw2", "x/y/z"]), (0, []), (1, ["raw"]), (2, ["raw", "x/raw2"])],
)
def test_beamtime_file_dropped_into_watched_dir(
    tmp_path: Path, watch: Any, depth: int, expected: List[str]
) -> None:
    bt_dir = tmp_path / "current"
    lists = scan_tree(bt_dir)
    watcher, sink = watch(beamtime_dirs=[str(bt_dir)], max_scandir_depth=depth)
    assert sink.events == [] and watcher.watched_beamtimes == []
    path = beamtime_file(bt_dir)
    sink.wait(lambda s: s.of("added"), "beamtime_added")
    [(_, beamtime)] = sink.of("added")
    assert beamtime.path == str(path) and beamtime.beamtime_id == BID
    assert watcher.watched_beamtimes == [beamtime]
    wanted = sorted(str(lists[key]) for key in expected)
    sink.wait(lambda s: sorted(s.lists_added()) == wanted, f"list files {wanted}")
    texts = {"raw": ["scan_r1", "scan_r2"], "x/raw2": ["scan_x1"], "x/y/z": ["scan_z1"]}
    for key in expected:
        sink.wait(lambda s, key=key: s.texts(lists[key]) == texts[key], f"records of {key}")
    assert sink.records(lists["raw"]) == (
        [(2, "scan_r1"), (3, "scan_r2")] if "raw" in expected else []
    )
    watcher.rescan()  # handled in order on the event thread: nothing new
    assert sorted(sink.lists_added()) == wanted
    assert sorted(sink.texts()) == sorted(t for key in expected for t in texts[key])
    assert sink.of("error") == [] and len(sink.threads) == 1
    kinds = [event[0] for event in sink.events]
    assert kinds[0] == "added" and (
        not expected or kinds.index("list_added") < kinds.index("records")
    )


def test_beamtime_dir_created_under_base_dir(tmp_path: Path, watch: Any) -> None:
    base = tmp_path / "gpfs"
    (base / "other").mkdir(parents=True)
    watcher, sink = watch(beamtime_base_dir=str(base))
    bt_dir = base / "current"
    bt_dir.mkdir()
    path = beamtime_file(bt_dir)
    list_file = bt_dir / LIST  # at the beamtime dir itself (depth 0)
    append(list_file, "scan_1")
    append(list_file, "scan_2")
    sink.wait(lambda s: s.texts(list_file) == ["scan_1", "scan_2"], "records")
    assert [event[1].path for event in sink.of("added")] == [str(path)]
    assert sink.records(list_file) == [(2, "scan_1"), (3, "scan_2")]
    assert sink.of("error") == []
    # the beamtime dir is removed: its beamtime ends, its watches go
    shutil.rmtree(bt_dir)
    sink.wait(lambda s: s.of("removed"), "beamtime_removed")
    assert sink.of("removed") == [("removed", str(path))]
    watcher.rescan()
    assert watcher.watched_beamtimes == [] and watcher.watch_count == 2  # base + other


@pytest.fixture
def running(tmp_path: Path, watch: Any) -> Tuple[Watcher, RecordingSink, Path]:
    """A watched beamtime with two (empty, old) list files: raw/ and marker/."""
    bt_dir = tmp_path / "current"
    list_with(bt_dir / "raw")
    list_with(bt_dir / "marker")
    beamtime_file(bt_dir)
    watcher, sink = watch(beamtime_dirs=[str(bt_dir)])
    sink.wait(lambda s: len(s.lists_added()) == 2, "two list files")
    return watcher, sink, bt_dir


def sync(sink: RecordingSink, bt_dir: Path, counter: List[int]) -> None:
    """Append a marker record and wait for it: all earlier events are handled."""
    counter[0] += 1
    marker = f"marker_{counter[0]}"
    append(bt_dir / "marker" / LIST, marker)
    sink.wait(lambda s: marker in s.texts(bt_dir / "marker" / LIST), marker)


def test_appended_lines_one_by_one_and_in_a_burst(running: Any) -> None:
    watcher, sink, bt_dir = running
    list_file = bt_dir / "raw" / LIST
    for index in range(5):
        append(list_file, f"scan_{index}")
        sink.wait(lambda s, n=index + 1: len(s.records(list_file)) == n, f"scan_{index}")
    burst = [f"burst_{index:03d} det1 ../det2" for index in range(200)]
    for record in burst:
        append(list_file, record)
    sink.wait(lambda s: len(s.records(list_file)) == 205, "the burst")
    expected = [f"scan_{index}" for index in range(5)] + burst
    assert sink.records(list_file) == [(lineno + 2, text) for lineno, text in enumerate(expected)]
    watcher.rescan()
    assert len(sink.records(list_file)) == 205  # exactly once


def test_half_written_record_waits_for_newline_or_close(running: Any) -> None:
    _watcher, sink, bt_dir = running
    list_file, counter = bt_dir / "raw" / LIST, [0]
    append(list_file, "done_1")
    sink.wait(lambda s: s.texts(list_file) == ["done_1"], "done_1")
    with open(list_file, "a") as writer:
        writer.write("\nhalf_")
        writer.flush()
        sync(sink, bt_dir, counter)
        assert sink.texts(list_file) == ["done_1"]  # not half-read
        writer.write("written")
        writer.flush()
        sync(sink, bt_dir, counter)
        assert sink.texts(list_file) == ["done_1"]  # still open, no newline
        writer.write("\nnext_")
        writer.flush()  # the newline completes it
        sink.wait(lambda s: s.texts(list_file) == ["done_1", "half_written"], "newline")
        sync(sink, bt_dir, counter)
        assert sink.texts(list_file) == ["done_1", "half_written"]
        writer.write("one")
    sink.wait(lambda s: s.texts(list_file) == ["done_1", "half_written", "next_one"], "close")
    assert sink.records(list_file) == [(2, "done_1"), (3, "half_written"), (4, "next_one")]


def test_record_ending_on_a_page_boundary_is_confirmed_by_settling(running: Any) -> None:
    from scingestor.watch.tailer import PAGE_SIZE

    _watcher, sink, bt_dir = running
    list_file = bt_dir / "raw" / LIST
    record = "p" * (PAGE_SIZE - 1)
    append(list_file, record)  # "\n" + record: exactly one page
    sink.wait(lambda s: s.texts(list_file) == [record], "held back, then settled")


def test_new_scan_subdirectories_after_start(running: Any) -> None:
    watcher, sink, bt_dir = running
    before = watcher.watch_count
    single = bt_dir / "single"
    single.mkdir()
    append(single / LIST, "scan_single")
    sink.wait(lambda s: s.texts(single / LIST) == ["scan_single"], "single")
    for index in range(5):  # the mkdir/add_watch race, several times
        deep = bt_dir / f"n{index}" / "a" / "b" / "c"
        os.makedirs(deep)
        append(deep / LIST, f"scan_deep_{index}")
        want = [f"scan_deep_{index}"]
        sink.wait(lambda s, at=deep / LIST, want=want: s.texts(at) == want, f"deep {index}")
    assert watcher.watch_count == before + 2 + 5 * 5  # dirs and list files
    shutil.rmtree(bt_dir / "n0")
    sink.wait(
        lambda s: (
            [e[2] for e in s.of("list_removed")] == [str(bt_dir / "n0" / "a" / "b" / "c" / LIST)]
        ),
        "list_file_removed",
    )
    watcher.rescan()
    assert watcher.watch_count == before + 2 + 4 * 5


def test_list_file_truncated_or_replaced_is_read_again(running: Any) -> None:
    _watcher, sink, bt_dir = running
    list_file = bt_dir / "raw" / LIST
    for name in ("a", "b", "c"):
        append(list_file, name)
    sink.wait(lambda s: s.texts(list_file) == ["a", "b", "c"], "a b c")
    with open(list_file, "w") as handle:  # truncated and rewritten
        handle.write("\nt1")
    sink.wait(lambda s: s.texts(list_file)[3:] == ["t1"], "t1")
    tmp = bt_dir / "raw" / "list.tmp"
    tmp.write_text("\nr1\nr2")
    os.rename(tmp, list_file)  # replaced by rename
    sink.wait(lambda s: s.texts(list_file)[4:] == ["r1", "r2"], "r1 r2")
    assert sink.records(list_file)[3:] == [(2, "t1"), (2, "r1"), (3, "r2")]
    append(list_file, "r3")  # the new file is watched
    sink.wait(lambda s: s.texts(list_file)[-1] == "r3", "r3")
    assert sink.of("list_removed") == []


def test_list_file_in_parent_stops_subdir_watching(running: Any) -> None:
    watcher, sink, bt_dir = running
    sub = bt_dir / "raw2" / "sub"
    sub.mkdir(parents=True)
    append(sub / LIST, "scan_sub")
    sink.wait(lambda s: s.texts(sub / LIST) == ["scan_sub"], "scan_sub")
    count = watcher.watch_count
    parent_list = bt_dir / "raw2" / LIST
    append(parent_list, "scan_parent")  # §3.2: subdirs not watched
    sink.wait(lambda s: str(sub / LIST) in [e[2] for e in s.of("list_removed")], "removed")
    assert watcher.watch_count == count + 1 - 2
    parent_list.unlink()  # ... and watched again
    sink.wait(lambda s: s.lists_added().count(str(sub / LIST)) == 2, "sub again")


def test_beamtime_file_edited_and_removed(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    list_file = list_with(bt_dir / "raw", "scan_1")
    path = beamtime_file(bt_dir)
    watcher, sink = watch(beamtime_dirs=[str(bt_dir)])
    sink.wait(lambda s: s.texts(list_file) == ["scan_1"], "scan_1")
    assert watcher.watch_count == 3  # beamtime dir, raw, the list file
    beamtime_file(bt_dir, title="a new title", ownerGroup="own")
    sink.wait(lambda s: s.of("changed"), "beamtime_changed")
    [(_, changed)] = sink.of("changed")
    assert changed.data["title"] == "a new title" and changed.owner_group == "own"
    assert watcher.watched_beamtimes == [changed]
    append(list_file, "scan_2")
    sink.wait(lambda s: s.texts(list_file) == ["scan_1", "scan_2"], "scan_2")
    assert sink.of("records")[-1][1] is changed  # records carry the new content
    path.write_text(path.read_text())  # same content: no event
    path.unlink()
    sink.wait(lambda s: s.of("removed"), "beamtime_removed")
    assert sink.of("removed") == [("removed", str(path))] and len(sink.of("changed")) == 1
    assert watcher.watched_beamtimes == [] and watcher.watch_count == 1
    append(list_file, "scan_3")  # no longer watched
    beamtime_file(bt_dir)  # a beamtime comes back
    sink.wait(lambda s: len(s.of("added")) == 2, "added again")
    sink.wait(lambda s: s.texts(list_file)[-1] == "scan_3", "scan_3")


@pytest.mark.parametrize(
    "broken", ["{not json", json.dumps({"beamtimeId": BID, "proposalId": "1", "beamline": "p00"})]
)
def test_bad_beamtime_file_then_fixed(tmp_path: Path, watch: Any, broken: str) -> None:
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_list = list_with(good_dir / "raw", "good_1", name="scicat-datasets-1.lst")
    bad_list = list_with(bad_dir / "raw", "bad_1")
    beamtime_file(good_dir, bid="1")
    bad_path = bad_dir / f"beamtime-metadata-{BID}.json"
    bad_path.write_text(broken)
    old(bad_path)
    watcher, sink = watch(beamtime_dirs=[str(good_dir), str(bad_dir)])
    [(_, path, error)] = sink.of("error")
    assert path == str(bad_path) and str(bad_path) in str(error)
    assert "corePath" in str(error) or "JSON" in str(error)
    sink.wait(lambda s: s.texts(good_list) == ["good_1"], "the good beamtime")
    assert [bt.beamtime_id for bt in watcher.watched_beamtimes] == ["1"]
    beamtime_file(bad_dir)  # fixed
    sink.wait(lambda s: s.texts(bad_list) == ["bad_1"], "the fixed beamtime")
    assert len(sink.of("error")) == 1
    assert sorted(bt.beamtime_id for bt in watcher.watched_beamtimes) == ["1", BID]
    bad_path.write_text("{broken again")  # an active one stays active
    sink.wait(lambda s: len(s.of("error")) == 2, "second error")
    assert len(watcher.watched_beamtimes) == 2 and sink.of("removed") == []


def test_beamtime_file_still_being_written_when_listed(tmp_path: Path, watch: Any) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    _watcher, sink = watch(beamtime_base_dir=str(base), settle_time=2.0)
    text = json.dumps(
        {"beamtimeId": BID, "proposalId": "1", "beamline": "p00", "corePath": str(base / "current")}
    )
    with open(outside / f"beamtime-metadata-{BID}.json", "w") as writer:
        writer.write(text[:10])
        writer.flush()
        os.rename(outside, base / "current")  # listed while half written
        (base / "marker").mkdir()
        beamtime_file(base / "marker", bid="2")
        sink.wait(lambda s: len(s.of("added")) == 1, "the marker beamtime")
        assert sink.of("error") == []  # the rename was handled before it
        writer.write(text[10:])
    sink.wait(lambda s: len(s.of("added")) == 2, "beamtime_added after the close")
    assert sink.of("error") == []
    assert [event[1].beamtime_id for event in sink.of("added")] == ["2", BID]


def test_blacklists(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    raw = list_with(bt_dir / "raw", "scan_raw")
    list_with(bt_dir / "processed", "scan_processed")
    list_with(bt_dir / "shared" / "sub", "scan_shared_sub")
    beamtime_file(bt_dir)
    p_dir = tmp_path / "ptype"
    p_list = list_with(p_dir / "raw", "scan_p")
    p_path = beamtime_file(p_dir, proposalType="P")
    id_dir = tmp_path / "listed"
    id_list = list_with(id_dir / "raw", "scan_id", name="scicat-datasets-777.lst")
    beamtime_file(id_dir, bid="777")
    blacklist = tmp_path / "etc" / "blacklist.lst"
    blacklist.parent.mkdir()
    blacklist.write_text("777\n")
    watcher, sink = watch(
        beamtime_dirs=[str(bt_dir), str(p_dir), str(id_dir)],
        scandir_blacklist=[str(bt_dir / "processed"), str(bt_dir / "shared")],
        beamtimeid_blacklist_file=str(blacklist),
    )
    sink.wait(lambda s: s.texts(raw) == ["scan_raw"], "raw")
    watcher.rescan()
    assert sink.lists_added() == [str(raw)]
    assert [bt.beamtime_id for bt in watcher.watched_beamtimes] == [BID]
    # the blacklisted subtree is not watched: nothing new there is found either
    (bt_dir / "processed" / "new").mkdir()
    append(bt_dir / "processed" / "new" / LIST, "x")
    # the id blacklist shrinks: the beamtime is watched
    blacklist.write_text("\n")
    sink.wait(lambda s: s.texts(id_list) == ["scan_id"], "id no longer blacklisted")
    # ... and grows again: it ends
    with open(blacklist, "a") as handle:
        handle.write("777\n")
    sink.wait(lambda s: s.of("removed"), "blacklisted again")
    assert sink.of("removed")[0][1] == str(id_dir / "beamtime-metadata-777.json")
    # editing the P beamtime re-checks it: still skipped; as type I it is watched
    beamtime_file(p_dir, proposalType="P", title="edited")
    beamtime_file(p_dir, proposalType="I")
    sink.wait(lambda s: s.texts(p_list) == ["scan_p"], "type I")
    assert [event[1].path for event in sink.of("added")] == [
        str(bt_dir / f"beamtime-metadata-{BID}.json"),
        str(id_dir / "beamtime-metadata-777.json"),
        str(p_path),
    ]
    assert not any("processed" in path or "shared" in path for path in sink.lists_added())


def test_use_corepath_as_scandir(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    core = "/asap3/petra3/gpfs/p00/2024/data/99001234"
    list_file = list_with(bt_dir / "raw", "scan_1")
    list_with(bt_dir / "scratch", "scan_scratch")
    beamtime_file(bt_dir, corePath=core)
    watcher, sink = watch(
        beamtime_dirs=[str(bt_dir)],
        use_corepath_as_scandir=True,
        scandir_blacklist=[core + "/scratch"],
    )  # core form
    sink.wait(lambda s: s.texts(list_file) == ["scan_1"], "scan_1")
    append(list_file, "scan_2")
    sink.wait(lambda s: s.texts(list_file) == ["scan_1", "scan_2"], "scan_2")
    assert sink.lists_added() == [str(list_file)]  # the watched form
    [(_, beamtime)] = sink.of("added")
    assert core_form(watcher.config, beamtime, str(list_file)) == f"{core}/raw/{LIST}"
    assert watcher.core_form(beamtime, str(bt_dir)) == core


def test_start_with_offsets_from_a_previous_run(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    list_file = list_with(bt_dir / "raw", "scan_1", "scan_2", "scan_3")
    done = ListFileTailer(str(list_file)).read(final=True)[1].end_offset  # up to scan_2
    beamtime_file(bt_dir)
    asked: List[str] = []

    def offsets(path: str) -> int:
        asked.append(path)
        return done if path == str(list_file) else 0

    _watcher, sink = watch(offsets=offsets, beamtime_dirs=[str(bt_dir)])
    sink.wait(lambda s: s.records(list_file) == [(4, "scan_3")], "scan_3 only")
    append(list_file, "scan_4")
    sink.wait(lambda s: s.records(list_file) == [(4, "scan_3"), (5, "scan_4")], "scan_4")
    assert asked == [str(list_file)]


def test_recent_list_file_found_by_listing_settles(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    (bt_dir / "raw").mkdir(parents=True)
    list_file = bt_dir / "raw" / LIST
    append(list_file, "scan_1")
    append(list_file, "scan_2")  # closed just now: no event will come for it
    beamtime_file(bt_dir)
    started = time.monotonic()
    watcher, sink = watch(beamtime_dirs=[str(bt_dir)], settle_time=0.5)
    sink.wait(lambda s: s.texts(list_file) == ["scan_1"], "scan_1 at once")
    sink.wait(lambda s: s.texts(list_file) == ["scan_1", "scan_2"], "scan_2 after settling")
    assert time.monotonic() - started >= 0.4
    assert watcher.wakeups <= 3


def test_symlinked_scan_dirs_are_followed_without_loops(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    elsewhere = list_with(tmp_path / "elsewhere" / "data", "scan_linked")
    (bt_dir / "raw").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", bt_dir / "linked")  # followed (§3.2)
    os.symlink(bt_dir, bt_dir / "raw" / "loop")  # a loop: once only
    beamtime_file(bt_dir)
    watcher, sink = watch(beamtime_dirs=[str(bt_dir)], max_scandir_depth=-1)
    linked = bt_dir / "linked" / "data" / LIST
    sink.wait(lambda s: s.texts(linked) == ["scan_linked"], "through the symlink")
    assert sink.lists_added() == [str(linked)]
    # the beamtime dir, raw, linked, linked/data and its list file
    assert watcher.watch_count == 5
    append(elsewhere, "scan_2")
    sink.wait(lambda s: s.texts(linked) == ["scan_linked", "scan_2"], "scan_2")


def test_non_utf8_names_do_not_hurt(running: Any) -> None:
    _watcher, sink, bt_dir = running
    odd = os.path.join(os.fsencode(str(bt_dir)), b"caf\xe9")
    os.mkdir(odd)
    with open(os.path.join(odd, os.fsencode(LIST)), "w") as handle:
        handle.write("\nscan_odd")
    sink.wait(lambda s: "scan_odd" in s.texts(), "a record in a non-UTF-8 directory")
    [path] = [p for p in sink.lists_added() if "caf" in p]
    assert os.fsencode(path) == os.path.join(odd, os.fsencode(LIST))


# ---------------------------------------------------------------------------
# idleness, timers, limits


@pytest.mark.slow
def test_idle_watcher_sleeps_and_stops_quickly(tmp_path: Path, watch: Any) -> None:
    bt_dir = tmp_path / "current"
    list_with(bt_dir / "raw", "scan_1")
    beamtime_file(bt_dir)
    watcher, sink = watch(
        beamtime_dirs=[str(bt_dir)],
        recheck_dataset_list_interval=1000,
        recheck_beamtime_file_interval=1000,
        get_event_timeout=0.1,
    )
    sink.wait(lambda s: s.texts() == ["scan_1"], "scan_1")
    wakeups = watcher.wakeups
    time.sleep(2.0)  # idleness is what is measured here
    assert watcher.wakeups - wakeups == 0 and wakeups <= 1
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0 and not watcher.running


@pytest.mark.slow
def test_safety_rescan_timer_finds_what_inotify_cannot(tmp_path: Path, watch: Any) -> None:
    later = tmp_path / "later"  # a configured dir that does not exist yet: no watch
    begun = time.monotonic()
    watcher, sink = watch(
        beamtime_dirs=[str(later)],
        recheck_beamtime_file_interval=10,
        recheck_dataset_list_interval=0,
        get_event_timeout=0.1,
    )
    list_file = list_with(later / "raw", "scan_1")
    beamtime_file(later)
    started = time.monotonic()
    sink.wait(lambda s: s.texts(list_file) == ["scan_1"], "found by the 1 s re-scan")
    # the 1 s re-scan finds it (not the 10 s one), with room for a busy machine
    assert time.monotonic() - started < 5.0
    # one wake-up per interval of the time it ran, not a polling loop (10 a second)
    assert watcher.wakeups <= time.monotonic() - begun + 2


def test_watch_limit_error_names_the_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, path: str, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(inotify_module, "_raw_add_watch", no_space)
    inotify = Inotify()
    try:
        with pytest.raises(WatchLimitError, match=r"fs\.inotify\.max_user_watches") as info:
            inotify.add_watch("/some/dir", 0x100)
        assert info.value.path == "/some/dir" and "/some/dir" in str(info.value)
    finally:
        inotify.close()


def test_watch_limit_reported_once_and_retried(
    tmp_path: Path, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = inotify_module._raw_add_watch
    full = [True]

    def limited(fd: int, path: str, mask: int) -> int:
        if full[0] and "/raw" in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_module, "_raw_add_watch", limited)
    bt_dir = tmp_path / "current"
    for name in ("raw", "raw_b", "raw_c"):
        list_with(bt_dir / name)
    other = list_with(bt_dir / "other", "scan_other")
    path = beamtime_file(bt_dir)
    watcher, sink = watch(beamtime_dirs=[str(bt_dir)])
    sink.wait(lambda s: s.texts(other) == ["scan_other"], "the rest works")
    [(_, where, error)] = sink.of("error")
    assert where == str(path) and isinstance(error, WatchLimitError)
    assert "fs.inotify.max_user_watches" in str(error)
    full[0] = False
    watcher.rescan()  # the safety re-scan retries
    append(bt_dir / "raw" / LIST, "scan_raw")
    sink.wait(lambda s: s.texts(bt_dir / "raw" / LIST) == ["scan_raw"], "watched now")
    assert len(sink.of("error")) == 1
