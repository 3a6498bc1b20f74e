"""Walking an L2 book: fills per level, average price, limit, consumed depth."""

from __future__ import annotations

import pytest

from bistouryd.exchange.book import book_after, walk_book, walk_levels
from bistouryd.market import L2Book


def book() -> L2Book:
    return L2Book(
        coin="BTC",
        ts_ms=1,
        bid_px=[99.0, 98.0, 97.0],
        bid_sz=[1.0, 2.0, 3.0],
        bid_n=[1, 2, 3],
        ask_px=[100.0, 101.0, 102.0],
        ask_sz=[1.0, 2.0, 5.0],
        ask_n=[1, 1, 4],
    )


def test_an_order_larger_than_the_top_level_pays_the_walked_average() -> None:
    walk = walk_book(book(), 2.5, is_buy=True)
    assert [(f.px, f.sz) for f in walk.fills] == [(100.0, 1.0), (101.0, 1.5)]
    assert walk.filled_sz == 2.5 and walk.remaining_sz == 0
    assert walk.avg_px == pytest.approx((100 * 1 + 101 * 1.5) / 2.5)  # 100.6
    assert walk.notional_usd == pytest.approx(251.5)


def test_a_sell_walks_the_bids_down() -> None:
    walk = walk_book(book(), 4, is_buy=False)
    assert [(f.px, f.sz) for f in walk.fills] == [(99.0, 1.0), (98.0, 2.0), (97.0, 1.0)]
    assert walk.avg_px == pytest.approx((99 + 196 + 97) / 4)  # 98.0


def test_the_limit_price_stops_the_walk() -> None:
    walk = walk_book(book(), 2.5, is_buy=True, limit_px=100.5)
    assert walk.filled_sz == 1.0 and walk.remaining_sz == 1.5 and walk.avg_px == 100.0
    assert walk_book(book(), 1, is_buy=False, limit_px=99.5).filled_sz == 0


def test_more_than_the_depth_leaves_a_remainder() -> None:
    walk = walk_book(book(), 10, is_buy=True)
    assert walk.filled_sz == 8 and walk.remaining_sz == 2


def test_an_empty_book_fills_nothing() -> None:
    walk = walk_levels([], [], 1.0, is_buy=True)
    assert walk.fills == () and walk.filled_sz == 0 and walk.avg_px is None


def test_float_dust_is_not_left_over() -> None:
    walk = walk_levels([1.0, 2.0], [0.0003, 0.0007], 0.001, is_buy=True)
    assert walk.remaining_sz == 0 and len(walk.fills) == 2


def test_a_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        walk_book(book(), 0, is_buy=True)


def test_consumed_depth_is_removed_from_the_book() -> None:
    b = book()
    after = book_after(b, True, walk_book(b, 2.5, is_buy=True))
    assert after.ask_px == [101.0, 102.0] and after.ask_sz == [0.5, 5.0] and after.ask_n == [1, 4]
    assert after.bid_px == b.bid_px
    after = book_after(b, False, walk_book(b, 1, is_buy=False))
    assert after.bid_px == [98.0, 97.0]
