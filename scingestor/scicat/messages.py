"""Turn SciCat error bodies into a flat list of readable texts.

The backend answers validation failures in two shapes:

* v3 dataset POST/PATCH: ``{"status": 400, "message": "<JSON string>"}``
  where the string encodes class-validator errors
  ``[{"property", "constraints": {rule: text}, "children": [...]}]``;
* everything else: ``{"message": ["text", ...], "error": "Bad Request",
  "statusCode": 400}`` (or a single text in ``message``).

Both become ``["bogus: property bogus should not exist", ...]`` so an
operator sees what to fix without reading nested JSON.
"""

from __future__ import annotations

import json
from typing import Any, List


def _flatten_validator_errors(items: list, prefix: str = "") -> List[str]:
    """Flatten class-validator error objects, keeping the property path."""
    out: List[str] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(f"{prefix}{item}" if prefix else str(item))
            continue
        prop = item.get("property")
        path = f"{prefix}{prop}" if prop not in (None, "") else prefix.rstrip(".")
        constraints = item.get("constraints")
        if isinstance(constraints, dict):
            for text in constraints.values():
                out.append(f"{path}: {text}" if path else str(text))
        children = item.get("children")
        if isinstance(children, list) and children:
            out.extend(_flatten_validator_errors(children, f"{path}." if path else ""))
        if not isinstance(constraints, dict) and not children:
            # an item without constraints: show what we have
            text = item.get("message") or item.get("error") or json.dumps(item, sort_keys=True)
            out.append(f"{path}: {text}" if path else str(text))
    return out


def _from_message(message: Any) -> List[str]:
    if isinstance(message, list):
        out: List[str] = []
        for item in message:
            if isinstance(item, dict):
                out.extend(_flatten_validator_errors([item]))
            else:
                out.append(str(item))
        return out
    if isinstance(message, dict):
        return _flatten_validator_errors([message])
    if isinstance(message, str):
        text = message.strip()
        if text[:1] in ("[", "{"):
            try:
                decoded = json.loads(text)
            except ValueError:
                return [message]
            return _from_message(decoded) or [message]
        return [message] if message else []
    if message is None:
        return []
    return [str(message)]


def parse_error_messages(body: Any) -> List[str]:
    """Readable texts from a decoded SciCat error body (any shape, never raises)."""
    try:
        if isinstance(body, dict):
            if "message" in body:
                out = _from_message(body.get("message"))
                if out:
                    return out
            for key in ("error", "Error", "detail"):
                if isinstance(body.get(key), str) and body[key]:
                    return [body[key]]
            return []
        if isinstance(body, list):
            return _from_message(body)
        if isinstance(body, str):
            return _from_message(body) if body.strip() else []
        if body is None:
            return []
        return [str(body)]
    except Exception:  # an error body must never break error reporting
        return [str(body)]
