"""SciCat-compatible HTTP server for tests, the demo and fault injection.

It answers like a SciCat backend v4.x (REST API v3) with the same status
codes and body shapes (``shared/spec/scicat-api.md``); the API logic lives
in :mod:`scingestor.testing.scicat_api`, the validation rules in
:mod:`scingestor.testing.scicat_validation` and the state (optionally in
SQLite) in :mod:`scingestor.testing.scicat_store`.  This module is the
transport: a keep-alive HTTP/1.1 server on daemon threads that records every
request and answer and can misbehave on demand (down, slow, random errors,
hangs, lost answers, expired tokens) for the reliability tests.

Usage::

    with SciCatServer() as server:
        requests.post(server.url + "/auth/login", json={...})

or ``python -m scingestor.testing.scicat_server --port 8881``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import errno
import http
import json
import logging
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

from . import scicat_validation as val
from .scicat_api import (
    DEFAULT_PID_PREFIX,
    EMPTY,
    INTERNAL_ERROR,
    ApiRequest,
    ApiResponse,
    SciCatApp,
    error_body,
)
from .scicat_store import DEFAULT_ACCOUNTS, ROLES, Account, Store

__all__ = ["SciCatServer", "Account", "RecordedRequest", "DEFAULT_ACCOUNTS", "BODY_LIMIT", "main"]

logger = logging.getLogger(__name__)

#: bodies of this many bytes (after content decoding) or more get 500
BODY_LIMIT = 16 * 1024 * 1024

_CHUNK = 1 << 20


@dataclass
class RecordedRequest:
    """One request as the server saw it and the answer it produced.

    ``body``: parsed JSON, the raw text if it is not JSON, or None (empty or
    oversize body).  ``response``: the answer's JSON value (None for an empty
    answer).  ``dropped``: the client never got the answer (lost response,
    injected hang).  ``status`` is 0 for hung requests, which are not
    processed.
    """

    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: Any
    status: int
    response: Any
    time: float
    dropped: bool = False


@dataclass
class _Decision:
    status: Optional[int] = None
    hang: Optional[float] = None
    lose: bool = False
    #: store the record as asked, then answer this status (a failing post-save hook)
    after_store: Optional[int] = None
    #: answer something that is not SciCat's JSON: "html", "empty" or "broken"
    garble: Optional[str] = None


#: answers that are not what SciCat sends (a proxy's page, a cut answer)
GARBLED = {
    "html": (200, "text/html", b"<html><body><h1>Down for maintenance</h1></body></html>"),
    "empty": (200, "application/json", b""),
    "broken": (200, "application/json", b'{"pid": "20.500.12269/cut'),
}
#: whether the backend acted on a request answered so (a proxy's page: not)
GARBLED_STORES = {"html": False, "empty": True, "broken": True}


@dataclass
class _Scripted:
    """A fault for the next ``count`` requests of ``method`` (and a ``rate`` of the rest)."""

    count: int = 0
    rate: float = 0.0
    method: Optional[str] = None
    kind: str = ""
    status: int = 500

    def fires(self, method: str, rng: random.Random) -> bool:
        if self.method not in (None, method.upper()):
            return False
        if self.count > 0:
            self.count -= 1
            return True
        return self.rate > 0 and rng.random() < self.rate


class _BadBody(Exception):
    """The request body cannot be read: the connection is closed."""


def _mask(text: str) -> str:
    """Hide tokens in log lines (``?access_token=...``)."""
    return re.sub(r"(access_token=)[^&\s\"]*", r"\1***", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY the
    # client's delayed ACK stalls every answer by ~40 ms (Node, behind the
    # real backend, sets TCP_NODELAY too)
    disable_nagle_algorithm = True
    server_version = "SciCatTestServer/1.0"
    sys_version = ""

    server: "_HTTPServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.owner._serve(self)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        logger.debug("%s %s -> %s", self.command, self.path.partition("?")[0], code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("http: %s", _mask(format % args))


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its owner and its open connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], owner: "SciCatServer") -> None:
        self.owner = owner
        self.connections: set = set()
        self.connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN (a DNS lookup): not needed
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, as a dying server process would."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection error", exc_info=True)


def _fault_body(status: int) -> Any:
    """What the backend would send with this status and no details."""
    if status == 500:
        return INTERNAL_ERROR
    if status == 401:
        return {"message": "Unauthorized", "statusCode": 401}
    if status == 403:
        return error_body(403, "Forbidden resource", "Forbidden")
    if status == 404:
        return {"message": "Not Found", "statusCode": 404}
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return error_body(status, reason, reason)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Unexpected token {name[0]} in JSON")


def _parse_json(raw: bytes) -> Tuple[bool, Any, str]:
    """Parse a body like Express's strict JSON parser: ``(ok, value, error)``.

    An empty body is ``(True, None, "")``; only objects and arrays are
    accepted at the top level.
    """
    if not raw.strip():
        return True, None, ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return False, None, f"invalid UTF-8 in JSON body at position {exc.start}"
    stripped = text.lstrip()
    if stripped[:1] not in ("{", "["):
        return False, None, f"Unexpected token {stripped[:1]} in JSON at position 0"
    try:
        return True, json.loads(text, parse_constant=_reject_constant), ""
    except json.JSONDecodeError as exc:
        return False, None, f"{exc.msg} in JSON at position {exc.pos}"
    except ValueError as exc:
        return False, None, str(exc)


def _record_body(raw: Optional[bytes]) -> Any:
    if raw is None or not raw.strip():
        return None
    ok, value, _ = _parse_json(raw)
    return value if ok else raw.decode("utf-8", errors="replace")


class SciCatServer:
    """A SciCat-compatible server on a background thread.

    State attributes (``datasets``, ``origdatablocks``, ``attachments``,
    ``proposals``, ``samples``, ``instruments``) are **deep copies** taken
    under the lock: read them freely, change the server only through HTTP or
    ``add_*``.  ``lock`` is the one lock guarding all state.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        accounts: Optional[List[Account]] = None,
        token_ttl: float = 3600.0,
        db_path: Optional[str] = None,
        pid_prefix: str = DEFAULT_PID_PREFIX,
        max_recorded: Optional[int] = None,
        v4: bool = True,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.store = Store(db_path)
        self.lock = self.store.lock
        self.store.add_accounts(list(DEFAULT_ACCOUNTS if accounts is None else accounts))
        # v4=False: only /api/v3 answers (the v4 attachment route is missing)
        self.app = SciCatApp(self.store, token_ttl=token_ttl, pid_prefix=pid_prefix, v4=v4)
        self._recorded: Deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._lifecycle = threading.Lock()
        self._started = False
        self._down = False
        self._stop_event = threading.Event()
        self._latency = 0.0
        self._error_rate = 0.0
        self._error_status = 500
        self._timeout_rate = 0.0
        self._hang_seconds = 5.0
        self._rng = random.Random()
        self._fail_next = 0
        self._fail_status = 500
        self._lose_next = 0
        self._lose_method: Optional[str] = None
        self._lose_rate = 0.0
        self._store_then_fail = _Scripted()
        self._garble = _Scripted()

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "SciCatServer":
        """Listen (port 0: a free port, kept for later restarts) and serve."""
        with self._lifecycle:
            if self._started:
                return self
            self._stop_event = threading.Event()
            self._started = True
            self._down = False
            self._listen()
        logger.info("SciCat test server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections and close the database."""
        with self._lifecycle:
            self._stop_event.set()
            self._unlisten()
            self._started = False
            self._down = False
            self.store.close()

    def __enter__(self) -> "SciCatServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _listen(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                httpd = _HTTPServer((self.host, self.port), self)
                break
            except OSError as exc:  # the old socket may linger a moment
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scicat-server-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _unlisten(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=2.0)

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (no path)."""
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base ``http://HOST:PORT/api/v3`` (no trailing slash)."""
        return self.base_url + "/api/v3"

    # -- state --------------------------------------------------------------
    def _snapshot(self, collection: str) -> Dict[str, Dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.store.collections[collection])

    @property
    def datasets(self) -> Dict[str, Dict[str, Any]]:
        return self._snapshot("datasets")

    @property
    def origdatablocks(self) -> Dict[str, Dict[str, Any]]:
        return self._snapshot("origdatablocks")

    @property
    def attachments(self) -> Dict[str, Dict[str, Any]]:
        return self._snapshot("attachments")

    @property
    def proposals(self) -> Dict[str, Dict[str, Any]]:
        return self._snapshot("proposals")

    @property
    def samples(self) -> Dict[str, Dict[str, Any]]:
        return self._snapshot("samples")

    @property
    def instruments(self) -> Dict[str, Dict[str, Any]]:
        return self._snapshot("instruments")

    def counts(self) -> Dict[str, int]:
        """Records per collection (cheap: no copies)."""
        return self.store.counts()

    def add_account(self, account: Account) -> None:
        """Add or replace a login."""
        self.store.add_accounts([account])

    def set_may_delete(self, username: str, allowed: bool) -> None:
        """Give or take an account's delete right (the backend's ``DELETE_GROUPS``):
        without it every DELETE of a block or an attachment gets 403."""
        with self.lock:
            account = self.store.accounts.get(username)
            if account is None:
                raise KeyError(f"no account {username!r}")
            self.store.add_accounts([dataclasses.replace(account, may_delete=bool(allowed))])

    def add_proposal(self, proposal: Dict[str, Any]) -> None:
        """Insert a proposal as given (no validation), keyed by ``proposalId``."""
        if "proposalId" not in proposal:
            raise ValueError("a proposal needs a proposalId")
        self.store.put("proposals", str(proposal["proposalId"]), copy.deepcopy(proposal))

    def add_dataset(self, dataset: Dict[str, Any]) -> None:
        """Insert a dataset as given (no validation), filling missing server fields."""
        with self.lock:
            self.app.insert_dataset(dataset)

    # -- recording ------------------------------------------------------------
    def recorded(
        self, method: Optional[str] = None, path_contains: Optional[str] = None
    ) -> List[RecordedRequest]:
        """Snapshot of recorded requests, oldest first, optionally filtered."""
        with self.lock:
            items = list(self._recorded)
        if method is not None:
            items = [r for r in items if r.method.upper() == method.upper()]
        if path_contains is not None:
            needle = path_contains.lower()
            items = [r for r in items if needle in r.path.lower()]
        return items

    def clear_recorded(self) -> None:
        with self.lock:
            self._recorded.clear()

    # -- fault injection ---------------------------------------------------------
    def set_down(self, down: bool) -> None:
        """True: close the listening socket and cut connections (connection
        refused); False: listen again on the same port."""
        with self._lifecycle:
            if not self._started or down == self._down:
                return
            if down:
                self._unlisten()
            else:
                self._listen()
            self._down = down
        logger.info("SciCat test server %s", "down" if down else "up again")

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds``."""
        with self.lock:
            self._latency = max(0.0, float(seconds))

    def set_error_rate(
        self,
        rate: float,
        status: int = 500,
        timeout_rate: float = 0.0,
        seed: Optional[int] = None,
        hang_seconds: float = 5.0,
    ) -> None:
        """Answer a random share ``rate`` of requests with ``status`` (not
        processed); hang ``hang_seconds`` then close without answer for a
        share ``timeout_rate``.  ``seed`` makes the sequence reproducible."""
        with self.lock:
            self._error_rate = max(0.0, float(rate))
            self._error_status = int(status)
            self._timeout_rate = max(0.0, float(timeout_rate))
            self._hang_seconds = float(hang_seconds)
            self._rng = random.Random(seed)

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` without processing them."""
        with self.lock:
            self._fail_next = max(0, int(n))
            self._fail_status = int(status)

    def lose_next_responses(self, n: int, method: Optional[str] = None, rate: float = 0.0) -> None:
        """Process the next ``n`` requests (of ``method``), and a share ``rate``
        of the later ones, but close the connection instead of answering: the
        client cannot know it worked."""
        with self.lock:
            self._lose_next = max(0, int(n))
            self._lose_method = method.upper() if method else None
            self._lose_rate = max(0.0, float(rate))

    def store_then_fail(
        self,
        count: int = 0,
        rate: float = 0.0,
        status: int = 500,
        method: Optional[str] = "POST",
        seed: Optional[int] = None,
    ) -> None:
        """Process the next ``count`` requests (of ``method``), and a share
        ``rate`` of the later ones, then answer ``status`` instead of the
        result: a backend whose post-save hook or proxy fails after the store.
        :meth:`recorded` keeps the status of what was done (e.g. 201), as for
        a lost answer."""
        with self.lock:
            self._store_then_fail = _Scripted(
                count, rate, method.upper() if method else None, status=int(status)
            )
            if seed is not None:
                self._rng = random.Random(seed)

    def garble_next(
        self, count: int = 0, kind: str = "html", method: Optional[str] = None, rate: float = 0.0
    ) -> None:
        """Answer the next ``count`` requests (of ``method``), and a share
        ``rate`` of the later ones, with something that is not SciCat's JSON:
        ``"html"`` (a maintenance page, request not processed), ``"empty"``
        (a 200 without body, processed) or ``"broken"`` (cut JSON, processed)."""
        if kind not in GARBLED:
            raise ValueError(f"unknown garbled answer {kind!r}: one of {sorted(GARBLED)}")
        with self.lock:
            self._garble = _Scripted(count, rate, method.upper() if method else None, kind)

    def set_token_uses(self, uses: Optional[int]) -> None:
        """Tokens die after ``uses`` authenticated requests each (``None``: never)."""
        with self.store.lock:
            self.store.max_token_uses = None if uses is None else max(1, int(uses))
            self.store.token_uses = {}

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far (their requests run anonymous)."""
        self.store.expire_tokens()

    def reset_faults(self) -> None:
        """Back to a healthy server (and listening again if it was down)."""
        with self.lock:
            self._latency = 0.0
            self._error_rate = 0.0
            self._timeout_rate = 0.0
            self._error_status = 500
            self._hang_seconds = 5.0
            self._fail_next = 0
            self._lose_next = 0
            self._lose_method = None
            self._lose_rate = 0.0
            self._store_then_fail = _Scripted()
            self._garble = _Scripted()
        self.set_token_uses(None)
        self.set_down(False)

    def _decide(self, method: str) -> _Decision:
        with self.lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                return _Decision(status=self._fail_status)
            if self._error_rate > 0 or self._timeout_rate > 0:
                draw = self._rng.random()
                if draw < self._timeout_rate:
                    return _Decision(hang=self._hang_seconds)
                if draw < self._timeout_rate + self._error_rate:
                    return _Decision(status=self._error_status)
            if self._lose_method in (None, method.upper()):
                if self._lose_next > 0:
                    self._lose_next -= 1
                    return _Decision(lose=True)
                if self._lose_rate > 0 and self._rng.random() < self._lose_rate:
                    return _Decision(lose=True)
            if self._garble.fires(method, self._rng):
                return _Decision(garble=self._garble.kind)
            if self._store_then_fail.fires(method, self._rng):
                return _Decision(after_store=self._store_then_fail.status)
            return _Decision()

    # -- transport --------------------------------------------------------------------
    @staticmethod
    def _read_body(h: _Handler) -> Tuple[Optional[bytes], bool]:
        """Read the whole body; ``(bytes, False)`` or ``(None, True)`` if oversize.

        Oversize bodies are still read (and dropped) so the client gets the
        500 answer instead of a reset connection.
        """
        oversize = False
        parts: List[bytes] = []
        total = 0
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = h.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BadBody("bad chunk size") from None
                if size == 0:
                    while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    data = h.rfile.read(min(remaining, _CHUNK))
                    if not data:
                        raise _BadBody("connection closed in a chunk")
                    remaining -= len(data)
                    total += len(data)
                    if total >= BODY_LIMIT:
                        oversize = True
                        parts.clear()
                    elif not oversize:
                        parts.append(data)
                h.rfile.readline(65537)
        else:
            try:
                length = int(h.headers.get("Content-Length") or 0)
            except ValueError:
                raise _BadBody("bad Content-Length") from None
            if length < 0:
                raise _BadBody("bad Content-Length")
            oversize = length >= BODY_LIMIT
            remaining = length
            while remaining:
                data = h.rfile.read(min(remaining, _CHUNK))
                if not data:
                    raise _BadBody("connection closed in the body")
                remaining -= len(data)
                if not oversize:
                    parts.append(data)
        if oversize:
            return None, True
        raw = b"".join(parts)
        encoding = h.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
            try:
                decoder = zlib.decompressobj(wbits)
                raw = decoder.decompress(raw, BODY_LIMIT)
            except zlib.error:
                raise _BadBody("bad compressed body") from None
            if len(raw) >= BODY_LIMIT or decoder.unconsumed_tail:
                return None, True
        return raw, False

    def _record(self, record: RecordedRequest) -> None:
        with self.lock:
            self._recorded.append(record)

    def _wait(self, seconds: float, stop_event: threading.Event) -> None:
        if seconds > 0:
            stop_event.wait(seconds)

    def _serve(self, h: _Handler) -> None:
        """Handle one request on a connection thread."""
        received = time.time()
        stop_event = self._stop_event
        raw_path, _, query_string = h.path.partition("?")
        query = parse_qs(query_string, keep_blank_values=True)
        headers = {k: v for k, v in h.headers.items()}
        try:
            raw, oversize = self._read_body(h)
        except _BadBody as exc:
            logger.debug("unreadable body: %s", exc)
            self._drop(h)
            return
        decision = self._decide(h.command)
        if decision.hang is not None:
            self._record(
                RecordedRequest(
                    h.command,
                    raw_path,
                    query,
                    headers,
                    _record_body(raw),
                    0,
                    None,
                    received,
                    dropped=True,
                )
            )
            self._wait(decision.hang, stop_event)
            self._drop(h)
            return
        body_value = _record_body(raw)
        encoding = h.headers.get("Content-Encoding", "identity").strip().lower()
        if decision.status is not None:
            response = ApiResponse(decision.status, _fault_body(decision.status))
        elif decision.garble is not None and not GARBLED_STORES[decision.garble]:
            response = ApiResponse(200, EMPTY)  # a proxy's page: the backend never saw it
        elif oversize:
            response = ApiResponse(500, INTERNAL_ERROR)
        elif encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            response = ApiResponse(
                415,
                error_body(
                    415, f'unsupported content encoding "{encoding}"', "Unsupported Media Type"
                ),
            )
        else:
            ok, value, problem = _parse_json(raw or b"")
            if not ok:
                response = ApiResponse(400, val.standard_error_body([problem]))
            else:
                lower = {k.lower(): v for k, v in headers.items()}
                response = self.app.handle(ApiRequest(h.command, raw_path, query, lower, value))
        self._record(
            RecordedRequest(
                h.command,
                raw_path,
                query,
                headers,
                body_value,
                response.status,
                None if response.body is EMPTY else response.body,
                received,
                dropped=decision.lose,
            )
        )
        with self.lock:
            latency = self._latency
        self._wait(latency, stop_event)
        if decision.lose:
            self._drop(h)
            return
        if decision.garble is not None:
            self._send_raw(h, *GARBLED[decision.garble])
            return
        if decision.after_store is not None and response.status < 300:
            response = ApiResponse(decision.after_store, _fault_body(decision.after_store))
        self._send(h, response)

    @staticmethod
    def _drop(h: _Handler) -> None:
        """Close the connection without (further) answer."""
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @staticmethod
    def _send_raw(h: _Handler, status: int, content_type: str, data: bytes) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if data and h.command != "HEAD":
                h.wfile.write(data)
        except OSError:
            h.close_connection = True

    @staticmethod
    def _send(h: _Handler, response: ApiResponse) -> None:
        data = (
            b""
            if response.body is EMPTY
            else json.dumps(response.body, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8"
            )
        )
        try:
            h.send_response(response.status)
            if data:
                h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            if data and h.command != "HEAD":
                h.wfile.write(data)
        except OSError:
            h.close_connection = True


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _parse_account(text: str) -> Account:
    """``USER:PASSWORD:ROLE:GROUP1,GROUP2`` (the password may contain ``:``)."""
    user, sep, rest = text.partition(":")
    fields = rest.rsplit(":", 2)
    if not sep or not user or len(fields) != 3:
        raise argparse.ArgumentTypeError(
            f"expected USER:PASSWORD:ROLE:GROUP1,GROUP2, got {text.split(':')[0]}:..."
        )
    password, role, groups = fields
    if role not in ROLES:
        raise argparse.ArgumentTypeError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return Account(user, password, [g for g in groups.split(",") if g], role)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scingestor.testing.scicat_server",
        description="SciCat-compatible test server (backend v4.x, REST API v3).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 = a free port (default)")
    parser.add_argument(
        "--db", default=None, metavar="PATH", help="SQLite file to keep the data across restarts"
    )
    parser.add_argument(
        "--token-ttl",
        type=float,
        default=3600.0,
        metavar="S",
        help="token lifetime in seconds (3600)",
    )
    parser.add_argument(
        "--account",
        action="append",
        type=_parse_account,
        default=[],
        metavar="USER:PASSWORD:ROLE:GROUP1,GROUP2",
        help="add (or replace) a login; ROLE is one of " + ", ".join(ROLES),
    )
    parser.add_argument(
        "--no-delete",
        action="append",
        default=[],
        metavar="USER",
        help="USER may not delete origdatablocks or attachments (403), as "
        "an account outside the backend's DELETE_GROUPS",
    )
    parser.add_argument(
        "--no-default-accounts",
        action="store_true",
        help="only the --account logins (default: also ingestor, admin, user)",
    )
    parser.add_argument(
        "--max-recorded",
        type=int,
        default=10000,
        help="keep at most this many recorded requests in memory (10000)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (WARNING)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve until SIGINT/SIGTERM; exit status 0."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    accounts: Dict[str, Account] = {}
    if not args.no_default_accounts:
        accounts.update((a.username, a) for a in DEFAULT_ACCOUNTS)
    accounts.update((a.username, a) for a in args.account)
    for name in args.no_delete:
        if name not in accounts:
            sys.stderr.write(f"--no-delete {name}: no such account\n")
            return 2
        accounts[name] = dataclasses.replace(accounts[name], may_delete=False)
    server = SciCatServer(
        args.host,
        args.port,
        accounts=list(accounts.values()),
        token_ttl=args.token_ttl,
        db_path=args.db,
        max_recorded=args.max_recorded or None,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    server.start()
    sys.stdout.write(f"SciCat-compatible server listening on {server.url}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
