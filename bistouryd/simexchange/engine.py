"""The market engine: steps every coin's feed through replay time, keeps each market's
current state (touch, book, mark, funding), lets the venue react (fills, triggers, funding)
and publishes what a subscriber of the real exchange would receive.

Blocks are processed in time order across coins. A websocket message is only built when
someone subscribed to it, so a replay nobody listens to runs fast. ``allMids`` goes out once
per second of replay time, ``activeAssetCtx`` every three seconds and when funding settles.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bistouryd.exchange.book import BookWalk, book_after, walk_book
from bistouryd.exchange.rules import AssetRules
from bistouryd.market import INTERVAL_MS, AssetCtx, Candle, L2Book
from bistouryd.simexchange import wire
from bistouryd.simexchange.bookgen import BookShape, synthetic_book
from bistouryd.simexchange.clock import ReplayClock
from bistouryd.simexchange.feed import Block, CoinFeed, PublicTrade
from bistouryd.simexchange.venue import Fees, FillsEvent, FundingEvent, OrderUpdate, Venue

SubKey = tuple[str, ...]
CTX_EVERY_MS = 3_000
MIDS_EVERY_MS = 1_000
DAY_MS = 86_400_000
# Notional used for impactPxs (assumed: the docs' "impact notional", not verified here).
IMPACT_NOTIONAL_USD = 20_000.0
RECENT_TRADES = 100
# At max speed the engine yields after this many blocks and waits for subscribers to drain.
YIELD_EVERY = 200


class Publisher(Protocol):
    def wants(self, key: SubKey) -> bool: ...

    def publish(self, key: SubKey, text: str) -> None: ...

    def candle_intervals(self, coin: str) -> list[str]: ...

    async def drained(self) -> None: ...


@dataclass
class CoinState:
    feed: CoinFeed
    rules: AssetRules
    bid_px: float
    ask_px: float
    last_px: float
    book: L2Book | None = None  # the current book, once built; consumed by user orders
    recorded: L2Book | None = None
    recent: deque[PublicTrade] = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))
    funding_rate: float = 0.0
    premium: float | None = None
    # Synthetic: 60% of the coin's last day of volume when first asked for (HyperLiquid's BTC
    # open interest was of that order in mid-2025), then a slow random walk.
    open_interest_sz: float = 0.0
    ts_ms: int = 0


class Engine:
    def __init__(
        self,
        feeds: Sequence[CoinFeed],
        clock: ReplayClock,
        publisher: Publisher,
        fees: Fees,
        shape: BookShape,
        seed: int,
        start_ms: int,
    ) -> None:
        self.feeds = list(feeds)
        self.clock = clock
        self.publisher = publisher
        self.shape = shape
        self.seed = seed
        self.time_ms = start_ms
        self.coins: dict[str, CoinState] = {}
        for feed in self.feeds:
            bid, ask = feed.bid_px, feed.ask_px
            state = CoinState(feed, feed.rules, bid, ask, (bid + ask) / 2, ts_ms=start_ms)
            settled = feed.funding_history(start_ms - DAY_MS, start_ms)
            if settled:
                state.funding_rate, state.premium = settled[-1].funding_rate, settled[-1].premium
            self.coins[feed.rules.name] = state
        self.rules = [f.rules for f in self.feeds]
        self.venue = Venue(self.rules, self, fees, lambda: self.time_ms)
        self._heap: list[tuple[int, int]] = []
        for i, feed in enumerate(self.feeds):
            nxt = feed.next_ts_ms
            if nxt is not None:
                heapq.heappush(self._heap, (nxt, i))
        self._lock = asyncio.Lock()
        self._mids_second = start_ms // MIDS_EVERY_MS
        self._oi_rng = random.Random(f"{seed}:open-interest")

    @property
    def finished(self) -> bool:
        return not self._heap

    # -- stepping ---------------------------------------------------------------------------

    async def advance_to(self, target_ms: int) -> int:
        """Process every block ending at or before ``target_ms``; returns how many."""
        done = 0
        async with self._lock:
            while self._heap and self._heap[0][0] <= target_ms:
                ts, i = heapq.heappop(self._heap)
                if ts // MIDS_EVERY_MS != self._mids_second:
                    self._publish_mids()
                    self._mids_second = ts // MIDS_EVERY_MS
                feed = self.feeds[i]
                self._process(feed.next_block())
                nxt = feed.next_ts_ms
                if nxt is not None:
                    heapq.heappush(self._heap, (nxt, i))
                done += 1
                if done % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                    if self.clock.is_max:
                        await self.publisher.drained()
            self.time_ms = max(self.time_ms, target_ms)
        return done

    def _process(self, block: Block) -> None:
        state = self.coins[block.coin]
        coin = block.coin
        self.time_ms = max(self.time_ms, block.ts_ms)
        previous_ts = state.ts_ms
        state.ts_ms = block.ts_ms
        state.bid_px, state.ask_px = block.bid_px, block.ask_px
        state.recorded = block.recorded_book
        state.book = None
        if block.trades:
            state.last_px = block.trades[-1].px
            state.recent.extend(block.trades)
            self.venue.on_trades(coin, block.trades)
        self.venue.on_market(coin, state.bid_px, state.ask_px, self.mark_px(coin), block.ts_ms)
        if block.funding is not None:
            state.funding_rate = block.funding.funding_rate
            state.premium = block.funding.premium
            funding = block.funding
            self.venue.on_funding(coin, funding.funding_rate, state.last_px, funding.ts_ms)
        self._publish_market(state, block, previous_ts)
        self.publish_user_events()

    # -- MarketView (for the venue) ---------------------------------------------------------

    def book(self, coin: str) -> L2Book:
        state = self.coins[coin]
        if state.book is None:
            if state.recorded is not None:
                state.book = state.recorded
            else:
                rng = random.Random(f"{self.seed}:{coin}:book:{state.ts_ms}")
                state.book = synthetic_book(
                    coin, state.ts_ms, state.bid_px, state.ask_px, self.shape, state.rules, rng
                )
        return state.book

    def mark_px(self, coin: str) -> float:
        state = self.coins[coin]
        return (state.bid_px + state.ask_px) / 2

    def take(self, coin: str, is_buy: bool, walk: BookWalk) -> None:
        self.coins[coin].book = book_after(self.book(coin), is_buy, walk)

    # -- what the info endpoint serves ------------------------------------------------------

    def mids(self) -> dict[str, str]:
        return {c: wire.mid_str(self.mark_px(c), s.rules) for c, s in self.coins.items()}

    def candles(self, coin: str, interval_ms: int, start_ms: int, end_ms: int) -> list[Candle]:
        feed = self.coins[coin].feed
        return feed.candles.query(interval_ms, start_ms, end_ms, feed.time_ms, feed.partial_bar())

    def ctx(self, coin: str) -> AssetCtx:
        """The asset context now: funding is the last settled rate (no lookahead)."""
        state = self.coins[coin]
        feed = state.feed
        base = feed.candles.base_interval_ms
        now = feed.time_ms
        day = feed.candles.query(base, now - DAY_MS, now, now, feed.partial_bar())
        book = self.book(coin)
        mid = book.mid_px
        mark = self.mark_px(coin)
        if not state.open_interest_sz:
            volume = math.fsum(b.volume_sz for b in day)
            state.open_interest_sz = round(0.6 * volume, state.rules.sz_decimals) or 1.0
        impact = IMPACT_NOTIONAL_USD / mark
        bid_walk = walk_book(book, impact, False)
        ask_walk = walk_book(book, impact, True)
        return AssetCtx.model_construct(
            coin=coin,
            ts_ms=now,
            funding_rate=state.funding_rate,
            open_interest_sz=state.open_interest_sz,
            mark_px=mark,
            oracle_px=state.last_px,
            mid_px=mid,
            premium=state.premium if state.premium is not None else (mark / state.last_px - 1),
            prev_day_px=day[0].open_px if day else state.last_px,
            day_ntl_vlm_usd=math.fsum(b.volume_sz * b.close_px for b in day),
            impact_bid_px=_full_avg(bid_walk),
            impact_ask_px=_full_avg(ask_walk),
        )

    def recent_trades(self, coin: str) -> list[PublicTrade]:
        return list(self.coins[coin].recent)

    # -- publishing -------------------------------------------------------------------------

    def _publish_market(self, state: CoinState, block: Block, previous_ts: int) -> None:
        pub = self.publisher
        coin, rules = block.coin, state.rules
        if block.trades and pub.wants(("trades", coin)):
            data = [wire.trade_json(t, rules) for t in block.trades]
            pub.publish(("trades", coin), wire.ws_text("trades", data))
        if pub.wants(("l2Book", coin)):
            book = wire.book_json(self.book(coin), rules)
            pub.publish(("l2Book", coin), wire.ws_text("l2Book", book))
        if block.trades:
            last = block.trades[-1].ts_ms
            feed = state.feed
            for name in pub.candle_intervals(coin):
                step = INTERVAL_MS[name]
                bars = feed.candles.query(step, last, last, feed.time_ms, feed.partial_bar())
                if bars:
                    pub.publish(
                        ("candle", coin, name), wire.ws_text("candle", wire.candle_json(bars[-1]))
                    )
        new_ctx_period = block.ts_ms // CTX_EVERY_MS != previous_ts // CTX_EVERY_MS
        if new_ctx_period:
            state.open_interest_sz *= math.exp(self._oi_rng.gauss(0.0, 0.0005))
        if (new_ctx_period or block.funding is not None) and pub.wants(("activeAssetCtx", coin)):
            ctx = {"coin": coin, "ctx": wire.ctx_json(self.ctx(coin), rules)}
            pub.publish(("activeAssetCtx", coin), wire.ws_text("activeAssetCtx", ctx))

    def _publish_mids(self) -> None:
        if self.publisher.wants(("allMids",)):
            self.publisher.publish(("allMids",), wire.ws_text("allMids", {"mids": self.mids()}))

    def publish_user_events(self) -> None:
        """Send the venue's pending fills, order updates and funding to their subscribers."""
        pub = self.publisher
        for event in self.venue.drain_events():
            user = event.user
            if isinstance(event, FillsEvent):
                fills = [wire.fill_json(f, self.coins[f.coin].rules) for f in event.fills]
                if pub.wants(("userFills", user)):
                    text = wire.ws_text("userFills", {"user": user, "fills": fills})
                    pub.publish(("userFills", user), text)
                if pub.wants(("userEvents", user)):
                    pub.publish(("userEvents", user), wire.ws_text("user", {"fills": fills}))
            elif isinstance(event, OrderUpdate):
                if pub.wants(("orderUpdates", user)):
                    rules = self.coins[event.order.coin].rules
                    data = [wire.order_update_json(event.order, rules)]
                    pub.publish(("orderUpdates", user), wire.ws_text("orderUpdates", data))
            elif isinstance(event, FundingEvent) and pub.wants(("userEvents", user)):
                rules = self.coins[event.payment.coin].rules
                funding = {"funding": wire.funding_event_json(event.payment, rules)}
                pub.publish(("userEvents", user), wire.ws_text("user", funding))


def _full_avg(walk: BookWalk) -> float | None:
    return walk.avg_px if walk.remaining_sz == 0 else None
