"""``scicat_dataset_ingest`` goes on past a scan or a list that fails unexpectedly (issue 18, 6).

One scan whose generated JSON is not what the uploads expect, or one list
file or ingested list that cannot be read, used to end the whole run with
a traceback: no summary, later scans never run, a dataset posted with
nothing recorded.  Now that scan (or list) fails with its reason in the
summary, the rest goes on, and the exit code is 1.
"""

from __future__ import annotations

import json

from scingestor.cli import dataset_ingest


def test_a_scan_with_an_unexpected_attachment_json_fails_alone(
    beamtime, capsys, restore_logging
) -> None:
    env = beamtime(ingest_dataset_attachment=True)
    for name in ("scan_00001", "scan_00002", "scan_00003"):
        env.scan(name, plot=True)
    env.lines("scan_00001", "scan_00002", "scan_00003")
    meta = env.meta("scan_00002" + env.config.attachment_metadata_postfix)
    meta.parent.mkdir(parents=True, exist_ok=True)
    # a thumbnail that is a list: the uploads cannot even compare it
    meta.write_text(json.dumps({"thumbnail": ["x"], "caption": "c"}))
    code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Summary: 2 ingested, 0 updated, 0 unchanged, 1 failed" in out, out
    assert any("scan_00002" in line and "unexpected error" in line for line in out.splitlines())
    assert env.pid("scan_00003") in env.datasets()
    # the dataset posted before the failure is recorded (as failed: retried next run)
    assert [line.split(" ")[0] for line in env.ingested_lines()].count("scan_00002") == 1
    assert env.ingested().last("scan_00002").ds == 0


def test_an_unreadable_ingested_list_fails_its_list_only(beamtime, capsys, restore_logging) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    sub = env.raw / "sub"
    sub.mkdir()
    env.scan("scan_00001")
    env.scan("scan_00002", directory=sub)
    env.lines("scan_00001")
    env.lines("scan_00002", directory=sub)
    # the first list's ingested list is a directory: reading it is an OSError
    env.ingested_path().mkdir(parents=True)
    code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Summary: 1 ingested" in out, out
    assert f"error: {env.ingested_path()}" in out, out
    assert env.pid("scan_00002") in env.datasets()
    assert env.pid("scan_00001") not in env.datasets()


def test_an_unreadable_list_file_fails_alone(beamtime, capsys, restore_logging) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    sub = env.raw / "sub"
    sub.mkdir()
    env.scan("scan_00002", directory=sub)
    env.lines("scan_00002", directory=sub)
    # a list file that vanished (a dangling link) between the walk and the read
    env.list_file().symlink_to(env.raw / "nowhere.lst")
    code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Summary: 1 ingested" in out, out
    assert f"error: {env.list_file()}" in out, out
