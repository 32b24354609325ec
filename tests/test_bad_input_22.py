"""Bad input a beamline really produces (issue 22): every scan ingested or named in one line.

Each case runs on real files (h5py-made NeXus, FIO text, real symlinks)
through the real chain (watcher, service or batch tool, nxsfileinfo, the
loopback SciCat), with good scans beside the bad one.  The policies are
documented in ``docs/bad-input.md``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import List, Tuple

import h5py
import numpy as np
import pytest

from scingestor.testing.builders import append_list_line, make_beamtime, make_scan
from scingestor.testing.scicat_server import SciCatServer

from . import test_bad_input
from .helpers import posted_pids, wait_until
from .test_bad_input import settings_for

#: the daemon services of test_bad_input, as a fixture here too
service_factory = test_bad_input.service_factory


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> List[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and text in record.getMessage()
    ]


def latin1_nexus(raw: Path, name: str) -> Path:
    """A NeXus scan whose title and a sample attribute hold Latin-1 bytes, as old writers did."""
    path = make_scan(raw, name)
    with h5py.File(path, "a") as handle:
        del handle["scan/title"]
        handle["scan"].create_dataset("title", data=np.bytes_(b"caf\xe9 au lait"))
        handle["scan/sample/name"].attrs["comment"] = np.bytes_(b"d\xe9j\xe0 vu")
    return path


def latin1_fio(raw: Path, name: str) -> Path:
    path = make_scan(raw, name, kind="fio")
    data = path.read_bytes().replace(b"%p\n", b"%p\ncomment = caf\xe9\n", 1)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("in_process", [True, False], ids=["workers", "command"])
def test_latin1_text_is_kept_and_the_scan_ingested_with_one_warning(
    tmp_path: Path,
    scicat: SciCatServer,
    service_factory,
    caplog,
    in_process: bool,
) -> None:
    bid = "96220001" if in_process else "96220002"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    make_scan(raw, "l1_good_00001")
    nexus = latin1_nexus(raw, "l1_nexus_00002")
    fio = latin1_fio(raw, "l1_fio_00003")
    make_scan(raw, "l1_good_00004")
    names = ["l1_good_00001", "l1_nexus_00002", "l1_fio_00003", "l1_good_00004"]
    caplog.set_level(logging.WARNING, logger="scingestor")
    service = service_factory(scicat.url, generator_in_process=in_process)
    listing = raw / f"scicat-datasets-{bid}.lst"
    for name in names:
        append_list_line(listing, name)
    expected = sorted(f"{bid}/{name}" for name in names)
    assert wait_until(lambda: sorted(posted_pids(scicat, bid)) == expected, 90)
    assert service.wait_idle(30)
    dataset = scicat.datasets[f"{bid}/l1_nexus_00002"]
    assert dataset["scientificMetadata"]["title"]["value"] == "café au lait"
    assert dataset["scientificMetadata"]["sample"]["name"]["comment"] == "déjà vu"
    fio_dataset = scicat.datasets[f"{bid}/l1_fio_00003"]
    assert "café" in str(fio_dataset["scientificMetadata"])
    # one line each, naming the scan, the file and the field
    nexus_lines = _warnings(caplog, "kept as Latin-1")
    nexus_lines = [line for line in nexus_lines if "l1_nexus_00002" in line]
    assert len(nexus_lines) == 1, nexus_lines
    assert str(nexus) in nexus_lines[0] and "title" in nexus_lines[0]
    assert "@comment" in nexus_lines[0] and "\n" not in nexus_lines[0]
    fio_lines = [line for line in _warnings(caplog, "kept as Latin-1") if "l1_fio_00003" in line]
    assert len(fio_lines) == 1 and str(fio) in fio_lines[0] and "line " in fio_lines[0]
    assert not any("codec" in record.getMessage() for record in caplog.records)
    assert os.path.exists(nexus)


def test_links_among_scan_files_are_listed_as_links_and_the_scan_ingested(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    """Dangling, looping and out-of-beamtime links never fail a scan nor leak a target."""
    bid = "96220011"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    make_scan(raw, "ln_good_00001")
    make_scan(raw, "ln_links_00002", detectors={"pilatus": 2})
    detectors = raw / "ln_links_00002"
    (detectors / "x.raw").symlink_to("/etc/passwd")
    (detectors / "gone.raw").symlink_to(detectors / "nowhere.raw")
    (detectors / "a.raw").symlink_to(detectors / "b.raw")
    (detectors / "b.raw").symlink_to(detectors / "a.raw")
    (detectors / "inside.raw").symlink_to(detectors / "pilatus_00000.raw")
    (raw / "ln_links_00002_top.raw").symlink_to("/etc/passwd")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.raw").write_bytes(b"s" * 1000)
    (raw / "ln_links_00002_ext").symlink_to(outside, target_is_directory=True)
    make_scan(raw, "ln_good_00003")
    names = ["ln_good_00001", "ln_links_00002", "ln_good_00003"]
    caplog.set_level(logging.WARNING, logger="scingestor")
    service = service_factory(scicat.url)
    listing = raw / f"scicat-datasets-{bid}.lst"
    for name in names:
        append_list_line(listing, name)
    expected = sorted(f"{bid}/{name}" for name in names)
    assert wait_until(lambda: sorted(posted_pids(scicat, bid)) == expected, 90)
    assert service.wait_idle(30)
    blocks = [
        block
        for block in scicat.origdatablocks.values()
        if block.get("datasetId") == f"{bid}/ln_links_00002"
    ]
    assert len(blocks) == 1
    files = {entry["path"]: entry for entry in blocks[0]["dataFileList"]}
    passwd = os.stat("/etc/passwd").st_size
    for name in ("x.raw", "gone.raw", "a.raw", "b.raw"):
        entry = files[f"ln_links_00002/{name}"]
        assert entry["perm"].startswith("l"), entry
        assert entry["size"] == os.lstat(detectors / name).st_size
    top = files["ln_links_00002_top.raw"]
    assert top["perm"].startswith("l") and (top["size"] != passwd or passwd < 20)
    assert not any("secret" in path for path in files)  # a linked folder outside: skipped
    # a link inside the beamtime is described by its target, as before
    assert files["ln_links_00002/inside.raw"]["size"] == 64
    lines = [line for line in _warnings(caplog, "not followed") if "ln_links_00002" in line]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "x.raw: a link out of the beamtime to /etc/passwd" in lines[0]
    assert "gone.raw: a dangling link" in lines[0] and "a.raw: a link loop" in lines[0]
    assert "secret.raw: reached through a link out of the beamtime: skipped" in lines[0]


def test_beamtime_file_naming_another_id_is_an_error_naming_both(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    gpfs = tmp_path / "gpfs"
    good, odd = gpfs / "good", gpfs / "odd"
    make_beamtime(good, "96220020")
    make_scan(good / "raw", "id_good_00001")
    odd_file = make_beamtime(odd, "96220022")
    renamed = odd / "beamtime-metadata-96220021.json"
    Path(odd_file).rename(renamed)
    make_scan(odd / "raw", "id_odd_00001")
    append_list_line(odd / "raw" / "scicat-datasets-96220021.lst", "id_odd_00001")
    caplog.set_level(logging.WARNING, logger="scingestor")
    service = service_factory(scicat.url, beamtime_dirs=[str(good), str(odd)])
    assert wait_until(lambda: service.watched_beamtimes == ["96220020"])
    append_list_line(good / "raw" / "scicat-datasets-96220020.lst", "id_good_00001")
    assert wait_until(lambda: posted_pids(scicat, "96220020") == {"96220020/id_good_00001": 1})
    assert wait_until(
        lambda: any(
            str(renamed) in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records
        )
    ), caplog.text
    errors = [
        r.getMessage()
        for r in caplog.records
        if str(renamed) in r.getMessage() and r.levelno == logging.ERROR
    ]
    assert len(errors) == 1 and "'96220022'" in errors[0] and "'96220021'" in errors[0]
    assert "scicat-datasets-96220021.lst" in errors[0] and "not ingested" in errors[0]
    assert not posted_pids(scicat, "96220021") and not posted_pids(scicat, "96220022")


def test_zero_byte_fio_is_refused_like_a_zero_byte_nexus_in_one_line(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    bid = "96220030"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    make_scan(raw, "zb_good_00001")
    (raw / "zb_fio_00002.fio").write_bytes(b"")
    (raw / "zb_nexus_00003.nxs").write_bytes(b"")
    make_scan(raw, "zb_good_00004")
    names = ["zb_good_00001", "zb_fio_00002", "zb_nexus_00003", "zb_good_00004"]
    caplog.set_level(logging.WARNING, logger="scingestor")
    service = service_factory(scicat.url)
    listing = raw / f"scicat-datasets-{bid}.lst"
    for name in names:
        append_list_line(listing, name)
    good = [f"{bid}/zb_good_00001", f"{bid}/zb_good_00004"]
    assert wait_until(lambda: sorted(posted_pids(scicat, bid)) == good, 90)
    for name, kind in (("zb_fio_00002", "fio"), ("zb_nexus_00003", "nxs")):
        path = raw / f"{name}.{kind}"
        assert wait_until(
            lambda: any(
                name in r.getMessage() and "is empty (0 bytes)" in r.getMessage()
                for r in caplog.records
            )
        ), caplog.text
        lines = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        for line in lines:
            assert "\n" not in line and "usage:" not in line, line
        assert any(str(path) in line and "is empty (0 bytes)" in line for line in lines)
    assert service.wait_idle(30)
    assert sorted(posted_pids(scicat, bid)) == good


def _batch_config(tmp_path: Path, url: str, credential: Path, dirs: List[Path]) -> Path:
    config = tmp_path / "batch.yaml"
    settings = settings_for(tmp_path, url, beamtime_dirs=[str(d) for d in dirs])
    settings["ingestor_credential_file"] = str(credential)
    config.write_text(json.dumps(settings))  # JSON is YAML
    return config


def _listed_scan(tmp_path: Path, url: str, bid: str, name: str) -> Tuple[Path, Path]:
    """A beamtime ``<tmp>/gpfs`` listing one good scan; (its directory, the credential file)."""
    gpfs = tmp_path / "gpfs"
    make_beamtime(gpfs, bid)
    make_scan(gpfs / "raw", name)
    append_list_line(gpfs / "raw" / f"scicat-datasets-{bid}.lst", name)
    return gpfs, Path(settings_for(tmp_path, url)["ingestor_credential_file"])


def test_batch_names_a_missing_beamtime_dir_and_exits_1(
    tmp_path: Path, scicat: SciCatServer, restore_logging
) -> None:
    from scingestor.cli.dataset_ingest import main

    bid = "96220040"
    gpfs, credential = _listed_scan(tmp_path, scicat.url, bid, "bd_good_00001")
    missing = tmp_path / "no-such-beamtime"
    config = _batch_config(tmp_path, scicat.url, credential, [gpfs, missing])
    log = tmp_path / "batch.log"
    assert main(["-c", str(config), "-f", str(log), "--no-progress"]) == 1
    text = log.read_text()
    lines = [line for line in text.splitlines() if str(missing) in line and "ERROR" in line]
    assert lines == [
        f"ERROR : Beamtime directory {missing} does not exist: nothing ingested from it"
    ]
    assert posted_pids(scicat, bid) == {f"{bid}/bd_good_00001": 1}  # the others still go
    assert "Traceback" not in text


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_credential_file_problems_are_one_line_in_batch_and_daemon(
    tmp_path: Path, scicat: SciCatServer, problem: str, restore_logging
) -> None:
    from scingestor.cli.dataset_ingest import main

    bid = "96220041" if problem == "missing" else "96220042"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    make_beamtime(gpfs, bid)
    make_scan(raw, "cr_scan_00001")
    append_list_line(raw / f"scicat-datasets-{bid}.lst", "cr_scan_00001")
    credential = tmp_path / "credential-broken.json"
    if problem == "empty":
        credential.write_text("")
        credential.chmod(0o600)
    config = _batch_config(tmp_path, scicat.url, credential, [gpfs])
    log = tmp_path / "batch.log"
    assert main(["-c", str(config), "-f", str(log), "--no-progress"]) == 1
    text = log.read_text()
    assert "Traceback" not in text
    reason = "does not exist" if problem == "missing" else "is empty"
    assert [line for line in text.splitlines() if str(credential) in line] == [
        f"ERROR : credential file {credential} {reason}"
    ]
    # the daemon: one line at start, one line per try, the scan waits, no traceback
    from scingestor.cli.dataset_ingestor import main as daemon

    daemon_log = tmp_path / "daemon.log"
    assert daemon(["-c", str(config), "-f", str(daemon_log), "-r", "4"]) == 0
    text = daemon_log.read_text()
    assert "Traceback" not in text and "unexpected error" not in text
    lines = [line for line in text.splitlines() if str(credential) in line]
    assert (
        lines[0] == f"ERROR : credential file {credential} {reason}: scans wait until it is fixed"
    )
    assert lines[1:] and all(
        line == f"WARNING : cr_scan_00001: credential file {credential} {reason} (will be retried)"
        for line in lines[1:]
    ), lines
    assert not posted_pids(scicat, bid)


def test_nexus_without_an_entry_is_named_with_the_reason_in_one_line(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    bid = "96220050"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    make_scan(raw, "ne_good_00001")
    master = raw / "ne_noentry_00002.nxs"
    with h5py.File(master, "w") as handle:
        handle.create_group("not_an_entry")
    caplog.set_level(logging.WARNING, logger="scingestor")
    service = service_factory(scicat.url)
    listing = raw / f"scicat-datasets-{bid}.lst"
    for name in ("ne_good_00001", "ne_noentry_00002"):
        append_list_line(listing, name)
    assert wait_until(lambda: posted_pids(scicat, bid) == {f"{bid}/ne_good_00001": 1}, 60)
    assert wait_until(
        lambda: any("ne_noentry_00002: metadata missing" in r.getMessage() for r in caplog.records)
    )
    assert service.wait_idle(30)
    lines = [r.getMessage() for r in caplog.records if "ne_noentry_00002" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert f"{master}: no NXentry in it: nothing written" in lines[0]


def test_scan_listed_before_its_master_file_is_ingested_with_it_without_restart(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    """The daemon waits a few tries for a missing master file, then ingests the whole scan."""
    bid = "96220060"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    raw.mkdir(parents=True)
    make_beamtime(gpfs, bid)
    staging = tmp_path / "staging"
    master = make_scan(staging, "late_00001", detectors={"pilatus": 2})
    caplog.set_level(logging.INFO, logger="scingestor")
    # a long backoff: the file arrives while the scan waits
    service = service_factory(scicat.url, retry_base_delay=5.0, max_generator_attempts=4)
    append_list_line(raw / f"scicat-datasets-{bid}.lst", "late_00001")
    assert wait_until(lambda: "waiting for their master file" in service.status, 30), service.status
    assert not posted_pids(scicat, bid)
    # the writer comes: detector files first, then the master file (renamed in whole)
    os.rename(staging / "late_00001", raw / "late_00001")
    os.rename(master, raw / "late_00001.nxs")
    assert wait_until(lambda: posted_pids(scicat, bid) == {f"{bid}/late_00001": 1}, 60)
    assert service.wait_idle(30)
    dataset = scicat.datasets[f"{bid}/late_00001"]
    assert "title" in dataset["scientificMetadata"]  # described from the master file
    blocks = [
        b for b in scicat.origdatablocks.values() if b.get("datasetId") == f"{bid}/late_00001"
    ]
    paths = {entry["path"] for entry in blocks[0]["dataFileList"]}
    assert "late_00001.nxs" in paths and "late_00001/pilatus_00000.raw" in paths
    assert service.snapshot()["without_data_files_count"] == 0
    assert "waiting for their master file" not in service.status
    assert not any("no master file" in r.getMessage() for r in caplog.records)


def test_scan_whose_master_file_never_comes_is_posted_after_the_wait(
    tmp_path: Path, scicat: SciCatServer, service_factory, caplog
) -> None:
    bid = "96220061"
    raw = tmp_path / "gpfs" / "raw"
    raw.mkdir(parents=True)
    make_beamtime(tmp_path / "gpfs", bid)
    caplog.set_level(logging.INFO, logger="scingestor")
    service = service_factory(scicat.url, max_generator_attempts=3)
    append_list_line(raw / f"scicat-datasets-{bid}.lst", "never_00001")
    assert wait_until(lambda: posted_pids(scicat, bid) == {f"{bid}/never_00001": 1}, 60)
    assert service.wait_idle(30)
    waits = [r for r in caplog.records if "not there yet" in r.getMessage()]
    assert len(waits) == 2 and all(r.levelno == logging.INFO for r in waits)
    warnings = [r for r in caplog.records if "has no master file" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert service.snapshot()["without_data_files_count"] == 1


def test_credential_file_too_open_is_one_warning_and_the_batch_runs(
    tmp_path: Path, scicat: SciCatServer, restore_logging
) -> None:
    from scingestor.cli.dataset_ingest import main

    bid = "96220043"
    gpfs, credential = _listed_scan(tmp_path, scicat.url, bid, "op_scan_00001")
    config = _batch_config(tmp_path, scicat.url, credential, [gpfs])
    credential.chmod(0o644)  # (after: the settings write it anew, mode 600)
    log = tmp_path / "batch.log"
    assert main(["-c", str(config), "-f", str(log), "--no-progress"]) == 0
    lines = [line for line in log.read_text().splitlines() if str(credential) in line]
    assert lines == [
        f"WARNING : Credential file {credential} is accessible by group or others "
        f"(mode 0o644): restrict it with 'chmod 600 {credential}'"
    ]
    assert posted_pids(scicat, bid) == {f"{bid}/op_scan_00001": 1}


def test_the_batch_tool_ingests_odd_scans_and_names_the_bad_one_in_one_line(
    tmp_path: Path, scicat: SciCatServer, restore_logging
) -> None:
    """``scicat_dataset_ingest`` over Latin-1 text, odd links and a zero-byte FIO."""
    from scingestor.cli.dataset_ingest import main

    bid = "96220070"
    gpfs = tmp_path / "gpfs"
    raw = gpfs / "raw"
    make_beamtime(gpfs, bid)
    make_scan(raw, "bt_good_00001")
    latin1_nexus(raw, "bt_nexus_00002")
    latin1_fio(raw, "bt_fio_00003")
    make_scan(raw, "bt_links_00004", detectors={"pilatus": 1})
    (raw / "bt_links_00004" / "x.raw").symlink_to("/etc/passwd")
    (raw / "bt_links_00004" / "gone.raw").symlink_to(raw / "nowhere")
    (raw / "bt_empty_00005.fio").write_bytes(b"")
    make_scan(raw, "bt_good_00006")
    names = [
        "bt_good_00001",
        "bt_nexus_00002",
        "bt_fio_00003",
        "bt_links_00004",
        "bt_empty_00005",
        "bt_good_00006",
    ]
    for name in names:
        append_list_line(raw / f"scicat-datasets-{bid}.lst", name)
    credential = Path(settings_for(tmp_path, scicat.url)["ingestor_credential_file"])
    config = _batch_config(tmp_path, scicat.url, credential, [gpfs])
    log = tmp_path / "batch.log"
    assert main(["-c", str(config), "-f", str(log), "--no-progress"]) == 1  # the empty FIO
    text = log.read_text()
    assert "Traceback" not in text and "codec can't decode" not in text
    expected = sorted(f"{bid}/{name}" for name in names if name != "bt_empty_00005")
    assert sorted(posted_pids(scicat, bid)) == expected
    lines = text.splitlines()
    assert any(
        line.startswith("WARNING : ") and "bt_nexus_00002" in line and "kept as Latin-1" in line
        for line in lines
    )
    assert any("bt_links_00004" in line and "not followed" in line for line in lines)
    assert any("bt_empty_00005" in line and "is empty (0 bytes)" in line for line in lines)
    assert not any(line.lstrip().startswith("usage:") for line in lines)
