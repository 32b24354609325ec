"""Health: what State, Status and LastError say, and the facility's monitoring.

:class:`HealthView` composes the operator's picture of a running service
(state, the problems that hold *now*, plain facts) so the CLI, the metrics
and the Tango device say the same; :class:`ErrorHistory` keeps past error
texts with their time; :class:`SciCatProbe` finds out at once whether
SciCat answers (a login at start) and notices when it is back.

Prometheus metrics and systemd notify are optional and cost nothing when
unused: the metrics endpoint runs only with ``metrics_port`` set (and
``prometheus-client`` installed, the ``metrics`` extra), and systemd is told
about readiness and kept fed by watchdog pings only when it started the
daemon with ``NOTIFY_SOCKET`` /
``WATCHDOG_USEC`` set.  The metrics are read from the service at scrape
time, so nothing is updated on the per-scan hot path.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .errors import ScingestorError

logger = logging.getLogger(__name__)

#: seconds between probes while SciCat is unreachable or not known yet
PROBE_INTERVAL = 2.0
#: error texts kept with their time (newest first)
HISTORY_LENGTH = 20


@dataclass
class HealthView:
    """What an operator is told about a running service.

    ``problems`` are conditions that hold now, most important first: any of
    them makes the state ALARM, the first is LastError, all head the Status.
    ``facts`` are plain status lines (watching, pending, counts).  ``recent``
    is a one-off error (a refused command, a bad list line) not yet followed
    by a success: LastError when there is no problem, and a Status line.
    ``warnings`` are lasting conditions that do not stop ingestion (an account
    that may not delete): no ALARM, but a Status line and LastError while
    nothing more urgent is to be said.
    Other parts of the ingestor add their problem or fact line here, nothing
    else needs to know.
    """

    running: bool = True
    busy: bool = False
    problems: List[str] = field(default_factory=list)
    facts: List[str] = field(default_factory=list)
    recent: str = ""
    warnings: List[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if not self.running:
            return "OFF"
        if self.problems:
            return "ALARM"
        return "RUNNING" if self.busy else "ON"

    @property
    def last_error(self) -> str:
        if self.problems:
            return self.problems[0]
        return self.recent or (self.warnings[0] if self.warnings else "")

    @property
    def status(self) -> str:
        if not self.running:
            return "Stopped"
        lines = self.problems + [f"warning: {text}" for text in self.warnings] + self.facts
        if self.recent and self.recent not in self.problems:
            lines.append(f"last error: {self.recent}")
        return "; ".join(lines)


@dataclass(frozen=True)
class ServiceSnapshot:
    """Everything an operator looks at, read in one go: one type for all readers.

    The Tango device shows it (one attribute per field, by change
    notifications named after the fields), the metrics endpoint exports it,
    the CLI logs its state and status.  The defaults are what a service
    that never ran shows.
    """

    state: str = "OFF"
    status: str = "Stopped"
    queue_length: int = 0
    last_error: str = ""
    last_error_time: float = 0.0
    error_history: Tuple[str, ...] = ()
    ingested_count: int = 0
    unchanged_count: int = 0
    failed_count: int = 0
    without_data_files_count: int = 0
    last_ingested_scan: str = ""
    last_success_time: float = 0.0
    current_measurement: str = ""
    watched_beamtimes: Tuple[str, ...] = ()
    #: not known before the first answer counts as not reachable (but no alarm)
    scicat_reachable: bool = False
    scicat_url: str = ""
    #: lasting conditions that do not stop ingestion (e.g. an account that may not delete)
    warning: str = ""

    def as_dict(self) -> Dict[str, Any]:
        """Field name -> value (lists as lists: JSON and Tango take them)."""
        return {item.name: _plain(getattr(self, item.name)) for item in fields(self)}

    def __getitem__(self, name: str) -> Any:
        """``snapshot["ingested_count"]``: the field, as :meth:`as_dict` gives it."""
        if name not in _SNAPSHOT_FIELDS:
            raise KeyError(name)
        return _plain(getattr(self, name))

    def changes(self, before: Optional["ServiceSnapshot"]) -> List[Tuple[str, Any]]:
        """(name, value) of the fields that differ from *before* (all when None)."""
        mine = self.as_dict()
        if before is None:
            return list(mine.items())
        theirs = before.as_dict()
        return [(name, value) for name, value in mine.items() if theirs[name] != value]

    def with_value(self, name: str, value: Any) -> "ServiceSnapshot":
        """A copy with one field changed (a change notification applied)."""
        if isinstance(value, list):
            value = tuple(value)
        return replace(self, **{name: value})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_SNAPSHOT_FIELDS = frozenset(item.name for item in fields(ServiceSnapshot))


Listener = Callable[[str, Any], None]


class ChangeNotifier:
    """Tells listeners which snapshot fields changed: ``listener(field name, new value)``.

    *read* gives the snapshot of the moment; :meth:`changed` compares it
    with the one told last.  *lock* (the service's) makes the read and the
    comparison one step; listeners are called outside it, and a broken one
    never stops the others (nor ingestion).
    """

    def __init__(self, read: Callable[[], ServiceSnapshot], lock: Any) -> None:
        self._read = read
        self._lock = lock
        self._listeners: List[Listener] = []
        self._told: Optional[ServiceSnapshot] = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add *listener*; returns the unsubscriber."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def changed(self) -> None:
        """Tell listeners what changed since the last notification."""
        with self._lock:
            values = self._read()
            changes = values.changes(self._told)
            self._told = values
            listeners = list(self._listeners)
        for name, value in changes:
            for listener in listeners:
                try:
                    listener(name, value)
                except Exception:  # a broken listener must not stop ingestion
                    logger.exception("change listener failed on %s", name)


def unreachable_text(url: str, reason: str, waiting: int) -> str:
    """The one line that tells SciCat is away (Status, LastError, logs)."""
    return f"SciCat unreachable at {url}: {reason or 'no answer'}; {waiting} scan(s) waiting"


def format_time(epoch: float) -> str:
    """Local time as ``YYYY-MM-DD HH:MM:SS`` ('' for 0: never)."""
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


class ErrorHistory:
    """The latest error texts with their time, newest first (a repeat updates its time)."""

    def __init__(self, length: int = HISTORY_LENGTH) -> None:
        self._items: Deque[Tuple[float, str]] = deque(maxlen=length)

    def add(self, text: str, when: Optional[float] = None) -> None:
        if not text:
            return
        when = time.time() if when is None else when
        if self._items and self._items[0][1] == text:
            self._items.popleft()
        self._items.appendleft((when, text))

    @property
    def last_time(self) -> float:
        return self._items[0][0] if self._items else 0.0

    def lines(self) -> List[str]:
        return [f"{format_time(when)} {text}" for when, text in self._items]


class SciCatProbe:
    """Logs in to SciCat at start, then pings it while it is unreachable or unknown.

    The requests report themselves to the service through the client's
    observer; this thread only makes sure there is a request to report when
    no scan needs one: at start (so reachability is known at once) and
    while SciCat is away (so the service sees it back at once, not after the
    next retry's growing delay).  While SciCat answers it sleeps without a
    timeout until :meth:`wake` says a request failed: an idle daemon makes no
    wake-ups.
    """

    def __init__(
        self,
        client: Any,
        known_good: Callable[[], bool],
        on_login_error: Callable[[str], None],
        interval: float = PROBE_INTERVAL,
    ) -> None:
        self.client = client
        self.known_good = known_good
        self.on_login_error = on_login_error
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scicat-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """A request found SciCat away: ping it until it answers again."""
        self._wake.set()

    def _run(self) -> None:
        logged_in = False
        while not self._stop.is_set():
            if not self.known_good():
                self._ping()  # one try: known at once, either way
            if not logged_in and self.known_good():
                logged_in = True
                self._login()
            if logged_in and self.known_good():
                self._wake.wait()  # nothing to watch while SciCat answers
                self._wake.clear()
            # a failed request was just made: the next ping an interval later
            if self._stop.wait(self.interval):
                return

    def _login(self) -> None:
        """Log in once SciCat answers: a refused login is seen before the first scan."""
        from .errors import AuthenticationError, SciCatError, SciCatUnreachable

        try:
            self.client.login()
        except SciCatUnreachable:
            pass  # reported by the client's observer
        except AuthenticationError as error:
            if "no SciCat credentials" not in str(error) and not self._stop.is_set():
                self.on_login_error(str(error))
        except SciCatError as error:
            if not self._stop.is_set():
                self.on_login_error(str(error))
        except Exception:  # noqa: BLE001 - a probe never stops the service
            logger.debug("SciCat login at start failed", exc_info=True)

    def _ping(self) -> None:
        try:
            self.client.ping()
        except Exception:  # noqa: BLE001 - unreachable: the observer was told
            pass


class MetricsServer:
    """``/metrics`` on ``address:port`` with the service's counters."""

    def __init__(
        self, snapshot: Callable[[], ServiceSnapshot], port: int, address: str = "127.0.0.1"
    ) -> None:
        self.snapshot = snapshot
        self.port = port
        self.address = address
        self._server: Any = None

    def start(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise ScingestorError(
                "metrics_port is set but prometheus-client is not "
                "installed (pip install 'scingestor[metrics]')"
            ) from None
        snapshot = self.snapshot

        class Collector:
            def collect(self) -> Iterator[Any]:
                values = snapshot()
                yield CounterMetricFamily(
                    "scingestor_ingested",
                    "scans ingested (new or updated)",
                    value=values.ingested_count,
                )
                yield CounterMetricFamily(
                    "scingestor_unchanged", "scans found unchanged", value=values.unchanged_count
                )
                yield CounterMetricFamily(
                    "scingestor_failed", "scans that failed", value=values.failed_count
                )
                yield GaugeMetricFamily(
                    "scingestor_pending", "scans queued or in progress", value=values.queue_length
                )
                yield GaugeMetricFamily(
                    "scingestor_last_success_timestamp_seconds",
                    "time of the last successful ingestion",
                    value=values.last_success_time,
                )
                yield GaugeMetricFamily(
                    "scingestor_scicat_reachable",
                    "1 when SciCat answered the last request",
                    value=1.0 if values.scicat_reachable else 0.0,
                )
                yield GaugeMetricFamily(
                    "scingestor_watched_beamtimes",
                    "beamtimes watched",
                    value=len(values.watched_beamtimes),
                )

        registry = CollectorRegistry(auto_describe=True)
        registry.register(Collector())
        try:
            self._server = start_http_server(self.port, addr=self.address, registry=registry)
        except OSError as error:
            raise ScingestorError(
                f"metrics endpoint {self.address}:{self.port} cannot be "
                f"opened: {error.strerror or error}"
            ) from None
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
                self._thread = threading.Thread(
                    target=self._ping, args=(interval,), name="watchdog", daemon=True
                )
                self._thread.start()

    def _ping(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self.healthy():
                sd_notify("WATCHDOG=1")

    def stopping(self) -> None:
        self._stop.set()
        sd_notify("STOPPING=1")
