"""Where the test fixtures live.

The suite carries its own files: ``tests/fixtures/installation/`` holds
what an earlier installation leaves behind (beamtime metadata, list files,
the metadata JSON its ``nxsfileinfo`` runs wrote and its ingested list),
written by ``tests/fixtures/make_installation.py`` with the test builders,
and beamline configurations written by hand.

``../shared`` beside the repository (the development set-up, absent on a
fresh clone) adds files of a real installation and the reference
documentation: the tests that cross-check against those carry
``@pytest.mark.requires_shared`` and are skipped, with the reason, when it
is missing (``tests/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

REPO = Path(__file__).resolve().parents[1]

#: this project's own fixture installation
FIXTURES = REPO / "tests" / "fixtures" / "installation"
FIXTURE_CONFIGS = sorted((FIXTURES / "configs").glob("*.yaml"))

#: the optional shared folder and what the cross-checks read there
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "fixtures" / "reference-installation"
REFERENCE_DOC = SHARED / "reference" / "scingestor-documentation.txt"
REFERENCE_CONFIGS = sorted((REFERENCE / "configs").glob("*.yaml")) + sorted(
    (REFERENCE / "data").glob("*.yaml")
)
SHARED_MISSING = (
    f"cross-check against {SHARED} (files of an existing installation and "
    "the reference documentation), which is not beside this checkout"
)


def installations() -> List[Any]:
    """Parameters for a test that reads an installation's files: ours, then the shared one."""
    return [
        pytest.param(FIXTURES, id="own"),
        pytest.param(REFERENCE, id="reference", marks=pytest.mark.requires_shared),
    ]


def configs() -> List[Any]:
    """Parameters for a test over configuration files: ours, then the shared ones if present."""
    return [pytest.param(path, id=f"own/{path.name}") for path in FIXTURE_CONFIGS] + [
        pytest.param(
            path, id=f"reference/{path.parent.name}/{path.name}", marks=pytest.mark.requires_shared
        )
        for path in REFERENCE_CONFIGS
    ]
