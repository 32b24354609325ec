"""The in-process nxsfileinfo fast path writes exactly what the program writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, List

import pytest

from scingestor.errors import GeneratorError
from scingestor.metadata.inprocess import InProcessRunner, handles
from scingestor.metadata.runner import CommandRunner
from scingestor.testing.builders import make_beamtime, make_scan

from .helpers import wait_until


@pytest.fixture(scope="module")
def runners():
    fast = CommandRunner(in_process=True, workers=1)
    slow = CommandRunner(in_process=False)
    yield fast, slow
    fast.close()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("beamtime")
    raw = root / "raw"
    raw.mkdir()
    beamtime = make_beamtime(root, "99001234")
    nexus = make_scan(raw, "scan_00001", detectors={"pilatus": 2}, plot=True)
    fio = make_scan(raw, "scan_00002", kind="fio")
    return root, raw, beamtime, nexus, fio


def metadata(out: Path, master: Path, beamtime: Path, name: str) -> List[str]:
    return [
        "nxsfileinfo",
        "metadata",
        "-k4",
        "-o",
        str(out),
        "--id-format",
        "{proposalId}.{beamtimeId}",
        "-z",
        "calib",
        "-e",
        "",
        "-b",
        str(beamtime),
        "-p",
        f"99001234/{name}",
        "-w",
        "99001234-dmgt",
        "-c",
        "99001234-dmgt,p00staff",
        "-r",
        "raw",
        "--add-empty-units",
        "--oned",
        str(master),
    ]


def datablock(out: Path, raw: Path, name: str) -> List[str]:
    return [
        "nxsfileinfo",
        "origdatablock",
        "-s",
        "*.pyc,*.json,*~",
        "-r",
        "",
        "-p",
        f"99001234/{name}",
        "-w",
        "99001234-dmgt",
        "-c",
        "99001234-dmgt",
        "-o",
        str(out),
        str(raw / name),
    ]


def attachment(out: Path, png: Path) -> List[str]:
    return [
        "nxsfileinfo",
        "attachment",
        "-w",
        "99001234-dmgt",
        "-c",
        "99001234-dmgt",
        "-n",
        "",
        "-o",
        str(out),
        str(png),
    ]


CASES: List[Callable] = [
    lambda s, out: metadata(out, s[3], s[2], "scan_00001"),
    lambda s, out: metadata(out, s[4], s[2], "scan_00002"),
    lambda s, out: datablock(out, s[1], "scan_00001"),
    lambda s, out: attachment(out, s[1] / "scan_00001.png"),
]


@pytest.mark.parametrize(
    "case", range(len(CASES)), ids=["nexus-metadata", "fio-metadata", "origdatablock", "attachment"]
)
def test_identical_json(runners, scans, tmp_path: Path, case: int) -> None:
    fast, slow = runners
    ours, theirs = tmp_path / "fast.json", tmp_path / "slow.json"
    fast.run(CASES[case](scans, ours))
    slow.run(CASES[case](scans, theirs))
    assert ours.read_bytes() == theirs.read_bytes()


def test_stdout_of_a_stream_command_is_the_same(runners, scans) -> None:
    fast, slow = runners
    argv = datablock(Path("/dev/null"), scans[1], "scan_00001")
    argv = argv[: argv.index("-o")] + argv[argv.index("-o") + 2 :]
    assert fast.run(argv).stdout == slow.run(argv).stdout
    assert '"dataFileList"' in fast.run(argv).stdout


def test_failures_report_the_same_exit_code(runners, scans, tmp_path: Path) -> None:
    fast, slow = runners
    argv = metadata(tmp_path / "x.json", tmp_path / "missing.nxs", scans[2], "nothing")
    codes = []
    for runner in (fast, slow):
        with pytest.raises(GeneratorError) as info:
            runner.run(argv)
        codes.append(info.value.returncode)
    assert codes[0] == codes[1] != 0


def test_only_nxsfileinfo_runs_in_process() -> None:
    assert handles(["nxsfileinfo", "metadata"])
    assert handles(["/usr/bin/nxsfileinfo", "metadata"])
    assert not handles(["python3", "-c", "pass"])
    assert not handles([])


def test_a_crashing_worker_is_replaced(tmp_path: Path) -> None:
    runner = InProcessRunner(1)
    try:
        code, out, _err = runner.run(["nxsfileinfo", "--help"])
        assert code == 0 and "nxsfileinfo" in out
        pool = runner._executor()
        for process in list(pool._processes.values()):
            process.kill()
        code, out, _err = runner.run(["nxsfileinfo", "--help"])
        assert code == 0
    finally:
        runner.close()


def test_prepare_starts_the_workers_before_the_first_command() -> None:
    """The daemon and the batch call prepare() at start: the first scan finds workers."""
    runner = CommandRunner(in_process=True, workers=2)
    try:
        runner.prepare()
        assert wait_until(
            lambda: (
                runner.in_process._pool is not None and len(runner.in_process._pool._processes) == 2
            ),
            120,
        )
        started = set(runner.in_process._pool._processes)
        code = runner.run(["nxsfileinfo", "--help"]).returncode
        assert code == 0
        assert set(runner.in_process._pool._processes) == started  # no worker started late
    finally:
        runner.close()


PROGRAM_SCRIPT = """\
import sys
from scingestor.cli.dataset_ingest import main  # the console script's line
with open(sys.argv[1] if __name__ == "__main__" else {marker!r}, "a") as runs:
    runs.write(__name__ + "\\n")
if __name__ == "__main__":
    from scingestor.metadata.runner import CommandRunner
    runner = CommandRunner(in_process=True, workers=1)
    result = runner.run(["nxsfileinfo", "--help"])
    runner.close()
    print(result.returncode, "matplotlib.pyplot" in sys.modules)
"""


def test_workers_do_not_run_the_program_script_again(tmp_path: Path) -> None:
    """A worker only runs nxsfileinfo: the console script (the batch tool) is not run in it.

    multiprocessing would run the program's main script in every worker
    it starts; the fork server takes it as run (inprocess.adopt_main_path).
    """
    marker = tmp_path / "runs.txt"
    script = tmp_path / "program"
    script.write_text(PROGRAM_SCRIPT.format(marker=str(marker)))
    done = subprocess.run(
        [sys.executable, str(script), str(marker)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False"]  # pyplot only in the workers
    assert marker.read_text().split() == ["__main__"]  # not "__mp_main__" from a worker


def test_prepare_starts_nothing_when_commands_are_not_run() -> None:
    runner = CommandRunner(execute=False, in_process=True)
    runner.prepare()
    assert runner.in_process._pool is None


def test_workers_are_replaced_after_their_share_of_commands() -> None:
    """Recycling bounds leaks and never leaves a command waiting for a worker."""
    runner = InProcessRunner(2, tasks_per_worker=3)
    try:
        pids = set()
        for _ in range(20):
            code, _out, _err = runner.run(["nxsfileinfo", "--help"], timeout=120)
            assert code == 0
            pids |= set(runner._executor()._processes)
        assert len(pids) > 2
    finally:
        runner.close()


def test_one_parser_per_worker_answers_like_a_new_one(runners, scans, tmp_path: Path) -> None:
    """The worker reuses nxsfileinfo's argument parser: errors, help and output as the program."""
    fast, slow = runners
    for argv in (
        ["nxsfileinfo", "metadata", "--no-such-option"],
        ["nxsfileinfo"],
        ["nxsfileinfo", "attachment", "--help"],
    ):
        answers = []
        for runner in (fast, slow):
            try:
                result = runner.run(argv)
                answers.append((0, result.stdout, result.stderr))
            except GeneratorError as error:
                answers.append((error.returncode, "", error.stderr))
        assert answers[0] == answers[1], argv
    # a command after those is not affected by them
    ours, theirs = tmp_path / "fast.json", tmp_path / "slow.json"
    fast.run(CASES[0](scans, ours))
    slow.run(CASES[0](scans, theirs))
    assert ours.read_bytes() == theirs.read_bytes()


def test_a_start_overtaken_by_close_starts_nothing() -> None:
    runner = InProcessRunner(1)
    generation = runner._generation
    runner.close()
    runner._start(generation)  # what start()'s thread does, after the close
    assert runner._pool is None
