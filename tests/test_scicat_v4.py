"""SciCat API v4 beside v3: a ``scicat_url`` ending in ``/api/v4``.

Datasets, origdatablocks and attachments then go through the v4 routes
with the v4 bodies (lists instead of the singular v3 names, attachment
``relationships``); login, proposals and the rest stay on v3 beside it.
The test server answers v4 as backend 4.5.0 does (probed on the real
one): it refuses the v3 names, and a dataset made through v4 reads back
through v3 with both forms and ``"version": "4"``.  The same beamtime
ingested through v3 and through v4 leaves the same records, but for the
documented renames.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import quote, unquote

import pytest
import requests

from scingestor.cli import dataset_ingest
from scingestor.outcomes import OutcomeStatus
from scingestor.scicat import ClientSettings, Credentials, SciCatClient
from scingestor.scicat.v4 import dataset_from_v4, dataset_to_v4, route_base
from scingestor.testing.builders import write_nexus_scan, write_png
from scingestor.testing.scicat_server import SciCatServer

from .conftest import INGESTOR, BeamtimeEnv

TIMEOUT = 20


def v4_url(server: SciCatServer) -> str:
    return server.base_url + "/api/v4"


def route(path: str) -> Tuple[str, List[str]]:
    """(API version, decoded path segments after it) of a recorded request."""
    head, _, tail = path.partition("?")[0].partition("/api/")
    version, _, rest = tail.partition("/")
    return version, [unquote(part) for part in rest.split("/")]


def writes(env: BeamtimeEnv) -> List[Tuple[str, str, str, str]]:
    """``(version, method, kind, pid or id)`` of each changing request since the checkpoint."""
    found = []
    for request in env.changes():
        version, parts = route(request.path)
        body = request.body if isinstance(request.body, dict) else {}
        kind = parts[0].lower()
        if kind == "datasets" and len(parts) == 1:
            found.append((version, request.method, "dataset", str(body.get("pid"))))
        elif kind == "datasets":
            found.append((version, request.method, "dataset", parts[1]))
        elif kind == "origdatablocks" and len(parts) == 1:
            found.append((version, request.method, "origdatablock", str(body.get("datasetId"))))
        elif kind == "origdatablocks":
            found.append((version, request.method, "origdatablock-id", parts[1]))
        elif kind == "attachments" and len(parts) == 1:
            target = (body.get("relationships") or [{}])[0].get("targetId")
            found.append((version, request.method, "attachment", str(target)))
        else:
            found.append((version, request.method, kind, "/".join(parts[1:])))
    return found


def assert_v4_only(env: BeamtimeEnv) -> None:
    """Records went through v4 only, with no v3 name in a body; the rest through v3."""
    for request in env.requests():
        version, parts = route(request.path)
        kind = parts[0].lower()
        if kind in ("datasets", "origdatablocks", "attachments"):
            assert version == "v4", (request.method, request.path)
            assert len(parts) <= 2, request.path  # no nested v3 route
            if isinstance(request.body, dict):
                for name in ("principalInvestigator", "investigator", "proposalId", "datasetId"):
                    if kind != "origdatablocks" or name != "datasetId":
                        assert name not in request.body, (request.path, name)
        else:
            assert version == "v3", (request.method, request.path)


def names(blocks: List[Dict[str, Any]]) -> List[str]:
    return sorted(entry["path"] for block in blocks for entry in block["dataFileList"])


def change_master(env: BeamtimeEnv, name: str, temperature: float) -> None:
    """Write the scan's master again with another sample temperature (newer mtime)."""
    path = env.raw / f"{name}.nxs"
    before = path.stat().st_mtime
    write_nexus_scan(path, extra={"sample/temperature": {"value": temperature, "units": "K"}})
    if path.stat().st_mtime <= before:
        os.utime(path, (before + 1, before + 1))


@pytest.fixture
def v4env(beamtime, scicat: SciCatServer) -> Any:
    """The beamtime factory with ``scicat_url`` on the test server's v4 base."""

    def build(**config: Any) -> BeamtimeEnv:
        server = config.get("server") or scicat
        return beamtime(**{"scicat_url": v4_url(server), **config})

    return build


# ---------------------------------------------------------------------------
# the translation and the route table
# ---------------------------------------------------------------------------


def test_v3_body_becomes_v4_and_back() -> None:
    raw = {
        "pid": "1/s",
        "type": "raw",
        "principalInvestigator": "pi@x.org",
        "proposalId": "99001234",
        "sampleId": "s1",
        "instrumentId": "i1",
        "version": "3",
        "scientificMetadata": {"a": 1},
    }
    out = dataset_to_v4(raw)
    assert out == {
        "pid": "1/s",
        "type": "raw",
        "principalInvestigators": ["pi@x.org"],
        "proposalIds": ["99001234"],
        "sampleIds": ["s1"],
        "instrumentIds": ["i1"],
        "scientificMetadata": {"a": 1},
    }
    assert raw["principalInvestigator"] == "pi@x.org"  # the caller's dict is left alone
    derived = dataset_to_v4({"type": "derived", "investigator": "me", "inputDatasets": ["a"]})
    assert derived["principalInvestigators"] == ["me"] and "investigator" not in derived
    back = dataset_from_v4(out)
    for name in ("principalInvestigator", "proposalId", "sampleId", "instrumentId"):
        assert back[name] == raw[name]
    assert back["principalInvestigators"] == ["pi@x.org"]


def test_only_the_v4_controllers_stay_on_v4() -> None:
    base = "http://h:3000/api/v4"
    for path in ("datasets", "Datasets/1%2Fs", "origdatablocks?filter=x", "attachments/a"):
        assert route_base(base, path) == base
    for path in ("auth/login", "Users/login", "auth/whoami", "Proposals/1", "Samples"):
        assert route_base(base, path) == "http://h:3000/api/v3"
    assert route_base("http://h:3000/api/v3", "datasets") == "http://h:3000/api/v3"


def test_client_logs_in_on_v3_and_posts_v4(scicat: SciCatServer) -> None:
    settings = ClientSettings(url=v4_url(scicat), login_path="Users/login", max_tries=2)
    since = scicat_time(scicat)
    with SciCatClient(settings, Credentials(INGESTOR.username, INGESTOR.password)) as client:
        client.login()
        assert client.v4_url() == v4_url(scicat) and client.attachments_v4()
        pid = f"99400001/{since}"
        made = client.post_dataset(raw_dataset(pid))
        assert made["principalInvestigator"] == "pi@example.org"  # read back in v3 names too
        assert client.get_dataset(pid)["proposalId"] == "99400001"
        assert client.get_dataset(pid + "-none") is None
    paths = [(r.method, r.path, r.status) for r in scicat.recorded() if r.time >= since]
    # Users/login gives no token: the fallback auth/login, both on v3
    assert paths[0][:2] == ("POST", "/api/v3/Users/login")
    assert paths[1] == ("POST", "/api/v3/auth/login", 201)
    assert paths[2] == ("POST", "/api/v4/datasets", 201)
    stored = scicat.datasets[pid]
    assert stored["version"] == "4" and stored["principalInvestigators"] == ["pi@example.org"]


def scicat_time(server: SciCatServer) -> float:
    time.sleep(0.001)
    return time.time()


def raw_dataset(pid: str) -> Dict[str, Any]:
    return {
        "pid": pid,
        "type": "raw",
        "owner": "tester",
        "ownerGroup": "99400001-dmgt",
        "accessGroups": ["99400001-dmgt"],
        "contactEmail": "pi@example.org",
        "sourceFolder": "/beamtime/raw",
        "creationTime": "2026-12-01T10:00:00Z",
        "creationLocation": "/DESY/PETRA III/P00",
        "principalInvestigator": "pi@example.org",
        "proposalId": "99400001",
        "datasetName": "scan",
        "scientificMetadata": {"a": {"value": 1, "unit": "K"}},
    }


# ---------------------------------------------------------------------------
# what our test server refuses and shows on v4 (as backend 4.5.0)
# ---------------------------------------------------------------------------


def test_server_refuses_v3_names_on_v4_and_shows_both_on_v3(scicat: SciCatServer) -> None:
    token = requests.post(
        scicat.url + "/auth/login",
        json={"username": INGESTOR.username, "password": INGESTOR.password},
        timeout=TIMEOUT,
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    pid = f"99400002/refused-{scicat_time(scicat)}"
    body = raw_dataset(pid)
    answer = requests.post(v4_url(scicat) + "/datasets", json=body, headers=auth, timeout=TIMEOUT)
    assert answer.status_code == 400
    assert sorted(answer.json()["message"]) == [
        "property principalInvestigator should not exist",
        "property proposalId should not exist",
    ]
    answer = requests.post(
        v4_url(scicat) + "/datasets",
        json=dict(dataset_to_v4(body), version="4"),
        headers=auth,
        timeout=TIMEOUT,
    )
    assert answer.json()["message"] == ["property version should not exist"]
    answer = requests.post(
        v4_url(scicat) + "/datasets", json=dataset_to_v4(body), headers=auth, timeout=TIMEOUT
    )
    assert answer.status_code == 201, answer.text
    assert "principalInvestigator" not in answer.json()
    path = f"/datasets/{quote(pid, safe='')}"
    v3 = requests.get(scicat.url + path, headers=auth, timeout=TIMEOUT).json()
    assert v3["version"] == "4"
    assert (v3["principalInvestigator"], v3["principalInvestigators"]) == (
        "pi@example.org",
        ["pi@example.org"],
    )
    assert (v3["proposalId"], v3["proposalIds"]) == ("99400001", ["99400001"])
    v4 = requests.get(v4_url(scicat) + path, headers=auth, timeout=TIMEOUT).json()
    assert "principalInvestigator" not in v4 and "proposalId" not in v4
    answer = requests.patch(
        v4_url(scicat) + path,
        json={"principalInvestigator": "x@example.org"},
        headers=auth,
        timeout=TIMEOUT,
    )
    assert answer.json()["message"] == ["property principalInvestigator should not exist"]
    # an attachment: datasetId is a v3 name, isPublished and caption are required
    attachment = {"thumbnail": "data:image/png;base64,AA==", "ownerGroup": "g", "datasetId": pid}
    answer = requests.post(
        v4_url(scicat) + "/attachments", json=attachment, headers=auth, timeout=TIMEOUT
    )
    messages = answer.json()["message"]
    assert "property datasetId should not exist" in messages
    assert any(m.startswith("caption") for m in messages)
    assert any(m.startswith("isPublished") for m in messages)
    # a v4 origdatablock that is gone: 404 (the v3 route answers 500)
    gone = requests.delete(v4_url(scicat) + "/origdatablocks/none", headers=auth, timeout=TIMEOUT)
    assert gone.status_code == 404


# ---------------------------------------------------------------------------
# a beamtime through v4
# ---------------------------------------------------------------------------


def test_raw_scans_and_a_measurement_through_v4(v4env) -> None:
    env = v4env()
    env.scan("scan_00001", detectors={"det": 1}, plot=True)
    env.scan("scan_00002", plot=True)
    env.lines("__command__ start calib", "scan_00001", "scan_00002", "__command__ stop", "calib")
    outcomes = env.run(daemon=True)
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.INGESTED}, outcomes
    env.assert_clean()
    assert_v4_only(env)
    datasets = env.datasets()
    scans = [env.pid("scan_00001"), env.pid("scan_00002")]
    for pid in scans:
        record = datasets[pid]
        assert record["version"] == "4" and record["type"] == "raw"
        assert record["proposalIds"] == [record["proposalId"]]
        assert record["principalInvestigators"] == [record["principalInvestigator"]]
        assert len(env.blocks(pid)) == 1
        (attachment,) = env.attachments(pid)
        assert attachment["relationships"][0]["targetId"] == pid
        assert attachment["isPublished"] is False
    measurement = datasets[env.pid("calib")]
    assert measurement["type"] == "derived" and measurement["inputDatasets"] == scans
    assert measurement["principalInvestigators"]
    assert names(env.blocks(env.pid("calib"))) == names(
        [block for pid in scans for block in env.blocks(pid)]
    )
    # the same list again: looked at through v4, nothing sent
    env.checkpoint()
    summary = env.batch()
    assert summary.ok, summary.report()
    assert set(summary.counts) == {OutcomeStatus.UNCHANGED}
    assert env.changes() == []
    assert_v4_only(env)


STRATEGY_WRITES = {
    "no": [],
    "patch": [("v4", "PATCH", "dataset", "{pid}")],
    "create": [
        ("v4", "POST", "dataset", "{pid}/2"),
        ("v4", "POST", "origdatablock", "{pid}/2"),
    ],
    "mixed": [("v4", "PATCH", "dataset", "{pid}")],
}


@pytest.mark.parametrize("strategy", ["no", "patch", "create", "mixed"])
def test_changed_master_under_each_strategy(v4env, strategy: str) -> None:
    env = v4env(dataset_update_strategy=strategy, ingest_dataset_attachment=False)
    env.scan("scan_00001")
    env.lines("scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED
    pid = env.pid("scan_00001")
    (old_block,) = env.blocks(pid)
    change_master(env, "scan_00001", 301.5)
    env.lines("scan_00001:1")
    env.checkpoint()
    outcome = env.run(daemon=True)["scan_00001:1"]
    env.assert_clean()
    assert_v4_only(env)
    expected = [tuple(part.format(pid=pid) for part in item) for item in STRATEGY_WRITES[strategy]]
    found = writes(env)
    datasets_written = [w for w in found if w[2] == "dataset" or w[3].startswith(f"{pid}/")]
    assert sorted(datasets_written) == sorted(expected), found
    if strategy != "create":
        # the new file time: the block is replaced in place, by the v4 routes
        assert ("v4", "DELETE", "origdatablock-id", old_block["_id"]) in found
        assert ("v4", "POST", "origdatablock", pid) in found
        assert len(env.blocks(pid)) == 1
    temperature = env.datasets()[outcome.pid]["scientificMetadata"]
    if strategy in ("patch", "mixed", "create"):
        assert "301.5" in json.dumps(temperature)
    # and again: nothing left to do
    env.lines("scan_00001:2")
    env.checkpoint()
    assert env.run(daemon=True)["scan_00001:2"].status == OutcomeStatus.UNCHANGED
    assert env.changes() == []


def _later(path: Path, seconds: float) -> None:
    now = path.stat().st_mtime + seconds
    os.utime(path, (now, now))


def test_attachment_replaced_by_id_through_v4(v4env) -> None:
    """[A, B] becomes [A, C]: B deleted by its id on the v4 route, C posted."""
    env = v4env()
    env.scan("scan_00001", plot=True)
    env.lines("scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED
    pid = env.pid("scan_00001")
    meta = env.meta("scan_00001.attachment.json")
    first = json.loads(meta.read_text())
    first = first[0] if isinstance(first, list) else first
    meta.write_text(json.dumps([first, dict(first, caption="B")]))
    _later(meta, 1.0)
    env.lines("scan_00001:1")
    env.run(daemon=True)
    held = {a["caption"]: a for a in env.attachments(pid)}
    assert sorted(held) == sorted([first["caption"], "B"])
    meta.write_text(json.dumps([first, dict(first, caption="C")]))
    _later(meta, 2.0)
    env.lines("scan_00001:2")
    env.checkpoint()
    env.run(daemon=True)
    env.assert_clean()
    assert_v4_only(env)
    found = writes(env)
    assert [w for w in found if w[1] == "DELETE"] == [
        ("v4", "DELETE", "attachments", held["B"]["aid"])
    ]
    assert [w for w in found if w[1] == "POST"] == [("v4", "POST", "attachment", pid)]
    assert sorted(a["caption"] for a in env.attachments(pid)) == sorted([first["caption"], "C"])


def test_lost_answers_and_5xx_on_v4_routes_post_once(v4env, fresh_scicat: SciCatServer) -> None:
    env = v4env(server=fresh_scicat)
    env.scan("scan_00001", plot=True)
    env.lines("scan_00001")
    env.client.login()
    # every write stored, then its answer lost (a 502 of a proxy): looked up, not posted again
    fresh_scicat.store_then_fail(3, status=502, method="POST")
    fresh_scicat.set_token_uses(4)  # tokens wear out: new logins, on v3, midway
    outcome = env.run(daemon=True)["scan_00001"]
    assert outcome.status == OutcomeStatus.INGESTED, outcome
    pid = env.pid("scan_00001")
    assert list(env.datasets()) == [pid]
    assert len(env.blocks(pid)) == 1 and len(env.attachments(pid)) == 1
    assert_v4_only(env)
    assert len(env.requests("POST", "/api/v3/auth/login")) >= 2


def test_check_runs_against_v4(
    fresh_scicat: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture, restore_logging
) -> None:
    credential = tmp_path / "credentials.json"
    credential.write_text(
        json.dumps({"username": INGESTOR.username, "password": INGESTOR.password})
    )
    credential.chmod(0o600)
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "scicat_url": v4_url(fresh_scicat),
                "ingestor_credential_file": str(credential),
                "scicat_users_login_path": "auth/login",
                "dataset_pid_prefix": "10.5072/",
                "beamtime_dirs": [],
            }
        )
    )
    code = dataset_ingest.main(["-c", str(config), "--check"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Left behind in SciCat: nothing" in out
    assert fresh_scicat.counts()["datasets"] == 0
    assert fresh_scicat.counts()["attachments"] == 0
    posted = [r.path for r in fresh_scicat.recorded("POST")]
    assert "/api/v4/datasets" in posted and "/api/v4/attachments" in posted
    assert not any(p.lower().startswith("/api/v3/datasets") for p in posted)


# ---------------------------------------------------------------------------
# the same beamtime through v3 and v4: the same records
# ---------------------------------------------------------------------------

#: fields the server fills per request, or that name the API version, and the
#: times of files written for each beamtime anew
VOLATILE = {"createdAt", "updatedAt", "_id", "id", "aid", "version", "history"}
TIMES = {"time", "creationTime", "startTime", "endTime", "start_time", "end_time"}


def _story(env: BeamtimeEnv) -> None:
    """Raw scans, a measurement, a changed master and a replaced plot."""
    env.scan("scan_00001", detectors={"det": 1}, plot=True)
    env.scan("scan_00002", plot=True)
    env.lines("__command__ start calib", "scan_00001", "scan_00002", "__command__ stop", "calib")
    outcomes = env.run(daemon=True)
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.INGESTED}, outcomes
    change_master(env, "scan_00002", 280.0)
    write_png(env.raw / "scan_00001.png", seed=7)
    env.lines("scan_00001:1", "scan_00002:1")
    outcomes = env.run(daemon=True)
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.UPDATED}, outcomes


def _neutral(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "TIME" if k in TIMES else _neutral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_neutral(v) for v in value]
    return value


def _comparable(record: Dict[str, Any], env: BeamtimeEnv) -> Dict[str, Any]:
    """A stored record without volatile fields, with the beamtime's id, place and times neutral."""
    kept = _neutral({k: v for k, v in record.items() if k not in VOLATILE})
    text = json.dumps(kept, sort_keys=True).replace(str(env.root), "ROOT")
    return json.loads(text.replace(env.bid, "BID"))


def _holdings(env: BeamtimeEnv) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for pid, record in env.datasets().items():
        key = pid.replace(env.bid, "BID")
        out[key] = _comparable(record, env)
        out[key + " blocks"] = sorted(
            (_comparable(b, env) for b in env.blocks(pid)), key=json.dumps
        )
        out[key + " attachments"] = sorted(
            (
                _comparable({k: v for k, v in a.items() if k != "relationships"}, env)
                for a in env.attachments(pid)
            ),
            key=json.dumps,
        )
    return out


def _renamed(v3: Dict[str, Any]) -> Dict[str, Any]:
    """What a v3-made record holds once the documented v4 lists are added."""
    out = copy.deepcopy(v3)
    for key, record in out.items():
        if key.endswith(("blocks", "attachments")):
            continue
        for old, new in (
            ("principalInvestigator", "principalInvestigators"),
            ("proposalId", "proposalIds"),
            ("sampleId", "sampleIds"),
            ("instrumentId", "instrumentIds"),
        ):
            if old in record:
                record.setdefault(new, [record[old]])
    return out


def field_diff(left: Any, right: Any, path: str = "") -> List[str]:
    """Dotted paths where two JSON values differ (for a readable failure)."""
    if isinstance(left, dict) and isinstance(right, dict):
        found: List[str] = []
        for key in sorted(set(left) | set(right)):
            where = f"{path}.{key}" if path else key
            if key not in left or key not in right:
                found.append(f"{where}: only in {'v4' if key in left else 'v3'}")
            else:
                found += field_diff(left[key], right[key], where)
        return found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [
            d for i, (a, b) in enumerate(zip(left, right)) for d in field_diff(a, b, f"{path}[{i}]")
        ]
    return [] if left == right else [f"{path}: {left!r} != {right!r}"[:300]]


def test_same_records_through_v3_and_v4(beamtime, scicat: SciCatServer) -> None:
    through: Dict[str, Dict[str, Any]] = {}
    for api, url in (("v3", scicat.url), ("v4", v4_url(scicat))):
        env = beamtime(scicat_url=url)
        _story(env)
        env.assert_clean()
        through[api] = _holdings(env)
    assert sorted(through["v3"]) == sorted(through["v4"])
    assert len(through["v4"]["BID/scan_00001 attachments"]) == 1
    assert through["v4"]["BID/calib"]["principalInvestigators"]
    assert field_diff(through["v4"], _renamed(through["v3"])) == []


def test_v4_listings_ask_for_every_record(scicat: SciCatServer) -> None:
    """Backend 4.5.0 lists 10 records without ``limits``: the client asks for all."""
    settings = ClientSettings(url=v4_url(scicat), login_path="auth/login", max_tries=2)
    pid = f"99400003/many-{scicat_time(scicat)}"
    with SciCatClient(settings, Credentials(INGESTOR.username, INGESTOR.password)) as client:
        client.post_dataset(raw_dataset(pid))
        for i in range(12):
            entry = {"path": f"f{i}", "size": 1, "time": "2026-12-01T10:00:00Z"}
            client.post_origdatablock(
                {"datasetId": pid, "size": 1, "ownerGroup": "g", "dataFileList": [entry]}
            )
            client.post_attachment(pid, {"caption": f"c{i}", "ownerGroup": "g"})
        assert len(client.get_origdatablocks(pid)) == 12
        assert sorted(a["caption"] for a in client.get_attachments(pid)) == sorted(
            f"c{i}" for i in range(12)
        )
        assert all(a["datasetId"] == pid for a in client.get_attachments(pid))
        token = client.tokens.token
    # asked without limits, the test server answers as the real one: the newest 10
    where = json.dumps({"where": {"datasetId": pid}})
    page = requests.get(
        v4_url(scicat) + "/origdatablocks",
        params={"filter": where},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    ).json()
    assert [b["dataFileList"][0]["path"] for b in page] == [f"f{i}" for i in range(11, 1, -1)]


def test_v4_patch_keeps_the_dataset_counts(scicat: SciCatServer) -> None:
    """A v4 PATCH zeroes size and numberOfFiles it lacks (backend 4.5.0): the client sends them."""
    settings = ClientSettings(url=v4_url(scicat), login_path="auth/login", max_tries=2)
    pid = f"99400004/counts-{scicat_time(scicat)}"
    entry = {"path": "f", "size": 7, "time": "2026-12-01T10:00:00Z"}
    with SciCatClient(settings, Credentials(INGESTOR.username, INGESTOR.password)) as client:
        client.post_dataset(raw_dataset(pid))
        client.post_origdatablock(
            {"datasetId": pid, "size": 7, "ownerGroup": "g", "dataFileList": [entry]}
        )
        patched = client.patch_dataset(pid, {"description": "better"})
        assert (patched["size"], patched["numberOfFiles"]) == (7, 1)
        token = client.tokens.token
    # the test server zeroes them as the real backend does, for a PATCH without them
    answer = requests.patch(
        f"{v4_url(scicat)}/datasets/{quote(pid, safe='')}",
        json={"description": "bare"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    ).json()
    assert (answer["size"], answer["numberOfFiles"]) == (0, 0)


def test_v4_is_valid(scicat: SciCatServer) -> None:
    settings = ClientSettings(url=v4_url(scicat), login_path="auth/login", max_tries=2)
    with SciCatClient(settings, Credentials(INGESTOR.username, INGESTOR.password)) as client:
        assert client.is_valid_dataset(raw_dataset("99400005/valid")) == {"valid": True}
        assert client.is_valid_dataset({"type": "raw"}) == {"valid": False}
