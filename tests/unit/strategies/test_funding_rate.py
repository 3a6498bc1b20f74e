"""The funding-rate strategy: hand-computed features on small sequences, and properties."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bistouryd.market import AssetCtx, MarketEvent
from bistouryd.market import FundingRate as FundingEvent
from bistouryd.strategies.base import Signal, unbacked_numbers
from bistouryd.strategies.funding_rate import (
    LONG_LIQUIDATION,
    NEW_LONGS,
    NEW_SHORTS,
    NONE,
    SHORT_COVERING,
    FundingRate,
    FundingRateParams,
)

H = 3_600_000
T0 = 1_700_000_000_000 // H * H  # an hour boundary
HISTORY = [i * 1e-5 for i in range(1, 9)]  # 1e-5 .. 8e-5, eight settled hours


def ctx(ts: int, rate: float = 4.5e-5, oi: float = 1000.0, mark: float = 100.0) -> AssetCtx:
    return AssetCtx(
        coin="BTC",
        ts_ms=ts,
        funding_rate=rate,
        open_interest_sz=oi,
        mark_px=mark,
        oracle_px=mark,
    )


def fund(ts: int, rate: float) -> FundingEvent:
    return FundingEvent(coin="BTC", ts_ms=ts, funding_rate=rate)


def history(rates: list[float] = HISTORY) -> list[MarketEvent]:
    # settled at hours 0..n-1 (a few ms after the hour, as HyperLiquid stamps them)
    return [fund(T0 + i * H + 7, r) for i, r in enumerate(rates)]


def make(**kw: object) -> FundingRate:
    params = {"lookback_hours": 8, "oi_change_hours": 1.0, "emit_interval_s": 300, **kw}
    return FundingRate("BTC", FundingRateParams.model_validate(params))


def run(strategy: FundingRate, events: list[MarketEvent]) -> list[Signal]:
    return [s for e in events if (s := strategy.update(e)) is not None]


def check(sig: Signal) -> None:
    assert 0 <= sig.strength <= 1 and 0 <= sig.confidence <= 1
    assert unbacked_numbers(sig) == [], sig.narrative
    assert all(math.isfinite(v) for v in sig.features.values())
    assert len(sig.narrative) <= 600


def two_ctx(rate: float, oi: float, mark: float, **kw: object) -> Signal:
    """History, then a context at hour 8 and one an hour later (oi/mark from 1000/100)."""
    s = make(**kw)
    start = T0 + 8 * H
    sigs = run(s, [*history(), ctx(start, rate), ctx(start + H, rate, oi, mark)])
    assert len(sigs) == 1
    check(sigs[0])
    return sigs[0]


# ---- hand-computed features -------------------------------------------------------------


def test_zscore_and_percentile_by_hand() -> None:
    # history 1..8 (×1e-5): mean 4.5e-5; population variance
    # ((3.5² + 2.5² + 1.5² + 0.5²) × 2) / 8 = 42 / 8 = 5.25 (×1e-10), sd = 2.2913e-5.
    # current 1e-4: z = (10 - 4.5) / 2.2913 = 2.4004; all eight below → percentile 100.
    sig = two_ctx(1e-4, 1000.0, 100.0)
    f = sig.features
    assert f["funding_z"] == pytest.approx(5.5 / math.sqrt(5.25), rel=1e-9)
    assert f["funding_pctile"] == pytest.approx(100.0)
    assert f["funding_annual"] == pytest.approx(1e-4 * 8760)
    assert f["history_n"] == 8 and f["lookback_days"] == pytest.approx(8 / 24)
    assert f["funding_extreme"] == 0.0 and sig.direction == "neutral"
    assert "0.0100%/h" in sig.narrative and "87.60% annualised" in sig.narrative
    assert "percentile 100" in sig.narrative and "(z +2.4)" in sig.narrative
    assert "last 8 hours" in sig.narrative

    # current 4e-5: three below (1, 2, 3), one tie (4) → (3 + 0.5) / 8 = 43.75;
    # z = (4 - 4.5) / 2.2913 = -0.218
    sig = two_ctx(4e-5, 1000.0, 100.0)
    assert sig.features["funding_pctile"] == pytest.approx(43.75)
    assert sig.features["funding_z"] == pytest.approx(-0.5 / math.sqrt(5.25), rel=1e-9)
    assert "percentile 44" in sig.narrative and "(z -0.2)" in sig.narrative


def test_history_in_days() -> None:
    s = make(lookback_hours=168)
    rates = [1e-5 * (1 + i % 3) for i in range(48)]
    start = T0 + 48 * H
    sigs = run(s, [*history(rates), ctx(start), ctx(start + H)])
    assert sigs[0].features["history_days"] == 2.0
    assert "of the last 2 days" in sigs[0].narrative
    check(sigs[0])


@pytest.mark.parametrize(
    ("oi", "mark", "quadrant", "direction", "words"),
    [
        (1030.0, 101.0, NEW_LONGS, "long", "new longs are opening"),
        (970.0, 101.0, SHORT_COVERING, "neutral", "shorts are covering"),
        (1030.0, 99.0, NEW_SHORTS, "short", "new shorts are opening"),
        (970.0, 99.0, LONG_LIQUIDATION, "neutral", "longs are liquidating"),
        (1003.0, 101.0, NONE, "neutral", "no clear positioning change"),  # OI +0.3%: flat
        (1030.0, 100.1, NONE, "neutral", "no clear positioning change"),  # price +0.1%: flat
    ],
)
def test_quadrants(oi: float, mark: float, quadrant: int, direction: str, words: str) -> None:
    sig = two_ctx(4.5e-5, oi, mark)  # funding at the mean: z 0, not extreme
    f = sig.features
    assert f["quadrant"] == quadrant
    assert sig.direction == direction
    assert f["oi_change_frac"] == pytest.approx(oi / 1000 - 1)
    assert f["mark_change_frac"] == pytest.approx(mark / 100 - 1)
    assert f["oi_span_h"] == 1.0
    assert words in sig.narrative
    assert f"Open interest {(oi / 1000 - 1) * 100:+.1f}%" in sig.narrative
    if quadrant in (NEW_LONGS, NEW_SHORTS):
        # |OI| 3% / 0.5% = 6, |price| 1% / 0.2% = 5 → (6 + 5) / 10 capped at 1 → 0.5 × 1
        assert sig.strength == pytest.approx(0.5)
        # full history (8/8) and full window: (0.4 + 0.6) × (0.5 + 0.5) × 0.8 (|z| < 1: no
        # funding opinion)
        assert sig.confidence == pytest.approx(0.8)
    else:
        assert sig.strength == 0.0


def test_quadrant_agreeing_with_funding_raises_confidence() -> None:
    # new longs while funding is high (z +2.4, not extreme): longs pay more, consistent
    sig = two_ctx(1e-4, 1030.0, 101.0)
    assert sig.direction == "long" and sig.features["agreement"] == 1.0
    assert sig.confidence == pytest.approx(1.0)
    # new shorts while funding is high: funding side disagrees
    sig = two_ctx(1e-4, 1030.0, 99.0)
    assert sig.direction == "short" and sig.features["agreement"] == -1.0
    assert sig.confidence == pytest.approx(0.55)


def test_extreme_both_sides() -> None:
    sig = two_ctx(0.0008, 1000.0, 100.0)  # exactly at the threshold counts
    assert sig.features["funding_extreme"] == 1.0
    assert sig.direction == "short" and "longs are crowded" in sig.narrative
    # excess (1 - 1) / 2 = 0; z capped at 10 → 0.3; strength 0.4 + 0 + 0.3
    assert sig.strength == pytest.approx(0.7)

    sig = two_ctx(-0.0008, 1000.0, 100.0)
    assert sig.features["funding_extreme"] == 1.0
    assert sig.direction == "long" and "shorts are crowded" in sig.narrative
    # z is -10 against a negative rate: the history agrees it is extreme → same 0.7
    assert sig.strength == pytest.approx(0.7)

    sig = two_ctx(0.00079, 1000.0, 100.0)
    assert sig.features["funding_extreme"] == 0.0 and sig.direction == "neutral"

    # 2× the threshold: excess (2 - 1) / 2 = 0.5 → 0.4 + 0.15 + 0.3
    sig = two_ctx(0.0016, 1000.0, 100.0)
    assert sig.strength == pytest.approx(0.85)
    assert "(1401.60% annualised)" in sig.narrative  # 0.0016 × 8760 = 14.016


def test_extreme_funding_beats_quadrant_and_agreement() -> None:
    # crowded longs while longs are liquidating: price falling agrees with the short lean
    sig = two_ctx(0.001, 970.0, 99.0)
    assert sig.direction == "short" and sig.features["agreement"] == 1.0
    assert sig.confidence == pytest.approx(1.0)
    # crowded longs while new longs push price up: the move disagrees
    sig = two_ctx(0.001, 1030.0, 101.0)
    assert sig.direction == "short" and sig.features["agreement"] == -1.0
    assert sig.confidence == pytest.approx(0.55)


def test_warm_up() -> None:
    s = make()
    start = T0 + 8 * H
    # not enough settled history: nothing, whatever the contexts
    assert run(s, [*history()[:7], *(ctx(start + k * 60_000) for k in range(60))]) == []
    # enough history: the first signal once the samples span 10 minutes (the warm-up)
    s = make()
    sigs = run(s, [*history(), *(ctx(start + k * 60_000) for k in range(40))])
    assert sigs[0].ts_ms == start + 10 * 60_000
    assert sigs[0].features["oi_span_h"] == pytest.approx(1 / 6)
    # full history (8/8), a sixth of the window: 1 × (0.5 + 0.5 / 6) × 0.8
    assert sigs[0].confidence == pytest.approx((0.5 + 0.5 / 6) * 0.8)
    assert "over 0.2h" in sigs[0].narrative


def test_emit_throttling() -> None:
    s = make(emit_interval_s=300)
    start = T0 + 8 * H
    sigs = run(s, [*history(), *(ctx(start + k * 60_000) for k in range(60))])
    # first at minute 10, then one per 5 minutes of event time
    assert [(x.ts_ms - start) // 60_000 for x in sigs] == list(range(10, 60, 5))
    for x in sigs:
        check(x)


def test_settled_flip_emits_immediately() -> None:
    s = make(emit_interval_s=3600)
    start = T0 + 8 * H
    events = [*history(), *(ctx(start + k * 60_000) for k in range(16))]
    assert len(run(s, events)) == 1  # at minute 15
    # hour 8 settles negative: the next context reports it at once
    assert s.update(fund(start + 16 * 60_000, -2e-5)) is None
    sig = s.update(ctx(start + 17 * 60_000, rate=-1e-5))
    assert sig is not None
    check(sig)
    f = sig.features
    assert f["settled_flip"] == 1.0
    assert f["settled_rate_h"] == -2e-5 and f["prev_settled_rate_h"] == 8e-5
    assert "Settled funding flipped negative: -0.0020%/h after 0.0080%/h" in sig.narrative
    # and only once
    assert s.update(ctx(start + 18 * 60_000, rate=-1e-5)) is None


def test_predicted_flip_once_per_period() -> None:
    s = make(emit_interval_s=3600)
    start = T0 + 8 * H
    run(s, [*history(), *(ctx(start + k * 60_000) for k in range(16))])
    sig = s.update(ctx(start + 17 * 60_000, rate=-3e-5))
    assert sig is not None
    assert sig.features["predicted_flip"] == 1.0 and sig.features["settled_flip"] == 0.0
    assert "predicted rate has turned negative against the last settled 0.0080%/h" in (
        sig.narrative
    )
    check(sig)
    # hovering around zero within the same period: no more flip signals
    assert s.update(ctx(start + 18 * 60_000, rate=1e-6)) is None
    assert s.update(ctx(start + 19 * 60_000, rate=-1e-6)) is None
    # a new settlement (positive, no settled flip) re-arms the predicted flip
    s.update(fund(start + H + 7, 5e-5))
    assert s.update(ctx(start + H + 60_000, rate=-1e-6)) is not None


def test_dedupe_repeated_funding() -> None:
    plain = make()
    repeated = make()
    start = T0 + 8 * H
    tail = [ctx(start + k * 60_000) for k in range(30)]
    # the whole history delivered three times (as a REST poll re-sends it), plus an older
    # point, and a point of an hour already seen with another value
    noisy = [*history(), *history(), fund(T0 - H, 0.5), *history(), fund(T0 + 7 * H + 99, 0.3)]
    a = run(plain, [*history(), *tail])
    b = run(repeated, [*noisy, *tail])
    assert [x.model_dump(exclude={"id"}) for x in a] == [x.model_dump(exclude={"id"}) for x in b]
    assert b[0].features["history_n"] == 8


def test_reconfigure_keeps_state() -> None:
    s = make(lookback_hours=8)
    rates = [1e-5 * (i + 1) for i in range(12)]  # 12 settled hours, 8 ranked
    start = T0 + 12 * H
    run(s, [*history(rates), ctx(start)])
    s.reconfigure(FundingRateParams(lookback_hours=12, oi_change_hours=1.0))
    sig = s.update(ctx(start + H))
    assert sig is not None and sig.features["history_n"] == 12
    # mean of 1..12 = 6.5 (×1e-5); the current 4.5e-5: 4 below, 0 ties → 4/12
    assert sig.features["funding_pctile"] == pytest.approx(100 * 4 / 12)


def test_ignores_other_events_and_old_contexts() -> None:
    s = make()
    start = T0 + 8 * H
    run(s, [*history(), ctx(start), ctx(start + H)])
    assert s.update(ctx(start + 10)) is None  # older than the last context
    sig = Signal(
        strategy="x", coin="BTC", ts_ms=1, direction="long", strength=1, confidence=1,
        narrative="x",
    )  # fmt: skip
    assert s.update(sig) is None


def test_params_bounds() -> None:
    p = FundingRateParams()
    assert (p.extreme_threshold, p.lookback_hours, p.oi_change_hours) == (0.0008, 168, 4.0)
    assert (p.emit_interval_s, p.min_history) == (300, 8)
    for bad in (
        {"extreme_threshold": 0},
        {"extreme_threshold": 0.04},
        {"lookback_hours": 7},
        {"lookback_hours": 24 * 365 + 1},
        {"oi_change_hours": 0.2},
        {"oi_change_hours": 73},
        {"emit_interval_s": 9},
        {"emit_interval_s": 86_401},
        {"min_history": 1},
        {"min_history": 1001},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            FundingRateParams.model_validate(bad)
    assert FundingRate.name == "funding_rate"
    assert FundingRate.inputs == frozenset({"ctx", "funding"})


# ---- properties -------------------------------------------------------------------------


def random_stream(seed: int) -> list[MarketEvent]:
    """A day or so of settled funding and contexts, in time order."""
    rng = random.Random(seed)
    regime = rng.choice(["baseline", "noisy", "flippy", "extreme", "flat"])

    def rate() -> float:
        if regime == "flat":
            return 1.25e-5
        if regime == "baseline":
            return 1.25e-5 + rng.choice([0.0, 0.0, rng.gauss(0, 1e-5)])
        if regime == "flippy":
            return rng.choice([-1, 1]) * rng.uniform(0, 3e-5)
        if regime == "extreme":
            return rng.gauss(0, 1.5e-3)
        return rng.gauss(2e-5, 6e-5)

    events: list[MarketEvent] = []
    hours = rng.randint(2, 30)
    oi, mark = rng.uniform(1e2, 1e6), rng.uniform(0.01, 1e5)
    for h in range(hours):
        events.append(fund(T0 + h * H + rng.randint(0, 50), rate()))
    t = T0 + rng.randint(0, hours) * H
    for _ in range(rng.randint(0, 300)):
        t += rng.choice([1_000, 5_000, 60_000, 300_000, 900_000])
        oi *= math.exp(rng.gauss(0, 0.01))
        mark *= math.exp(rng.gauss(0, 0.004))
        if rng.random() < 0.05:
            events.append(fund(t, rate()))
        events.append(ctx(t, rate(), oi, mark))
    events.sort(key=lambda e: e.ts_ms)
    return events


params_st = st.builds(
    FundingRateParams,
    extreme_threshold=st.sampled_from([1e-5, 1e-4, 8e-4]),
    lookback_hours=st.sampled_from([8, 12, 24, 168]),
    oi_change_hours=st.sampled_from([0.25, 1.0, 4.0]),
    emit_interval_s=st.sampled_from([10, 300, 3600]),
    min_history=st.sampled_from([2, 8]),
)
PROPS = settings(max_examples=60, deadline=None)


def dumps(sigs: list[Signal]) -> list[dict[str, object]]:
    return [s.model_dump(exclude={"id"}) for s in sigs]


@PROPS
@given(params_st, st.integers(0, 2**32))
def test_signals_are_sound_and_deterministic(params: FundingRateParams, seed: int) -> None:
    events = random_stream(seed)
    a = run(FundingRate("BTC", params), events)
    b = run(FundingRate("BTC", params), events)
    assert dumps(a) == dumps(b)
    last = 0
    for sig in a:
        check(sig)
        assert 0 <= sig.features["funding_pctile"] <= 100
        assert sig.ts_ms >= last
        last = sig.ts_ms


@PROPS
@given(params_st, st.integers(0, 2**32), st.floats(0, 1))
def test_no_lookahead(params: FundingRateParams, seed: int, cut: float) -> None:
    events = random_stream(seed)
    if not events:
        return
    t_cut = events[0].ts_ms + int(cut * (events[-1].ts_ms - events[0].ts_ms))
    full = [s for s in run(FundingRate("BTC", params), events) if s.ts_ms < t_cut]
    prefix = run(FundingRate("BTC", params), [e for e in events if e.ts_ms < t_cut])
    assert dumps(full) == dumps(prefix)


@PROPS
@given(params_st, st.integers(0, 2**32), st.integers(0, 2**32))
def test_duplicate_funding_deliveries(params: FundingRateParams, seed: int, seed2: int) -> None:
    events = random_stream(seed)
    rng = random.Random(seed2)
    noisy: list[MarketEvent] = []
    seen: list[MarketEvent] = []
    for e in events:
        noisy.append(e)
        if isinstance(e, FundingEvent):
            seen.append(e)
        # re-deliver some already delivered points, in any order, at any later place
        while seen and rng.random() < 0.3:
            noisy.append(rng.choice(seen))
    assert dumps(run(FundingRate("BTC", params), events)) == dumps(
        run(FundingRate("BTC", params), noisy)
    )
