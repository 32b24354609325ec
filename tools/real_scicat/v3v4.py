#!/usr/bin/env python3
"""One beamtime ingested through API v3 and through API v4: what the real backend stores.

Run by hand (``compare.py --v3-v4`` or this file directly), never in CI.
The SAME beamtime directory is ingested twice, in lockstep, by our
``scicat_dataset_ingest``: once with ``scicat_url`` ``…/api/v3``, once with
``…/api/v4``; each side has its own ``ingestor_var_dir`` and
``dataset_pid_prefix`` (``v3cmp…/``, ``v4cmp…/``), so the files, times,
groups and paths are identical and only the API differs.  The story:

* ``story`` (strategy ``patch``): raw scans with a PNG and without (a
  NeXus plot), a measurement (derived) dataset grouping them; then a
  changed master file; then the attachment metadata made ``[A, B]`` and
  ``[A, C]`` (a replacement);
* ``no``, ``create``, ``mixed``: one scan, then its master changed;
* ``--check`` on both sides (exit code and what it left behind).

Then every dataset, origdatablock and attachment of both sides is read back
through v3 AND through v4 and compared field by field, with the side's pid
prefix neutral and the fields the server makes per record (``_id``,
``createdAt`` …) left out.  Only the documented renames may differ
(:data:`DOCUMENTED`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import requests
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from scingestor.testing.builders import (  # noqa: E402
    append_list_line,
    make_beamtime,
    make_scan,
    write_nexus_scan,
)

#: fields the server makes per record or per request: left out of the comparison
SERVER_MADE = {"_id", "id", "aid", "createdAt", "updatedAt", "__v"}
#: fields that may differ between a v3-made and a v4-made record (the documented
#: renames, and ``version``: the API a dataset was made through)
DOCUMENTED = {
    "version",
    "principalInvestigator",
    "principalInvestigators",
    "investigator",
    "proposalId",
    "proposalIds",
    "sampleId",
    "sampleIds",
    "instrumentId",
    "instrumentIds",
}
SCANS = ("scan_00001", "scan_00002")


class Reader:
    """A logged-in session on the backend (v3 login), reading by v3 and v4."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.v3 = url.rstrip("/")
        self.v4 = self.v3.rsplit("/", 1)[0] + "/v4"
        self.session = requests.Session()
        answer = self.session.post(
            f"{self.v3}/auth/login", json={"username": username, "password": password}, timeout=30
        )
        answer.raise_for_status()
        body = answer.json()
        self.session.headers["Authorization"] = f"Bearer {body.get('access_token') or body['id']}"

    def get(self, url: str, **params: str) -> Any:
        answer = self.session.get(url, params=params or None, timeout=30)
        if answer.status_code == 404 or not answer.content:
            return None
        answer.raise_for_status()
        return answer.json()

    def holdings(self, pids: Sequence[str], api: str) -> Dict[str, Any]:
        """Each dataset with its blocks and attachments, read through *api*."""
        out: Dict[str, Any] = {}
        for pid in pids:
            enc = quote(pid, safe="")
            if api == "v3":
                dataset = self.get(f"{self.v3}/Datasets/{enc}")
                blocks = self.get(f"{self.v3}/Datasets/{enc}/OrigDatablocks") or []
                attachments = self.get(f"{self.v3}/Datasets/{enc}/Attachments") or []
            else:
                dataset = self.get(f"{self.v4}/datasets/{enc}")
                where = json.dumps({"where": {"datasetId": pid}})
                blocks = self.get(f"{self.v4}/origdatablocks", filter=where) or []
                where = json.dumps({"where": {"relationships.targetId": pid}})
                attachments = self.get(f"{self.v4}/attachments", filter=where) or []
            if dataset is None:
                continue
            out[pid] = {"dataset": dataset, "blocks": blocks, "attachments": attachments}
        return out


def versions(reader: Reader, base: str) -> List[str]:
    """*base* and the versions ``base/2`` … the backend holds."""
    found = []
    for n in range(1, 6):
        pid = base if n == 1 else f"{base}/{n}"
        if reader.get(f"{reader.v3}/Datasets/{quote(pid, safe='')}") is None:
            break
        found.append(pid)
    return found


class Side:
    """One API's ingestion of the shared beamtime: its configuration and runs."""

    def __init__(
        self, api: str, url: str, root: Path, base: Path, prefix: str, credential: Path, **cfg: Any
    ) -> None:
        self.api = api
        self.prefix = prefix
        self.config = base / f"config-{api}.yaml"
        data = {
            "scicat_url": url.rsplit("/", 1)[0] + "/" + api,
            "ingestor_credential_file": str(credential),
            "scicat_users_login_path": "auth/login",
            "beamtime_dirs": [str(root)],
            "ingestor_var_dir": str(base / f"var-{api}"),
            "dataset_pid_prefix": prefix,
            "ingest_dataset_attachment": True,
            **cfg,
        }
        self.config.write_text(yaml.safe_dump(data))
        self.var = base / f"var-{api}"
        self.log: List[str] = []

    def run(self, tool: str, *extra: str) -> Tuple[int, str]:
        done = subprocess.run(
            [tool, "-c", str(self.config), "--no-progress", *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.log.append(f"{' '.join(extra) or 'batch'}: exit {done.returncode}")
        return done.returncode, done.stdout + done.stderr


def later(path: Path, seconds: float) -> None:
    now = time.time() + seconds
    os.utime(path, (now, now))


def attachment_meta(side: Side, name: str) -> Optional[Path]:
    return next(side.var.glob(f"**/{name}.attachment.json"), None)


def set_captions(side: Side, name: str, captions: Sequence[str], delay: float) -> None:
    """Make the scan's attachment metadata hold the first attachment plus *captions*."""
    meta = attachment_meta(side, name)
    if meta is None:
        raise SystemExit(f"{side.api}: no attachment metadata for {name}")
    first = json.loads(meta.read_text())
    first = first[0] if isinstance(first, list) else first
    meta.write_text(json.dumps([first] + [dict(first, caption=c) for c in captions]))
    later(meta, delay)


class Beamtime:
    """One beamtime directory, ingested by a v3 side and a v4 side."""

    def __init__(self, work: Path, url: str, stamp: int, label: str, serial: int, **cfg: Any):
        self.bid = f"{stamp:07d}{serial:02d}"
        base = work / label
        self.root = base / "current"
        self.raw = self.root / "raw"
        self.raw.mkdir(parents=True)
        make_beamtime(self.root, self.bid, core_path=self.root)
        self.list_file = self.raw / f"scicat-datasets-{self.bid}.lst"
        credential = base / "credentials.json"
        credential.write_text(json.dumps({"username": ARGS.username, "password": ARGS.password}))
        credential.chmod(0o600)
        self.sides = [
            Side(api, url, self.root, base, f"{api}cmp{stamp:07d}/", credential, **cfg)
            for api in ("v3", "v4")
        ]
        self.names: List[str] = []

    def scan(self, name: str, **kw: Any) -> None:
        make_scan(self.raw, name, **kw)

    def lines(self, *records: str) -> None:
        for record in records:
            append_list_line(self.list_file, record)
            name = record.split(":")[0]
            if not record.startswith("__command__") and name not in self.names:
                self.names.append(name)

    def batch(self, tool: str) -> List[int]:
        return [side.run(tool)[0] for side in self.sides]

    def change_master(self, name: str, value: float) -> None:
        write_nexus_scan(
            self.raw / f"{name}.nxs", extra={"sample/temperature": {"value": value, "units": "K"}}
        )
        later(self.raw / f"{name}.nxs", 1.0)


def story(work: Path, url: str, stamp: int, tool: str) -> List[Beamtime]:
    """Build and ingest the beamtimes (see the module text), both sides in lockstep."""
    made: List[Beamtime] = []
    main = Beamtime(work, url, stamp, "story", 1, dataset_update_strategy="patch")
    main.scan("scan_00001", detectors={"det": 1}, plot=True)
    main.scan("scan_00002")
    main.lines("__command__ start meas", *SCANS, "__command__ stop", "meas")
    main.batch(tool)
    main.change_master("scan_00002", 280.0)
    main.lines("scan_00002:1")
    main.batch(tool)
    for captions, delay in ((["B"], 1.0), (["C"], 2.0)):
        for side in main.sides:
            set_captions(side, "scan_00001", captions, delay)
        main.lines(f"scan_00001:{int(delay) + 1}")
        main.batch(tool)
    made.append(main)
    for serial, strategy in enumerate(("no", "create", "mixed"), start=2):
        bt = Beamtime(work, url, stamp, strategy, serial, dataset_update_strategy=strategy)
        bt.scan("scan_00001")
        bt.lines("scan_00001")
        bt.batch(tool)
        bt.change_master("scan_00001", 301.5)
        bt.lines("scan_00001:1")
        bt.batch(tool)
        made.append(bt)
    return made


def neutral(value: Any, prefix: str) -> Any:
    """*value* without server-made fields and with the side's pid prefix as ``PFX/``."""
    if isinstance(value, dict):
        return {k: neutral(v, prefix) for k, v in value.items() if k not in SERVER_MADE}
    if isinstance(value, list):
        items = [neutral(v, prefix) for v in value]
        if all(isinstance(v, dict) for v in items):
            items.sort(key=lambda v: json.dumps(v, sort_keys=True))
        return items
    if isinstance(value, str):
        return value.replace(prefix, "PFX/")
    return value


def field_rows(left: Any, right: Any, path: str = "") -> List[Tuple[str, Any, Any]]:
    """(dotted path, v3 value, v4 value) of every leaf; equal ones too."""
    if isinstance(left, dict) and isinstance(right, dict):
        rows: List[Tuple[str, Any, Any]] = []
        for key in sorted(set(left) | set(right)):
            where = f"{path}.{key}" if path else key
            if key not in left or key not in right:
                rows.append((where, left.get(key, "—absent—"), right.get(key, "—absent—")))
            else:
                rows += field_rows(left[key], right[key], where)
        return rows
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        if all(isinstance(v, dict) for v in left + right):
            return [
                row
                for i, (a, b) in enumerate(zip(left, right))
                for row in field_rows(a, b, f"{path}[{i}]")
            ]
    return [(path, left, right)]


#: attachment fields that differ by design: v3 links by ``datasetId``, v4 by
#: ``relationships``
ATTACHMENT_LINKS = {"datasetId", "relationships"}


def documented(path: str) -> bool:
    """Is the field at *path* one of the documented v3/v4 differences?"""
    last = path.rsplit(".", 1)[-1].split("[")[0]
    if ".attachments[" in path and last in ATTACHMENT_LINKS:
        return True
    return last in DOCUMENTED


def compare(
    reader: Reader, beamtimes: List[Beamtime]
) -> Tuple[Dict[str, List[Tuple[str, Any, Any]]], Dict[str, int]]:
    """Per reading API: the differing fields (path, v3-made, v4-made); and the counts."""
    diffs: Dict[str, List[Tuple[str, Any, Any]]] = {}
    counts: Dict[str, int] = {}
    for read_api in ("v3", "v4"):
        found: List[Tuple[str, Any, Any]] = []
        compared = 0
        for bt in beamtimes:
            sides = []
            for side in bt.sides:
                pids = [p for n in bt.names for p in versions(reader, f"{side.prefix}{bt.bid}/{n}")]
                held = reader.holdings(pids, read_api)
                sides.append(
                    {
                        k.replace(side.prefix, "PFX/"): neutral(v, side.prefix)
                        for k, v in held.items()
                    }
                )
            for path, left, right in field_rows(sides[0], sides[1]):
                compared += 1
                if left != right:
                    found.append((path, left, right))
        diffs[read_api] = found
        counts[read_api] = compared
    return diffs, counts


def show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return (text if len(text) <= 80 else text[:77] + "…").replace("|", "\\|")


def report(
    diffs: Dict[str, List[Tuple[str, Any, Any]]],
    counts: Dict[str, int],
    beamtimes: List[Beamtime],
    checks: List[str],
    header: str,
) -> Tuple[List[str], bool]:
    lines = [header, ""]
    ok = True
    for bt in beamtimes:
        for side in bt.sides:
            lines.append(f"- {side.api} `{side.prefix}{bt.bid}`: runs {'; '.join(side.log)}")
    lines += [f"- {line}" for line in checks]
    for read_api in ("v3", "v4"):
        rows = diffs[read_api]
        bad = [row for row in rows if not documented(row[0])]
        ok = ok and not bad
        lines += [
            "",
            f"Read back through {read_api}: {counts[read_api]} fields compared, "
            f"{len(rows)} differ, {len(bad)} beyond the documented renames.",
            "",
            "| field (pid prefix neutral) | made through v3 | made through v4 | documented |",
            "|---|---|---|---|",
        ]
        for path, left, right in rows:
            lines.append(
                f"| `{path}` | {show(left)} | {show(right)} | "
                f"{'yes' if documented(path) else '**NO**'} |"
            )
    return lines, ok


ARGS = argparse.Namespace(username="ingestor", password="ingestorpw")


def main(argv: Optional[Sequence[str]] = None) -> int:
    global ARGS
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000/api/v3")
    parser.add_argument("--username", default="ingestor")
    parser.add_argument("--password", default="ingestorpw")
    parser.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    parser.add_argument("--markdown", metavar="FILE")
    parser.add_argument("--keep", action="store_true")
    ARGS = parser.parse_args(argv)
    tool = str(Path(ARGS.bin_dir) / "scicat_dataset_ingest")
    work = Path(tempfile.mkdtemp(prefix="v3v4-"))
    stamp = int(time.time()) % 10**7
    try:
        beamtimes = story(work, ARGS.url, stamp, tool)
        checks = []
        for side in beamtimes[0].sides:
            rc, out = side.run(tool, "--check")
            left = next((ln for ln in out.splitlines() if ln.startswith("Left behind")), "?")
            checks.append(f"--check through {side.api}: exit {rc}; {left.strip()}")
        reader = Reader(ARGS.url, ARGS.username, ARGS.password)
        diffs, counts = compare(reader, beamtimes)
    finally:
        if ARGS.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    commit = "unknown"
    kit = Path(os.environ.get("REAL_SCICAT_DIR", str(Path.home() / "real-scicat")))
    try:
        commit = (kit / "backend.commit").read_text().strip()
    except OSError:
        pass
    header = (
        f"### One beamtime through API v3 and API v4 (backend commit {commit}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    lines, ok = report(diffs, counts, beamtimes, checks, header)
    text = "\n".join(lines) + "\n"
    print(text)
    if ARGS.markdown:
        Path(ARGS.markdown).write_text(text, encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
