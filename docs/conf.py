"""Sphinx configuration of the scingestor documentation.

The pages are the project's markdown files, read with MyST; the API page and
the configuration reference are generated from the code (autodoc, and the
``scingestor-config`` directive of ``_ext/scingestor_config.py``), so they
follow it.  CI builds with ``-W``: a broken reference fails the build.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# the extension of this folder; the package itself from the source tree only
# when it is not installed (an installed wheel is what the pages describe)
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.append(os.path.dirname(HERE))

from scingestor import __version__  # noqa: E402

project = "scingestor"
author = "scingestor developers"
copyright = "scingestor developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "scingestor_config",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# headings get anchors so that links such as page.md#section resolve
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# the Tango device server needs pytango, the macros sardana; neither is needed
# to read their docstrings
autodoc_mock_imports = ["tango", "sardana"]

html_theme = "alabaster"
html_title = f"scingestor {release}"
