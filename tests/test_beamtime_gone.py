"""A beamtime directory that goes away while its scans wait (issue 18, item 8).

An unmounted GPFS or a directory moved away must not cost the scans queued
for it: they stay in the journal, are not run nor given up on while the
directory is missing, and run once it is back, also after a restart.

The service runs in the test process; the directory is really moved away
and back (real inotify), and a long ingestion delay keeps the jobs queued
until it is gone.
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

NAMES = [f"away_{index:05d}" for index in range(1, 4)]
DELAY = 2.0


@pytest.fixture(scope="module")
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


def make_service(tmp_path: Path, server: SciCatServer, current: Path) -> IngestorService:
    account = DEFAULT_ACCOUNTS[0]
    credential = tmp_path / "credential.json"
    credential.write_text(json.dumps({"username": account.username, "password": account.password}))
    credential.chmod(0o600)
    values: Dict[str, object] = {
        "scicat_url": server.url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "beamtime_dirs": [str(current)],
        "ingestor_var_dir": str(tmp_path / "var"),
        "ingestor_state_dir": str(tmp_path / "state"),
        "ingestion_delay_time": DELAY,
        "ingest_dataset_attachment": False,
        # a job that fails is tried again soon and given up on after two tries:
        # without the rule the queued scans would be dropped within seconds
        "retry_base_delay": 0.1,
        "max_generator_attempts": 2,
    }
    return IngestorService(config_from_dict(values))


@pytest.fixture
def services() -> Iterator[List[IngestorService]]:
    made: List[IngestorService] = []
    yield made
    for service in made:
        service.stop()


def test_queued_scans_wait_for_their_moved_away_beamtime_and_run_when_it_is_back(
    tmp_path: Path, server: SciCatServer, services: List[IngestorService]
) -> None:
    bid = "12000081"
    current = tmp_path / "gpfs" / "current"
    away = tmp_path / "gpfs" / "moved-away"
    raw = current / "raw"
    raw.mkdir(parents=True)
    make_beamtime(current, bid)
    for name in NAMES:
        make_scan(raw, name)
    service = make_service(tmp_path, server, current)
    services.append(service)
    service.start()
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    with open(raw / f"scicat-datasets-{bid}.lst", "a", encoding="utf-8") as handle:
        handle.write("".join(f"\n{name}" for name in NAMES))
    assert wait_until(lambda: service.journal.pending_count() == len(NAMES), 30)
    os.rename(current, away)  # gone, while the jobs wait for their delay
    assert wait_until(lambda: service.watched_beamtimes == [], 30)
    # the jobs fall due with their directory missing: kept, not run, not given up
    assert wait_until(lambda: service.queue_length == 0, 30 + DELAY)
    assert service.journal.pending_count() == len(NAMES)
    assert not posted_pids(server, bid)
    assert service.snapshot()["failed_count"] == 0

    # a restart while it is away keeps them too
    service.stop()
    service.start()
    assert service.watched_beamtimes == [] and service.queue_length == 0
    assert service.journal.pending_count() == len(NAMES)

    os.rename(away, current)  # back (moved back, remounted)
    service.rescan()  # the safety re-scan finds it (here on demand)
    assert wait_until(lambda: service.watched_beamtimes == [bid], 30)
    assert wait_until(
        lambda: all(posted_pids(server, bid)[f"{bid}/{name}"] == 1 for name in NAMES), 60
    ), posted_pids(server, bid)
    assert service.wait_idle(30)
    assert service.journal.pending_count() == 0
    assert set(posted_pids(server, bid).values()) == {1}
