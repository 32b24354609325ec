"""What pyproject.toml cannot say: the repository's ``macros/`` folder is
installed as the package folder ``scingestor/macros``.

``[tool.setuptools.packages.find]`` finds packages only where they are, so
the mapped folder is added to what ``find_packages`` finds here; see
docs/decisions/0005-macros-installed-from-the-macros-folder.md.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["scingestor", "scingestor.*", "ScicatIngestorDS*"])
    + ["scingestor.macros"],
    package_dir={"scingestor.macros": "macros"},
)
