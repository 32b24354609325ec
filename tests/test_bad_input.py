"""Bad input from every side: list files, beamtime files, configuration, generators, SciCat.

Each kind of garbage must give one clear error naming where it is (file
and line, file and field, URL), the daemon must go on, and nothing else may
be lost: the good scans beside the bad ones are ingested.  The parsers are
fuzzed with hypothesis (only the documented error type may come out); the
whole chain (inotify watcher, service, pipeline, client) runs for real with
hand-picked garbage.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scingestor.beamtime import parse_beamtime
from scingestor.config import VARIABLES, config_from_dict, load_config
from scingestor.errors import BeamtimeError, ConfigError, ListFileError, SciCatError
from scingestor.listfile import MAX_LINE_LENGTH, ScanLine, parse_line, parse_text
from scingestor.scicat import ClientSettings, SciCatClient
from scingestor.service import IngestorService
from scingestor.testing.builders import (
    append_list_line,
    make_beamtime,
    make_scan,
    nxsfileinfo_executable,
)
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer
from scingestor.watch import ListFileTailer

from .helpers import posted_pids, wait_until

INGESTOR = DEFAULT_ACCOUNTS[0]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def settings_for(tmp_path: Path, url: str, **extra: Any) -> Dict[str, Any]:
    credential = tmp_path / "credential.json"
    credential.write_text(
        json.dumps({"username": INGESTOR.username, "password": INGESTOR.password})
    )
    credential.chmod(0o600)
    values: Dict[str, Any] = {
        "scicat_url": url,
        "ingestor_credential_file": str(credential),
        "scicat_users_login_path": "auth/login",
        "beamtime_dirs": [str(tmp_path / "gpfs")],
        "ingestor_var_dir": str(tmp_path / "var"),
        "ingestor_state_dir": str(tmp_path / "state"),
        "ingestion_delay_time": 0.0,
        "ingest_dataset_attachment": False,
        "max_request_tries_number": 2,
        "retry_base_delay": 0.05,
        "max_generator_attempts": 2,
    }
    values.update(extra)
    (tmp_path / "gpfs").mkdir(exist_ok=True)
    return values


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., IngestorService]]:
    services: List[IngestorService] = []

    def make(url: str, **extra: Any) -> IngestorService:
        service = IngestorService(config_from_dict(settings_for(tmp_path, url, **extra)))
        services.append(service)
        service.start()
        return service

    yield make
    for service in services:
        service.stop()


def ingested_keys(service: IngestorService) -> List[str]:
    keys = []
    for state in list(service.intake.lists.values()):
        if state.ingested is not None:
            keys += [record.key for record in state.ingested.records]
    return keys


# -- 1. list-file lines ----------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
def test_any_list_line_parses_or_gives_a_list_file_error(text: str) -> None:
    try:
        record = parse_line(text, 7, "/bt/raw/list.lst")
    except ListFileError as error:
        assert str(error).startswith("/bt/raw/list.lst:7: ")
        return
    if isinstance(record, ScanLine):
        for name in (record.scanname, record.masterscanname):
            assert name and not name.startswith("/")
            assert ".." not in name.split("/")
        assert all(not detector.startswith("/") for detector in record.detectors)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_in_a_list_file_give_records_or_line_errors(
    tmp_path_factory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "list.lst"
    path.write_bytes(data)
    records = ListFileTailer(str(path)).read(final=True)
    lines = [record.lineno for record in records]
    assert lines == sorted(set(lines))
    for record in records:
        try:
            parse_line(record.text, record.lineno, str(path))
        except ListFileError as error:
            assert f"{path}:{record.lineno}: " in str(error)
    text = data.decode("utf-8", errors="replace")
    _records, errors = parse_text(text, str(path))
    assert all(isinstance(error, ListFileError) for error in errors)


JUNK_LINES = [
    "__command__ explode",  # unknown command
    "__command__",  # command without a command
    "__command__ start two words",
    "__command__ stop now",
    "/etc/passwd",  # absolute
    "../../etc/passwd",  # leaves the scan directory
    "scan_ok::/;x",  # multi-entry without an entry
    "x" * (MAX_LINE_LENGTH + 1),  # a huge line
    "tab\there\x07bell",  # control character
    "name with\x00nul",
]


def test_junk_lines_through_the_watcher_and_service(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    bid = "96000001"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    good = [f"good_{index:05d}" for index in range(4)]
    for name in good:
        make_scan(raw, name)
    listing = raw / f"scicat-datasets-{bid}.lst"
    caplog.set_level(logging.ERROR, logger="scingestor")
    service = service_factory(scicat.url)
    assert wait_until(lambda: service.watched_beamtimes == [bid])
    rng = random.Random(1)
    binary = bytes(rng.randrange(256) for _ in range(3000)).replace(b"\n", b"")
    with open(listing, "ab") as handle:
        handle.write(b"\n" + good[0].encode())
        handle.write(b"\n" + binary)  # binary junk
        handle.write(b"\n" + b"\xff\xfe" * 100000)  # 200 kB of junk, one line
        for line in JUNK_LINES[:5]:
            handle.write(b"\n" + line.encode())
        handle.write(b"\n" + good[1].encode())
        for line in JUNK_LINES[5:]:
            handle.write(b"\n" + line.encode())
        handle.write(b"\n" + good[2].encode())
    append_list_line(listing, good[3])  # after the junk, as a writer would
    assert wait_until(lambda: sorted(posted_pids(scicat, bid)) == [f"{bid}/{n}" for n in good], 60)
    assert service.wait_idle(30)
    assert set(posted_pids(scicat, bid).values()) == {1}
    assert service.state == "ON"
    errors = [record.getMessage() for record in caplog.records]
    # every junk line is named by file and line number
    # (line 1 is empty, 2 is good_0, 3 and 4 the binary junk, 10 good_1, 16 good_2)
    for lineno in [3, 4, *range(5, 10), *range(11, 16)]:
        assert any(message.startswith(f"{listing}:{lineno}: ") for message in errors), (
            lineno,
            errors,
        )
    assert any("unknown command 'explode'" in message for message in errors)
    assert any("too long to be a record" in message for message in errors)
    assert any("leaves the scan directory" in message for message in errors)
    assert any("must be relative" in message for message in errors)
    assert sorted(ingested_keys(service)) == good
    assert service.last_error.startswith(str(listing))


# -- 2. beamtime metadata --------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
BEAMTIME_FIELDS = [
    "beamtimeId",
    "proposalId",
    "beamline",
    "corePath",
    "proposalType",
    "ownerGroup",
    "accessGroups",
]


@FUZZ
@given(st.dictionaries(st.sampled_from(BEAMTIME_FIELDS), JSON_VALUES) | JSON_VALUES)
def test_any_beamtime_json_gives_a_beamtime_or_an_error_naming_file_and_field(data: Any) -> None:
    path = "/gpfs/current/beamtime-metadata-1.json"
    try:
        beamtime = parse_beamtime(json.dumps(data), path)
    except BeamtimeError as error:
        assert str(error).startswith(path + ": ")
        if isinstance(data, dict) and error.field is not None:
            assert f"field '{error.field}'" in str(error)
        return
    assert isinstance(data, dict)
    assert beamtime.beamtime_id == str(data["beamtimeId"])
    assert isinstance(beamtime.core_path, str)


@FUZZ
@given(st.text(max_size=200))
def test_any_beamtime_text_gives_a_beamtime_or_a_beamtime_error(text: str) -> None:
    try:
        parse_beamtime(text, "/bt/beamtime-metadata-1.json")
    except BeamtimeError as error:
        assert str(error).startswith("/bt/beamtime-metadata-1.json: ")


BROKEN_BEAMTIMES: List[Tuple[str, Any, str]] = [
    ("96000011", '{"beamtimeId": "96000011", "proposalId": ', "not valid JSON (line 1"),
    (
        "96000012",
        {"beamtimeId": "96000012", "beamline": "p00", "corePath": "/x"},
        "field 'proposalId': missing",
    ),
    (
        "96000013",
        {"beamtimeId": "96000013", "proposalId": ["a"], "beamline": "p00", "corePath": "/x"},
        "field 'proposalId': must be a string",
    ),
    (
        "96000014",
        {
            "beamtimeId": "96000014",
            "proposalId": "1",
            "beamline": "p00",
            "corePath": "/x",
            "accessGroups": {"a": 1},
        },
        "field 'accessGroups': must be a list of strings",
    ),
    ("96000015", ["not", "an", "object"], "must hold a JSON object"),
]


def test_broken_beamtime_files_are_named_and_the_others_ingested(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    gpfs = tmp_path / "gpfs"
    dirs = []
    good_bid = "96000010"
    good = gpfs / "good"
    make_beamtime(good, good_bid)
    make_scan(good / "raw", "bt_good_00001")
    dirs.append(good)
    for bid, content, _message in BROKEN_BEAMTIMES:
        directory = gpfs / bid
        directory.mkdir(parents=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (directory / f"beamtime-metadata-{bid}.json").write_text(text)
        make_scan(directory / "raw", "bt_fixed_00001")
        append_list_line(directory / "raw" / f"scicat-datasets-{bid}.lst", "bt_fixed_00001")
        dirs.append(directory)
    caplog.set_level(logging.WARNING, logger="scingestor")
    service = service_factory(scicat.url, beamtime_dirs=[str(d) for d in dirs])
    assert wait_until(lambda: service.watched_beamtimes == [good_bid])
    append_list_line(good / "raw" / f"scicat-datasets-{good_bid}.lst", "bt_good_00001")
    assert wait_until(lambda: posted_pids(scicat, good_bid) == {f"{good_bid}/bt_good_00001": 1})
    for bid, _content, expected in BROKEN_BEAMTIMES:
        # (a file just written gets a moment to be completed before the verdict)
        path = gpfs / bid / f"beamtime-metadata-{bid}.json"
        assert wait_until(
            lambda: any(
                str(path) in r.getMessage() and expected in r.getMessage() for r in caplog.records
            ),
            30,
        ), (expected, caplog.text)
    assert str(gpfs) in service.last_error
    assert service.state == "ON"
    # the facility fixes one file: its scan, listed all along, is ingested
    fixed_bid = BROKEN_BEAMTIMES[1][0]
    make_beamtime(gpfs / fixed_bid, fixed_bid)
    assert wait_until(
        lambda: posted_pids(scicat, fixed_bid) == {f"{fixed_bid}/bt_fixed_00001": 1}, 60
    )


# -- 3. YAML configuration ---------------------------------------------------------------------

CONFIG_KEYS = sorted(VARIABLES)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=10), JSON_VALUES, max_size=5)
)
def test_any_configuration_mapping_loads_or_names_the_key(data: Dict[str, Any]) -> None:
    try:
        config_from_dict(data, "/etc/scingestor.yaml")
    except ConfigError as error:
        assert str(error).startswith("/etc/scingestor.yaml: ")
        if error.key is not None:
            assert f"key '{error.key}'" in str(error)


@FUZZ
@given(st.text(max_size=300))
def test_any_configuration_text_loads_or_gives_a_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(str(path))
    except ConfigError as error:
        assert str(error).startswith(str(path))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("scicat_url: [unclosed\n", "line 1"),
        ("ingestion_delay_time: soon\n", "key 'ingestion_delay_time'"),
        ("beamtime_dirs: 7\n", "key 'beamtime_dirs'"),
        ("dataset_update_strategy: sometimes\n", "key 'dataset_update_strategy'"),
        ("- a\n- list\n", "mapping"),
        ("\tscicat_url: x\n", "line 1"),
    ],
)
def test_broken_configuration_stops_the_daemon_with_one_clear_line(
    tmp_path: Path, text: str, expected: str, restore_logging
) -> None:
    from scingestor.cli.dataset_ingestor import main

    config = tmp_path / "broken.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(str(config))
    log = tmp_path / "daemon.log"
    assert main(["-c", str(config), "-f", str(log)]) != 0
    lines = [line for line in log.read_text().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"ERROR : {config}"), lines
    assert expected in lines[0] and "Traceback" not in log.read_text()


# -- 4. generator output -------------------------------------------------------------------

GENERATOR = """
import subprocess, sys
argv = sys.argv[1:]
output = argv[argv.index("-o") + 1]
name = output.rsplit("/", 1)[-1].split(".")[0]
if name == "gen_broken":
    open(output, "w").write('{"pid": "%s/gen_broken", "type": ' % sys.argv[-1])
elif name == "gen_list":
    open(output, "w").write("[1, 2, 3]")
elif name == "gen_nopid":
    open(output, "w").write('{"type": "raw"}')
elif name == "gen_silent":
    pass
else:
    sys.exit(subprocess.call([NXSFILEINFO, *argv[:-1]]))
"""


def test_broken_generator_output_is_named_and_the_others_ingested(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    bid = "96000020"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    script = tmp_path / "generator.py"
    script.write_text(f"NXSFILEINFO = {nxsfileinfo_executable()!r}\n" + GENERATOR)
    # a generator of the site's own: not nxsfileinfo, so it runs as a process
    command = (
        VARIABLES["file_dataset_metadata_generator"].default.replace(
            "nxsfileinfo", f"{sys.executable} {script}", 1
        )
        + " {beamtimeid}"
    )
    names = ["gen_good_1", "gen_broken", "gen_list", "gen_nopid", "gen_silent", "gen_good_2"]
    for name in names:
        make_scan(raw, name)
    caplog.set_level(logging.ERROR, logger="scingestor")
    service = service_factory(scicat.url, file_dataset_metadata_generator=command)
    listing = raw / f"scicat-datasets-{bid}.lst"
    for name in names:
        append_list_line(listing, name)
    assert wait_until(
        lambda: sorted(posted_pids(scicat, bid)) == [f"{bid}/gen_good_1", f"{bid}/gen_good_2"], 90
    )
    assert wait_until(lambda: len(ingested_keys(service)) == len(names), 60)
    assert service.state == "ON"
    messages = "\n".join(record.getMessage() for record in caplog.records)
    meta = f"{tmp_path}/var{raw}"
    assert f"gen_broken: {meta}/gen_broken.scan.json: not valid JSON (line 1, column" in messages
    assert f"gen_list: {meta}/gen_list.scan.json: must hold a JSON object" in messages
    assert f"gen_nopid: {meta}/gen_nopid.scan.json: field 'pid'" in messages
    assert f"gen_silent: metadata missing after generation: {meta}/gen_silent.scan.json" in messages


# -- 5. SciCat answers -------------------------------------------------------------------------


Rule = Tuple[str, str, Optional[bytes], Tuple[int, str, bytes]]


class GarbageProxy:
    """Passes requests on to a real server, except those it answers with garbage.

    A rule ``(method, text in the path, text in the body or None, (status,
    content type, body))`` answers the requests it matches itself.
    """

    def __init__(self, upstream: str, rules: List[Rule]) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules = rules
        self.hits: List[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                for method, needle, inside, answer in list(proxy.rules):
                    if (
                        method == self.command
                        and needle in self.path
                        and (inside is None or inside in body)
                    ):
                        proxy.hits.append(f"{self.command} {self.path}")
                        self.answer(*answer)
                        return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type", "accept")
                }
                reply = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body or None,
                    headers=headers,
                    timeout=30,
                )
                self.answer(reply.status_code, reply.headers.get("Content-Type", ""), reply.content)

            def answer(self, status: int, kind: str, data: bytes) -> None:
                self.send_response(status)
                if kind:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = handle_one

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v3"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_garbage_from_scicat_is_an_error_naming_the_url(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    bid = "96000030"
    html = b"<html><body>Service temporarily unavailable</body></html>"
    proxy = GarbageProxy(
        scicat.base_url,
        [
            ("GET", f"{bid}%2Fsc_html", None, (200, "text/html", html)),
            ("GET", f"{bid}%2Fsc_list", None, (200, "application/json", b"[1, 2]")),
            (
                "GET",
                f"{bid}%2Fsc_blocks/OrigDatablocks",
                None,
                (200, "application/json", b'{"blocks": "none"}'),
            ),
            ("POST", "/Datasets", b"sc_post", (201, "text/plain", b"created, probably")),
        ],
    )
    try:
        raw = tmp_path / "gpfs" / "raw"
        raw.mkdir(parents=True)
        make_beamtime(tmp_path / "gpfs", bid)
        names = ["sc_good", "sc_html", "sc_list", "sc_blocks", "sc_post", "sc_after"]
        for name in names:
            make_scan(raw, name)
        # sc_blocks' dataset exists (strategy "no" keeps it): only its blocks are asked for
        scicat.add_dataset(
            {
                "pid": f"{bid}/sc_blocks",
                "type": "raw",
                "ownerGroup": f"{bid}-dmgt",
                "accessGroups": [],
            }
        )
        caplog.set_level(logging.WARNING, logger="scingestor")
        service = service_factory(proxy.url, dataset_update_strategy="no")
        listing = raw / f"scicat-datasets-{bid}.lst"
        for name in names[:-1]:
            append_list_line(listing, name)

        def messages() -> str:
            return "\n".join(record.getMessage() for record in caplog.records)

        url = proxy.url
        for expected in (
            f"GET {url}/Datasets/{bid}%2Fsc_list: the answer is not a dataset object: [1, 2]",
            f"GET {url}/Datasets/{bid}%2Fsc_blocks/OrigDatablocks: the answer is not a "
            'list of origdatablocks: {"blocks": "none"}',
            f"POST {url}/Datasets: 201 answer is not JSON: created, probably",
            f"GET {url}/Datasets/{bid}%2Fsc_html failed (try 1 of 2): 200 answer is not JSON",
        ):
            assert wait_until(lambda: expected in messages(), 30), (expected, messages())
        assert wait_until(lambda: f"{bid}/sc_good" in posted_pids(scicat, bid), 30)
        assert service.state in ("ON", "RUNNING", "ALARM")  # alive; sc_html waits
        assert posted_pids(scicat, bid) == {f"{bid}/sc_good": 1}
        # no block was posted for the dataset whose blocks could not be read
        assert [
            b for b in scicat.origdatablocks.values() if b["datasetId"] == f"{bid}/sc_blocks"
        ] == []
        # SciCat answers properly again: the scan waiting for it goes through
        proxy.rules.clear()
        append_list_line(listing, "sc_after")
        assert wait_until(
            lambda: {f"{bid}/sc_html", f"{bid}/sc_after"} <= set(posted_pids(scicat, bid)), 60
        )
        assert set(posted_pids(scicat, bid).values()) == {1}
    finally:
        proxy.close()


def test_garbage_login_answer_names_the_url(scicat: SciCatServer) -> None:
    proxy = GarbageProxy(
        scicat.base_url,
        [
            ("POST", "/auth/login", None, (201, "text/html", b"<html>login</html>")),
            ("POST", "/Users/login", None, (200, "application/json", b'{"token": 42}')),
        ],
    )
    try:
        from scingestor.scicat.credentials import Credentials

        client = SciCatClient(
            ClientSettings(url=proxy.url, max_tries=1),
            Credentials.from_password("ingestor", "ingestor-password"),
        )
        with pytest.raises(SciCatError) as raised:
            client.login()
        text = str(raised.value)
        assert proxy.url in text and "ingestor-password" not in text
        client.close()
    finally:
        proxy.close()
