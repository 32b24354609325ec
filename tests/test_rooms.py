"""The small rooms split off for issue 15: outcomes, templates, scan paths, groups, errors.

Their behaviour is covered where it is used (pipeline, config, batch
tests); these tests pin what the split promises: the enumerations read as
their old strings, the old import places still work, one path converter
serves a beamtime.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from scingestor import errors
from scingestor.beamtime import Beamtime
from scingestor.config import config_from_dict
from scingestor.layout import both_forms, ingested_list_for, list_dir, scan_paths
from scingestor.outcomes import DatasetAction, OutcomeStatus, RetryCause
from scingestor.templates import Keywords, expand, fill_at_load, template_keywords, unknown_keywords


def test_outcome_words_read_as_their_old_strings() -> None:
    status = OutcomeStatus.RETRY
    assert status == "retry" and str(status) == "retry" and f"{status:>6}" == " retry"
    assert "%s" % status == "retry"
    assert json.dumps({"status": status, status: 1}) == '{"status": "retry", "retry": 1}'
    assert Counter([OutcomeStatus.FAILED, "failed"])["failed"] == 2
    assert [str(s) for s in OutcomeStatus] == [
        "ingested",
        "updated",
        "unchanged",
        "failed",
        "retry",
    ]
    assert OutcomeStatus("updated").ok and not OutcomeStatus.FAILED.ok
    assert RetryCause.SCICAT in ("scicat", "state")
    assert DatasetAction.NEW_VERSION == "new_version" and str(DatasetAction.KEPT) == "kept"


def test_old_names_stay_importable() -> None:
    from scingestor.batch import beamtime_directories, resolve_groups
    from scingestor.beamtime import PathConverter
    from scingestor.config import KEYWORD_ALIASES, escape_braces, homepath
    from scingestor.groups import resolve_groups as moved
    from scingestor.journal import JournalError
    from scingestor.layout import PathConverter as converter_class
    from scingestor.metadata.commands import GeneratorError
    from scingestor.pipeline import (
        FAILED_STATUS,
        INGESTED,
        RETRY,
        UNCHANGED,
        UPDATED,
        EmptyMeasurement,
        ScanError,
    )
    from scingestor.strategy import DatasetRejected

    assert resolve_groups is moved and PathConverter is converter_class
    assert callable(beamtime_directories) and callable(homepath) and callable(escape_braces)
    assert KEYWORD_ALIASES["doiprefix"] == "pidprefix"
    assert (INGESTED, UPDATED, UNCHANGED, FAILED_STATUS, RETRY) == tuple(OutcomeStatus)
    for error in (JournalError, GeneratorError, EmptyMeasurement, ScanError, DatasetRejected):
        assert getattr(errors, error.__name__) is error
        assert issubclass(error, errors.ScingestorError)


def _beamtime(directory: str = "/gpfs/current", core: str = "/asap3/p00/2022/data/1") -> Beamtime:
    return Beamtime(
        f"{directory}/beamtime-metadata-99001234.json", "99001234", "11012345", "p00", core
    )


def test_one_path_converter_per_beamtime() -> None:
    on = config_from_dict({"use_corepath_as_scandir": True})
    off = config_from_dict({})
    beamtime = _beamtime()
    # a beamtime read again (an equal copy) gets the same converter
    assert scan_paths(on, beamtime) is scan_paths(on, _beamtime())
    assert scan_paths(on, beamtime) is not scan_paths(off, beamtime)
    assert scan_paths(on, beamtime).to_core("/gpfs/current/raw") == "/asap3/p00/2022/data/1/raw"
    assert scan_paths(off, beamtime).to_core("/gpfs/current/raw") == "/gpfs/current/raw"
    assert both_forms(beamtime).to_local("/asap3/p00/2022/data/1/raw") == "/gpfs/current/raw"
    assert list_dir(on, beamtime, "/gpfs/current/raw/list.lst") == "/asap3/p00/2022/data/1/raw"
    var = config_from_dict(
        {
            "use_corepath_as_scandir": True,
            "ingestor_var_dir": "/var/x",
            "datasets_filename_pattern": "s.lst",
            "ingested_datasets_filename_pattern": "i.lst",
        }
    )
    assert (
        ingested_list_for(var, beamtime, "/gpfs/current/raw/s.lst")
        == "/var/x/asap3/p00/2022/data/1/raw/i.lst"
    )


def test_template_language_on_its_own() -> None:
    assert expand("{a}-{b}-{{x}}", {"a": 1}) == "1-{b}-{x}"
    assert template_keywords("{a}{b:{c}}{a}") == ["a", "b", "c"]
    allowed = Keywords(frozenset({"pidprefix", "beamtimeid"}))
    assert unknown_keywords("{doiprefix}{beamtimeid}{scnname}", allowed) == ["scnname"]
    at_load = Keywords(frozenset({"hostname", "beamtimeid"}), frozenset({"hostname"}))
    filled = fill_at_load(["{beamtimeid}.{{x}}", "plain"], at_load)
    assert filled == ["{beamtimeid}.{{x}}", "plain"]  # braces kept for the later expansion
    assert fill_at_load("{x}", Keywords(frozenset({"x"}))) == "{x}"
    with pytest.raises(errors.ConfigError):
        unknown_keywords("{unclosed", allowed)
