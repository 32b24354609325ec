"""The transport under the SciCat client: send one try, classify a failure, decode.

It knows HTTP and the backend's answer shapes, nothing about retries,
tokens or rights: the retry policy (:mod:`.retry`) decides what a try's
outcome means, the client (:mod:`.client`) strings tries together.  It is
kept apart so that a newcomer can read "what went over the wire" without
the retry loop, and so that :mod:`scingestor.preflight` can send its few
anonymous probes through the same session and TLS settings.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

import requests
import urllib3

from ..errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SciCatError,
    ValidationError,
)
from ..redact import protect_logger, redact
from .messages import parse_error_messages
from .settings import MAX_BODY_BYTES, ClientSettings
from .v4 import Routes, route_base, sibling

logger = protect_logger(logging.getLogger(__name__))

_MAX_ERROR_TEXT = 2000


class NoBody:
    """Marks "send no body at all" (``None`` would be the JSON ``null``)."""


NOBODY = NoBody()


def encode_segment(value: Any) -> str:
    """One URL path segment: every ``/`` (and anything else special) encoded."""
    return quote(str(value), safe="")


def short(text: str) -> str:
    """An answer's text cut to a length a log line can hold."""
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


def _chain(exc: BaseException) -> List[BaseException]:
    """The exception, its args, reasons and causes: where urllib3 hides the real error."""
    seen: List[BaseException] = []
    todo: List[Any] = [exc]
    while todo and len(seen) < 32:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend(item.args)
        for attr in ("reason", "__cause__", "__context__"):
            todo.append(getattr(item, attr, None))
    return seen


_FATAL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
    requests.exceptions.SSLError,  # certificate problems do not go away by trying again
)
_NOT_CONNECTED = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    ConnectionRefusedError,
)
_LOST = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    http.client.IncompleteRead,
)


def classify(exc: requests.RequestException) -> str:
    """``"refused"`` (nothing sent), ``"lost"`` (maybe processed) or ``"fatal"``."""
    if isinstance(exc, _FATAL):
        return "fatal"
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError)):
        return "refused"
    if isinstance(exc, requests.exceptions.ConnectionError):
        if any(isinstance(item, _NOT_CONNECTED) for item in _chain(exc)):
            return "refused"
    return "lost"  # read timeouts, broken answers


def describe(exc: requests.RequestException) -> str:
    """A short reason for a transport failure (the full chain is very long)."""
    chain = _chain(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout (no answer in time)"
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return "connection refused"
    for item in chain:
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            return "cannot connect: " + str(item).rsplit(": ", 1)[-1]
    for item in chain:
        if isinstance(item, _LOST):
            return f"connection lost ({type(item).__name__}: {item})"
    return f"{type(exc).__name__}: {exc}"


def decode(response: requests.Response) -> Tuple[Any, bool]:
    """(decoded body, is JSON); an empty body is ``None`` (and counts as JSON)."""
    if not response.content or not response.content.strip():
        return None, True
    try:
        return response.json(), True
    except ValueError:
        return response.text, False


_ERRORS: Dict[int, type] = {
    400: ValidationError,
    413: ValidationError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
}


def error_for(method: str, url: str, response: requests.Response) -> SciCatError:
    """The error an answer stands for, with the backend's messages flattened."""
    body, _ = decode(response)
    messages = parse_error_messages(body)
    status = response.status_code
    detail = "; ".join(messages) if messages else short(str(body or ""))
    text = redact(
        f"{method} {url}: {status} {response.reason or ''}" + (f": {detail}" if detail else "")
    )
    cls = _ERRORS.get(status, SciCatError)
    return cls(text, status=status, body=body, method=method, url=url, messages=messages)


@dataclass
class Failure:
    """A try that got no answer: ``kind`` from :func:`classify`, ``reason`` redacted."""

    kind: str
    reason: str


class Transport:
    """One keep-alive session to one SciCat: URLs, bodies, headers, one try."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        #: the routes and bodies of the API version the URL names (v3 or v4)
        self.routes = Routes(settings)
        self._headers: Dict[str, str] = dict(settings.headers)
        self.session = requests.Session()
        self.session.verify = settings.verify

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def url_of(self, path: str) -> str:
        """The full URL of *path* (a full URL stays: another API version).

        Under a ``…/api/v4`` URL only the v4 controllers stay on v4; login,
        proposals, samples and the rest go to the v3 base beside it.
        """
        if path.startswith(("http://", "https://")):
            return path
        return f"{route_base(self.url, path)}/{path.lstrip('/')}"

    def v4_url(self) -> Optional[str]:
        """The API v4 base of a ``…/api/v3`` or ``…/api/v4`` URL (``None`` for others)."""
        return sibling(self.url, "v4")

    def encode(self, body: Any, method: str, url: str) -> Optional[bytes]:
        """The bytes to send; a body SciCat would refuse (16 MiB) is refused here."""
        if isinstance(body, NoBody):
            return None
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        if len(data) >= MAX_BODY_BYTES:
            raise ValidationError(
                f"{method} {url}: body of {len(data)} bytes refused: SciCat accepts less "
                f"than {MAX_BODY_BYTES} bytes (16 MiB); split it",
                method=method,
                url=url,
                messages=[f"request body too large: {len(data)} bytes"],
            )
        return data

    def headers_for(self, token: Optional[str], has_body: bool) -> Dict[str, str]:
        """The configured headers, a content type for a body, the bearer token."""
        headers = dict(self._headers)
        if has_body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def send(
        self,
        method: str,
        url: str,
        *,
        data: Optional[bytes] = None,
        params: Optional[Dict[str, str]] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> "requests.Response | Failure":
        """One try: the response, or the :class:`Failure` that replaced it."""
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                data=data,
                params=params,
                headers=self.headers_for(token, data is not None),
                timeout=self.settings.timeout if timeout is None else timeout,
                verify=self.settings.verify,
            )
        except requests.RequestException as exc:
            elapsed = time.monotonic() - started
            logger.debug("%s %s -> %s (%.3f s)", method, url, type(exc).__name__, elapsed)
            return Failure(classify(exc), redact(describe(exc)))
        elapsed = time.monotonic() - started
        logger.debug("%s %s -> %s (%.3f s)", method, url, response.status_code, elapsed)
        return response

    def get_info(self, url: str) -> Tuple[Optional[int], Any, Dict[str, str]]:
        """One anonymous GET (status, JSON body or None, headers); never raises."""
        answer = self.send("GET", url, timeout=min(self.settings.timeout, 10.0), token=None)
        if isinstance(answer, Failure):
            return None, None, {}
        body, is_json = decode(answer)
        return answer.status_code, body if is_json else None, dict(answer.headers)
