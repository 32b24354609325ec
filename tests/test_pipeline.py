"""The ingestion engine end to end: list lines → nxsfileinfo → SciCat.

Every test builds a beamtime in tmp_path (see ``conftest.py``), runs the
real ``nxsfileinfo`` on h5py NeXus and FIO files and posts to the
SciCat-compatible server on loopback.  "Daemon style" means the way the
daemon processes a list (done keys skipped, ``:`` lines re-ingested),
"batch style" the way ``scicat_dataset_ingest`` does (every line
re-ingested, artefacts posted again only when their JSON changed).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

import pytest

from scingestor.cli import dataset_ingest
from scingestor.config import IngestorConfig
from scingestor.metadata.commands import FILE_DATASET, command_template
from scingestor.outcomes import OutcomeStatus
from scingestor.pipeline import Pipeline
from scingestor.scicat import ClientSettings, SciCatClient
from scingestor.testing import scicat_validation as val
from scingestor.testing.builders import nxsfileinfo_executable, write_multi_entry_nexus

from .conftest import BeamtimeEnv
from .paths import FIXTURES, installations

GENERATED = FIXTURES / "generated"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
#: the beamtime of the installations' generated files
REFERENCE_BID = "99001234"
#: a stream generator that prints the origdatablock JSON written the first time
PRINT_DATABLOCK_JSON = (
    f"{shlex.quote(sys.executable)} -c "
    "'import sys; sys.stdout.write(open(sys.argv[1]).read())' "
    "{metapath}/{scanname}{datablockpostfix}"
)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def names(blocks: Sequence[Dict[str, Any]]) -> List[str]:
    """The sorted file paths of origdatablocks."""
    return sorted(entry["path"] for block in blocks for entry in block["dataFileList"])


def mtime_text(path: Path) -> str:
    """A file's mtime as the ingested list writes it."""
    return repr(os.stat(path).st_mtime)


def writes(env: BeamtimeEnv) -> List[Tuple[str, str, str]]:
    """``(method, kind, pid or id)`` of each changing request since the checkpoint."""
    found = []
    for request in env.changes():
        parts = [unquote(part) for part in request.path.split("/api/v3/", 1)[1].split("/")]
        body = request.body if isinstance(request.body, dict) else {}
        route = parts[0].lower()
        if route == "datasets" and len(parts) == 1:
            found.append((request.method, "dataset", str(body.get("pid"))))
        elif route == "datasets" and len(parts) == 2:
            found.append((request.method, "dataset", parts[1]))
        elif route == "datasets" and parts[2].lower() == "attachments":
            found.append((request.method, "attachment", parts[1]))
        elif route == "origdatablocks" and len(parts) == 1:
            found.append((request.method, "origdatablock", str(body.get("datasetId"))))
        elif route == "origdatablocks":
            found.append((request.method, "origdatablock", parts[1]))
        else:
            found.append((request.method, route, "/".join(parts[1:])))
    return found


def about(env: BeamtimeEnv, pid: str) -> List[Tuple[str, str]]:
    """``(method, path)`` of every request since the checkpoint that names *pid*.

    The pid may be in the path (GET, PATCH …) or in the body (POST of a
    dataset or origdatablock); versions ``pid/2`` … count too.
    """
    found = []
    encoded = quote(pid, safe="")
    for request in env.requests():
        body = request.body if isinstance(request.body, dict) else {}
        named = str(body.get("pid") or body.get("datasetId") or "")
        if encoded in request.path or named == pid or named.startswith(pid + "/"):
            found.append((request.method, unquote(request.path.split("/api/v3/", 1)[1])))
    return found


def assert_valid_records(env: BeamtimeEnv) -> None:
    """What the server stored for the beamtime passes the backend's validation."""
    for pid, dataset in env.datasets().items():
        _kind, schema = val.dataset_schema(dataset.get("type"))
        if dataset.get("type") == "derived" and "investigator" not in dataset:
            # the backend keeps a derived investigator as principalInvestigator
            dataset = dict(dataset, investigator=dataset.get("principalInvestigator"))
        assert not val.validate(dataset, schema, whitelist=False), pid
    for block in env.blocks():
        assert not val.validate(block, val.ORIGDATABLOCK, whitelist=False), block["_id"]
    for attachment in env.attachments():
        assert not val.validate(attachment, val.ATTACHMENT, whitelist=False)


def edit_json(path: Path, **changes: Any) -> None:
    """Change top-level fields of a metadata JSON (``scientificMetadata`` is merged)."""
    content = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key == "scientificMetadata":
            content[key].update(value)
        else:
            content[key] = value
    before = os.stat(path).st_mtime
    path.write_text(json.dumps(content, indent=4), encoding="utf-8")
    if os.stat(path).st_mtime <= before:  # coarse file-system clocks
        os.utime(path, (before + 1, before + 1))


def keys(env: BeamtimeEnv, directory: Optional[Path] = None) -> List[str]:
    return [record.key for record in env.ingested(directory).records]


# ---------------------------------------------------------------------------
# 1. the list-line forms
# ---------------------------------------------------------------------------


def test_plain_scan_line(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00001", detectors={"pilatus": 2})
    env.lines("scan_00001")
    outcome = env.run(daemon=True)["scan_00001"]
    pid = env.pid("scan_00001")
    assert (outcome.status, outcome.pid) == (OutcomeStatus.INGESTED, pid)
    dataset = env.datasets()[pid]
    assert dataset["type"] == "raw"
    assert dataset["sourceFolder"] == str(env.raw)
    assert dataset["proposalId"] == f"99991173.{env.bid}"
    assert dataset["keywords"] == ["scan"]
    assert dataset["ownerGroup"] == f"{env.bid}-dmgt"
    assert dataset["scientificMetadata"]["title"]["value"] == "scan_00001"
    assert names(env.blocks(pid)) == [
        "scan_00001.nxs",
        "scan_00001/pilatus_00000.raw",
        "scan_00001/pilatus_00001.raw",
    ]
    # metadata and state under the var dir, mirroring the scan dir
    scan_json = env.meta("scan_00001.scan.json")
    block_json = env.meta("scan_00001.origdatablock.json")
    assert str(scan_json).startswith(str(env.var) + str(env.raw))
    assert str(env.ingested_path()).startswith(str(env.var) + str(env.raw))
    assert env.ingested_lines() == [
        f"scan_00001 {mtime_text(scan_json)} {mtime_text(block_json)} 0"
    ]
    env.assert_clean()
    assert_valid_records(env)
    # done: the daemon leaves it alone
    env.checkpoint()
    assert env.run(daemon=True) == {}
    assert env.requests() == []


def test_reingestion_line_resyncs_without_duplicates(beamtime) -> None:
    env = beamtime()
    env.scan("scan_00001", detectors={"pilatus": 1}, plot=True)
    env.lines("scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED
    pid = env.pid("scan_00001")
    (old_block,) = env.blocks(pid)
    assert len(env.attachments(pid)) == 1
    # one more detector file, then the macro asks for a re-ingestion
    (env.raw / "scan_00001" / "pilatus_00001.raw").write_bytes(b"\0" * 32)
    env.lines("scan_00001:1702988846.07")
    env.checkpoint()
    outcomes = env.run(daemon=True)
    assert list(outcomes) == ["scan_00001:1702988846.07"]
    outcome = outcomes["scan_00001:1702988846.07"]
    assert (outcome.status, outcome.pid) == (OutcomeStatus.UPDATED, pid)
    (block,) = env.blocks(pid)
    assert names([block]) == [
        "scan_00001.nxs",
        "scan_00001.png",
        "scan_00001/pilatus_00000.raw",
        "scan_00001/pilatus_00001.raw",
    ]
    assert len(env.attachments(pid)) == 1
    assert sorted(writes(env)) == [
        ("DELETE", "origdatablock", old_block["_id"]),
        ("POST", "origdatablock", pid),
    ]
    env.assert_clean()
    # nothing changed since: a re-ingestion only looks
    env.lines("scan_00001:1702988900.5")
    env.checkpoint()
    outcome = env.run(daemon=True)["scan_00001:1702988900.5"]
    assert (outcome.status, outcome.pid) == (OutcomeStatus.UNCHANGED, pid)
    assert env.changes() == []
    assert len(env.blocks(pid)) == 1 and len(env.attachments(pid)) == 1
    assert keys(env) == ["scan_00001", "scan_00001:1702988846.07", "scan_00001:1702988900.5"]
    assert_valid_records(env)


def test_detector_paths_and_a_path_leaving_the_beamtime(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00002")
    (env.raw / "det1").mkdir()
    (env.raw / "det1" / "d1_00000.raw").write_bytes(b"1" * 10)
    (env.root / "det2").mkdir()
    (env.root / "det2" / "d2_00000.raw").write_bytes(b"2" * 20)
    outside = env.root.parent / "outside"
    outside.mkdir()
    (outside / "secret.raw").write_bytes(b"3")
    env.scan("scan_00003")
    list_file = env.lines(
        "scan_00002 det1 ../det2", "scan_00003 ../../outside", "scan_00003 det1/../../.."
    )
    outcomes = env.run(daemon=True)
    pid = env.pid("scan_00002")
    assert outcomes["scan_00002 det1 ../det2"].status == OutcomeStatus.INGESTED
    assert names(env.blocks(pid)) == ["../det2/d2_00000.raw", "det1/d1_00000.raw", "scan_00002.nxs"]
    for lineno, key, path in (
        (3, "scan_00003 ../../outside", "../../outside"),
        (4, "scan_00003 det1/../../..", "det1/../../.."),
    ):
        bad = outcomes[key]
        assert bad.status == OutcomeStatus.FAILED
        assert f"{list_file}:{lineno}:" in bad.message
        assert f"'{path}' leaves the beamtime directory" in bad.message
    # refused before anything ran or was sent
    assert not env.meta("scan_00003.scan.json").exists()
    assert about(env, env.pid("scan_00003")) == []
    assert env.ingested_lines()[1:] == [
        "scan_00003 ../../outside 0 0 0",
        "scan_00003 det1/../../.. 0 0 0",
    ]
    env.assert_clean()


def test_scan_in_a_subdirectory(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00004", directory=env.raw / "sub", detectors={"lambda": 1})
    env.lines("sub/scan_00004")
    outcome = env.run(daemon=True)["sub/scan_00004"]
    pid = env.pid("sub/scan_00004")
    assert (outcome.status, outcome.pid) == (OutcomeStatus.INGESTED, pid)
    dataset = env.datasets()[pid]
    assert dataset["sourceFolder"] == str(env.raw)
    assert names(env.blocks(pid)) == ["sub/scan_00004.nxs", "sub/scan_00004/lambda_00000.raw"]
    assert env.meta("sub/scan_00004.scan.json").is_file()
    assert env.ingested_lines()[0].startswith("sub/scan_00004 ")
    env.assert_clean()


def test_one_entry_of_a_multi_scan_nexus_file(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    write_multi_entry_nexus(
        env.raw / "multi_00005.nxs",
        ["scan12", "scan13"],
        extra={"sample/temperature": {"value": 295.0, "units": "K"}},
    )
    env.lines("multi_00005::/scan12;mscan_00012", "multi_00005::/scan13;mscan_00013")
    outcomes = env.run(daemon=True)
    for entry, other, name in (
        ("scan12", "scan13", "mscan_00012"),
        ("scan13", "scan12", "mscan_00013"),
    ):
        pid = env.pid(name)
        outcome = outcomes[f"multi_00005::/{entry};{name}"]
        assert (outcome.status, outcome.pid) == (OutcomeStatus.INGESTED, pid)
        dataset = env.datasets()[pid]
        science = dataset["scientificMetadata"]
        assert science["title"]["value"] == entry
        assert science["name"] == entry
        assert other not in json.dumps(science)
        assert names(env.blocks(pid)) == ["multi_00005.nxs"]
    env.assert_clean()
    assert_valid_records(env)


# ---------------------------------------------------------------------------
# 4. measurements (the __command__ lines)
# ---------------------------------------------------------------------------


def test_measurement_groups_three_scans(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00001", detectors={"det": 1})
    env.scan("scan_00002", detectors={"det": 1})
    env.scan("fioscan_00005", kind="fio")
    env.lines(
        "__command__ start calib",
        "scan_00001",
        "scan_00002",
        "fioscan_00005",
        "__command__ stop",
        "scan_00006",
        "calib",
    )
    env.scan("scan_00006")
    outcomes = env.run(daemon=True)
    assert {key: outcome.status for key, outcome in outcomes.items()} == {
        "scan_00001": OutcomeStatus.INGESTED,
        "scan_00002": OutcomeStatus.INGESTED,
        "fioscan_00005": OutcomeStatus.INGESTED,
        "scan_00006": OutcomeStatus.INGESTED,
        "calib": OutcomeStatus.INGESTED,
    }
    scans = [env.pid(name) for name in ("scan_00001", "scan_00002", "fioscan_00005")]
    calib = env.pid("calib")
    datasets = env.datasets()
    measurement = datasets[calib]
    assert measurement["type"] == "derived"
    assert measurement["inputDatasets"] == scans
    assert measurement["keywords"] == ["measurement", "calib"]
    assert measurement["datasetName"] == "calib"
    for pid in scans:
        assert datasets[pid]["keywords"] == ["scan", "calib"]
    assert datasets[env.pid("scan_00006")]["keywords"] == ["scan"]
    # the scans' files, once under each scan and once under the measurement
    grouped = env.blocks(calib)
    assert len(grouped) == 3
    assert names(grouped) == names([block for pid in scans for block in env.blocks(pid)])
    assert names(grouped) == [
        "fioscan_00005.fio",
        "scan_00001.nxs",
        "scan_00001/det_00000.raw",
        "scan_00002.nxs",
        "scan_00002/det_00000.raw",
    ]
    # the scans' own metadata files were not rewritten for the measurement
    assert env.load("scan_00001.origdatablock.json")["datasetId"] == scans[0]
    env.assert_clean()
    assert_valid_records(env)
    # a re-ingestion of the whole list neither regroups nor posts again
    env.checkpoint()
    summary = env.batch()
    assert summary.ok, summary.report()
    assert summary.counts == {OutcomeStatus.UNCHANGED: 5}
    assert env.changes() == []
    assert len(env.blocks(calib)) == 3


# ---------------------------------------------------------------------------
# 2. update strategies
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["no", "patch", "create", "mixed"])
def test_update_strategy_on_a_second_ingestion(beamtime, strategy: str) -> None:
    # the re-ingestion re-describes the files: here by printing the JSON
    # nxsfileinfo wrote the first time (this test is about datasets)
    env = beamtime(
        dataset_update_strategy=strategy,
        ingest_dataset_attachment=False,
        datablock_metadata_stream_generator=PRINT_DATABLOCK_JSON,
    )
    for name in ("scan_a", "scan_b", "scan_c"):
        env.scan(name)
    env.lines("scan_a", "scan_b", "scan_c")
    assert {o.status for o in env.run(daemon=True).values()} == {OutcomeStatus.INGESTED}
    pid_a, pid_b, pid_c = (env.pid(name) for name in ("scan_a", "scan_b", "scan_c"))
    before = env.datasets()
    # (b) only scientificMetadata changes, (c) another field changes
    edit_json(env.meta("scan_b.scan.json"), scientificMetadata={"comment": "recalibrated"})
    edit_json(env.meta("scan_c.scan.json"), description="a better description")
    env.lines("scan_a:1", "scan_b:1", "scan_c:1")
    env.checkpoint()
    outcomes = env.run(daemon=True)
    env.assert_clean()
    # (a) unchanged: looked at, nothing sent, recorded
    assert (outcomes["scan_a:1"].status, outcomes["scan_a:1"].pid) == (
        OutcomeStatus.UNCHANGED,
        pid_a,
    )
    assert {method for method, _path in about(env, pid_a)} == {"GET"}
    assert keys(env)[3:] == ["scan_a:1", "scan_b:1", "scan_c:1"]
    after = env.datasets()
    expected = {
        "no": [],
        "patch": [("PATCH", "dataset", pid_b), ("PATCH", "dataset", pid_c)],
        "create": [
            ("POST", "dataset", f"{pid_b}/2"),
            ("POST", "origdatablock", f"{pid_b}/2"),
            ("POST", "dataset", f"{pid_c}/2"),
            ("POST", "origdatablock", f"{pid_c}/2"),
        ],
        "mixed": [
            ("PATCH", "dataset", pid_b),
            ("POST", "dataset", f"{pid_c}/2"),
            ("POST", "origdatablock", f"{pid_c}/2"),
        ],
    }[strategy]
    assert sorted(writes(env)) == sorted(expected)
    changed = OutcomeStatus.UNCHANGED if strategy == "no" else OutcomeStatus.UPDATED
    assert outcomes["scan_b:1"].status == changed
    assert outcomes["scan_c:1"].status == changed
    science_b = after[pid_b]["scientificMetadata"]
    if strategy in ("patch", "mixed"):
        assert science_b["comment"] == "recalibrated"
        assert outcomes["scan_b:1"].pid == pid_b
    else:
        assert "comment" not in science_b
    if strategy == "create":
        assert after[f"{pid_b}/2"]["scientificMetadata"]["comment"] == "recalibrated"
        assert outcomes["scan_b:1"].pid == f"{pid_b}/2"
    if strategy == "patch":
        assert after[pid_c]["description"] == "a better description"
    else:
        assert after[pid_c]["description"] == before[pid_c]["description"]
    if strategy in ("create", "mixed"):
        assert after[f"{pid_c}/2"]["description"] == "a better description"
        assert outcomes["scan_c:1"].pid == f"{pid_c}/2"
        assert names(env.blocks(f"{pid_c}/2")) == names(env.blocks(pid_c)) == ["scan_c.nxs"]
    versions = {"no": 3, "patch": 3, "create": 5, "mixed": 4}[strategy]
    assert len(after) == versions
    assert len(env.blocks()) == versions
    assert_valid_records(env)


def impatient_pipeline(env: BeamtimeEnv) -> Pipeline:
    """A pipeline whose client tries each request once (gives up on a lost answer).

    Closed with the beamtime.
    """
    config = env.config.replace(max_request_tries_number=1)
    client = SciCatClient(ClientSettings.from_config(config))
    client.login()  # so that the lost answer is the one of the dataset POST
    return env.pipeline(config, client)


def test_create_strategy_versions_and_lost_answers(beamtime) -> None:
    env = beamtime(dataset_update_strategy="create", ingest_dataset_attachment=False)
    env.scan("scan_x", detectors={"det": 1})
    env.lines("scan_x")
    env.run(daemon=True)
    pid = env.pid("scan_x")
    scan_json = env.meta("scan_x.scan.json")
    for number, description in ((2, "second"), (3, "third")):
        edit_json(scan_json, description=description)
        env.lines(f"scan_x:{number}")
        outcome = env.run(daemon=True)[f"scan_x:{number}"]
        assert (outcome.status, outcome.pid) == (OutcomeStatus.UPDATED, f"{pid}/{number}")
    assert sorted(env.datasets()) == [pid, f"{pid}/2", f"{pid}/3"]
    assert env.datasets()[f"{pid}/3"]["description"] == "third"
    assert all(len(env.blocks(p)) == 1 for p in env.datasets())

    # the answer to the POST of version 4 is lost: the client's retry finds it
    edit_json(scan_json, description="fourth")
    env.lines("scan_x:4")
    env.checkpoint()
    env.server.lose_next_responses(1, "POST")
    outcome = env.run(daemon=True)["scan_x:4"]
    assert (outcome.status, outcome.pid) == (OutcomeStatus.UPDATED, f"{pid}/4")
    assert sorted(env.datasets()) == [pid, f"{pid}/2", f"{pid}/3", f"{pid}/4"]
    assert len(env.blocks(f"{pid}/4")) == 1

    # the answer to an origdatablock POST is lost: the block is not posted twice
    (env.raw / "scan_x" / "det_00001.raw").write_bytes(b"1" * 8)
    env.lines("scan_x:5")
    env.checkpoint()
    env.server.lose_next_responses(1, "POST")
    outcome = env.run(daemon=True)["scan_x:5"]
    assert outcome.ok and outcome.pid == f"{pid}/4"
    assert [r.dropped for r in env.requests("POST", "OrigDatablocks")] == [True]
    (block,) = env.blocks(f"{pid}/4")
    assert "scan_x/det_00001.raw" in names([block])
    assert len(env.datasets()) == 4

    # even a client with one try: the lost answer is looked up (GET by pid)
    # instead of being sent again, and the version gets its block in one pass
    edit_json(scan_json, description="sixth")
    env.lines("scan_x:6")
    impatient = impatient_pipeline(env)
    env.server.lose_next_responses(1, "POST")
    (task,) = [t for t in env.tasks(daemon=True) if t.key == "scan_x:6"]
    outcome = impatient.process(task, env.ingested())
    assert (outcome.status, outcome.pid) == (OutcomeStatus.UPDATED, f"{pid}/5")
    assert "scan_x:6" in keys(env)
    assert env.datasets()[f"{pid}/5"]["description"] == "sixth"
    assert len(env.datasets()) == 5
    assert len(env.blocks(f"{pid}/5")) == 1
    assert_valid_records(env)


def test_lost_version_answer_then_batch_reingestion(beamtime) -> None:
    """A version whose POST answer was lost still gets its origdatablocks (at once:
    the pid is looked up before anything is sent again)."""
    env = beamtime(dataset_update_strategy="create", ingest_dataset_attachment=False)
    env.scan("scan_y")
    env.lines("scan_y")
    env.run()
    pid = env.pid("scan_y")
    edit_json(env.meta("scan_y.scan.json"), description="changed")
    impatient = impatient_pipeline(env)
    env.server.lose_next_responses(1, "POST")
    ingested = env.ingested()
    outcomes = [impatient.process(task, ingested) for task in env.tasks()]
    assert [(o.status, o.pid) for o in outcomes] == [(OutcomeStatus.UPDATED, f"{pid}/2")]
    assert env.datasets()[f"{pid}/2"]["description"] == "changed"
    assert names(env.blocks(f"{pid}/2")) == ["scan_y.nxs"]
    summary = env.batch()
    assert summary.ok, summary.report()
    assert sorted(env.datasets()) == [pid, f"{pid}/2"]
    assert names(env.blocks(f"{pid}/2")) == ["scan_y.nxs"]
    env.checkpoint()
    summary = env.batch()
    assert summary.counts == {OutcomeStatus.UNCHANGED: 1}
    assert env.changes() == []


# ---------------------------------------------------------------------------
# 3. attachments
# ---------------------------------------------------------------------------

#: an attachment generator that names the plot file it was given in the caption
_PLOT_SCRIPT = (
    "import base64, json, sys\n"
    "out, plot, owner = sys.argv[1:4]\n"
    "head = base64.b64encode(open(plot, 'rb').read()[:48]).decode()\n"
    "json.dump(dict(caption=plot.rsplit('/', 1)[-1], ownerGroup=owner,\n"
    "               thumbnail='data:image/png;base64,' + head), open(out, 'w'))\n"
)
RECORD_PLOT_FILE = (
    f"{shlex.quote(sys.executable)} -c {shlex.quote(_PLOT_SCRIPT)} "
    "{metapath}/{scanname}{attachmentpostfix} {plotfile} {ownergroup}"
)


def test_png_attachment(beamtime) -> None:
    env = beamtime()
    env.scan("scan_00010", plot=True)
    env.lines("scan_00010")
    outcome = env.run(daemon=True)["scan_00010"]
    pid = env.pid("scan_00010")
    assert outcome.status == OutcomeStatus.INGESTED
    assert outcome.posted == {"origdatablocks": 1, "attachments": 1}
    (attachment,) = env.attachments(pid)
    png = (env.raw / "scan_00010.png").read_bytes()
    assert attachment["thumbnail"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert attachment["caption"] == ""
    assert attachment["ownerGroup"] == f"{env.bid}-dmgt"
    assert env.ingested_lines()[0].split()[-1] == mtime_text(env.meta("scan_00010.attachment.json"))
    env.assert_clean()
    assert_valid_records(env)


def test_nexus_file_is_the_plot_file_without_png(beamtime) -> None:
    env = beamtime(attachment_metadata_generator=RECORD_PLOT_FILE)
    env.scan("scan_00011")
    env.scan("scan_00012", plot=True)
    env.lines("scan_00011", "scan_00012")
    outcomes = env.run(daemon=True)
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.INGESTED}
    (from_nexus,) = env.attachments(env.pid("scan_00011"))
    (from_png,) = env.attachments(env.pid("scan_00012"))
    assert from_nexus["caption"] == "scan_00011.nxs"
    assert from_png["caption"] == "scan_00012.png"
    env.assert_clean()


def test_nexus_plot_by_nxsfileinfo(beamtime) -> None:
    env = beamtime()
    env.scan("scan_00013")  # scalar title, as beamline writers store it (nxstools_fix)
    env.lines("scan_00013")
    outcome = env.run(daemon=True)["scan_00013"]
    assert outcome.status == OutcomeStatus.INGESTED
    attachments = env.attachments(env.pid("scan_00013"))
    if HAS_MATPLOTLIB:
        (attachment,) = attachments
        assert attachment["thumbnail"].startswith("data:image/png;base64,")
    else:
        # nxsfileinfo plots with matplotlib; without it it writes nothing (exit 0)
        assert attachments == []
        assert not env.meta("scan_00013.attachment.json").exists()
        assert env.ingested_lines()[0].endswith(" 0")
    env.assert_clean()


def test_attachments_switched_off(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00014", plot=True)
    env.lines("scan_00014")
    assert env.run(daemon=True)["scan_00014"].status == OutcomeStatus.INGESTED
    assert not env.meta("scan_00014.attachment.json").exists()
    assert env.attachments() == []
    assert env.requests(path_contains="Attachments") == []


# ---------------------------------------------------------------------------
# 5. groups from the proposal
# ---------------------------------------------------------------------------


def test_groups_from_the_proposal(beamtime) -> None:
    env = beamtime(owner_access_groups_from_proposal=True, ingest_dataset_attachment=False)
    env.server.add_proposal(
        {
            "proposalId": f"99991173.{env.bid}",
            "ownerGroup": "prop-owner",
            "accessGroups": ["prop-a", "prop-b"],
            "title": "H2O",
            "email": "appuser@example.com",
        }
    )
    env.scan("scan_00020")
    env.lines("scan_00020")
    summary = env.batch()
    assert summary.counts == {OutcomeStatus.INGESTED: 1}, summary.report()
    pid = env.pid("scan_00020")
    dataset = env.datasets()[pid]
    assert (dataset["ownerGroup"], dataset["accessGroups"]) == ("prop-owner", ["prop-a", "prop-b"])
    (block,) = env.blocks(pid)
    assert (block["ownerGroup"], block["accessGroups"]) == ("prop-owner", ["prop-a", "prop-b"])
    assert [r.status for r in env.requests("GET", "Proposals")] == [200]
    env.assert_clean()


def test_missing_proposal_keeps_the_default_groups(beamtime, caplog) -> None:
    env = beamtime(owner_access_groups_from_proposal=True, ingest_dataset_attachment=False)
    env.scan("scan_00021")
    env.lines("scan_00021")
    with caplog.at_level(logging.WARNING, logger="scingestor"):
        summary = env.batch()
    assert summary.counts == {OutcomeStatus.INGESTED: 1}, summary.report()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"Proposal 99991173.{env.bid}" in text and "not found" in text for text in warnings
    ), warnings
    dataset = env.datasets()[env.pid("scan_00021")]
    assert dataset["ownerGroup"] == f"{env.bid}-dmgt"
    assert dataset["accessGroups"] == [
        f"{env.bid}-dmgt",
        f"{env.bid}-clbt",
        f"{env.bid}-part",
        "p00dmgt",
        "p00staff",
    ]


# ---------------------------------------------------------------------------
# 6. blacklists
# ---------------------------------------------------------------------------


def test_blacklisted_beamtimes_are_not_ingested(beamtime, tmp_path: Path) -> None:
    blacklist = tmp_path / "beamtimeid-blacklist.lst"
    by_type = beamtime(proposal_type="P", ingest_dataset_attachment=False)
    by_id = beamtime(beamtimeid_blacklist_file=str(blacklist), ingest_dataset_attachment=False)
    blacklist.write_text(f"12345678\n{by_id.bid}\n")
    for env in (by_type, by_id):
        env.scan("scan_00030")
        env.lines("scan_00030")
        env.checkpoint()
        summary = env.batch()
        assert (summary.outcomes, summary.errors) == ([], [])
        assert env.requests() == []
        assert not env.ingested_path().exists()
        assert not env.meta_dir().exists()
    # taken off the list: ingested
    blacklist.write_text("12345678\n")
    assert by_id.batch().counts == {OutcomeStatus.INGESTED: 1}


def test_list_file_in_a_blacklisted_scan_directory(beamtime, tmp_path: Path) -> None:
    root = tmp_path / "gpfs" / "current"
    env = beamtime(
        directory=root, scandir_blacklist=[str(root / "processed")], ingest_dataset_attachment=False
    )
    processed = root / "processed"
    deeper = processed / "deeper"
    for directory, name in (
        (processed, "scan_00031"),
        (deeper, "scan_00032"),
        (env.raw, "scan_00033"),
    ):
        env.scan(name, directory=directory)
        env.lines(name, directory=directory)
    summary = env.batch()
    assert [outcome.key for _where, outcome in summary.outcomes] == ["scan_00033"]
    assert summary.counts == {OutcomeStatus.INGESTED: 1}
    assert sorted(env.datasets()) == [env.pid("scan_00033")]
    assert not env.ingested_path(processed).exists()
    assert not env.ingested_path(deeper).exists()


# ---------------------------------------------------------------------------
# 7. the core path
# ---------------------------------------------------------------------------


def test_core_path_as_scan_directory(beamtime, tmp_path: Path) -> None:
    local = tmp_path / "gpfs" / "current"
    core = tmp_path / "asap3" / "petra3" / "beamtime"
    core.parent.mkdir(parents=True)
    env = beamtime(
        directory=local,
        core_path=core,
        use_corepath_as_scandir=True,
        ingest_dataset_attachment=False,
    )
    os.symlink(local, core)
    env.scan("scan_00040", detectors={"det": 1})
    env.lines("scan_00040")
    outcome = env.run(daemon=True)["scan_00040"]
    pid = env.pid("scan_00040")
    assert (outcome.status, outcome.pid) == (OutcomeStatus.INGESTED, pid)
    dataset = env.datasets()[pid]
    assert dataset["sourceFolder"] == str(core / "raw")
    assert names(env.blocks(pid)) == ["scan_00040.nxs", "scan_00040/det_00000.raw"]
    ingested = env.ingested_path()
    assert str(ingested) == f"{env.var}{core}/raw/scicat-ingested-datasets-{env.bid}.lst"
    assert ingested.is_file() and keys(env) == ["scan_00040"]
    assert str(env.meta("scan_00040.scan.json")).startswith(f"{env.var}{core}/raw/")
    assert env.meta("scan_00040.scan.json").is_file()
    assert not Path(f"{env.var}{local}").exists()
    # the batch tool finds the same state
    env.checkpoint()
    summary = env.batch()
    assert summary.counts == {OutcomeStatus.UNCHANGED: 1}, summary.report()
    assert env.changes() == []
    env.assert_clean()


# ---------------------------------------------------------------------------
# 8. execute_commands: false
# ---------------------------------------------------------------------------

#: where the older installation kept its files (generated/ was written there)
_OLD_SCAN_DIR = "/asap3/petra3/gpfs/p00/2026/data/99001234/beamtime/raw"
_OLD_META_DIR = "/asap3/petra3/gpfs/p00/2026/data/99001234/var" + _OLD_SCAN_DIR
GENERATORS = (
    "file_dataset_metadata_generator",
    "dataset_metadata_generator",
    "datablock_metadata_generator",
    "datablock_metadata_stream_generator",
    "attachment_metadata_generator",
    "metadata_generated_callback",
)


def adapted(name: str, env: BeamtimeEnv) -> str:
    """A file of ``generated/`` with its paths and beamtime id moved to *env*."""
    text = (GENERATED / name).read_text(encoding="utf-8")
    text = text.replace(_OLD_META_DIR, str(env.meta_dir())).replace(_OLD_SCAN_DIR, str(env.raw))
    return text.replace(REFERENCE_BID, env.bid)


def test_execute_commands_false_posts_existing_metadata(beamtime, tmp_path: Path) -> None:
    marker = tmp_path / "a-command-ran"
    env = beamtime(execute_commands=False, **{name: f"touch {marker}" for name in GENERATORS})
    env.meta_dir().mkdir(parents=True)
    for name in ("scan_00001.scan.json", "scan_00001.origdatablock.json"):
        env.meta(name).write_text(adapted(name, env), encoding="utf-8")
    block_text = env.meta("scan_00001.origdatablock.json").read_text()
    env.scan("scan_00001", detectors={"det": 1})
    env.scan("scan_00002", plot=True)
    env.lines("scan_00001", "scan_00002")
    outcomes = env.run(daemon=True)
    pid = env.pid("scan_00001")
    assert (outcomes["scan_00001"].status, outcomes["scan_00001"].pid) == (
        OutcomeStatus.INGESTED,
        pid,
    )
    dataset = env.datasets()[pid]
    assert dataset["scientificMetadata"]["title"]["value"] == "scan_00001"
    assert dataset["sourceFolder"] == str(env.raw)
    (block,) = env.blocks(pid)
    assert names([block]) == ["scan_00001.nxs", "scan_00001/det_00000.raw"]
    # posted under the scan's pid, the file (which says "calib") left as it was
    assert json.loads(block_text)["datasetId"] == f"{env.bid}/calib"
    assert env.meta("scan_00001.origdatablock.json").read_text() == block_text
    # no metadata for scan_00002: left for later, not recorded
    assert outcomes["scan_00002"].status == OutcomeStatus.RETRY
    assert "execute_commands" in outcomes["scan_00002"].message
    assert keys(env) == ["scan_00001"]
    assert not marker.exists()
    env.checkpoint()
    again = env.run(daemon=True)
    assert list(again) == ["scan_00002"] and again["scan_00002"].status == OutcomeStatus.RETRY
    assert env.changes() == []
    assert not marker.exists()
    env.assert_clean()
    assert_valid_records(env)


# ---------------------------------------------------------------------------
# 9. an older installation's ingested list
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("installation", installations())
def test_older_installations_ingested_list_is_honoured(
    beamtime, fresh_scicat, installation: Path
) -> None:
    env = beamtime(REFERENCE_BID, server=fresh_scicat, ingest_dataset_attachment=False)
    old_list = installation / "generated" / f"scicat-ingested-datasets-{REFERENCE_BID}.lst"
    old_lines = [line for line in old_list.read_text().split("\n") if line]
    recorded = {
        line.split()[0]: (float(line.split()[1]), float(line.split()[2])) for line in old_lines
    }
    data_time = min(ds for ds, _db in recorded.values()) - 100
    env.scan("scan_00001", detectors={"det": 1})
    env.scan("scan_00002", detectors={"det": 1})
    env.scan("fioscan_00005", kind="fio")
    for path in env.raw.rglob("*"):
        os.utime(path, (data_time, data_time))
    env.lines(
        "__command__ start calib",
        "scan_00001",
        "scan_00002",
        "fioscan_00005",
        "__command__ stop",
        "calib",
    )
    # the metadata as the older installation's daemon generated it then
    pipeline = env.pipeline()
    for task in env.tasks(daemon=True):
        pipeline.generate(task)
    for name, (ds, db) in recorded.items():
        os.utime(env.meta(f"{name}.scan.json"), (ds, ds))
        os.utime(env.meta(f"{name}.origdatablock.json"), (db, db))
    env.ingested_path().parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(old_list, env.ingested_path())

    # the daemon: every line is done
    env.checkpoint()
    assert env.run(daemon=True) == {}
    assert env.requests() == []
    # only a new scan is posted
    env.scan("scan_00003")
    env.lines("scan_00003")
    outcomes = env.run(daemon=True)
    assert {key: o.status for key, o in outcomes.items()} == {"scan_00003": OutcomeStatus.INGESTED}
    assert sorted(env.datasets()) == [env.pid("scan_00003")]

    # the batch tool: only what changed since the recorded ingestion
    edit_json(env.meta("scan_00002.scan.json"), description="edited")
    env.checkpoint()
    summary = env.batch()
    assert summary.ok, summary.report()
    assert summary.counts == {OutcomeStatus.INGESTED: 1, OutcomeStatus.UNCHANGED: 4}
    assert writes(env) == [("POST", "dataset", env.pid("scan_00002"))]
    assert env.datasets()[env.pid("scan_00002")]["description"] == "edited"
    # the old records are kept; ours are appended in the same format
    lines = env.ingested_lines()
    assert lines[:4] == old_lines
    assert lines[-1].startswith("scan_00002 ") and len(lines[-1].split()) == 4
    env.assert_clean()


# ---------------------------------------------------------------------------
# 10. scan names that a shell would have run
# ---------------------------------------------------------------------------

#: list lines split on spaces: ${IFS} is how a shell would have read a space
HOSTILE = "x;$(touch${IFS}PWNED)'q\"{scanname}_00050"
SPACED = "my scan $(touch PWNED) 00051"


def test_hostile_scan_names_stay_one_argument(
    beamtime, tmp_path: Path, caplog, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a shell would have created PWNED
    env = beamtime(ingest_dataset_attachment=False, log_generator_commands=True)
    env.scan(HOSTILE)
    env.scan(SPACED)
    env.lines(HOSTILE)
    with caplog.at_level(logging.INFO, logger="scingestor"):
        outcomes = env.run(daemon=True)
        # list lines split on spaces: a name with spaces comes as a task
        spaced = env.pipeline().process(env.task(SPACED), env.ingested())
    for name, outcome in ((HOSTILE, outcomes[HOSTILE]), (SPACED, spaced)):
        pid = env.pid(name)
        assert (outcome.status, outcome.pid) == (OutcomeStatus.INGESTED, pid), outcome.message
        assert env.datasets()[pid]["datasetName"] == name
        assert names(env.blocks(pid)) == [f"{name}.nxs"]
        prefix = f"file_dataset_metadata_generator for {name}: "
        (command,) = [
            shlex.split(r.getMessage()[len(prefix) :])
            for r in caplog.records
            if r.getMessage().startswith(prefix)
        ]
        assert str(env.raw / f"{name}.nxs") in command
        assert pid in command
        prefix = f"datablock_metadata_generator for {name}: "
        (command,) = [
            shlex.split(r.getMessage()[len(prefix) :])
            for r in caplog.records
            if r.getMessage().startswith(prefix)
        ]
        assert command[-1] == str(env.raw / name)
    assert not list(tmp_path.rglob("PWNED"))
    assert not (Path.cwd() / "PWNED").exists() and not (Path.home() / "PWNED").exists()
    assert keys(env) == [HOSTILE, SPACED]
    env.assert_clean()
    assert_valid_records(env)


# ---------------------------------------------------------------------------
# 11. a failing generator
# ---------------------------------------------------------------------------

_FAIL_ON_BAD = (
    "import os, sys\n"
    "if 'bad' in sys.argv[1]:\n"
    "    sys.stderr.write('cannot read ' + sys.argv[1] + chr(10))\n"
    "    sys.exit(3)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def test_failing_generator_is_retried_and_the_others_ingested(beamtime) -> None:
    builtin = command_template(IngestorConfig(), FILE_DATASET)
    assert builtin.startswith("nxsfileinfo ")
    wrapper = (
        f"{shlex.quote(sys.executable)} -c {shlex.quote(_FAIL_ON_BAD)} {{scanname}} "
        f"{shlex.quote(nxsfileinfo_executable())} {builtin.split(' ', 1)[1]}"
    )
    env = beamtime(ingest_dataset_attachment=False, file_dataset_metadata_generator=wrapper)
    for name in ("good_00061", "bad_00062", "good_00063"):
        env.scan(name)
    env.lines("good_00061", "bad_00062", "good_00063")
    outcomes = env.run(daemon=True)
    assert outcomes["good_00061"].status == outcomes["good_00063"].status == OutcomeStatus.INGESTED
    bad = outcomes["bad_00062"]
    assert bad.status == OutcomeStatus.RETRY
    assert "exit code 3" in bad.message and "cannot read bad_00062" in bad.message
    assert keys(env) == ["good_00061", "good_00063"]
    assert sorted(env.datasets()) == [env.pid("good_00061"), env.pid("good_00063")]
    # still pending: tried again on the next pass, nothing sent for it
    env.checkpoint()
    again = env.run(daemon=True)
    assert list(again) == ["bad_00062"] and again["bad_00062"].status == OutcomeStatus.RETRY
    assert env.requests() == []


# ---------------------------------------------------------------------------
# 12. a scan of many files
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_scan_of_25000_files_is_split_into_two_blocks(beamtime, fresh_scicat) -> None:
    # a server of its own: the big blocks would slow down the others' look-ups
    env = beamtime(server=fresh_scicat, ingest_dataset_attachment=False)
    master = env.scan("big_00070")
    detector = env.raw / "big_00070" / "det"
    detector.mkdir(parents=True)
    for index in range(25_000):
        os.close(os.open(detector / f"f_{index:05d}.raw", os.O_CREAT | os.O_WRONLY, 0o644))
    env.lines("big_00070")
    outcome = env.run(daemon=True)["big_00070"]
    pid = env.pid("big_00070")
    assert (outcome.status, outcome.posted) == (OutcomeStatus.INGESTED, {"origdatablocks": 2})
    blocks = env.blocks(pid)
    assert sorted(len(block["dataFileList"]) for block in blocks) == [5_001, 20_000]
    assert names(blocks) == sorted(
        ["big_00070.nxs"] + [f"big_00070/det/f_{index:05d}.raw" for index in range(25_000)]
    )
    assert sum(block["size"] for block in blocks) == master.stat().st_size
    # a re-ingestion finds both parts: nothing posted again
    env.lines("big_00070:1")
    env.checkpoint()
    outcome = env.run(daemon=True)["big_00070:1"]
    assert outcome.status == OutcomeStatus.UNCHANGED
    assert env.changes() == []
    env.assert_clean()


# ---------------------------------------------------------------------------
# 13. scicat_dataset_ingest
# ---------------------------------------------------------------------------


def test_dataset_ingest_command(beamtime, capsys, restore_logging) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00080")
    env.scan("scan_00081", kind="fio")
    env.lines("scan_00080", "scan_00081", "scan_00082 ../../elsewhere")
    config = str(env.config_file)
    # --dry-run: generated and validated, nothing posted, no state written
    code = dataset_ingest.main(["-c", config, "--dry-run", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "Summary: 0 ingested, 0 updated, 2 unchanged, 1 failed, 0 retry" in out
    assert {(r.method, r.path.rsplit("/", 1)[-1]) for r in env.requests() if r.method != "GET"} == {
        ("POST", "login"),
        ("POST", "isValid"),
    }
    assert env.datasets() == {}
    assert not env.ingested_path().exists()
    # the real run
    env.checkpoint()
    code = dataset_ingest.main(["-c", config, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "Summary: 2 ingested, 0 updated, 0 unchanged, 1 failed, 0 retry" in out
    (failure,) = [line for line in out.splitlines() if line.startswith("  failed: ")]
    assert "scan_00082 ../../elsewhere" in failure
    assert "leaves the beamtime directory" in failure
    assert sorted(env.datasets()) == [env.pid("scan_00080"), env.pid("scan_00081")]
    env.assert_clean()
    assert_valid_records(env)


def test_dry_run_validates_a_measurement_as_it_would_be_posted(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00083")
    env.lines("__command__ start calib", "scan_00083", "__command__ stop", "calib")
    summary = env.batch(dry_run=True)
    assert summary.ok, summary.report()
    assert summary.counts == {OutcomeStatus.UNCHANGED: 2}
    # nxsfileinfo writes usedSoftware of the measurement as one string
    assert isinstance(env.load("calib.scan.json")["usedSoftware"], str)
    assert [r.response for r in env.requests("POST", "isValid")] == [{"valid": True}] * 2
    assert env.datasets() == {} and not env.ingested_path().exists()
    summary = env.batch()
    assert summary.counts == {OutcomeStatus.INGESTED: 2}, summary.report()
    assert env.datasets()[env.pid("calib")]["usedSoftware"] == [
        env.load("calib.scan.json")["usedSoftware"]
    ]


# ---------------------------------------------------------------------------
# more: state lost, pid prefix, symlink loops
# ---------------------------------------------------------------------------


def test_lost_ingested_list_does_not_duplicate(beamtime) -> None:
    """An unchanged dataset found on the server is a success (not retried forever)."""
    env = beamtime()
    env.scan("scan_00090", plot=True)
    env.lines("scan_00090")
    env.run(daemon=True)
    env.ingested_path().unlink()
    env.checkpoint()
    outcome = env.run(daemon=True)["scan_00090"]
    pid = env.pid("scan_00090")
    assert (outcome.status, outcome.pid) == (OutcomeStatus.UNCHANGED, pid)
    assert env.changes() == []
    assert len(env.blocks(pid)) == len(env.attachments(pid)) == 1
    assert keys(env) == ["scan_00090"] and env.ingested().is_done("scan_00090")


def test_dataset_pid_prefix_with_strategy_no(beamtime) -> None:
    env = beamtime(
        dataset_pid_prefix="10.5072/", dataset_update_strategy="no", ingest_dataset_attachment=False
    )
    env.scan("scan_00091")
    env.lines("scan_00091")
    outcome = env.run(daemon=True)["scan_00091"]
    pid = f"10.5072/{env.bid}/scan_00091"
    assert (outcome.status, outcome.pid) == (OutcomeStatus.INGESTED, pid)
    assert pid in env.server.datasets
    assert len(env.blocks(pid)) == 1
    edit_json(env.meta("scan_00091.scan.json"), description="not sent")
    env.lines("scan_00091:1")
    env.checkpoint()
    outcome = env.run(daemon=True)["scan_00091:1"]
    assert (outcome.status, outcome.pid) == (OutcomeStatus.UNCHANGED, pid)
    assert env.changes() == []
    assert env.server.datasets[pid]["description"] == "scan_00091"
    assert not env.meta("scan_00091.scan.json").read_text().count("10.5072")
    env.assert_clean()


def test_symlink_loop_in_the_beamtime_directory(beamtime) -> None:
    env = beamtime(execute_commands=False)
    os.symlink("..", env.raw / "up")
    os.symlink(".", env.raw / "here")
    env.lines("scan_00092")
    summary = env.batch()
    assert [(where, o.key, o.status) for where, o in summary.outcomes] == [
        (str(env.list_file()), "scan_00092", OutcomeStatus.RETRY)
    ]


def test_refused_login_is_retried_not_recorded_as_failed(beamtime) -> None:
    """A login problem is no fault of the scan: every scan waits, none is failed."""
    env = beamtime(execute_commands=False)
    env.meta_dir().mkdir(parents=True)
    for name in ("scan_00001.scan.json", "scan_00001.origdatablock.json"):
        env.meta(name).write_text(adapted(name, env), encoding="utf-8")
    env.lines("scan_00001")
    credential = Path(env.config.ingestor_credential_file)
    good = credential.read_text()
    credential.write_text(json.dumps({"username": "ingestor", "password": "wrong"}))
    outcome = env.run(daemon=True)["scan_00001"]
    assert outcome.status == OutcomeStatus.RETRY
    assert "refused" in outcome.message
    assert keys(env) == []
    # the operator fixes the file: the scan goes through
    credential.write_text(good)
    stamp = os.stat(credential).st_mtime + 2
    os.utime(credential, (stamp, stamp))
    assert env.run(daemon=True)["scan_00001"].status == OutcomeStatus.INGESTED


def test_batch_reingestion_after_the_scan_was_written_again(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00093", detectors={"det": 1})
    env.lines("scan_00093")
    env.run(daemon=True)
    pid = env.pid("scan_00093")
    (old_block,) = env.blocks(pid)
    # written again: another sample, one more detector frame
    master = env.scan("scan_00093", detectors={"det": 2}, sample="ice")
    stamp = os.stat(env.meta("scan_00093.scan.json")).st_mtime + 5
    os.utime(master, (stamp, stamp))
    env.checkpoint()
    summary = env.batch()
    assert summary.counts == {OutcomeStatus.UPDATED: 1}, summary.report()
    assert sorted(writes(env)) == [
        ("DELETE", "origdatablock", old_block["_id"]),
        ("PATCH", "dataset", pid),
        ("POST", "origdatablock", pid),
    ]
    science = env.datasets()[pid]["scientificMetadata"]
    assert science["sample"]["name"]["value"] == "ice"
    assert names(env.blocks(pid)) == [
        "scan_00093.nxs",
        "scan_00093/det_00000.raw",
        "scan_00093/det_00001.raw",
    ]
    env.checkpoint()
    assert env.batch().counts == {OutcomeStatus.UNCHANGED: 1}
    assert env.changes() == []
    env.assert_clean()


# ---------------------------------------------------------------------------
# 14. metadata files appear whole; scans without a master file
# ---------------------------------------------------------------------------

#: a dataset generator that leaves half a file in its output, then (unless the
#: scan is called half_*) hands over to nxsfileinfo, which writes it whole
_HALF_THEN_NXSFILEINFO = (
    "import os, sys\n"
    "out, meta, name = sys.argv[1:4]\n"
    "final = os.path.join(meta, name + '.scan.json')\n"
    "hidden, name = os.path.split(out)\n"
    "assert name == os.path.basename(final), (out, final)\n"
    "assert os.path.dirname(hidden) == os.path.dirname(final), (out, final)\n"
    "assert os.path.basename(hidden).startswith('.part-'), out\n"
    "assert not os.path.exists(final), final\n"
    "open(out, 'w').write(chr(123) + '\"pid\": ')\n"
    "if name.startswith('half'):\n"
    "    sys.exit(3)\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


def test_generator_output_replaces_the_file_whole(beamtime) -> None:
    """The command writes its file in a hidden directory, renamed over the JSON when done."""
    builtin = command_template(IngestorConfig(), FILE_DATASET)
    wrapper = (
        f"{shlex.quote(sys.executable)} -c {shlex.quote(_HALF_THEN_NXSFILEINFO)} "
        "{metapath}/{scanname}{scanpostfix} {metapath} {scanname} "
        f"{shlex.quote(nxsfileinfo_executable())} {builtin.split(' ', 1)[1]}"
    )
    env = beamtime(ingest_dataset_attachment=False, file_dataset_metadata_generator=wrapper)
    env.scan("whole_00101")
    env.scan("half_00102")
    env.lines("whole_00101", "half_00102")
    outcomes = env.run(daemon=True)
    assert outcomes["whole_00101"].status == OutcomeStatus.INGESTED
    assert env.load("whole_00101.scan.json")["pid"] == env.pid("whole_00101")
    # the generator failed half way: no JSON at all rather than half of one
    assert outcomes["half_00102"].status == OutcomeStatus.RETRY
    assert not env.meta("half_00102.scan.json").exists()
    assert sorted(p.name for p in env.meta_dir().iterdir() if p.name.startswith(".")) == []
    assert names(env.blocks(env.pid("whole_00101"))) == ["whole_00101.nxs"]


def test_scan_without_master_file_is_warned_of(beamtime, caplog) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00103")
    list_file = env.lines(
        "scan_00103", "__command__ start calib", "nomaster_00104", "__command__ stop", "calib"
    )
    with caplog.at_level(logging.WARNING, logger="scingestor"):
        outcomes = env.run(daemon=True)
    assert {key: (o.status, o.without_master) for key, o in outcomes.items()} == {
        "scan_00103": (OutcomeStatus.INGESTED, False),
        "nomaster_00104": (OutcomeStatus.INGESTED, True),
        "calib": (OutcomeStatus.INGESTED, False),
    }
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    where = env.raw / "nomaster_00104"
    assert warning == (
        f"{list_file}:4: scan nomaster_00104 has no master file (looked for "
        f"{where}.{{nxs,h5,ndf,nx,fio}} and {where}/nomaster_00104.{{nxs,h5,ndf,nx,fio}}): "
        "its dataset is posted from the beamtime metadata alone"
    )
    dataset = env.datasets()[env.pid("nomaster_00104")]
    assert dataset["proposalId"] == f"99991173.{env.bid}"
    assert env.blocks(env.pid("nomaster_00104")) == []
