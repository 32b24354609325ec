"""Measurement grouping: which scans belong to which measurement.

``__command__ start NAME`` … ``__command__ stop`` in a list file group the
scans between them into the measurement dataset NAME.  The state at any
line follows from the lines before it, so it is recomputed by walking the
list file from its start: nothing about measurements needs to be stored
for a restart to know it.  The walk itself is the list grammar's
(:class:`~scingestor.listgrammar.MeasurementWalk`, shared with the sardana
macros); the ingestor's state only logs what the walk notices.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, List, Optional

from .listgrammar import MeasurementWalk, StartMeasurement

if TYPE_CHECKING:
    from .config import IngestorConfig

logger = logging.getLogger(__name__)


class MeasurementState(MeasurementWalk):
    """The grouping state while walking a list file (see MeasurementWalk), logged."""

    def _on_start_without_name(self, record: StartMeasurement, path: Optional[str]) -> None:
        logger.warning(
            "%s:%s: '__command__ start' without a name and no earlier "
            "measurement to resume: ignored",
            path or "<list>",
            record.lineno,
        )

    def _on_replaced(self, old: str, new: str) -> None:
        logger.info("Measurement %s replaced by %s without a stop", old, new)

    def copy(self) -> "MeasurementState":
        return MeasurementState(self.current, self.last, set(self.started))


def measurement_files(config: "IngestorConfig", meta_dir: str, name: str) -> List[str]:
    """The metadata files of measurement *name* that the callback rewrites in place."""
    if not name:
        return []
    postfixes = (
        config.scan_metadata_postfix,
        config.datablock_metadata_postfix,
        config.attachment_metadata_postfix,
    )
    return [os.path.join(meta_dir, name + postfix) for postfix in postfixes]
