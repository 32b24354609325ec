"""Re-ingestion against a backend that answers like scicat-backend-next 4.5.0.

The test server imitates, by default, what the real backend does and what
hid these faults before (``shared/tools/real-scicat/README.md``): a derived
dataset's ``investigator`` kept as ``principalInvestigator``, 500 for a
DELETE of a gone origdatablock and for a POST of an existing sample, the v3
attachment delete that removes the oldest attachment, and (as an option)
an account that may not delete.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import unquote

import pytest

from scingestor.cli import model_ingest
from scingestor.config import config_from_dict
from scingestor.errors import ConflictError, SciCatError, SciCatUnreachable
from scingestor.outcomes import OutcomeStatus
from scingestor.scicat import ClientSettings, Credentials, SciCatClient
from scingestor.service import IngestorService
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import SciCatServer
from scingestor.uploads import sync_attachments, sync_datablocks

from .conftest import INGESTOR, BeamtimeEnv
from .helpers import wait_until

THUMB = "data:image/png;base64,iVBORw0KGgo="


def writes(env: BeamtimeEnv) -> List[Tuple[str, str]]:
    """``(method, decoded path)`` of each changing request since the checkpoint."""
    return [(r.method, unquote(r.path.split("/api/", 1)[1])) for r in env.changes()]


def default_client(server: SciCatServer, **settings: Any) -> SciCatClient:
    """A client with the DEFAULT retry settings (100 tries, 0.2 s growing backoff)."""
    return SciCatClient(
        ClientSettings(url=server.url, login_path="auth/login", **settings),
        Credentials.from_password(INGESTOR.username, INGESTOR.password),
    )


def raw_dataset(pid: str) -> Dict[str, Any]:
    return {
        "pid": pid,
        "type": "raw",
        "owner": "Jane Doe",
        "ownerGroup": "g",
        "contactEmail": "jane@example.org",
        "sourceFolder": "/data/x",
        "creationTime": "2026-03-01T10:00:00Z",
        "principalInvestigator": "jane@example.org",
        "creationLocation": "/DESY/PETRA III/P00",
    }


def file_block(pid: str, name: str) -> Dict[str, Any]:
    return {
        "datasetId": pid,
        "size": 1,
        "ownerGroup": "g",
        "dataFileList": [{"path": name, "size": 1, "time": "2026-03-01T10:00:05Z"}],
    }


# ---------------------------------------------------------------------------
# 1. an unchanged measurement listed again sends nothing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["no", "patch", "create", "mixed"])
def test_unchanged_measurement_listed_again_sends_nothing(beamtime, strategy: str) -> None:
    env = beamtime(dataset_update_strategy=strategy, ingest_dataset_attachment=False)
    env.scan("scan_00001", detectors={"det": 1})
    env.scan("scan_00002")
    env.lines("__command__ start calib", "scan_00001", "scan_00002", "__command__ stop", "calib")
    outcomes = env.run(daemon=True)
    assert outcomes["calib"].status == OutcomeStatus.INGESTED
    calib = env.pid("calib")
    stored = env.datasets()[calib]
    # what the backend keeps: no investigator, a principalInvestigator
    assert "investigator" not in stored and stored["principalInvestigator"]
    before = env.datasets()
    # the measurement listed again, its metadata written anew
    meta = env.meta("calib.scan.json")
    later = time.time() + 5
    os.utime(meta, (later, later))
    env.lines("calib:1")
    env.checkpoint()
    outcomes = env.run(daemon=True)
    assert outcomes["calib:1"].status == OutcomeStatus.UNCHANGED, outcomes["calib:1"].message
    assert outcomes["calib:1"].pid == calib
    assert writes(env) == []
    assert env.datasets() == before
    env.assert_clean()


# ---------------------------------------------------------------------------
# 2. an attachment replaced in a dataset that holds two
# ---------------------------------------------------------------------------


def captions(server: SciCatServer, pid: str) -> List[str]:
    return sorted(
        a.get("caption", "") for a in server.attachments.values() if a.get("datasetId") == pid
    )


def attachment(caption: str) -> Dict[str, Any]:
    return {"thumbnail": THUMB, "caption": caption, "ownerGroup": "g"}


@pytest.mark.parametrize("v4", [True, False], ids=["v4-route", "v3-only"])
def test_attachment_replaced_in_a_dataset_with_two(v4: bool) -> None:
    """[A, B] becomes [A, C]: by the v4 route, or despite the v3 route's bug."""
    with SciCatServer(v4=v4) as server, default_client(server) as client:
        pid = f"99001234/att-{uuid.uuid4().hex[:8]}"
        client.post_dataset(raw_dataset(pid))
        first = sync_attachments(client, pid, [attachment("A"), attachment("B")])
        assert (first.posted, captions(server, pid)) == (2, ["A", "B"])
        server.clear_recorded()
        result = sync_attachments(client, pid, [attachment("A"), attachment("C")], replace=True)
        assert captions(server, pid) == ["A", "C"]
        assert result.kept == result.skipped == 0
        deletes = [unquote(r.path) for r in server.recorded("DELETE")]
        if v4:
            # deleted by id, once; A never touched
            assert len(deletes) == 1 and deletes[0].startswith("/api/v4/attachments/")
            assert result.posted == 1
        else:
            # the v3 delete took A (the oldest): seen, and A posted again
            assert all("/api/v3/Datasets/" in path for path in deletes)
            assert result.posted == 2
        # nothing more to do the next time
        server.clear_recorded()
        again = sync_attachments(client, pid, [attachment("A"), attachment("C")], replace=True)
        assert (again.posted, again.deleted, again.present) == (0, 0, 2)
        assert [r.method for r in server.recorded() if r.method != "GET"] == []


# ---------------------------------------------------------------------------
# 3. a lost answer to a DELETE
# ---------------------------------------------------------------------------


def test_lost_delete_answer_settles_at_default_settings() -> None:
    """The retried DELETE would get 500 (gone) a hundred times: looked up instead."""
    with SciCatServer() as server, default_client(server) as client:
        pid = f"99001234/lost-{uuid.uuid4().hex[:8]}"
        client.post_dataset(raw_dataset(pid))
        old = client.post_origdatablock(file_block(pid, "old.nxs"))
        server.clear_recorded()
        server.lose_next_responses(1, "DELETE")
        started = time.monotonic()
        result = sync_datablocks(client, pid, [file_block(pid, "new.nxs")], replace=True)
        elapsed = time.monotonic() - started
        assert elapsed < 10.0, elapsed
        assert (result.posted, result.deleted) == (1, 1)
        blocks = [b for b in server.origdatablocks.values() if b["datasetId"] == pid]
        assert [b["dataFileList"][0]["path"] for b in blocks] == ["new.nxs"]
        assert old["_id"] not in server.origdatablocks
        deletes = server.recorded("DELETE")
        assert len(deletes) == 1 and deletes[0].dropped


def test_lost_delete_answer_of_a_changed_scan(beamtime) -> None:
    """End to end: a re-ingested scan whose block DELETE loses its answer is done
    in one pass, well within 10 s at the default retry settings."""
    env = beamtime(ingest_dataset_attachment=False, max_request_tries_number=100)
    env.scan("scan_00001", detectors={"det": 1})
    env.lines("scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED
    pid = env.pid("scan_00001")
    env.scan("scan_00001", detectors={"det": 2})  # the scan changed
    env.lines("scan_00001:1")
    env.server.lose_next_responses(1, "DELETE")
    started = time.monotonic()
    outcome = env.run(daemon=True)["scan_00001:1"]
    assert time.monotonic() - started < 10.0
    assert outcome.status == OutcomeStatus.UPDATED, outcome.message
    assert len(env.blocks(pid)) == 1
    assert sorted(e["path"] for e in env.blocks(pid)[0]["dataFileList"]) == [
        "scan_00001.nxs",
        "scan_00001/det_00000.raw",
        "scan_00001/det_00001.raw",
    ]


# ---------------------------------------------------------------------------
# 4. a sample posted again
# ---------------------------------------------------------------------------


def test_existing_sample_is_reported_at_once() -> None:
    with SciCatServer() as server, default_client(server) as client:
        sample = {
            "sampleId": f"s-{uuid.uuid4().hex[:8]}",
            "ownerGroup": "g",
            "description": "a crystal",
        }
        assert client.post_model("Samples", sample)["sampleId"] == sample["sampleId"]
        server.clear_recorded()
        started = time.monotonic()
        with pytest.raises(ConflictError) as info:
            client.post_model("Samples", sample)
        assert time.monotonic() - started < 10.0
        assert "already exists" in str(info.value)
        # one POST (500), one look-up that finds it: no hundred tries
        assert [(r.method, r.status) for r in server.recorded()] == [("POST", 500), ("GET", 200)]


def test_model_ingest_of_a_duplicate_sample(
    tmp_path: Path, restore_logging, capsys: pytest.CaptureFixture
) -> None:
    with SciCatServer() as server:
        credential = tmp_path / "credentials.json"
        credential.write_text(
            json.dumps({"username": INGESTOR.username, "password": INGESTOR.password})
        )
        credential.chmod(0o600)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"scicat_url: {server.url}\n"
            f"ingestor_credential_file: {credential}\n"
            f"scicat_users_login_path: auth/login\n"
        )
        sample = tmp_path / "sample.json"
        sample.write_text(json.dumps({"sampleId": "dup-1", "ownerGroup": "g"}))
        args = ["-m", "Samples", "-c", str(config), str(sample)]
        assert model_ingest.main(args) == 0
        capsys.readouterr()
        started = time.monotonic()
        assert model_ingest.main(args) == 0  # already there: the goal holds
        assert time.monotonic() - started < 10.0
        err = capsys.readouterr().err
        assert "already exists" in err and "left unchanged" in err
        assert len(server.recorded("POST", "samples")) == 2
        assert len(server.samples) == 1


# ---------------------------------------------------------------------------
# 5. an account that may not delete
# ---------------------------------------------------------------------------


def delete_warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "may not delete" in r.getMessage()
    ]


@pytest.mark.parametrize("policy", ["skip", "add"])
def test_changed_scan_without_delete_right(
    beamtime, fresh_scicat: SciCatServer, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    env = beamtime(
        server=fresh_scicat, ingest_dataset_attachment=False, replace_without_delete_right=policy
    )
    fresh_scicat.set_may_delete(INGESTOR.username, False)
    env.scan("scan_00001", detectors={"det": 1})
    env.lines("scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED
    pid = env.pid("scan_00001")
    (old,) = env.blocks(pid)
    caplog.set_level(logging.INFO, logger="scingestor")
    for run in range(1, 4):
        env.scan("scan_00001", detectors={"det": 1 + run})  # changed again
        env.lines(f"scan_00001:{run}")
        env.checkpoint()
        outcome = env.run(daemon=True)[f"scan_00001:{run}"]
        # recorded, not failed: later runs do not take it again
        assert outcome.status in (OutcomeStatus.UNCHANGED, OutcomeStatus.UPDATED), outcome.message
        assert env.ingested().is_done(f"scan_00001:{run}")
        blocks = env.blocks(pid)
        assert old["_id"] in {b["_id"] for b in blocks}
        if policy == "skip":
            assert len(blocks) == 1  # nothing posted it cannot clean up
        else:
            assert len(blocks) == 1 + run  # each version beside the others
        posts = [w for w in writes(env) if w[0] == "POST"]
        assert len(posts) == (0 if policy == "skip" else 1)
        # one DELETE ever (sent twice: a 403 gets one re-login), which taught the client
        deletes = {path for method, path in writes(env) if method == "DELETE"}
        assert deletes == ({f"v3/OrigDatablocks/{old['_id']}"} if run == 1 else set())
    (text,) = delete_warnings(caplog)  # said once
    assert "may not delete origdatablocks" in text and "DELETE_GROUPS" in text
    assert f"replace_without_delete_right: {policy}" in text
    assert env.client.warnings == [text]


def test_attachment_without_delete_right(
    fresh_scicat: SciCatServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = fresh_scicat
    with default_client(server) as client:
        pid = f"99001234/att-{uuid.uuid4().hex[:8]}"
        client.post_dataset(raw_dataset(pid))
        sync_attachments(client, pid, [attachment("A")])
        server.set_may_delete(INGESTOR.username, False)
        for caption in ("B", "C"):
            server.clear_recorded()
            result = sync_attachments(client, pid, [attachment(caption)], replace=True)
            assert (result.posted, result.kept, result.skipped) == (0, 1, 1)
            assert captions(server, pid) == ["A"]
            # one DELETE (sent twice: the 403 gets one re-login), then none
            assert len({r.path for r in server.recorded("DELETE")}) == (1 if caption == "B" else 0)
        (text,) = delete_warnings(caplog)
        assert "may not delete attachments" in text


def test_delete_right_probe(fresh_scicat: SciCatServer) -> None:
    """For a preflight check: the probe deletes nothing and tells the right."""
    with default_client(fresh_scicat) as client:
        assert client.may_delete_origdatablocks() is True
    fresh_scicat.set_may_delete(INGESTOR.username, False)
    with default_client(fresh_scicat) as client:
        assert client.may_delete_origdatablocks() is False
        assert client.known_right("delete:origdatablocks") is False
    probes = fresh_scicat.recorded("DELETE")
    assert [r.status for r in probes] == [500, 403, 403]  # 403: one re-login


@pytest.mark.slow
def test_daemon_shows_the_missing_delete_right(tmp_path: Path, fresh_scicat: SciCatServer) -> None:
    """The service's Status and LastError (what the Tango device shows) say it."""
    server = fresh_scicat
    server.set_may_delete(INGESTOR.username, False)
    credential = tmp_path / "credential.json"
    credential.write_text(
        json.dumps({"username": INGESTOR.username, "password": INGESTOR.password})
    )
    credential.chmod(0o600)
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    bid = "11000077"
    make_scan(raw, "scan_00001", detectors={"det": 1})
    make_beamtime(gpfs, bid)
    service = IngestorService(
        config_from_dict(
            {
                "scicat_url": server.url,
                "ingestor_credential_file": str(credential),
                "scicat_users_login_path": "auth/login",
                "beamtime_dirs": [str(gpfs)],
                "ingestor_var_dir": str(tmp_path / "var"),
                "ingestor_state_dir": str(tmp_path / "st"),
                "ingestion_delay_time": 0.0,
                "max_scandir_depth": -1,
                "ingest_dataset_attachment": False,
            }
        )
    )
    service.start()
    try:
        listing = raw / f"scicat-datasets-{bid}.lst"
        append_list_line(listing, "scan_00001")
        pid = f"{bid}/scan_00001"
        assert wait_until(
            lambda: any(b["datasetId"] == pid for b in server.origdatablocks.values())
        )
        assert service.wait_idle(30)
        make_scan(raw, "scan_00001", detectors={"det": 2})  # changed
        append_list_line(listing, "scan_00001:1")
        assert wait_until(lambda: "may not delete" in service.status, 60)
        assert service.wait_idle(30)
        snapshot = service.snapshot()
        assert "may not delete origdatablocks" in snapshot["warning"]
        assert "may not delete origdatablocks" in snapshot["last_error"]
        assert "DELETE_GROUPS" in snapshot["status"]
        assert snapshot["failed_count"] == 0
        assert len([b for b in server.origdatablocks.values() if b["datasetId"] == pid]) == 1
    finally:
        service.stop()


def test_model_post_failing_alike_stops_after_a_few_tries() -> None:
    """A 500 answering the same request the same way is not transient."""
    with SciCatServer() as server, default_client(server) as client:
        client.login()
        server.fail_next(50, status=500)
        started = time.monotonic()
        with pytest.raises(SciCatError) as info:
            client.post_model("Samples", {"ownerGroup": "g"})  # no sampleId to look up
        assert time.monotonic() - started < 10.0
        assert "500 3 times" in str(info.value) and "Internal server error" in str(info.value)
        assert not isinstance(info.value, SciCatUnreachable)
        assert len(server.recorded("POST", "samples")) == 3
        server.reset_faults()
