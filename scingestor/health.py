"""Health for the facility's monitoring: Prometheus metrics and systemd notify.

Both are optional and cost nothing when unused: the metrics endpoint runs
only with ``metrics_port`` set (and ``prometheus-client`` installed, the
``metrics`` extra), and systemd is told about readiness and kept fed by
watchdog pings only when it started the daemon with ``NOTIFY_SOCKET`` /
``WATCHDOG_USEC`` set.  The metrics are read from the service at scrape
time, so nothing is updated on the per-scan hot path.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Callable, Iterator, Optional

from .errors import ScingestorError

logger = logging.getLogger(__name__)


class MetricsServer:
    """``/metrics`` on ``address:port`` with the service's counters."""

    def __init__(self, snapshot: Callable[[], dict], port: int,
                 address: str = "127.0.0.1") -> None:
        self.snapshot = snapshot
        self.port = port
        self.address = address
        self._server: Any = None

    def start(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise ScingestorError("metrics_port is set but prometheus-client is not "
                                  "installed (pip install 'scingestor[metrics]')") from None
        snapshot = self.snapshot

        class Collector:
            def collect(self) -> Iterator[Any]:
                values = snapshot()
                yield CounterMetricFamily("scingestor_ingested", "scans ingested (new or "
                                          "updated)", value=values["ingested_count"])
                yield CounterMetricFamily("scingestor_unchanged", "scans found unchanged",
                                          value=values["unchanged_count"])
                yield CounterMetricFamily("scingestor_failed", "scans that failed",
                                          value=values["failed_count"])
                yield GaugeMetricFamily("scingestor_pending", "scans queued or in progress",
                                        value=values["queue_length"])
                yield GaugeMetricFamily("scingestor_last_success_timestamp_seconds",
                                        "time of the last successful ingestion",
                                        value=values["last_success_time"])
                yield GaugeMetricFamily("scingestor_scicat_reachable",
                                        "1 when SciCat answered the last request",
                                        value=1.0 if values["scicat_reachable"] else 0.0)
                yield GaugeMetricFamily("scingestor_watched_beamtimes", "beamtimes watched",
                                        value=len(values["watched_beamtimes"]))

        registry = CollectorRegistry(auto_describe=True)
        registry.register(Collector())  # type: ignore[arg-type]
        try:
            self._server = start_http_server(self.port, addr=self.address, registry=registry)
        except OSError as error:
            raise ScingestorError(f"metrics endpoint {self.address}:{self.port} cannot be "
                                  f"opened: {error.strerror or error}") from None
        logger.info("Metrics on http://%s:%d/metrics", self.address, self.port)

    def stop(self) -> None:
        server = self._server
        if isinstance(server, tuple):  # prometheus-client >= 0.17: (server, thread)
            server[0].shutdown()
            server[0].server_close()
        self._server = None


def sd_notify(message: str) -> bool:
    """Send one notification to systemd (``READY=1``, ``WATCHDOG=1``, ``STATUS=…``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError as error:
        logger.warning("systemd notification failed: %s", error)
        return False


class SystemdNotifier:
    """Readiness, status and watchdog pings while the service is healthy."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        self.healthy = healthy
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def watchdog_interval() -> Optional[float]:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None

    def ready(self, status: str = "") -> None:
        if sd_notify("READY=1" + (f"\nSTATUS={status}" if status else "")):
            interval = self.watchdog_interval()
            if interval:
                self._thread = threading.Thread(target=self._ping, args=(interval,),
                                                name="watchdog", daemon=True)
                self._thread.start()

    def _ping(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self.healthy():
                sd_notify("WATCHDOG=1")

    def stopping(self) -> None:
        self._stop.set()
        sd_notify("STOPPING=1")
