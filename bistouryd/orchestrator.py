"""The orchestrator: the daemon's main process.

It runs the bus proxy, starts the agents named in ``agents.enabled`` as separate
processes, watches their heartbeats and restarts a dead or silent one with exponential
backoff (giving up, so systemd takes over, after ``agents.max_crashes`` crashes within
``agents.crash_window_s``). It owns the mode state machine, the control socket, the
metrics registry, the reload path and the conversation with systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from bistouryd import __version__
from bistouryd import config as cfg
from bistouryd.agents import AGENTS, STOP_LAST
from bistouryd.bus import CONTROL_HWM, BusProxy, BusStats, Publisher, configure, remove_stale
from bistouryd.control import (
    AgentStatus,
    ConfigCheckRequest,
    ConfigCheckResult,
    ControlError,
    ControlServer,
    EventsRequest,
    EventsResult,
    Handler,
    ModeRequest,
    ModeResult,
    PauseRequest,
    ReloadResult,
    ResumeRequest,
    StatusResult,
    StopRequest,
    StopResult,
)
from bistouryd.events import SysEvent
from bistouryd.metrics import AgentView, CarriedSamples, Metrics
from bistouryd.notify import Notifier, child_environ
from bistouryd.paths import RuntimePaths, ipc
from bistouryd.protocol import DAEMON_EXIT_CONFIG, DAEMON_EXIT_EMERGENCY, DAEMON_EXIT_FAILURE
from bistouryd.state import DaemonState, ModeError, StateStore
from bistouryd.supervision import (
    ConfigUpdate,
    EventsQuery,
    EventsStored,
    Heartbeat,
    Hello,
    Init,
    LogRecord,
    ModeUpdate,
    ReportEvent,
    Stop,
    StoreEvents,
    from_agent,
)
from bistouryd.supervision import EventsResult as AgentEventsResult

log = logging.getLogger("bistouryd")

TICK_S = 0.1
STARTUP_GRACE_S = 20.0
RESEND_AFTER_S = 2.0
OUTBOX_MAX = 10_000
STORE_BATCH = 500
QUERY_TIMEOUT_S = 5.0
KILL_GRACE_S = 2.0
_LEVELS = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

AgentState = Literal["starting", "running", "backoff", "stopping", "stopped"]


@dataclass
class AgentHandle:
    """The orchestrator's record of one agent across its process restarts."""

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


@dataclass(frozen=True)
class ShutdownRequest:
    reason: str
    emergency: bool = False
    code: int = 0


class Orchestrator:
    def __init__(
        self,
        loaded: cfg.LoadedConfig,
        paths: RuntimePaths,
        state_dir: Path,
        notifier: Notifier,
        configure_logging: Callable[[cfg.LoadedConfig], None],
    ):
        self.loaded = loaded
        self.paths = paths
        self.state_dir = state_dir
        self.notifier = notifier
        self._configure_logging = configure_logging
        self.store = StateStore(state_dir / "state.json")
        self.state, restore_warning = self.store.load()
        self.started_mono = time.monotonic()
        self.started_ts_ms = int(time.time() * 1000)
        self.handles: dict[str, AgentHandle] = {
            name: AgentHandle(name, AGENTS[name]) for name in loaded.config.agents.enabled
        }
        self.bus_stats = BusStats()
        self.metrics = Metrics(self._agent_views, self.bus_stats)
        self.ready = False
        self.last_error: str | None = None
        self._status_line = ""
        self._last_watchdog = 0.0
        self._last_sample = 0.0
        self._outbox: OrderedDict[str, SysEvent] = OrderedDict()
        self._sent_mono: dict[str, float] = {}
        self._queries: dict[str, asyncio.Future[AgentEventsResult]] = {}
        self._shutdown: ShutdownRequest | None = None
        self._shutdown_event = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.publisher: Publisher | None = None
        if restore_warning:
            log.warning("%s", restore_warning)
            self.emit(SysEvent(kind="alert", level="warning", message=restore_warning))

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        loop = asyncio.get_running_loop()
        self._open_sockets()
        self._serve_metrics()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(
                sig, self.request_shutdown, ShutdownRequest(f"signal {signal.Signals(sig).name}")
            )
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn_task(self._reload_from_signal()))
        self.metrics.set_mode(self.state.mode)
        self.emit(
            SysEvent(
                kind="start",
                message=f"bistouryd {__version__} started (pid {os.getpid()}) in mode "
                f"{self.state.mode}; agents: {', '.join(self.handles)}",
                details={
                    "pid": os.getpid(),
                    "mode": self.state.mode,
                    "config_sha256": self.loaded.sha256,
                },
            )
        )
        for handle in self.handles.values():
            self._spawn(handle)
        self._spawn_task(self._supervise())
        self._spawn_task(self.control.serve())
        self._spawn_task(self._monitor())
        await self._shutdown_event.wait()
        assert self._shutdown is not None
        return await self._stop_everything(self._shutdown)

    def request_shutdown(self, request: ShutdownRequest) -> None:
        if self._shutdown is None:
            self._shutdown = request
            self._shutdown_event.set()

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.critical("orchestrator task failed; stopping", exc_info=task.exception())
            self.request_shutdown(ShutdownRequest("internal error", code=DAEMON_EXIT_FAILURE))

    def _open_sockets(self) -> None:
        remove_stale(
            [self.paths.control, self.paths.bus_in, self.paths.bus_out, self.paths.supervision]
        )
        self.sync_ctx: zmq.Context[Any] = zmq.Context()
        self.ctx = zmq.asyncio.Context()
        self.proxy = BusProxy(self.sync_ctx, self.paths)
        self.proxy.start()
        self.router = self.ctx.socket(zmq.ROUTER)
        configure(self.router, hwm=CONTROL_HWM * 10)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.bind(ipc(self.paths.supervision))
        os.chmod(self.paths.supervision, 0o600)
        self.publisher = Publisher(self.ctx, self.paths, "orchestrator", self.bus_stats)
        handlers: dict[str, Handler] = {
            "status": self._cmd_status,
            "mode": self._cmd_mode,
            "pause": self._cmd_pause,
            "resume": self._cmd_pause,
            "reload": self._cmd_reload,
            "stop": self._cmd_stop,
            "events": self._cmd_events,
            "config-check": self._cmd_config_check,
        }
        self.control = ControlServer(
            self.ctx,
            self.paths.control,
            handlers,
            lambda command, result: self.metrics.control_requests.labels(
                command=command, result=result
            ).inc(),
        )

    def _serve_metrics(self) -> None:
        m = self.loaded.config.metrics
        self.metrics.close()
        if not m.enabled:
            return
        try:
            self.metrics.serve(m.host, m.port)
            log.info("metrics at http://%s:%d/metrics", *(self.metrics.address or (m.host, m.port)))
        except OSError as exc:
            message = f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror}"
            log.error(
                "%s\n  → set metrics.port to a free port (or metrics.enabled: false) and reload",
                message,
            )
            self.emit(SysEvent(kind="alert", level="error", message=message), logged=True)

    async def _stop_everything(self, request: ShutdownRequest) -> int:
        self.notifier.stopping(f"stopping: {request.reason}")
        kind: Literal["emergency_stop", "stop"] = "emergency_stop" if request.emergency else "stop"
        self.emit(
            SysEvent(
                kind=kind,
                level="critical" if request.emergency else "info",
                message=f"{'emergency stop' if request.emergency else 'stop'}: {request.reason}",
                details={"exit_code": request.code},
            )
        )
        if request.emergency:
            self.state = self.state.model_copy(
                update={"emergency_stop_ts_ms": int(time.time() * 1000)}
            )
            self.store.save(self.state)
            await self._drain_outbox(timeout_s=2.0)
            await self._stop_agents(list(self.handles.values()), "emergency stop")
        else:
            first = [h for h in self.handles.values() if h.name not in STOP_LAST]
            last = [h for h in self.handles.values() if h.name in STOP_LAST]
            await self._stop_agents(first, request.reason)
            await self._drain_outbox(timeout_s=3.0)
            await self._stop_agents(last, request.reason)
        if self._outbox:
            log.warning("%d system events were not recorded before the stop", len(self._outbox))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.control.close()
        if self.publisher is not None:
            self.publisher.close()
        self.router.close(linger=0)
        self.proxy.stop()
        self.metrics.close()
        self.ctx.term()
        self.sync_ctx.term()
        remove_stale(
            [self.paths.control, self.paths.bus_in, self.paths.bus_out, self.paths.supervision]
        )
        log.info("bistouryd stopped")
        return request.code

    # ---- agents ----------------------------------------------------------------------

    def _spawn(self, h: AgentHandle) -> None:
        cmd = [sys.executable, "-m", h.module, "--runtime-dir", str(self.paths.root)]
        h.proc = subprocess.Popen(
            cmd, env=child_environ(), stdin=subprocess.DEVNULL, close_fds=True
        )
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

    async def _stop_agents(self, handles: list[AgentHandle], reason: str) -> None:
        """Ask agents to stop, then SIGTERM, then SIGKILL whoever is still there."""
        running = [h for h in handles if h.proc is not None and h.proc.poll() is None]
        for h in handles:
            h.state = "stopping" if h in running else "stopped"
        for h in running:
            await self._send(h.name, Stop(reason=reason))
        timeout = self.loaded.config.agents.stop_timeout_s
        await self._wait_exit(running, timeout)
        for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
            left = [h for h in running if h.proc is not None and h.proc.poll() is None]
            if not left:
                break
            for h in left:
                log.warning("agent %s did not stop in time; sending %s", h.name, sig.name)
                assert h.proc is not None
                h.proc.send_signal(sig)
            await self._wait_exit(left, grace)
        for h in running:
            h.state = "stopped"
            self._process_gone(h)

    async def _wait_exit(self, handles: list[AgentHandle], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(h.proc is None or h.proc.poll() is not None for h in handles):
                return
            await asyncio.sleep(0.02)

    def _process_gone(self, h: AgentHandle) -> None:
        h.samples.process_exited()
        h.cpu_carried += h.cpu_seconds
        h.cpu_seconds = 0.0
        h.rss_bytes = None
        h.ps = None

    def _on_exit(self, h: AgentHandle, code: int, why: str) -> None:
        """An agent process ended without being asked to: restart it, or give up."""
        self._process_gone(h)
        now = time.monotonic()
        agents = self.loaded.config.agents
        if code == DAEMON_EXIT_CONFIG:
            message = f"agent {h.name} cannot run ({why}); see the log for the cause"
            self.emit(
                SysEvent(
                    kind="giveup", level="critical", message=message, details={"agent": h.name}
                )
            )
            h.state = "stopped"
            self.request_shutdown(ShutdownRequest(message, code=DAEMON_EXIT_CONFIG))
            return
        h.crash_times.append(now)
        while h.crash_times and now - h.crash_times[0] > agents.crash_window_s:
            h.crash_times.popleft()
        if len(h.crash_times) >= agents.max_crashes:
            message = (
                f"agent {h.name} crashed {len(h.crash_times)} times within "
                f"{agents.crash_window_s:.0f} s; giving up"
            )
            self.emit(
                SysEvent(
                    kind="giveup", level="critical", message=message, details={"agent": h.name}
                )
            )
            h.state = "stopped"
            self.request_shutdown(ShutdownRequest(message, code=DAEMON_EXIT_FAILURE))
            return
        h.consecutive_crashes += 1
        delay = min(
            agents.restart_backoff_initial_s * 2 ** (h.consecutive_crashes - 1),
            agents.restart_backoff_max_s,
        )
        h.state = "backoff"
        h.next_start_mono = now + delay
        self.emit(
            SysEvent(
                kind="agent_exit",
                level="error",
                source=h.name,
                message=f"agent {h.name} {why}; restarting in {delay:.1f} s",
                details={"agent": h.name, "exit_code": code, "backoff_s": delay},
            )
        )

    async def _monitor(self) -> None:
        while True:
            self._check_agents(time.monotonic())
            await self._flush_outbox()
            self._systemd_tick()
            await asyncio.sleep(TICK_S)

    def _check_agents(self, now: float) -> None:
        agents = self.loaded.config.agents
        for h in self.handles.values():
            if h.state in ("stopping", "stopped"):
                continue
            code = h.proc.poll() if h.proc is not None else None
            if h.state in ("starting", "running") and code is not None:
                self._on_exit(h, code, _describe_exit(code))
            elif h.state == "running" and (h.heartbeat_age(now) or 0) > agents.heartbeat_timeout_s:
                self._kill_silent(h, f"sent no heartbeat for {h.heartbeat_age(now):.1f} s")
            elif h.state == "starting" and now - h.spawned_mono > max(
                STARTUP_GRACE_S, agents.heartbeat_timeout_s
            ):
                self._kill_silent(h, f"did not come up within {now - h.spawned_mono:.0f} s")
            elif h.state == "backoff" and now >= h.next_start_mono and self._shutdown is None:
                h.restarts += 1
                self._spawn(h)
                self.emit(
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
                and now - h.spawned_mono > agents.restart_reset_after_s
            ):
                h.consecutive_crashes = 0
        if now - self._last_sample >= 1.0:
            self._last_sample = now
            for h in self.handles.values():
                _sample_process(h)

    def _kill_silent(self, h: AgentHandle, why: str) -> None:
        assert h.proc is not None
        self.emit(
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
        self._on_exit(h, code, f"was silent ({why})")

    def _systemd_tick(self) -> None:
        now = time.monotonic()
        all_alive = all(h.alive for h in self.handles.values())
        if not self.ready and all_alive and self._shutdown is None:
            self.ready = True
            log.info("all agents up: %s", ", ".join(self.handles))
            self.notifier.ready(self._status())
            self._status_line = self._status()
        interval = self.notifier.watchdog_interval_s
        if interval and self._heartbeating(now) and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notifier.watchdog()
        status = self._status()
        if status != self._status_line and self.ready:
            self._status_line = status
            self.notifier.status(status)

    def _heartbeating(self, now: float) -> bool:
        """Every agent runs and heartbeated within two intervals: the watchdog's condition."""
        fresh = 2 * self.loaded.config.agents.heartbeat_interval_s
        return all(
            h.alive and (h.heartbeat_age(now) or 0.0) <= fresh for h in self.handles.values()
        )

    def _status(self) -> str:
        up = sum(h.alive for h in self.handles.values())
        paused = f" (paused: {', '.join(sorted(self.state.paused))})" if self.state.paused else ""
        return (
            f"mode {self.state.mode}{paused}; agents {up}/{len(self.handles)} up; "
            f"last error: {self.last_error or 'none'}"
        )

    def _agent_views(self) -> list[AgentView]:
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

    # ---- supervision channel ---------------------------------------------------------

    async def _send(self, name: str, msg: BaseModel) -> bool:
        try:
            await self.router.send_multipart([name.encode(), msg.model_dump_json().encode()])
            return True
        except zmq.ZMQError as exc:
            log.debug("cannot reach agent %s: %s", name, exc)
            return False

    async def _supervise(self) -> None:
        while True:
            identity, data = (await self.router.recv_multipart())[:2]
            name = identity.decode(errors="replace")
            h = self.handles.get(name)
            try:
                msg = from_agent.validate_json(data)
            except ValidationError as exc:
                log.warning("invalid message from agent %s: %s", name, exc.errors()[0]["msg"])
                continue
            if h is None:
                log.warning("message from unknown agent %r ignored", name)
                continue
            if isinstance(msg, (Hello, Heartbeat)) and msg.pid != h.pid:
                continue  # a previous process of this agent, already replaced
            await self._on_agent_message(h, msg)

    async def _on_agent_message(self, h: AgentHandle, msg: BaseModel) -> None:
        if isinstance(msg, Hello):
            await self._send(
                h.name,
                Init(
                    config=self.loaded.config,
                    secrets=self.loaded.secrets.reveal(),
                    config_sha256=self.loaded.sha256,
                    mode=self.state.mode,
                    paused=sorted(self.state.paused),
                    state_dir=str(self.state_dir),
                ),
            )
        elif isinstance(msg, Heartbeat):
            h.last_heartbeat_mono = time.monotonic()
            h.samples.update(msg.metrics)
            h.config_sha256 = msg.config_sha256
            if h.state == "starting":
                h.state = "running"
                if h.restarts:
                    log.info("agent %s is back (pid %s)", h.name, h.pid)
                if h.name == "recorder":
                    self._sent_mono.clear()
        elif isinstance(msg, ReportEvent):
            self.emit(msg.event)
        elif isinstance(msg, LogRecord):
            _relog(h.name, msg)
        elif isinstance(msg, EventsStored):
            for event_id in msg.ids:
                self._outbox.pop(event_id, None)
                self._sent_mono.pop(event_id, None)
        elif isinstance(msg, AgentEventsResult):
            future = self._queries.pop(msg.request_id, None)
            if future is not None and not future.done():
                future.set_result(msg)

    async def _broadcast(self, make: Callable[[], BaseModel]) -> None:
        for h in self.handles.values():
            if h.state in ("starting", "running"):
                await self._send(h.name, make())

    # ---- system events ---------------------------------------------------------------

    def emit(self, event: SysEvent, *, logged: bool = False) -> None:
        """Log an event (unless the caller already did), publish it, queue it for the recorder."""
        if event.source == "orchestrator" and not logged:
            log.log(_LEVELS[event.level], "%s", event.message)
        if event.level in ("error", "critical"):
            self.last_error = event.message
        self._outbox[event.id] = event
        while len(self._outbox) > OUTBOX_MAX:
            dropped_id, _ = self._outbox.popitem(last=False)
            self._sent_mono.pop(dropped_id, None)
            self.metrics.events_dropped.inc()
        if self.publisher is not None:
            self._spawn_task(self.publisher.publish(event.topic, event))

    async def _flush_outbox(self) -> None:
        recorder = self.handles.get("recorder")
        if recorder is None or not recorder.alive or not self._outbox:
            return
        now = time.monotonic()
        due = [
            e
            for i, e in self._outbox.items()
            if now - self._sent_mono.get(i, -RESEND_AFTER_S) >= RESEND_AFTER_S
        ]
        for start in range(0, len(due), STORE_BATCH):
            batch = due[start : start + STORE_BATCH]
            if not await self._send("recorder", StoreEvents(events=batch)):
                return
            for e in batch:
                self._sent_mono[e.id] = now

    async def _drain_outbox(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._outbox and time.monotonic() < deadline:
            await self._flush_outbox()
            await asyncio.sleep(0.02)

    # ---- mode and pause --------------------------------------------------------------

    def _change_state(self, new: DaemonState, event: SysEvent) -> None:
        self.state = new
        self.store.save(new)
        self.metrics.set_mode(new.mode)
        self.emit(event)
        self._spawn_task(
            self._broadcast(lambda: ModeUpdate(mode=new.mode, paused=sorted(new.paused)))
        )

    async def _cmd_mode(self, req: ModeRequest) -> ModeResult:
        if req.mode == self.state.mode:
            return ModeResult(mode=req.mode, paused=sorted(self.state.paused), changed=False)
        try:
            new = self.state.with_mode(req.mode)
        except ModeError as exc:
            raise ControlError(exc.message, exc.hint) from None
        old = self.state.mode
        self._change_state(
            new,
            SysEvent(
                kind="mode",
                message=f"mode {old} → {new.mode}",
                details={"from": old, "to": new.mode},
            ),
        )
        return ModeResult(mode=new.mode, paused=sorted(new.paused), changed=True)

    async def _cmd_pause(self, req: PauseRequest | ResumeRequest) -> ModeResult:
        pausing = req.cmd == "pause"
        new = self.state.with_paused(req.scope, pausing)
        now_paused = ", ".join(sorted(new.paused)) or "-"
        if new.paused == self.state.paused:
            return ModeResult(mode=new.mode, paused=sorted(new.paused), changed=False)
        self._change_state(
            new,
            SysEvent(
                kind="pause" if pausing else "resume",
                message=f"{req.cmd} {req.scope}; paused now: {now_paused}",
                details={"scope": req.scope},
            ),
        )
        return ModeResult(mode=new.mode, paused=sorted(new.paused), changed=True)

    # ---- other control commands ------------------------------------------------------

    async def _cmd_status(self, _req: BaseModel) -> StatusResult:
        now = time.monotonic()
        address = self.metrics.address
        return StatusResult(
            version=__version__,
            pid=os.getpid(),
            mode=self.state.mode,
            paused=sorted(self.state.paused),
            uptime_s=round(now - self.started_mono, 3),
            started_ts_ms=self.started_ts_ms,
            config_path=str(self.loaded.path),
            config_sha256=self.loaded.sha256,
            secrets_set=self.loaded.secrets.present(),
            state_dir=str(self.state_dir),
            runtime_dir=str(self.paths.root),
            metrics_url=f"http://{address[0]}:{address[1]}/metrics" if address else None,
            ready=self.ready,
            last_error=self.last_error,
            agents=[
                AgentStatus(
                    name=h.name,
                    pid=h.pid,
                    alive=h.alive,
                    state=h.state,
                    restarts=h.restarts,
                    heartbeat_age_s=_round(h.heartbeat_age(now)),
                    uptime_s=_round(now - h.spawned_mono) if h.alive else None,
                    rss_bytes=h.rss_bytes,
                    config_sha256=h.config_sha256,
                )
                for h in self.handles.values()
            ],
        )

    async def _cmd_stop(self, req: StopRequest) -> StopResult:
        reason = "emergency stop requested" if req.emergency else "stop requested"
        code = DAEMON_EXIT_EMERGENCY if req.emergency else 0
        # Reply first; the shutdown starts right after the reply is sent.
        asyncio.get_running_loop().call_later(
            0.05, self.request_shutdown, ShutdownRequest(reason, req.emergency, code)
        )
        return StopResult(pid=os.getpid(), emergency=req.emergency)

    async def _cmd_events(self, req: EventsRequest) -> EventsResult:
        recorder = self.handles.get("recorder")
        if recorder is None or not recorder.alive:
            raise ControlError(
                "the recorder agent is not running right now",
                "it restarts by itself; try again in a few seconds",
            )
        request_id = uuid.uuid4().hex
        future: asyncio.Future[AgentEventsResult] = asyncio.get_running_loop().create_future()
        self._queries[request_id] = future
        await self._flush_outbox()
        sent = await self._send(
            "recorder",
            EventsQuery(
                request_id=request_id, limit=req.limit, since_ms=req.since_ms, kinds=req.kinds
            ),
        )
        try:
            if not sent:
                raise asyncio.TimeoutError
            answer = await asyncio.wait_for(future, QUERY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ControlError(
                "the recorder did not answer in time",
                "try again; if it persists, see the daemon's log",
            ) from None
        finally:
            self._queries.pop(request_id, None)
        if answer.error:
            raise ControlError(
                f"the recorder could not read the events: {answer.error}", "see the daemon's log"
            )
        stored = {e.id for e in answer.events}
        pending = [
            e
            for e in self._outbox.values()
            if e.id not in stored
            and (req.since_ms is None or e.ts_ms >= req.since_ms)
            and (not req.kinds or e.kind in req.kinds)
        ]
        events = sorted([*answer.events, *pending], key=lambda e: (e.ts_ms, e.id))[-req.limit :]
        return EventsResult(events=events, pending=len(pending))

    async def _cmd_config_check(self, req: ConfigCheckRequest) -> ConfigCheckResult:
        path = Path(req.path) if req.path else self.loaded.path
        try:
            await asyncio.to_thread(cfg.load, path, self.loaded.env_path)
        except cfg.ConfigError as exc:
            return ConfigCheckResult(
                path=str(path), valid=False, problems=[str(p) for p in exc.problems]
            )
        return ConfigCheckResult(path=str(path), valid=True, problems=[])

    async def _cmd_reload(self, _req: BaseModel) -> ReloadResult:
        result = await self.reload()
        if not result.applied:
            raise ControlError(
                "the new configuration was rejected; the running one stays in force",
                *result.problems,
            )
        return result

    # ---- reload ----------------------------------------------------------------------

    async def _reload_from_signal(self) -> None:
        log.info("SIGHUP: reloading the configuration")
        await self.reload()

    async def reload(self) -> ReloadResult:
        """Re-read config and secrets and apply the difference without restarting agents."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                self.notifier.ready(self._status())

    async def _reload(self) -> ReloadResult:
        old = self.loaded
        try:
            new = await asyncio.to_thread(cfg.load, old.path, old.env_path)
        except cfg.ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            log.error(
                "Configuration reload rejected; the running configuration stays in force\n%s",
                "\n".join(f"  → {p}" for p in problems),
            )
            self.emit(
                SysEvent(
                    kind="config_error",
                    level="error",
                    source="reload",
                    message=f"reload rejected: {problems[0]}"
                    + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                    details={"problems": len(problems), "file": str(old.path)},
                )
            )
            self.metrics.reloads.labels(result="rejected").inc()
            return ReloadResult(
                applied=False,
                config_sha256=old.sha256,
                changed=[],
                secrets_changed=[],
                restart_required=[],
                problems=problems,
            )
        changed = cfg.diff(old.config, new.config)
        secrets_changed = cfg.secrets_diff(old.secrets, new.secrets)
        restart_required = [c for c in changed if c in cfg.RESTART_REQUIRED]
        self.loaded = new
        self._configure_logging(new)
        if any(c.startswith("metrics.") for c in changed):
            self._serve_metrics()
        await self._apply_agent_set(old.config.agents.enabled, new.config.agents.enabled)
        await self._broadcast(
            lambda: ConfigUpdate(
                config=new.config,
                secrets=new.secrets.reveal(),
                config_sha256=new.sha256,
                changed=changed,
            )
        )
        summary = ", ".join(changed + secrets_changed) or "nothing"
        self.emit(
            SysEvent(
                kind="reload",
                source="reload",
                message=f"configuration reloaded; changed: {summary}"
                + (f"; needs a restart: {', '.join(restart_required)}" if restart_required else ""),
                details={
                    "config_sha256": new.sha256,
                    "changed": len(changed),
                    "secrets_changed": len(secrets_changed),
                },
            )
        )
        self.metrics.reloads.labels(result="ok").inc()
        return ReloadResult(
            applied=True,
            config_sha256=new.sha256,
            changed=changed,
            secrets_changed=secrets_changed,
            restart_required=restart_required,
            problems=[],
        )

    async def _apply_agent_set(self, before: list[str], after: list[str]) -> None:
        removed = [self.handles[n] for n in before if n not in after and n in self.handles]
        if removed:
            await self._stop_agents(removed, "removed from agents.enabled")
            for h in removed:
                del self.handles[h.name]
        for name in after:
            if name not in self.handles:
                self.handles[name] = AgentHandle(name, AGENTS[name])
                self._spawn(self.handles[name])


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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


def _relog(agent: str, rec: LogRecord) -> None:
    """Hand an agent's log record to the orchestrator's handlers."""
    record = logging.makeLogRecord(
        {
            "name": f"bistoury.{agent}.{rec.logger}",
            "levelno": rec.level,
            "levelname": logging.getLevelName(rec.level),
            "msg": rec.message,
            "created": rec.created,
            "msecs": (rec.created % 1) * 1000,
            "agent": agent,
        }
    )
    logging.getLogger(record.name).handle(record)
