"""Shared fixtures of the ingestion tests: a SciCat server and beamtime factories.

``scicat`` is one SciCat-compatible server on loopback for the whole
session; every beamtime built by the ``beamtime`` factory gets its own
beamtime id (so its dataset pids are its own), and its ``requests()`` only
return what the server recorded since the beamtime was built (or since
``checkpoint()``), so tests do not depend on each other's records.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import yaml

from scingestor.batch import BatchIngest, BatchSummary
from scingestor.beamtime import Beamtime, read_beamtime
from scingestor.config import IngestorConfig, config_from_dict
from scingestor.layout import PathConverter, ingested_list_path, list_file_name, metadata_dir
from scingestor.listfile import ScanLine
from scingestor.pipeline import Pipeline, ScanOutcome, ScanTask
from scingestor.scicat import ClientSettings, SciCatClient
from scingestor.state import IngestedList
from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import DEFAULT_ACCOUNTS, RecordedRequest, SciCatServer

#: the privileged ingestor account of the test server
INGESTOR = DEFAULT_ACCOUNTS[0]

# beamtime ids handed out in this session: distinct pids on the shared server
_BEAMTIME_IDS = itertools.count(99100001)


@pytest.fixture(scope="session")
def scicat() -> Iterator[SciCatServer]:
    """One started SciCat-compatible server for the session."""
    with SciCatServer() as srv:
        yield srv


@pytest.fixture
def fresh_scicat() -> Iterator[SciCatServer]:
    """A server of its own, for tests that need fixed beamtime ids or an empty store."""
    with SciCatServer() as srv:
        yield srv


@dataclasses.dataclass
class BeamtimeEnv:
    """One beamtime directory with its configuration, client and helpers."""

    root: Path
    raw: Path
    bid: str
    server: SciCatServer
    config: IngestorConfig
    config_file: Path
    client: SciCatClient
    var: Path
    since: float = 0.0
    _pipelines: List[Pipeline] = dataclasses.field(default_factory=list)

    # -- files -------------------------------------------------------------

    @property
    def beamtime(self) -> Beamtime:
        return read_beamtime(str(self.root / f"beamtime-metadata-{self.bid}.json"))

    @property
    def converter(self) -> PathConverter:
        bt = self.beamtime
        return PathConverter(bt.directory, bt.core_path, self.config.use_corepath_as_scandir)

    def list_file(self, directory: Optional[Path] = None) -> Path:
        return (directory or self.raw) / list_file_name(self.config, self.bid)

    def scan(self, name: str, directory: Optional[Path] = None, **kw: Any) -> Path:
        """Write scan *name* (see :func:`make_scan`) into the scan directory."""
        return make_scan(directory or self.raw, name, **kw)

    def lines(self, *records: str, directory: Optional[Path] = None) -> Path:
        """Append records to the list file as the sardana writers do."""
        path = self.list_file(directory)
        for record in records:
            append_list_line(path, record)
        return path

    def meta_dir(self, directory: Optional[Path] = None) -> Path:
        scan_dir = self.converter.to_core(str(directory or self.raw))
        return Path(metadata_dir(self.config, self.bid, scan_dir))

    def meta(self, name: str, directory: Optional[Path] = None) -> Path:
        """A metadata JSON file of the scan directory."""
        return self.meta_dir(directory) / name

    def load(self, name: str, directory: Optional[Path] = None) -> Any:
        return json.loads(self.meta(name, directory).read_text(encoding="utf-8"))

    def ingested_path(self, directory: Optional[Path] = None) -> Path:
        list_dir = self.converter.to_core(str(directory or self.raw))
        return Path(ingested_list_path(self.config, self.bid, list_dir))

    def ingested(self, directory: Optional[Path] = None) -> IngestedList:
        cfg = self.config
        return IngestedList(
            str(self.ingested_path(directory)),
            cfg.retry_failed_dataset_ingestion,
            cfg.retry_failed_attachment_ingestion and cfg.ingest_dataset_attachment,
        ).load()

    def ingested_lines(self, directory: Optional[Path] = None) -> List[str]:
        path = self.ingested_path(directory)
        if not path.exists():
            return []
        return [line for line in path.read_text(encoding="utf-8").split("\n") if line]

    # -- running -------------------------------------------------------------

    def pipeline(
        self, config: Optional[IngestorConfig] = None, client: Optional[SciCatClient] = None
    ) -> Pipeline:
        """The beamtime's pipeline (one, reused), or a new one for another config/client."""
        if config is None and client is None and self._pipelines:
            return self._pipelines[0]
        pipeline = Pipeline(config or self.config, client or self.client)
        self._pipelines.append(pipeline)
        return pipeline

    def close(self) -> None:
        """Stop what the pipelines started (generator workers) and the client."""
        for pipeline in self._pipelines:
            closer = getattr(pipeline, "close", None)
            if closer is not None:
                closer()
            if pipeline.client is not self.client:
                pipeline.client.close()
        self.client.close()

    def tasks(
        self,
        directory: Optional[Path] = None,
        *,
        daemon: bool = False,
        beamtime: Optional[Beamtime] = None,
    ) -> List[ScanTask]:
        """The list file's tasks: batch style (all re-ingested) or daemon style.

        Daemon style is what the daemon does with the same list: ``:`` lines
        follow the re-ingestion rules, plain lines the first-ingestion ones.
        """
        batch = BatchIngest(self.config, self.client, pipeline=self.pipeline())
        tasks = batch.tasks(
            beamtime or self.beamtime, str(self.list_file(directory)), self.ingested(directory)
        )
        if daemon:
            tasks = [dataclasses.replace(task, reingest=task.line.is_reingestion) for task in tasks]
        return tasks

    def run(
        self, directory: Optional[Path] = None, *, daemon: bool = False, dry_run: bool = False
    ) -> Dict[str, ScanOutcome]:
        """Process the list file; daemon style skips the keys the ingested list has done."""
        pipeline = self.pipeline()
        ingested = self.ingested(directory)
        outcomes: Dict[str, ScanOutcome] = {}
        for task in self.tasks(directory, daemon=daemon):
            if daemon and ingested.is_done(task.key):
                continue
            outcomes[task.key] = pipeline.process(task, ingested, dry_run=dry_run)
        return outcomes

    def task(self, name: str, directory: Optional[Path] = None, **kw: Any) -> ScanTask:
        """A task built directly (names a list line cannot hold, e.g. with spaces)."""
        line = ScanLine(text=name, scanname=name, masterscanname=name)
        return ScanTask(self.beamtime, str(self.list_file(directory)), line, **kw)

    def batch(self, dry_run: bool = False, config: Optional[IngestorConfig] = None) -> BatchSummary:
        """What ``scicat_dataset_ingest`` does (with this beamtime's configuration)."""
        pipeline = self.pipeline(config) if config is not None else self.pipeline()
        return BatchIngest(config or self.config, self.client, pipeline=pipeline).run(
            dry_run=dry_run
        )

    # -- the server ------------------------------------------------------------

    def pid(self, name: str) -> str:
        return f"{self.bid}/{name}"

    def datasets(self) -> Dict[str, Dict[str, Any]]:
        """This beamtime's datasets on the server, by pid."""
        return {
            pid: ds for pid, ds in self.server.datasets.items() if pid.startswith(f"{self.bid}/")
        }

    def blocks(self, pid: Optional[str] = None) -> List[Dict[str, Any]]:
        """Origdatablocks of one dataset (or of every dataset of the beamtime)."""
        return [
            block
            for block in self.server.origdatablocks.values()
            if (
                block.get("datasetId") == pid
                if pid is not None
                else str(block.get("datasetId", "")).startswith(f"{self.bid}/")
            )
        ]

    def attachments(self, pid: Optional[str] = None) -> List[Dict[str, Any]]:
        return [
            att
            for att in self.server.attachments.values()
            if (
                att.get("datasetId") == pid
                if pid is not None
                else str(att.get("datasetId", "")).startswith(f"{self.bid}/")
            )
        ]

    def checkpoint(self) -> None:
        """From now on ``requests()`` only returns later requests."""
        time.sleep(0.001)
        self.since = time.time()

    def requests(
        self, method: Optional[str] = None, path_contains: Optional[str] = None
    ) -> List[RecordedRequest]:
        return [r for r in self.server.recorded(method, path_contains) if r.time >= self.since]

    def changes(self) -> List[RecordedRequest]:
        """Requests since the checkpoint that could change the server (no login)."""
        return [
            r
            for r in self.requests()
            if r.method != "GET"
            and not r.path.endswith("/login")
            and not r.path.endswith("/isValid")
        ]

    def assert_clean(self) -> None:
        """Every answer since the checkpoint was a success (or a 404 to a GET)."""
        bad = [
            (r.method, r.path, r.status, r.response)
            for r in self.requests()
            if r.status >= 400 and not (r.status == 404 and r.method == "GET")
        ]
        assert not bad, bad


Factory = Callable[..., BeamtimeEnv]


@pytest.fixture
def beamtime(tmp_path: Path, scicat: SciCatServer) -> Iterator[Factory]:
    """Factory: ``beamtime(bid=None, server=None, directory=None, core_path=None,
    proposal_type="I", fields=None, **config)`` → :class:`BeamtimeEnv`.

    The beamtime directory is ``<tmp>/<name>/current`` with the scans in
    ``raw/``; state and metadata go to ``<tmp>/<name>/var``; the credential
    file (mode 600) holds the privileged ingestor account; ``config`` keys
    override the test defaults.
    """
    envs: List[BeamtimeEnv] = []
    counter = itertools.count()

    def build(
        bid: Optional[str] = None,
        *,
        server: Optional[SciCatServer] = None,
        directory: Optional[Path] = None,
        core_path: Optional[Path] = None,
        proposal_type: str = "I",
        fields: Optional[Dict[str, Any]] = None,
        **config: Any,
    ) -> BeamtimeEnv:
        srv = server or scicat
        bid = bid or str(next(_BEAMTIME_IDS))
        base = tmp_path / f"bt{next(counter)}"
        root = directory or base / "current"
        raw = root / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        make_beamtime(
            root,
            bid,
            proposal_type=proposal_type,
            core_path=core_path if core_path is not None else root,
            **(fields or {}),
        )
        credential = base / "credentials.json"
        credential.parent.mkdir(parents=True, exist_ok=True)
        credential.write_text(
            json.dumps({"username": INGESTOR.username, "password": INGESTOR.password})
        )
        credential.chmod(0o600)
        var = base / "var"
        data: Dict[str, Any] = {
            "scicat_url": srv.url,
            "ingestor_credential_file": str(credential),
            "scicat_users_login_path": "auth/login",
            "beamtime_dirs": [str(root)],
            "ingestor_var_dir": str(var),
            "max_request_tries_number": 3,
            "request_timeout": 20,
        }
        data.update(config)
        cfg = config_from_dict(data)
        config_file = base / "config.yaml"
        config_file.write_text(yaml.safe_dump(data))
        client = SciCatClient(ClientSettings.from_config(cfg))
        env = BeamtimeEnv(
            root=root,
            raw=raw,
            bid=bid,
            server=srv,
            config=cfg,
            config_file=config_file,
            client=client,
            var=var,
        )
        envs.append(env)
        env.checkpoint()
        return env

    yield build
    for env in envs:
        env.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a console script's ``setup_logging`` does to the package logger."""
    package = logging.getLogger("scingestor")
    saved = (list(package.handlers), package.level, package.propagate)
    yield
    for handler in list(package.handlers):
        if handler not in saved[0]:
            package.removeHandler(handler)
            handler.close()
    for handler in saved[0]:
        if handler not in package.handlers:
            package.addHandler(handler)
    package.setLevel(saved[1])
    package.propagate = saved[2]


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Skip the cross-checks against ``../shared`` where that folder is absent (a clone)."""
    from .paths import SHARED, SHARED_MISSING

    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=SHARED_MISSING)
    for item in items:
        if item.get_closest_marker("requires_shared") is not None:
            item.add_marker(skip)
