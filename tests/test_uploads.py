"""Origdatablocks and attachments: posted once, split when too large, synced on re-ingestion."""

from __future__ import annotations

import json
from typing import Any, Dict, List

from scingestor.uploads import block_signature, split_block, sync_attachments, sync_datablocks

from .conftest import BeamtimeEnv
from .paths import FIXTURES


def files(count: int, prefix: str = "f", size: int = 10) -> List[Dict[str, Any]]:
    return [
        {
            "path": f"{prefix}_{index:05d}.raw",
            "size": size,
            "time": "2026-11-20T10:00:00.123456+0100",
        }
        for index in range(count)
    ]


def dataset(env: BeamtimeEnv, name: str) -> str:
    """Post the fixture installation's scan JSON as dataset *name* of the beamtime; its pid."""
    text = (FIXTURES / "generated" / "scan_00001.scan.json").read_text()
    body = json.loads(text.replace("99001234", env.bid))
    body["pid"] = env.pid(name)
    env.client.post_dataset(body)
    return body["pid"]


def block(env: BeamtimeEnv, entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "size": sum(entry["size"] for entry in entries),
        "dataFileList": entries,
        "ownerGroup": f"{env.bid}-dmgt",
        "accessGroups": [f"{env.bid}-dmgt"],
    }


def test_split_block_by_count_and_by_bytes() -> None:
    small = {"datasetId": "b/s", "size": 30, "dataFileList": files(3)}
    assert split_block(small) == [small]
    parts = split_block({"datasetId": "b/s", "size": 70, "dataFileList": files(7)}, max_files=3)
    assert [len(part["dataFileList"]) for part in parts] == [3, 3, 1]
    assert [part["size"] for part in parts] == [30, 30, 10]
    assert all(part["datasetId"] == "b/s" for part in parts)
    entry_bytes = len(json.dumps(files(1)[0], separators=(",", ":"))) + 1
    parts = split_block(
        {"datasetId": "b/s", "dataFileList": files(10)}, max_bytes=200 + 4 * entry_bytes
    )
    assert sum(len(part["dataFileList"]) for part in parts) == 10
    assert len(parts) > 1


def test_block_signature_ignores_how_the_backend_writes_times() -> None:
    local = {"dataFileList": [{"path": "a", "size": 1, "time": "2026-11-20T10:00:00.123456+0100"}]}
    stored = {"dataFileList": [{"path": "a", "size": 1, "time": "2026-11-20T09:00:00.123Z"}]}
    assert block_signature(local) == block_signature(stored)
    later = {"dataFileList": [{"path": "a", "size": 1, "time": "2026-11-20T09:00:01.000Z"}]}
    assert block_signature(local) != block_signature(later)


def test_sync_datablocks(beamtime) -> None:
    env = beamtime()
    pid = dataset(env, "scan_u1")
    first, second = block(env, files(2, "a")), block(env, files(1, "b"))
    result = sync_datablocks(env.client, pid, [first, second, block(env, [])])
    assert (result.posted, result.present, result.deleted) == (2, 0, 0)
    # again: nothing to post; a changed set without replace adds, with replace swaps
    assert sync_datablocks(env.client, pid, [first, second]).posted == 0
    third = block(env, files(3, "c"))
    result = sync_datablocks(env.client, pid, [first, third])
    assert (result.posted, result.present, result.deleted) == (1, 1, 0)
    assert len(env.blocks(pid)) == 3
    result = sync_datablocks(env.client, pid, [first, third], replace=True)
    assert (result.posted, result.present, result.deleted) == (0, 2, 1)
    assert sorted(len(b["dataFileList"]) for b in env.blocks(pid)) == [2, 3]
    env.assert_clean()


def test_sync_datablocks_after_a_lost_answer(beamtime) -> None:
    env = beamtime()
    pid = dataset(env, "scan_u2")
    env.checkpoint()
    env.server.lose_next_responses(1, "POST")
    result = sync_datablocks(env.client, pid, [block(env, files(2))])
    assert result.posted == 1
    assert [r.dropped for r in env.requests("POST", "OrigDatablocks")] == [True]
    assert len(env.blocks(pid)) == 1


def test_sync_datablocks_splits_large_lists(beamtime, fresh_scicat) -> None:
    env = beamtime(server=fresh_scicat)  # its big blocks stay out of the shared server
    pid = dataset(env, "scan_u3")
    big = block(env, files(20_005, size=1))
    assert sync_datablocks(env.client, pid, [big]).posted == 2
    assert sorted(len(b["dataFileList"]) for b in env.blocks(pid)) == [5, 20_000]
    assert sorted(b["size"] for b in env.blocks(pid)) == [5, 20_000]
    result = sync_datablocks(env.client, pid, [big], replace=True)
    assert (result.posted, result.present, result.deleted) == (0, 2, 0)


def test_sync_attachments(beamtime) -> None:
    env = beamtime()
    pid = dataset(env, "scan_u4")
    plot = {"thumbnail": "data:image/png;base64,AAAA", "ownerGroup": f"{env.bid}-dmgt"}
    other = {
        "thumbnail": "data:image/png;base64,BBBB",
        "caption": "x",
        "ownerGroup": f"{env.bid}-dmgt",
    }
    assert sync_attachments(env.client, pid, [plot, other]).posted == 2
    assert sync_attachments(env.client, pid, [plot, other]).posted == 0
    result = sync_attachments(env.client, pid, [plot], replace=True)
    assert (result.posted, result.present, result.deleted) == (0, 1, 1)
    (left,) = env.attachments(pid)
    assert (left["thumbnail"], left["caption"]) == (plot["thumbnail"], "")
    env.checkpoint()
    env.server.lose_next_responses(1, "POST")
    assert sync_attachments(env.client, pid, [plot, other]).posted == 1
    assert len(env.attachments(pid)) == 2
    env.assert_clean()
