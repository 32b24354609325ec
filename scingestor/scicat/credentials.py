"""Ingestor credentials: the credential-file forms of existing installations.

An installation keeps its SciCat secret in ``ingestor_credential_file``, in
one of these forms (tried in this order):

* JSON object with ``jwt`` — a token, used as is (no login);
* JSON object with ``id`` — a token too (what ``Users/login`` used to answer);
* JSON object with ``username`` and/or ``password`` — a login;
* anything else — the stripped whole text is the password of the configured
  user name.

The file is re-read whenever it changes (mtime, size or inode), so an
operator can rotate a password or token without restarting the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import CredentialError
from ..redact import protect_logger, register_secret

logger = protect_logger(logging.getLogger(__name__))

DEFAULT_USERNAME = "ingestor"


@dataclass(frozen=True, eq=True)
class Credentials:
    """A token or a user name and password; ``repr`` never shows the secrets."""

    username: Optional[str] = None
    password: Optional[str] = None
    token: Optional[str] = None
    source: Optional[str] = None

    def __post_init__(self) -> None:
        register_secret(self.password, lasting=True)
        register_secret(self.token, lasting=True)

    @property
    def kind(self) -> str:
        """``"token"`` (used directly), ``"password"`` (login) or ``"none"``."""
        if self.token:
            return "token"
        if self.password is not None:
            return "password"
        return "none"

    @classmethod
    def from_token(cls, token: str, source: Optional[str] = None) -> "Credentials":
        """Credentials made of a token only."""
        return cls(token=token, source=source)

    @classmethod
    def from_password(
        cls, username: str, password: str, source: Optional[str] = None
    ) -> "Credentials":
        """Credentials for a login."""
        return cls(username=username, password=password, source=source)

    def __repr__(self) -> str:
        parts = [f"kind={self.kind!r}"]
        if self.username is not None:
            parts.append(f"username={self.username!r}")
        if self.source is not None:
            parts.append(f"source={self.source!r}")
        return f"Credentials({', '.join(parts)})"

    __str__ = __repr__


def parse_credentials(
    text: str,
    username: str = DEFAULT_USERNAME,
    plain_text: str = "password",
    source: Optional[str] = None,
) -> Credentials:
    """Interpret the content of a credential file.

    ``plain_text`` says what a non-JSON content is: ``"password"`` (the
    daemon's credential file) or ``"token"`` (``scicat_ingest -p``).
    """
    stripped = text.strip()
    try:
        data = json.loads(stripped) if stripped else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("jwt", "id"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return Credentials(token=value.strip(), source=source)
        if "password" in data or "username" in data:
            user = data.get("username")
            password = data.get("password")
            if password is None:
                raise CredentialError(
                    f"credential file {source or '<text>'} has a username but no password"
                )
            return Credentials(
                username=str(user) if user not in (None, "") else username,
                password=str(password),
                source=source,
            )
    if plain_text == "token":
        if not stripped:
            raise CredentialError(f"token file {source or '<text>'} is empty")
        return Credentials(token=stripped, source=source)
    if not stripped:
        raise CredentialError(f"credential file {source or '<text>'} is empty")
    return Credentials(username=username, password=stripped, source=source)


#: (path, mode) of credential files warned of: one line per file and mode, not per read
_warned_modes: "set[Tuple[str, int]]" = set()


def check_permissions(path: str) -> None:
    """Warn (once per file and mode) when a credential file is accessible by group or others."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o066 and (path, mode) not in _warned_modes:
        _warned_modes.add((path, mode))
        logger.warning(
            "Credential file %s is accessible by group or others (mode %s): "
            "restrict it with 'chmod 600 %s'",
            path,
            oct(mode),
            path,
        )


def load_credentials(
    path: str, username: str = DEFAULT_USERNAME, plain_text: str = "password"
) -> Credentials:
    """Read a credential file (see module doc); :class:`CredentialError` names the file."""
    path = os.fspath(path)
    check_permissions(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise CredentialError(f"credential file {path} does not exist") from None
    except PermissionError:
        raise CredentialError(
            f"credential file {path} cannot be read: permission denied "
            f"(the ingestor's user must be able to read it)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"credential file {path} cannot be read: {exc}") from None
    return parse_credentials(text, username=username, plain_text=plain_text, source=path)


class CredentialFile:
    """A credential file re-read whenever it changes (mtime, size or inode)."""

    def __init__(
        self, path: str, username: str = DEFAULT_USERNAME, plain_text: str = "password"
    ) -> None:
        self.path = os.fspath(path)
        self.username = username
        self.plain_text = plain_text
        self._lock = threading.Lock()
        self._signature: Optional[Tuple[int, int, int]] = None
        self._credentials: Optional[Credentials] = None

    def _stat_signature(self) -> Optional[Tuple[int, int, int]]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def get(self) -> Credentials:
        """The current credentials, re-read if the file changed since last time."""
        with self._lock:
            signature = self._stat_signature()
            if self._credentials is None or signature is None or signature != self._signature:
                if self._credentials is not None:
                    logger.info("Credential file %s changed: reading it again", self.path)
                self._credentials = load_credentials(self.path, self.username, self.plain_text)
                self._signature = signature
            return self._credentials

    def changed(self) -> bool:
        """True when the file differs from what :meth:`get` read last."""
        with self._lock:
            return self._credentials is None or self._stat_signature() != self._signature

    def __repr__(self) -> str:
        return f"CredentialFile({self.path!r}, username={self.username!r})"
