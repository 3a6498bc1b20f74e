"""bistouryd.notify: sd_notify datagrams received on a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bistouryd import notify
from bistouryd.notify import Notifier, child_environ, under_systemd

SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in SYSTEMD_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(65536).decode("utf-8")


def nothing_more(sock: socket.socket) -> bool:
    sock.settimeout(0.02)
    try:
        sock.recv(65536)
    except TimeoutError:
        return True
    return False


def test_messages(listener: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    assert received(listener) == "READY=1"
    notifier.ready("mode idle")
    assert received(listener) == "READY=1\nSTATUS=mode idle"
    notifier.status("mode collect — agents 1/1 ✓")
    assert received(listener) == "STATUS=mode collect — agents 1/1 ✓"
    notifier.stopping()
    assert received(listener) == "STOPPING=1"
    notifier.stopping("stopping: signal")
    assert received(listener) == "STOPPING=1\nSTATUS=stopping: signal"
    notifier.watchdog()
    assert received(listener) == "WATCHDOG=1"
    assert nothing_more(listener)


def test_status_is_one_line(listener: socket.socket) -> None:
    Notifier().status("agent  crashed:\n  Traceback\tmore")
    assert received(listener) == "STATUS=agent crashed: Traceback more"


def test_reloading_carries_monotonic_usec(listener: socket.socket) -> None:
    notifier = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = received(listener).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after
    assert len(lines) == 2


def test_monotonic_usec() -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    value = notify.monotonic_usec()
    assert before <= value <= before + 1_000_000


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bistoury-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        assert notifier.enabled
        notifier.ready("✓ ready")
        assert received(sock) == "READY=1\nSTATUS=✓ ready"
    finally:
        sock.close()


def test_no_notify_socket_is_silent(tmp_path: Path) -> None:
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("x")
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog()
    assert list(tmp_path.iterdir()) == []


def test_unreachable_socket_disables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()  # no exception


def test_socket_gone_after_start(listener: socket.socket, tmp_path: Path) -> None:
    notifier = Notifier()
    listener.close()
    (tmp_path / "notify.sock").unlink()
    notifier.watchdog()  # the error is logged once, not raised
    notifier.watchdog()
    assert notifier._failed


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert Notifier().watchdog_interval_s == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval_s == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval_s is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "not-a-number")
    assert Notifier().watchdog_interval_s is None


def test_child_environ() -> None:
    source = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "1",
        "WATCHDOG_PID": "2",
        "PATH": "/usr/bin",
        "INVOCATION_ID": "abc",
        "HYPERLIQUID_PRIVATE_KEY": "k",
    }
    assert child_environ(source) == {
        "PATH": "/usr/bin",
        "INVOCATION_ID": "abc",
        "HYPERLIQUID_PRIVATE_KEY": "k",
    }
    assert "NOTIFY_SOCKET" in source  # the input is not modified


def test_child_environ_defaults_to_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/x")
    monkeypatch.setenv("BISTOURY_TEST_KEEP", "yes")
    env = child_environ()
    assert "NOTIFY_SOCKET" not in env
    assert env["BISTOURY_TEST_KEEP"] == "yes"


def test_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    assert under_systemd({}) is False
    assert under_systemd({"INVOCATION_ID": "abc"}) is True
    assert under_systemd({"NOTIFY_SOCKET": "/run/systemd/notify"}) is True
    assert under_systemd({"INVOCATION_ID": "", "PATH": "/bin"}) is False
    assert under_systemd() is False
    monkeypatch.setenv("INVOCATION_ID", "x")
    assert under_systemd() is True
