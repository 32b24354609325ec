"""Test-data builders, checked with the real ``nxsfileinfo`` and the SciCat test server.

The builders are only useful if nxstools reads their files the way it reads a
beamline's, so the metadata, origdatablock, attachment and group-metadata
JSON made here from built scans is compared with what a real installation
produced (``generated/``) and posted to the SciCat-compatible server.  The
nxsfileinfo runs (about 0.2-0.4 s each) are shared by a module-scoped
fixture.
"""

from __future__ import annotations

import base64
import datetime as dt
import grp
import importlib.util
import json
import os
import pwd
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import quote

import h5py
import pytest
import requests

from scingestor.beamtime import read_beamtime
from scingestor.errors import BeamtimeError
from scingestor.testing.builders import (
    BEAMTIME_TEMPLATE,
    append_list_line,
    detector_file_paths,
    make_beamtime,
    make_scan,
    nxsfileinfo_executable,
    png_chunks,
    run_nxsfileinfo,
    write_fio_scan,
    write_multi_entry_nexus,
    write_nexus_scan,
    write_png,
)
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

from .paths import installations

BID = "99001234"
OWNER = f"{BID}-dmgt"
ACCESS = f"{BID}-dmgt,{BID}-clbt"
SKIP = "*.pyc,*.origdatablock.json,*.scan.json,*.attachment.json,*~"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# ---------------------------------------------------------------------------
# one beamtime with two NeXus scans and a FIO scan, run through nxsfileinfo
# ---------------------------------------------------------------------------


@dataclass
class Installation:
    beamtime_file: Path
    core: Path
    raw: Path
    stderr: Dict[str, str] = field(default_factory=dict)

    def meta(self, name: str) -> Path:
        return self.raw / name

    def load(self, name: str) -> Any:
        return json.loads((self.raw / name).read_text())


def _run(inst: Installation, label: str, *args: str) -> None:
    result = run_nxsfileinfo(*args)
    assert result.returncode == 0, f"{label}: {result.returncode}\n{result.stderr}"
    inst.stderr[label] = result.stderr


def _metadata(inst: Installation, scan: str, master: Path, *extra: str) -> None:
    """The built-in file_dataset_metadata_generator (+ relpath, empty units)."""
    _run(
        inst,
        f"metadata {scan}",
        "metadata",
        "-k4",
        "-o",
        str(inst.meta(f"{scan}.scan.json")),
        "--id-format",
        "{proposalId}.{beamtimeId}",
        "-z",
        "",
        "-e",
        "",
        "-b",
        str(inst.beamtime_file),
        "-p",
        f"{BID}/{scan}",
        "-w",
        OWNER,
        "-c",
        ACCESS,
        "-r",
        "raw",
        "--add-empty-units",
        *extra,
        str(master),
    )


def _origdatablock(inst: Installation, scan: str) -> None:
    """The built-in datablock_metadata_generator + scanpath postfix."""
    _run(
        inst,
        f"origdatablock {scan}",
        "origdatablock",
        "-s",
        SKIP,
        "-r",
        "",
        "-p",
        f"{BID}/{scan}",
        "-w",
        OWNER,
        "-c",
        ACCESS,
        "-o",
        str(inst.meta(f"{scan}.origdatablock.json")),
        str(inst.raw / scan),
    )


def _group(inst: Installation, scan: str) -> None:
    """The built-in metadata_generated_callback for measurement ``calib``."""
    m = inst.meta
    _run(
        inst,
        f"groupmetadata {scan}",
        "groupmetadata",
        "calib",
        "-m",
        str(m(f"{scan}.scan.json")),
        "-d",
        str(m(f"{scan}.origdatablock.json")),
        "-a",
        str(m(f"{scan}.attachment.json")),
        "-o",
        str(m("calib.scan.json")),
        "-l",
        str(m("calib.origdatablock.json")),
        "-t",
        str(m("calib.attachment.json")),
        "-p",
        f"{BID}/calib",
        "-f",
        "-k4",
    )


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    core = tmp_path_factory.mktemp("beamtime")
    beamtime_file = make_beamtime(core)
    raw = core / "raw"
    inst = Installation(beamtime_file, core, raw)
    nxs1 = make_scan(raw, "scan_00001", detectors={"det": 1, "pilatus": 2}, plot=True)
    nxs2 = make_scan(raw, "scan_00002", detectors={"det": 1}, image_shape=(3, 6, 8))
    fio = make_scan(raw, "fioscan_00005", kind="fio")
    # the ingestor's order per scan: dataset, origdatablock, attachment, callback
    _metadata(inst, "scan_00001", nxs1)
    _origdatablock(inst, "scan_00001")
    _run(
        inst,
        "attachment png",
        "attachment",
        "-w",
        OWNER,
        "-c",
        ACCESS,
        "-n",
        "",
        "-o",
        str(inst.meta("scan_00001.attachment.json")),
        str(raw / "scan_00001.png"),
    )
    _group(inst, "scan_00001")
    _metadata(inst, "scan_00002", nxs2)
    _origdatablock(inst, "scan_00002")
    _group(inst, "scan_00002")
    _metadata(inst, "fioscan_00005", fio)
    _origdatablock(inst, "fioscan_00005")
    return inst


@pytest.fixture(params=installations())
def installation(request: pytest.FixtureRequest) -> Path:
    """What an installation's nxsfileinfo wrote: ours (tests/fixtures), then the shared one."""
    return request.param


# ---------------------------------------------------------------------------
# nxsfileinfo metadata
# ---------------------------------------------------------------------------


def test_nexus_metadata_like_the_reference(inst: Installation, installation: Path) -> None:
    ours = inst.load("scan_00001.scan.json")
    reference = json.loads((installation / "generated" / "scan_00001.scan.json").read_text())
    assert set(ours) == set(reference)
    # what the beamline writers add to the reference file: the scan command
    # (``program_name@scan_command``) and the entry's ``default`` attribute
    assert set(ours["scientificMetadata"]) == set(reference["scientificMetadata"]) | {
        "ScanCommand",
        "default",
    }
    assert (ours["pid"], ours["type"], ours["proposalId"]) == (
        f"{BID}/scan_00001",
        "raw",
        "99991173.99001234",
    )
    assert ours["sourceFolder"] == f"{inst.core}/raw"
    assert ours["creationLocation"] == "/DESY/PETRA III/P00"
    assert (ours["ownerGroup"], ours["accessGroups"]) == (OWNER, ACCESS.split(","))
    assert ours["keywords"] == ["scan"]
    sm = ours["scientificMetadata"]
    assert sm["title"] == {"unit": "", "value": "scan_00001"}
    assert sm["sample"]["name"] == {"unit": "", "value": "water"}
    assert sm["start_time"]["value"] == "2026-11-20T10:00:00.000000+0100"
    assert ours["creationTime"] == ours["endTime"] == sm["end_time"]["value"]
    assert sm["data"] == reference["scientificMetadata"]["data"]
    # the fields the builder shares with the reference file come out the same
    for key in (
        "contactEmail",
        "owner",
        "ownerEmail",
        "principalInvestigator",
        "creationTime",
        "description",
        "instrumentId",
        "techniques",
    ):
        assert ours[key] == reference[key], key
    for key in (
        "end_time",
        "experiment_identifier",
        "instrument",
        "name",
        "sample",
        "start_time",
        "DOOR_proposalId",
        "beamtimeId",
    ):
        assert sm[key] == reference["scientificMetadata"][key], key
    command = "ascan pos 0.0 4.0 4 0.1"
    assert sm["program_name"] == {
        **reference["scientificMetadata"]["program_name"],
        "scan_command": command,
    }
    assert (sm["ScanCommand"], sm["default"]) == (command, "data")
    # the image detector of scan_00002 shows up as shapes only
    sm2 = inst.load("scan_00002.scan.json")["scientificMetadata"]
    assert sm2["data"]["pilatus"] == {"shape": [3, 6, 8]}
    assert sm2["instrument"]["pilatus"]["data"] == {"shape": [3, 6, 8]}


def test_fio_metadata(inst: Installation, installation: Path) -> None:
    ours = inst.load("fioscan_00005.scan.json")
    reference = json.loads((installation / "generated" / "fioscan_00005.scan.json").read_text())
    assert set(ours) == set(reference)
    assert (ours["pid"], ours["type"], ours["proposalId"]) == (
        f"{BID}/fioscan_00005",
        "raw",
        "99991173.99001234",
    )
    assert ours["sourceFolder"] == f"{inst.core}/raw"
    assert ours["description"] == "H2O distribution"  # FIO has no title: the beamtime's
    sm = ours["scientificMetadata"]
    assert set(reference["scientificMetadata"]) <= set(sm)
    assert sm["ScanCommand"] == "fioscan_00005 ascan pos 0 4 4 0.1"
    assert sm["comments"]["line_1"] == sm["ScanCommand"]
    assert sm["parameters"] == {"energy": 12000.0}
    assert sm["start_time"]["value"].startswith("2026-11-20T10:00:00")
    assert sm["end_time"]["value"].startswith("2026-11-20T10:01:00")


def test_multi_entry_metadata(tmp_path: Path, inst: Installation) -> None:
    master = write_multi_entry_nexus(tmp_path / "multi.nxs", ["scan1", "scan2"], sample="ice")
    out = tmp_path / "out.json"
    result = run_nxsfileinfo(
        "metadata",
        "-k4",
        "-o",
        str(out),
        "-e",
        "scan2",
        "-b",
        str(inst.beamtime_file),
        "-p",
        f"{BID}/multi_scan2",
        "--add-empty-units",
        str(master),
    )
    assert result.returncode == 0, result.stderr
    sm = json.loads(out.read_text())["scientificMetadata"]
    assert sm["name"] == "scan2"
    assert sm["title"]["value"] == "scan2"
    assert sm["sample"]["name"]["value"] == "ice"


def test_nxsfileinfo_runs_quietly(inst: Installation) -> None:
    assert inst.stderr and all(text == "" for text in inst.stderr.values()), inst.stderr
    assert Path(nxsfileinfo_executable()).name == "nxsfileinfo"


def test_missing_master_fails_with_status_255(tmp_path: Path) -> None:
    result = run_nxsfileinfo(
        "metadata", "-o", str(tmp_path / "x.json"), str(tmp_path / "missing.nxs")
    )
    assert result.returncode == 255
    assert "cannot be opened" in result.stderr
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------
# nxsfileinfo origdatablock
# ---------------------------------------------------------------------------


def test_origdatablock_lists_master_plot_and_detector_files(
    inst: Installation, installation: Path
) -> None:
    block = inst.load("scan_00001.origdatablock.json")
    files = {entry["path"]: entry for entry in block["dataFileList"]}
    # the scan's JSON files (already there) are skipped by the -s patterns
    assert set(files) == {
        "scan_00001.nxs",
        "scan_00001.png",
        "scan_00001/det_00000.raw",
        "scan_00001/pilatus_00000.raw",
        "scan_00001/pilatus_00001.raw",
    }
    assert (block["datasetId"], block["ownerGroup"], block["accessGroups"]) == (
        f"{BID}/scan_00001",
        OWNER,
        ACCESS.split(","),
    )
    for rel, entry in files.items():
        info = os.stat(inst.raw / rel)
        assert entry["size"] == info.st_size
        assert entry["perm"] == stat.filemode(info.st_mode)
        assert entry["uid"] == pwd.getpwuid(info.st_uid).pw_name
        assert entry["gid"] == grp.getgrgid(info.st_gid).gr_name
        when = dt.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert abs(when.timestamp() - info.st_mtime) < 1e-3
    assert block["size"] == sum(entry["size"] for entry in files.values())
    reference = json.loads(
        (installation / "generated" / "scan_00001.origdatablock.json").read_text()
    )
    assert set(block) == set(reference)
    assert set(block["dataFileList"][0]) == set(reference["dataFileList"][0])


# ---------------------------------------------------------------------------
# nxsfileinfo attachment
# ---------------------------------------------------------------------------


def test_png_attachment(inst: Installation, installation: Path) -> None:
    attachment = inst.load("scan_00001.attachment.json")
    png = (inst.raw / "scan_00001.png").read_bytes()
    assert attachment["thumbnail"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert attachment["caption"] == ""
    assert (attachment["ownerGroup"], attachment["accessGroups"]) == (OWNER, ACCESS.split(","))
    reference = json.loads((installation / "data" / "myscan_00002.attachment.json").read_text())
    assert set(attachment) == set(reference)


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="nxsfileinfo plots NeXus data with matplotlib")
@pytest.mark.parametrize("signal", ["", "pilatus"])
def test_nexus_attachment_plot(tmp_path: Path, signal: str) -> None:
    # scalar_strings=False: the form plain nxstools 4.70 plots as a 1-D signal
    # (the scalar form needs the ingestor's scingestor.metadata.nxstools_fix)
    master = write_nexus_scan(
        tmp_path / "scan_00007.nxs", image_shape=(2, 6, 8), scalar_strings=False
    )
    out = tmp_path / "scan_00007.attachment.json"
    args = ["attachment", "-w", OWNER, "-c", ACCESS, "-n", "", "-o", str(out)]
    if signal:
        args += ["-s", signal, "--override"]
    result = run_nxsfileinfo(*args, str(master))
    assert result.returncode == 0, result.stderr
    attachment = json.loads(out.read_text())
    assert attachment["thumbnail"].startswith("data:image/png;base64,")
    png = base64.b64decode(attachment["thumbnail"].split(",", 1)[1])
    assert png_chunks(png)[0][0] == b"IHDR"
    assert attachment["caption"] == ""


@pytest.mark.skipif(HAS_MATPLOTLIB, reason="only without matplotlib")
def test_nexus_attachment_without_matplotlib_writes_nothing(tmp_path: Path) -> None:
    """Without matplotlib nxsfileinfo exits 0 and writes no file: no attachment."""
    master = write_nexus_scan(tmp_path / "scan_00007.nxs", scalar_strings=False)
    out = tmp_path / "scan_00007.attachment.json"
    result = run_nxsfileinfo("attachment", "-w", OWNER, "-n", "", "-o", str(out), str(master))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not out.exists()


# ---------------------------------------------------------------------------
# nxsfileinfo groupmetadata
# ---------------------------------------------------------------------------


def test_groupmetadata_over_two_scans(inst: Installation, installation: Path) -> None:
    calib = inst.load("calib.scan.json")
    reference = json.loads((installation / "generated" / "calib.scan.json").read_text())
    assert set(calib) == set(reference)
    assert (calib["pid"], calib["type"], calib["datasetName"]) == (
        f"{BID}/calib",
        "derived",
        "calib",
    )
    assert calib["inputDatasets"] == [f"{BID}/scan_00001", f"{BID}/scan_00002"]
    assert calib["keywords"] == ["measurement", "calib"]
    assert calib["scientificMetadata"]["proposalId"] == "99991173.99001234"
    # the measurement's block and attachment files are lists of the scans' files
    assert inst.load("calib.origdatablock.json") == [
        str(inst.meta("scan_00001.origdatablock.json")),
        str(inst.meta("scan_00002.origdatablock.json")),
    ]
    # scan_00002 has no attachment file: nothing is listed for it
    assert inst.load("calib.attachment.json") == [str(inst.meta("scan_00001.attachment.json"))]


# ---------------------------------------------------------------------------
# posting what nxsfileinfo generated
# ---------------------------------------------------------------------------


def _blocks(inst: Installation, name: str) -> List[Dict[str, Any]]:
    """An origdatablock/attachment file, or each file of a measurement's list (§2.5)."""
    value = inst.load(name)
    if isinstance(value, list):
        return [json.loads(Path(path).read_text()) for path in value]
    return [value]


def test_generated_records_post_to_scicat(inst: Installation) -> None:
    """Every generated record is accepted as nxsfileinfo wrote it.

    The one change made is the ingestor's own (behaviour §4.3): blocks and
    attachments of a measurement's list files name the scan in
    ``datasetId`` (from ``-p`` of the scan's run) and are re-pointed at the
    measurement's pid.  ``usedSoftware`` of the derived dataset is a string;
    the backend's ``@IsString({each: true})`` takes a bare string and stores
    a one-item list, so no normalisation is needed.
    """
    account = next(a for a in DEFAULT_ACCOUNTS if a.username == "ingestor")
    with SciCatServer() as srv:
        login = requests.post(
            f"{srv.url}/auth/login",
            timeout=10,
            json={"username": account.username, "password": account.password},
        )
        assert login.status_code == 201, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        def post(path: str, body: Any) -> requests.Response:
            return requests.post(f"{srv.url}/{path}", json=body, headers=headers, timeout=10)

        for scan in ("scan_00001", "scan_00002", "fioscan_00005", "calib"):
            answer = post("Datasets", inst.load(f"{scan}.scan.json"))
            assert answer.status_code == 201, f"{scan}: {answer.text}"
            pid = answer.json()["pid"]
            assert pid == f"{BID}/{scan}"
            for block in _blocks(inst, f"{scan}.origdatablock.json"):
                if scan == "calib":
                    block["datasetId"] = pid  # the ingestor re-points listed blocks
                assert block["datasetId"] == pid
                answer = post("OrigDatablocks", block)
                assert answer.status_code == 201, f"{scan} block: {answer.text}"
            if inst.meta(f"{scan}.attachment.json").exists():
                for attachment in _blocks(inst, f"{scan}.attachment.json"):
                    assert "datasetId" not in attachment  # the URL names the dataset
                    answer = post(f"Datasets/{quote(pid, safe='')}/Attachments", attachment)
                    assert answer.status_code == 201, f"{scan} attachment: {answer.text}"
                    assert answer.json()["datasetId"] == pid
        stored = requests.get(
            f"{srv.url}/Datasets/{quote(f'{BID}/calib', safe='')}", headers=headers, timeout=10
        ).json()
        assert stored["type"] == "derived"
        assert stored["usedSoftware"] == ["https://github.com/nexdatas/nxstools"]
        assert stored["numberOfFiles"] == 5 + 2  # both scans' blocks, again for calib


# ---------------------------------------------------------------------------
# the builders themselves
# ---------------------------------------------------------------------------


def test_png_is_valid(tmp_path: Path) -> None:
    data = write_png(tmp_path / "a.png", width=5, height=3, seed=7).read_bytes()
    chunks = png_chunks(data)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (5, 3, 8, 2, 0, 0, 0)
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == 3 * (1 + 5 * 3)
    assert chunks[2][1] == b""
    assert write_png(tmp_path / "b.png", width=5, height=3, seed=7).read_bytes() == data
    assert write_png(tmp_path / "c.png", width=5, height=3, seed=8).read_bytes() != data
    broken = bytearray(data)
    broken[40] ^= 0xFF
    with pytest.raises(ValueError, match="CRC"):
        png_chunks(bytes(broken))
    with pytest.raises(ValueError, match="signature"):
        png_chunks(data[1:])


def test_append_list_line_gives_the_writers_bytes(tmp_path: Path) -> None:
    path = tmp_path / "scicat-datasets-99001234.lst"
    append_list_line(path, "scan_1")
    append_list_line(path, "scan_2")
    assert path.read_bytes() == b"\nscan_1\nscan_2"


def test_beamtime_round_trip(tmp_path: Path, installation: Path) -> None:
    path = make_beamtime(tmp_path)
    assert path.name == "beamtime-metadata-99001234.json"
    reference = json.loads((installation / "data" / "beamtime-metadata-99001234.json").read_text())
    data = json.loads(path.read_text())
    assert set(data) == set(reference) == set(BEAMTIME_TEMPLATE)
    beamtime = read_beamtime(str(path))
    assert (beamtime.beamtime_id, beamtime.proposal_id, beamtime.beamline) == (
        "99001234",
        "99991173",
        "p00",
    )
    assert beamtime.core_path == str(tmp_path.resolve())
    assert beamtime.proposal_type == "I"
    assert beamtime.data["facility"] == "PETRA III"
    assert beamtime.data["beamlineAlias"] == "P00"
    assert beamtime.data["pi"]["email"] == "appuser@example.com"

    other = make_beamtime(
        tmp_path / "p10",
        "11012345",
        proposal_id="11000001",
        beamline="p10",
        core_path="/asap3/p10/2026/data/11012345",
        proposal_type="P",
        prefix="bt-mt-",
        postfix=".jsn",
        title="Ice",
        unixId=None,
        accessGroups=["a", "b"],
    )
    assert other.name == "bt-mt-11012345.jsn"
    beamtime = read_beamtime(str(other))
    assert (
        beamtime.beamtime_id,
        beamtime.beamline,
        beamtime.core_path,
        beamtime.proposal_type,
        beamtime.access_groups,
    ) == ("11012345", "p10", "/asap3/p10/2026/data/11012345", "P", ["a", "b"])
    assert beamtime.data["title"] == "Ice" and "unixId" not in beamtime.data

    broken = make_beamtime(tmp_path / "nocore", corePath=None)
    with pytest.raises(BeamtimeError, match="corePath"):
        read_beamtime(str(broken))


def test_nexus_structure_and_determinism(tmp_path: Path) -> None:
    extra = {
        "sample/temperature": {"value": 295.0, "units": "K"},
        "instrument/source": {"NX_class": "NXsource", "current": 100.5},
        "notes/comment": "ok",
    }
    path = write_nexus_scan(
        tmp_path / "s.nxs",
        points=7,
        image_shape=(4, 5),
        extra=extra,
        entry="entry1",
        signal="ct",
        axis="mot",
    )
    first = path.read_bytes()
    assert (
        write_nexus_scan(
            tmp_path / "s.nxs",
            points=7,
            image_shape=(4, 5),
            extra=extra,
            entry="entry1",
            signal="ct",
            axis="mot",
        ).read_bytes()
        == first
    )
    with h5py.File(path, "r") as h5:
        assert h5.attrs["NX_class"] == "NXroot"
        entry = h5["entry1"]
        assert entry.attrs["NX_class"] == "NXentry"
        assert entry["title"].shape == ()  # scalar strings, as the writers store them
        assert entry["title"][()].decode() == "s"
        assert entry["program_name"][()].decode() == "NexDaTaS"
        assert entry["program_name"].attrs["scan_command"] == "ascan mot 0.0 6.0 6 0.1"
        assert h5.attrs["default"] == "entry1"
        assert entry.attrs["default"] == "data"
        assert entry["instrument"].attrs["NX_class"] == "NXinstrument"
        assert entry["sample"].attrs["NX_class"] == "NXsample"
        data = entry["data"]
        assert (data.attrs["NX_class"], data.attrs["signal"], data.attrs["axes"]) == (
            "NXdata",
            "ct",
            "mot",
        )
        assert data["ct"].shape == data["mot"].shape == (7,)
        assert list(data["mot"][()]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert entry["instrument/pilatus"].attrs["NX_class"] == "NXdetector"
        assert data["pilatus"].shape == (4, 5)
        assert entry["sample/temperature"].attrs["units"] == "K"
        assert entry["instrument/source"].attrs["NX_class"] == "NXsource"
        assert entry["instrument/source/current"][()] == 100.5
        assert entry["notes"].attrs["NX_class"] == "NXcollection"
    with pytest.raises(ValueError):
        write_nexus_scan(tmp_path / "bad.nxs", image_shape=(5,))
    with pytest.raises(ValueError):
        write_nexus_scan(tmp_path / "bad.nxs", image_signal=True)
    image = write_nexus_scan(
        tmp_path / "i.nxs", image_shape=(3, 4, 5), image_signal=True, scan_command=""
    )
    with h5py.File(image, "r") as h5:
        assert h5["scan/data"].attrs["signal"] == "pilatus"
        assert h5["scan/data/pilatus"].shape == (3, 4, 5)
        assert "scan_command" not in h5["scan/program_name"].attrs

    multi = write_multi_entry_nexus(tmp_path / "m.nxs", ["scan1", "scan2", "scan3"], points=3)
    with h5py.File(multi, "r") as h5:
        assert sorted(h5) == ["scan1", "scan2", "scan3"]
        assert all(h5[name].attrs["NX_class"] == "NXentry" for name in h5)
        assert h5["scan3/title"][()].decode() == "scan3"
        assert h5.attrs["default"] == "scan1"
        assert list(h5["scan1/data/counts"][()]) != list(h5["scan2/data/counts"][()])
    with pytest.raises(ValueError):
        write_multi_entry_nexus(tmp_path / "d.nxs", ["a", "a"])


def test_fio_file_sections(tmp_path: Path) -> None:
    path = write_fio_scan(
        tmp_path / "f_00001.fio",
        points=3,
        counters=("c1", "c2"),
        parameters={"energy": 9000.0, "sample": "ice"},
        start_time=dt.datetime(2026, 11, 19, 8, 5, 0),
    )
    lines = path.read_text().splitlines()
    assert lines[3:6] == [
        "%c",
        "f_00001 ascan pos 0 2 2 0.1",
        "user petra3 Acquisition started at Thu Nov 19 08:05:00 2026",
    ]
    assert "energy = 9000.0" in lines and "sample = ice" in lines
    data = lines[lines.index("%d") + 1 :]
    assert data[:4] == [
        " Col 1 pos DOUBLE",
        " Col 2 c1 DOUBLE",
        " Col 3 c2 DOUBLE",
        " Col 4 timestamp DOUBLE",
    ]
    rows = [row.split() for row in data[4:7]]
    assert [row[0] for row in rows] == ["0.0", "1.0", "2.0"]
    assert all(len(row) == 4 for row in rows)
    assert data[7].startswith("! Acquisition ended at ")


def test_make_scan_layout(tmp_path: Path) -> None:
    master = make_scan(
        tmp_path, "s_00003", detectors={"lambda": 2, "det": 1}, plot=True, title="my title"
    )
    assert master == tmp_path / "s_00003.nxs"
    expected = detector_file_paths(tmp_path, "s_00003", {"lambda": 2, "det": 1})
    assert [p.relative_to(tmp_path).as_posix() for p in expected] == [
        "s_00003/lambda_00000.raw",
        "s_00003/lambda_00001.raw",
        "s_00003/det_00000.raw",
    ]
    assert all(p.stat().st_size == 64 for p in expected)
    assert expected[0].read_bytes() != expected[1].read_bytes()
    png_chunks((tmp_path / "s_00003.png").read_bytes())
    with h5py.File(master, "r") as h5:
        assert h5["scan/title"][()].decode() == "my title"
    assert make_scan(tmp_path, "f_00004", kind="fio").name == "f_00004.fio"
    assert not (tmp_path / "f_00004").exists()
    with pytest.raises(ValueError):
        make_scan(tmp_path, "x", kind="tiff")
