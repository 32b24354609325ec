"""``scicat_dataset_ingest --check``: the preflight check against the test server.

The server runs on loopback and answers as backend 4.5.0 does (403 on
deletes for an account outside ``DELETE_GROUPS``); the checks make and
remove a real throw-away dataset there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import requests
import yaml

from scingestor.cli import dataset_ingest
from scingestor.config import load_config
from scingestor.preflight import (
    NO,
    PREFLIGHT_MAX_TRIES,
    PREFLIGHT_PID_STEM,
    UNKNOWN,
    YES,
    Preflight,
)
from scingestor.testing.builders import make_beamtime
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

INGESTOR = DEFAULT_ACCOUNTS[0]


@pytest.fixture(autouse=True)
def _logging(restore_logging) -> None:
    """The CLI sets up logging on the captured stderr: undone after each test."""


@pytest.fixture
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


def write_config(
    tmp_path: Path,
    url: str,
    username: str = INGESTOR.username,
    password: str = INGESTOR.password,
    **extra,
) -> Path:
    credential = tmp_path / "credentials.json"
    credential.write_text(json.dumps({"username": username, "password": password}))
    credential.chmod(0o600)
    data = {
        "scicat_url": url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "dataset_pid_prefix": "10.5072/",
        "beamtime_dirs": [],
        **extra,
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def check(config: Path, capsys: pytest.CaptureFixture) -> Tuple[int, str]:
    """Run the CLI in-process: (exit code, stdout)."""
    code = dataset_ingest.main(["-c", str(config), "--check"])
    return code, capsys.readouterr().out


def rows(output: str) -> dict:
    """``{check: (result, needed)}`` parsed from the printed table."""
    found = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CHECK")) + 2
    for line in lines[start:]:
        if not line.strip():
            break
        parts = [p for p in line.split("  ") if p.strip()]
        found[parts[0].strip()] = (parts[1].strip(), parts[2].strip())
    return found


def issued_tokens(server: SciCatServer) -> List[str]:
    with server.lock:
        return list(server.store.tokens)


def test_all_rights_everything_yes_and_nothing_left(
    server: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out = check(write_config(tmp_path, server.url), capsys)
    assert code == 0, out
    table = rows(out)
    for name in (
        "reach SciCat",
        "log in",
        "create a dataset with our pid",
        "update the dataset",
        "post an origdatablock",
        "post an attachment",
        "delete the attachment",
        "delete the origdatablock",
        "delete the test dataset",
        "auth/whoami",
    ):
        assert table[name][0] == YES, (name, out)
    # no beamtime and no proposal: cannot tell, and not needed by this config
    assert table["read proposals"] == (UNKNOWN, "no")
    assert "Left behind in SciCat: nothing" in out
    assert out.rstrip().splitlines()[-1].startswith("READY: account ingestor")
    assert server.counts()["datasets"] == 0
    assert server.counts()["origdatablocks"] == 0
    assert server.counts()["attachments"] == 0
    posted = [r for r in server.recorded("POST") if r.path.endswith("/Datasets")]
    assert len(posted) == 1
    assert posted[0].body["pid"].startswith(f"10.5072/{PREFLIGHT_PID_STEM}/")
    assert "safe to delete" in posted[0].body["description"]
    assert INGESTOR.password not in out
    for token in issued_tokens(server):
        assert token not in out


def test_without_delete_right_says_what_it_left_behind(
    server: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    server.set_may_delete("ingestor", False)
    code, out = check(write_config(tmp_path, server.url), capsys)
    assert code == 1, out
    table = rows(out)
    assert table["post an origdatablock"][0] == YES
    assert table["delete the origdatablock"] == (NO, "yes")
    assert table["delete the attachment"] == (NO, "yes")
    assert table["delete the test dataset"] == (NO, "no")
    assert "403" in out and "DELETE_GROUPS" in out
    verdict = out.rstrip().splitlines()[-1]
    assert verdict.startswith("NOT READY") and "needs DELETE_GROUPS" in verdict
    assert "replace_without_delete_right: skip (configured)" in out
    # exactly what is still in SciCat is named, by pid and id
    ((pid, dataset),) = server.datasets.items()
    assert "preflight" in dataset["description"] and PREFLIGHT_PID_STEM in pid
    (block_id,) = server.origdatablocks
    (attachment_id,) = server.attachments
    left = out.split("Left behind in SciCat", 1)[1]
    for ident in (pid, block_id, attachment_id):
        assert ident in left
    assert INGESTOR.password not in out


def test_unreachable_url_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v3"
    code, out = check(write_config(tmp_path, url), capsys)
    assert code == 1
    assert rows(out)["reach SciCat"][0] == NO
    verdict = out.rstrip().splitlines()[-1]
    assert verdict == (f"NOT READY: SciCat at {url} cannot be reached: connection refused")
    assert "log in" not in rows(out)


def test_wrong_password_names_the_account_not_the_password(
    server: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    wrong = "not-the-password-4711"
    code, out = check(write_config(tmp_path, server.url, password=wrong), capsys)
    assert code == 1
    assert rows(out)["log in"][0] == NO
    verdict = out.rstrip().splitlines()[-1]
    assert verdict.startswith("NOT READY: cannot log in") and " as ingestor: " in verdict
    assert "401" in verdict
    assert wrong not in out
    assert server.counts()["datasets"] == 0


def test_account_without_pid_right_creates_nothing(
    server: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out = check(
        write_config(tmp_path, server.url, username="user", password="user-password"), capsys
    )
    assert code == 1
    table = rows(out)
    assert table["create a dataset with our pid"][0] == NO
    assert "CREATE_DATASET_WITH_PID_GROUPS" in out
    assert table["post an origdatablock"][0] == UNKNOWN
    assert "Left behind in SciCat: nothing" in out
    assert server.counts()["datasets"] == 0


def test_proposal_of_the_configured_beamtime_is_read(
    server: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    beamtimes = tmp_path / "beamtimes"
    make_beamtime(beamtimes, "99005555", proposal_id="99005555")
    config = write_config(
        tmp_path, server.url, beamtime_dirs=[str(beamtimes)], owner_access_groups_from_proposal=True
    )
    # needed (groups from the proposal) but not in SciCat: not ready
    code, out = check(config, capsys)
    assert code == 1
    assert rows(out)["read proposals"] == (UNKNOWN, "yes")
    assert "99005555.99005555" in out
    server.add_proposal(
        {
            "proposalId": "99005555.99005555",
            "ownerGroup": "99005555-dmgt",
            "email": "pi@example.org",
            "title": "preflight",
        }
    )
    code, out = check(config, capsys)
    assert code == 0, out
    assert rows(out)["read proposals"] == (YES, "yes")
    assert "99005555-dmgt" in out


def test_v3_only_backend_deletes_the_attachment_by_the_v3_route(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with SciCatServer(v4=False) as server:
        code, out = check(write_config(tmp_path, server.url), capsys)
        assert code == 0, out
        assert "by the v3 route" in out
        assert server.counts()["attachments"] == 0


def test_failing_backend_is_asked_few_times(server: SciCatServer, tmp_path: Path) -> None:
    """An operator waits at the terminal: a few tries per request, not 100."""
    config = load_config(str(write_config(tmp_path, server.url, max_request_tries_number=100)))
    preflight = Preflight(config)
    assert preflight.client.settings.max_tries == PREFLIGHT_MAX_TRIES
    server.set_error_rate(1.0, status=503)
    report = preflight.run()
    assert not report.ok
    assert report.rows[0].result == NO and "503" in report.rows[0].detail
    assert "503" in report.verdict
    assert len(server.recorded()) <= PREFLIGHT_MAX_TRIES


def test_console_script_exit_code(server: SciCatServer, tmp_path: Path) -> None:
    """The real process: table on stdout, exit 0, no traceback."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scingestor.cli.dataset_ingest",
            "-c",
            str(write_config(tmp_path, server.url)),
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.rstrip().splitlines()[-1].startswith("READY")


def test_server_deletes_a_dataset_as_the_backend_does(server: SciCatServer) -> None:
    """``DELETE Datasets/{pid}``: the delete guard first, 404 when unknown, and only
    the dataset goes (backend 4.5.0 leaves its blocks behind)."""

    def token(user: str, password: str) -> str:
        answer = requests.post(
            f"{server.url}/auth/login", json={"username": user, "password": password}, timeout=10
        )
        return answer.json()["access_token"]

    headers = {"Authorization": f"Bearer {token(INGESTOR.username, INGESTOR.password)}"}
    pid = "10.5072/preflight/delete-route"
    server.add_dataset(
        {
            "pid": pid,
            "type": "raw",
            "ownerGroup": "g",
            "owner": "o",
            "contactEmail": "o@example.org",
            "sourceFolder": "/d",
            "creationTime": "2026-01-01T00:00:00Z",
            "principalInvestigator": "pi@example.org",
            "creationLocation": "/x",
        }
    )
    block = requests.post(
        f"{server.url}/OrigDatablocks",
        headers=headers,
        timeout=10,
        json={
            "datasetId": pid,
            "size": 1,
            "dataFileList": [{"path": "a", "size": 1, "time": "2026-01-01T00:00:00Z"}],
        },
    )
    assert block.status_code == 201
    route = f"{server.url}/Datasets/{pid.replace('/', '%2F')}"
    server.set_may_delete("ingestor", False)
    assert requests.delete(route, headers=headers, timeout=10).status_code == 403
    assert requests.delete(route + "x", headers=headers, timeout=10).status_code == 403
    server.set_may_delete("ingestor", True)
    assert requests.delete(route + "x", headers=headers, timeout=10).status_code == 404
    assert requests.delete(route, headers=headers, timeout=10).status_code == 200
    assert pid not in server.datasets
    assert server.counts()["origdatablocks"] == 1


def test_a_v4_url_is_checked_through_the_v4_routes_and_the_v3_health(
    server: SciCatServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = server.url.rsplit("/", 1)[0] + "/v4"
    code, out = check(write_config(tmp_path, url), capsys)
    assert code == 0, out
    table = rows(out)
    assert table["create a dataset with our pid"][0] == YES, out
    assert server.counts()["datasets"] == 0
    posted = [r.path for r in server.recorded("POST") if "atasets" in r.path]
    assert posted and all("/api/v4/" in path for path in posted), posted
    health = [r.path for r in server.recorded("GET") if r.path.endswith("/health")]
    assert health and all("/api/v3/" in path for path in health), health
