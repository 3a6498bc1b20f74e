"""Order flow strategy: imbalance, spread/microprice, walls, flow, emit policy, properties."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bistouryd.market import L2Book, Trade, Trades
from bistouryd.strategies.base import Signal, unbacked_numbers
from bistouryd.strategies.order_flow import OrderFlow, OrderFlowParams

COIN = "BTC"
T0 = 1_761_786_000_000
Level = tuple[float, float]  # (px, sz)
Event = L2Book | Trades


def book(ts: int, bids: Sequence[Level], asks: Sequence[Level]) -> L2Book:
    return L2Book(
        coin=COIN,
        ts_ms=ts,
        bid_px=[p for p, _ in bids],
        bid_sz=[s for _, s in bids],
        bid_n=[1] * len(bids),
        ask_px=[p for p, _ in asks],
        ask_sz=[s for _, s in asks],
        ask_n=[1] * len(asks),
    )


def flat(ts: int, best_bid: int = 999, levels: int = 20, **sizes: float) -> L2Book:
    """A 1-tick-spread book of size 1.0 everywhere; ``b3=10`` sets bid level 3's size."""
    bids = [(float(best_bid - i), sizes.get(f"b{i}", 1.0)) for i in range(levels)]
    asks = [(float(best_bid + 2 + i), sizes.get(f"a{i}", 1.0)) for i in range(levels)]
    return book(ts, bids, asks)


def trades(ts: int, *items: tuple[float, float, str]) -> Trades:
    return Trades(
        coin=COIN,
        trades=[
            Trade(coin=COIN, ts_ms=ts + k, px=px, sz=sz, side=side, tid=k, hash="0x0")  # type: ignore[arg-type]
            for k, (px, sz, side) in enumerate(items)
        ],
    )


def run(events: Sequence[Event], params: OrderFlowParams | None = None) -> list[Signal]:
    strat = OrderFlow(COIN, params or OrderFlowParams())
    return [s for e in events if (s := strat.update(e)) is not None]


def every_book(**kw: object) -> OrderFlowParams:
    return OrderFlowParams(emit_interval_s=1, **kw)  # type: ignore[arg-type]


# ---- hand-computed scenarios ------------------------------------------------------------


def test_weighted_imbalance_on_a_three_level_book() -> None:
    # Bids 99.9/99.8/99.7 sized 4/2/1, asks 100.1/100.2/100.3 sized 1/1/1; w = 1, 1/2, 1/3.
    #   depth 1: (4 - 1) / (4 + 1)                    = 0.6
    #   depth 2: (4 + 1 - 1.5) / (4 + 1 + 1.5)        = 3.5 / 6.5     = 0.538462
    #   depth 3: (4 + 1 + 1/3 - 1.8333) / (5.3333 + 1.8333) = 3.5 / 7.1667 = 0.488372
    # mix = mean = 0.542278; score = 0.35 * 0.542278 = 0.189797 >= 0.15 -> long.
    # Median level size 1 -> typical 1, wall threshold 5: no walls (4 < 5).
    # mid 100.0, spread 0.2 / 100 = 0.002 (20.0 bps);
    # microprice (99.9 * 1 + 100.1 * 4) / 5 = 100.06, offset 0.0006 (6.00 bps above mid).
    params = OrderFlowParams(depth_levels=[1, 2, 3])
    bids = [(99.9, 4.0), (99.8, 2.0), (99.7, 1.0)]
    asks = [(100.1, 1.0), (100.2, 1.0), (100.3, 1.0)]
    sigs = run([book(T0 + 500 * k, bids, asks) for k in range(10)], params)
    assert len(sigs) == 1  # warm-up: the 10th book
    sig = sigs[0]
    f = sig.features
    assert sig.ts_ms == T0 + 4500
    assert f["imbalance_1"] == pytest.approx(0.6)
    assert f["imbalance_2"] == pytest.approx(3.5 / 6.5)
    assert f["imbalance_3"] == pytest.approx(3.5 / (16 / 3 + 11 / 6))
    assert f["imbalance_mix"] == pytest.approx(0.542278, abs=1e-6)
    assert f["mid_px"] == pytest.approx(100.0)
    assert f["spread_frac"] == pytest.approx(0.002)
    assert f["microprice_px"] == pytest.approx(100.06)
    assert f["microprice_offset_frac"] == pytest.approx(0.0006)
    assert f["bid_wall_present"] == f["ask_wall_present"] == 0.0
    assert f["score"] == pytest.approx(0.35 * 0.542278, abs=1e-6)
    assert sig.direction == "long"
    assert sig.strength == pytest.approx(0.35 * 0.542278 / 0.6, abs=1e-5)
    assert "Bids outweigh asks (imbalance +0.60 at 1 level)" in sig.narrative
    assert "spread 20.0 bps" in sig.narrative
    assert "microprice 6.00 bps above mid" in sig.narrative
    assert "No trades" in sig.narrative
    assert unbacked_numbers(sig) == []


def test_wall_appears_then_is_pulled_leans_short() -> None:
    # Flat 20x20 book of size 1 (typical 1.0, threshold 5). Books 10..14 carry 10.0 at bid
    # level 3 (px 996): a 10x bid wall, (1000 - 996) / 1000 = 40 bps below the 1000 mid.
    # Book 15 has it back at 1.0 with no trades and the mid unchanged: pulled.
    events: list[Event] = [flat(T0 + 1000 * k) for k in range(10)]
    events += [flat(T0 + 1000 * k, b3=10.0) for k in range(10, 15)]
    events.append(flat(T0 + 15_000))
    sigs = run(events, every_book())
    with_wall = sigs[1]
    f = with_wall.features
    assert f["bid_wall_present"] == 1.0
    assert f["bid_wall_px"] == 996.0
    assert f["bid_wall_multiple"] == pytest.approx(10.0)
    assert f["bid_wall_dist_frac"] == pytest.approx(0.004)
    assert f["last_wall_event_kind"] == 1.0  # appeared
    assert with_wall.direction == "long"  # support below, bid-heavy book
    assert "A 10.0x bid wall at 996 is 40.0 bps below mid." in with_wall.narrative

    pulled = sigs[-1]
    f = pulled.features
    assert f["bid_wall_present"] == 0.0
    assert f["last_wall_event_kind"] == 3.0  # pulled
    assert f["last_wall_event_side"] == 1.0
    assert f["last_wall_event_px"] == 996.0
    assert f["last_wall_event_multiple"] == pytest.approx(10.0)
    # Balanced book, no flow; the pulled bid wall alone: wall lean -1, score 0.30 * -1.
    assert f["imbalance_mix"] == 0.0
    assert f["wall_lean"] == -1.0
    assert f["score"] == pytest.approx(-0.30)
    assert pulled.direction == "short"
    assert "A 10.0x bid wall at 996 was pulled 0s ago." in pulled.narrative
    assert unbacked_numbers(pulled) == []


def test_pulled_wall_lean_fades_over_the_flow_window() -> None:
    # Pulled at t=15 s with weight 0.5 + min(1, 10x / (2 * 5x)) = 1.5; at t=15 + 45 s it has
    # faded to 1.5 * (1 - 45/60) = 0.375 -> score 0.30 * -0.375 = -0.1125: neutral.
    events: list[Event] = [flat(T0 + 1000 * k) for k in range(10)]
    events += [flat(T0 + 1000 * k, b3=10.0) for k in range(10, 15)]
    events += [flat(T0 + 1000 * k) for k in range(15, 61)]
    sig = run(events, every_book())[-1]
    assert sig.ts_ms == T0 + 60_000
    assert sig.features["wall_lean"] == pytest.approx(-0.375)
    assert sig.direction == "neutral"


def test_wall_eaten_by_trades_at_its_price() -> None:
    # A 10x bid wall at the best bid 999. Sellers hit 999 for 9.0 in total, then the book
    # shows bids from 998 and asks from 1001 (mid 999.5 > 999: not crossed). Traded 9.0 at
    # the wall >= half of the 10.0 it lost: eaten. The eaten support leans short.
    events: list[Event] = [flat(T0 + 1000 * k, b0=10.0) for k in range(11)]
    events.append(trades(T0 + 10_200, (999.0, 4.0, "sell"), (999.0, 5.0, "sell")))
    events.append(flat(T0 + 11_000, best_bid=998, a0=1.0))
    sig = run(events, every_book())[-1]
    f = sig.features
    assert f["last_wall_event_kind"] == 4.0  # eaten
    assert f["last_wall_event_side"] == 1.0
    assert f["last_wall_event_px"] == 999.0
    assert f["flow_sell_sz"] == 9.0
    assert f["flow_delta_norm"] == -1.0
    assert f["flow_sell_share"] == 1.0
    assert sig.direction == "short"
    assert "A 10.0x bid wall at 999 was eaten 0s ago." in sig.narrative
    assert "Aggressive selling 100% of 60s flow." in sig.narrative
    assert unbacked_numbers(sig) == []


def test_wall_traded_through_is_eaten_and_pulled_without_trades_is_not() -> None:
    # An ask wall at 1003 (ask level 2); the book then moves up to bids from 1004 (mid
    # 1005 >= 1003): the price went through it, so eaten even without trades seen.
    base: list[Event] = [flat(T0 + 1000 * k, a2=10.0) for k in range(10)]
    sig = run([*base, flat(T0 + 10_000, best_bid=1004)], every_book())[-1]
    assert sig.features["last_wall_event_kind"] == 4.0
    assert sig.features["last_wall_event_side"] == -1.0
    assert sig.direction == "long"  # resistance gone
    # The same wall gone while the mid stays put and buyers trade below it only: pulled.
    lift = trades(T0 + 9_500, (1001.0, 0.5, "buy"))
    sig = run([*base, lift, flat(T0 + 10_000)], every_book())[-1]
    assert sig.features["last_wall_event_kind"] == 3.0
    assert sig.direction == "long"  # a pulled ask wall leans long too


def test_a_wall_requoted_one_level_away_is_moved_not_pulled() -> None:
    events: list[Event] = [flat(T0 + 1000 * k, b3=10.0) for k in range(10)]
    events.append(flat(T0 + 10_000, b2=10.0))  # 996 -> 997, same size
    sig = run(events, every_book())[-1]
    f = sig.features
    assert f["last_wall_event_kind"] == 1.0  # still the appearance, no pull
    assert f["bid_wall_px"] == 997.0
    assert f["wall_ended_lean"] == 0.0


def test_a_wall_that_grows_is_reported() -> None:
    events: list[Event] = [flat(T0 + 1000 * k, b3=6.0) for k in range(10)]
    events.append(flat(T0 + 10_000, b3=9.0))  # 9 >= 1.5 * 6
    sig = run(events, every_book())[-1]
    assert sig.features["last_wall_event_kind"] == 2.0
    assert sig.features["bid_wall_multiple"] == pytest.approx(9.0)


def test_accumulation_turns_absorbed_selling_into_a_long_lean() -> None:
    # 41 flat books over 40 s (mid 1000, bid depth constant). Sellers 3.0 and buyers 1.0:
    # delta = (1 - 3) / 4 = -0.5 (selling 75%). Mid held (>= its value 40 s ago, the window
    # spans >= 30 s) and bid depth held (ratio 1.0 >= 0.95): accumulation 0.5, and the flow
    # counts for the bids: score 0.35 * 0.5 = 0.175 -> long.
    events: list[Event] = []
    for k in range(41):
        events.append(flat(T0 + 1000 * k))
        if k in (5, 20):
            events.append(trades(T0 + 1000 * k + 300, (999.0, 1.5, "sell"), (1001.0, 0.5, "buy")))
    sig = run(events, every_book())[-1]
    f = sig.features
    assert f["flow_delta_norm"] == pytest.approx(-0.5)
    assert f["absorption"] == pytest.approx(0.5)
    assert f["flow_lean"] == pytest.approx(0.5)
    assert f["bid_depth_ratio"] == 1.0
    assert sig.direction == "long"
    assert sig.features["score"] == pytest.approx(0.175)
    assert "Aggressive selling 75% of 60s flow, absorbed as bids hold (accumulation)." in (
        sig.narrative
    )
    # Without a full half window of books behind it there is no absorption call yet.
    early = run(events[:12], every_book())[-1]
    assert early.features["absorption"] == 0.0
    assert early.direction == "short"  # plain net selling: 0.35 * -0.5


def test_flow_window_drops_old_trades() -> None:
    events: list[Event] = [flat(T0)]
    events.append(trades(T0 + 100, (1001.0, 2.0, "buy")))
    events += [flat(T0 + 1000 * k) for k in range(1, 71)]
    sigs = run(events, every_book())
    by_ts = {s.ts_ms: s for s in sigs}
    assert by_ts[T0 + 60_000].features["flow_buy_sz"] == 2.0  # bucket [T0, T0+1s) still in
    assert by_ts[T0 + 61_000].features["flow_buy_sz"] == 0.0
    assert "No trades in the last 60s." in by_ts[T0 + 61_000].narrative


def test_emits_after_warm_up_at_most_once_per_interval() -> None:
    events = [flat(T0 + 500 * k) for k in range(100)]  # 50 s of books, 2 per second
    sigs = run(events)  # default emit_interval_s = 10
    assert [s.ts_ms - T0 for s in sigs] == [4500, 14500, 24500, 34500, 44500]
    assert run(events[:9]) == []  # fewer than 10 books: nothing
    assert run([trades(T0, (1000.0, 1.0, "buy"))]) == []


def test_one_sided_book_is_skipped() -> None:
    strat = OrderFlow(COIN, every_book())
    assert strat.update(book(T0, [(99.0, 1.0)], [])) is None
    assert strat._books == 0


def test_reconfigure_keeps_state() -> None:
    strat = OrderFlow(COIN, every_book())
    for k in range(12):
        strat.update(flat(T0 + 1000 * k, b3=10.0))
    strat.reconfigure(
        every_book(typical_level_books=10, depth_levels=[3, 7], wall_size_multiple=8.0)
    )
    sig = strat.update(flat(T0 + 12_000, b3=10.0))
    assert sig is not None
    assert set(k for k in sig.features if k.startswith("imbalance_")) >= {
        "imbalance_3",
        "imbalance_7",
    }
    assert sig.features["bid_wall_present"] == 1.0  # 10x still clears the new 8x
    assert sig.features["wall_size_multiple"] == 8.0


def test_params_defaults_and_bounds() -> None:
    p = OrderFlowParams()
    assert p.depth_levels == [5, 10, 20]
    assert p.wall_size_multiple == 5.0
    assert (p.emit_interval_s, p.flow_window_s, p.typical_level_books) == (10, 60, 120)
    OrderFlowParams(depth_levels=[1, 2, 3, 50, 100])
    bad: list[dict[str, object]] = [
        {"depth_levels": []},
        {"depth_levels": [0, 5]},
        {"depth_levels": [5, 101]},
        {"depth_levels": [10, 5]},
        {"depth_levels": [5, 5]},
        {"depth_levels": [1, 2, 3, 4, 5, 6]},
        {"wall_size_multiple": 1.0},
        {"wall_size_multiple": 100.5},
        {"emit_interval_s": 0},
        {"emit_interval_s": 3601},
        {"flow_window_s": 4},
        {"flow_window_s": 3601},
        {"typical_level_books": 9},
        {"typical_level_books": 5001},
        {"unknown_key": 1},
    ]
    for kw in bad:
        with pytest.raises(ValidationError):
            OrderFlowParams(**kw)  # type: ignore[arg-type]


# ---- properties ------------------------------------------------------------------------

CENTER = 10_000  # prices are integers; mirroring is px -> 2 * CENTER - px, exact
SIZES = [0.1, 0.5, 1.0, 1.0, 1.0, 2.0, 3.0, 1.5, 12.0, 40.0]

Step = tuple[int, list[Level], list[Level], list[tuple[int, float, float, str]]]


@st.composite
def markets(draw: st.DrawFn) -> list[Step]:
    """Books with a random-walk best bid, 1..20 levels a side on integer prices, and
    trades between them (offset in ms after the book, px, sz, side). Hypothesis draws
    the shape and a seed; the seed fills in the many sizes (drawing each one through
    hypothesis would be several times slower)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    n = draw(st.integers(10, 45))
    max_levels = draw(st.sampled_from([1, 3, 20]))
    trade_rate = draw(st.sampled_from([0, 1, 4]))
    buy_bias = draw(st.sampled_from([0.2, 0.5, 0.8]))
    best = CENTER - 5
    steps: list[Step] = []
    for _ in range(n):
        dt = rng.choice([300, 500, 500, 1000, 2500, 7000])
        best += rng.randint(-2, 2)
        spread = rng.randint(1, 3)
        bids: list[Level] = []
        px = best
        for _ in range(rng.randint(1, max_levels)):
            bids.append((float(px), rng.choice(SIZES)))
            px -= rng.randint(1, 2)
        asks: list[Level] = []
        px = best + spread
        for _ in range(rng.randint(1, max_levels)):
            asks.append((float(px), rng.choice(SIZES)))
            px += rng.randint(1, 2)
        trs = [
            (
                1 + 50 * j,
                float(best + rng.randint(-3, spread + 3)),
                rng.choice(SIZES),
                "buy" if rng.random() < buy_bias else "sell",
            )
            for j in range(rng.randint(0, trade_rate))
        ]
        steps.append((dt, bids, asks, trs))
    return steps


def build(
    steps: list[Step], mirror: bool = False, cuts: Sequence[int] = ()
) -> list[tuple[int, Event]]:
    """(event time, event) pairs; ``cuts`` split each step's trades into batches."""
    out: list[tuple[int, Event]] = []
    ts = T0
    for n, (dt, bids, asks, trs) in enumerate(steps):
        ts += dt
        if mirror:
            bids, asks = (
                [(2 * CENTER - p, s) for p, s in asks],
                [(2 * CENTER - p, s) for p, s in bids],
            )
        out.append((ts, book(ts, bids, asks)))
        items = [
            Trade(
                coin=COIN,
                ts_ms=ts + off,
                px=2 * CENTER - px if mirror else px,
                sz=sz,
                side=("sell" if side == "buy" else "buy") if mirror else side,  # type: ignore[arg-type]
                tid=n * 10 + j,
                hash="0x0",
            )
            for j, (off, px, sz, side) in enumerate(trs)
        ]
        cut = cuts[n % len(cuts)] if cuts else 0
        batches = [items[:cut], items[cut:]] if 0 < cut < len(items) else [items]
        for batch in batches:
            if batch:
                out.append((batch[-1].ts_ms, Trades(coin=COIN, trades=batch)))
    return out


def signals(events: list[tuple[int, Event]], params: OrderFlowParams) -> list[Signal]:
    return run([e for _, e in events], params)


def dump(sigs: list[Signal]) -> list[dict[str, object]]:
    return [s.model_dump(exclude={"id"}) for s in sigs]


PARAMS = st.builds(
    OrderFlowParams,
    depth_levels=st.sampled_from([[5, 10, 20], [1, 3], [2], [1, 2, 5, 10, 40]]),
    wall_size_multiple=st.sampled_from([2.0, 5.0, 8.0]),
    emit_interval_s=st.sampled_from([1, 3, 10]),
    flow_window_s=st.sampled_from([5, 20, 60]),
    typical_level_books=st.sampled_from([10, 30, 120]),
)
FLIPPED = (
    "imbalance_mix",
    "flow_net_sz",
    "flow_delta_norm",
    "flow_lean",
    "absorption",
    "wall_lean",
    "wall_ended_lean",
    "score",
)
SWAPPED = (
    ("flow_buy_sz", "flow_sell_sz"),
    ("flow_buy_share", "flow_sell_share"),
    ("bid_wall_multiple", "ask_wall_multiple"),
    ("bid_wall_level", "ask_wall_level"),
    ("bid_wall_present", "ask_wall_present"),
    ("bid_depth_ratio", "ask_depth_ratio"),
)


@settings(max_examples=60, deadline=None)
@given(markets(), PARAMS)
def test_signals_are_sane_backed_and_deterministic(
    steps: list[Step], params: OrderFlowParams
) -> None:
    events = build(steps)
    sigs = signals(events, params)
    assert sigs  # at least 10 books
    for s in sigs:
        assert 0 <= s.strength <= 1 and 0 <= s.confidence <= 1
        assert all(math.isfinite(v) for v in s.features.values())
        for d in params.depth_levels:
            assert -1 <= s.features[f"imbalance_{d}"] <= 1
        assert 0 <= s.features["flow_buy_share"] <= 1
        assert -1 <= s.features["score"] <= 1
        assert 1 <= len(s.narrative) <= 600
        assert unbacked_numbers(s) == [], s.narrative
    for a, b in pairwise(sigs):
        assert b.ts_ms - a.ts_ms >= params.emit_interval_s * 1000
    assert dump(signals(events, params)) == dump(sigs)


@settings(max_examples=60, deadline=None)
@given(markets(), PARAMS, st.data())
def test_no_lookahead(steps: list[Step], params: OrderFlowParams, data: st.DataObject) -> None:
    events = build(steps)
    cut = data.draw(st.sampled_from([ts for ts, e in events if isinstance(e, L2Book)]))
    full = [s for s in signals(events, params) if s.ts_ms < cut]
    head = signals([(ts, e) for ts, e in events if ts < cut], params)
    assert dump(head) == dump(full)


@settings(max_examples=60, deadline=None)
@given(markets(), PARAMS, st.lists(st.integers(1, 3), min_size=1, max_size=5))
def test_splitting_trades_messages_changes_nothing(
    steps: list[Step], params: OrderFlowParams, cuts: list[int]
) -> None:
    assert dump(signals(build(steps, cuts=cuts), params)) == dump(signals(build(steps), params))


@settings(max_examples=60, deadline=None)
@given(markets(), PARAMS)
def test_mirrored_market_flips_every_lean(steps: list[Step], params: OrderFlowParams) -> None:
    plain = signals(build(steps), params)
    mirrored = signals(build(steps, mirror=True), params)
    assert len(plain) == len(mirrored)
    flip = {"long": "short", "short": "long", "neutral": "neutral"}
    for a, b in zip(plain, mirrored, strict=True):
        fa, fb = a.features, b.features
        assert a.ts_ms == b.ts_ms
        assert b.direction == flip[a.direction]
        assert b.strength == a.strength and b.confidence == a.confidence
        for d in params.depth_levels:
            assert fb[f"imbalance_{d}"] == -fa[f"imbalance_{d}"]
        for k in FLIPPED:
            assert fb[k] == -fa[k], k
        for k1, k2 in SWAPPED:
            assert fb[k1] == fa[k2] and fb[k2] == fa[k1], k1
        for k in ("microprice_offset_frac", "mid_change_frac"):
            assert math.copysign(1, fb[k]) == -math.copysign(1, fa[k]) or fa[k] == fb[k] == 0
