"""Configuration: the variable registry against the documentation, keyword
expansion, an installation's files, bad input and coercions."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import socket
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scingestor.config import (
    VARIABLES,
    IngestorConfig,
    Kind,
    config_from_dict,
    id_format,
    load_config,
    proposal_id,
    variable,
)
from scingestor.errors import ConfigError
from scingestor.templates import (
    KEYWORD_ALIASES,
    TEMPLATE_KEYWORDS,
    escape_braces,
    expand,
    homepath,
    hostname,
    template_keywords,
)

from .paths import FIXTURES, REFERENCE, REFERENCE_CONFIGS, SHARED, configs

DOC_FILE = SHARED / "reference" / "scingestor-documentation.txt"
BEHAVIOUR_FILE = SHARED / "spec" / "behaviour.md"

#: cross-checks against ../shared: skipped where it is absent (tests/conftest.py)
needs_shared = pytest.mark.requires_shared

# ---------------------------------------------------------------------------
# The documentation's variable list, as written there: (name, type, default).

DOC_FILE_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} --id-format "
    "{idpattern} -b {beamtimefile} -p {beamtimeid}/{scanname} -w {ownergroup} "
    "-c {accessgroups} {masterfile}"
)
DOC_DATASET_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} --id-format "
    "{idpattern} -c {accessgroups} -w {ownergroup} -b {beamtimefile} "
    "-p {beamtimeid}/{scanname}"
)
DOC_DATABLOCK_GEN = (
    "nxsfileinfo origdatablock -s *.pyc,*{datablockpostfix},*{scanpostfix},*~ "
    "-p {doiprefix}/{beamtimeid}/{scanname} -w {ownergroup} -c {accessgroups} "
    "-o {metapath}/{scanname}{datablockpostfix} "
)
DOC_STREAM_GEN = (
    "nxsfileinfo origdatablock -s *.pyc,*{datablockpostfix},*{scanpostfix},*~ "
    "-w {ownergroup} -c {accessgroups} -p {doiprefix}/{beamtimeid}/{scanname} "
)
DOC_ATTACHMENT_GEN = (
    "nxsfileinfo attachment -w {ownergroup} -c {accessgroups} "
    "-o {metapath}/{scanname}{attachmentpostfix} {plotfile} "
)
DOC_CALLBACK = (
    "nxsfileinfo groupmetadata {lastmeasurement} -m {metapath}/{scanname}{scanpostfix} "
    "-d {metapath}/{scanname}{datablockpostfix} "
    "-a {metapath}/{scanname}{attachmentpostfix} -p {beamtimeid}/{lastmeasurement} "
    "-f -k4 "
)
STRATEGY_TYPE = '"no","patch","create","mixed"'
WITHOUT_CHECKS = [
    "techniques",
    "classification",
    "createdBy",
    "updatedBy",
    "datasetlifecycle",
    "numberOfFiles",
    "size",
    "createdAt",
    "updatedAt",
    "history",
    "creationTime",
    "version",
    "scientificMetadata",
    "endTime",
]

DOC_TABLE: List[Tuple[str, str, Any]] = [
    ("scicat_url", "str", "http://localhost:3000/api/v3"),
    ("ingestor_credential_file", "str", None),
    ("beamtime_dirs", "list<str>", []),
    ("beamtime_base_dir", "str", ""),
    ("ingestor_var_dir", "str", ""),
    ("ingestor_username", "str", "ingestor"),
    ("dataset_pid_prefix", "str", ""),
    ("dataset_update_strategy", STRATEGY_TYPE, "patch"),
    ("patch_dataset_fields_to_skip", "list<str>", ["pid", "type"]),
    ("relative_path_in_datablock", "bool", False),
    (
        "scandir_blacklist",
        "list<str>",
        ["/gpfs/current/scratch_bl", "/gpfs/current/processed", "/gpfs/current/shared"],
    ),
    ("beamtimeid_blacklist_file", "str", None),
    ("beamtime_type_blacklist", "list<str>", ["P"]),
    ("chmod_json_files", "str", None),
    ("max_scandir_depth", "int", -1),
    ("oned_in_metadata", "bool", False),
    ("force_measurement_keyword", "bool", True),
    ("force_generate_measurement", "bool", False),
    ("max_oned_size", "int", None),
    ("scan_metadata_postfix", "str", ".scan.json"),
    ("datablock_metadata_postfix", "str", ".origdatablock.json"),
    ("attachment_metadata_postfix", "str", ".attachment.json"),
    ("metadata_in_var_dir", "bool", True),
    ("use_corepath_as_scandir", "bool", False),
    ("watch_scandir_subdir", "bool", False),
    ("beamtime_filename_postfix", "str", "beamtime-metadata-"),
    ("beamtime_filename_prefix", "str", ".json"),
    ("scicat_proposal_id_pattern", "str", "{proposalid}.{beamtimeid}"),
    ("datasets_filename_pattern", "str", "scicat-datasets-{beamtimeid}.lst"),
    ("ingested_datasets_filename_pattern", "str", "scicat-ingested-datasets-{beamtimeid}.lst"),
    ("file_dataset_metadata_generator", "str", DOC_FILE_GEN),
    ("dataset_metadata_generator", "str", DOC_DATASET_GEN),
    ("datablock_metadata_generator", "str", DOC_DATABLOCK_GEN),
    ("datablock_metadata_stream_generator", "str", DOC_STREAM_GEN),
    ("datablock_metadata_generator_scanpath_postfix", "str", " {scanpath}/{scanname} "),
    ("attachment_metadata_generator", "str", DOC_ATTACHMENT_GEN),
    ("metadata_generated_callback", "str", DOC_CALLBACK),
    ("metadata_group_map_file", "str", ""),
    ("raw_metadata_callback", "bool", False),
    ("single_datablock_ingestion", "bool", False),
    ("skip_multi_datablock_ingestion", "bool", False),
    ("skip_multi_attachment_ingestion", "bool", False),
    ("skip_scan_dataset_ingestion", "bool", False),
    ("call_metadata_generated_callback", "bool", False),
    ("metadata_group_map_file_generator_switch", "str", " --group-map-file {groupmapfile} "),
    ("raw_metadata_callback_switch", "str", " --raw "),
    ("execute_commands", "bool", True),
    ("plot_file_extension_list", "list<str>", ["png", "nxs", "h5", "ndf", "nx", "fio"]),
    ("master_file_extension_list", "list<str>", ["nxs", "h5", "ndf", "nx", "fio"]),
    ("chmod_generator_switch", "str", " -x {chmod} "),
    ("relative_path_generator_switch", "str", " -r {relpath} "),
    ("oned_dataset_generator_switch", "str", " --oned "),
    ("max_oned_dataset_generator_switch", "str", " --max-oned-size {maxonedsize} "),
    ("override_attachment_signals_generator_switch", "bool", " --override "),
    ("hidden_attributes_generator_switch", "str", " -n {hiddenattributes} "),
    ("hidden_attributes", "str", "nexdatas_source,nexdatas_strategy,units"),
    ("attachment_signals_generator_switch", "str", " -s {signals} "),
    ("attachment_axes_generator_switch", "str", " -e {axes} "),
    ("attachment_frame_generator_switch", "str", " -m {frame} "),
    ("attachment_signal_names", "str", ""),
    ("attachment_axes_names", "str", ""),
    ("attachment_image_frame_number", "str", ""),
    ("ingest_dataset_attachment", "bool", True),
    ("override_attachment_signals", "bool", False),
    ("retry_failed_dataset_ingestion", "bool", True),
    ("retry_failed_attachment_ingestion", "bool", False),
    ("log_generator_commands", "bool", False),
    ("add_empty_units_generator_switch", "str", " --add-empty-units "),
    ("add_empty_units", "bool", True),
    ("metadata_copy_map_file", "str", None),
    ("metadata_copy_map_file_generator_switch", "str", " --copy-map-file {copymapfile} "),
    ("inotify_timeout", "float", 1.0),
    ("get_event_timeout", "float", 0.1),
    ("ingestion_delay_time", "float", 5.0),
    ("max_request_tries_number", "int", 100),
    ("recheck_dataset_list_interval", "int", 1000),
    ("recheck_beamtime_file_interval", "int", 1000),
    (
        "request_headers",
        "dict<str,str>",
        {"Content-Type": "application/json", "Accept": "application/json"},
    ),
    ("scicat_datasets_path", "str", "Datasets"),
    ("scicat_proposals_path", "str", "Proposals"),
    ("scicat_datablocks_path", "str", "OrigDatablocks"),
    ("scicat_users_login_path", "str", "Users/login"),
    ("scicat_attachments_path", "str", "Datasets/{pid}/Attachments"),
    ("owner_access_groups_from_proposal", "bool", False),
    ("metadata_fields_without_checks", "list<str>", WITHOUT_CHECKS),
    ("metadata_fields_cannot_be_patched", "list<str>", []),
]

# Known deviations (behaviour.md §1): variable -> (real default, reason).
REAL_FILE_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} "
    "--id-format '{idpattern}' -z '{measurement}' -e '{entryname}' "
    "-b {beamtimefile} -p {beamtimeid}/{scanname} -w {ownergroup} "
    "-c {accessgroups} {masterfile}"
)
REAL_DATASET_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} "
    "--id-format '{idpattern}' -c {accessgroups} -w {ownergroup} "
    "-z '{measurement}' -e '{entryname}' -b {beamtimefile} "
    "-p {beamtimeid}/{scanname}"
)
REAL_STREAM_GEN = (
    "nxsfileinfo origdatablock "
    "-s *.pyc,*{datablockpostfix},*{scanpostfix},*{attachmentpostfix},*~ "
    "-r '{dbrelpath}' -p {pidprefix}{beamtimeid}/{scanname} "
    "-w {ownergroup} -c {accessgroups}"
)
REAL_DATABLOCK_GEN = REAL_STREAM_GEN + " -o {metapath}/{scanname}{datablockpostfix}"
REAL_ATTACHMENT_GEN = (
    "nxsfileinfo attachment -w {ownergroup} -c {accessgroups} "
    "-n '{entryname}' -o {metapath}/{scanname}{attachmentpostfix} {plotfile}"
)
REAL_CALLBACK = (
    "nxsfileinfo groupmetadata {lastmeasurement} "
    "-m {metapath}/{scanname}{scanpostfix} "
    "-d {metapath}/{scanname}{datablockpostfix} "
    "-a {metapath}/{scanname}{attachmentpostfix} "
    "-o {metapath}/{lastmeasurement}{scanpostfix} "
    "-l {metapath}/{lastmeasurement}{datablockpostfix} "
    "-t {metapath}/{lastmeasurement}{attachmentpostfix} "
    "-p {beamtimeid}/{lastmeasurement} -f -k4"
)
OLDER = (
    "doc shows an older command (no -z/-e/-n, *{attachmentpostfix}, -r '{dbrelpath}', "
    "-o/-l/-t; uses {doiprefix})"
)
UNSET = "unset in the code: a present value, even '', appends its switch"

DEVIATIONS: Dict[str, Tuple[Any, str]] = {
    "beamtime_filename_prefix": ("beamtime-metadata-", "doc swaps prefix and postfix"),
    "beamtime_filename_postfix": (".json", "doc swaps prefix and postfix"),
    "file_dataset_metadata_generator": (REAL_FILE_GEN, OLDER),
    "dataset_metadata_generator": (REAL_DATASET_GEN, OLDER),
    "datablock_metadata_generator": (REAL_DATABLOCK_GEN, OLDER),
    "datablock_metadata_stream_generator": (REAL_STREAM_GEN, OLDER),
    "attachment_metadata_generator": (REAL_ATTACHMENT_GEN, OLDER),
    "metadata_generated_callback": (REAL_CALLBACK, OLDER),
    "metadata_group_map_file": (None, UNSET),
    "hidden_attributes": (None, "unset in the code; doc value is nxsfileinfo's own default"),
    "attachment_signal_names": (None, UNSET),
    "attachment_axes_names": (None, UNSET),
    "attachment_image_frame_number": (None, UNSET),
}
# The doc types it as bool; the code (and we) use a string switch.
TYPE_DEVIATIONS = {"override_attachment_signals_generator_switch": "str"}
# Ours, not in the documentation.
NEW_VARIABLES = {
    "generator_in_process": (Kind.BOOL, True),
    "metrics_port": (Kind.OPT_INT, None),
    "metrics_address": (Kind.STR, "127.0.0.1"),
    "ingestor_state_dir": (Kind.STR, ""),
    "ingestion_workers": (Kind.INT, 4),
    "max_generator_attempts": (Kind.INT, 5),
    "retry_base_delay": (Kind.FLOAT, 5.0),
    "request_timeout": (Kind.FLOAT, 30.0),
    "scicat_tls_verify": (Kind.BOOL, True),
    "scicat_ca_bundle": (Kind.OPT_STR, None),
    "replace_without_delete_right": (Kind.STR, "skip"),
}

DOC_KINDS = {
    "str": {Kind.STR, Kind.OPT_STR},
    "int": {Kind.INT, Kind.OPT_INT},
    "bool": {Kind.BOOL},
    "float": {Kind.FLOAT},
    "list<str>": {Kind.STR_LIST},
    "dict<str,str>": {Kind.STR_DICT},
    STRATEGY_TYPE: {Kind.STR},
}

COMMANDS = {
    name
    for name, _t, _d in DOC_TABLE
    if name.endswith(("_generator", "_callback")) and name != "raw_metadata_callback"
}


def words(value: Any) -> Any:
    """Commands compare without regard to whitespace (behaviour.md §1.3)."""
    return " ".join(value.split()) if isinstance(value, str) else value


def parse_documentation(text: str) -> List[Tuple[str, str, Any]]:
    """(name, type, default) of the doc's 'Configuration variables' list.

    The text run-ons ('...default:\\nNonebeamtime_dirs (list<str>)') are split
    where a name follows a value's last character.
    """
    start = text.index("can contain the following variables")
    end = text.index("\ne.g.", start)
    section = text[start:end]
    pattern = re.compile(
        r'(?:(?<=["\]}\n])|(?<=\d)|(?<=None|True)|(?<=False))(?!None|True|False)'
        r"([a-z][a-z0-9_]*) \(\s*([^)]*?)\s*\)\s*,\s*default:\s*",
        re.S,
    )
    matches = list(pattern.finditer(section))
    assert len(matches) == section.count("default:"), "doc layout changed: not every entry found"
    entries = []
    for index, match in enumerate(matches):
        stop = matches[index + 1].start() if index + 1 < len(matches) else len(section)
        raw = section[match.end() : stop].strip()
        literals = {"None": None, "True": True, "False": False}
        if raw in literals:
            value = literals[raw]
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                assert raw.startswith('"'), raw
                value = raw[1:]  # the doc forgot a closing quote
        entries.append((match.group(1), " ".join(match.group(2).split()), value))
    return entries


# ---------------------------------------------------------------------------
# registry vs documentation


@needs_shared
def test_documentation_list_is_the_table_above() -> None:
    parsed = parse_documentation(DOC_FILE.read_text())
    assert [name for name, _t, _d in parsed] == [name for name, _t, _d in DOC_TABLE]
    for (name, doc_type, doc_value), (_n, table_type, table_value) in zip(parsed, DOC_TABLE):
        assert doc_type == table_type, name
        assert words(doc_value) == words(table_value), name


@needs_shared
def test_every_documented_variable_is_declared() -> None:
    parsed = parse_documentation(DOC_FILE.read_text())
    missing = [name for name, _t, _d in parsed if name not in VARIABLES]
    assert not missing


def test_registry_is_the_documentation_plus_our_variables() -> None:
    assert set(VARIABLES) == {name for name, _t, _d in DOC_TABLE} | set(NEW_VARIABLES)
    assert len(DOC_TABLE) == len({name for name, _t, _d in DOC_TABLE})
    for name, (kind, default) in NEW_VARIABLES.items():
        assert (VARIABLES[name].kind, VARIABLES[name].default) == (kind, default)


@pytest.mark.parametrize("name, doc_type, doc_value", DOC_TABLE, ids=[e[0] for e in DOC_TABLE])
def test_default_is_documented_one_or_a_listed_deviation(
    name: str, doc_type: str, doc_value: Any
) -> None:
    declared = VARIABLES[name]
    if name in DEVIATIONS:
        real, reason = DEVIATIONS[name]
        assert reason
        assert declared.default == real
        assert declared.deviation, f"{name}: registry must give the reason too"
        assert words(declared.documented_default) == words(doc_value)
    else:
        assert declared.default == doc_value
        assert not declared.deviation
        assert declared.documented_default == doc_value
    expected_type = TYPE_DEVIATIONS.get(name, doc_type)
    assert declared.kind in DOC_KINDS[expected_type]
    assert declared.optional == (declared.default is None), name
    assert declared.doc


def test_every_declared_deviation_is_listed_here() -> None:
    assert {name for name, item in VARIABLES.items() if item.deviation} == set(DEVIATIONS)


@needs_shared
def test_builtin_commands_are_those_of_the_behaviour_spec() -> None:
    text = BEHAVIOUR_FILE.read_text()
    section = text[text.index("### 1.3") : text.index("## 2.")]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `([^`]+)` \|", section, re.M))
    explicit = [
        "file_dataset_metadata_generator",
        "datablock_metadata_generator",
        "datablock_metadata_generator_scanpath_postfix",
        "attachment_metadata_generator",
        "metadata_generated_callback",
    ]
    for name in explicit:
        assert words(VARIABLES[name].default) == words(rows[name]), name
    # "same without {masterfile}" (other option order) and "same without -o ..."
    file_words = rows["file_dataset_metadata_generator"].split()
    file_words.remove("{masterfile}")
    assert sorted(VARIABLES["dataset_metadata_generator"].default.split()) == sorted(file_words)
    assert words(VARIABLES["datablock_metadata_stream_generator"].default) == words(
        rows["datablock_metadata_generator"].replace(
            "-o {metapath}/{scanname}{datablockpostfix}", ""
        )
    )


def test_defaults_use_only_allowed_keywords() -> None:
    for name, item in VARIABLES.items():
        texts = item.default if isinstance(item.default, list) else [item.default]
        for text in texts:
            if not isinstance(text, str):
                continue
            used = set(template_keywords(text))
            if item.keywords is None:
                assert not used, name
            else:
                assert used <= item.keywords.allowed, name
    assert "doiprefix" in TEMPLATE_KEYWORDS and KEYWORD_ALIASES["doiprefix"] == "pidprefix"


def test_variable_lookup_suggests() -> None:
    assert variable("scicat_url") is IngestorConfig.scicat_url
    with pytest.raises(KeyError, match="skip_multi_datablock_ingestion"):
        variable("skip_multi_origdatablock_ingestion")


# ---------------------------------------------------------------------------
# keyword expansion


def test_expand_basic_and_braces() -> None:
    values = {"scanname": "s_00001", "beamtimeid": "99001234"}
    assert expand("{beamtimeid}/{scanname}", values) == "99001234/s_00001"
    assert expand("{{literal}} {{{scanname}}}", values) == "{literal} {s_00001}"
    assert expand("a}}b{{c", {}) == "a}b{c"
    assert expand("{n:05d}|{s!r}|{s:>4}", {"n": 12, "s": "x"}) == "00012|'x'|   x"
    assert expand("{path.name}", {"path": Path("/a/b.nxs")}) == "b.nxs"


def test_expand_unknown_kept_or_error() -> None:
    assert expand("{known}-{unknown}-{other:>3}", {"known": 1}) == "1-{unknown}-{other:>3}"
    with pytest.raises(ConfigError, match=r"\{unknown\}"):
        expand("{known}-{unknown}", {"known": 1}, keep_unknown=False)
    with pytest.raises(ConfigError, match="malformed"):
        expand("{unclosed", {})
    with pytest.raises(ConfigError, match="malformed"):
        expand("single } brace", {})


def test_doiprefix_alias() -> None:
    assert (
        expand("-p {doiprefix}/{beamtimeid}", {"pidprefix": "10.3204/", "beamtimeid": "9"})
        == "-p 10.3204//9"
    )
    # an explicit value wins over the alias
    assert expand("{doiprefix}", {"doiprefix": "a", "pidprefix": "b"}) == "a"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escaped_text_comes_back_literally(text: str) -> None:
    assert expand(escape_braces(text), {"scanname": "x"}) == text


def test_homepath_in_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert homepath() == str(tmp_path)
    cfg = config_from_dict(
        {
            "beamtime_dirs": ["{homepath}/gpfs/current", "", None, "/abs"],
            "ingestor_credential_file": "{homepath}/gpfs/pwd",
            "scandir_blacklist": ["{homepath}/scratch"],
            "beamtimeid_blacklist_file": "{homepath}/bl.lst",
            "metadata_group_map_file": "{homepath}/g.lst",
            "metadata_copy_map_file": "{homepath}/c.lst",
            "scicat_ca_bundle": "{homepath}/ca.pem",
            "beamtime_base_dir": "{homepath}/base",
            "ingestor_var_dir": "{homepath}/var/{beamtimeid}",
        }
    )
    home = str(tmp_path)
    assert cfg.beamtime_dirs == [f"{home}/gpfs/current", "/abs"]
    assert cfg.ingestor_credential_file == f"{home}/gpfs/pwd"
    assert cfg.scandir_blacklist == [f"{home}/scratch"]
    assert cfg.beamtimeid_blacklist_file == f"{home}/bl.lst"
    assert cfg.metadata_group_map_file == f"{home}/g.lst"
    assert cfg.metadata_copy_map_file == f"{home}/c.lst"
    assert cfg.scicat_ca_bundle == f"{home}/ca.pem"
    assert cfg.beamtime_base_dir == f"{home}/base"
    assert cfg.ingestor_var_dir == f"{home}/var/{{beamtimeid}}"
    # generator commands are filled per scan, not at load
    cfg = config_from_dict({"dataset_metadata_generator": "gen {homepath} {hostname}"})
    assert cfg.dataset_metadata_generator == "gen {homepath} {hostname}"


def test_relative_beamtime_base_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_from_dict({"beamtime_base_dir": "bts"}).beamtime_base_dir == str(tmp_path / "bts")


def test_hostname_in_patterns_and_var_dir() -> None:
    host = socket.gethostname()
    assert hostname() == host
    cfg = config_from_dict(
        {
            "datasets_filename_pattern": "scicat-datasets-{hostname}-{beamtimeid}.lst",
            "ingested_datasets_filename_pattern": "scicat-ingested-{hostname}-{beamtimeid}.lst",
            "ingestor_var_dir": "/var/{hostname}/{beamtimeid}",
        }
    )
    assert cfg.datasets_filename_pattern == f"scicat-datasets-{host}-{{beamtimeid}}.lst"
    assert cfg.ingested_datasets_filename_pattern == f"scicat-ingested-{host}-{{beamtimeid}}.lst"
    assert cfg.ingestor_var_dir == f"/var/{host}/{{beamtimeid}}"
    assert expand(cfg.ingestor_var_dir, {"beamtimeid": "99001234"}) == f"/var/{host}/99001234"


def test_escapes_survive_load_in_values_expanded_later() -> None:
    cfg = config_from_dict({"ingestor_var_dir": "/v/{{x}}/{hostname}/{beamtimeid}"})
    host = socket.gethostname()
    assert expand(cfg.ingestor_var_dir, {"beamtimeid": "1"}) == f"/v/{{x}}/{host}/1"
    # a pure path is expanded once, at load: the escape gives a literal brace
    assert config_from_dict({"beamtime_dirs": ["/b/{{x}}"]}).beamtime_dirs == ["/b/{x}"]


def test_proposal_id_both_spellings() -> None:
    cfg = config_from_dict({})
    assert proposal_id(cfg, "11012345", "99001234") == "11012345.99001234"
    assert id_format(cfg) == "{proposalId}.{beamtimeId}"
    cfg = cfg.replace(scicat_proposal_id_pattern="{proposalId}-{beamtimeId}")
    assert proposal_id(cfg, "11012345", "99001234") == "11012345-99001234"
    cfg = cfg.replace(scicat_proposal_id_pattern="{beamtimeid}")
    assert proposal_id(cfg, "11012345", "99001234") == "99001234"


def test_unknown_template_keyword_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "conf.yaml"
    config.write_text(
        'datablock_metadata_generator: "gen -p {doiprefix}{beamtimeid} {scnname}"\n'
        'chmod_generator_switch: " -x {chmod} "\n'
        'datasets_filename_pattern: "list-{beamtime}.lst"\n'
    )
    with caplog.at_level(logging.WARNING, logger="scingestor.config"):
        cfg = load_config(str(config))
    messages = [r.getMessage() for r in caplog.records if r.name == "scingestor.config"]
    assert len(messages) == 2, messages
    assert str(config) in messages[0] and "datablock_metadata_generator" in messages[0]
    assert "{scnname}" in messages[0] and "doiprefix" not in messages[0].split("allowed")[0]
    assert "datasets_filename_pattern" in messages[1] and "{beamtime}" in messages[1]
    assert cfg.datablock_metadata_generator.endswith("{scnname}")


def test_malformed_template_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "conf.yaml"
    config.write_text('dataset_metadata_generator: "gen {scanname"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(config))
    assert info.value.key == "dataset_metadata_generator" and info.value.path == str(config)


# ---------------------------------------------------------------------------
# an installation's configuration files: ours, and the shared ones where present


@needs_shared
def test_reference_configs_exist() -> None:
    assert len(REFERENCE_CONFIGS) >= 9


@pytest.mark.parametrize("path", configs())
def test_installation_config_loads_and_round_trips(path: Path) -> None:
    cfg = load_config(str(path))
    assert cfg.source == str(path)
    assert cfg.unknown_keys == ()
    assert cfg.beamtime_filename_prefix == "beamtime-metadata-"
    assert "{hostname}" not in cfg.datasets_filename_pattern
    assert "{homepath}" not in "".join(cfg.beamtime_dirs)
    assert cfg.chmod_json_files in (None, "0o666")
    text = cfg.to_yaml()
    again = config_from_dict(yaml.safe_load(text))
    assert again.to_dict() == cfg.to_dict()
    assert again == cfg
    assert list(yaml.safe_load(text)) == list(VARIABLES)


@pytest.mark.parametrize(
    "path, url",
    [
        pytest.param(
            FIXTURES / "configs" / "beamline.yaml", "https://scicat.example.org/api/v3", id="own"
        ),
        pytest.param(
            REFERENCE / "configs" / "p08config.yaml",
            "https://scicat.desy.de/api/v3",
            id="reference",
            marks=needs_shared,
        ),
    ],
)
def test_beamline_config_values(path: Path, url: str) -> None:
    cfg = load_config(str(path))
    host = socket.gethostname()
    assert cfg.chmod_json_files == "0o666" and cfg.chmod_mode() == 0o666
    assert cfg.scicat_users_login_path == "auth/login"
    assert cfg.scicat_url == url
    assert cfg.datasets_filename_pattern == f"scicat-datasets-{host}-{{beamtimeid}}.lst"
    assert cfg.ingested_datasets_filename_pattern == cfg.datasets_filename_pattern
    assert cfg.metadata_fields_cannot_be_patched == ["pid", "type"]
    assert cfg.max_scandir_depth == 1 and cfg.oned_in_metadata is True
    assert cfg.is_set("hidden_attributes") and not cfg.is_set("dataset_update_strategy")
    assert cfg.dataset_update_strategy == "patch"
    assert cfg.default_is_used("file_dataset_metadata_generator")


# ---------------------------------------------------------------------------
# bad input


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(str(missing))
    assert info.value.path == str(missing) and str(missing) in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory") as info:
        load_config(str(tmp_path))
    assert info.value.path == str(tmp_path)


def test_unreadable_path(tmp_path: Path) -> None:
    # works for root as well: a path through a regular file cannot be opened
    plain = tmp_path / "plain.yaml"
    plain.write_text("scicat_url: http://x\n")
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(str(plain / "child.yaml"))
    assert info.value.path == str(plain / "child.yaml")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_unreadable_file(tmp_path: Path) -> None:
    config = tmp_path / "secret.yaml"
    config.write_text("scicat_url: http://x\n")
    config.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(config))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("scicat_url: http://x\nbeamtime_dirs: [unclosed\nmax_scandir_depth: 1\n")
    with pytest.raises(ConfigError, match=r"line \d+") as info:
        load_config(str(config))
    message = str(info.value)
    assert "\n" not in message and str(config) in message and "YAML" in message


def test_invalid_utf8(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"scicat_url: \xff\xfe\xfa\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(config))
    assert "\n" not in str(info.value) and info.value.path == str(config)


@pytest.mark.parametrize(
    "content, found", [("- a\n- b\n", "list"), ("just text\n", "string"), ("42\n", "integer")]
)
def test_top_level_not_a_mapping(tmp_path: Path, content: str, found: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=f"mapping.*{found}"):
        load_config(str(config))
    with pytest.raises(ConfigError, match="mapping"):
        config_from_dict(["a"])  # type: ignore[arg-type]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("# nothing but a comment\n")
    cfg = load_config(str(config))
    assert cfg == load_config(None) and cfg.source == str(config)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("scicat_url", ["http://x"], "a string"),
        ("ingestor_credential_file", {"a": 1}, "a string"),
        ("execute_commands", "maybe", "a boolean"),
        ("execute_commands", 2, "a boolean"),
        ("max_scandir_depth", "deep", "an integer"),
        ("max_scandir_depth", 1.5, "an integer"),
        ("max_scandir_depth", True, "an integer"),
        ("max_oned_size", [1], "an integer"),
        ("ingestion_delay_time", "soon", "a number"),
        ("ingestion_delay_time", False, "a number"),
        ("ingestion_delay_time", "nan", "a number"),
        ("beamtime_dirs", "/gpfs/current", "a list of strings"),
        ("beamtime_type_blacklist", ["P", ["x"]], "a list of strings"),
        ("scandir_blacklist", {"a": "b"}, "a list of strings"),
        ("request_headers", ["Accept"], "a mapping"),
        ("request_headers", {"Accept": ["a"]}, "a mapping"),
    ],
)
def test_wrong_type(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError, match=f"expected {expected}") as info:
        load_config(str(config))
    assert info.value.key == key and info.value.path == str(config)
    assert str(config) in str(info.value) and key in str(info.value)
    assert "found" in str(info.value)


def test_update_strategy() -> None:
    with pytest.raises(ConfigError, match="no, patch, create, mixed") as info:
        config_from_dict({"dataset_update_strategy": "sometimes"}, "c.yaml")
    assert info.value.key == "dataset_update_strategy" and "c.yaml" in str(info.value)
    for value in ("Create", "MIXED", " no "):
        strategy = config_from_dict({"dataset_update_strategy": value}).dataset_update_strategy
        assert strategy == value.strip().lower()


@pytest.mark.parametrize(
    "key, value",
    [
        ("max_request_tries_number", 0),
        ("ingestion_delay_time", -1),
        ("inotify_timeout", -0.5),
        ("get_event_timeout", -1),
        ("max_scandir_depth", -2),
        ("request_timeout", 0),
        ("max_oned_size", -1),
        ("scicat_url", ""),
        ("scicat_url", "///"),
    ],
)
def test_impossible_values(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({key: value}, "c.yaml")
    assert info.value.key == key


def test_unknown_key_warns_with_suggestion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("skip_multi_origdatablock_ingestion: true\nzzz_qqq: 1\n")
    with caplog.at_level(logging.WARNING, logger="scingestor.config"):
        cfg = load_config(str(config))
    messages = [r.getMessage() for r in caplog.records if r.name == "scingestor.config"]
    assert len(messages) == 2
    assert str(config) in messages[0] and "skip_multi_origdatablock_ingestion" in messages[0]
    assert "did you mean 'skip_multi_datablock_ingestion'" in messages[0]
    assert "zzz_qqq" in messages[1] and "did you mean" not in messages[1]
    assert cfg.unknown_keys == ("skip_multi_origdatablock_ingestion", "zzz_qqq")
    assert cfg.skip_multi_datablock_ingestion is False


def test_duplicate_key_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("max_scandir_depth: 1\nmax_scandir_depth: 2\n")
    with caplog.at_level(logging.WARNING, logger="scingestor.config"):
        cfg = load_config(str(config))
    assert cfg.max_scandir_depth == 2
    assert any("more than once" in r.getMessage() for r in caplog.records)


def test_null_value_keeps_default_but_is_set(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "attachment_signal_names:\nmax_scandir_depth: ~\n"
        "file_dataset_metadata_generator:\nbeamtime_dirs:\n"
    )
    cfg = load_config(str(config))
    assert cfg.attachment_signal_names is None and cfg.is_set("attachment_signal_names")
    assert cfg.max_scandir_depth == -1 and cfg.is_set("max_scandir_depth")
    assert cfg.beamtime_dirs == []
    assert cfg.file_dataset_metadata_generator == REAL_FILE_GEN
    assert cfg.is_set("file_dataset_metadata_generator")
    assert cfg.default_is_used("file_dataset_metadata_generator")


# ---------------------------------------------------------------------------
# coercions


@pytest.mark.parametrize(
    "written, expected",
    [
        ("0o666", "0o666"),  # PyYAML: a string
        ("'0o644'", "0o644"),
        ("0666", "0o666"),  # PyYAML: int 438, written as octal
        ("666", "0o666"),  # the original passed '666' to nxsfileinfo -x (octal)
        ("438", "0o666"),  # not octal digits: a mode value
        ("0x1b6", "0o666"),
        ("'755'", "755"),
    ],
)
def test_chmod_forms_in_files(tmp_path: Path, written: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"chmod_json_files: {written}\n")
    cfg = load_config(str(config))
    assert cfg.chmod_json_files == expected
    assert cfg.chmod_mode() == int(expected, 8)


def test_chmod_forms_in_dicts() -> None:
    assert config_from_dict({"chmod_json_files": 438}).chmod_json_files == "0o666"
    assert config_from_dict({"chmod_json_files": 0o640}).chmod_json_files == "0o640"
    assert config_from_dict({}).chmod_mode() is None
    for bad in ("rw-rw-rw-", "0o99", "0o17777", "", True):
        with pytest.raises(ConfigError) as info:
            config_from_dict({"chmod_json_files": bad})
        assert info.value.key == "chmod_json_files"


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("true", True),
        ("False", False),
        ("YES", True),
        ("no", False),
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
        (" On ", True),
    ],
)
def test_bool_coercion(value: Any, expected: bool) -> None:
    assert config_from_dict({"execute_commands": value}).execute_commands is expected


def test_numeric_coercions(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "max_scandir_depth": "2",
            "max_request_tries_number": 5.0,
            "inotify_timeout": 1,
            "get_event_timeout": "0.25",
            "ingestion_delay_time": "1e1",
            "max_oned_size": " 1024 ",
            "recheck_dataset_list_interval": "-1",
        }
    )
    assert cfg.max_scandir_depth == 2 and isinstance(cfg.max_scandir_depth, int)
    assert cfg.max_request_tries_number == 5 and isinstance(cfg.max_request_tries_number, int)
    assert cfg.inotify_timeout == 1.0 and isinstance(cfg.inotify_timeout, float)
    assert cfg.get_event_timeout == 0.25
    assert cfg.ingestion_delay_time == 10.0
    assert cfg.max_oned_size == 1024
    assert cfg.recheck_dataset_list_interval == -1
    config = tmp_path / "config.yaml"
    config.write_text("ingestion_delay_time: 1e3\ninotify_timeout: 2\n")  # 1e3: a YAML string
    cfg = load_config(str(config))
    assert cfg.ingestion_delay_time == 1000.0 and cfg.inotify_timeout == 2.0


def test_strings_keep_their_written_form(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "dataset_pid_prefix: 10.50720\nattachment_image_frame_number: 0\n"
        "master_file_extension_list: [nxs, 5]\n"
        "request_headers: {Accept: application/json, X-Version: 3.10}\n"
    )
    cfg = load_config(str(config))
    assert cfg.dataset_pid_prefix == "10.50720"
    assert cfg.attachment_image_frame_number == "0"
    assert cfg.master_file_extension_list == ["nxs", "5"]
    assert cfg.request_headers == {"Accept": "application/json", "X-Version": "3.10"}
    assert config_from_dict({"dataset_pid_prefix": 7}).dataset_pid_prefix == "7"


def test_scicat_url_trailing_slash() -> None:
    assert (
        config_from_dict({"scicat_url": "http://h:3000/api/v3/"}).scicat_url
        == "http://h:3000/api/v3"
    )
    assert config_from_dict({"scicat_url": "http://h/api//"}).scicat_url == "http://h/api"


# ---------------------------------------------------------------------------
# the config object


def test_is_set_and_default_is_used() -> None:
    cfg = config_from_dict(
        {
            "dataset_metadata_generator": "mygen {scanname}",
            "file_dataset_metadata_generator": REAL_FILE_GEN,
            "chmod_json_files": "0o666",
        }
    )
    assert cfg.is_set("dataset_metadata_generator")
    assert not cfg.default_is_used("dataset_metadata_generator")
    # configured, even identical to the built-in: used verbatim, no switches
    assert cfg.is_set("file_dataset_metadata_generator")
    assert not cfg.default_is_used("file_dataset_metadata_generator")
    assert not cfg.is_set("attachment_metadata_generator")
    assert cfg.default_is_used("attachment_metadata_generator")
    defaults = load_config(None)
    assert defaults.source is None
    assert not any(defaults.is_set(name) for name in VARIABLES)
    assert all(defaults.default_is_used(name) for name in VARIABLES)
    with pytest.raises(KeyError):
        cfg.is_set("no_such_variable")
    with pytest.raises(KeyError):
        cfg.default_is_used("no_such_variable")


def test_replace_validates_and_marks_set() -> None:
    cfg = config_from_dict({"max_scandir_depth": 1}, "c.yaml")
    changed = cfg.replace(dataset_update_strategy="CREATE", scicat_url="http://x/")
    assert changed.dataset_update_strategy == "create" and changed.scicat_url == "http://x"
    assert changed.is_set("dataset_update_strategy") and changed.max_scandir_depth == 1
    assert changed.source == "c.yaml"
    assert cfg.dataset_update_strategy == "patch"  # the original is untouched
    back = changed.replace(dataset_update_strategy=None)
    assert back.dataset_update_strategy == "patch" and back.default_is_used(
        "dataset_update_strategy"
    )
    with pytest.raises(ConfigError, match="did you mean 'max_scandir_depth'"):
        cfg.replace(max_scandir_dept=2)
    with pytest.raises(ConfigError):
        cfg.replace(max_request_tries_number=0)


def test_read_only() -> None:
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.scicat_url = "http://x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.anything = 1  # type: ignore[attr-defined]
    dirs = cfg.scandir_blacklist
    dirs.append("/mine")
    headers = cfg.request_headers
    headers["X"] = "y"
    assert "/mine" not in cfg.scandir_blacklist and "X" not in cfg.request_headers
    assert "/mine" not in VARIABLES["scandir_blacklist"].default


def test_pickle_round_trip() -> None:
    cfg = config_from_dict({"max_scandir_depth": 2, "beamtime_dirs": ["/b"]}, "c.yaml")
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.source == "c.yaml" and again.is_set("beamtime_dirs")
    assert not again.is_set("scicat_url")


def test_strict_constructor() -> None:
    assert IngestorConfig() == load_config(None)
    cfg = IngestorConfig(max_scandir_depth="3", execute_commands="no")
    assert cfg.max_scandir_depth == 3 and cfg.execute_commands is False
    assert cfg.is_set("max_scandir_depth")
    with pytest.raises(ConfigError, match="unknown"):
        IngestorConfig(no_such_key=1)


def test_overrides(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("max_scandir_depth: 1\ningestion_delay_time: 2\n")
    cfg = load_config(
        str(config),
        {"max_scandir_depth": "4", "ingestion_delay_time": None, "scicat_tls_verify": "false"},
    )
    assert cfg.max_scandir_depth == 4 and cfg.ingestion_delay_time == 2.0
    assert cfg.scicat_tls_verify is False and cfg.is_set("scicat_tls_verify")
    assert cfg.source == str(config)
    with pytest.raises(ConfigError):
        load_config(str(config), {"no_such_key": 1})
    assert load_config(None, {"execute_commands": False}).execute_commands is False


def test_to_dict_and_to_yaml_of_defaults() -> None:
    cfg = load_config(None)
    values = cfg.to_dict()
    assert list(values) == list(VARIABLES)
    assert values == {name: item.default for name, item in VARIABLES.items()}
    text = cfg.to_yaml()
    assert text.startswith("#")
    assert yaml.safe_load(text) == values
    assert config_from_dict(yaml.safe_load(text)) == cfg


def test_to_yaml_of_a_loaded_file_round_trips(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "chmod_json_files: 0666\nhidden_attributes: ''\n"
        "dataset_metadata_generator: \"gen '{scanname}' {{x}}\"\n"
        "request_headers: {Accept: 'yes'}\nattachment_axes_names: 'on'\n"
        "ingestor_var_dir: '/v/{{raw}}/{beamtimeid}'\n"
    )
    cfg = load_config(str(config))
    assert cfg.hidden_attributes == "" and cfg.is_set("hidden_attributes")
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again.to_dict() == cfg.to_dict()
