"""Agent processes: starting them, hearing their heartbeats, restarting or giving up.

The supervisor owns the supervision channel (a ROUTER socket; each agent connects a
DEALER named after itself) and one ``AgentHandle`` per agent. A process that exits, or
stops heartbeating for ``agents.heartbeat_timeout_s``, is restarted after an exponential
backoff; ``agents.max_crashes`` crashes within ``agents.crash_window_s`` mean giving up,
and an agent exiting 78 (a problem the user must fix) means giving up at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import psutil
import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from bistouryd.agents import AGENTS
from bistouryd.bus import CONTROL_HWM, configure
from bistouryd.config import AgentsConfig
from bistouryd.events import SysEvent
from bistouryd.metrics import AgentView, CarriedSamples
from bistouryd.notify import child_environ
from bistouryd.paths import RuntimePaths, ipc
from bistouryd.protocol import DAEMON_EXIT_CONFIG, DAEMON_EXIT_FAILURE
from bistouryd.supervision import Heartbeat, Hello, Init, Stop, from_agent

log = logging.getLogger("bistouryd")

STARTUP_GRACE_S = 20.0
KILL_GRACE_S = 2.0
SAMPLE_EVERY_S = 1.0

AgentState = Literal["starting", "running", "backoff", "stopping", "stopped"]


@dataclass
class AgentHandle:
    """What the supervisor knows of one agent, across its process restarts."""

    name: str
    module: str
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    state: AgentState = "stopped"
    spawned_mono: float = 0.0
    last_heartbeat_mono: float | None = None
    restarts: int = 0
    consecutive_crashes: int = 0
    crash_times: deque[float] = field(default_factory=deque)
    next_start_mono: float = 0.0
    config_sha256: str | None = None
    samples: CarriedSamples = field(default_factory=CarriedSamples)
    rss_bytes: int | None = None
    cpu_seconds: float = 0.0
    cpu_carried: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.state == "running"

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat_mono is None else now - self.last_heartbeat_mono


class Supervisor:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        paths: RuntimePaths,
        settings: Callable[[], AgentsConfig],
        emit: Callable[[SysEvent], None],
        give_up: Callable[[str, int], None],
        make_init: Callable[[], Init],
        on_up: Callable[[AgentHandle], None],
    ):
        self.paths = paths
        self._settings = settings
        self._emit = emit
        self._give_up = give_up
        self._make_init = make_init
        self._on_up = on_up
        self.handles: dict[str, AgentHandle] = {}
        self.restarting = True
        self._last_sample = 0.0
        self.router = ctx.socket(zmq.ROUTER)
        configure(self.router, hwm=CONTROL_HWM * 10)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted agent takes its name over
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to an absent agent fails loudly
        self.router.bind(ipc(paths.supervision))
        os.chmod(paths.supervision, 0o600)

    # ---- the channel -----------------------------------------------------------------

    async def send(self, name: str, msg: BaseModel) -> bool:
        try:
            await self.router.send_multipart([name.encode(), msg.model_dump_json().encode()])
            return True
        except zmq.ZMQError as exc:
            log.debug("cannot reach agent %s: %s", name, exc)
            return False

    async def broadcast(self, make: Callable[[], BaseModel]) -> None:
        for h in list(self.handles.values()):
            if h.state in ("starting", "running"):
                await self.send(h.name, make())

    async def receive(
        self, on_message: Callable[[AgentHandle, BaseModel], Awaitable[None]]
    ) -> None:
        """Answer hellos, record heartbeats, and hand every other message to ``on_message``."""
        while True:
            identity, data = (await self.router.recv_multipart())[:2]
            name = identity.decode(errors="replace")
            try:
                msg = from_agent.validate_json(data)
            except ValidationError as exc:
                log.warning("invalid message from agent %s: %s", name, exc.errors()[0]["msg"])
                continue
            h = self.handles.get(name)
            if h is None:
                log.warning("message from unknown agent %r ignored", name)
            elif isinstance(msg, (Hello, Heartbeat)) and msg.pid != h.pid:
                continue  # from a previous process of this agent, already replaced
            elif isinstance(msg, Hello):
                await self.send(name, self._make_init())
            elif isinstance(msg, Heartbeat):
                self._heartbeat(h, msg)
            else:
                await on_message(h, msg)

    def _heartbeat(self, h: AgentHandle, msg: Heartbeat) -> None:
        h.last_heartbeat_mono = time.monotonic()
        h.samples.update(msg.metrics)
        h.config_sha256 = msg.config_sha256
        if h.state == "starting":
            h.state = "running"
            if h.restarts:
                log.info("agent %s is back (pid %s)", h.name, h.pid)
            self._on_up(h)

    # ---- processes -------------------------------------------------------------------

    def add(self, name: str) -> AgentHandle:
        h = self.handles[name] = AgentHandle(name, AGENTS[name])
        self._spawn(h)
        return h

    def _spawn(self, h: AgentHandle) -> None:
        cmd = [sys.executable, "-m", h.module, "--runtime-dir", str(self.paths.root)]
        h.proc = subprocess.Popen(cmd, env=child_environ(), stdin=subprocess.DEVNULL)
        try:
            h.ps = psutil.Process(h.proc.pid)
        except psutil.Error:
            h.ps = None
        h.state = "starting"
        h.spawned_mono = time.monotonic()
        h.last_heartbeat_mono = None
        h.config_sha256 = None
        h.rss_bytes = None
        h.cpu_seconds = 0.0
        log.debug("started agent %s (pid %d)", h.name, h.proc.pid)

    async def remove(self, name: str, reason: str) -> None:
        h = self.handles.get(name)
        if h is not None:
            await self.stop([h], reason)
            del self.handles[name]

    async def stop(self, handles: list[AgentHandle], reason: str) -> None:
        """Ask agents to stop, then SIGTERM, then SIGKILL whoever is still there."""
        running = [h for h in handles if h.proc is not None and h.proc.poll() is None]
        for h in handles:
            h.state = "stopping" if h in running else "stopped"
        for h in running:
            await self.send(h.name, Stop(reason=reason))
        await _wait_exit(running, self._settings().stop_timeout_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = [h for h in running if h.proc is not None and h.proc.poll() is None]
            if not left:
                break
            for h in left:
                log.warning("agent %s did not stop in time; sending %s", h.name, sig.name)
                assert h.proc is not None
                h.proc.send_signal(sig)
            await _wait_exit(left, KILL_GRACE_S)
        for h in running:
            h.state = "stopped"
            _process_gone(h)

    def check(self, now: float) -> None:
        """Notice exits and silence, start what is due, sample memory and CPU."""
        settings = self._settings()
        for h in list(self.handles.values()):
            if h.state in ("stopping", "stopped"):
                continue
            code = h.proc.poll() if h.proc is not None else None
            age = h.heartbeat_age(now) or 0.0
            if h.state in ("starting", "running") and code is not None:
                self._exited(h, code, _describe_exit(code))
            elif h.state == "running" and age > settings.heartbeat_timeout_s:
                self._kill_silent(h, f"sent no heartbeat for {age:.1f} s")
            elif h.state == "starting" and now - h.spawned_mono > max(
                STARTUP_GRACE_S, settings.heartbeat_timeout_s
            ):
                self._kill_silent(h, f"did not come up within {now - h.spawned_mono:.0f} s")
            elif h.state == "backoff" and now >= h.next_start_mono and self.restarting:
                h.restarts += 1
                self._spawn(h)
                self._emit(
                    SysEvent(
                        kind="agent_restart",
                        level="warning",
                        source=h.name,
                        message=f"agent {h.name} restarted (pid {h.pid}), restart #{h.restarts}",
                        details={"agent": h.name, "pid": h.pid, "restarts": h.restarts},
                    )
                )
            if (
                h.state == "running"
                and h.consecutive_crashes
                and now - h.spawned_mono > settings.restart_reset_after_s
            ):
                h.consecutive_crashes = 0
        if now - self._last_sample >= SAMPLE_EVERY_S:
            self._last_sample = now
            for h in self.handles.values():
                _sample_process(h)

    def _exited(self, h: AgentHandle, code: int, why: str) -> None:
        """An agent ended without being asked to: schedule its restart, or give up."""
        _process_gone(h)
        now = time.monotonic()
        settings = self._settings()
        h.crash_times.append(now)
        while h.crash_times and now - h.crash_times[0] > settings.crash_window_s:
            h.crash_times.popleft()
        if code == DAEMON_EXIT_CONFIG:
            h.state = "stopped"
            self._give_up(
                f"agent {h.name} cannot run ({why}); see the log for the cause", DAEMON_EXIT_CONFIG
            )
            return
        if len(h.crash_times) >= settings.max_crashes:
            h.state = "stopped"
            self._give_up(
                f"agent {h.name} crashed {len(h.crash_times)} times within "
                f"{settings.crash_window_s:.0f} s; giving up",
                DAEMON_EXIT_FAILURE,
            )
            return
        h.consecutive_crashes += 1
        delay = min(
            settings.restart_backoff_initial_s * 2 ** (h.consecutive_crashes - 1),
            settings.restart_backoff_max_s,
        )
        h.state = "backoff"
        h.next_start_mono = now + delay
        self._emit(
            SysEvent(
                kind="agent_exit",
                level="error",
                source=h.name,
                message=f"agent {h.name} {why}; restarting in {delay:.1f} s",
                details={"agent": h.name, "exit_code": code, "backoff_s": delay},
            )
        )

    def _kill_silent(self, h: AgentHandle, why: str) -> None:
        assert h.proc is not None
        self._emit(
            SysEvent(
                kind="agent_silent",
                level="error",
                source=h.name,
                message=f"agent {h.name} {why}; killing it",
                details={"agent": h.name, "pid": h.pid},
            )
        )
        h.proc.kill()
        try:
            code = h.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            code = -signal.SIGKILL
        self._exited(h, code, f"was silent ({why})")

    # ---- what others read ------------------------------------------------------------

    def all_up(self) -> bool:
        return all(h.alive for h in self.handles.values())

    def heartbeating(self, now: float) -> bool:
        """Every agent runs and heartbeated within two intervals (the watchdog's condition)."""
        fresh = 2 * self._settings().heartbeat_interval_s
        return all(
            h.alive and (h.heartbeat_age(now) or 0.0) <= fresh for h in self.handles.values()
        )

    def views(self) -> list[AgentView]:
        now = time.monotonic()
        return [
            AgentView(
                name=h.name,
                up=h.alive,
                restarts=h.restarts,
                heartbeat_age_s=h.heartbeat_age(now),
                rss_bytes=h.rss_bytes,
                cpu_seconds_total=h.cpu_carried + h.cpu_seconds,
                samples=h.samples.export(),
            )
            for h in list(self.handles.values())
        ]

    def close(self) -> None:
        self.router.close(linger=0)


async def _wait_exit(handles: list[AgentHandle], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(h.proc is None or h.proc.poll() is not None for h in handles):
            return
        await asyncio.sleep(0.02)


def _process_gone(h: AgentHandle) -> None:
    h.samples.process_exited()
    h.cpu_carried += h.cpu_seconds
    h.cpu_seconds = 0.0
    h.rss_bytes = None
    h.ps = None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _sample_process(h: AgentHandle) -> None:
    if h.ps is None:
        return
    try:
        with h.ps.oneshot():
            h.rss_bytes = h.ps.memory_info().rss
            times = h.ps.cpu_times()
            h.cpu_seconds = times.user + times.system
    except psutil.Error:
        h.rss_bytes = None
