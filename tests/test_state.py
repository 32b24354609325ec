"""The ingested list: old files honoured, our records readable by old tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from scingestor.state import IngestedList, IngestedRecord, parse_ingested_line

from .paths import installations


@pytest.mark.parametrize("installation", installations())
def test_installation_ingested_list_is_honoured(installation: Path) -> None:
    path = installation / "generated" / "scicat-ingested-datasets-99001234.lst"
    ingested = IngestedList(str(path)).load()
    assert len(ingested) == 4
    for key in ("scan_00001", "scan_00002", "fioscan_00005", "calib"):
        assert ingested.is_done(key)
    first = path.read_text().split("\n")[0].split()  # the line of scan_00001
    assert first[0] == "scan_00001" and ingested.latest("scan_00001").ds == float(first[1])
    assert ingested.pending(["scan_00001", "scan_00003", "calib"]) == ["scan_00003"]


def test_line_forms() -> None:
    assert parse_ingested_line(
        "myscan_00001 1656948245.6753829 1656948246.0512307 0"
    ) == IngestedRecord("myscan_00001", 1656948245.6753829, 1656948246.0512307, 0.0)
    record = parse_ingested_line("myscan_00001 pilatus1 ../lambda/ 1.5 2.5 -1")
    assert record.key == "myscan_00001 pilatus1 ../lambda/" and record.att == -1
    assert parse_ingested_line("old_scan") == IngestedRecord("old_scan", legacy=True)
    assert parse_ingested_line("old_scan 1 2") == IngestedRecord("old_scan", legacy=True)
    assert parse_ingested_line("  ") is None


def test_done_rules(tmp_path: Path) -> None:
    path = tmp_path / "ingested.lst"
    path.write_text(
        "ok 1.5 2.5 0\nfailed_db 1.5 -1 0\nfailed_att 1.5 2.5 -1\n"
        "no_ds 0 2.5 0\nlegacy\nwith_att 1.5 2.5 3.5\n"
    )
    retry = IngestedList(str(path)).load()
    assert [
        k
        for k in ("ok", "failed_db", "failed_att", "no_ds", "legacy", "with_att")
        if retry.is_done(k)
    ] == ["ok", "legacy", "with_att"]
    strict = IngestedList(str(path), require_attachment=True).load()
    assert [k for k in ("ok", "legacy", "with_att") if strict.is_done(k)] == ["legacy", "with_att"]
    no_retry = IngestedList(str(path), retry_failed=False).load()
    assert no_retry.is_done("failed_db") and no_retry.is_done("no_ds")


def test_append_is_readable_and_repairs_missing_newline(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ingested.lst"
    path.parent.mkdir()
    path.write_text("first 1.0 2.0 0")  # an old writer left no newline
    ingested = IngestedList(str(path)).load()
    ingested.append(IngestedRecord("second", 1656948245.6753829, 2.0, -1))
    assert path.read_text() == "first 1.0 2.0 0\nsecond 1656948245.6753829 2.0 -1\n"
    again = IngestedList(str(path)).load()
    assert again.is_done("first") and not again.is_done("second")
    assert again.last("second").att == -1


def test_append_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "var" / "gpfs" / "current" / "raw" / "ingested.lst"
    ingested = IngestedList(str(path)).load()
    ingested.append(IngestedRecord("s", 1.0, 2.0, 0.0))
    assert path.read_text() == "s 1.0 2.0 0\n"
