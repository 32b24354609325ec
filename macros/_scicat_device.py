"""Is the ScicatIngestorDS device there?  Tango names, IORs and a bounded probe.

Helper module of ``scmacros.py`` (skipped as a macro library by the
MacroServer: its name starts with ``_``).  A macro must not hang on a
device server that does not answer: the probe runs in a thread of its own
and gives up after PROBE_SECONDS, and the macros then write the list file.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Dict, Optional, Tuple

import tango

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


class Unreachable(Exception):
    """The ScicatIngestorDS device cannot be reached (so the list file is written)."""


class Refused(Exception):
    """The device refused a command (bad name, directory not watched ...)."""


def dev_error(error: tango.DevFailed) -> Tuple[str, str]:
    first = error.args[0] if error.args else None
    reason = str(getattr(first, "reason", "") or "")
    desc = " ".join(str(getattr(first, "desc", "") or error).split())
    return reason, desc


def is_unreachable(error: tango.DevFailed) -> bool:
    if isinstance(error, (tango.ConnectionFailed, tango.CommunicationFailed)):
        return True
    reasons = {str(getattr(item, "reason", "")) for item in error.args}
    return bool(reasons & set(UNREACHABLE_REASONS))


DELAYED = "connection request was delayed"


def failure_text(name: str, error: tango.DevFailed) -> str:
    """A DevFailed in words; never cppTango's "the connection request was delayed",
    which only says that an earlier attempt failed less than 1 s ago."""
    desc = dev_error(error)[1] or "no answer"
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
            self.problem = failure_text(self.name, error)
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
                why = failure_text(self.name, error)
                self.problem = f"the Tango database {self.database} cannot be reached: {why}"
                return None
            try:
                if device.count("/") != 2:
                    device = database.get_device_from_alias(device)
                info = database.import_device(device)
            except tango.DevFailed as error:
                reasons = " ".join(str(getattr(item, "reason", "")) for item in error.args)
                if "NotDefined" in reasons or "Alias" in reasons or not is_unreachable(error):
                    self.problem = (
                        f"{self.name} is not defined in the Tango database "
                        f"{self.database} ({failure_text(self.name, error)})"
                    )
                else:
                    self.problem = (
                        f"the Tango database {self.database} cannot be "
                        f"reached: {failure_text(self.name, error)}"
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
