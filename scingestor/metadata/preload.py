"""What the nxsfileinfo fork server imports once, before it forks any worker.

The warm workers (:mod:`scingestor.metadata.inprocess`) are forked from a
fork server; whatever the server imported, every worker has without
importing it again.  Here: nxstools' ``nxsfileinfo`` (with h5py, numpy,
lxml and matplotlib), its correction
(:mod:`scingestor.metadata.nxstools_fix`) and pyplot with the workers'
drawing shortcuts (:func:`scingestor.metadata.inprocess._plotting`).
pyplot costs the server ~0.14 s; imported by each worker instead it cost
that CPU once per worker (and again whenever workers are replaced).  The
server imports nothing of the ingestor beyond this package (the program's
main script is taken as run, :func:`~scingestor.metadata.inprocess.adopt_main_path`),
so its start-up, and with it the first dataset, does not wait for more.

Imported only in that server process; it changes its environment
(``MPLBACKEND``), which the ingestor's own process keeps as it is.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import nxstools.nxsfileinfo  # noqa: E402,F401  (the point of this module)

from . import inprocess  # noqa: E402

inprocess.adopt_main_path()
inprocess._fix_nxstools()
inprocess._plotting()
