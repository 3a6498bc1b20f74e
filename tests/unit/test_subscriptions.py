"""Subscriptions, the exchange clock and backfill ranges (pure collector logic)."""

from __future__ import annotations

import time

from bistouryd.config import CollectorConfig
from bistouryd.exchange.subscriptions import (
    CandleCursor,
    ExchangeClock,
    Subscription,
    missing_opens,
    subscriptions_for,
)
from bistouryd.market import Candle


def candle(open_ms: int, interval: str = "1m", coin: str = "BTC") -> Candle:
    return Candle(
        coin=coin,
        interval=interval,
        open_ts_ms=open_ms,
        close_ts_ms=open_ms + 59_999,
        open_px=1,
        high_px=1,
        low_px=1,
        close_px=1,
        volume_sz=0,
    )


def test_subscriptions_follow_the_settings() -> None:
    subs = subscriptions_for(["BTC", "ETH"], CollectorConfig())
    assert len(subs) == 2 * (3 + 3)
    assert Subscription("candle", "BTC", "15m").wire() == {
        "type": "candle",
        "coin": "BTC",
        "interval": "15m",
    }
    assert Subscription("l2Book", "ETH").wire() == {"type": "l2Book", "coin": "ETH"}
    narrow = CollectorConfig(intervals=["1m"], l2_book=False, trades=False, asset_ctx=True)
    assert [s.channel for s in subscriptions_for(["BTC"], narrow)] == [
        "candle.1m",
        "activeAssetCtx",
    ]


def test_exchange_clock_follows_the_data_not_the_wall() -> None:
    clock = ExchangeClock()
    assert clock.now_ms() is None
    clock.observe(1_000_000)
    clock.observe(999_000)  # older data does not move it back
    now = clock.now_ms()
    assert now is not None and 1_000_000 <= now < 1_000_000 + 1000
    time.sleep(0.05)
    later = clock.now_ms()
    assert later is not None and later >= now + 40


def test_backfill_starts_at_the_last_bar_seen_or_the_window() -> None:
    cursor = CandleCursor()
    now = 10_000_000
    assert cursor.backfill_range("BTC", "1m", now, 3_600_000) == (6_360_000, now)
    assert cursor.observe(candle(9_000_000)) is True
    assert cursor.observe(candle(9_000_000)) is False  # same bar updated
    assert cursor.observe(candle(8_940_000)) is False  # older bar
    assert cursor.backfill_range("BTC", "1m", now, 3_600_000) == (9_000_000, now)
    cursor.forget("BTC")
    assert cursor.backfill_range("BTC", "1m", now, 60_000)[0] == 9_900_000


def test_missing_opens() -> None:
    assert missing_opens([0, 60_000, 120_000], "1m") == 0
    assert missing_opens([0, 240_000, 60_000], "1m") == 2
    assert missing_opens([0, 900_000 * 3], "15m") == 2
