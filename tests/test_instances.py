"""Two ingestors of one account: each its own state folder, nobody runs another's jobs.

The naming of the default state folder, the adoption of the journal that
older versions shared, and the rule that a journaled job of a list file the
configuration does not watch is kept aside -- on real directories, real
inotify and the SciCat-compatible test server.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from scingestor.config import config_from_dict
from scingestor.journal import Journal
from scingestor.layout import instance_name, shared_state_dir, state_dir
from scingestor.service import IngestorService
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from .helpers import posted_pids, wait_until

# -- the name of the default state folder -------------------------------------------


def test_state_folder_is_named_by_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    first = config_from_dict({}, source=str(tmp_path / "a" / "ingestor.yaml"))
    second = config_from_dict({}, source=str(tmp_path / "b" / "ingestor.yaml"))
    assert instance_name(first).startswith("ingestor-")
    assert instance_name(first) != instance_name(second)  # same stem, other file
    assert instance_name(first) == instance_name(
        config_from_dict({"scicat_url": "http://x"}, source=str(tmp_path / "a" / "ingestor.yaml"))
    )
    assert state_dir(first) == os.path.join(
        str(tmp_path / "home"), ".local", "state", "scingestor", instance_name(first)
    )
    assert os.path.dirname(state_dir(first)) == shared_state_dir()
    assert instance_name(config_from_dict({})) == "default"


def test_state_folder_of_a_device_and_an_explicit_one(tmp_path: Path) -> None:
    config = config_from_dict({}, source=str(tmp_path / "shared.yaml"))
    name = instance_name(config, "P00/SciCat/Ingestor.1")
    assert name.startswith("device-p00_scicat_ingestor.1-")
    assert name == instance_name(config, "p00/scicat/ingestor.1")  # Tango ignores case
    assert name != instance_name(config, "p00/scicat/ingestor.2")
    assert name != instance_name(config)
    explicit = config_from_dict({"ingestor_state_dir": str(tmp_path / "mine")})
    assert state_dir(explicit) == str(tmp_path / "mine")
    assert state_dir(explicit, "p00/scicat/ingestor.1") == str(tmp_path / "mine")


def test_print_config_shows_the_effective_state_folder(tmp_path: Path) -> None:
    config = tmp_path / "beamline.yaml"
    config.write_text("beamtime_dirs: [/nowhere]\n")
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scingestor.cli.dataset_ingestor",
            "-c",
            str(config),
            "--print-config",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    expected = state_dir(config_from_dict({}, source=str(config))).replace(
        os.path.expanduser("~"), str(tmp_path / "home"), 1
    )
    assert f"ingestor_state_dir: {expected}\n" in result.stdout
    assert "ingestor_state_dir is not set" in result.stdout


# -- the old shared journal ----------------------------------------------------------


def shared_journal(directory: Path, jobs: Dict[str, List[str]]) -> None:
    """A journal as an earlier version left it: pending jobs of several list files."""
    journal = Journal(str(directory))
    journal.open()
    for list_file, texts in jobs.items():
        made = [
            journal.new_job(
                list_file=list_file,
                beamtime_file=os.path.join(
                    os.path.dirname(list_file), "beamtime-metadata-1234.json"
                ),
                lineno=index + 1,
                text=text,
            )
            for index, text in enumerate(texts)
        ]
        journal.accept(list_file, 100, made)
    journal.close()


def test_instance_takes_over_only_the_jobs_it_watches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared_journal(shared, {"/gpfs/a/scicat.lst": ["a_1", "a_2"], "/gpfs/b/scicat.lst": ["b_1"]})
    first = Journal(str(shared / "first"), str(shared))
    with caplog.at_level(logging.INFO, "scingestor.journal"):
        pending = first.open(adopt=lambda path: path.startswith("/gpfs/a/"))
    assert [job.text for job in pending] == ["a_1", "a_2"]
    assert first.offset("/gpfs/a/scicat.lst") == 100 and first.offset("/gpfs/b/scicat.lst") == 0
    assert "Took over 2 pending job(s)" in caplog.text
    assert "still holds 1 pending job(s)" in caplog.text and "/gpfs/b" in caplog.text
    first.close()
    again = Journal(str(shared / "first"), str(shared))
    assert [job.text for job in again.open(adopt=lambda path: True)] == ["a_1", "a_2", "b_1"]
    again.close()
    assert not (shared / "journal.jsonl").exists()  # nothing left in it: removed


def test_a_job_taken_over_before_a_crash_is_not_taken_twice(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared_journal(shared, {"/gpfs/a/scicat.lst": ["a_1"]})
    saved = (shared / "journal.jsonl").read_bytes()
    first = Journal(str(tmp_path / "own"), str(shared))
    first.open(adopt=lambda path: True)
    first.close()
    (shared / "journal.jsonl").write_bytes(saved)  # as if the rewrite never happened
    again = Journal(str(tmp_path / "own"), str(shared))
    assert [job.text for job in again.open(adopt=lambda path: True)] == ["a_1"]
    again.close()


def test_a_shared_journal_in_use_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scingestor.journal as journal_module

    monkeypatch.setattr(journal_module, "SHARED_LOCK_PATIENCE", 0.2)
    shared = tmp_path / "shared"
    shared_journal(shared, {"/gpfs/a/scicat.lst": ["a_1"]})
    with open(shared / "journal.lock", "a") as lock:  # an older daemon runs on it
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        own = Journal(str(tmp_path / "own"), str(shared))
        with caplog.at_level(logging.WARNING, "scingestor.journal"):
            assert own.open(adopt=lambda path: True) == []
        own.close()
    assert "in use by another ingestor" in caplog.text
    assert "a_1" in (shared / "journal.jsonl").read_text()


# -- the service: jobs of list files not watched ---------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


def settings(
    tmp_path: Path, server: SciCatServer, gpfs: Path, **extra: object
) -> Dict[str, object]:
    account = DEFAULT_ACCOUNTS[0]
    credential = tmp_path / "credential.json"
    credential.write_text(json.dumps({"username": account.username, "password": account.password}))
    credential.chmod(0o600)
    gpfs.mkdir(parents=True, exist_ok=True)
    values: Dict[str, object] = {
        "scicat_url": server.url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "beamtime_dirs": [str(gpfs)],
        "ingestor_var_dir": str(tmp_path / "var"),
        "ingestor_state_dir": str(tmp_path / "state"),
        "ingestion_delay_time": 0.0,
        "max_scandir_depth": -1,
        "ingest_dataset_attachment": False,
    }
    values.update(extra)
    return values


@pytest.fixture
def services() -> Iterator[List[IngestorService]]:
    made: List[IngestorService] = []
    yield made
    for service in made:
        service.stop()


def start(
    services: List[IngestorService], values: Dict[str, object], source: object = None
) -> IngestorService:
    service = IngestorService(config_from_dict(values, source=source and str(source)))
    services.append(service)
    service.start()
    return service


def listed_scan(gpfs: Path, bid: str, name: str, with_metadata: bool = True) -> Path:
    """A beamtime with a scan listed in its list file; returns the list file."""
    raw = gpfs / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if with_metadata:
        make_beamtime(gpfs, bid)
    make_scan(raw, name)
    listing = raw / f"scicat-datasets-{bid}.lst"
    append_list_line(listing, name)
    return listing


def pending_job(state: Path, listing: Path, bid: str, text: str) -> None:
    """The journal as an ingestor stopped with *text* of *listing* not ingested yet."""
    journal = Journal(str(state))
    journal.open()
    job = journal.new_job(
        list_file=str(listing),
        beamtime_file=str(listing.parent.parent / f"beamtime-metadata-{bid}.json"),
        lineno=1,
        text=text,
    )
    journal.accept(str(listing), listing.stat().st_size, [job])
    journal.close()


def pending_texts(state: Path) -> List[str]:
    journal = Journal(str(state))
    try:
        return [job.text for job in journal.open()]
    finally:
        journal.close()


def test_another_configurations_pending_job_is_kept_aside_not_ingested(
    tmp_path: Path,
    server: SciCatServer,
    services: List[IngestorService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bid_a, bid_b = "11400001", "11400002"
    listing_a = listed_scan(tmp_path / "gpfs_a", bid_a, "a_00001")
    state = tmp_path / "state"
    pending_job(state, listing_a, bid_a, "a_00001")  # configuration A stopped early
    values_b = settings(tmp_path, server, tmp_path / "gpfs_b")
    with caplog.at_level(logging.INFO, "scingestor"):
        service_b = start(services, values_b)
    assert "1 job(s) in the journal" in caplog.text and bid_a in caplog.text
    assert [r.levelname for r in caplog.records if "not resumed" in r.getMessage()] == ["WARNING"]
    listed_scan(tmp_path / "gpfs_b", bid_b, "b_00001")
    assert wait_until(lambda: posted_pids(server, bid_b)[f"{bid_b}/b_00001"] == 1, 60)
    assert service_b.wait_idle(30)
    assert posted_pids(server, bid_a) == {}  # A's scan never went to B's SciCat
    service_b.stop()
    assert pending_texts(state) == ["a_00001"]  # kept, not dropped
    # configuration A, started again on this folder, ingests it
    start(services, settings(tmp_path, server, tmp_path / "gpfs_a"))
    assert wait_until(lambda: posted_pids(server, bid_a)[f"{bid_a}/a_00001"] == 1, 60)


def test_a_job_kept_aside_runs_once_its_beamtime_is_watched(
    tmp_path: Path,
    server: SciCatServer,
    services: List[IngestorService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bid = "11400003"
    beamtime = tmp_path / "gpfs"
    listing = listed_scan(beamtime, bid, "late_00001", with_metadata=False)
    pending_job(tmp_path / "state", listing, bid, "late_00001")
    with caplog.at_level(logging.INFO, "scingestor"):
        service = start(services, settings(tmp_path, server, beamtime))
        assert service.queue_length == 0 and "not resumed" in caplog.text
        make_beamtime(beamtime, bid)  # e.g. its file system mounted late
        assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/late_00001"] == 1, 60)
    assert "resuming its 1 job(s) kept aside" in caplog.text


def test_the_old_shared_journal_is_taken_over_by_the_instance_watching_it(
    tmp_path: Path,
    server: SciCatServer,
    services: List[IngestorService],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bid, other = "11400004", "11400005"
    listing = listed_scan(tmp_path / "gpfs", bid, "old_00001")
    foreign = listed_scan(tmp_path / "elsewhere", other, "foreign_00001")
    shared = Path(shared_state_dir())
    pending_job(shared, listing, bid, "old_00001")
    pending_job(shared, foreign, other, "foreign_00001")
    values = settings(tmp_path, server, tmp_path / "gpfs", ingestor_state_dir=None)
    config_file = tmp_path / "etc" / "beamline.yaml"
    with caplog.at_level(logging.INFO, "scingestor"):
        service = start(services, values, source=config_file)
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/old_00001"] == 1, 60)
    assert service.journal.directory == str(shared / instance_name(service.config))
    assert "Took over 1 pending job(s)" in caplog.text
    assert "still holds 1 pending job(s)" in caplog.text and other in caplog.text
    assert posted_pids(server, other) == {}
    service.stop()
    assert pending_texts(shared) == ["foreign_00001"]
    assert pending_texts(Path(service.journal.directory)) == []


# -- the Tango device ----------------------------------------------------------------


def test_device_keeps_its_journal_in_a_folder_named_by_the_device(
    tmp_path: Path, server: SciCatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tango = pytest.importorskip("tango")
    from tango.test_context import DeviceTestContext

    from ScicatIngestorDS.device import ScicatIngestorDS

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # the device process inherits it
    config = tmp_path / "ingestor.yaml"
    config.write_text(
        json.dumps(settings(tmp_path, server, tmp_path / "gpfs", ingestor_state_dir=None))
    )
    with DeviceTestContext(
        ScicatIngestorDS, properties={"ConfigFile": str(config)}, process=True, timeout=30
    ) as proxy:
        assert wait_until(lambda: proxy.state() == tango.DevState.ON, 30), proxy.status()
        name = proxy.name()
    folder = home / ".local" / "state" / "scingestor" / instance_name(config_from_dict({}), name)
    assert folder.name.startswith("device-")
    assert (folder / "journal.jsonl").exists()
