"""The volume-profile strategy: hand-built profiles with hand-computed POC and value area,
acceptance and rejection at the value-area edges, window expiry, the UTC-day session, the
candle fallback, and properties over random trade streams."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bistouryd.market import Candle, MarketEvent, Trade, Trades
from bistouryd.strategies.base import Signal, unbacked_numbers
from bistouryd.strategies.volume_profile import VolumeProfile, VolumeProfileParams, _value_area

DAY = 86_400_000
MIDNIGHT = 1_700_000_000_000 // DAY * DAY + DAY  # 00:00 UTC
T0 = MIDNIGHT - 6 * 3_600_000  # 18:00 UTC the day before
S = 1000
MIN = 60_000

_tid = 0


def trade(ts: int, px: float, sz: float = 1.0) -> Trade:
    global _tid
    _tid += 1
    return Trade(coin="BTC", ts_ms=ts, px=px, sz=sz, side="buy", tid=_tid, hash="0x0")


def batch(*trades: Trade) -> Trades:
    return Trades(coin="BTC", trades=list(trades))


def make(**kw: object) -> VolumeProfile:
    # bin_bps=100 of a first price of 100 gives bins exactly 1.0 wide, centred on integers
    params = {"bin_bps": 100, "min_trades": 10, "emit_interval_s": 60, **kw}
    return VolumeProfile("BTC", VolumeProfileParams.model_validate(params))


def run(strategy: VolumeProfile, events: Iterable[MarketEvent]) -> list[Signal]:
    return [s for e in events if (s := strategy.update(e)) is not None]


def check(sig: Signal) -> None:
    assert unbacked_numbers(sig) == [], sig.narrative
    assert 0 <= sig.strength <= 1 and 0 <= sig.confidence <= 1
    assert all(math.isfinite(v) for v in sig.features.values())
    f = sig.features
    assert f["val_px"] <= f["poc_px"] <= f["vah_px"]
    assert f["value_area_covered"] >= f["value_area_target"] - 1e-9
    if "session_poc_px" in f:
        assert f["session_val_px"] <= f["session_poc_px"] <= f["session_vah_px"]


def dump(sigs: list[Signal]) -> list[dict[str, object]]:
    return [s.model_dump(exclude={"id"}) for s in sigs]


# ---- the value-area algorithm -----------------------------------------------------------


def test_value_area_expansion_and_tie_rules() -> None:
    # bins -3..3: 1, 3, 6, 10, 5, 2, 1 (total 28, 70% = 19.6). From the POC (10): above 5 <
    # below 6 → add below (16); above 5 > below 3 → add above (21 >= 19.6). VA = -1..1.
    bins = {-3: 1.0, -2: 3.0, -1: 6.0, 0: 10.0, 1: 5.0, 2: 2.0, 3: 1.0}
    a = _value_area(bins, 0, 70.0)
    assert a is not None
    assert (a.poc, a.lo, a.hi, a.covered, a.total) == (0, -1, 1, 21.0, 28.0)
    # equal neighbours are added together: 10 + 3 + 3 = 16 >= 11.2
    a = _value_area({-1: 3.0, 0: 10.0, 1: 3.0}, 0, 70.0)
    assert a is not None and (a.lo, a.hi, a.covered) == (-1, 1, 16.0)
    # one side at the end of the profile: only the other side grows; the empty bin 1 (0)
    # inside the range is crossed: 10 + 0 = 10 < 10.5, then + 5 = 15
    a = _value_area({0: 10.0, 2: 5.0}, 0, 70.0)
    assert a is not None and (a.lo, a.hi, a.covered) == (0, 2, 15.0)
    # POC ties: the bin nearest the last trade's bin, then the lower one
    tie = {-1: 5.0, 0: 1.0, 1: 5.0}
    assert _value_area(tie, 1, 50.0).poc == 1  # type: ignore[union-attr]
    assert _value_area(tie, -4, 50.0).poc == -1  # type: ignore[union-attr]
    assert _value_area(tie, 0, 50.0).poc == -1  # type: ignore[union-attr]
    assert _value_area({}, 0, 70.0) is None


# ---- a hand-built profile ---------------------------------------------------------------


def hand_profile() -> list[Trades]:
    """Size-1 trades one second apart; the first price (100) fixes 1.0-wide bins."""
    pxs = [100.0] * 10 + [97.0] + [98.0] * 3 + [101.0] * 5 + [102.0] * 2 + [103.0] + [99.0] * 6
    return [batch(*(trade(T0 + i * S, px) for i, px in enumerate(pxs)))]


def test_hand_built_profile() -> None:
    s = make()
    first = run(s, hand_profile())
    # the 10th trade warms the window up: a first look at ten trades all at 100
    assert [sig.ts_ms for sig in first] == [T0 + 9 * S]
    assert first[0].features["poc_px"] == 100.0
    assert first[0].features["first_look"] == 1.0
    [sig] = run(s, [batch(trade(T0 + 70 * S, 100.0))])
    check(sig)
    f = sig.features
    # volume by bin: 97:1, 98:3, 99:6, 100:11, 101:5, 102:2, 103:1 → total 29, 70% = 20.3.
    # POC 100 (11); below 6 > above 5 → add 99 (17); above 5 > below 3 → add 101 (22).
    # VA = bins 99..101 → VAL 98.5 (lower edge), VAH 101.5 (upper edge), covered 22/29.
    assert f["poc_px"] == 100.0 and f["val_px"] == 98.5 and f["vah_px"] == 101.5
    assert f["value_area_covered"] == pytest.approx(22 / 29)
    assert f["window_volume_sz"] == 29.0 and f["window_trades_n"] == 29.0
    assert f["window_span_minutes"] == pytest.approx(70 / 60)
    # 7 bins, mean 29/7 = 4.14; HVN >= 6.21 (only 100, the price's own bin), LVN <= 2.76:
    # 97 (1), 102 (2), 103 (1) → nearest LVNs 102 above and 97 below, no HVN either side
    assert f["mean_bin_sz"] == pytest.approx(29 / 7)
    assert f["lvn_above_px"] == 102.0 and f["lvn_below_px"] == 97.0
    assert "hvn_above_px" not in f and "hvn_below_px" not in f
    # inside the value area at the POC, which has not moved: neutral
    assert f["price_position"] == 0.0 and f["poc_migration_frac"] == 0.0
    assert f["rejected_vah"] == f["rejected_val"] == f["accepted_above"] == 0.0
    assert sig.direction == "neutral" and sig.strength == 0.0
    assert sig.ts_ms == T0 + 70 * S
    assert f["session_poc_px"] == 100.0  # the same trades, all on one UTC day
    assert sig.narrative == (
        "Price 100.0 trades inside the value area (VAH 101.5, VAL 98.5, 70% of the last 240 "
        "minutes' volume), at the POC. POC 100.0 unchanged since the last look; UTC-session "
        "POC 100.0. Nearest low-volume node 102.0 above / 97.0 below."
    )


def test_poc_migration() -> None:
    s = make()
    run(s, hand_profile())
    run(s, [batch(trade(T0 + 70 * S, 100.0))])
    # 8 size-1 trades at 101 make it the POC (5 + 8 = 13 > 11): +1.0 from 100 = +100 bps
    sigs = run(s, [batch(trade(T0 + (80 + i) * S, 101.0)) for i in range(8)])
    assert sigs == []
    [sig] = run(s, [batch(trade(T0 + 140 * S, 101.0))])
    check(sig)
    assert sig.features["poc_px"] == 101.0 and sig.features["prev_poc_px"] == 100.0
    assert sig.features["poc_migration_frac"] == pytest.approx(0.01)
    # lean: 0.3 × clamp(100 bps / (3 × 100 bps)) = 0.1 (below the 0.15 needed for a call)
    assert sig.features["migration_lean"] == pytest.approx(0.1)
    assert "migrated +100.0 bps since the last look" in sig.narrative


# ---- the auction at the value-area edges ------------------------------------------------


def heavy_profile() -> list[Trades]:
    """All at T0: 100 ×10 of size 10 (100), 99 and 101 ×10 of size 4 (40 each), 98 and
    102 ×2 of size 2 (4 each); total 188. From the POC: 40 = 40 → both (180 >= 131.6), so
    the value area is 99..101: VAL 98.5, VAH 101.5. The last trade is back at the POC."""
    pxs = [(100.0, 10.0)] * 9
    pxs += [(99.0, 4.0), (101.0, 4.0)] * 10 + [(98.0, 2.0), (102.0, 2.0)] * 2
    pxs += [(100.0, 10.0)]
    return [batch(*(trade(T0, px, sz) for px, sz in pxs))]


def test_acceptance_above_value_area() -> None:
    s = make(acceptance_trades=5, acceptance_minutes=2)
    run(s, heavy_profile())  # the first look, at T0
    # small trades at 103 every 30 s from T0 + 60 s: the first look outside is "testing"
    sigs = run(s, [batch(trade(T0 + 60 * S + i * 30 * S, 103.0, 0.5)) for i in range(5)])
    assert [x.ts_ms for x in sigs] == [T0 + 60 * S, T0 + 120 * S, T0 + 180 * S]
    testing, _, accepted = sigs
    assert testing.features["price_position"] == 1.0
    assert testing.features["accepted_above"] == 0.0
    assert "testing above the value area" in testing.narrative
    # at T0 + 180 s: 5 trades (60, 90, 120, 150, 180 s) over 2.0 minutes outside → accepted
    check(accepted)
    f = accepted.features
    assert f["vah_px"] == 101.5 and f["val_px"] == 98.5 and f["poc_px"] == 100.0
    assert f["accepted_above"] == 1.0 and f["outside_trades_n"] == 5.0
    assert f["outside_minutes"] == pytest.approx(2.0)
    # extension (103 - 101.5) / VA width 3 = 0.5 → 0.55 + 0.45 × 0.5 = 0.775; POC unmoved
    assert accepted.direction == "long"
    assert accepted.strength == pytest.approx(0.775)
    assert "accepted above the value area" in accepted.narrative
    assert "5 trades over 2.0 minutes outside" in accepted.narrative


def test_acceptance_below_value_area_is_short() -> None:
    s = make(acceptance_trades=3, acceptance_minutes=1)
    run(s, heavy_profile())
    sigs = run(s, [batch(trade(T0 + 60 * S + i * 30 * S, 97.0, 0.5)) for i in range(4)])
    last = sigs[-1]
    check(last)
    assert last.features["accepted_below"] == 1.0 and last.direction == "short"
    # (101.5 ... 98.5) - 97 = 1.5 below VAL → the same 0.775
    assert last.strength == pytest.approx(0.775)


def test_rejection_at_vah_then_reversion_to_poc() -> None:
    s = make(acceptance_trades=5, acceptance_minutes=2)
    run(s, heavy_profile())
    # two pokes to 103 (not accepted), then back inside at 101 (the top value-area bin)
    sigs = run(
        s,
        [
            batch(trade(T0 + 60 * S, 103.0, 0.5)),
            batch(trade(T0 + 90 * S, 103.0, 0.5)),
            batch(trade(T0 + 100 * S, 101.0, 0.5)),
            batch(trade(T0 + 120 * S, 101.0, 0.5)),
        ],
    )
    assert [x.ts_ms for x in sigs] == [T0 + 60 * S, T0 + 120 * S]
    rej = sigs[1]
    check(rej)
    f = rej.features
    assert f["rejected_vah"] == 1.0 and f["price_position"] == 0.0
    assert f["rejection_extreme_px"] == 103.0 and f["rejection_edge_px"] == 101.5
    assert f["rejection_age_minutes"] == pytest.approx(20 / 60)
    # room back to the POC: (101 - 100) / (101.5 - 100) = 2/3 → -(0.4 + 0.45 × 2/3) = -0.7
    assert rej.direction == "short"
    assert rej.strength == pytest.approx(0.7)
    assert "rejected at the value-area high" in rej.narrative
    # a trade at the POC completes the reversion: back to neutral
    sigs = run(s, [batch(trade(T0 + 130 * S, 100.0, 0.5)), batch(trade(T0 + 180 * S, 100.0))])
    assert sigs[-1].features["rejected_vah"] == 0.0 and sigs[-1].direction == "neutral"


def test_rejection_at_val_is_long_and_expires() -> None:
    s = make(acceptance_trades=5, acceptance_minutes=2, rejection_minutes=2)
    run(s, heavy_profile())
    run(s, [batch(trade(T0 + 60 * S, 97.0, 0.5)), batch(trade(T0 + 70 * S, 99.0, 0.5))])
    [rej] = run(s, [batch(trade(T0 + 120 * S, 99.0, 0.5))])
    check(rej)
    assert rej.features["rejected_val"] == 1.0 and rej.direction == "long"
    # still inside, away from the POC, three minutes after the return: forgotten
    [later] = run(s, [batch(trade(T0 + 250 * S, 99.0, 0.5))])
    assert later.features["rejected_val"] == 0.0 and later.direction == "neutral"


# ---- the rolling window and the session -------------------------------------------------


def test_window_expiry_removes_old_volume() -> None:
    s = make(window_minutes=15)
    # 20 size-1 trades at 100 at T0; then size-0.5 trades at 102 every 30 s from T0 + 5 min
    early = [batch(*(trade(T0, 100.0) for _ in range(20)))]
    late = [batch(trade(T0 + 5 * MIN + i * 30 * S, 102.0, 0.5)) for i in range(31)]
    sigs = {x.ts_ms: x for x in run(s, early + late)}
    before = sigs[T0 + 14 * MIN]
    # at 14 min: 20 at 100 plus 19 trades at 102 (5.0 .. 14.0 min) of 0.5
    assert before.features["window_volume_sz"] == pytest.approx(20 + 19 * 0.5)
    assert before.features["poc_px"] == 100.0
    after = sigs[T0 + 20 * MIN]
    check(after)
    # at 20 min the window is (5, 20] min: the 30 trades at 5.5 .. 20.0 min, all at 102
    assert after.features["window_volume_sz"] == pytest.approx(15.0)
    assert after.features["window_trades_n"] == 30.0
    assert after.features["poc_px"] == 102.0
    assert after.features["val_px"] == 101.5 and after.features["vah_px"] == 102.5


def test_no_signal_until_the_window_holds_min_trades() -> None:
    s = make(min_trades=20)
    assert run(s, [batch(trade(T0 + i * 10 * S, 100.0)) for i in range(19)]) == []
    assert len(run(s, [batch(trade(T0 + 190 * S, 100.0))])) == 1
    # a gap longer than the window empties it: no signal until warm again
    gap = T0 + 300 * MIN
    assert run(s, [batch(trade(gap + i * S, 100.0)) for i in range(19)]) == []


def test_session_resets_at_utc_midnight() -> None:
    s = make()
    before = [batch(*(trade(MIDNIGHT - 10 * MIN + i * S, 100.0) for i in range(20)))]
    after = [batch(trade(MIDNIGHT + i * 30 * S, 102.0, 0.5)) for i in range(7)]
    sigs = run(s, before + after)
    last = sigs[-1]
    assert last.ts_ms == MIDNIGHT + 180 * S
    check(last)
    f = last.features
    # the rolling (240 min) profile still has the evening's volume: POC 100
    assert f["poc_px"] == 100.0 and f["window_volume_sz"] == pytest.approx(23.5)
    # the session began at 00:00 UTC: only the seven trades at 102 (0 .. 180 s)
    assert f["session_poc_px"] == 102.0
    assert f["session_trades_n"] == 7.0 and f["session_volume_sz"] == pytest.approx(3.5)
    assert "UTC-session POC 102.0" in last.narrative
    assert "session_poc_px" not in run(make(session=False), before)[0].features


# ---- candles before the first trade -----------------------------------------------------


def candle(t: int, lo: float, hi: float, close: float, vol: float, n: int | None = 20) -> Candle:
    return Candle(
        coin="BTC",
        interval="1m",
        open_ts_ms=t,
        close_ts_ms=t + 59_999,
        open_px=close,
        high_px=hi,
        low_px=lo,
        close_px=close,
        volume_sz=vol,
        trades_n=n,
    )


def test_final_candles_fill_the_profile_before_trades() -> None:
    s = make()
    events: list[MarketEvent] = [
        candle(T0, 99.6, 100.4, 100.0, 10.0),  # in progress ...
        candle(T0, 99.0, 101.0, 100.0, 30.0),  # ... its final version: bins 99, 100, 101
        candle(T0 + MIN, 100.0, 100.0, 100.0, 999.0),  # makes the first final; in progress
        candle(T0 - MIN, 50.0, 60.0, 55.0, 999.0),  # older than the last final: ignored
        Candle(
            coin="BTC",
            interval="5m",
            open_ts_ms=T0,
            close_ts_ms=T0 + 5 * MIN - 1,
            open_px=100,
            high_px=100,
            low_px=100,
            close_px=100,
            volume_sz=999.0,
        ),
    ]
    assert run(s, events) == []
    # the final bar counts as its 20 trades: one trade is enough to warm up
    [sig] = run(s, [batch(trade(T0 + 2 * MIN, 101.0, 2.0))])
    check(sig)
    f = sig.features
    # 30 split equally over 99, 100, 101 (10 each) plus 2 at 101 → POC 101, total 32
    assert f["window_volume_sz"] == pytest.approx(32.0)
    assert f["window_trades_n"] == 21.0
    assert f["poc_px"] == 101.0
    # once trades are seen, candles are ignored (the in-progress one never counts)
    run(s, [candle(T0 + 2 * MIN, 100.0, 100.0, 100.0, 999.0), candle(T0 + 3 * MIN, 1, 2, 1, 9)])
    [sig] = run(s, [batch(trade(T0 + 4 * MIN, 101.0, 1.0))])
    assert sig.features["window_volume_sz"] == pytest.approx(33.0)


# ---- parameters ---------------------------------------------------------------------------


def test_reconfigure_bin_width_rebuilds_the_profile() -> None:
    s = make()
    run(s, hand_profile())
    s.reconfigure(VolumeProfileParams(bin_bps=200, min_trades=10, emit_interval_s=60))
    [sig] = run(s, [batch(trade(T0 + 70 * S, 100.0))])
    check(sig)
    f = sig.features
    # 2.0-wide bins centred on 100 (the first price): [97,99) 97+98 = 4, [99,101) 99+100 =
    # 6 + 11 = 17, [101,103) 101+102 = 7, [103,105) 1 → POC 100, same 29 of volume
    assert f["bin_width_px"] == 2.0 and f["poc_px"] == 100.0
    assert f["window_volume_sz"] == 29.0
    # 70% of 29 = 20.3: 17, then 7 > 4 → add above (24): VA 99 .. 103
    assert f["val_px"] == 99.0 and f["vah_px"] == 103.0


@pytest.mark.parametrize(
    "bad",
    [
        {"value_area_pct": 0},
        {"value_area_pct": 100},
        {"window_minutes": 14},
        {"window_minutes": 7 * 24 * 60 + 1},
        {"bin_bps": 0.4},
        {"bin_bps": 201},
        {"emit_interval_s": 9},
        {"emit_interval_s": 3601},
        {"node_threshold": 0.9},
        {"node_threshold": 11},
        {"min_trades": 9},
        {"acceptance_trades": 0},
        {"acceptance_minutes": -1},
        {"rejection_minutes": 0},
        {"lookback": 3},
    ],
)
def test_params_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VolumeProfileParams.model_validate(bad)


def test_defaults_and_contract() -> None:
    p = VolumeProfileParams()
    assert (p.value_area_pct, p.window_minutes, p.bin_bps) == (70.0, 240, 5.0)
    assert (p.emit_interval_s, p.node_threshold, p.session) == (60, 1.5, True)
    assert VolumeProfile.name == "volume_profile"
    assert VolumeProfile.inputs == frozenset({"trades", "candle"})
    assert VolumeProfile.Params is VolumeProfileParams


# ---- properties over random trade streams -----------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[VolumeProfileParams, list[Trades]]:
    params = VolumeProfileParams(
        value_area_pct=draw(st.floats(5, 95)),
        window_minutes=draw(st.sampled_from([15, 30, 240])),
        bin_bps=draw(st.sampled_from([0.5, 2.0, 5.0, 25.0, 200.0])),
        emit_interval_s=draw(st.sampled_from([10, 30, 60])),
        node_threshold=draw(st.floats(1, 10)),
        session=draw(st.booleans()),
        min_trades=draw(st.sampled_from([10, 30])),
        acceptance_trades=draw(st.integers(1, 10)),
        acceptance_minutes=draw(st.sampled_from([0.0, 0.5, 2.0])),
        rejection_minutes=draw(st.sampled_from([1.0, 30.0])),
    )
    rng = random.Random(draw(st.integers(0, 2**32)))
    px0 = draw(st.sampled_from([0.012345, 3.5, 100.0, 97_000.0]))
    tick = px0 * 0.0002
    ts = MIDNIGHT - draw(st.integers(0, 2 * 3_600_000))
    level = 0
    events = []
    for _ in range(draw(st.integers(1, 150))):
        # mostly seconds apart, sometimes long gaps (window expiry, the UTC midnight reset)
        ts += rng.choice([rng.randint(0, 20 * S), rng.randint(0, 20 * MIN)])
        trades = []
        for _ in range(rng.randint(1, 4)):  # one message spans < 10 s (the minimum interval)
            ts += rng.randint(0, 2 * S)
            level += rng.choice([-1, 0, 1]) if rng.random() < 0.9 else rng.randint(-60, 60)
            px = round(px0 + level * tick, 8)
            trades.append(trade(ts, px if px > 0 else px0, round(rng.uniform(0.001, 5), 3)))
        events.append(batch(*trades))
    return params, events


def one_by_one(events: list[Trades]) -> list[Trades]:
    return [batch(t) for e in events for t in e.trades]


@given(scenarios())
@settings(max_examples=60, deadline=None)
def test_signals_are_consistent_with_an_independent_profile(
    case: tuple[VolumeProfileParams, list[Trades]],
) -> None:
    params, events = case
    s = VolumeProfile("BTC", params)
    trades = [t for e in events for t in e.trades]
    first = trades[0].px
    width = first * params.bin_bps / 10_000.0
    origin = first - width / 2.0
    for i, t in enumerate(trades):
        sig = s.update(batch(t))
        if sig is None:
            continue
        check(sig)
        assert sig.ts_ms == t.ts_ms
        f = sig.features
        if sig.direction == "long":
            assert f["score"] > 0
        elif sig.direction == "short":
            assert f["score"] < 0
        # the window recomputed from scratch: trades with ts > now - window
        now = max(x.ts_ms for x in trades[: i + 1])
        window = [x for x in trades[: i + 1] if x.ts_ms > now - params.window_minutes * MIN]
        bins: dict[int, float] = {}
        for x in window:
            k = math.floor((x.px - origin) / width)
            bins[k] = bins.get(k, 0.0) + x.sz
        total = math.fsum(bins.values())
        assert f["window_trades_n"] == len(window)
        assert f["window_volume_sz"] == pytest.approx(total, rel=1e-9)
        assert f["last_px"] == t.px
        poc = math.floor((f["poc_px"] - origin) / width)
        assert bins[poc] == pytest.approx(max(bins.values()), rel=1e-9)
        inside = math.fsum(
            v for k, v in bins.items() if f["val_px"] < origin + (k + 0.5) * width < f["vah_px"]
        )
        assert inside >= params.value_area_pct / 100 * total * (1 - 1e-9)
        assert len(sig.narrative) <= 600


@given(scenarios())
@settings(max_examples=60, deadline=None)
def test_determinism_and_batching_independence(
    case: tuple[VolumeProfileParams, list[Trades]],
) -> None:
    params, events = case
    a = dump(run(VolumeProfile("BTC", params), events))
    b = dump(run(VolumeProfile("BTC", params), events))
    assert a == b
    # every message split into single trades, and all re-chunked differently
    assert dump(run(VolumeProfile("BTC", params), one_by_one(events))) == a
    trades = [t for e in events for t in e.trades]
    rechunked, i = [], 0
    rng = random.Random(len(trades))
    while i < len(trades):
        n = rng.randint(1, 3)
        chunk = trades[i : i + n]
        while len(chunk) > 1 and chunk[-1].ts_ms - chunk[0].ts_ms >= 10 * S:
            chunk.pop()
        rechunked.append(batch(*chunk))
        i += len(chunk)
    assert dump(run(VolumeProfile("BTC", params), rechunked)) == a


@given(scenarios(), st.floats(0, 1))
@settings(max_examples=60, deadline=None)
def test_no_lookahead(case: tuple[VolumeProfileParams, list[Trades]], cut: float) -> None:
    params, events = case
    trades = [t for e in events for t in e.trades]
    t_cut = trades[0].ts_ms + int(cut * (trades[-1].ts_ms - trades[0].ts_ms))
    full = [x for x in run(VolumeProfile("BTC", params), events) if x.ts_ms < t_cut]
    truncated = []
    for e in events:
        kept = [t for t in e.trades if t.ts_ms < t_cut]
        if kept:
            truncated.append(batch(*kept))
    assert dump(run(VolumeProfile("BTC", params), truncated)) == dump(full)
