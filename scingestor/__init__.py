"""scingestor: ingest beamline scan metadata into the SciCat catalogue.

The package is organised in small rooms with one job each (see
``docs/design.md``): configuration, the SciCat REST client, the list-file
grammar, metadata generation, the ingestion pipeline, the state files, the
watchers and the service facade that the CLIs, the Tango device and the
sardana macros call.
"""

__version__ = "0.1.0"
