"""Replay of recorded HyperLiquid data, one ``ReplayFeed`` per coin.

Recorded: candles (every interval found), settled funding, l2Book snapshots and public trades
where the folder has them. Generated where the data is thin: the public tape inside each base
bar (``pathgen``) and, when no recorded book is fresh, a book around the last trade
(``bookgen``, built by the engine from the touch given here). Everything is deterministic for a
given seed and start time. The exchange advances in one-second steps (``STEP_MS``).
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass

from bistouryd.exchange.rules import AssetRules, round_px, tick_size
from bistouryd.market import Candle, FundingRate, L2Book
from bistouryd.simexchange.candles import INTERVAL_NAMES, CandleSeries
from bistouryd.simexchange.datafiles import DataError, RecordedData
from bistouryd.simexchange.feed import AggressorSide, Block, PublicTrade, Source
from bistouryd.simexchange.pathgen import bar_path, estimate_trades_n

STEP_MS = 1000
DAY_MS = 86_400_000
# A recorded book older than this is stale; a synthetic one is served instead.
RECORDED_BOOK_MAX_AGE_MS = 5_000
FUNDING_PAGE = 500
# Assumed for coins that the folder's meta does not list (or when it has no meta).
DEFAULT_MAX_LEVERAGE = 20
_TRADER_POOL = tuple(
    "0x" + hashlib.sha256(f"bistoury-sim-trader-{k}".encode()).hexdigest()[:40] for k in range(64)
)


@dataclass(frozen=True)
class ReplayPlan:
    feeds: list[ReplayFeed]
    start_ms: int
    end_ms: int
    shape_only: list[str]  # coins with a single book snapshot: used to shape synthetic books


def plan_replay(data: RecordedData, seed: int, start_ms: int | None) -> ReplayPlan:
    """Feeds for every coin with candles or a series of books, starting at ``start_ms``
    (default: one day into the data, or its middle if shorter, so backfill has history)."""
    meta = {r.name: r for r in data.meta}
    coins = [c for c in data.candles] + [
        c for c, books in data.books.items() if c not in data.candles and len(books) > 1
    ]
    if not coins:
        raise DataError(
            f"nothing to replay in {data.folder}: no candles and no coin with two or more l2Book "
            "snapshots",
            "add candleSnapshot arrays or an l2Book recording (NDJSON) for at least one coin",
        )
    ordered = [r.name for r in data.meta if r.name in coins] + sorted(
        c for c in coins if c not in meta
    )
    rules = [
        AssetRules(c, i, meta[c].sz_decimals, meta[c].max_leverage)
        if c in meta
        else AssetRules(c, i, _infer_sz_decimals(data, c), DEFAULT_MAX_LEVERAGE)
        for i, c in enumerate(ordered)
    ]
    spans = [_span(data, r.name) for r in rules]
    first = max(s for s, _ in spans)
    last_start = min(e for _, e in spans)
    end = max(e for _, e in spans)
    if start_ms is None:
        start_ms = min(first + DAY_MS, first + (last_start - first) // 2)
    elif not first <= start_ms <= end:
        raise DataError(
            f"--start {start_ms} is outside the data, which runs from {first} to {end} (ms)",
            "pick a start time inside the data, or leave --start out",
        )
    start_ms -= start_ms % STEP_MS
    feeds = [ReplayFeed(r, data, seed, start_ms) for r in rules]
    shape_only = sorted(c for c in data.books if c not in ordered)
    return ReplayPlan(feeds=feeds, start_ms=start_ms, end_ms=end, shape_only=shape_only)


def _span(data: RecordedData, coin: str) -> tuple[int, int]:
    by_interval = data.candles.get(coin)
    if by_interval:
        base = min(by_interval)
        bars = by_interval[base]
        return bars[0].open_ts_ms, bars[-1].open_ts_ms + base
    books = data.books[coin]
    return books[0].ts_ms, books[-1].ts_ms


def _infer_sz_decimals(data: RecordedData, coin: str) -> int:
    """Lot decimals for a coin missing from meta: the most decimals any recorded size has."""
    sizes = [b.volume_sz for bars in data.candles.get(coin, {}).values() for b in bars]
    sizes += [sz for book in data.books.get(coin, []) for sz in book.bid_sz + book.ask_sz]
    return max((_decimals(x) for x in sizes), default=2)


def _decimals(x: float) -> int:
    text = repr(x)
    return 0 if "e" in text or "." not in text else len(text.split(".")[1].rstrip("0"))


class ReplayFeed:
    def __init__(self, rules: AssetRules, data: RecordedData, seed: int, start_ms: int) -> None:
        coin = rules.name
        self.rules = rules
        self._seed = seed
        by_interval = data.candles.get(coin, {})
        base = min(by_interval) if by_interval else 60_000
        self.candles = CandleSeries(coin, rules.sz_decimals, base)
        for interval, bars in by_interval.items():
            self.candles.add(interval, [_with_count(b) for b in bars])
        self._bars = self.candles.bars(base)
        self._opens = [b.open_ts_ms for b in self._bars]
        self._base = base
        self._funding = data.funding.get(coin, [])
        self._funding_ts = [r.ts_ms for r in self._funding]
        self._books = data.books.get(coin, [])
        self._book_ts = [b.ts_ms for b in self._books]
        self._recorded_trades = data.trades.get(coin, [])
        self._recorded_trade_ts = [t.ts_ms for t in self._recorded_trades]
        self._path_cache: OrderedDict[int, tuple[list[PublicTrade], bool]] = OrderedDict()
        self._touch_rng = random.Random(f"{seed}:{coin}:touch")
        self._end = _span(data, coin)[1] if (by_interval or len(self._books) > 1) else start_ms
        self._time = start_ms
        self.bid_px, self.ask_px = self._initial_touch()

    # -- CoinFeed ---------------------------------------------------------------------------

    @property
    def time_ms(self) -> int:
        return self._time

    @property
    def next_ts_ms(self) -> int | None:
        return self._time + STEP_MS if self._time < self._end else None

    def next_block(self) -> Block:
        a, b = self._time, self._time + STEP_MS
        trades = tuple(self._trades_between(a, b))
        i = bisect_left(self._funding_ts, a)
        funding = self._funding[i] if i < len(self._funding) and self._funding_ts[i] < b else None
        book = self._fresh_book(b)
        if book is not None:
            self.bid_px, self.ask_px = book.bid_px[0], book.ask_px[0]
        elif trades:
            self.bid_px, self.ask_px = self._touch(trades[-1].px, trades[-1].side)
        self._time = b
        return Block(self.rules.name, b, trades, self.bid_px, self.ask_px, book, funding)

    def partial_bar(self) -> Candle | None:
        i = bisect_right(self._opens, self._time) - 1
        if i < 0 or self._time >= self._opens[i] + self._base:
            return None
        trades, generated = self._bar_trades(i)
        done = [t for t in trades if t.ts_ms < self._time]
        if not done:
            return None
        bar = self._bars[i]
        n = len(done)
        if generated and bar.trades_n:
            n = max(n, round(bar.trades_n * len(done) / len(trades)))
        return Candle.model_construct(
            coin=bar.coin,
            interval=bar.interval,
            open_ts_ms=bar.open_ts_ms,
            close_ts_ms=bar.close_ts_ms,
            open_px=done[0].px,
            high_px=max(t.px for t in done),
            low_px=min(t.px for t in done),
            close_px=done[-1].px,
            volume_sz=round(sum(t.sz for t in done), self.rules.sz_decimals),
            trades_n=n,
        )

    def funding_history(self, start_ms: int, end_ms: int) -> list[FundingRate]:
        lo = bisect_left(self._funding_ts, start_ms)
        hi = bisect_right(self._funding_ts, min(end_ms, self._time - 1))
        return self._funding[lo : min(hi, lo + FUNDING_PAGE)]

    def sources(self) -> list[Source]:
        coin = self.rules.name
        names = ", ".join(INTERVAL_NAMES[i] for i in self.candles.intervals_ms)
        found = []
        if self._bars:
            found.append(
                Source(
                    coin,
                    "candle",
                    "recorded",
                    f"OHLCV of {names} bars; coarser intervals aggregated from them; the open bar "
                    "built from the generated trades; n estimated from notional where the data "
                    "lacks it",
                )
            )
        span = (self._time, self._end) if not self._bars else (self._opens[0], self._end)
        in_window = sum(1 for t in self._book_ts if span[0] <= t <= span[1])
        if self._bars:
            recorded = sum(1 for t in self._recorded_trade_ts if span[0] <= t < span[1])
            found.append(
                Source(
                    coin,
                    "trades",
                    "synthetic",
                    f"generated inside each {INTERVAL_NAMES[self._base]} bar (o -> nearer extreme "
                    "-> other extreme -> c on the tick grid, sizes summing to the bar volume)"
                    + (
                        f"; {recorded} recorded trades replace them in their bars"
                        if recorded
                        else ""
                    ),
                )
            )
        else:
            found.append(
                Source(coin, "trades", "recorded", f"{len(self._recorded_trades)} recorded trades")
            )
        found.append(
            Source(
                coin,
                "l2Book",
                "recorded" if in_window else "synthetic",
                f"{in_window} recorded snapshots in the replay window, each served while under "
                f"{RECORDED_BOOK_MAX_AGE_MS} ms old; otherwise 20 levels per side generated "
                "around the last trade, shaped like the recorded snapshots",
            )
        )
        found.append(
            Source(
                coin,
                "fundingHistory",
                "recorded" if self._funding else "synthetic",
                f"{len(self._funding)} settled hourly rates"
                if self._funding
                else "none recorded: no funding is settled",
            )
        )
        found.append(
            Source(
                coin,
                "activeAssetCtx",
                "synthetic",
                "funding = last recorded settled rate; prevDayPx and dayNtlVlm from the candles; "
                "markPx/midPx from the book; oraclePx = last trade; openInterest generated",
            )
        )
        return found

    # -- internals --------------------------------------------------------------------------

    def _trades_between(self, a: int, b: int) -> list[PublicTrade]:
        if not self._bars:
            lo = bisect_left(self._recorded_trade_ts, a)
            return self._recorded_trades[lo : bisect_left(self._recorded_trade_ts, b)]
        found: list[PublicTrade] = []
        i = max(0, bisect_right(self._opens, a) - 1)
        while i < len(self._bars) and self._opens[i] < b:
            if self._opens[i] + self._base > a:
                trades, _ = self._bar_trades(i)
                found.extend(t for t in trades if a <= t.ts_ms < b)
            i += 1
        return found

    def _bar_trades(self, i: int) -> tuple[list[PublicTrade], bool]:
        """The trades of base bar ``i`` and whether they were generated."""
        cached = self._path_cache.get(i)
        if cached is not None:
            self._path_cache.move_to_end(i)
            return cached
        bar = self._bars[i]
        lo = bisect_left(self._recorded_trade_ts, bar.open_ts_ms)
        hi = bisect_left(self._recorded_trade_ts, bar.open_ts_ms + self._base)
        recorded = hi > lo
        result = (self._recorded_trades[lo:hi] if recorded else self._generate(bar), not recorded)
        self._path_cache[i] = result
        if len(self._path_cache) > 4:
            self._path_cache.popitem(last=False)
        return result

    def _generate(self, bar: Candle) -> list[PublicTrade]:
        coin = self.rules.name
        rng = random.Random(f"{self._seed}:{coin}:{bar.open_ts_ms}")
        users = random.Random(f"{self._seed}:{coin}:{bar.open_ts_ms}:users")
        lot = 10.0**-self.rules.sz_decimals
        out = []
        for k, step in enumerate(bar_path(bar, self.rules, rng)):
            tid = (bar.open_ts_ms * 100 + self.rules.asset % 100) * 1000 + k
            buyer, seller = users.sample(_TRADER_POOL, 2)
            out.append(
                PublicTrade(
                    coin=coin,
                    ts_ms=step.ts_ms,
                    px=step.px,
                    sz=round(step.sz_lots * lot, self.rules.sz_decimals),
                    side=step.side,
                    tid=tid,
                    hash="0x" + hashlib.sha256(f"{coin}:{tid}".encode()).hexdigest(),
                    users=(buyer, seller),
                )
            )
        return out

    def _fresh_book(self, at_ms: int) -> L2Book | None:
        i = bisect_right(self._book_ts, at_ms) - 1
        if i < 0 or at_ms - self._book_ts[i] > RECORDED_BOOK_MAX_AGE_MS:
            return None
        book = self._books[i]
        return book if book.mid_px is not None else None

    def _touch(self, px: float, side: AggressorSide) -> tuple[float, float]:
        """Best bid/ask right after a trade at ``px``: the aggressor took the touch there."""
        r = self._touch_rng.random()
        spread = 1 if r < 0.8 else 2 if r < 0.95 else 3
        tick = float(tick_size(px, self.rules.sz_decimals))
        d = self.rules.sz_decimals
        if side == "B":
            return round_px(px - spread * tick, d, is_buy=True), px
        return px, round_px(px + spread * tick, d, is_buy=False)

    def _initial_touch(self) -> tuple[float, float]:
        book = self._fresh_book(self._time)
        if book is not None:
            return book.bid_px[0], book.ask_px[0]
        if self._bars:
            i = max(0, bisect_right(self._opens, self._time - 1) - 1)
            trades, _ = self._bar_trades(i)
            before = [t for t in trades if t.ts_ms < self._time]
            if before:
                return self._touch(before[-1].px, before[-1].side)
            bar = self._bars[i - 1] if i > 0 and self._opens[i] >= self._time else self._bars[i]
            return self._touch(bar.close_px, "B" if bar.close_px >= bar.open_px else "A")
        j = max(0, bisect_right(self._book_ts, self._time) - 1)
        return self._books[j].bid_px[0], self._books[j].ask_px[0]


def _with_count(bar: Candle) -> Candle:
    if bar.trades_n is not None:
        return bar
    return bar.model_copy(update={"trades_n": estimate_trades_n(bar.volume_sz, bar.close_px)})
