"""The configuration reference, built from the variable declarations.

The documentation's configuration page is generated from these rows (the
Sphinx extension in ``docs/_ext/``), so it cannot drift from the code: a new
variable or a changed default appears there on the next build.  The module
is kept free of Sphinx so that a test can compare the rows with what
``--print-config`` prints without building the documentation.

It reads the declarations only through :data:`scingestor.config.VARIABLES`
and each declaration's ``name``, ``kind``, ``default``, ``documented_default``,
``deviation``, ``doc`` and ``keywords`` (see the module docstring of
:mod:`scingestor.config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional

import yaml

from .config import VARIABLES

__all__ = ["ConfigRow", "config_rows", "yaml_text"]


@dataclass(frozen=True)
class ConfigRow:
    """One variable as the reference shows it; the values are YAML text."""

    name: str
    type: str
    default: str
    #: The default the published documentation states, when it differs; else None.
    documented_default: Optional[str]
    #: Why the real default differs from the documented one ("" when it does not).
    deviation: str
    description: str
    #: The ``{keywords}`` the value may contain, sorted (empty: none).
    keywords: List[str]


def yaml_text(value: Any) -> str:
    """``value`` as the one-line YAML a user would write after ``key:``.

    YAML rather than Python's repr so that the reference shows the spelling of
    ``--print-config`` (``null``, ``false``, ``''``) and a value can be pasted
    into a configuration file; loading the text gives the value back.
    """
    text = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=True, width=math.inf, sort_keys=False
    )
    # a lone scalar is dumped as a document: "x\n...\n"
    if text.endswith("\n...\n"):
        text = text[: -len("\n...\n")]
    return text.strip()


def config_rows() -> List[ConfigRow]:
    """Every variable, in declaration order, with its real and documented defaults."""
    rows = []
    for name, item in VARIABLES.items():
        documented = item.documented_default
        keywords = item.keywords
        rows.append(
            ConfigRow(
                name=name,
                type=item.kind.value,
                default=yaml_text(item.default),
                documented_default=None if documented == item.default else yaml_text(documented),
                deviation=item.deviation,
                description=item.doc,
                keywords=sorted(keywords.allowed) if keywords is not None else [],
            )
        )
    return rows
