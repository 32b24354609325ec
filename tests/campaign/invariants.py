"""The promise of issue 18, checked on the final SciCat state and ingested list.

Pure: the checks take snapshots (plain dicts and lists) and the schedule's
expectations and return every violation found, so a failing schedule shows
all of what went wrong at once, not just the first assertion.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Sequence

from .schedule import ScanSpec, Schedule


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its kind, the scan or dataset, and what was seen."""

    kind: str
    name: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.name}: {self.detail}"


@dataclass
class FinalState:
    """What the runner saw at the end of a schedule."""

    datasets: Dict[str, Dict[str, Any]]
    origdatablocks: Dict[str, Dict[str, Any]]
    attachments: Dict[str, Dict[str, Any]]
    ingested_keys: List[str]  # every record key of the ingested list, in order
    done_keys: List[str]  # keys whose last successful record makes them done
    drained: bool  # every expected key became done before the timeout
    crashes: List[str]  # tracebacks or unexpected exits of our processes


def _files(blocks: Iterable[Mapping[str, Any]]) -> Counter:
    return Counter(
        str(entry.get("path", "")) for block in blocks for entry in block.get("dataFileList", [])
    )


def _attachment_key(attachment: Mapping[str, Any]) -> str:
    return json.dumps(
        [attachment.get("thumbnail"), attachment.get("caption")], sort_keys=True, default=str
    )


def _relative(path: str, name: str) -> str:
    """A block path as the scan dir sees it (blocks list paths below the source folder)."""
    for marker in (f"{name}/", f"{name}."):
        at = path.rfind("/" + marker)
        if at >= 0:
            return path[at + 1 :]
        if path.startswith(marker):
            return path
    return path


def check(schedule: Schedule, state: FinalState) -> List[Violation]:
    """Every violation of the campaign's invariants in *state*."""
    found: List[Violation] = []
    bid = schedule.beamtime_id
    specs = {scan.name: scan for scan in schedule.scans}
    blocks_of: Dict[str, List[Dict[str, Any]]] = {}
    for block in state.origdatablocks.values():
        blocks_of.setdefault(str(block.get("datasetId")), []).append(block)
    attachments_of: Dict[str, List[Dict[str, Any]]] = {}
    for attachment in state.attachments.values():
        attachments_of.setdefault(str(attachment.get("datasetId")), []).append(attachment)

    listed = schedule.listed_scans()
    ever = set(listed) | set(schedule.dropped) | set(schedule.groups)

    # 1. every listed scan: one dataset with exactly its blocks and attachments
    for name in listed:
        found += _check_scan(specs[name], bid, state, blocks_of, attachments_of, must_exist=True)
    # a scan listed once and cut by a truncation may be there or not, but whole
    for name in schedule.dropped:
        if name not in listed:
            found += _check_scan(
                specs[name], bid, state, blocks_of, attachments_of, must_exist=False
            )

    # 2. no dataset for a name nobody listed (a cut line, a fragment)
    for pid in state.datasets:
        name = pid[len(bid) + 1 :] if pid.startswith(bid + "/") else pid
        if name not in ever:
            found.append(Violation("unlisted", pid, "a dataset for a name nobody listed"))

    # 3. every measurement groups exactly its scans
    for meas, scans in schedule.groups.items():
        found += _check_measurement(meas, scans, specs, bid, state, blocks_of, attachments_of)

    # 4. the ingested list: every expected key done, no record of a fragment
    done = set(state.done_keys)
    for key in schedule.expected_keys():
        if key not in done:
            found.append(Violation("not-recorded", key, "listed but not done in the ingested list"))
    for key in sorted(set(state.ingested_keys) - ever):
        found.append(
            Violation("unlisted-record", key, "the ingested list records a name nobody listed")
        )
    if not state.drained and not any(v.kind == "not-recorded" for v in found):
        found.append(Violation("not-drained", "-", "the daemon did not settle in time"))
    for crash in state.crashes:
        found.append(Violation("crash", "-", crash))
    return found


def _check_scan(
    spec: ScanSpec,
    bid: str,
    state: FinalState,
    blocks_of: Mapping[str, List[Dict[str, Any]]],
    attachments_of: Mapping[str, List[Dict[str, Any]]],
    must_exist: bool,
) -> List[Violation]:
    found: List[Violation] = []
    pid = f"{bid}/{spec.name}"
    versions = sorted(other for other in state.datasets if other.startswith(pid + "/"))
    if versions:
        found.append(Violation("duplicate-dataset", spec.name, f"extra versions {versions}"))
    if pid not in state.datasets:
        if must_exist:
            found.append(Violation("lost", spec.name, "no dataset"))
        return found
    blocks = blocks_of.get(pid, [])
    files = Counter(_relative(path, spec.name) for path in _files(blocks).elements())
    wanted = Counter(spec.files())
    if len(blocks) > 1:
        found.append(Violation("duplicate-block", spec.name, f"{len(blocks)} origdatablocks"))
    if files != wanted:
        extra = files - wanted
        missing = wanted - files
        if extra:
            found.append(
                Violation("duplicate-block", spec.name, f"extra files {sorted(extra.elements())}")
            )
        if missing:
            found.append(Violation("missing-block", spec.name, f"missing files {sorted(missing)}"))
    attachments = attachments_of.get(pid, [])
    wanted_attachments = 1 if spec.plot else 0
    if len(attachments) > wanted_attachments:
        found.append(
            Violation("duplicate-attachment", spec.name, f"{len(attachments)} attachments")
        )
    elif len(attachments) < wanted_attachments:
        found.append(Violation("missing-attachment", spec.name, "no attachment"))
    return found


def _check_measurement(
    meas: str,
    scans: Sequence[str],
    specs: Mapping[str, ScanSpec],
    bid: str,
    state: FinalState,
    blocks_of: Mapping[str, List[Dict[str, Any]]],
    attachments_of: Mapping[str, List[Dict[str, Any]]],
) -> List[Violation]:
    pid = f"{bid}/{meas}"
    dataset = state.datasets.get(pid)
    if dataset is None:
        return [Violation("lost", meas, "no measurement dataset")]
    found: List[Violation] = []
    inputs = [str(item) for item in dataset.get("inputDatasets") or []]
    wanted = [f"{bid}/{name}" for name in scans]
    if Counter(inputs) != Counter(wanted):
        found.append(
            Violation("measurement-groups", meas, f"inputDatasets {inputs}, expected {wanted}")
        )
    files = _files(blocks_of.get(pid, []))
    relative: Counter = Counter()
    for path in files.elements():
        owner = next((name for name in scans if f"{name}." in path or f"{name}/" in path), "")
        relative[_relative(path, owner) if owner else path] += 1
    expected = Counter(path for name in scans for path in specs[name].files())
    if relative != expected:
        found.append(
            Violation(
                "measurement-blocks",
                meas,
                f"files {sorted(relative.elements())}, expected {sorted(expected.elements())}",
            )
        )
    keys = Counter(_attachment_key(att) for att in attachments_of.get(pid, []))
    doubled = [key for key, count in keys.items() if count > 1]
    if doubled:
        found.append(Violation("duplicate-attachment", meas, f"{len(doubled)} attachments twice"))
    for name in scans:
        keywords = state.datasets.get(f"{bid}/{name}", {}).get("keywords") or []
        if f"{bid}/{name}" in state.datasets and meas not in keywords:
            found.append(Violation("measurement-keyword", name, f"keywords {keywords} lack {meas}"))
    return found
