"""What the device shows of the service: Tango states, attribute names, qualities.

Kept apart from the device class so the picture (which service value is
which attribute, what colour a GUI gives it) can be read and tested without
a running Tango device.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from tango import AttrQuality, DevState

from scingestor import service as svc
from scingestor.health import ServiceSnapshot, format_time

#: service state -> Tango state
STATES: Dict[str, DevState] = {
    svc.OFF: DevState.OFF,
    svc.ON: DevState.ON,
    svc.RUNNING: DevState.RUNNING,
    svc.ALARM: DevState.ALARM,
    svc.FAULT: DevState.FAULT,
}

#: service snapshot field (the name of its change notification) -> the attribute showing it
ATTRIBUTES: Dict[str, str] = {
    "current_measurement": "CurrentMeasurement",
    "queue_length": "QueueLength",
    "last_error": "LastError",
    "last_error_time": "LastErrorTime",
    "error_history": "LastErrorHistory",
    "ingested_count": "IngestedCount",
    "unchanged_count": "UnchangedCount",
    "failed_count": "FailedCount",
    "last_ingested_scan": "LastIngestedScan",
    "last_success_time": "LastSuccessTime",
    "watched_beamtimes": "WatchedBeamtimes",
    "scicat_reachable": "SciCatReachable",
    "scicat_url": "SciCatUrl",
}

#: attributes with archive events too (HDB++ subscribes to those): the state and counters
ARCHIVED = frozenset(
    {
        "State",
        "QueueLength",
        "IngestedCount",
        "UnchangedCount",
        "FailedCount",
        "SciCatReachable",
        "LastSuccessTime",
    }
)


def quality(attr: str, value: Any) -> AttrQuality:
    """The quality a GUI colours: an error, failed scans, SciCat away."""
    if attr == "SciCatReachable" and not value:
        return AttrQuality.ATTR_ALARM
    if (attr == "LastError" and value) or (attr == "FailedCount" and value > 0):
        return AttrQuality.ATTR_WARNING
    return AttrQuality.ATTR_VALID


class Health:
    """The device's picture of the service: its latest values, and what they show.

    The service composes State, Status and LastError (``scingestor.health``);
    the device adds only the configuration fault (there is no service then).
    """

    def __init__(self, config_file: str = "") -> None:
        self.values = ServiceSnapshot(state=svc.OFF, status="Starting")
        self.config_file = config_file
        self.config_fault = ""
        self.fault_time = 0.0

    def apply(self, name: str, value: Any) -> None:
        """One change notification of the service (a :class:`ServiceSnapshot` field)."""
        self.values = self.values.with_value(name, value)

    def state_and_status(self) -> Tuple[DevState, str]:
        if self.config_fault:
            return DevState.FAULT, f"Configuration fault: {self.config_fault}"
        return STATES.get(self.values.state, DevState.UNKNOWN), self.values.status

    def display(self) -> Dict[str, Any]:
        """Every attribute the device pushes, by Tango name (State and Status last)."""
        shown = {attr: self.values[name] for name, attr in ATTRIBUTES.items()}
        if self.config_fault:
            fault = f"Configuration fault: {self.config_fault}"
            shown["LastError"] = fault
            shown["LastErrorTime"] = self.fault_time
            shown["LastErrorHistory"] = [f"{format_time(self.fault_time)} {fault}"]
        shown["LastSuccessDate"] = format_time(shown["LastSuccessTime"])
        shown["ConfigFilePath"] = self.config_file
        shown["State"], shown["Status"] = self.state_and_status()
        return shown
