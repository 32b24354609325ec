"""A scan's master file: where it is looked for, and a scan listed before it is there.

Kept apart from :mod:`scingestor.pipeline` (issue 19): finding the master
file and deciding what to do without one (wait a little in the daemon,
then post from the beamtime metadata alone, as existing installations do)
is one rule of its own, used by the pipeline, the workers and the service.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

from .config import IngestorConfig
from .errors import ScingestorError
from .scantask import ScanTask

logger = logging.getLogger(__name__)


def find_scan_file(directory: str, name: str, extensions: Sequence[str]) -> Optional[str]:
    """``{dir}/{name}.{ext}``, then ``{dir}/{name}/{name}.{ext}``, per extension in order."""
    base = os.path.basename(name)
    for ext in extensions:
        for candidate in (
            os.path.join(directory, f"{name}.{ext}"),
            os.path.join(directory, name, f"{base}.{ext}"),
        ):
            if os.path.isfile(candidate):
                return candidate
    return None


#: tries of a newly listed scan without master file before it is posted without one
#: (the daemon only; with the generator's backoff: 5 s, then 10 s at the defaults)
MASTER_WAIT_TRIES = 2


def master_wait_tries(config: IngestorConfig) -> int:
    """How many tries a scan line waits for its master file (within the generator's tries)."""
    return max(0, min(MASTER_WAIT_TRIES, config.max_generator_attempts - 1))


class MasterFileAwaited(ScingestorError):
    """A newly listed scan has no master file yet: the daemon tries it again shortly."""


def check_master(task: ScanTask, local_dir: str, extensions: Sequence[str]) -> bool:
    """Warn of a scan line without master file; True when it has none.

    Existing installations post such a scan from the beamtime metadata
    alone, and so do we, but the operator has to hear of it: a wrong
    scan name or a master file written elsewhere looks the same.
    """
    if task.is_measurement:
        return False  # a measurement has no master file of its own
    line = task.line
    if find_scan_file(local_dir, line.masterscanname, extensions) is not None:
        return False
    where = f"{task.list_file}:{line.lineno}" if line.lineno else task.list_file
    suffix = "{" + ",".join(extensions) + "}"
    base = os.path.basename(line.masterscanname)
    if task.wait_for_master and not task.reingest:
        # listed before its master file was written (or copied): the daemon
        # tries again after the generator's backoff before posting without it
        raise MasterFileAwaited(
            f"{where}: scan {line.scanname}: master file "
            f"{os.path.join(local_dir, line.masterscanname)}.{suffix} not there yet: "
            "waiting for it before posting from the beamtime metadata alone"
        )
    logger.warning(
        "%s: scan %s has no master file (looked for %s.%s and %s.%s): its "
        "dataset is posted from the beamtime metadata alone",
        where,
        line.scanname,
        os.path.join(local_dir, line.masterscanname),
        suffix,
        os.path.join(local_dir, line.masterscanname, base),
        suffix,
    )
    return True
