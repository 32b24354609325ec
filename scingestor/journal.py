"""The daemon's durable job journal: nothing listed is lost in a crash.

Every list-file record the daemon accepts is written here (append +
``fsync``) before it is acknowledged, together with the byte offset up to
which the list file has been read.  A job is retired once its scan is
recorded in the ingested list.  On start the journal is replayed: jobs not
retired are queued again, and each list file is read on from its offset.
Together with the ingested list (which a re-run job consults first) this
gives at-least-once processing, and the idempotent pipeline turns it into
exactly-once ingestion.

Format: one JSON object per line (``op`` = ``accept`` | ``done`` |
``offset``); a torn last line (crash mid-write) is ignored.  An ``accept``
with a ``check`` (the fingerprint of the list file's bytes before its
offset, see :mod:`scingestor.readpoint`) sets the read point as it is: it
may go back, when the list file was replaced or truncated and read again
from its start.  One without (written by older versions) only moves the
offset forward, as those versions did; at start such an offset is trusted
only when it falls on a line boundary of the file.

A write that fails (disk full, file system turned read-only) is cut back
off the file, so the journal on disk always stays a sequence of whole
entries.  Jobs whose ``accept`` could not be written are kept in memory
and written with the next ``accept`` of their list file; as their list
file's offset was not advanced on disk either, a crash meanwhile makes the
next start read their lines again.

Each ingestor instance has its own state folder (see
:func:`scingestor.layout.state_dir`).  Older versions shared one,
``~/.local/state/scingestor``; a journal left there is *adopted* on start:
an instance takes over the jobs and offsets of the list files it watches
and leaves the rest there, saying so, for the instance that watches them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, TextIO, Tuple, Union

from .errors import JournalError
from .readpoint import ReadPoint

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = "journal.lock"
#: seconds an instance waits for another one adopting jobs from the shared journal
SHARED_LOCK_PATIENCE = 10.0
#: beamtime metadata file names of the default configuration: ``<prefix><id><postfix>``
_BEAMTIME_PREFIX, _BEAMTIME_POSTFIX = "beamtime-metadata-", ".json"


@dataclass
class Job:
    """One accepted list line, with the measurement context it was listed in."""

    id: int
    list_file: str
    beamtime_file: str
    lineno: int
    text: str
    measurement: str = ""
    last_measurement: str = ""
    is_measurement: bool = False
    reingest: bool = False
    forced: bool = False
    attempts: int = 0


def default_state_dir() -> str:
    """The folder shared by all instances before state folders were per instance."""
    return os.path.join(os.path.expanduser("~"), ".local", "state", "scingestor")


def describe_beamtimes(jobs: Iterable[Job], limit: int = 10) -> str:
    """The beamtimes of *jobs* for a log line: ``<id> (<directory>)``, sorted.

    The id is read off the metadata file name when it has the usual form;
    otherwise the file's path names the beamtime.
    """
    labels = sorted({_beamtime_label(job.beamtime_file) for job in jobs})
    if len(labels) > limit:
        labels = labels[:limit] + [f"and {len(labels) - limit} more"]
    return ", ".join(labels)


def _beamtime_label(path: str) -> str:
    name = os.path.basename(path)
    if (
        name.startswith(_BEAMTIME_PREFIX)
        and name.endswith(_BEAMTIME_POSTFIX)
        and len(name) > len(_BEAMTIME_PREFIX) + len(_BEAMTIME_POSTFIX)
    ):
        ident = name[len(_BEAMTIME_PREFIX) : -len(_BEAMTIME_POSTFIX)]
        return f"{ident} ({os.path.dirname(path)})"
    return path


def _identity(job: Job) -> Tuple[str, str, bool, bool]:
    """What makes two jobs the same work: the list line and how it is ingested."""
    return (job.list_file, job.text, job.reingest, job.forced)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Append-only journal in ``<state dir>/journal.jsonl``, locked to one daemon.

    *shared_dir* is where older versions kept the journal of every instance:
    when given (the instance uses its default state folder), :meth:`open`
    adopts the jobs found there that the instance watches.
    """

    def __init__(self, state_dir: Optional[str] = None, shared_dir: Optional[str] = None) -> None:
        self.directory = state_dir or default_state_dir()
        self.path = os.path.join(self.directory, JOURNAL_NAME)
        self.shared_dir = shared_dir
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self._size = 0  # bytes of whole entries in the file
        self._lock_handle: Optional[TextIO] = None
        self._next_id = 1
        self._offsets: Dict[str, ReadPoint] = {}
        self._pending: Dict[int, Job] = {}
        # jobs accepted while the journal could not be written, per list file
        self._unsaved: Dict[str, List[int]] = {}
        self._write_failing = False
        self._whole = 0  # end of the last whole entry read at replay

    # -- opening -------------------------------------------------------------

    def open(self, adopt: Optional[Callable[[str], bool]] = None) -> List[Job]:
        """Lock, replay and compact the journal; returns the jobs still pending.

        With a shared folder and *adopt* (does this instance watch the list
        file?), the jobs and offsets of the shared journal that it watches
        are moved into this one first; see :meth:`_adopt_shared`.
        """
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise JournalError(
                f"state directory {self.directory} cannot be used: {error.strerror or error}"
            ) from None
        if not self._try_lock():
            raise JournalError(
                f"another ingestor is running with the state directory "
                f"{self.directory} (journal locked)"
            )
        self._replay()
        shared = None
        if (
            self.shared_dir
            and adopt is not None
            and os.path.realpath(self.shared_dir) != os.path.realpath(self.directory)
        ):
            shared = self._adopt_shared(adopt)
        self._compact()
        if shared is not None:
            # only now that the adopted jobs are safe here: out of the shared journal
            shared._keep_the_rest()
        return sorted(self._pending.values(), key=lambda job: job.id)

    def _try_lock(self, patience: float = 0.0) -> bool:
        """Take the folder's lock; False when another ingestor holds it.

        *patience*: seconds to wait for a holder that only holds it briefly
        (an instance adopting jobs from the shared journal).
        """
        try:
            handle = open(os.path.join(self.directory, LOCK_NAME), "a")
        except OSError as error:
            raise JournalError(
                f"state directory {self.directory} cannot be used: {error.strerror or error}"
            ) from None
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_handle = handle
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    break
            time.sleep(0.05)
        handle.close()
        return False

    def _adopt_shared(self, adopt: Callable[[str], bool]) -> Optional["Journal"]:
        """Move the shared journal's jobs and offsets of watched list files in here.

        Returns the shared journal (locked, holding what is left) when
        anything was taken, for :meth:`_keep_the_rest` once this journal is
        written.  Jobs keep their order and get new ids here; a job already
        pending here (a crash between the two rewrites) is not taken twice.
        What is left is named in a warning, never dropped.
        """
        assert self.shared_dir is not None
        shared = Journal(self.shared_dir)
        if not os.path.exists(shared.path):
            return None
        try:
            # two instances starting together take their jobs in turn
            if not shared._try_lock(SHARED_LOCK_PATIENCE):
                logger.warning(
                    "The shared journal %s of an earlier version is in use by another "
                    "ingestor: its jobs are not taken over now (this instance keeps its "
                    "journal in %s)",
                    shared.path,
                    self.directory,
                )
                return None
            shared._replay()
        except JournalError as error:
            logger.warning("The shared journal of an earlier version cannot be read: %s", error)
            shared.close()
            return None
        jobs = [
            job
            for job in sorted(shared._pending.values(), key=lambda job: job.id)
            if adopt(job.list_file)
        ]
        offsets = [list_file for list_file in shared._offsets if adopt(list_file)]
        if jobs or offsets:
            known = {_identity(job) for job in self._pending.values()}
            for job in jobs:
                del shared._pending[job.id]
                if _identity(job) in known:
                    continue
                known.add(_identity(job))
                taken = replace(job, id=self._next_id)
                self._next_id += 1
                self._pending[taken.id] = taken
            for list_file in offsets:
                theirs = shared._offsets.pop(list_file)
                if theirs.offset > self.offset_of(list_file):
                    self._offsets[list_file] = theirs
            logger.info(
                "Took over %d pending job(s) and the read positions of %d list file(s) "
                "from the shared journal %s of an earlier version%s; this instance keeps "
                "its journal in %s",
                len(jobs),
                len(offsets),
                shared.path,
                f" (beamtimes: {describe_beamtimes(jobs)})" if jobs else "",
                self.directory,
            )
        if shared._pending:
            left = list(shared._pending.values())
            logger.warning(
                "The shared journal %s of an earlier version still holds %d pending job(s) "
                "of list files this configuration does not watch (beamtimes: %s): left "
                "there for the ingestor that watches them",
                shared.path,
                len(left),
                describe_beamtimes(left),
            )
        if not (jobs or offsets):
            shared.close()
            return None
        return shared

    def _keep_the_rest(self) -> None:
        """Rewrite this (shared) journal with what was not adopted, or remove it if empty."""
        try:
            if self._pending or self._offsets:
                self._compact()
            else:
                os.unlink(self.path)
                _fsync_dir(self.directory)
                logger.info("The shared journal %s is empty now: removed", self.path)
        except (OSError, JournalError) as error:
            # the adopted jobs are safe in the new journal; taken again later they
            # are recognised there, or found in the ingested list
            logger.warning(
                "The shared journal %s cannot be rewritten: %s",
                self.path,
                getattr(error, "strerror", None) or error,
            )
        finally:
            self.close()

    def _replay(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return
        except OSError as error:
            raise JournalError(f"{self.path} cannot be read: {error.strerror}") from None
        self._whole = data.rfind(b"\n") + 1
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                self._apply(entry)
            except (ValueError, TypeError, KeyError) as error:
                if number >= len(lines) - 1:
                    logger.warning("%s: torn last entry ignored (crash while writing)", self.path)
                else:
                    logger.error("%s:%d: unreadable entry skipped: %s", self.path, number, error)

    def _apply(self, entry: dict) -> None:
        op = entry["op"]
        if op == "accept":
            list_file = entry["list"]
            offset = int(entry["offset"])
            if "check" in entry:
                self._offsets[list_file] = ReadPoint(offset, str(entry["check"]))
            elif offset > self.offset_of(list_file):  # an older version's entry
                self._offsets[list_file] = ReadPoint(offset)
            for item in entry.get("jobs", ()):
                job = Job(**item)
                self._pending[job.id] = job
                self._next_id = max(self._next_id, job.id + 1)
        elif op == "done":
            self._pending.pop(int(entry["id"]), None)
        elif op == "offset":
            self._offsets[entry["list"]] = ReadPoint(int(entry["offset"]))

    def _compact(self) -> None:
        """Rewrite the journal with only what is still needed (atomically).

        When the rewrite cannot be written (disk full) the journal is kept as
        it is, minus a torn last entry, and appended to: it only grows.
        """
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                for list_file, point in sorted(self._offsets.items()):
                    jobs = [
                        asdict(job) for job in self._pending.values() if job.list_file == list_file
                    ]
                    entry = {"op": "accept", "list": list_file, "offset": point.offset}
                    handle.write(json.dumps({**entry, "check": point.check, "jobs": jobs}) + "\n")
                orphans = [
                    asdict(job)
                    for job in self._pending.values()
                    if job.list_file not in self._offsets
                ]
                for job in orphans:
                    handle.write(
                        json.dumps(
                            {"op": "accept", "list": job["list_file"], "offset": 0, "jobs": [job]}
                        )
                        + "\n"
                    )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
        except OSError as error:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            logger.error(
                "%s cannot be compacted (%s): appending to it as it is",
                self.path,
                error.strerror or error,
            )
            self._cut_torn_entry()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size
        except OSError as error:
            raise JournalError(
                f"{self.path} cannot be written: {error.strerror or error}"
            ) from None

    def _cut_torn_entry(self) -> None:
        """Drop a torn last entry, so that the next one starts on its own line."""
        try:
            if os.path.getsize(self.path) > self._whole:
                os.truncate(self.path, self._whole)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise JournalError(
                f"{self.path} cannot be written: {error.strerror or error}"
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_handle is not None:
                self._lock_handle.close()
                self._lock_handle = None

    # -- use -------------------------------------------------------------------

    def offset(self, list_file: str) -> int:
        """Bytes of *list_file* already accepted (0 when unknown)."""
        with self._lock:
            return self.offset_of(list_file)

    def offset_of(self, list_file: str) -> int:
        point = self._offsets.get(list_file)
        return point.offset if point is not None else 0

    def read_point(self, list_file: str) -> ReadPoint:
        """How far *list_file* was read, with the fingerprint of what was read."""
        with self._lock:
            return self._offsets.get(list_file, ReadPoint())

    def forget_offset(self, list_file: str) -> None:
        """The list file was truncated or replaced: it is read from the start again."""
        with self._lock:
            if self._offsets.pop(list_file, None) is not None:
                self._write({"op": "offset", "list": list_file, "offset": 0}, sync=True)

    def new_job(self, **fields: object) -> Job:
        with self._lock:
            job = Job(id=self._next_id, **fields)  # type: ignore[arg-type]
            self._next_id += 1
            return job

    def accept(
        self, list_file: str, offset: Union[ReadPoint, int, None], jobs: Iterable[Job]
    ) -> None:
        """Record accepted jobs and the new offset durably (fsync) before returning.

        *offset*: a :class:`ReadPoint` is where the list file was read to now
        (it may go back: the file was read again from its start); a plain
        offset only moves it forward; None keeps it (jobs not from reading
        the file: re-ingestion, lines an earlier run left).

        Raises :class:`JournalError` when that cannot be written; the jobs are
        then still pending here and go out with the next ``accept`` of
        *list_file* (the caller may go on and ingest them).
        """
        jobs = list(jobs)
        with self._lock:
            for job in jobs:
                self._pending[job.id] = job
            carried = [
                self._pending[job_id]
                for job_id in self._unsaved.get(list_file, ())
                if job_id in self._pending
            ]
            unsaved = carried + jobs
            point = self._next_point(list_file, offset)
            entry: dict = {"op": "accept", "list": list_file, "offset": point.offset}
            if isinstance(offset, ReadPoint) or point.check:
                entry["check"] = point.check
            entry["jobs"] = [asdict(job) for job in unsaved]
            try:
                self._write(entry, sync=True)
            except JournalError:
                self._unsaved[list_file] = [job.id for job in unsaved]
                raise
            self._unsaved.pop(list_file, None)
            self._offsets[list_file] = point

    def _next_point(self, list_file: str, offset: Union[ReadPoint, int, None]) -> ReadPoint:
        current = self._offsets.get(list_file, ReadPoint())
        if isinstance(offset, ReadPoint):
            return offset
        if offset is None or offset <= current.offset:
            return current
        return ReadPoint(offset)

    def retire(self, job: Job) -> None:
        """The job's scan is recorded: it will not be replayed.

        Not fsynced: a retirement lost in a crash only makes the job run
        again, and a re-run job finds its scan in the ingested list.  For the
        same reason a retirement that cannot be written is only logged.
        """
        with self._lock:
            self._pending.pop(job.id, None)
            try:
                self._write({"op": "done", "id": job.id}, sync=False)
            except JournalError as error:
                logger.warning(
                    "%s (job %d is retired in memory only; after a restart "
                    "its scan is found ingested)",
                    error,
                    job.id,
                )

    def unsaved_count(self) -> int:
        """Accepted jobs not in the journal yet (it could not be written)."""
        with self._lock:
            return sum(
                1 for ids in self._unsaved.values() for job_id in ids if job_id in self._pending
            )

    def pending_texts(self, list_file: str) -> set:
        """The lines of *list_file* that have a job not retired yet."""
        with self._lock:
            return {job.text for job in self._pending.values() if job.list_file == list_file}

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _write(self, entry: dict, sync: bool) -> None:
        """Append one entry whole, or not at all (a failed write is cut off again)."""
        if self._fd is None:
            raise JournalError(f"{self.path} is not open")
        data = (json.dumps(entry) + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if sync:
                os.fsync(self._fd)
        except OSError as error:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass  # a read-only file system: nothing was written either
            if not self._write_failing:
                logger.error("Journal %s cannot be written: %s", self.path, error.strerror or error)
            self._write_failing = True
            raise JournalError(
                f"journal {self.path} cannot be written: {error.strerror or error}"
            ) from None
        self._size += len(data)
        if self._write_failing:
            logger.warning("Journal %s can be written again", self.path)
            self._write_failing = False
