"""What the three console scripts share: options, logging, config, errors.

Every script takes the same ``-c/-l/-f/-t`` options as the scripts of
existing installations, plus ``--print-config``, and turns any
:class:`~scingestor.errors.ScingestorError` into one readable line on stderr
and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

from .. import __version__
from ..config import IngestorConfig, load_config
from ..errors import ScingestorError
from ..log import LOG_LEVELS, setup_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

logger = logging.getLogger(__name__)


def base_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """An argument parser with the options every scingestor script accepts."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-c",
        "--configuration",
        dest="config",
        metavar="FILE",
        help="YAML configuration file (e.g. ~/.scingestor.yaml); without it the defaults apply",
    )
    parser.add_argument(
        "-l",
        "--log",
        dest="log",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help="logging level: " + ", ".join(LOG_LEVELS) + " (default: info)",
    )
    parser.add_argument(
        "-f",
        "--log-file",
        dest="log_file",
        metavar="FILE",
        help="write the log to FILE (an existing one is kept as FILE.1 ... FILE.5)",
    )
    parser.add_argument(
        "-t", "--timestamps", action="store_true", help="start every log line with a timestamp"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (defaults merged with the file, "
        "keywords expanded) as YAML and exit",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def load_configuration(args: argparse.Namespace) -> IngestorConfig:
    """Load the configuration named by ``-c`` (or the defaults)."""
    return load_config(args.config)


def check_credentials(config: IngestorConfig) -> None:
    """Read the credential file once at start: :class:`CredentialError` in one line.

    A missing, empty or unreadable file would otherwise show only when the
    first scan logs in, once per scan and per try.
    """
    from ..scicat import ClientSettings
    from ..scicat.credentials import load_credentials

    settings = ClientSettings.from_config(config)
    if settings.credential_file:
        load_credentials(settings.credential_file, settings.username)


def run_script(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace, IngestorConfig], int],
    argv: Optional[Sequence[str]] = None,
    printed: Optional[Callable[[IngestorConfig], str]] = None,
) -> int:
    """Parse *argv*, set up logging, load the config and run *body*.

    ``--print-config`` is answered here, so every script behaves the same;
    *printed* gives the text when a script resolves more than the file says.
    """
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log, args.log_file, args.timestamps)
    except OSError as error:
        print(f"ERROR : cannot write the log file {args.log_file}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        config = load_configuration(args)
        if args.print_config:
            sys.stdout.write(printed(config) if printed else config.to_yaml())
            sys.stdout.flush()
            return EXIT_OK
        return body(args, config)
    except ScingestorError as error:
        logger.error("%s", error)
        if args.log_file:
            # the operator started us from a terminal: say it there too
            print(f"ERROR : {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        logger.warning("Keyboard interrupt (SIGINT) received...")
        return EXIT_OK
