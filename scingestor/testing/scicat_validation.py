"""Payload validation of the SciCat-compatible test server.

The real backend validates bodies with NestJS ``ValidationPipe`` and
class-validator (``whitelist`` + ``forbidNonWhitelisted``).  This module
reproduces what a client can observe of that: which payloads are refused,
the class-validator error tree (``{property, children?, constraints}``) that
the v3 dataset routes JSON-encode into ``message``, and the flattened texts
(``"dataFileList.0.time must be ..."``) of the standard 400 shape.  It also
normalises accepted values the way MongoDB/mongoose stores them (dates to
UTC ``...Z``, a bare string to a one-item list, ``5.0`` to ``5``).

Only behaviour matters here; texts follow class-validator's wording but
clients must not parse them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

#: class-validator error item: {"property", "children"?, "constraints"?}
ValidationErrorItem = Dict[str, Any]

_MISSING = object()


# ---------------------------------------------------------------------------
# primitive checks (validator.js semantics where a client can notice them)
# ---------------------------------------------------------------------------

# validator.js isISO8601 (non-strict): calendar, week and ordinal dates, "T" or
# a space before the time, optional seconds/fractions, "Z" or +hh[:mm] offsets.
_ISO8601 = re.compile(
    r"^([+-]?\d{4}(?!\d{2}\b))"
    r"((-?)((0[1-9]|1[0-2])(\3([12]\d|0[1-9]|3[01]))?|W([0-4]\d|5[0-3])(-?[1-7])?"
    r"|(00[1-9]|0[1-9]\d|[12]\d{2}|3([0-5]\d|6[1-6])))"
    r"([T\s]((([01]\d|2[0-3])((:?)[0-5]\d)?|24:?00)([.,]\d+(?!:))?)?"
    r"(\17[0-5]\d([.,]\d+)?)?([zZ]|([+-])([01]\d|2[0-3]):?([0-5]\d)?)?)?)?$"
)

# The subset we can turn into an instant: calendar date, optional time.
_CALENDAR = re.compile(
    r"^(?P<y>\d{4})-?(?P<mo>\d{2})-?(?P<d>\d{2})"
    r"(?:[T\s](?P<h>\d{2})(?::?(?P<mi>\d{2})(?::?(?P<s>\d{2}))?)?(?:[.,](?P<f>\d+))?"
    r"(?P<tz>[zZ]|[+-]\d{2}(?::?\d{2})?)?)?$"
)

_EMAIL_LOCAL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u00a1-\uffff]+"
_EMAIL = re.compile(
    r"^(?=.{1,64}@)" + _EMAIL_LOCAL_ATOM + r"(?:\." + _EMAIL_LOCAL_ATOM + r")*"
    r"@(?=.{1,253}$)(?:[A-Za-z0-9\u00a1-\uffff](?:[A-Za-z0-9\u00a1-\uffff-]{0,61}"
    r"[A-Za-z0-9\u00a1-\uffff])?\.)+(?:[A-Za-z\u00a1-\uffff]{2,}|xn--[A-Za-z0-9-]{2,})$"
)

_HOST_FQDN = (
    r"(?:[A-Za-z0-9\u00a1-\uffff](?:[A-Za-z0-9\u00a1-\uffff-]{0,61}[A-Za-z0-9\u00a1-\uffff])?\.)+"
    r"(?:[A-Za-z\u00a1-\uffff]{2,}|xn--[A-Za-z0-9-]{2,})"
)
_HOST_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
_URL = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://)?"
    r"(?:[^\s/@:]+(?::[^\s/@]*)?@)?"
    r"(?:" + _HOST_FQDN + "|" + _HOST_IPV4 + r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::\d{1,5})?(?:[/?#]\S*)?$"
)


def is_iso8601(value: Any) -> bool:
    """True for strings class-validator's ``IsDateString`` accepts."""
    return isinstance(value, str) and _ISO8601.match(value) is not None


def parse_datetime(value: str) -> Optional[_dt.datetime]:
    """Parse the calendar ISO-8601 forms into an aware UTC datetime.

    Like JavaScript's ``Date``: a date alone is UTC midnight, a date-time
    without offset is local time of the server.  ``None`` for forms we do not
    convert (week/ordinal dates, ``24:00``, impossible dates).
    """
    m = _CALENDAR.match(value)
    if not m:
        return None
    try:
        frac = m.group("f") or "0"
        micro = int((frac + "000000")[:6])
        if m.group("h") is None:
            return _dt.datetime(
                int(m.group("y")), int(m.group("mo")), int(m.group("d")), tzinfo=_dt.timezone.utc
            )
        naive = _dt.datetime(
            int(m.group("y")),
            int(m.group("mo")),
            int(m.group("d")),
            int(m.group("h")),
            int(m.group("mi") or 0),
            int(m.group("s") or 0),
            micro,
        )
    except ValueError:
        return None
    tz = m.group("tz")
    if tz is None:
        aware = naive.astimezone()  # naive = local time of the server
    elif tz in ("z", "Z"):
        aware = naive.replace(tzinfo=_dt.timezone.utc)
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        aware = naive.replace(tzinfo=_dt.timezone(sign * offset))
    return aware.astimezone(_dt.timezone.utc)


def format_datetime(value: _dt.datetime) -> str:
    """Format like JavaScript ``Date.toISOString()`` (ms precision, ``Z``)."""
    utc = value.astimezone(_dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def normalize_datetime(value: str) -> str:
    """Return the stored form of an accepted date string (UTC ``...Z``)."""
    parsed = parse_datetime(value)
    return format_datetime(parsed) if parsed is not None else value


def now_iso() -> str:
    """The current instant in the backend's output format."""
    return format_datetime(_dt.datetime.now(_dt.timezone.utc))


def is_email(value: Any) -> bool:
    """validator.js ``isEmail`` with default options, close enough for tests."""
    return isinstance(value, str) and ".." not in value and _EMAIL.match(value) is not None


def is_email_list(value: Any) -> bool:
    """SciCat's ``CustomEmailList``: one e-mail or a ``;``-separated list."""
    if not isinstance(value, str) or not value:
        return False
    return all(is_email(item.strip()) for item in value.split(";"))


def is_url(value: Any) -> bool:
    """validator.js ``isURL`` without required protocol; needs a dotted host."""
    return isinstance(value, str) and len(value) < 2084 and _URL.match(value) is not None


def is_int(value: Any) -> bool:
    """JavaScript integer: ``5`` and ``5.0`` pass, ``1.5``, ``"5"``, ``true`` fail."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def is_number(value: Any) -> bool:
    """class-validator ``IsNumber``: finite JSON numbers only."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def is_object(value: Any) -> bool:
    """class-validator ``IsObject``: a JSON object (not an array, not null)."""
    return isinstance(value, dict)


# ---------------------------------------------------------------------------
# field rules
# ---------------------------------------------------------------------------


class Field:
    """One DTO property: its checks and how an accepted value is stored.

    ``required`` False means ``@IsOptional()``: ``undefined`` and ``null``
    skip every other check (and ``null`` is stored as sent).
    """

    def __init__(self, required: bool = False) -> None:
        self.required = required

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        """Failed rules of ``value`` as ``{rule: text}`` (empty: valid)."""
        return {}

    def children(self, prop: str, value: Any, whitelist: bool) -> List[ValidationErrorItem]:
        """Nested errors (only nested DTOs have them)."""
        return []

    def normalize(self, value: Any) -> Any:
        """Stored form of an accepted value."""
        return value


class AnyField(Field):
    """Accepted and stored unchecked."""


class StrField(Field):
    """``@IsString()`` (+ ``@IsNotEmpty()`` when ``not_empty``)."""

    def __init__(self, required: bool = False, not_empty: bool = False) -> None:
        super().__init__(required)
        self.not_empty = not_empty

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        out: Dict[str, str] = {}
        if self.not_empty and (value is None or value == "" or value is _MISSING):
            out["isNotEmpty"] = f"{prop} should not be empty"
        if not isinstance(value, str):
            out["isString"] = f"{prop} must be a string"
        return out


class EnumField(Field):
    """``@IsEnum()``: one of fixed string values."""

    def __init__(self, values: Sequence[str], required: bool = False) -> None:
        super().__init__(required)
        self.values = list(values)

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        if isinstance(value, str) and value in self.values:
            return {}
        return {"isEnum": f"{prop} must be one of the following values: {', '.join(self.values)}"}


class IntField(Field):
    """``@IsInt()``; ``5.0`` is stored as ``5``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        return {} if is_int(value) else {"isInt": f"{prop} must be an integer number"}

    def normalize(self, value: Any) -> Any:
        return int(value) if is_int(value) else value


class NumberField(Field):
    """``@IsNumber()``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        if is_number(value):
            return {}
        return {"isNumber": f"{prop} must be a number conforming to the specified constraints"}


class BoolField(Field):
    """``@IsBoolean()``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        return {} if isinstance(value, bool) else {"isBoolean": f"{prop} must be a boolean value"}


class ObjectField(Field):
    """``@IsObject()``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        return {} if is_object(value) else {"isObject": f"{prop} must be an object"}


class DateField(Field):
    """``@IsDateString()``; stored as a UTC instant like a mongoose ``Date``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        if is_iso8601(value):
            return {}
        return {"isDateString": f"{prop} must be a valid ISO 8601 date string"}

    def normalize(self, value: Any) -> Any:
        return normalize_datetime(value) if isinstance(value, str) else value


class EmailField(Field):
    """``@IsEmail()``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        return {} if is_email(value) else {"isEmail": f"{prop} must be an email"}


class EmailListField(Field):
    """SciCat ``CustomEmailList``: ``a@x.org`` or ``a@x.org; b@y.org``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        if is_email_list(value):
            return {}
        shown = (
            "undefined"
            if value is _MISSING
            else (value if isinstance(value, str) else json.dumps(value))
        )
        return {
            "customEmailList": (
                f"Expected an email or a list of semicolon separated emails, got {shown}"
            )
        }


class UrlField(Field):
    """``@IsUrl({require_protocol: false, require_valid_protocol: false})``."""

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        return {} if is_url(value) else {"isUrl": f"{prop} must be a URL address"}


class StrListField(Field):
    """``@IsString({each: true})`` on a ``[String]`` schema path.

    class-validator checks a bare string itself (passes) and mongoose casts
    it to a one-item list, which is what a client reads back.
    """

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        if isinstance(value, list):
            ok = all(isinstance(item, str) for item in value)
        else:
            ok = isinstance(value, str)
        return {} if ok else {"isString": f"each value in {prop} must be a string"}

    def normalize(self, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class NestedListField(Field):
    """``@IsArray() @ValidateNested({each: true})`` of a nested DTO."""

    def __init__(self, schema: "Schema", required: bool = False, not_empty: bool = False) -> None:
        super().__init__(required)
        self.schema = schema
        self.not_empty = not_empty

    def constraints(self, prop: str, value: Any) -> Dict[str, str]:
        out: Dict[str, str] = {}
        if not isinstance(value, list):
            out["isArray"] = f"{prop} must be an array"
            if not isinstance(value, dict):
                out["nestedValidation"] = f"nested property {prop} must be either object or array"
        if self.not_empty and (not isinstance(value, list) or not value):
            out["arrayNotEmpty"] = f"{prop} should not be empty"
        return out

    def children(self, prop: str, value: Any, whitelist: bool) -> List[ValidationErrorItem]:
        if not isinstance(value, list):
            return []
        out: List[ValidationErrorItem] = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                out.append(
                    _item(
                        str(index),
                        {
                            "nestedValidation": (
                                f"nested property {prop} must be either object or array"
                            )
                        },
                    )
                )
                continue
            errors = validate(item, self.schema, whitelist=whitelist)
            if errors:
                out.append({"property": str(index), "children": errors})
        return out

    def normalize(self, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [normalize(item, self.schema) if isinstance(item, dict) else item for item in value]


Schema = Mapping[str, Field]


def _item(
    prop: str, constraints: Dict[str, str], children: Optional[List[ValidationErrorItem]] = None
) -> ValidationErrorItem:
    """One error item in the key order the backend serialises."""
    out: ValidationErrorItem = {"property": prop}
    if children:
        out["children"] = children
    if constraints:
        out["constraints"] = constraints
    return out


# ---------------------------------------------------------------------------
# validation, normalisation, error rendering
# ---------------------------------------------------------------------------


def validate(
    body: Mapping[str, Any], schema: Schema, *, whitelist: bool = True, partial: bool = False
) -> List[ValidationErrorItem]:
    """class-validator errors of ``body`` against ``schema``.

    ``whitelist``: unknown keys give ``whitelistValidation`` errors (first,
    as class-validator reports them).  ``partial``: every field optional
    (``PartialType`` DTOs of PATCH routes).
    """
    errors: List[ValidationErrorItem] = []
    if whitelist:
        for key in body:
            if key not in schema:
                errors.append(
                    _item(key, {"whitelistValidation": f"property {key} should not exist"})
                )
    for prop, rule in schema.items():
        value = body.get(prop, _MISSING)
        optional = partial or not rule.required
        if optional and (value is _MISSING or value is None):
            continue
        constraints = rule.constraints(prop, value)
        children = rule.children(prop, value, whitelist)
        if constraints or children:
            errors.append(_item(prop, constraints, children))
    return errors


def normalize(body: Mapping[str, Any], schema: Schema) -> Dict[str, Any]:
    """Copy of an accepted ``body`` in stored form (unknown keys kept as sent)."""
    out: Dict[str, Any] = {}
    for key, value in body.items():
        rule = schema.get(key)
        out[key] = rule.normalize(value) if rule is not None and value is not None else value
    return out


def flatten_messages(errors: Sequence[ValidationErrorItem]) -> List[str]:
    """NestJS's flattening of class-validator errors for the standard 400 shape.

    As in ``ValidationPipe.flattenValidationErrors``: an error with children
    contributes only its children's texts, each prefixed with the parent
    path, so a whitelist error in a file entry reads
    ``"dataFileList.0.property bogus should not exist"``.
    """
    out: List[str] = []
    for error in errors:
        for item in _map_children(error, None):
            out.extend((item.get("constraints") or {}).values())
    return out


def _map_children(error: ValidationErrorItem, parent: Optional[str]) -> List[ValidationErrorItem]:
    children = error.get("children") or []
    if not children:
        return [error]
    path = f"{parent}.{error['property']}" if parent else str(error["property"])
    out: List[ValidationErrorItem] = []
    for item in children:
        if item.get("children"):
            out.extend(_map_children(item, path))
        constraints = {k: f"{path}.{v}" for k, v in (item.get("constraints") or {}).items()}
        out.append({"property": item["property"], "constraints": constraints})
    return out


def v3_dataset_error_body(errors: Sequence[ValidationErrorItem]) -> Dict[str, Any]:
    """400 body of the v3 dataset POST/PATCH: the error array as a JSON string."""
    return {
        "status": 400,
        "message": json.dumps(list(errors), separators=(",", ":"), ensure_ascii=False),
    }


def standard_error_body(messages: Sequence[str]) -> Dict[str, Any]:
    """The standard NestJS 400 body."""
    return {"message": list(messages), "error": "Bad Request", "statusCode": 400}


# ---------------------------------------------------------------------------
# DTO schemas
# ---------------------------------------------------------------------------

TECHNIQUE: Dict[str, Field] = {"pid": StrField(True), "name": StrField(True)}
RELATIONSHIP: Dict[str, Field] = {"pid": StrField(True), "relationship": StrField(True)}

# fields common to the v3 raw and derived DTOs (OwnableDto + UpdateDatasetObsoleteDto)
_V3_COMMON: Dict[str, Field] = {
    "pid": StrField(),
    "type": EnumField(["raw", "derived"], True),
    "ownerGroup": StrField(True),
    "accessGroups": StrListField(),
    "instrumentGroup": StrField(),
    "owner": StrField(True),
    "ownerEmail": EmailField(),
    "orcidOfOwner": StrField(),
    "contactEmail": EmailListField(True),
    "sourceFolder": StrField(True, not_empty=True),
    "sourceFolderHost": UrlField(),
    "size": IntField(),
    "packedSize": IntField(),
    "numberOfFiles": IntField(),
    "numberOfFilesArchived": IntField(),
    "creationTime": DateField(True),
    "validationStatus": StrField(),
    "keywords": StrListField(),
    "description": StrField(),
    "datasetName": StrField(),
    "classification": StrField(),
    "license": StrField(),
    "version": StrField(),
    "isPublished": BoolField(),
    "techniques": NestedListField(TECHNIQUE),
    "sharedWith": StrListField(),
    "relationships": NestedListField(RELATIONSHIP),
    "datasetlifecycle": AnyField(),
    "scientificMetadata": ObjectField(),
    "scientificMetadataSchema": StrField(),
    "scientificMetadataValid": BoolField(),
    "comment": StrField(),
    "dataQualityMetrics": NumberField(),
    "proposalId": StrField(),
    "runNumber": StrField(),
}

V3_RAW: Dict[str, Field] = dict(
    _V3_COMMON,
    **{
        "principalInvestigator": StrField(True),
        "creationLocation": StrField(True),
        "startTime": DateField(),
        "endTime": DateField(),
        "dataFormat": StrField(),
        "sampleId": StrField(),
        "instrumentId": StrField(),
        # derived fields the raw DTO accepts without checking them
        "investigator": AnyField(),
        "inputDatasets": AnyField(),
        "usedSoftware": AnyField(),
        "jobParameters": AnyField(),
        "jobLogData": AnyField(),
    },
)

V3_DERIVED: Dict[str, Field] = dict(
    _V3_COMMON,
    **{
        "investigator": StrField(True),
        "inputDatasets": StrListField(True),
        "usedSoftware": StrListField(True),
        "jobParameters": ObjectField(),
        "jobLogData": StrField(),
    },
)

#: keys a PATCH may not carry (create-only and server-managed)
PATCH_FORBIDDEN = ("pid", "type", "version")


def _without(schema: Mapping[str, Field], keys: Sequence[str]) -> Dict[str, Field]:
    return {k: v for k, v in schema.items() if k not in keys}


V3_RAW_UPDATE = _without(V3_RAW, PATCH_FORBIDDEN)
V3_DERIVED_UPDATE = _without(V3_DERIVED, PATCH_FORBIDDEN)

# the unified v4 DTO (also what /api/v3/datasets falls back to without a v3 type)
V4_DATASET: Dict[str, Field] = dict(
    _without(_V3_COMMON, ("proposalId", "version")),
    **{
        "owner": StrField(),
        "datasetName": StrField(True),
        "principalInvestigators": StrListField(),
        "creationLocation": StrField(),
        "startTime": DateField(),
        "endTime": DateField(),
        "dataFormat": StrField(),
        "proposalIds": StrListField(),
        "sampleIds": StrListField(),
        "instrumentIds": StrListField(),
        "inputDatasets": StrListField(),
        "usedSoftware": StrListField(),
        "jobParameters": ObjectField(),
        "jobLogData": StrField(),
    },
)
V4_DATASET_UPDATE = _without(V4_DATASET, PATCH_FORBIDDEN)

DATA_FILE: Dict[str, Field] = {
    "path": StrField(True),
    "size": NumberField(True),
    "time": DateField(True),
    "chk": StrField(),
    "type": StrField(),
    "uid": StrField(),
    "gid": StrField(),
    "perm": StrField(),
}

ORIGDATABLOCK_NESTED: Dict[str, Field] = {
    "size": IntField(True),
    "chkAlg": StrField(not_empty=True),
    "dataFileList": NestedListField(DATA_FILE, True, not_empty=True),
    "isPublished": BoolField(),
}

ORIGDATABLOCK: Dict[str, Field] = dict(
    ORIGDATABLOCK_NESTED,
    **{
        "datasetId": StrField(True),
        "ownerGroup": StrField(not_empty=True),
        "accessGroups": StrListField(),
        "instrumentGroup": StrField(),
    },
)

ATTACHMENT: Dict[str, Field] = {
    "caption": StrField(True),
    "ownerGroup": StrField(True),
    "thumbnail": StrField(),
    "accessGroups": StrListField(),
    "instrumentGroup": StrField(),
    "id": StrField(),
    "datasetId": StrField(),
    "proposalId": StrField(),
    "sampleId": StrField(),
}

ATTACHMENT_RELATIONSHIP: Dict[str, Field] = {
    "targetId": StrField(True),
    "targetType": EnumField(["dataset", "proposal", "sample", "published_data"], True),
    "relationType": StrField(),
}

ATTACHMENT_V4: Dict[str, Field] = {
    "ownerGroup": StrField(True),
    "caption": StrField(True),
    "isPublished": BoolField(True),
    "thumbnail": StrField(),
    "aid": StrField(),
    "accessGroups": StrListField(),
    "instrumentGroup": StrField(),
    "relationships": NestedListField(ATTACHMENT_RELATIONSHIP),
}

MEASUREMENT_PERIOD: Dict[str, Field] = {
    "instrument": StrField(True),
    "start": DateField(True),
    "end": DateField(True),
    "comment": StrField(),
}

#: proposal types configured in the server (backend default)
PROPOSAL_TYPES = ("Default Proposal",)

PROPOSAL: Dict[str, Field] = {
    "proposalId": StrField(True),
    "ownerGroup": StrField(True),
    "accessGroups": StrListField(),
    "instrumentGroup": StrField(),
    "email": EmailField(True),
    "title": StrField(True),
    "pi_email": EmailField(),
    "pi_firstname": StrField(),
    "pi_lastname": StrField(),
    "firstname": StrField(),
    "lastname": StrField(),
    "abstract": StrField(),
    "startTime": DateField(),
    "endTime": DateField(),
    "MeasurementPeriodList": NestedListField(MEASUREMENT_PERIOD),
    "type": EnumField(PROPOSAL_TYPES),
    "parentProposalId": StrField(),
    "metadata": ObjectField(),
    "isPublished": BoolField(),
    "instrumentIds": StrListField(),
}

SAMPLE: Dict[str, Field] = {
    "ownerGroup": StrField(True),
    "accessGroups": StrListField(),
    "instrumentGroup": StrField(),
    "sampleId": StrField(),
    "owner": StrField(),
    "description": StrField(),
    "type": StrField(),
    "proposalId": StrField(),
    "parentSampleId": StrField(),
    "sampleCharacteristics": ObjectField(),
    "isPublished": BoolField(),
}

INSTRUMENT: Dict[str, Field] = {
    "uniqueName": StrField(True),
    "name": StrField(True),
    "customMetadata": ObjectField(),
}


def dataset_schema(
    dataset_type: Any, *, api: str = "v3", update: bool = False
) -> Tuple[str, Dict[str, Field]]:
    """Pick the DTO the backend uses for a dataset body.

    v3 chooses by ``type``: ``raw``/``derived``, anything else (or nothing)
    falls back to the unified v4 DTO, so v3 raw fields then fail.  Returns
    ``(kind, schema)`` with kind ``"raw"``, ``"derived"`` or ``"v4"``.
    """
    if api == "v3" and dataset_type == "raw":
        return "raw", V3_RAW_UPDATE if update else V3_RAW
    if api == "v3" and dataset_type == "derived":
        return "derived", V3_DERIVED_UPDATE if update else V3_DERIVED
    return "v4", V4_DATASET_UPDATE if update else V4_DATASET


def dataset_name_from_source_folder(source_folder: Any) -> Optional[str]:
    """The backend's ``datasetName`` fill: last two non-empty path parts."""
    if not isinstance(source_folder, str):
        return None
    parts = [p for p in source_folder.split("/") if p]
    return "/".join(parts[-2:]) if parts else None
