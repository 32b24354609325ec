"""The ``ScicatIngestorDS`` Tango device: a thin shell over :class:`IngestorService`.

Everything the device shows comes from the service's change notifications:
the listener only stores the new value and queues it; one "sink" thread
(an omniORB-aware thread) makes every Tango call that does not come from a
client request -- change events, State/Status updates and the forwarded log
records.  So no service thread ever blocks on Tango, and no event is pushed
from inside a read method.  The sink compares everything the device shows
with what it last pushed and pushes the differences, so an attribute changed
by any path -- a scan, a command, an ``Init`` that ends in FAULT -- gets its
event.

Measurement commands come in two flavours: the plain ones act on the list
file of the latest scan directory; the ``...In`` ones take the scan
directory explicitly (sardana's ``ScanDir``), see ``docs/tango.md``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple, TypeVar

import tango
from tango import AttrQuality, DevState, DispLevel
from tango.server import Device, attribute, device_property

import scingestor
from scingestor import service as svc
from scingestor.config import IngestorConfig, load_config
from scingestor.errors import ConfigError, ScingestorError
from scingestor.service import IngestorService

from .commands import in_scan_dir, scan_dir_or_latest, service_command
from .health import ARCHIVED, Health, quality
from .logs import FORWARDED_LOGGERS, TangoLogHandler, tango_stream
from .overrides import OVERRIDES, collect_overrides, one_line

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BEAMTIMES = 4096
MAX_HISTORY = 64
_STOP = object()
_UNSET = object()
SCAN_DIR_DOC = "scan directory ('' = the latest list file)"


class ScicatIngestorDS(Device):
    """SciCat dataset ingestor: watches beamtime directories and ingests the listed scans.

    State: ON watching, RUNNING ingesting, ALARM something is wrong now (SciCat
    unreachable, scans failing, the state not writable), FAULT broken
    configuration, OFF stopped.  Every attribute pushes a change event when its
    value changes (State and the counters archive events too).
    """

    # ------------------------------------------------------------ properties
    ConfigFile = device_property(
        dtype=str,
        default_value="",
        doc="Path of the scingestor YAML configuration file ('' = built-in defaults "
        "plus the override properties)",
    )
    BeamtimeDirs = device_property(
        dtype=(str,),
        default_value=[],
        doc="Overrides beamtime_dirs: directories holding beamtime metadata files",
    )
    ScicatUrl = device_property(
        dtype=str, default_value="", doc="Overrides scicat_url: the SciCat API base URL"
    )
    CredentialFile = device_property(
        dtype=str,
        default_value="",
        doc="Overrides ingestor_credential_file: the file holding the ingestor's password",
    )
    StateDir = device_property(
        dtype=str,
        default_value="",
        doc="Overrides ingestor_state_dir: where the job journal is kept ('': as configured, "
        "by default ~/.local/state/scingestor/device-<device name>-<hash>)",
    )
    IngestionDelayTime = device_property(
        dtype=float, default_value=-1.0, doc="Overrides ingestion_delay_time (seconds) when >= 0"
    )
    ConfigOverrides = device_property(
        dtype=(str,),
        default_value=[],
        doc="Any other configuration variable as 'key: value' YAML lines, e.g. "
        "'scicat_users_login_path: auth/login' (the named properties win)",
    )

    # --------------------------------------------------------- life cycle
    def init_device(self) -> None:
        """Load the configuration and start the service (also on ``Init``)."""
        self._lock = threading.RLock()
        #: the service's latest values (listener threads): reads, State and Status
        self._latest = Health()
        #: the same in notification order, as the sink has pushed them: the State and
        #: Status events follow it, so they go through every service state in turn
        self._ordered = Health()
        if not hasattr(self, "_shown"):
            #: what clients were last shown, by attribute (kept across Init: whatever
            #: an Init changes is pushed, also when it ends in FAULT)
            self._shown: Dict[str, Any] = {}
        self._config: Optional[IngestorConfig] = None
        self._service: Optional[IngestorService] = None
        self._unsubscribe: Optional[Callable[[], None]] = None
        property_error = ""
        try:
            super().init_device()  # reads the device properties
        except tango.DevFailed as error:
            property_error = one_line(error.args[0].desc)
        except Exception as error:  # noqa: BLE001
            property_error = one_line(error)  # e.g. a text where a number belongs
        config_file = (getattr(self, "ConfigFile", "") or "").strip()
        self._latest.config_file = self._ordered.config_file = config_file
        # pushed by the device (Version never changes)
        for name in ["Version", *self._ordered.display()]:
            self.set_change_event(name, True, False)
        for name in ARCHIVED:
            self.set_archive_event(name, True, False)
        # the sink gets its own queue and stop flag: an earlier sink still finishing
        # (it may wait for the monitor this Init holds) never takes the new items
        self._closing = threading.Event()
        self._outbox: "queue.Queue[Any]" = queue.Queue()
        self._sink = threading.Thread(
            target=self._sink_loop,
            args=(self._outbox, self._closing),
            name="tango-sink",
            daemon=True,
        )
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
                self._latest.fault_time = time.time()
            self._outbox.put(("fault", None, (fault, self._latest.fault_time)))
            return
        self._start_service()
        self._outbox.put(("sync", None, None))

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
            props = [
                prop
                for prop, key in OVERRIDES.items()
                if key == error.key and properties.get(prop) not in (None, "", [])
            ]
            if props:
                raise ConfigError(f"{error} (value from device property {props[0]})") from None
            if error.key is not None and error.key in overrides:
                raise ConfigError(f"{error} (value from device property ConfigOverrides)") from None
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
        self._unsubscribe = service.subscribe(self._on_change)
        self._service = service
        try:
            service.start()
        except Exception as error:  # noqa: BLE001
            message = one_line(error)  # shown as FAULT, never a crash
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

    def _sink_loop(self, outbox: "queue.Queue[Any]", closing: threading.Event) -> None:
        """The one thread that pushes events and Tango logs for the service's threads.

        A push waits for the device monitor, so commands and reads never wait
        for this thread (that would deadlock until the monitor times out).
        """
        with tango.EnsureOmniThread():
            while True:
                item = outbox.get()
                if item is _STOP:
                    return
                if closing.is_set():
                    continue
                kind, name, value = item
                try:
                    if kind == "log":
                        self._forward_log(name, value)
                        continue
                    with self._lock:
                        if kind == "change":
                            self._ordered.apply(name, value)
                        elif kind == "fault":
                            self._ordered.config_fault, self._ordered.fault_time = value
                        shown = self._ordered.display()
                    self._publish(shown)
                except Exception:  # keep the sink alive whatever Tango says
                    if not closing.is_set():
                        logger.debug("cannot push %s %s", kind, name, exc_info=True)

    def _publish(self, shown: Dict[str, Any]) -> None:
        """Push an event for every attribute whose value changed (sink thread only)."""
        for attr, value in shown.items():
            if self._shown.get(attr, _UNSET) == value:
                continue
            self._shown[attr] = value
            if attr in ("State", "Status"):
                # Tango takes the pushed State/Status from the stored ones (reads use
                # dev_state)
                (self.set_state if attr == "State" else self.set_status)(value)
                self.push_change_event(attr, value)
                if attr in ARCHIVED:
                    self.push_archive_event(attr, value)
                continue
            stamp, grade = time.time(), quality(attr, value)
            self.push_change_event(attr, value, stamp, grade)
            if attr in ARCHIVED:
                self.push_archive_event(attr, value, stamp, grade)

    def _forward_log(self, record: logging.LogRecord, message: str) -> None:
        """Log through Tango at the record's level, with the record's source location."""
        stream = tango_stream(record.levelno)
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
    def _value(self, attr: str) -> Tuple[Any, float, AttrQuality]:
        """(value, time, quality) of an attribute, from the service's latest values."""
        with self._lock:
            value = self._latest.display()[attr]
        return value, time.time(), quality(attr, value)

    @attribute(
        dtype=str,
        label="Current measurement",
        doc="The active measurement of the latest list file ('' if none)",
    )
    def CurrentMeasurement(self) -> Tuple[str, float, AttrQuality]:
        return self._value("CurrentMeasurement")

    @attribute(dtype=int, label="Queue length", unit="scans", doc="Scans queued or being ingested")
    def QueueLength(self) -> Tuple[int, float, AttrQuality]:
        return self._value("QueueLength")

    @attribute(
        dtype=str,
        label="Last error",
        doc="What is wrong now ('' when all is well): SciCat unreachable, scans "
        "failing, the state not writable, or a recent error (a refused command, "
        "a bad list line) not followed by a success yet",
    )
    def LastError(self) -> Tuple[str, float, AttrQuality]:
        return self._value("LastError")

    @attribute(
        dtype=float,
        label="Last error time",
        unit="s",
        format="%.3f",
        doc="When the newest entry of LastErrorHistory happened (epoch seconds, 0 = never)",
    )
    def LastErrorTime(self) -> Tuple[float, float, AttrQuality]:
        return self._value("LastErrorTime")

    @attribute(
        dtype=(str,),
        max_dim_x=MAX_HISTORY,
        label="Error history",
        doc="The latest error texts with their local time, newest first; kept "
        "after LastError is cleared",
    )
    def LastErrorHistory(self) -> Tuple[List[str], float, AttrQuality]:
        return self._value("LastErrorHistory")

    @attribute(
        dtype=int,
        label="Ingested",
        unit="scans",
        doc="Scans ingested (new or updated) since the start",
    )
    def IngestedCount(self) -> Tuple[int, float, AttrQuality]:
        return self._value("IngestedCount")

    @attribute(
        dtype=int,
        label="Unchanged",
        unit="scans",
        doc="Scans found already ingested and unchanged since the start",
    )
    def UnchangedCount(self) -> Tuple[int, float, AttrQuality]:
        return self._value("UnchangedCount")

    @attribute(
        dtype=int,
        label="Failed",
        unit="scans",
        doc="Scans whose ingestion failed since the start (WARNING quality above 0)",
    )
    def FailedCount(self) -> Tuple[int, float, AttrQuality]:
        return self._value("FailedCount")

    @attribute(
        dtype=str, label="Last ingested scan", doc="The list line of the latest ingested scan"
    )
    def LastIngestedScan(self) -> Tuple[str, float, AttrQuality]:
        return self._value("LastIngestedScan")

    @attribute(
        dtype=float,
        label="Last success time",
        unit="s",
        format="%.3f",
        doc="When the latest scan was ingested (epoch seconds, 0 = never)",
    )
    def LastSuccessTime(self) -> Tuple[float, float, AttrQuality]:
        return self._value("LastSuccessTime")

    @attribute(
        dtype=str,
        label="Last success",
        doc="LastSuccessTime as local date and time 'YYYY-MM-DD HH:MM:SS' ('' = never)",
    )
    def LastSuccessDate(self) -> Tuple[str, float, AttrQuality]:
        return self._value("LastSuccessDate")

    @attribute(
        dtype=(str,),
        max_dim_x=MAX_BEAMTIMES,
        label="Watched beamtimes",
        doc="Ids of the watched beamtimes",
    )
    def WatchedBeamtimes(self) -> Tuple[List[str], float, AttrQuality]:
        return self._value("WatchedBeamtimes")

    @attribute(dtype=str, label="SciCat URL", doc="The SciCat API base URL in use")
    def SciCatUrl(self) -> Tuple[str, float, AttrQuality]:
        return self._value("SciCatUrl")

    @attribute(
        dtype=bool,
        label="SciCat reachable",
        doc="True once SciCat answered and while it answers; False when a request "
        "found no server, and until the first answer after a start "
        "(ALARM quality when False)",
    )
    def SciCatReachable(self) -> Tuple[bool, float, AttrQuality]:
        return self._value("SciCatReachable")

    @attribute(
        dtype=str,
        display_level=DispLevel.EXPERT,
        label="Configuration file",
        doc="The configuration file in use ('' = defaults and device properties)",
    )
    def ConfigFilePath(self) -> Tuple[str, float, AttrQuality]:
        return self._value("ConfigFilePath")

    @attribute(dtype=str, display_level=DispLevel.EXPERT, label="Version", doc="scingestor version")
    def Version(self) -> str:
        return scingestor.__version__

    # -------------------------------------------------------- commands
    def run_command(self, what: str, action: Callable[[IngestorService], T]) -> T:
        """Every command's one way in (:mod:`.commands`): the service, then the action."""
        service = self._service_or_fail(what)
        return self._call(what, action, service)

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
        service = self._service
        if service is not None:  # without one, LastError shows the configuration fault
            service.command_failed(f"{what}: {message}")
        tango.Except.throw_exception(reason, message, f"ScicatIngestorDS.{what}")
        raise AssertionError("unreachable")  # throw_exception always raises

    def _service_or_fail(self, what: str) -> IngestorService:
        """The service; without one (configuration fault) the command fails clearly."""
        service = self._service
        if service is None:
            self._fail(
                what,
                "ConfigError",
                f"not running: {self.dev_status()}; fix the configuration and run Init",
            )
        return service

    @service_command(
        dtype_in=str,
        doc_in="measurement name (no spaces, '/' or ':')",
        dtype_out=str,
        doc_out="the started measurement",
    )
    def StartMeasurement(self, service: IngestorService, name: str, scan_dir: str = "") -> str:
        """Start a measurement in the latest list file (the current one is closed first)."""
        return service.start_measurement(name.strip(), scan_dir_or_latest(scan_dir))

    StartMeasurementIn = in_scan_dir(
        StartMeasurement,
        "StartMeasurementIn",
        "name",
        dtype_in=(str,),
        doc_in="[name, scan directory]",
        dtype_out=str,
        doc_out="the started measurement",
    )

    @service_command(dtype_out=str, doc_out="the stopped measurement ('' if none was active)")
    def StopMeasurement(self, service: IngestorService, scan_dir: str = "") -> str:
        """Stop the current measurement of the latest list file and ingest it."""
        return service.stop_measurement(scan_dir_or_latest(scan_dir))

    StopMeasurementIn = in_scan_dir(
        StopMeasurement,
        "StopMeasurementIn",
        dtype_in=str,
        doc_in=SCAN_DIR_DOC,
        dtype_out=str,
        doc_out="the stopped measurement ('' if none was active)",
    )

    @service_command(dtype_out=str, doc_out="the updated measurement")
    def UpdateMeasurement(self, service: IngestorService, scan_dir: str = "") -> str:
        """Ingest the current measurement as it is now and keep it open."""
        return service.update_measurement(scan_dir_or_latest(scan_dir))

    UpdateMeasurementIn = in_scan_dir(
        UpdateMeasurement,
        "UpdateMeasurementIn",
        dtype_in=str,
        doc_in=SCAN_DIR_DOC,
        dtype_out=str,
        doc_out="the updated measurement",
    )

    @service_command(
        dtype_in=str,
        doc_in=SCAN_DIR_DOC,
        dtype_out=str,
        doc_out="the active measurement there ('' if none)",
    )
    def CurrentMeasurementIn(self, service: IngestorService, scan_dir: str) -> str:
        """The active measurement of a scan directory's list file (for macros)."""
        return service.current_measurement(scan_dir_or_latest(scan_dir))

    @service_command(
        dtype_in=str,
        doc_in="a listed scan record, e.g. 'scan_00042'",
        dtype_out=str,
        doc_out="the line appended ('<record>:<time>')",
    )
    def AddScan(self, service: IngestorService, record: str, scan_dir: str = "") -> str:
        """Ingest an already listed scan again, inside the current measurement."""
        return service.add_scan(record.strip(), scan_dir_or_latest(scan_dir))

    AddScanIn = in_scan_dir(
        AddScan,
        "AddScanIn",
        "scan record",
        dtype_in=(str,),
        doc_in="[scan record, scan directory]",
        dtype_out=str,
        doc_out="the line appended ('<record>:<time>')",
    )

    @service_command(
        dtype_in=str,
        doc_in="a watched beamtime id, a scan (or list line), or '' for every listed scan",
        dtype_out=int,
        doc_out="number of scans queued",
    )
    def Reingest(self, service: IngestorService, target: str) -> int:
        """Queue a forced re-ingestion of a beamtime, a scan, or everything."""
        target = target.strip()
        if not target:
            return service.reingest()
        if target in service.watched_beamtimes:
            return service.reingest(target, None)
        return service.reingest(None, target)

    @service_command(
        doc_in="no argument: start watching and ingesting again after Stop or a "
        "start FAULT (same configuration; counters restart)",
        doc_out="nothing",
    )
    def Start(self, service: IngestorService) -> None:
        """Start watching and ingesting again after Stop (same configuration; counters
        restart)."""
        if service.state == svc.FAULT:  # it could not start: clean up, try again
            self._stop_service()
        if service.state in (svc.OFF, svc.FAULT):
            self._start_service()

    @service_command(
        doc_in="no argument: stop watching; the scans being ingested are finished, "
        "the queued ones stay in the journal for the next start",
        doc_out="nothing",
    )
    def Stop(self, service: IngestorService) -> None:
        """Stop watching; the scans being ingested are finished, the queue is kept."""
        self._stop_service()

    @service_command(
        doc_in="no argument: look for new or removed beamtimes and list files now",
        doc_out="nothing",
    )
    def Rescan(self, service: IngestorService) -> None:
        """Look for new or removed beamtimes and list files now."""
        service.rescan()
