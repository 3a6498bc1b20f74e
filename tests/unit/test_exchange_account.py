"""The shared position arithmetic and cross-margin liquidation price, checked by hand."""

from __future__ import annotations

import pytest

from bistouryd.exchange.account import (
    cross_liquidation_px,
    fill_effect,
    funding_payment_usd,
    maintenance_margin_usd,
)


def test_opening_from_flat_enters_at_the_fill_price() -> None:
    e = fill_effect(0.0, 0.0, True, 100.0, 2.0, 5)
    assert (e.end_szi, e.entry_px, e.closed_pnl_usd, e.direction) == (2.0, 100.0, 0.0, "Open Long")
    e = fill_effect(0.0, 0.0, False, 100.0, 2.0, 5)
    assert (e.end_szi, e.direction) == (-2.0, "Open Short")


def test_adding_averages_the_entry_by_size() -> None:
    e = fill_effect(1.0, 100.0, True, 106.0, 2.0, 5)
    assert e.end_szi == 3.0 and e.direction == "Open Long" and e.closed_pnl_usd == 0
    assert e.entry_px == pytest.approx(104.0)  # (1 x 100 + 2 x 106) / 3
    e = fill_effect(-1.0, 100.0, False, 94.0, 1.0, 5)
    assert e.end_szi == -2.0 and e.entry_px == pytest.approx(97.0)


def test_a_partial_close_realises_pnl_and_keeps_the_entry() -> None:
    e = fill_effect(3.0, 100.0, False, 110.0, 1.0, 5)
    assert e.end_szi == 2.0 and e.entry_px == 100.0 and e.direction == "Close Long"
    assert e.closed_pnl_usd == pytest.approx(10.0)  # 1 x (110 - 100)
    e = fill_effect(-3.0, 100.0, True, 110.0, 3.0, 5)
    assert e.end_szi == 0 and e.direction == "Close Short"
    assert e.closed_pnl_usd == pytest.approx(-30.0)  # a short loses 3 x 10 on a rise


def test_a_flip_realises_the_old_side_and_enters_the_new_at_the_fill_price() -> None:
    e = fill_effect(1.0, 100.0, False, 90.0, 3.0, 5)
    assert e.end_szi == -2.0 and e.entry_px == 90.0 and e.direction == "Long > Short"
    assert e.closed_pnl_usd == pytest.approx(-10.0)  # only the 1 closed counts
    e = fill_effect(-0.1, 100.0, True, 90.0, 0.3, 5)
    assert e.end_szi == 0.2 and e.direction == "Short > Long"  # rounded to the lot: no dust
    assert e.closed_pnl_usd == pytest.approx(1.0)


def test_maintenance_margin_is_half_the_margin_at_max_leverage() -> None:
    assert maintenance_margin_usd(20_000.0, 50) == pytest.approx(200.0)


def test_liquidation_price_of_a_single_leveraged_long() -> None:
    # cash 1000 - 20000 + 0.2 x = 0.2 x / 100  ->  x = 19000 / 0.198
    liq = cross_liquidation_px(0.2, 100_000.0, 1000.0, 0.0, 50)
    assert liq == pytest.approx(19_000 / 0.198)  # 95959.60


def test_liquidation_price_of_a_short_and_of_an_unliquidatable_long() -> None:
    # value 1000 - 0.2 (x - 100000) = 0.2 x / 100  ->  x = 21000 / 0.202
    assert cross_liquidation_px(-0.2, 100_000.0, 1000.0, 0.0, 50) == pytest.approx(21_000 / 0.202)
    assert cross_liquidation_px(0.2, 100_000.0, 30_000.0, 0.0, 50) is None  # over-collateralised


def test_other_positions_maintenance_raises_the_liquidation_price() -> None:
    # 1000 + 0.2 (x - 100000) = 50 + 0.2 x / 100  ->  x = 19050 / 0.198
    liq = cross_liquidation_px(0.2, 100_000.0, 1000.0, 50.0, 50)
    assert liq == pytest.approx(19_050 / 0.198)


def test_longs_pay_a_positive_funding_rate() -> None:
    assert funding_payment_usd(2.0, 50_000.0, 0.0000125) == pytest.approx(-1.25)
    assert funding_payment_usd(-2.0, 50_000.0, 0.0000125) == pytest.approx(1.25)
