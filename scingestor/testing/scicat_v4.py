"""API v4 of the test server: how one stored record looks through v3 and v4.

Backend 4.5.0 keeps one record per dataset and shows it two ways (seen on
the real backend, commit 4055c962, ``../shared/tools/real-scicat``):

* through v4 only the list names (``principalInvestigators``,
  ``proposalIds``, ``sampleIds``, ``instrumentIds``); a v4 body with the
  singular v3 names is refused (400 "property X should not exist");
* through v3 a dataset created by v4 shows BOTH the singular v3 names
  (the first list item) and the lists, with ``"version": "4"``.

The test server stores a dataset with both forms kept in step (whichever
API wrote it) and picks the view per request.  An attachment is stored
with both its v3 link (``datasetId``, ``id``) and its v4 one
(``relationships``, ``aid``), so either API lists it.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Mapping

#: v3 singular name -> v4 list name
RENAMES = (
    ("principalInvestigator", "principalInvestigators"),
    ("proposalId", "proposalIds"),
    ("sampleId", "sampleIds"),
    ("instrumentId", "instrumentIds"),
)
#: fields the v4 read never shows (v3 only)
V3_ONLY_READ = ("investigator", "history")
#: what backend 4.5.0's v4 update DTO sets when a PATCH lacks it: a v4 PATCH
#: zeroes the dataset's counts (probed; v3 keeps them)
PATCH_DEFAULTS = {"size": 0, "packedSize": 0, "numberOfFiles": 0}
#: the relation a v4 attachment link gets when none is given
DEFAULT_RELATION = "is attached to"


def sync_forms(record: Dict[str, Any], changed: Iterable[str]) -> None:
    """Bring the other form of every renamed field in *changed* in step (in place)."""
    keys = set(changed)
    for old, new in RENAMES:
        if new in keys:
            values = record.get(new)
            if isinstance(values, list) and values:
                record[old] = values[0]
            else:
                record.pop(old, None)
        elif old in keys and record.get(old) is not None and new in record:
            record[new] = [record[old]]


def dataset_v4(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored dataset as v4 shows it: the lists, never the singular names."""
    out = copy.deepcopy(dict(record))
    for old, new in RENAMES:
        single = out.pop(old, None)
        values: List[Any] = list(out.get(new) or [])
        if single is not None and single not in values:
            values.append(single)
        out[new] = values
    for key in V3_ONLY_READ:
        out.pop(key, None)
    out.setdefault("inputDatasets", [])
    out.setdefault("usedSoftware", [])
    return out


def attachment_stored(record: Dict[str, Any]) -> Dict[str, Any]:
    """A new v4 attachment with its v3 link added (``datasetId``, ``id``)."""
    links = [link for link in record.get("relationships") or [] if isinstance(link, dict)]
    for link in links:
        link.setdefault("relationType", DEFAULT_RELATION)
    record["relationships"] = links
    record["id"] = record["aid"]
    target = next((ln["targetId"] for ln in links if ln.get("targetType") == "dataset"), None)
    if target is not None:
        record["datasetId"] = target
    return record


def attachment_v3(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored attachment as v3 shows it: ``datasetId`` and ``id``, no v4 link."""
    out = copy.deepcopy(dict(record))
    out.pop("relationships", None)
    out.pop("aid", None)
    return out


def attachment_v4(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored attachment as v4 shows it (``aid``, ``relationships``, no ``datasetId``)."""
    out = copy.deepcopy(dict(record))
    key = out.get("aid") or out.get("id")
    out["aid"] = key
    out["id"] = key
    pid = out.pop("datasetId", None)
    if not out.get("relationships") and pid is not None:
        out["relationships"] = [
            {"targetId": pid, "targetType": "dataset", "relationType": DEFAULT_RELATION}
        ]
    out.setdefault("relationships", [])
    return out


#: what a v4 listing answers without ``limits`` (backend 4.5.0: 10, newest first)
DEFAULT_PAGE = 10


def default_page(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records a v4 listing without ``limits`` answers: the newest 10."""
    ordered = sorted(
        enumerate(records), key=lambda item: (str(item[1].get("createdAt", "")), item[0])
    )
    return [record for _, record in reversed(ordered)][:DEFAULT_PAGE]
