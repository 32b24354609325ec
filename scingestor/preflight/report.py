"""The preflight check's table: its rows, the verdict, and how it is printed.

Kept apart from the checks so that what an operator reads (and what must
never show a secret) is in one place: every detail goes through
:func:`~scingestor.redact.redact` when it is recorded, the whole text again
when it is printed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import SciCatError, SciCatUnreachable
from ..redact import redact

logger = logging.getLogger(__name__)

#: the three answers a row can give
YES, NO, UNKNOWN = "yes", "no", "unknown"

_HEADERS = ("CHECK", "RESULT", "NEEDED", "DETAIL")


@dataclass
class Row:
    """One line of the table: what was tried, ``yes``/``no``/``unknown``, why."""

    check: str
    result: str
    detail: str
    needed: bool = True
    #: the backend setting that grants what is missing (for the verdict)
    right: Optional[str] = None


@dataclass
class PreflightReport:
    """The table, what the check left in SciCat, and the verdict."""

    url: str
    account: str
    rows: List[Row] = field(default_factory=list)
    #: what the check made in SciCat (in order) and whether it is gone again
    made: Dict[str, bool] = field(default_factory=dict)
    #: how to remove an item by hand (shown for what is left behind)
    how: Dict[str, str] = field(default_factory=dict)
    #: what the findings mean for this configuration (printed before the verdict)
    notes: List[str] = field(default_factory=list)
    fatal: Optional[str] = None

    @property
    def left_behind(self) -> List[str]:
        """What the check made and could not remove (pids, ids)."""
        return [item for item, gone in self.made.items() if not gone]

    @property
    def removed(self) -> List[str]:
        return [item for item, gone in self.made.items() if gone]

    def add(
        self, check: str, result: str, detail: str, needed: bool = True, right: Optional[str] = None
    ) -> Row:
        """Record one row; a right is named only where the answer was ``no``."""
        row = Row(check, result, redact(detail), needed, right if result == NO else None)
        self.rows.append(row)
        logger.debug("preflight: %s: %s: %s", check, result, row.detail)
        return row

    @property
    def missing(self) -> List[Row]:
        """Needed checks that did not answer ``yes``."""
        return [row for row in self.rows if row.needed and row.result != YES]

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.missing

    @property
    def verdict(self) -> str:
        if self.fatal is not None:
            return f"NOT READY: {self.fatal}"
        if self.ok:
            return (
                f"READY: account {self.account} can do everything this configuration "
                f"needs at {self.url}"
            )
        parts = [
            f"{row.check} ({row.result}" + (f", needs {row.right}" if row.right else "") + ")"
            for row in self.missing
        ]
        return f"NOT READY: account {self.account} cannot: " + "; ".join(parts)

    def render(self) -> str:
        """The table, what is left behind and the one-line verdict (no secrets)."""
        out = [f"SciCat preflight check: {self.url} as {self.account}", ""]
        out += _table(self.rows)
        out.append("")
        out += _leftovers(self)
        out += self.notes
        out.append(self.verdict)
        return redact("\n".join(out))


def _table(rows: Sequence[Row]) -> List[str]:
    """The rows under their headers, the first three columns padded to one width."""
    lines = [(row.check, row.result, "yes" if row.needed else "no", row.detail) for row in rows]
    widths = [max([len(_HEADERS[i])] + [len(line[i]) for line in lines]) for i in range(3)]

    def fmt(cells: Tuple[str, ...]) -> str:
        return (
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells[:3])) + "  " + cells[3]
        )

    ruler = tuple("-" * w for w in widths) + ("-" * 6,)
    return [fmt(_HEADERS), fmt(ruler)] + [fmt(line) for line in lines]


def _leftovers(report: PreflightReport) -> List[str]:
    """What is still in SciCat (with how to remove it), or that nothing is."""
    if report.left_behind:
        return [
            "Left behind in SciCat (this account could not delete them; a "
            "member of DELETE_GROUPS can):"
        ] + [
            f"  {item}" + (f": {report.how[item]}" if item in report.how else "")
            for item in report.left_behind
        ]
    if report.removed:
        return ["Left behind in SciCat: nothing; made and removed again:"] + [
            f"  {item}" for item in report.removed
        ]
    return ["Left behind in SciCat: nothing"]


def answer(exc: BaseException) -> str:
    """``403: <server message>`` out of a client error (``no answer: …`` without one)."""
    if isinstance(exc, SciCatUnreachable) and exc.status is None:
        return f"no answer: {getattr(exc, 'last_error', '') or exc}"
    if isinstance(exc, SciCatError) and exc.status is not None:
        message = "; ".join(exc.messages) if exc.messages else str(exc).split(": ", 2)[-1]
        return f"{exc.status}: {message}"
    return str(exc)
