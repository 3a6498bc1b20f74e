"""The control socket: request and reply models and the server loop.

``bistouryctl`` sends one JSON object per request on a REQ socket to the daemon's ROUTER
socket at ``<runtime-dir>/control.sock`` (mode 0660)::

    {"v": 1, "id": "<unique>", "cmd": "mode", "mode": "collect"}

and gets ``{"v": 1, "id": ..., "ok": true, "result": {...}}`` or ``{"ok": false, "error":
{"message": ..., "hints": [...]}}``. Anything malformed, oversized or unknown gets an
error reply; the daemon keeps running. A retried request (same ``id``) is answered from
a small cache instead of being run twice, so a client may retry ``stop`` or ``mode``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import zmq
import zmq.asyncio
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bistouryd.bus import CONTROL_HWM, configure
from bistouryd.events import SysEvent
from bistouryd.exchange.orders import Fill
from bistouryd.llm.record import DecisionRecord
from bistouryd.paths import ipc
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.protocol import (
    COMMANDS,
    HARD_MAX_REQUEST_BYTES,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
)
from bistouryd.state import Mode, Pausable, PauseScope
from bistouryd.storage.reports import DecisionOutcome, DecisionStats
from bistouryd.strategies.base import Signal
from bistouryd.supervision import FlattenReport

log = logging.getLogger(__name__)

REPLY_CACHE = 256


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    id: str = Field(min_length=1, max_length=64)


class StatusRequest(_Request):
    cmd: Literal["status"]


class ModeRequest(_Request):
    cmd: Literal["mode"]
    mode: Mode


class PauseRequest(_Request):
    cmd: Literal["pause"]
    scope: PauseScope = "all"


class ResumeRequest(_Request):
    cmd: Literal["resume"]
    scope: PauseScope = "all"


class ReloadRequest(_Request):
    cmd: Literal["reload"]


class StopRequest(_Request):
    cmd: Literal["stop"]
    emergency: bool = False


class EventsRequest(_Request):
    cmd: Literal["events"]
    limit: int = Field(default=50, ge=1, le=10_000)
    since_ms: int | None = Field(default=None, ge=0)
    kinds: list[str] = Field(default_factory=list, max_length=32)


class ConfigCheckRequest(_Request):
    cmd: Literal["config-check"]
    path: str | None = Field(default=None, max_length=4096)


class DataStatusRequest(_Request):
    cmd: Literal["data-status"]
    gaps_since_ms: int | None = Field(default=None, ge=0)


class SignalsRequest(_Request):
    cmd: Literal["signals"]
    limit: int = Field(default=20, ge=1, le=10_000)
    coin: str | None = Field(default=None, max_length=32)
    strategy: str | None = Field(default=None, max_length=64)
    since_ms: int | None = Field(default=None, ge=0)


class DecisionsRequest(_Request):
    cmd: Literal["decisions"]
    view: Literal["list", "show", "stats"] = "list"
    limit: int = Field(default=20, ge=1, le=10_000)
    decision_id: str | None = Field(default=None, min_length=6, max_length=64)
    coin: str | None = Field(default=None, max_length=32)
    provider: str | None = Field(default=None, max_length=32)
    since_ms: int | None = Field(default=None, ge=0)


class PositionsRequest(_Request):
    cmd: Literal["positions"]


class TradesRequest(_Request):
    cmd: Literal["trades"]
    limit: int = Field(default=50, ge=1, le=10_000)
    coin: str | None = Field(default=None, max_length=32)
    since_ms: int | None = Field(default=None, ge=0)


class RiskRequest(_Request):
    cmd: Literal["risk"]
    action: Literal["show", "set", "reset"] = "show"
    key: str | None = Field(default=None, max_length=64)
    value: float | None = None  # None with set: remove an optional limit (max_position_usd)


class TradeRequest(_Request):
    cmd: Literal["trade"]
    confirm: bool = False
    risk_limit_usd: float = Field(gt=0, le=1e9)


class CollectRequest(_Request):
    cmd: Literal["collect"]
    pairs: list[str] | None = Field(default=None, max_length=500)


Request = Annotated[
    StatusRequest
    | ModeRequest
    | PauseRequest
    | ResumeRequest
    | ReloadRequest
    | StopRequest
    | EventsRequest
    | ConfigCheckRequest
    | CollectRequest
    | DataStatusRequest
    | SignalsRequest
    | DecisionsRequest
    | PositionsRequest
    | TradesRequest
    | RiskRequest
    | TradeRequest,
    Field(discriminator="cmd"),
]
_request: TypeAdapter[Request] = TypeAdapter(Request)


# ---- results ---------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class AgentStatus(_Result):
    name: str
    pid: int | None
    alive: bool
    state: str
    restarts: int
    heartbeat_age_s: float | None
    uptime_s: float | None
    rss_bytes: int | None
    config_sha256: str | None


class StreamStatus(_Result):
    coin: str
    channel: str
    messages: int
    per_second: float
    last_age_s: float


class CollectionStatus(_Result):
    """Market-data collection as the collector and recorder report it (ST-301/302)."""

    connected: bool
    pairs: list[str]
    streams: list[StreamStatus]
    ws_reconnects: int
    backfilled_candles: int
    dropped: int
    storage_bytes: dict[str, int]


class TradingStatus(_Result):
    """The account as the positions agent reports it with its heartbeats."""

    equity_usd: float
    realised_pnl_usd: float
    unrealised_pnl_usd: float
    fees_usd: float
    funding_usd: float
    positions: dict[str, float]  # coin -> signed size
    orders: int
    refusals: int


class StatusResult(_Result):
    version: str
    pid: int
    mode: Mode
    paused: list[Pausable]
    uptime_s: float
    started_ts_ms: int
    config_path: str
    config_sha256: str
    secrets_set: list[str]
    state_dir: str
    runtime_dir: str
    metrics_url: str | None
    ready: bool
    last_error: str | None
    agents: list[AgentStatus]
    collection: CollectionStatus | None = None
    trading: TradingStatus | None = None


class ModeResult(_Result):
    mode: Mode
    paused: list[Pausable]
    changed: bool


class CollectResult(_Result):
    mode: Mode
    pairs: list[str]
    paused: list[Pausable]


class ReloadResult(_Result):
    applied: bool
    config_sha256: str
    changed: list[str]
    secrets_changed: list[str]
    restart_required: list[str]
    problems: list[str]


class StopResult(_Result):
    pid: int
    emergency: bool
    flatten: FlattenReport | None = None  # what the emergency stop did


class EventsResult(_Result):
    events: list[SysEvent]
    pending: int


class SignalsResult(_Result):
    signals: list[Signal]


class DecisionsResult(_Result):
    decisions: list[DecisionRecord]
    stats: DecisionStats | None = None
    outcome: DecisionOutcome | None = None


class PositionsResult(_Result):
    portfolio: PortfolioSnapshot | None


class TradesResult(_Result):
    fills: list[Fill]
    rationales: dict[str, str]


class RiskResult(_Result):
    limits: dict[str, float | None]  # the limits in force
    overrides: dict[str, float | None]  # those set by `risk set`, over the config file
    changed: list[str]


class TradeResult(_Result):
    """What entering live means, as checked against the exchange."""

    account: str  # shortened
    equity_usd: float
    positions: dict[str, float]  # coin -> signed size already held on the exchange
    open_orders: int
    risk_limit_usd: float
    pairs: list[str]
    models: list[str]  # the decision chain, ending in rules


class ConfigCheckResult(_Result):
    path: str
    valid: bool
    problems: list[str]


class ControlError(Exception):
    """A request the daemon refuses; sent back as ``{"ok": false, "error": ...}``."""

    def __init__(self, message: str, *hints: str):
        super().__init__(message)
        self.message = message
        self.hints = list(hints)


def error_reply(req_id: str | None, message: str, hints: list[str]) -> bytes:
    body = {
        "v": PROTOCOL_VERSION,
        "id": req_id,
        "ok": False,
        "error": {"message": message, "hints": hints},
    }
    return json.dumps(body).encode()


def ok_reply(req_id: str, result: BaseModel) -> bytes:
    return (
        b'{"v":%d,"id":%s,"ok":true,"result":' % (PROTOCOL_VERSION, json.dumps(req_id).encode())
        + result.model_dump_json().encode()
        + b"}"
    )


Handler = Callable[[Any], Coroutine[Any, Any, BaseModel]]


def _describe_invalid(exc: ValidationError, raw: Any) -> ControlError:
    cmd = raw.get("cmd") if isinstance(raw, dict) else None
    if isinstance(cmd, str) and cmd not in COMMANDS:
        return ControlError(f"unknown command {cmd!r}", f"known commands: {', '.join(COMMANDS)}")
    if isinstance(raw, dict) and raw.get("v") != PROTOCOL_VERSION:
        return ControlError(
            f"protocol version {raw.get('v')!r} is not supported "
            f"(the daemon speaks {PROTOCOL_VERSION})",
            "use the bistouryctl installed with this daemon",
        )
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"][1:]) or "request"
    return ControlError(
        f"invalid request: {where}: {first['msg']}",
        "run bistouryctl --help for the commands and their arguments",
    )


class ControlServer:
    """Serves the ROUTER socket; each request runs as its own task."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        path: Path,
        handlers: dict[str, Handler],
        on_request: Callable[[str, str], None],
    ):
        self.sock = ctx.socket(zmq.ROUTER)
        configure(self.sock, hwm=CONTROL_HWM)
        self.sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_REQUEST_BYTES)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.sock.bind(ipc(path))
        os.chmod(path, 0o660)
        missing = set(COMMANDS) - set(handlers)
        if missing:
            raise ValueError(f"no handler for control commands: {', '.join(sorted(missing))}")
        self.handlers = handlers
        self.on_request = on_request
        self._done: OrderedDict[str, bytes] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=True)
            task = asyncio.create_task(self._serve_one(frames))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve_one(self, frames: list[bytes]) -> None:
        # REQ clients send [identity, b"", body]; a bare DEALER may send [identity, body].
        if len(frames) < 2:
            return
        identity = frames[0]
        envelope = [identity, b""] if len(frames) >= 3 and frames[1] == b"" else [identity]
        body = frames[len(envelope)] if len(frames) > len(envelope) else b""
        reply = await self._reply(body, extra_frames=len(frames) - len(envelope) - 1)
        try:
            await self.sock.send_multipart([*envelope, reply])
        except zmq.ZMQError as exc:
            log.debug("control reply not delivered: %s", exc)

    async def _reply(self, body: bytes, extra_frames: int) -> bytes:
        if extra_frames:
            self.on_request("invalid", "error")
            return error_reply(
                None, "a request is exactly one frame", ["send one JSON object per message"]
            )
        if len(body) > MAX_REQUEST_BYTES:
            self.on_request("invalid", "error")
            return error_reply(
                None,
                f"request of {len(body)} bytes is too large",
                [f"requests are at most {MAX_REQUEST_BYTES} bytes"],
            )
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            self.on_request("invalid", "error")
            return error_reply(None, "request is not JSON", ["send a JSON object"])
        req_id = raw.get("id") if isinstance(raw, dict) else None
        req_id = req_id if isinstance(req_id, str) else None
        try:
            request = _request.validate_python(raw)
        except ValidationError as exc:
            err = _describe_invalid(exc, raw)
            self.on_request("invalid", "error")
            return error_reply(req_id, err.message, err.hints)
        if request.id in self._done:
            return self._done[request.id]
        if request.id in self._inflight:
            return await asyncio.shield(self._inflight[request.id])
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[request.id] = future
        try:
            reply = await self._run(request)
            future.set_result(reply)
        finally:
            del self._inflight[request.id]
        self._done[request.id] = reply
        while len(self._done) > REPLY_CACHE:
            self._done.popitem(last=False)
        return reply

    async def _run(self, request: Request) -> bytes:
        handler = self.handlers[request.cmd]
        try:
            result = await handler(request)
        except ControlError as err:
            self.on_request(request.cmd, "refused")
            return error_reply(request.id, err.message, err.hints)
        except Exception:
            log.exception("control command %s failed", request.cmd)
            self.on_request(request.cmd, "error")
            return error_reply(
                request.id,
                f"{request.cmd} failed inside the daemon",
                ["see the daemon's log for the cause"],
            )
        self.on_request(request.cmd, "ok")
        return ok_reply(request.id, result)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.sock.close(linger=0)
