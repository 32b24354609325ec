"""Answers SciCat never sends (issue 22): a maintenance page, cut JSON, an empty
create answer.  Each is a retryable error, looked up before any re-post, never
a success; on our test server taught to give them (``garble_next``)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from scingestor.errors import SciCatAmbiguousError, SciCatError, SciCatFailing
from scingestor.scicat import Credentials, SciCatClient
from scingestor.testing.scicat_server import SciCatServer

from .test_scicat_client import PASSWORD, datablock, make_settings, raw_dataset

PID = "99001234/garbled"


def _client(server: SciCatServer, **kw: Any) -> SciCatClient:
    return SciCatClient(
        make_settings(server, **kw), Credentials.from_password("ingestor", PASSWORD)
    )


def _dataset(pid: str = PID) -> dict:
    return raw_dataset(pid)


@pytest.fixture()
def server() -> Iterator[SciCatServer]:
    with SciCatServer() as srv:
        yield srv


@pytest.mark.parametrize("kind", ["empty", "broken", "html"])
def test_a_garbled_dataset_answer_is_looked_up_then_read_back(
    server: SciCatServer, kind: str
) -> None:
    """Before: an empty 200 was the result (None), cut JSON and HTML an error
    retiring the scan.  Now: the dataset read back (stored) or posted once more."""
    with _client(server) as client:
        client.login()
        server.clear_recorded()
        server.garble_next(1, kind, method="POST")
        record = client.post_dataset(_dataset())
    assert isinstance(record, dict) and record["pid"] == PID
    assert len(server.datasets) == 1
    posts = server.recorded(method="POST")
    assert len(posts) == (2 if kind == "html" else 1)  # a stored one is never re-posted


@pytest.mark.parametrize("kind", ["empty", "broken"])
def test_a_garbled_block_answer_is_ambiguous_not_a_success(server: SciCatServer, kind: str) -> None:
    with _client(server) as client:
        client.login()
        client.post_dataset(_dataset())
        server.garble_next(1, kind, method="POST")
        with pytest.raises(SciCatAmbiguousError):
            client.post_origdatablock(datablock(PID))
        assert len(client.get_origdatablocks(PID)) == 1  # stored: the caller sees it


def test_a_read_answered_html_every_time_ends_as_failing(server: SciCatServer) -> None:
    with _client(server, max_tries=3) as client:
        client.login()
        server.garble_next(0, "html", rate=1.0)
        with pytest.raises(SciCatFailing) as info:
            client.get_dataset(PID)
    assert info.value.attempts == 3
    assert isinstance(info.value, SciCatError)
