"""``scingestor-demo``: the whole chain on a fresh machine, no external services.

Starts the SciCat-compatible server on loopback, pytango's bundled sqlite
Tango database, registers and starts the real ``ScicatIngestorDS`` device
server, then plays a beamline: a beamtime whose scans are appended to the
dataset list file over time, with a measurement started and stopped through
the device's commands.  It prints what SciCat stored, how to look at the
device, and cleans everything up (processes terminated, scratch directory
removed), also when stopped by Ctrl-C or SIGTERM.  ``--serve SECONDS`` keeps it
all running a while to poke at it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from . import __version__
from .testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer
from .testing.tangodb import database_argv

BEAMTIME_ID = "99001234"
DEVICE = "test/scicatingestor/1"
INSTANCE = "demo"
SAMPLE = {
    "sampleId": "demo-sample-0001",
    "owner": "Jane Doe",
    "description": "Lysozyme crystal, demo sample",
    "ownerGroup": "ingestor",
    "accessGroups": ["99001234-dmgt"],
}
STARTUP_TIMEOUT = 30.0


def write_demo_files(workdir: Path, url: str) -> Path:
    """Configuration and credential file of the demo; returns the configuration."""
    account = DEFAULT_ACCOUNTS[0]
    credential = workdir / "scingestor-credentials.json"
    credential.write_text(json.dumps({"username": account.username, "password": account.password}))
    credential.chmod(0o600)
    config = workdir / "scingestor.yaml"
    config.write_text(
        f"scicat_url: {url}\n"
        f"ingestor_credential_file: {credential}\n"
        "scicat_users_login_path: auth/login\n"
        f"beamtime_dirs:\n  - {workdir / 'gpfs' / 'current'}\n"
        f"ingestor_var_dir: {workdir / 'var'}\n"
        f"ingestor_state_dir: {workdir / 'state'}\n"
        "ingestion_delay_time: 0.5\n"
        "max_request_tries_number: 3\n"
        "request_timeout: 10\n"
    )
    (workdir / "sample.json").write_text(json.dumps(SAMPLE, indent=2))
    return config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: Optional["subprocess.Popen[bytes]"] = None,
    log: Optional[Path] = None,
) -> None:
    """Poll ``condition``; fail clearly when it times out or ``process`` died."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: the process exited with {process.returncode}\n{tail}")
        if condition():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def terminate(process: "subprocess.Popen[bytes]", timeout: float = 10.0) -> Optional[int]:
    """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@contextlib.contextmanager
def spawned(
    command: List[str], *, cwd: Path, env: Dict[str, str], log: Path
) -> Iterator["subprocess.Popen[bytes]"]:
    """A child process with its output in ``log``, terminated on exit."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        terminate(process)


def database_answers(tango: Any, port: int) -> bool:
    try:
        tango.Database("127.0.0.1", port).get_server_list("*")
        return True
    except tango.DevFailed:
        return False


def register_device(tango: Any, config: Path) -> None:
    """Register ``ScicatIngestorDS/demo`` with its device, as Jive or tango_admin would."""
    db = tango.Database()
    info = tango.DbDevInfo()
    info.server = f"ScicatIngestorDS/{INSTANCE}"
    info._class = "ScicatIngestorDS"
    info.name = DEVICE
    db.add_device(info)
    db.put_device_property(DEVICE, {"ConfigFile": [str(config)]})


def device_state(tango: Any) -> Any:
    try:
        return tango.DeviceProxy(DEVICE).state()
    except tango.DevFailed:
        return None


class Watch:
    """Change events of the device, printed as they come and kept for the summary."""

    def __init__(self, proxy: Any, tango: Any) -> None:
        self.states: List[str] = []
        self.lock = threading.Lock()
        self.proxy = proxy
        self.ids = [
            proxy.subscribe_event("State", tango.EventType.CHANGE_EVENT, self._state),
            proxy.subscribe_event("LastIngestedScan", tango.EventType.CHANGE_EVENT, self._ingested),
        ]

    def _state(self, event: Any) -> None:
        if not event.err and event.attr_value is not None:
            with self.lock:
                name = str(event.attr_value.value)
                if not self.states or self.states[-1] != name:
                    self.states.append(name)

    def _ingested(self, event: Any) -> None:
        if not event.err and event.attr_value is not None and event.attr_value.value:
            print(f"    event: LastIngestedScan = {event.attr_value.value}", flush=True)

    def close(self) -> None:
        for event_id in self.ids:
            with contextlib.suppress(Exception):
                self.proxy.unsubscribe_event(event_id)


def play_beamline(proxy: Any, raw: Path) -> int:
    """Scans appended over time, a measurement through the device; returns lines listed."""
    from .testing.builders import append_list_line, make_scan

    list_file = raw / f"scicat-datasets-{BEAMTIME_ID}.lst"
    listed = 0

    def scan(name: str) -> None:
        nonlocal listed
        make_scan(raw, name)
        append_list_line(list_file, name)
        listed += 1
        print(f"  beamline: {name}.nxs written, '{name}' appended to {list_file.name}", flush=True)
        time.sleep(0.3)

    scan("scan_00001")
    wait_for(lambda: proxy.IngestedCount >= 1, 30, "the first scan")
    print(f"  > StartMeasurement('calibration') -> {proxy.StartMeasurement('calibration')!r}")
    scan("scan_00002")
    scan("scan_00003")
    print(f"  > StopMeasurement() -> {proxy.StopMeasurement()!r}")
    listed += 1  # the measurement dataset itself
    scan("scan_00004")
    return listed


def describe(dataset: Dict[str, Any]) -> str:
    kind = dataset.get("type", "?")
    name = dataset.get("datasetName") or dataset.get("scientificMetadata", {}).get("name", "")
    extra = ""
    if dataset.get("scientificMetadata", {}).get("measurement"):
        extra = "  (measurement)"
    return f"{kind:8s} {name}{extra}"


def run_demo(workdir: Path, server: SciCatServer, serve: float) -> int:
    import tango

    config = write_demo_files(workdir, server.url)
    beamtime = workdir / "gpfs" / "current"
    from .testing.builders import make_beamtime

    make_beamtime(beamtime, BEAMTIME_ID)
    raw = beamtime / "raw"
    raw.mkdir()
    print(f"SciCat-compatible server   {server.url}")
    print(f"configuration              {config}")

    port = free_port()
    host = f"127.0.0.1:{port}"
    env = dict(os.environ, TANGO_HOST=host, SCINGESTOR_LOG_LEVEL="info")
    os.environ["TANGO_HOST"] = host  # for this process's clients
    (workdir / "tango").mkdir()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        db_log = workdir / "tango" / "databaseds.log"
        database = stack.enter_context(
            spawned(
                database_argv(port),
                cwd=workdir / "tango",
                env=env,
                log=db_log,
            )
        )
        wait_for(
            lambda: database_answers(tango, port),
            STARTUP_TIMEOUT,
            "the Tango database",
            database,
            db_log,
        )
        print(f"Tango database (sqlite)    TANGO_HOST={host}  ({time.monotonic() - started:.1f} s)")
        register_device(tango, config)
        print(
            f"registered                 {DEVICE} in server ScicatIngestorDS/{INSTANCE}, "
            f"property ConfigFile={config.name}"
        )

        ds_log = workdir / "ScicatIngestorDS.log"
        device_server = stack.enter_context(
            spawned(
                [sys.executable, "-m", "ScicatIngestorDS", INSTANCE],
                cwd=workdir,
                env=env,
                log=ds_log,
            )
        )
        wait_for(
            lambda: device_state(tango) == tango.DevState.ON,
            STARTUP_TIMEOUT,
            "the ScicatIngestorDS device",
            device_server,
            ds_log,
        )
        proxy = tango.DeviceProxy(DEVICE)
        proxy.set_timeout_millis(15000)
        print(f"$ ScicatIngestorDS {INSTANCE}        -> {proxy.state()}: {proxy.status()}")
        watch = Watch(proxy, tango)
        stack.callback(watch.close)

        print("\nA beamline at work (ingestion_delay_time 0.5 s):")
        listed = play_beamline(proxy, raw)
        wait_for(
            lambda: (
                proxy.IngestedCount + proxy.FailedCount >= listed
                and proxy.QueueLength == 0
                and proxy.state() == tango.DevState.ON
            ),
            60,
            "the ingestion of every listed scan",
            device_server,
            ds_log,
        )
        time.sleep(0.2)  # the last events
        print(f"\nState changes seen by a client: {' -> '.join(watch.states)}")
        print(
            f"Device: IngestedCount={proxy.IngestedCount} FailedCount={proxy.FailedCount} "
            f"LastIngestedScan={proxy.LastIngestedScan!r} "
            f"WatchedBeamtimes={list(proxy.WatchedBeamtimes)}"
        )
        print(f"Status: {proxy.status()}")

        print(f"\nStored in SciCat ({len(server.datasets)} datasets):")
        for pid, dataset in sorted(server.datasets.items()):
            print(f"  {pid:32s} {describe(dataset)}")
        blocks = server.origdatablocks
        print(f"  + {len(blocks)} origdatablocks, {len(server.attachments)} attachments")

        from .cli import model_ingest

        print(f"\n$ scicat_ingest -m Samples -c {config.name} sample.json")
        model_ingest.main(["-m", "Samples", "-c", str(config), str(workdir / "sample.json")])
        print(f"  samples in SciCat: {sorted(server.samples)}")

        print(f"""
Look at the device (while it runs, e.g. with --serve 600):
  export TANGO_HOST={host}
  python -c "import tango; d = tango.DeviceProxy('{DEVICE}'); print(d.state(), d.status())"
  itango        then  d = Device('{DEVICE}'); d.IngestedCount; d.StartMeasurement('m1')
  taurus form {DEVICE}      (needs taurus with a Qt binding)
Server log: {ds_log} (the scratch directory is removed at the end)""")
        if serve > 0:
            print(f"\nServing for {serve:g} s (Ctrl-C to stop)")
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(serve)
        failed = int(proxy.FailedCount)
        watch.close()
        code = terminate(device_server)
        print(
            f"\nStopped ScicatIngestorDS (exit code {code}), the Tango database and the "
            f"SciCat server; {time.monotonic() - started:.1f} s in all."
        )
    return 0 if failed == 0 else 1


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, stopping everything the demo started."""


def _on_sigterm(_number: int, _frame: Any) -> None:
    # once: a second SIGTERM must not cut the clean-up short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scingestor-demo",
        description="Run the ingestor's Tango device against an embedded SciCat-compatible "
        "server and pytango's sqlite Tango database.",
    )
    parser.add_argument(
        "--serve",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep everything running SECONDS after the demo (to poke at it)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    previous = os.environ.get("TANGO_HOST")
    # SIGTERM (kill, systemd, a CI timeout) cleans up as Ctrl-C does: the
    # context managers below stop the device server (and so its workers), the
    # Tango database and the SciCat server, and remove the scratch folder
    # (below $TMPDIR)
    handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="scingestor-demo-") as tmp,
            SciCatServer() as server,
        ):
            code = run_demo(Path(tmp), server, args.serve)
    except RuntimeError as error:
        print(f"ERROR : {error}", file=sys.stderr)
        code = 1
    except Terminated:
        print(
            "\nSIGTERM: stopped the device server, the Tango database and the SciCat "
            "server, removed the scratch folder",
            flush=True,
        )
        code = 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(
            "\nInterrupted: stopped the device server, the Tango database and the "
            "SciCat server, removed the scratch folder",
            flush=True,
        )
        code = 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, handler)
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous
    sys.stdout.flush()
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
