"""Logging set-up shared by the console scripts, the daemon and the device.

The line format is the one operators of existing installations grep for
(``LEVEL : message``, with ``-t`` a timestamp in front).  Secrets (tokens,
passwords) are registered here once they are known and replaced by ``***``
in every record that reaches a handler installed by :func:`setup_logging`,
so that not even an exception text quoting a URL or a header can leak them.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Optional

from .redact import RedactingFilter, redact, register_secret

__all__ = [
    "LOG_LEVELS",
    "setup_logging",
    "rotate_log_file",
    "register_secret",
    "redact",
    "RedactingFilter",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_BACKUPS = 5
PLAIN_FORMAT = "%(levelname)s : %(message)s"
TIMESTAMP_FORMAT = "%(asctime)s.%(msecs)03d : %(levelname)s : %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def rotate_log_file(path: str, backups: int = LOG_BACKUPS) -> None:
    """Keep the previous runs' logs as ``path.1`` … ``path.N`` (newest first)."""
    if not os.path.exists(path):
        return
    for index in range(backups - 1, 0, -1):
        older = f"{path}.{index}"
        if os.path.exists(older):
            os.replace(older, f"{path}.{index + 1}")
    os.replace(path, f"{path}.1")


def setup_logging(
    level: str = "info",
    log_file: Optional[str] = None,
    timestamps: bool = False,
    extra_handlers: Iterable[logging.Handler] = (),
) -> logging.Logger:
    """Configure the ``scingestor`` logger tree for a console script.

    Logs go to stderr, or to *log_file* (the previous file rotated) when
    given.  Returns the package's root logger.
    """
    name = level.lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"unknown log level '{level}' (use one of {', '.join(LOG_LEVELS)})")
    handler: logging.Handler
    if log_file:
        directory = os.path.dirname(os.path.abspath(log_file))
        os.makedirs(directory, exist_ok=True)
        rotate_log_file(log_file)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler()
    formatter = logging.Formatter(
        TIMESTAMP_FORMAT if timestamps else PLAIN_FORMAT, datefmt=DATE_FORMAT
    )
    handlers = [handler, *extra_handlers]
    logger = logging.getLogger("scingestor")
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for item in handlers:
        if item.formatter is None or item is handler:
            item.setFormatter(formatter)
        item.addFilter(RedactingFilter())
        logger.addHandler(item)
    logger.setLevel(getattr(logging, name.upper()))
    logger.propagate = False
    return logger
