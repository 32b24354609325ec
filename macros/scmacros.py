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

import os
import sys
from typing import Any, List, Optional, Tuple

from sardana.macroserver.macro import Macro, Type
from sardana.macroserver.macro import Optional as OptionalParam

# A MacroServer loads each module of a MacroPath folder by its file path,
# without putting the folder on sys.path: the helpers beside this file
# (``_scicat_*.py``, skipped as macro libraries for their leading ``_``) are
# found by putting it there, at the end, so that it shadows nothing.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from _scicat_device import Refused, ior_endpoint, split_device_name
from _scicat_grouping import DEVICE_ENV, Grouping, LastScan, env, remember, scan_dir_of
from _scicat_listgrammar import current_in_text, is_listed, list_file_name, measurement_scans
from _scicat_scans import (
    MacroProblem,
    append_records,
    check_name,
    check_scan_file,
    find_beamtime_id,
    flag,
    hook_place,
    measurement_name,
    scan_has_files,
    scan_record,
    scan_stem,
    trailing_aborted,
)

__all__ = [
    "start_measurement",
    "make_measurement",
    "update_measurement",
    "stop_measurement",
    "show_current_measurement",
    "scicat_autogrouping_on",
    "scicat_autogrouping_off",
    "scicat_autogrouping_hook",
    # helpers that scripts and tests reach through this module
    "DEVICE_ENV",
    "MacroProblem",
    "append_records",
    "check_name",
    "check_scan_file",
    "current_in_text",
    "find_beamtime_id",
    "flag",
    "hook_place",
    "ior_endpoint",
    "is_listed",
    "list_file_name",
    "measurement_name",
    "measurement_scans",
    "scan_has_files",
    "scan_record",
    "scan_stem",
    "split_device_name",
    "trailing_aborted",
]

#: the sardana String parameter type (Type.String exists only inside a MacroServer)
STRING = getattr(Type, "String", "String")
HOOK_NAME = "scicat_autogrouping_hook"
HOOK_PLACES = ("pre-scan", "post-scan")


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
