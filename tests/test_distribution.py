"""What the package ships beside the code (issue 20, step 1): the macro folder,
the commands that find it, the systemd unit and the example configuration.

The wheel itself is checked by .ci/run (the quick tests against the installed
wheel) and by tests/test_wheel.py (a fresh clone, built, installed, deleted).
"""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

import pytest
import yaml

from scingestor.cli import share
from scingestor.config import VARIABLES, load_config


def defines_macros(path: Path) -> bool:
    """Does the module define a sardana macro (a Macro class or a @macro function)?"""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            bases = {getattr(base, "id", getattr(base, "attr", "")) for base in node.bases}
            if "Macro" in bases:
                return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if getattr(target, "id", getattr(target, "attr", "")) in ("macro", "imacro"):
                    return True
    return False


def test_the_macro_folder_holds_macro_modules_and_their_skipped_helpers() -> None:
    """A MacroServer loads every module of a MacroPath folder whose name does not
    start with '_': those are macro libraries, the '_' helpers define none."""
    folder = share.macro_folder()
    modules = sorted(folder.glob("*.py"))
    assert [path.name for path in modules if not path.name.startswith("_")] == ["scmacros.py"]
    for path in modules:
        assert defines_macros(path) is not path.name.startswith("_"), path.name
    assert not [path for path in folder.iterdir() if path.suffix not in (".py", ".pyc", "")]


def test_macros_path_command_prints_the_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert share.macros_path_main([]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert (printed / "scmacros.py").is_file() and printed == share.macro_folder()
    with pytest.raises(SystemExit):
        share.macros_path_main(["--version"])
    assert "scingestor-macros-path" in capsys.readouterr().out


def test_share_command_lists_and_prints_the_shipped_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert share.share_main([]) == 0
    listed = capsys.readouterr().out.split()
    assert [Path(path).name for path in listed] == ["scingestor.service", "scingestor.yaml"]
    assert share.share_main(["scingestor.service"]) == 0
    assert "ExecStart=" in capsys.readouterr().out
    assert share.share_main(["nothing.txt"]) == 1
    assert "no shipped file 'nothing.txt'" in capsys.readouterr().err


def test_the_example_configuration_loads_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = share.SHARE / "scingestor.yaml"
    with caplog.at_level(logging.WARNING):
        config = load_config(str(path))
    assert not caplog.records, [record.getMessage() for record in caplog.records]
    data = yaml.safe_load(path.read_text())
    assert set(data) <= set(VARIABLES)
    for key, value in data.items():  # the annotated values are the defaults or examples
        assert getattr(config, key) == value or key in ("beamtime_dirs", "ingestor_credential_file")


def test_the_systemd_unit_runs_the_daemon_as_notify() -> None:
    text = (share.SHARE / "scingestor.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[0].endswith("/scicat_dataset_ingestor")
    assert " -c " in exec_start


@pytest.mark.skipif(
    not os.environ.get("SCINGESTOR_TEST_INSTALLED"),
    reason="set by .ci/run when it runs the tests against the installed wheel",
)
def test_the_tests_run_against_the_installed_wheel() -> None:
    """.ci/run's second run: scingestor and the macro folder come from site-packages."""
    import scingestor

    assert "site-packages" in Path(scingestor.__file__).parts, scingestor.__file__
    folder = share.macro_folder()
    assert folder == Path(scingestor.__file__).resolve().parent / "macros", folder
