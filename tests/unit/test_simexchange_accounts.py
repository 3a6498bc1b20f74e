"""Position accounting, fees, funding and cross margin, checked by hand."""

from __future__ import annotations

import pytest

from bistouryd.exchange.rules import AssetRules
from bistouryd.simexchange.accounts import Account

BTC = AssetRules("BTC", 0, 5, 50)
RULES = {"BTC": BTC, "SOL": AssetRules("SOL", 5, 2, 50), "ETH": AssetRules("ETH", 1, 4, 50)}
TAKER = 0.00045


def fill(account: Account, is_buy: bool, px: float, sz: float) -> object:
    fee = round(px * sz * TAKER, 6)
    return account.apply_fill(
        BTC, is_buy, px, sz, fee, time_ms=1, oid=1, tid=1, hash="0x", crossed=True, cloid=None
    )


def test_open_add_close_and_flip() -> None:
    a = Account("0xa", 10_000.0)
    f = fill(a, True, 100_000.0, 0.1)
    assert f.dir == "Open Long" and f.start_position == 0 and f.closed_pnl_usd == 0
    assert f.fee_usd == 4.5  # 0.1 x 100000 x 0.045%
    assert a.balance_usd == pytest.approx(9995.5)
    fill(a, True, 101_000.0, 0.1)
    assert a.positions["BTC"].entry_px == pytest.approx(100_500.0)  # size-weighted
    f = fill(a, False, 102_000.0, 0.15)
    assert f.dir == "Close Long" and f.start_position == 0.2
    assert f.closed_pnl_usd == pytest.approx(225.0)  # 0.15 x (102000 - 100500)
    assert a.positions["BTC"].entry_px == pytest.approx(100_500.0)  # a reduction keeps it
    f = fill(a, False, 101_000.0, 0.2)
    assert f.dir == "Long > Short" and f.closed_pnl_usd == pytest.approx(25.0)  # 0.05 x 500
    assert a.positions["BTC"].szi == pytest.approx(-0.15)
    assert a.positions["BTC"].entry_px == 101_000.0
    f = fill(a, True, 100_000.0, 0.15)
    assert f.dir == "Close Short" and f.closed_pnl_usd == pytest.approx(150.0)
    assert "BTC" not in a.positions
    fees = 4.5 + 4.545 + 6.885 + 9.09 + 6.75
    assert a.balance_usd == pytest.approx(10_000 + 225 + 25 + 150 - fees)


def test_funding_is_size_times_oracle_times_rate_and_longs_pay_a_positive_rate() -> None:
    long, short = Account("0xl", 1000.0), Account("0xs", 1000.0)
    fill(long, True, 100_000.0, 0.1)
    fill(short, False, 100_000.0, 0.1)
    paid = long.apply_funding("BTC", 0.0000125, 100_000.0, 3_600_000, "0xh")
    received = short.apply_funding("BTC", 0.0000125, 100_000.0, 3_600_000, "0xh")
    assert paid is not None and received is not None
    assert paid.usdc == -0.125 and received.usdc == 0.125  # 0.1 x 100000 x 0.00125%
    assert long.positions["BTC"].funding_all_time_usd == pytest.approx(0.125)
    assert Account("0xn", 1.0).apply_funding("BTC", 0.01, 1.0, 0, "0x") is None


def test_margin_matches_a_real_recorded_cross_account() -> None:
    """The ccxt sample of a real clearinghouseState (SOL and ETH longs at 20x, max 50x)."""
    a = Account("0xa", 0.0)
    a.leverage = {"SOL": 20, "ETH": 20}
    sol = a.apply_fill(
        RULES["SOL"],
        True,
        112.0945,
        3.34,
        0.0,
        time_ms=0,
        oid=1,
        tid=1,
        hash="0x",
        crossed=True,
        cloid=None,
    )
    eth = a.apply_fill(
        RULES["ETH"],
        True,
        1100.0,
        3.6,
        0.0,
        time_ms=0,
        oid=2,
        tid=2,
        hash="0x",
        crossed=True,
        cloid=None,
    )
    assert sol.dir == eth.dir == "Open Long"
    marks = {"SOL": 463.9594 / 3.34, "ETH": 13694.04 / 3.6}
    upnl = 3.34 * (marks["SOL"] - 112.0945) + 3.6 * (marks["ETH"] - 1100.0)
    a.balance_usd = 19762.483455 - upnl  # the recorded account value
    view = a.margin(marks, RULES)
    assert view.account_value_usd == pytest.approx(19762.483455)
    assert view.total_ntl_pos_usd == pytest.approx(14157.9994)
    assert view.total_raw_usd == pytest.approx(5604.484055)
    assert view.total_margin_used_usd == pytest.approx(707.89997)
    assert view.maintenance_margin_usd == pytest.approx(141.579994, abs=1e-6)
    by_coin = {p.coin: p for p in view.positions}
    assert by_coin["SOL"].margin_used_usd == pytest.approx(23.19797)
    assert by_coin["SOL"].return_on_equity == pytest.approx(4.78442786, rel=1e-5)
    assert by_coin["ETH"].liquidation_px is None  # this account cannot be liquidated


def test_liquidation_price_of_a_single_leveraged_long() -> None:
    a = Account("0xa", 1000.0)
    fill(a, True, 100_000.0, 0.2)  # $20k at 20x with ~$1000 of equity
    view = a.margin({"BTC": 100_000.0}, RULES)
    liq = view.positions[0].liquidation_px
    assert liq is not None
    # value(x) = A + 0.2 (x - 100000) equals maintenance 0.2 x / 100 at the liquidation price
    value = view.account_value_usd
    assert value + 0.2 * (liq - 100_000) == pytest.approx(0.2 * liq / 100)
