"""Installed as a facility installs it (issue 20): a wheel from a fresh clone.

The wheel is built from a ``git clone`` of this repository (so only what is
committed counts), installed into a clean virtualenv without the optional
extras, and the clone is deleted before anything runs.  Then: the console
scripts answer, the macro folder that ``scingestor-macros-path`` prints
loads on a real MacroServer (whose Python may import neither scingestor nor
the extras), and the demo runs.  pip uses its cache and the configured
indexes, so the test needs no network when the cache is warm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

tango = pytest.importorskip("tango")
pytest.importorskip("sardana")

from scingestor.testing.builders import make_beamtime  # noqa: E402
from scingestor.testing.tangodb import database_argv  # noqa: E402

from .test_macros import (  # noqa: E402
    STARTUP_TIMEOUT,
    DoorRunner,
    free_port,
    remove_empty_log_dirs,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "scicat_dataset_ingestor",
    "scicat_dataset_ingest",
    "scicat_ingest",
    "scingestor-demo",
    "ScicatIngestorDS",
    "scingestor-macros-path",
    "scingestor-share",
]
INSTALL_TIMEOUT = 900  # a clean venv from the pip cache: usually 1-2 minutes
#: what the MacroServer's Python must do without: the ingestor and its optional extras
BLOCKED = ("scingestor", "prometheus_client")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout to clone"),
]


def run(argv: List[str], timeout: float = INSTALL_TIMEOUT, **kwargs: object) -> str:
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[arg-type]
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin folder of a clean venv holding the wheel of a fresh clone (deleted)."""
    work = tmp_path_factory.mktemp("wheel")
    clone = work / "clone"
    run(["git", "clone", "--quiet", str(REPO), str(clone)], timeout=120)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(clone), "-w", str(work)])
    wheels = list(work.glob("scingestor-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])])
    shutil.rmtree(clone)
    yield venv / "bin"


def test_the_console_scripts_answer(installed: Path) -> None:
    for script in SCRIPTS:
        path = installed / script
        assert path.is_file(), script
        assert run([str(path), "--version"], 60, cwd="/").split() == [script, "0.1.0"], script
        assert "usage" in run([str(path), "--help"], 60, cwd="/").lower() or script == (
            "ScicatIngestorDS"  # Tango's own usage text
        ), script


def test_the_shipped_files_are_installed(installed: Path) -> None:
    listed = run([str(installed / "scingestor-share")], 60).split()
    assert [Path(path).name for path in listed] == ["scingestor.service", "scingestor.yaml"]
    assert all("site-packages" in path for path in listed), listed
    unit = run([str(installed / "scingestor-share"), "scingestor.service"], 60)
    assert "ExecStart=" in unit


def test_the_demo_runs(installed: Path, tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("TANGO_HOST", None)
    output = run([str(installed / "scingestor-demo")], 600, cwd=tmp_path, env=env)
    assert "Stored in SciCat (5 datasets)" in output, output
    assert "Stopped ScicatIngestorDS (exit code 0)" in output, output


def blocker(folder: Path) -> Dict[str, str]:
    """PYTHONPATH for a Python in which scingestor and the extras cannot be imported."""
    for name in BLOCKED:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed for this MacroServer')\n"
        )
    return {"PYTHONPATH": str(folder)}


def test_the_macros_load_on_a_macroserver_from_the_printed_folder(
    installed: Path, tmp_path: Path
) -> None:
    from sardana.tango.core.util import register_sardana

    folder = Path(run([str(installed / "scingestor-macros-path")], 60).strip())
    assert (folder / "scmacros.py").is_file() and "site-packages" in folder.parts, folder
    beamtime = "99007002"
    root = tmp_path / "beamtime"
    make_beamtime(root, beamtime)
    scan_dir = root / "raw"
    scan_dir.mkdir()
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = dict(os.environ, TANGO_HOST=host)
    previous_host = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = host
    instance = f"whl{os.getpid()}"
    processes: List["subprocess.Popen[bytes]"] = []
    door: Optional[DoorRunner] = None
    try:
        with open(tmp_path / "databaseds.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    database_argv(port),
                    cwd=tmp_path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )

        def db_ready() -> bool:
            try:
                tango.Database("127.0.0.1", port).get_server_list("*")
                return True
            except tango.DevFailed:
                return False

        wait_until(db_ready, STARTUP_TIMEOUT, "the Tango database", tmp_path / "databaseds.log")
        db = tango.Database("127.0.0.1", port)
        register_sardana(db, "MacroServer", instance, [])
        (tmp_path / "env").mkdir()
        db.put_device_property(
            f"macroserver/{instance}/1",
            {
                "MacroPath": [str(folder)],
                "EnvironmentDb": [str(tmp_path / "env" / "macroserver.properties")],
            },
        )
        server_env = dict(env, **blocker(tmp_path / "blocked"))
        with open(tmp_path / "MacroServer-stdout.log", "wb") as log:
            server = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "MacroServer"),
                    instance,
                    "--log-level=info",
                    f"--log-file-name={tmp_path / 'MacroServer.log'}",
                ],
                cwd=tmp_path, env=server_env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        processes.append(server)
        # the full name: this process may have talked to another TANGO_HOST before
        door_name = f"tango://{host}/door/{instance}/1"

        def door_on() -> bool:
            assert server.poll() is None, (tmp_path / "MacroServer-stdout.log").read_text()
            try:
                return bool(tango.DeviceProxy(door_name).state() == tango.DevState.ON)
            except tango.DevFailed:
                return False

        wait_until(door_on, STARTUP_TIMEOUT, "the sardana Door", tmp_path / "MacroServer.log")
        door = DoorRunner(door_name)
        listing = door.run("lsdef", ".*measurement").text()
        for name in ("start_measurement", "make_measurement", "stop_measurement"):
            assert name in listing, listing
        assert "scicat_autogrouping_on" in door.run("lsdef", "scicat").text()
        door.run("senv", "ScanDir", str(scan_dir))
        door.run("senv", "BeamtimeFilePath", str(root))
        started = door.run("start_measurement", "calib")
        assert started.result == "calib", started
        door.run("stop_measurement")
        lines = (scan_dir / f"scicat-datasets-{beamtime}.lst").read_text().split()
        assert lines[:3] == ["__command__", "start", "calib"], lines
        log_text = (tmp_path / "MacroServer.log").read_text(errors="replace")
        assert "Invalid module scmacros" not in log_text
    finally:
        if door is not None:
            door.close()
        for process in reversed(processes):
            stop_process(process)
        remove_empty_log_dirs(instance)
        if previous_host is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous_host
