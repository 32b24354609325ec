"""A master file still being written when its list line arrives.

The line comes first (``ingestion_delay_time: 0``), the NeXus file is cut in
the middle (not yet valid HDF5) and completed a second later.  The
generator fails on the broken file, the scan is retried, and once the file
is whole it is ingested once, with the full metadata: the origdatablock
must describe the whole file, not the half seen first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scingestor.testing.builders import make_scan

from .conftest import dataset_posts, tally, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_master_file_completed_after_its_line(
    tmp_path: Path, scicat_factory, scenario, reliability_summary
) -> None:
    server = scicat_factory()
    bid = "97000030"
    env = scenario(server, bid, max_generator_attempts=8)
    partial = [f"partial_{index:05d}" for index in range(3)]
    whole = ["whole_00001"]
    env.scans(whole)
    staging = tmp_path / "staging"
    contents = {}
    for name in partial:
        contents[name] = make_scan(staging, name).read_bytes()
        (env.raw / f"{name}.nxs").write_bytes(contents[name][: len(contents[name]) // 2])
    daemon = env.daemon()
    started = time.monotonic()
    daemon.wait_started()
    env.append(partial + whole)
    assert wait_until(lambda: env.all_recorded(whole), 60)
    assert wait_until(lambda: daemon.text().count("will be retried") >= len(partial), 30)
    time.sleep(1.0)
    assert not dataset_posts(server, bid).keys() & {f"{bid}/{name}" for name in partial}
    for name in partial:  # the writer finishes the file in place
        with open(env.raw / f"{name}.nxs", "ab") as handle:
            handle.write(contents[name][len(contents[name]) // 2 :])
    assert wait_until(lambda: env.all_recorded(partial + whole), 60), daemon.text()
    assert daemon.stop() == 0
    result = reliability_summary.add(
        tally("master file completed after its line", server, bid, partial + whole, started)
    )
    assert (result.duplicated, result.lost) == (0, 0), result
    datasets = server.datasets
    reference = datasets[f"{bid}/{whole[0]}"]["scientificMetadata"]
    for name in partial:
        pid = f"{bid}/{name}"
        assert datasets[pid]["scientificMetadata"].keys() == reference.keys()
        (block,) = [b for b in server.origdatablocks.values() if b["datasetId"] == pid]
        sizes = {entry["path"]: entry["size"] for entry in block["dataFileList"]}
        assert (
            sizes[f"{name}.nxs"] == os.path.getsize(env.raw / f"{name}.nxs") == len(contents[name])
        )
