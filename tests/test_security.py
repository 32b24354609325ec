"""Security: no shell, no way out of the beamtime, no secret in a log, TLS verified.

* list lines full of shell metacharacters reach the generators as single
  arguments and are never run (the daemon runs for real, in a directory
  where a shell would have left its ``PWNED`` files);
* ``../`` in list lines, detector paths leaving the beamtime and symlinks
  inside the beamtime pointing out of it are refused (the real path is
  checked), while a beamtime reached through its corePath symlink works;
* a credential file readable by others is warned about, naming the file and
  the fix;
* passwords and every token the server issued never appear in the daemon's
  debug log, in exception texts or in what the Tango device shows;
* TLS is verified by default, a CA bundle can be given, and a self-signed
  server is refused without it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest
import yaml

from scingestor.config import config_from_dict
from scingestor.errors import AuthenticationError, SciCatUnreachable
from scingestor.outcomes import OutcomeStatus
from scingestor.scicat import ClientSettings, SciCatClient
from scingestor.scicat.credentials import Credentials, load_credentials
from scingestor.service import IngestorService
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.client_helpers import find_datasets
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from .helpers import wait_until

INGESTOR = DEFAULT_ACCOUNTS[0]


def issued_tokens(server: SciCatServer) -> Set[str]:
    """Every token the server handed out (from its recorded login answers)."""
    tokens = set(server.store.tokens)
    for request in server.recorded("POST", "login"):
        if isinstance(request.response, dict):
            for key in ("access_token", "id"):
                if isinstance(request.response.get(key), str):
                    tokens.add(request.response[key])
    return tokens


def write_credential(path: Path, password: str) -> None:
    path.write_text(json.dumps({"username": INGESTOR.username, "password": password}))
    path.chmod(0o600)


def daemon_settings(tmp_path: Path, server: SciCatServer, **extra: Any) -> Dict[str, Any]:
    credential = tmp_path / "credential.json"
    if not credential.exists():
        write_credential(credential, INGESTOR.password)
    values: Dict[str, Any] = {
        "scicat_url": server.url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "beamtime_dirs": [str(tmp_path / "gpfs")],
        "ingestor_var_dir": str(tmp_path / "var"),
        "ingestor_state_dir": str(tmp_path / "state"),
        "ingestion_delay_time": 0.0,
        "ingest_dataset_attachment": False,
        "max_request_tries_number": 2,
        "retry_base_delay": 0.2,
    }
    values.update(extra)
    return values


def start_daemon(tmp_path: Path, values: Dict[str, Any], cwd: Path) -> subprocess.Popen:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(values))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scingestor.cli.dataset_ingestor",
            "-c",
            str(config),
            "-f",
            str(tmp_path / "daemon.log"),
            "-l",
            "debug",
        ],
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_daemon(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # generator workers left behind
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def own_scicat() -> Iterator[SciCatServer]:
    with SciCatServer() as server:
        yield server


# -- 1. shell metacharacters -----------------------------------------------------------------

#: list lines split on spaces: ${IFS} is how a shell reads a space
HOSTILE = [
    "x;touch${IFS}PWNED1",
    "$(touch${IFS}PWNED2)",
    "`touch${IFS}PWNED3`",
    "a|touch${IFS}PWNED4",
    "b&&touch${IFS}PWNED5",
    "c'$(touch${IFS}PWNED6)'",
    'd"$(touch${IFS}PWNED7)"',
    "e>PWNED8",
    "f{scanname}{{x}}%s%n",
]

CALLBACK = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + '\\n')"


def test_shell_metacharacters_in_list_lines_are_never_run(
    tmp_path: Path, own_scicat: SciCatServer
) -> None:
    bid = "95000001"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    for name in HOSTILE:
        make_scan(raw, name)
    make_scan(raw, "plain_00001", detectors={"det": 1})
    work = tmp_path / "work"  # the daemon's cwd: where a shell would write
    work.mkdir()
    argv_log = tmp_path / "callback-argv.jsonl"
    script = tmp_path / "callback.py"
    script.write_text(CALLBACK)
    # a site command (run as a process, not nxsfileinfo) gets the names too
    values = daemon_settings(
        tmp_path,
        own_scicat,
        call_metadata_generated_callback=True,
        metadata_generated_callback=f"{sys.executable} {script} {argv_log} {{scanname}} "
        f"{{beamtimeid}}/{{scanname}}",
    )
    daemon = start_daemon(tmp_path, values, work)
    try:
        listing = raw / f"scicat-datasets-{bid}.lst"
        for name in HOSTILE:
            append_list_line(listing, name)
        append_list_line(listing, "plain_00001 det;touch${IFS}PWNED9 $(touch${IFS}PWNED10)")
        names = HOSTILE + ["plain_00001"]
        assert wait_until(lambda: len(own_scicat.datasets) == len(names), 90), (
            tmp_path / "daemon.log"
        ).read_text()[-3000:]
        assert wait_until(
            lambda: argv_log.exists() and len(argv_log.read_text().splitlines()) == len(names), 30
        )
    finally:
        assert stop_daemon(daemon) == 0
    datasets = own_scicat.datasets
    for name in names:
        assert datasets[f"{bid}/{name}"]["datasetName"] == name
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert sorted(calls) == sorted([name, f"{bid}/{name}"] for name in names)
    files = [
        entry["path"]
        for block in own_scicat.origdatablocks.values()
        if block["datasetId"] == f"{bid}/plain_00001"
        for entry in block["dataFileList"]
    ]
    assert sorted(files) == ["plain_00001.nxs", "plain_00001/det_00000.raw"]
    # no shell ran anything, anywhere
    pwned = [
        path
        for root in (tmp_path, work, Path.cwd(), Path.home(), Path("/tmp"))
        for path in root.glob("PWNED*")
    ]
    pwned += list(tmp_path.rglob("PWNED*"))
    assert pwned == [], pwned


# -- 2. leaving the beamtime ---------------------------------------------------------------------


def test_path_traversal_and_symlinks_out_of_the_beamtime_are_refused(
    beamtime, tmp_path: Path, caplog
) -> None:
    outside = tmp_path / "other-beamtime"
    make_scan(outside, "secret", detectors={"det": 2})
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("ok_00001")
    env.scan("det_00002")
    env.scan("sub_00003")
    (env.raw / "link").symlink_to(outside)  # raw/link -> outside
    (env.raw / "etc").symlink_to("/etc")
    (env.raw / "evil_00004.nxs").symlink_to(outside / "secret.nxs")  # a master file
    (env.raw / "evil_00005").symlink_to(outside / "secret")  # the scan's detector dir
    make_scan(env.raw, "evil_00005_master")
    os.replace(env.raw / "evil_00005_master.nxs", env.raw / "evil_00005.nxs")
    lines = {
        "ok_00001": OutcomeStatus.INGESTED,
        "../../etc/passwd": None,  # refused by the list grammar
        "det_00002 ../../../../../../etc": OutcomeStatus.FAILED,  # leaves by the text
        "det_00002 link/secret": OutcomeStatus.FAILED,  # leaves by a symlink
        "det_00002 etc": OutcomeStatus.FAILED,
        "link/secret": OutcomeStatus.FAILED,  # the scan itself behind a link
        "evil_00004": OutcomeStatus.FAILED,  # its master file is a link out
        "evil_00005": OutcomeStatus.FAILED,  # its detector dir is a link out
        "sub_00003": OutcomeStatus.INGESTED,
    }
    env.lines(*lines)
    with caplog.at_level(logging.ERROR, logger="scingestor"):
        outcomes = env.run(daemon=True)
    for line, status in lines.items():
        if status is None:
            assert line not in outcomes
            continue
        assert outcomes[line].status == status, (line, outcomes[line].message)
    messages = {
        line: outcomes[line].message for line in lines if lines[line] == OutcomeStatus.FAILED
    }
    assert (
        "detector path '../../../../../../etc' leaves the beamtime"
        in messages["det_00002 ../../../../../../etc"]
    )
    assert (
        f"detector path 'link/secret' leads out of the beamtime directory "
        f"{env.root}: {env.raw}/link/secret is a link to {outside}/secret"
        in messages["det_00002 link/secret"]
    )
    assert "is a link to /etc" in messages["det_00002 etc"]
    assert "scan name 'link/secret' leads out" in messages["link/secret"]
    assert f"is a link to {outside}/secret.nxs" in messages["evil_00004"]
    assert f"is a link to {outside}/secret" in messages["evil_00005"]
    for message in messages.values():
        assert message.startswith(f"{env.list_file()}:")  # file and line named
    # nothing of what lies outside reached SciCat
    assert sorted(env.datasets()) == [env.pid("ok_00001"), env.pid("sub_00003")]
    paths = [entry["path"] for block in env.blocks() for entry in block["dataFileList"]]
    assert not [path for path in paths if "secret" in path or "passwd" in path]


def test_a_beamtime_reached_through_its_core_path_symlink_is_allowed(
    beamtime, tmp_path: Path
) -> None:
    core = tmp_path / "asap3" / "p00" / "2026" / "data" / "95000002"
    (core / "raw").mkdir(parents=True)
    (core / "processed" / "detA").mkdir(parents=True)
    (core / "processed" / "detA" / "frame.raw").write_bytes(b"x" * 10)
    gpfs = tmp_path / "gpfs"
    gpfs.mkdir()
    current = gpfs / "current"
    current.symlink_to(core)  # /gpfs/current -> core
    env = beamtime(directory=current, core_path=core, ingest_dataset_attachment=False)
    for name in ("core_00001", "core_00002", "core_00003"):
        env.scan(name)
    # a link inside the beamtime to another place of the same beamtime (core form)
    (env.raw / "detA").symlink_to(core / "processed" / "detA")
    env.lines("core_00001", "core_00002 detA", "core_00003 ../processed/detA")
    outcomes = env.run(daemon=True)
    assert {line: outcome.status for line, outcome in outcomes.items()} == {
        "core_00001": OutcomeStatus.INGESTED,
        "core_00002 detA": OutcomeStatus.INGESTED,
        "core_00003 ../processed/detA": OutcomeStatus.INGESTED,
    }, {k: o.message for k, o in outcomes.items()}
    paths = sorted(
        entry["path"]
        for block in env.blocks(env.pid("core_00002"))
        for entry in block["dataFileList"]
    )
    assert "detA/frame.raw" in paths


# -- 3. the credential file ----------------------------------------------------------------------


def test_credential_file_readable_by_others_is_warned_about(tmp_path: Path, caplog) -> None:
    path = tmp_path / "credential"
    path.write_text("s3cret-password\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="scingestor"):
        credentials = load_credentials(str(path))
    assert credentials.password == "s3cret-password"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning and "group or others" in warning
    assert f"chmod 600 {path}" in warning
    assert "s3cret-password" not in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="scingestor"):
        load_credentials(str(path))
    assert not caplog.records


# -- 4. secrets in logs, errors and the device ---------------------------------------------------


def test_no_password_or_token_in_the_daemon_debug_log(
    tmp_path: Path, own_scicat: SciCatServer
) -> None:
    bid = "95000003"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    names = [f"secret_{index:05d}" for index in range(4)]
    for name in names:
        make_scan(raw, name)
    credential = tmp_path / "credential.json"
    wrong = "wrong-Passw0rd-1234"
    write_credential(credential, wrong)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(tmp_path, daemon_settings(tmp_path, own_scicat), tmp_path)
    listing = raw / f"scicat-datasets-{bid}.lst"
    try:
        append_list_line(listing, names[0])
        # 1. a refused login
        assert wait_until(lambda: log.exists() and "refused (401)" in log.read_text(), 60)
        write_credential(credential, INGESTOR.password)  # the operator fixes it
        assert wait_until(lambda: f"{bid}/{names[0]}" in own_scicat.datasets, 60)
        # 2. tokens expiring under the daemon's feet
        own_scicat.expire_tokens()
        append_list_line(listing, names[1])
        assert wait_until(lambda: f"{bid}/{names[1]}" in own_scicat.datasets, 60)
        # 3. a 500 (its answer body is logged)
        own_scicat.fail_next(1, 500)
        append_list_line(listing, names[2])
        assert wait_until(lambda: f"{bid}/{names[2]}" in own_scicat.datasets, 60)
        own_scicat.expire_tokens()
        append_list_line(listing, names[3])
        assert wait_until(lambda: f"{bid}/{names[3]}" in own_scicat.datasets, 60)
    finally:
        assert stop_daemon(daemon) == 0
    text = log.read_text()
    assert "-> 401" in text and "-> 403" in text and "-> 500" in text  # all of it happened
    tokens = issued_tokens(own_scicat)
    assert len(tokens) >= 3
    secrets = [wrong, INGESTOR.password, *tokens]
    for secret in secrets:
        assert secret not in text, f"a secret is in the log: {secret[:6]}..."
    for part in {token.split(".")[2] for token in tokens}:  # not even the signature
        assert part not in text
    assert "Bearer" not in text and "eyJ" not in text


def test_no_secret_in_exception_texts_or_device_attributes(
    tmp_path: Path, own_scicat: SciCatServer
) -> None:
    # exception texts of the client
    wrong = "Wr0ng-pass-exception"
    client = SciCatClient(
        ClientSettings(url=own_scicat.url, login_path="auth/login", max_tries=1),
        Credentials.from_password(INGESTOR.username, wrong),
    )
    with pytest.raises(AuthenticationError) as refused:
        client.whoami()
    client.close()
    texts = [str(refused.value), repr(refused.value), str(refused.value.body)]
    client = SciCatClient(
        ClientSettings(url=own_scicat.url, login_path="auth/login", max_tries=1),
        Credentials.from_password(INGESTOR.username, INGESTOR.password),
    )
    client.whoami()
    own_scicat.fail_next(1, 503)
    with pytest.raises(SciCatUnreachable) as unreachable:
        find_datasets(client, {"pid": "x"})
    texts += [str(unreachable.value), repr(client)]
    own_scicat.expire_tokens()
    client.whoami()  # 403, a new login, fine
    client.close()
    # what the Tango device shows: the service's snapshot and its change events
    bid = "95000004"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    make_scan(raw, "tango_00001")
    make_scan(raw, "tango_00002")
    credential = tmp_path / "credential.json"
    write_credential(credential, wrong)
    service = IngestorService(config_from_dict(daemon_settings(tmp_path, own_scicat)))
    events: List[Any] = []
    service.subscribe(lambda name, value: events.append((name, value)))
    service.start()
    try:
        listing = raw / f"scicat-datasets-{bid}.lst"
        append_list_line(listing, "tango_00001")
        assert wait_until(lambda: "refused" in service.last_error, 30)
        texts += [service.last_error, service.status]
        write_credential(credential, INGESTOR.password)
        assert wait_until(lambda: f"{bid}/tango_00001" in own_scicat.datasets, 60)
        own_scicat.expire_tokens()
        own_scicat.fail_next(1, 500)
        append_list_line(listing, "tango_00002")
        assert wait_until(lambda: f"{bid}/tango_00002" in own_scicat.datasets, 60)
        texts += [json.dumps(service.snapshot().as_dict())]
    finally:
        service.stop()
    texts += [f"{name}={value}" for name, value in events]
    assert any("refused (401)" in text for text in texts)
    for secret in [wrong, INGESTOR.password, *issued_tokens(own_scicat)]:
        for text in texts:
            assert secret not in text, (secret[:6], text)


# -- 5. TLS ---------------------------------------------------------------------------------------


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given() -> None:
    assert ClientSettings.from_config(config_from_dict({})).verify is True
    bundle = "/etc/pki/scicat-ca.pem"
    assert (
        ClientSettings.from_config(config_from_dict({"scicat_ca_bundle": bundle})).verify == bundle
    )
    assert (
        ClientSettings.from_config(config_from_dict({"scicat_tls_verify": False})).verify is False
    )
    # a bundle wins over the switch: it is the more specific wish
    assert (
        ClientSettings.from_config(
            config_from_dict({"scicat_tls_verify": False, "scicat_ca_bundle": bundle})
        ).verify
        == bundle
    )
    client = SciCatClient(ClientSettings.from_config(config_from_dict({})))
    assert client._session.verify is True
    client.close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """A tiny HTTPS server on loopback with a self-signed certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        capture_output=True,
        timeout=60,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {made.stderr.decode()[-300:]}")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            data = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"https://127.0.0.1:{httpd.server_address[1]}/api/v3", "cert": str(cert)}
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_self_signed_scicat_is_refused_unless_its_ca_is_given(https_server) -> None:
    url = https_server["url"]
    client = SciCatClient(
        ClientSettings.from_config(
            config_from_dict({"scicat_url": url, "max_request_tries_number": 5})
        )
    )
    started = time.monotonic()
    with pytest.raises(SciCatUnreachable) as refused:
        find_datasets(client, {"pid": "x"})
    client.close()
    assert refused.value.attempts == 1  # a certificate problem is not retried
    assert "certificate" in str(refused.value).lower() and url in str(refused.value)
    assert time.monotonic() - started < 10
    client = SciCatClient(
        ClientSettings.from_config(
            config_from_dict({"scicat_url": url, "scicat_ca_bundle": https_server["cert"]})
        )
    )
    assert find_datasets(client, {"pid": "x"}) == []
    client.close()
