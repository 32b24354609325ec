"""The client rules of issue 18 (1, 3, 7, 9), each against our test server taught the fault.

1. a create stored, then answered 500, is looked up, never re-posted blind;
3. a 403 after a re-login is a missing right only for a token obtained for
   that very try (or one auth/whoami calls valid);
7. a request answered 5xx every time gives up soon, as SciCatFailing;
9. the v3 attachment DELETE (it removes the OLDEST attachment) is never
   repeated blind.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

from scingestor.errors import (
    ConflictError,
    ForbiddenError,
    SciCatAmbiguousError,
    SciCatFailing,
    SciCatUnreachable,
)
from scingestor.scicat import Credentials, SciCatClient
from scingestor.testing.scicat_server import SciCatServer
from scingestor.uploads import sync_attachments, sync_datablocks

from .test_scicat_client import PASSWORD, datablock, make_settings, raw_dataset

SCANS = 30


@pytest.fixture
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


def _client(server: SciCatServer, **kw: Any) -> SciCatClient:
    return SciCatClient(
        make_settings(server, **kw), Credentials.from_password("ingestor", PASSWORD)
    )


def _attachment(i: int) -> Dict[str, Any]:
    return {
        "thumbnail": f"data:image/png;base64,{i:04d}",
        "caption": "",
        "ownerGroup": "99001234-dmgt",
    }


def _ingest(client: SciCatClient, i: int) -> None:
    """One scan as the pipeline posts it; a failure that may pass is tried again
    later (as the queue does), from the top."""
    pid = f"99001234/rule_{i:04d}"
    for _ in range(20):
        try:
            try:
                client.post_dataset(raw_dataset(pid))
            except ConflictError:
                pass  # stored by an earlier try
            sync_datablocks(client, pid, [datablock(pid)])
            sync_attachments(client, pid, [_attachment(i)])
            return
        except SciCatUnreachable:
            continue
    raise AssertionError(f"scan {i} never ingested")


def _duplicates(server: SciCatServer) -> Dict[str, int]:
    blocks: Dict[str, int] = {}
    for block in server.origdatablocks.values():
        blocks[block["datasetId"]] = blocks.get(block["datasetId"], 0) + 1
    attachments: Dict[str, int] = {}
    for item in server.attachments.values():
        key = item.get("datasetId") or ""
        attachments[key] = attachments.get(key, 0) + 1
    return {
        "blocks": sum(n - 1 for n in blocks.values()),
        "attachments": sum(n - 1 for n in attachments.values()),
        "datasets without block": SCANS - len(blocks),
    }


def test_rule1_stored_then_500_makes_no_duplicate(server: SciCatServer) -> None:
    """30 scans, 30 % of POSTs stored and then answered 500 (before: duplicates)."""
    with _client(server) as client:
        client.login()
        server.store_then_fail(rate=0.3, status=500, method="POST", seed=18)
        for i in range(SCANS):
            _ingest(client, i)
        server.reset_faults()
    assert len(server.datasets) == SCANS
    assert _duplicates(server) == {"blocks": 0, "attachments": 0, "datasets without block": 0}


def test_rule1_the_server_stores_then_fails(server: SciCatServer) -> None:
    with _client(server) as client:
        client.login()
        client.post_dataset(raw_dataset())
        server.store_then_fail(count=1)
        with pytest.raises(SciCatAmbiguousError):
            client.post_origdatablock(datablock())
        assert len(client.get_origdatablocks(raw_dataset()["pid"])) == 1


def test_rule3_dying_tokens_and_500s_never_look_like_a_missing_right(
    server: SciCatServer,
) -> None:
    """Tokens of 4 uses, 25 % 500s, 3 workers (before: ForbiddenError, a
    dataset without its origdatablock)."""
    forbidden: List[BaseException] = []
    with _client(server) as client:
        client.login()
        server.set_token_uses(4)
        server.set_error_rate(0.25, status=500, seed=3)

        def worker(first: int) -> None:
            for i in range(first, SCANS, 3):
                try:
                    _ingest(client, i)
                except ForbiddenError as exc:
                    forbidden.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        server.reset_faults()
    assert forbidden == []
    assert _duplicates(server)["datasets without block"] == 0


def test_rule3_a_real_missing_right_is_still_forbidden(server: SciCatServer) -> None:
    server.add_dataset(raw_dataset("99001234/private", ownerGroup="other-group"))
    with SciCatClient(
        make_settings(server), Credentials.from_password("user", "user-password")
    ) as cli:
        server.set_token_uses(3)
        with pytest.raises(ForbiddenError):
            cli.patch_dataset("99001234/private", {"description": "x"})


def test_rule7_a_request_failing_every_time_gives_up_soon(server: SciCatServer) -> None:
    """Before: 100 tries (about half an hour with the default backoff)."""
    with _client(server, max_tries=100, backoff_max=0.05) as client:
        client.login()
        server.clear_recorded()
        server.set_error_rate(1.0, status=503)
        started = time.monotonic()
        with pytest.raises(SciCatFailing) as info:
            client.get_dataset("99001234/never")
        server.reset_faults()
    assert info.value.attempts == client.settings.max_failing_answers == 10
    assert len(server.recorded()) == 10 and time.monotonic() - started < 30


def test_rule9_the_v3_attachment_delete_is_never_repeated_blind() -> None:
    """A dataset holding A, B, C, D; D deleted by the v3 route (which takes the
    OLDEST) with two lost answers.  Before: A, B and C gone, D kept."""
    with SciCatServer(v4=False) as server, _client(server) as client:
        client.login()
        pid = raw_dataset()["pid"]
        client.post_dataset(raw_dataset())
        ids = [client.post_attachment(pid, _attachment(i))["id"] for i in range(4)]
        server.lose_next_responses(2, "DELETE")
        with pytest.raises(SciCatAmbiguousError):
            client.delete_attachment(pid, ids[3])
        held = {a["id"] for a in client.get_attachments(pid)}
    assert len(held) == 3  # one DELETE reached the backend, never more


def test_server_faults_store_then_fail_and_token_uses(server: SciCatServer) -> None:
    """The test server's own faults, as the rules above use them."""
    with _client(server) as client:
        client.login()
        server.store_then_fail(count=1, method="POST")
        server.clear_recorded()
        with pytest.raises(ConflictError) as info:  # stored, answered 500, found by its pid
            client.post_dataset(raw_dataset())
        assert info.value.status == 500
        # the record shows what the backend did (stored); the client got the 500
        assert [r.status for r in server.recorded(method="POST")] == [201]
        assert len(server.datasets) == 1
        server.set_token_uses(2)
        server.clear_recorded()
        for _ in range(3):
            client.get_dataset(raw_dataset()["pid"])
        client.patch_dataset(raw_dataset()["pid"], {"description": "after a re-login"})
        logins = [r for r in server.recorded(method="POST") if r.path.endswith("login")]
        assert len(logins) == 1  # the token died after two uses, one re-login saved it
