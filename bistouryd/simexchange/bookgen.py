"""Synthetic L2 books shaped like real ones, where no book was recorded.

Only a few real HyperLiquid books exist in the data (HYPERLIQUID.md: a full DYDX book of
2023-07-17, a 20x20 BTC websocket frame of 2025-07-02, a trimmed BTC book of 2025-10-30). From
them ``BookShape`` takes, per level, the distance from the touch in basis points of the mid, the
resting notional in USD and the number of orders; ``synthetic_book`` lays that shape, jittered,
around a best bid/ask on the asset's tick grid.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from bistouryd.exchange.rules import AssetRules, round_px, tick_size
from bistouryd.market import L2Book

BOOK_DEPTH = 20
_COUNT_JITTER = (-1, 0, 0, 1)


@dataclass(frozen=True)
class LevelShape:
    offset_bps: float  # distance from the best price of the side, in bps of the mid
    notional_usd: float
    orders_n: int


@dataclass(frozen=True)
class BookShape:
    bids: tuple[LevelShape, ...]
    asks: tuple[LevelShape, ...]
    origin: str  # the snapshots it was measured on

    @classmethod
    def from_snapshots(cls, books: Sequence[L2Book], depth: int = BOOK_DEPTH) -> BookShape:
        """The average shape of ``books`` (each needs both sides), extended to ``depth``
        levels by repeating the last spacing."""
        usable = [b for b in books if b.mid_px is not None]
        if not usable:
            raise ValueError("no two-sided book to measure a shape on")
        origin = ", ".join(f"{b.coin}@{b.ts_ms}" for b in usable)
        bids = [_Side(b.bid_px, b.bid_sz, b.bid_n, b.mid_px or 0.0) for b in usable]
        asks = [_Side(b.ask_px, b.ask_sz, b.ask_n, b.mid_px or 0.0) for b in usable]
        return cls(bids=_side_shape(bids, depth), asks=_side_shape(asks, depth), origin=origin)


@dataclass(frozen=True)
class _Side:
    px: list[float]
    sz: list[float]
    n: list[int]
    mid: float


def _side_shape(sides: list[_Side], depth: int) -> tuple[LevelShape, ...]:
    shape: list[LevelShape] = []
    for i in range(depth):
        have = [side for side in sides if len(side.px) > i]
        if not have:
            gap = shape[-1].offset_bps - shape[-2].offset_bps if len(shape) > 1 else 1.0
            last = shape[-1]
            shape.append(LevelShape(last.offset_bps + gap, last.notional_usd, last.orders_n))
            continue
        offsets = [abs(side.px[i] - side.px[0]) / side.mid * 1e4 for side in have]
        notionals = [max(side.px[i] * side.sz[i], 1e-9) for side in have]
        counts = [side.n[i] for side in have if side.n[i] > 0]
        shape.append(
            LevelShape(
                offset_bps=sum(offsets) / len(offsets),
                notional_usd=math.exp(sum(math.log(x) for x in notionals) / len(notionals)),
                orders_n=max(1, round(sum(counts) / len(counts))) if counts else 1,
            )
        )
    return tuple(shape)


def synthetic_book(
    coin: str,
    ts_ms: int,
    bid_px: float,
    ask_px: float,
    shape: BookShape,
    rules: AssetRules,
    rng: random.Random,
) -> L2Book:
    """A two-sided book with best bid ``bid_px`` and best ask ``ask_px`` (both on the grid)."""
    mid = (bid_px + ask_px) / 2
    bid_px_, bid_sz, bid_n = _levels(bid_px, mid, shape.bids, rules, rng, is_bid=True)
    ask_px_, ask_sz, ask_n = _levels(ask_px, mid, shape.asks, rules, rng, is_bid=False)
    return L2Book.model_construct(
        coin=coin,
        ts_ms=ts_ms,
        bid_px=bid_px_,
        bid_sz=bid_sz,
        bid_n=bid_n,
        ask_px=ask_px_,
        ask_sz=ask_sz,
        ask_n=ask_n,
    )


def _levels(
    best: float,
    mid: float,
    shape: Sequence[LevelShape],
    rules: AssetRules,
    rng: random.Random,
    is_bid: bool,
) -> tuple[list[float], list[float], list[int]]:
    tick = tick_size(best, rules.sz_decimals)
    step = float(tick)
    decimals = max(0, -int(tick.as_tuple().exponent))
    # Above the next power of ten the grid coarsens; snap there with the exact rule.
    boundary = 10.0 ** (math.floor(math.log10(best)) + 1)
    lot = 10.0**-rules.sz_decimals
    d = rules.sz_decimals
    per_bps = mid / 1e4
    uniform, gauss = rng.random, rng.gauss
    prices: list[float] = []
    sizes: list[float] = []
    counts: list[int] = []
    ticks_prev = -1
    for level in shape:
        away = level.offset_bps * (0.8 + 0.4 * uniform()) * per_bps
        ticks = max(ticks_prev + 1, int(away / step + 0.5))
        ticks_prev = ticks
        px = round(best - ticks * step if is_bid else best + ticks * step, decimals)
        if px <= 0:
            break
        if not is_bid and px >= boundary:
            px = round_px(px, d, is_buy=False)
            if prices and px <= prices[-1]:
                break
        prices.append(px)
        sizes.append(max(lot, round(level.notional_usd * math.exp(0.5 * gauss(0.0, 1.0)) / px, d)))
        counts.append(max(1, level.orders_n + _COUNT_JITTER[int(uniform() * 4)]))
    return prices, sizes, counts
