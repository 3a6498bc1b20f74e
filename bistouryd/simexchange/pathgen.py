"""Trades generated inside a recorded candle, where the public tape was not recorded.

The path opens at ``o``, visits the nearer extreme then the other (``h`` and ``l``), and closes at
``c``, with a noisy bridge in between that never leaves ``[l, h]``; prices sit on the asset's
tick grid and sizes are whole lots summing exactly to the bar's volume. So the trades rebuild the
recorded bar exactly (o, h, l, c, v) whenever it has at least four lots. The number of trades is
the bar's ``n`` when recorded, else an estimate from its notional; at most ``max_trades`` are
generated (``n`` is still reported in full and scaled for the open bar).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from bistouryd.exchange.rules import AssetRules, round_px, tick_size
from bistouryd.market import Candle
from bistouryd.simexchange.feed import AggressorSide

# Average notional of one public trade, to estimate a bar's trade count when the data lacks
# ``n``: real 1m BTC bars in the ccxt sample average $7k (6.83 BTC / 67 trades) and $2.4k.
AVG_TRADE_USD = 5000.0
MAX_TRADES_PER_BAR = 120
# Noise of the bridge between waypoints, as a fraction of the bar's range.
_BRIDGE_NOISE = 0.12


@dataclass(frozen=True, slots=True)
class PathTrade:
    ts_ms: int
    px: float
    sz_lots: int
    side: AggressorSide


def estimate_trades_n(volume_sz: float, close_px: float) -> int:
    """A bar's trade count from its notional, for data that does not record ``n``."""
    if volume_sz <= 0:
        return 0
    return max(1, round(volume_sz * close_px / AVG_TRADE_USD))


def bar_path(
    bar: Candle, rules: AssetRules, rng: random.Random, max_trades: int = MAX_TRADES_PER_BAR
) -> list[PathTrade]:
    """The trades of ``bar`` in time order (empty if it has no volume)."""
    lots = round(bar.volume_sz * 10**rules.sz_decimals)
    if lots <= 0:
        return []
    o, h, lo, c = bar.open_px, bar.high_px, bar.low_px, bar.close_px
    wanted = bar.trades_n or estimate_trades_n(bar.volume_sz, c)
    first, second = (h, lo) if h - o <= o - lo else (lo, h)
    waypoints = [o]
    for px in (first, second, c):
        if px != waypoints[-1]:
            waypoints.append(px)
    n = min(lots, max(min(wanted, max_trades), len(waypoints)))
    if n < len(waypoints):
        waypoints = [o, *waypoints[1:-1][: max(0, n - 2)], c][-n:]
    interval = bar.close_ts_ms - bar.open_ts_ms + 1
    offsets = sorted(rng.sample(range(interval), n))
    prices = _prices(waypoints, n, lo, h, rules, rng)
    sizes = _split(lots, n, rng)
    trades = []
    prev = prices[0]
    for i, (offset, px, lots_i) in enumerate(zip(offsets, prices, sizes, strict=True)):
        if i == 0:
            side: AggressorSide = "B" if c >= o else "A"
        elif px == h and h != lo:
            side = "B"
        elif px == lo and h != lo:
            side = "A"
        elif px != prev:
            side = "B" if px > prev else "A"
        else:
            side = rng.choice(("B", "A"))
        trades.append(PathTrade(bar.open_ts_ms + offset, px, lots_i, side))
        prev = px
    return trades


def _prices(
    waypoints: list[float], n: int, lo: float, hi: float, rules: AssetRules, rng: random.Random
) -> list[float]:
    if n == 1:
        return [waypoints[-1]]
    last = len(waypoints) - 1
    positions = [0] * (last + 1)
    positions[last] = n - 1
    span = (n - 1) / last if last else 0.0
    for k in range(1, last):
        target = round(k * span + rng.uniform(-0.3, 0.3) * span)
        positions[k] = min(max(target, positions[k - 1] + 1), n - 1 - (last - k))
    snap = _snapper(lo, hi, rules)
    prices = [0.0] * n
    for k in range(last + 1):
        prices[positions[k]] = waypoints[k]
    noise = (hi - lo) * _BRIDGE_NOISE
    for k in range(last):
        p0, p1 = positions[k], positions[k + 1]
        v0, v1 = waypoints[k], waypoints[k + 1]
        for idx in range(p0 + 1, p1):
            frac = (idx - p0) / (p1 - p0)
            x = v0 + (v1 - v0) * frac + rng.gauss(0.0, 1.0) * noise * math.sqrt(frac * (1 - frac))
            prices[idx] = min(max(snap(min(max(x, lo), hi)), lo), hi)
    return prices


def _snapper(lo: float, hi: float, rules: AssetRules) -> Callable[[float], float]:
    """Rounding to the tick grid: plain float arithmetic when one tick covers ``[lo, hi]``."""
    tick = tick_size(lo, rules.sz_decimals)
    if tick != tick_size(hi, rules.sz_decimals):
        return lambda x: round_px(x, rules.sz_decimals)
    step = float(tick)
    decimals = max(0, -int(tick.as_tuple().exponent))
    return lambda x: round(round(x / step) * step, decimals)


def _split(lots: int, n: int, rng: random.Random) -> list[int]:
    """``lots`` as ``n`` positive whole numbers with a heavy-tailed spread."""
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(n)]
    total = sum(weights)
    extra = lots - n
    shares = [w / total * extra for w in weights]
    sizes = [1 + math.floor(s) for s in shares]
    short = lots - sum(sizes)
    for i in sorted(range(n), key=lambda i: shares[i] - math.floor(shares[i]), reverse=True)[
        :short
    ]:
        sizes[i] += 1
    return sizes
