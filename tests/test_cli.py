"""The console scripts end to end: real processes, real server on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scingestor.cli import model_ingest
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from .paths import configs

SCRIPTS = {
    "scicat_dataset_ingestor": "scingestor.cli.dataset_ingestor",
    "scicat_dataset_ingest": "scingestor.cli.dataset_ingest",
    "scicat_ingest": "scingestor.cli.model_ingest",
}


def run_script(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    with SciCatServer() as srv:
        yield srv


def write_config(tmp_path: Path, url: str, account=DEFAULT_ACCOUNTS[0], **extra) -> Path:
    credential = tmp_path / "credentials.json"
    credential.write_text(json.dumps({"username": account.username, "password": account.password}))
    credential.chmod(0o600)
    data = {
        "scicat_url": url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        **extra,
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.parametrize("config", configs())
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_print_config_of_reference_configs(script: str, config: Path) -> None:
    result = run_script(SCRIPTS[script], "-c", str(config), "--print-config")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["scicat_url"]
    assert effective["beamtime_filename_prefix"] == "beamtime-metadata-"
    assert "{hostname}" not in str(effective["datasets_filename_pattern"])


def test_print_config_without_file_shows_defaults() -> None:
    result = run_script(SCRIPTS["scicat_ingest"], "--print-config")
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["scicat_url"] == "http://localhost:3000/api/v3"
    assert effective["dataset_update_strategy"] == "patch"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("scicat_url: [unclosed\n", "config.yaml"),
        ("ingestion_delay_time: soon\n", "ingestion_delay_time"),
        ("dataset_update_strategy: sometimes\n", "dataset_update_strategy"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(content)
    for module in SCRIPTS.values():
        result = run_script(module, "-c", str(config), "--print-config")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("ERROR : ") and expected in lines[0]


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = run_script(SCRIPTS["scicat_dataset_ingest"], "-c", str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr and "Traceback" not in result.stderr


def test_unknown_log_level_is_a_usage_error() -> None:
    result = run_script(SCRIPTS["scicat_ingest"], "-l", "chatty", "--print-config")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_help_describes_options() -> None:
    for module in SCRIPTS.values():
        result = run_script(module, "--help")
        assert result.returncode == 0
        for option in ("--configuration", "--log", "--log-file", "--timestamps", "--print-config"):
            assert option in result.stdout
    assert "--runtime" in run_script(SCRIPTS["scicat_dataset_ingestor"], "--help").stdout
    assert "--model" in run_script(SCRIPTS["scicat_ingest"], "--help").stdout


def test_scicat_ingest_posts_samples(server: SciCatServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, server.url)
    sample = tmp_path / "sample.json"
    sample.write_text(
        json.dumps(
            {
                "sampleId": "cli-sample-1",
                "ownerGroup": "ingestor",
                "description": "from the CLI test",
            }
        )
    )
    result = run_script(SCRIPTS["scicat_ingest"], "-m", "Samples", "-c", str(config), str(sample))
    assert result.returncode == 0, result.stderr
    assert f"ModelIngestor: Post the Samples from {sample}" in result.stderr
    assert any(s.get("sampleId") == "cli-sample-1" for s in server.samples.values())
    password = DEFAULT_ACCOUNTS[0].password
    assert password not in result.stderr


def test_scicat_ingest_reports_each_failed_file(server: SciCatServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, server.url)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"ownerGroup": "ingestor", "description": "good one"}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"ownerGroup": "ingestor",\n "description": }')
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"ownerGroup": "ingestor", "colour": "blue"}))
    missing = tmp_path / "missing.json"
    before = len(server.samples)
    result = run_script(
        SCRIPTS["scicat_ingest"],
        "-m",
        "Samples",
        "-c",
        str(config),
        str(good),
        str(broken),
        str(invalid),
        str(missing),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{broken}:2:" in result.stderr
    assert str(invalid) in result.stderr and "colour" in result.stderr
    assert str(missing) in result.stderr
    assert len(server.samples) == before + 1


def test_scicat_ingest_list_file_posts_each_record(server: SciCatServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, server.url)
    many = tmp_path / "many.json"
    many.write_text(
        json.dumps([{"ownerGroup": "ingestor", "description": f"n{i}"} for i in range(3)])
    )
    before = len(server.samples)
    assert model_ingest.main(["-m", "Samples", "-c", str(config), str(many)]) == 0
    assert len(server.samples) == before + 3


def test_scicat_ingest_with_token_file_does_not_log_in(
    server: SciCatServer, tmp_path: Path
) -> None:
    import requests

    account = DEFAULT_ACCOUNTS[1]
    answer = requests.post(
        f"{server.url}/auth/login",
        timeout=10,
        json={"username": account.username, "password": account.password},
    )
    token_file = tmp_path / "token"
    token_file.write_text(answer.json()["access_token"] + "\n")
    config = write_config(tmp_path, server.url)
    instrument = tmp_path / "instrument.json"
    instrument.write_text(json.dumps({"uniqueName": "cli-instrument", "name": "CLI"}))
    server.clear_recorded()
    assert (
        model_ingest.main(
            ["-m", "Instruments", "-c", str(config), "-p", str(token_file), str(instrument)]
        )
        == 0
    )
    assert not server.recorded(path_contains="login")
    assert any(i.get("uniqueName") == "cli-instrument" for i in server.instruments.values())


def test_scicat_ingest_maps_derived_datasets(server: SciCatServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, server.url)
    derived = tmp_path / "derived.json"
    derived.write_text(
        json.dumps(
            {
                "ownerGroup": "ingestor",
                "owner": "Jane",
                "contactEmail": "jane@example.org",
                "sourceFolder": "/data/p1/derived",
                "creationTime": "2026-03-01T10:00:00Z",
                "investigator": "jane@example.org",
                "inputDatasets": ["x/1"],
                "usedSoftware": ["demo"],
            }
        )
    )
    assert model_ingest.main(["-m", "DerivedDatasets", "-c", str(config), str(derived)]) == 0
    assert any(
        d.get("type") == "derived" and d.get("sourceFolder") == "/data/p1/derived"
        for d in server.datasets.values()
    )


def test_scicat_ingest_without_model_fails_clearly(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text("{}")
    result = run_script(SCRIPTS["scicat_ingest"], str(sample))
    assert result.returncode == 1
    assert "-m or --model" in result.stderr


def test_scicat_ingest_unreachable_server_is_one_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, f"http://127.0.0.1:{free_port()}/api/v3", max_request_tries_number=2
    )
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"ownerGroup": "ingestor"}))
    result = run_script(SCRIPTS["scicat_ingest"], "-m", "Samples", "-c", str(config), str(sample))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], result.stderr


def test_log_file_is_rotated(server: SciCatServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, server.url)
    log = tmp_path / "logs" / "ingest.log"
    for _ in range(3):
        result = run_script(
            SCRIPTS["scicat_ingest"],
            "-c",
            str(config),
            "-f",
            str(log),
            "-t",
            "-m",
            "Samples",
            str(tmp_path / "nothing.json"),
        )
        assert result.returncode == 1
    assert log.exists() and (log.parent / "ingest.log.1").exists()
    assert (log.parent / "ingest.log.2").exists()
    first = log.read_text().splitlines()[0]
    assert " : INFO : " in first or " : ERROR : " in first
