"""Beamtime metadata files, blacklists and core-path conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scingestor.beamtime import (
    BeamtimeFilter,
    find_beamtime_files,
    read_beamtime,
    relative_scan_path,
)
from scingestor.config import config_from_dict
from scingestor.errors import BeamtimeError
from scingestor.layout import PathConverter, scandir_blacklisted

from .paths import FIXTURES, REFERENCE

DATA = FIXTURES / "data"


@pytest.mark.parametrize(
    "data, core_path, pi_email",
    [
        pytest.param(
            DATA, "/asap3/petra3/gpfs/p00/2026/data/99001234", "appuser@example.com", id="own"
        ),
        pytest.param(
            REFERENCE / "data",
            "/asap3/petra3/gpfs/p00/2022/data/9901234",
            "appuser@fake.com",
            id="reference",
            marks=pytest.mark.requires_shared,
        ),
    ],
)
def test_installation_beamtime_file(data: Path, core_path: str, pi_email: str) -> None:
    beamtime = read_beamtime(str(data / "beamtime-metadata-99001234.json"))
    assert (beamtime.beamtime_id, beamtime.proposal_id, beamtime.beamline) == (
        "99001234",
        "99991173",
        "p00",
    )
    assert beamtime.core_path == core_path
    assert beamtime.proposal_type == "I"
    assert beamtime.effective_owner_group == "99001234-dmgt"
    assert beamtime.effective_access_groups == [
        "99001234-dmgt",
        "99001234-clbt",
        "99001234-part",
        "p00dmgt",
        "p00staff",
    ]
    assert beamtime.data["pi"]["email"] == pi_email
    assert beamtime.directory == str(data)


def test_groups_from_file_and_proposal(tmp_path: Path) -> None:
    data = json.loads((DATA / "beamtime-metadata-99001234.json").read_text())
    data.update(ownerGroup="own", accessGroups=["a", "b"])
    path = tmp_path / "beamtime-metadata-99001234.json"
    path.write_text(json.dumps(data))
    beamtime = read_beamtime(str(path))
    assert beamtime.effective_owner_group == "own"
    assert beamtime.effective_access_groups == ["a", "b"]
    filled = read_beamtime(str(DATA / "beamtime-metadata-99001234.json")).with_groups(
        "prop-owner", ["prop-a"]
    )
    assert filled.effective_owner_group == "prop-owner"
    assert filled.effective_access_groups == ["prop-a"]


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"corePath": None}, "field 'corePath': missing"),
        ({"beamtimeId": ""}, "field 'beamtimeId': missing"),
        ({"beamline": ["p00"]}, "field 'beamline': must be a string"),
        ({"accessGroups": [1, 2]}, "field 'accessGroups'"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, change: dict, fragment: str) -> None:
    data = json.loads((DATA / "beamtime-metadata-99001234.json").read_text())
    data.update(change)
    path = tmp_path / "beamtime-metadata-1.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BeamtimeError, match=fragment) as info:
        read_beamtime(str(path))
    assert str(path) in str(info.value)


def test_broken_json_is_named() -> None:
    path = DATA / "beamtime-metadata-99999999.json"
    with pytest.raises(BeamtimeError, match="not valid JSON") as info:
        read_beamtime(str(path))
    assert str(path) in str(info.value)


def test_find_with_custom_prefix_and_postfix() -> None:
    default = config_from_dict({})
    names = [Path(p).name for p in find_beamtime_files(str(DATA), default)]
    assert "beamtime-metadata-99001234.json" in names and "bt-mt-99001234.jsn" not in names
    custom = config_from_dict(
        {"beamtime_filename_prefix": "bt-mt-", "beamtime_filename_postfix": ".jsn"}
    )
    assert [Path(p).name for p in find_beamtime_files(str(DATA), custom)] == [
        "bt-mt-99001233.jsn",
        "bt-mt-99001234.jsn",
    ]


def test_blacklists(tmp_path: Path) -> None:
    blacklist = tmp_path / "blacklist.lst"
    shutil.copy(DATA / "beamtimeid_blacklist.lst", blacklist)
    config = config_from_dict({"beamtimeid_blacklist_file": str(blacklist)})
    keep = BeamtimeFilter(config)
    commissioning = read_beamtime(str(DATA / "beamtime-metadata-99001233.json"))
    assert "proposal type 'P'" in keep.reason_to_skip(commissioning)
    listed = read_beamtime(str(DATA / "beamtime-metadata-99001234.json"))
    assert "99001234" in keep.reason_to_skip(listed)
    other = read_beamtime(str(DATA / "beamtime-metadata-99001236.json"))
    assert keep.reason_to_skip(other) is None
    blacklist.write_text("99001236\n")  # ids can also leave the list
    import os

    os.utime(blacklist, (1, 1))
    assert keep.reason_to_skip(listed) is None
    assert keep.reason_to_skip(other) is not None


def test_scandir_blacklist_covers_subdirectories() -> None:
    config = config_from_dict({})
    assert scandir_blacklisted("/gpfs/current/processed", config) == "/gpfs/current/processed"
    assert scandir_blacklisted("/gpfs/current/processed/a/b", config)
    assert scandir_blacklisted("/gpfs/current/processed_not", config) is None
    converter = PathConverter("/gpfs/current", "/asap3/p00/2022/data/1", True)
    core = config_from_dict({"scandir_blacklist": ["/asap3/p00/2022/data/1/scratch"]})
    assert scandir_blacklisted("/gpfs/current/scratch/x", core, converter)


def test_path_converter() -> None:
    converter = PathConverter("/gpfs/current", "/asap3/p00/2022/data/1", True)
    assert converter.to_core("/gpfs/current/raw/s1") == "/asap3/p00/2022/data/1/raw/s1"
    assert converter.to_core("/gpfs/current") == "/asap3/p00/2022/data/1"
    assert converter.to_core("/gpfs/currentx/raw") == "/gpfs/currentx/raw"
    assert converter.to_local("/asap3/p00/2022/data/1/raw") == "/gpfs/current/raw"
    off = PathConverter("/gpfs/current", "/asap3", False)
    assert off.to_core("/gpfs/current/raw") == "/gpfs/current/raw"


def test_relative_scan_path() -> None:
    beamtime = read_beamtime(str(DATA / "beamtime-metadata-99001234.json"))
    assert relative_scan_path(str(DATA / "raw" / "special"), beamtime) == "raw/special"
    assert relative_scan_path(str(DATA), beamtime) == "."
