"""Shared test harness: a real ``bistouryd`` in a temporary directory, with a real
datagram socket standing in for systemd's notification socket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BISTOURYD = str(BIN / "bistouryd")
BISTOURYCTL = str(BIN / "bistouryctl")

# Fast supervision for tests: agents heartbeat every 0.2 s and are declared silent after 1 s.
FAST_AGENTS = """
agents:
  enabled: [recorder]
  heartbeat_interval_s: 0.2
  heartbeat_timeout_s: 1.0
  restart_backoff_initial_s: 0.1
  restart_backoff_max_s: 1
  stop_timeout_s: 3
"""
BASE_CONFIG = (
    """
metrics:
  port: 0
logging:
  level: DEBUG
"""
    + FAST_AGENTS
)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class NotifySocket:
    """A datagram socket that records what the daemon sends to "systemd"."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8")))

    def lines(self) -> list[tuple[float, str]]:
        """Every ``KEY=value`` line received, with the arrival time of its datagram."""
        with self._lock:
            return [(t, line) for t, msg in self.messages for line in msg.split("\n")]

    def has(self, prefix: str, after: float = 0.0) -> bool:
        return any(line.startswith(prefix) and t >= after for t, line in self.lines())

    def times(self, line: str) -> list[float]:
        return [t for t, got in self.lines() if got == line]

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(timeout=2)


@dataclass
class Daemon:
    """One ``bistouryd`` process with its own directories."""

    root: Path
    config: Path
    env_file: Path | None
    extra_env: dict[str, str] = field(default_factory=dict)
    notify: NotifySocket | None = None
    proc: subprocess.Popen[str] | None = None
    stderr_path: Path | None = None

    @property
    def runtime(self) -> Path:
        return self.root / "run"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def socket(self) -> Path:
        return self.runtime / "control.sock"

    @property
    def log_file(self) -> Path:
        return self.state / "logs" / "bistoury.log"

    def args(self, *extra: str) -> list[str]:
        cmd = [
            BISTOURYD,
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state),
            "--runtime-dir",
            str(self.runtime),
        ]
        if self.env_file is not None:
            cmd += ["--env-file", str(self.env_file)]
        return cmd + list(extra)

    def environ(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "INVOCATION_ID",
                "JOURNAL_STREAM",
                "BISTOURY_SOCKET",
            )
        }
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = str(self.notify.path)
        env.update(self.extra_env)
        return env

    def start(self, *extra: str, wait_ready: bool = True) -> Daemon:
        self.stderr_path = self.root / f"stderr-{time.monotonic_ns()}.log"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                self.args(*extra),
                env=self.environ(),
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        if wait_ready:
            self.wait_ready()
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BISTOURYCTL, "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environ(),
        )

    def status(self) -> dict[str, Any]:
        done = self.ctl("status", "--json")
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def try_status(self) -> dict[str, Any] | None:
        if not self.socket.exists():
            return None
        done = self.ctl("status", "--json", "--timeout", "1")
        return json.loads(done.stdout) if done.returncode == 0 else None

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"bistouryd exited with {self.proc.returncode}:\n{self.stderr()}")
            status = self.try_status()
            return status if status and status["ready"] else None

        result: dict[str, Any] = wait_for(ready, timeout, "bistouryd to be ready")
        return result

    def agent(self, name: str = "recorder") -> dict[str, Any]:
        found: dict[str, Any] = next(a for a in self.status()["agents"] if a["name"] == name)
        return found

    def events(self, *args: str) -> list[dict[str, Any]]:
        done = self.ctl("events", "--json", "--limit", "1000", *args)
        assert done.returncode == 0, done.stderr
        events: list[dict[str, Any]] = json.loads(done.stdout)["events"]
        return events

    def wait_exit(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def processes(self) -> list[psutil.Process]:
        """The daemon and every process of its session (its agents), still alive."""
        if self.proc is None:
            return []
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getsid(proc.pid) == self.proc.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def kill_all(self) -> None:
        """SIGKILL the daemon and its agents, and wait until every one has exited."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Daemon]]:
    """Build daemons in short temporary directories (Unix socket paths must be < 108 bytes)."""
    made: list[Daemon] = []
    roots: list[Path] = []

    def make(
        config: str = BASE_CONFIG,
        env: str | None = None,
        notify: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> Daemon:
        root = Path(tempfile.mkdtemp(prefix="bt", dir="/tmp"))
        roots.append(root)
        config_path = root / "config.yaml"
        config_path.write_text(config)
        env_path = None
        if env is not None:
            env_path = root / "bistoury.env"
            env_path.write_text(env)
        daemon = Daemon(
            root=root,
            config=config_path,
            env_file=env_path,
            extra_env=extra_env or {},
            notify=NotifySocket(root / "notify.sock") if notify else None,
        )
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.kill_all()
        if daemon.notify is not None:
            daemon.notify.close()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    """A running daemon with the default test configuration."""
    return make_daemon().start()
