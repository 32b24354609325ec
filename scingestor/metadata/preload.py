"""What the nxsfileinfo fork server imports once, before it forks any worker.

The warm workers (:mod:`scingestor.metadata.inprocess`) are forked from a
fork server; whatever the server imported, every worker has without
importing it again.  Here: nxstools' ``nxsfileinfo`` (with h5py, numpy,
lxml), its correction (:mod:`scingestor.metadata.nxstools_fix`) and pyplot
on the Agg backend, which attachments draw with.  So a worker forked at
the daemon's start, or one that replaces a recycled worker, takes its
first command at once, and the ~0.5 s of imports is paid once, not once
per worker.

Imported only in that server process; it changes its environment
(``MPLBACKEND``), which the ingestor's own process keeps as it is.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import nxstools.nxsfileinfo  # noqa: E402,F401  (the point of this module)

from . import nxstools_fix  # noqa: E402
from .inprocess import _plotting  # noqa: E402

nxstools_fix.apply()
_plotting()
