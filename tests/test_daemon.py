"""The live daemon: real inotify, real directories, real processes, real HTTP.

The service runs in the test process for the behaviour tests, and as the
``scicat_dataset_ingestor`` console script for the signal and crash tests;
the SciCat-compatible server always runs here, so its record of requests
outlives a killed daemon and tells what was ingested how often.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
import yaml

from scingestor.config import config_from_dict
from scingestor.service import IngestorService
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from .helpers import posted_pids, wait_until

BID = "99001234"


@pytest.fixture(scope="module")
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


def settings(tmp_path: Path, server: SciCatServer, **extra: object) -> Dict[str, object]:
    account = DEFAULT_ACCOUNTS[0]
    credential = tmp_path / "credential.json"
    credential.write_text(json.dumps({"username": account.username, "password": account.password}))
    credential.chmod(0o600)
    values: Dict[str, object] = {
        "scicat_url": server.url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "beamtime_dirs": [str(tmp_path / "gpfs")],
        "ingestor_var_dir": str(tmp_path / "var"),
        "ingestor_state_dir": str(tmp_path / "state"),
        "ingestion_delay_time": 0.0,
        "max_scandir_depth": -1,
        "ingest_dataset_attachment": False,
    }
    values.update(extra)
    (tmp_path / "gpfs").mkdir(exist_ok=True)
    return values


@pytest.fixture
def service_factory(tmp_path: Path, server: SciCatServer):
    services = []

    def make(**extra: object) -> IngestorService:
        service = IngestorService(config_from_dict(settings(tmp_path, server, **extra)))
        services.append(service)
        service.start()
        return service

    yield make
    for service in services:
        service.stop()


def test_beamtime_dropped_in_later_is_watched_and_lines_ingested(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000001"
    service = service_factory()
    assert service.state == "ON" and service.watched_beamtimes == []
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir()
    make_scan(raw, "scan_00001")
    make_beamtime(gpfs, bid)
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    append_list_line(raw / f"scicat-datasets-{bid}.lst", "scan_00001")
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/scan_00001"] == 1)
    assert service.wait_idle(30)
    assert service.snapshot()["ingested_count"] == 1
    assert service.snapshot()["last_ingested_scan"] == "scan_00001"


def test_lines_one_by_one_and_in_a_burst_each_ingested_once(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000002"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    names = [f"burst_{index:05d}" for index in range(25)]
    for name in names:
        make_scan(raw, name)
    service = service_factory()
    listing = raw / f"scicat-datasets-{bid}.lst"
    for name in names[:3]:
        append_list_line(listing, name)
        time.sleep(0.2)
    with open(listing, "a") as handle:  # a burst in one write
        handle.write("".join(f"\n{name}" for name in names[3:]))
    assert wait_until(lambda: len(posted_pids(server, bid)) == len(names), 120)
    assert service.wait_idle(60)
    assert set(posted_pids(server, bid).values()) == {1}
    ingested = Path(service.intake.lists[str(listing)].ingested.path).read_text().split("\n")
    assert sorted(line.split(" ")[0] for line in ingested if line) == names


def test_new_scan_subdirectory_and_removed_beamtime(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000003"
    gpfs = tmp_path / "gpfs"
    make_beamtime(gpfs, bid)
    service = service_factory()
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    deep = gpfs / "raw" / "sample1" / "run2"
    deep.mkdir(parents=True)
    make_scan(deep, "deep_00001")
    append_list_line(deep / f"scicat-datasets-{bid}.lst", "deep_00001")
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/deep_00001"] == 1)
    (gpfs / f"beamtime-metadata-{bid}.json").unlink()
    assert wait_until(lambda: service.watched_beamtimes == [])
    assert service.watcher.watch_count <= 1


def test_measurement_commands_through_the_service(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000004"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    for name in ("m_00001", "m_00002"):
        make_scan(raw, name)
    listing = raw / f"scicat-datasets-{bid}.lst"
    service = service_factory()
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    events = []
    service.subscribe(lambda name, value: events.append((name, value)))
    assert service.start_measurement("calib", str(raw)) == "calib"
    assert service.current_measurement(str(raw)) == "calib"
    append_list_line(listing, "m_00001")
    append_list_line(listing, "m_00002")
    assert wait_until(lambda: len(posted_pids(server, bid)) == 2, 60)
    assert service.wait_idle(30)
    assert service.stop_measurement(str(raw)) == "calib"
    assert wait_until(lambda: f"{bid}/calib" in server.datasets, 60)
    measurement = server.datasets[f"{bid}/calib"]
    assert measurement["type"] == "derived"
    assert sorted(measurement["inputDatasets"]) == [f"{bid}/m_00001", f"{bid}/m_00002"]
    assert ("current_measurement", "calib") in events
    assert ("current_measurement", "") in events
    text = listing.read_text()
    assert text.endswith("\n")  # whole lines: nothing can merge
    lines = [line for line in text.split("\n") if line]
    assert lines[0] == "__command__ start calib" and lines[-2] == "__command__ stop"
    assert lines[-1].startswith("calib:")


def test_reingest_queues_listed_scans(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000005"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    make_scan(raw, "r_00001")
    service = service_factory()
    append_list_line(raw / f"scicat-datasets-{bid}.lst", "r_00001")
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/r_00001"] == 1)
    assert service.wait_idle(30)
    assert service.reingest(beamtime=bid) == 1
    assert service.wait_idle(30)
    assert posted_pids(server, bid)[f"{bid}/r_00001"] == 1  # unchanged: not posted again
    assert service.snapshot()["unchanged_count"] >= 1


def test_scicat_down_puts_the_service_in_alarm_and_nothing_is_lost(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000006"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    make_scan(raw, "down_00001")
    service = service_factory(max_request_tries_number=2, retry_base_delay=0.3)
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    server.set_down(True)
    try:
        append_list_line(raw / f"scicat-datasets-{bid}.lst", "down_00001")
        assert wait_until(lambda: service.state == "ALARM", 30)
        assert "SciCat unreachable" in service.status
    finally:
        server.set_down(False)
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/down_00001"] == 1, 60)
    assert wait_until(lambda: service.state == "ON", 30)


# -- the console script ------------------------------------------------------------


def daemon_config(tmp_path: Path, server: SciCatServer, **extra: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings(tmp_path, server, **extra)))
    return path


def start_daemon(config: Path, log: Path, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scingestor.cli.dataset_ingestor",
            "-c",
            str(config),
            "-f",
            str(log),
            "-l",
            "debug",
        ],
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.mark.slow
def test_sigterm_exits_quickly_with_state_flushed(tmp_path: Path, server: SciCatServer) -> None:
    bid = "11000007"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    make_scan(raw, "t_00001")
    config = daemon_config(tmp_path, server)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        assert wait_until(lambda: log.exists() and "Ingestor started" in log.read_text(), 60)
        append_list_line(raw / f"scicat-datasets-{bid}.lst", "t_00001")
        assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/t_00001"] == 1, 60)
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        if daemon.poll() is None:
            daemon.kill()
    text = log.read_text()
    assert "SIGTERM received..." in text and "Ingestor stopped" in text
    journal = (tmp_path / "state" / "journal.jsonl").read_text()
    assert journal.strip()


@pytest.mark.slow
def test_kill_9_during_a_burst_then_restart_ingests_each_scan_once(
    tmp_path: Path, server: SciCatServer
) -> None:
    bid = "11000008"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    names = [f"k_{index:05d}" for index in range(40)]
    for name in names:
        make_scan(raw, name)
    listing = raw / f"scicat-datasets-{bid}.lst"
    config = daemon_config(tmp_path, server)
    log = tmp_path / "daemon.log"
    rng = random.Random(8)
    appended = 0
    for _round in range(3):
        daemon = start_daemon(config, log)
        try:
            assert wait_until(lambda: log.exists() and "Ingestor started" in log.read_text(), 60)
            stop_at = min(len(names), appended + 15)
            while appended < stop_at:
                append_list_line(listing, names[appended])
                appended += 1
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            daemon.kill()
            daemon.wait(10)
    daemon = start_daemon(config, log)
    try:
        while appended < len(names):
            append_list_line(listing, names[appended])
            appended += 1
        assert wait_until(lambda: len(posted_pids(server, bid)) == len(names), 180)
        time.sleep(1.0)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    counts = posted_pids(server, bid)
    assert sorted(pid.split("/")[1] for pid in counts) == names
    assert set(counts.values()) == {1}, {pid: n for pid, n in counts.items() if n != 1}
    blocks = Counter(
        block["datasetId"]
        for block in server.origdatablocks.values()
        if block["datasetId"].startswith(bid)
    )
    assert set(blocks.values()) == {1}, "an origdatablock was posted twice"


def test_stop_then_start_ingests_again(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000009"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    make_scan(raw, "again_00001")
    make_scan(raw, "again_00002")
    service = service_factory()
    assert service.state != "ALARM"  # SciCat not known yet (or answering): no alarm
    listing = raw / f"scicat-datasets-{bid}.lst"
    append_list_line(listing, "again_00001")
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/again_00001"] == 1)
    service.stop()
    assert service.state == "OFF"
    append_list_line(listing, "again_00002")  # listed while stopped
    service.start()
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/again_00002"] == 1, 60)
    assert posted_pids(server, bid)[f"{bid}/again_00001"] == 1


def test_measurement_in_an_unwatched_directory_is_an_error(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    from scingestor.errors import ScingestorError

    bid = "11000010"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    (raw / "sub").mkdir(parents=True)
    make_beamtime(gpfs, bid)
    (raw / f"scicat-datasets-{bid}.lst").write_text("")
    service = service_factory()
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    with pytest.raises(ScingestorError, match="does not read this list file"):
        service.start_measurement("lost", str(raw / "sub"))
    with pytest.raises(ScingestorError, match="not below a watched beamtime"):
        service.start_measurement("nowhere", str(tmp_path / "elsewhere"))


def test_a_scan_without_plot_is_not_retried_forever(
    tmp_path: Path, server: SciCatServer, service_factory
) -> None:
    bid = "11000011"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    make_scan(raw, "plotless_00001", kind="fio")
    options = dict(
        ingest_dataset_attachment=True,
        retry_failed_attachment_ingestion=True,
        plot_file_extension_list=["png"],
    )
    service = service_factory(**options)
    append_list_line(raw / f"scicat-datasets-{bid}.lst", "plotless_00001")
    assert wait_until(lambda: posted_pids(server, bid)[f"{bid}/plotless_00001"] == 1)
    assert service.wait_idle(30)
    service.stop()
    restarted = service_factory(**options)
    assert wait_until(lambda: restarted.watched_beamtimes == [bid])
    time.sleep(0.5)
    assert restarted.queue_length == 0
    assert restarted.wait_idle(30)
    ingested = (
        (tmp_path / "var" / str(raw).lstrip("/") / f"scicat-ingested-datasets-{bid}.lst")
        .read_text()
        .split()
    )
    assert ingested[0] == "plotless_00001" and ingested[3] == "0"  # nothing attached
    assert restarted.snapshot()["unchanged_count"] == 0  # nothing was even re-run


@pytest.mark.slow
def test_two_daemons_with_their_own_configurations_under_one_home(
    tmp_path: Path, server: SciCatServer
) -> None:
    """Each runs (no "journal locked"), ingests only its own scans into its own SciCat.

    Both configuration files are called ``ingestor.yaml``, neither sets
    ``ingestor_state_dir``, and the journal an earlier version shared holds
    a pending scan of each: each daemon takes over its own one.
    """
    from scingestor.journal import Journal

    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home))
    shared = home / ".local" / "state" / "scingestor"
    instances = []
    with SciCatServer() as other_server:
        for name, scicat, bid in (("a", server, "11400011"), ("b", other_server, "11400012")):
            root = tmp_path / name
            gpfs = root / "gpfs"
            raw = gpfs / "raw"
            raw.mkdir(parents=True)
            make_beamtime(gpfs, bid)
            for scan in ("old_00001", "new_00001"):
                make_scan(raw, scan)
            listing = raw / f"scicat-datasets-{bid}.lst"
            append_list_line(listing, "old_00001")
            journal = Journal(str(shared))  # an earlier version stopped before it
            journal.open()
            journal.accept(
                str(listing),
                listing.stat().st_size,
                [
                    journal.new_job(
                        list_file=str(listing),
                        beamtime_file=str(gpfs / f"beamtime-metadata-{bid}.json"),
                        lineno=1,
                        text="old_00001",
                    )
                ],
            )
            journal.close()
            values = settings(root, scicat, ingestor_state_dir=None)
            config = root / "ingestor.yaml"
            config.write_text(yaml.safe_dump(values))
            instances.append((root / "daemon.log", scicat, bid, listing, config))
        daemons = [start_daemon(config, log, env) for log, _s, _b, _l, config in instances]
        try:
            for log, *_rest in instances:
                assert wait_until(
                    lambda: log.exists() and "Ingestor started" in log.read_text(), 60
                ), log.read_text() if log.exists() else "no log"
            for _log, _scicat, _bid, listing, _config in instances:
                append_list_line(listing, "new_00001")
            for _log, scicat, bid, _listing, _config in instances:
                assert wait_until(
                    lambda: (
                        sorted(posted_pids(scicat, bid)) == [f"{bid}/new_00001", f"{bid}/old_00001"]
                    ),
                    60,
                )
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
            assert [daemon.wait(30) for daemon in daemons] == [0, 0]
        finally:
            for daemon in daemons:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait(10)
        (log_a, server_a, bid_a, _, _), (log_b, server_b, bid_b, _, _) = instances
        assert posted_pids(server_a, bid_b) == {} and posted_pids(server_b, bid_a) == {}
        assert set(posted_pids(server_a, bid_a).values()) == {1}
        assert set(posted_pids(server_b, bid_b).values()) == {1}
    folders = sorted(path.name for path in shared.iterdir() if path.is_dir())
    assert len(folders) == 2 and all(name.startswith("ingestor-") for name in folders)
    for log, *_rest in instances:
        text = log.read_text()
        assert "journal locked" not in text and "Took over 1 pending job(s)" in text
    assert not (shared / "journal.jsonl").exists()  # both took theirs: nothing left
