"""The documentation: its configuration reference matches the code, and it builds.

The reference page is generated from :func:`scingestor.config_reference.config_rows`;
these tests hold those rows against what ``scicat_dataset_ingest --print-config``
prints with no configuration file (the defaults a site actually gets), and
build the site with Sphinx exactly as CI does (``-W``: a warning fails).
"""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scingestor.config_reference import config_rows, yaml_text

DOCS = Path(__file__).resolve().parents[1] / "docs"


def print_config(cwd: Path) -> str:
    """The console script's ``--print-config`` output (its module when no script is beside us)."""
    script = Path(sys.executable).parent / "scicat_dataset_ingest"
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-m", "scingestor.cli.dataset_ingest"]
    )
    result = subprocess.run(
        [*command, "--print-config"], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_reference_defaults_are_the_print_config_defaults(tmp_path: Path) -> None:
    printed = yaml.safe_load(print_config(tmp_path))
    rows = config_rows()
    assert [row.name for row in rows] == list(printed)
    for row in rows:
        # the text the page shows reads back as the value the ingestor uses
        assert yaml.safe_load(row.default) == printed[row.name], row.name


def test_reference_states_the_documented_default_only_with_a_reason() -> None:
    rows = config_rows()
    deviating = [row for row in rows if row.documented_default is not None]
    assert deviating, "the declarations name documentation deviations (decision 0001)"
    for row in rows:
        assert (row.documented_default is None) == (not row.deviation), row.name
        assert row.description and row.type, row.name
    prefix = next(row for row in rows if row.name == "beamtime_filename_prefix")
    assert yaml.safe_load(prefix.default) == "beamtime-metadata-"
    assert yaml.safe_load(prefix.documented_default or "") == ".json"


@pytest.mark.parametrize(
    "value", [None, "", "a: b", "{homepath}/x", True, 0, 1.5, ["a", "b"], {"k": "v"}, "0o666"]
)
def test_yaml_text_reads_back(value: object) -> None:
    text = yaml_text(value)
    assert "\n" not in text
    assert yaml.safe_load(text) == value


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path: Path) -> None:
    if (
        importlib.util.find_spec("sphinx") is None
        or importlib.util.find_spec("myst_parser") is None
    ):
        pytest.skip("sphinx and myst-parser are not installed (pip install -e '.[docs]')")
    if not (DOCS / "conf.py").exists():
        pytest.skip("no docs/ beside the tests (installed package)")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    page = (out / "configuration.html").read_text(encoding="utf-8")
    for row in config_rows():
        cells = re.search(
            rf'id="config-{row.name.replace("_", "-")}".*?</tr>', page, flags=re.DOTALL
        )
        assert cells, row.name
        text = html.unescape(re.sub(r"<[^>]+>", "", cells.group(0)))
        assert " ".join(row.default.split()) in " ".join(text.split()), row.name
    # quotes stay as written: the descriptions quote values such as ''
    var_dir = next(row for row in config_rows() if row.name == "ingestor_var_dir")
    assert "''" in var_dir.description and html.escape(var_dir.description, quote=False) in page
    api = (out / "api.html").read_text(encoding="utf-8")
    assert "IngestorConfig" in api and "ScicatIngestorDS.device" in api
