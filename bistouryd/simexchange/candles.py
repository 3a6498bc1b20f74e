"""Candles as ``candleSnapshot`` serves them: closed bars from the data, coarser intervals
aggregated from finer ones, and the still-open bar built from the trades so far.

No lookahead: a bar that opens after "now" does not exist, and the bar open at "now" holds only
what has traded by then. Like the real endpoint, one answer holds at most 5000 bars, counted from
``startTime``, and only the 5000 most recent bars of an interval are available (docs,
"Info endpoint - Candle snapshot"; HYPERLIQUID.md §d).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from bistouryd.market import INTERVAL_MS, Candle

MAX_CANDLES = 5000
INTERVAL_NAMES: dict[int, str] = {ms: name for name, ms in INTERVAL_MS.items()}


def merge(bars: Sequence[Candle], interval_ms: int, open_ts_ms: int, sz_decimals: int) -> Candle:
    """One bar of ``interval_ms`` from consecutive finer bars (oldest first)."""
    counts = [b.trades_n for b in bars]
    return Candle(
        coin=bars[0].coin,
        interval=INTERVAL_NAMES[interval_ms],  # type: ignore[arg-type]
        open_ts_ms=open_ts_ms,
        close_ts_ms=open_ts_ms + interval_ms - 1,
        open_px=bars[0].open_px,
        high_px=max(b.high_px for b in bars),
        low_px=min(b.low_px for b in bars),
        close_px=bars[-1].close_px,
        volume_sz=round(math.fsum(b.volume_sz for b in bars), sz_decimals),
        trades_n=None if None in counts else sum(c for c in counts if c is not None),
    )


class CandleSeries:
    """The closed bars of one coin, per interval, sorted by open time."""

    def __init__(self, coin: str, sz_decimals: int, base_interval_ms: int, keep: int = 0) -> None:
        self.coin = coin
        self.sz_decimals = sz_decimals
        self.base_interval_ms = base_interval_ms
        self._keep = keep  # bound on appended base bars (0: unbounded)
        self._bars: dict[int, list[Candle]] = {}
        self._opens: dict[int, list[int]] = {}

    @property
    def intervals_ms(self) -> list[int]:
        return sorted(self._bars)

    def bars(self, interval_ms: int) -> list[Candle]:
        return self._bars.get(interval_ms, [])

    def add(self, interval_ms: int, bars: Sequence[Candle]) -> None:
        """Add recorded bars of one interval (sorted, one per open time)."""
        self._bars[interval_ms] = list(bars)
        self._opens[interval_ms] = [b.open_ts_ms for b in bars]

    def append(self, bar: Candle) -> None:
        """A base bar has just closed (synthetic data); keeps at most ``keep`` of them."""
        bars = self._bars.setdefault(self.base_interval_ms, [])
        opens = self._opens.setdefault(self.base_interval_ms, [])
        bars.append(bar)
        opens.append(bar.open_ts_ms)
        if self._keep and len(bars) > self._keep + self._keep // 10:
            del bars[: len(bars) - self._keep]
            del opens[: len(opens) - self._keep]

    def query(
        self, interval_ms: int, start_ms: int, end_ms: int, now_ms: int, partial: Candle | None
    ) -> list[Candle]:
        """Bars of ``interval_ms`` with close >= ``start_ms`` and open <= ``end_ms``, as of
        ``now_ms``; ``partial`` is the open base bar (``None`` if nothing traded in it yet)."""
        step = interval_ms
        open_now = now_ms - now_ms % step
        lo = max(start_ms - start_ms % step, open_now - (MAX_CANDLES - 1) * step)
        hi = min(end_ms, now_ms, lo + (MAX_CANDLES - 1) * step)
        if hi < lo:
            return []
        found: dict[int, Candle] = {}
        sources = sorted((j for j in self._bars if step % j == 0), reverse=True)
        for j in sources:
            bars, opens = self._bars[j], self._opens[j]
            window = bars[bisect_left(opens, lo) : bisect_right(opens, hi)]
            if j == step:
                for bar in window:
                    if bar.open_ts_ms + step <= now_ms:
                        found.setdefault(bar.open_ts_ms, bar)
                continue
            groups: dict[int, list[Candle]] = {}
            for bar in window:
                group = bar.open_ts_ms - bar.open_ts_ms % step
                if group + step <= now_ms and group not in found:
                    groups.setdefault(group, []).append(bar)
            for group, members in groups.items():
                found[group] = merge(members, step, group, self.sz_decimals)
        if lo <= open_now <= hi and open_now not in found:
            current = self._open_bar(step, open_now, now_ms, partial)
            if current is not None:
                found[open_now] = current
        return [found[t] for t in sorted(found)]

    def _open_bar(
        self, step: int, open_ts: int, now_ms: int, partial: Candle | None
    ) -> Candle | None:
        base = self.base_interval_ms
        if step % base:
            return None
        members: list[Candle] = []
        if step != base:
            bars, opens = self._bars.get(base, []), self._opens.get(base, [])
            window = bars[bisect_left(opens, open_ts) : bisect_left(opens, now_ms)]
            members = [b for b in window if b.open_ts_ms + base <= now_ms]
        if partial is not None and partial.open_ts_ms >= open_ts:
            members.append(partial)
        if not members:
            return None
        if step == base:
            return members[-1]
        return merge(members, step, open_ts, self.sz_decimals)
