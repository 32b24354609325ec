"""The measurement commands of one scan directory: through the device, else on the list file.

Helper module of ``scmacros.py`` (skipped as a macro library by the
MacroServer: its name starts with ``_``), with the sardana environment
plumbing the macros share (``env``, ``ScanDir``, the last scan's record).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional, Sequence

import tango
from _scicat_device import (
    DEVICE_TIMEOUT_MS,
    IDLE_STATES,
    PROBE_TIMEOUT_MS,
    Refused,
    Unreachable,
    dev_error,
    failure_text,
    is_unreachable,
    probe_device,
)
from _scicat_listgrammar import current_in_text, is_listed, list_file_name, measurement_scans
from _scicat_scans import (
    NEXUS_EXTENSIONS,
    MacroProblem,
    append_records,
    check_scan_file,
    find_beamtime_id,
    flag,
    measurement_name,
    scan_name,
    scan_record,
    scan_stem,
)
from sardana.macroserver.macro import Macro
from sardana.macroserver.msexception import UnknownEnv

#: environment variable naming the ScicatIngestorDS device
DEVICE_ENV = "SciCatIngestorDevice"


class Grouping:
    """Measurement commands for one scan directory, through the device if it
    answers, else on the list file (the same lines the device would write).

    Once the device fails to answer, the rest of the macro uses the file.
    """

    def __init__(
        self, macro: Macro, scan_dir: str, reading: bool = False, scan_id: Optional[int] = None
    ) -> None:
        """*reading*: the macro only reads (the fallback message says so);
        *scan_id*: the scan whose hook this is (a silent device is asked once per scan)."""
        self.macro = macro
        self.scan_dir = os.path.abspath(scan_dir)
        self.device_name = str(env(macro, DEVICE_ENV, "") or "").strip()
        self.reading = reading
        self.proxy: Optional[Any] = None
        self._list_file: Optional[str] = None
        self.list_problem = ""
        #: the measurement the latest start() closed ('' if none)
        self.closed = ""
        if self.device_name:
            proxy, why = probe_device(self.device_name, scan_id)
            if proxy is None:
                self._fall_back(why)
                return
            try:
                proxy.set_timeout_millis(PROBE_TIMEOUT_MS)
                state = proxy.state()
                proxy.set_timeout_millis(DEVICE_TIMEOUT_MS)
            except tango.DevFailed as error:
                self._fall_back(failure_text(self.device_name, error))
            else:
                if state in IDLE_STATES:
                    self._fall_back(f"it is {state} ({self._status(proxy)})")
                else:
                    self.proxy = proxy
        else:
            # the legacy mode: no device configured, write the list file
            macro.debug(f"{DEVICE_ENV} is not set: writing {self.list_file()} directly")

    @staticmethod
    def _status(proxy: Any) -> str:
        try:
            return " ".join(str(proxy.status()).split())
        except tango.DevFailed:
            return "no status"

    def _fall_back(self, why: str) -> None:
        self.proxy = None
        try:
            path = self.list_file()
        except MacroProblem as problem:
            raise MacroProblem(
                f"the SciCat ingestor device {self.device_name} is not "
                f"reachable ({why}) and {problem}"
            ) from None
        if self.reading:
            instead = (
                f"Reading the current measurement from {path} instead (the "
                "ingestor reads that file too)."
            )
        else:
            instead = (
                f"Appending the measurement lines to {path} instead; the "
                "ingestor reads them when it is back."
            )
        self.macro.warning(
            f"The SciCat ingestor device {self.device_name} is not reachable: {why}. {instead}"
        )

    # -- the list file --------------------------------------------------------------

    def list_file(self) -> str:
        """The dataset list file of the scan directory (from the env variables)."""
        if self._list_file is None:
            macro = self.macro
            beamtime_path = str(env(macro, "BeamtimeFilePath", "/gpfs/current"))
            prefix = str(env(macro, "BeamtimeFilePrefix", "beamtime-metadata-"))
            ext = str(env(macro, "BeamtimeFileExt", ".json"))
            beamtime_id = find_beamtime_id(self.scan_dir, beamtime_path, prefix, ext)
            if beamtime_id is None:
                raise MacroProblem(
                    f"cannot find the dataset list file of {self.scan_dir}: no "
                    f"{prefix}*{ext} beamtime file in BeamtimeFilePath={beamtime_path!r} "
                    f"above it; set {DEVICE_ENV} to the ScicatIngestorDS device, or "
                    "BeamtimeFilePath to the beamtime directory"
                )
            name = list_file_name(
                beamtime_id,
                str(env(macro, "SciCatDatasetListFilePrefix", "scicat-datasets-")),
                flag(env(macro, "SciCatDatasetListFileLocal", False)),
                str(env(macro, "SciCatDatasetListFileExt", ".lst")),
            )
            self._list_file = os.path.join(self.scan_dir, name)
        return self._list_file

    def _text(self) -> str:
        try:
            with open(self.list_file(), "r", encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def _append(self, records: Sequence[str]) -> None:
        path = self.list_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        append_records(path, records)
        for record in records:
            self.macro.output(f"Appending '{record}' to {path}")

    def listed(self, record: str) -> Optional[bool]:
        """Is the scan record in the list file?  None when the device does the
        grouping but the list file cannot be found from the environment
        (``BeamtimeFilePath`` ...): then only the device knows."""
        try:
            return is_listed(self._text(), record)
        except MacroProblem as problem:
            if self.proxy is None:
                raise
            self.list_problem = str(problem)
            return None

    def scans_of(self, name: str) -> Optional[int]:
        """How many scans the list file groups into measurement *name* (None when the
        list file cannot be found from the environment: only the device knows)."""
        try:
            return measurement_scans(self._text(), name)
        except MacroProblem:
            return None

    def empty_note(self, name: str, yet: bool = False) -> str:
        """' (it has no scans: …)' for a measurement with no scan, else ''.  The
        ingestor ingests no dataset for it and says so only in its own log."""
        if name and self.scans_of(name) == 0:
            return f" (it has no scans{' yet' if yet else ''}: no measurement dataset is ingested)"
        return ""

    def list_scan(self, record: str) -> None:
        """List a scan as a plain line (what the scan writers append)."""
        self._append([record])

    # -- the device -------------------------------------------------------------------

    def _command(self, name: str, argument: Any) -> Any:
        assert self.proxy is not None
        try:
            return self.proxy.command_inout(name, argument)
        except tango.DevFailed as error:
            reason, desc = dev_error(error)
            if is_unreachable(error):
                self._fall_back(f"{name} failed: {failure_text(self.device_name, error)}")
                raise Unreachable(desc) from None
            raise Refused(desc or reason) from None

    def _device_or_file(self, name: str, argument: Any) -> Optional[Any]:
        """The command's answer, or None when the file has to be written instead."""
        if self.proxy is None:
            return None
        try:
            return self._command(name, argument)
        except Unreachable:
            return None

    # -- measurement operations (device, else file) --------------------------------

    def current(self) -> str:
        answer = self._device_or_file("CurrentMeasurementIn", self.scan_dir)
        if answer is not None:
            return str(answer)
        return current_in_text(self._text())

    def start(self, name: str, current: Optional[str] = None) -> str:
        """Start *name*; the measurement it closes is kept in ``closed`` ('' if none).
        *current*: the current measurement when the caller has just asked."""
        if self.proxy is not None:
            self.closed = self.current() if current is None else current
        answer = self._device_or_file("StartMeasurementIn", [name, self.scan_dir])
        if answer is not None:
            return str(answer)
        current = current_in_text(self._text())
        self.closed = current
        records = [] if not current else ["__command__ stop", f"{current}:{time.time()}"]
        self._append(records + [f"__command__ start {name}"])
        return name

    def stop(self) -> str:
        answer = self._device_or_file("StopMeasurementIn", self.scan_dir)
        if answer is not None:
            return str(answer)
        current = current_in_text(self._text())
        self._append(["__command__ stop"] + ([f"{current}:{time.time()}"] if current else []))
        return current

    def update(self) -> str:
        """Re-ingest the current measurement and keep it open ('' if none is active)."""
        if self.proxy is not None:
            current = self.current()
            if not current:
                return ""
            answer = self._device_or_file("UpdateMeasurementIn", self.scan_dir)
            if answer is not None:
                return str(answer)
        current = current_in_text(self._text())
        if not current:
            return ""
        self._append(
            ["__command__ stop", f"{current}:{time.time()}", f"__command__ start {current}"]
        )
        return current

    def add_scan(self, record: str) -> str:
        """Ingest a listed scan again inside the current measurement."""
        answer = self._device_or_file("AddScanIn", [record, self.scan_dir])
        if answer is not None:
            return str(answer)
        line = f"{record}:{time.time()}"
        self._append([line])
        return line


def env(macro: Macro, name: str, default: Any = None) -> Any:
    """A sardana environment variable, or *default* when it is not set."""
    try:
        return macro.getEnv(name)
    except UnknownEnv:
        return default


def scan_dir_of(macro: Macro, scandir: Optional[str] = None) -> str:
    value = scandir or env(macro, "ScanDir")
    if not value or not str(value).strip():
        raise MacroProblem("ScanDir is not set (set it with: senv ScanDir <directory>)")
    return os.path.abspath(str(value).strip())


def remember(macro: Macro, scan_dir: str, name: str) -> None:
    """Keep ``SciCatMeasurements[ScanDir]`` as the old macros did (after success)."""
    measurements = env(macro, "SciCatMeasurements", {})
    if not isinstance(measurements, dict):
        measurements = {}
    measurements = dict(measurements)
    if measurements.get(scan_dir) != name:
        measurements[scan_dir] = name
        macro.setEnv("SciCatMeasurements", measurements)


def nexus_entry(macro: Macro) -> Optional[str]:
    """The NeXus entry name when the NeXus selector appends scans as entries.

    ``NeXusSelectorDevice`` (NXSRecSelector) tells it: its ``AppendEntry``
    attribute and the ``entryname`` of its ``ConfigVariables`` (default
    ``scan``).  None when there is no selector or it does not append.
    """
    name = str(env(macro, "NeXusSelectorDevice", "") or "").strip()
    if not name:
        return None
    try:
        selector = tango.DeviceProxy(name)
        if not bool(selector.read_attribute("AppendEntry").value):
            return None
        variables = json.loads(selector.read_attribute("ConfigVariables").value or "{}")
    except tango.DevFailed as error:
        macro.warning(
            f"NeXusSelectorDevice {name} is not available ({dev_error(error)[1]}): "
            "plain scan records are used"
        )
        return None
    except (ValueError, TypeError) as error:
        macro.warning(
            f"NeXusSelectorDevice {name}: ConfigVariables is not JSON ({error}): "
            "plain scan records are used"
        )
        return None
    entry = variables.get("entryname") if isinstance(variables, dict) else None
    return str(entry) if entry else "scan"


class LastScan:
    """The record of a scan and its measurement, from ScanFile and the ScanID."""

    def __init__(self, macro: Macro, scan_id: Optional[int] = None, scan_file: Any = None) -> None:
        template = env(macro, "ScanFile")
        if scan_file is None or "{" in str(template):
            scan_file = template  # a {ScanID} template: the history has it formatted
        check_scan_file(scan_file)
        self.stem, self.nexus = scan_stem(scan_file)
        names = (
            [scan_file]
            if isinstance(scan_file, str)
            else list(scan_file)
            if isinstance(scan_file, (list, tuple))
            else []
        )
        #: where the scan's master file may be: ScanFile's extensions, then the usual
        own = [os.path.splitext(str(name))[1] for name in names]
        self.extensions = list(
            dict.fromkeys([ext for ext in own if ext] + list(NEXUS_EXTENSIONS) + [".fio"])
        )
        if not self.stem:
            raise MacroProblem("ScanFile is not set (set it with: senv ScanFile myscan.nxs)")
        if scan_id is None:
            scan_id = env(macro, "ScanID")
            if scan_id is None:
                raise MacroProblem("ScanID is not set: no scan has been run yet")
        self.scan_id = int(scan_id)
        self._macro = macro
        self._entry: Optional[str] = None
        self._entry_known = False

    def entry(self) -> Optional[str]:
        if not self._entry_known:
            self._entry = nexus_entry(self._macro) if self.nexus else None
            self._entry_known = True
        return self._entry

    def record(self) -> str:
        return scan_record(self.stem, self.scan_id, self.nexus, self.entry())

    @property
    def name(self) -> str:
        return scan_name(self.stem, self.scan_id)

    @property
    def measurement(self) -> str:
        return measurement_name(self.stem)
