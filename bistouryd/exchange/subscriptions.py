"""What the collector subscribes to and what it must fetch again after a gap (pure).

Times here are the exchange's, taken from the data itself: the collector never asks the
local clock what time it is on the exchange, so the same code works live and against a
replay that runs hours or years behind (or ahead of) the wall clock.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bistouryd.config import CollectorConfig
from bistouryd.market import INTERVAL_MS, Candle

Kind = Literal["candle", "l2Book", "trades", "activeAssetCtx"]


@dataclass(frozen=True, order=True)
class Subscription:
    kind: Kind
    coin: str
    interval: str | None = None

    def wire(self) -> dict[str, Any]:
        """The ``subscription`` object of HyperLiquid's websocket ``subscribe`` method."""
        sub: dict[str, Any] = {"type": self.kind, "coin": self.coin}
        if self.interval is not None:
            sub["interval"] = self.interval
        return sub

    @property
    def channel(self) -> str:
        """Label used in metrics: ``candle.1m``, ``l2Book``, ``trades``, ``activeAssetCtx``."""
        return f"candle.{self.interval}" if self.interval else self.kind


def subscriptions_for(pairs: list[str], settings: CollectorConfig) -> list[Subscription]:
    subs: list[Subscription] = []
    for coin in pairs:
        subs.extend(Subscription("candle", coin, interval) for interval in settings.intervals)
        if settings.l2_book:
            subs.append(Subscription("l2Book", coin))
        if settings.trades:
            subs.append(Subscription("trades", coin))
        if settings.asset_ctx:
            subs.append(Subscription("activeAssetCtx", coin))
    return subs


@dataclass
class ExchangeClock:
    """The exchange's time, estimated from the newest time stamp seen in its data."""

    _last_ts_ms: int | None = None
    _seen_mono: float = 0.0

    def observe(self, ts_ms: int) -> None:
        if self._last_ts_ms is None or ts_ms > self._last_ts_ms:
            self._last_ts_ms = ts_ms
            self._seen_mono = time.monotonic()

    def now_ms(self) -> int | None:
        if self._last_ts_ms is None:
            return None
        return self._last_ts_ms + int((time.monotonic() - self._seen_mono) * 1000)


@dataclass
class CandleCursor:
    """The newest candle seen per (coin, interval): where a backfill has to start."""

    last_open_ms: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, candle: Candle) -> bool:
        """Record a candle; True when it opens a bar newer than any seen before."""
        key = (candle.coin, candle.interval)
        last = self.last_open_ms.get(key)
        if last is None or candle.open_ts_ms > last:
            self.last_open_ms[key] = candle.open_ts_ms
            return True
        return False

    def snapshot(self) -> CandleCursor:
        """A copy, taken when a connection opens: its backfill must start from the bars
        seen before it, not from the ones the new connection has just delivered."""
        return CandleCursor(dict(self.last_open_ms))

    def backfill_range(
        self, coin: str, interval: str, exchange_now_ms: int, first_window_ms: int
    ) -> tuple[int, int]:
        """[start, end] to ask ``candleSnapshot`` for: from the last bar seen (it may have
        changed since) or, the first time, ``first_window_ms`` back; up to now."""
        last = self.last_open_ms.get((coin, interval))
        start = last if last is not None else exchange_now_ms - first_window_ms
        step = INTERVAL_MS[interval]
        return start - start % step, exchange_now_ms

    def forget(self, coin: str) -> None:
        for key in [k for k in self.last_open_ms if k[0] == coin]:
            del self.last_open_ms[key]


def missing_opens(opens: list[int], interval: str) -> int:
    """How many bars are missing between consecutive open times (sorted or not)."""
    step = INTERVAL_MS[interval]
    ordered = sorted(set(opens))
    return sum((b - a) // step - 1 for a, b in itertools.pairwise(ordered))
