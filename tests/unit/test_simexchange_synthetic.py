"""The seeded random-walk market."""

from __future__ import annotations

from bistouryd.exchange.rules import AssetRules, valid_px
from bistouryd.simexchange.synthetic import HOUR_MS, plan_synthetic

START = 1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS + 30_000
KNOWN = {"BTC": AssetRules("BTC", 0, 5, 50)}


def feeds(seed: int = 1, rate: float = 20.0):  # type: ignore[no-untyped-def]
    return plan_synthetic(["BTC", "ZZZ"], KNOWN, {"BTC": 60_000.0}, seed, START, rate)


def test_coins_keep_real_rules_or_get_realistic_lots() -> None:
    btc, zzz = feeds()
    assert btc.rules == AssetRules("BTC", 0, 5, 50)
    px = (zzz.bid_px + zzz.ask_px) / 2
    lot_usd = px * 10**-zzz.rules.sz_decimals
    assert 0.01 <= lot_usd <= 1.0 or zzz.rules.sz_decimals in (0, 5)
    assert zzz.rules.asset == 1


def test_the_rate_sets_the_step_and_coins_are_staggered() -> None:
    btc, zzz = feeds(rate=20.0)  # 10 updates per second per coin
    assert btc.next_ts_ms == START and zzz.next_ts_ms == START + 50
    a = btc.next_block()
    assert btc.next_ts_ms == a.ts_ms + 100


def test_the_walk_is_deterministic_on_the_grid_and_builds_candles() -> None:
    btc, _ = feeds()
    again, _ = feeds()
    blocks = [btc.next_block() for _ in range(3000)]  # five minutes
    assert blocks[:50] == [again.next_block() for _ in range(50)]
    trades = [t for b in blocks for t in b.trades]
    assert all(valid_px(t.px, 5) and t.sz > 0 for t in trades)
    assert all(b.bid_px < b.ask_px for b in blocks)
    bars = btc.candles.query(60_000, START - 3_600_000, btc.time_ms, btc.time_ms, btc.partial_bar())
    assert len(bars) >= 60 + 5  # the generated history, then the bars of the walk
    live = [b for b in bars if b.open_ts_ms >= START - START % 60_000]
    assert sum(b.trades_n or 0 for b in live) == len(trades)
    assert btc.funding_history(START - 86_400_000, START)  # a day of hourly history


def test_a_different_seed_walks_differently() -> None:
    a, _ = feeds(seed=1)
    b, _ = feeds(seed=2)
    assert [a.next_block().trades for _ in range(5)] != [b.next_block().trades for _ in range(5)]
