"""A batch run on a measurement the daemon has begun grouping (campaign seed 3039).

The daemon ingested the first scan of a measurement (its callback wrote
the measurement's files); a batch run then found the measurement's JSON
and took the whole measurement for grouped: the later scans were posted
without the measurement and the measurement dataset held the first scan
only.  Now only the scans already ingested are left out of the grouping.
"""

from __future__ import annotations

from scingestor.outcomes import OutcomeStatus


def _names(blocks: list) -> list:
    return sorted(entry["path"] for block in blocks for entry in block["dataFileList"])


def test_the_batch_groups_the_scans_the_daemon_had_not_reached(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    for name in ("scan_00001", "scan_00002", "scan_00003"):
        env.scan(name)
    env.lines("__command__ start calib", "scan_00001")
    first = env.run(daemon=True)
    assert first["scan_00001"].status == OutcomeStatus.INGESTED
    env.lines("scan_00002", "scan_00003", "__command__ stop", "calib")
    summary = env.batch()
    assert summary.ok, summary.report()
    datasets = env.datasets()
    scans = [env.pid(name) for name in ("scan_00001", "scan_00002", "scan_00003")]
    measurement = datasets[env.pid("calib")]
    assert measurement["inputDatasets"] == scans
    for pid in scans:
        assert datasets[pid]["keywords"] == ["scan", "calib"], pid
    # each scan's files once under the measurement (the first one not grouped twice)
    assert _names(env.blocks(env.pid("calib"))) == [
        "scan_00001.nxs",
        "scan_00002.nxs",
        "scan_00003.nxs",
    ]
