"""SciCat REST client: login, token, retries with backoff, endpoints, error types.

Nothing here knows about beamlines; the pipeline decides what to post.
"""

from __future__ import annotations

from ..errors import (
    AuthenticationError,
    ConflictError,
    CredentialError,
    ForbiddenError,
    NotFoundError,
    SciCatAmbiguousError,
    SciCatError,
    SciCatUnreachable,
    ValidationError,
)
from ..redact import RedactingFilter, redact, register_secret
from .client import SciCatClient, encode_segment
from .credentials import (
    CredentialFile,
    Credentials,
    check_permissions,
    load_credentials,
    parse_credentials,
)
from .messages import parse_error_messages
from .settings import DEFAULT_HEADERS, MAX_BODY_BYTES, ClientSettings

__all__ = [
    "AuthenticationError",
    "ClientSettings",
    "ConflictError",
    "CredentialError",
    "CredentialFile",
    "Credentials",
    "DEFAULT_HEADERS",
    "ForbiddenError",
    "MAX_BODY_BYTES",
    "NotFoundError",
    "RedactingFilter",
    "SciCatAmbiguousError",
    "SciCatClient",
    "SciCatError",
    "SciCatUnreachable",
    "ValidationError",
    "check_permissions",
    "encode_segment",
    "load_credentials",
    "parse_credentials",
    "parse_error_messages",
    "redact",
    "register_secret",
]
