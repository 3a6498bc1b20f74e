"""The simulated market as a stream of typed events, without sockets.

The same engine the server runs, with its websocket frames parsed into ``md.*`` events
instead of sent: first the history a collector would backfill (closed candles of every
interval, settled funding), then each one-second step's trades, book, forming candles and
asset contexts, and the funding settled in it. The strategy tests and benchmarks use it
to get what the collector would publish from the bundled real data (or the synthetic
firehose) quickly and deterministically; books and public trades inside a bar are
generated, as in the server (see ``replay``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import orjson

from bistouryd.market import INTERVAL_MS, MarketEvent, parse_ws_message
from bistouryd.simexchange.config import SimConfig
from bistouryd.simexchange.replay import STEP_MS
from bistouryd.simexchange.server import SimServer
from bistouryd.simexchange.ws import SubKey

CHANNELS = ("trades", "l2Book", "activeAssetCtx")


class _Capture:
    """Stands in for the websocket hub: every market channel is wanted, every frame parsed."""

    def __init__(self, intervals: tuple[str, ...], now_ms: list[int]):
        self.intervals = list(intervals)
        self.now_ms = now_ms
        self.events: list[MarketEvent] = []

    def wants(self, key: SubKey) -> bool:
        return key[0] in CHANNELS

    def publish(self, key: SubKey, text: str) -> None:
        self.events += parse_ws_message(orjson.loads(text), self.now_ms[0])

    def candle_intervals(self, coin: str) -> list[str]:
        return self.intervals

    async def drained(self) -> None:
        return None


def market_tape(
    config: SimConfig,
    duration_ms: int,
    *,
    intervals: tuple[str, ...] = ("1m", "5m", "15m"),
    history_ms: int = 6 * 3_600_000,
    funding_history_ms: int = 7 * 86_400_000,
) -> Iterator[MarketEvent]:
    """Events of every coin of ``config`` from its start for ``duration_ms`` of replay time.

    ``config.port``, ``speed`` and the websocket settings are ignored: nothing listens.
    """
    server = SimServer(replace(config, speed=None))
    engine = server.engine
    now_ms = [server.start_ms]
    capture = _Capture(intervals, now_ms)
    engine.publisher = capture
    start = server.start_ms
    history: list[MarketEvent] = []
    for coin in engine.coins:
        for name in intervals:
            bars = engine.candles(coin, INTERVAL_MS[name], start - history_ms, start)
            history += [b for b in bars if b.close_ts_ms < start]
        history += engine.coins[coin].feed.funding_history(start - funding_history_ms, start)
    yield from sorted(history, key=_time)
    loop = asyncio.new_event_loop()
    try:
        t = start
        end = start + duration_ms
        while t < end and not engine.finished:
            nxt = t + STEP_MS
            now_ms[0] = nxt
            loop.run_until_complete(engine.advance_to(nxt))
            for state in engine.coins.values():
                capture.events += state.feed.funding_history(t + 1, nxt)
            yield from capture.events
            capture.events = []
            t = nxt
    finally:
        loop.close()


def _time(event: MarketEvent) -> int:
    """When an event of the backfill became known: a closed bar at its close."""
    return event.close_ts_ms if hasattr(event, "close_ts_ms") else getattr(event, "ts_ms", 0)
