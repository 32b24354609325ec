"""``scicat_dataset_ingest``: one-shot (re-)ingestion of every listed scan.

The options are final; the ingestion engine behind them is being built (the
script already loads and checks the configuration, and ``--print-config``
shows what it would do).
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from ..config import IngestorConfig
from .common import EXIT_FAILURE, base_parser, run_script

logger = logging.getLogger("scingestor.cli.dataset_ingest")

DESCRIPTION = """\
Re-ingest the scans of every dataset list file of the configured beamtimes,
usually at the end of a beamtime, e.g.

  scicat_dataset_ingest -c ~/.scingestor.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    return base_parser("scicat_dataset_ingest", DESCRIPTION)


def run(args: argparse.Namespace, config: IngestorConfig) -> int:
    logger.error("dataset re-ingestion is not available in this version yet; "
                 "use --print-config to check the configuration")
    return EXIT_FAILURE


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
