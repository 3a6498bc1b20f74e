"""A real ``bistouryd`` in temporary directories, for the benchmarks that need one.

It runs the shipped etc/config.yaml with ``metrics.port: 0`` (no fixed port to collide
with), in its own session so that it and its agents can be killed as one group if the
graceful ``stop`` does not work.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import yaml

from bench.procs import (
    BIN,
    REPO,
    BenchError,
    clean_env,
    group_alive,
    kill_group,
    short_tmpdir,
    tail,
)
from bistouryctl.client import Client, NoReply, Refused

READY_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 20.0


def bench_config(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """etc/config.yaml with the metrics endpoint on a free port, and ``overrides`` (a
    mapping of sections to the keys they replace, e.g. ``{"exchange": {"network": ...}}``)."""
    config: dict[str, Any] = yaml.safe_load((REPO / "etc" / "config.yaml").read_text()) or {}
    config.setdefault("metrics", {})["port"] = 0
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    path = dest / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class Daemon:
    """Context manager: starts bistouryd, and on exit leaves no process and no directory."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.overrides = overrides
        self.home = Path(tempfile.mkdtemp(prefix="bistoury-bench-"))
        self.runtime = short_tmpdir()
        self.socket = self.runtime / "control.sock"
        self.log = self.home / "bistouryd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.descendants: list[psutil.Process] = []

    def __enter__(self) -> Daemon:
        cmd = [
            str(BIN / "bistouryd"),
            "--config",
            str(bench_config(self.home, self.overrides)),
            "--state-dir",
            str(self.state),
            "--runtime-dir",
            str(self.runtime),
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._reap()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
            shutil.rmtree(self.runtime, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self) -> float:
        """Poll ``status`` until ``ready: true``; returns the seconds it took."""
        assert self.proc is not None
        client = Client(self.socket, timeout_s=0.5, attempts=1)
        start = time.monotonic()
        while time.monotonic() - start < READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise BenchError(f"bistouryd exited with {self.proc.returncode}:\n{self.tail()}")
            if self.socket.exists():
                try:
                    if client.call("status").get("ready"):
                        self.descendants = psutil.Process(self.pid).children(recursive=True)
                        return time.monotonic() - start
                except (NoReply, Refused):
                    pass
            time.sleep(0.05)
        raise BenchError(f"bistouryd not ready within {READY_TIMEOUT_S:.0f} s:\n{self.tail()}")

    def stop(self) -> float:
        """Graceful ``stop`` through the control socket; returns the seconds to exit."""
        assert self.proc is not None
        start = time.monotonic()
        Client(self.socket).call("stop")
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BenchError(f"bistouryd did not exit within {STOP_TIMEOUT_S:.0f} s") from None
        if code != 0:
            raise BenchError(f"bistouryd exited with {code} after stop:\n{self.tail()}")
        return time.monotonic() - start

    @property
    def state(self) -> Path:
        return self.home / "state"

    def tail(self) -> str:
        return tail(self.log)

    def _reap(self) -> None:
        """Kill whatever survived: the group first, then agents that left it."""
        if self.proc is None:
            return
        if self.proc.poll() is None or group_alive(self.proc.pid):
            kill_group(self.proc)
        for child in self.descendants:
            try:
                if child.is_running():
                    child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.descendants, timeout=2)

    def leftovers(self) -> list[int]:
        """Pids of this daemon's processes still alive (should be none after ``stop``)."""
        alive = [p.pid for p in self.descendants if _running(p)]
        if self.proc is not None and self.proc.poll() is None:
            alive.insert(0, self.proc.pid)
        return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
