"""A list line to process and how processing it ended: the pipeline's input and output.

Kept apart from :mod:`scingestor.pipeline` (issue 19) because the queue,
the workers, the service and the batch tool all speak of tasks, scan keys
and outcomes without needing the pipeline's generators and posting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Tuple

from .beamtime import Beamtime
from .listfile import ScanLine
from .outcomes import OutcomeStatus
from .state import IngestedRecord


@dataclass(frozen=True)
class ScanTask:
    """One list line to process, with the context the list file gives it."""

    beamtime: Beamtime
    list_file: str
    line: ScanLine
    measurement: str = ""
    last_measurement: str = ""
    is_measurement: bool = False
    reingest: bool = False
    #: the daemon may still wait for a missing master file (see MASTER_WAIT_TRIES)
    wait_for_master: bool = False

    @property
    def key(self) -> str:
        return self.line.text

    @property
    def scan_keys(self) -> Tuple[Hashable, ...]:
        return scan_keys(self.list_file, self.beamtime.path, self.line)


def scan_keys(list_file: str, beamtime_file: str, line: ScanLine) -> Tuple[Hashable, ...]:
    """What lines naming the same scan share: lines sharing a key run one at a time.

    Two lines are the same scan when they name the same files (the scan's
    path: its metadata files are named after it) or the same dataset pid
    (``{beamtimeid}/{scanname}``).  ``s``, ``s:1`` and ``s det1`` share
    both; ``sub/s`` of one list and ``s`` of the list in ``sub`` share the
    files.  Running such lines side by side would have them write the same
    JSON files and sync the same origdatablocks at once.
    """
    return (
        ("files", scan_path(list_file, line.scanname)),
        ("pid", os.path.abspath(beamtime_file), line.scanname),
    )


def scan_path(list_file: str, scanname: str) -> str:
    """The scan a list line names, as a path (its files are named after it)."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(list_file)), scanname))


@dataclass
class ScanOutcome:
    key: str
    status: OutcomeStatus
    pid: Optional[str] = None
    record: Optional[IngestedRecord] = None
    message: str = ""
    posted: Dict[str, int] = field(default_factory=dict)
    #: for a retry: what it waits for (a :class:`RetryCause`, ``""`` otherwise)
    cause: str = ""
    #: no master file was found: the dataset comes from the beamtime metadata alone
    without_master: bool = False
    #: the scan waited for another ingestor process (a running daemon or device)
    waited: bool = False
    #: what SciCat held beyond the generated set: one line per dataset and kind
    surplus: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return OutcomeStatus(self.status).ok
