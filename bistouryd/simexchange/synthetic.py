"""A seeded random-walk market for any number of coins: for load tests and firehoses.

Each coin updates every ``step_ms`` of replay time (coins staggered across the step): its price
takes a Gaussian step (3% daily volatility), one to three trades print at the touch, 1m candles
build from those trades, and hourly funding settles near the 0.00125%/h baseline. A day of 1m
history is generated before the start so backfill has something to fetch. Everything here is
synthetic and reported as such.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable

from bistouryd.exchange.rules import AssetRules, round_px, tick_size
from bistouryd.market import Candle, FundingRate
from bistouryd.simexchange.candles import MAX_CANDLES, CandleSeries
from bistouryd.simexchange.feed import AggressorSide, Block, PublicTrade, Source
from bistouryd.simexchange.pathgen import estimate_trades_n

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
BAR_MS = 60_000
DAILY_VOLATILITY = 0.03
BASELINE_FUNDING = 0.0000125  # 0.01% per 8 h, the rate seen in recorded data (HYPERLIQUID.md §c)
TRADE_USD = 3000.0
HISTORY_BARS = 1440
FUNDING_PAGE = 500
DEFAULT_MAX_LEVERAGE = 20


def plan_synthetic(
    names: list[str],
    known: dict[str, AssetRules],
    mids: dict[str, float],
    seed: int,
    start_ms: int,
    rate_per_s: float,
) -> list[SyntheticFeed]:
    """One feed per name. A name the bundled meta lists keeps its real lot size and leverage,
    and starts at its recorded mid; others start at a seeded price with lots worth $0.1-$1, as
    on the real exchange. ``rate_per_s`` updates per second are spread over all coins."""
    step_ms = max(1, round(1000 * len(names) / rate_per_s))
    feeds = []
    for i, name in enumerate(names):
        px = mids.get(name) or 10 ** random.Random(f"{seed}:{name}:px").uniform(-2, 4)
        real = known.get(name)
        rules = AssetRules(
            name,
            i,
            real.sz_decimals if real else min(5, max(0, math.floor(math.log10(px)) + 1)),
            real.max_leverage if real else DEFAULT_MAX_LEVERAGE,
        )
        feeds.append(SyntheticFeed(rules, px, start_ms, step_ms, i * step_ms // len(names), seed))
    return feeds


class SyntheticFeed:
    def __init__(
        self,
        rules: AssetRules,
        start_px: float,
        start_ms: int,
        step_ms: int,
        offset_ms: int,
        seed: int,
    ) -> None:
        self.rules = rules
        self._candles = CandleSeries(rules.name, rules.sz_decimals, BAR_MS, keep=MAX_CANDLES)
        self._history_ms: int | None = start_ms  # the day before it is generated on first use
        self._rng = random.Random(f"{seed}:{rules.name}:walk")
        self._step = step_ms
        self._sigma = DAILY_VOLATILITY * math.sqrt(step_ms / DAY_MS)
        self._funding: list[FundingRate] = []
        self._next_tid = (start_ms * 100 + rules.asset % 100) * 1000
        self._users = tuple(
            "0x" + hashlib.sha256(f"{seed}:{rules.name}:{k}".encode()).hexdigest()[:40]
            for k in range(16)
        )
        self._px = round_px(start_px, rules.sz_decimals)
        self._start_px = self._px
        self._funding_history(start_ms)
        self._bar: list[float] = []  # o, h, l, c, volume, n of the open bar
        self._bar_open = start_ms - start_ms % BAR_MS
        self._time = start_ms + offset_ms - step_ms
        self.bid_px, self.ask_px = self._touch(self._px, "B")

    @property
    def time_ms(self) -> int:
        return self._time

    @property
    def candles(self) -> CandleSeries:
        """The 1m bars, a day of generated history first (built when first asked for: a
        firehose of thousands of coins starts fast)."""
        if self._history_ms is not None:
            history = self._history(self._history_ms)
            self._history_ms = None
            self._candles.add(BAR_MS, history + self._candles.bars(BAR_MS))
        return self._candles

    @property
    def next_ts_ms(self) -> int:
        return self._time + self._step

    def next_block(self) -> Block:
        a, b = self._time, self._time + self._step
        funding = None
        hour = b - b % HOUR_MS
        if a < hour <= b:
            rate = BASELINE_FUNDING + self._rng.gauss(0.0, 0.00001)
            funding = FundingRate(
                coin=self.rules.name,
                ts_ms=hour,
                funding_rate=round(rate, 10),
                premium=round(rate - BASELINE_FUNDING, 10),
            )
            self._funding.append(funding)
        rng = self._rng
        count = 1 + (rng.random() < 0.5) + (rng.random() < 0.2)
        trades = []
        for k in range(count):
            ts = a + 1 + (self._step - 1) * (k + 1) // (count + 1)
            self._roll_bar(ts)
            move = rng.gauss(0.0, self._sigma / math.sqrt(count))
            side: AggressorSide = "B" if move >= 0 else "A"
            px = round_px(self._px * math.exp(move), self.rules.sz_decimals, is_buy=side == "A")
            lots = max(1, round(TRADE_USD * rng.lognormvariate(0.0, 1.0) / px * self._lots))
            sz = round(lots / self._lots, self.rules.sz_decimals)
            buyer, seller = rng.sample(self._users, 2)
            self._next_tid += 1
            tid = self._next_tid
            trades.append(
                PublicTrade(
                    coin=self.rules.name,
                    ts_ms=ts,
                    px=px,
                    sz=sz,
                    side=side,
                    tid=tid,
                    hash="0x" + hashlib.sha256(f"{self.rules.name}:{tid}".encode()).hexdigest(),
                    users=(buyer, seller),
                )
            )
            self._px = px
            self._add_to_bar(px, sz)
        self._roll_bar(b)
        self.bid_px, self.ask_px = self._touch(self._px, trades[-1].side)
        self._time = b
        return Block(self.rules.name, b, tuple(trades), self.bid_px, self.ask_px, None, funding)

    def partial_bar(self) -> Candle | None:
        if not self._bar:
            return None
        return self._candle(self._bar_open, self._bar)

    def funding_history(self, start_ms: int, end_ms: int) -> list[FundingRate]:
        found = [r for r in self._funding if start_ms <= r.ts_ms <= end_ms]
        return found[:FUNDING_PAGE]

    def sources(self) -> list[Source]:
        coin = self.rules.name
        what = f"seeded random walk, one update every {self._step} ms"
        return [
            Source(coin, channel, "synthetic", what)
            for channel in ("candle", "trades", "l2Book", "fundingHistory", "activeAssetCtx")
        ]

    # -- internals --------------------------------------------------------------------------

    @property
    def _lots(self) -> int:
        return int(10**self.rules.sz_decimals)

    def _touch(self, px: float, side: AggressorSide) -> tuple[float, float]:
        tick = float(tick_size(px, self.rules.sz_decimals))
        d = self.rules.sz_decimals
        if side == "B":
            return round_px(px - tick, d, is_buy=True), px
        return px, round_px(px + tick, d, is_buy=False)

    def _add_to_bar(self, px: float, sz: float) -> None:
        if not self._bar:
            self._bar = [px, px, px, px, sz, 1]
            return
        bar = self._bar
        bar[1], bar[2], bar[3] = max(bar[1], px), min(bar[2], px), px
        bar[4] += sz
        bar[5] += 1

    def _roll_bar(self, ts: int) -> None:
        """Close the open 1m bar once ``ts`` is past it."""
        if ts < self._bar_open + BAR_MS:
            return
        if self._bar:
            self._candles.append(self._candle(self._bar_open, self._bar))
            self._bar = []
        self._bar_open = ts - ts % BAR_MS

    def _candle(self, open_ms: int, bar: list[float]) -> Candle:
        return Candle.model_construct(
            coin=self.rules.name,
            interval="1m",
            open_ts_ms=open_ms,
            close_ts_ms=open_ms + BAR_MS - 1,
            open_px=bar[0],
            high_px=bar[1],
            low_px=bar[2],
            close_px=bar[3],
            volume_sz=round(bar[4], self.rules.sz_decimals),
            trades_n=int(bar[5]),
        )

    def _history(self, start_ms: int) -> list[Candle]:
        """A day of closed 1m bars ending where the walk starts."""
        rng = random.Random(f"{self.rules.name}:{start_ms}:history")
        d = self.rules.sz_decimals
        sigma = DAILY_VOLATILITY * math.sqrt(BAR_MS / DAY_MS)
        first = start_ms - start_ms % BAR_MS - HISTORY_BARS * BAR_MS
        closes = [self._start_px]
        for _ in range(HISTORY_BARS):
            closes.append(closes[-1] / math.exp(rng.gauss(0.0, sigma)))
        closes.reverse()
        near, down, up = _rounders(min(closes) * 0.98, max(closes) * 1.02, d)
        bars = []
        for k in range(HISTORY_BARS):
            o, c = closes[k], closes[k + 1]
            wick = abs(rng.gauss(0.0, sigma / 2))
            volume = round(rng.lognormvariate(0.0, 0.8) * 40 * TRADE_USD / c, d)
            bars.append(
                Candle.model_construct(
                    coin=self.rules.name,
                    interval="1m",
                    open_ts_ms=first + k * BAR_MS,
                    close_ts_ms=first + (k + 1) * BAR_MS - 1,
                    open_px=near(o),
                    high_px=up(max(o, c) * (1 + wick)),
                    low_px=down(min(o, c) * (1 - wick)),
                    close_px=near(c),
                    volume_sz=volume,
                    trades_n=estimate_trades_n(volume, c),
                )
            )
        return bars

    def _funding_history(self, start_ms: int) -> None:
        """The hourly funding of the day before the start."""
        rng = random.Random(f"{self.rules.name}:{start_ms}:funding")
        for hour in range(start_ms - start_ms % HOUR_MS - DAY_MS + HOUR_MS, start_ms, HOUR_MS):
            rate = BASELINE_FUNDING + rng.gauss(0.0, 0.00001)
            self._funding.append(
                FundingRate(
                    coin=self.rules.name,
                    ts_ms=hour,
                    funding_rate=round(rate, 10),
                    premium=round(rate - BASELINE_FUNDING, 10),
                )
            )


Rounder = Callable[[float], float]


def _rounders(lo: float, hi: float, sz_decimals: int) -> tuple[Rounder, Rounder, Rounder]:
    """Nearest, downward and upward rounding to the tick grid over ``[lo, hi]``: plain float
    arithmetic when one tick covers the range (the usual case), the exact rule otherwise."""
    tick = tick_size(lo, sz_decimals)
    if tick != tick_size(hi, sz_decimals):
        return (
            lambda x: round_px(x, sz_decimals),
            lambda x: round_px(x, sz_decimals, is_buy=True),
            lambda x: round_px(x, sz_decimals, is_buy=False),
        )
    step = float(tick)
    places = max(0, -int(tick.as_tuple().exponent))
    return (
        lambda x: round(round(x / step) * step, places),
        lambda x: round(math.floor(x / step + 1e-9) * step, places),
        lambda x: round(math.ceil(x / step - 1e-9) * step, places),
    )
