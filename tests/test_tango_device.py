"""The ScicatIngestorDS Tango device, end to end with real parts.

The device runs in its own process (``DeviceTestContext(process=True)``:
several thread-mode contexts in one test process crash), the
SciCat-compatible server in this process on loopback, and scans are listed
in a real beamtime under the module's temporary directory.  The slow tests
at the end run the real ``ScicatIngestorDS`` script registered in pytango's
sqlite Tango database, and ``scingestor-demo``.  One device and one database
per module keep the whole file short; every test uses its own scan names and
waits on events or counters, never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import tango
from tango import DevState, EventType
from tango.test_context import DeviceTestContext

import scingestor
from ScicatIngestorDS import ScicatIngestorDS
from ScicatIngestorDS.device import collect_overrides
from scingestor.errors import ConfigError
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

BEAMTIME = "99001234"
LIST_NAME = f"scicat-datasets-{BEAMTIME}.lst"
TIMEOUT = 30.0          # generous: a loaded 2-core machine, never reached when all is well
CLIENT_TIMEOUT_MS = 20000

ATTRIBUTES: Dict[str, type] = {
    "CurrentMeasurement": str, "QueueLength": int, "LastError": str, "IngestedCount": int,
    "FailedCount": int, "UnchangedCount": int, "LastIngestedScan": str,
    "LastSuccessTime": float, "WatchedBeamtimes": tuple, "SciCatUrl": str,
    "SciCatReachable": bool, "ConfigFilePath": str, "Version": str,
}
COMMANDS = {"StartMeasurement", "StartMeasurementIn", "StopMeasurement", "StopMeasurementIn",
            "UpdateMeasurement", "UpdateMeasurementIn", "CurrentMeasurementIn", "Reingest",
            "AddScan", "AddScanIn",
            "Start", "Stop", "Rescan", "Init", "State", "Status"}


# ---------------------------------------------------------------------------
# helpers


class Events:
    """Change events of some attributes of a device, gathered for waiting on."""

    def __init__(self, proxy: Any, *names: str) -> None:
        self.proxy = proxy
        self._cond = threading.Condition()
        self.values: Dict[str, List[Any]] = {name.lower(): [] for name in names}
        self._ids = [proxy.subscribe_event(name, EventType.CHANGE_EVENT, self._on_event)
                     for name in names]

    def _on_event(self, event: Any) -> None:
        if event.err or event.attr_value is None:
            return
        name = event.attr_name.rsplit("/", 1)[-1].split("#", 1)[0].lower()
        with self._cond:
            self.values.setdefault(name, []).append(event.attr_value.value)
            self._cond.notify_all()

    def of(self, name: str) -> List[Any]:
        with self._cond:
            return list(self.values[name.lower()])

    def mark(self) -> Dict[str, int]:
        """How many events arrived so far, per attribute (for :meth:`since`)."""
        with self._cond:
            return {name: len(values) for name, values in self.values.items()}

    def since(self, mark: Dict[str, int], name: str) -> List[Any]:
        with self._cond:
            return list(self.values[name.lower()][mark.get(name.lower(), 0):])

    def wait(self, name: str, predicate: Callable[[List[Any]], bool],
             timeout: float = TIMEOUT, mark: Optional[Dict[str, int]] = None) -> List[Any]:
        """Wait until ``predicate(events since mark)`` holds; returns those events."""
        start = (mark or {}).get(name.lower(), 0)
        with self._cond:
            ok = self._cond.wait_for(
                lambda: predicate(self.values[name.lower()][start:]), timeout)
            seen = list(self.values[name.lower()][start:])
        assert ok, f"{name}: events {seen} never satisfied the condition"
        return seen

    def close(self) -> None:
        for event_id in self._ids:
            with contextlib.suppress(tango.DevFailed):
                self.proxy.unsubscribe_event(event_id)


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def contains(sequence: List[Any], *wanted: Any) -> bool:
    """``wanted`` appear in ``sequence`` in this order (not necessarily adjacent)."""
    it = iter(sequence)
    return all(any(item == want for item in it) for want in wanted)


def dev_failed(call: Callable[[], Any]) -> Any:
    """The first DevError of the DevFailed that ``call`` raises."""
    with pytest.raises(tango.DevFailed) as info:
        call()
    return info.value.args[0]


def write_credentials(path: Path) -> Path:
    account = DEFAULT_ACCOUNTS[0]
    path.write_text(json.dumps({"username": account.username, "password": account.password}))
    path.chmod(0o600)
    return path


def write_config(path: Path, url: str, root: Path, **extra: Any) -> Path:
    """A configuration for tests: fast retries, state and var dirs under ``root``."""
    data = {
        "scicat_url": url,
        "ingestor_credential_file": str(write_credentials(root / "credentials.json")),
        "scicat_users_login_path": "auth/login",
        "ingestor_var_dir": str(root / "var"),
        "ingestor_state_dir": str(root / "state"),
        "ingestion_delay_time": 0,
        "max_request_tries_number": 2,
        "request_timeout": 5,
    }
    data.update(extra)
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in data.items()))
    return path


class Scans:
    """Scans listed one by one in a scan directory of the test beamtime."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.list_file = directory / LIST_NAME
        self._count = 0

    def new(self, prefix: str = "scan") -> str:
        self._count += 1
        name = f"{prefix}_{self._count:05d}"
        make_scan(self.directory, name)
        return name

    def add(self, prefix: str = "scan") -> str:
        name = self.new(prefix)
        append_list_line(self.list_file, name)
        return name


def pids(scicat: SciCatServer) -> List[str]:
    return sorted(scicat.datasets)


# ---------------------------------------------------------------------------
# fixtures


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def scicat_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def scicat(scicat_port: int, device: Any) -> Iterator[SciCatServer]:
    """The SciCat-compatible server, started *after* the device process.

    The device process is forked: one forked while the server listens would
    keep the listening socket open, and ``set_down`` could not refuse
    connections (nor listen again on the port).
    """
    with SciCatServer(port=scicat_port) as server:
        yield server


@pytest.fixture(scope="module")
def beamtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beamtimes") / "p00" / BEAMTIME
    make_beamtime(root, BEAMTIME)
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("device")


@pytest.fixture(scope="module")
def config_file(scicat_port: int, workdir: Path) -> Path:
    # no beamtime_dirs and a slow delay: the device properties must override them
    return write_config(workdir / "scingestor.yaml", f"http://127.0.0.1:{scicat_port}/api/v3",
                        workdir, ingestion_delay_time=60,
                        ingestor_state_dir=str(workdir / "unused"))


@pytest.fixture(scope="module")
def device(config_file: Path, beamtime: Path, workdir: Path) -> Iterator[Any]:
    properties = {"ConfigFile": str(config_file), "BeamtimeDirs": [str(beamtime)],
                  "StateDir": str(workdir / "state"), "IngestionDelayTime": 0.0}
    with DeviceTestContext(ScicatIngestorDS, properties=properties, process=True,
                           timeout=30) as proxy:
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        wait_until(lambda: proxy.state() == DevState.ON, what="the device ON")
        yield proxy


@pytest.fixture(scope="module")
def scans(beamtime: Path) -> Scans:
    return Scans(beamtime / "raw")


@pytest.fixture
def events(device: Any) -> Iterator[Events]:
    recorder = Events(device, "State", "Status", "QueueLength", "IngestedCount",
                      "FailedCount", "LastIngestedScan", "LastSuccessTime", "LastError",
                      "SciCatReachable", "CurrentMeasurement", "WatchedBeamtimes")
    yield recorder
    recorder.close()


def ingest(device: Any, events: Events, scans: Scans, prefix: str = "scan") -> str:
    """List one new scan and wait until the device reports it ingested."""
    mark = events.mark()
    before = device.IngestedCount
    name = scans.add(prefix)
    events.wait("IngestedCount", lambda seen: bool(seen) and seen[-1] > before, mark=mark)
    events.wait("LastIngestedScan", lambda seen: name in seen, mark=mark)
    return name


def wait_idle(device: Any) -> None:
    wait_until(lambda: device.QueueLength == 0 and device.state() != DevState.RUNNING,
               what="an empty queue")


# ---------------------------------------------------------------------------
# pure helpers of the device module


def test_collect_overrides_named_properties_win_and_unset_ones_are_left_out() -> None:
    got = collect_overrides(
        {"BeamtimeDirs": ["/a", "/b"], "ScicatUrl": "", "CredentialFile": None,
         "StateDir": "/s", "IngestionDelayTime": 0.5},
        ["scicat_users_login_path: auth/login", "ingestor_state_dir: /other", ""])
    assert got == {"beamtime_dirs": ["/a", "/b"], "ingestor_state_dir": "/s",
                   "ingestion_delay_time": 0.5, "scicat_users_login_path": "auth/login"}


def test_collect_overrides_rejects_lines_that_are_not_key_value() -> None:
    with pytest.raises(ConfigError, match="ConfigOverrides"):
        collect_overrides({}, ["just words"])
    with pytest.raises(ConfigError, match="ConfigOverrides"):
        collect_overrides({}, ["key: [unclosed"])


# ---------------------------------------------------------------------------
# the device (one process for the module)


def test_every_attribute_and_command_is_there_and_readable(
        device: Any, scicat: SciCatServer, config_file: Path) -> None:
    assert device.state() == DevState.ON
    assert "Watching 1 beamtime(s)" in device.status()
    for name, kind in ATTRIBUTES.items():
        value = device.read_attribute(name).value
        if kind is tuple:
            assert value is None or isinstance(value, (tuple, list)), name
        else:
            assert isinstance(value, kind), (name, value)
    assert {cmd.cmd_name for cmd in device.command_list_query()} >= COMMANDS
    assert device.SciCatUrl == scicat.url
    assert list(device.WatchedBeamtimes) == [BEAMTIME]        # BeamtimeDirs override
    assert device.ConfigFilePath == str(config_file)
    assert device.Version == scingestor.__version__
    assert device.QueueLength == 0 and device.FailedCount == 0


def test_a_listed_scan_is_ingested_with_change_events(
        device: Any, events: Events, scans: Scans, scicat: SciCatServer) -> None:
    # the configuration file says 60 s; the IngestionDelayTime property (0) wins
    events.wait("State", lambda seen: seen == [DevState.ON])   # the subscription's value
    mark = events.mark()
    started = time.time()
    name = ingest(device, events, scans)
    states = events.wait("State", lambda seen: contains(seen, DevState.RUNNING, DevState.ON),
                         mark=mark)
    assert DevState.ALARM not in states
    assert contains(events.since(mark, "QueueLength"), 1, 0)
    events.wait("LastSuccessTime", lambda seen: bool(seen) and seen[-1] >= started - 1,
                mark=mark)
    events.wait("SciCatReachable", lambda seen: bool(seen) and seen[-1] is True)
    assert device.LastIngestedScan == name
    assert device.state() == DevState.ON
    assert any(pid.endswith(f"/{name}") for pid in pids(scicat)), pids(scicat)


def test_measurement_commands(device: Any, events: Events, scans: Scans,
                              scicat: SciCatServer, beamtime: Path) -> None:
    assert device.StartMeasurement("calib") == "calib"
    events.wait("CurrentMeasurement", lambda seen: seen[-1:] == ["calib"])
    assert device.CurrentMeasurement == "calib"
    assert device.CurrentMeasurementIn(str(scans.directory)) == "calib"
    calscan = ingest(device, events, scans, "calscan")
    assert device.UpdateMeasurement() == "calib"
    assert device.CurrentMeasurement == "calib"
    assert device.AddScan(calscan).startswith(f"{calscan}:")      # in the measurement again
    assert device.StopMeasurement() == "calib"
    events.wait("CurrentMeasurement", lambda seen: seen[-1:] == [""])
    wait_until(lambda: any(pid.endswith("/calib") for pid in pids(scicat)),
               what="the measurement dataset")
    wait_idle(device)
    text = scans.list_file.read_text()
    assert "__command__ start calib" in text and "__command__ stop" in text
    # the ...In commands work on another scan directory of the beamtime
    other = Scans(beamtime / "raw2")
    assert device.StartMeasurementIn(["align", str(other.directory)]) == "align"
    assert device.CurrentMeasurementIn(str(other.directory)) == "align"
    assert device.CurrentMeasurementIn(str(scans.directory)) == ""
    scanned = ingest(device, events, other, "alignscan")
    assert device.UpdateMeasurementIn(str(other.directory)) == "align"
    again = device.AddScanIn([f"{scanned} det1", str(other.directory)])
    assert again.startswith(f"{scanned}:") and again.endswith(" det1")
    assert device.StopMeasurementIn(str(other.directory)) == "align"
    assert device.CurrentMeasurementIn(str(other.directory)) == ""
    assert "__command__ start align" in other.list_file.read_text()
    assert device.StopMeasurement() == ""              # nothing active any more
    wait_idle(device)
    assert device.FailedCount == 0, device.LastError


def test_command_errors_are_one_line_devfailed_and_set_last_error(
        device: Any, events: Events) -> None:
    error = dev_failed(lambda: device.StartMeasurement("two words"))
    assert "invalid measurement name" in error.desc and "\n" not in error.desc
    assert error.reason == "ScingestorError"
    assert error.origin == "ScicatIngestorDS.StartMeasurement"
    events.wait("LastError", lambda seen: any("invalid measurement name" in v for v in seen))
    assert "invalid measurement name" in device.LastError

    error = dev_failed(lambda: device.StopMeasurementIn("/nowhere/near/a/beamtime"))
    assert "not below a watched beamtime directory" in error.desc
    assert "not below a watched beamtime" in device.LastError
    error = dev_failed(lambda: device.StartMeasurementIn(["only-a-name"]))
    assert error.reason == "ArgumentError" and "[name, scan directory]" in error.desc
    error = dev_failed(lambda: device.AddScan("__command__ stop"))
    assert "not a scan record" in error.desc
    assert device.CurrentMeasurement == ""
    error = dev_failed(lambda: device.UpdateMeasurement())
    assert "no measurement is active" in error.desc
    assert device.state() == DevState.ON, device.status()  # a refused command: no alarm


def test_reingest_by_beamtime_scan_or_everything(device: Any, events: Events,
                                                 scans: Scans) -> None:
    name = ingest(device, events, scans)
    wait_idle(device)
    lines = [line for line in scans.list_file.read_text().splitlines()
             if line and not line.startswith("__command__")]
    assert device.Reingest(name) == 1
    wait_idle(device)
    assert device.Reingest(BEAMTIME) == len(lines) + 4      # + the raw2 list's lines
    wait_idle(device)
    assert device.Reingest("") == len(lines) + 4
    wait_idle(device)
    assert device.Reingest("no_such_scan") == 0
    assert device.FailedCount == 0


def test_scicat_down_gives_alarm_and_recovers(device: Any, events: Events, scans: Scans,
                                              scicat: SciCatServer) -> None:
    before = device.IngestedCount
    mark = events.mark()
    scicat.set_down(True)
    try:
        name = scans.add()
        events.wait("State", lambda seen: DevState.ALARM in seen, mark=mark)
        events.wait("SciCatReachable", lambda seen: False in seen, mark=mark)
        assert device.state() == DevState.ALARM
        assert device.SciCatReachable is False
        assert "SciCat unreachable" in device.status()
        assert scicat.url in device.status()
    finally:
        scicat.set_down(False)
    # the job is retried (after retry_base_delay) and gets through
    events.wait("SciCatReachable", lambda seen: seen[-1:] == [True], mark=mark)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    wait_until(lambda: device.IngestedCount > before, what="the retried scan")
    assert device.LastIngestedScan == name


def test_failing_scans_give_alarm_until_a_scan_succeeds(device: Any, events: Events,
                                                        scans: Scans,
                                                        scicat: SciCatServer) -> None:
    wait_idle(device)
    failed = device.FailedCount
    mark = events.mark()
    scicat.fail_next(1, status=400)           # SciCat rejects the scan's first request
    name = scans.add("bad")
    events.wait("FailedCount", lambda seen: bool(seen) and seen[-1] > failed, mark=mark)
    events.wait("State", lambda seen: DevState.ALARM in seen, mark=mark)
    assert device.state() == DevState.ALARM
    assert device.status().startswith("Scans are failing:")
    assert name in device.status() and name in device.LastError
    assert device.SciCatReachable is True
    mark = events.mark()
    ingest(device, events, scans)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    assert device.state() == DevState.ON


def test_stop_start_rescan_and_init(device: Any, events: Events, scans: Scans) -> None:
    wait_idle(device)
    mark = events.mark()
    device.Stop()
    assert device.state() == DevState.OFF
    assert device.status() == "Stopped"
    events.wait("State", lambda seen: seen[-1:] == [DevState.OFF], mark=mark)
    events.wait("WatchedBeamtimes", lambda seen: bool(seen) and not seen[-1], mark=mark)
    device.Start()
    assert device.state() in (DevState.ON, DevState.RUNNING)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    assert list(device.WatchedBeamtimes) == [BEAMTIME]
    ingest(device, events, scans)                 # ingests again after a restart
    device.Rescan()
    mark = events.mark()
    device.Init()                                 # reloads the configuration
    assert device.state() in (DevState.ON, DevState.RUNNING)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    ingest(device, events, scans)


def test_logs_are_forwarded_to_tango_logging(device: Any, workdir: Path) -> None:
    log_file = workdir / "tango-device.log"
    admin = tango.DeviceProxy(device.adm_name())
    name = device.dev_name()
    admin.AddLoggingTarget([name, f"file::{log_file}"])
    admin.SetLoggingLevel([[5], [name]])            # DEBUG
    try:
        device.Rescan()
        dev_failed(lambda: device.StartMeasurement("bad name"))
        wait_until(lambda: log_file.exists() and "invalid measurement name"
                   in log_file.read_text(errors="replace"), what="the forwarded log")
    finally:
        admin.RemoveLoggingTarget([name, f"file::{log_file}"])


# ---------------------------------------------------------------------------
# configuration faults (a second device)


def test_bad_configuration_gives_fault_with_file_and_key(
        tmp_path: Path, scicat: SciCatServer) -> None:
    beamtime = tmp_path / "beamtime"
    make_beamtime(beamtime, BEAMTIME)
    config = tmp_path / "ingestor.yaml"
    with DeviceTestContext(ScicatIngestorDS, properties={"ConfigFile": str(config)},
                           process=True, timeout=30) as proxy:
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        assert proxy.state() == DevState.FAULT
        assert str(config) in proxy.status() and "not found" in proxy.status()
        for name in ATTRIBUTES:                    # still all readable
            proxy.read_attribute(name)
        error = dev_failed(lambda: proxy.StartMeasurement("m"))
        assert "fix the configuration and run Init" in error.desc
        assert str(config) in error.desc

        write_config(config, scicat.url, tmp_path, beamtime_dirs=[str(beamtime)],
                     ingestion_workers="many")
        proxy.Init()
        assert proxy.state() == DevState.FAULT
        status = proxy.status()
        assert str(config) in status and "ingestion_workers" in status, status

        write_config(config, scicat.url, tmp_path, beamtime_dirs=[str(beamtime)])
        proxy.Init()
        wait_until(lambda: proxy.state() == DevState.ON, what="ON after the fix")
        assert list(proxy.WatchedBeamtimes) == [BEAMTIME]


def test_bad_override_property_is_named_in_the_fault(tmp_path: Path,
                                                     scicat: SciCatServer) -> None:
    config = write_config(tmp_path / "ingestor.yaml", scicat.url, tmp_path)
    properties = {"ConfigFile": str(config), "IngestionDelayTime": 0.0,
                  "ConfigOverrides": ["ingestion_workers: 0"]}
    with DeviceTestContext(ScicatIngestorDS, properties=properties, process=True,
                           timeout=30) as proxy:
        assert proxy.state() == DevState.FAULT
        assert "ingestion_workers" in proxy.status()
        assert "ConfigOverrides" in proxy.status()


# ---------------------------------------------------------------------------
# the real server in a real (sqlite) Tango database


def stop_process(process: "subprocess.Popen[bytes]", timeout: float = 10.0) -> Optional[int]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            return None
    return process.returncode


@pytest.fixture(scope="module")
def tango_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pytango's sqlite Tango database on loopback; yields TANGO_HOST."""
    workdir = tmp_path_factory.mktemp("tangodb")
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = dict(os.environ, TANGO_HOST=host)
    with open(workdir / "databaseds.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tango.databaseds.database", "--db_access", "sqlite3",
             "--host", "127.0.0.1", "--port", str(port), "2"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = host
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert process.poll() is None, (workdir / "databaseds.log").read_text()
            try:
                tango.Database("127.0.0.1", port).get_server_list("*")
                break
            except tango.DevFailed:
                assert time.monotonic() < deadline, "the Tango database did not start"
                time.sleep(0.1)
        yield host
    finally:
        stop_process(process)
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


@pytest.mark.slow
def test_server_script_in_a_tango_database(tango_db: str, scicat: SciCatServer,
                                           tmp_path: Path) -> None:
    root = tmp_path / "beamtime"
    make_beamtime(root, BEAMTIME)
    scans = Scans(root / "raw")
    config = write_config(tmp_path / "ingestor.yaml", scicat.url, tmp_path,
                          beamtime_dirs=[str(root)])
    instance, name = "pytest", "test/scicatingestor/pytest"
    # fully qualified: the process's default Tango database may already be
    # another test's (cppTango keeps the first TANGO_HOST it used)
    db_host, db_port = tango_db.split(":")
    db = tango.Database(db_host, int(db_port))
    info = tango.DbDevInfo()
    info.server, info._class, info.name = f"ScicatIngestorDS/{instance}", "ScicatIngestorDS", name
    db.add_device(info)
    db.put_device_property(name, {"ConfigFile": [str(config)]})
    script = Path(sys.executable).parent / "ScicatIngestorDS"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ScicatIngestorDS"]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([*command, instance], env=dict(os.environ, TANGO_HOST=tango_db),
                                  cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        def exported() -> bool:
            assert server.poll() is None, log_path.read_text()
            try:
                return tango.DeviceProxy(f"tango://{tango_db}/{name}").state() == DevState.ON
            except tango.DevFailed:
                return False
        wait_until(exported, what="the device server")
        proxy = tango.DeviceProxy(f"tango://{tango_db}/{name}")
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        events = Events(proxy, "State", "IngestedCount", "LastIngestedScan",
                        "CurrentMeasurement", "QueueLength")
        try:
            assert proxy.ConfigFilePath == str(config)
            first = ingest(proxy, events, scans)
            assert proxy.StartMeasurement("series") == "series"
            ingest(proxy, events, scans)
            assert proxy.StopMeasurement() == "series"
            wait_until(lambda: any(p.endswith("/series") for p in pids(scicat)),
                       what="the measurement dataset")
            assert any(p.endswith(f"/{first}") for p in pids(scicat))
            wait_idle(proxy)
        finally:
            events.close()
    finally:
        started = time.monotonic()
        code = stop_process(server)
        elapsed = time.monotonic() - started
    assert code == 0, log_path.read_text()
    assert elapsed < 5.0, f"SIGTERM took {elapsed:.1f} s"
    text = log_path.read_text()
    assert "Traceback" not in text, text


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_cleans_up(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TANGO_HOST"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "scingestor.demo"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Stored in SciCat (5 datasets)" in out, out
    # every NeXus scan gets its thumbnail (the measurement lists its scans' ones)
    assert int(out.split(" attachments")[0].rsplit(" ", 1)[-1]) >= 4, out
    for pid in ("scan_00001", "scan_00004", "calibration"):
        assert f"{BEAMTIME}/{pid}" in out
    assert "StartMeasurement('calibration') -> 'calibration'" in out
    assert "Stopped ScicatIngestorDS (exit code 0)" in out
    assert "tango.DeviceProxy('test/scicatingestor/1')" in out
    assert list(tmp_path.iterdir()) == []          # the scratch directory is gone
