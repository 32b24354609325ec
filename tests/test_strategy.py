"""Update strategies: comparison, version pids and the decisions against a server.

No generator runs here: the dataset bodies are the fixture installation's
generated JSON moved to a beamtime of the test's own.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from scingestor.strategy import (
    DatasetRejected,
    check_dataset,
    differences,
    ingest_dataset,
    next_version,
    normalise_dataset,
    patch_body,
    prefixed,
    unprefixed,
    with_measurement_keyword,
)

from .conftest import BeamtimeEnv
from .paths import FIXTURES


def body_for(env: BeamtimeEnv, name: str = "scan_00001") -> Dict[str, Any]:
    """The fixture installation's scan JSON as a dataset of *env*'s beamtime named *name*."""
    text = (FIXTURES / "generated" / "scan_00001.scan.json").read_text()
    body = json.loads(text.replace("99001234", env.bid))
    body["pid"] = env.pid(name)
    body["datasetName"] = name
    return body


# ---------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pid, expected",
    [
        ("99001234/s_00001", "99001234/s_00001/2"),
        ("99001234/s_00001/2", "99001234/s_00001/3"),
        ("99001234/s_00001/9", "99001234/s_00001/10"),
        ("99001234/sub/scan", "99001234/sub/scan/2"),
        ("99001234/00012", "99001234/00012/2"),
        # kept as existing installations do it, although it can meet the pid of
        # a scan called sub/13
        ("99001234/sub/00012", "99001234/sub/13"),
    ],
)
def test_next_version(pid: str, expected: str) -> None:
    assert next_version(pid) == expected


def test_differences() -> None:
    server = {
        "pid": "b/s",
        "createdAt": "x",
        "keywords": ["scan"],
        "scientificMetadata": {"a%2Eb": 1, "c": {"d": 2, "e": 3}},
    }
    # keys only the server has do not count; '.' stored as %2E is decoded
    assert differences(server, {"keywords": ["scan"]}) == []
    assert differences(server["scientificMetadata"], {"a.b": 1, "c": {"d": 2}}) == []
    assert differences(server, {"keywords": ["scan", "calib"]}) == ["keywords"]
    assert differences(server["scientificMetadata"], {"c": {"d": 5}}) == ["c.d"]
    assert differences(server["scientificMetadata"], {"c": {"d": 5}}, ["c.d"]) == []
    # a local field the server lacks counts unless it is empty
    assert differences(server, {"description": ""}) == []
    assert differences(server, {"description": "x"}) == ["description"]
    assert differences(server, {"isPublished": False}) == ["isPublished"]


def test_patch_body_and_normalisation(beamtime) -> None:
    env = beamtime(metadata_fields_cannot_be_patched=["techniques"])
    local = {
        "pid": "b/s",
        "type": "raw",
        "version": "3",
        "createdAt": "x",
        "description": "d",
        "techniques": [],
        "usedSoftware": "nxstools",
    }
    assert patch_body(env.config, local) == {"description": "d", "usedSoftware": "nxstools"}
    fixed = normalise_dataset({"usedSoftware": "nxstools", "inputDatasets": "b/s"})
    assert fixed == {"usedSoftware": ["nxstools"], "inputDatasets": ["b/s"]}
    keyworded = with_measurement_keyword(env.config, {"keywords": ["scan"]}, "calib")
    assert keyworded == {"keywords": ["scan", "calib"]}
    assert with_measurement_keyword(env.config, {"keywords": ["scan", "calib"]}, "calib") == {
        "keywords": ["scan", "calib"]
    }
    off = env.config.replace(force_measurement_keyword=False)
    assert with_measurement_keyword(off, {"keywords": ["scan"]}, "calib") == {"keywords": ["scan"]}


def test_prefix(beamtime) -> None:
    env = beamtime(dataset_pid_prefix="10.5072/")
    assert prefixed(env.config, "b/s") == "10.5072/b/s"
    assert prefixed(env.config, "10.5072/b/s") == "10.5072/b/s"
    assert unprefixed(env.config, "10.5072/b/s") == "b/s"


def test_check_dataset() -> None:
    body = {"pid": "99001234/s", "type": "raw", "proposalId": "99991173.99001234"}
    check_dataset(body, "99001234", "99991173.99001234", "s.scan.json")
    with pytest.raises(DatasetRejected, match=r"s\.scan\.json: field 'pid'"):
        check_dataset(dict(body, pid="99001235/s"), "99001234", "99991173.99001234", "s.scan.json")
    with pytest.raises(DatasetRejected, match="field 'proposalId'"):
        check_dataset(dict(body, proposalId="1.2"), "99001234", "99991173.99001234", "f")
    # a derived (measurement) dataset carries no proposalId of its own
    check_dataset({"pid": "99001234/calib", "type": "derived"}, "99001234", "x", "f")


# ---------------------------------------------------------------------------
# decisions against the server
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, science, other",
    [
        ("no", "kept", "kept"),
        ("patch", "patched", "patched"),
        ("create", "new_version", "new_version"),
        ("mixed", "patched", "new_version"),
    ],
)
def test_strategy_decisions(beamtime, strategy: str, science: str, other: str) -> None:
    env = beamtime()
    config = env.config.replace(dataset_update_strategy=strategy)
    body = body_for(env)
    pid = body["pid"]
    assert ingest_dataset(env.client, config, body).action == "created"
    assert ingest_dataset(env.client, config, body).action == (
        "kept" if strategy == "no" else "unchanged"
    )
    changed = json.loads(json.dumps(body))
    changed["scientificMetadata"]["comment"] = "new"
    result = ingest_dataset(env.client, config, changed)
    assert result.action == science
    assert result.pid == (f"{pid}/2" if science == "new_version" else pid)
    body_other = dict(body, description="another")
    result = ingest_dataset(env.client, config, body_other)
    assert result.action == other
    if other == "new_version":
        assert result.pid == (f"{pid}/3" if science == "new_version" else f"{pid}/2")
    env.assert_clean()


def test_fields_without_checks_are_not_compared(beamtime) -> None:
    env = beamtime()
    config = env.config.replace(
        metadata_fields_without_checks=[
            "description",
            "scientificMetadata.comment",
            "creationTime",
            "endTime",
        ]
    )
    body = body_for(env)
    ingest_dataset(env.client, config, body)
    body["description"] = "not compared"
    body["scientificMetadata"]["comment"] = "not compared either"
    assert ingest_dataset(env.client, config, body).action == "unchanged"
    body["scientificMetadata"]["other"] = "compared"
    assert ingest_dataset(env.client, config, body).action == "patched"


def test_create_reuses_an_equal_version(beamtime) -> None:
    """A retry of a version POST whose answer was lost does not make one more."""
    env = beamtime()
    config = env.config.replace(dataset_update_strategy="create")
    body = body_for(env)
    ingest_dataset(env.client, config, body)
    changed = dict(body, description="v2")
    assert ingest_dataset(env.client, config, changed).pid == f"{body['pid']}/2"
    again = ingest_dataset(env.client, config, changed)
    assert (again.action, again.pid) == ("unchanged", f"{body['pid']}/2")
    assert sorted(env.datasets()) == [body["pid"], f"{body['pid']}/2"]


def test_measurement_keyword_on_update(beamtime) -> None:
    env = beamtime()
    body = dict(body_for(env), keywords=["scan"])
    ingest_dataset(env.client, env.config, body)
    assert ingest_dataset(env.client, env.config, body, "calib").action == "patched"
    assert env.datasets()[body["pid"]]["keywords"] == ["scan", "calib"]
    assert ingest_dataset(env.client, env.config, body, "calib").action == "unchanged"
