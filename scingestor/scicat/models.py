"""``scicat_ingest -m``: POST any model by hand, with the backend's quirks known.

An operator waits for the answer, so a 500 is never retried for long: a
record with a key (``sampleId``, ``proposalId``, ``pid``) is looked up and
reported as already there (:class:`~scingestor.errors.ConflictError`);
otherwise a few 500 answers alike stop it with the server's message.
``RawDatasets``/``DerivedDatasets`` no longer exist in API v3: they go to
the datasets route with ``type`` set (unless the body has one).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional, Protocol, Union

from ..errors import ValidationError
from ..redact import protect_logger
from .retry import Mode
from .transport import encode_segment


class SciCatClient(Protocol):
    """What a model POST needs of the client (a protocol, so this room never imports the facade)."""

    transport: Any
    settings: Any

    def post_dataset_to(self, *args: Any, **kwargs: Any) -> Any: ...

    def create(self, *args: Any, **kwargs: Any) -> Any: ...

    def _call(self, *args: Any, **kwargs: Any) -> Any: ...


logger = protect_logger(logging.getLogger(__name__))

#: 500 answers alike in a row before a model POST stops (by hand, an operator
#: waits for the answer: not half an hour of retries)
MODEL_SAME_500_LIMIT = 3
_LEGACY_DATASET_MODELS = {"rawdatasets": "raw", "deriveddatasets": "derived"}


def as_dict(body: Union[dict, str, bytes]) -> Optional[dict]:
    """*body* as a JSON object, ``None`` when it is none."""
    if isinstance(body, dict):
        return body
    try:
        decoded = json.loads(body)
    except (TypeError, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _key(body: Union[dict, str], name: str) -> Optional[str]:
    record = as_dict(body)
    key = record.get(name) if record else None
    return key if isinstance(key, str) and key else None


def _legacy_dataset(client: "SciCatClient", name: str, kind: str, body: Union[dict, str]) -> dict:
    record = as_dict(body)
    if record is None:
        url = client.transport.url_of(name)
        raise ValidationError(
            f"POST {url}: the {name} body is not a JSON object",
            method="POST",
            url=url,
            messages=["body is not a JSON object"],
        )
    if "type" not in record:
        record = dict(record, type=kind)
        body = record
    path = client.settings.datasets_path
    logger.info("Model %s: posting to %s (type %s)", name, path, record.get("type"))
    return client.post_dataset_to(path, body, MODEL_SAME_500_LIMIT)


def post_model(client: "SciCatClient", model: str, body: Union[dict, str]) -> dict:
    """POST *body* to ``{url}/{model}`` (see the module's text for the rules)."""
    name = model.strip().strip("/")
    lower = name.lower()
    settings = client.settings
    legacy = _LEGACY_DATASET_MODELS.get(lower)
    if legacy is not None:
        return _legacy_dataset(client, name, legacy, body)
    if lower in ("datasets", settings.datasets_path.lower()):
        return client.post_dataset_to(name, body, MODEL_SAME_500_LIMIT)
    if lower in ("proposals", settings.proposals_path.lower()):
        key = _key(body, "proposalId")
        where = f"{settings.proposals_path}/{encode_segment(key)}" if key else None
        return client.create(name, body, key, where, MODEL_SAME_500_LIMIT)
    if lower == "samples":
        # backend 4.5.0 answers an existing sampleId with 500, not 409
        key = _key(body, "sampleId")
        where = f"{name}/{encode_segment(key)}" if key else None
        return client.create(name, body, key, where, MODEL_SAME_500_LIMIT)
    return client._call(
        "POST", name, body=body, mode=Mode.UNSAFE, same_500_limit=MODEL_SAME_500_LIMIT
    ).body
