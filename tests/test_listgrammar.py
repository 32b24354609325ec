"""One list grammar for the ingestor and the macros (issue 19, step 3).

The macros run in a MacroServer's Python, which may lack scingestor, so the
macro folder carries the grammar module as a file of its own.  These tests
tie the two: the same file byte for byte, the ingestor's parser and the
macros' readings agree on every list text, and the three callers of the
measurement-name rule (list parser, device commands, macros) refuse the same
names.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scingestor import listgrammar
from scingestor.config import IngestorConfig
from scingestor.layout import list_file_name
from scingestor.listfile import StartMeasurement, parse_text
from scingestor.measurement import MeasurementState

REPO = Path(__file__).resolve().parents[1]
MACRO_COPY = REPO / "macros" / "_scicat_listgrammar.py"


def load_macro_copy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_scicat_listgrammar_under_test", MACRO_COPY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_macros_carry_the_very_same_grammar_file() -> None:
    """Edit scingestor/listgrammar.py, then copy it over macros/_scicat_listgrammar.py."""
    assert listgrammar.__file__ is not None
    assert MACRO_COPY.read_bytes() == Path(listgrammar.__file__).read_bytes(), (
        "macros/_scicat_listgrammar.py differs from scingestor/listgrammar.py: "
        "cp scingestor/listgrammar.py macros/_scicat_listgrammar.py"
    )


def test_the_grammar_imports_the_standard_library_only() -> None:
    copy = load_macro_copy()
    assert copy.current_in_text("__command__ start a\n") == "a"
    text = MACRO_COPY.read_text()
    assert "from ." not in text and "import scingestor" not in text


def test_the_default_list_file_name_is_the_ingestors() -> None:
    config = IngestorConfig()
    for beamtime in ("99001234", "11"):
        assert listgrammar.list_file_name(beamtime) == list_file_name(config, beamtime)


LINES = [
    "scan_00001",
    "scan_00002 det1 ../det2",
    "sub/scan_00003",
    "scan_00001:17.5",
    "x::/scan4;x_00004",
    "x::/scan4;x_00004:3",
    "calib",
    "calib:12.5",
    "other:1",
    "__command__ start calib",
    "__command__ start other",
    "__command__ start",
    "__command__ stop",
    "__command__ start two words",
    "__command__ start ..",
    "__command__ start a:b",
    "__command__ jump",
    "../escape",
    "/abs",
    "",
]


def ingestor_reading(text: str, name: str) -> "tuple[str, int]":
    """What the ingestor makes of a list text: the current measurement at its end
    and how many scans it groups into *name* (its own parser and state)."""
    records, _errors = parse_text(text, "list.lst")
    state, count = MeasurementState(), 0
    for record in records:
        if isinstance(record, listgrammar.ScanLine):
            if not state.is_measurement(record) and state.current == name:
                count += 1
        else:
            state.apply(record, "list.lst")
    return state.current, count


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=14))
def test_the_macros_read_a_list_as_the_ingestor_does(lines: List[str]) -> None:
    text = "\n".join(lines)
    current, count = ingestor_reading(text, "calib")
    assert listgrammar.current_in_text(text) == current
    assert listgrammar.measurement_scans(text, "calib") == count


@pytest.mark.parametrize(
    "name, ok",
    [
        ("calib-2", True),
        ("calib_{x}", True),
        ("", False),
        ("two words", False),
        ("a/b", False),
        ("a:b", False),
        ("..", False),
        (".", False),
        ("tab\there", False),
    ],
)
def test_one_measurement_name_rule(name: str, ok: bool) -> None:
    """A name the device or the macros accept is one the list parser accepts."""
    assert (listgrammar.measurement_name_problem(name) == "") is ok
    if name and not any(c.isspace() for c in name):
        records, errors = parse_text(f"__command__ start {name}")
        assert (not errors and isinstance(records[0], StartMeasurement)) is ok
