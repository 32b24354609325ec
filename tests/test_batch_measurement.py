"""A batch run on a measurement the daemon has begun grouping (campaign seed 3039).

The daemon ingested the first scan of a measurement (its callback wrote
the measurement's files); a batch run then found the measurement's JSON
and took the whole measurement for grouped: the later scans were posted
without the measurement and the measurement dataset held the first scan
only.  Now only the scans already ingested are left out of the grouping.
"""

from __future__ import annotations

import sys

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


BREAKING_CALLBACK = """
import sys
output = sys.argv[sys.argv.index("-o") + 1]
with open(output, "w") as handle:
    handle.write('{"datasetName": "cut')  # a full disk mid-write
sys.exit(1)
"""


def test_a_failing_callback_leaves_the_measurement_files_as_they_were(beamtime, tmp_path) -> None:
    # campaign seed 3048: the callback's in-place write cut by a full disk left
    # the measurement JSON without pid, and the measurement was never posted
    env = beamtime(ingest_dataset_attachment=False)
    for name in ("scan_00001", "scan_00002"):
        env.scan(name)
    env.lines("__command__ start calib", "scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED
    measurement = env.meta("calib" + env.config.scan_metadata_postfix)
    before = measurement.read_bytes()
    script = tmp_path / "breaking_callback.py"
    script.write_text(BREAKING_CALLBACK)
    default = env.config.metadata_generated_callback
    breaking = env.pipeline(
        env.config.replace(
            metadata_generated_callback=f"{sys.executable} {script} " + default.split(" ", 2)[2]
        )
    )
    env.lines("scan_00002")
    ingested = env.ingested()
    task = next(task for task in env.tasks(daemon=True) if task.key == "scan_00002")
    outcome = breaking.process(task, ingested)
    assert outcome.status == OutcomeStatus.RETRY, outcome
    assert measurement.read_bytes() == before
    env.lines("__command__ stop", "calib")
    outcomes = env.run(daemon=True)
    assert outcomes["scan_00002"].ok, outcomes["scan_00002"]
    assert outcomes["calib"].status == OutcomeStatus.INGESTED, outcomes["calib"]
    assert env.datasets()[env.pid("calib")]["inputDatasets"] == [
        env.pid("scan_00001"),
        env.pid("scan_00002"),
    ]
