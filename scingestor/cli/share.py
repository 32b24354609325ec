"""``scingestor-macros-path`` and ``scingestor-share``: where the installed extras are.

A wheel installs the sardana macros as ``scingestor/macros`` and the systemd
unit and example configuration as ``scingestor/share`` inside site-packages,
where nobody looks by hand.  These commands print the places (and the files)
so that a setup step is a command, not a search.  They load no sardana, no
Tango and no configuration: they work in any environment the package is in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .. import __version__

#: the package folder (``…/site-packages/scingestor`` or the checkout's ``scingestor/``)
PACKAGE = Path(__file__).resolve().parent.parent
SHARE = PACKAGE / "share"
MACRO_MODULE = "scmacros.py"


def macro_folder() -> Path:
    """The folder to add to a MacroServer's MacroPath.

    Installed from a wheel it is ``scingestor/macros`` in site-packages; in a
    source checkout (an editable install) it is the checkout's ``macros/``,
    the source of that folder.
    """
    for candidate in (PACKAGE / "macros", PACKAGE.parent / "macros"):
        if (candidate / MACRO_MODULE).is_file():
            return candidate
    raise FileNotFoundError(f"no {MACRO_MODULE} beside {PACKAGE}: is the package complete?")


def shared_files() -> List[Path]:
    """The shipped files of ``scingestor/share`` (systemd unit, example configuration)."""
    return sorted(path for path in SHARE.iterdir() if path.is_file())


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def macros_path_main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the macro folder (one line, for scripts: ``$(scingestor-macros-path)``)."""
    parser = _parser(
        "scingestor-macros-path",
        "Print the folder of the SciCat sardana macros (scmacros.py) to add to the "
        "MacroServer's MacroPath property (see docs/sardana.md).",
    )
    parser.parse_args(argv)
    try:
        print(macro_folder())
    except FileNotFoundError as error:
        print(f"ERROR : {error}", file=sys.stderr)
        return 1
    return 0


def share_main(argv: Optional[Sequence[str]] = None) -> int:
    """List the shipped files, or print one of them."""
    parser = _parser(
        "scingestor-share",
        "List the files shipped with scingestor (the systemd unit, an annotated "
        "example configuration) with their paths, or print one: "
        "scingestor-share scingestor.yaml > /etc/scingestor/scingestor.yaml",
    )
    parser.add_argument("name", nargs="?", help="the file to print (e.g. scingestor.service)")
    args = parser.parse_args(argv)
    files = {path.name: path for path in shared_files()}
    if args.name is None:
        for path in files.values():
            print(path)
        return 0
    if args.name not in files:
        print(
            f"ERROR : no shipped file {args.name!r} (there are: {', '.join(files)})",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(files[args.name].read_text(encoding="utf-8"))
    return 0
