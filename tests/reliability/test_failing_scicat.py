"""SciCat answering but failing, and our own files unwritable: the scan waits (issue 18, 7).

A scan whose requests keep getting 500 (past the tries: the client's
``SciCatFailing``, or its tries ending on a 500) is no outage to wait out
silently: it counts in ``FailedCount`` and shows in ``LastError`` while it
waits, is retried with the capped backoff, and is never retired.  An
``OSError`` on our own files (the var dir) must not retire a scan either.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scingestor.config import config_from_dict
from scingestor.service import IngestorService
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan

from ..test_daemon import settings
from .conftest import wait_until

pytestmark = [pytest.mark.reliability]

BID = "99180007"


@pytest.fixture
def running(tmp_path: Path, scicat_factory):
    server = scicat_factory()
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, BID)
    config = config_from_dict(
        settings(
            tmp_path,
            server,
            max_request_tries_number=2,
            retry_base_delay=0.2,
            request_timeout=5.0,
        )
    )
    service = IngestorService(config)
    service.start()
    yield service, server, raw
    service.stop()


def test_a_scan_scicat_keeps_failing_for_counts_as_failed_and_is_retried(running) -> None:
    service, server, raw = running
    list_file = raw / f"scicat-datasets-{BID}.lst"
    make_scan(raw, "first_00001")
    append_list_line(list_file, "first_00001")
    # the first scan whole (dataset, block, record) before SciCat starts failing
    assert wait_until(lambda: service.snapshot().last_ingested_scan == "first_00001", 60)
    server.set_error_rate(1.0, status=500)  # every request answered 500
    make_scan(raw, "fail_00002")
    append_list_line(list_file, "fail_00002")

    def shown() -> bool:
        snapshot = service.snapshot()
        return snapshot.failed_count == 1 and "fail_00002" in service.last_error

    assert wait_until(shown, 60), service.snapshot()
    retried = service.counts["retried"]
    assert wait_until(lambda: service.counts["retried"] >= retried + 2, 60)  # retried, not retired
    assert service.snapshot().failed_count == 1  # one scan, however many tries
    assert service.queue_length == 1
    assert any(
        problem.startswith("Scans are failing: fail_00002") for problem in service.health().problems
    )
    server.reset_faults()
    assert wait_until(lambda: f"{BID}/fail_00002" in server.datasets, 60)
    assert wait_until(lambda: service.snapshot().failed_count == 0, 30)
    assert (
        len([b for b in server.origdatablocks.values() if b["datasetId"].endswith("fail_00002")])
        == 1
    )


def test_an_unwritable_var_dir_keeps_the_scan_waiting(running, tmp_path: Path) -> None:
    service, server, raw = running
    list_file = raw / f"scicat-datasets-{BID}.lst"
    var = tmp_path / "var"
    make_scan(raw, "first_00001")
    append_list_line(list_file, "first_00001")
    # the first scan whole (its record written) and the daemon idle before the
    # var dir goes: a record still being written would make the folder anew
    assert wait_until(lambda: service.snapshot().last_ingested_scan == "first_00001", 60)
    assert service.wait_idle(30)
    # the var dir cannot take our files any more (a file where the folder
    # was: root ignores permissions, so this stands for a read-only var dir)
    var.rename(tmp_path / "var.away")
    var.write_text("not a folder")
    make_scan(raw, "wait_00001")
    append_list_line(list_file, "wait_00001")
    assert wait_until(lambda: "Cannot write the ingestor state" in service.status, 60), (
        service.status
    )
    assert service.snapshot().failed_count == 0
    assert service.queue_length == 1
    var.unlink()
    (tmp_path / "var.away").rename(var)
    assert wait_until(lambda: f"{BID}/wait_00001" in server.datasets, 60), service.status
    assert wait_until(lambda: "Cannot write" not in service.status, 30)
