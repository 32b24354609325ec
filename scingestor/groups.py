"""A beamtime's owner and access groups, filled from its SciCat proposal.

Beamtime metadata files may lack ``ownerGroup``/``accessGroups``.  With
``owner_access_groups_from_proposal`` the missing ones are taken from the
beamtime's proposal in SciCat before any of its scans is posted; without
it (or when the proposal has none) the beamtime's default groups apply.
The daemon and the batch tool both ask here, so a scan gets the same
groups whichever of them ingests it.
"""

from __future__ import annotations

import logging

from .beamtime import Beamtime
from .config import IngestorConfig, proposal_id
from .errors import AuthenticationError, SciCatError, SciCatUnreachable
from .scicat import SciCatClient

logger = logging.getLogger(__name__)


def resolve_groups(client: SciCatClient, config: IngestorConfig, beamtime: Beamtime) -> Beamtime:
    """Fill missing owner/access groups from the SciCat proposal when configured.

    :class:`~scingestor.errors.SciCatUnreachable` and a refused login
    (:class:`~scingestor.errors.AuthenticationError`) are raised, not
    swallowed: the caller tries again later rather than settle for the
    default groups, which a later run could not correct.  Any other SciCat error, or no
    proposal, keeps the beamtime as it is (logged).
    """
    if not config.owner_access_groups_from_proposal:
        return beamtime
    if beamtime.owner_group and beamtime.access_groups is not None:
        return beamtime
    pid = proposal_id(config, beamtime.proposal_id, beamtime.beamtime_id)
    try:
        proposal = client.get_proposal(pid)
    except (SciCatUnreachable, AuthenticationError):
        raise
    except SciCatError as error:
        logger.warning("Proposal %s: %s", pid, error)
        return beamtime
    if not proposal:
        logger.warning("Proposal %s: not found in SciCat; default groups kept", pid)
        return beamtime
    groups = proposal.get("accessGroups")
    return beamtime.with_groups(
        proposal.get("ownerGroup") or None, list(groups) if isinstance(groups, list) else None
    )
