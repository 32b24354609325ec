"""The SciCat client against the SciCat-compatible server on loopback.

Real HTTP, real credential files: login and its fallback, token forms,
re-login after expiry, pid encoding, retries and their limits, the
idempotency care after lost answers, error parsing, and no secret in logs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import requests

from scingestor.errors import (
    AuthenticationError,
    ConflictError,
    CredentialError,
    ForbiddenError,
    SciCatAmbiguousError,
    SciCatError,
    SciCatUnreachable,
    ValidationError,
)
from scingestor.scicat import (
    DEFAULT_HEADERS,
    MAX_BODY_BYTES,
    ClientSettings,
    CredentialFile,
    Credentials,
    SciCatClient,
    load_credentials,
    parse_error_messages,
    redact,
)
from scingestor.scicat.tokens import renewal_deadline
from scingestor.testing.client_helpers import (
    dataset_exists,
    find_datasets,
    post_dataset_origdatablock,
    reachable,
)
from scingestor.testing.scicat_server import SciCatServer

PASSWORD = "ingestor-password"
PID = "99001234/scan_0001"


def raw_dataset(pid: str = PID, **extra: Any) -> dict:
    """A minimal raw dataset the v3 backend accepts."""
    body = {
        "pid": pid,
        "type": "raw",
        "ownerGroup": "99001234-dmgt",
        "owner": "Jane Doe",
        "contactEmail": "jane@example.org",
        "sourceFolder": "/data/99001234/scan_0001",
        "creationTime": "2026-03-01T10:00:00Z",
        "principalInvestigator": "pi@example.org",
        "creationLocation": "/DESY/PETRA III/P00",
    }
    body.update(extra)
    return body


def datablock(pid: str = PID) -> dict:
    return {
        "datasetId": pid,
        "size": 629,
        "ownerGroup": "99001234-dmgt",
        "dataFileList": [
            {
                "path": "scan_0001.nxs",
                "size": 629,
                "time": "2026-03-01T10:00:05Z",
                "uid": "1000",
                "gid": "1000",
                "perm": "-rw-r--r--",
            }
        ],
    }


@pytest.fixture
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


def make_settings(srv: SciCatServer, **kw: Any) -> ClientSettings:
    values = dict(
        url=srv.url + "/",
        login_path="auth/login",
        backoff_base=0.01,
        backoff_max=0.1,
        timeout=5.0,
        max_tries=20,
    )
    values.update(kw)
    return ClientSettings(**values)


def write_secret(tmp_path: Path, content: str, name: str = "cred", mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(content)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def client(server: SciCatServer) -> Iterator[SciCatClient]:
    with SciCatClient(
        make_settings(server), Credentials.from_password("ingestor", PASSWORD)
    ) as cli:
        yield cli


def logins(srv: SciCatServer) -> list:
    return [r for r in srv.recorded(method="POST") if "login" in r.path.lower()]


def server_token(srv: SciCatServer, user: str = "ingestor", password: str = PASSWORD) -> str:
    answer = requests.post(
        srv.url + "/auth/login", json={"username": user, "password": password}, timeout=5
    )
    assert answer.status_code == 201
    return answer.json()["access_token"]


def header(record: Any, name: str) -> Any:
    for key, value in dict(record.headers).items():
        if key.lower() == name.lower():
            return value
    return None


# ------------------------------------------------------------------ settings


def test_settings_from_config_and_defaults() -> None:
    class Cfg:
        scicat_url = "http://scicat.example.org/api/v3/"
        scicat_users_login_path = "auth/login"
        ingestor_credential_file = "/var/lib/scingestor/.scingestor.json"
        max_request_tries_number = 7
        request_timeout = 12
        scicat_tls_verify = False
        scicat_ca_bundle = "/etc/ssl/site-ca.pem"

    s = ClientSettings.from_config(Cfg())
    assert s.url == "http://scicat.example.org/api/v3"
    assert s.login_path == "auth/login" and s.max_tries == 7 and s.timeout == 12.0
    assert s.verify == "/etc/ssl/site-ca.pem"  # the bundle wins over the flag
    assert s.credential_file == "/var/lib/scingestor/.scingestor.json"
    assert s.username == "ingestor" and s.datasets_path == "Datasets"
    assert s.attachments_path == "Datasets/{pid}/Attachments"
    assert ClientSettings.from_config({"scicat_tls_verify": False}).verify is False
    d = ClientSettings()
    assert (d.login_path, d.max_tries, d.timeout, d.verify) == ("Users/login", 100, 30.0, True)
    assert (d.datablocks_path, d.proposals_path) == ("OrigDatablocks", "Proposals")


def test_headers_are_never_shared(server: SciCatServer) -> None:
    mine = {"Content-Type": "application/json", "Accept": "application/json"}
    settings = make_settings(server, headers=mine)
    assert settings.headers is not mine
    a = SciCatClient(settings, Credentials.from_password("ingestor", PASSWORD))
    b = SciCatClient(settings)  # anonymous
    with a, b:
        a.get_dataset("99001234/none")
        server.clear_recorded()
        b.get_dataset("99001234/none")
        assert header(server.recorded()[0], "Authorization") is None
    assert "Authorization" not in settings.headers and "Authorization" not in mine
    assert dict(DEFAULT_HEADERS) == {
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    assert ClientSettings().headers is not ClientSettings().headers


# --------------------------------------------------------------------- login


def test_login_by_auth_login_and_bearer_header(server: SciCatServer, client: SciCatClient) -> None:
    assert client.get_dataset("99001234/unknown") is None
    assert client.get_dataset("99001234/other") is None
    posts = logins(server)
    assert len(posts) == 1 and posts[0].path.lower().endswith("/auth/login")
    assert posts[0].status == 201
    gets = server.recorded(method="GET")
    token = posts[0].response["access_token"]
    assert len(gets) == 2
    assert all(header(g, "Authorization") == f"Bearer {token}" for g in gets)
    assert all("access_token" not in g.query for g in gets)  # never in the URL


def test_users_login_empty_answer_falls_back_to_auth_login(
    server: SciCatServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(server, login_path="Users/login")
    with (
        caplog.at_level(logging.WARNING),
        SciCatClient(settings, Credentials.from_password("ingestor", PASSWORD)) as cli,
    ):
        cli.post_dataset(raw_dataset())
        paths = [r.path.lower() for r in logins(server)]
        assert paths[0].endswith("/users/login") and paths[1].endswith("/auth/login")
        assert len(paths) == 2
        # the fallback is remembered: the next login goes straight to auth/login
        cli.login()
        paths = [r.path.lower() for r in logins(server)]
        assert len(paths) == 3 and paths[2].endswith("/auth/login")
    assert any(
        "auth/login" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )
    assert PID in server.datasets


@pytest.mark.parametrize("login_path", ["auth/login", "Users/login"])
def test_bad_password_is_final(server: SciCatServer, login_path: str) -> None:
    settings = make_settings(server, login_path=login_path, max_tries=50)
    with SciCatClient(settings, Credentials.from_password("ingestor", "wrong")) as cli:
        with pytest.raises(AuthenticationError) as info:
            cli.post_dataset(raw_dataset())
    assert info.value.status == 401
    assert "wrong" not in str(info.value)
    assert len(logins(server)) == 1  # no retry storm, no fallback on a 401
    assert not server.datasets


def test_concurrent_requests_log_in_once(server: SciCatServer, client: SciCatClient) -> None:
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            client.get_dataset(f"99001234/n{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(logins(server)) == 1


def test_expired_token_relogs_in_once_and_retries(
    server: SciCatServer, client: SciCatClient
) -> None:
    client.get_dataset("99001234/warmup")
    server.expire_tokens()
    server.clear_recorded()
    record = client.post_dataset(raw_dataset())
    assert record["pid"] == PID
    calls = [(r.method, r.path.lower().rsplit("/", 1)[-1], r.status) for r in server.recorded()]
    assert calls == [("POST", "datasets", 403), ("POST", "login", 201), ("POST", "datasets", 201)]


def test_whoami_after_expiry(server: SciCatServer, client: SciCatClient) -> None:
    assert client.whoami()["username"] == "ingestor"
    server.expire_tokens()
    assert "ingestor" in client.whoami()["currentGroups"]  # 401 -> one re-login
    assert len(logins(server)) == 2


def test_forbidden_after_relogin(server: SciCatServer) -> None:
    server.add_dataset(raw_dataset("99001234/private", ownerGroup="other-group"))
    settings = make_settings(server)
    with SciCatClient(settings, Credentials.from_password("user", "user-password")) as cli:
        with pytest.raises(ForbiddenError) as info:
            cli.get_dataset("99001234/private")
    assert info.value.status == 403
    assert len(logins(server)) == 2  # the first login and exactly one more


def test_anonymous_write_is_forbidden_without_login(server: SciCatServer) -> None:
    with SciCatClient(make_settings(server)) as cli:
        with pytest.raises(ForbiddenError):
            cli.post_dataset(raw_dataset())
    assert not logins(server) and len(server.recorded()) == 1


def test_token_renewed_before_expiry() -> None:
    started = 1000.0
    now = time.time()
    deadline = renewal_deadline(started, 3600.0, None)
    assert deadline is not None and started + 3000 < deadline < started + 3600
    # an answer created a while ago leaves less time
    assert renewal_deadline(started, 3600.0, now - 1800) < started + 1800 + 1
    assert renewal_deadline(started, 3600.0, now) > started + 3000
    # a server clock far off is not trusted
    assert renewal_deadline(started, 3600.0, now - 7200) > started + 3000
    assert renewal_deadline(started, None, now) is None


def test_token_near_expiry_triggers_new_login() -> None:
    with SciCatServer(token_ttl=1.0) as srv:
        with SciCatClient(
            make_settings(srv), Credentials.from_password("ingestor", PASSWORD)
        ) as cli:
            cli.get_dataset("99001234/a")
            time.sleep(1.05)
            cli.post_dataset(raw_dataset())
            calls = [(r.method, r.path.lower().rsplit("/", 1)[-1]) for r in srv.recorded()]
    # the client renewed by itself: no 403 round trip
    assert calls == [
        ("POST", "login"),
        ("GET", "99001234%2fa"),
        ("POST", "login"),
        ("POST", "datasets"),
    ]


# --------------------------------------------------------------- credentials


@pytest.mark.parametrize("form", ["jwt", "id"])
def test_token_file_used_without_login(server: SciCatServer, tmp_path: Path, form: str) -> None:
    token = server_token(server)
    server.clear_recorded()
    path = write_secret(tmp_path, json.dumps({form: token}) + "\n")
    creds = load_credentials(path)
    assert creds.kind == "token" and token not in repr(creds)
    with SciCatClient(make_settings(server, credential_file=path)) as cli:
        cli.post_dataset(raw_dataset())
    assert not logins(server)
    assert header(server.recorded()[0], "Authorization") == f"Bearer {token}"
    assert PID in server.datasets


def test_username_password_json_file(server: SciCatServer, tmp_path: Path) -> None:
    path = write_secret(tmp_path, json.dumps({"username": "admin", "password": "admin-password"}))
    creds = load_credentials(path, username="ingestor")
    assert (creds.kind, creds.username) == ("password", "admin")
    with SciCatClient(make_settings(server, credential_file=path, username="ingestor")) as cli:
        cli.post_dataset(raw_dataset())
    body = logins(server)[0].body
    body = json.loads(body) if isinstance(body, (str, bytes)) else body
    assert body["username"] == "admin"


def test_plain_password_file(server: SciCatServer, tmp_path: Path) -> None:
    path = write_secret(tmp_path, "  user-password \n")
    creds = load_credentials(path, username="user")
    assert (creds.kind, creds.username, creds.password) == ("password", "user", "user-password")
    with SciCatClient(make_settings(server, credential_file=path, username="user")) as cli:
        assert cli.get_dataset("99001234/none") is None
    assert [r.status for r in logins(server)] == [201]


def test_credential_file_reread_on_change(server: SciCatServer, tmp_path: Path) -> None:
    path = write_secret(tmp_path, "not-the-password")
    with SciCatClient(make_settings(server, credential_file=path)) as cli:
        with pytest.raises(AuthenticationError):
            cli.post_dataset(raw_dataset())
        Path(path).write_text(json.dumps({"username": "ingestor", "password": PASSWORD}))
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert cli.post_dataset(raw_dataset())["pid"] == PID
        # a token written to the file replaces the login from then on
        token = server_token(server)
        Path(path).write_text(json.dumps({"jwt": token}))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        server.clear_recorded()
        cli.get_dataset(PID)
        assert header(server.recorded()[0], "Authorization") == f"Bearer {token}"
        assert not logins(server)


def test_credential_file_object_tracks_changes(tmp_path: Path) -> None:
    path = write_secret(tmp_path, "first")
    source = CredentialFile(path, "ingestor")
    assert source.get().password == "first" and not source.changed()
    Path(path).write_text("second-longer")
    assert source.changed() and source.get().password == "second-longer"


def test_permission_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    safe = write_secret(tmp_path, "pw-safe", "safe", 0o600)
    loose = write_secret(tmp_path, "pw-loose", "loose", 0o644)
    with caplog.at_level(logging.WARNING):
        load_credentials(safe)
        assert not caplog.records
        load_credentials(loose)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert loose in text and "chmod 600" in text
    assert "pw-loose" not in text


def test_missing_or_unreadable_credential_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(CredentialError, match="nope.json"):
        load_credentials(missing)
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    with pytest.raises(CredentialError, match="adir"):
        load_credentials(str(a_dir))
    with pytest.raises(CredentialError):
        load_credentials(write_secret(tmp_path, "  \n", "empty"))


def test_credentials_repr_hides_secrets() -> None:
    for creds in (
        Credentials.from_password("ingestor", "s3cret-pw"),
        Credentials.from_token("tok-abcdef-123456"),
    ):
        text = repr(creds) + str(creds)
        assert "s3cret-pw" not in text and "tok-abcdef-123456" not in text


# ---------------------------------------------------------- datasets & pids


def test_pid_with_slash_is_one_encoded_segment(server: SciCatServer, client: SciCatClient) -> None:
    client.post_dataset(raw_dataset())
    server.clear_recorded()
    assert client.get_dataset(PID)["pid"] == PID
    assert dataset_exists(client, PID)
    client.patch_dataset(PID, {"description": "patched"})
    client.post_attachment(
        PID, {"caption": "plot", "ownerGroup": "x", "thumbnail": "data:image/png;base64,AAAA"}
    )
    paths = [r.path for r in server.recorded()]
    assert paths and all("99001234%2F" in p or "99001234%2f" in p for p in paths)
    assert server.datasets[PID]["description"] == "patched"


def test_second_post_of_same_pid_conflicts(client: SciCatClient) -> None:
    client.post_dataset(raw_dataset())
    with pytest.raises(ConflictError) as info:
        client.post_dataset(raw_dataset())
    assert info.value.status == 409


def test_lost_answer_of_dataset_post_returns_existing_record(
    server: SciCatServer, client: SciCatClient
) -> None:
    client.login()
    server.clear_recorded()
    server.lose_next_responses(1, "POST")
    record = client.post_dataset(raw_dataset())
    assert record["pid"] == PID
    assert len(server.datasets) == 1
    statuses = [(r.method, r.status) for r in server.recorded() if "datasets" in r.path.lower()]
    # the pid is looked up before the POST is sent again: it is there, so
    # the first try landed and no second POST goes out
    assert statuses[0][0] == "POST" and statuses[1] == ("GET", 200)
    assert [method for method, _ in statuses].count("POST") == 1
    assert statuses[-1] == ("GET", 200)


def test_lost_answer_of_origdatablock_post_is_ambiguous(
    server: SciCatServer, client: SciCatClient
) -> None:
    client.post_dataset(raw_dataset())
    server.clear_recorded()
    server.lose_next_responses(1, "POST")
    with pytest.raises(SciCatAmbiguousError) as info:
        client.post_origdatablock(datablock())
    assert info.value.ambiguous and isinstance(info.value, SciCatUnreachable)
    assert len(server.recorded(method="POST")) == 1  # never re-posted blindly
    assert len(client.get_origdatablocks(PID)) == 1  # what the caller checks


def test_datablocks_attachments_and_deletes(server: SciCatServer, client: SciCatClient) -> None:
    client.post_dataset(raw_dataset())
    block = client.post_origdatablock(datablock())
    nested = dict(datablock())
    for key in ("datasetId", "ownerGroup"):
        nested.pop(key)
    block2 = post_dataset_origdatablock(client, PID, nested)
    blocks = client.get_origdatablocks(PID)
    assert {b["_id"] for b in blocks} == {block["_id"], block2["_id"]}
    client.delete_origdatablock(block["_id"])
    assert [b["_id"] for b in client.get_origdatablocks(PID)] == [block2["_id"]]
    # gone already: the backend answers 500 (4.5.0); a look-up finds it gone,
    # which is what was asked for - by the dataset's blocks, or by id
    server.clear_recorded()
    assert client.delete_origdatablock(block["_id"], PID) is None
    assert client.delete_origdatablock(block["_id"]) is None
    assert [r.method for r in server.recorded() if r.method == "DELETE"] == ["DELETE"] * 2
    att = client.post_attachment(
        PID, {"caption": "", "ownerGroup": "g", "thumbnail": "data:image/png;base64,AAAA"}
    )
    assert [a["id"] for a in client.get_attachments(PID)] == [att["id"]]
    client.delete_attachment(PID, att["id"])
    assert client.get_attachments(PID) == []
    with pytest.raises(ValidationError):
        client.post_origdatablock({"size": 1, "dataFileList": []})  # no datasetId: local


def test_find_proposal_isvalid_and_models(server: SciCatServer, client: SciCatClient) -> None:
    server.add_proposal(
        {
            "proposalId": "99001234",
            "ownerGroup": "99001234-dmgt",
            "accessGroups": ["99001234-clbt"],
            "title": "T",
            "email": "pi@example.org",
        }
    )
    assert client.get_proposal("99001234")["ownerGroup"] == "99001234-dmgt"
    assert client.get_proposal("00000000") is None
    assert client.is_valid_dataset(raw_dataset())["valid"] is True
    assert client.is_valid_dataset({"type": "raw"})["valid"] is False
    body = raw_dataset("99001234/model")
    del body["type"]
    record = client.post_model("RawDatasets", json.dumps(body))
    assert record["type"] == "raw"
    posted = [r for r in server.recorded(method="POST") if r.status == 201][-1]
    assert posted.path.lower().endswith("/datasets")
    client.post_model("Datasets", raw_dataset("99001234/model2"))
    found = find_datasets(client, {"pid": "99001234/model2"})
    assert [d["pid"] for d in found] == ["99001234/model2"]
    assert find_datasets(client, {"pid": "nothing/here"}, limit=5) == []


# ---------------------------------------------------------- retries, errors


def test_retry_on_5xx_then_success(server: SciCatServer, client: SciCatClient) -> None:
    client.login()
    server.clear_recorded()
    server.fail_next(3)
    assert client.post_dataset(raw_dataset())["pid"] == PID
    # each 500 is looked up (GET by pid) before the POST goes again; the
    # failures injected hit those look-ups too
    statuses = [r.status for r in server.recorded(method="POST")]
    assert statuses[-1] == 201 and set(statuses[:-1]) == {500}
    assert [r.status for r in server.recorded()][:3] == [500, 500, 500]
    assert len(server.datasets) == 1


def test_5xx_exhausted(server: SciCatServer) -> None:
    with SciCatClient(
        make_settings(server, max_tries=3), Credentials.from_password("ingestor", PASSWORD)
    ) as cli:
        cli.login()
        server.clear_recorded()
        server.fail_next(10, status=503)
        with pytest.raises(SciCatUnreachable) as info:
            cli.get_dataset(PID)
    assert info.value.attempts == 3 and info.value.status == 503
    assert len(server.recorded()) == 3


def test_connection_refused_then_back(server: SciCatServer, client: SciCatClient) -> None:
    client.login()
    server.set_down(True)
    back = threading.Timer(0.5, server.set_down, args=(False,))
    back.start()
    try:
        started = time.monotonic()
        assert client.post_dataset(raw_dataset())["pid"] == PID
        assert time.monotonic() - started >= 0.4
    finally:
        back.cancel()
        back.join()
    assert len(server.datasets) == 1


def test_connection_refused_exhausted_names_url(server: SciCatServer) -> None:
    with SciCatClient(
        make_settings(server, max_tries=3), Credentials.from_password("ingestor", PASSWORD)
    ) as cli:
        server.set_down(True)
        with pytest.raises(SciCatUnreachable) as info:
            cli.get_dataset(PID)
        assert not reachable(cli, timeout=1.0)
        server.set_down(False)
        assert (
            reachable(
                cli,
            )
            and cli.ping() >= 0
        )
    assert server.url in str(info.value) and info.value.attempts == 3
    assert not info.value.ambiguous


def test_read_timeout_is_retried_for_reads(server: SciCatServer) -> None:
    with SciCatClient(make_settings(server, max_tries=2, timeout=0.3)) as cli:
        server.set_latency(1.0)
        with pytest.raises(SciCatUnreachable, match="(?i)timeout"):
            cli.get_dataset(PID)
        server.reset_faults()


def test_close_interrupts_waiting_retries(server: SciCatServer) -> None:
    with SciCatClient(
        make_settings(server, max_tries=100, backoff_base=0.5, backoff_max=5.0)
    ) as cli:
        server.set_down(True)
        stopper = threading.Timer(0.3, cli.close)
        stopper.start()
        started = time.monotonic()
        with pytest.raises(SciCatUnreachable, match="closed"):
            cli.get_dataset(PID)
        stopper.join()
        assert time.monotonic() - started < 3.0
        server.set_down(False)


def test_expired_token_from_file_is_forbidden_not_a_loop(server: SciCatServer) -> None:
    token = server_token(server)
    server.expire_tokens()
    server.clear_recorded()
    with SciCatClient(make_settings(server), Credentials.from_token(token)) as cli:
        with pytest.raises(ForbiddenError):
            cli.post_dataset(raw_dataset())
    assert len(server.recorded()) == 1 and not logins(server)


def test_400_not_retried_and_messages_parsed(server: SciCatServer, client: SciCatClient) -> None:
    client.login()
    server.clear_recorded()
    with pytest.raises(ValidationError) as info:
        client.post_dataset(raw_dataset(bogus=1))
    assert "bogus: property bogus should not exist" in info.value.messages
    assert "bogus" in str(info.value)
    assert len(server.recorded()) == 1
    # the standard shape: group keys are refused on the nested route
    client.post_dataset(raw_dataset())
    server.clear_recorded()
    with pytest.raises(ValidationError) as info:
        post_dataset_origdatablock(client, PID, datablock())
    assert any("should not exist" in m for m in info.value.messages)
    assert all(isinstance(m, str) for m in info.value.messages)
    assert len(server.recorded()) == 1


def test_parse_both_error_shapes() -> None:
    v3 = {
        "status": 400,
        "message": json.dumps(
            [
                {
                    "property": "bogus",
                    "constraints": {"whitelistValidation": "property bogus should not exist"},
                },
                {
                    "property": "techniques",
                    "children": [
                        {
                            "property": "0",
                            "children": [
                                {
                                    "property": "x",
                                    "constraints": {"w": "property x should not exist"},
                                }
                            ],
                        }
                    ],
                },
            ]
        ),
    }
    assert parse_error_messages(v3) == [
        "bogus: property bogus should not exist",
        "techniques.0.x: property x should not exist",
    ]
    std = {"message": ["size must be an integer number"], "error": "Bad Request", "statusCode": 400}
    assert parse_error_messages(std) == ["size must be an integer number"]
    assert parse_error_messages({"message": "Not Found", "statusCode": 404}) == ["Not Found"]
    assert parse_error_messages("Internal server error") == ["Internal server error"]
    assert parse_error_messages(None) == []


def test_404_gives_none(client: SciCatClient) -> None:
    assert client.get_dataset("99001234/never") is None
    assert dataset_exists(client, "99001234/never") is False


def test_oversize_body_refused_locally(server: SciCatServer, client: SciCatClient) -> None:
    big = raw_dataset(description="x" * MAX_BODY_BYTES)
    with pytest.raises(ValidationError, match="16 MiB"):
        client.post_dataset(big)
    assert server.recorded() == []


# ------------------------------------------------------------------- secrets


def test_no_secret_in_logs_or_errors(
    server: SciCatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts: List[str] = []
    with caplog.at_level(logging.DEBUG):
        settings = make_settings(server, login_path="Users/login", max_tries=3)
        with SciCatClient(settings, Credentials.from_password("ingestor", PASSWORD)) as cli:
            cli.post_dataset(raw_dataset())
            server.expire_tokens()
            cli.patch_dataset(PID, {"description": "again"})
            server.fail_next(1)
            cli.get_dataset(PID)
            for call in (
                lambda: cli.post_dataset(raw_dataset(bogus=True)),
                lambda: cli.post_dataset(raw_dataset()),
            ):
                with pytest.raises(SciCatError) as info:
                    call()
                texts.append(str(info.value) + repr(info.value.body))
            server.set_down(True)
            with pytest.raises(SciCatUnreachable) as info:
                cli.get_dataset(PID)
            texts.append(str(info.value))
            server.set_down(False)
        with SciCatClient(settings, Credentials.from_password("ingestor", "bad-secret-pw")) as bad:
            with pytest.raises(AuthenticationError) as auth:
                bad.get_dataset(PID)
            texts.append(str(auth.value) + repr(auth.value.body))
        token = server_token(server)
        path = write_secret(tmp_path, json.dumps({"jwt": token}), mode=0o644)
        with SciCatClient(make_settings(server, credential_file=path)) as tok:
            tok.get_dataset(PID)
        logging.getLogger("scingestor.scicat.client").warning(
            "a careless message with Bearer %s inside", token
        )

    secrets = {PASSWORD, "bad-secret-pw", token}
    for record in server.recorded():
        auth_header = header(record, "Authorization")
        if auth_header:
            secrets.add(auth_header.split(" ", 1)[1])
    assert len(secrets) >= 4  # two passwords, the tokens of both logins
    logged = [
        r.getMessage() + (r.exc_text or "")
        for r in caplog.records
        if r.name.startswith("scingestor.scicat") or r.name.startswith(("urllib3", "requests"))
    ]
    assert logged
    for text in logged + texts:
        for secret in secrets:
            assert secret not in text
    assert "***" in redact(f"Authorization: Bearer {token}")
