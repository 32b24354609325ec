"""Configuration: every variable, YAML loading, validation.

The ingestor must read the YAML files of an existing installation unchanged,
so the variable names are the YAML keys and the defaults are the *real* ones of
the original code (the published documentation is wrong for some of them; each
such case is declared with ``doc_default=`` and a ``deviation=`` reason).

Every variable is declared exactly once, as a typed attribute of
:class:`IngestorConfig`::

    scicat_url: str = var("http://localhost:3000/api/v3", "SciCat API base URL")

The annotation gives the type, :func:`var` the default, a short doc, the
keywords the value may contain and the documented default when it differs,
and the variable's own rules: a ``check`` of the value, a ``prepare`` hook
before the type is checked (it sees the written YAML text) and a ``finish``
hook after (normalising, e.g. a URL without its trailing ``/``).
Adding a variable is adding one such declaration; the loader knows no
variable by name.

Errors raise :class:`~scingestor.errors.ConfigError` naming the file and the
key, in one line (the CLIs print it as is).  An unknown key is only a warning:
old files carry keys of older versions.

The ``{keyword}`` language of the values lives in :mod:`scingestor.templates`
(import its names from there).
"""

from __future__ import annotations

import copy
import difflib
import enum
import logging
import math
import os
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

import yaml

from .errors import ConfigError, WrongValueType
from .templates import (
    TEMPLATE_KEYWORDS,
    Keywords,
    expand,
    fill_at_load,
    unknown_keywords,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "IngestorConfig",
    "Kind",
    "Var",
    "VARIABLES",
    "UPDATE_STRATEGIES",
    "load_config",
    "config_from_dict",
    "proposal_id",
    "id_format",
    "variable",
]


# ---------------------------------------------------------------------------
# which keywords each kind of value may contain (the language: templates.py)


#: Plain paths: only ``{homepath}``, filled at load.
PATH_KW = Keywords(frozenset({"homepath"}), frozenset({"homepath"}))
#: The variable directory: ``{beamtimeid}`` later; ``{homepath}``/``{hostname}`` at load.
VAR_DIR_KW = Keywords(
    frozenset({"homepath", "hostname", "beamtimeid"}), frozenset({"homepath", "hostname"})
)
#: List-file name patterns: ``{beamtimeid}`` later, ``{hostname}`` at load.
LIST_PATTERN_KW = Keywords(frozenset({"hostname", "beamtimeid"}), frozenset({"hostname"}))
#: The proposal id pattern, both spellings.
PROPOSAL_KW = Keywords(frozenset({"proposalid", "beamtimeid", "proposalId", "beamtimeId"}))
#: REST paths with the dataset pid.
PID_KW = Keywords(frozenset({"pid"}))
#: Generator commands and switches: filled per scan.
TEMPLATE_KW = Keywords(TEMPLATE_KEYWORDS)

# ---------------------------------------------------------------------------
# variable declarations


class Kind(enum.Enum):
    """Value types a variable can have; the description is used in error messages."""

    STR = "a string"
    OPT_STR = "a string (or nothing)"
    BOOL = "a boolean (true/false)"
    INT = "an integer"
    OPT_INT = "an integer (or nothing)"
    FLOAT = "a number"
    STR_LIST = "a list of strings"
    STR_DICT = "a mapping of strings to strings"


_KIND_OF_ANNOTATION = {
    "str": Kind.STR,
    "Optional[str]": Kind.OPT_STR,
    "bool": Kind.BOOL,
    "int": Kind.INT,
    "Optional[int]": Kind.OPT_INT,
    "float": Kind.FLOAT,
    "List[str]": Kind.STR_LIST,
    "list[str]": Kind.STR_LIST,
    "Dict[str, str]": Kind.STR_DICT,
    "dict[str, str]": Kind.STR_DICT,
    "str | None": Kind.OPT_STR,
    "int | None": Kind.OPT_INT,
}

_SAME = object()

#: A value check: returns an error text, or None when the value is fine.
Check = Callable[[Any], Optional[str]]
#: Before the type is checked: (value, the YAML text it was written as) -> value.
Prepare = Callable[[Any, Any], Any]
#: After the type is checked and the load-time keywords are filled: value -> value.
Finish = Callable[[Any], Any]


class Var:
    """One configuration variable; a read-only descriptor on :class:`IngestorConfig`.

    Declared with :func:`var`; ``name`` and ``kind`` come from the attribute
    name and its annotation.
    """

    name: str
    kind: Kind

    def __init__(
        self,
        default: Any,
        doc: str,
        keywords: Optional[Keywords] = None,
        doc_default: Any = _SAME,
        deviation: str = "",
        check: Optional[Check] = None,
        prepare: Optional[Prepare] = None,
        finish: Optional[Finish] = None,
    ) -> None:
        self.default = default
        self.doc = doc
        self.keywords = keywords
        self._doc_default = doc_default
        self.deviation = deviation
        self.check = check
        self.prepare = prepare
        self.finish = finish

    @property
    def documented_default(self) -> Any:
        """The default the user documentation states (differs only with a deviation)."""
        return self.default if self._doc_default is _SAME else self._doc_default

    @property
    def optional(self) -> bool:
        return self.kind in (Kind.OPT_STR, Kind.OPT_INT)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        value = obj._values[self.name]
        if isinstance(value, (list, dict)):
            return copy.copy(value)  # the configuration stays read-only
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"configuration is read-only; use cfg.replace({self.name}=...)")

    def __repr__(self) -> str:
        return f"Var({self.name!r}, {self.kind.name}, default={self.default!r})"


def var(
    default: Any,
    doc: str,
    keywords: Optional[Keywords] = None,
    *,
    doc_default: Any = _SAME,
    deviation: str = "",
    check: Optional[Check] = None,
    prepare: Optional[Prepare] = None,
    finish: Optional[Finish] = None,
) -> Any:
    """Declare a variable (typed ``Any`` so that ``name: str = var(...)`` type-checks)."""
    if (doc_default is _SAME) != (not deviation):
        raise ValueError("doc_default and deviation go together")
    return Var(default, doc, keywords, doc_default, deviation, check, prepare, finish)


def at_least(minimum: float) -> Check:
    def check(value: Any) -> Optional[str]:
        return None if value is None or value >= minimum else f"must be >= {minimum}"

    return check


def positive(value: Any) -> Optional[str]:
    return None if value is None or value > 0 else "must be > 0"


#: Values of ``dataset_update_strategy``.
UPDATE_STRATEGIES: Tuple[str, ...] = ("no", "patch", "create", "mixed")


def _strategy(value: Any) -> Optional[str]:
    if value in UPDATE_STRATEGIES:
        return None
    return f"unknown update strategy {value!r}; valid: {', '.join(UPDATE_STRATEGIES)}"


#: Values of ``replace_without_delete_right``.
DELETE_RIGHT_POLICIES: Tuple[str, ...] = ("skip", "add")


def _delete_policy(value: Any) -> Optional[str]:
    if value in DELETE_RIGHT_POLICIES:
        return None
    return f"unknown value {value!r}; valid: {', '.join(DELETE_RIGHT_POLICIES)}"


def _chmod(value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        return f"{value!r} is not an octal file mode such as 0o666"
    return None if 0 <= mode <= 0o7777 else f"{value!r} is not a file mode (0 to 0o7777)"


def _not_empty(value: Any) -> Optional[str]:
    return None if value else "must not be empty"


def _word(value: str) -> str:
    """A keyword value (a strategy, a policy) as compared: trimmed, lower case."""
    return value.strip().lower()


def _no_trailing_slash(url: str) -> str:
    """URLs are joined with ``/`` + route: a written trailing ``/`` would double it."""
    return url.rstrip("/")


def _absolute(path: str) -> str:
    """A directory the daemon walks stays right whatever the working directory later."""
    return os.path.abspath(path) if path else path


def _empty_for_none(value: Any, raw: Any) -> Any:
    """A list entry left empty in YAML (``- ``) is read as None: make it '' to be dropped."""
    if isinstance(value, (list, tuple)):
        return ["" if entry is None else entry for entry in value]
    return value


def _without_empty(entries: List[str]) -> List[str]:
    return [entry for entry in entries if entry]


def _chmod_text(value: Any, raw: Any) -> Any:
    """Normalise a YAML int mode to the octal string the generators expect.

    PyYAML reads ``0o666`` as the string "0o666" (kept), ``0666`` as 438; the
    original passed ints through ``str()`` to ``nxsfileinfo -x`` which reads
    octal, so a bare ``666`` meant 0o666.  From a file we see the written
    text; from a dict an int is a mode value (438 -> "0o666").
    """
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if isinstance(raw, str):
        text = raw.strip().replace("_", "")
        digits = text[2:] if text[:2].lower() == "0o" else text
        if digits.isdigit() and set(digits) <= set("01234567"):
            return "0o%o" % int(digits, 8)
    return "0o%o" % value


def _stripped(value: Optional[str]) -> Optional[str]:
    return None if value is None else value.strip()


# Built-in generator commands (behaviour.md §1.3).  Whitespace matters only
# between words; the switches keep their spaces because they are appended.
_DATASET_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} --id-format '{idpattern}'"
)
_DATABLOCK_GEN = (
    "nxsfileinfo origdatablock "
    "-s *.pyc,*{datablockpostfix},*{scanpostfix},*{attachmentpostfix},*~ "
    "-r '{dbrelpath}' -p {pidprefix}{beamtimeid}/{scanname} "
    "-w {ownergroup} -c {accessgroups}"
)
_OLD_DOC_CMD = "the documentation shows an older command"

_DOC_FILE_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} --id-format "
    "{idpattern} -b {beamtimefile} -p {beamtimeid}/{scanname} -w {ownergroup} "
    "-c {accessgroups} {masterfile}"
)
_DOC_DATASET_GEN = (
    "nxsfileinfo metadata -k4 -o {metapath}/{scanname}{scanpostfix} --id-format "
    "{idpattern} -c {accessgroups} -w {ownergroup} -b {beamtimefile} "
    "-p {beamtimeid}/{scanname}"
)
_DOC_DATABLOCK_GEN = (
    "nxsfileinfo origdatablock -s *.pyc,*{datablockpostfix},*{scanpostfix},*~ "
    "-p {doiprefix}/{beamtimeid}/{scanname} -w {ownergroup} -c {accessgroups} "
    "-o {metapath}/{scanname}{datablockpostfix} "
)
_DOC_STREAM_GEN = (
    "nxsfileinfo origdatablock -s *.pyc,*{datablockpostfix},*{scanpostfix},*~ "
    "-w {ownergroup} -c {accessgroups} -p {doiprefix}/{beamtimeid}/{scanname} "
)
_DOC_ATTACHMENT_GEN = (
    "nxsfileinfo attachment -w {ownergroup} -c {accessgroups} "
    "-o {metapath}/{scanname}{attachmentpostfix} {plotfile} "
)
_DOC_CALLBACK = (
    "nxsfileinfo groupmetadata {lastmeasurement} "
    "-m {metapath}/{scanname}{scanpostfix} -d {metapath}/{scanname}{datablockpostfix} "
    "-a {metapath}/{scanname}{attachmentpostfix} -p {beamtimeid}/{lastmeasurement} "
    "-f -k4 "
)


# ---------------------------------------------------------------------------
# the configuration


class IngestorConfig:
    """The effective configuration; attribute names are the YAML keys.

    Read-only (share it between threads freely); :meth:`replace` makes a
    changed copy.  ``source`` is the file it came from (None: built-in or
    programmatic), ``unknown_keys`` the keys of the file that were ignored.
    Build it with :func:`load_config` / :func:`config_from_dict`;
    ``IngestorConfig(**values)`` is the strict programmatic form (unknown
    keys are errors).
    """

    # --- SciCat server ---------------------------------------------------
    scicat_url: str = var(
        "http://localhost:3000/api/v3",
        "SciCat API base URL (no trailing /)",
        check=_not_empty,
        finish=_no_trailing_slash,
    )
    ingestor_credential_file: Optional[str] = var(
        None, "file with the ingestor password or token (JSON or plain text)", PATH_KW
    )
    ingestor_username: str = var("ingestor", "SciCat user name for the login")
    scicat_users_login_path: str = var(
        "Users/login", "login path under scicat_url (DESY backends: auth/login)"
    )
    scicat_datasets_path: str = var("Datasets", "datasets path under scicat_url")
    scicat_proposals_path: str = var("Proposals", "proposals path under scicat_url")
    scicat_datablocks_path: str = var("OrigDatablocks", "origdatablocks path under scicat_url")
    scicat_attachments_path: str = var(
        "Datasets/{pid}/Attachments", "attachments path under scicat_url", PID_KW
    )
    request_headers: Dict[str, str] = var(
        {"Content-Type": "application/json", "Accept": "application/json"},
        "HTTP headers of every request (replaced wholesale, not merged)",
    )
    max_request_tries_number: int = var(
        100, "tries of a request before giving up", check=at_least(1)
    )
    request_timeout: float = var(30.0, "seconds allowed to each HTTP request", check=positive)
    scicat_tls_verify: bool = var(True, "verify the server's TLS certificate")
    scicat_ca_bundle: Optional[str] = var(None, "CA bundle file for TLS verification", PATH_KW)

    # --- beamtimes and scan directories ----------------------------------
    beamtime_dirs: List[str] = var(
        [],
        "directories holding beamtime metadata files",
        PATH_KW,
        prepare=_empty_for_none,
        finish=_without_empty,
    )
    beamtime_base_dir: str = var(
        "",
        "directory whose subdirectories are beamtime dirs (daemon only)",
        PATH_KW,
        finish=_absolute,
    )
    beamtime_filename_prefix: str = var(
        "beamtime-metadata-",
        "name prefix of beamtime metadata files",
        doc_default=".json",
        deviation="the documentation swaps prefix and postfix",
    )
    beamtime_filename_postfix: str = var(
        ".json",
        "name postfix of beamtime metadata files",
        doc_default="beamtime-metadata-",
        deviation="the documentation swaps prefix and postfix",
    )
    beamtimeid_blacklist_file: Optional[str] = var(
        None, "file with beamtime ids to skip, one a line", PATH_KW
    )
    beamtime_type_blacklist: List[str] = var(["P"], "proposal types to skip")
    scandir_blacklist: List[str] = var(
        ["/gpfs/current/scratch_bl", "/gpfs/current/processed", "/gpfs/current/shared"],
        "directories never watched (exact path match)",
        PATH_KW,
    )
    max_scandir_depth: int = var(
        -1, "scan dir depth below a beamtime dir (-1: unlimited)", check=at_least(-1)
    )
    use_corepath_as_scandir: bool = var(False, "use the beamtime corePath in scan paths")
    watch_scandir_subdir: bool = var(False, "watch subdirectories of dirs with a list file")
    datasets_filename_pattern: str = var(
        "scicat-datasets-{beamtimeid}.lst", "name of the dataset list file", LIST_PATTERN_KW
    )
    ingested_datasets_filename_pattern: str = var(
        "scicat-ingested-datasets-{beamtimeid}.lst",
        "name of the ingested list file",
        LIST_PATTERN_KW,
    )
    ingestor_var_dir: str = var(
        "", "prefix for state and metadata files ('' or '/': none)", VAR_DIR_KW
    )
    metadata_in_var_dir: bool = var(True, "write metadata JSON under ingestor_var_dir")
    scicat_proposal_id_pattern: str = var(
        "{proposalid}.{beamtimeid}", "SciCat proposalId of a beamtime", PROPOSAL_KW
    )
    owner_access_groups_from_proposal: bool = var(
        False, "take missing owner/access groups from the SciCat proposal"
    )

    # --- datasets and update strategy -------------------------------------
    dataset_pid_prefix: str = var("", "prefix the server adds to dataset pids")
    dataset_update_strategy: str = var(
        "patch",
        "what to do with an existing dataset: " + "/".join(UPDATE_STRATEGIES),
        check=_strategy,
        finish=_word,
    )
    patch_dataset_fields_to_skip: List[str] = var(
        ["pid", "type"], "fields never sent in a PATCH body (the backend rejects them)"
    )
    metadata_fields_cannot_be_patched: List[str] = var(
        [], "top-level fields removed from PATCH bodies"
    )
    metadata_fields_without_checks: List[str] = var(
        [
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
        ],
        "fields (dotted paths) ignored when comparing local and server datasets",
    )
    replace_without_delete_right: str = var(
        "skip",
        "re-ingestion when the SciCat account may not delete (backend: not in "
        "DELETE_GROUPS): 'skip' keeps the old origdatablocks/attachments and posts no "
        "replacement (no duplicates); 'add' posts the new ones beside the old ones. "
        "Said once as a warning (Status, LastError); the scan is recorded either way",
        check=_delete_policy,
        finish=_word,
    )
    relative_path_in_datablock: bool = var(
        False, "datablock paths relative to the beamtime dir instead of the scan dir"
    )
    force_measurement_keyword: bool = var(True, "add the measurement keyword on update")
    force_generate_measurement: bool = var(False, "generate a missing measurement dataset")
    skip_scan_dataset_ingestion: bool = var(False, "do not post scan datasets")
    single_datablock_ingestion: bool = var(False, "always regenerate one origdatablock per scan")
    skip_multi_datablock_ingestion: bool = var(False, "skip origdatablock JSON lists")
    skip_multi_attachment_ingestion: bool = var(False, "skip attachment JSON lists")
    ingest_dataset_attachment: bool = var(True, "post attachments (plots)")
    retry_failed_dataset_ingestion: bool = var(True, "retry scans whose posts failed")
    retry_failed_attachment_ingestion: bool = var(False, "retry failed attachments")

    # --- metadata files ----------------------------------------------------
    scan_metadata_postfix: str = var(".scan.json", "postfix of scan metadata JSON")
    datablock_metadata_postfix: str = var(".origdatablock.json", "postfix of origdatablock JSON")
    attachment_metadata_postfix: str = var(".attachment.json", "postfix of attachment JSON")
    master_file_extension_list: List[str] = var(
        ["nxs", "h5", "ndf", "nx", "fio"], "master file extensions, in search order"
    )
    plot_file_extension_list: List[str] = var(
        ["png", "nxs", "h5", "ndf", "nx", "fio"], "plot file extensions, in search order"
    )
    chmod_json_files: Optional[str] = var(
        None,
        "octal mode of written JSON files (0o666)",
        check=_chmod,
        prepare=_chmod_text,
        finish=_stripped,
    )
    oned_in_metadata: bool = var(False, "put 1D data into the scan metadata")
    max_oned_size: Optional[int] = var(
        None, "largest 1D array kept (with oned_in_metadata)", check=at_least(0)
    )
    hidden_attributes: Optional[str] = var(
        None,
        "NeXus attributes left out of the metadata (comma separated)",
        doc_default="nexdatas_source,nexdatas_strategy,units",
        deviation="unset in the code; the documented value is nxsfileinfo's own default",
    )
    add_empty_units: bool = var(True, "add empty units to the metadata")
    metadata_copy_map_file: Optional[str] = var(
        None, "copy map for the dataset generators", PATH_KW
    )
    metadata_group_map_file: Optional[str] = var(
        None,
        "group map for the measurement callback",
        PATH_KW,
        doc_default="",
        deviation="unset in the code; '' would append the switch",
    )
    attachment_signal_names: Optional[str] = var(
        None,
        "plot signals of attachments (comma separated)",
        doc_default="",
        deviation="unset in the code; any value, even '', appends the switch",
    )
    attachment_axes_names: Optional[str] = var(
        None,
        "plot axes of attachments (comma separated)",
        doc_default="",
        deviation="unset in the code; any value, even '', appends the switch",
    )
    attachment_image_frame_number: Optional[str] = var(
        None,
        "image frame shown in attachments",
        doc_default="",
        deviation="unset in the code; any value, even '', appends the switch",
    )
    override_attachment_signals: bool = var(False, "override the plot signals of the file")

    # --- generator commands -----------------------------------------------
    execute_commands: bool = var(True, "run the generator commands")
    log_generator_commands: bool = var(False, "log each generator command")
    file_dataset_metadata_generator: str = var(
        _DATASET_GEN + " -z '{measurement}' -e '{entryname}' -b {beamtimefile} "
        "-p {beamtimeid}/{scanname} -w {ownergroup} -c {accessgroups} {masterfile}",
        "scan metadata from a master file",
        TEMPLATE_KW,
        doc_default=_DOC_FILE_GEN,
        deviation=_OLD_DOC_CMD,
    )
    dataset_metadata_generator: str = var(
        _DATASET_GEN + " -c {accessgroups} -w {ownergroup} -z '{measurement}' -e '{entryname}' "
        "-b {beamtimefile} -p {beamtimeid}/{scanname}",
        "scan metadata without a master file",
        TEMPLATE_KW,
        doc_default=_DOC_DATASET_GEN,
        deviation=_OLD_DOC_CMD,
    )
    datablock_metadata_generator: str = var(
        _DATABLOCK_GEN + " -o {metapath}/{scanname}{datablockpostfix}",
        "origdatablock metadata to a file",
        TEMPLATE_KW,
        doc_default=_DOC_DATABLOCK_GEN,
        deviation=_OLD_DOC_CMD,
    )
    datablock_metadata_stream_generator: str = var(
        _DATABLOCK_GEN,
        "origdatablock metadata to stdout",
        TEMPLATE_KW,
        doc_default=_DOC_STREAM_GEN,
        deviation=_OLD_DOC_CMD,
    )
    datablock_metadata_generator_scanpath_postfix: str = var(
        " {scanpath}/{scanname} ", "appended to the file-writing datablock command", TEMPLATE_KW
    )
    attachment_metadata_generator: str = var(
        "nxsfileinfo attachment -w {ownergroup} -c {accessgroups} -n '{entryname}' "
        "-o {metapath}/{scanname}{attachmentpostfix} {plotfile}",
        "attachment (plot) metadata",
        TEMPLATE_KW,
        doc_default=_DOC_ATTACHMENT_GEN,
        deviation=_OLD_DOC_CMD,
    )
    metadata_generated_callback: str = var(
        "nxsfileinfo groupmetadata {lastmeasurement} -m {metapath}/{scanname}{scanpostfix} "
        "-d {metapath}/{scanname}{datablockpostfix} -a {metapath}/{scanname}{attachmentpostfix} "
        "-o {metapath}/{lastmeasurement}{scanpostfix} "
        "-l {metapath}/{lastmeasurement}{datablockpostfix} "
        "-t {metapath}/{lastmeasurement}{attachmentpostfix} "
        "-p {beamtimeid}/{lastmeasurement} -f -k4",
        "merges a scan into its measurement",
        TEMPLATE_KW,
        doc_default=_DOC_CALLBACK,
        deviation=_OLD_DOC_CMD,
    )
    call_metadata_generated_callback: bool = var(False, "run the callback outside measurements")
    raw_metadata_callback: bool = var(False, "measurement dataset of type raw")

    # --- switches appended to built-in commands ----------------------------
    chmod_generator_switch: str = var(" -x {chmod} ", "with chmod_json_files", TEMPLATE_KW)
    relative_path_generator_switch: str = var(" -r {relpath} ", "dataset commands", TEMPLATE_KW)
    hidden_attributes_generator_switch: str = var(
        " -n {hiddenattributes} ", "with hidden_attributes", TEMPLATE_KW
    )
    metadata_copy_map_file_generator_switch: str = var(
        " --copy-map-file {copymapfile} ", "with metadata_copy_map_file", TEMPLATE_KW
    )
    oned_dataset_generator_switch: str = var(" --oned ", "with oned_in_metadata", TEMPLATE_KW)
    max_oned_dataset_generator_switch: str = var(
        " --max-oned-size {maxonedsize} ", "with max_oned_size", TEMPLATE_KW
    )
    add_empty_units_generator_switch: str = var(
        " --add-empty-units ", "with add_empty_units", TEMPLATE_KW
    )
    attachment_signals_generator_switch: str = var(
        " -s {signals} ", "with attachment_signal_names", TEMPLATE_KW
    )
    attachment_axes_generator_switch: str = var(
        " -e {axes} ", "with attachment_axes_names", TEMPLATE_KW
    )
    attachment_frame_generator_switch: str = var(
        " -m {frame} ", "with attachment_image_frame_number", TEMPLATE_KW
    )
    override_attachment_signals_generator_switch: str = var(
        " --override ", "with override_attachment_signals", TEMPLATE_KW
    )
    metadata_group_map_file_generator_switch: str = var(
        " --group-map-file {groupmapfile} ", "with metadata_group_map_file", TEMPLATE_KW
    )
    raw_metadata_callback_switch: str = var(" --raw ", "with raw_metadata_callback", TEMPLATE_KW)

    # --- timing --------------------------------------------------------------
    inotify_timeout: float = var(1.0, "seconds of an inotify wait", check=at_least(0))
    get_event_timeout: float = var(0.1, "seconds of an event-queue wait", check=at_least(0))
    ingestion_delay_time: float = var(
        5.0, "seconds between a list change and its ingestion", check=at_least(0)
    )
    recheck_dataset_list_interval: int = var(1000, "loop passes between list re-reads (<=0: never)")
    recheck_beamtime_file_interval: int = var(
        1000, "loop passes between beamtime re-scans (<=0: never)"
    )

    # --- the daemon (ours) -----------------------------------------------------
    ingestor_state_dir: str = var(
        "",
        "where the daemon keeps its job journal "
        "('': ~/.local/state/scingestor/<instance>, one per "
        "configuration file or Tango device)",
        PATH_KW,
    )
    metrics_port: Optional[int] = var(
        None, "port of the Prometheus metrics endpoint (unset: none)", check=at_least(1)
    )
    metrics_address: str = var("127.0.0.1", "address the metrics endpoint listens on")
    generator_in_process: bool = var(
        True, "run nxsfileinfo commands in warm worker processes instead of one process each"
    )
    ingestion_workers: int = var(
        4,
        "scans ingested in parallel (scans grouped into a measurement stay in order)",
        check=at_least(1),
    )
    max_generator_attempts: int = var(
        5,
        "tries of a failing generator command before the scan is recorded as failed",
        check=at_least(1),
    )
    retry_base_delay: float = var(
        5.0,
        "seconds before a scan that failed for a passing "
        "reason is tried again (doubling up to 600 s)",
        check=positive,
    )

    # ------------------------------------------------------------------------

    _values: Dict[str, Any]

    def __init__(self, **values: Any) -> None:
        made = _build(values, source=None, raw=None, strict=True)
        self._init(made._values, made._present, made._defaulted, None, ())

    @classmethod
    def _new(
        cls,
        values: Dict[str, Any],
        present: Iterable[str],
        defaulted: Iterable[str],
        source: Optional[str],
        unknown: Iterable[str],
    ) -> "IngestorConfig":
        obj = cls.__new__(cls)
        obj._init(values, present, defaulted, source, unknown)
        return obj

    def _init(
        self,
        values: Dict[str, Any],
        present: Iterable[str],
        defaulted: Iterable[str],
        source: Optional[str],
        unknown: Iterable[str],
    ) -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_present", frozenset(present))
        object.__setattr__(self, "_defaulted", frozenset(defaulted))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "unknown_keys", tuple(unknown))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"configuration is read-only; use cfg.replace({name}=...)")

    source: Optional[str]
    unknown_keys: Tuple[str, ...]
    _present: FrozenSet[str]
    _defaulted: FrozenSet[str]

    def is_set(self, key: str) -> bool:
        """True when ``key`` was given (file, dict, override, replace), even as ``key:``."""
        variable(key)
        return key in self._present

    def default_is_used(self, key: str) -> bool:
        """True when the value is the built-in default: key absent or given empty (null).

        The engine appends switches only to built-in generator commands and
        uses configured ones verbatim.
        """
        variable(key)
        return key in self._defaulted

    def to_dict(self) -> Dict[str, Any]:
        """Effective values of all variables, in declaration order (a deep copy)."""
        return {name: copy.deepcopy(self._values[name]) for name in VARIABLES}

    def to_yaml(self) -> str:
        """The effective configuration as YAML (every variable), for ``--print-config``."""
        head = f"# scingestor effective configuration ({self.source or 'built-in defaults'})\n"
        return head + yaml.safe_dump(
            self.to_dict(),
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=1000,
        )

    def replace(self, **changes: Any) -> "IngestorConfig":
        """A validated copy with ``changes`` applied (None restores the default)."""
        return _build(changes, source=self.source, raw=None, strict=True, base=self)

    def chmod_mode(self) -> Optional[int]:
        """``chmod_json_files`` as an int mode, None when unset."""
        return None if self.chmod_json_files is None else int(self.chmod_json_files, 8)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IngestorConfig):
            return NotImplemented
        return self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if k not in self._defaulted}
        return f"IngestorConfig(source={self.source!r}, set={changed!r})"


def _collect() -> Dict[str, Var]:
    found: Dict[str, Var] = {}
    annotations = IngestorConfig.__dict__.get("__annotations__", {})
    for name, item in vars(IngestorConfig).items():
        if isinstance(item, Var):
            annotation = str(annotations.get(name, "")).replace("typing.", "")
            if annotation not in _KIND_OF_ANNOTATION:
                raise TypeError(f"variable {name}: unsupported annotation {annotation!r}")
            item.kind = _KIND_OF_ANNOTATION[annotation]
            found[name] = item
    return found


#: Every variable, in declaration order.
VARIABLES: Dict[str, Var] = _collect()


def variable(name: str) -> Var:
    """The declaration of ``name``; KeyError (with a suggestion) if there is none."""
    try:
        return VARIABLES[name]
    except KeyError:
        hint = _suggest(name)
        raise KeyError(
            f"no configuration variable {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
        ) from None


def _suggest(name: str) -> Optional[str]:
    close = difflib.get_close_matches(name, list(VARIABLES), n=1, cutoff=0.6)
    return close[0] if close else None


# ---------------------------------------------------------------------------
# coercion and building


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({text!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


def _to_str(value: Any, raw: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(raw, str) and isinstance(value, (bool, int, float)):
        return raw  # as written in the file: 10.50720 stays so
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise WrongValueType


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise WrongValueType


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise WrongValueType
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise WrongValueType from None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise WrongValueType


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise WrongValueType
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise WrongValueType from None
    else:
        raise WrongValueType
    if not math.isfinite(number):
        raise WrongValueType
    return number


def _coerce(item: Var, value: Any, raw: Any) -> Any:
    kind = item.kind
    if item.prepare is not None:
        value = item.prepare(value, raw)
    if kind in (Kind.STR, Kind.OPT_STR):
        return _to_str(value, raw)
    if kind is Kind.BOOL:
        return _to_bool(value)
    if kind in (Kind.INT, Kind.OPT_INT):
        return _to_int(value)
    if kind is Kind.FLOAT:
        return _to_float(value)
    if kind is Kind.STR_LIST:
        if not isinstance(value, (list, tuple)):
            raise WrongValueType
        entry_raws: List[Any] = (
            raw if isinstance(raw, list) and len(raw) == len(value) else [None] * len(value)
        )
        result = []
        for index, (entry, entry_raw) in enumerate(zip(value, entry_raws)):
            try:
                result.append(_to_str(entry, entry_raw))
            except WrongValueType:
                raise WrongValueType(f"item {index + 1} is {_describe(entry)}") from None
        return result
    if kind is Kind.STR_DICT:
        if not isinstance(value, dict):
            raise WrongValueType
        raws = raw if isinstance(raw, dict) else {}
        result_dict: Dict[str, str] = {}
        for key, entry in value.items():
            try:
                result_dict[_to_str(key, None)] = _to_str(entry, raws.get(key))
            except WrongValueType:
                raise WrongValueType(f"entry {key!r} is {_describe(entry)}") from None
        return result_dict
    raise AssertionError(kind)  # pragma: no cover


def _check_keywords(item: Var, text: str, source: Optional[str]) -> None:
    """Warn about ``{keywords}`` the variable cannot contain (the original crashed)."""
    assert item.keywords is not None
    try:
        names = unknown_keywords(text, item.keywords)
    except ConfigError as exc:
        raise ConfigError(str(exc), source, item.name) from None
    for name in names:
        hint = ""
        if "${" + name + "}" in text:
            hint = " (looks like a shell variable that was not substituted)"
        logger.warning(
            "%s: key '%s': unknown keyword {%s}%s; it is left as written (allowed: %s)",
            source or "<configuration>",
            item.name,
            name,
            hint,
            ", ".join(sorted(item.keywords.allowed)),
        )


def _with_keywords(item: Var, value: Any, source: Optional[str]) -> Any:
    """Template check, then fill the keywords known at load (homepath, hostname)."""
    assert item.keywords is not None
    texts = value if isinstance(value, list) else [value]
    for text in texts:
        if isinstance(text, str):
            _check_keywords(item, text, source)
    return fill_at_load(value, item.keywords)


def _set(item: Var, value: Any, raw: Any, source: Optional[str]) -> Any:
    try:
        value = _coerce(item, value, raw)
    except WrongValueType as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise ConfigError(
            f"expected {item.kind.value}, found {_describe(value)}{detail}", source, item.name
        ) from None
    if item.keywords is not None:
        value = _with_keywords(item, value, source)
    if item.finish is not None:
        value = item.finish(value)
    if item.check is not None:
        problem = item.check(value)
        if problem:
            if repr(value) not in problem:
                problem += f" (found {value!r})"
            raise ConfigError(problem, source, item.name)
    return value


def _build(
    data: Mapping[Any, Any],
    *,
    source: Optional[str],
    raw: Optional[Mapping[str, Any]],
    strict: bool,
    base: Optional[IngestorConfig] = None,
) -> IngestorConfig:
    if base is not None:
        values = dict(base._values)
        present = set(base._present)
        defaulted = set(base._defaulted)
        unknown: List[str] = list(base.unknown_keys)
    else:
        values = {name: copy.deepcopy(item.default) for name, item in VARIABLES.items()}
        present, defaulted, unknown = set(), set(VARIABLES), []
    for key, value in data.items():
        item = VARIABLES.get(key) if isinstance(key, str) else None
        if item is None:
            hint = _suggest(str(key))
            suggestion = f"; did you mean '{hint}'?" if hint else ""
            if strict:
                raise ConfigError(f"unknown configuration key{suggestion}", source, str(key))
            logger.warning(
                "%s: unknown configuration key '%s' ignored%s",
                source or "<configuration>",
                key,
                suggestion,
            )
            unknown.append(str(key))
            continue
        present.add(key)
        if value is None:
            values[key] = copy.deepcopy(item.default)
            defaulted.add(key)
            continue
        values[key] = _set(item, value, (raw or {}).get(key), source)
        defaulted.discard(key)
    return IngestorConfig._new(values, present, defaulted, source, unknown)


def _raw_texts(node: Any) -> Any:
    """The scalars of a YAML node as written (to keep ``10.50720`` or ``0666`` intact)."""
    if isinstance(node, yaml.ScalarNode):
        return node.value
    if isinstance(node, yaml.SequenceNode):
        return [_raw_texts(child) for child in node.value]
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                result[key_node.value] = _raw_texts(value_node)
        return result
    return None


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"not a text file in UTF-8/UTF-16: byte {exc.position}: " + " ".join(
            str(exc.reason).split()
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if mark is None:
        return f"YAML error: {problem}"
    text = f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        text += (
            f" ({' '.join(str(context).split())} started at line "
            f"{context_mark.line + 1}, column {context_mark.column + 1})"
        )
    return text


def _parse_yaml(content: bytes, source: str) -> Tuple[Any, Any]:
    """``yaml.safe_load`` that also returns the node tree (for the written texts)."""
    try:
        loader = yaml.SafeLoader(content)  # the reader checks the encoding right here
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(exc), source) from None
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    logger.warning(
                        "%s: key '%s' appears more than once (line %d); the last value is used",
                        source,
                        key_node.value,
                        key_node.start_mark.line + 1,
                    )
                seen.add(key_node.value)
    return data, node


def config_from_dict(data: Mapping[str, Any], source: Optional[str] = None) -> IngestorConfig:
    """Validate a mapping of YAML keys (as ``yaml.safe_load`` gives it).

    Unknown keys are warned about and ignored; ``None`` values keep the
    default but count as set.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a mapping of configuration keys at top level, found {_describe(data)}",
            source,
        )
    return _build(data, source=source, raw=None, strict=False)


def load_config(
    path: Optional[str], overrides: Optional[Mapping[str, Any]] = None
) -> IngestorConfig:
    """Load a YAML configuration file; ``None`` gives the defaults.

    ``overrides`` (e.g. from command-line options) are applied on top and count
    as set; ``None`` override values are ignored (option not given), unknown
    override keys are errors.
    """
    cfg: IngestorConfig
    if path is None:
        cfg = IngestorConfig._new(
            {name: copy.deepcopy(item.default) for name, item in VARIABLES.items()},
            (),
            VARIABLES,
            None,
            (),
        )
    else:
        source = os.fspath(path)
        try:
            with open(source, "rb") as stream:
                content = stream.read()
        except FileNotFoundError:
            raise ConfigError("configuration file not found", source) from None
        except IsADirectoryError:
            raise ConfigError("is a directory, not a configuration file", source) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the configuration file: {exc.strerror or exc}", source
            ) from None
        data, node = _parse_yaml(content, source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"expected a mapping of configuration keys at top level, found {_describe(data)}",
                source,
            )
        raw = _raw_texts(node) if isinstance(node, yaml.MappingNode) else None
        cfg = _build(data, source=source, raw=raw, strict=False)
    changes = {key: value for key, value in (overrides or {}).items() if value is not None}
    return cfg.replace(**changes) if changes else cfg


# ---------------------------------------------------------------------------
# helpers for the engine


def proposal_id(cfg: IngestorConfig, proposal_id: str, beamtime_id: str) -> str:
    """The SciCat proposalId of a beamtime (``scicat_proposal_id_pattern``)."""
    values = {
        "proposalid": proposal_id,
        "beamtimeid": beamtime_id,
        "proposalId": proposal_id,
        "beamtimeId": beamtime_id,
    }
    return expand(cfg.scicat_proposal_id_pattern, values)


def id_format(cfg: IngestorConfig) -> str:
    """The ``{idpattern}`` keyword: the pattern with capitalised ids (for nxsfileinfo)."""
    return cfg.scicat_proposal_id_pattern.replace("{proposalid}", "{proposalId}").replace(
        "{beamtimeid}", "{beamtimeId}"
    )
