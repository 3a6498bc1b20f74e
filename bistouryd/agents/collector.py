"""The collector: HyperLiquid market data onto the bus.

It subscribes through the official SDK to candles (``collector.intervals``), the L2 book,
trades and the asset context of every pair, and publishes each websocket frame twice:
as received (``raw.*``, for the raw store) and parsed into the typed models of
``bistouryd.market`` (``md.*``). After every (re)connection it fetches the candles it
may have missed with ``candleSnapshot`` so the stored series has no gaps, and it polls
``fundingHistory``. A dropped or silent connection (no frame for
``collector.stale_after_s``) is replaced, with backoff and jitter, and reported.

It collects in the modes that need live data (collect, paper-live, live) unless
collection is paused; pairs come from ``trading.pairs`` or from ``bistoury collect
--pairs``, and a change is applied to the open connection without reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from bistouryd.agents.base import Agent, run
from bistouryd.events import SysEvent
from bistouryd.exchange.hl_info import MarketFeed
from bistouryd.exchange.subscriptions import (
    CandleCursor,
    ExchangeClock,
    Subscription,
    subscriptions_for,
)
from bistouryd.market import (
    Candle,
    FundingRate,
    L2Book,
    MarketDataError,
    MarketEvent,
    RawMessage,
    Trades,
    parse_candle,
    parse_funding,
    parse_ws_message,
    ws_channel_coin,
)
from bistouryd.supervision import MetricSample, sample

log = logging.getLogger(__name__)

_E = TypeVar("_E")
COLLECTING_MODES = ("collect", "paper-live", "live")
FIRST_DATA_MIN_WAIT_S = 2.0
WATCH_EVERY_S = 0.25
YIELD_EVERY = 200
HEALTHY_AFTER_S = 60.0
BACKFILL_RETRY_S = 5.0
ALERT_EVERY_S = 60.0


@dataclass
class _Channel:
    """Counters of one (coin, channel) stream."""

    messages: int = 0
    last_wall_s: float = 0.0
    counted_at_heartbeat: int = 0
    rate_per_s: float = 0.0


class CollectorAgent(Agent):
    name = "collector"

    async def start(self) -> None:
        logging.getLogger("websocket").setLevel(logging.WARNING)  # it logs every connect at INFO
        self.loop = asyncio.get_running_loop()
        # Frames from the SDK's websocket thread; deque appends and pops are thread-safe.
        self.inbox: deque[tuple[int, str]] = deque()
        self._inbox_ready = asyncio.Event()
        self._wake_pending = False
        self.clock = ExchangeClock()
        self.cursor = CandleCursor()
        self.channels: dict[tuple[str, str], _Channel] = {}
        self.feed: MarketFeed | None = None
        self.subscribed: set[Subscription] = set()
        self.changed = asyncio.Event()
        self.reconnects = 0
        self.backfilled = 0
        self.dropped = 0
        self.parse_errors = 0
        self.connected_since: float | None = None
        self.last_connection_s = 0.0
        # The first bar each (coin, interval) stream delivered on the current connection:
        # a backfill must not replace it, or anything newer, with an older REST copy.
        self.live_first_open: dict[tuple[str, str], int] = {}
        # Backfills that failed on this connection, with the bars seen before it.
        self._backfill_retry: dict[Subscription, CandleCursor] = {}
        self._data_on_connection = False
        self.last_frame_mono = 0.0
        self._last_alert: dict[str, float] = {}
        self._last_heartbeat_mono = time.monotonic()
        self._funding_since: dict[str, int] = {}
        self.spawn(self._process_frames(), "frames")
        self.spawn(self._keep_connected(), "connection")
        self.spawn(self._poll_funding(), "funding")

    # ---- what to collect ---------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.mode in COLLECTING_MODES and "collect" not in self.paused

    @property
    def wanted(self) -> set[Subscription]:
        return set(subscriptions_for(self.pairs, self.config.collector)) if self.active else set()

    async def on_mode(self) -> None:
        self.changed.set()

    async def on_config(self, changed: list[str]) -> None:
        if any(c.startswith(("collector.", "trading.pairs", "exchange.")) for c in changed):
            self.changed.set()

    # ---- the connection ------------------------------------------------------------

    async def _keep_connected(self) -> None:
        backoff_s = 1.0
        while True:
            if not self.active:
                await self.changed.wait()
                self.changed.clear()
                continue
            reason = await self._one_connection()
            if reason is None or self.last_connection_s > HEALTHY_AFTER_S:
                backoff_s = 1.0  # closed on purpose, or it had been healthy: start over
            if reason is None:
                continue
            self.reconnects += 1
            what = "lost" if self._data_on_connection else "failed"
            await self._alert(
                "connection",
                f"Connection to HyperLiquid {what}: {reason}; retrying",
                f"check the network and that {self.config.exchange.api_url} is reachable "
                "(exchange.network / exchange.base_url); it retries by itself",
            )
            delay = random.uniform(0.5, 1.0) * backoff_s
            backoff_s = min(backoff_s * 2, self.config.collector.reconnect_max_backoff_s)
            await asyncio.sleep(delay)

    async def _one_connection(self) -> str | None:
        """Run one websocket connection; return why it ended (None: on purpose)."""
        url = self.config.exchange.api_url
        closed = asyncio.Event()
        self._data_on_connection = False
        self.last_connection_s = 0.0

        def on_closed() -> None:  # on the SDK's thread
            self.loop.call_soon_threadsafe(closed.set)

        try:
            feed = await asyncio.to_thread(
                MarketFeed, url, self._on_frame, self._on_rest, on_closed
            )
        except Exception as exc:
            return f"cannot reach {url}: {exc}"
        self.feed = feed
        self.subscribed = set()
        self.connected_since = None
        seen_before = self.cursor.snapshot()
        self.live_first_open = {}
        self._backfill_retry = {}
        try:
            feed.start()
            self._sync_subscriptions()
            self.last_frame_mono = time.monotonic()
            if not await self._wait_first_data(closed):
                return "no market data on the new connection"
            self.connected_since = time.monotonic()
            log.info("connected to %s; collecting %s", url, ", ".join(self.pairs))
            await self._backfill_candles(sorted(self.subscribed), seen_before)
            return await self._watch(closed, url)
        finally:
            if self.connected_since is not None:
                self.last_connection_s = time.monotonic() - self.connected_since
            self.feed = None
            self.connected_since = None
            await asyncio.to_thread(feed.close)

    async def _wait_first_data(self, closed: asyncio.Event) -> bool:
        """Wait for market data on this connection: the exchange's clock then comes from
        fresh data, so the backfill reaches up to what the websocket now delivers."""
        deadline = time.monotonic() + max(
            self.config.collector.stale_after_s, FIRST_DATA_MIN_WAIT_S
        )
        while not self._data_on_connection:
            if closed.is_set() or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _watch(self, closed: asyncio.Event, url: str) -> str | None:
        stale_s = self.config.collector.stale_after_s
        retry_at = time.monotonic() + BACKFILL_RETRY_S
        while True:
            if self._backfill_retry and time.monotonic() >= retry_at:
                retry_at = time.monotonic() + BACKFILL_RETRY_S
                for sub, seen in list(self._backfill_retry.items()):
                    await self._backfill_candles([sub], seen)
            if closed.is_set():
                return "the websocket closed"
            silent_s = time.monotonic() - self.last_frame_mono
            if silent_s > stale_s:
                return f"no message for {silent_s:.1f} s (stale)"
            if not self.active or self.config.exchange.api_url != url:
                return None
            if self.changed.is_set():
                self.changed.clear()
                added = self._sync_subscriptions()
                if added:
                    await self._backfill_candles(added, CandleCursor())
            await asyncio.sleep(WATCH_EVERY_S)

    def _sync_subscriptions(self) -> list[Subscription]:
        """Subscribe to what is wanted and not yet subscribed, unsubscribe the rest."""
        assert self.feed is not None
        wanted = self.wanted
        added = sorted(wanted - self.subscribed)
        for sub in added:
            self.feed.subscribe(sub.wire())
        for sub in sorted(self.subscribed - wanted):
            self.feed.unsubscribe(sub.wire())
            self.cursor.forget(sub.coin)
        self.subscribed = wanted
        return added

    # ---- incoming data (called on the SDK's threads: hand over only) -------------------

    def _on_frame(self, received_ms: int, text: str) -> None:
        """On the SDK's thread: queue the frame; wake the loop only if it is not awake."""
        if len(self.inbox) >= self.config.collector.queue_max:
            self.dropped += 1
            return
        self.inbox.append((received_ms, text))
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._inbox_ready.set)

    def _on_rest(self, received_ms: int, request: dict[str, Any], text: str) -> None:
        raw = RawMessage(
            received_ts_ms=received_ms,
            source="rest",
            channel=str(request.get("type", "")),
            coin=_request_coin(request),
            text=text,
        )
        self.loop.call_soon_threadsafe(self.store.push, raw.topic, raw)

    async def _process_frames(self) -> None:
        """Drain the inbox in one go per wake-up (a burst costs one loop iteration)."""
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            self._wake_pending = False
            done = 0
            while self.inbox:
                self._handle_frame(*self.inbox.popleft())
                done += 1
                if done % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let heartbeats and control through

    def _handle_frame(self, received_ms: int, text: str) -> None:
        self.last_frame_mono = time.monotonic()
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = None
        channel, coin = ws_channel_coin(msg) if isinstance(msg, dict) else ("text", None)
        raw = RawMessage(
            received_ts_ms=received_ms, source="ws", channel=channel, coin=coin, text=text
        )
        self.store.push(raw.topic, raw)
        if not isinstance(msg, dict):
            return
        try:
            # activeAssetCtx has no time stamp: give it the exchange's time, not ours.
            events = parse_ws_message(msg, self.clock.now_ms() or received_ms)
        except MarketDataError as exc:
            self.parse_errors += 1
            log.warning("skipped a malformed %s message: %s", channel, exc)
            return
        for event in events:
            self._data_on_connection = True
            if isinstance(event, Candle):
                self.live_first_open.setdefault((event.coin, event.interval), event.open_ts_ms)
            self._publish_event(event)

    def _publish_event(self, event: MarketEvent) -> None:
        if isinstance(event, Candle):
            self.cursor.observe(event)
            self.clock.observe(event.open_ts_ms)
            key = (event.coin, f"candle.{event.interval}")
        elif isinstance(event, FundingRate):
            key = (event.coin, "fundingHistory")
        elif isinstance(event, Trades):
            self.clock.observe(event.trades[-1].ts_ms)
            key = (event.coin, "trades")
        else:
            self.clock.observe(event.ts_ms)
            key = (event.coin, "l2Book" if isinstance(event, L2Book) else "activeAssetCtx")
        stream = self.channels.setdefault(key, _Channel())
        stream.messages += 1
        stream.last_wall_s = time.time()
        self.store.push(event.topic, event)
        self.publisher.send(event.topic, event)

    # ---- REST: candle backfill and funding ------------------------------------------

    async def _backfill_candles(self, subs: list[Subscription], seen: CandleCursor) -> None:
        """Fetch the bars of ``subs`` from the last one in ``seen`` (or the configured
        window) up to the exchange's now, and publish them like websocket candles."""
        now_ms = self.clock.now_ms()
        if now_ms is None or self.feed is None:
            return
        window_ms = self.config.collector.backfill_minutes * 60_000
        feed = self.feed
        for sub in subs:
            if sub.kind != "candle" or sub.interval is None:
                continue
            start_ms, end_ms = seen.backfill_range(sub.coin, sub.interval, now_ms, window_ms)
            try:
                rows = await asyncio.to_thread(
                    feed.candles, sub.coin, sub.interval, start_ms, end_ms
                )
            except Exception as exc:
                self._backfill_retry[sub] = seen
                await self._alert(
                    "backfill",
                    f"Candle backfill of {sub.coin} {sub.interval} failed: {exc}",
                    f"it is retried every {BACKFILL_RETRY_S:.0f} s",
                )
                continue
            self._backfill_retry.pop(sub, None)
            new = 0
            for candle in self._parsed(rows, parse_candle):
                live = self.live_first_open.get((candle.coin, candle.interval))
                if live is not None and candle.open_ts_ms >= live:
                    continue  # the websocket has this bar, and newer values of it
                new += seen.observe(candle)
                self._publish_event(candle)
            self.backfilled += new
            if new:
                log.info("backfilled %d %s %s candles", new, sub.coin, sub.interval)

    def _parsed(self, rows: Any, parse: Callable[[Any], _E]) -> Iterator[_E]:
        """The entries of a REST answer (a JSON list) that parse; the others are counted."""
        for row in rows if isinstance(rows, list) else []:
            try:
                yield parse(row)
            except MarketDataError as exc:
                self.parse_errors += 1
                log.warning("skipped a malformed REST entry: %s", exc)

    async def _poll_funding(self) -> None:
        while True:
            feed, now_ms = self.feed, self.clock.now_ms()
            if feed is not None and now_ms is not None and self.connected_since is not None:
                lookback_ms = self.config.collector.funding_lookback_hours * 3_600_000
                for coin in self.pairs:
                    start_ms = self._funding_since.get(coin, now_ms - lookback_ms)
                    try:
                        rows = await asyncio.to_thread(feed.funding, coin, start_ms)
                    except Exception as exc:
                        log.warning("fundingHistory for %s failed: %s", coin, exc)
                        continue
                    for rate in self._parsed(rows, parse_funding):
                        self._funding_since[coin] = max(
                            self._funding_since.get(coin, 0), rate.ts_ms + 1
                        )
                        self._publish_event(rate)
                await asyncio.sleep(self.config.collector.funding_poll_s)
            else:
                await asyncio.sleep(0.5)

    # ---- reporting -------------------------------------------------------------------

    async def _alert(self, what: str, message: str, hint: str) -> None:
        """Log every time; record a ``sys.alert`` event at most once a minute per ``what``
        (a connection failing in a loop must not flood the events)."""
        log.error("%s\n  → %s", message, hint)
        now = time.monotonic()
        if now - self._last_alert.get(what, -ALERT_EVERY_S) >= ALERT_EVERY_S:
            self._last_alert[what] = now
            await self.report(
                SysEvent(kind="alert", level="error", source=self.name, message=message)
            )

    async def stop(self) -> None:
        if self.feed is not None:
            await asyncio.to_thread(self.feed.close)

    def metrics(self) -> list[MetricSample]:
        now_wall, now_mono = time.time(), time.monotonic()
        elapsed = max(now_mono - self._last_heartbeat_mono, 1e-3)
        self._last_heartbeat_mono = now_mono
        out: list[MetricSample] = []
        for (coin, channel), stream in sorted(self.channels.items()):
            stream.rate_per_s = (stream.messages - stream.counted_at_heartbeat) / elapsed
            stream.counted_at_heartbeat = stream.messages
            labels = {"coin": coin, "channel": channel}
            out += [
                sample(
                    "bistoury_md_messages_total",
                    "counter",
                    "Market-data messages received",
                    stream.messages,
                    **labels,
                ),
                sample(
                    "bistoury_md_last_message_age_seconds",
                    "gauge",
                    "Time since the last message",
                    now_wall - stream.last_wall_s,
                    **labels,
                ),
                sample(
                    "bistoury_md_messages_per_second",
                    "gauge",
                    "Message rate since the previous heartbeat",
                    stream.rate_per_s,
                    **labels,
                ),
            ]
        out += [
            sample(
                "bistoury_ws_reconnects_total",
                "counter",
                "Websocket connections lost and replaced",
                self.reconnects,
            ),
            sample(
                "bistoury_md_backfilled_candles_total",
                "counter",
                "Candles fetched over REST that the websocket had not delivered",
                self.backfilled,
            ),
            sample(
                "bistoury_md_parse_errors_total",
                "counter",
                "Malformed market-data messages skipped",
                self.parse_errors,
            ),
            sample(
                "bistoury_md_dropped_total",
                "counter",
                "Websocket frames dropped because processing fell behind",
                self.dropped,
            ),
            sample(
                "bistoury_md_connected",
                "gauge",
                "1 while the websocket delivers data",
                1.0 if self.connected_since is not None else 0.0,
            ),
        ]
        return out


def _request_coin(request: dict[str, Any]) -> str | None:
    coin = request.get("coin") or (request.get("req") or {}).get("coin")
    return coin if isinstance(coin, str) else None


if __name__ == "__main__":
    run(CollectorAgent)
