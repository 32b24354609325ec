"""SciCat client calls that only tests, benchmarks and tools make.

The ingestor itself never asks "does this pid exist" without reading the
dataset, never posts a block by the nested route and never searches
datasets: these calls live here so the client keeps only what the
ingestor uses, and so that a test reads as what it checks.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ..errors import SciCatUnreachable
from ..scicat import SciCatClient, encode_segment
from ..scicat.retry import Mode


def dataset_exists(client: SciCatClient, pid: str) -> bool:
    """Existence check by pid (a 403 after re-login raises ForbiddenError)."""
    return client.get_dataset(pid) is not None


def post_dataset_origdatablock(client: SciCatClient, pid: str, body: dict) -> dict:
    """Create an origdatablock by the nested route (no ``datasetId``/group keys)."""
    path = "/".join([client.settings.datasets_path, encode_segment(pid), "OrigDatablocks"])
    return client.request("POST", path, body=body, mode=Mode.UNSAFE)


def find_datasets(client: SciCatClient, where: dict, limit: Optional[int] = None) -> list:
    """Datasets matching a loopback ``where`` filter (``[]`` if none)."""
    query: Dict[str, Any] = {"where": where}
    if limit is not None:
        query["limits"] = {"limit": int(limit)}
    params = {"filter": json.dumps(query)}
    body = client.request("GET", client.settings.datasets_path, params=params)
    return body if isinstance(body, list) else []


def reachable(client: SciCatClient, timeout: Optional[float] = None) -> bool:
    """True when SciCat answers (see :meth:`SciCatClient.ping`)."""
    try:
        client.ping(timeout)
    except SciCatUnreachable:
        return False
    return True
