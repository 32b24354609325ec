"""Sphinx directive ``scingestor-config``: the configuration reference as a table.

The rows come from :func:`scingestor.config_reference.config_rows`, i.e. from
the variable declarations themselves, so the page cannot drift from the code.
Each variable gets the anchor ``config-<name>`` for links from other pages.
"""

from __future__ import annotations

from typing import Any, Dict, List

from docutils import nodes
from docutils.parsers.rst import Directive

from scingestor.config_reference import ConfigRow, config_rows

_HEADERS = ("Variable", "Type", "Default", "Description")
_WIDTHS = (20, 12, 28, 40)


def _paragraph(*children: nodes.Node) -> nodes.paragraph:
    return nodes.paragraph("", "", *children)


def _entry(*children: nodes.Node) -> nodes.entry:
    return nodes.entry("", *children)


def _description(row: ConfigRow) -> nodes.entry:
    cell = _entry(_paragraph(nodes.Text(row.description)))
    if row.keywords:
        names: List[nodes.Node] = [nodes.Text("Keywords: ")]
        for index, keyword in enumerate(row.keywords):
            if index:
                names.append(nodes.Text(", "))
            names.append(nodes.literal("", "{" + keyword + "}"))
        cell += _paragraph(*names)
    if row.documented_default is not None:
        cell += _paragraph(
            nodes.Text("Documented default: "),
            nodes.literal("", row.documented_default),
            nodes.Text(f" — {row.deviation}."),
        )
    return cell


def _row(row: ConfigRow) -> nodes.row:
    name = _entry(_paragraph(nodes.literal("", row.name)))
    name["ids"].append(f"config-{row.name.replace('_', '-')}")
    return nodes.row(
        "",
        name,
        _entry(_paragraph(nodes.Text(row.type))),
        _entry(_paragraph(nodes.literal("", row.default))),
        _description(row),
    )


class ScingestorConfig(Directive):
    """Insert the table of every configuration variable (takes no arguments)."""

    has_content = False

    def run(self) -> List[nodes.Node]:
        group = nodes.tgroup(cols=len(_HEADERS))
        for width in _WIDTHS:
            group += nodes.colspec(colwidth=width)
        head = nodes.row("", *(_entry(_paragraph(nodes.Text(text))) for text in _HEADERS))
        group += nodes.thead("", head)
        group += nodes.tbody("", *(_row(row) for row in config_rows()))
        table = nodes.table("", group, classes=["scingestor-config"])
        # the descriptions quote values ('' or '/'): curly quotes would change them
        table["support_smartquotes"] = False
        return [table]


def setup(app: Any) -> Dict[str, Any]:
    app.add_directive("scingestor-config", ScingestorConfig)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
