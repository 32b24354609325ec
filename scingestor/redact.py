"""Keep tokens and passwords out of log records and exception texts.

The client registers every secret it handles (passwords, tokens) here, and
:func:`redact` replaces them — plus anything shaped like a bearer header, an
``access_token`` query or a JWT — before a text reaches a log or an error
message.  :class:`RedactingFilter` applies the same to whole log records, so
even an exception text formatted by a handler shows no secret.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Optional

MASK = "***"

# Bounded so a long-running daemon renewing its token every hour does not
# grow the registry without end; old tokens are expired anyway.
_MAX_SECRETS = 256
_secrets: "OrderedDict[str, None]" = OrderedDict()
_lasting: "set[str]" = set()
_lock = threading.Lock()

_PATTERNS = [
    # Authorization header values
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    # tokens in a URL query or a form body
    (re.compile(r"(?i)((?:access_token|token|jwt|password)=)[^&\s'\"]+"), r"\1" + MASK),
    # JSON fields holding secrets
    (
        re.compile(r"(?i)(\"(?:access_token|id_token|token|jwt|password)\"\s*:\s*\")[^\"]*(\")"),
        r"\1" + MASK + r"\2",
    ),
    # anything that looks like a JWT (header.payload.signature, base64url)
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
]

# Too short a secret would mask ordinary words; such secrets are still
# covered by the patterns above when they appear in headers or JSON.
_MIN_SECRET_LEN = 4


def register_secret(secret: Optional[str], lasting: bool = False) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears.

    Tokens come and go (each login adds one) and the oldest are forgotten
    past a bound; a *lasting* secret (the password of the credential file)
    is never forgotten, however many logins a long-running daemon makes.
    """
    if not secret or len(secret) < _MIN_SECRET_LEN:
        return
    with _lock:
        if lasting:
            _lasting.add(secret)
        _secrets.pop(secret, None)
        _secrets[secret] = None
        while len(_secrets) > _MAX_SECRETS:
            oldest, _ = _secrets.popitem(last=False)
            if oldest in _lasting:  # kept: put back as the newest
                _secrets[oldest] = None
                if len(_secrets) <= len(_lasting):
                    break


def redact(text: object) -> str:
    """Return ``text`` as a string with every known or recognisable secret masked."""
    out = str(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in out:
            out = out.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


class RedactingFilter(logging.Filter):
    """Logging filter masking secrets in the message and the exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler
            return True
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def protect_logger(logger: logging.Logger) -> logging.Logger:
    """Attach one :class:`RedactingFilter` to ``logger`` (idempotent)."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
