"""``scicat_dataset_ingest`` over lists that name one scan several times.

After re-ingestion requests a list holds ``s``, ``s:1``, ``s:2`` … for one
scan.  With several ingestion workers those lines must run one after the
other, in list order (they share the dataset and its metadata files), while
different scans still run side by side.  The same holds in the daemon
(``tests/test_daemon.py`` uses :class:`RecordingPipeline` from here).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from scingestor.batch import BatchIngest, chains
from scingestor.cli import dataset_ingest
from scingestor.pipeline import Pipeline, ScanOutcome, ScanTask
from scingestor.state import IngestedList

from .helpers import posted_pids

SCANS = 4
LINES = 4


class RecordingPipeline(Pipeline):
    """The real pipeline, telling when each line starts and ends.

    The first line of each of *together* waits (at most *timeout* s) until
    the first lines of all of them have started: if the scans did not run
    side by side, the wait breaks and the line raises.
    """

    def __init__(
        self, *args, together: Sequence[str] = (), timeout: float = 120.0, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.events: List[Tuple[str, str]] = []
        self._events_lock = threading.Lock()
        self._together = set(together)
        self._barrier = threading.Barrier(len(together), timeout=timeout) if together else None

    def process(self, task: ScanTask, ingested: IngestedList, dry_run: bool = False) -> ScanOutcome:
        with self._events_lock:
            self.events.append(("start", task.key))
        if self._barrier is not None and task.key in self._together:
            self._barrier.wait()
        try:
            return super().process(task, ingested, dry_run=dry_run)
        finally:
            with self._events_lock:
                self.events.append(("end", task.key))

    def runs(self, prefix: str) -> List[Tuple[str, str]]:
        """The start and end events of the lines of scan *prefix*, as they happened."""
        with self._events_lock:
            return [
                (what, key)
                for what, key in self.events
                if key == prefix or key.startswith(prefix + ":")
            ]


def one_after_the_other(keys: Sequence[str]) -> List[Tuple[str, str]]:
    """The events of *keys* run one at a time, in this order."""
    return [event for key in keys for event in (("start", key), ("end", key))]


def repeated_lines(env, scans: int = SCANS, lines: int = LINES) -> Dict[str, List[str]]:
    """*scans* scans, each listed *lines* times in a row (``s``, ``s:1`` …); keys by scan."""
    names = [f"scan_{index:05d}" for index in range(1, scans + 1)]
    keys = {name: [name] + [f"{name}:{repeat}" for repeat in range(1, lines)] for name in names}
    for name in names:
        env.scan(name, detectors={"pilatus": 2}, plot=True)
    env.lines(*(key for name in names for key in keys[name]))
    return keys


def leftovers(directory: Path) -> List[str]:
    """Temporary metadata files left behind (none may be)."""
    return sorted(path.name for path in directory.rglob(".part-*"))


@pytest.mark.slow
def test_repeated_lines_give_one_origdatablock_per_scan_20_times(
    beamtime, capsys, restore_logging
) -> None:
    """4 scans × 4 lines, 4 workers: once seen to fail with half-written JSON and 409s."""
    for attempt in range(20):
        env = beamtime(ingestion_workers=4)
        names = repeated_lines(env)
        code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
        out = capsys.readouterr().out
        assert code == 0, f"attempt {attempt}: {out}"
        assert "Summary: 4 ingested, 0 updated, 12 unchanged, 0 failed, 0 retry" in out
        for name in names:
            pid = env.pid(name)
            assert len(env.blocks(pid)) == 1, (attempt, name, env.blocks(pid))
            assert len(env.attachments(pid)) == 1, (attempt, name)
        assert set(posted_pids(env.server, env.bid).values()) == {1}
        env.assert_clean()
        assert leftovers(env.meta_dir()) == []
        env.close()


def test_lines_of_one_scan_run_in_list_order_and_scans_side_by_side(beamtime) -> None:
    env = beamtime(ingestion_workers=SCANS, ingest_dataset_attachment=False)
    keys = repeated_lines(env)
    pipeline = RecordingPipeline(env.config, env.client, together=list(keys))
    try:
        summary = BatchIngest(env.config, env.client, pipeline=pipeline).run()
    finally:
        pipeline.close()
    assert summary.ok, summary.report()
    for name, lines in keys.items():
        assert pipeline.runs(name) == one_after_the_other(lines)
        assert len(env.blocks(env.pid(name))) == 1
    env.assert_clean()


def test_chains_follow_the_scan_not_the_line(beamtime) -> None:
    env = beamtime()
    sub = env.raw / "sub"
    sub.mkdir()
    env.lines("a", "sub/s", "b", "a:1")
    env.lines("s", "c", "s:1", directory=sub)
    batch = BatchIngest(env.config, env.client, pipeline=env.pipeline())
    work = [
        (task, None)
        for list_file in (env.list_file(), env.list_file(sub))
        for task in batch.tasks(env.beamtime, str(list_file))
    ]
    found = [[task.key for task, _ in chain] for chain in chains(work)]  # type: ignore[misc]
    # sub/s of the first list and s of sub/ name the same files
    assert found == [["a", "a:1"], ["sub/s", "s", "s:1"], ["b"], ["c"]]


def test_summary_counts_scans_posted_without_data_files(beamtime, caplog) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00010")
    list_file = env.lines("scan_00010", "ghost_00011", "ghost_00011:1")
    with caplog.at_level("WARNING", logger="scingestor"):
        summary = env.batch()
    assert summary.ok, summary.report()
    assert summary.without_data_files == {
        str(env.raw / "ghost_00011"): f"{list_file}:3: ghost_00011"
    }
    report = summary.report()
    assert "; 1 posted without data files" in report.splitlines()[0]
    assert f"posted without data files (no master file): {list_file}:3: ghost_00011" in report
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warnings if "no master file" in w]) == 2  # both lines
    assert env.datasets()[env.pid("ghost_00011")]["scientificMetadata"] is not None


def test_dataset_ingest_command_counts_scans_without_data_files(
    beamtime, capsys, restore_logging
) -> None:
    env = beamtime(ingestion_workers=4, ingest_dataset_attachment=False)
    env.scan("scan_00020")
    list_file = env.lines("scan_00020", "ghost_00021", "scan_00020:1", "ghost_00021:1")
    code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        "Summary: 2 ingested, 0 updated, 2 unchanged, 0 failed, 0 retry; "
        "1 posted without data files"
    ) in out
    assert (
        f"  posted without data files (no master file): {list_file}:3: ghost_00021"
        in out.splitlines()
    )
