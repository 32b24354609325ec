"""The fault-injection suite: the daemon as a real process against a misbehaving SciCat.

Every test starts ``python -m scingestor.cli.dataset_ingestor`` as a
subprocess (so it can be killed with ``SIGKILL``), while the
SciCat-compatible server runs in the pytest process: its record of requests
and its store outlive any daemon and tell what reached SciCat how often.

Each test ends with a :class:`Tally` of its scans (listed, ingested,
duplicated, lost) handed to the ``reliability_summary`` collector; the
table of all of them is printed at the end of the pytest run (also in CI).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import pytest
import yaml

from scingestor.config import config_from_dict
from scingestor.journal import Journal
from scingestor.layout import ingested_list_path
from scingestor.state import IngestedList
from scingestor.testing.builders import make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from ..helpers import wait_until

INGESTOR = DEFAULT_ACCOUNTS[0]


# -- the summary ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened to the scans of one fault scenario."""

    fault: str
    listed: int
    ingested: int
    duplicated: int
    lost: int
    seconds: float = 0.0


_RESULTS: List[Tally] = []


class Summary:
    """Collects one :class:`Tally` per fault for the end-of-run table."""

    def add(self, tally: Tally) -> Tally:
        _RESULTS.append(tally)
        return tally


@pytest.fixture(scope="session")
def reliability_summary() -> Summary:
    return Summary()


def summary_table(rows: Sequence[Tally]) -> List[str]:
    """The summary as a Markdown table (docs/reliability.md copies it)."""
    lines = [
        "| fault | scans listed | ingested | duplicated | lost | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.fault} | {row.listed} | {row.ingested} | {row.duplicated} | "
            f"{row.lost} | {row.seconds:.1f} |"
        )
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("scingestor reliability summary")
    for line in summary_table(_RESULTS):
        terminalreporter.write_line(line)
    bad = [row.fault for row in _RESULTS if row.duplicated or row.lost]
    terminalreporter.write_line(
        "duplicated and lost must be 0: " + ("FAILED for " + ", ".join(bad) if bad else "all 0")
    )


# -- helpers -------------------------------------------------------------------------------


def created(server: SciCatServer, route: str, field: str, beamtime_id: str) -> Counter:
    """How often each *field* value of the beamtime was created by a POST to *route* (201)."""
    return Counter(
        request.body.get(field)
        for request in server.recorded("POST")
        if request.path.lower().endswith("/" + route)
        and request.status == 201
        and isinstance(request.body, dict)
        and str(request.body.get(field, "")).startswith(beamtime_id + "/")
    )


def dataset_posts(server: SciCatServer, beamtime_id: str) -> Counter:
    """How often each dataset pid of the beamtime was created (answered 201)."""
    return created(server, "datasets", "pid", beamtime_id)


def tally(
    fault: str,
    server: SciCatServer,
    beamtime_id: str,
    names: Sequence[str],
    started: float,
    blocks_per_scan: int = 1,
    attachments_per_scan: Optional[int] = None,
) -> Tally:
    """Count from SciCat's side: datasets, their origdatablocks (and attachments).

    A scan is ingested when its dataset exists with its blocks (and
    attachments); anything more (a second 201 for a pid, a second block, a
    new version ``pid/2``, a second attachment) counts as duplicated.
    """
    posts = dataset_posts(server, beamtime_id)
    datasets = server.datasets
    blocks = Counter(block.get("datasetId") for block in server.origdatablocks.values())
    attachments = Counter(att.get("datasetId") for att in server.attachments.values())
    ingested = duplicated = 0
    for name in names:
        pid = f"{beamtime_id}/{name}"
        complete = (
            pid in datasets
            and blocks[pid] >= blocks_per_scan
            and (attachments_per_scan is None or attachments[pid] >= attachments_per_scan)
        )
        ingested += complete
        duplicated += max(0, posts[pid] - 1) + max(0, blocks[pid] - blocks_per_scan)
        if attachments_per_scan is not None:
            duplicated += max(0, attachments[pid] - attachments_per_scan)
        duplicated += sum(1 for other in datasets if other.startswith(pid + "/"))
    return Tally(
        fault, len(names), ingested, duplicated, len(names) - ingested, time.monotonic() - started
    )


class Daemon:
    """One ``scicat_dataset_ingestor`` process (its own session, so its workers go too)."""

    def __init__(self, config: Path, log: Path, level: str = "info") -> None:
        self.log = log
        self.out = log.with_suffix(".out")
        with open(self.out, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scingestor.cli.dataset_ingestor",
                    "-c",
                    str(config),
                    "-f",
                    str(log),
                    "-l",
                    level,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_started(self, timeout: float = 60.0) -> None:
        assert wait_until(lambda: "Ingestor started" in self.text() or not self.alive(), timeout), (
            "the daemon did not start"
        )
        assert self.alive(), f"the daemon exited: {self.out.read_text()}\n{self.text()}"

    def kill9(self) -> None:
        """SIGKILL the daemon, then whatever it left behind (generator workers)."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._reap_group()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.alive():
                self.process.kill()
                self.process.wait(10)
            self._reap_group()
        return code

    def _reap_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Scenario:
    """A beamtime directory, its scans, the daemon configuration and its state dirs."""

    def __init__(
        self,
        tmp_path: Path,
        server: SciCatServer,
        beamtime_id: str,
        var: Optional[Path] = None,
        state: Optional[Path] = None,
        **config: Any,
    ) -> None:
        self.tmp = tmp_path
        self.server = server
        self.bid = beamtime_id
        self.root = tmp_path / "gpfs"
        self.raw = self.root / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        make_beamtime(self.root, beamtime_id)
        credential = tmp_path / "credential.json"
        credential.write_text(
            json.dumps({"username": INGESTOR.username, "password": INGESTOR.password})
        )
        credential.chmod(0o600)
        self.var = var or tmp_path / "var"
        self.state = state or tmp_path / "state"
        self.values: Dict[str, Any] = {
            "scicat_url": server.url,
            "ingestor_credential_file": str(credential),
            "scicat_users_login_path": "auth/login",
            "beamtime_dirs": [str(self.root)],
            "ingestor_var_dir": str(self.var),
            "ingestor_state_dir": str(self.state),
            "ingestion_delay_time": 0.0,
            "ingest_dataset_attachment": False,
            "max_request_tries_number": 3,
            "request_timeout": 5.0,
            "retry_base_delay": 0.3,
        }
        self.values.update(config)
        self.config_file = tmp_path / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(self.values))
        self.list_file = self.raw / f"scicat-datasets-{beamtime_id}.lst"
        self.runs = 0
        self.daemons: List[Daemon] = []

    def scans(self, names: Iterable[str], **kw: Any) -> None:
        for name in names:
            make_scan(self.raw, name, **kw)

    def append(self, names: Iterable[str]) -> None:
        """Append records as one write (a burst), the way the sardana writers do."""
        text = "".join(f"\n{name}" for name in names)
        if text:
            with open(self.list_file, "a", encoding="utf-8") as handle:
                handle.write(text)

    def daemon(self, level: str = "info") -> Daemon:
        """Start a daemon; each run logs to its own file."""
        self.runs += 1
        daemon = Daemon(self.config_file, self.tmp / f"daemon-{self.runs}.log", level)
        self.daemons.append(daemon)
        return daemon

    def logs(self) -> str:
        return "".join(daemon.text() for daemon in self.daemons)

    def ingested_path(self) -> Path:
        return Path(ingested_list_path(config_from_dict(self.values), self.bid, str(self.raw)))

    def ingested(self) -> IngestedList:
        return IngestedList(str(self.ingested_path())).load()

    def all_recorded(self, names: Sequence[str]) -> bool:
        """Every scan has a successful record in the ingested list."""
        ingested = self.ingested()
        return all(ingested.is_done(name) for name in names)

    def pending_jobs(self) -> int:
        """Jobs left in the journal (open it only while no daemon runs)."""
        journal = Journal(str(self.state))
        try:
            return len(journal.open())
        finally:
            journal.close()

    def journal_entries(self) -> List[Dict[str, Any]]:
        """Every line of the journal must be one whole JSON entry."""
        path = self.state / "journal.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def cleanup(self) -> None:
        for daemon in self.daemons:
            if daemon.alive():
                daemon.kill9()


@pytest.fixture
def scicat_factory() -> Iterator[Callable[..., SciCatServer]]:
    """Servers of the test's own (fault modes are per server); stopped afterwards."""
    servers: List[SciCatServer] = []

    def make(**kw: Any) -> SciCatServer:
        server = SciCatServer(**kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.reset_faults()
        server.stop()


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Callable[..., Scenario]]:
    made: List[Scenario] = []

    def make(server: SciCatServer, beamtime_id: str, **config: Any) -> Scenario:
        item = Scenario(tmp_path, server, beamtime_id, **config)
        made.append(item)
        return item

    yield make
    for item in made:
        item.cleanup()


# -- small file systems to fill up -------------------------------------------------------------


def _mount(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Factory: ``tmpfs(name, size="16m")`` mounts a small tmpfs at ``<tmp>/<name>``.

    Skips the test where mounting is not permitted (not root, no
    CAP_SYS_ADMIN); everything mounted is unmounted afterwards.
    """
    mounted: List[Path] = []

    def make(name: str, size: str = "16m") -> Path:
        point = tmp_path / name
        point.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command: cannot make a small file system to fill")
        result = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point))
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                f"{result.stderr.strip() or result.returncode}"
            )
        mounted.append(point)
        return point

    yield make
    for point in reversed(mounted):
        _mount("-o", "remount,rw", str(point))
        if subprocess.run(["umount", str(point)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free)."""
    filler = directory / "filler"
    block = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as handle:
        while True:
            try:
                handle.write(block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                break
        while True:  # the last bytes of a page
            try:
                handle.write(b"\0")
            except OSError:
                break
    return filler


def remount(point: Path, mode: str) -> None:
    """Remount ``ro``/``rw``; busy while a file is being written: try again."""
    deadline = time.monotonic() + 20
    while True:
        result = _mount("-o", f"remount,{mode}", str(point))
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.05)
