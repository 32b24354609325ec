"""``scicat_dataset_ingest``: one-shot (re-)ingestion of every listed scan.

Usually run at the end of a beamtime.  Datasets, origdatablocks and
attachments whose metadata changed since they were recorded in the
ingested list are posted again; the rest is left alone.  ``--dry-run``
generates and validates the metadata (with the backend's
``Datasets/isValid``) and posts nothing.  The summary names every scan
that failed and why, and counts the scans posted without data files (no
master file: from the beamtime metadata alone); the exit code is 1 when any
scan failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..batch import BatchIngest
from ..config import IngestorConfig
from ..scicat import ClientSettings, SciCatClient
from .common import EXIT_FAILURE, EXIT_OK, base_parser, check_credentials, run_script

logger = logging.getLogger("scingestor.cli.dataset_ingest")

DESCRIPTION = """\
Re-ingest the scans of every dataset list file of the configured beamtimes,
usually at the end of a beamtime, e.g.

  scicat_dataset_ingest -c ~/.scingestor.yaml
  scicat_dataset_ingest -c ~/.scingestor.yaml --dry-run
  scicat_dataset_ingest -c ~/.scingestor.yaml --check
"""


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("scicat_dataset_ingest", DESCRIPTION)
    parser.add_argument(
        "--dry-run", action="store_true", help="generate and validate the metadata, post nothing"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress line, even on a terminal"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="preflight check of the site: try on a throw-away dataset what "
        "this SciCat account may do, print a table, ingest nothing "
        "(exit 0: ready)",
    )
    return parser


class TerminalProgress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    WIDTH = 30

    def __call__(self, done: int, total: int, key: str) -> None:
        filled = self.WIDTH * done // total if total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        text = f"\r[{bar}] {done}/{total} {key[:40]:<40}"
        sys.stderr.write(text if done < total else text + "\n")
        sys.stderr.flush()


def run(args: argparse.Namespace, config: IngestorConfig) -> int:
    if args.check:
        return run_preflight(args, config)
    check_credentials(config)  # a broken credential file: one line, exit 1
    progress = None
    if not args.no_progress and sys.stderr.isatty() and not args.log_file:
        progress = TerminalProgress()
    with SciCatClient(ClientSettings.from_config(config)) as client:
        batch = BatchIngest(config, client, progress=progress)
        batch.pipeline.runner.prepare()  # nxstools workers start while the lists are read
        try:
            summary = batch.run(dry_run=args.dry_run)
        finally:
            batch.pipeline.close()
    report = summary.report()
    print(report)
    if args.log_file:
        logger.info("%s", report)
    return EXIT_OK if summary.ok else EXIT_FAILURE


def run_preflight(args: argparse.Namespace, config: IngestorConfig) -> int:
    """``--check``: the table on stdout (and in the log file), 0 when ready."""
    from ..preflight import run_check

    report = run_check(config)
    text = report.render()
    print(text)
    if args.log_file:
        logger.info("%s", text)
    return EXIT_OK if report.ok else EXIT_FAILURE


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
