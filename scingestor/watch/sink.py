"""What the watcher reports to: the :class:`WatchSink` protocol, and the paths it gives.

Apart from the watcher so that a sink (the daemon's list intake) can be
written and typed without importing inotify.
"""

from __future__ import annotations

from typing import List

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore

from ..beamtime import Beamtime
from ..config import IngestorConfig
from ..layout import scan_paths
from .tailer import ListRecord


class WatchSink(Protocol):
    """Receives what the watcher finds; called from the ONE event thread.

    Implementations must be quick (enqueue and return): the event thread
    does nothing else while a call runs.  Exceptions are logged and ignored.
    """

    def beamtime_added(self, beamtime: Beamtime) -> None: ...

    def beamtime_changed(self, beamtime: Beamtime) -> None: ...

    def beamtime_removed(self, path: str) -> None: ...

    def beamtime_error(self, path: str, error: Exception) -> None: ...

    def list_file_added(self, beamtime: Beamtime, list_file: str) -> None: ...

    def list_records(
        self, beamtime: Beamtime, list_file: str, records: List[ListRecord]
    ) -> None: ...

    def list_file_removed(self, beamtime: Beamtime, list_file: str) -> None: ...


def core_form(config: IngestorConfig, beamtime: Beamtime, path: str) -> str:
    """*path* (as the sink receives it: the watched form) in the form written to files.

    With ``use_corepath_as_scandir`` a path below the beamtime directory is
    rewritten to the beamtime's ``corePath``; otherwise it is returned as is.
    """
    return scan_paths(config, beamtime).to_core(path)
