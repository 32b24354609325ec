"""Beamtimes: their metadata files, where they are found, and the blacklists.

A beamtime directory (``/gpfs/current``) holds a metadata file
``beamtime-metadata-{id}.json`` written by the facility; its scans live
below that directory.  Everything the ingestor needs to know about a
beamtime (ids, beamline, groups, where the data really lives) comes from
that file, read once per change.  A broken file is an error for its own
beamtime only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set

from .config import IngestorConfig
from .errors import BeamtimeError

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("beamtimeId", "proposalId", "beamline", "corePath")


@dataclass(frozen=True)
class Beamtime:
    """What one beamtime metadata file says, plus where it was found."""

    path: str
    beamtime_id: str
    proposal_id: str
    beamline: str
    core_path: str
    proposal_type: Optional[str] = None
    owner_group: Optional[str] = None
    access_groups: Optional[List[str]] = None
    data: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def directory(self) -> str:
        """The beamtime directory: where the metadata file lies."""
        return os.path.dirname(self.path)

    @property
    def default_owner_group(self) -> str:
        return f"{self.beamtime_id}-dmgt"

    @property
    def default_access_groups(self) -> List[str]:
        bid, beamline = self.beamtime_id, self.beamline
        return [f"{bid}-dmgt", f"{bid}-clbt", f"{bid}-part", f"{beamline}dmgt", f"{beamline}staff"]

    def with_groups(
        self, owner_group: Optional[str], access_groups: Optional[List[str]]
    ) -> "Beamtime":
        """A copy with the missing groups filled (from the proposal)."""
        return Beamtime(
            self.path,
            self.beamtime_id,
            self.proposal_id,
            self.beamline,
            self.core_path,
            self.proposal_type,
            self.owner_group or owner_group,
            self.access_groups if self.access_groups is not None else access_groups,
            self.data,
        )

    @property
    def effective_owner_group(self) -> str:
        return self.owner_group or self.default_owner_group

    @property
    def effective_access_groups(self) -> List[str]:
        if self.access_groups is not None:
            return list(self.access_groups)
        return self.default_access_groups


def _text_field(data: Dict[str, Any], name: str, path: str) -> str:
    value = data.get(name)
    if value is None or value == "":
        raise BeamtimeError("missing (the ingestor needs it)", path, name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BeamtimeError(f"must be a string, found {type(value).__name__}", path, name)
    return str(value)


def parse_beamtime(text: str, path: str) -> Beamtime:
    """Build a :class:`Beamtime` from the file's text; errors name file and field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BeamtimeError(
            f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})", path
        ) from None
    if not isinstance(data, dict):
        raise BeamtimeError(f"must hold a JSON object, found {type(data).__name__}", path)
    values = {name: _text_field(data, name, path) for name in REQUIRED_FIELDS}
    proposal_type = data.get("proposalType")
    owner_group = data.get("ownerGroup")
    if owner_group is not None and not isinstance(owner_group, str):
        raise BeamtimeError("must be a string", path, "ownerGroup")
    access_groups = data.get("accessGroups")
    if access_groups is not None:
        if isinstance(access_groups, str):
            access_groups = [group for group in access_groups.split(",") if group]
        elif not (
            isinstance(access_groups, list)
            and all(isinstance(group, str) for group in access_groups)
        ):
            raise BeamtimeError("must be a list of strings", path, "accessGroups")
    return Beamtime(
        path=path,
        beamtime_id=values["beamtimeId"],
        proposal_id=values["proposalId"],
        beamline=values["beamline"],
        core_path=values["corePath"].rstrip("/") or "/",
        proposal_type=None if proposal_type is None else str(proposal_type),
        owner_group=owner_group or None,
        access_groups=list(access_groups) if access_groups is not None else None,
        data=data,
    )


def read_beamtime(path: str) -> Beamtime:
    """Read a beamtime metadata file; its ``beamtimeId`` must be the id in its name.

    The sardana macros name the list files after the id in the file name
    (``beamtime-metadata-<id>.json``), the ingestor after ``beamtimeId``;
    when they differ the scans' list file would be ignored without a word,
    and which id is right cannot be told, so the file is refused
    (:func:`check_name_id`) until the two agree.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise BeamtimeError(f"cannot be read: {error.strerror or error}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BeamtimeError(f"not UTF-8 text ({error.reason})", path) from None
    beamtime = parse_beamtime(text, path)
    check_name_id(beamtime, path)
    return beamtime


#: the beamtime file name the facility writes; the id between the two
NAME_PREFIX, NAME_POSTFIX = "beamtime-metadata-", ".json"


def check_name_id(beamtime: Beamtime, path: str) -> None:
    """:class:`BeamtimeIdMismatch` when the file name names another beamtime id."""
    name = os.path.basename(path)
    if not (name.startswith(NAME_PREFIX) and name.endswith(NAME_POSTFIX)):
        return  # a site's own naming: no id in it to compare
    named = name[len(NAME_PREFIX) : len(name) - len(NAME_POSTFIX)]
    if named and named != beamtime.beamtime_id:
        list_name = f"scicat-datasets-{named}.lst"
        raise BeamtimeIdMismatch(
            f"beamtimeId '{beamtime.beamtime_id}' differs from the id '{named}' in the "
            f"file name: not ingested until they agree (its scans' list files, "
            f"{list_name}, are not read; nothing is posted under either id)",
            path,
            "beamtimeId",
        )


class BeamtimeIdMismatch(BeamtimeError):
    """The ``beamtimeId`` of a beamtime file is not the id its name gives (an ERROR)."""


def is_beamtime_file(name: str, config: IngestorConfig) -> bool:
    """Does the file name follow ``<prefix>…<postfix>``?"""
    prefix, postfix = config.beamtime_filename_prefix, config.beamtime_filename_postfix
    return (
        name.startswith(prefix)
        and name.endswith(postfix)
        and len(name) >= len(prefix) + len(postfix)
    )


def beamtime_directories(config: IngestorConfig) -> List[str]:
    """``beamtime_dirs`` plus the subdirectories of ``beamtime_base_dir``."""
    directories = list(config.beamtime_dirs)
    base = config.beamtime_base_dir
    if base and os.path.isdir(base):
        directories += sorted(
            os.path.join(base, name)
            for name in os.listdir(base)
            if os.path.isdir(os.path.join(base, name))
        )
    return directories


def find_beamtime_files(directory: str, config: IngestorConfig) -> List[str]:
    """The beamtime metadata files directly in *directory*, sorted."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        os.path.join(directory, name)
        for name in names
        if is_beamtime_file(name, config) and os.path.isfile(os.path.join(directory, name))
    )


def read_id_blacklist(path: Optional[str]) -> Set[str]:
    """Beamtime ids, one per line; a missing file is an empty list (logged)."""
    if not path:
        return set()
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return {line.strip() for line in handle if line.strip()}
    except OSError as error:
        logger.warning("Beamtime id blacklist %s cannot be read: %s", path, error.strerror or error)
        return set()


class BeamtimeFilter:
    """Decides which beamtimes are ingested: id and proposal-type blacklists.

    The id blacklist file is re-read when its modification time changes, so
    an id removed from it is ingested again (existing installations only
    ever added ids).
    """

    def __init__(self, config: IngestorConfig) -> None:
        self.config = config
        self._ids: Set[str] = set()
        self._stamp: Optional[float] = None

    def _blacklisted_ids(self) -> Set[str]:
        path = self.config.beamtimeid_blacklist_file
        if not path:
            return set()
        try:
            stamp = os.stat(path).st_mtime
        except OSError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._ids = read_id_blacklist(path) if stamp is not None else set()
            self._stamp = stamp
        return self._ids

    def reason_to_skip(self, beamtime: Beamtime) -> Optional[str]:
        """Why *beamtime* is not ingested, or None when it is."""
        if beamtime.proposal_type in set(self.config.beamtime_type_blacklist):
            return f"proposal type '{beamtime.proposal_type}' is blacklisted"
        if beamtime.beamtime_id in self._blacklisted_ids():
            return (
                f"beamtime id {beamtime.beamtime_id} is in {self.config.beamtimeid_blacklist_file}"
            )
        return None


def under(path: str, directories: Iterable[str]) -> Optional[str]:
    """The first of *directories* that is *path* or contains it."""
    normal = os.path.normpath(path)
    for directory in directories:
        base = os.path.normpath(directory)
        if normal == base or normal.startswith(base.rstrip("/") + "/"):
            return directory
    return None


def relative_scan_path(scan_dir: str, beamtime: Beamtime) -> str:
    """``{relpath}``: the scan directory relative to the beamtime directory."""
    return os.path.relpath(os.path.normpath(scan_dir), beamtime.directory)
