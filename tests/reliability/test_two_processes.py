"""The batch tool beside the running daemon, on one configuration (issue 18, item 2).

An operator runs ``scicat_dataset_ingest`` while the daemon ingests the
same 40 scans.  Both read a dataset's blocks and post the missing ones;
without a lock between the processes both posted, and both appended a
record.  Now every dataset holds exactly its block and attachment, the
ingested list one record per scan, and the batch says when it waited.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter

import pytest

from scingestor import interlock
from scingestor.cli import dataset_ingest

from .conftest import wait_until

pytestmark = [pytest.mark.reliability]

SCANS = 40


def test_batch_beside_the_daemon_posts_each_block_once(
    scicat_factory, scenario, capsys, restore_logging
) -> None:
    server = scicat_factory()
    world = scenario(server, "99180002", ingestion_workers=3, ingest_dataset_attachment=True)
    names = [f"both_{index:05d}" for index in range(SCANS)]
    world.scans(names, plot=True)
    daemon = world.daemon()
    daemon.wait_started()
    world.append(names)
    # the batch starts once the daemon is under way, so both work on the scans at once
    assert wait_until(lambda: server.datasets, 60, interval=0.01)
    code = dataset_ingest.main(["-c", str(world.config_file), "--no-progress"])
    out = capsys.readouterr().out
    assert wait_until(lambda: world.all_recorded(names), 120), world.logs()
    assert daemon.stop() == 0
    blocks = Counter(block.get("datasetId") for block in server.origdatablocks.values())
    attachments = Counter(att.get("datasetId") for att in server.attachments.values())
    pids = [f"99180002/{name}" for name in names]
    records = Counter(record.key for record in world.ingested().records)
    wrong = (
        sum(1 for pid in pids if blocks[pid] != 1),
        sum(1 for pid in pids if attachments[pid] != 1),
        sum(1 for name in names if records[name] != 1),
    )
    print(f"datasets without exactly 1 block, 1 attachment; scans without 1 record: {wrong}")
    assert code == 0, out
    assert wrong == (0, 0, 0)
    assert sorted(server.datasets) == sorted(pids)
    assert " 0 failed, 0 retry" in out, out


def _hold(path: str, ready, release) -> None:
    """Another ingestor process: holds the scan's lock until told."""
    with interlock.scan_lock(path, "scan_00001"):
        ready.set()
        release.wait(60)


class ReleaseOnWait(logging.Handler):
    def __init__(self, release) -> None:
        super().__init__()
        self.event = release

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for another ingestor process" in record.getMessage():
            self.event.set()


def test_the_batch_says_it_waited_for_another_process(beamtime, capsys, restore_logging) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00001")
    env.lines("scan_00001")
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(env.ingested_path()), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        # released once the batch says it waits for it
        handler = ReleaseOnWait(release)
        logging.getLogger("scingestor.interlock").addHandler(handler)
        code = dataset_ingest.main(["-c", str(env.config_file), "--no-progress"])
    finally:
        logging.getLogger("scingestor.interlock").removeHandler(handler)
        release.set()
        holder.join(30)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "waited for another ingestor process (a running daemon or device) on 1 scan(s)" in out
    assert env.pid("scan_00001") in env.datasets()


def test_copies_of_generated_records_found_in_scicat_are_reported_and_removed(
    beamtime, caplog
) -> None:
    """A double post left by an earlier run: reported, and removed (the account may delete)."""
    env = beamtime(ingest_dataset_attachment=True)
    env.scan("scan_00001", plot=True)
    env.lines("scan_00001")
    assert env.run(daemon=True)["scan_00001"].status == "ingested"
    pid = env.pid("scan_00001")
    block = env.blocks(pid)[0]
    env.client.post_origdatablock(
        {key: block[key] for key in ("datasetId", "size", "dataFileList")}
    )
    attachment = env.attachments(pid)[0]
    env.client.post_attachment(
        pid,
        {
            key: attachment[key]
            for key in ("thumbnail", "caption", "ownerGroup", "accessGroups")
            if key in attachment
        },
    )
    assert (len(env.blocks(pid)), len(env.attachments(pid))) == (2, 2)
    env.ingested_path().unlink()  # as if the record were lost: the scan runs again
    with caplog.at_level("WARNING", logger="scingestor"):
        outcome = env.run(daemon=True)["scan_00001"]
    assert outcome.ok, outcome.message
    assert (len(env.blocks(pid)), len(env.attachments(pid))) == (1, 1)
    assert outcome.surplus == [
        f"dataset {pid}: 1 origdatablock(s) more than generated, 1 removed "
        "(copies of a generated one)",
        f"dataset {pid}: 1 attachment(s) more than generated, 1 removed "
        "(copies of a generated one)",
    ]
    assert "more than generated" in caplog.text
