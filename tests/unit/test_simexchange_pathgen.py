"""Trades generated inside real candles rebuild those candles exactly."""

from __future__ import annotations

import random

import pytest

from bistouryd.exchange.rules import AssetRules, valid_px
from bistouryd.market import Candle
from bistouryd.simexchange.datafiles import bundled_data_dir, load_folder
from bistouryd.simexchange.pathgen import MAX_TRADES_PER_BAR, bar_path, estimate_trades_n

RULES = {"BTC": AssetRules("BTC", 0, 5, 50), "ETH": AssetRules("ETH", 1, 4, 50)}


@pytest.fixture(scope="module")
def real_bars() -> list[Candle]:
    data = load_folder(bundled_data_dir())
    return data.candles["BTC"][60_000][:150] + data.candles["ETH"][60_000][-150:]


def test_generated_trades_rebuild_every_real_bar(real_bars: list[Candle]) -> None:
    for bar in real_bars:
        rules = RULES[bar.coin]
        trades = bar_path(bar, rules, random.Random(bar.open_ts_ms))
        prices = [t.px for t in trades]
        assert prices[0] == bar.open_px and prices[-1] == bar.close_px
        assert max(prices) == bar.high_px and min(prices) == bar.low_px
        lots = round(bar.volume_sz * 10**rules.sz_decimals)
        assert sum(t.sz_lots for t in trades) == lots and all(t.sz_lots > 0 for t in trades)
        assert all(valid_px(p, rules.sz_decimals) for p in prices)
        times = [t.ts_ms for t in trades]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert bar.open_ts_ms <= times[0] and times[-1] <= bar.close_ts_ms
        assert len(trades) <= MAX_TRADES_PER_BAR


def test_sides_follow_the_path(real_bars: list[Candle]) -> None:
    bar = next(b for b in real_bars if b.high_px > max(b.open_px, b.close_px))
    trades = bar_path(bar, RULES[bar.coin], random.Random(1))
    at_high = [t for t in trades if t.px == bar.high_px]
    assert at_high and all(t.side == "B" for t in at_high)  # the high is an ask being lifted


def test_the_same_seed_gives_the_same_trades(real_bars: list[Candle]) -> None:
    bar = real_bars[3]
    rules = RULES[bar.coin]
    assert bar_path(bar, rules, random.Random(9)) == bar_path(bar, rules, random.Random(9))
    assert bar_path(bar, rules, random.Random(9)) != bar_path(bar, rules, random.Random(10))


def test_tiny_and_empty_bars() -> None:
    rules = RULES["BTC"]
    empty = Candle(
        coin="BTC",
        interval="1m",
        open_ts_ms=0,
        close_ts_ms=59_999,
        open_px=100.0,
        high_px=102.0,
        low_px=99.0,
        close_px=101.0,
        volume_sz=0.0,
    )
    assert bar_path(empty, rules, random.Random(0)) == []
    two_lots = empty.model_copy(update={"volume_sz": 0.00002})
    trades = bar_path(two_lots, rules, random.Random(0))
    assert [t.px for t in trades] == [100.0, 101.0]  # open and close kept, extremes dropped


def test_trade_count_estimate() -> None:
    assert estimate_trades_n(0, 100) == 0
    assert estimate_trades_n(0.001, 100) == 1
    assert estimate_trades_n(10, 100_000) == 200  # $1M at $5k per trade
