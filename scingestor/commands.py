"""The operator commands that act through a list file: the measurement commands.

A command appends lines to the dataset list file of a scan directory (the
lines the sardana macros would write), and the watcher reads them like any
other line: so a measurement started from Tango, from the CLI or by a
macro is one and the same thing in the list.  While the service runs, a
command waits until the watcher has read its lines, so the next question
(the current measurement) gets the new answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional

from .beamtime import under
from .errors import ScingestorError
from .intake import ListFileState, ListIntake
from .layout import both_forms, list_file_name
from .listfile import ScanLine, parse_line
from .listgrammar import measurement_name_problem

logger = logging.getLogger(__name__)

#: seconds a measurement command waits for the watcher to read the lines it appended
CATCH_UP_SECONDS = 3.0


class ListCommands:
    """Measurement commands and the list file each one means.

    *lock* is the service's condition (notified when a list file was read);
    *running* says whether the watcher reads what is appended.
    """

    def __init__(
        self, intake: ListIntake, lock: threading.Condition, running: Callable[[], bool]
    ) -> None:
        self.intake = intake
        self._lock = lock
        self._running = running
        #: list file -> measurement shown while an update rewrites it (no '' in between)
        self.pinned: Dict[str, str] = {}

    def start_measurement(self, name: str, scan_dir: Optional[str] = None) -> str:
        """Start measurement *name* (closing and ingesting the current one)."""
        problem = measurement_name_problem(name)
        if problem:
            raise ScingestorError(problem)
        list_file = self.list_file_for(scan_dir)
        current = self.current_measurement(os.path.dirname(list_file))
        records = []
        if current:
            records += ["__command__ stop", f"{current}:{time.time()}"]
        records.append(f"__command__ start {name}")
        self.append(list_file, records)
        with self._lock:
            self.intake.current_list_file = list_file
        return name

    def stop_measurement(self, scan_dir: Optional[str] = None) -> str:
        """Stop the current measurement and ingest it; returns its name ('' if none)."""
        list_file = self.list_file_for(scan_dir)
        current = self.current_measurement(os.path.dirname(list_file))
        records = ["__command__ stop"]
        if current:
            records.append(f"{current}:{time.time()}")
        self.append(list_file, records)
        return current

    def add_scan(self, record: str, scan_dir: Optional[str] = None) -> str:
        """Ingest an already listed scan again inside the current measurement.

        ``make_measurement`` uses it for the last scan: the line
        ``<record>:<time>`` is a re-ingestion that the active measurement
        groups.  Returns the line appended.
        """
        line = parse_line(record)
        if not isinstance(line, ScanLine):
            raise ScingestorError(f"not a scan record: {record!r}")
        tokens = line.text.split()
        if line.reingest_id is None:
            tokens[0] += f":{time.time()}"
        text = " ".join(tokens)
        self.append(self.list_file_for(scan_dir), [text])
        return text

    def update_measurement(self, scan_dir: Optional[str] = None) -> str:
        """Ingest the current measurement as it is now and keep it open."""
        list_file = self.list_file_for(scan_dir)
        current = self.current_measurement(os.path.dirname(list_file))
        if not current:
            raise ScingestorError("no measurement is active")
        # it stays the current measurement throughout: readers never see '' in between
        with self._lock:
            self.pinned[list_file] = current
        try:
            self.append(
                list_file,
                ["__command__ stop", f"{current}:{time.time()}", f"__command__ start {current}"],
            )
        finally:
            with self._lock:
                self.pinned.pop(list_file, None)
        return current

    def current_measurement(self, scan_dir: Optional[str] = None) -> str:
        """The active measurement of *scan_dir*'s list file (default: the latest active)."""
        with self._lock:
            current = self.intake.current_list_file
            state = (
                self.state_for_dir(scan_dir)
                if scan_dir
                else (self.intake.lists.get(current) if current else None)
            )
            if state is None:
                return ""
            return self.pinned.get(state.path, state.measurement.current)

    def state_for_dir(self, scan_dir: str) -> Optional[ListFileState]:
        target = os.path.normpath(scan_dir)
        with self._lock:
            for state in self.intake.lists.values():
                directory = os.path.dirname(state.path)
                if target in (directory, both_forms(state.beamtime).to_core(directory)):
                    return state
        return None

    def list_file_for(self, scan_dir: Optional[str]) -> str:
        """The dataset list file of *scan_dir* (created if the dir is in a beamtime)."""
        if scan_dir is None:
            return self.default_list_file()
        state = self.state_for_dir(scan_dir)
        if state is not None:
            return state.path
        with self._lock:
            beamtimes = list(self.intake.beamtimes.values())
        target = os.path.normpath(scan_dir)
        for beamtime in beamtimes:
            local = both_forms(beamtime).to_local(target)
            if under(local, [beamtime.directory]) is not None:
                return os.path.join(local, list_file_name(self.intake.config, beamtime.beamtime_id))
        raise ScingestorError(f"{scan_dir} is not below a watched beamtime directory")

    def default_list_file(self) -> str:
        """The list file meant when a command names no scan directory.

        The one with the latest activity (a listed scan or a command); else the
        only watched one; else the most recently written of those with an
        active measurement.  Several watched and none active: the error lists them.
        """
        with self._lock:
            if self.intake.current_list_file is not None:
                return self.intake.current_list_file
            states = list(self.intake.lists.values())
        if len(states) == 1:
            return states[0].path
        if not states:
            raise ScingestorError("no scan directory given and no list file is watched yet")
        active = [state.path for state in states if state.measurement.current]
        if active:
            return max(active, key=_mtime)
        names = ", ".join(sorted(state.path for state in states))
        raise ScingestorError(
            f"no scan directory given and none of the {len(states)} watched "
            f"list files has an active measurement: {names}; give the scan "
            "directory (the ...In commands)"
        )

    def append(self, list_file: str, records: List[str]) -> None:
        """Append whole lines to a list file, then wait for the watcher.

        Each record starts on a fresh line (a newline first only when the file
        does not end with one, as after the sardana writers' ``"\\n" + record``)
        and ends with a newline, so whatever anyone appends next cannot merge
        with it.  The lines are durable once written; when the service runs,
        it waits until the watcher has read them, so the caller's next
        question (the current measurement) gets the new answer.  A line the
        watcher will never read (a directory it does not watch) is an error,
        not a silence.
        """
        os.makedirs(os.path.dirname(list_file), exist_ok=True)
        size = write_list_lines(list_file, records)
        logger.info("Appending %s to %s", records, list_file)
        if not self._running():
            return
        deadline = time.monotonic() + CATCH_UP_SECONDS
        with self._lock:
            while time.monotonic() < deadline:
                state = self.intake.lists.get(list_file)
                if state is not None and state.read_offset >= size:
                    return
                self._lock.wait(0.05)
        raise ScingestorError(
            f"{list_file}: the lines were appended but the ingestor does not read this "
            "list file (is its directory watched? see max_scandir_depth, "
            "watch_scandir_subdir and scandir_blacklist)"
        )


def write_list_lines(list_file: str, records: List[str]) -> int:
    """Append *records* as whole lines in one write, durably; returns the new size.

    A newline goes first only when the file does not end with one (the
    sardana writers leave the last record unterminated); every record ends
    with a newline.  So the records never merge with what is there, nor
    with what a person or another writer appends next.
    """
    with open(list_file, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        fresh = handle.tell() == 0
        if not fresh:
            handle.seek(-1, os.SEEK_END)
            fresh = handle.read(1) == b"\n"
        text = ("" if fresh else "\n") + "".join(record + "\n" for record in records)
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
