"""What the nxsfileinfo fork server imports once, before it forks any worker.

The warm workers (:mod:`scingestor.metadata.inprocess`) are forked from a
fork server; whatever the server imported, every worker has without
importing it again.  Here: nxstools' ``nxsfileinfo`` (with h5py, numpy,
lxml and matplotlib itself) and its correction
(:mod:`scingestor.metadata.nxstools_fix`).  pyplot is not imported here:
that would make the first worker, and so the first dataset of a batch or
of a daemon start, wait ~0.25 s more; each worker imports it in the
background instead, and only its thumbnails wait for it.

Imported only in that server process; it changes its environment
(``MPLBACKEND``), which the ingestor's own process keeps as it is.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import nxstools.nxsfileinfo  # noqa: E402,F401  (the point of this module)

from . import nxstools_fix  # noqa: E402

nxstools_fix.apply()
