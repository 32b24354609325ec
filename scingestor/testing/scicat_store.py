"""State of the SciCat-compatible test server: accounts, tokens, records.

One re-entrant lock guards everything, so the HTTP threads, the test code
and the fault-injection calls see consistent state.  With a database path
every change is written through to SQLite at once and loaded again by the
next server on the same file: a "restart" keeps datasets, blocks,
attachments, proposals, samples, instruments, accounts and tokens (a real
backend's JWTs survive its restarts too).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

logger = logging.getLogger(__name__)

#: roles an account can have, from least to most rights
ROLES = ("user", "with_pid", "privileged", "admin")

#: the collections the server keeps, in the order ``counts()`` lists them
COLLECTIONS = ("datasets", "origdatablocks", "attachments", "proposals", "samples", "instruments")


@dataclass
class Account:
    """A login of the test server.

    ``role``: ``"user"`` creates datasets for its own groups without a pid;
    ``"with_pid"`` may also send a pid; ``"privileged"`` may use any
    ``ownerGroup``, send a pid and add blocks/attachments to any dataset (it
    also reads everything); ``"admin"`` may do everything, including
    proposals and instruments.

    ``may_delete``: False imitates a site whose account is not in the
    backend's ``DELETE_GROUPS``: every DELETE of an origdatablock or an
    attachment is answered 403 before the record is even looked up.
    """

    username: str
    password: str
    groups: List[str] = field(default_factory=list)
    role: str = "user"
    may_delete: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        self.groups = list(self.groups)

    @property
    def user_id(self) -> str:
        """A stable Mongo-like id (24 hex digits) for login objects."""
        return uuid.uuid5(uuid.NAMESPACE_URL, "scicat-user:" + self.username).hex[:24]

    @property
    def email(self) -> str:
        """The account's e-mail as the backend reports it."""
        return f"{self.username}@example.org"

    @property
    def privileged(self) -> bool:
        """May act on any group's data (privileged and admin roles)."""
        return self.role in ("privileged", "admin")


DEFAULT_ACCOUNTS: List[Account] = [
    Account("ingestor", "ingestor-password", ["ingestor"], "privileged"),
    Account("admin", "admin-password", ["admin"], "admin"),
    Account("user", "user-password", ["user-group"], "user"),
]


@dataclass
class Token:
    """An issued access token (the JWT itself is the dict key)."""

    username: str
    created: float
    ttl: float
    strategy: str = "local"

    def valid(self, now: Optional[float] = None) -> bool:
        """Still usable: before ``created + ttl``."""
        return (time.time() if now is None else now) < self.created + self.ttl


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(username: str, created: float, ttl: float) -> str:
    """A random token shaped like a JWT (three base64url parts)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(
        json.dumps(
            {
                "username": username,
                "jti": secrets.token_hex(8),
                "iat": int(created),
                "exp": int(created + ttl),
            },
            separators=(",", ":"),
        ).encode()
    )
    return f"{header}.{payload}.{_b64(secrets.token_bytes(32))}"


class Store:
    """Collections, accounts and tokens behind one lock, optionally in SQLite.

    The record dicts are owned by the store: callers holding ``lock`` may
    read them; every change goes through :meth:`put` / :meth:`delete` so it
    reaches the database.
    """

    def __init__(self, db_path: Optional[str] = None) -> None:
        self.lock = threading.RLock()
        self.db_path = db_path
        self.collections: Dict[str, Dict[str, Dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self.accounts: Dict[str, Account] = {}
        self.tokens: Dict[str, Token] = {}
        #: a fault: tokens die after this many uses (``None``: they do not)
        self.max_token_uses: Optional[int] = None
        self.token_uses: Dict[str, int] = {}
        self._db: Optional[sqlite3.Connection] = None
        if db_path:
            self._load()

    # -- database ---------------------------------------------------------
    def _conn(self) -> Optional[sqlite3.Connection]:
        if not self.db_path:
            return None
        if self._db is None:
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS records (collection TEXT NOT NULL, key TEXT NOT NULL,"
                " body TEXT NOT NULL, PRIMARY KEY (collection, key));"
                "CREATE TABLE IF NOT EXISTS accounts (username TEXT PRIMARY KEY, password TEXT,"
                " groups TEXT, role TEXT, may_delete INTEGER NOT NULL DEFAULT 1);"
                "CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, username TEXT,"
                " created REAL, ttl REAL, strategy TEXT);"
            )
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(accounts)")]
            if "may_delete" not in columns:  # a file written before the column existed
                self._db.execute(
                    "ALTER TABLE accounts ADD COLUMN may_delete INTEGER NOT NULL DEFAULT 1"
                )
        return self._db

    def _load(self) -> None:
        with self.lock:
            db = self._conn()
            assert db is not None
            for coll, key, body in db.execute(
                "SELECT collection, key, body FROM records ORDER BY rowid"
            ):
                if coll in self.collections:
                    self.collections[coll][key] = json.loads(body)
            for username, password, groups, role, may_delete in db.execute(
                "SELECT username, password, groups, role, may_delete FROM accounts ORDER BY rowid"
            ):
                self.accounts[username] = Account(
                    username, password, json.loads(groups), role, bool(may_delete)
                )
            for token, username, created, ttl, strategy in db.execute(
                "SELECT token, username, created, ttl, strategy FROM tokens"
            ):
                self.tokens[token] = Token(username, created, ttl, strategy)
            logger.info("loaded %s from %s", self.counts(), self.db_path)

    def close(self) -> None:
        """Close the database file (it is reopened on the next change)."""
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- records ----------------------------------------------------------
    def get(self, collection: str, key: str) -> Optional[Dict[str, Any]]:
        """The live record, or None (hold ``lock`` while using it)."""
        return self.collections[collection].get(key)

    def values(self, collection: str) -> List[Dict[str, Any]]:
        """Live records of a collection in creation order."""
        return list(self.collections[collection].values())

    def put(self, collection: str, key: str, record: Dict[str, Any]) -> None:
        """Insert or replace a record (write-through to the database)."""
        with self.lock:
            self.collections[collection][key] = record
            db = self._conn()
            if db is not None:
                db.execute(
                    "INSERT INTO records (collection, key, body) VALUES (?, ?, ?)"
                    " ON CONFLICT(collection, key) DO UPDATE SET body = excluded.body",
                    (collection, key, json.dumps(record)),
                )

    def delete(self, collection: str, key: str) -> Optional[Dict[str, Any]]:
        """Remove a record; returns it (None if absent)."""
        with self.lock:
            record = self.collections[collection].pop(key, None)
            db = self._conn()
            if db is not None:
                db.execute(
                    "DELETE FROM records WHERE collection = ? AND key = ?", (collection, key)
                )
            return record

    def counts(self) -> Dict[str, int]:
        """Number of records per collection."""
        with self.lock:
            return {c: len(self.collections[c]) for c in COLLECTIONS}

    # -- accounts and tokens ----------------------------------------------
    def add_accounts(self, accounts: Iterable[Account]) -> None:
        """Add or replace accounts by username."""
        with self.lock:
            db = self._conn()
            for account in accounts:
                self.accounts[account.username] = account
                if db is not None:
                    db.execute(
                        "INSERT INTO accounts (username, password, groups, role, may_delete)"
                        " VALUES (?,?,?,?,?) ON CONFLICT(username) DO UPDATE SET"
                        " password = excluded.password, groups = excluded.groups,"
                        " role = excluded.role, may_delete = excluded.may_delete",
                        (
                            account.username,
                            account.password,
                            json.dumps(account.groups),
                            account.role,
                            int(account.may_delete),
                        ),
                    )

    def issue_token(self, username: str, ttl: float, strategy: str = "local") -> str:
        """Create and remember a token for ``username``."""
        with self.lock:
            created = time.time()
            token = make_jwt(username, created, ttl)
            self.tokens[token] = Token(username, created, ttl, strategy)
            db = self._conn()
            if db is not None:
                db.execute(
                    "INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                    (token, username, created, ttl, strategy),
                )
            return token

    def token_account(self, token: str) -> Optional[Account]:
        """The account of a valid token; None if unknown or expired.

        With ``max_token_uses`` set (a fault), each call is one use and a
        token used that many times is forgotten, as an expired one.
        """
        with self.lock:
            info = self.tokens.get(token)
            if info is None or not info.valid():
                return None
            limit = self.max_token_uses
            if limit is not None:
                uses = self.token_uses.get(token, 0) + 1
                self.token_uses[token] = uses
                if uses > limit:
                    del self.tokens[token]
                    return None
            return self.accounts.get(info.username)

    def expire_tokens(self) -> None:
        """Forget every token issued so far."""
        with self.lock:
            self.tokens.clear()
            db = self._conn()
            if db is not None:
                db.execute("DELETE FROM tokens")
