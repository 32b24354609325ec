"""The ``ScicatIngestorDS`` Tango device: a thin shell over :class:`IngestorService`.

Everything the device shows comes from the service's change notifications:
the listener only stores the new value and queues it; one "sink" thread
(an omniORB-aware thread) makes every Tango call that does not come from a
client request -- change events, State/Status updates and the forwarded log
records.  So no service thread ever blocks on Tango, and no event is pushed
from inside a read method.

Measurement commands come in two flavours: the plain ones act on the list
file of the latest scan directory; the ``...In`` ones take the scan
directory explicitly (sardana's ``ScanDir``), see ``docs/tango.md``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import (Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple,
                    TypeVar)

import tango
import yaml
from tango import DevState, DispLevel
from tango.server import Device, attribute, command, device_property

import scingestor
from scingestor import service as svc
from scingestor.config import IngestorConfig, load_config
from scingestor.errors import ConfigError, ScingestorError
from scingestor.redact import RedactingFilter
from scingestor.service import IngestorService

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: service state -> Tango state
STATES: Dict[str, DevState] = {
    svc.OFF: DevState.OFF,
    svc.ON: DevState.ON,
    svc.RUNNING: DevState.RUNNING,
    svc.ALARM: DevState.ALARM,
    svc.FAULT: DevState.FAULT,
}

#: service notification name -> (attribute name, conversion, value before any notification)
ATTRIBUTES: Dict[str, Tuple[str, Callable[[Any], Any], Any]] = {
    "current_measurement": ("CurrentMeasurement", str, ""),
    "queue_length": ("QueueLength", int, 0),
    "last_error": ("LastError", str, ""),
    "ingested_count": ("IngestedCount", int, 0),
    "unchanged_count": ("UnchangedCount", int, 0),
    "failed_count": ("FailedCount", int, 0),
    "last_ingested_scan": ("LastIngestedScan", str, ""),
    "last_success_time": ("LastSuccessTime", float, 0.0),
    "watched_beamtimes": ("WatchedBeamtimes", lambda value: [str(v) for v in value], []),
    "scicat_reachable": ("SciCatReachable", bool, False),
    "scicat_url": ("SciCatUrl", lambda value: str(value or ""), ""),
}

#: device property -> configuration variable it overrides
OVERRIDES: Dict[str, str] = {
    "BeamtimeDirs": "beamtime_dirs",
    "ScicatUrl": "scicat_url",
    "CredentialFile": "ingestor_credential_file",
    "StateDir": "ingestor_state_dir",
    "IngestionDelayTime": "ingestion_delay_time",
}

#: Python loggers whose records go to Tango logging too (the service's and the device's)
FORWARDED_LOGGERS = ("scingestor", "ScicatIngestorDS")

MAX_BEAMTIMES = 4096
_STOP = object()


def one_line(text: object) -> str:
    """Tango shows error descriptions in one line: fold what a message spans."""
    return " ".join(str(text).split())


def collect_overrides(properties: Mapping[str, Any],
                      extra_lines: Sequence[str] = ()) -> Dict[str, Any]:
    """Configuration overrides from the device properties; unset ones are left out.

    ``extra_lines`` (the ``ConfigOverrides`` property) are ``key: value``
    YAML lines for any other variable; the named properties win over them.
    """
    overrides: Dict[str, Any] = {}
    text = "\n".join(line for line in extra_lines if line.strip())
    if text:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"not YAML 'key: value' lines: {one_line(error)}",
                              "device property ConfigOverrides") from None
        if not isinstance(data, dict):
            raise ConfigError("expected 'key: value' lines",
                              "device property ConfigOverrides")
        overrides.update({str(key): value for key, value in data.items()})
    for prop, key in OVERRIDES.items():
        value = properties.get(prop)
        if value is not None and not isinstance(value, (str, bool, int, float)):
            value = [str(item) for item in value]   # a Tango string array
        if value is None or value == "" or value == []:
            continue
        overrides[key] = value
    return overrides


class TangoLogHandler(logging.Handler):
    """Forwards Python log records to the device's Tango logging streams.

    Records are queued to the device's sink thread: a service thread must
    never call into Tango itself.
    """

    def __init__(self, post: Callable[[logging.LogRecord, str], None]) -> None:
        super().__init__()
        self._post = post
        self.addFilter(RedactingFilter())  # never forward a secret

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._post(record, self.format(record))
        except Exception:  # noqa: BLE001  # pragma: no cover
            self.handleError(record)     # logging must never raise


class Health:
    """The device's picture of the service: its values and the Tango State/Status.

    Adds one rule to the service's state: when the latest finished scan failed
    (the failed count rose after the last success) an ON/RUNNING service shows
    ALARM with the error in Status, until a scan is ingested again.
    """

    #: notifications that can change State or Status
    STATE_INPUTS = frozenset({"state", "status", "failed_count", "last_success_time"})

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {name: spec[2] for name, spec in ATTRIBUTES.items()}
        self.values.update(state=svc.OFF, status="Starting")
        self.failing = False
        self.failure = ""
        self.config_fault = ""

    def apply(self, name: str, value: Any) -> None:
        previous = self.values.get(name)
        self.values[name] = value
        if name == "failed_count" and int(value) > int(previous or 0):
            # the service tells last_error before failed_count: it is this scan's
            self.failing = True
            self.failure = str(self.values["last_error"])
        elif name == "last_success_time" and value:
            self.failing = False

    def state_and_status(self) -> Tuple[DevState, str]:
        if self.config_fault:
            return DevState.FAULT, f"Configuration fault: {self.config_fault}"
        state = STATES.get(self.values["state"], DevState.UNKNOWN)
        status = str(self.values["status"])
        if self.failing and state in (DevState.ON, DevState.RUNNING):
            error = self.failure or "see LastError"
            return DevState.ALARM, f"Scans are failing: {error}; {status}"
        return state, status


class ScicatIngestorDS(Device):
    """SciCat dataset ingestor: watches beamtime directories and ingests the listed scans.

    State: ON watching, RUNNING ingesting, ALARM SciCat unreachable or scans
    failing, FAULT broken configuration, OFF stopped.
    """

    # ------------------------------------------------------------ properties
    ConfigFile = device_property(
        dtype=str, default_value="",
        doc="Path of the scingestor YAML configuration file ('' = built-in defaults "
            "plus the override properties)")
    BeamtimeDirs = device_property(
        dtype=(str,), default_value=[],
        doc="Overrides beamtime_dirs: directories holding beamtime metadata files")
    ScicatUrl = device_property(dtype=str, default_value="",
                                doc="Overrides scicat_url: the SciCat API base URL")
    CredentialFile = device_property(
        dtype=str, default_value="",
        doc="Overrides ingestor_credential_file: the file holding the ingestor's password")
    StateDir = device_property(
        dtype=str, default_value="",
        doc="Overrides ingestor_state_dir: where the job journal is kept ('': as configured, "
            "by default ~/.local/state/scingestor/device-<device name>-<hash>)")
    IngestionDelayTime = device_property(
        dtype=float, default_value=-1.0,
        doc="Overrides ingestion_delay_time (seconds) when >= 0")
    ConfigOverrides = device_property(
        dtype=(str,), default_value=[],
        doc="Any other configuration variable as 'key: value' YAML lines, e.g. "
            "'scicat_users_login_path: auth/login' (the named properties win)")

    # --------------------------------------------------------- life cycle
    def init_device(self) -> None:
        """Load the configuration and start the service (also on ``Init``)."""
        self._lock = threading.RLock()
        #: the service's latest values (listener threads): reads, State and Status
        self._latest = Health()
        #: the same in notification order, as the sink has pushed them: the State and
        #: Status events follow it, so they go through every service state in turn
        self._ordered = Health()
        self._pushed: Tuple[Optional[DevState], Optional[str]] = (None, None)
        self._config: Optional[IngestorConfig] = None
        self._service: Optional[IngestorService] = None
        self._unsubscribe: Optional[Callable[[], None]] = None
        property_error = ""
        try:
            super().init_device()           # reads the device properties
        except tango.DevFailed as error:
            property_error = one_line(error.args[0].desc)
        except Exception as error:  # noqa: BLE001
            property_error = one_line(error)    # e.g. a text where a number belongs
        # pushed by the device (ConfigFilePath and Version never change after Init)
        for name in ["State", "Status", "ConfigFilePath", "Version",
                     *[spec[0] for spec in ATTRIBUTES.values()]]:
            self.set_change_event(name, True, False)
        self._closing = threading.Event()
        self._outbox: "queue.Queue[Any]" = queue.Queue()
        self._sink = threading.Thread(target=self._sink_loop, name="tango-sink", daemon=True)
        self._sink.start()
        self._log_handler = TangoLogHandler(self._post_log)
        for name in FORWARDED_LOGGERS:
            package_logger = logging.getLogger(name)
            if package_logger.level == logging.NOTSET:
                package_logger.setLevel(logging.INFO)
            package_logger.addHandler(self._log_handler)
        try:
            if property_error:
                raise ConfigError(property_error, "device properties")
            self._config = self._load_config()
        except ConfigError as error:
            fault = one_line(error)
            logger.error("Configuration fault: %s", fault)
            with self._lock:
                self._latest.config_fault = fault
            self._outbox.put(("fault", None, fault))
            return
        self._start_service()

    def delete_device(self) -> None:
        """Stop the service (finishing the scans in progress) before ``Init`` or exit."""
        try:
            self._stop_service()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
        finally:
            for name in FORWARDED_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
            # the sink may wait for the device monitor that this thread holds: tell it
            # to drop what is left instead of waiting for it
            self._closing.set()
            self._outbox.put(_STOP)
            super().delete_device()

    def _load_config(self) -> IngestorConfig:
        """The YAML file with the device-property overrides on top."""
        path = self.ConfigFile.strip() or None
        properties = {name: getattr(self, name) for name in OVERRIDES}
        delay = properties["IngestionDelayTime"]
        if delay is not None and delay < 0:
            properties["IngestionDelayTime"] = None
        overrides = collect_overrides(properties, self.ConfigOverrides or [])
        try:
            return load_config(path, overrides)
        except ConfigError as error:
            props = [prop for prop, key in OVERRIDES.items() if key == error.key
                     and properties.get(prop) not in (None, "", [])]
            if props:
                raise ConfigError(f"{error} (value from device property {props[0]})") from None
            if error.key is not None and error.key in overrides:
                raise ConfigError(f"{error} (value from device property ConfigOverrides)"
                                  ) from None
            raise

    def _start_service(self) -> None:
        """A fresh service on the loaded configuration, subscribed and started.

        Fresh on every start: a stopped :class:`IngestorService` has closed its
        SciCat client and cannot ingest again.
        """
        assert self._config is not None
        if self._unsubscribe is not None:
            self._unsubscribe()
        # the device's name, not its configuration file, names its default state
        # folder: two devices may share one file
        service = IngestorService(self._config, device_name=self.get_name())
        with self._lock:
            self._latest.failing = False
        self._outbox.put(("reset", None, None))
        self._unsubscribe = service.subscribe(self._on_change)
        self._service = service
        try:
            service.start()
        except Exception as error:  # noqa: BLE001
            message = one_line(error)           # shown as FAULT, never a crash
            logger.error("The ingestor cannot start: %s", message)
            service.fault(message)

    def _stop_service(self) -> None:
        if self._service is not None:
            self._service.stop()

    # ------------------------------------------------- service -> device
    def _on_change(self, name: str, value: Any) -> None:
        """The service's listener: remember, then let the sink thread tell Tango."""
        with self._lock:
            self._latest.apply(name, value)
        self._outbox.put(("change", name, value))

    def _post_log(self, record: logging.LogRecord, message: str) -> None:
        self._outbox.put(("log", record, message))

    def _sink_loop(self) -> None:
        """The one thread that pushes events and Tango logs for the service's threads.

        A push waits for the device monitor, so commands and reads never wait
        for this thread (that would deadlock until the monitor times out).
        """
        with tango.EnsureOmniThread():
            while True:
                item = self._outbox.get()
                if item is _STOP:
                    return
                if self._closing.is_set():
                    continue
                kind, name, value = item
                try:
                    if kind == "change":
                        with self._lock:
                            self._ordered.apply(name, value)
                        if name in ATTRIBUTES:
                            attr, convert, _initial = ATTRIBUTES[name]
                            self.push_change_event(attr, convert(value))
                        if name in Health.STATE_INPUTS:
                            self._push_state()
                    elif kind == "log":
                        self._forward_log(name, value)
                    elif kind == "reset":
                        with self._lock:
                            self._ordered.failing = False
                    elif kind == "fault":
                        with self._lock:
                            self._ordered.config_fault = value
                        self._push_state()
                except Exception:  # keep the sink alive whatever Tango says
                    if not self._closing.is_set():
                        logger.debug("cannot push %s %s", kind, name, exc_info=True)

    def _push_state(self) -> None:
        """Push State/Status events when they changed (sink thread only)."""
        with self._lock:
            state, status = self._ordered.state_and_status()
        pushed_state, pushed_status = self._pushed
        self._pushed = (state, status)
        # Tango takes the pushed State/Status from the stored ones (reads use dev_state)
        self.set_state(state)
        self.set_status(status)
        if state != pushed_state:
            self.push_change_event("State", state)
        if status != pushed_status:
            self.push_change_event("Status", status)

    def _forward_log(self, record: logging.LogRecord, message: str) -> None:
        """Log through Tango at the record's level, with the record's source location."""
        level = record.levelno
        stream = ("fatal" if level >= logging.CRITICAL else "error" if level >= logging.ERROR
                  else "warn" if level >= logging.WARNING else "info" if level >= logging.INFO
                  else "debug")
        # the bound C++ stream takes (file, line, message): show where the record came
        # from, not this method; the public wrappers (used as a fallback) cannot
        raw = getattr(self, f"__{stream}_stream", None)
        if raw is not None:
            raw(os.path.basename(record.pathname), record.lineno, message)
        else:  # pragma: no cover - another pytango
            getattr(self, f"{stream}_stream")(message.replace("%", "%%"))

    # ------------------------------------------------------- state
    def dev_state(self) -> DevState:
        """From the service's latest state (so it is current when a command returns)."""
        with self._lock:
            return self._latest.state_and_status()[0]

    def dev_status(self) -> str:
        with self._lock:
            return self._latest.state_and_status()[1]

    # ------------------------------------------------------- attributes
    def _value(self, name: str) -> Any:
        with self._lock:
            return ATTRIBUTES[name][1](self._latest.values[name])

    @attribute(dtype=str, doc="The active measurement of the latest list file ('' if none)")
    def CurrentMeasurement(self) -> str:
        return self._value("current_measurement")

    @attribute(dtype=int, doc="Scans queued or being ingested")
    def QueueLength(self) -> int:
        return self._value("queue_length")

    @attribute(dtype=str, doc="The latest error (ingestion, watching or a command)")
    def LastError(self) -> str:
        return self._value("last_error")

    @attribute(dtype=int, doc="Scans ingested (new or updated) since the start")
    def IngestedCount(self) -> int:
        return self._value("ingested_count")

    @attribute(dtype=int, doc="Scans found already ingested and unchanged since the start")
    def UnchangedCount(self) -> int:
        return self._value("unchanged_count")

    @attribute(dtype=int, doc="Scans whose ingestion failed since the start")
    def FailedCount(self) -> int:
        return self._value("failed_count")

    @attribute(dtype=str, doc="The list line of the latest ingested scan")
    def LastIngestedScan(self) -> str:
        return self._value("last_ingested_scan")

    @attribute(dtype=float, unit="s", format="%.3f",
               doc="When the latest scan was ingested (epoch seconds, 0 = never)")
    def LastSuccessTime(self) -> float:
        return self._value("last_success_time")

    @attribute(dtype=(str,), max_dim_x=MAX_BEAMTIMES, doc="Ids of the watched beamtimes")
    def WatchedBeamtimes(self) -> List[str]:
        return self._value("watched_beamtimes")

    @attribute(dtype=str, doc="The SciCat API base URL in use")
    def SciCatUrl(self) -> str:
        return self._value("scicat_url")

    @attribute(dtype=bool, doc="False when the latest SciCat request found no server "
                               "(also before the first scan)")
    def SciCatReachable(self) -> bool:
        return self._value("scicat_reachable")

    @attribute(dtype=str, display_level=DispLevel.EXPERT,
               doc="The configuration file in use ('' = defaults and device properties)")
    def ConfigFilePath(self) -> str:
        return self.ConfigFile.strip()

    @attribute(dtype=str, display_level=DispLevel.EXPERT, doc="scingestor version")
    def Version(self) -> str:
        return scingestor.__version__

    # -------------------------------------------------------- commands
    def _call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """Run a service call; its errors become one-line DevFailed and LastError."""
        try:
            return function(*args)
        except ScingestorError as error:
            self._fail(what, type(error).__name__, one_line(error))
        except Exception as error:
            logger.exception("%s failed", what)
            self._fail(what, "UnexpectedError", one_line(f"{type(error).__name__}: {error}"))

    def _fail(self, what: str, reason: str, message: str) -> NoReturn:
        logger.error("%s: %s", what, message)
        self._on_change("last_error", f"{what}: {message}")
        tango.Except.throw_exception(reason, message, f"ScicatIngestorDS.{what}")
        raise AssertionError("unreachable")  # throw_exception always raises

    def _service_or_fail(self, what: str) -> IngestorService:
        """The service; without one (configuration fault) the command fails clearly."""
        service = self._service
        if service is None:
            self._fail(what, "ConfigError", f"not running: {self.dev_status()}; "
                                            "fix the configuration and run Init")
        return service

    @command(dtype_in=str, doc_in="measurement name (no spaces, '/' or ':')",
             dtype_out=str, doc_out="the started measurement")
    def StartMeasurement(self, name: str) -> str:
        """Start a measurement in the latest list file (the current one is closed first)."""
        service = self._service_or_fail("StartMeasurement")
        return self._call("StartMeasurement", service.start_measurement, name.strip())

    @command(dtype_in=(str,), doc_in="[name, scan directory]",
             dtype_out=str, doc_out="the started measurement")
    def StartMeasurementIn(self, argin: List[str]) -> str:
        """Start a measurement in the list file of the given scan directory."""
        service = self._service_or_fail("StartMeasurementIn")
        if len(argin) != 2:
            self._fail("StartMeasurementIn", "ArgumentError",
                       f"expected [name, scan directory], got {len(argin)} value(s)")
        return self._call("StartMeasurementIn", service.start_measurement,
                          argin[0].strip(), argin[1].strip() or None)

    @command(dtype_out=str, doc_out="the stopped measurement ('' if none was active)")
    def StopMeasurement(self) -> str:
        """Stop the current measurement of the latest list file and ingest it."""
        service = self._service_or_fail("StopMeasurement")
        return self._call("StopMeasurement", service.stop_measurement)

    @command(dtype_in=str, doc_in="scan directory ('' = the latest list file)",
             dtype_out=str, doc_out="the stopped measurement ('' if none was active)")
    def StopMeasurementIn(self, scan_dir: str) -> str:
        """Stop the current measurement of the given scan directory and ingest it."""
        service = self._service_or_fail("StopMeasurementIn")
        return self._call("StopMeasurementIn", service.stop_measurement,
                          scan_dir.strip() or None)

    @command(dtype_out=str, doc_out="the updated measurement")
    def UpdateMeasurement(self) -> str:
        """Ingest the current measurement as it is now and keep it open."""
        service = self._service_or_fail("UpdateMeasurement")
        return self._call("UpdateMeasurement", service.update_measurement)

    @command(dtype_in=str, doc_in="scan directory ('' = the latest list file)",
             dtype_out=str, doc_out="the updated measurement")
    def UpdateMeasurementIn(self, scan_dir: str) -> str:
        """Ingest the current measurement of the given scan directory and keep it open."""
        service = self._service_or_fail("UpdateMeasurementIn")
        return self._call("UpdateMeasurementIn", service.update_measurement,
                          scan_dir.strip() or None)

    @command(dtype_in=str, doc_in="scan directory ('' = the latest list file)",
             dtype_out=str, doc_out="the active measurement there ('' if none)")
    def CurrentMeasurementIn(self, scan_dir: str) -> str:
        """The active measurement of a scan directory's list file (for macros)."""
        service = self._service_or_fail("CurrentMeasurementIn")
        return self._call("CurrentMeasurementIn", service.current_measurement,
                          scan_dir.strip() or None)

    @command(dtype_in=str, doc_in="a listed scan record, e.g. 'scan_00042'",
             dtype_out=str, doc_out="the line appended ('<record>:<time>')")
    def AddScan(self, record: str) -> str:
        """Ingest an already listed scan again, inside the current measurement."""
        service = self._service_or_fail("AddScan")
        return self._call("AddScan", service.add_scan, record.strip())

    @command(dtype_in=(str,), doc_in="[scan record, scan directory]",
             dtype_out=str, doc_out="the line appended ('<record>:<time>')")
    def AddScanIn(self, argin: List[str]) -> str:
        """Same as AddScan in the list file of the given scan directory."""
        service = self._service_or_fail("AddScanIn")
        if len(argin) != 2:
            self._fail("AddScanIn", "ArgumentError",
                       f"expected [scan record, scan directory], got {len(argin)} value(s)")
        return self._call("AddScanIn", service.add_scan, argin[0].strip(),
                          argin[1].strip() or None)

    @command(dtype_in=str, doc_in="a watched beamtime id, a scan (or list line), "
                                  "or '' for every listed scan",
             dtype_out=int, doc_out="number of scans queued")
    def Reingest(self, target: str) -> int:
        """Queue a forced re-ingestion of a beamtime, a scan, or everything."""
        service = self._service_or_fail("Reingest")
        target = target.strip()
        if not target:
            return self._call("Reingest", service.reingest)
        if target in service.watched_beamtimes:
            return self._call("Reingest", service.reingest, target, None)
        return self._call("Reingest", service.reingest, None, target)

    @command
    def Start(self) -> None:
        """Start watching and ingesting again after Stop (same configuration; counters
        restart)."""
        service = self._service_or_fail("Start")
        if service.state == svc.FAULT:      # it could not start: clean up, try again
            self._call("Start", self._stop_service)
        if service.state in (svc.OFF, svc.FAULT):
            self._call("Start", self._start_service)

    @command
    def Stop(self) -> None:
        """Stop watching; the scans being ingested are finished, the queue is kept."""
        self._service_or_fail("Stop")
        self._call("Stop", self._stop_service)

    @command
    def Rescan(self) -> None:
        """Look for new or removed beamtimes and list files now."""
        service = self._service_or_fail("Rescan")
        self._call("Rescan", service.rescan)

