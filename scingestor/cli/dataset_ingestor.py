"""``scicat_dataset_ingestor``: the live ingestion daemon.

The options are final; the watching and ingestion engine behind them is
being built (the script already loads and checks the configuration, and
``--print-config`` shows what it would do).
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from ..config import IngestorConfig
from .common import EXIT_FAILURE, base_parser, run_script

logger = logging.getLogger("scingestor.cli.dataset_ingestor")

DESCRIPTION = """\
SciCat dataset ingestor daemon: watches the beamtime directories and ingests
every scan listed in a dataset list file into SciCat, e.g.

  scicat_dataset_ingestor -c ~/.scingestor.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("scicat_dataset_ingestor", DESCRIPTION)
    parser.add_argument("-r", "--runtime", type=float, default=None, metavar="SECONDS",
                        help="stop after SECONDS (default: run until SIGTERM/SIGINT)")
    return parser


def run(args: argparse.Namespace, config: IngestorConfig) -> int:
    logger.error("live ingestion is not available in this version yet; "
                 "use --print-config to check the configuration")
    return EXIT_FAILURE


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
