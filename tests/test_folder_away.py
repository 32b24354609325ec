"""A scan folder away while a re-ingestion describes its files (campaign seed 503).

The beamtime directory was renamed away while ``scicat_dataset_ingest``
re-checked the scans' files: ``nxsfileinfo origdatablock`` found nothing,
the empty description replaced each scan's origdatablock, and four datasets
lost their block.  A description that lost every file, or one made while
the folder was gone, now fails the try (retried) and SciCat keeps the block.
"""

from __future__ import annotations

import shutil
import sys

from scingestor.outcomes import OutcomeStatus


def _files_of(env, name: str) -> list:
    return [entry["path"] for block in env.blocks(env.pid(name)) for entry in block["dataFileList"]]


def test_a_reingestion_that_finds_none_of_the_files_keeps_the_block(beamtime) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00001", detectors={"det": 1})
    env.lines("scan_00001")
    assert env.batch().counts["ingested"] == 1
    before = _files_of(env, "scan_00001")
    assert before
    # every file of the scan away at once (an unmount under the folder)
    away = env.raw.parent / "away"
    away.mkdir()
    for path in env.raw.glob("scan_00001*"):
        shutil.move(str(path), str(away / path.name))
    env.lines("scan_00001:1")  # a re-ingestion line, as an operator writes it
    outcome = env.run()["scan_00001:1"]
    assert outcome.status == OutcomeStatus.RETRY, outcome
    assert "found none of the" in outcome.message
    assert _files_of(env, "scan_00001") == before
    # back: the block is described and kept as it was
    for path in away.iterdir():
        shutil.move(str(path), str(env.raw / path.name))
    assert env.run()["scan_00001:1"].ok
    assert _files_of(env, "scan_00001") == before


MOVING_GENERATOR = """
import json, os, sys
raw, moved = sys.argv[1], sys.argv[2]
output = sys.argv[sys.argv.index("-o") + 1]
os.rename(raw, moved)  # the folder goes away while its files are described
with open(output, "w") as handle:
    json.dump({"dataFileList": [], "size": 0}, handle)
"""


def test_a_block_described_while_the_folder_was_gone_is_not_kept(beamtime, tmp_path) -> None:
    env = beamtime(ingest_dataset_attachment=False)
    env.scan("scan_00001")
    env.lines("scan_00001")
    script = tmp_path / "moving_generator.py"
    script.write_text(MOVING_GENERATOR)
    moved = tmp_path / "moved-raw"
    config = env.config.replace(
        datablock_metadata_generator=(
            f"{sys.executable} {script} {env.raw} {moved} "
            "-o {metapath}/{scanname}{datablockpostfix}"
        )
    )
    # the dataset JSON made first: only the block is described while the folder goes
    # (a dataset generator running beside the moving one would fail on its own)
    task = env.tasks()[0]
    env.pipeline().generate(task)
    env.meta("scan_00001" + env.config.datablock_metadata_postfix).unlink()
    outcome = env.pipeline(config).process(task, env.ingested())
    assert outcome.status == OutcomeStatus.RETRY, outcome
    assert "went away while its files were described" in outcome.message
    assert not env.meta("scan_00001" + env.config.datablock_metadata_postfix).exists()
    assert not env.blocks(env.pid("scan_00001"))
