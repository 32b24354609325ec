"""SciCat API v4 beside v3: which base a route goes to, and the v3<->v4 bodies.

The ingestor builds its records in the v3 shape (what ``nxsfileinfo``
writes and what operators know).  A ``scicat_url`` ending in ``/api/v4``
makes the client speak v4 for the three controllers backend 4.5.0 has in
v4 - datasets, origdatablocks, attachments - while everything else
(login, ``auth/whoami``, proposals, samples, instruments) stays on the v3
base beside it: ``POST /api/v4/auth/login`` answers 404 there.

The translation lives here, in one place, so the pipeline never knows
which API it talks to:

* a dataset goes out with ``principalInvestigator``/``investigator``,
  ``proposalId``, ``sampleId``, ``instrumentId`` turned into the lists
  ``principalInvestigators``, ``proposalIds``, ``sampleIds``,
  ``instrumentIds`` (v4 refuses the v3 names with 400 "property X should
  not exist", and refuses ``version``); a dataset read through v4 gets the
  singular v3 names back (the first list item), so comparing it with what
  the ingestor would send works as with v3;
* an attachment goes out with ``relationships: [{targetId, targetType:
  "dataset"}]`` instead of ``datasetId``, and with the ``isPublished`` and
  ``caption`` v4 requires; it comes back with ``datasetId`` and ``id``;
* listings are filters: ``origdatablocks?filter={"where":{"datasetId":…}}``
  and ``attachments?filter={"where":{"relationships.targetId":…}}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from ..redact import protect_logger

logger = protect_logger(logging.getLogger(__name__))

#: the controllers backend 4.5.0 serves under ``/api/v4`` (first path segment)
V4_ROOTS = frozenset({"datasets", "origdatablocks", "attachments"})

#: v3 name -> v4 list name (a derived dataset's ``investigator`` also goes
#: to ``principalInvestigators``)
RENAMES: Tuple[Tuple[str, str], ...] = (
    ("principalInvestigator", "principalInvestigators"),
    ("investigator", "principalInvestigators"),
    ("proposalId", "proposalIds"),
    ("sampleId", "sampleIds"),
    ("instrumentId", "instrumentIds"),
)

#: v3 dataset fields the v4 DTO refuses without a v4 counterpart
V3_ONLY = ("version",)

#: the v3 default route names and their v4 spelling
_V4_NAMES = {"datasets": "datasets", "origdatablocks": "origdatablocks"}


def api_version(url: str) -> Optional[str]:
    """``"v3"``/``"v4"`` for a URL ending in ``/api/v3``/``/api/v4``, else ``None``."""
    tail = url.rstrip("/").rpartition("/")[2].lower()
    return tail if tail in ("v3", "v4") else None


def sibling(url: str, version: str) -> Optional[str]:
    """The base of API *version* next to a ``…/api/vN`` URL (``None`` for others)."""
    head, sep, tail = url.rstrip("/").rpartition("/")
    return f"{head}/{version}" if sep and tail.lower() in ("v3", "v4") else None


def route_base(url: str, path: str) -> str:
    """The base *path* goes to: under a v4 URL only the v4 controllers stay on v4."""
    if api_version(url) != "v4":
        return url
    first = path.lstrip("/").split("/", 1)[0].split("?", 1)[0].lower()
    return url if first in V4_ROOTS else (sibling(url, "v3") or url)


def encode_segment(value: Any) -> str:
    """One URL path segment (the transport's rule; kept here to avoid an import circle)."""
    return quote(str(value), safe="")


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def dataset_to_v4(body: Any) -> Any:
    """A v3 dataset body as v4 takes it (anything not a dict passes unchanged)."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k not in V3_ONLY}
    for old, new in RENAMES:
        if old not in out:
            continue
        values = _as_list(out.pop(old))
        merged = _as_list(out.get(new))
        merged += [v for v in values if v not in merged]
        out[new] = merged
    return out


def dataset_from_v4(record: Any) -> Any:
    """A dataset read through v4 with the singular v3 names added (first item).

    The lists stay; a v3 name already there is kept.  A derived dataset's
    ``investigator`` is not added: backend 4.5.0 stores it as
    ``principalInvestigator`` through v3 too (:mod:`scingestor.strategy`
    knows that rename).
    """
    if not isinstance(record, dict):
        return record
    out = dict(record)
    for old, new in RENAMES:
        if old == "investigator" or old in out:
            continue
        values = out.get(new)
        if isinstance(values, list) and values:
            out[old] = values[0]
    return out


#: counts backend 4.5.0's v4 update DTO defaults to 0: a v4 PATCH without them
#: zeroes the dataset's size and file count (v3 keeps them)
COUNTS = ("size", "packedSize", "numberOfFiles")


def with_counts(body: Any, existing: Any) -> Any:
    """A v4 PATCH *body* carrying the *existing* dataset's counts it lacks."""
    if not isinstance(body, dict) or not isinstance(existing, dict):
        return body
    kept = {k: existing[k] for k in COUNTS if k not in body and existing.get(k) is not None}
    return {**body, **kept} if kept else body


def attachment_to_v4(pid: str, body: Any) -> Any:
    """A v3 attachment of dataset *pid* as v4 takes it."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k not in ("datasetId", "id", "proposalId", "sampleId")}
    out.setdefault("caption", "")
    out.setdefault("isPublished", False)
    out["relationships"] = [{"targetId": pid, "targetType": "dataset"}]
    return out


def attachment_from_v4(record: Any) -> Any:
    """A v4 attachment with the v3 ``datasetId`` and ``id`` added."""
    if not isinstance(record, dict):
        return record
    out = dict(record)
    key = out.get("aid") or out.get("id") or out.get("_id")
    if key is not None:
        out.setdefault("id", key)
    for link in _as_list(out.get("relationships")):
        if isinstance(link, dict) and link.get("targetType", "dataset") == "dataset":
            out.setdefault("datasetId", link.get("targetId"))
            break
    return out


#: records one v4 listing asks for: backend 4.5.0 answers only 10 without
#: ``limits``, and a dataset whose blocks the client cannot all see would get
#: the missing ones posted again (a measurement holds one block per scan)
LIST_LIMIT = 10000


def filtered(route: str, where: Dict[str, Any]) -> str:
    """A listing path with its ``filter`` query (the look-ups read it as a path).

    The limit is given explicitly, oldest first, so that every record of
    the dataset is in the one answer.
    """
    query = {
        "where": where,
        "limits": {"limit": LIST_LIMIT, "skip": 0, "sort": {"createdAt": "asc"}},
    }
    return f"{route}?filter={quote(json.dumps(query), safe='')}"


class Routes:
    """The routes and bodies of one API version, from the client's settings.

    For v3 every method is the identity or the configured route; v4 maps
    the default route names to the v4 ones (a site's own ``scicat_*_path``
    is kept as configured).
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.v4 = api_version(settings.url) == "v4"

    def _name(self, configured: str) -> str:
        return _V4_NAMES.get(configured.lower(), configured) if self.v4 else configured

    @property
    def datasets(self) -> str:
        """The datasets route."""
        return self._name(self.settings.datasets_path)

    @property
    def blocks(self) -> str:
        """The standalone origdatablocks route."""
        return self._name(self.settings.datablocks_path)

    def dataset(self, pid: str, *rest: str) -> str:
        """The route of dataset *pid* (and of what hangs below it)."""
        return "/".join([self.datasets, encode_segment(pid), *rest])

    def blocks_of(self, pid: str) -> str:
        """Where dataset *pid*'s origdatablocks are listed."""
        if self.v4:
            return filtered(self.blocks, {"datasetId": pid})
        return self.dataset(pid, "OrigDatablocks")

    def attachments(self, pid: str) -> str:
        """Where dataset *pid*'s attachments are posted (v4: the attachments route)."""
        if self.v4:
            return "attachments"
        template = self.settings.attachments_path
        if "{pid}" in template:
            return template.replace("{pid}", encode_segment(pid))
        return f"{template}/{encode_segment(pid)}"

    def attachments_of(self, pid: str) -> str:
        """Where dataset *pid*'s attachments are listed."""
        if self.v4:
            return filtered("attachments", {"relationships.targetId": pid})
        return self.attachments(pid)

    def dataset_out(self, body: Any) -> Any:
        return dataset_to_v4(body) if self.v4 else body

    def dataset_in(self, record: Any) -> Any:
        return dataset_from_v4(record) if self.v4 else record

    def attachment_out(self, pid: str, body: Any) -> Any:
        return attachment_to_v4(pid, body) if self.v4 else body

    def attachment_in(self, record: Any) -> Any:
        return attachment_from_v4(record) if self.v4 else record

    def attachments_in(self, records: Any) -> Any:
        if not self.v4 or not isinstance(records, list):
            return records
        return [attachment_from_v4(record) for record in records]


def attachments_by_id(client: Any, attachment_id: Optional[str] = None) -> bool:
    """Does *client*'s backend delete attachments by id?  Detected once.

    Backend 4.5.0's v3 ``DELETE Datasets/{pid}/Attachments/{aid}`` deletes
    the dataset's oldest attachment whatever ``aid`` is; the v4 route
    ``attachments/{aid}`` deletes by id.  Under a v4 URL it is there; under
    a v3 one, detection reads an existing attachment (*attachment_id*) by
    the v4 route: 200 means the route is there.
    """
    known = client.rights.v4_attachments
    if known is not None:
        return bool(known)
    base = client.v4_url()
    if client.transport.routes.v4:
        found: Optional[bool] = True
    elif base is None:
        found = False
    elif attachment_id is None:
        return False  # nothing to ask with: not remembered
    else:
        found = client._exists(f"{base}/attachments/{encode_segment(attachment_id)}")
        if found is None:
            return False  # no clear answer: ask again next time
    logger.info("SciCat attachments are deleted by the %s route", "v4 (by id)" if found else "v3")
    client.rights.v4_attachments = bool(found)
    return bool(found)
