"""Entry point of the ``ScicatIngestorDS <instance>`` console script (Starter runs it).

The Tango server name is always ``ScicatIngestorDS`` (the executable name,
also under ``python -m ScicatIngestorDS``), so a registration
``ScicatIngestorDS/<instance>`` matches however it is launched.  Python
logging of the ``scingestor`` package goes to stderr (as for the other
scripts, secrets masked), and the device forwards it to Tango logging too.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import tango
from tango.server import run

from scingestor import __version__
from scingestor.log import LOG_LEVELS, setup_logging

from .device import ScicatIngestorDS

SERVER_NAME = "ScicatIngestorDS"
#: the class's documentation (Jive and ``DeviceProxy.info().doc_url`` show it); a site
#: may set its own with the ``doc_url`` class property, or ``SCINGESTOR_DOC_URL``
DOCS_FILE = Path(__file__).resolve().parent.parent / "docs" / "tango.md"
DOC_URL_TEXT = "docs/tango.md of the scingestor distribution"

#: Tango verbosity -vN -> Python log level of the ``scingestor`` loggers
_VERBOSITY = {0: "warning", 1: "warning", 2: "info", 3: "info", 4: "debug", 5: "debug"}


def python_log_level(argv: Sequence[str]) -> str:
    """``SCINGESTOR_LOG_LEVEL`` if set, else from Tango's ``-vN`` (default info)."""
    level = os.environ.get("SCINGESTOR_LOG_LEVEL", "").strip().lower()
    if level in LOG_LEVELS:
        return level
    for arg in argv:
        if arg.startswith("-v") and arg[2:].isdigit():
            return _VERBOSITY.get(min(int(arg[2:]), 5), "info")
    return "info"


def doc_url() -> str:
    """Where the device's documentation is: the environment, the installed docs, or a hint."""
    configured = os.environ.get("SCINGESTOR_DOC_URL", "").strip()
    if configured:
        return configured
    return DOCS_FILE.as_uri() if DOCS_FILE.is_file() else DOC_URL_TEXT


def publish_doc_url(args: Sequence[str]) -> None:
    """Give the class a ``doc_url`` class property unless it has one (as Pogo servers do).

    Tango reads it when the server builds the class, so it is written before
    ``run``; without a database (``-nodb``, ``-file=``) there is nothing to write.
    """
    if any(arg == "-nodb" or arg.startswith("-file") for arg in args):
        return
    try:
        database = tango.Database()
        current = database.get_class_property(SERVER_NAME, ["doc_url"])["doc_url"]
        if not list(current):
            database.put_class_property(SERVER_NAME, {"doc_url": [doc_url()]})
    except tango.DevFailed as error:
        logging.getLogger("ScicatIngestorDS").warning(
            "doc_url class property not set: %s", error.args[0].desc.strip()
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the device server: ``ScicatIngestorDS <instance> [Tango options]``."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # answered without Tango, as the other scripts do
        print(f"{SERVER_NAME} {__version__}")
        return 0
    package = setup_logging(python_log_level(args), timestamps=True)
    device_logger = logging.getLogger("ScicatIngestorDS")  # the device's own records
    for handler in package.handlers:
        device_logger.addHandler(handler)
    device_logger.setLevel(package.level)
    device_logger.propagate = False
    publish_doc_url(args)
    run((ScicatIngestorDS,), args=[SERVER_NAME, *args])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
