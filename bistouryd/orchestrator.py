"""The orchestrator: the daemon's main process.

It runs the bus proxy, starts the agents named in ``agents.enabled`` as separate
processes, watches their heartbeats and restarts a dead or silent one with exponential
backoff (giving up, so systemd takes over, after ``agents.max_crashes`` crashes within
``agents.crash_window_s``). It owns the mode state machine, the control socket, the
metrics registry, the reload path and the conversation with systemd.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from bistouryd import __version__
from bistouryd import config as cfg
from bistouryd.agents import STOP_LAST
from bistouryd.bus import BusProxy, BusStats, Publisher, remove_stale
from bistouryd.control import (
    AgentStatus,
    CollectionStatus,
    CollectRequest,
    CollectResult,
    ConfigCheckRequest,
    ConfigCheckResult,
    ControlError,
    ControlServer,
    DataStatusRequest,
    DecisionsRequest,
    DecisionsResult,
    EventsRequest,
    EventsResult,
    Handler,
    ModeRequest,
    ModeResult,
    PauseRequest,
    PositionsRequest,
    PositionsResult,
    ReloadResult,
    ResumeRequest,
    RiskRequest,
    RiskResult,
    SignalsRequest,
    SignalsResult,
    StatusResult,
    StopRequest,
    StopResult,
    StreamStatus,
    TradeRequest,
    TradeResult,
    TradesRequest,
    TradesResult,
    TradingStatus,
)
from bistouryd.events import SysEvent
from bistouryd.metrics import Metrics
from bistouryd.notify import Notifier
from bistouryd.outbox import EventOutbox
from bistouryd.paths import RuntimePaths
from bistouryd.protocol import DAEMON_EXIT_EMERGENCY, DAEMON_EXIT_FAILURE
from bistouryd.state import DaemonState, LiveSession, ModeError, StateStore

if TYPE_CHECKING:
    from bistouryd.exchange.gateway import ExchangeAccount
from bistouryd.storage.reports import DataStatus
from bistouryd.supervision import (
    ConfigUpdate,
    DataStatusQuery,
    DataStatusResult,
    DecisionsQuery,
    EventsQuery,
    EventsStored,
    Flatten,
    FlattenReport,
    Init,
    LogRecord,
    MetricSample,
    ModeUpdate,
    RecorderAnswer,
    RecorderQuery,
    ReportEvent,
    SignalsQuery,
    StoreEvents,
    TradingPause,
    TradingQuery,
    TradingResult,
)
from bistouryd.supervision import DecisionsResult as AgentDecisionsResult
from bistouryd.supervision import EventsResult as AgentEventsResult
from bistouryd.supervision import SignalsResult as AgentSignalsResult
from bistouryd.supervisor import AgentHandle, Supervisor

log = logging.getLogger("bistouryd")

TICK_S = 0.1
RESEND_AFTER_S = 2.0
OUTBOX_MAX = 10_000
STORE_BATCH = 500
QUERY_TIMEOUT_S = 5.0
FLATTEN_TIMEOUT_S = 30.0  # cancel and close everything, a few attempts on fresh books
DATA_STATUS_TIMEOUT_S = 25.0
_LEVELS = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


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
        self.file_config = loaded.config  # as written; self.loaded has the risk overrides
        self.loaded = self._overridden(loaded)
        self.started_mono = time.monotonic()
        self.started_ts_ms = int(time.time() * 1000)
        self.bus_stats = BusStats()
        self.metrics = Metrics(
            lambda: self.supervisor.views() if self.supervisor else [], self.bus_stats
        )
        self.ready = False
        self.last_error: str | None = None
        self._status_line = ""
        self._last_watchdog = 0.0
        self.outbox = EventOutbox(OUTBOX_MAX, RESEND_AFTER_S, self.metrics.events_dropped.inc)
        self.supervisor: Supervisor | None = None
        self._queries: dict[str, asyncio.Future[RecorderAnswer]] = {}
        self._flatten: asyncio.Future[FlattenReport] | None = None
        self._flattened: FlattenReport | None = None
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
        loop.add_signal_handler(
            signal.SIGUSR1,
            self.request_shutdown,
            ShutdownRequest("signal SIGUSR1", emergency=True, code=DAEMON_EXIT_EMERGENCY),
        )
        self.metrics.set_mode(self.state.mode)
        self.emit(
            SysEvent(
                kind="start",
                message=f"bistouryd {__version__} started (pid {os.getpid()}) in mode "
                f"{self.state.mode}; agents: {', '.join(self.loaded.config.agents.enabled)}",
                details={
                    "pid": os.getpid(),
                    "mode": self.state.mode,
                    "config_sha256": self.loaded.sha256,
                },
            )
        )
        for name in self.loaded.config.agents.enabled:
            self.sup.add(name)
        self._spawn_task(self.sup.receive(self._on_agent_message))
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
        remove_stale(self.paths.sockets())
        self.sync_ctx: zmq.Context[Any] = zmq.Context()
        self.ctx = zmq.asyncio.Context()
        self.proxy = BusProxy(self.sync_ctx, self.paths)
        self.proxy.start()
        self.supervisor = Supervisor(
            self.ctx,
            self.paths,
            lambda: self.loaded.config.agents,
            self.emit,
            self._give_up,
            self._init_message,
            self._agent_up,
        )
        self.publisher = Publisher(self.ctx, self.paths, "orchestrator", self.bus_stats)
        handlers: dict[str, Handler] = {
            "status": self._cmd_status,
            "mode": self._cmd_mode,
            "pause": self._cmd_pause,
            "resume": self._cmd_pause,
            "reload": self._cmd_reload,
            "stop": self._cmd_stop,
            "events": self._cmd_events,
            "signals": self._cmd_signals,
            "decisions": self._cmd_decisions,
            "positions": self._cmd_positions,
            "trades": self._cmd_trades,
            "risk": self._cmd_risk,
            "trade": self._cmd_trade,
            "config-check": self._cmd_config_check,
            "collect": self._cmd_collect,
            "data-status": self._cmd_data_status,
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
        self.sup.restarting = False  # an agent that exits now is not restarted
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
            report = self._flattened or await self._emergency_flatten(request.reason)
            self.state = self.state.model_copy(
                update={"emergency_stop_ts_ms": int(time.time() * 1000)}
            )
            self.store.save(self.state)
            if report is not None:
                self.emit(_flatten_event(report))
            await self._drain_outbox(timeout_s=2.0)
            await self.sup.stop(list(self.sup.handles.values()), "emergency stop")
        else:
            handles = list(self.sup.handles.values())
            await self.sup.stop([h for h in handles if h.name not in STOP_LAST], request.reason)
            await self._drain_outbox(timeout_s=3.0)
            await self.sup.stop([h for h in handles if h.name in STOP_LAST], request.reason)
        if self.outbox:
            log.warning("%d system events were not recorded before the stop", len(self.outbox))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.control.close()
        if self.publisher is not None:
            self.publisher.close()
        self.sup.close()
        self.proxy.stop()
        self.metrics.close()
        self.ctx.term()
        self.sync_ctx.term()
        remove_stale(self.paths.sockets())
        log.info("bistouryd stopped")
        return request.code

    # ---- agents --------------------------------------------------------------------

    @property
    def sup(self) -> Supervisor:
        assert self.supervisor is not None, "sockets are not open yet"
        return self.supervisor

    def _give_up(self, message: str, code: int) -> None:
        self.emit(SysEvent(kind="giveup", level="critical", message=message))
        self.sup.restarting = False
        self.request_shutdown(ShutdownRequest(message, code=code))

    def _init_message(self) -> Init:
        return Init(
            config=self.loaded.config,
            secrets=self.loaded.secrets.reveal(),
            config_sha256=self.loaded.sha256,
            mode=self.state.mode,
            paused=sorted(self.state.paused),
            collect_pairs=self._collect_pairs(),
            state_dir=str(self.state_dir),
            live_risk_limit_usd=self._live_risk_limit(),
        )

    def _live_risk_limit(self) -> float | None:
        return self.state.live.risk_limit_usd if self.state.live else None

    def _collect_pairs(self) -> list[str] | None:
        pairs = self.state.collect_pairs
        return list(pairs) if pairs else None

    def _agent_up(self, h: AgentHandle) -> None:
        if h.name == "recorder":
            self.outbox.resend_all()

    async def _monitor(self) -> None:
        while True:
            self.sup.check(time.monotonic())
            await self._flush_outbox()
            self._systemd_tick()
            await asyncio.sleep(TICK_S)

    def _systemd_tick(self) -> None:
        now = time.monotonic()
        if not self.ready and self.sup.all_up() and self._shutdown is None:
            self.ready = True
            log.info("all agents up: %s", ", ".join(self.sup.handles))
            self.notifier.ready(self._status())
            self._status_line = self._status()
        interval = self.notifier.watchdog_interval_s
        if interval and self.sup.heartbeating(now) and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notifier.watchdog()
        status = self._status()
        if status != self._status_line and self.ready:
            self._status_line = status
            self.notifier.status(status)

    def _status(self) -> str:
        handles = self.sup.handles.values()
        up = sum(h.alive for h in handles)
        paused = f" (paused: {', '.join(sorted(self.state.paused))})" if self.state.paused else ""
        return (
            f"mode {self.state.mode}{paused}; agents {up}/{len(handles)} up; "
            f"last error: {self.last_error or 'none'}"
        )

    async def _on_agent_message(self, h: AgentHandle, msg: BaseModel) -> None:
        if isinstance(msg, ReportEvent):
            self.emit(msg.event)
        elif isinstance(msg, LogRecord):
            _relog(h.name, msg)
        elif isinstance(msg, TradingPause):
            self._agent_pause(h.name, msg)
        elif isinstance(msg, FlattenReport):
            if self._flatten is not None and not self._flatten.done():
                self._flatten.set_result(msg)
        elif isinstance(msg, EventsStored):
            self.outbox.acknowledge(msg.ids)
        elif isinstance(
            msg,
            (
                AgentEventsResult,
                DataStatusResult,
                AgentSignalsResult,
                AgentDecisionsResult,
                TradingResult,
            ),
        ):
            future = self._queries.pop(msg.request_id, None)
            if future is not None and not future.done():
                future.set_result(msg)

    # ---- system events ---------------------------------------------------------------

    def emit(self, event: SysEvent, *, logged: bool = False) -> None:
        """Log an event (unless the caller already did), publish it, queue it for the recorder."""
        if event.source == "orchestrator" and not logged:
            log.log(_LEVELS[event.level], "%s", event.message)
        if event.level in ("error", "critical"):
            self.last_error = event.message
        self.outbox.add(event)
        if self.publisher is not None:
            self.publisher.send(event.topic, event)

    async def _flush_outbox(self) -> None:
        recorder = self.sup.handles.get("recorder")
        if recorder is None or not recorder.alive or not self.outbox:
            return
        now = time.monotonic()
        due = self.outbox.due(now)
        for start in range(0, len(due), STORE_BATCH):
            batch = due[start : start + STORE_BATCH]
            if not await self.sup.send("recorder", StoreEvents(events=batch)):
                return
            self.outbox.mark_sent(batch, now)

    async def _drain_outbox(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.outbox and time.monotonic() < deadline:
            await self._flush_outbox()
            await asyncio.sleep(0.02)

    # ---- mode and pause --------------------------------------------------------------

    def _change_state(self, new: DaemonState, event: SysEvent) -> None:
        self.state = new
        self.store.save(new)
        self.metrics.set_mode(new.mode)
        self.emit(event)
        update = ModeUpdate(
            mode=new.mode,
            paused=sorted(new.paused),
            collect_pairs=self._collect_pairs(),
            live_risk_limit_usd=self._live_risk_limit(),
        )
        self._spawn_task(self.sup.broadcast(lambda: update))

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

    def _agent_pause(self, agent: str, msg: TradingPause) -> None:
        new = self.state.with_paused("trading", msg.pause)
        if new.paused == self.state.paused:
            return
        verb: Literal["pause", "resume"] = "pause" if msg.pause else "resume"
        self._change_state(
            new,
            SysEvent(
                kind=verb,
                level="warning" if msg.pause else "info",
                source=agent,
                message=f"{verb} trading: {msg.reason}",
                details={"scope": "trading"},
            ),
        )

    async def _cmd_collect(self, req: CollectRequest) -> CollectResult:
        if "collector" not in self.sup.handles:
            raise ControlError(
                "the collector agent is not enabled",
                "add collector to agents.enabled in the config and reload",
            )
        try:
            pairs = cfg.TradingConfig(pairs=req.pairs).pairs if req.pairs else None
        except ValidationError as exc:
            raise ControlError(
                f"invalid pairs: {exc.errors()[0]['msg']}",
                "use exchange coin names, e.g. --pairs BTC,ETH",
            ) from None
        new = self.state.with_collect_pairs(pairs).with_mode("collect")
        old = self.state
        if (new.mode, new.collect_pairs) != (old.mode, old.collect_pairs):
            shown = ", ".join(pairs) if pairs else "trading.pairs"
            self._change_state(
                new,
                SysEvent(
                    kind="mode",
                    message=f"mode {old.mode} → collect ({shown})",
                    details={"from": old.mode, "to": "collect", "pairs": shown},
                ),
            )
        return CollectResult(
            mode=new.mode,
            pairs=pairs or list(self.loaded.config.trading.pairs),
            paused=sorted(new.paused),
        )

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
                for h in self.sup.handles.values()
            ],
            collection=self._collection_status(),
            trading=self._trading_status(),
        )

    def _trading_status(self) -> TradingStatus | None:
        """From the samples the positions agent sends with its heartbeats."""
        positions = self.sup.handles.get("positions")
        if positions is None:
            return None
        samples = positions.samples.export()
        if not samples:
            return None

        def value(name: str, **labels: str) -> float:
            return _total(samples, name, **labels)

        return TradingStatus(
            equity_usd=value("bistoury_equity_usd"),
            realised_pnl_usd=value("bistoury_pnl_usd", kind="realised"),
            unrealised_pnl_usd=value("bistoury_pnl_usd", kind="unrealised"),
            fees_usd=-value("bistoury_pnl_usd", kind="fees"),
            funding_usd=value("bistoury_pnl_usd", kind="funding"),
            positions={
                s.labels["coin"]: s.value
                for s in samples
                if s.name == "bistoury_position_size" and "coin" in s.labels
            },
            orders=int(value("bistoury_orders_total")),
            refusals=int(value("bistoury_risk_rejections_total")),
        )

    def _collection_status(self) -> CollectionStatus | None:
        """Built from the samples the collector and recorder send with their heartbeats."""
        collector = self.sup.handles.get("collector")
        if collector is None:
            return None
        samples = collector.samples.export()
        recorder = self.sup.handles.get("recorder")
        stored = recorder.samples.export() if recorder is not None else []

        streams: dict[tuple[str, str], dict[str, float]] = {}
        for s in samples:
            if s.name.startswith("bistoury_md_") and "coin" in s.labels:
                key = (s.labels["coin"], s.labels["channel"])
                streams.setdefault(key, {})[s.name] = s.value
        return CollectionStatus(
            connected=_total(samples, "bistoury_md_connected") > 0,
            pairs=list(self.state.collect_pairs or self.loaded.config.trading.pairs),
            streams=[
                StreamStatus(
                    coin=coin,
                    channel=channel,
                    messages=int(v.get("bistoury_md_messages_total", 0)),
                    per_second=round(v.get("bistoury_md_messages_per_second", 0.0), 2),
                    last_age_s=round(v.get("bistoury_md_last_message_age_seconds", 0.0), 2),
                )
                for (coin, channel), v in sorted(streams.items())
            ],
            ws_reconnects=int(_total(samples, "bistoury_ws_reconnects_total")),
            backfilled_candles=int(_total(samples, "bistoury_md_backfilled_candles_total")),
            dropped=int(
                _total(samples, "bistoury_md_dropped_total")
                + _total(samples, "bistoury_store_dropped_total")
                + _total(stored, "bistoury_recorder_dropped_total")
            ),
            storage_bytes={
                s.labels.get("kind", "?"): int(s.value)
                for s in stored
                if s.name == "bistoury_storage_bytes"
            },
        )

    async def _emergency_flatten(self, reason: str) -> FlattenReport | None:
        """Pause trading, then have the positions agent cancel every order and close every
        position, straight (not through the trader: it may be hung). Idempotent: the
        first report is kept and returned again."""
        if self._flattened is not None:
            return self._flattened
        if "trading" not in self.state.paused:
            self._change_state(
                self.state.with_paused("trading", True),
                SysEvent(
                    kind="pause",
                    level="critical",
                    message=f"pause trading: emergency stop ({reason})",
                    details={"scope": "trading"},
                ),
            )
        positions = self.sup.handles.get("positions")
        if positions is None or not positions.alive:
            log.critical("emergency stop: no positions agent running; nothing to flatten")
            return None
        if self._flatten is None:
            self._flatten = asyncio.get_running_loop().create_future()
            await self.sup.send("positions", Flatten(reason=reason))
        try:
            report = await asyncio.wait_for(asyncio.shield(self._flatten), FLATTEN_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.critical(
                "emergency stop: the positions agent did not report within %.0f s\n"
                "  → check the positions on the exchange by hand",
                FLATTEN_TIMEOUT_S,
            )
            return None
        self._flattened = report
        return report

    async def _cmd_stop(self, req: StopRequest) -> StopResult:
        reason = "emergency stop requested" if req.emergency else "stop requested"
        code = DAEMON_EXIT_EMERGENCY if req.emergency else 0
        if req.emergency:
            report = await self._emergency_flatten(reason)
            self.request_shutdown(ShutdownRequest(reason, True, code))
            return StopResult(pid=os.getpid(), emergency=True, flatten=report)
        # Reply first; the shutdown starts right after the reply is sent.
        asyncio.get_running_loop().call_later(
            0.05, self.request_shutdown, ShutdownRequest(reason, req.emergency, code)
        )
        return StopResult(pid=os.getpid(), emergency=req.emergency)

    async def _ask_recorder(
        self, make: Callable[[str], RecorderQuery], timeout_s: float
    ) -> RecorderAnswer:
        """Send the recorder a query and wait for its answer (matched by request id)."""
        recorder = self.sup.handles.get("recorder")
        if recorder is None or not recorder.alive:
            raise ControlError(
                "the recorder agent is not running right now",
                "it restarts by itself; try again in a few seconds",
            )
        request_id = uuid.uuid4().hex
        future: asyncio.Future[RecorderAnswer] = asyncio.get_running_loop().create_future()
        self._queries[request_id] = future
        try:
            if not await self.sup.send("recorder", make(request_id)):
                raise asyncio.TimeoutError
            answer = await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise ControlError(
                "the recorder did not answer in time",
                "try again; if it persists, see the daemon's log",
            ) from None
        finally:
            self._queries.pop(request_id, None)
        if answer.error:
            raise ControlError(
                f"the recorder could not answer: {answer.error}", "see the daemon's log"
            )
        return answer

    async def _cmd_events(self, req: EventsRequest) -> EventsResult:
        await self._flush_outbox()
        answer = await self._ask_recorder(
            lambda rid: EventsQuery(
                request_id=rid, limit=req.limit, since_ms=req.since_ms, kinds=req.kinds
            ),
            QUERY_TIMEOUT_S,
        )
        assert isinstance(answer, AgentEventsResult)
        stored = {e.id for e in answer.events}
        pending = [
            e
            for e in self.outbox.pending()
            if e.id not in stored
            and (req.since_ms is None or e.ts_ms >= req.since_ms)
            and (not req.kinds or e.kind in req.kinds)
        ]
        events = sorted([*answer.events, *pending], key=lambda e: (e.ts_ms, e.id))[-req.limit :]
        return EventsResult(events=events, pending=len(pending))

    async def _cmd_data_status(self, req: DataStatusRequest) -> DataStatus:
        answer = await self._ask_recorder(
            lambda rid: DataStatusQuery(request_id=rid, gaps_since_ms=req.gaps_since_ms),
            DATA_STATUS_TIMEOUT_S,
        )
        assert isinstance(answer, DataStatusResult) and answer.status is not None
        return answer.status

    async def _cmd_signals(self, req: SignalsRequest) -> SignalsResult:
        answer = await self._ask_recorder(
            lambda rid: SignalsQuery(
                request_id=rid,
                limit=req.limit,
                coin=req.coin,
                strategy=req.strategy,
                since_ms=req.since_ms,
            ),
            QUERY_TIMEOUT_S,
        )
        assert isinstance(answer, AgentSignalsResult)
        return SignalsResult(signals=answer.signals)

    async def _cmd_decisions(self, req: DecisionsRequest) -> DecisionsResult:
        if req.view == "show" and not req.decision_id:
            raise ControlError(
                "decisions show needs an id", "pass the id (or its first 6+ characters)"
            )
        answer = await self._ask_recorder(
            lambda rid: DecisionsQuery(
                request_id=rid,
                view=req.view,
                limit=req.limit,
                id_prefix=req.decision_id,
                coin=req.coin,
                provider=req.provider,
                since_ms=req.since_ms,
            ),
            QUERY_TIMEOUT_S,
        )
        assert isinstance(answer, AgentDecisionsResult)
        if req.view == "show" and not answer.decisions:
            raise ControlError(
                f"no decision with an id starting {req.decision_id!r}",
                "list them: bistouryctl decisions list",
            )
        return DecisionsResult(
            decisions=answer.decisions, stats=answer.stats, outcome=answer.outcome
        )

    async def _cmd_positions(self, req: PositionsRequest) -> PositionsResult:
        answer = await self._ask_recorder(
            lambda rid: TradingQuery(request_id=rid, view="positions"), QUERY_TIMEOUT_S
        )
        assert isinstance(answer, TradingResult)
        return PositionsResult(portfolio=answer.portfolio)

    async def _cmd_trades(self, req: TradesRequest) -> TradesResult:
        answer = await self._ask_recorder(
            lambda rid: TradingQuery(
                request_id=rid,
                view="trades",
                limit=req.limit,
                coin=req.coin,
                since_ms=req.since_ms,
            ),
            QUERY_TIMEOUT_S,
        )
        assert isinstance(answer, TradingResult)
        return TradesResult(fills=answer.fills, rationales=answer.rationales)

    async def _cmd_trade(self, req: TradeRequest) -> TradeResult:
        """The only way into live: credentials checked against the exchange (without
        trading), then the confirmation recorded; the positions agent reconciles first."""
        if not req.confirm:
            raise ControlError(
                "live trading needs an explicit confirmation",
                "run bistouryctl trade --confirm --risk-limit USD",
            )
        if "positions" not in self.sup.handles:
            raise ControlError(
                "the positions agent is not enabled", "add positions to agents.enabled and reload"
            )
        secrets = self.loaded.secrets
        address = secrets.hyperliquid_account_address
        key = secrets.hyperliquid_api_wallet_key or secrets.hyperliquid_private_key
        if address is None or key is None:
            raise ControlError(
                "live trading needs HYPERLIQUID_ACCOUNT_ADDRESS and HYPERLIQUID_API_WALLET_KEY "
                "(or HYPERLIQUID_PRIVATE_KEY)",
                "add them to the env file (see etc/bistoury.env.example) and reload",
            )
        url = self.loaded.config.exchange.api_url
        shown = _short(address.get_secret_value())
        try:
            account, open_orders = await asyncio.to_thread(
                _check_credentials, url, address.get_secret_value(), key.get_secret_value()
            )
        except Exception as exc:
            # Loaded by the thread above (the SDK takes a while to import: not on this loop).
            from bistouryd.exchange.gateway import GatewayError

            if not isinstance(exc, GatewayError):
                raise
            if exc.kind == "auth":
                message = f"failed authentication attempt against {url} for account {shown}"
                log.warning("%s: %s", message, exc.message)
                self.emit(SysEvent(kind="alert", level="error", message=message), logged=True)
            raise ControlError(exc.message, exc.hint) from None
        session = LiveSession(
            confirmed_ts_ms=int(time.time() * 1000),
            risk_limit_usd=req.risk_limit_usd,
            account=shown,
            equity_usd=account.equity_usd,
        )
        self._change_state(
            self.state.with_live(session),
            SysEvent(
                kind="mode",
                level="warning",
                message=f"mode {self.state.mode} → live: confirmed for account {shown} "
                f"(equity {account.equity_usd:.2f} USD) with a risk limit of "
                f"{req.risk_limit_usd:.2f} USD",
                details={
                    "from": self.state.mode,
                    "to": "live",
                    "risk_limit_usd": req.risk_limit_usd,
                },
            ),
        )
        llm = self.loaded.config.llm
        return TradeResult(
            account=shown,
            equity_usd=account.equity_usd,
            positions={c: p.szi for c, p in account.positions.items()},
            open_orders=open_orders,
            risk_limit_usd=req.risk_limit_usd,
            pairs=list(self.loaded.config.trading.pairs),
            models=[*(f"{n}/{llm.settings_of(n).model}" for n in llm.chain), "rules"],
        )

    def _overridden(self, loaded: cfg.LoadedConfig) -> cfg.LoadedConfig:
        """``loaded`` with the ``risk set`` overrides; ones the new file makes invalid go."""
        overrides = self.state.risk_overrides
        if not overrides:
            return loaded
        try:
            return dataclasses.replace(loaded, config=cfg.with_overrides(loaded.config, overrides))
        except ValueError as exc:
            log.warning(
                "the risk overrides %s no longer apply (%s); the config file's limits hold\n"
                "  → set them again with bistouryctl risk set",
                overrides,
                exc,
            )
            self.state = self.state.model_copy(update={"risk_overrides": {}})
            self.store.save(self.state)
            return loaded

    def _risk_limits(self) -> dict[str, float | None]:
        config = self.loaded.config
        return {
            key: getattr(getattr(config, key.split(".")[0]), key.split(".")[1])
            for key in cfg.RISK_KEYS
        }

    async def _cmd_risk(self, req: RiskRequest) -> RiskResult:
        """Show the limits, or change one at run time (kept in the state, over the config
        file, until ``risk reset``); agents get it as they get a reload."""
        overrides = dict(self.state.risk_overrides)
        if req.action == "set":
            if req.key not in cfg.RISK_KEYS:
                raise ControlError(
                    f"{req.key!r} is not a risk limit", f"use one of: {', '.join(cfg.RISK_KEYS)}"
                )
            overrides[req.key] = req.value
        elif req.action == "reset":
            if req.key is None:
                overrides = {}
            else:
                overrides.pop(req.key, None)
        if overrides == self.state.risk_overrides:
            return RiskResult(limits=self._risk_limits(), overrides=overrides, changed=[])
        try:
            effective = cfg.with_overrides(self.file_config, overrides)
        except ValueError as exc:
            raise ControlError(str(exc), "give a value within the limit's range") from None
        old = self.loaded
        changed = cfg.diff(old.config, effective)
        self.state = self.state.model_copy(update={"risk_overrides": overrides})
        self.store.save(self.state)
        self.loaded = dataclasses.replace(old, config=effective)
        await self.sup.broadcast(
            lambda: ConfigUpdate(
                config=effective,
                secrets=old.secrets.reveal(),
                config_sha256=old.sha256,
                changed=changed,
            )
        )
        said = f"{req.key} = {req.value}" if req.action == "set" else (req.key or "all")
        self.emit(
            SysEvent(
                kind="reload",
                source="risk",
                message=f"risk {req.action} {said}; changed: {', '.join(changed) or 'nothing'}",
                details={"changed": len(changed)},
            )
        )
        return RiskResult(limits=self._risk_limits(), overrides=overrides, changed=changed)

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
        self.file_config = new.config
        new = self._overridden(new)
        changed = cfg.diff(old.config, new.config)
        secrets_changed = cfg.secrets_diff(old.secrets, new.secrets)
        restart_required = [c for c in changed if c in cfg.RESTART_REQUIRED]
        self.loaded = new
        self._configure_logging(new)
        if any(c.startswith("metrics.") for c in changed):
            self._serve_metrics()
        await self._apply_agent_set(old.config.agents.enabled, new.config.agents.enabled)
        await self.sup.broadcast(
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
        for name in before:
            if name not in after:
                await self.sup.remove(name, "removed from agents.enabled")
        for name in after:
            if name not in self.sup.handles:
                self.sup.add(name)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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


def _flatten_event(report: FlattenReport) -> SysEvent:
    closed = ", ".join(f"{c} {v:g}" for c, v in sorted(report.closed.items())) or "nothing"
    message = f"emergency stop: canceled {report.canceled_orders} order(s), closed {closed}"
    if report.remaining:
        message += "; STILL OPEN: " + ", ".join(
            f"{c} {v:+g}" for c, v in sorted(report.remaining.items())
        )
    return SysEvent(
        kind="emergency_stop",
        level="critical",
        message=message,
        details={
            "canceled_orders": report.canceled_orders,
            "still_open": len(report.remaining),
            "snapshot": report.snapshot_path,
        },
    )


def _short(address: str) -> str:
    """``0x1234…abcd``: enough to recognise an account, not to copy it."""
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


def _check_credentials(url: str, address: str, key: str) -> tuple[ExchangeAccount, int]:
    """The account and its number of open orders, once the key is proven to trade for it
    (in a thread: this imports the SDK and talks to the exchange)."""
    from bistouryd.exchange.gateway import LiveGateway

    gateway = LiveGateway(url, address, key)
    return gateway.check_credentials(), len(gateway.open_orders())


def _total(samples: list[MetricSample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
