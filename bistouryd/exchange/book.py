"""Walking an L2 book with a marketable order: what it fills, at what average price.

Pure (no I/O). The simulated exchange fills aggressive orders this way; the paper broker
will fill against the stored book the same way, so both agree on slippage. Books are
``bistouryd.market.L2Book`` (parallel price/size/count columns, best level first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bistouryd.market import L2Book

# Sizes are floats: a remainder below this fraction of the order is rounding dust, not size.
_DUST = 1e-9


@dataclass(frozen=True)
class LevelFill:
    """The part of an order filled at one price level."""

    px: float
    sz: float


@dataclass(frozen=True)
class BookWalk:
    """The outcome of walking one side of a book: fills best price first."""

    fills: tuple[LevelFill, ...]
    filled_sz: float
    remaining_sz: float

    @property
    def notional_usd(self) -> float:
        return sum(f.px * f.sz for f in self.fills)

    @property
    def avg_px(self) -> float | None:
        """Size-weighted average fill price; ``None`` when nothing filled."""
        return self.notional_usd / self.filled_sz if self.filled_sz > 0 else None


def walk_levels(
    px: Sequence[float],
    sz: Sequence[float],
    size: float,
    is_buy: bool,
    limit_px: float | None = None,
) -> BookWalk:
    """Fill ``size`` against one side of a book (``px``/``sz`` best first: the asks for a
    buy, the bids for a sell), stopping at ``limit_px`` (a buy takes no ask above it, a sell
    no bid below it)."""
    if size <= 0:
        raise ValueError(f"order size must be positive: {size}")
    fills: list[LevelFill] = []
    remaining = size
    for level_px, level_sz in zip(px, sz, strict=True):
        if limit_px is not None and (level_px > limit_px if is_buy else level_px < limit_px):
            break
        take = min(level_sz, remaining)
        if take <= 0:
            continue
        fills.append(LevelFill(px=level_px, sz=take))
        remaining -= take
        if remaining <= _DUST * size:
            remaining = 0.0
            break
    return BookWalk(fills=tuple(fills), filled_sz=size - remaining, remaining_sz=remaining)


def walk_book(book: L2Book, size: float, is_buy: bool, limit_px: float | None = None) -> BookWalk:
    """A buy of ``size`` walks the asks, a sell the bids."""
    if is_buy:
        return walk_levels(book.ask_px, book.ask_sz, size, True, limit_px)
    return walk_levels(book.bid_px, book.bid_sz, size, False, limit_px)


def consume(
    px: Sequence[float], sz: Sequence[float], n: Sequence[int], walk: BookWalk
) -> tuple[list[float], list[float], list[int]]:
    """One side without the depth ``walk`` took: emptied levels go, a partly taken one
    shrinks (its order count stays: some order there is still resting)."""
    taken = {f.px: f.sz for f in walk.fills}
    left_px: list[float] = []
    left_sz: list[float] = []
    left_n: list[int] = []
    for level_px, level_sz, level_n in zip(px, sz, n, strict=True):
        rest = level_sz - taken.get(level_px, 0.0)
        if rest > _DUST * level_sz:
            left_px.append(level_px)
            left_sz.append(rest)
            left_n.append(level_n)
    return left_px, left_sz, left_n


def book_after(book: L2Book, is_buy: bool, walk: BookWalk) -> L2Book:
    """``book`` once a buy (which takes asks) or a sell (which takes bids) has walked it."""
    if is_buy:
        px, sz, n = consume(book.ask_px, book.ask_sz, book.ask_n, walk)
        return book.model_copy(update={"ask_px": px, "ask_sz": sz, "ask_n": n})
    px, sz, n = consume(book.bid_px, book.bid_sz, book.bid_n, walk)
    return book.model_copy(update={"bid_px": px, "bid_sz": sz, "bid_n": n})
