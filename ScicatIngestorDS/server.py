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
from typing import List, Optional, Sequence

from tango.server import run

from scingestor.log import LOG_LEVELS, setup_logging

from .device import ScicatIngestorDS

SERVER_NAME = "ScicatIngestorDS"

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the device server: ``ScicatIngestorDS <instance> [Tango options]``."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    package = setup_logging(python_log_level(args), timestamps=True)
    device_logger = logging.getLogger("ScicatIngestorDS")    # the device's own records
    for handler in package.handlers:
        device_logger.addHandler(handler)
    device_logger.setLevel(package.level)
    device_logger.propagate = False
    run((ScicatIngestorDS,), args=[SERVER_NAME, *args])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
