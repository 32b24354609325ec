"""A counting loopback HTTP proxy in front of a SciCat backend (for check.py).

The ingestor is pointed at this proxy instead of the backend, so that every
request it sends can be counted by method, route shape (``Datasets/{id}``)
and answer status, without touching the ingestor.  The proxy can also lose
one answer on purpose: it forwards the chosen request to the backend (so
the backend acts on it) and then closes the client's connection without a
word, which is what the ingestor sees when a network or a load balancer
drops an answer.

Standard library only; one thread per connection; not meant for anything
but loopback verification runs by hand.
"""

from __future__ import annotations

import collections
import http.client
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Counter, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

#: path segments kept as they are in a route shape; every other one is an id
KNOWN_SEGMENTS = frozenset(
    {
        "Datasets",
        "OrigDatablocks",
        "Attachments",
        "Samples",
        "Proposals",
        "Instruments",
        "Users",
        "auth",
        "login",
        "logout",
        "whoami",
        "isValid",
        "count",
        "findOne",
        "fullquery",
        "fullfacet",
        "attachments",
        "datasets",
        "origdatablocks",
        "samples",
        "PublishedData",
        "Policies",
        "health",
        "ping",
        "api",
        "v3",
        "v4",
        "thumbnail",
    }
)

#: headers that belong to one hop and are not forwarded
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

#: requests that only read (login and validation included: they change nothing)
READ_ONLY = frozenset(
    {
        ("POST", "auth/login"),
        ("POST", "Users/login"),
        ("POST", "Datasets/isValid"),
        ("POST", "v4 datasets/isValid"),
    }
)


def route_shape(path: str) -> str:
    """``/api/v3/Datasets/99%2Fs1/OrigDatablocks?x`` -> ``Datasets/{id}/OrigDatablocks``.

    The API version prefix is dropped for v3 (the ingestor's own API) and
    kept as ``v4 ...`` otherwise, so a switch to the v4 routes shows.
    """
    bare = path.split("?", 1)[0]
    parts = [part for part in bare.split("/") if part]
    version = ""
    if len(parts) >= 2 and parts[0] == "api":
        version = parts[1]
        parts = parts[2:]
    shape = "/".join(part if part in KNOWN_SEGMENTS else "{id}" for part in parts)
    return shape if version in ("", "v3") else f"{version} {shape}"


def is_write(method: str, shape: str) -> bool:
    """Could this request change the catalogue?"""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return (method, shape) not in READ_ONLY


@dataclass(frozen=True)
class Hit:
    """One request that went through the proxy."""

    method: str
    shape: str
    status: int  # the backend's answer (502: the backend did not answer)
    dropped: bool  # its answer was withheld from the client
    at: float


@dataclass
class DropRule:
    method: str
    pattern: "re.Pattern[str]"
    remaining: int


class CountingProxy:
    """Forward to *upstream*, count what passes, lose chosen answers.

    ``url`` is the proxy's base URL with the upstream's path (so a
    configuration's ``scicat_url`` can be swapped for it as it is).
    """

    def __init__(self, upstream: str, timeout: float = 120.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http":
            raise ValueError(f"{upstream}: only plain http backends (loopback) are proxied")
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self._hits: List[Hit] = []
        self._rules: List[DropRule] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "CountingProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="counting-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "CountingProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"

    # -- control -------------------------------------------------------------

    def drop(self, method: str, shape_regex: str, count: int = 1) -> None:
        """Lose the answers of the next *count* requests matching method and shape."""
        with self._lock:
            self._rules.append(DropRule(method.upper(), re.compile(shape_regex), count))

    def clear_drops(self) -> None:
        with self._lock:
            self._rules.clear()

    def mark(self) -> int:
        """A position in the request record (for :meth:`hits` since then)."""
        with self._lock:
            return len(self._hits)

    def hits(self, since: int = 0) -> List[Hit]:
        with self._lock:
            return list(self._hits[since:])

    # -- forwarding ----------------------------------------------------------

    def _take_drop(self, method: str, shape: str) -> bool:
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and rule.method == method and rule.pattern.search(shape):
                    rule.remaining -= 1
                    return True
        return False

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        shape = route_shape(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {
            key: value for key, value in handler.headers.items() if key.lower() not in HOP_HEADERS
        }
        status, reason, answer_headers, answer = 502, "Bad Gateway", [], b""
        connection = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=self.timeout
        )
        try:
            connection.request(method, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            status, reason = response.status, response.reason
            answer_headers = response.getheaders()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:
            answer = f"proxy: backend did not answer: {error}".encode()
        finally:
            connection.close()
        dropped = self._take_drop(method, shape)
        with self._lock:
            self._hits.append(Hit(method, shape, status, dropped, time.monotonic()))
        if dropped:
            # the backend acted on the request; the client never hears of it
            handler.close_connection = True
            return
        # the backend's own status line and headers (Server and Date included):
        # the proxy must not show up in what the client sees
        handler.send_response_only(status, reason)
        for key, value in answer_headers:
            if key.lower() not in HOP_HEADERS:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(answer)


def summarize(hits: List[Hit], writes_only: bool = True) -> str:
    """``POST Datasets 1, DELETE OrigDatablocks/{id} 2 (1×200 dropped, 1×500), reads 7``."""
    groups: Dict[Tuple[str, str], Counter[str]] = collections.OrderedDict()
    reads = 0
    for hit in hits:
        if writes_only and not is_write(hit.method, hit.shape):
            reads += 1
            continue
        label = f"{hit.status}{' dropped' if hit.dropped else ''}"
        groups.setdefault((hit.method, hit.shape), collections.Counter())[label] += 1
    parts = []
    for (method, shape), statuses in groups.items():
        total = sum(statuses.values())
        text = f"{method} {shape} {total}"
        unusual = {
            label: n
            for label, n in statuses.items()
            if not (label.startswith("2") and not label.endswith("dropped"))
        }
        if unusual:
            text += " (" + ", ".join(f"{n}×{label}" for label, n in sorted(statuses.items())) + ")"
        parts.append(text)
    if writes_only:
        parts.append(f"reads {reads}")
    return ", ".join(parts) if parts else "nothing"


def count(hits: List[Hit], method: str, shape: str, status_prefix: str = "") -> int:
    """How many hits had this method and shape (and a status starting so)."""
    return sum(
        1
        for hit in hits
        if hit.method == method and hit.shape == shape and str(hit.status).startswith(status_prefix)
    )


def writes(hits: List[Hit]) -> List[Hit]:
    return [hit for hit in hits if is_write(hit.method, hit.shape)]
