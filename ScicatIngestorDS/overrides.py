"""Device properties as configuration overrides.

The device's properties name a few configuration variables; ``ConfigOverrides``
carries any other as YAML lines.  Pure functions, so the mapping is tested
without Tango.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import yaml

from scingestor.errors import ConfigError

#: device property -> configuration variable it overrides
OVERRIDES: Dict[str, str] = {
    "BeamtimeDirs": "beamtime_dirs",
    "ScicatUrl": "scicat_url",
    "CredentialFile": "ingestor_credential_file",
    "StateDir": "ingestor_state_dir",
    "IngestionDelayTime": "ingestion_delay_time",
}


def one_line(text: object) -> str:
    """Tango shows error descriptions in one line: fold what a message spans."""
    return " ".join(str(text).split())


def collect_overrides(
    properties: Mapping[str, Any], extra_lines: Sequence[str] = ()
) -> Dict[str, Any]:
    """Configuration overrides from the device properties; unset ones are left out.

    ``extra_lines`` (the ``ConfigOverrides`` property) are ``key: value``
    YAML lines for any other variable; the named properties win over them.
    """
    overrides: Dict[str, Any] = {}
    text = "\n".join(line for line in extra_lines if line.strip())
    if text:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"not YAML 'key: value' lines: {one_line(error)}", "device property ConfigOverrides"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError("expected 'key: value' lines", "device property ConfigOverrides")
        overrides.update({str(key): value for key, value in data.items()})
    for prop, key in OVERRIDES.items():
        value = properties.get(prop)
        if value is not None and not isinstance(value, (str, bool, int, float)):
            value = [str(item) for item in value]  # a Tango string array
        if value is None or value == "" or value == []:
            continue
        overrides[key] = value
    return overrides
