"""The words the ingestor reports results in: scan outcomes, dataset actions, retry causes.

They used to be bare strings spread over the pipeline, the strategies and
the service, where a typo compared unequal without a word.  Each is now an
enumeration whose members *are* their old strings (``str`` mix-in), so the
JSON of the status and metrics, log lines, counters keyed by the text and
comparisons with the old literals all keep working.
"""

from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """An enumeration whose members print, format and serialise as their text."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class OutcomeStatus(TextEnum):
    """How processing one list line ended (:class:`~scingestor.scantask.ScanOutcome`)."""

    #: posted for the first time
    INGESTED = "ingested"
    #: an existing dataset was patched or given a new version (or got new blocks)
    UPDATED = "updated"
    #: nothing to send: SciCat already holds it
    UNCHANGED = "unchanged"
    #: will not get better by waiting (recorded in the ingested list)
    FAILED = "failed"
    #: transient (SciCat down, file not ready): try again later
    RETRY = "retry"

    @property
    def ok(self) -> bool:
        """Did the line reach SciCat (or need not)?"""
        return self in (OutcomeStatus.INGESTED, OutcomeStatus.UPDATED, OutcomeStatus.UNCHANGED)


class RetryCause(TextEnum):
    """Why a line is retried: what the service waits for before the next try."""

    #: SciCat unreachable, or the login refused
    SCICAT = "scicat"
    #: SciCat answers but keeps failing (5xx past the limit, an ambiguous
    #: 403): waits like an outage, but counts as a failing scan meanwhile
    FAILING = "failing"
    #: a generator command failed (the master file may still be written)
    GENERATOR = "generator"
    #: the ingestor's own files cannot be written (disk full, read-only)
    STATE = "state"
    #: a newly listed scan whose master file is not there yet (the daemon waits a little)
    MASTER = "master"


class DatasetAction(TextEnum):
    """What the update strategy did to a dataset (:class:`~scingestor.strategy.DatasetResult`)."""

    #: POSTed: the pid was not in SciCat
    CREATED = "created"
    #: PATCHed in place (strategies ``patch`` and ``mixed``)
    PATCHED = "patched"
    #: POSTed under the next version pid (strategies ``create`` and ``mixed``)
    NEW_VERSION = "new_version"
    #: exists and equals the metadata: nothing sent
    UNCHANGED = "unchanged"
    #: exists and differs, but strategy ``no``: nothing sent
    KEPT = "kept"
