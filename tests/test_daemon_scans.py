"""The daemon with lines naming one scan several times, and scans without master file.

The service runs in the test process (real inotify, real generators, the
SciCat-compatible server on loopback), as in ``tests/test_daemon.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scingestor.config import config_from_dict
from scingestor.scicat import ClientSettings, SciCatClient
from scingestor.service import IngestorService
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import SciCatServer

from .helpers import posted_pids, wait_until
from .test_batch import RecordingPipeline, one_after_the_other
from .test_daemon import server, service_factory, settings  # noqa: F401  (fixtures)


def test_lines_of_one_scan_run_one_after_the_other_in_list_order(
    tmp_path: Path,
    server: SciCatServer,  # noqa: F811  (the fixture imported above)
) -> None:
    bid = "11301301"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    names = [f"rep_{index:05d}" for index in range(1, 5)]
    keys = {name: [name, f"{name}:1", f"{name}:2", f"{name}:3"] for name in names}
    for name in names:
        make_scan(raw, name, detectors={"pilatus": 2})
    config = config_from_dict(settings(tmp_path, server, ingestion_workers=4))
    client = SciCatClient(ClientSettings.from_config(config))
    pipeline = RecordingPipeline(config, client, together=names)
    service = IngestorService(config, client=client, pipeline=pipeline)
    total = sum(len(lines) for lines in keys.values())
    # one write: all 16 lines are due at once, 4 workers free to take them
    listing = raw / f"scicat-datasets-{bid}.lst"
    listing.write_text("".join(f"\n{key}" for name in names for key in keys[name]))
    service.start()
    try:
        assert wait_until(lambda: len(pipeline.events) == 2 * total, 120), pipeline.events
        assert service.wait_idle(60)
        snapshot = service.snapshot()
    finally:
        service.stop()
        client.close()
    for name in names:
        assert pipeline.runs(name) == one_after_the_other(keys[name])
        assert (
            len(
                [
                    block
                    for block in server.origdatablocks.values()
                    if block.get("datasetId") == f"{bid}/{name}"
                ]
            )
            == 1
        )
    assert set(posted_pids(server, bid).values()) == {1}
    assert snapshot["failed_count"] == 0
    assert snapshot["without_data_files_count"] == 0


def test_scan_without_master_file_is_counted_and_in_the_status(
    tmp_path: Path,
    server: SciCatServer,  # noqa: F811  (the fixture imported above)
    service_factory,  # noqa: F811
    caplog,
) -> None:
    bid = "11301302"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    make_scan(raw, "real_00001")
    listing = raw / f"scicat-datasets-{bid}.lst"
    with caplog.at_level("WARNING", logger="scingestor"):
        service = service_factory()
        for line in ("real_00001", "ghost_00002", "ghost_00002:1"):
            append_list_line(listing, line)
        assert wait_until(
            lambda: (
                service.snapshot()["ingested_count"] + service.snapshot()["unchanged_count"] == 3
            ),
            60,
        )
        assert service.wait_idle(30)
    snapshot = service.snapshot()
    assert snapshot["without_data_files_count"] == 1  # one scan, two lines
    assert "1 posted without data files (no master file)" in snapshot["status"]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "no master file" in r.getMessage()
    ]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{listing}:3: scan ghost_00002 has no master file")
    assert str(raw / "ghost_00002") + ".{" in warnings[0]
    # the Tango device shows the service's status (ScicatIngestorDS/device.py)
    device = pytest.importorskip("ScicatIngestorDS.device")
    health = device.Health()
    for name, value in snapshot.as_dict().items():
        health.apply(name, value)
    assert "1 posted without data files" in health.state_and_status()[1]
