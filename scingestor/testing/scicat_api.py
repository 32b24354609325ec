"""The SciCat REST API (backend v4.x, API v3) as the test server answers it.

This module is the application: routing (case-insensitive, one segment per
pid), authentication (Bearer JWT, anonymous fallback), access rights and
the handlers for auth, datasets, origdatablocks, attachments, proposals,
samples and instruments.  It knows nothing about sockets or fault
injection; :mod:`scingestor.testing.scicat_server` feeds it parsed requests
and sends what it returns.  Status codes and body shapes follow
``shared/spec/scicat-api.md``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import email.utils
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote

from . import scicat_v4 as v4view
from . import scicat_validation as val
from .scicat_store import Account, Store, Token

logger = logging.getLogger(__name__)

#: PID prefix of generated dataset (``<prefix>/<uuid>``) and instrument pids
DEFAULT_PID_PREFIX = "20.500.12269"
#: body of unexpected errors and oversize bodies (a bare JSON string)
INTERNAL_ERROR = "Internal server error"
DEFAULT_CLASSIFICATION = "IN=medium,AV=low,CO=low"


class _Empty:
    """Marker of an answer without body (``Content-Length: 0``)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Any = _Empty()


@dataclass
class ApiRequest:
    """A parsed request: raw path (percent-encoding kept), query, body."""

    method: str
    path: str
    query: Dict[str, List[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON; None for an empty body


@dataclass
class ApiResponse:
    """Status and JSON body (``EMPTY`` for none)."""

    status: int
    body: Any = EMPTY


class HttpError(Exception):
    """Ends a handler with an error answer."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def error_body(status: int, message: Any, error: str) -> Dict[str, Any]:
    """The NestJS ``HttpException`` body."""
    return {"message": message, "error": error, "statusCode": status}


def forbidden(message: str = "Forbidden resource") -> HttpError:
    return HttpError(403, error_body(403, message, "Forbidden"))


def not_found(message: str) -> HttpError:
    return HttpError(404, error_body(404, message, "Not Found"))


def not_found_plain() -> HttpError:
    return HttpError(404, {"message": "Not Found", "statusCode": 404})


def conflict(message: str) -> HttpError:
    return HttpError(409, error_body(409, message, "Conflict"))


def unauthorized_plain() -> HttpError:
    return HttpError(401, {"message": "Unauthorized", "statusCode": 401})


def unauthenticated() -> HttpError:
    return HttpError(401, error_body(401, "Unauthenticated", "Unauthorized"))


def bad_request(messages: Sequence[str]) -> HttpError:
    return HttpError(400, val.standard_error_body(messages))


def internal_error() -> HttpError:
    return HttpError(500, INTERNAL_ERROR)


_UNKNOWN_VALUE: List[val.ValidationErrorItem] = [
    {
        "property": "",
        "constraints": {"unknownValue": "an unknown value was passed to the validate function"},
    }
]


@dataclass
class Context:
    """What a handler needs: the request, the caller, the API version, path params."""

    request: ApiRequest
    account: Optional[Account]
    token: Optional[Token]
    version: str
    params: Dict[str, str]

    @property
    def body(self) -> Any:
        """The JSON body; an empty body reads as ``{}`` like Express's parser."""
        return {} if self.request.body is None else self.request.body


Handler = Callable[["SciCatApp", Context], ApiResponse]


@dataclass
class Route:
    method: str
    segments: Tuple[str, ...]  # lower-case literals or "{name}"
    handler: Handler
    versions: Tuple[str, ...]

    def match(self, parts: Sequence[str]) -> Optional[Dict[str, str]]:
        """Path parameters (decoded) if ``parts`` fit this route."""
        if len(parts) != len(self.segments):
            return None
        params: Dict[str, str] = {}
        for pattern, part in zip(self.segments, parts):
            if pattern.startswith("{"):
                if part == "":
                    return None
                params[pattern[1:-1]] = unquote(part)
            elif pattern != part.lower():
                return None
        return params


def _json_number(value: float) -> Any:
    """``3600.0`` → ``3600`` so JSON shows what JavaScript would."""
    return int(value) if float(value).is_integer() else value


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_MISSING = object()


def _lookup(record: Mapping[str, Any], key: str) -> Any:
    """Value at a dotted path (Mongo style), ``_MISSING`` if absent.

    A list on the way is looked into item by item, as Mongo does
    (``relationships.targetId`` gives the list of every link's target).
    """
    current: Any = record
    for part in key.split("."):
        if isinstance(current, list):
            found = [item[part] for item in current if isinstance(item, dict) and part in item]
            if not found:
                return _MISSING
            current = found
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


def _compare(value: Any, op: str, arg: Any) -> bool:
    try:
        if op in ("gt", "$gt"):
            return bool(value > arg)
        if op in ("gte", "$gte"):
            return bool(value >= arg)
        if op in ("lt", "$lt"):
            return bool(value < arg)
        return bool(value <= arg)
    except TypeError:
        return False


def _equal(value: Any, cond: Any) -> bool:
    if value == cond:
        return True
    return isinstance(value, list) and not isinstance(cond, list) and cond in value


def _match_value(value: Any, cond: Any) -> bool:
    if (
        isinstance(cond, dict)
        and cond
        and all(isinstance(k, str) and k.lstrip("$") in _OPERATORS for k in cond)
    ):
        for op, arg in cond.items():
            name = op.lstrip("$")
            if name in ("inq", "in"):
                ok = any(_equal(value, a) for a in _as_list(arg))
            elif name == "nin":
                ok = not any(_equal(value, a) for a in _as_list(arg))
            elif name in ("neq", "ne"):
                ok = not _equal(value, arg)
            elif name == "eq":
                ok = _equal(value, arg)
            elif name == "exists":
                ok = (value is not _MISSING) == bool(arg)
            elif name in ("like", "regexp", "regex"):
                ok = isinstance(value, str) and re.search(str(arg), value) is not None
            else:
                ok = value is not _MISSING and _compare(value, name, arg)
            if not ok:
                return False
        return True
    return value is not _MISSING and _equal(value, cond)


_OPERATORS = {
    "inq",
    "in",
    "nin",
    "neq",
    "ne",
    "eq",
    "exists",
    "like",
    "regexp",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
}


def matches(record: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Loopback/Mongo-like ``where``: equality on (dotted) keys, a few operators."""
    for key, cond in where.items():
        if key in ("and", "$and"):
            if not all(matches(record, c) for c in _as_list(cond) if isinstance(c, dict)):
                return False
        elif key in ("or", "$or"):
            if not any(matches(record, c) for c in _as_list(cond) if isinstance(c, dict)):
                return False
        elif not _match_value(_lookup(record, key), cond):
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch (v4 PATCH)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _parse_http_date(value: str) -> Optional[_dt.datetime]:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None and val.is_iso8601(value):
        parsed = val.parse_datetime(value)
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed


class SciCatApp:
    """The API logic over a :class:`Store`; call :meth:`handle` per request.

    :meth:`handle` runs under the store lock, so handlers see and change
    consistent state.  Records are replaced, never changed in place, and
    answers are deep copies.
    """

    def __init__(
        self,
        store: Store,
        *,
        token_ttl: float = 3600.0,
        pid_prefix: str = DEFAULT_PID_PREFIX,
        v4: bool = True,
    ) -> None:
        self.store = store
        #: False: no ``/api/v4`` routes (a backend older than v4)
        self.v4 = v4
        self.token_ttl = float(token_ttl)
        self.pid_prefix = pid_prefix
        self.routes: List[Route] = []
        self._register_routes()

    # -- routing ----------------------------------------------------------
    def _route(
        self, method: str, path: str, handler: Handler, versions: Tuple[str, ...] = ("v3",)
    ) -> None:
        segments = tuple(s if s.startswith("{") else s.lower() for s in path.split("/"))
        self.routes.append(Route(method, segments, handler, versions))

    def _register_routes(self) -> None:
        both = ("v3", "v4")
        r = self._route
        r("POST", "auth/login", SciCatApp.login)
        r("POST", "auth/ldap", SciCatApp.login_ldap)
        r("POST", "auth/msad", SciCatApp.login_ldap)
        r("POST", "users/login", SciCatApp.users_login)
        r("GET", "auth/whoami", SciCatApp.whoami)
        r("POST", "auth/logout", SciCatApp.logout)
        r("GET", "users/{id}", SciCatApp.get_user)
        # literal routes before the {pid} ones, as NestJS declares them
        r("POST", "datasets/isValid", SciCatApp.dataset_is_valid, both)
        r("GET", "datasets/count", SciCatApp.count_datasets, both)
        r("GET", "datasets/findOne", SciCatApp.find_one_dataset, both)
        r("POST", "datasets", SciCatApp.create_dataset, both)
        r("GET", "datasets", SciCatApp.list_datasets, both)
        r("GET", "datasets/{pid}", SciCatApp.get_dataset, both)
        r("PATCH", "datasets/{pid}", SciCatApp.patch_dataset, both)
        r("DELETE", "datasets/{pid}", SciCatApp.delete_dataset, both)
        r("POST", "datasets/{pid}/origdatablocks", SciCatApp.create_nested_origdatablock)
        r("GET", "datasets/{pid}/origdatablocks", SciCatApp.list_dataset_origdatablocks)
        r("POST", "datasets/{pid}/attachments", SciCatApp.create_attachment)
        r("GET", "datasets/{pid}/attachments", SciCatApp.list_dataset_attachments)
        r("DELETE", "datasets/{pid}/attachments/{aid}", SciCatApp.delete_attachment)
        r("POST", "origdatablocks/isValid", SciCatApp.origdatablock_is_valid, both)
        r("POST", "origdatablocks", SciCatApp.create_origdatablock, both)
        r("GET", "origdatablocks", SciCatApp.list_origdatablocks, both)
        r("GET", "origdatablocks/{id}", SciCatApp.get_origdatablock, both)
        r("DELETE", "origdatablocks/{id}", SciCatApp.delete_origdatablock, both)
        r("POST", "attachments", SciCatApp.create_attachment_v4, ("v4",))
        r("GET", "attachments", SciCatApp.list_attachments_v4, ("v4",))
        r("GET", "attachments/{aid}", SciCatApp.get_attachment_v4, ("v4",))
        r("DELETE", "attachments/{aid}", SciCatApp.delete_attachment_v4, ("v4",))
        r("POST", "proposals", SciCatApp.create_proposal)
        r("GET", "proposals", SciCatApp.list_proposals)
        r("GET", "proposals/{id}", SciCatApp.get_proposal)
        r("POST", "samples", SciCatApp.create_sample)
        r("GET", "samples", SciCatApp.list_samples)
        r("GET", "samples/{id}", SciCatApp.get_sample)
        r("POST", "instruments", SciCatApp.create_instrument)
        r("GET", "instruments", SciCatApp.list_instruments)
        r("GET", "instruments/{pid}", SciCatApp.get_instrument)

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request (never raises)."""
        method = "GET" if request.method == "HEAD" else request.method
        parts = request.path.split("/")
        if len(parts) > 1 and parts[-1] == "":
            parts = parts[:-1]  # trailing slash ignored
        with self.store.lock:
            try:
                if (
                    len(parts) < 4
                    or parts[0] != ""
                    or parts[1].lower() != "api"
                    or parts[2].lower() not in ("v3", "v4")
                ):
                    raise self._no_route(request)
                version = parts[2].lower()
                if version == "v4" and not self.v4:
                    raise self._no_route(request)
                for route in self.routes:
                    if route.method != method or version not in route.versions:
                        continue
                    params = route.match(parts[3:])
                    if params is None:
                        continue
                    account, token = self._authenticate(request)
                    ctx = Context(request, account, token, version, params)
                    return route.handler(self, ctx)
                raise self._no_route(request)
            except HttpError as exc:
                return ApiResponse(exc.status, exc.body)
            except Exception:  # the backend answers 500 to any bug
                logger.exception("unexpected error in %s %s", request.method, request.path)
                return ApiResponse(500, INTERNAL_ERROR)

    @staticmethod
    def _no_route(request: ApiRequest) -> HttpError:
        return not_found(f"Cannot {request.method} {request.path}")

    # -- authentication and rights ----------------------------------------
    def _authenticate(self, request: ApiRequest) -> Tuple[Optional[Account], Optional[Token]]:
        """Bearer token → account; anything else runs anonymous.

        ``?access_token=`` is copied into the header only when there is none,
        so only ``Bearer%20<jwt>`` works there.
        """
        header = request.headers.get("authorization")
        if header is None:
            values = request.query.get("access_token")
            header = values[0] if values else None
        if not header:
            return None, None
        m = re.match(r"^(\S+)\s+(\S+)$", header.strip())
        if not m or m.group(1).lower() != "bearer":
            return None, None
        token = m.group(2)
        account = self.store.token_account(token)
        return (account, self.store.tokens.get(token)) if account else (None, None)

    @staticmethod
    def _require(ctx: Context) -> Account:
        if ctx.account is None:
            raise forbidden()
        return ctx.account

    @staticmethod
    def can_read(account: Optional[Account], record: Mapping[str, Any]) -> bool:
        """Published, privileged, or a member of the owner/access groups."""
        if record.get("isPublished") is True:
            return True
        if account is None:
            return False
        if account.privileged:
            return True
        groups = set(account.groups)
        if record.get("ownerGroup") in groups:
            return True
        if groups & {g for g in _as_list(record.get("accessGroups")) if isinstance(g, str)}:
            return True
        return account.email in _as_list(record.get("sharedWith"))

    @staticmethod
    def can_write(account: Optional[Account], record: Mapping[str, Any]) -> bool:
        """Privileged, or a member of the record's ``ownerGroup``."""
        return account is not None and (
            account.privileged or record.get("ownerGroup") in account.groups
        )

    def _check_dataset_create(self, account: Account, body: Mapping[str, Any]) -> None:
        if account.privileged:
            return
        own = body.get("ownerGroup") in account.groups
        pid_ok = body.get("pid") is None or account.role == "with_pid"
        if not (own and pid_ok):
            raise forbidden("Unauthorized to create this dataset")

    def _server_fields(self, account: Optional[Account], created: bool = True) -> Dict[str, Any]:
        now = val.now_iso()
        who = account.username if account else "anonymous"
        out = {"updatedBy": who, "updatedAt": now}
        if created:
            out = {"createdBy": who, "createdAt": now, **out}
        return out

    # -- auth ---------------------------------------------------------------
    def _check_login(self, ctx: Context) -> Account:
        body = ctx.body if isinstance(ctx.body, dict) else {}
        username, password = body.get("username"), body.get("password")
        account = self.store.accounts.get(username) if isinstance(username, str) else None
        if account is None or not isinstance(password, str) or password != account.password:
            raise unauthorized_plain()
        return account

    def _login_object(self, account: Account, strategy: str) -> Dict[str, Any]:
        token = self.store.issue_token(account.username, self.token_ttl, strategy)
        ttl = _json_number(self.token_ttl)
        return {
            "access_token": token,
            "id": token,
            "expires_in": ttl,
            "ttl": ttl,
            "created": val.now_iso(),
            "userId": account.user_id,
            "user": {
                "_id": account.user_id,
                "username": account.username,
                "email": account.email,
                "authStrategy": strategy,
                "id": account.user_id,
            },
        }

    def login(self, ctx: Context) -> ApiResponse:
        return ApiResponse(201, self._login_object(self._check_login(ctx), "local"))

    def login_ldap(self, ctx: Context) -> ApiResponse:
        return ApiResponse(201, self._login_object(self._check_login(ctx), "ldap"))

    def users_login(self, ctx: Context) -> ApiResponse:
        """Deprecated route: accepts the credentials but hands out no token."""
        self._check_login(ctx)
        return ApiResponse(201)

    def whoami(self, ctx: Context) -> ApiResponse:
        if ctx.account is None:
            return ApiResponse(200)  # the backend answers an anonymous caller with nothing
        return ApiResponse(200, self._user_object(ctx.account, ctx.token))

    @staticmethod
    def _user_object(account: Account, token: Optional[Token]) -> Dict[str, Any]:
        return {
            "_id": account.user_id,
            "username": account.username,
            "email": account.email,
            "currentGroups": list(account.groups),
            "authStrategy": token.strategy if token else "local",
        }

    def logout(self, ctx: Context) -> ApiResponse:
        # a JWT stays valid until it expires, as with the real backend
        if ctx.account is None:
            raise unauthorized_plain()
        return ApiResponse(200, {"logout": "successful"})

    def get_user(self, ctx: Context) -> ApiResponse:
        if ctx.account is None:
            raise unauthenticated()
        key = ctx.params["id"]
        found = next(
            (a for a in self.store.accounts.values() if key in (a.user_id, a.username)), None
        )
        if found is None:
            raise not_found_plain()
        if found.username != ctx.account.username and ctx.account.role != "admin":
            raise forbidden()
        return ApiResponse(
            200, {k: v for k, v in self._user_object(found, None).items() if k != "currentGroups"}
        )

    # -- filters --------------------------------------------------------------
    @staticmethod
    def _json_param(ctx: Context, name: str) -> Dict[str, Any]:
        raw = ctx.request.query.get(name)
        if not raw or raw[0] == "":
            return {}
        try:
            value = json.loads(raw[0])
        except ValueError as exc:
            raise bad_request([f"{name}: {exc}"]) from None
        if not isinstance(value, dict):
            raise bad_request([f"{name} must be a JSON object"])
        return value

    def _filtered(self, ctx: Context, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Apply ``filter`` (``where``, ``limits``/``limit``/``skip``/``order``, ``fields``)."""
        filt = self._json_param(ctx, "filter") or {}
        where = filt.get("where") or self._json_param(ctx, "where")
        if not isinstance(where, dict):
            raise bad_request(["where must be an object"])
        out = [r for r in records if matches(r, where)]
        given = filt.get("limits")
        limits: Dict[str, Any] = given if isinstance(given, dict) else {}
        order = limits.get("order", filt.get("order"))
        for spec in reversed([o for o in _as_list(order) if isinstance(o, str)]):
            key, _, direction = spec.replace(" ", ":").partition(":")
            out.sort(
                key=lambda r: (_lookup(r, key) is _MISSING, str(_lookup(r, key))),
                reverse=direction.lower() == "desc",
            )
        skip: Any = limits.get("skip", filt.get("skip", 0))
        limit: Any = limits.get("limit", filt.get("limit"))
        if val.is_int(skip) and skip > 0:
            out = out[int(skip) :]
        if val.is_int(limit) and limit > 0:
            out = out[: int(limit)]
        fields = filt.get("fields")
        if isinstance(fields, list) and fields:
            out = [{k: r[k] for k in fields if isinstance(k, str) and k in r} for r in out]
        elif isinstance(fields, dict) and fields:
            wanted = [k for k, v in fields.items() if v]
            out = (
                [{k: r[k] for k in wanted if k in r} for r in out]
                if wanted
                else [{k: v for k, v in r.items() if k not in fields} for r in out]
            )
        return out

    def _readable(self, ctx: Context, collection: str) -> List[Dict[str, Any]]:
        return [r for r in self.store.values(collection) if self.can_read(ctx.account, r)]

    # -- datasets -------------------------------------------------------------
    @staticmethod
    def _dataset_400(ctx: Context, errors: List[val.ValidationErrorItem]) -> HttpError:
        if ctx.version == "v3":
            return HttpError(400, val.v3_dataset_error_body(errors))
        return bad_request(val.flatten_messages(errors))

    @staticmethod
    def _view(ctx: Context, record: Mapping[str, Any]) -> Dict[str, Any]:
        """A dataset as the request's API version shows it (a copy)."""
        return v4view.dataset_v4(record) if ctx.version == "v4" else copy.deepcopy(dict(record))

    def _dataset(self, pid: str) -> Dict[str, Any]:
        record = self.store.get("datasets", pid)
        if record is None:
            raise not_found(f"dataset: {pid} not found")
        return record

    def build_dataset(
        self, body: Mapping[str, Any], schema: val.Schema, account: Optional[Account], version: str
    ) -> Dict[str, Any]:
        """Stored form of a new dataset: normalised body plus server fields."""
        record = val.normalize(body, schema)
        if version == "v3" and record.get("datasetName") is None:
            name = val.dataset_name_from_source_folder(record.get("sourceFolder"))
            if name is not None:
                record["datasetName"] = name
        pid = record.pop("pid", None)
        if not pid:
            pid = f"{self.pid_prefix}/{uuid.uuid4()}"
        defaults = {
            "classification": DEFAULT_CLASSIFICATION,
            "size": 0,
            "numberOfFiles": 0,
            "keywords": [],
            "isPublished": False,
        }
        for key, value in defaults.items():
            record.setdefault(key, value)
        record["version"] = "3" if version == "v3" else "4"
        record["history"] = []
        self._as_stored(record)
        if version == "v4":  # stored with the v3 names too: v3 reads show both
            v4view.sync_forms(record, [new for _, new in v4view.RENAMES])
        return {"pid": pid, **record, **self._server_fields(account)}

    @staticmethod
    def _as_stored(record: Dict[str, Any]) -> None:
        """What the backend keeps of a v3 body: a derived ``investigator`` is
        stored (and returned) as ``principalInvestigator``, never as itself."""
        if record.get("type") == "derived" and "investigator" in record:
            investigator = record.pop("investigator")
            record["principalInvestigator"] = investigator
            record["principalInvestigators"] = [investigator]

    def create_dataset(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        body = ctx.body
        if not isinstance(body, dict):
            raise self._dataset_400(ctx, _UNKNOWN_VALUE)
        _, schema = val.dataset_schema(body.get("type"), api=ctx.version)
        errors = val.validate(body, schema)
        if errors:
            raise self._dataset_400(ctx, errors)
        self._check_dataset_create(account, body)
        record = self.build_dataset(body, schema, account, ctx.version)
        if self.store.get("datasets", record["pid"]) is not None:
            raise conflict(f"A dataset with pid {record['pid']} already exists!")
        self.store.put("datasets", record["pid"], record)
        return ApiResponse(201, self._view(ctx, record))

    def dataset_is_valid(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        body = ctx.body
        if not isinstance(body, dict):
            return ApiResponse(
                200, {"valid": False, "error": val.flatten_messages(_UNKNOWN_VALUE)[0]}
            )
        self._check_dataset_create(account, body)
        _, schema = val.dataset_schema(body.get("type"), api=ctx.version)
        errors = val.validate(body, schema, whitelist=False)
        if ctx.version == "v4":  # v4 answers the verdict only
            return ApiResponse(200, {"valid": not errors})
        if errors:
            return ApiResponse(
                200, {"valid": False, "error": "; ".join(val.flatten_messages(errors))}
            )
        return ApiResponse(200, {"valid": True})

    def get_dataset(self, ctx: Context) -> ApiResponse:
        record = self._dataset(ctx.params["pid"])
        if not self.can_read(ctx.account, record):
            raise forbidden("Unauthorized access")
        return ApiResponse(200, self._view(ctx, record))

    def list_datasets(self, ctx: Context) -> ApiResponse:
        found = self._filtered(ctx, self._readable(ctx, "datasets"))
        return ApiResponse(200, [self._view(ctx, record) for record in found])

    def count_datasets(self, ctx: Context) -> ApiResponse:
        filt = self._json_param(ctx, "filter")
        where = filt.get("where") or self._json_param(ctx, "where")
        if not isinstance(where, dict):
            raise bad_request(["where must be an object"])
        records = self._readable(ctx, "datasets")
        return ApiResponse(200, {"count": sum(1 for r in records if matches(r, where))})

    def find_one_dataset(self, ctx: Context) -> ApiResponse:
        found = self._filtered(ctx, self._readable(ctx, "datasets"))
        return ApiResponse(200, self._view(ctx, found[0]) if found else EMPTY)

    def patch_dataset(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        pid = ctx.params["pid"]
        record = self.store.get("datasets", pid)
        if record is None:
            raise not_found_plain()
        body = ctx.body
        if not isinstance(body, dict):
            raise self._dataset_400(ctx, _UNKNOWN_VALUE)
        _, schema = val.dataset_schema(record.get("type"), api=ctx.version, update=True)
        errors = val.validate(body, schema, partial=True)
        if errors:
            raise self._dataset_400(ctx, errors)
        if not self.can_write(account, record):
            raise forbidden("Unauthorized to update this dataset")
        since = ctx.request.headers.get("if-unmodified-since")
        if since:
            limit = _parse_http_date(since)
            updated = val.parse_datetime(str(record.get("updatedAt", "")))
            if limit is not None and updated is not None and limit < updated:
                raise HttpError(
                    412,
                    error_body(412, "Resource has been modified on server", "Precondition Failed"),
                )
        changes = val.normalize(body, schema)
        if ctx.version == "v4":  # the v4 update DTO's defaults (backend 4.5.0)
            zeroed = {k: v for k, v in v4view.PATCH_DEFAULTS.items() if k in record}
            changes = {**zeroed, **changes}
        if ctx.version == "v3":
            if record.get("type") == "derived" and "investigator" in changes:
                changes = {"type": "derived", **changes}
                self._as_stored(changes)
                changes.pop("type")
            updated_record = {**record, **changes}  # top-level keys replace whole values
        elif ctx.request.headers.get("content-type", "").startswith("application/merge-patch"):
            updated_record = _merge_patch(record, changes)
            updated_record["pid"] = pid
        else:  # v4 with application/json: a top-level $set, as v3
            updated_record = {**record, **changes}
        v4view.sync_forms(updated_record, changes)
        updated_record.update(self._server_fields(account, created=False))
        self.store.put("datasets", pid, updated_record)
        return ApiResponse(200, self._view(ctx, updated_record))

    def delete_dataset(self, ctx: Context) -> ApiResponse:
        """As backend 4.5.0: the delete guard first (``DELETE_GROUPS``), 404 for
        an unknown pid, and only the dataset goes (its blocks and attachments
        stay behind)."""
        account = self._require_delete(ctx)
        record = self._dataset(ctx.params["pid"])
        if not self.can_write(account, record):
            raise forbidden("Unauthorized to update this dataset")
        self.store.delete("datasets", record["pid"])
        return ApiResponse(200, copy.deepcopy(record))

    def insert_dataset(self, dataset: Mapping[str, Any]) -> Dict[str, Any]:
        """Direct insert without validation; server fields filled only if absent."""
        record = copy.deepcopy(dict(dataset))
        pid = record.pop("pid", None) or f"{self.pid_prefix}/{uuid.uuid4()}"
        if record.get("datasetName") is None:
            name = val.dataset_name_from_source_folder(record.get("sourceFolder"))
            if name is not None:
                record["datasetName"] = name
        now = val.now_iso()
        defaults = {
            "classification": DEFAULT_CLASSIFICATION,
            "size": 0,
            "numberOfFiles": 0,
            "keywords": [],
            "isPublished": False,
            "version": "3",
            "history": [],
            "createdBy": "admin",
            "updatedBy": "admin",
            "createdAt": now,
            "updatedAt": now,
        }
        for key, value in defaults.items():
            record.setdefault(key, value)
        filled = {"pid": pid, **record}
        self.store.put("datasets", pid, filled)
        return copy.deepcopy(filled)

    # -- origdatablocks ---------------------------------------------------------
    def _new_block(
        self,
        body: Mapping[str, Any],
        schema: val.Schema,
        dataset: Mapping[str, Any],
        account: Account,
    ) -> Dict[str, Any]:
        data = val.normalize(body, schema)
        block: Dict[str, Any] = {
            "_id": str(uuid.uuid4()),
            "datasetId": dataset["pid"],
            "size": data["size"],
        }
        if "chkAlg" in data:
            block["chkAlg"] = data["chkAlg"]
        block["dataFileList"] = data["dataFileList"]
        block["ownerGroup"] = dataset.get("ownerGroup")
        block["accessGroups"] = list(_as_list(dataset.get("accessGroups")))
        if dataset.get("instrumentGroup") is not None:
            block["instrumentGroup"] = dataset["instrumentGroup"]
        block["isPublished"] = bool(data.get("isPublished") or False)
        block.update(self._server_fields(account))
        return block

    def _set_bookkeeping(self, pid: str, size: int, files: int, account: Optional[Account]) -> None:
        dataset = self.store.get("datasets", pid)
        if dataset is None:
            return
        updated = {**dataset, "size": size, "numberOfFiles": files}
        updated.update(self._server_fields(account, created=False))
        self.store.put("datasets", pid, updated)

    def _recompute(self, pid: str, account: Optional[Account]) -> None:
        blocks = [b for b in self.store.values("origdatablocks") if b.get("datasetId") == pid]
        size = sum(b.get("size") or 0 for b in blocks)
        files = sum(len(b.get("dataFileList") or []) for b in blocks)
        self._set_bookkeeping(pid, size, files, account)

    def create_nested_origdatablock(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.ORIGDATABLOCK_NESTED)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        dataset = self._dataset(ctx.params["pid"])
        if not self.can_write(account, dataset):
            raise forbidden("Unauthorized access")
        block = self._new_block(body, val.ORIGDATABLOCK_NESTED, dataset, account)
        self.store.put("origdatablocks", block["_id"], block)
        # incremental, on top of the current values (client-sent ones included)
        self._set_bookkeeping(
            dataset["pid"],
            (dataset.get("size") or 0) + block["size"],
            (dataset.get("numberOfFiles") or 0) + len(block["dataFileList"]),
            account,
        )
        return ApiResponse(201, copy.deepcopy(block))

    def create_origdatablock(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.ORIGDATABLOCK)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        pid = body["datasetId"]
        dataset = self.store.get("datasets", pid)
        if dataset is None:
            raise not_found(f"Dataset: {pid} not found for attaching an origdatablock")
        if not self.can_write(account, dataset):
            raise forbidden("Unauthorized access")
        block = self._new_block(body, val.ORIGDATABLOCK, dataset, account)
        self.store.put("origdatablocks", block["_id"], block)
        self._recompute(pid, account)
        return ApiResponse(201, copy.deepcopy(block))

    def origdatablock_is_valid(self, ctx: Context) -> ApiResponse:
        self._require(ctx)
        body = ctx.body
        errors = (
            val.validate(body, val.ORIGDATABLOCK, whitelist=False)
            if isinstance(body, dict)
            else _UNKNOWN_VALUE
        )
        return ApiResponse(200, {"valid": not errors, "errors": copy.deepcopy(errors)})

    def list_dataset_origdatablocks(self, ctx: Context) -> ApiResponse:
        dataset = self._dataset(ctx.params["pid"])
        if not self.can_read(ctx.account, dataset):
            raise forbidden("Unauthorized access")
        blocks = [
            b for b in self.store.values("origdatablocks") if b.get("datasetId") == dataset["pid"]
        ]
        return ApiResponse(200, copy.deepcopy(blocks))

    def list_origdatablocks(self, ctx: Context) -> ApiResponse:
        blocks = self._filtered(ctx, self._readable(ctx, "origdatablocks"))
        return ApiResponse(200, copy.deepcopy(self._v4_default_page(ctx, blocks)))

    def _v4_default_page(self, ctx: Context, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """A v4 listing without ``limits`` answers the 10 newest only (backend 4.5.0)."""
        filt = self._json_param(ctx, "filter")
        if ctx.version != "v4" or any(k in filt for k in ("limits", "limit")):
            return records
        return v4view.default_page(records)

    def get_origdatablock(self, ctx: Context) -> ApiResponse:
        block = self.store.get("origdatablocks", ctx.params["id"])
        if block is None:
            raise not_found_plain()
        if not self.can_read(ctx.account, block):
            raise forbidden("Unauthorized access")
        return ApiResponse(200, copy.deepcopy(block))

    @staticmethod
    def _require_delete(ctx: Context) -> Account:
        """The policy guard of every DELETE route: it runs before any lookup."""
        account = ctx.account
        if account is None or not account.may_delete:
            raise forbidden("Forbidden resource")
        return account

    def delete_origdatablock(self, ctx: Context) -> ApiResponse:
        account = self._require_delete(ctx)
        block = self.store.get("origdatablocks", ctx.params["id"])
        if block is None and ctx.version == "v4":
            raise not_found(f"OrigDatablock: {ctx.params['id']} not found")
        if block is None:
            # the v3 route reads the deleted block's datasetId from nothing
            raise internal_error()
        if not self.can_write(account, block):
            raise forbidden("Unauthorized access")
        self.store.delete("origdatablocks", block["_id"])
        self._recompute(block["datasetId"], account)
        return ApiResponse(200, copy.deepcopy(block))

    # -- attachments ---------------------------------------------------------------
    def create_attachment(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.ATTACHMENT)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        dataset = self._dataset(ctx.params["pid"])
        if not self.can_write(account, dataset):
            raise forbidden("Unauthorized access")
        data = val.normalize(body, val.ATTACHMENT)
        data.pop("id", None)
        record: Dict[str, Any] = {"id": str(uuid.uuid4()), **data}
        record["datasetId"] = dataset["pid"]
        record["ownerGroup"] = dataset.get("ownerGroup")
        if record.get("accessGroups") is None:
            record["accessGroups"] = list(_as_list(dataset.get("accessGroups")))
        record["isPublished"] = False
        record.update(self._server_fields(account))
        self.store.put("attachments", record["id"], record)
        return ApiResponse(201, copy.deepcopy(record))

    def list_dataset_attachments(self, ctx: Context) -> ApiResponse:
        dataset = self._dataset(ctx.params["pid"])
        if not self.can_read(ctx.account, dataset):
            raise forbidden("Unauthorized access")
        found = [
            v4view.attachment_v3(a)
            for a in self.store.values("attachments")
            if a.get("datasetId") == dataset["pid"]
        ]
        return ApiResponse(200, found)

    def delete_attachment(self, ctx: Context) -> ApiResponse:
        """The v3 route as backend 4.5.0 runs it: whatever ``aid`` says, the
        dataset's OLDEST attachment goes (200 with it; 200 and no body when
        the dataset has none)."""
        account = self._require_delete(ctx)
        dataset = self._dataset(ctx.params["pid"])
        if not self.can_write(account, dataset):
            raise forbidden("Unauthorized access")
        held = [a for a in self.store.values("attachments") if a.get("datasetId") == dataset["pid"]]
        if not held:
            return ApiResponse(200)
        oldest = min(
            enumerate(held), key=lambda item: (str(item[1].get("createdAt", "")), item[0])
        )[1]
        key = str(oldest.get("id") or oldest.get("aid"))
        self.store.delete("attachments", key)
        return ApiResponse(200, copy.deepcopy(oldest))

    def _attachment_v4(self, aid: str) -> Dict[str, Any]:
        record = self.store.get("attachments", aid)
        if record is None:
            raise not_found(f"Attachment: {aid} not found")
        return record

    @staticmethod
    def _v4_shape(record: Mapping[str, Any]) -> Dict[str, Any]:
        return v4view.attachment_v4(record)

    def list_attachments_v4(self, ctx: Context) -> ApiResponse:
        """``GET /api/v4/attachments?filter=…`` (v3-made ones too, in the v4 shape)."""
        shaped = [self._v4_shape(a) for a in self._readable(ctx, "attachments")]
        return ApiResponse(200, self._v4_default_page(ctx, self._filtered(ctx, shaped)))

    def get_attachment_v4(self, ctx: Context) -> ApiResponse:
        record = self._attachment_v4(ctx.params["aid"])
        if not self.can_read(ctx.account, record):
            raise forbidden("Unauthorized access")
        return ApiResponse(200, self._v4_shape(record))

    def delete_attachment_v4(self, ctx: Context) -> ApiResponse:
        """``DELETE /api/v4/attachments/{aid}``: by id (200, then 404)."""
        account = self._require_delete(ctx)
        record = self._attachment_v4(ctx.params["aid"])
        if not self.can_write(account, record):
            raise forbidden("Unauthorized access")
        self.store.delete("attachments", ctx.params["aid"])
        return ApiResponse(200, self._v4_shape(record))

    def create_attachment_v4(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.ATTACHMENT_V4)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        if not self.can_write(account, body):
            raise forbidden("Unauthorized access")
        data = val.normalize(body, val.ATTACHMENT_V4)
        aid = data.pop("aid", None) or str(uuid.uuid4())
        if self.store.get("attachments", aid) is not None:
            raise conflict(f"Attachment with aid {aid} already exists")
        record: Dict[str, Any] = {"aid": aid, **data}
        record.setdefault("accessGroups", [])
        record.setdefault("relationships", [])
        v4view.attachment_stored(record)
        record.update(self._server_fields(account))
        self.store.put("attachments", aid, record)
        return ApiResponse(201, self._v4_shape(record))

    # -- proposals ---------------------------------------------------------------
    def create_proposal(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        if account.role != "admin":
            raise forbidden()
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.PROPOSAL)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        pid = body["proposalId"]
        if self.store.get("proposals", pid) is not None:
            raise conflict(f"Proposal with {pid} already exists")
        record = val.normalize(body, val.PROPOSAL)
        record.setdefault("type", val.PROPOSAL_TYPES[0])
        record.setdefault("accessGroups", [])
        record.setdefault("MeasurementPeriodList", [])
        record.setdefault("isPublished", False)
        record.update(self._server_fields(account))
        self.store.put("proposals", pid, record)
        return ApiResponse(201, copy.deepcopy(record))

    def get_proposal(self, ctx: Context) -> ApiResponse:
        pid = ctx.params["id"]
        record = self.store.get("proposals", pid)
        if record is None:
            raise not_found(f"Proposal: {pid} not found")
        if not self.can_read(ctx.account, record):
            raise forbidden("Unauthorized to this proposal")
        return ApiResponse(200, copy.deepcopy(record))

    def list_proposals(self, ctx: Context) -> ApiResponse:
        return ApiResponse(
            200, copy.deepcopy(self._filtered(ctx, self._readable(ctx, "proposals")))
        )

    # -- samples -------------------------------------------------------------------
    def create_sample(self, ctx: Context) -> ApiResponse:
        account = ctx.account
        if account is None:
            raise unauthenticated()
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.SAMPLE)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        if not self.can_write(account, body):
            raise forbidden("Unauthorized to create this sample")
        record = val.normalize(body, val.SAMPLE)
        sample_id = record.pop("sampleId", None) or str(uuid.uuid4())
        if self.store.get("samples", sample_id) is not None:
            raise internal_error()  # duplicate key error, unhandled by the backend
        record = {"sampleId": sample_id, **record}
        record.setdefault("accessGroups", [])
        record.setdefault("isPublished", False)
        record.setdefault("sampleCharacteristics", {})
        record.update(self._server_fields(account))
        self.store.put("samples", sample_id, record)
        return ApiResponse(201, copy.deepcopy(record))

    def get_sample(self, ctx: Context) -> ApiResponse:
        record = self.store.get("samples", ctx.params["id"])
        if record is None:
            raise not_found_plain()
        if not self.can_read(ctx.account, record):
            raise forbidden("Unauthorized access")
        return ApiResponse(200, copy.deepcopy(record))

    def list_samples(self, ctx: Context) -> ApiResponse:
        return ApiResponse(200, copy.deepcopy(self._filtered(ctx, self._readable(ctx, "samples"))))

    # -- instruments -------------------------------------------------------------------
    def create_instrument(self, ctx: Context) -> ApiResponse:
        account = self._require(ctx)
        if account.role != "admin":
            raise forbidden()
        body = ctx.body
        if not isinstance(body, dict):
            raise bad_request(val.flatten_messages(_UNKNOWN_VALUE))
        errors = val.validate(body, val.INSTRUMENT)
        if errors:
            raise bad_request(val.flatten_messages(errors))
        name = body["uniqueName"]
        if any(i.get("uniqueName") == name for i in self.store.values("instruments")):
            raise conflict(f"Instrument with uniqueName {name} already exists")
        record = {"pid": f"{self.pid_prefix}{uuid.uuid4()}", **val.normalize(body, val.INSTRUMENT)}
        record.setdefault("customMetadata", {})
        record.update(self._server_fields(account))
        self.store.put("instruments", record["pid"], record)
        return ApiResponse(201, copy.deepcopy(record))

    def get_instrument(self, ctx: Context) -> ApiResponse:
        record = self.store.get("instruments", ctx.params["pid"])
        return ApiResponse(200, copy.deepcopy(record) if record is not None else EMPTY)

    def list_instruments(self, ctx: Context) -> ApiResponse:
        return ApiResponse(
            200, copy.deepcopy(self._filtered(ctx, self.store.values("instruments")))
        )
