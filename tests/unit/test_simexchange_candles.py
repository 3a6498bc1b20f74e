"""candleSnapshot as the simulator serves it: aggregation, no lookahead, the 5000-bar cap."""

from __future__ import annotations

from bistouryd.market import Candle
from bistouryd.simexchange.candles import MAX_CANDLES, CandleSeries, merge

MIN = 60_000
T0 = 1_753_185_600_000  # 2025-07-22 12:00 UTC: a whole hour


def bar(t: int, o: float, h: float, lo: float, c: float, v: float, interval: str = "1m") -> Candle:
    step = {"1m": MIN, "5m": 5 * MIN, "1h": 60 * MIN}[interval]
    return Candle(
        coin="BTC",
        interval=interval,  # type: ignore[arg-type]
        open_ts_ms=t,
        close_ts_ms=t + step - 1,
        open_px=o,
        high_px=h,
        low_px=lo,
        close_px=c,
        volume_sz=v,
        trades_n=10,
    )


def minutes(count: int) -> list[Candle]:
    return [bar(T0 + i * MIN, 100 + i, 105 + i, 95 + i, 101 + i, 0.1) for i in range(count)]


def series(count: int = 10) -> CandleSeries:
    s = CandleSeries("BTC", 5, MIN)
    s.add(MIN, minutes(count))
    return s


def test_five_minute_bars_are_aggregated_from_one_minute_bars() -> None:
    bars = series().query(5 * MIN, T0, T0 + 9 * MIN, now_ms=T0 + 10 * MIN, partial=None)
    assert [b.open_ts_ms for b in bars] == [T0, T0 + 5 * MIN]
    first = bars[0]
    assert (first.open_px, first.high_px, first.low_px, first.close_px) == (100, 109, 95, 105)
    assert first.volume_sz == 0.5  # exactly: summed and rounded to the lot
    assert first.trades_n == 50 and first.interval == "5m"
    assert first.close_ts_ms == T0 + 5 * MIN - 1


def test_no_bar_after_now_and_the_open_bar_holds_only_what_traded() -> None:
    now = T0 + 3 * MIN + 30_000
    partial = bar(T0 + 3 * MIN, 103, 104, 102, 103.5, 0.04)
    ones = series().query(MIN, T0, T0 + 60 * MIN, now, partial)
    assert [b.open_ts_ms for b in ones] == [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert ones[-1] is partial
    fives = series().query(5 * MIN, T0, T0 + 60 * MIN, now, partial)
    assert len(fives) == 1
    assert fives[0].close_px == 103.5 and fives[0].high_px == 107  # bar 2's high, not bar 4's
    assert fives[0].volume_sz == 0.34


def test_an_open_bar_with_no_trade_yet_does_not_exist() -> None:
    now = T0 + 3 * MIN  # bar 3 just opened
    assert series().query(MIN, T0 + 3 * MIN, T0 + 9 * MIN, now, None) == []


def test_the_bar_containing_start_time_is_included() -> None:
    bars = series().query(MIN, T0 + 30_000, T0 + MIN, T0 + 10 * MIN, None)
    assert [b.open_ts_ms for b in bars] == [T0, T0 + MIN]


def test_a_recorded_coarse_bar_wins_over_aggregating_finer_ones() -> None:
    s = series(60)
    recorded = bar(T0, 1, 2, 0.5, 1.5, 42.0, "1h")
    s.add(60 * MIN, [recorded])
    assert s.query(60 * MIN, T0, T0, T0 + 61 * MIN, None) == [recorded]


def test_an_interval_finer_than_the_data_has_no_bars() -> None:
    s = CandleSeries("BTC", 5, 60 * MIN)
    s.add(60 * MIN, [bar(T0, 1, 2, 0.5, 1.5, 1.0, "1h")])
    assert s.query(MIN, T0, T0 + 60 * MIN, T0 + 61 * MIN, None) == []


def test_at_most_5000_bars_and_only_the_most_recent_5000() -> None:
    s = series(6000)
    now = T0 + 6000 * MIN + 1  # the 6001st bar just opened: nothing traded in it yet
    partial = bar(T0 + 6000 * MIN, 1, 1, 1, 1, 0.001)
    bars = s.query(MIN, T0, now, now, partial)
    assert len(bars) == MAX_CANDLES  # the open bar is one of the 5000
    assert bars[0].open_ts_ms == T0 + 1001 * MIN and bars[-1] is partial
    older = s.query(MIN, T0, T0 + 1000 * MIN, now, partial)
    assert older == []  # no longer available, as on the real exchange
    capped = series(6000).query(MIN, T0, T0 + 6000 * MIN, T0 + 7000 * MIN, None)
    assert len(capped) == 3999  # the window: the last 5000 intervals, the open one included


def test_synthetic_series_keep_a_bounded_number_of_bars() -> None:
    s = CandleSeries("BTC", 5, MIN, keep=100)
    for b in minutes(500):
        s.append(b)
    assert 100 <= len(s.bars(MIN)) <= 110
    assert s.bars(MIN)[-1].open_ts_ms == T0 + 499 * MIN


def test_merge_keeps_unknown_trade_counts_unknown() -> None:
    a = bar(T0, 1, 2, 0.5, 1.5, 1.0).model_copy(update={"trades_n": None})
    assert merge([a, bar(T0 + MIN, 1, 2, 0.5, 1.5, 1.0)], 5 * MIN, T0, 5).trades_n is None
