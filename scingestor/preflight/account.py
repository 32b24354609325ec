"""The first checks: is SciCat there, which backend answers, may we log in, as whom.

Each function records its row(s) in the report and never raises a client
error; the ones the rest depends on (reach, log in) say whether to go on
and set the report's fatal line when not.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from ..errors import AuthenticationError, SciCatError, SciCatUnreachable, ScingestorError
from ..redact import redact
from ..scicat import SciCatClient
from .report import NO, UNKNOWN, YES, PreflightReport, answer

#: headers that may name the server or the backend's release
_VERSION_HEADERS = ("Server", "X-Powered-By", "X-Backend-Version", "X-Api-Version")


def reach(client: SciCatClient, report: PreflightReport) -> bool:
    """Whether SciCat answers at all (nothing else is tried when not)."""
    try:
        elapsed = client.ping()
    except SciCatUnreachable as exc:
        reason = getattr(exc, "last_error", "") or str(exc)
        report.add("reach SciCat", NO, f"{client.url}: {reason}")
        report.fatal = f"SciCat at {client.url} cannot be reached: {reason}"
        return False
    report.add("reach SciCat", YES, f"answered in {elapsed * 1000:.0f} ms")
    return True


def _health(body: Any) -> str:
    """``health ok (mongo up, …)`` out of the backend's health answer."""
    health = f"health {body.get('status', '?')}"
    info = body.get("info")
    if isinstance(info, dict) and info:
        health += (
            " ("
            + ", ".join(
                f"{name} {value.get('status', '?')}"
                for name, value in info.items()
                if isinstance(value, dict)
            )
            + ")"
        )
    return health


def backend(client: SciCatClient, report: PreflightReport) -> None:
    """Which backend answers: health, the OpenAPI title/version, headers.

    The probes are anonymous GETs through the client's transport (same
    session and TLS settings); none of them raises.
    """
    url = client.url
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    facts: List[str] = []
    # the health route is a v3 one (under a v4 URL: the v3 base beside it)
    status, body, headers = client.transport.get_info(client.transport.url_of("health"))
    if status == 200 and isinstance(body, dict):
        facts.append(_health(body))
    elif status is not None:
        facts.append(f"no health route ({status})")
    status, body, _ = client.transport.get_info(f"{origin}/explorer-json")
    if status == 200 and isinstance(body, dict) and isinstance(body.get("info"), dict):
        info = body["info"]
        facts.append(f"OpenAPI {info.get('title', '?')!r} {info.get('version', '?')}")
    facts += _version_headers(headers)
    if not facts:
        report.add(
            "backend version",
            UNKNOWN,
            "no health, OpenAPI or version header answered",
            needed=False,
        )
        return
    facts.append("the backend release itself is published by no route")
    report.add("backend version", YES, "; ".join(facts), needed=False)


def _version_headers(headers: Dict[str, str]) -> List[str]:
    return [
        f"{name}: {headers[name].strip()}"
        for name in _VERSION_HEADERS
        if headers.get(name, "").strip()
    ]


def login(client: SciCatClient, report: PreflightReport) -> bool:
    """Whether the configured account gets a token (nothing more is tried when not)."""
    try:
        client.login()
    except (AuthenticationError, SciCatError, ScingestorError) as exc:
        status: Optional[int] = getattr(exc, "status", None)
        detail = answer(exc) if status else redact(str(exc))
        if status in (400, 401, 403):
            source = client.settings.credential_file
            detail += " (wrong user name or password" + (f" in {source})" if source else ")")
        report.add("log in", NO, detail)
        report.fatal = f"cannot log in to {client.url} as {client.account_name}: {detail}"
        return False
    report.add("log in", YES, f"as {client.account_name} (token received)")
    return True


def whoami(client: SciCatClient, report: PreflightReport) -> None:
    """The account's user name and groups, for the reader (not needed)."""
    try:
        user = client.whoami()
    except SciCatError as exc:
        report.add("auth/whoami", UNKNOWN, answer(exc), needed=False)
        return
    if not user:
        report.add("auth/whoami", UNKNOWN, "answered with an empty body", needed=False)
        return
    groups = user.get("currentGroups")
    text = f"user {user.get('username', '?')}"
    if isinstance(groups, list):
        text += ", groups: " + (", ".join(str(g) for g in groups) or "none")
    report.add("auth/whoami", YES, text, needed=False)
