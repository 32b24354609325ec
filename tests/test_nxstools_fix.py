"""NeXus thumbnails as beamline writers make the files: the nxstools correction.

``scingestor.metadata.nxstools_fix`` corrects one nxstools behaviour (a
scalar NXentry title gives no thumbnail).  These tests run the real
``nxsfileinfo`` program (uncorrected), the warm workers and the corrected
command on NeXus files built like NeXDaTaS writes them.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy
import pytest

from scingestor.metadata import nxstools_fix
from scingestor.metadata.runner import CommandRunner, subprocess_argv
from scingestor.testing.builders import png_chunks, run_nxsfileinfo, write_nexus_scan, write_png

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="nxsfileinfo draws thumbnails with matplotlib",
)

#: the signal shapes of beamline scans: a counter, an image, a stack of frames
SHAPES: Dict[str, Dict[str, Any]] = {
    "1-D": {},
    "2-D": {"image_shape": (6, 8), "image_signal": True},
    "3-D": {"image_shape": (3, 6, 8), "image_signal": True},
}


def attachment_argv(master: Path, out: Path, *extra: str) -> List[str]:
    """The built-in attachment_metadata_generator command line (+ *extra* switches)."""
    return [
        "nxsfileinfo",
        "attachment",
        "-w",
        "99001234-dmgt",
        "-c",
        "99001234-dmgt,p00staff",
        "-n",
        "",
        *extra,
        "-o",
        str(out),
        str(master),
    ]


@pytest.fixture(scope="module")
def runners():
    fast = CommandRunner(in_process=True, workers=1)
    slow = CommandRunner(in_process=False)
    yield {"warm workers": fast, "command": slow}
    fast.close()


def test_unpatched_nxstools_still_drops_the_thumbnail(tmp_path: Path) -> None:
    """The fault the correction is for is still in the installed nxstools.

    When this test fails, nxstools writes the thumbnail of a scalar-title
    NeXus file by itself: delete ``scingestor/metadata/nxstools_fix.py``,
    its call sites (``inprocess.py``, ``runner.py``) and this file.
    """
    master = write_nexus_scan(tmp_path / "scan_00001.nxs")
    out = tmp_path / "scan_00001.attachment.json"
    result = run_nxsfileinfo(*attachment_argv(master, out)[1:])
    assert result.returncode == 0, result.stderr
    assert not out.exists(), "nxstools now plots scalar titles: drop nxstools_fix"


@pytest.mark.parametrize("path", ["warm workers", "command"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_beamline_nexus_gets_a_thumbnail(runners, tmp_path: Path, path: str, shape: str) -> None:
    master = write_nexus_scan(tmp_path / "scan_00002.nxs", **SHAPES[shape])
    out = tmp_path / "scan_00002.attachment.json"
    runners[path].run(attachment_argv(master, out))
    attachment = json.loads(out.read_text())
    assert attachment["caption"] == ""
    assert (attachment["ownerGroup"], attachment["accessGroups"]) == (
        "99001234-dmgt",
        ["99001234-dmgt", "p00staff"],
    )
    prefix = "data:image/png;base64,"
    assert attachment["thumbnail"].startswith(prefix)
    png = base64.b64decode(attachment["thumbnail"][len(prefix) :])
    assert png_chunks(png)[0][0] == b"IHDR"


@pytest.mark.parametrize("path", ["warm workers", "command"])
def test_scalar_title_plots_as_nxstools_plots_a_listed_title(
    runners, tmp_path: Path, path: str
) -> None:
    """The corrected thumbnail is the one nxstools draws for a title of shape (1,)."""
    scalar = write_nexus_scan(tmp_path / "a" / "scan_00003.nxs")
    listed = write_nexus_scan(tmp_path / "b" / "scan_00003.nxs", scalar_strings=False)
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    runners[path].run(attachment_argv(scalar, ours))
    result = run_nxsfileinfo(*attachment_argv(listed, theirs)[1:])
    assert result.returncode == 0, result.stderr
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("path", ["warm workers", "command"])
@pytest.mark.parametrize("case", ["1-D listed title", "2-D", "3-D", "png", "caption"])
def test_what_nxstools_handles_is_unchanged(runners, tmp_path: Path, path: str, case: str) -> None:
    """Byte for byte what the uncorrected ``nxsfileinfo`` program writes."""
    if case == "png":
        master = write_png(tmp_path / "scan_00004.png")
    elif case == "1-D listed title":
        master = write_nexus_scan(tmp_path / "scan_00004.nxs", scalar_strings=False)
    elif case == "caption":
        master = write_nexus_scan(
            tmp_path / "scan_00004.nxs", scalar_strings=False, **SHAPES["2-D"]
        )
    else:
        master = write_nexus_scan(tmp_path / "scan_00004.nxs", **SHAPES[case])
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    extra = ["-t", "H2O scan", "--parameters-in-caption"] if case == "caption" else []
    runners[path].run(attachment_argv(master, ours, *extra))
    result = run_nxsfileinfo(*attachment_argv(master, theirs, *extra)[1:])
    assert result.returncode == 0, result.stderr
    assert ours.read_bytes() == theirs.read_bytes()


def test_thumbnails_in_a_row_stay_the_programs(runners, tmp_path: Path) -> None:
    """A warm worker keeps renderers and text layouts between thumbnails: no trace in them.

    Thumbnails of different sizes of data, titles and signal shapes, one
    after another in one worker (a repeated title and tick labels reuse
    what an earlier thumbnail left), each byte for byte the program's.
    """
    scans = [
        ("scan_00011", {"points": 5}),
        ("scan_00012", {"points": 40, **SHAPES["2-D"]}),
        ("scan_00011", {"points": 30}),
        ("scan_00013", {"points": 7, **SHAPES["3-D"]}),
        ("scan_00011", {"points": 5}),
    ]
    for index, (name, shape) in enumerate(scans):
        master = write_nexus_scan(
            tmp_path / f"{index}" / f"{name}.nxs", scalar_strings=False, **shape
        )
        ours, theirs = tmp_path / f"ours{index}.json", tmp_path / f"theirs{index}.json"
        runners["warm workers"].run(attachment_argv(master, ours))
        result = run_nxsfileinfo(*attachment_argv(master, theirs)[1:])
        assert result.returncode == 0, result.stderr
        assert "data:image/png;base64," in ours.read_text()
        assert ours.read_bytes() == theirs.read_bytes(), (index, name, shape)


def test_the_command_keeps_every_argument() -> None:
    argv = ["nxsfileinfo", "attachment", "-t", "a b; $(x)", "-o", "o.json", "s.nxs"]
    assert subprocess_argv(argv) == [
        sys.executable,
        "-m",
        "scingestor.metadata.nxstools_fix",
        *argv[1:],
    ]
    beside = str(Path(sys.executable).parent / "nxsfileinfo")
    assert subprocess_argv([beside, "metadata"])[1:3] == ["-m", "scingestor.metadata.nxstools_fix"]
    # another installation's nxsfileinfo, or another program, runs as given
    assert subprocess_argv(["/nowhere/bin/nxsfileinfo", "metadata"]) == [
        "/nowhere/bin/nxsfileinfo",
        "metadata",
    ]
    assert subprocess_argv(["/bin/true", "x"]) == ["/bin/true", "x"]


def test_text_arguments_become_strings() -> None:
    assert nxstools_fix._text(numpy.array("scan_1")) == "scan_1"
    assert type(nxstools_fix._text(numpy.array("scan_1"))) is str
    assert nxstools_fix._text(numpy.array(b"scan_1")) == "scan_1"
    assert nxstools_fix._text(numpy.array("x", dtype=object)) == "x"
    for same in ("t", None, 3, numpy.array(["t"]), numpy.array(2.5)):
        assert nxstools_fix._text(same) is same
    assert nxstools_fix.apply() and nxstools_fix.apply()  # once, and again harmlessly
