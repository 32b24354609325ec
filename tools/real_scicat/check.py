#!/usr/bin/env python3
"""Check our ingestor against a real SciCat backend: the "Verify by hand" list of issue 12.

Run by hand, never in CI (CI has no SciCat backend; ``shared/tools/real-scicat``
builds and starts one on loopback).  Every scenario runs OUR tools
(``scicat_dataset_ingest``, ``scicat_ingest`` from the virtualenv this
script runs in, or ``--bin-dir``) as separate processes against the backend
THROUGH a small loopback proxy started here (``proxy.py``), which counts the
requests by method, route shape and status, and can lose the answer of one
chosen request.  Each scenario prints one line - name, expected, observed
(request counts, duration), PASS/FAIL - and ``--markdown FILE`` writes the
same as a table, with the backend commit and the date.

Scenarios (``--list`` prints them; ``--only NAME`` runs some):
  fresh batch, same batch again, touched master file, changed master under
  each update strategy, a measurement listed again under each strategy, an
  attachment replaced in a dataset holding two, a lost DELETE answer, a
  duplicate sample through ``scicat_ingest -m Samples``, and the preflight
  ``scicat_dataset_ingest --check`` when the tool has it.

Every run uses fresh beamtime ids (from the clock), so runs do not collide
on one database; ``--reset`` restarts the backend on an empty one first,
``--delete-groups`` rewrites ``DELETE_GROUPS`` of the backend's
``backend.env`` (which decides whether the account may delete
origdatablocks) and restarts it.  Whether the account may delete is
probed on a throw-away dataset and shown in the report.

Examples (from the repository root)::

  .venv/bin/python tools/real_scicat/check.py --markdown /tmp/with-delete.md
  .venv/bin/python tools/real_scicat/check.py --delete-groups admin --markdown /tmp/no-delete.md
  .venv/bin/python tools/real_scicat/check.py --delete-groups admin,ingestor   # back to default
  .venv/bin/python tools/real_scicat/check.py --test-server     # our own test server instead
  .venv/bin/python tools/real_scicat/check.py --api v4          # the ingestor on …/api/v4

``--api v4`` points the ingestor's ``scicat_url`` at ``…/api/v4``: the same
scenarios then expect the v4 routes (``v4 datasets``, ``v4 origdatablocks``,
``v4 attachments``), and one more result checks that no v3 record route was
used (login, proposals and samples stay v3).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence
from urllib.parse import quote

import requests
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from proxy import CountingProxy, Hit, count, summarize, writes  # noqa: E402

from scingestor.testing.builders import append_list_line, make_beamtime, make_scan, write_nexus_scan  # noqa: E402

DEFAULT_URL = "http://127.0.0.1:3000/api/v3"
DEFAULT_KIT = REPO.parent / "shared" / "tools" / "real-scicat"
#: the longest one ingestor run may take before it is stopped and reported
DEFAULT_CAP = 60.0
#: the issue's bound for a scan to settle after a lost answer / a duplicate sample
SETTLE_BOUND = 10.0


# ---------------------------------------------------------------------------
# the backend, read directly (not through the proxy: these reads are not counted)
# ---------------------------------------------------------------------------


class Backend:
    """A logged-in session for checking what the catalogue really holds."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        answer = self.session.post(
            f"{self.url}/auth/login", json={"username": username, "password": password}, timeout=30
        )
        answer.raise_for_status()
        body = answer.json()
        token = body.get("access_token") or body.get("id")
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> Any:
        answer = self.session.get(f"{self.url}/{path}", timeout=30)
        if answer.status_code == 404 or not answer.content:
            return None
        answer.raise_for_status()
        return answer.json()

    def dataset(self, pid: str) -> Optional[Dict[str, Any]]:
        return self.get(f"Datasets/{quote(pid, safe='')}")

    def blocks(self, pid: str) -> List[Dict[str, Any]]:
        return self.get(f"Datasets/{quote(pid, safe='')}/OrigDatablocks") or []

    def attachments(self, pid: str) -> List[Dict[str, Any]]:
        return self.get(f"Datasets/{quote(pid, safe='')}/Attachments") or []

    def may_delete(self, pid: str) -> str:
        """Post a throw-away dataset and block, delete the block: the DELETE's status."""
        group = "checkpy-dmgt"
        dataset = {
            "pid": pid,
            "type": "raw",
            "owner": "check.py",
            "ownerGroup": group,
            "accessGroups": [],
            "contactEmail": "check@example.com",
            "sourceFolder": "/tmp/checkpy",
            "creationTime": "2026-11-30T00:00:00Z",
            "creationLocation": "/checkpy",
            "principalInvestigator": "check.py",
            "datasetName": "check.py delete probe",
        }
        answer = self.session.post(f"{self.url}/Datasets", json=dataset, timeout=30)
        if answer.status_code >= 300:
            return f"probe dataset refused: {answer.status_code}"
        block = {
            "datasetId": pid,
            "size": 1,
            "ownerGroup": group,
            "accessGroups": [],
            "dataFileList": [{"path": "probe", "size": 1, "time": "2026-11-30T00:00:00Z"}],
        }
        answer = self.session.post(f"{self.url}/OrigDatablocks", json=block, timeout=30)
        if answer.status_code >= 300:
            return f"probe block refused: {answer.status_code}"
        body = answer.json()
        block_id = body.get("_id") or body.get("id")
        answer = self.session.delete(
            f"{self.url}/OrigDatablocks/{quote(block_id, safe='')}", timeout=30
        )
        return str(answer.status_code)


# ---------------------------------------------------------------------------
# one ingestor run
# ---------------------------------------------------------------------------


@dataclass
class Run:
    """What one ingestor process did: exit status, time taken, requests sent."""

    rc: Optional[int]  # None: stopped at the cap
    seconds: float
    hits: List[Hit]
    output: str

    @property
    def settled(self) -> bool:
        return self.rc is not None

    def describe(self, cap: float) -> str:
        when = (
            f"{self.seconds:.1f} s, exit {self.rc}"
            if self.settled
            else f"did not settle within {cap:.0f} s (stopped)"
        )
        return f"{summarize(self.hits)}; {when}"


@dataclass
class Result:
    name: str
    expected: str
    observed: str
    ok: Optional[bool]  # None: skipped
    notes: List[str] = field(default_factory=list)
    output: str = ""

    @property
    def verdict(self) -> str:
        return "SKIP" if self.ok is None else ("PASS" if self.ok else "FAIL")


class Harness:
    """The shared parts of the scenarios: proxy, tools, ids, configuration files."""

    def __init__(
        self,
        args: argparse.Namespace,
        url: str,
        password: str,
        proxy: CountingProxy,
        backend: Backend,
        workdir: Path,
    ) -> None:
        self.args = args
        self.url = url
        self.password = password
        self.proxy = proxy
        self.backend = backend
        self.workdir = workdir
        self.cap = float(args.cap)
        self.stamp = int(time.time()) % 10**7
        self._serial = 0
        self.may_delete = True
        #: the API the ingestor is pointed at: the proxy's v3 base, or v4 beside it
        self.api = getattr(args, "api", "v3")
        base = proxy.url
        self.scicat_url = base if self.api == "v3" else base.rsplit("/", 1)[0] + "/" + self.api

    def tool(self, name: str) -> str:
        path = Path(self.args.bin_dir) / name
        if not path.exists():
            raise SystemExit(f"{path}: not found (give --bin-dir: the venv's bin directory)")
        return str(path)

    def new_beamtime(
        self, label: str, scans: Sequence[str] = (), *, plot: bool = False, **config: Any
    ) -> "BeamtimeDir":
        self._serial += 1
        bid = f"{self.stamp:07d}{self._serial:02d}"
        base = self.workdir / f"{self._serial:02d}-{label}"
        root = base / "current"
        raw = root / "raw"
        raw.mkdir(parents=True)
        make_beamtime(root, bid, core_path=root)
        credential = base / "credentials.json"
        credential.write_text(
            json.dumps({"username": self.args.username, "password": self.password})
        )
        credential.chmod(0o600)
        data: Dict[str, Any] = {
            "scicat_url": self.scicat_url,
            "ingestor_credential_file": str(credential),
            "scicat_users_login_path": "auth/login",
            "beamtime_dirs": [str(root)],
            "ingestor_var_dir": str(base / "var"),
            "ingest_dataset_attachment": plot,
        }
        data.update(config)
        config_file = base / "config.yaml"
        config_file.write_text(yaml.safe_dump(data))
        env = BeamtimeDir(self, bid, base, raw, config_file)
        for name in scans:
            env.scan(name, plot=plot)
        return env

    def run(
        self, argv: Sequence[str], cap: Optional[float] = None, drop: Optional[tuple] = None
    ) -> Run:
        """Run one tool to its end (or stop it at the cap), counting its requests."""
        cap = self.cap if cap is None else cap
        mark = self.proxy.mark()
        if drop:
            self.proxy.drop(*drop)
        started = time.monotonic()
        # a session of its own: stopping it at the cap stops its generator workers too
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(self.workdir),
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=cap)
            rc: Optional[int] = process.returncode
        except subprocess.TimeoutExpired:
            _stop_group(process)
            output, _ = process.communicate()
            rc = None
        seconds = time.monotonic() - started
        self.proxy.clear_drops()
        return Run(rc, seconds, self.proxy.hits(mark), output or "")


def _stop_group(process: "subprocess.Popen[str]") -> None:
    """SIGTERM the process group we started (its own session), SIGKILL it if it lingers."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class BeamtimeDir:
    """One beamtime directory of a scenario, with its configuration file."""

    def __init__(
        self, harness: Harness, bid: str, base: Path, raw: Path, config_file: Path
    ) -> None:
        self.h = harness
        self.bid = bid
        self.base = base
        self.raw = raw
        self.config_file = config_file
        self.list_file = raw / f"scicat-datasets-{bid}.lst"

    def pid(self, name: str) -> str:
        return f"{self.bid}/{name}"

    def scan(self, name: str, plot: bool = False) -> Path:
        master = make_scan(self.raw, name, plot=plot)
        append_list_line(self.list_file, name)
        return master

    def lines(self, *records: str) -> None:
        for record in records:
            append_list_line(self.list_file, record)

    def change_master(self, name: str, value: float) -> None:
        """Write the scan's master again with another sample temperature."""
        write_nexus_scan(
            self.raw / f"{name}.nxs", extra={"sample/temperature": {"value": value, "units": "K"}}
        )
        _later(self.raw / f"{name}.nxs")

    def batch(self, *extra: str, cap: Optional[float] = None, drop: Optional[tuple] = None) -> Run:
        return self.h.run(
            [
                self.h.tool("scicat_dataset_ingest"),
                "-c",
                str(self.config_file),
                "--no-progress",
                *extra,
            ],
            cap=cap,
            drop=drop,
        )


def _later(path: Path, seconds: float = 1.0) -> None:
    """Make a file clearly newer than what was generated from it."""
    now = time.time() + seconds
    os.utime(path, (now, now))


# ---------------------------------------------------------------------------
# expectations
# ---------------------------------------------------------------------------


def changes_of(run: Run) -> Dict[str, int]:
    """Write requests by ``METHOD shape``."""
    found: Dict[str, int] = {}
    for hit in writes(run.hits):
        key = f"{hit.method} {hit.shape}"
        found[key] = found.get(key, 0) + 1
    return found


def expect(
    run: Run,
    exact: Dict[str, int],
    problems: List[str],
    *,
    others: bool = False,
    rc: Optional[int] = 0,
) -> None:
    """Compare the run with exact write counts; with ``others=False`` nothing else was written."""
    found = changes_of(run)
    for key, wanted in exact.items():
        if found.get(key, 0) != wanted:
            problems.append(f"{key}: {found.get(key, 0)} (expected {wanted})")
    if not others:
        extra = {key: n for key, n in found.items() if key not in exact}
        if extra:
            problems.append("also sent " + ", ".join(f"{k} {n}" for k, n in extra.items()))
    failed = [
        hit
        for hit in run.hits
        if hit.status >= 400 and not (hit.status == 404 and hit.method == "GET")
    ]
    if failed and not others:
        problems.append(
            "error answers: "
            + ", ".join(sorted({f"{hit.method} {hit.shape} {hit.status}" for hit in failed}))
        )
    if not run.settled:
        problems.append(f"did not settle within {run.seconds:.0f} s")
    elif rc is not None and run.rc != rc:
        problems.append(f"exit {run.rc} (expected {rc})")


def quiet(run: Run, problems: List[str], what: str = "next run") -> None:
    """A run that must send nothing but reads."""
    sent = changes_of(run)
    if sent:
        problems.append(f"{what} sent " + ", ".join(f"{k} {n}" for k, n in sent.items()))
    if not run.settled:
        problems.append(f"{what} did not settle")
    elif run.rc != 0:
        problems.append(f"{what} exit {run.rc}")


def result(
    name: str,
    expected: str,
    runs: Sequence[Run],
    problems: List[str],
    cap: float,
    notes: Sequence[str] = (),
) -> Result:
    observed = " | then: ".join(run.describe(cap) for run in runs)
    tail = "\n".join(f"--- run {i + 1} ---\n{_tail(run.output)}" for i, run in enumerate(runs))
    return Result(name, expected, observed, not problems, list(problems) + list(notes), tail)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


#: the route shapes (as ``proxy.route_shape`` names them) the ingestor writes
#: records to, per API of its ``scicat_url`` (``--api``); :func:`use_api` sets them
SHAPES: Dict[str, Dict[str, str]] = {
    "v3": {
        "DS": "Datasets",
        "DS_ID": "Datasets/{id}",
        "BLOCKS": "OrigDatablocks",
        "BLOCK_ID": "OrigDatablocks/{id}",
        "ATTS": "Datasets/{id}/Attachments",
        "ATT_ID": "Datasets/{id}/Attachments/{id}",
    },
    "v4": {
        "DS": "v4 datasets",
        "DS_ID": "v4 datasets/{id}",
        "BLOCKS": "v4 origdatablocks",
        "BLOCK_ID": "v4 origdatablocks/{id}",
        "ATTS": "v4 attachments",
        "ATT_ID": "v4 attachments/{id}",
    },
}
DS, DS_ID, BLOCKS, BLOCK_ID, ATTS, ATT_ID = SHAPES["v3"].values()
#: the v4 attachment routes (a v3 client deletes by them where the backend has them)
ATT_V4 = "v4 attachments"
ATT_V4_ID = "v4 attachments/{id}"
#: v3 record routes a v4 client must never write to
V3_RECORD_SHAPES = frozenset(SHAPES["v3"].values())


def use_api(api: str) -> None:
    """Point the scenarios' expectations at the routes of *api* (``v3``/``v4``)."""
    global DS, DS_ID, BLOCKS, BLOCK_ID, ATTS, ATT_ID
    DS, DS_ID, BLOCKS, BLOCK_ID, ATTS, ATT_ID = SHAPES[api].values()


def _block_problem(h: Harness, pid: str, problems: List[str]) -> str:
    blocks = h.backend.blocks(pid)
    allowed = 1 if h.may_delete else 2
    if not 1 <= len(blocks) <= allowed:
        problems.append(
            f"{pid} holds {len(blocks)} origdatablocks (expected "
            f"{'1' if allowed == 1 else '1 or 2'})"
        )
    return f"{pid} holds {len(blocks)} block(s)"


def once(run: Run, problems: List[str]) -> List[str]:
    """A block posted at most once, its old one deleted at most once; the notes to show.

    A refused (403) DELETE sent a second time right after a new login is one
    attempt: our client takes a 403 for a refused token and tries once more
    with a fresh one.  That is noted, not failed.
    """
    notes: List[str] = []
    sent = changes_of(run)
    if sent.get(f"POST {BLOCKS}", 0) > 1:
        problems.append(f"POST {BLOCKS} sent {sent[f'POST {BLOCKS}']} times (at most once)")
    deletes = [hit for hit in run.hits if hit.method == "DELETE" and hit.shape == BLOCK_ID]
    if len(deletes) == 2 and all(hit.status == 403 for hit in deletes):
        notes.append(
            "the refused DELETE was sent again after a new login (the client takes "
            "a 403 for a refused token)"
        )
    elif len(deletes) > 1:
        problems.append(f"DELETE {BLOCK_ID} sent {len(deletes)} times (at most once)")
    return notes


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------


def fresh_and_again(h: Harness) -> List[Result]:
    env = h.new_beamtime("fresh", plot=True)
    env.scan("scan_00001", plot=True)
    env.scan("scan_00002")
    first = env.batch()
    problems: List[str] = []
    # scan_00002 has no PNG: nxsfileinfo plots its NeXus data, so it gets an
    # attachment too (ingest_dataset_attachment is on)
    expect(first, {f"POST {DS}": 2, f"POST {BLOCKS}": 2, f"POST {ATTS}": 2}, problems)
    notes = []
    for name in ("scan_00001", "scan_00002"):
        if h.backend.dataset(env.pid(name)) is None:
            problems.append(f"{env.pid(name)} not in the catalogue")
    for name in ("scan_00001", "scan_00002"):
        pid = env.pid(name)
        held = (len(h.backend.blocks(pid)), len(h.backend.attachments(pid)))
        notes.append(f"{pid}: {held[0]} block(s), {held[1]} attachment(s)")
        if held != (1, 1):
            problems.append(f"{pid} holds {held[0]} block(s), {held[1]} attachment(s)")
    results = [
        result(
            "batch ingest of a fresh beamtime",
            "POST datasets 2, POST origdatablocks 2, POST attachments 2 (scan_00001's PNG, "
            "scan_00002's NeXus plot), nothing else written; exit 0",
            [first],
            problems,
            h.cap,
            notes,
        )
    ]
    again = env.batch()
    problems = []
    quiet(again, problems, "the run")
    results.append(
        result("the same batch again", "nothing sent but reads; exit 0", [again], problems, h.cap)
    )
    return results


def touched_master(h: Harness) -> List[Result]:
    env = h.new_beamtime("touched", ["scan_00001"])
    env.batch()
    _later(env.raw / "scan_00001.nxs")
    run = env.batch()
    problems: List[str] = []
    expect(run, {f"PATCH {DS_ID}": 0, f"POST {DS}": 0}, problems, others=True)
    notes = once(run, problems)
    if not run.settled or run.rc != 0:
        problems.append(f"exit {run.rc}")
    again = env.batch()
    quiet(again, problems)
    notes.append(_block_problem(h, env.pid("scan_00001"), problems))
    return [
        result(
            "touched master file",
            "no dataset PATCH/POST (metadata unchanged); the block at most replaced "
            "once (its file time changed); exit 0; the next run sends nothing",
            [run, again],
            problems,
            h.cap,
            notes,
        )
    ]


def strategy_writes(strategy: str) -> Dict[str, int]:
    """What a changed master (only scientificMetadata differs) makes *strategy* send."""
    patches, posts = {"no": (0, 0), "patch": (1, 0), "create": (0, 1), "mixed": (1, 0)}[strategy]
    return {f"PATCH {DS_ID}": patches, f"POST {DS}": posts}


def changed_master(h: Harness, strategy: str) -> List[Result]:
    env = h.new_beamtime(f"changed-{strategy}", ["scan_00001"], dataset_update_strategy=strategy)
    env.batch()
    env.change_master("scan_00001", 301.5)
    run = env.batch()
    problems: List[str] = []
    wanted = strategy_writes(strategy)
    notes: List[str] = []
    if h.may_delete:
        wanted[f"POST {BLOCKS}"] = 1
        # the old block goes with the old dataset version only when one is replaced in place
        wanted[f"DELETE {BLOCK_ID}"] = 0 if strategy == "create" else 1
    else:
        # without the right to delete, posting the new block and keeping the old
        # one, or leaving the block alone, are both acceptable: once, not per run
        notes = once(run, problems)
    expect(run, wanted, problems, others=not h.may_delete, rc=0)
    again = env.batch()
    quiet(again, problems)
    pid = env.pid("scan_00001")
    current = f"{pid}/2" if strategy == "create" else pid
    notes.append(_block_problem(h, current, problems))
    described = ", ".join(f"{k} {v}" for k, v in wanted.items())
    deletes = (
        "" if h.may_delete else ("; the block posted and the old kept, or left alone: at most once")
    )
    return [
        result(
            f"changed master, strategy {strategy}",
            f"{described or 'no dataset change'}{deletes}; exit 0; the next run sends nothing",
            [run, again],
            problems,
            h.cap,
            notes,
        )
    ]


def measurement_again(h: Harness, strategy: str) -> List[Result]:
    env = h.new_beamtime(f"meas-{strategy}", dataset_update_strategy=strategy)
    env.lines("__command__ start meas")
    for name in ("scan_a", "scan_b"):
        env.scan(name)
    env.lines("__command__ stop", "meas")
    first = env.batch()
    problems: List[str] = []
    if not first.settled or first.rc != 0:
        problems.append(f"first ingestion: exit {first.rc}")
    before = h.backend.dataset(env.pid("meas"))
    if before is None:
        problems.append("measurement dataset not created")
    env.lines(f"meas:{int(time.time())}")
    run = env.batch()
    quiet(run, problems, "the run")
    if h.backend.dataset(env.pid("meas") + "/2") is not None:
        problems.append("a new version meas/2 exists")
    notes = []
    if before is not None:
        notes.append(
            "derived dataset fields returned: investigator "
            f"{'present' if 'investigator' in before else 'ABSENT'}, "
            f"principalInvestigator {before.get('principalInvestigator')!r}"
        )
    return [
        result(
            f"measurement listed again, strategy {strategy}",
            "nothing sent but reads (no PATCH, no new version); exit 0",
            [run],
            problems,
            h.cap,
            notes,
        )
    ]


def attachment_replaced(h: Harness) -> List[Result]:
    env = h.new_beamtime("attachment", plot=True)
    env.scan("scan_00001", plot=True)
    env.batch()
    meta = next(env.base.glob("var/**/scan_00001.attachment.json"), None)
    problems: List[str] = []
    if meta is None:
        return [
            Result(
                "attachment replaced (dataset holds two)",
                "-",
                "no attachment metadata was generated",
                False,
            )
        ]
    first = json.loads(meta.read_text())
    first = first[0] if isinstance(first, list) else first

    def variant(caption: str) -> Dict[str, Any]:
        other = dict(first)
        other["caption"] = caption
        return other

    meta.write_text(json.dumps([first, variant("check.py B")]))
    _later(meta)
    two = env.batch()
    pid = env.pid("scan_00001")
    held = [a.get("caption") for a in h.backend.attachments(pid)]
    if sorted(held) != sorted([first.get("caption"), "check.py B"]):
        problems.append(f"before the replacement it holds {held}")
    meta.write_text(json.dumps([first, variant("check.py C")]))
    _later(meta, 2.0)
    run = env.batch()
    # the v3 routes or the v4 ones (which delete by id on this backend): one of each
    sent = changes_of(run)
    posted = sum(sent.get(f"POST {shape}", 0) for shape in {ATTS, ATT_V4})
    deleted = sum(sent.get(f"DELETE {shape}", 0) for shape in {ATT_ID, ATT_V4_ID})
    if posted != 1 or deleted != 1:
        problems.append(f"attachments posted {posted}, deleted {deleted} (expected 1 and 1)")
    expect(run, {}, problems, others=True, rc=0 if h.may_delete else None)
    after = [a.get("caption") for a in h.backend.attachments(pid)]
    wanted = sorted([first.get("caption"), "check.py C"])
    if h.may_delete and sorted(after) != wanted:
        problems.append(f"ends holding {after} (expected {wanted})")
    if first.get("caption") not in after:
        problems.append("the kept attachment A was deleted")
    return [
        result(
            "attachment replaced in a dataset holding two ([A,B] -> [A,C])",
            "DELETE of B 1, POST of C 1 (v3 or v4 routes); the dataset ends holding [A, C]; exit 0",
            [two, run],
            problems,
            h.cap,
            [f"A = caption {first.get('caption')!r}; held before: {held}; after: {after}"],
        )
    ]


def lost_delete(h: Harness) -> List[Result]:
    env = h.new_beamtime("lost-delete", ["scan_00001"])
    env.batch()
    env.change_master("scan_00001", 302.5)
    run = env.batch(drop=("DELETE", f"^{re.escape(BLOCK_ID)}$", 1))
    problems: List[str] = []
    dropped = [hit for hit in run.hits if hit.dropped]
    if not dropped:
        problems.append("no DELETE answer was dropped (no DELETE sent?)")
    if not run.settled:
        problems.append(f"did not settle within {h.cap:.0f} s")
    elif run.seconds > SETTLE_BOUND:
        problems.append(f"settled after {run.seconds:.1f} s (bound {SETTLE_BOUND:.0f} s)")
    elif run.rc != 0:
        problems.append(f"exit {run.rc}")
    notes = [_block_problem(h, env.pid("scan_00001"), problems)]
    if run.settled:
        again = env.batch()
        quiet(again, problems)
        runs = [run, again]
    else:
        runs = [run]
    return [
        result(
            f"lost DELETE answer (first DELETE {BLOCK_ID} answer dropped)",
            f"settles within {SETTLE_BOUND:.0f} s, exit 0, the dataset holds 1 block",
            runs,
            problems,
            h.cap,
            notes,
        )
    ]


def duplicate_sample(h: Harness) -> List[Result]:
    env = h.new_beamtime("sample")
    sample = env.base / "sample.json"
    sample.write_text(
        json.dumps(
            {
                "sampleId": f"checkpy-{h.stamp}",
                "owner": "check.py",
                "ownerGroup": f"{env.bid}-dmgt",
                "accessGroups": [f"{env.bid}-dmgt"],
                "description": "check.py duplicate sample",
                "sampleCharacteristics": {},
            }
        )
    )
    argv = [h.tool("scicat_ingest"), "-m", "Samples", "-c", str(env.config_file), str(sample)]
    first = h.run(argv)
    problems: List[str] = []
    if count(first.hits, "POST", "Samples", "2") != 1 or first.rc != 0:
        problems.append(f"first post: {summarize(first.hits)}, exit {first.rc}")
    second = h.run(argv)
    posts = count(second.hits, "POST", "Samples")
    if not second.settled:
        problems.append(f"did not settle within {h.cap:.0f} s")
    elif second.seconds > SETTLE_BOUND:
        problems.append(f"took {second.seconds:.1f} s (bound {SETTLE_BOUND:.0f} s)")
    if posts > 3:
        problems.append(f"POST Samples sent {posts} times")
    if second.settled and "already" not in second.output.lower():
        problems.append("does not say that the sample is already there")
    if second.settled and second.rc != 0:
        # since 2c8e7c0 a record already in SciCat is a warning (exit 0); before, exit 1
        problems.append(f"exit {second.rc} (a sample already there is a warning, exit 0)")
    return [
        result(
            "duplicate sample (scicat_ingest -m Samples twice, same sampleId)",
            f"2nd run ends within {SETTLE_BOUND:.0f} s, at most 3 POST Samples, "
            "reports the sample as already there (warning, exit 0)",
            [first, second],
            problems,
            h.cap,
        )
    ]


def preflight(h: Harness) -> List[Result]:
    name = "preflight scicat_dataset_ingest --check"
    helptext = subprocess.run(
        [h.tool("scicat_dataset_ingest"), "--help"], capture_output=True, text=True
    ).stdout
    if "--check" not in helptext:
        return [Result(name, "a table of what the account may do", "no --check option", None)]
    env = h.new_beamtime("preflight")
    run = env.batch("--check")
    problems: List[str] = []
    if not run.settled:
        problems.append("did not settle")
    elif h.may_delete and run.rc != 0:
        problems.append(f"exit {run.rc}")
    elif not h.may_delete and "DELETE_GROUPS" not in run.output:
        problems.append("does not say that the account lacks DELETE_GROUPS")
    wanted = (
        "exit 0; leaves nothing behind"
        if h.may_delete
        else "names the missing DELETE_GROUPS right and what it left behind (exit 0 or 1)"
    )
    res = result(name, f"a table of what the account may do; {wanted}", [run], problems, h.cap)
    res.output = run.output
    return [res]


SCENARIOS: Dict[str, Callable[[Harness], List[Result]]] = {
    "fresh": fresh_and_again,
    "touched": touched_master,
    **{
        f"changed-{s}": functools.partial(changed_master, strategy=s)
        for s in ("no", "patch", "create", "mixed")
    },
    **{
        f"meas-{s}": functools.partial(measurement_again, strategy=s)
        for s in ("no", "patch", "create", "mixed")
    },
    "attachment": attachment_replaced,
    "lost-delete": lost_delete,
    "sample": duplicate_sample,
    "preflight": preflight,
}


# ---------------------------------------------------------------------------
# the backend kit (restart, policy)
# ---------------------------------------------------------------------------


def kit_dir() -> Path:
    return Path(os.environ.get("REAL_SCICAT_DIR", str(Path.home() / "real-scicat")))


def set_delete_groups(groups: str) -> None:
    env_file = kit_dir() / "backend.env"
    lines = env_file.read_text().splitlines()
    lines = [
        f'export DELETE_GROUPS="{groups}"' if line.startswith("export DELETE_GROUPS=") else line
        for line in lines
    ]
    env_file.write_text("\n".join(lines) + "\n")


def delete_groups() -> str:
    try:
        for line in (kit_dir() / "backend.env").read_text().splitlines():
            if line.startswith("export DELETE_GROUPS="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"


def restart(kit: Path, reset: bool) -> None:
    subprocess.run(["bash", str(kit / "stop.sh")], check=False)
    time.sleep(1.0)
    env = dict(os.environ, RESET="1" if reset else "0")
    subprocess.run(["bash", str(kit / "start.sh")], check=True, env=env)


def backend_commit() -> str:
    try:
        return (kit_dir() / "backend.commit").read_text().strip()
    except OSError:
        return "unknown"


def backend_version() -> str:
    try:
        return json.loads((kit_dir() / "backend" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"SciCat API (default {DEFAULT_URL})")
    parser.add_argument("--username", default="ingestor")
    parser.add_argument(
        "--password",
        default=None,
        help="default: ingestorpw (the kit's account), ingestor-password with --test-server",
    )
    parser.add_argument(
        "--bin-dir",
        default=str(Path(sys.executable).parent),
        help="where scicat_dataset_ingest and scicat_ingest are (default: beside this python)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help="run only these scenarios (repeat); see --list",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--cap",
        type=float,
        default=DEFAULT_CAP,
        help="seconds one ingestor run may take before it is stopped",
    )
    parser.add_argument("--markdown", metavar="FILE", help="also write a markdown report")
    parser.add_argument("--label", default="", help="a title for the report (e.g. the variant)")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="restart the backend on an empty database first (its kit's stop.sh/start.sh)",
    )
    parser.add_argument(
        "--delete-groups",
        metavar="GROUPS",
        help="set DELETE_GROUPS in $REAL_SCICAT_DIR/backend.env and restart "
        "the backend (e.g. 'admin' for an account that may not delete)",
    )
    parser.add_argument(
        "--kit",
        default=str(DEFAULT_KIT),
        help="directory of start.sh/stop.sh (shared/tools/real-scicat)",
    )
    parser.add_argument(
        "--test-server",
        action="store_true",
        help="run against our own SciCat test server instead (for comparison)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scenario directories")
    parser.add_argument(
        "--api",
        choices=("v3", "v4"),
        default="v3",
        help="the API the ingestor's scicat_url names: v3 (…/api/v3) or v4 (…/api/v4; "
        "datasets, origdatablocks and attachments by the v4 routes, login on v3)",
    )
    return parser


def v3_routes_unused(hits: List[Hit]) -> Result:
    """In v4 mode: the ingestor wrote no record through a v3 route (login may stay v3)."""
    used = sorted({f"{hit.method} {hit.shape}" for hit in hits if hit.shape in V3_RECORD_SHAPES})
    return Result(
        "v4 mode: datasets, origdatablocks and attachments only by the v4 routes",
        "no request to a v3 record route (login, proposals, samples stay v3)",
        "v3 record routes used: " + (", ".join(used) if used else "none"),
        not used,
    )


def answers_seen(hits: List[Hit]) -> List[str]:
    """Every route the run used, with the statuses it answered (for comparing servers)."""
    seen: Dict[str, Dict[str, int]] = {}
    for hit in hits:
        label = str(hit.status) + (" (answer dropped)" if hit.dropped else "")
        statuses = seen.setdefault(f"{hit.method} {hit.shape}", {})
        statuses[label] = statuses.get(label, 0) + 1
    return [
        f"{route}: " + ", ".join(f"{status} ×{n}" for status, n in sorted(statuses.items()))
        for route, statuses in sorted(seen.items())
    ]


def markdown(
    results: List[Result], header: List[str], path: str, answers: Sequence[str] = ()
) -> None:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = header + ["", "| scenario | expected | observed | result |", "|---|---|---|---|"]
    for res in results:
        observed = res.observed + ("<br>" + "; ".join(res.notes) if res.notes else "")
        out.append(
            f"| {cell(res.name)} | {cell(res.expected)} | {cell(observed)} | **{res.verdict}** |"
        )
    if answers:
        out += ["", "Answers seen, by route (all scenarios):", ""]
        out += [f"- `{line}`" for line in answers]
    for res in results:
        if res.output and (res.ok is False or "--check" in res.name):
            out += [
                "",
                f"<details><summary>{res.name}: ingestor output (tail)</summary>",
                "",
                "```",
                res.output.rstrip(),
                "```",
                "",
                "</details>",
            ]
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # the scenarios run in folders of their own: a relative --bin-dir would move
    args.bin_dir = os.path.abspath(args.bin_dir)
    use_api(args.api)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    server = None
    if args.test_server:
        from scingestor.testing.scicat_server import SciCatServer

        server = SciCatServer().start()
        url = server.url
        password = args.password or "ingestor-password"
        target = "our test server (scingestor.testing.scicat_server)"
    else:
        url = args.url
        password = args.password or "ingestorpw"
        if args.delete_groups is not None:
            set_delete_groups(args.delete_groups)
        if args.reset or args.delete_groups is not None:
            restart(Path(args.kit), reset=args.reset)
        target = (
            f"scicat-backend-next {backend_version()} commit {backend_commit()}, "
            f"DELETE_GROUPS={delete_groups()}"
        )
    target += f"; ingestor scicat_url …/api/{args.api}"
    workdir = Path(tempfile.mkdtemp(prefix="checkpy-"))
    started = time.monotonic()
    results: List[Result] = []
    answers: List[str] = []
    try:
        backend = Backend(url, args.username, password)
        with CountingProxy(url) as proxy:
            harness = Harness(args, url, password, proxy, backend, workdir)
            probe = backend.may_delete(f"{harness.stamp:07d}99/probe")
            harness.may_delete = probe.startswith("2")
            print(f"# {target}")
            print(
                f"# account {args.username}: DELETE OrigDatablocks/{{id}} -> {probe} "
                f"({'may' if harness.may_delete else 'may NOT'} delete)"
            )
            first_hit = proxy.mark()
            for name in args.only or list(SCENARIOS):
                try:
                    found = SCENARIOS[name](harness)
                except Exception as error:  # one broken scenario must not hide the rest
                    found = [Result(name, "-", f"harness error: {error!r}", False)]
                for res in found:
                    results.append(res)
                    print(
                        f"{res.verdict:4}  {res.name}\n      expected: {res.expected}\n"
                        f"      observed: {res.observed}"
                    )
                    for note in res.notes:
                        print(f"      - {note}")
                    if "--check" in res.name and res.output:
                        print("      " + res.output.replace("\n", "\n      "))
                    sys.stdout.flush()
            if args.api == "v4":
                results.append(v3_routes_unused(proxy.hits(first_hit)))
                print(f"{results[-1].verdict:4}  {results[-1].name}: {results[-1].observed}")
            answers = answers_seen(proxy.hits(first_hit))
            print("# answers seen, by route:")
            for line in answers:
                print(f"#   {line}")
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"# scenario directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    took = time.monotonic() - started
    print(
        f"# {sum(r.ok is True for r in results)} passed, "
        f"{sum(r.ok is False for r in results)} failed, "
        f"{sum(r.ok is None for r in results)} skipped in {took:.0f} s"
    )
    if args.markdown:
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = [
            f"### {args.label or 'check.py'}",
            "",
            f"- target: {target}",
            f"- account `{args.username}`: "
            f"{'may' if harness.may_delete else 'may not'} delete origdatablocks "
            f"(probe DELETE answered {probe})",
            f"- date: {now}; ingestor: {_git_describe(args.bin_dir)}; run took {took:.0f} s "
            f"(cap per ingestor run {args.cap:.0f} s)",
        ]
        markdown(results, header, args.markdown, answers)
    return 0 if all(r.ok is not False for r in results) else 1


def _git_describe(bin_dir: str) -> str:
    """The last commit that changed the code of the tools run (the harness's own aside)."""
    repo = str(REPO)
    try:  # the checkout the tools of --bin-dir were installed from (pip -e)
        found = subprocess.run(
            [
                str(Path(bin_dir) / "python"),
                "-I",
                "-c",
                "import os, scingestor; "
                "print(os.path.dirname(os.path.dirname(scingestor.__file__)))",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout.strip()
        repo = found or repo
    except (OSError, subprocess.CalledProcessError):
        pass

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", repo, *argv], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        code = git("log", "-1", "--format=%h", "--", "scingestor", "ScicatIngestorDS")
        dirty = git("status", "--porcelain", "--", "scingestor", "ScicatIngestorDS")
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        return (
            f"code of commit {code}{' + local changes' if dirty else ''} "
            f"(branch {branch} in {repo})"
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
