"""The checks see what they are there for: a clean state passes, each breakage shows."""

from __future__ import annotations

import copy
from typing import Any, Dict

from .invariants import FinalState, check
from .schedule import ScanSpec, Schedule

BID = "93000042"


def _schedule() -> Schedule:
    scans = [
        ScanSpec("cs_00000", "nxs", detector=True, plot=True),
        ScanSpec("cs_00001", "fio", detector=False, plot=False),
    ]
    lines = ["__command__ start meas_a", "cs_00000", "__command__ stop", "meas_a", "cs_00001"]
    return Schedule(7, frozenset(), BID, scans, [], lines, [], {"meas_a": ["cs_00000"]})


def _block(pid: str, *paths: str) -> Dict[str, Any]:
    return {"datasetId": pid, "dataFileList": [{"path": path} for path in paths]}


def _state() -> FinalState:
    s0, s1, meas = f"{BID}/cs_00000", f"{BID}/cs_00001", f"{BID}/meas_a"
    return FinalState(
        datasets={
            s0: {"pid": s0, "keywords": ["scan", "meas_a"]},
            s1: {"pid": s1, "keywords": ["scan"]},
            meas: {"pid": meas, "inputDatasets": [s0]},
        },
        origdatablocks={
            "b0": _block(s0, "cs_00000.nxs", "cs_00000.png", "cs_00000/det_00000.raw"),
            "b1": _block(s1, "cs_00001.fio"),
            "b2": _block(
                meas, "raw/cs_00000.nxs", "raw/cs_00000.png", "raw/cs_00000/det_00000.raw"
            ),
        },
        attachments={"a0": {"datasetId": s0, "thumbnail": "x", "caption": ""}},
        ingested_keys=["cs_00000", "meas_a", "cs_00001"],
        done_keys=["cs_00000", "meas_a", "cs_00001"],
        drained=True,
        crashes=[],
    )


def test_a_clean_state_passes() -> None:
    assert check(_schedule(), _state()) == []


def test_each_breakage_is_named() -> None:
    state = _state()
    broken = copy.deepcopy(state)
    broken.origdatablocks["b3"] = _block(f"{BID}/cs_00001", "cs_00001.fio")
    broken.attachments["a1"] = dict(state.attachments["a0"])
    broken.datasets[f"{BID}/can_name_00004"] = {}
    broken.datasets[f"{BID}/meas_a"]["inputDatasets"] = []
    broken.done_keys.remove("cs_00001")
    kinds = sorted({violation.kind for violation in check(_schedule(), broken)})
    assert kinds == [
        "duplicate-attachment",
        "duplicate-block",
        "measurement-groups",
        "not-recorded",
        "unlisted",
    ]
    lost = copy.deepcopy(state)
    del lost.datasets[f"{BID}/cs_00001"]
    assert [v.kind for v in check(_schedule(), lost)] == ["lost"]
