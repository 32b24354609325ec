"""The SciCat-compatible test server answers like the real backend.

Real HTTP on 127.0.0.1 with plain ``requests``: status codes and body
shapes of ``shared/spec/scicat-api.md`` (v3 dataset 400 shape vs the
standard one), rights, bookkeeping, fault injection, persistence and the
``python -m`` command.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from scingestor.testing.scicat_server import (
    DEFAULT_ACCOUNTS,
    Account,
    RecordedRequest,
    SciCatServer,
)

from .paths import installations

TIMEOUT = 10
FORBIDDEN = {"message": "Forbidden resource", "error": "Forbidden", "statusCode": 403}
UNAUTHORIZED = {"message": "Unauthorized", "statusCode": 401}
UNAUTHENTICATED = {"message": "Unauthenticated", "error": "Unauthorized", "statusCode": 401}
NOT_FOUND = {"message": "Not Found", "statusCode": 404}
PASSWORDS = {a.username: a.password for a in DEFAULT_ACCOUNTS}
EXTRA_ACCOUNTS = [
    Account("plain", "plain-pw", ["p12345"], "user"),
    Account("withpid", "withpid-pw", ["p12345"], "with_pid"),
]
PASSWORDS.update({a.username: a.password for a in EXTRA_ACCOUNTS})
_counter = itertools.count(1)


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[SciCatServer]:
    with SciCatServer(accounts=DEFAULT_ACCOUNTS + EXTRA_ACCOUNTS) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset_faults()


def login(url: str, username: str, password: Optional[str] = None, path: str = "auth/login") -> str:
    r = requests.post(
        f"{url}/{path}",
        timeout=TIMEOUT,
        json={"username": username, "password": password or PASSWORDS[username]},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def tokens(server: SciCatServer) -> Dict[str, str]:
    return {name: login(server.url, name) for name in PASSWORDS}


def call(
    server: SciCatServer, method: str, path: str, token: Optional[str] = None, **kw: Any
) -> requests.Response:
    """One request on a fresh connection (``path`` below /api/v3)."""
    headers = dict(kw.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(
        method, f"{server.url}/{path}", headers=headers, timeout=kw.pop("timeout", TIMEOUT), **kw
    )


def enc(pid: str) -> str:
    return requests.utils.quote(pid, safe="")


def new_pid(prefix: str = "99001234") -> str:
    return f"{prefix}/scan_{next(_counter):05d}_{uuid.uuid4().hex[:6]}"


def raw_body(**kw: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "type": "raw",
        "ownerGroup": "p12345",
        "owner": "Jane Doe",
        "contactEmail": "jane@example.org",
        "sourceFolder": "/data/p12345/scan_0001",
        "creationTime": "2026-03-01T10:00:00Z",
        "principalInvestigator": "pi@example.org",
        "creationLocation": "/SITE/BEAMLINE",
    }
    body.update(kw)
    return {k: v for k, v in body.items() if v is not _DROP}


def derived_body(**kw: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "type": "derived",
        "ownerGroup": "p12345",
        "owner": "Jane Doe",
        "contactEmail": "jane@example.org",
        "sourceFolder": "/data/p12345/calib",
        "creationTime": "2026-03-01T10:00:00Z",
        "investigator": "jane@example.org",
        "inputDatasets": ["99001234/scan_00001"],
        "usedSoftware": ["nxstools"],
    }
    body.update(kw)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def create(server: SciCatServer, token: str, body: Dict[str, Any]) -> Dict[str, Any]:
    r = call(server, "POST", "datasets", token, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def entry(**kw: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "path": "scan/img_00001.cbf",
        "size": 100,
        "time": "2026-03-01T10:00:05Z",
        "chk": "9f2c",
        "uid": "1000",
        "gid": "1000",
        "perm": "-rw-r--r--",
    }
    out.update(kw)
    return {k: v for k, v in out.items() if v is not _DROP}


def v3_errors(r: requests.Response) -> List[Dict[str, Any]]:
    """Check the v3 dataset 400 shape and return the decoded error array."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"status", "message"} and body["status"] == 400
    assert isinstance(body["message"], str)
    errors = json.loads(body["message"])
    assert isinstance(errors, list) and errors
    return errors


def std_messages(r: requests.Response) -> List[str]:
    """Check the standard 400 shape and return its messages."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "Bad Request" and body["statusCode"] == 400
    assert isinstance(body["message"], list) and body["message"]
    return body["message"]


def has_error(errors: List[Dict[str, Any]], prop: str, rule: str) -> bool:
    """True if ``prop`` (at any depth) failed ``rule``."""
    for error in errors:
        if error["property"] == prop and rule in error.get("constraints", {}):
            return True
        if has_error(error.get("children", []), prop, rule):
            return True
    return False


# ---------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------


def test_routes_are_case_insensitive_and_ignore_trailing_slash(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    r = requests.post(
        server.base_url + "/API/V3/Auth/Login/",
        timeout=TIMEOUT,
        json={"username": "admin", "password": PASSWORDS["admin"]},
    )
    assert r.status_code == 201
    pid = new_pid()
    r = requests.post(
        server.base_url + "/api/v3/Datasets/",
        json=raw_body(pid=pid),
        headers={"Authorization": f"Bearer {tokens['ingestor']}"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201
    assert call(server, "GET", f"DATASETS/{enc(pid)}/", tokens["ingestor"]).json()["pid"] == pid


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/v3/DerivedDatasets"),
        ("POST", "/api/v3/RawDatasets"),
        ("GET", "/api/v3/datasets/x/exists"),
        ("POST", "/api/v3/attachments"),
        ("POST", "/api/v4/auth/login"),
        ("GET", "/api/v2/datasets"),
        ("GET", "/nothing"),
    ],
)
def test_unknown_routes_are_404(
    server: SciCatServer, tokens: Dict[str, str], method: str, path: str
) -> None:
    r = requests.request(
        method,
        server.base_url + path,
        json={},
        timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    assert r.status_code == 404
    assert r.json() == {
        "message": f"Cannot {method} {path}",
        "error": "Not Found",
        "statusCode": 404,
    }


def test_pid_is_one_encoded_segment(server: SciCatServer, tokens: Dict[str, str]) -> None:
    pid = new_pid()
    create(server, tokens["ingestor"], raw_body(pid=pid))
    assert call(server, "GET", f"datasets/{enc(pid)}", tokens["ingestor"]).status_code == 200
    assert "%2F" in server.recorded(method="GET")[-1].path
    r = call(server, "GET", f"datasets/{pid}", tokens["ingestor"])
    assert r.status_code == 404
    assert r.json()["message"] == f"Cannot GET /api/v3/datasets/{pid}"
    r = call(
        server,
        "POST",
        f"datasets/{pid}/origdatablocks",
        tokens["ingestor"],
        json={"size": 1, "dataFileList": [entry()]},
    )
    assert r.status_code == 404


# ---------------------------------------------------------------------------
# authentication
# ---------------------------------------------------------------------------


def test_login_object(server: SciCatServer) -> None:
    r = requests.post(
        server.url + "/auth/login",
        timeout=TIMEOUT,
        json={"username": "ingestor", "password": PASSWORDS["ingestor"], "extra": "ignored"},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["id"] == body["access_token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", body["id"])
    assert body["expires_in"] == body["ttl"] == 3600
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created"])
    assert body["userId"] == body["user"]["_id"] and body["user"]["username"] == "ingestor"
    assert login(server.url, "ingestor") != body["id"]  # every login a new token


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "ingestor", "password": "wrong"},
        {"username": "nobody", "password": "x"},
        {"username": "ingestor"},
        {"password": "ingestor-password"},
        {},
        {"username": 1, "password": ["ingestor-password"]},
    ],
)
def test_bad_login_is_401(server: SciCatServer, payload: Dict[str, Any]) -> None:
    for path in ("auth/login", "auth/ldap", "auth/msad", "Users/login"):
        r = requests.post(f"{server.url}/{path}", json=payload, timeout=TIMEOUT)
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), path


def test_ldap_msad_and_deprecated_users_login(server: SciCatServer) -> None:
    for path in ("auth/ldap", "auth/msad"):
        token = login(server.url, "admin", path=path)
        r = call(server, "GET", "auth/whoami", token)
        assert r.json()["authStrategy"] == "ldap"
    r = requests.post(
        server.url + "/Users/login",
        timeout=TIMEOUT,
        json={"username": "ingestor", "password": PASSWORDS["ingestor"]},
    )
    assert r.status_code == 201 and r.content == b""


def test_whoami_and_logout(server: SciCatServer) -> None:
    token = login(server.url, "plain")
    r = call(server, "GET", "auth/whoami", token)
    assert r.status_code == 200
    me = r.json()
    assert set(me) == {"_id", "username", "email", "currentGroups", "authStrategy"}
    assert me["username"] == "plain" and me["currentGroups"] == ["p12345"]
    # as backend 4.5.0: an anonymous whoami is 200 with an empty body
    anonymous = call(server, "GET", "auth/whoami")
    assert anonymous.status_code == 200 and anonymous.content == b""
    assert call(server, "POST", "auth/logout", token).status_code == 200
    r = call(server, "POST", "auth/logout")
    assert (r.status_code, r.json()) == (401, UNAUTHORIZED)


def test_only_bearer_tokens_count(server: SciCatServer, tokens: Dict[str, str]) -> None:
    token = tokens["ingestor"]
    body = raw_body(pid=new_pid())
    url = server.url + "/datasets"
    for headers, params in [
        ({"Authorization": token}, {}),  # no scheme
        ({"Authorization": f"Basic {token}"}, {}),
        ({"Authorization": "Bearer not.a.token"}, {}),  # unknown token
        ({}, {"access_token": token}),  # bare query token
        (
            {"Authorization": "Bearer x.y.z"},  # header wins
            {"access_token": f"Bearer {token}"},
        ),
    ]:
        r = requests.post(url, json=body, headers=headers, params=params, timeout=TIMEOUT)
        assert (r.status_code, r.json()) == (403, FORBIDDEN), (headers, params)
    r = requests.post(f"{url}?access_token=Bearer%20{token}", json=body, timeout=TIMEOUT)
    assert r.status_code == 201
    assert (
        call(
            server,
            "GET",
            f"datasets/{enc(body['pid'])}",
            headers={"authorization": f"bearer {token}"},
        ).status_code
        == 200
    )


def test_anonymous_requests(server: SciCatServer, tokens: Dict[str, str]) -> None:
    private, public = new_pid(), new_pid()
    create(server, tokens["ingestor"], raw_body(pid=private))
    create(server, tokens["ingestor"], raw_body(pid=public, isPublished=True))
    assert call(server, "GET", f"datasets/{enc(new_pid())}").status_code == 404
    r = call(server, "GET", f"datasets/{enc(private)}")
    assert r.status_code == 403 and r.json()["message"] == "Unauthorized access"
    assert call(server, "GET", f"datasets/{enc(public)}").status_code == 200
    listed = call(server, "GET", "datasets").json()
    assert all(d["isPublished"] for d in listed) and public in [d["pid"] for d in listed]
    writes = [
        ("POST", "datasets", raw_body()),
        ("PATCH", f"datasets/{enc(private)}", {}),
        ("POST", f"datasets/{enc(private)}/origdatablocks", {}),
        ("POST", "origdatablocks", {}),
        ("POST", f"datasets/{enc(private)}/attachments", {}),
        ("POST", "proposals", {}),
        ("POST", "instruments", {}),
        ("POST", "datasets/isValid", raw_body()),
        ("DELETE", "origdatablocks/x", None),
    ]
    for method, path, body in writes:
        r = call(server, method, path, json=body)
        assert (r.status_code, r.json()) == (403, FORBIDDEN), path
    r = call(server, "POST", "samples", json={"ownerGroup": "p12345"})
    assert (r.status_code, r.json()) == (401, UNAUTHENTICATED)
    r = call(server, "GET", "users/x")
    assert (r.status_code, r.json()) == (401, UNAUTHENTICATED)


def test_expire_tokens_makes_requests_anonymous() -> None:
    with SciCatServer() as srv:
        token = login(srv.url, "ingestor")
        assert call(srv, "POST", "datasets", token, json=raw_body()).status_code == 201
        srv.expire_tokens()
        r = call(srv, "POST", "datasets", token, json=raw_body())
        assert (r.status_code, r.json()) == (403, FORBIDDEN)
        fresh = login(srv.url, "ingestor")
        assert call(srv, "POST", "datasets", fresh, json=raw_body()).status_code == 201


def test_short_token_ttl_expires() -> None:
    with SciCatServer(token_ttl=0.2) as srv:
        r = requests.post(
            srv.url + "/auth/login",
            timeout=TIMEOUT,
            json={"username": "ingestor", "password": PASSWORDS["ingestor"]},
        )
        assert r.json()["expires_in"] == r.json()["ttl"] == 0.2
        time.sleep(0.3)
        r2 = call(srv, "POST", "datasets", r.json()["id"], json=raw_body())
        assert (r2.status_code, r2.json()) == (403, FORBIDDEN)


# ---------------------------------------------------------------------------
# datasets: create
# ---------------------------------------------------------------------------


def test_minimal_raw_dataset_and_server_fields(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    body = raw_body()
    ds = create(server, tokens["ingestor"], body)
    assert re.fullmatch(r"[^/]+/[0-9a-f-]{36}", ds["pid"])
    assert ds["datasetName"] == "p12345/scan_0001"
    assert ds["classification"] == "IN=medium,AV=low,CO=low" and ds["version"] == "3"
    assert (ds["size"], ds["numberOfFiles"], ds["keywords"], ds["isPublished"], ds["history"]) == (
        0,
        0,
        [],
        False,
        [],
    )
    assert ds["createdBy"] == ds["updatedBy"] == "ingestor"
    assert ds["createdAt"] == ds["updatedAt"]
    assert ds["creationTime"] == "2026-03-01T10:00:00.000Z"
    assert server.datasets[ds["pid"]] == ds
    assert call(server, "GET", f"datasets/{enc(ds['pid'])}", tokens["ingestor"]).json() == ds


def test_client_pid_and_duplicate_409(server: SciCatServer, tokens: Dict[str, str]) -> None:
    pid = new_pid()
    assert create(server, tokens["ingestor"], raw_body(pid=pid))["pid"] == pid
    r = call(server, "POST", "datasets", tokens["ingestor"], json=raw_body(pid=pid))
    assert r.status_code == 409
    assert r.json() == {
        "message": f"A dataset with pid {pid} already exists!",
        "error": "Conflict",
        "statusCode": 409,
    }


@pytest.mark.parametrize(
    "body,prop,rule",
    [
        (raw_body(bogus=1), "bogus", "whitelistValidation"),
        (raw_body(_id="x"), "_id", "whitelistValidation"),
        (raw_body(createdBy="me"), "createdBy", "whitelistValidation"),
        (raw_body(owner=_DROP), "owner", "isString"),
        (raw_body(ownerGroup=_DROP), "ownerGroup", "isString"),
        (raw_body(contactEmail=""), "contactEmail", "customEmailList"),
        (raw_body(contactEmail="jane"), "contactEmail", "customEmailList"),
        (raw_body(contactEmail="a@example.org;nope"), "contactEmail", "customEmailList"),
        (raw_body(contactEmail=_DROP), "contactEmail", "customEmailList"),
        (raw_body(sourceFolder=""), "sourceFolder", "isNotEmpty"),
        (raw_body(sourceFolder=_DROP), "sourceFolder", "isString"),
        (raw_body(creationTime="yesterday"), "creationTime", "isDateString"),
        (raw_body(creationTime=_DROP), "creationTime", "isDateString"),
        (raw_body(size=1.5), "size", "isInt"),
        (raw_body(size="5"), "size", "isInt"),
        (raw_body(numberOfFiles=True), "numberOfFiles", "isInt"),
        (raw_body(packedSize=2.5), "packedSize", "isInt"),
        (raw_body(numberOfFilesArchived="1"), "numberOfFilesArchived", "isInt"),
        (raw_body(runNumber=5), "runNumber", "isString"),
        (raw_body(description=3), "description", "isString"),
        (raw_body(keywords=["a", 1]), "keywords", "isString"),
        (raw_body(accessGroups=[1]), "accessGroups", "isString"),
        (raw_body(isPublished="yes"), "isPublished", "isBoolean"),
        (raw_body(scientificMetadata=[1]), "scientificMetadata", "isObject"),
        (raw_body(dataQualityMetrics="high"), "dataQualityMetrics", "isNumber"),
        (raw_body(ownerEmail="owner"), "ownerEmail", "isEmail"),
        (raw_body(sourceFolderHost="localhost"), "sourceFolderHost", "isUrl"),
        (raw_body(startTime="soon"), "startTime", "isDateString"),
        (
            raw_body(techniques=[{"pid": "t1", "name": "xrd", "bogus": 1}]),
            "bogus",
            "whitelistValidation",
        ),
        (raw_body(techniques=[{"pid": "t1"}]), "name", "isString"),
        (raw_body(techniques="xrd"), "techniques", "isArray"),
        (
            raw_body(relationships=[{"pid": "p", "relationship": "x", "extra": 1}]),
            "extra",
            "whitelistValidation",
        ),
        (raw_body(principalInvestigator=_DROP), "principalInvestigator", "isString"),
        (raw_body(creationLocation=7), "creationLocation", "isString"),
        (derived_body(investigator=_DROP), "investigator", "isString"),
        (derived_body(usedSoftware=[1]), "usedSoftware", "isString"),
        (derived_body(inputDatasets=_DROP), "inputDatasets", "isString"),
        (
            derived_body(principalInvestigator="pi@example.org"),
            "principalInvestigator",
            "whitelistValidation",
        ),
        (derived_body(jobParameters="x"), "jobParameters", "isObject"),
        # no v3 type: the v4 DTO, where the v3 raw fields do not exist
        (raw_body(type=_DROP), "principalInvestigator", "whitelistValidation"),
        (raw_body(type="measurement"), "principalInvestigator", "whitelistValidation"),
    ],
)
def test_dataset_validation_v3_shape(
    server: SciCatServer, tokens: Dict[str, str], body: Dict[str, Any], prop: str, rule: str
) -> None:
    before = server.counts()["datasets"]
    r = call(server, "POST", "datasets", tokens["ingestor"], json=body)
    errors = v3_errors(r)
    assert has_error(errors, prop, rule), errors
    assert server.counts()["datasets"] == before


def test_v3_message_is_the_class_validator_array(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    r = call(server, "POST", "datasets", tokens["ingestor"], json=raw_body(bogus=1))
    assert r.json() == {
        "status": 400,
        "message": '[{"property":"bogus","constraints":'
        '{"whitelistValidation":"property bogus should not exist"}}]',
    }


@pytest.mark.parametrize(
    "changes,stored",
    [
        ({"contactEmail": "a@example.org; b@example.com"}, {}),
        ({"creationTime": "2024-01-01 10:00"}, {}),
        (
            {"creationTime": "2024-01-01T10:00:00+0200"},
            {"creationTime": "2024-01-01T08:00:00.000Z"},
        ),
        (
            {"creationTime": "2022-07-05T19:07:16.683673+0200"},
            {"creationTime": "2022-07-05T17:07:16.683Z"},
        ),
        ({"size": 5.0, "numberOfFiles": 3}, {"size": 5, "numberOfFiles": 3}),
        ({"accessGroups": "grp"}, {"accessGroups": ["grp"]}),
        ({"keywords": "scan"}, {"keywords": ["scan"]}),
        ({"sourceFolderHost": "fs.example.org"}, {}),
        ({"sourceFolderHost": "https://fs.example.org"}, {}),
        ({"description": None}, {"description": None}),
        ({"investigator": 3, "inputDatasets": "x", "jobParameters": 1}, {}),  # unchecked on raw
        (
            {
                "techniques": [{"pid": "t", "name": "n"}],
                "relationships": [{"pid": "p", "relationship": "isDerivedFrom"}],
            },
            {},
        ),
        (
            {
                "datasetlifecycle": {"anything": [1, 2]},
                "dataQualityMetrics": 0.5,
                "scientificMetadata": {"energy": {"value": 12000, "unit": "eV"}},
            },
            {},
        ),
    ],
)
def test_dataset_variants_accepted(
    server: SciCatServer, tokens: Dict[str, str], changes: Dict[str, Any], stored: Dict[str, Any]
) -> None:
    ds = create(server, tokens["ingestor"], raw_body(**changes))
    for key, value in stored.items():
        assert ds[key] == value
    if "creationTime" in changes:
        assert ds["creationTime"].endswith("Z")


@pytest.mark.parametrize("installation", installations())
def test_derived_dataset_and_installation_files(
    server: SciCatServer, tokens: Dict[str, str], installation: Path
) -> None:
    create(server, tokens["ingestor"], derived_body(jobParameters={"a": 1}, jobLogData="log"))
    for name in ("calib.scan.json", "fioscan_00005.scan.json"):
        body = json.loads((installation / "generated" / name).read_text())
        body["pid"] = new_pid()
        ds = create(server, tokens["ingestor"], body)
        assert ds["datasetName"] == body["datasetName"]
    calib = [d for d in server.datasets.values() if d.get("datasetName") == "calib"][-1]
    assert calib["usedSoftware"] == ["https://github.com/nexdatas/nxstools"]


def test_dataset_name_fill(server: SciCatServer, tokens: Dict[str, str]) -> None:
    assert (
        create(
            server, tokens["ingestor"], raw_body(datasetName=None, sourceFolder="/data//p1/run1/")
        )["datasetName"]
        == "p1/run1"
    )
    assert (
        create(server, tokens["ingestor"], raw_body(sourceFolder="/run1"))["datasetName"] == "run1"
    )
    assert create(server, tokens["ingestor"], raw_body(datasetName="mine"))["datasetName"] == "mine"


def test_dataset_create_rights(server: SciCatServer, tokens: Dict[str, str]) -> None:
    denied = {
        "message": "Unauthorized to create this dataset",
        "error": "Forbidden",
        "statusCode": 403,
    }
    cases = [
        ("plain", raw_body(), 201),
        ("plain", raw_body(pid=new_pid()), 403),
        ("plain", raw_body(ownerGroup="other"), 403),
        ("withpid", raw_body(pid=new_pid()), 201),
        ("withpid", raw_body(pid=new_pid(), ownerGroup="other"), 403),
        ("ingestor", raw_body(pid=new_pid(), ownerGroup="any"), 201),
        ("admin", raw_body(pid=new_pid(), ownerGroup="any"), 201),
        ("user", raw_body(), 403),
    ]
    for user, body, status in cases:
        r = call(server, "POST", "datasets", tokens[user], json=body)
        assert r.status_code == status, (user, r.text)
        if status == 403:
            assert r.json() == denied
    # validation comes before the rights check
    v3_errors(
        call(
            server, "POST", "datasets", tokens["plain"], json=raw_body(ownerGroup="other", size=1.5)
        )
    )


# ---------------------------------------------------------------------------
# datasets: read, PATCH, isValid
# ---------------------------------------------------------------------------


def test_get_dataset_200_403_404(server: SciCatServer, tokens: Dict[str, str]) -> None:
    private = create(server, tokens["ingestor"], raw_body(ownerGroup="other"))["pid"]
    shared = create(
        server, tokens["ingestor"], raw_body(ownerGroup="other", accessGroups=["user-group"])
    )["pid"]
    r = call(server, "GET", f"datasets/{enc(private)}", tokens["user"])
    assert r.json() == {"message": "Unauthorized access", "error": "Forbidden", "statusCode": 403}
    assert call(server, "GET", f"datasets/{enc(shared)}", tokens["user"]).status_code == 200
    assert call(server, "GET", f"datasets/{enc(private)}", tokens["admin"]).status_code == 200
    missing = new_pid()
    r = call(server, "GET", f"datasets/{enc(missing)}", tokens["ingestor"])
    assert r.json() == {
        "message": f"dataset: {missing} not found",
        "error": "Not Found",
        "statusCode": 404,
    }


def test_list_filter_count_find_one(server: SciCatServer, tokens: Dict[str, str]) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    pids = [
        create(
            server,
            tokens["ingestor"],
            raw_body(ownerGroup=group, keywords=["k", group], pid=new_pid()),
        )["pid"]
        for _ in range(3)
    ]
    tok = tokens["ingestor"]

    def listed(filt: Dict[str, Any]) -> List[str]:
        r = call(server, "GET", "datasets", tok, params={"filter": json.dumps(filt)})
        assert r.status_code == 200
        return [d["pid"] for d in r.json()]

    assert listed({"where": {"ownerGroup": group}}) == pids
    assert listed({"where": {"ownerGroup": group}, "limits": {"limit": 1, "skip": 1}}) == pids[1:2]
    assert listed({"where": {"keywords": group}}) == pids
    assert listed({"where": {"pid": {"inq": pids[:2]}}}) == pids[:2]
    assert listed({"where": {"pid": new_pid()}}) == []
    assert listed({"where": {"ownerGroup": group}, "limits": {"order": "pid:desc"}}) == sorted(
        pids, reverse=True
    )
    r = call(
        server,
        "GET",
        "datasets/count",
        tok,
        params={"filter": json.dumps({"where": {"ownerGroup": group}})},
    )
    assert r.json() == {"count": 3}
    r = call(
        server,
        "GET",
        "datasets/count",
        tok,
        params={"filter": json.dumps({"where": {"pid": pids[0]}})},
    )
    assert r.json() == {"count": 1}
    r = call(
        server,
        "GET",
        "datasets/findOne",
        tok,
        params={"filter": json.dumps({"where": {"pid": pids[2]}})},
    )
    assert r.json()["pid"] == pids[2]
    r = call(
        server,
        "GET",
        "datasets/findOne",
        tok,
        params={"filter": json.dumps({"where": {"pid": "none"}})},
    )
    assert r.status_code == 200 and r.content == b""
    assert std_messages(call(server, "GET", "datasets", tok, params={"filter": "{bad"}))


def test_patch_dataset(server: SciCatServer, tokens: Dict[str, str]) -> None:
    tok = tokens["ingestor"]
    ds = create(server, tok, raw_body(pid=new_pid(), scientificMetadata={"a": 1, "b": {"c": 2}}))
    path = f"datasets/{enc(ds['pid'])}"
    time.sleep(0.005)
    r = call(
        server,
        "PATCH",
        path,
        tok,
        json={
            "description": "patched",
            "scientificMetadata": {"b": {"d": 3}},
            "size": 5.0,
            "accessGroups": "x",
        },
    )
    assert r.status_code == 200
    new = r.json()
    assert new["description"] == "patched" and new["size"] == 5 and new["accessGroups"] == ["x"]
    assert new["scientificMetadata"] == {"b": {"d": 3}}  # top-level replace, no merge
    assert new["updatedAt"] > ds["updatedAt"] and new["createdAt"] == ds["createdAt"]
    assert server.datasets[ds["pid"]] == new
    for key, value in [
        ("pid", "x"),
        ("type", "derived"),
        ("version", "4"),
        ("createdBy", "x"),
        ("createdAt", "2020-01-01T00:00:00Z"),
        ("updatedAt", "x"),
        ("history", []),
        ("bogus", 1),
        ("_id", "x"),
    ]:
        assert has_error(
            v3_errors(call(server, "PATCH", path, tok, json={key: value})),
            key,
            "whitelistValidation",
        ), key
    assert has_error(
        v3_errors(call(server, "PATCH", path, tok, json={"size": 1.5})), "size", "isInt"
    )
    assert has_error(
        v3_errors(call(server, "PATCH", path, tok, json={"sourceFolder": ""})),
        "sourceFolder",
        "isNotEmpty",
    )
    # validated by the stored type
    derived = create(server, tok, derived_body(pid=new_pid()))
    dpath = f"datasets/{enc(derived['pid'])}"
    assert has_error(
        v3_errors(call(server, "PATCH", dpath, tok, json={"principalInvestigator": "x"})),
        "principalInvestigator",
        "whitelistValidation",
    )
    assert call(server, "PATCH", dpath, tok, json={"usedSoftware": ["b"]}).status_code == 200
    r = call(server, "PATCH", f"datasets/{enc(new_pid())}", tok, json={"description": "x"})
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    r = call(server, "PATCH", path, tokens["user"], json={"description": "x"})
    assert r.json() == {
        "message": "Unauthorized to update this dataset",
        "error": "Forbidden",
        "statusCode": 403,
    }
    r = call(
        server,
        "PATCH",
        path,
        tok,
        json={"description": "late"},
        headers={"If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"},
    )
    assert r.status_code == 412
    r = call(
        server,
        "PATCH",
        path,
        tok,
        json={"description": "in time"},
        headers={"If-Unmodified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
    )
    assert r.status_code == 200


def test_dataset_is_valid(server: SciCatServer, tokens: Dict[str, str]) -> None:
    tok = tokens["ingestor"]
    r = call(server, "POST", "datasets/isValid", tok, json=raw_body())
    assert (r.status_code, r.json()) == (200, {"valid": True})
    r = call(server, "POST", "datasets/isValid", tok, json=raw_body(bogus=1))
    assert r.json() == {"valid": True}  # no whitelist here ...
    v3_errors(call(server, "POST", "datasets", tok, json=raw_body(bogus=1)))  # ... but on POST
    r = call(
        server,
        "POST",
        "datasets/isValid",
        tok,
        json=raw_body(principalInvestigator=_DROP, size=1.5),
    )
    body = r.json()
    assert r.status_code == 200 and body["valid"] is False
    assert "principalInvestigator must be a string" in body["error"] and "; " in body["error"]
    r = call(server, "POST", "datasets/isValid", tokens["plain"], json=raw_body(ownerGroup="x"))
    assert r.status_code == 403
    assert server.counts()["datasets"] == len(server.datasets)


# ---------------------------------------------------------------------------
# origdatablocks
# ---------------------------------------------------------------------------


def test_nested_origdatablocks_are_incremental(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    tok = tokens["ingestor"]
    ds = create(
        server,
        tok,
        raw_body(
            pid=new_pid(), size=100, numberOfFiles=2, accessGroups=["a", "b"], instrumentGroup="ig"
        ),
    )
    path = f"datasets/{enc(ds['pid'])}/origdatablocks"
    r = call(
        server,
        "POST",
        path,
        tok,
        json={"size": 10, "chkAlg": "blake2b", "dataFileList": [entry(), entry(path="b")]},
    )
    assert r.status_code == 201
    block = r.json()
    assert uuid.UUID(block["_id"]) and block["datasetId"] == ds["pid"]
    assert (block["ownerGroup"], block["accessGroups"], block["instrumentGroup"]) == (
        "p12345",
        ["a", "b"],
        "ig",
    )
    assert block["dataFileList"][0]["time"] == "2026-03-01T10:00:05.000Z"
    assert (server.datasets[ds["pid"]]["size"], server.datasets[ds["pid"]]["numberOfFiles"]) == (
        110,
        4,
    )
    call(server, "POST", path, tok, json={"size": 7, "dataFileList": [entry(size=999999)]})
    stored = server.datasets[ds["pid"]]
    assert (stored["size"], stored["numberOfFiles"]) == (117, 5)  # file sizes never summed
    listed = call(server, "GET", path, tok).json()
    assert [b["size"] for b in listed] == [10, 7]
    assert call(server, "GET", f"datasets/{enc(new_pid())}/origdatablocks", tok).status_code == 404


@pytest.mark.parametrize(
    "key,value",
    [("datasetId", "x"), ("ownerGroup", "g"), ("accessGroups", ["g"]), ("instrumentGroup", "i")],
)
def test_nested_origdatablock_rejects_group_keys(
    server: SciCatServer, tokens: Dict[str, str], key: str, value: Any
) -> None:
    ds = create(server, tokens["ingestor"], raw_body())
    r = call(
        server,
        "POST",
        f"datasets/{enc(ds['pid'])}/origdatablocks",
        tokens["ingestor"],
        json={"size": 1, "dataFileList": [entry()], key: value},
    )
    assert std_messages(r) == [f"property {key} should not exist"]


def test_standalone_origdatablocks_recompute(server: SciCatServer, tokens: Dict[str, str]) -> None:
    tok = tokens["ingestor"]
    ds = create(
        server, tok, raw_body(pid=new_pid(), size=999, numberOfFiles=99, accessGroups=["acc"])
    )
    r = call(
        server,
        "POST",
        "OrigDatablocks",
        tok,
        json={
            "datasetId": ds["pid"],
            "size": 10,
            "ownerGroup": "wrong",
            "accessGroups": ["x"],
            "instrumentGroup": "y",
            "dataFileList": [entry()],
        },
    )
    assert r.status_code == 201
    block = r.json()
    assert (block["ownerGroup"], block["accessGroups"]) == ("p12345", ["acc"])
    assert "instrumentGroup" not in block
    assert (server.datasets[ds["pid"]]["size"], server.datasets[ds["pid"]]["numberOfFiles"]) == (
        10,
        1,
    )
    call(
        server,
        "POST",
        "origdatablocks",
        tok,
        json={"datasetId": ds["pid"], "size": 20, "dataFileList": [entry(), entry(path="c")]},
    )
    assert (server.datasets[ds["pid"]]["size"], server.datasets[ds["pid"]]["numberOfFiles"]) == (
        30,
        3,
    )
    missing = new_pid()
    r = call(
        server,
        "POST",
        "origdatablocks",
        tok,
        json={"datasetId": missing, "size": 1, "dataFileList": [entry()]},
    )
    assert r.status_code == 404
    assert r.json()["message"] == f"Dataset: {missing} not found for attaching an origdatablock"
    assert "datasetId must be a string" in std_messages(
        call(server, "POST", "origdatablocks", tok, json={"size": 1, "dataFileList": [entry()]})
    )
    assert "ownerGroup should not be empty" in std_messages(
        call(
            server,
            "POST",
            "origdatablocks",
            tok,
            json={"datasetId": ds["pid"], "ownerGroup": "", "size": 1, "dataFileList": [entry()]},
        )
    )


@pytest.mark.parametrize(
    "block,message",
    [
        ({"dataFileList": [entry(path=_DROP)]}, "dataFileList.0.path must be a string"),
        ({"dataFileList": [entry(size="5")]}, "dataFileList.0.size must be a number"),
        ({"dataFileList": [entry(size=_DROP)]}, "dataFileList.0.size must be a number"),
        ({"dataFileList": [entry(time=_DROP)]}, "dataFileList.0.time must be a valid ISO 8601"),
        ({"dataFileList": [entry(time="5 May")]}, "dataFileList.0.time must be a valid ISO 8601"),
        ({"dataFileList": [entry(uid=1000)]}, "dataFileList.0.uid must be a string"),
        ({"dataFileList": [entry(gid=1000)]}, "dataFileList.0.gid must be a string"),
        ({"dataFileList": [entry(perm=644)]}, "dataFileList.0.perm must be a string"),
        ({"dataFileList": [entry(chk=5)]}, "dataFileList.0.chk must be a string"),
        ({"dataFileList": [entry(), entry(type=1)]}, "dataFileList.1.type must be a string"),
        ({"dataFileList": [entry(mode="x")]}, "dataFileList.0.property mode should not exist"),
        ({"dataFileList": []}, "dataFileList should not be empty"),
        ({"dataFileList": _DROP}, "dataFileList must be an array"),
        ({"dataFileList": ["a.txt"]}, "must be either object or array"),
        ({"size": 1.5}, "size must be an integer number"),
        ({"size": _DROP}, "size must be an integer number"),
        ({"size": "1"}, "size must be an integer number"),
        ({"chkAlg": ""}, "chkAlg should not be empty"),
        ({"bogus": 1}, "property bogus should not exist"),
    ],
)
def test_origdatablock_rules(
    server: SciCatServer, tokens: Dict[str, str], block: Dict[str, Any], message: str
) -> None:
    ds = create(server, tokens["ingestor"], raw_body())
    body = {"size": 100, "dataFileList": [entry()]}
    body.update(block)
    body = {k: v for k, v in body.items() if v is not _DROP}
    for path, extra in [
        (f"datasets/{enc(ds['pid'])}/origdatablocks", {}),
        ("origdatablocks", {"datasetId": ds["pid"]}),
    ]:
        messages = std_messages(
            call(server, "POST", path, tokens["ingestor"], json={**body, **extra})
        )
        assert any(m.startswith(message) or message in m for m in messages), messages
    assert server.datasets[ds["pid"]]["numberOfFiles"] == 0


def test_origdatablock_accepts_float_file_sizes_and_rights(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    ds = create(server, tokens["ingestor"], raw_body(ownerGroup="other"))
    path = f"datasets/{enc(ds['pid'])}/origdatablocks"
    r = call(
        server,
        "POST",
        path,
        tokens["ingestor"],
        json={
            "size": 2,
            "isPublished": False,
            "dataFileList": [entry(size=1.5, chk=_DROP, uid=_DROP, gid=_DROP, perm=_DROP)],
        },
    )
    assert r.status_code == 201
    r = call(server, "POST", path, tokens["plain"], json={"size": 1, "dataFileList": [entry()]})
    assert r.json() == {"message": "Unauthorized access", "error": "Forbidden", "statusCode": 403}
    mine = create(server, tokens["plain"], raw_body())
    r = call(
        server,
        "POST",
        f"datasets/{enc(mine['pid'])}/origdatablocks",
        tokens["plain"],
        json={"size": 1, "dataFileList": [entry()]},
    )
    assert r.status_code == 201


def test_origdatablock_delete_and_is_valid(server: SciCatServer, tokens: Dict[str, str]) -> None:
    tok = tokens["ingestor"]
    ds = create(server, tokens["plain"], raw_body())
    ids = [
        call(
            server,
            "POST",
            "origdatablocks",
            tok,
            json={"datasetId": ds["pid"], "size": 1, "dataFileList": [entry()]},
        ).json()["_id"]
        for _ in range(3)
    ]
    assert call(server, "DELETE", f"origdatablocks/{ids[0]}", tokens["user"]).status_code == 403
    assert call(server, "DELETE", f"origdatablocks/{ids[0]}", tokens["plain"]).status_code == 200
    assert call(server, "DELETE", f"origdatablocks/{ids[1]}", tok).status_code == 200
    assert call(server, "DELETE", f"OrigDatablocks/{ids[2]}", tokens["admin"]).status_code == 200
    # as backend 4.5.0: deleting a block that is gone fails reading it (500, not 404)
    gone = call(server, "DELETE", f"origdatablocks/{ids[2]}", tok)
    assert (gone.status_code, gone.json()) == (500, "Internal server error")
    assert call(server, "GET", f"datasets/{enc(ds['pid'])}/origdatablocks", tok).json() == []
    assert not any(b["datasetId"] == ds["pid"] for b in server.origdatablocks.values())
    r = call(
        server,
        "POST",
        "origdatablocks/isValid",
        tok,
        json={"datasetId": ds["pid"], "size": 1, "dataFileList": [entry()], "unknown": 1},
    )
    assert (r.status_code, r.json()) == (200, {"valid": True, "errors": []})
    r = call(server, "POST", "origdatablocks/isValid", tok, json={"size": 1.5})
    assert r.status_code == 200 and r.json()["valid"] is False and r.json()["errors"]


# ---------------------------------------------------------------------------
# attachments
# ---------------------------------------------------------------------------


def test_attachments(server: SciCatServer, tokens: Dict[str, str]) -> None:
    tok = tokens["ingestor"]
    ds = create(server, tok, raw_body(pid=new_pid(), accessGroups=["acc"]))
    path = f"datasets/{enc(ds['pid'])}/attachments"
    thumb = "data:image/png;base64,iVBORw0KGgo="
    r = call(
        server,
        "POST",
        path,
        tok,
        json={
            "caption": "",
            "thumbnail": thumb,
            "ownerGroup": "wrong",
            "datasetId": "other",
            "accessGroups": ["acc", "x"],
            "id": "mine",
            "proposalId": "p",
            "sampleId": "s",
            "instrumentGroup": "i",
        },
    )
    assert r.status_code == 201
    att = r.json()
    assert uuid.UUID(att["id"]) and att["datasetId"] == ds["pid"]
    assert (att["ownerGroup"], att["thumbnail"], att["caption"]) == ("p12345", thumb, "")
    assert std_messages(call(server, "POST", path, tok, json={"caption": "c"})) == [
        "ownerGroup must be a string"
    ]
    assert "caption must be a string" in std_messages(
        call(server, "POST", path, tok, json={"ownerGroup": "g"})
    )
    assert std_messages(
        call(
            server, "POST", path, tok, json={"caption": "c", "ownerGroup": "g", "isPublished": True}
        )
    ) == ["property isPublished should not exist"]
    r = call(
        server,
        "POST",
        f"datasets/{enc(new_pid())}/attachments",
        tok,
        json={"caption": "c", "ownerGroup": "g"},
    )
    assert r.status_code == 404
    r = call(server, "POST", path, tokens["user"], json={"caption": "c", "ownerGroup": "g"})
    assert r.status_code == 403
    listed = call(server, "GET", path, tok).json()
    assert [a["id"] for a in listed] == [att["id"]]
    assert server.attachments[att["id"]]["datasetId"] == ds["pid"]
    r = call(server, "DELETE", f"{path}/{att['id']}", tok)
    assert r.status_code == 200
    assert call(server, "GET", path, tok).json() == []
    # as backend 4.5.0: nothing left to delete is still 200, with no body
    again = call(server, "DELETE", f"{path}/{att['id']}", tok)
    assert (again.status_code, again.content) == (200, b"")


def test_v3_attachment_delete_removes_the_oldest(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    """The backend bug imitated: the v3 route ignores the attachment id."""
    tok = tokens["ingestor"]
    ds = create(server, tok, raw_body(pid=new_pid()))
    path = f"datasets/{enc(ds['pid'])}/attachments"
    first, second = (
        call(
            server,
            "POST",
            path,
            tok,
            json={"caption": caption, "thumbnail": "data:image/png;base64,AA==", "ownerGroup": "g"},
        ).json()
        for caption in ("A", "B")
    )
    r = call(server, "DELETE", f"{path}/{second['id']}", tok)
    assert r.status_code == 200 and r.json()["id"] == first["id"]
    assert [a["caption"] for a in call(server, "GET", path, tok).json()] == ["B"]


def test_v4_attachment_delete_by_id(server: SciCatServer, tokens: Dict[str, str]) -> None:
    tok = tokens["ingestor"]
    ds = create(server, tok, raw_body(pid=new_pid()))
    path = f"datasets/{enc(ds['pid'])}/attachments"
    first, second = (
        call(
            server,
            "POST",
            path,
            tok,
            json={"caption": caption, "thumbnail": "data:image/png;base64,AA==", "ownerGroup": "g"},
        ).json()
        for caption in ("A", "B")
    )
    url = server.base_url + "/api/v4/attachments/"
    auth = {"Authorization": f"Bearer {tok}"}
    got = requests.get(url + second["id"], headers=auth, timeout=10)
    assert got.status_code == 200 and got.json()["aid"] == second["id"]
    assert requests.delete(url + second["id"], headers=auth, timeout=10).status_code == 200
    assert requests.delete(url + second["id"], headers=auth, timeout=10).status_code == 404
    assert requests.get(url + second["id"], headers=auth, timeout=10).status_code == 404
    assert [a["caption"] for a in call(server, "GET", path, tok).json()] == ["A"]


def test_account_without_delete_right(server: SciCatServer, tokens: Dict[str, str]) -> None:
    """Outside DELETE_GROUPS: 403 on every delete, before the record is looked up."""
    tok = tokens["ingestor"]
    ds = create(server, tok, raw_body(pid=new_pid()))
    block = call(
        server,
        "POST",
        "origdatablocks",
        tok,
        json={"datasetId": ds["pid"], "size": 1, "dataFileList": [entry()]},
    ).json()
    path = f"datasets/{enc(ds['pid'])}/attachments"
    att = call(server, "POST", path, tok, json={"caption": "A", "ownerGroup": "g"}).json()
    v4 = server.base_url + "/api/v4/attachments/"
    auth = {"Authorization": f"Bearer {tok}"}
    server.set_may_delete("ingestor", False)
    try:
        for status in (
            call(server, "DELETE", f"origdatablocks/{block['_id']}", tok).status_code,
            call(server, "DELETE", f"origdatablocks/{uuid.uuid4()}", tok).status_code,
            call(server, "DELETE", f"{path}/{att['id']}", tok).status_code,
            requests.delete(v4 + att["id"], headers=auth, timeout=10).status_code,
            requests.delete(v4 + "missing", headers=auth, timeout=10).status_code,
        ):
            assert status == 403
    finally:
        server.set_may_delete("ingestor", True)
    assert block["_id"] in server.origdatablocks and att["id"] in server.attachments
    assert call(server, "DELETE", f"origdatablocks/{uuid.uuid4()}", tok).status_code == 500


def test_derived_investigator_is_kept_as_principal_investigator(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    tok = tokens["ingestor"]
    ds = create(server, tok, derived_body(pid=new_pid()))
    assert "investigator" not in ds and ds["principalInvestigator"] == "jane@example.org"
    got = call(server, "GET", f"datasets/{enc(ds['pid'])}", tok).json()
    assert "investigator" not in got and got["principalInvestigator"] == "jane@example.org"
    r = call(
        server,
        "PATCH",
        f"datasets/{enc(ds['pid'])}",
        tok,
        json={"investigator": "john@example.org"},
    )
    assert r.status_code == 200
    assert "investigator" not in r.json()
    assert r.json()["principalInvestigator"] == "john@example.org"


# ---------------------------------------------------------------------------
# proposals, samples, instruments
# ---------------------------------------------------------------------------


def test_proposals(server: SciCatServer, tokens: Dict[str, str]) -> None:
    pid = f"9900{next(_counter):04d}.{uuid.uuid4().hex[:4]}"
    body = {
        "proposalId": pid,
        "ownerGroup": "99001234-dmgt",
        "accessGroups": ["99001234-clbt"],
        "email": "pi@example.org",
        "title": "Water",
        "pi_email": "pi@example.org",
        "startTime": "2026-03-01T00:00:00Z",
        "MeasurementPeriodList": [
            {"instrument": "P00", "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}
        ],
    }
    assert call(server, "POST", "proposals", tokens["ingestor"], json=body).json() == FORBIDDEN
    r = call(server, "POST", "proposals", tokens["admin"], json=body)
    assert r.status_code == 201 and r.json()["type"] == "Default Proposal"
    r = call(server, "POST", "proposals", tokens["admin"], json=body)
    assert r.json() == {
        "message": f"Proposal with {pid} already exists",
        "error": "Conflict",
        "statusCode": 409,
    }
    for bad, text in [
        ({"title": _DROP}, "title must be a string"),
        ({"email": "x"}, "email must be an email"),
        ({"pi_email": "x"}, "pi_email must be an email"),
        ({"type": "Other"}, "type must be one of"),
        ({"startTime": "x"}, "startTime must be a valid ISO 8601"),
        (
            {"MeasurementPeriodList": [{"instrument": "P00"}]},
            "MeasurementPeriodList.0.start must be",
        ),
        ({"bogus": 1}, "property bogus should not exist"),
    ]:
        changed = {**body, "proposalId": pid + "x", **bad}
        changed = {k: v for k, v in changed.items() if v is not _DROP}
        messages = std_messages(call(server, "POST", "proposals", tokens["admin"], json=changed))
        assert any(m.startswith(text) for m in messages), messages
    path = f"proposals/{enc(pid)}"
    assert call(server, "GET", path, tokens["ingestor"]).json()["title"] == "Water"
    r = call(server, "GET", path, tokens["user"])
    assert r.json() == {
        "message": "Unauthorized to this proposal",
        "error": "Forbidden",
        "statusCode": 403,
    }
    assert call(server, "GET", path).status_code == 403
    r = call(server, "GET", "proposals/nope", tokens["admin"])
    assert r.json() == {
        "message": "Proposal: nope not found",
        "error": "Not Found",
        "statusCode": 404,
    }
    assert call(server, "GET", "proposals/nope").status_code == 404
    server.add_proposal({"proposalId": "a/b", "ownerGroup": "user-group", "title": "t"})
    assert call(server, "GET", "proposals/a%2Fb", tokens["user"]).json()["title"] == "t"


def test_samples(server: SciCatServer, tokens: Dict[str, str]) -> None:
    r = call(
        server,
        "POST",
        "samples",
        tokens["plain"],
        json={"ownerGroup": "p12345", "description": "water", "sampleCharacteristics": {"t": 1}},
    )
    assert r.status_code == 201
    sample = r.json()
    assert uuid.UUID(sample["sampleId"])
    assert (
        call(server, "POST", "samples", tokens["plain"], json={"ownerGroup": "other"}).status_code
        == 403
    )
    assert (
        call(
            server,
            "POST",
            "samples",
            tokens["ingestor"],
            json={"ownerGroup": "other", "sampleId": "s-1x"},
        ).status_code
        == 201
    )
    r = call(
        server,
        "POST",
        "samples",
        tokens["ingestor"],
        json={"ownerGroup": "other", "sampleId": "s-1x"},
    )
    assert (r.status_code, r.json()) == (500, "Internal server error")
    assert "ownerGroup must be a string" in std_messages(
        call(server, "POST", "samples", tokens["plain"], json={})
    )
    assert "sampleCharacteristics must be an object" in std_messages(
        call(
            server,
            "POST",
            "samples",
            tokens["plain"],
            json={"ownerGroup": "p12345", "sampleCharacteristics": 1},
        )
    )
    assert (
        call(server, "GET", f"samples/{sample['sampleId']}", tokens["plain"]).json()["description"]
        == "water"
    )
    assert call(server, "GET", "samples/none", tokens["admin"]).status_code == 404
    assert server.samples[sample["sampleId"]]["ownerGroup"] == "p12345"


def test_instruments(server: SciCatServer, tokens: Dict[str, str]) -> None:
    name = f"p00-{uuid.uuid4().hex[:6]}"
    body = {"uniqueName": name, "name": "P00 beamline", "customMetadata": {"a": 1}}
    assert call(server, "POST", "instruments", tokens["ingestor"], json=body).json() == FORBIDDEN
    r = call(server, "POST", "instruments", tokens["admin"], json=body)
    assert r.status_code == 201
    inst = r.json()
    assert "/" not in inst["pid"] and inst["uniqueName"] == name
    assert call(server, "POST", "instruments", tokens["admin"], json=body).status_code == 409
    assert std_messages(
        call(
            server,
            "POST",
            "instruments",
            tokens["admin"],
            json={**body, "uniqueName": "x1", "pid": "p"},
        )
    ) == ["property pid should not exist"]
    assert "name must be a string" in std_messages(
        call(server, "POST", "instruments", tokens["admin"], json={"uniqueName": "x2"})
    )
    assert (
        call(server, "GET", f"instruments/{inst['pid']}", tokens["user"]).json()["name"]
        == "P00 beamline"
    )
    r = call(server, "GET", "instruments/unknown", tokens["user"])
    assert (r.status_code, r.content) == (200, b"")
    assert inst["pid"] in server.instruments


def test_v4_datasets_origdatablocks_attachments(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    v4 = server.base_url + "/api/v4"
    headers = {"Authorization": f"Bearer {tokens['ingestor']}"}
    body = raw_body(
        principalInvestigator=_DROP,
        creationLocation=_DROP,
        pid=new_pid(),
        scientificMetadata={"a": {"b": 1, "c": 2}},
    )
    r = requests.post(v4 + "/datasets", json=body, headers=headers, timeout=TIMEOUT)
    assert std_messages(r) == ["datasetName must be a string"]  # required, no fill in v4
    r = requests.post(
        v4 + "/datasets",
        json={**body, "datasetName": "n", "proposalId": "p"},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert std_messages(r) == ["property proposalId should not exist"]
    r = requests.post(
        v4 + "/Datasets",
        json={**body, "datasetName": "n", "proposalIds": ["p"], "principalInvestigators": ["pi"]},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert r.status_code == 201
    path = f"{v4}/datasets/{enc(body['pid'])}"
    r = requests.patch(
        path,
        json={"scientificMetadata": {"a": {"b": None, "d": 3}}},
        headers=headers,
        timeout=TIMEOUT,
    )
    # application/json: a top-level set, as the real backend 4.5.0 does (probed)
    assert r.json()["scientificMetadata"] == {"a": {"b": None, "d": 3}}
    r = requests.patch(
        path,
        data=json.dumps({"scientificMetadata": {"a": {"b": None, "e": 4}}}),
        headers={**headers, "Content-Type": "application/merge-patch+json"},
        timeout=TIMEOUT,
    )
    assert r.json()["scientificMetadata"] == {"a": {"d": 3, "e": 4}}  # merge patch
    r = requests.post(
        v4 + "/origdatablocks",
        headers=headers,
        timeout=TIMEOUT,
        json={"datasetId": body["pid"], "size": 4, "dataFileList": [entry()]},
    )
    assert r.status_code == 201
    assert requests.get(path, headers=headers, timeout=TIMEOUT).json()["size"] == 4
    r = requests.post(
        v4 + "/attachments",
        headers=headers,
        timeout=TIMEOUT,
        json={
            "ownerGroup": "p12345",
            "caption": "c",
            "isPublished": False,
            "relationships": [{"targetId": body["pid"], "targetType": "dataset"}],
        },
    )
    assert r.status_code == 201 and uuid.UUID(r.json()["aid"])
    r = requests.post(
        v4 + "/attachments",
        headers=headers,
        timeout=TIMEOUT,
        json={
            "ownerGroup": "p12345",
            "caption": "c",
            "isPublished": False,
            "relationships": [{"targetId": "x", "targetType": "beamline"}],
        },
    )
    assert any("targetType must be one of" in m for m in std_messages(r))


# ---------------------------------------------------------------------------
# bodies
# ---------------------------------------------------------------------------


def test_body_of_16_mib_is_500(server: SciCatServer, tokens: Dict[str, str]) -> None:
    limit = 16 * 1024 * 1024
    head = json.dumps(raw_body())[:-1] + ', "description": "'
    data = (head + "x" * (limit - len(head) - 2) + '"}').encode()
    assert len(data) == limit
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {tokens['ingestor']}"}
    r = requests.post(server.url + "/datasets", data=data, headers=headers, timeout=60)
    assert (r.status_code, r.json()) == (500, "Internal server error")
    # just below the limit it is processed (and rejected for an unknown key only)
    small = (head + "x" * (limit - len(head) - 100) + '", "bogus": 1}').encode()
    assert has_error(
        v3_errors(requests.post(server.url + "/datasets", data=small, headers=headers, timeout=60)),
        "bogus",
        "whitelistValidation",
    )
    # the limit applies after content decoding
    r = requests.post(
        server.url + "/datasets",
        data=gzip.compress(data),
        timeout=60,
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert (r.status_code, r.json()) == (500, "Internal server error")
    r = requests.post(
        server.url + "/datasets",
        data=gzip.compress(json.dumps(raw_body()).encode()),
        headers={**headers, "Content-Encoding": "gzip"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201
    assert server.recorded(method="POST")[-1].body["owner"] == "Jane Doe"


@pytest.mark.parametrize(
    "data", [b"{bad", b'{"a": 1,}', b"null", b'"text"', b"12", b'{"size": NaN}', b"\xff\xfe"]
)
def test_malformed_json_is_400(server: SciCatServer, tokens: Dict[str, str], data: bytes) -> None:
    for path in ("datasets", "origdatablocks", "auth/login"):
        r = call(
            server,
            "POST",
            path,
            tokens["ingestor"],
            data=data,
            headers={"Content-Type": "application/json"},
        )
        std_messages(r)


def test_chunked_request_body(server: SciCatServer, tokens: Dict[str, str]) -> None:
    payload = json.dumps(raw_body()).encode()
    chunks = iter([payload[:10], payload[10:]])
    r = requests.post(
        server.url + "/datasets",
        data=chunks,
        timeout=TIMEOUT,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {tokens['ingestor']}",
        },
    )
    assert r.status_code == 201


def test_keep_alive_connection(server: SciCatServer, tokens: Dict[str, str]) -> None:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {tokens['ingestor']}"
        for _ in range(3):
            r = session.get(server.url + "/datasets/count")
            assert r.status_code == 200 and r.headers["Content-Length"] == str(len(r.content))
        r = session.post(
            server.url + "/Users/login",
            json={"username": "ingestor", "password": PASSWORDS["ingestor"]},
        )
        assert r.headers["Content-Length"] == "0"
        assert session.get(server.url + "/datasets/count").status_code == 200


# ---------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------


def test_recorded_requests(server: SciCatServer, tokens: Dict[str, str]) -> None:
    server.clear_recorded()
    assert server.recorded() == []
    pid = new_pid()
    call(
        server,
        "POST",
        "Datasets",
        tokens["ingestor"],
        json=raw_body(pid=pid),
        params={"x": ["1", "2"]},
        headers={"X-Test": "yes"},
    )
    call(server, "GET", f"datasets/{enc(pid)}", tokens["ingestor"])
    call(server, "POST", "datasets", data=b"not json", headers={"Content-Type": "text/plain"})
    post = server.recorded("POST", "/datasets")[0]
    assert isinstance(post, RecordedRequest)
    assert (post.method, post.path, post.status) == ("POST", "/api/v3/Datasets", 201)
    assert post.query == {"x": ["1", "2"]} and post.headers["X-Test"] == "yes"
    assert post.body["pid"] == pid and post.response["pid"] == pid
    assert isinstance(post.time, float) and post.time <= time.time()
    get = server.recorded(method="get", path_contains="%2f")[0]
    assert get.path == f"/api/v3/datasets/{enc(pid)}" and get.body is None
    bad = server.recorded()[-1]
    assert (bad.body, bad.status) == ("not json", 400)
    assert len(server.recorded(path_contains="DATASETS")) == 3
    server.clear_recorded()
    assert server.recorded() == []


# ---------------------------------------------------------------------------
# fault injection
# ---------------------------------------------------------------------------


def test_set_down_refuses_then_listens_on_same_port(
    server: SciCatServer, tokens: Dict[str, str]
) -> None:
    port = server.port
    session = requests.Session()  # a pooled connection is cut as well
    assert session.get(server.url + "/datasets").status_code == 200
    server.set_down(True)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/datasets", timeout=TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        session.get(server.url + "/datasets", timeout=TIMEOUT)
    server.set_down(False)
    assert server.port == port
    assert call(server, "GET", "datasets/count", tokens["ingestor"]).status_code == 200
    assert session.get(server.url + "/datasets", timeout=TIMEOUT).status_code == 200
    server.set_down(True)
    server.reset_faults()  # also brings it back
    assert call(server, "GET", "datasets").status_code == 200


def test_fail_next(server: SciCatServer, tokens: Dict[str, str]) -> None:
    before = server.counts()["datasets"]
    server.fail_next(2)
    for _ in range(2):
        r = call(server, "POST", "datasets", tokens["ingestor"], json=raw_body())
        assert (r.status_code, r.json()) == (500, "Internal server error")
    assert server.counts()["datasets"] == before  # not processed
    assert call(server, "POST", "datasets", tokens["ingestor"], json=raw_body()).status_code == 201
    server.fail_next(1, status=503)
    r = call(server, "GET", "datasets")
    assert r.status_code == 503 and r.json()["statusCode"] == 503
    assert call(server, "GET", "datasets").status_code == 200


def test_error_rate_is_seeded(server: SciCatServer) -> None:
    def run() -> List[int]:
        server.set_error_rate(0.5, status=502, seed=42)
        return [call(server, "GET", "datasets/count").status_code for _ in range(16)]

    first = run()
    assert first == run()
    assert set(first) == {200, 502}
    server.set_error_rate(1.0)
    assert call(server, "GET", "datasets").json() == "Internal server error"
    server.set_error_rate(0.0)
    assert call(server, "GET", "datasets").status_code == 200


def test_error_rate_timeouts_hang_and_close(server: SciCatServer, tokens: Dict[str, str]) -> None:
    before = server.counts()["datasets"]
    server.clear_recorded()
    server.set_error_rate(0.0, timeout_rate=1.0, seed=1, hang_seconds=0.2)
    start = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        call(server, "POST", "datasets", tokens["ingestor"], json=raw_body())
    assert time.monotonic() - start >= 0.2
    with pytest.raises(requests.exceptions.ReadTimeout):
        server.set_error_rate(0.0, timeout_rate=1.0, hang_seconds=5.0)
        call(server, "GET", "datasets", timeout=0.2)  # the client gives up first
    server.reset_faults()
    assert server.counts()["datasets"] == before
    hung = server.recorded(method="POST")[0]
    assert hung.dropped and hung.status == 0


def test_lose_next_responses(server: SciCatServer, tokens: Dict[str, str]) -> None:
    server.clear_recorded()
    pid = new_pid()
    server.lose_next_responses(1, method="POST")
    assert call(server, "GET", "datasets/count").status_code == 200  # GET not affected
    with pytest.raises(requests.ConnectionError):
        call(server, "POST", "datasets", tokens["ingestor"], json=raw_body(pid=pid))
    assert pid in server.datasets  # processed although the answer was lost
    lost = server.recorded(method="POST")[0]
    assert lost.dropped and lost.status == 201 and lost.response["pid"] == pid
    r = call(server, "POST", "datasets", tokens["ingestor"], json=raw_body(pid=pid))
    assert r.status_code == 409
    server.lose_next_responses(2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            call(server, "GET", "datasets/count")
    assert call(server, "GET", "datasets/count").status_code == 200


def test_latency(server: SciCatServer) -> None:
    server.set_latency(0.3)
    start = time.monotonic()
    assert call(server, "GET", "datasets/count").status_code == 200
    assert time.monotonic() - start >= 0.3
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(server, "GET", "datasets/count", timeout=0.1)
    server.reset_faults()
    elapsed = []
    for _ in range(3):  # the best of three, so one stall of a busy machine does not count
        start = time.monotonic()
        call(server, "GET", "datasets/count")
        elapsed.append(time.monotonic() - start)
    assert min(elapsed) < 0.3


def test_concurrent_creates(server: SciCatServer, tokens: Dict[str, str]) -> None:
    ds = create(server, tokens["ingestor"], raw_body())
    statuses: List[int] = []

    def post(i: int) -> None:
        r = call(
            server,
            "POST",
            "origdatablocks",
            tokens["ingestor"],
            json={"datasetId": ds["pid"], "size": i, "dataFileList": [entry(path=f"f{i}")]},
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 20
    stored = server.datasets[ds["pid"]]
    assert (stored["size"], stored["numberOfFiles"]) == (210, 20)


# ---------------------------------------------------------------------------
# persistence and the command
# ---------------------------------------------------------------------------


def test_persistence_across_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "scicat.sqlite")
    with SciCatServer(db_path=db) as first:
        first.add_account(Account("late", "late-pw", ["p12345"], "user"))
        token = login(first.url, "ingestor")
        admin = login(first.url, "admin")
        pid = new_pid()
        create(first, token, raw_body(pid=pid))
        call(
            first,
            "POST",
            f"datasets/{enc(pid)}/origdatablocks",
            token,
            json={"size": 3, "dataFileList": [entry()]},
        )
        call(
            first,
            "POST",
            f"datasets/{enc(pid)}/attachments",
            token,
            json={"caption": "c", "ownerGroup": "g"},
        )
        call(
            first,
            "POST",
            "proposals",
            admin,
            json={"proposalId": "p1", "ownerGroup": "g", "email": "a@example.org", "title": "t"},
        )
        call(first, "POST", "samples", token, json={"ownerGroup": "g"})
        call(first, "POST", "instruments", admin, json={"uniqueName": "u", "name": "n"})
        first.add_dataset({"pid": "direct/1", "ownerGroup": "g", "sourceFolder": "/a/b/c"})
        counts = first.counts()
        port = first.port
    assert counts == {
        "datasets": 2,
        "origdatablocks": 1,
        "attachments": 1,
        "proposals": 1,
        "samples": 1,
        "instruments": 1,
    }
    with SciCatServer(db_path=db) as second:
        assert second.counts() == counts
        assert second.port != 0
        r = call(second, "GET", f"datasets/{enc(pid)}", token)  # tokens survive too
        assert r.status_code == 200 and r.json()["size"] == 3
        assert second.datasets["direct/1"]["datasetName"] == "b/c"
        login(second.url, "late", "late-pw")
        r = call(second, "POST", "datasets", token, json=raw_body(pid=pid))
        assert r.status_code == 409
    # the same object can be restarted on its port
    srv = SciCatServer(port=port, db_path=db)
    srv.start()
    try:
        srv.stop()
        srv.start()
        assert srv.port == port and srv.counts() == counts
        assert call(srv, "GET", "datasets/count", token).json() == {"count": 2}
    finally:
        srv.stop()


def test_command_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scingestor.testing.scicat_server",
            "--port",
            "0",
            "--db",
            str(tmp_path / "db.sqlite"),
            "--token-ttl",
            "60",
            "--account",
            "extra:pa:ss:with_pid:g1,g2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: List[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=20)
        assert lines, "no start-up line"
        m = re.fullmatch(r"SciCat-compatible server listening on (http://\S+/api/v3)\n", lines[0])
        assert m, lines
        url = m.group(1)
        r = requests.post(
            url + "/auth/login", json={"username": "extra", "password": "pa:ss"}, timeout=TIMEOUT
        )
        assert r.status_code == 201 and r.json()["ttl"] == 60
        assert call_url(url, "GET", "auth/whoami", r.json()["id"]).json()["currentGroups"] == [
            "g1",
            "g2",
        ]
        login(url, "ingestor")  # default accounts kept
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def call_url(url: str, method: str, path: str, token: str) -> requests.Response:
    return requests.request(
        method, f"{url}/{path}", timeout=TIMEOUT, headers={"Authorization": f"Bearer {token}"}
    )
