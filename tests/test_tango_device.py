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
import re
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
from tango import AttrQuality, DevState, EventType
from tango.test_context import DeviceTestContext

import scingestor
from ScicatIngestorDS import ScicatIngestorDS
from ScicatIngestorDS.device import collect_overrides
from scingestor.errors import ConfigError
from scingestor.listfile import ScanLine, StartMeasurement, parse_text
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer
from scingestor.testing.tangodb import database_argv

from .helpers import posted_pids

BEAMTIME = "99001234"
LIST_NAME = f"scicat-datasets-{BEAMTIME}.lst"
SOLO = "99005678"  # the second device's beamtime (its own pids on the shared server)
TIMEOUT = 30.0  # generous: a loaded 2-core machine, never reached when all is well
CLIENT_TIMEOUT_MS = 20000

ATTRIBUTES: Dict[str, type] = {
    "CurrentMeasurement": str,
    "QueueLength": int,
    "LastError": str,
    "LastErrorTime": float,
    "LastErrorHistory": tuple,
    "IngestedCount": int,
    "FailedCount": int,
    "UnchangedCount": int,
    "LastIngestedScan": str,
    "LastSuccessTime": float,
    "LastSuccessDate": str,
    "WatchedBeamtimes": tuple,
    "SciCatUrl": str,
    "SciCatReachable": bool,
    "ConfigFilePath": str,
    "Version": str,
}
#: attributes whose changes the device pushes (Version never changes)
PUSHED = ["State", "Status", *[name for name in ATTRIBUTES if name != "Version"]]
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
COMMANDS = {
    "StartMeasurement",
    "StartMeasurementIn",
    "StopMeasurement",
    "StopMeasurementIn",
    "UpdateMeasurement",
    "UpdateMeasurementIn",
    "CurrentMeasurementIn",
    "Reingest",
    "AddScan",
    "AddScanIn",
    "Start",
    "Stop",
    "Rescan",
    "Init",
    "State",
    "Status",
}


# ---------------------------------------------------------------------------
# helpers


class Events:
    """Change events of some attributes of a device, gathered for waiting on."""

    def __init__(self, proxy: Any, *names: str, kind: EventType = EventType.CHANGE_EVENT) -> None:
        self.proxy = proxy
        self._cond = threading.Condition()
        self.values: Dict[str, List[Any]] = {name.lower(): [] for name in names}
        #: (arrival time, quality) of each event, beside its value
        self.details: Dict[str, List[Any]] = {name.lower(): [] for name in names}
        self._ids = [proxy.subscribe_event(name, kind, self._on_event) for name in names]

    def _on_event(self, event: Any) -> None:
        if event.err or event.attr_value is None:
            return
        name = event.attr_name.rsplit("/", 1)[-1].split("#", 1)[0].lower()
        value = event.attr_value.value
        if isinstance(value, tuple):
            value = list(value)
        with self._cond:
            self.values.setdefault(name, []).append(value)
            self.details.setdefault(name, []).append((time.time(), event.attr_value.quality))
            self._cond.notify_all()

    def detail(self, name: str, index: int) -> Any:
        """(arrival time, quality) of event *index* of *name*."""
        with self._cond:
            return self.details[name.lower()][index]

    def of(self, name: str) -> List[Any]:
        with self._cond:
            return list(self.values[name.lower()])

    def mark(self) -> Dict[str, int]:
        """How many events arrived so far, per attribute (for :meth:`since`)."""
        with self._cond:
            return {name: len(values) for name, values in self.values.items()}

    def since(self, mark: Dict[str, int], name: str) -> List[Any]:
        with self._cond:
            return list(self.values[name.lower()][mark.get(name.lower(), 0) :])

    def wait(
        self,
        name: str,
        predicate: Callable[[List[Any]], bool],
        timeout: float = TIMEOUT,
        mark: Optional[Dict[str, int]] = None,
    ) -> List[Any]:
        """Wait until ``predicate(events since mark)`` holds; returns those events."""
        start = (mark or {}).get(name.lower(), 0)
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.values[name.lower()][start:]), timeout)
            seen = list(self.values[name.lower()][start:])
        assert ok, f"{name}: events {seen} never satisfied the condition"
        return seen

    def close(self) -> None:
        for event_id in self._ids:
            with contextlib.suppress(tango.DevFailed):
                self.proxy.unsubscribe_event(event_id)


def wait_until(
    condition: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition"
) -> None:
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

    def __init__(self, directory: Path, beamtime: str = BEAMTIME) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.list_file = directory / f"scicat-datasets-{beamtime}.lst"
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
    connections (nor listen again on the port).  The device, started with
    SciCat away, shows ALARM until its probe finds the server.
    """
    with SciCatServer(port=scicat_port) as server:
        wait_until(lambda: device.state() == DevState.ON, what="the device ON with SciCat up")
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
    return write_config(
        workdir / "scingestor.yaml",
        f"http://127.0.0.1:{scicat_port}/api/v3",
        workdir,
        ingestion_delay_time=60,
        ingestor_state_dir=str(workdir / "unused"),
    )


@pytest.fixture(scope="module")
def device(config_file: Path, beamtime: Path, workdir: Path) -> Iterator[Any]:
    properties = {
        "ConfigFile": str(config_file),
        "BeamtimeDirs": [str(beamtime)],
        "StateDir": str(workdir / "state"),
        "IngestionDelayTime": 0.0,
    }
    with DeviceTestContext(
        ScicatIngestorDS, properties=properties, process=True, timeout=30
    ) as proxy:
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        # SciCat is not started yet (see ``scicat``): the device knows at once
        wait_until(lambda: proxy.state() == DevState.ALARM, what="the device in ALARM")
        assert "SciCat unreachable at" in proxy.status()
        assert proxy.SciCatReachable is False
        yield proxy


@pytest.fixture(scope="module")
def scans(beamtime: Path) -> Scans:
    return Scans(beamtime / "raw")


@pytest.fixture
def events(device: Any) -> Iterator[Events]:
    recorder = Events(
        device,
        "State",
        "Status",
        "QueueLength",
        "IngestedCount",
        "FailedCount",
        "LastIngestedScan",
        "LastSuccessTime",
        "LastError",
        "SciCatReachable",
        "CurrentMeasurement",
        "WatchedBeamtimes",
        "LastErrorHistory",
    )
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
    wait_until(
        lambda: device.QueueLength == 0 and device.state() != DevState.RUNNING,
        what="an empty queue",
    )


# ---------------------------------------------------------------------------
# pure helpers of the device module


def test_collect_overrides_named_properties_win_and_unset_ones_are_left_out() -> None:
    got = collect_overrides(
        {
            "BeamtimeDirs": ["/a", "/b"],
            "ScicatUrl": "",
            "CredentialFile": None,
            "StateDir": "/s",
            "IngestionDelayTime": 0.5,
        },
        ["scicat_users_login_path: auth/login", "ingestor_state_dir: /other", ""],
    )
    assert got == {
        "beamtime_dirs": ["/a", "/b"],
        "ingestor_state_dir": "/s",
        "ingestion_delay_time": 0.5,
        "scicat_users_login_path": "auth/login",
    }


def test_collect_overrides_rejects_lines_that_are_not_key_value() -> None:
    with pytest.raises(ConfigError, match="ConfigOverrides"):
        collect_overrides({}, ["just words"])
    with pytest.raises(ConfigError, match="ConfigOverrides"):
        collect_overrides({}, ["key: [unclosed"])


# ---------------------------------------------------------------------------
# the device (one process for the module)


def test_every_attribute_and_command_is_there_and_readable(
    device: Any, scicat: SciCatServer, config_file: Path
) -> None:
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
    assert list(device.WatchedBeamtimes) == [BEAMTIME]  # BeamtimeDirs override
    assert device.ConfigFilePath == str(config_file)
    assert device.Version == scingestor.__version__
    assert device.QueueLength == 0 and device.FailedCount == 0


def test_a_listed_scan_is_ingested_with_change_events(
    device: Any, events: Events, scans: Scans, scicat: SciCatServer
) -> None:
    # the configuration file says 60 s; the IngestionDelayTime property (0) wins
    events.wait("State", lambda seen: seen == [DevState.ON])  # the subscription's value
    mark = events.mark()
    started = time.time()
    name = ingest(device, events, scans)
    states = events.wait(
        "State", lambda seen: contains(seen, DevState.RUNNING, DevState.ON), mark=mark
    )
    assert DevState.ALARM not in states
    assert contains(events.since(mark, "QueueLength"), 1, 0)
    events.wait("LastSuccessTime", lambda seen: bool(seen) and seen[-1] >= started - 1, mark=mark)
    events.wait("SciCatReachable", lambda seen: bool(seen) and seen[-1] is True)
    assert device.LastIngestedScan == name
    assert device.state() == DevState.ON
    assert any(pid.endswith(f"/{name}") for pid in pids(scicat)), pids(scicat)


def test_measurement_commands(
    device: Any, events: Events, scans: Scans, scicat: SciCatServer, beamtime: Path
) -> None:
    assert device.StartMeasurement("calib") == "calib"
    events.wait("CurrentMeasurement", lambda seen: seen[-1:] == ["calib"])
    assert device.CurrentMeasurement == "calib"
    assert device.CurrentMeasurementIn(str(scans.directory)) == "calib"
    calscan = ingest(device, events, scans, "calscan")
    mark = events.mark()
    assert device.UpdateMeasurement() == "calib"
    assert device.CurrentMeasurement == "calib"
    assert device.AddScan(calscan).startswith(f"{calscan}:")  # in the measurement again
    assert "" not in events.since(mark, "CurrentMeasurement")  # no flicker on update
    assert device.StopMeasurement() == "calib"
    events.wait("CurrentMeasurement", lambda seen: seen[-1:] == [""])
    wait_until(
        lambda: any(pid.endswith("/calib") for pid in pids(scicat)), what="the measurement dataset"
    )
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
    assert device.StopMeasurement() == ""  # nothing active any more
    wait_idle(device)
    assert device.FailedCount == 0, device.LastError


def test_command_errors_are_one_line_devfailed_and_set_last_error(
    device: Any, events: Events
) -> None:
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


def test_last_error_describes_now_and_the_history_keeps_it(
    device: Any, events: Events, scans: Scans
) -> None:
    wait_idle(device)
    mark = events.mark()
    before = time.time()
    dev_failed(lambda: device.StartMeasurement("bad/name"))
    events.wait(
        "LastError", lambda seen: any("invalid measurement name" in v for v in seen), mark=mark
    )
    assert device.state() == DevState.ON  # a refusal is no alarm
    assert "last error: StartMeasurement: invalid" in device.status()
    ingest(device, events, scans)  # a later success
    events.wait("LastError", lambda seen: seen[-1:] == [""], mark=mark)
    assert "last error" not in device.status()
    history = device.LastErrorHistory
    assert re.match(DATE + r" StartMeasurement: invalid measurement name 'bad/name'", history[0]), (
        history
    )
    assert before - 1 <= device.LastErrorTime <= time.time() + 1
    events.wait(
        "LastErrorHistory", lambda seen: any("bad/name" in (v or [""])[0] for v in seen), mark=mark
    )


def test_what_a_gui_needs(device: Any, events: Events, scans: Scans) -> None:
    archived = Events(
        device,
        "State",
        "IngestedCount",
        "QueueLength",
        "FailedCount",
        "UnchangedCount",
        "SciCatReachable",
        "LastSuccessTime",
        kind=EventType.ARCHIVE_EVENT,
    )
    try:
        mark = archived.mark()
        before = device.IngestedCount
        ingest(device, events, scans)
        archived.wait("IngestedCount", lambda seen: bool(seen) and seen[-1] > before, mark=mark)
        archived.wait("QueueLength", lambda seen: contains(seen, 1, 0), mark=mark)
        archived.wait("State", lambda seen: DevState.RUNNING in seen, mark=mark)
        archived.wait("LastSuccessTime", lambda seen: bool(seen), mark=mark)
    finally:
        archived.close()
    assert re.fullmatch(DATE, device.LastSuccessDate)
    assert device.LastSuccessDate == time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(device.LastSuccessTime)
    )
    for name, label, unit in [
        ("QueueLength", "Queue length", "scans"),
        ("FailedCount", "Failed", "scans"),
        ("LastSuccessTime", "Last success time", "s"),
        ("SciCatReachable", "SciCat reachable", ""),
    ]:
        info = device.attribute_query(name)
        assert info.label == label and info.unit == unit, (name, info.label, info.unit)
    for name in ("Start", "Stop", "Rescan"):
        assert "no argument: " in device.command_query(name).in_type_desc
    assert device.read_attribute("LastError").quality == AttrQuality.ATTR_VALID
    assert device.read_attribute("FailedCount").quality in (
        AttrQuality.ATTR_VALID,
        AttrQuality.ATTR_WARNING,
    )


def test_reingest_by_beamtime_scan_or_everything(device: Any, events: Events, scans: Scans) -> None:
    name = ingest(device, events, scans)
    wait_idle(device)
    lines = [
        line
        for line in scans.list_file.read_text().splitlines()
        if line and not line.startswith("__command__")
    ]
    assert device.Reingest(name) == 1
    wait_idle(device)
    assert device.Reingest(BEAMTIME) == len(lines) + 4  # + the raw2 list's lines
    wait_idle(device)
    assert device.Reingest("") == len(lines) + 4
    wait_idle(device)
    assert device.Reingest("no_such_scan") == 0
    assert device.FailedCount == 0


UNREACHABLE = re.compile(r"SciCat unreachable at (\S+): (.+); (\d+) scan\(s\) waiting")


def test_scicat_5xx_gives_alarm_within_5_s_and_on_at_the_first_success(
    device: Any, events: Events, scans: Scans, scicat: SciCatServer
) -> None:
    wait_idle(device)
    before = device.IngestedCount
    mark = events.mark()
    since = time.time()
    scicat.fail_next(2, status=503)  # both tries of the scan's first request
    name = scans.add()
    states = events.wait("State", lambda seen: DevState.ALARM in seen, mark=mark)
    arrived, _quality = events.detail("State", mark["state"] + states.index(DevState.ALARM))
    failed = [r.time for r in scicat.recorded() if r.status == 503 and r.time >= since]
    assert failed and arrived - failed[0] < 5.0, (arrived, failed)
    events.wait("SciCatReachable", lambda seen: False in seen, mark=mark)
    texts = events.wait(
        "LastError", lambda seen: any(UNREACHABLE.match(v) for v in seen), mark=mark
    )
    match = next(UNREACHABLE.match(v) for v in texts if UNREACHABLE.match(v))
    assert match.group(1) == scicat.url and match.group(2).startswith("503")
    # back at the first success (the probe's, or the retried scan's)
    events.wait("SciCatReachable", lambda seen: seen[-1:] == [True], mark=mark)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    wait_until(lambda: device.IngestedCount > before, what="the retried scan")
    assert device.LastIngestedScan == name
    assert device.LastError == ""  # it describes now
    assert any("503" in line for line in device.LastErrorHistory)


def test_scicat_down_gives_alarm_and_recovers(
    device: Any, events: Events, scans: Scans, scicat: SciCatServer
) -> None:
    wait_idle(device)
    before = device.IngestedCount
    mark = events.mark()
    scicat.set_down(True)
    try:
        name = scans.add()
        events.wait("State", lambda seen: DevState.ALARM in seen, mark=mark)
        events.wait("SciCatReachable", lambda seen: False in seen, mark=mark)
        assert device.state() == DevState.ALARM
        reachable = device.read_attribute("SciCatReachable")
        assert reachable.value is False and reachable.quality == AttrQuality.ATTR_ALARM
        status = device.status()
        match = UNREACHABLE.match(status)
        assert match, status
        assert match.group(1) == scicat.url and match.group(2) == "connection refused"
        assert int(match.group(3)) >= 1
        error = device.read_attribute("LastError")
        assert UNREACHABLE.match(error.value) and error.quality == AttrQuality.ATTR_WARNING
        assert status.startswith(error.value.split(";")[0])
    finally:
        scicat.set_down(False)
    # the probe sees it back at once; the waiting scan goes then
    events.wait("SciCatReachable", lambda seen: seen[-1:] == [True], mark=mark)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    wait_until(lambda: device.IngestedCount > before, what="the retried scan")
    assert device.LastIngestedScan == name
    assert device.read_attribute("SciCatReachable").quality == AttrQuality.ATTR_VALID
    events.wait("LastError", lambda seen: seen[-1:] == [""], mark=mark)


def test_failing_scans_give_alarm_until_a_scan_succeeds(
    device: Any, events: Events, scans: Scans, scicat: SciCatServer
) -> None:
    wait_idle(device)
    failed = device.FailedCount
    mark = events.mark()
    scicat.fail_next(1, status=400)  # SciCat rejects the scan's first request
    name = scans.add("bad")
    events.wait("FailedCount", lambda seen: bool(seen) and seen[-1] > failed, mark=mark)
    events.wait("State", lambda seen: DevState.ALARM in seen, mark=mark)
    assert device.state() == DevState.ALARM
    assert device.status().startswith("Scans are failing:")
    assert name in device.status() and name in device.LastError
    assert device.SciCatReachable is True
    failed_count = device.read_attribute("FailedCount")
    assert failed_count.value > 0 and failed_count.quality == AttrQuality.ATTR_WARNING
    assert device.read_attribute("LastError").quality == AttrQuality.ATTR_WARNING
    mark = events.mark()
    ingest(device, events, scans)
    events.wait("State", lambda seen: seen[-1:] == [DevState.ON], mark=mark)
    assert device.state() == DevState.ON
    assert device.LastError == ""  # a scan got through: all is well now
    assert any(name in line for line in device.LastErrorHistory)


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
    ingest(device, events, scans)  # ingests again after a restart
    device.Rescan()
    mark = events.mark()
    device.Init()  # reloads the configuration
    assert device.state() in (DevState.ON, DevState.RUNNING)
    wait_until(lambda: device.state() == DevState.ON, what="ON after Init")
    ingest(device, events, scans)


def test_without_a_scan_dir_several_idle_list_files_are_listed(
    device: Any, scans: Scans, beamtime: Path
) -> None:
    wait_idle(device)
    device.Init()  # a fresh service: no list file has been active yet
    wait_until(lambda: device.state() == DevState.ON, what="ON after Init")
    error = dev_failed(lambda: device.StartMeasurement("m"))
    assert "none of the 2 watched list files has an active measurement" in error.desc
    assert str(scans.list_file) in error.desc
    assert str(beamtime / "raw2" / LIST_NAME) in error.desc
    # a measurement active in one of them (found again after a restart): that one is meant
    assert device.StartMeasurementIn(["m", str(beamtime / "raw2")]) == "m"
    device.Init()
    wait_until(lambda: device.state() == DevState.ON, what="ON after Init")
    assert device.CurrentMeasurementIn(str(beamtime / "raw2")) == "m"
    assert device.StopMeasurement() == "m"
    assert device.CurrentMeasurementIn(str(beamtime / "raw2")) == ""
    wait_idle(device)


def test_logs_are_forwarded_to_tango_logging(device: Any, workdir: Path) -> None:
    log_file = workdir / "tango-device.log"
    admin = tango.DeviceProxy(device.adm_name())
    name = device.dev_name()
    admin.AddLoggingTarget([name, f"file::{log_file}"])
    admin.SetLoggingLevel([[5], [name]])  # DEBUG
    try:
        device.Rescan()
        dev_failed(lambda: device.StartMeasurement("bad name"))
        wait_until(
            lambda: (
                log_file.exists()
                and "invalid measurement name" in log_file.read_text(errors="replace")
            ),
            what="the forwarded log",
        )
    finally:
        admin.RemoveLoggingTarget([name, f"file::{log_file}"])


# ---------------------------------------------------------------------------
# configuration faults (a second device)


def test_bad_configuration_gives_fault_with_file_and_key(
    tmp_path: Path, scicat: SciCatServer
) -> None:
    beamtime = tmp_path / "beamtime"
    make_beamtime(beamtime, BEAMTIME)
    config = tmp_path / "ingestor.yaml"
    with DeviceTestContext(
        ScicatIngestorDS, properties={"ConfigFile": str(config)}, process=True, timeout=30
    ) as proxy:
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        assert proxy.state() == DevState.FAULT
        assert str(config) in proxy.status() and "not found" in proxy.status()
        for name in ATTRIBUTES:  # still all readable
            proxy.read_attribute(name)
        error = dev_failed(lambda: proxy.StartMeasurement("m"))
        assert "fix the configuration and run Init" in error.desc
        assert str(config) in error.desc

        write_config(
            config, scicat.url, tmp_path, beamtime_dirs=[str(beamtime)], ingestion_workers="many"
        )
        proxy.Init()
        assert proxy.state() == DevState.FAULT
        status = proxy.status()
        assert str(config) in status and "ingestion_workers" in status, status

        write_config(config, scicat.url, tmp_path, beamtime_dirs=[str(beamtime)])
        proxy.Init()
        wait_until(lambda: proxy.state() == DevState.ON, what="ON after the fix")
        assert list(proxy.WatchedBeamtimes) == [BEAMTIME]


def test_bad_override_property_is_named_in_the_fault(tmp_path: Path, scicat: SciCatServer) -> None:
    config = write_config(tmp_path / "ingestor.yaml", scicat.url, tmp_path)
    properties = {
        "ConfigFile": str(config),
        "IngestionDelayTime": 0.0,
        "ConfigOverrides": ["ingestion_workers: 0"],
    }
    with DeviceTestContext(
        ScicatIngestorDS, properties=properties, process=True, timeout=30
    ) as proxy:
        assert proxy.state() == DevState.FAULT
        assert "ingestion_workers" in proxy.status()
        assert "ConfigOverrides" in proxy.status()


# ---------------------------------------------------------------------------
# a device with one list file (a second device, started last: see ``scicat``)


@pytest.fixture(scope="module")
def solo(
    tmp_path_factory: pytest.TempPathFactory, scicat: SciCatServer
) -> Iterator[Dict[str, Any]]:
    """A device watching one beamtime with one scan directory; its config file is editable."""
    root = tmp_path_factory.mktemp("solo")
    beamtime = root / "beamtime"
    make_beamtime(beamtime, SOLO)
    scans = Scans(beamtime / "solo", SOLO)
    config = write_config(root / "ingestor.yaml", scicat.url, root, beamtime_dirs=[str(beamtime)])
    with DeviceTestContext(
        ScicatIngestorDS, properties={"ConfigFile": str(config)}, process=True, timeout=30
    ) as proxy:
        proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
        wait_until(lambda: proxy.state() == DevState.ON, what="the solo device ON")
        recorder = Events(proxy, *PUSHED)
        try:
            yield {
                "proxy": proxy,
                "events": recorder,
                "scans": scans,
                "config": config,
                "root": root,
                "beamtime": beamtime,
            }
        finally:
            recorder.close()


def plain(value: Any) -> Any:
    """An attribute value to compare: spectra as lists (empty ones read as None)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (tuple, list)) else value


def measurements(text: str) -> List[str]:
    """Measurement names started in a list file's text, as a fresh reader sees them."""
    records, _errors = parse_text(text, "list")
    return [r.name for r in records if isinstance(r, StartMeasurement)]


def test_commands_without_scan_dir_use_the_only_list_file_and_lines_never_merge(
    solo: Dict[str, Any], scicat: SciCatServer
) -> None:
    proxy, events, scans = solo["proxy"], solo["events"], solo["scans"]
    first = ingest(proxy, events, scans)  # the sardana way: "\n" + record
    proxy.Init()  # a fresh service: nothing active yet
    wait_until(lambda: proxy.state() == DevState.ON, what="ON after Init")
    assert proxy.StartMeasurement("m1") == "m1"  # the only watched list file
    assert proxy.CurrentMeasurement == "m1"
    assert scans.list_file.read_text().endswith(f"{first}\n__command__ start m1\n")
    # a person appends a line by hand (echo scan >> list): it cannot merge
    name = scans.new()
    mark = events.mark()
    with open(scans.list_file, "a", encoding="utf-8") as handle:
        handle.write(f"{name}\n")
    events.wait("LastIngestedScan", lambda seen: name in seen, mark=mark)
    mark = events.mark()
    assert proxy.UpdateMeasurement() == "m1"
    assert proxy.CurrentMeasurement == "m1"
    assert proxy.StopMeasurement() == "m1"
    events.wait("CurrentMeasurement", lambda seen: seen[-1:] == [""], mark=mark)
    assert "" not in events.since(mark, "CurrentMeasurement")[:-1]  # no flicker
    wait_until(
        lambda: (
            proxy.QueueLength == 0 and proxy.FailedCount == 0 and f"{SOLO}/m1" in scicat.datasets
        ),
        what="the measurement dataset",
    )
    wait_idle(proxy)
    text = scans.list_file.read_text()
    assert text.endswith("\n") and "m1" + name not in text
    assert measurements(text) == ["m1", "m1"]  # start, and start again on update
    posted = posted_pids(scicat, SOLO)
    assert posted[f"{SOLO}/{name}"] == 1 and not any("m1scan" in pid for pid in posted)
    # after a restart the journal and a fresh reader agree: nothing is read again
    ingested = proxy.IngestedCount
    proxy.Init()
    wait_until(lambda: proxy.state() == DevState.ON, what="ON after Init")
    wait_idle(proxy)
    assert proxy.IngestedCount == 0 <= ingested and proxy.CurrentMeasurement == ""
    assert proxy.CurrentMeasurementIn(str(scans.directory)) == ""
    assert posted_pids(scicat, SOLO) == posted
    scan_lines = [r.text for r in parse_text(text, "list")[0] if isinstance(r, ScanLine)]
    assert name in scan_lines and first in scan_lines


def test_fault_after_init_pushes_every_changed_attribute(
    solo: Dict[str, Any], scicat: SciCatServer
) -> None:
    proxy, events, scans, config = solo["proxy"], solo["events"], solo["scans"], solo["config"]
    root, beamtime = solo["root"], solo["beamtime"]
    # a scan waiting in the queue (60 s delay), a command refused: much to change
    write_config(config, scicat.url, root, beamtime_dirs=[str(beamtime)], ingestion_delay_time=60)
    proxy.Init()
    wait_until(lambda: proxy.state() == DevState.ON, what="ON after Init")
    scans.add()
    wait_until(lambda: proxy.QueueLength == 1, what="a queued scan")
    dev_failed(lambda: proxy.StartMeasurement("a b"))
    before = {name: plain(proxy.read_attribute(name).value) for name in PUSHED[2:]}
    assert before["SciCatUrl"] == scicat.url and before["WatchedBeamtimes"]
    mark = events.mark()
    config.write_text("scicat_url: [not, a, url]\n")
    proxy.Init()
    assert proxy.state() == DevState.FAULT
    after = {name: plain(proxy.read_attribute(name).value) for name in PUSHED[2:]}
    changed = [name for name in after if after[name] != before[name]]
    assert {"QueueLength", "SciCatUrl", "WatchedBeamtimes", "LastError", "SciCatReachable"} <= set(
        changed
    ), changed
    assert after["LastError"].startswith("Configuration fault: ")
    for name in changed:
        wanted = plain(after[name])
        events.wait(name, lambda seen: bool(seen) and plain(seen[-1]) == wanted, mark=mark)
    events.wait("State", lambda seen: seen[-1:] == [DevState.FAULT], mark=mark)
    events.wait("Status", lambda seen: seen[-1:] == [proxy.status()], mark=mark)
    # fixed again: the queued scan is still there (journal) and goes now
    mark = events.mark()
    write_config(config, scicat.url, root, beamtime_dirs=[str(beamtime)])
    proxy.Init()
    events.wait("State", lambda seen: DevState.ON in seen, mark=mark)
    events.wait("SciCatUrl", lambda seen: seen[-1:] == [scicat.url], mark=mark)
    events.wait("LastError", lambda seen: seen[-1:] == [""], mark=mark)
    wait_idle(proxy)
    assert proxy.IngestedCount == 1


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
            database_argv(port),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
def test_server_script_in_a_tango_database(
    tango_db: str, scicat: SciCatServer, tmp_path: Path
) -> None:
    root = tmp_path / "beamtime"
    make_beamtime(root, BEAMTIME)
    scans = Scans(root / "raw")
    config = write_config(
        tmp_path / "ingestor.yaml", scicat.url, tmp_path, beamtime_dirs=[str(root)]
    )
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
        server = subprocess.Popen(
            [*command, instance],
            env=dict(os.environ, TANGO_HOST=tango_db),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
        events = Events(
            proxy, "State", "IngestedCount", "LastIngestedScan", "CurrentMeasurement", "QueueLength"
        )
        try:
            assert proxy.ConfigFilePath == str(config)
            assert proxy.info().doc_url.endswith("tango.md"), proxy.info().doc_url
            first = ingest(proxy, events, scans)
            assert proxy.StartMeasurement("series") == "series"
            ingest(proxy, events, scans)
            assert proxy.StopMeasurement() == "series"
            wait_until(
                lambda: any(p.endswith("/series") for p in pids(scicat)),
                what="the measurement dataset",
            )
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
    result = subprocess.run(
        [sys.executable, "-m", "scingestor.demo"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
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
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone
