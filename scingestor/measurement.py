"""Measurement grouping: which scans belong to which measurement.

``__command__ start NAME`` … ``__command__ stop`` in a list file group the
scans between them into the measurement dataset NAME.  The state at any
line follows from the lines before it, so it is recomputed by walking the
list file from its start: nothing about measurements needs to be stored
for a restart to know it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Set

from .listfile import Record, ScanLine, StartMeasurement, StopMeasurement

logger = logging.getLogger(__name__)


@dataclass
class MeasurementState:
    """The grouping state while walking a list file.

    ``current`` is the active measurement (``""`` when stopped);
    ``last`` the last one started (it survives a stop: the callback and the
    measurement line refer to it); ``started`` every name started so far,
    to tell a measurement line (``NAME``) from a scan line.
    """

    current: str = ""
    last: str = ""
    started: Set[str] = field(default_factory=set)

    def apply(self, record: Record, path: Optional[str] = None) -> None:
        """Update the state with a command line; other records are ignored."""
        if isinstance(record, StartMeasurement):
            name = record.name or self.last
            if not name:
                logger.warning(
                    "%s:%s: '__command__ start' without a name and no earlier "
                    "measurement to resume: ignored",
                    path or "<list>",
                    record.lineno,
                )
                return
            if self.current and self.current != name:
                logger.info("Measurement %s replaced by %s without a stop", self.current, name)
            self.current = self.last = name
            self.started.add(name)
        elif isinstance(record, StopMeasurement):
            self.current = ""

    def is_measurement(self, line: ScanLine) -> bool:
        """Does the line ingest a measurement (a name started earlier in the list)?"""
        return line.scanname in self.started and not line.is_multi_entry

    def copy(self) -> "MeasurementState":
        return MeasurementState(self.current, self.last, set(self.started))
