"""Exception hierarchy.

Every error the ingestor raises on purpose derives from
:class:`ScingestorError`, so the CLIs can print one clear line instead of a
traceback and the Tango device can show a precise ``LastError``.  Each error
carries the place it is about (file, line, key, URL) as attributes as well as
in its message.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


class ScingestorError(Exception):
    """Base of all errors the ingestor reports to its user."""


class ConfigError(ScingestorError):
    """A configuration file cannot be read or holds a wrong value.

    ``path`` is the configuration file (``None`` for built-in or programmatic
    configurations) and ``key`` the variable concerned, if any.
    """

    def __init__(self, message: str, path: Optional[str] = None, key: Optional[str] = None) -> None:
        self.path = path
        self.key = key
        where = []
        if path:
            where.append(str(path))
        if key:
            where.append(f"key '{key}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class WrongValueType(Exception):
    """Internal to configuration loading: a value does not fit its variable's kind.

    Never leaves :mod:`scingestor.config`, which turns it into a
    :class:`ConfigError` naming the file and the key.
    """


class CredentialError(ScingestorError):
    """The credential file is missing, unreadable or has unsafe permissions."""


class ListFileError(ScingestorError):
    """A dataset list file line cannot be understood."""

    def __init__(
        self, message: str, path: Optional[str] = None, line: Optional[int] = None
    ) -> None:
        self.path = path
        self.line = line
        where = str(path or "<list>")
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}")


class SciCatError(ScingestorError):
    """SciCat answered with an error status, or answered something unusable.

    ``status`` is the HTTP status (``None`` when no answer came), ``body``
    the decoded answer (JSON value or text) and ``messages`` the backend's
    validation texts flattened into a list of strings.
    """

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        body: Any = None,
        method: str = "",
        url: str = "",
        messages: Optional[list] = None,
    ) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        self.messages = list(messages or [])
        super().__init__(message)


class SciCatUnreachable(SciCatError):
    """No answer from SciCat after all tries (connection refused, timeouts).

    ``attempts`` counts the requests sent; ``ambiguous`` is true when the
    request may have been applied although its answer was lost.
    """

    ambiguous: bool = False
    attempts: int = 0


class SciCatAmbiguousError(SciCatUnreachable):
    """A non-idempotent request was sent but its answer was lost.

    It may or may not have been applied, so it is not repeated blindly: check
    with a GET (e.g. the dataset's origdatablocks) before sending it again.
    """

    ambiguous = True


class SciCatFailing(SciCatUnreachable):
    """SciCat answered, but kept failing in a way that may pass.

    Raised when one request reached the common limit of failing answers
    (5xx, bodies that are not SciCat's JSON) or a 403 that may still be an
    expired token.  Unlike an outage, the scan counts as failing (FailedCount,
    LastError) while it waits; like an outage, it is retried later with a
    capped backoff and never retired, because the cause may pass.
    """


def answering_but_failing(error: Exception) -> bool:
    """Did SciCat answer, but fail in a way that may pass?

    :class:`SciCatFailing`, or tries that ended on a 500, 501 or 505+
    answer (502-504 are a proxy or a server not there: an outage).
    """
    if isinstance(error, SciCatFailing):
        return True
    status = getattr(error, "status", None)
    return (
        isinstance(error, SciCatUnreachable)
        and status is not None
        and status >= 500
        and status not in (502, 503, 504)
    )


class AuthenticationError(SciCatError):
    """Login failed: wrong credentials or no token in the answer."""


class NotFoundError(SciCatError):
    """The requested SciCat record does not exist (404)."""


class ConflictError(SciCatError):
    """The record already exists (409): for a client-chosen pid, already ingested."""


class ValidationError(SciCatError):
    """SciCat rejected the payload (400): never retried."""


class ForbiddenError(SciCatError):
    """SciCat refused the request although logged in (403 after a re-login)."""


class BeamtimeError(ScingestorError):
    """A beamtime metadata file is missing, broken, or lacks a field we need."""

    def __init__(
        self, message: str, path: Optional[str] = None, field: Optional[str] = None
    ) -> None:
        self.path = path
        self.field = field
        where = str(path or "<beamtime>")
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


class WatchError(ScingestorError):
    """A directory or file cannot be watched with inotify (``path`` says which)."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class WatchLimitError(WatchError):
    """A kernel inotify limit is reached (``fs.inotify.max_user_watches`` / ``_instances``).

    Not a problem of one directory: the operator has to raise the sysctl.
    """


class JournalError(ScingestorError):
    """The journal cannot be opened or written (disk full, read-only, locked)."""


class GeneratorError(ScingestorError):
    """A generator command could not be built, or it failed.

    ``argv`` is the command as run, ``returncode`` its exit status (``None``
    when it did not run) and ``stderr`` what it printed there.
    """

    def __init__(
        self,
        message: str,
        argv: Sequence[str] = (),
        returncode: Optional[int] = None,
        stderr: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class ScanError(ScingestorError):
    """A scan cannot be ingested as listed (bad path, missing metadata)."""


class EmptyMeasurement(ScanError):
    """A measurement line whose measurement grouped no scan: nothing to ingest."""


class DatasetRejected(ScingestorError):
    """The dataset metadata contradicts its beamtime: not sent."""
