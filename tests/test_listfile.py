"""The dataset list file grammar, on every line form and on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scingestor.errors import ListFileError
from scingestor.listfile import (
    ScanLine,
    StartMeasurement,
    StopMeasurement,
    parse_line,
    parse_text,
    read_list_file,
)

from .paths import installations


def test_plain_scan() -> None:
    record = parse_line("myscan_00012\n", 3, "list.lst")
    assert record == ScanLine(
        text="myscan_00012", scanname="myscan_00012", masterscanname="myscan_00012", lineno=3
    )
    assert not record.is_reingestion


def test_reingestion_with_timestamp() -> None:
    record = parse_line("myscan_00012:1702988846.0770347")
    assert isinstance(record, ScanLine)
    assert record.scanname == "myscan_00012"
    assert record.reingest_id == "1702988846.0770347"
    assert record.is_reingestion
    assert record.text == "myscan_00012:1702988846.0770347"


def test_detector_subdirectories() -> None:
    record = parse_line("myscan_00012 pilatus1 ../lambda1/")
    assert isinstance(record, ScanLine)
    assert record.scanname == "myscan_00012"
    assert record.detectors == ("pilatus1", "../lambda1/")


def test_reingestion_with_detectors() -> None:
    record = parse_line("myscan_00012:17.5 pilatus1")
    assert isinstance(record, ScanLine)
    assert (record.scanname, record.reingest_id, record.detectors) == (
        "myscan_00012",
        "17.5",
        ("pilatus1",),
    )


def test_scan_in_subdirectory() -> None:
    record = parse_line("sub/myscan_00012")
    assert isinstance(record, ScanLine) and record.scanname == "sub/myscan_00012"


@pytest.mark.parametrize(
    "line, master, entry, scan, ident",
    [
        ("myscan::/scan12;myscan_00012", "myscan", "scan12", "myscan_00012", None),
        ("myscan::/scan12;myscan_00012:1702.5", "myscan", "scan12", "myscan_00012", "1702.5"),
        ("myscan::/scan12", "myscan", "scan12", "myscan", None),
        ("myscan::/scan12:99", "myscan", "scan12", "myscan", "99"),
    ],
)
def test_multi_entry(line: str, master: str, entry: str, scan: str, ident) -> None:
    record = parse_line(line)
    assert isinstance(record, ScanLine)
    assert (record.masterscanname, record.entryname, record.scanname, record.reingest_id) == (
        master,
        entry,
        scan,
        ident,
    )
    assert record.is_multi_entry and record.is_reingestion


def test_commands() -> None:
    assert parse_line("__command__ start mycalib6") == StartMeasurement(
        text="__command__ start mycalib6", name="mycalib6"
    )
    assert parse_line("__command__ stop") == StopMeasurement(text="__command__ stop")
    assert parse_line("__command__ start") == StartMeasurement(text="__command__ start", name=None)


def test_blank_lines_are_nothing() -> None:
    assert parse_line("   ") is None
    assert parse_line("") is None


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("__command__ pause", "unknown command"),
        ("__command__", "without a command"),
        ("__command__ stop now", "takes no argument"),
        ("__command__ start two words", "cannot contain spaces"),
        ("../../etc/passwd", "leaves the scan directory"),
        ("a/../../b", "leaves the scan directory"),
        ("/etc/passwd", "relative"),
        ("scan /etc", "relative"),
        (":123", "empty scan name"),
        ("myscan::;x", "no NXentry"),
        ("myscan::/a/b;x", "one group"),
        ("bad\x00line", "control"),
        ("x" * 9000, "too long"),
    ],
)
def test_malformed_lines_name_file_and_line(line: str, fragment: str) -> None:
    with pytest.raises(ListFileError) as info:
        parse_line(line, 7, "/gpfs/current/raw/scicat-datasets-1.lst")
    message = str(info.value)
    assert message.startswith("/gpfs/current/raw/scicat-datasets-1.lst:7: ")
    assert fragment in message
    assert info.value.line == 7


def test_parse_text_skips_bad_lines_and_keeps_the_rest() -> None:
    text = "scan_1\n__command__ jump\n\nscan_2\n../x\n__command__ stop"
    records, errors = parse_text(text, "l.lst")
    assert [r.text for r in records] == ["scan_1", "scan_2", "__command__ stop"]
    assert [e.line for e in errors] == [2, 5]


def test_writer_form_with_leading_newline() -> None:
    # sardana writers append "\n" + record: the file starts with an empty line
    records, errors = parse_text("\nscan_1\nscan_2")
    assert not errors and [r.lineno for r in records] == [2, 3]


def test_shell_metacharacters_are_just_text() -> None:
    record = parse_line("scan;rm_-rf_$(touch_x)'\"`")
    assert isinstance(record, ScanLine) and record.scanname == "scan;rm_-rf_$(touch_x)'\"`"


@pytest.mark.parametrize("installation", installations())
def test_installation_list_files_parse(installation: Path) -> None:
    files = sorted((installation / "data").glob("s*.lst"))
    assert files
    for path in files:
        records, errors = read_list_file(str(path))
        assert not errors, errors
    records, _ = read_list_file(str(installation / "data" / "scicat-datasets-99011234.lst"))
    assert isinstance(records[0], StartMeasurement) and records[0].name == "mycalib"


def test_undecodable_bytes_make_an_error(tmp_path: Path) -> None:
    path = tmp_path / "l.lst"
    path.write_bytes(b"scan_1\nsc\xffan\nscan_3\n")
    records, errors = read_list_file(str(path))
    assert [r.text for r in records] == ["scan_1", "scan_3"]
    assert len(errors) == 1 and errors[0].line == 2


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    records, errors = parse_text(text, "fuzz.lst")
    for record in records:
        if isinstance(record, ScanLine):
            assert not record.scanname.startswith("/")
            assert ".." not in record.scanname.split("/")
    for error in errors:
        assert str(error).startswith("fuzz.lst:")
