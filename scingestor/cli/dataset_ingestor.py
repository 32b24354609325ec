"""``scicat_dataset_ingestor``: the live ingestion daemon.

Runs until SIGTERM or SIGINT (then it stops watching, finishes the scan it
is ingesting and flushes its state) or for ``-r SECONDS``.  Everything it
does goes through :class:`scingestor.service.IngestorService`, the same
service the Tango device wraps.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any, Optional, Sequence

from ..config import IngestorConfig
from ..errors import CredentialError
from ..health import MetricsServer, SystemdNotifier
from ..layout import state_dir
from ..service import IngestorService
from .common import EXIT_OK, base_parser, check_credentials, run_script

logger = logging.getLogger("scingestor.cli.dataset_ingestor")

DESCRIPTION = """\
SciCat dataset ingestor daemon: watches the beamtime directories and ingests
every scan listed in a dataset list file into SciCat, e.g.

  scicat_dataset_ingestor -c ~/.scingestor.yaml
  scicat_dataset_ingestor -c ~/.scingestor.yaml -r 3600 -l debug -f /var/log/scingestor.log

Stop it with SIGTERM or Ctrl-C: it finishes the scan being ingested and
keeps the rest in its journal (ingestor_state_dir; by default a folder of
this configuration file's own below ~/.local/state/scingestor, shown by
--print-config) for the next start.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("scicat_dataset_ingestor", DESCRIPTION)
    parser.add_argument(
        "-r",
        "--runtime",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after SECONDS (default: run until SIGTERM/SIGINT)",
    )
    return parser


def run(args: argparse.Namespace, config: IngestorConfig) -> int:
    if not config.beamtime_dirs and not config.beamtime_base_dir:
        logger.warning("BeamtimeWatcher: Beamtime directories not defined")
        return EXIT_OK
    try:
        check_credentials(config)
    except CredentialError as error:
        # the daemon runs on: the file is read again at each try, so fixing it is enough
        logger.error("%s: scans wait until it is fixed", error)
    stop = threading.Event()

    def on_signal(number: int, _frame: Any) -> None:
        if number == signal.SIGTERM:
            logger.warning("SIGTERM received...")
        else:
            logger.warning("Keyboard interrupt (SIGINT) received...")
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    service = IngestorService(config)
    notifier = SystemdNotifier(lambda: service.healthy)
    metrics = None
    try:
        service.start()
        if config.metrics_port:
            metrics = MetricsServer(service.snapshot, config.metrics_port, config.metrics_address)
            metrics.start()
        logger.info("Ingestor started: %s", service.status)
        notifier.ready(service.status)
        stop.wait(args.runtime)
    finally:
        notifier.stopping()
        if metrics is not None:
            metrics.stop()
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("Ingestor stopped")
    return EXIT_OK


def effective_yaml(config: IngestorConfig) -> str:
    """``--print-config``: the configuration with the state folder the daemon will use."""
    folder = state_dir(config)
    text = config.replace(ingestor_state_dir=folder).to_yaml()
    if not config.ingestor_state_dir:
        text += (
            f"# ingestor_state_dir is not set: {folder} is the default of "
            f"{config.source or 'an ingestor without configuration file'}\n"
        )
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_script(build_parser(), run, argv, printed=effective_yaml)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
