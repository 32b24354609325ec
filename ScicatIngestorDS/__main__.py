"""``python -m ScicatIngestorDS <instance>``: same as the ``ScicatIngestorDS`` script."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
