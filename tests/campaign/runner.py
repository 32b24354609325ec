"""Play one schedule against a real daemon, batch runs and the test server.

The daemon runs as a subprocess (``tests.reliability.conftest.Daemon``, so
it can be killed with SIGKILL); the SciCat-compatible server runs in this
process, one per schedule, so its store is exactly what the schedule made.
At the end every fault is lifted, the daemon (restarted if it was killed)
drains, and :mod:`.invariants` judges the final state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from scingestor.testing.builders import make_scan
from scingestor.testing.scicat_server import SciCatServer

from ..helpers import wait_until
from ..reliability.conftest import Daemon, Scenario, fill
from .invariants import FinalState, Violation, check
from .schedule import FAULT_KINDS, Schedule, Step

#: the daemon's configuration in a campaign: small, fast, thumbnails off
#: (only PNG files become attachments: no plot is drawn from a NeXus file)
CAMPAIGN_CONFIG: Dict[str, Any] = {
    "ingest_dataset_attachment": True,
    "plot_file_extension_list": ["png"],
    "ingestion_workers": 2,
    "max_request_tries_number": 3,
    "request_timeout": 5.0,
    "retry_base_delay": 0.3,
    # the safety re-scan every 5 s (not 100 s): a beamtime directory moved
    # back is found again within the drain time
    "recheck_dataset_list_interval": 50,
    "recheck_beamtime_file_interval": 50,
}


# -- what the test server and this machine offer ---------------------------------------------


class ScratchDisk:
    """A small tmpfs for the var dirs, to fill up (needs root or CAP_SYS_ADMIN).

    Mounted once per campaign; each schedule uses a folder of its own on it.
    """

    def __init__(self, point: Path, size: str = "16m") -> None:
        self.point = point
        self.size = size
        self.mounted = False
        self.reason = ""

    def mount(self) -> bool:
        self.point.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            self.reason = "no mount command"
            return False
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.point)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.mounted = result.returncode == 0
        if not self.mounted:
            self.reason = result.stderr.strip() or f"mount exited {result.returncode}"
        return self.mounted

    def unmount(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.point)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(self.point)], capture_output=True)
            self.mounted = False


def available_kinds(disk: Optional[ScratchDisk]) -> Tuple[List[str], Dict[str, str]]:
    """The fault kinds this machine and this test server offer, and why others not."""
    missing: Dict[str, str] = {}
    if disk is None or not disk.mounted:
        missing["disk_full"] = "no small file system to fill: " + (
            disk.reason if disk is not None else "not asked for"
        )
    return [kind for kind in FAULT_KINDS if kind not in missing], missing


# -- one schedule ----------------------------------------------------------------------------


@dataclass
class Result:
    """The outcome of one schedule."""

    schedule: Schedule
    violations: List[Violation]
    seconds: float
    workdir: Path
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class Runner:
    """Plays one :class:`Schedule` in *workdir* and checks it."""

    def __init__(
        self,
        schedule: Schedule,
        workdir: Path,
        disk: Optional[ScratchDisk] = None,
        drain_timeout: float = 120.0,
    ) -> None:
        self.schedule = schedule
        self.workdir = workdir
        self.disk = disk
        self.drain_timeout = drain_timeout
        self.server = SciCatServer().start()
        var = None
        if disk is not None and disk.mounted:
            var = disk.point / f"var-{schedule.seed}"
        self.env = Scenario(workdir, self.server, schedule.beamtime_id, var=var, **CAMPAIGN_CONFIG)
        self.away = workdir / "gpfs-away"
        self.batches: List[Tuple[subprocess.Popen, Path]] = []
        self.filler: Optional[Path] = None
        self.daemon: Optional[Daemon] = None
        self.notes: List[str] = []

    # -- the run ------------------------------------------------------------------

    def run(self) -> Result:
        started = time.monotonic()
        try:
            for scan in self.schedule.scans:
                make_scan(
                    self.env.raw,
                    scan.name,
                    kind=scan.kind,
                    detectors={"det": 1} if scan.detector else None,
                    plot=scan.plot,
                )
            self.daemon = self.env.daemon()
            self.daemon.wait_started()
            for step in self.schedule.steps:
                self._play(step)
            state = self._drain()
            violations = check(self.schedule, state)
        finally:
            self._cleanup()
        return Result(
            self.schedule, violations, time.monotonic() - started, self.workdir, self.notes
        )

    def _play(self, step: Step) -> None:
        getattr(self, "_do_" + step.kind)(step)

    # -- list file ----------------------------------------------------------------

    @staticmethod
    def _text(lines: List[str]) -> str:
        """As the sardana writers leave a list file: each record after a newline."""
        return "".join("\n" + line for line in lines)

    def _current(self) -> str:
        try:
            return self.env.list_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def _do_append(self, step: Step) -> None:
        with open(self.env.list_file, "a", encoding="utf-8") as handle:
            handle.write(self._text(step.get("lines")))

    def _do_replace(self, step: Step) -> None:
        temp = self.env.list_file.with_name("." + self.env.list_file.name + ".tmp")
        temp.write_text(self._current() + self._text(step.get("lines")), encoding="utf-8")
        os.replace(temp, self.env.list_file)

    def _do_truncate(self, step: Step) -> None:
        records = [line for line in self._current().split("\n") if line.strip()]
        kept = records[: step.get("keep")]
        with open(self.env.list_file, "r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.flush()
            handle.write(self._text(kept + list(step.get("lines"))))

    # -- SciCat ---------------------------------------------------------------------

    def _do_errors_on(self, step: Step) -> None:
        self.server.set_error_rate(step.get("rate"), step.get("status"), seed=step.get("seed"))

    def _do_errors_off(self, step: Step) -> None:
        self.server.set_error_rate(0.0)

    def _do_fail_next(self, step: Step) -> None:
        self.server.fail_next(step.get("n"), step.get("status"))

    def _do_store_fail_on(self, step: Step) -> None:
        self.server.store_then_fail(rate=step.get("rate"), seed=step.get("seed"))

    def _do_store_fail_off(self, step: Step) -> None:
        self.server.store_then_fail(rate=0.0)

    def _do_lose(self, step: Step) -> None:
        self.server.lose_next_responses(step.get("n"), step.get("method"))

    def _do_expire_tokens(self, step: Step) -> None:
        self.server.expire_tokens()

    def _do_latency(self, step: Step) -> None:
        self.server.set_latency(step.get("seconds"))

    def _do_latency_off(self, step: Step) -> None:
        self.server.set_latency(0.0)

    def _do_token_uses(self, step: Step) -> None:
        """Tokens die after *uses* requests."""
        self.server.set_token_uses(step.get("uses"))

    def _do_token_uses_off(self, step: Step) -> None:
        self.server.set_token_uses(None)

    def _do_down(self, step: Step) -> None:
        self.server.set_down(True)

    def _do_up(self, step: Step) -> None:
        self.server.set_down(False)

    def _do_hold(self, step: Step) -> None:
        """Let the faults act: until SciCat saw *requests* more, at most *seconds*."""
        before = len(self.server.recorded())
        wanted = int(step.get("requests", 0))
        seconds = float(step.get("seconds", 1.0))
        if wanted <= 0:
            time.sleep(seconds)  # a fault's duration, not a synchronisation
            return
        wait_until(lambda: len(self.server.recorded()) >= before + wanted, seconds)

    # -- processes ------------------------------------------------------------------

    def _do_kill9(self, step: Step) -> None:
        if self.daemon is not None and self.daemon.alive():
            self.daemon.kill9()

    def _do_restart(self, step: Step) -> None:
        if self.daemon is None or not self.daemon.alive():
            self.daemon = self.env.daemon()

    def _do_batch(self, step: Step) -> None:
        out = self.workdir / f"batch-{len(self.batches) + 1}.out"
        with open(out, "wb") as handle:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scingestor.cli.dataset_ingest",
                    "-c",
                    str(self.env.config_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.batches.append((process, out))

    # -- files ----------------------------------------------------------------------

    def _do_disk_full(self, step: Step) -> None:
        if self.disk is None or not self.disk.mounted:
            raise RuntimeError("the schedule uses disk_full, but no scratch disk is mounted")
        if self.filler is None:
            self.filler = fill(self.disk.point)

    def _do_disk_free(self, step: Step) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
            self.filler = None

    def _do_move_away(self, step: Step) -> None:
        os.rename(self.env.root, self.away)

    def _do_move_back(self, step: Step) -> None:
        if self.away.exists():
            os.rename(self.away, self.env.root)

    # -- the end --------------------------------------------------------------------

    def _lift_faults(self) -> None:
        self.server.reset_faults()
        self._do_store_fail_off(Step("store_fail_off"))
        self._do_token_uses_off(Step("token_uses_off"))
        self._do_disk_free(Step("disk_free"))
        self._do_move_back(Step("move_back"))

    def _drain(self) -> FinalState:
        self._lift_faults()
        self._do_restart(Step("restart"))
        assert self.daemon is not None
        crashes: List[str] = []
        for index, (process, out) in enumerate(self.batches, 1):
            try:
                process.wait(self.drain_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(10)
                crashes.append(f"batch run {index} hung for {self.drain_timeout:.0f} s ({out})")
            text = out.read_text(errors="replace")
            if "Traceback" in text:
                crashes.append(f"batch run {index} died with a traceback ({out})")
        keys = self.schedule.expected_keys()
        drained = wait_until(
            lambda: all(self.env.ingested().is_done(key) for key in keys),
            self.drain_timeout,
            interval=0.2,
        )
        # the daemon may still finish a retry: wait until SciCat is quiet a moment
        self._quiet()
        if not self.daemon.alive():
            crashes.append(f"the daemon exited by itself ({self.daemon.out})")
        code = self.daemon.stop()
        if code != 0:
            crashes.append(f"the daemon exited {code} on SIGTERM ({self.daemon.log})")
        logs = self.env.logs()
        if "Traceback" in logs:
            crashes.append("a daemon log holds a traceback (an unexpected error)")
        ingested = self.env.ingested()
        return FinalState(
            datasets=self.server.datasets,
            origdatablocks=self.server.origdatablocks,
            attachments=self.server.attachments,
            ingested_keys=[record.key for record in ingested.records],
            done_keys=[key for key in {r.key for r in ingested.records} if ingested.is_done(key)],
            drained=drained,
            crashes=crashes,
        )

    def _quiet(self, window: float = 1.0, limit: float = 20.0) -> None:
        """Until no request reached SciCat for *window* seconds (at most *limit*)."""
        deadline = time.monotonic() + limit
        last = len(self.server.recorded())
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = len(self.server.recorded())
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= window:
                return

    def _cleanup(self) -> None:
        try:
            self._lift_faults()
        except OSError:
            pass
        for process, _ in self.batches:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, 9)
                except ProcessLookupError:
                    pass
                process.wait(10)
        self.env.cleanup()
        self.server.stop()
        if self.disk is not None and self.disk.mounted:
            shutil.rmtree(self.disk.point / f"var-{self.schedule.seed}", ignore_errors=True)
