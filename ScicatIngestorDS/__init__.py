"""``ScicatIngestorDS``: the Tango device server of the scingestor SciCat ingestor.

The device is a thin shell over :class:`scingestor.service.IngestorService`;
see ``docs/tango.md`` for registration, properties, attributes and commands.
"""

from __future__ import annotations

from .device import ScicatIngestorDS

__all__ = ["ScicatIngestorDS"]
