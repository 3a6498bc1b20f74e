"""What every agent process shares: the supervision channel, heartbeats, config and mode
updates, log forwarding, graceful stop and access to the bus.

An agent subclasses ``Agent``, overrides the hooks it needs and ends its module with
``run(MyAgent)``. The orchestrator starts it as ``python -m bistouryd.agents.<name>``.
If any of its tasks fails the process exits 1 and the orchestrator restarts it; if it
cannot start for a reason the user must fix (an error carrying a ``hint``), it exits 78
and the orchestrator stops the daemon instead of restarting it in a loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar

import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from bistouryd.bus import CONTROL_HWM, BusStats, Publisher, StorePusher, Subscriber, configure
from bistouryd.config import Config, Secrets
from bistouryd.events import SysEvent
from bistouryd.logs import RedactFilter, level_number
from bistouryd.paths import RuntimePaths, ipc
from bistouryd.protocol import DAEMON_EXIT_CONFIG
from bistouryd.state import Mode, Pausable
from bistouryd.supervision import (
    ConfigUpdate,
    Heartbeat,
    Hello,
    Init,
    LogRecord,
    MetricSample,
    ModeUpdate,
    ReportEvent,
    Stop,
    ToAgent,
    bus_samples,
    to_agent,
)

log = logging.getLogger(__name__)

INIT_TIMEOUT_S = 30.0
LOG_QUEUE_MAX = 10_000


class _ChannelLogHandler(logging.Handler):
    """Queues records for the orchestrator; a full queue drops the oldest."""

    def __init__(
        self, queue: deque[LogRecord], wake: asyncio.Event, loop: asyncio.AbstractEventLoop
    ):
        super().__init__()
        self.queue = queue
        self.wake = wake
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        self.queue.append(
            LogRecord(
                level=record.levelno, logger=record.name, message=message, created=record.created
            )
        )
        self.loop.call_soon_threadsafe(self.wake.set)


class Agent:
    """Base class of agent processes. Hooks run on the agent's asyncio loop."""

    name: ClassVar[str]

    def __init__(self, paths: RuntimePaths):
        self.paths = paths
        self.pid = os.getpid()
        self.ctx = zmq.asyncio.Context()
        self.bus_stats = BusStats()
        self.config = Config()
        self.secrets = Secrets()
        self.config_sha256 = ""
        self.mode: Mode = "idle"
        self.paused: frozenset[Pausable] = frozenset()
        self.collect_pairs: list[str] | None = None
        self.live_risk_limit_usd: float | None = None
        self.state_dir = Path(".")
        self._ppid = os.getppid()
        self._stopping = asyncio.Event()
        self._failed: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._publisher: Publisher | None = None
        self._store: StorePusher | None = None
        self._subscribers: list[Subscriber] = []
        self._logs: deque[LogRecord] = deque(maxlen=LOG_QUEUE_MAX)
        self._logs_wake = asyncio.Event()
        self._redactor = RedactFilter()
        self._dealer = self.ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.IDENTITY, self.name.encode())
        configure(self._dealer, hwm=CONTROL_HWM)

    # ---- hooks -------------------------------------------------------------------

    async def start(self) -> None:
        """Runs once, after the first configuration arrived."""

    async def on_config(self, changed: list[str]) -> None:
        """A reload changed the settings named in ``changed`` (``self.config`` is new)."""

    async def on_mode(self) -> None:
        """The mode or paused flags changed (``self.mode``, ``self.paused``)."""

    async def handle(self, msg: BaseModel) -> None:
        """A supervision message the base class does not handle itself."""
        log.warning("%s agent ignores %s messages", self.name, type(msg).__name__)

    async def stop(self) -> None:
        """Runs once on the way out; flush what must not be lost."""

    def metrics(self) -> list[MetricSample]:
        """The agent's own Prometheus samples, reported with each heartbeat."""
        return []

    @property
    def pairs(self) -> list[str]:
        """The coins to work on: ``bistoury collect --pairs`` if given, else trading.pairs."""
        return list(self.collect_pairs or self.config.trading.pairs)

    # ---- services ----------------------------------------------------------------

    @property
    def store(self) -> StorePusher:
        """The channel to the recorder for everything that must be written to the database."""
        if self._store is None:
            self._store = StorePusher(self.ctx, self.paths, self.name, self.bus_stats)
        return self._store

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.ctx, self.paths, self.name, self.bus_stats)
        return self._publisher

    def subscribe(self, prefixes: list[str]) -> Subscriber:
        sub = Subscriber(self.ctx, self.paths, prefixes, self.bus_stats)
        self._subscribers.append(sub)
        return sub

    async def send(self, msg: BaseModel) -> None:
        await self._dealer.send(msg.model_dump_json().encode())

    async def report(self, event: SysEvent) -> None:
        """Have the orchestrator record a system event."""
        await self.send(ReportEvent(event=event))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a task for the agent's lifetime; if it fails, the agent stops and exits 1."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failed is None:
            self._failed = task.exception()
            log.error(
                "%s agent task %s failed", self.name, task.get_name(), exc_info=task.exception()
            )
            self._stopping.set()

    # ---- lifecycle ---------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        self._dealer.connect(ipc(self.paths.supervision))
        await self.send(Hello(name=self.name, pid=self.pid))
        try:
            init = await asyncio.wait_for(self._wait_init(), INIT_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error(
                "%s agent got no configuration from the orchestrator in %.0f s",
                self.name,
                INIT_TIMEOUT_S,
            )
            return 1
        self._apply_init(init)
        self._log_to_channel(loop)
        # Connect to the bus now: a PUB socket silently drops what it sends before its
        # connection is up, which would lose an agent's first message (say, a decision).
        _ = self.publisher
        try:
            await self.start()
        except Exception as exc:
            return await self._fail_start(exc)
        self.spawn(self._heartbeats(), "heartbeat")
        self.spawn(self._supervision_loop(), "supervision")
        self.spawn(self._forward_logs(), "logs")
        await self._stopping.wait()
        try:
            await self.stop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._flush_logs()
            self._close()
        return 1 if self._failed is not None else 0

    async def _fail_start(self, exc: Exception) -> int:
        """Log why the agent cannot start; an error with a hint is the user's to fix."""
        hint = getattr(exc, "hint", None)
        if hint:
            log.error(
                "%s agent cannot start: %s\n  → %s", self.name, getattr(exc, "message", exc), hint
            )
            code = DAEMON_EXIT_CONFIG
        else:
            log.exception("%s agent failed to start", self.name)
            code = 1
        await self._flush_logs()
        self._close()
        return code

    async def _wait_init(self) -> Init:
        while True:
            msg = self._parse(await self._dealer.recv())
            if isinstance(msg, Init):
                return msg
            if isinstance(msg, Stop):
                raise asyncio.TimeoutError

    def _apply_init(self, init: Init) -> None:
        self.config = init.config
        self.secrets = Secrets.model_validate(init.secrets)
        self.config_sha256 = init.config_sha256
        self.mode = init.mode
        self.paused = frozenset(init.paused)
        self.collect_pairs = init.collect_pairs
        self.live_risk_limit_usd = init.live_risk_limit_usd
        self.state_dir = Path(init.state_dir)

    def _log_to_channel(self, loop: asyncio.AbstractEventLoop) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = _ChannelLogHandler(self._logs, self._logs_wake, loop)
        self._redactor.set_known(v for v in self.secrets.reveal().values() if v)
        handler.addFilter(self._redactor)
        root.addHandler(handler)
        root.setLevel(level_number(self.config.logging.level))

    def _parse(self, data: bytes) -> ToAgent | None:
        try:
            return to_agent.validate_json(data)
        except ValidationError as exc:
            log.error("%s agent got an invalid supervision message: %s", self.name, exc)
            return None

    async def _supervision_loop(self) -> None:
        while True:
            msg = self._parse(await self._dealer.recv())
            if msg is None:
                continue
            if isinstance(msg, Stop):
                log.info("%s agent stopping: %s", self.name, msg.reason)
                self._stopping.set()
            elif isinstance(msg, ConfigUpdate):
                await self._apply_config(msg)
            elif isinstance(msg, ModeUpdate):
                self.mode, self.paused = msg.mode, frozenset(msg.paused)
                self.collect_pairs = msg.collect_pairs
                self.live_risk_limit_usd = msg.live_risk_limit_usd
                await self.on_mode()
            elif isinstance(msg, Init):
                continue
            else:
                await self.handle(msg)

    async def _apply_config(self, update: ConfigUpdate) -> None:
        old = (self.config, self.secrets, self.config_sha256)
        self.config = update.config
        self.secrets = Secrets.model_validate(update.secrets)
        self.config_sha256 = update.config_sha256
        self._redactor.set_known(v for v in self.secrets.reveal().values() if v)
        logging.getLogger().setLevel(level_number(self.config.logging.level))
        try:
            await self.on_config(update.changed)
        except Exception as exc:
            self.config, self.secrets, self.config_sha256 = old
            log.exception("%s agent could not apply the new configuration", self.name)
            await self.report(
                SysEvent(
                    kind="config_error",
                    level="error",
                    source=self.name,
                    message=f"{self.name} kept its previous configuration: {exc}",
                )
            )

    async def _heartbeats(self) -> None:
        while True:
            if os.getppid() != self._ppid:
                log.error("%s agent lost its orchestrator; stopping", self.name)
                self._stopping.set()
                return
            await self.send(
                Heartbeat(
                    name=self.name,
                    pid=self.pid,
                    config_sha256=self.config_sha256,
                    metrics=bus_samples(self.bus_stats) + self.metrics(),
                )
            )
            await asyncio.sleep(self.config.agents.heartbeat_interval_s)

    async def _forward_logs(self) -> None:
        while True:
            await self._logs_wake.wait()
            self._logs_wake.clear()
            await self._flush_logs()

    async def _flush_logs(self) -> None:
        while self._logs:
            record = self._logs.popleft()
            try:
                await self._dealer.send(record.model_dump_json().encode(), flags=zmq.NOBLOCK)
            except zmq.Again:
                return

    def _close(self) -> None:
        for sender in (self._publisher, self._store):
            if sender is not None:
                sender.close()
        for sub in self._subscribers:
            sub.close()
        self._dealer.close(linger=500)
        self.ctx.term()


def run(agent_cls: type[Agent]) -> None:
    """Entry point of an agent module: ``python -m bistouryd.agents.<name> --runtime-dir D``."""
    parser = argparse.ArgumentParser(description=f"Bistoury {agent_cls.name} agent")
    parser.add_argument("--runtime-dir", required=True, help="the daemon's runtime directory")
    args = parser.parse_args()
    # The orchestrator coordinates shutdown; Ctrl-C in its terminal must not kill agents first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s: [{agent_cls.name}] %(message)s")
    # httpx logs every request at INFO (model calls, the asset list): noise in the journal.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def _main() -> int:
        return await agent_cls(RuntimePaths(Path(args.runtime_dir))).main()

    sys.exit(asyncio.run(_main()))
