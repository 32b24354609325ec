"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from scingestor.testing.scicat_server import SciCatServer


def wait_until(
    predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05
) -> bool:
    """Poll *predicate* until it holds or *timeout* passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def posted_pids(server: SciCatServer, beamtime_id: str) -> Counter:
    """How often each dataset pid of the beamtime was created (201 POSTs)."""
    return Counter(
        request.body.get("pid")
        for request in server.recorded("POST")
        if request.path.lower().endswith("/datasets")
        and request.status == 201
        and isinstance(request.body, dict)
        and str(request.body.get("pid", "")).startswith(beamtime_id + "/")
    )
