#!/usr/bin/env python3
"""Send the same requests to a real SciCat backend and to our test server; show where they differ.

Run by hand, never in CI (the real backend comes from ``shared/tools/real-scicat``).
Each probe is one request (or a short sequence) the ingestor relies on; the
table gives, per server, the status and the fact that matters (a field
returned or not, an order, what was deleted).  It feeds
``docs/scicat-compatibility.md``: our test server must answer as the real
backend does wherever the ingestor depends on it.

  .venv/bin/python tools/real_scicat/compare.py [--url http://127.0.0.1:3000/api/v3]
      [--username ingestor --password ingestorpw] [--markdown FILE]

With ``--v3-v4`` it compares instead what the real backend STORES for one
beamtime ingested by our ``scicat_dataset_ingest`` through API v3 and
through API v4 (``v3v4.py``; the other options are passed on):

  .venv/bin/python tools/real_scicat/compare.py --v3-v4 [--markdown FILE]

The test server is the one of the ``scingestor`` the running python imports
(run it with another checkout's ``.venv/bin/python`` from outside this
checkout to compare that checkout's test server).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import requests

REPO = Path(__file__).resolve().parent.parent.parent
try:  # the test server of the python running this (another checkout's venv) ...
    import scingestor  # noqa: F401
except ImportError:  # ... or of this checkout
    sys.path.insert(0, str(REPO))

Probe = Tuple[str, Callable[["Api"], str]]


class Api:
    """Plain requests to one server (v3 base URL), logged in or not."""

    def __init__(self, url: str, username: str, password: str, tag: str) -> None:
        self.url = url.rstrip("/")
        self.v4 = self.url[: -len("/v3")] + "/v4" if self.url.endswith("/v3") else self.url
        self.username = username
        self.password = password
        self.tag = tag
        self.session = requests.Session()
        self.token: Optional[str] = None

    def call(
        self, method: str, path: str, body: Any = None, auth: bool = True, v4: bool = False
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        base = self.v4 if v4 else self.url
        return self.session.request(
            method, f"{base}/{path}", json=body, headers=headers, timeout=30
        )

    def login(self) -> requests.Response:
        answer = self.call(
            "POST", "auth/login", {"username": self.username, "password": self.password}, auth=False
        )
        body = answer.json()
        self.token = body.get("access_token") or body.get("id")
        return answer


def _json(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _pid(api: Api, name: str) -> str:
    return f"{api.tag}/{name}"


def raw_body(pid: str) -> Dict[str, Any]:
    return {
        "pid": pid,
        "type": "raw",
        "owner": "compare",
        "ownerGroup": "cmp-dmgt",
        "accessGroups": ["cmp-clbt"],
        "contactEmail": "cmp@example.com",
        "sourceFolder": "/tmp/cmp",
        "creationTime": "2026-11-30T00:00:00.000Z",
        "creationLocation": "/DESY/PETRA III/P00",
        "principalInvestigator": "pi@example.com",
        "datasetName": "compare",
        "proposalId": "cmp.1",
        "keywords": ["scan"],
        "scientificMetadata": {"a": {"value": 1, "unit": ""}},
        "instrumentId": "p00",
        "isPublished": False,
    }


def derived_body(pid: str, inputs: List[str]) -> Dict[str, Any]:
    return {
        "pid": pid,
        "type": "derived",
        "owner": "compare",
        "ownerGroup": "cmp-dmgt",
        "accessGroups": ["cmp-clbt"],
        "contactEmail": "cmp@example.com",
        "sourceFolder": "/tmp/cmp",
        "creationTime": "2026-11-30T00:00:00.000Z",
        "investigator": "pi@example.com",
        "inputDatasets": inputs,
        "usedSoftware": ["scingestor"],
        "datasetName": "meas",
        "keywords": ["measurement"],
        "scientificMetadata": {},
    }


def block_body(pid: str, name: str) -> Dict[str, Any]:
    return {
        "datasetId": pid,
        "size": 3,
        "ownerGroup": "cmp-dmgt",
        "accessGroups": ["cmp-clbt"],
        "dataFileList": [{"path": name, "size": 3, "time": "2026-11-30T00:00:00.000Z"}],
    }


def attachment_body(pid: str, caption: str) -> Dict[str, Any]:
    return {
        "datasetId": pid,
        "caption": caption,
        "ownerGroup": "cmp-dmgt",
        "accessGroups": ["cmp-clbt"],
        "thumbnail": "data:image/png;base64,iVBORw0KGgo=",
    }


# -- the probes --------------------------------------------------------------


def whoami_anonymous(api: Api) -> str:
    answer = api.call("GET", "auth/whoami", auth=False)
    return f"{answer.status_code}, body {len(answer.content)} bytes"


def users_login(api: Api) -> str:
    answer = api.call(
        "POST", "Users/login", {"username": api.username, "password": api.password}, auth=False
    )
    return f"{answer.status_code}, body {len(answer.content)} bytes"


def auth_login(api: Api) -> str:
    answer = api.login()
    keys = sorted((_json(answer) or {}).keys())
    return f"{answer.status_code}, keys {', '.join(keys)}"


def whoami(api: Api) -> str:
    answer = api.call("GET", "auth/whoami")
    body = _json(answer) or {}
    return f"{answer.status_code}, username {body.get('username')!r}"


def post_raw(api: Api) -> str:
    sent = raw_body(_pid(api, "raw"))
    answer = api.call("POST", "Datasets", sent)
    body = _json(answer) or {}
    added = sorted(set(body) - set(sent))
    dropped = sorted(set(sent) - set(body))
    return (
        f"{answer.status_code}; pid {body.get('pid')!r}; fields added: "
        f"{', '.join(added)}; dropped: {', '.join(dropped) or '-'}"
    )


def post_raw_again(api: Api) -> str:
    answer = api.call("POST", "Datasets", raw_body(_pid(api, "raw")))
    return f"{answer.status_code} {str((_json(answer) or {}).get('message'))[:60]!r}"


def get_missing(api: Api) -> str:
    answer = api.call("GET", f"Datasets/{quote(_pid(api, 'missing'), safe='')}")
    return f"{answer.status_code}, body {answer.text[:70]!r}"


def derived(api: Api) -> str:
    pid = _pid(api, "meas")
    sent = derived_body(pid, [_pid(api, "raw")])
    answer = api.call("POST", "Datasets", sent)
    got = _json(api.call("GET", f"Datasets/{quote(pid, safe='')}")) or {}
    return (
        f"POST {answer.status_code}; GET returns investigator: "
        f"{'yes' if 'investigator' in got else 'NO'}, principalInvestigator: "
        f"{got.get('principalInvestigator')!r}; added: "
        f"{', '.join(sorted(set(got) - set(sent)))}"
    )


def patch(api: Api) -> str:
    pid = quote(_pid(api, "raw"), safe="")
    answer = api.call(
        "PATCH", f"Datasets/{pid}", {"scientificMetadata": {"a": {"value": 2, "unit": ""}}}
    )
    got = _json(api.call("GET", f"Datasets/{pid}")) or {}
    return f"{answer.status_code}; scientificMetadata now {got.get('scientificMetadata')}"


def patch_pid(api: Api) -> str:
    pid = quote(_pid(api, "raw"), safe="")
    answer = api.call("PATCH", f"Datasets/{pid}", {"pid": _pid(api, "raw"), "type": "raw"})
    return f"{answer.status_code} {str((_json(answer) or {}).get('message'))[:70]!r}"


def blocks(api: Api) -> str:
    pid = _pid(api, "raw")
    first = api.call("POST", "OrigDatablocks", block_body(pid, "a.nxs"))
    empty = api.call("POST", "OrigDatablocks", dict(block_body(pid, "x"), dataFileList=[]))
    listed = _json(api.call("GET", f"Datasets/{quote(pid, safe='')}/OrigDatablocks")) or []
    block_id = (_json(first) or {}).get("_id") or (_json(first) or {}).get("id")
    gone = api.call("DELETE", f"OrigDatablocks/{quote(str(block_id), safe='')}")
    again = api.call("DELETE", f"OrigDatablocks/{quote(str(block_id), safe='')}")
    return (
        f"POST {first.status_code} (id key {'_id' if '_id' in (_json(first) or {}) else 'id'}"
        f"); empty dataFileList {empty.status_code}; listed {len(listed)}; DELETE "
        f"{gone.status_code}, DELETE again {again.status_code}"
    )


def missing_blocks(api: Api) -> str:
    answer = api.call("GET", f"Datasets/{quote(_pid(api, 'missing'), safe='')}/OrigDatablocks")
    return f"{answer.status_code}, body {answer.text[:40]!r}"


def attachments_v3(api: Api) -> str:
    pid = _pid(api, "raw")
    ids = {}
    for caption in ("A", "B"):
        answer = api.call(
            "POST", f"Datasets/{quote(pid, safe='')}/Attachments", attachment_body(pid, caption)
        )
        body = _json(answer) or {}
        ids[caption] = body.get("id") or body.get("_id")
        time.sleep(0.05)
    listed = _json(api.call("GET", f"Datasets/{quote(pid, safe='')}/Attachments")) or []
    order = [att.get("caption") for att in listed]
    gone = api.call("DELETE", f"Datasets/{quote(pid, safe='')}/Attachments/{ids['B']}")
    left = [
        att.get("caption")
        for att in _json(api.call("GET", f"Datasets/{quote(pid, safe='')}/Attachments")) or []
    ]
    return f"listed in order {order}; DELETE B {gone.status_code}; left {left}"


def attachments_v4(api: Api) -> str:
    pid = _pid(api, "raw")
    body = attachment_body(pid, "V4")
    body.pop("datasetId")
    body["relationships"] = [{"targetId": pid, "targetType": "dataset"}]
    body["isPublished"] = False
    made = api.call("POST", "attachments", body, v4=True)
    made_body = _json(made) or {}
    aid = made_body.get("aid") or made_body.get("id") or made_body.get("_id")
    gone = api.call("DELETE", f"attachments/{aid}", v4=True)
    again = api.call("DELETE", f"attachments/{aid}", v4=True)
    return (
        f"POST v4 {made.status_code} (id key "
        f"{'aid' if 'aid' in made_body else 'id' if 'id' in made_body else '?'}); "
        f"DELETE v4 {gone.status_code}, again {again.status_code}"
    )


def samples(api: Api) -> str:
    body = {
        "sampleId": f"{api.tag}-sample",
        "owner": "compare",
        "ownerGroup": "cmp-dmgt",
        "accessGroups": [],
        "description": "compare",
    }
    first = api.call("POST", "Samples", body)
    second = api.call("POST", "Samples", body)
    return (
        f"POST {first.status_code}, same sampleId again {second.status_code} "
        f"body {second.text[:50]!r}"
    )


def proposal_missing(api: Api) -> str:
    answer = api.call("GET", "Proposals/cmp.missing")
    return f"{answer.status_code}, body {answer.text[:50]!r}"


def is_valid(api: Api) -> str:
    good = api.call("POST", "Datasets/isValid", raw_body(_pid(api, "valid")))
    bad = api.call("POST", "Datasets/isValid", {"type": "raw"})
    return (
        f"{good.status_code} {answer_text(good)}; incomplete: {bad.status_code} {answer_text(bad)}"
    )


def answer_text(answer: requests.Response) -> str:
    return repr(answer.text[:50])


def delete_dataset(api: Api) -> str:
    answer = api.call("DELETE", f"Datasets/{quote(_pid(api, 'meas'), safe='')}")
    return str(answer.status_code)


def unknown_field(api: Api) -> str:
    body = raw_body(_pid(api, "unknown"))
    body["notAField"] = 1
    answer = api.call("POST", "Datasets", body)
    return f"{answer.status_code} {str((_json(answer) or {}).get('message'))[:60]!r}"


PROBES: List[Probe] = [
    ("GET auth/whoami without a token", whoami_anonymous),
    ("POST Users/login", users_login),
    ("POST auth/login", auth_login),
    ("GET auth/whoami", whoami),
    ("POST Datasets (raw, with pid)", post_raw),
    ("POST Datasets, same pid again", post_raw_again),
    ("GET Datasets/{missing pid}", get_missing),
    ("derived dataset posted with investigator", derived),
    ("PATCH Datasets/{pid} scientificMetadata", patch),
    ("PATCH Datasets/{pid} with pid and type", patch_pid),
    ("origdatablocks: post, empty list, list, delete twice", blocks),
    ("GET Datasets/{missing pid}/OrigDatablocks", missing_blocks),
    ("v3 attachments [A, B]: order, DELETE B", attachments_v3),
    ("v4 attachments: post, DELETE twice", attachments_v4),
    ("POST Samples twice (same sampleId)", samples),
    ("GET Proposals/{missing}", proposal_missing),
    ("POST Datasets/isValid", is_valid),
    ("POST Datasets with an unknown field", unknown_field),
    ("DELETE Datasets/{pid}", delete_dataset),
]


def run(api: Api) -> List[str]:
    found = []
    for _name, probe in PROBES:
        try:
            found.append(probe(api))
        except Exception as error:  # a probe that breaks is a finding too
            found.append(f"probe failed: {error!r}"[:120])
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if "--v3-v4" in given:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import v3v4

        return v3v4.main([arg for arg in given if arg != "--v3-v4"])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000/api/v3")
    parser.add_argument("--username", default="ingestor")
    parser.add_argument("--password", default="ingestorpw")
    parser.add_argument("--markdown", metavar="FILE")
    args = parser.parse_args(argv)
    from scingestor.testing.scicat_server import SciCatServer

    tag = f"cmp{int(time.time()) % 10**7}"
    real = run(Api(args.url, args.username, args.password, tag))
    with SciCatServer() as server:
        ours = run(Api(server.url, "ingestor", "ingestor-password", tag))
    rows = ["| probe | real backend | our test server | same |", "|---|---|---|---|"]
    for (name, _), left, right in zip(PROBES, real, ours):
        same = "yes" if left == right else "**no**"
        print(f"{name}\n  real: {left}\n  ours: {right}\n  same: {same}")
        cells = [text.replace("|", "\\|") for text in (name, left, right)]
        rows.append(f"| {cells[0]} | {cells[1]} | {cells[2]} | {same} |")
    if args.markdown:
        Path(args.markdown).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
