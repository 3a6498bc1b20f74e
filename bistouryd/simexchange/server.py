"""The simulated exchange as a server: the aiohttp app and its routes, the engine loop, fault
injection, and ``SimExchange``, the handle tests use to run it in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timezone
from typing import Any, TypeVar

from aiohttp import web

from bistouryd.background import BackgroundServer
from bistouryd.simexchange import admin, wire
from bistouryd.simexchange.bookgen import BookShape
from bistouryd.simexchange.clock import ReplayClock, format_speed
from bistouryd.simexchange.config import SimConfig, synthetic_names
from bistouryd.simexchange.datafiles import RecordedData, bundled_data_dir, load_folder
from bistouryd.simexchange.engine import Engine, SubKey
from bistouryd.simexchange.exchange import ExchangeApi
from bistouryd.simexchange.faults import REST_PATHS, Faults
from bistouryd.simexchange.feed import CoinFeed, Origin, Source
from bistouryd.simexchange.info import InfoApi
from bistouryd.simexchange.replay import plan_replay
from bistouryd.simexchange.synthetic import plan_synthetic
from bistouryd.simexchange.venue import Fees
from bistouryd.simexchange.ws import SentFrame, SentLog, WsHub

log = logging.getLogger("bistouryd.simexchange")

TICK_S = 0.05
MAX_CHUNK_MS = 60_000  # replay time processed per engine round at max speed
_T = TypeVar("_T")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimServer:
    """The simulated exchange inside one asyncio loop (build it, ``open``, ``close``)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = Faults()
        self.sent = SentLog(config.ws_log_size, config.ws_log_path)
        feeds, start_ms, end_ms, shape = self._market()
        self.clock = ReplayClock(start_ms, config.speed, end_ms)
        self.hub = WsHub(
            self.faults,
            self.sent,
            lambda: self.engine.time_ms,
            lambda: self.engine.coins.keys(),
            self._snapshot,
            config.ws_queue_max,
        )
        self.fees = Fees(config.taker_fee, config.maker_fee)
        self.engine = Engine(feeds, self.clock, self.hub, self.fees, shape, config.seed, start_ms)
        for address, usdc in config.accounts.items():
            self.engine.venue.add_account(address, usdc)
        for agent, account in config.agents.items():
            self.engine.venue.add_agent(agent, account)
        self.info = InfoApi(self.engine, self.fees)
        self.exchange = ExchangeApi(self.engine, lambda: int(time.time() * 1000))
        self.start_ms = start_ms
        self.url = ""
        self.engine_error = ""
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port = config.port
        self._engine_task: asyncio.Task[None] | None = None
        self._reopen_task: asyncio.Task[None] | None = None

    # -- market data ------------------------------------------------------------------------

    def _market(self) -> tuple[list[CoinFeed], int, int | None, BookShape]:
        config = self.config
        synthetic = bool(config.synthetic)
        folder = config.data_dir if config.data_dir is not None and not synthetic else None
        data = load_folder(folder if folder is not None else bundled_data_dir())
        self.data: RecordedData = data
        self.shape_only: list[str] = []
        feeds: list[CoinFeed]
        end_ms: int | None
        if synthetic:
            spec = config.synthetic
            known = [r.name for r in data.meta]
            names = synthetic_names(str(spec), known) if isinstance(spec, int) else tuple(spec)
            start_ms = config.start_ms or int(time.time() * 1000)
            rate = config.update_rate(len(names))
            meta = {r.name: r for r in data.meta}
            feeds = list(plan_synthetic(list(names), meta, data.mids, config.seed, start_ms, rate))
            end_ms = None
        else:
            plan = plan_replay(data, config.seed, config.start_ms)
            feeds, start_ms, end_ms = list(plan.feeds), plan.start_ms, plan.end_ms
            self.shape_only = plan.shape_only
        books = data.all_books()
        usable = [b for b in books if b.mid_px is not None]
        if not usable:
            bundled = load_folder(bundled_data_dir()).all_books()
            usable = [b for b in bundled if b.mid_px is not None]
        return feeds, start_ms, end_ms, BookShape.from_snapshots(usable)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> str:
        """Start listening and stepping the market; returns the base URL."""
        self._runner = web.AppRunner(
            self._app(), handle_signals=False, shutdown_timeout=2.0, access_log=None
        )
        await self._runner.setup()
        try:
            await self._bind(self._port)
        except OSError:
            await self._runner.cleanup()
            raise
        self._port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.config.host}:{self._port}"
        self._engine_task = asyncio.create_task(self._run_engine())
        log.info("listening on %s", self.url)
        return self.url

    async def close(self) -> None:
        for task in (self._engine_task, self._reopen_task):
            if task is not None:
                task.cancel()
        await self.hub.drop_all(graceful=False)
        if self._runner is not None:
            await self._runner.cleanup()
        self.sent.close()

    async def _bind(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.config.host, port, reuse_address=True)
        await site.start()
        self._site = site

    async def _run_engine(self) -> None:
        engine, clock = self.engine, self.clock
        try:
            while True:
                if clock.is_max:
                    await engine.advance_to(engine.time_ms + MAX_CHUNK_MS)
                    clock.jump_to(engine.time_ms)
                    await asyncio.sleep(TICK_S if engine.finished else 0)
                else:
                    await engine.advance_to(clock.now_ms())
                    await asyncio.sleep(TICK_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.engine_error = f"{type(exc).__name__}: {exc}"
            log.exception("the market engine stopped")

    # -- the app ----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        app.router.add_post("/info", self._on_info)
        app.router.add_post("/exchange", self._on_exchange)
        app.router.add_get("/ws", self.hub.handle)
        admin.add_routes(app, self)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        if path in REST_PATHS or path == "/ws":
            info_type = None
            if path == "/info" and self.faults.wants_info_type:
                with contextlib.suppress(ValueError):
                    body = await request.json()
                    info_type = body.get("type") if isinstance(body, dict) else None
            fault = self.faults.http_error_for(path, info_type)
            if fault is not None:
                if fault.after:
                    served = await handler(request)
                    log.debug("%s %s -> %d, lost", request.method, path, served.status)
                log.debug("%s %s -> injected %d", request.method, path, fault.status)
                return web.Response(status=fault.status, text=http.HTTPStatus(fault.status).phrase)
            delay_s = self.faults.delays(path)
            if delay_s:
                # Received in full first: a client that gives up meanwhile does not stop it,
                # as a request already on its way to the exchange is not stopped.
                await request.read()
                await asyncio.sleep(delay_s)
        response = await handler(request)
        log.debug(
            "%s %s -> %d in %.1f ms",
            request.method,
            path,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def _on_info(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.info.handle)

    async def _on_exchange(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.exchange.handle)

    async def _answer(
        self, request: web.Request, handle: Callable[[Any], wire.Answer]
    ) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            return web.Response(status=400, text=f"Failed to parse the request body as JSON: {exc}")
        log.debug("%s %s", request.path, text[:300])
        answer = handle(body)
        if answer.status != 200:
            return web.Response(status=answer.status, text=answer.text)
        return web.Response(
            text=json.dumps(answer.body, separators=(",", ":")), content_type="application/json"
        )

    def _snapshot(self, key: SubKey) -> str | None:
        """The first message of a subscription that starts with a snapshot (``userFills``)."""
        if key[0] != "userFills":
            return None
        user = key[1]
        account = self.engine.venue.accounts.get(user)
        fills = list(account.fills)[-2000:] if account is not None else []
        rules = self.engine.venue.rules
        data = {
            "isSnapshot": True,
            "user": user,
            "fills": [wire.fill_json(f, rules[f.coin]) for f in reversed(fills)],
        }
        return wire.ws_text("userFills", data)

    # -- admin operations -------------------------------------------------------------------

    async def set_time(self, ms: int) -> int:
        """Move the replay clock forward to ``ms``, processing everything in between."""
        if ms < self.engine.time_ms:
            raise ValueError(
                f"the replay clock only moves forward: {ms} is before now ({self.engine.time_ms})"
            )
        if self.clock.end_ms is not None:
            ms = min(ms, self.clock.end_ms)
        await self.engine.advance_to(ms)
        self.clock.jump_to(ms)
        return self.engine.time_ms

    async def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("advance_ms must not be negative")
        return await self.set_time(max(self.engine.time_ms, self.clock.now_ms()) + ms)

    def set_speed(self, speed: float | None) -> None:
        self.clock.set_speed(speed)

    async def go_away(self, seconds: float) -> None:
        """Close the listening socket and every connection; listen again after ``seconds``."""
        if self._site is None:
            raise ValueError("the server is already away")
        self.faults.down_until = time.monotonic() + seconds
        site, self._site = self._site, None
        await site.stop()
        await self.hub.drop_all(graceful=False)
        assert self._runner is not None and self._runner.server is not None
        for handler in self._runner.server.connections:
            handler.force_close()
        log.info("gone away for %.1f s", seconds)
        self._reopen_task = asyncio.create_task(self._come_back(seconds))

    async def _come_back(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        while self._site is None:
            try:
                await self._bind(self._port)
            except OSError as exc:
                log.warning("cannot listen on port %d again yet: %s", self._port, exc)
                await asyncio.sleep(0.5)
        log.info("back on %s", self.url)

    def sources(self) -> list[Source]:
        found = [s for feed in self.engine.feeds for s in feed.sources()]
        meta: Origin = "recorded" if self.data.meta and not self.config.synthetic else "synthetic"
        found.append(
            Source(
                "*", "meta", meta, "szDecimals/maxLeverage of the coins served, in universe order"
            )
        )
        found.append(Source("*", "allMids", "synthetic", "mid of each coin's current best bid/ask"))
        found.append(
            Source(
                "*",
                "l2Book shape",
                "recorded",
                f"level spacing, sizes and order counts measured on {self.engine.shape.origin}",
            )
        )
        return found

    def status(self) -> dict[str, Any]:
        engine, clock, venue = self.engine, self.clock, self.engine.venue
        accounts = []
        for account in venue.accounts.values():
            view = venue.margin(account)
            accounts.append(
                {
                    "address": account.address,
                    "account_value": wire.usd_str(view.account_value_usd),
                    "positions": {p.coin: wire.num(p.szi) for p in view.positions},
                    "open_orders": len(venue.open_orders(account)),
                    "fills": len(account.fills),
                }
            )
        return {
            "url": self.url,
            "mode": "synthetic" if self.config.synthetic else "replay",
            "engine_error": self.engine_error or None,
            "clock": {
                "exchange_ms": engine.time_ms,
                "exchange_time": iso(engine.time_ms),
                "target_ms": clock.now_ms(),
                "speed": format_speed(clock.speed),
                "start_ms": self.start_ms,
                "end_ms": clock.end_ms,
                "finished": engine.finished,
            },
            "coins": list(engine.coins),
            "sources": [
                {"coin": s.coin, "channel": s.channel, "origin": s.origin, "detail": s.detail}
                for s in self.sources()
            ],
            "data": {
                "folder": str(self.data.folder),
                "files": [
                    {
                        "file": str(f.path.relative_to(self.data.folder)),
                        "kind": f.kind,
                        "detail": f.detail,
                    }
                    for f in self.data.files
                ],
                "shape_only_coins": self.shape_only,
            },
            "fees": {"taker": self.fees.taker, "maker": self.fees.maker},
            "accounts": accounts,
            "agents": dict(venue.agents),
            "faults": self.faults.describe(),
            "websocket": self.hub.status(),
        }


class SimExchange(BackgroundServer[SimServer]):
    """A simulated exchange in a background thread, for tests::

    with SimExchange(SimConfig(port=0, speed=0, accounts={ADDR: 10_000})) as sim:
        info = Info(sim.url, skip_ws=False)
        sim.advance(60_000)
    """

    what = "the simulated exchange"
    stop_timeout_s = 30.0

    def __init__(self, config: SimConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else SimConfig(port=0)

    def _make(self) -> SimServer:
        return SimServer(self.config)

    def _call(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        if self._loop is None:
            raise RuntimeError("the simulated exchange is not running: call start()")
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout=120)

    def _sync(self, fn: Callable[[], _T]) -> _T:
        async def run() -> _T:
            return fn()

        return self._call(run)

    # -- the test API (thread-safe) ---------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange's current replay time."""
        return self._sync(lambda: self.server.engine.time_ms)

    def advance(self, ms: int) -> int:
        """Feed replay time forward by ``ms`` (every block in between is processed and sent);
        returns the new replay time."""
        return self._call(lambda: self.server.advance(ms))

    def set_time(self, ms: int) -> int:
        return self._call(lambda: self.server.set_time(ms))

    def set_speed(self, speed: float | None) -> None:
        self._sync(lambda: self.server.set_speed(speed))

    def add_account(self, address: str, usdc: float) -> None:
        self._sync(lambda: self.server.engine.venue.add_account(address, usdc))

    def add_agent(self, agent: str, account: str) -> None:
        self._sync(lambda: self.server.engine.venue.add_agent(agent, account))

    def drop_websockets(self, graceful: bool = False) -> int:
        """Close every websocket connection (abruptly by default); returns how many."""
        return self._call(lambda: self.server.hub.drop_all(graceful))

    def stall_websockets(self, seconds: float) -> None:
        """Keep connections open but send nothing for ``seconds`` (frames meanwhile are lost)."""
        self._sync(lambda: self.server.faults.stall_ws(seconds))

    def fail_http(
        self,
        status: int,
        count: int | None = None,
        seconds: float | None = None,
        paths: frozenset[str] = REST_PATHS,
        info_types: frozenset[str] | None = None,
        after: bool = False,
    ) -> None:
        """Answer HTTP ``status`` instead, for ``count`` requests or ``seconds``; only on
        ``paths``, and with ``info_types`` only for /info requests of those types. ``after``:
        serve each request first, then answer ``status`` (the action is done, its answer lost)."""
        self._sync(
            lambda: self.server.faults.fail_http(status, count, seconds, paths, info_types, after)
        )

    def delay_responses(self, ms: int, paths: frozenset[str] = REST_PATHS) -> None:
        """Wait ``ms`` before serving each request to ``paths`` (0 to stop)."""

        def set_delay() -> None:
            self.server.faults.delay_ms = ms
            self.server.faults.delay_paths = paths

        self._sync(set_delay)

    def go_away(self, seconds: float) -> None:
        self._call(lambda: self.server.go_away(seconds))

    def clear_faults(self) -> None:
        self._sync(lambda: self.server.faults.clear())

    def sent_frames(self, since_seq: int = 0, conn_id: int | None = None) -> list[SentFrame]:
        """Websocket frames sent so far (the last ``ws_log_size``), oldest first."""
        return self._sync(lambda: self.server.sent.since(since_seq, conn_id))

    def status(self) -> dict[str, Any]:
        return self._sync(lambda: self.server.status())
