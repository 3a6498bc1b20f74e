"""Replaying the bundled data: what a step holds, and that nothing comes from the future."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bistouryd.simexchange.datafiles import DataError, bundled_data_dir, load_folder
from bistouryd.simexchange.replay import DAY_MS, STEP_MS, plan_replay


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return plan_replay(load_folder(bundled_data_dir()), seed=0, start_ms=None)


def test_the_default_start_leaves_a_day_of_history(plan) -> None:  # type: ignore[no-untyped-def]
    data = load_folder(bundled_data_dir())
    first = max(data.candles[c][60_000][0].open_ts_ms for c in ("BTC", "ETH"))
    assert plan.start_ms == first + DAY_MS - (first + DAY_MS) % STEP_MS
    assert [f.rules.name for f in plan.feeds] == ["BTC", "ETH"]
    assert [(f.rules.asset, f.rules.sz_decimals) for f in plan.feeds] == [(0, 5), (1, 4)]
    assert plan.shape_only == ["DYDX"]


def test_steps_hold_only_their_own_second_and_rebuild_the_bar() -> None:
    data = load_folder(bundled_data_dir())
    feed = plan_replay(data, seed=3, start_ms=None).feeds[0]
    bar_open = feed.time_ms - feed.time_ms % 60_000 + 60_000
    while feed.time_ms < bar_open:
        feed.next_block()
    trades = []
    for _ in range(60):
        a = feed.time_ms
        block = feed.next_block()
        assert all(a <= t.ts_ms < block.ts_ms for t in block.trades)
        assert block.bid_px < block.ask_px
        trades.extend(block.trades)
        if block.trades:
            assert block.trades[-1].px in (block.bid_px, block.ask_px)
    recorded = next(b for b in data.candles["BTC"][60_000] if b.open_ts_ms == bar_open)
    assert next(t.px for t in trades) == recorded.open_px
    assert [t.px for t in trades][-1] == recorded.close_px
    assert max(t.px for t in trades) == recorded.high_px
    assert round(sum(t.sz for t in trades), 5) == recorded.volume_sz


def test_no_lookahead_in_funding_and_the_open_bar() -> None:
    feed = plan_replay(load_folder(bundled_data_dir()), seed=0, start_ms=None).feeds[0]
    now = feed.time_ms
    assert all(r.ts_ms < now for r in feed.funding_history(now - DAY_MS, now + DAY_MS))
    for _ in range(90):
        block = feed.next_block()
        partial = feed.partial_bar()
        if partial is not None:
            assert partial.open_ts_ms <= feed.time_ms < partial.open_ts_ms + 60_000
        if block.funding is not None:
            assert block.funding.ts_ms < block.ts_ms
    bars = feed.candles.query(60_000, now, now + DAY_MS, feed.time_ms, feed.partial_bar())
    assert bars and bars[-1].open_ts_ms <= feed.time_ms


def test_the_same_seed_replays_the_same_tape() -> None:
    data = load_folder(bundled_data_dir())
    a = plan_replay(data, seed=5, start_ms=None).feeds[1]
    b = plan_replay(data, seed=5, start_ms=None).feeds[1]
    assert [a.next_block() for _ in range(30)] == [b.next_block() for _ in range(30)]


def test_a_start_outside_the_data_is_refused() -> None:
    with pytest.raises(DataError, match="outside the data"):
        plan_replay(load_folder(bundled_data_dir()), seed=0, start_ms=1)


def test_a_recorded_book_series_is_replayed_as_is(tmp_path: Path) -> None:
    lines = []
    for i in range(5):
        book = {
            "coin": "SOL",
            "time": 1_000_000 + i * 1000,
            "levels": [
                [{"px": f"{150 + i}.1", "sz": "2.5", "n": 1}],
                [{"px": f"{150 + i}.2", "sz": "1.0", "n": 1}],
            ],
        }
        lines.append(
            json.dumps({"time": "x", "ver_num": 1, "raw": {"channel": "l2Book", "data": book}})
        )
    (tmp_path / "sol.ndjson").write_text("\n".join(lines))
    plan = plan_replay(load_folder(tmp_path), seed=0, start_ms=None)
    [feed] = plan.feeds
    assert feed.rules.sz_decimals == 1  # inferred from the recorded sizes
    blocks = [feed.next_block() for _ in range(2)]
    assert all(b.recorded_book is not None for b in blocks)
    assert blocks[-1].bid_px == blocks[-1].recorded_book.bid_px[0]  # type: ignore[union-attr]
    assert feed.sources()[1].origin == "recorded"
