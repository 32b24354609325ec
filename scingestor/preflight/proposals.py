"""Whether the account may read proposals (the groups of a beamtime come from one).

The proposal of the first configured beamtime is read when there is one,
so a site sees the very record its ingestion will ask for; otherwise the
first proposal visible to the account.  Needed only when the configuration
takes the groups from the proposal (``owner_access_groups_from_proposal``).
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

from ..beamtime import beamtime_directories, find_beamtime_files, read_beamtime
from ..config import IngestorConfig, proposal_id
from ..errors import ForbiddenError, SciCatError, ScingestorError
from ..scicat import SciCatClient
from .report import NO, UNKNOWN, YES, PreflightReport, answer

logger = logging.getLogger(__name__)

CHECK = "read proposals"


def beamtime_proposal(config: IngestorConfig) -> Optional[Tuple[str, str]]:
    """(SciCat proposalId, beamtime file) of the first configured beamtime."""
    try:
        for directory in beamtime_directories(config):
            for path in find_beamtime_files(directory, config):
                try:
                    beamtime = read_beamtime(path)
                except ScingestorError:
                    continue
                return proposal_id(config, beamtime.proposal_id, beamtime.beamtime_id), path
    except (OSError, ScingestorError) as exc:
        logger.debug("preflight: no beamtime file: %s", exc)
    return None


def read_proposals(config: IngestorConfig, client: SciCatClient, report: PreflightReport) -> None:
    """Record the ``read proposals`` row; a 403 names ``PROPOSAL_GROUPS``."""
    needed = bool(config.owner_access_groups_from_proposal)
    found = beamtime_proposal(config)
    try:
        if found is not None:
            _read_named(client, report, needed, *found)
        else:
            _read_first_visible(client, report, needed)
    except ForbiddenError as exc:
        report.add(
            CHECK,
            NO,
            f"{answer(exc)} (the backend lets PROPOSAL_GROUPS "
            f"and ADMIN_GROUPS members read any proposal)",
            needed,
            "PROPOSAL_GROUPS",
        )
    except SciCatError as exc:
        report.add(CHECK, NO, answer(exc), needed)


def _read_named(
    client: SciCatClient, report: PreflightReport, needed: bool, wanted: str, path: str
) -> None:
    """The proposal the beamtime file *path* names (``unknown`` when SciCat lacks it)."""
    record = client.get_proposal(wanted)
    of = os.path.basename(path)
    if record is None:
        report.add(CHECK, UNKNOWN, f"proposal {wanted} (of {of}) is not in SciCat (404)", needed)
        return
    report.add(
        CHECK,
        YES,
        f"proposal {wanted} (of {of}): ownerGroup {record.get('ownerGroup')!r}",
        needed,
    )


def _read_first_visible(client: SciCatClient, report: PreflightReport, needed: bool) -> None:
    """Without a beamtime file: the first proposal this account may list."""
    visible = client.find_proposals({}, limit=1)
    if not visible:
        report.add(
            CHECK,
            UNKNOWN,
            "no beamtime file found and no proposal "
            "visible to this account (none in SciCat, or none it may "
            "read: PROPOSAL_GROUPS)",
            needed,
        )
        return
    first = visible[0].get("proposalId") if isinstance(visible[0], dict) else None
    record = client.get_proposal(str(first)) if first else None
    if record is None:
        report.add(CHECK, UNKNOWN, f"proposal {first!r} listed but not read", needed)
        return
    report.add(
        CHECK,
        YES,
        f"proposal {first} (the first visible): ownerGroup {record.get('ownerGroup')!r}",
        needed,
    )
