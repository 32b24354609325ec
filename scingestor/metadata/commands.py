"""Generator command lines: templates + switches → argument vectors.

The configuration holds the generator commands as text templates
(``nxsfileinfo metadata … -o {metapath}/{scanname}{scanpostfix} …``).
Existing installations pasted the scan name and paths into that text and
ran it through a shell, so a scan called ``x;rm -rf ~`` was a command.  We
split the *template* with :mod:`shlex` first and fill the placeholders in
each argument afterwards: whatever a value holds (spaces, quotes, ``$()``,
``;``) it stays inside its one argument and is never interpreted.

Switches (``-x {chmod}``, ``--oned``, …) are appended only to the built-in
commands, in the order existing installations append them; a command the
user configured is taken as written.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Mapping, Sequence

from ..config import IngestorConfig
from ..errors import ConfigError, GeneratorError
from ..templates import expand

FILE_DATASET = "file_dataset_metadata_generator"
DATASET = "dataset_metadata_generator"
DATABLOCK = "datablock_metadata_generator"
DATABLOCK_STREAM = "datablock_metadata_stream_generator"
ATTACHMENT = "attachment_metadata_generator"
CALLBACK = "metadata_generated_callback"
GENERATORS = (FILE_DATASET, DATASET, DATABLOCK, DATABLOCK_STREAM, ATTACHMENT, CALLBACK)
DATASET_GENERATORS = (FILE_DATASET, DATASET)


def _present(value: object) -> bool:
    """A switch value counts when it is set and not empty.

    Existing installations appended ``-s ''`` for an empty value, which
    handed nxsfileinfo an empty option; an empty value means "not set".
    """
    return value is not None and value != ""


def _switches(config: IngestorConfig, name: str) -> List[str]:
    """The switch templates appended to the built-in command *name*, in order."""
    cfg = config
    switches: List[str] = []
    if name in DATASET_GENERATORS and not cfg.relative_path_in_datablock:
        switches.append(cfg.relative_path_generator_switch)
    if _present(cfg.chmod_json_files):
        switches.append(cfg.chmod_generator_switch)
    if name == CALLBACK:
        if cfg.metadata_group_map_file:
            switches.append(cfg.metadata_group_map_file_generator_switch)
        if cfg.raw_metadata_callback:
            switches.append(cfg.raw_metadata_callback_switch)
    if name in DATASET_GENERATORS:
        if _present(cfg.hidden_attributes):
            switches.append(cfg.hidden_attributes_generator_switch)
        if cfg.metadata_copy_map_file:
            switches.append(cfg.metadata_copy_map_file_generator_switch)
        if cfg.oned_in_metadata:
            switches.append(cfg.oned_dataset_generator_switch)
            if cfg.max_oned_size is not None:
                switches.append(cfg.max_oned_dataset_generator_switch)
        if cfg.add_empty_units:
            switches.append(cfg.add_empty_units_generator_switch)
    if name == ATTACHMENT:
        if _present(cfg.attachment_signal_names):
            switches.append(cfg.attachment_signals_generator_switch)
        if _present(cfg.attachment_axes_names):
            switches.append(cfg.attachment_axes_generator_switch)
        if _present(cfg.attachment_image_frame_number):
            switches.append(cfg.attachment_frame_generator_switch)
        if cfg.override_attachment_signals:
            switches.append(cfg.override_attachment_signals_generator_switch)
    return switches


def command_template(config: IngestorConfig, name: str) -> str:
    """The full template of generator *name*: built-in + switches, or as configured."""
    if name not in GENERATORS:
        raise KeyError(name)
    template = getattr(config, name)
    if config.default_is_used(name):
        template = " ".join([template.strip(), *(s.strip() for s in _switches(config, name))])
    return template


def render(template: str, values: Mapping[str, object], what: str = "command") -> List[str]:
    """Split *template* like a shell would, then fill each argument separately."""
    try:
        tokens = shlex.split(template)
    except ValueError as error:
        raise GeneratorError(f"{what}: cannot split the template ({error}): {template}") from None
    try:
        return [expand(token, values, keep_unknown=False) for token in tokens]
    except ConfigError as error:
        raise GeneratorError(f"{what}: {error}") from None


def build_command(
    config: IngestorConfig, name: str, values: Mapping[str, object], extra_paths: Sequence[str] = ()
) -> List[str]:
    """The argument vector of generator *name* for one scan.

    *extra_paths* are appended as they are (the datablock command's scan
    path and detector paths).
    """
    return render(command_template(config, name), values, name) + list(extra_paths)


def scanpath_arguments(
    config: IngestorConfig, values: Mapping[str, object], tokens: Sequence[str]
) -> List[str]:
    """``datablock_metadata_generator_scanpath_postfix`` once per list-line token.

    The postfix (``{scanpath}/{scanname}``) is filled with the scan name
    and then with each detector path of the line, so the origdatablock
    holds the scan's files and the detectors' directories.
    """
    arguments: List[str] = []
    postfix = config.datablock_metadata_generator_scanpath_postfix
    for token in tokens:
        token_values: Dict[str, object] = dict(values)
        token_values["scanname"] = token
        arguments += render(postfix, token_values, "datablock_metadata_generator_scanpath_postfix")
    return arguments


def display(argv: Sequence[str]) -> str:
    """A command for log lines: quoted so it can be pasted into a shell safely."""
    return shlex.join(list(argv))
