"""Metrics endpoint and systemd notifications, with real sockets."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from scingestor.errors import ScingestorError
from scingestor.health import MetricsServer, ServiceSnapshot, SystemdNotifier, sd_notify

SNAPSHOT = ServiceSnapshot(
    ingested_count=7,
    unchanged_count=2,
    failed_count=1,
    queue_length=3,
    last_success_time=1700000000.5,
    scicat_reachable=True,
    watched_beamtimes=("1", "2"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_metrics_endpoint_reports_the_service() -> None:
    port = free_port()
    server = MetricsServer(lambda: SNAPSHOT, port)
    server.start()
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.stop()
    text = text.decode()
    assert "scingestor_ingested_total 7.0" in text
    assert "scingestor_failed_total 1.0" in text
    assert "scingestor_pending 3.0" in text
    assert "scingestor_scicat_reachable 1.0" in text
    assert "scingestor_watched_beamtimes 2.0" in text


def test_metrics_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ScingestorError, match=f"127.0.0.1:{port}"):
            MetricsServer(lambda: SNAPSHOT, port).start()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_and_watchdog(notify_socket, monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier(lambda: True)
    notifier.ready("watching 1 beamtime")
    assert notify_socket.recv(1024) == b"READY=1\nSTATUS=watching 1 beamtime"
    assert notify_socket.recv(1024) == b"WATCHDOG=1"
    notifier.stopping()
    messages = []
    deadline = time.monotonic() + 5
    while b"STOPPING=1" not in messages and time.monotonic() < deadline:
        messages.append(notify_socket.recv(1024))
    assert b"STOPPING=1" in messages


def test_no_watchdog_ping_when_unhealthy(notify_socket, monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    notifier = SystemdNotifier(lambda: False)
    notifier.ready()
    assert notify_socket.recv(1024) == b"READY=1"
    notify_socket.settimeout(0.3)
    with pytest.raises(socket.timeout):
        notify_socket.recv(1024)
    notifier.stopping()


def test_without_systemd_nothing_is_sent(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


def test_the_snapshot_tells_its_changes_field_by_field() -> None:
    before = ServiceSnapshot()
    after = ServiceSnapshot(queue_length=2, watched_beamtimes=("1",))
    assert after.changes(before) == [("queue_length", 2), ("watched_beamtimes", ["1"])]
    assert dict(after.changes(None)) == after.as_dict()
    assert after["watched_beamtimes"] == ["1"] and after.as_dict()["state"] == "OFF"
    applied = before.with_value("queue_length", 2).with_value("watched_beamtimes", ["1"])
    assert applied == after
    with pytest.raises(KeyError):
        after["no_such_field"]
