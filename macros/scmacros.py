"""Sardana macros that group scans into SciCat measurement datasets.

Load this file from a directory on the MacroServer's ``MacroPath``.  It needs
only sardana and pytango (never ``scingestor``: the MacroServer often runs in
another Python than the ingestor).

The macros ask the ``ScicatIngestorDS`` Tango device named by the sardana
environment variable ``SciCatIngestorDevice`` to start, update and stop
measurements in the list file of ``ScanDir`` (the device writes the
``__command__`` lines and waits until its ingestor has read them).  When the
device cannot be reached they say so and write the very same lines to the
dataset list file themselves, the way the macros of older installations did,
so that no grouping is lost: the ingestor reads them when it is back.
Without ``SciCatIngestorDevice`` they work on the list file only, as before.

Auto-grouping (``SciCatAutoGrouping``) is a sardana general hook,
``scicat_autogrouping_hook``, installed at ``pre-scan`` and ``post-scan`` by
``scicat_autogrouping_on``.  See ``docs/sardana.md`` for the whole story,
including what happens with stopped, aborted and failed scans.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import tango
from sardana.macroserver.macro import Macro, Type
from sardana.macroserver.macro import Optional as OptionalParam
from sardana.macroserver.msexception import UnknownEnv

__all__ = [
    "start_measurement",
    "make_measurement",
    "update_measurement",
    "stop_measurement",
    "show_current_measurement",
    "scicat_autogrouping_on",
    "scicat_autogrouping_off",
    "scicat_autogrouping_hook",
]

#: environment variable naming the ScicatIngestorDS device
DEVICE_ENV = "SciCatIngestorDevice"
#: the device's measurement commands write and wait up to 3 s: leave room for that
DEVICE_TIMEOUT_MS = 10000
#: the probe (Tango database, TCP, ``ping``) must answer within this, or the macro
#: falls back to the list file: a hung device server costs no more than this
PROBE_SECONDS = 1.0
#: State after a successful ping: the server answers, but State waits out another
#: client's measurement command (Tango serialises commands; they hold it up to 3 s)
PROBE_TIMEOUT_MS = 5000
#: device states in which the ingestor does not watch (the commands cannot work)
IDLE_STATES = (
    tango.DevState.OFF,
    tango.DevState.FAULT,
    tango.DevState.UNKNOWN,
    tango.DevState.INIT,
)
#: DevFailed reasons that mean "not reachable" (not "refused")
UNREACHABLE_REASONS = (
    "API_DeviceNotExported",
    "API_CantConnectToDevice",
    "API_DeviceTimedOut",
    "API_CorbaException",
    "API_CommunicationFailed",
    "API_ConnectionFailed",
    "API_DeviceNotDefined",
    "DB_DeviceNotDefined",
    "API_CantConnectToDatabase",
    "API_ServerNotRunning",
)

#: the sardana String parameter type (Type.String exists only inside a MacroServer)
STRING = getattr(Type, "String", "String")

#: master-file extensions of NeXus scans, in the order the writers prefer them
NEXUS_EXTENSIONS = (".nxs", ".nx", ".h5", ".ndf")
HOOK_NAME = "scicat_autogrouping_hook"
HOOK_PLACES = ("pre-scan", "post-scan")
#: ScanHistory end statuses of aborted scans (no hook runs after an abort; an abort
#: that reaches the scan through the Pool ends it with "Exception")
ABORTED = ("Abort", "Exception")


# ---------------------------------------------------------------------------
# pure helpers (no sardana, no Tango: unit-tested on their own)


def flag(value: Any) -> bool:
    """An environment value as a boolean (``senv X True`` stores True, scripts "true")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on", "y")
    return bool(value)


def check_scan_file(scan_file: Any) -> None:
    """Refuse a ScanFile that is no file name nor list of names.

    ``senv ScanFile a.fio b.nxs`` stores the string ``"(a.fio, b.nxs)"`` (sardana
    joins several values that way and keeps the text when it is no Python
    literal): its "stem" ``(a.fio, b`` would give a list line the ingestor
    splits at the space and a dataset named ``(a.fio,``.  A name with a space
    cannot be listed either.
    """
    names = (
        [scan_file]
        if isinstance(scan_file, str)
        else list(scan_file)
        if isinstance(scan_file, (list, tuple))
        else []
    )
    for name in names:
        text = str(name).strip()
        if not text:
            continue
        joined = "," in text or text[0] in "([" or text[-1] in ")]"
        if joined:
            parts = [part.strip(" '\"") for part in text.strip("()[] ").split(",")]
            parts = [part for part in parts if part and not any(c.isspace() for c in part)]
            example = repr(parts if len(parts) > 1 else ["myscan.fio", "myscan.nxs"])
            raise MacroProblem(
                f"ScanFile is the text {scan_file!r}, not a file name or a list of file "
                "names (senv joins several values into such a text); set it with: "
                f'senv ScanFile "{example}" (one file: senv ScanFile myscan.nxs)'
            )
        if any(c.isspace() for c in text):
            raise MacroProblem(
                f"ScanFile {scan_file!r}: a file name with a space cannot be listed (the "
                "ingestor splits list lines at spaces); use a name without spaces, e.g. "
                "senv ScanFile myscan.nxs"
            )


def scan_stem(scan_file: Any) -> Tuple[str, bool]:
    """(stem, is NeXus) of the ScanFile setting (a name or a list of names).

    The first NeXus file wins, then the first ``.fio``, then any file, like
    the scan writers choose the master file.
    """
    if isinstance(scan_file, str):
        names = [scan_file]
    elif isinstance(scan_file, (list, tuple)):
        names = [str(name) for name in scan_file]
    else:
        names = []
    split = [os.path.splitext(os.path.basename(name)) for name in names]
    for stem, ext in split:
        if stem and ext.lower() in NEXUS_EXTENSIONS:
            return stem, True
    for stem, ext in split:
        if stem and ext.lower() == ".fio":
            return stem, False
    for stem, _ext in split:
        if stem:
            return stem, False
    return "", False


def scan_name(stem: str, scan_id: int) -> str:
    """The scan's name: ``stem_NNNNN``, or the stem formatted with ``{ScanID}``."""
    if "{ScanID" in stem:
        try:
            return stem.format(ScanID=scan_id)
        except (KeyError, IndexError, ValueError):
            pass
    return f"{stem}_{int(scan_id):05d}"


def measurement_name(stem: str) -> str:
    """The auto-grouping measurement of a ScanFile stem: the stem itself
    (``mycalib2.nxs`` -> ``mycalib2``); for a ``{ScanID}`` template the text
    before it (``calib_{ScanID}`` -> ``calib``)."""
    if "{" in stem:
        stem = stem.split("{", 1)[0].rstrip("_-.")
    return stem


def scan_record(stem: str, scan_id: int, nexus: bool = False, entry: Optional[str] = None) -> str:
    """The list-file record of a scan: ``stem_NNNNN``; for a NeXus file whose
    scans are appended as entries ``stem::/<entry><ScanID>;stem_NNNNN``."""
    name = scan_name(stem, scan_id)
    if nexus and entry and "{" not in stem:
        return f"{stem}::/{entry}{int(scan_id)};{name}"
    return name


def below(path: str, directory: str) -> bool:
    """Is *path* *directory* itself or inside it?"""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def find_beamtime_id(scan_dir: str, beamtime_path: str, prefix: str, ext: str) -> Optional[str]:
    """The id of the first (sorted) beamtime file in *beamtime_path*, when
    *scan_dir* is below it; None otherwise."""
    if not beamtime_path or not below(os.path.abspath(scan_dir), os.path.abspath(beamtime_path)):
        return None
    pattern = os.path.join(glob.escape(beamtime_path), glob.escape(prefix) + "*" + glob.escape(ext))
    for path in sorted(glob.glob(pattern)):
        name = os.path.basename(path)
        beamtime_id = name[len(prefix) : len(name) - len(ext)] if ext else name[len(prefix) :]
        if beamtime_id and os.path.isfile(path):
            return beamtime_id
    return None


def list_file_name(
    beamtime_id: str,
    prefix: str = "scicat-datasets-",
    local: bool = False,
    ext: str = ".lst",
    hostname: Optional[str] = None,
) -> str:
    """``<prefix>[<hostname>-]<id><ext>`` (the local form names the host)."""
    if local:
        prefix = f"{prefix}{hostname or socket.gethostname()}-"
    return f"{prefix}{beamtime_id}{ext}"


def current_in_text(text: str) -> str:
    """The measurement active at the end of a list file's text ('' if none)."""
    current, last = "", ""
    for raw in text.split("\n"):
        words = raw.split()
        if len(words) < 2 or words[0] != "__command__":
            continue
        if words[1] == "start":
            current = words[2] if len(words) > 2 else last
            last = current or last
        elif words[1] == "stop":
            current = ""
    return current


def is_listed(text: str, record: str) -> bool:
    """Is the scan record in the list text (plain, with ``:ID`` or with datablocks)?"""
    for raw in text.split("\n"):
        words = raw.split()
        if words and (words[0] == record or words[0].startswith(record + ":")):
            return True
    return False


def append_records(path: str, records: Sequence[str]) -> None:
    """Append records in one write, each on a line of its own.

    A fresh line first, only when the file does not end with one (the scan
    writers append ``"\\n" + record``, so their last line is unterminated),
    and a newline after each record: whatever a writer or a person appends
    next (``echo scan_00005 >> list``) stays a line of its own.
    """
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        lead = b""
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            lead = b"" if handle.read(1) == b"\n" else b"\n"
        handle.write(lead + "".join(record + "\n" for record in records).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def measurement_scans(text: str, name: str) -> int:
    """How many scan lines of the list text are grouped into measurement *name*
    (over all its starts: an update stops and starts it again, its dataset keeps
    the scans).  Lines that ingest a measurement (``NAME:<time>``) are no scans."""
    current, last, count = "", "", 0
    started = set()
    for raw in text.split("\n"):
        words = raw.split()
        if not words:
            continue
        if words[0] == "__command__":
            if len(words) > 1 and words[1] == "start":
                current = words[2] if len(words) > 2 else last
                if current:
                    last = current
                    started.add(current)
            elif len(words) > 1 and words[1] == "stop":
                current = ""
            continue
        if "::/" not in words[0] and words[0].split(":", 1)[0] in started:
            continue
        if current and current == name:
            count += 1
    return count


def scan_file_names(record: str) -> List[str]:
    """The names a scan's files are found under: ``base::/entry;scan`` -> base and
    scan, else the record (without a ``:<time>``)."""
    head = record.split()[0] if record.split() else record
    if "::/" in head:
        base, _sep, rest = head.partition("::/")
        scan = rest.split(";", 1)[1] if ";" in rest else ""
        return [name for name in (base, scan.split(":", 1)[0]) if name]
    return [head.split(":", 1)[0]]


def scan_has_files(scan_dir: str, record: str, extensions: Iterable[str]) -> bool:
    """Does the scan have a master file (``<name>.<ext>`` or ``<name>/<name>.<ext>``)
    or a directory of its own in *scan_dir*, where the ingestor looks?"""
    for name in scan_file_names(record):
        if os.path.isdir(os.path.join(scan_dir, name)):
            return True
        for ext in extensions:
            if os.path.isfile(os.path.join(scan_dir, name + ext)):
                return True
    return False


def trailing_aborted(
    history: Iterable[Any], scan_dir: str, current_id: Optional[int]
) -> List[Dict[str, Any]]:
    """ScanHistory entries of the aborted scans just before the current one in *scan_dir*.

    No hook runs after an abort (sardana refuses to start macros then), so
    the next scan's hook catches these up.  Oldest first.  Scans that failed
    on their own ("Exception") ran the hook already: the caller skips the
    ones that are listed.
    """
    found: List[Dict[str, Any]] = []
    for entry in reversed(list(history)):
        if not isinstance(entry, dict):
            break
        serial = entry.get("serialno")
        if current_id is not None and serial == current_id:
            continue
        if str(entry.get("endstatus")) not in ABORTED:
            break
        directory = entry.get("ScanDir")
        if (
            isinstance(serial, int)
            and directory
            and os.path.normpath(str(directory)) == os.path.normpath(scan_dir)
        ):
            found.append(entry)
    return sorted(found, key=lambda entry: int(entry["serialno"]))


def hook_place(history: Sequence[Any], scan_id: Any) -> str:
    """Where a hook runs: the scan is in ScanHistory only once it has ended."""
    last = history[-1] if history else None
    if isinstance(last, dict) and scan_id is not None and last.get("serialno") == scan_id:
        return "post-scan"
    return "pre-scan"


def split_device_name(name: str) -> Tuple[Optional[Tuple[str, int]], str, bool]:
    """(database host and port or None, device name or alias, no database?) of a
    Tango name: ``tango://host:port/a/b/c``, ``host:port/a/b/c``, ``a/b/c``, an alias,
    or a ``#dbase=no`` name (a device server without a database)."""
    text = name.strip()
    nodb = "#dbase=no" in text.lower()
    text = text.split("#", 1)[0]
    if text.lower().startswith("tango://"):
        text = text[len("tango://") :]
    parts = text.split("/")
    host: Optional[Tuple[str, int]] = None
    if len(parts) == 4 and ":" in parts[0]:
        hostname, _sep, port = parts[0].rpartition(":")
        if port.isdigit():
            host = (hostname, int(port))
            text = "/".join(parts[1:])
    return host, text, nodb


def ior_endpoint(ior: str) -> Optional[Tuple[str, int]]:
    """Host and port of the first IIOP profile of a stringified CORBA IOR (None if
    there is none or it cannot be read).  The Tango database keeps one IOR per
    exported device: where its server listened when it started."""
    if not ior or not ior[:4].upper() == "IOR:":
        return None
    try:
        data = bytes.fromhex(ior[4:].strip())
        little = data[0] == 1
        pos = 1

        def ulong(buffer: bytes, at: int) -> Tuple[int, int]:
            at = (at + 3) // 4 * 4
            return int.from_bytes(buffer[at : at + 4], "little" if little else "big"), at + 4

        length, pos = ulong(data, pos)
        pos += length  # the type id
        profiles, pos = ulong(data, pos)
        for _index in range(profiles):
            tag, pos = ulong(data, pos)
            size, pos = ulong(data, pos)
            body, pos = data[pos : pos + size], pos + size
            if tag != 0:  # TAG_INTERNET_IOP only
                continue
            little = body[0] == 1  # its own byte order
            length, at = ulong(body, 3)  # after byte order + version
            host = body[at : at + length].rstrip(b"\0").decode("ascii")
            at = (at + length + 1) // 2 * 2
            port = int.from_bytes(body[at : at + 2], "little" if little else "big")
            return (host, port) if host and port else None
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return None


def check_name(name: str) -> str:
    """A measurement name the list file can hold (the ingestor's own rule)."""
    if not name or any(c.isspace() for c in name) or "/" in name or ":" in name:
        raise MacroProblem(f"invalid measurement name {name!r}: no spaces, '/' or ':'")
    return name


# ---------------------------------------------------------------------------
# the device or the list file


class Unreachable(Exception):
    """The ScicatIngestorDS device cannot be reached (so the list file is written)."""


class Refused(Exception):
    """The device refused a command (bad name, directory not watched ...)."""


class MacroProblem(Exception):
    """Something the user has to fix (an unset variable ...): shown with self.error."""


def _dev_error(error: tango.DevFailed) -> Tuple[str, str]:
    first = error.args[0] if error.args else None
    reason = str(getattr(first, "reason", "") or "")
    desc = " ".join(str(getattr(first, "desc", "") or error).split())
    return reason, desc


def _is_unreachable(error: tango.DevFailed) -> bool:
    if isinstance(error, (tango.ConnectionFailed, tango.CommunicationFailed)):
        return True
    reasons = {str(getattr(item, "reason", "")) for item in error.args}
    return bool(reasons & set(UNREACHABLE_REASONS))


DELAYED = "connection request was delayed"


def _reason(name: str, error: tango.DevFailed) -> str:
    """A DevFailed in words; never cppTango's "the connection request was delayed",
    which only says that an earlier attempt failed less than 1 s ago."""
    desc = _dev_error(error)[1] or "no answer"
    if DELAYED in desc:
        return f"device {name} did not answer a connection attempt less than 1 s ago"
    return desc


class Probe:
    """Does the device answer?  Asked in a thread of its own, so that the macro waits
    at most PROBE_SECONDS, however long Tango takes (creating a DeviceProxy of a hung
    server alone takes 3 s; its first call, 6 s more).

    ``stage`` tells what it is waiting for when the time is up: the Tango database
    or the device.  ``proxy`` is the answering device, else ``problem`` says why not.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.stage = "database"
        host = split_device_name(name)[0]
        #: the Tango database asked (for the message when it does not answer)
        self.database = (
            f"{host[0]}:{host[1]}" if host else os.environ.get("TANGO_HOST", "TANGO_HOST")
        )
        self.proxy: Optional[Any] = None
        self.problem = ""
        self.done = threading.Event()
        threading.Thread(target=self._run, name=f"probe {name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.proxy = self._ask()
        except tango.DevFailed as error:
            self.problem = _reason(self.name, error)
        except Exception as error:  # noqa: BLE001  # a probe only reports
            self.problem = f"{type(error).__name__}: {error}"
        finally:
            self.done.set()

    def _ask(self) -> Optional[Any]:
        host, device, nodb = split_device_name(self.name)
        if not nodb:
            try:
                database = tango.Database(*host) if host else tango.Database()
            except tango.DevFailed as error:
                self.problem = f"the Tango database {self.database} cannot be reached: " + _reason(
                    self.name, error
                )
                return None
            try:
                if device.count("/") != 2:
                    device = database.get_device_from_alias(device)
                info = database.import_device(device)
            except tango.DevFailed as error:
                reasons = " ".join(str(getattr(item, "reason", "")) for item in error.args)
                if "NotDefined" in reasons or "Alias" in reasons or not _is_unreachable(error):
                    self.problem = (
                        f"{self.name} is not defined in the Tango database "
                        f"{self.database} ({_reason(self.name, error)})"
                    )
                else:
                    self.problem = (
                        f"the Tango database {self.database} cannot be "
                        f"reached: {_reason(self.name, error)}"
                    )
                return None
            self.stage = "device"
            if not info.exported:
                self.problem = (
                    f"the device server is not running ({device} is not "
                    "exported in the Tango database)"
                )
                return None
            endpoint = ior_endpoint(info.ior)
            if endpoint is not None:
                try:
                    socket.create_connection(endpoint, PROBE_SECONDS).close()
                except ConnectionRefusedError:
                    self.problem = (
                        f"the device server is not running (nothing listens "
                        f"at {endpoint[0]}:{endpoint[1]}, where {device} was "
                        "exported)"
                    )
                    return None
                except OSError:
                    pass  # another network: let Tango find out
        self.stage = "device"
        proxy = tango.DeviceProxy(self.name)
        proxy.set_timeout_millis(int(PROBE_SECONDS * 1000))
        proxy.ping()  # not serialised: a busy device answers
        return proxy


_PROBE_LOCK = threading.Lock()
#: the latest probe of each device (a new one is not started while it still waits)
_PROBES: Dict[str, Probe] = {}
#: device -> (ScanID, why): no answer in this scan, so its post-scan hook does not wait
#: again (an auto-grouped scan pays the timeout once, not twice)
_SILENT_IN_SCAN: Dict[str, Tuple[int, str]] = {}


def probe_device(name: str, scan_id: Optional[int] = None) -> Tuple[Optional[Any], str]:
    """(the answering device, '') or (None, why not), within PROBE_SECONDS.

    A device that did not answer is not asked again while the earlier probe still
    waits, nor again in the same scan (*scan_id*, given by the hook): an
    auto-grouped scan pays the timeout once, not at pre-scan and post-scan.
    """
    with _PROBE_LOCK:
        silent = _SILENT_IN_SCAN.get(name)
        if scan_id is not None and silent is not None and silent[0] == scan_id:
            return None, f"{silent[1]} (at the start of this scan; not asked again)"
        previous = _PROBES.get(name)
        if previous is not None and not previous.done.is_set():
            age = time.monotonic() - previous.started
            why = f"device {name} does not answer (a probe sent {age:.0f} s ago still waits)"
            if scan_id is not None:
                _SILENT_IN_SCAN[name] = (scan_id, why)
            return None, why
        probe = Probe(name)
        _PROBES[name] = probe
    if not probe.done.wait(PROBE_SECONDS):
        if probe.stage == "database":
            why = f"the Tango database {probe.database} does not answer within {PROBE_SECONDS:g} s"
        else:
            why = f"device {name} does not answer within {PROBE_SECONDS:g} s"
        if scan_id is not None:
            with _PROBE_LOCK:
                _SILENT_IN_SCAN[name] = (scan_id, why)
        return None, why
    if probe.proxy is None:
        return None, probe.problem or "no answer"
    return probe.proxy, ""


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
                self._fall_back(_reason(self.device_name, error))
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
            reason, desc = _dev_error(error)
            if _is_unreachable(error):
                self._fall_back(f"{name} failed: {_reason(self.device_name, error)}")
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


# ---------------------------------------------------------------------------
# shared macro plumbing


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
            f"NeXusSelectorDevice {name} is not available ({_dev_error(error)[1]}): "
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


class _MeasurementMacro:
    """Error handling shared by the macros (a mixin: sardana must not see it as a macro).

    Problems are reported with ``self.error`` and the macro returns '' instead
    of raising: a failed grouping must not abort the user's scan sequence.
    """

    def _guarded(self, action: Any, *args: Any) -> str:
        try:
            return str(action(*args) or "")
        except MacroProblem as problem:
            self.error(str(problem))  # type: ignore[attr-defined]
        except Refused as refused:
            self.error(f"The SciCat ingestor refused: {refused}")  # type: ignore[attr-defined]
        except OSError as error:
            self.error(f"Cannot write the dataset list file: {error}")  # type: ignore
        return ""

    def _report_closed(self, grouping: "Grouping", scan_dir: str) -> None:
        """Say so when the measurement a start closed had no scans."""
        note = grouping.empty_note(grouping.closed)
        if note:
            self.output(  # type: ignore[attr-defined]
                f"Measurement '{grouping.closed}' stopped in {scan_dir}{note}"
            )


SCANDIR_PARAM = [
    "scandir",
    STRING,
    OptionalParam,
    "scan directory (default: the ScanDir environment variable)",
]
RESULT = [["measurement", STRING, None, "the measurement ('' if none / on error)"]]


# ---------------------------------------------------------------------------
# the macros


class start_measurement(_MeasurementMacro, Macro):
    """Start a measurement: the scans that follow are grouped into its dataset.

    The current measurement of ScanDir (if any) is stopped and ingested first.
    """

    param_def = [
        ["name", STRING, OptionalParam, "measurement name (no spaces, '/' or ':')"],
        SCANDIR_PARAM,
        ["conf", STRING, OptionalParam, "ignored (kept for old calls)"],
    ]
    result_def = RESULT

    def run(self, name: Optional[str], scandir: Optional[str], conf: Optional[str]) -> str:
        return self._guarded(self._start, name, scandir)

    def _start(self, name: Optional[str], scandir: Optional[str]) -> str:
        name = (name or "").strip()
        if not name:
            raise MacroProblem(
                "start_measurement needs a measurement name "
                "(stop_measurement stops the current one)"
            )
        check_name(name)
        scan_dir = scan_dir_of(self, scandir)
        grouping = Grouping(self, scan_dir)
        started = grouping.start(name)
        remember(self, scan_dir, started)
        self._report_closed(grouping, scan_dir)
        self.output(f"Measurement '{started}' started in {scan_dir}")
        return started


class make_measurement(_MeasurementMacro, Macro):
    """Start a measurement and add the last scan (ScanFile, ScanID) to it."""

    param_def = [
        ["name", STRING, OptionalParam, "measurement name (no spaces, '/' or ':')"],
        SCANDIR_PARAM,
        ["conf", STRING, OptionalParam, "ignored (kept for old calls)"],
    ]
    result_def = RESULT

    def run(self, name: Optional[str], scandir: Optional[str], conf: Optional[str]) -> str:
        return self._guarded(self._make, name, scandir)

    def _make(self, name: Optional[str], scandir: Optional[str]) -> str:
        name = (name or "").strip()
        if not name:
            raise MacroProblem("make_measurement needs a measurement name")
        check_name(name)
        scan_dir = scan_dir_of(self, scandir)
        scan = LastScan(self)
        record = scan.record()  # before anything is written
        grouping = Grouping(self, scan_dir)
        self._check_last_scan(grouping, scan, record, scan_dir, name)
        started = grouping.start(name)
        remember(self, scan_dir, started)
        self._report_closed(grouping, scan_dir)
        grouping.add_scan(record)
        self.output(f"Measurement '{started}' started in {scan_dir} with the scan '{record}'")
        return started

    def _check_last_scan(
        self, grouping: Grouping, scan: "LastScan", record: str, scan_dir: str, name: str
    ) -> None:
        """Warn when the last scan is not listed or has no file: it is added anyway
        (the user asked for it), but it is likely not the scan they meant."""
        if grouping.listed(record) is False:
            self.warning(
                f"The last scan '{record}' (ScanID {scan.scan_id}) is not listed "
                f"in {grouping.list_file()}: the ingestor has not seen it (was it "
                f"written with this ScanFile and ScanDir?); it is added to "
                f"'{name}' anyway"
            )
        if not scan_has_files(scan_dir, record, scan.extensions):
            self.warning(
                f"The last scan '{scan.name}' has no file in {scan_dir} (no "
                f"{scan.name}{{{','.join(scan.extensions)}}} and no directory "
                f"{scan.name}/): its dataset holds no data; it is added to "
                f"'{name}' anyway"
            )


class update_measurement(_MeasurementMacro, Macro):
    """Ingest the current measurement dataset as it is now; it stays open."""

    param_def = [SCANDIR_PARAM]
    result_def = RESULT

    def run(self, scandir: Optional[str]) -> str:
        return self._guarded(self._update, scandir)

    def _update(self, scandir: Optional[str]) -> str:
        scan_dir = scan_dir_of(self, scandir)
        grouping = Grouping(self, scan_dir)
        updated = grouping.update()
        if not updated:
            self.warning(f"No measurement is active in {scan_dir}: nothing to update")
            return ""
        remember(self, scan_dir, updated)
        self.output(
            f"Measurement '{updated}' updated in {scan_dir}{grouping.empty_note(updated, yet=True)}"
        )
        return updated


class stop_measurement(_MeasurementMacro, Macro):
    """Stop the current measurement and ingest its dataset."""

    param_def = [SCANDIR_PARAM]
    result_def = RESULT

    def run(self, scandir: Optional[str]) -> str:
        return self._guarded(self._stop, scandir)

    def _stop(self, scandir: Optional[str]) -> str:
        scan_dir = scan_dir_of(self, scandir)
        grouping = Grouping(self, scan_dir)
        stopped = grouping.stop()
        remember(self, scan_dir, "")
        if stopped:
            self.output(
                f"Measurement '{stopped}' stopped in {scan_dir}{grouping.empty_note(stopped)}"
            )
        else:
            self.output(f"No measurement was active in {scan_dir}")
        return stopped


class show_current_measurement(_MeasurementMacro, Macro):
    """Show the measurement that groups the scans of ScanDir now."""

    param_def = [SCANDIR_PARAM]
    result_def = RESULT

    def run(self, scandir: Optional[str]) -> str:
        return self._guarded(self._show, scandir)

    def _show(self, scandir: Optional[str]) -> str:
        scan_dir = scan_dir_of(self, scandir)
        current = Grouping(self, scan_dir, reading=True).current()
        if current:
            self.output(f"Current Measurement for '{scan_dir}' is '{current}'")
        else:
            self.output(f"Current Measurement for '{scan_dir}' is not set")
        return current


# -- auto-grouping -----------------------------------------------------------------


def _hook_entries(hooks: Any) -> List[Tuple[str, List[str]]]:
    entries: List[Tuple[str, List[str]]] = []
    for item in hooks or []:
        try:
            text, places = item[0], item[1]
        except (TypeError, IndexError, KeyError):
            continue
        entries.append((str(text), [str(place) for place in places]))
    return entries


def _is_our_hook(text: str) -> bool:
    return text.split(" ", 1)[0] == HOOK_NAME


class scicat_autogrouping_on(Macro):
    """Group every scan into the measurement named after its ScanFile stem.

    Sets SciCatAutoGrouping and installs scicat_autogrouping_hook as a general
    hook at pre-scan and post-scan (other general hooks are kept).
    """

    param_def: List[Any] = []

    def run(self) -> None:
        hooks = [
            entry
            for entry in _hook_entries(env(self, "_GeneralHooks", []))
            if not _is_our_hook(entry[0])
        ]
        hooks += [(f"{HOOK_NAME} {place}", [place]) for place in HOOK_PLACES]
        self.setEnv("_GeneralHooks", hooks)
        self.setEnv("SciCatAutoGrouping", True)
        self.output(
            "SciCat auto-grouping is on: each scan is grouped into the measurement "
            "named after its ScanFile (hook %s at %s)" % (HOOK_NAME, ", ".join(HOOK_PLACES))
        )


class scicat_autogrouping_off(Macro):
    """Stop grouping scans automatically (the open measurement stays open)."""

    param_def: List[Any] = []

    def run(self) -> None:
        hooks = [
            entry
            for entry in _hook_entries(env(self, "_GeneralHooks", []))
            if not _is_our_hook(entry[0])
        ]
        if hooks:
            self.setEnv("_GeneralHooks", hooks)
        elif env(self, "_GeneralHooks") is not None:
            self.unsetEnv("_GeneralHooks")
        self.setEnv("SciCatAutoGrouping", False)
        self.output("SciCat auto-grouping is off (stop_measurement closes the open measurement)")


class scicat_autogrouping_hook(Macro):
    """General hook of SciCat auto-grouping (installed by scicat_autogrouping_on).

    pre-scan: makes the measurement named after the ScanFile stem current, so
    that the scan's record (listed by the scan writer) is grouped into it.
    post-scan: with AppendSciCatDataset lists the scan record itself, then
    ingests the measurement dataset again (it stays open).  Aborted scans
    (no hook runs after an abort) are caught up by the next scan's hook.
    Problems are warnings: the hook never breaks a scan.
    """

    param_def = [
        [
            "place",
            STRING,
            "auto",
            "hook place: pre-scan, post-scan, or auto (found from ScanHistory)",
        ]
    ]

    def run(self, place: str) -> None:
        place = place.strip().lower()
        if place not in HOOK_PLACES:
            try:
                scan_id = env(self, "ScanID")
                place = hook_place(env(self, "ScanHistory", []) or [], scan_id)
            except Exception:  # noqa: BLE001  # a hook never breaks a scan
                place = "post-scan"
        try:
            self._run(place)
        except MacroProblem as problem:
            self.warning(f"SciCat auto-grouping: {problem}")
        except Refused as refused:
            self.warning(f"SciCat auto-grouping: the SciCat ingestor refused: {refused}")
        except OSError as error:
            self.warning(f"SciCat auto-grouping: cannot write the dataset list file: {error}")

    def _run(self, place: str) -> None:
        grouping_on = flag(env(self, "SciCatAutoGrouping", False))
        append = flag(env(self, "AppendSciCatDataset", False))
        if not grouping_on and not (append and place == "post-scan"):
            return
        scan_dir = scan_dir_of(self)
        scan = LastScan(self)
        history = env(self, "ScanHistory", []) or []
        status = "Normal"
        if (
            history
            and isinstance(history[-1], dict)
            and history[-1].get("serialno") == scan.scan_id
        ):
            status = str(history[-1].get("endstatus", status))
        grouping = Grouping(self, scan_dir, scan_id=scan.scan_id)
        record = scan.record()
        if not grouping_on:
            # the old after-scan hook: list the scan, no grouping
            if grouping.listed(record) is False:
                grouping.list_scan(record)
            elif grouping.list_problem:
                self.warning(f"SciCat: scan '{record}' not listed: {grouping.list_problem}")
            return
        current = grouping.current()
        if append:
            current = self._catch_up(grouping, history, scan.scan_id, current)
        measurement = check_name(scan.measurement)
        switched = False
        if current != measurement:
            grouping.start(measurement, current)
            switched = True
            remember(self, scan_dir, measurement)
            note = grouping.empty_note(grouping.closed)
            if note:
                self.output(f"Measurement '{grouping.closed}' stopped in {scan_dir}{note}")
        if place == "pre-scan":
            if switched:
                self.output(
                    f"Measurement '{measurement}' started in {scan_dir} (SciCat auto-grouping)"
                )
            return
        listed = grouping.listed(record)
        if listed is None:
            if append:
                self.warning(
                    f"SciCat auto-grouping: scan '{record}' not listed: {grouping.list_problem}"
                )
        elif not listed:
            if append:
                grouping.list_scan(record)
        elif switched:
            # listed before its measurement was current (no pre-scan hook): group it now
            grouping.add_scan(record)
        updated = grouping.update()
        remember(self, scan_dir, updated or measurement)
        ended = "" if status == "Normal" else f" (the scan ended with {status})"
        self.output(
            f"Scan '{scan.name}' grouped into the measurement '{measurement}'"
            f"{ended}; measurement dataset updated"
        )

    def _catch_up(self, grouping: Grouping, history: Any, scan_id: int, current: str) -> str:
        """List the aborted scans that no hook listed, each in its own measurement."""
        for entry in trailing_aborted(history, grouping.scan_dir, scan_id):
            aborted = LastScan(self, entry["serialno"], entry.get("ScanFile"))
            record = aborted.record()
            if grouping.listed(record) is not False:
                continue
            if current != aborted.measurement:
                grouping.start(check_name(aborted.measurement), current)
                current = aborted.measurement
            grouping.list_scan(record)
            self.output(f"Aborted scan '{aborted.name}' listed into the measurement '{current}'")
        return current
