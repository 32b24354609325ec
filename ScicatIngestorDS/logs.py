"""Python log records forwarded to the device's Tango logging streams."""

from __future__ import annotations

import logging
from typing import Callable

from scingestor.redact import RedactingFilter

#: Python loggers whose records go to Tango logging too (the service's and the device's)
FORWARDED_LOGGERS = ("scingestor", "ScicatIngestorDS")


class TangoLogHandler(logging.Handler):
    """Forwards Python log records to the device's Tango logging streams.

    Records are queued to the device's sink thread: a service thread must
    never call into Tango itself.
    """

    def __init__(self, post: Callable[[logging.LogRecord, str], None]) -> None:
        super().__init__()
        self._post = post
        self.addFilter(RedactingFilter())  # never forward a secret

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._post(record, self.format(record))
        except Exception:  # noqa: BLE001  # pragma: no cover
            self.handleError(record)  # logging must never raise


def tango_stream(level: int) -> str:
    """The Tango logging stream of a Python log level."""
    if level >= logging.CRITICAL:
        return "fatal"
    if level >= logging.ERROR:
        return "error"
    if level >= logging.WARNING:
        return "warn"
    return "info" if level >= logging.INFO else "debug"
