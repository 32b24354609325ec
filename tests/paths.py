"""Where the shared fixtures live: ``../shared`` beside the repository."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "fixtures" / "reference-installation"
REFERENCE_DOC = SHARED / "reference" / "scingestor-documentation.txt"
REFERENCE_CONFIGS = sorted((REFERENCE / "configs").glob("*.yaml")) + sorted(
    (REFERENCE / "data").glob("*.yaml"))
