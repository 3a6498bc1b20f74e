"""The deterministic ``rules`` model: hand-made signal sets and properties of every answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.rules import RulesParams, decide
from bistouryd.strategies.base import Signal

T = 1_753_200_000_000


def sig(strategy: str, direction: str, strength: float, confidence: float, **f: float) -> Signal:
    return Signal.model_validate(
        {
            "strategy": strategy,
            "coin": "BTC",
            "ts_ms": T,
            "direction": direction,
            "strength": strength,
            "confidence": confidence,
            "narrative": "x",
            "features": f,
        }
    )


def cross(score: float, confidence: float, regime: float = 1.0, **weights: float) -> Signal:
    direction = "long" if score > 0.1 else "short" if score < -0.1 else "neutral"
    features = {"score": score, "regime_code": regime}
    features |= {f"weight_{k}": v for k, v in weights.items()}
    return sig("cross_signal", direction, abs(score), confidence, **features)


def test_a_strong_long_view_opens_long_with_atr_stops() -> None:
    signals = {
        "cross_signal": cross(0.625, 0.8, multi_timeframe=1.0, order_flow=0.5),
        "multi_timeframe": sig("multi_timeframe", "long", 0.7, 0.8, atr_pct_5m=0.004),
        "order_flow": sig("order_flow", "short", 0.3, 0.5),
    }
    d = decide("BTC", signals, "flat")
    # excess over the 0.25 threshold: (0.625 - 0.25) / 0.75 = 0.5, times confidence 0.8
    assert (d.action, d.size_fraction, d.confidence) == ("open_long", 0.4, 0.8)
    # 2x and 3x the 5m ATR of 0.4%
    assert d.stop_loss_pct == pytest.approx(0.008)
    assert d.take_profit_pct == pytest.approx(0.012)
    assert [(c.strategy, c.weight) for c in d.contributions] == [
        ("multi_timeframe", pytest.approx(2 / 3, abs=1e-4)),
        ("order_flow", pytest.approx(1 / 3, abs=1e-4)),
    ]
    assert "trending regime" in d.rationale and "2x and 3x the 5m ATR" in d.rationale


def test_without_an_atr_the_default_stops_apply_and_size_is_capped() -> None:
    d = decide("BTC", {"cross_signal": cross(-1.0, 1.0)}, "flat")
    assert (d.action, d.size_fraction) == ("open_short", 0.5)
    assert (d.stop_loss_pct, d.take_profit_pct) == (0.01, 0.02)
    assert "no ATR yet" in d.rationale


@pytest.mark.parametrize(
    ("score", "confidence", "why"),
    [(0.2, 0.9, "|score| 0.20 is below 0.25"), (0.6, 0.2, "confidence 0.20 is below 0.30")],
)
def test_weak_or_unsure_views_hold(score: float, confidence: float, why: str) -> None:
    d = decide("BTC", {"cross_signal": cross(score, confidence)}, "flat")
    assert (d.action, d.size_fraction, d.stop_loss_pct) == ("hold", 0, None)
    assert why in d.rationale


def test_an_opposite_view_closes_and_a_same_side_view_holds() -> None:
    short_view = {"cross_signal": cross(-0.3, 0.6)}
    assert decide("BTC", short_view, "long").action == "close"
    assert decide("BTC", short_view, "short").action == "hold"
    # a long position never adds, and a mild short view (-0.1 > -0.2) keeps it
    assert decide("BTC", {"cross_signal": cross(0.9, 0.9)}, "long").action == "hold"
    assert decide("BTC", {"cross_signal": cross(-0.1, 0.9)}, "long").action == "hold"


def test_without_cross_signal_the_signals_count_equally() -> None:
    signals = {
        "funding_rate": sig("funding_rate", "long", 0.9, 1.0),
        "order_flow": sig("order_flow", "long", 0.8, 1.0),
        "volume_profile": sig("volume_profile", "neutral", 0.0, 0.4),
    }
    d = decide("BTC", signals, "flat")
    # score (0.9 + 0.8 + 0) / 3 = 0.5667, confidence (1 + 1 + 0.4) / 3 = 0.8
    assert d.action == "open_long"
    assert d.confidence == pytest.approx(0.8)
    assert [c.weight for c in d.contributions] == [0.3333] * 3
    assert d.rationale.startswith("3 signals, equal weights: combined score +0.57")


def test_no_signals_hold() -> None:
    d = decide("ETH", {}, "flat")
    assert (d.coin, d.action, d.confidence) == ("ETH", "hold", 0.0)


def test_params_are_bounded() -> None:
    with pytest.raises(ValidationError):
        RulesParams(open_score=0)
    with pytest.raises(ValidationError):
        RulesParams(max_size_fraction=2)


@pytest.mark.parametrize(
    "bad",
    [
        {"action": "open_long", "size_fraction": 0.2},  # no stop
        {"action": "open_short", "size_fraction": 0, "stop_loss_pct": 0.01},
        {"action": "hold", "size_fraction": 0.3},
        {"action": "close", "size_fraction": 0, "stop_loss_pct": 0.01},
        {"action": "reduce", "size_fraction": 1},
        {"action": "hold", "size_fraction": 0, "confidence": 3},
    ],
)
def test_inconsistent_decisions_do_not_validate(bad: dict[str, object]) -> None:
    base: dict[str, object] = {"coin": "BTC", "confidence": 0.5, "rationale": "r"}
    with pytest.raises(ValidationError):
        TradeDecision.model_validate(base | bad)


unit = st.floats(0, 1)
signal_sets = st.dictionaries(
    st.sampled_from(["multi_timeframe", "funding_rate", "order_flow", "volume_profile"]),
    st.tuples(st.sampled_from(["long", "short", "neutral"]), unit, unit, st.floats(0, 0.05)),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    signal_sets,
    st.one_of(st.none(), st.tuples(st.floats(-1, 1), unit)),
    st.sampled_from(["flat", "long", "short"]),
)
def test_every_answer_is_a_valid_decision_that_never_adds_to_a_position(
    parts: dict[str, tuple[str, float, float, float]],
    combined: tuple[float, float] | None,
    position: str,
) -> None:
    signals = {name: sig(name, d, s, c, atr_pct_5m=atr) for name, (d, s, c, atr) in parts.items()}
    if combined is not None:
        signals["cross_signal"] = cross(combined[0], combined[1], **dict.fromkeys(parts, 1.0))
    d = decide("BTC", signals, position)  # type: ignore[arg-type]
    TradeDecision.model_validate(d.model_dump())  # round-trips through validation
    assert d.action in (
        ("open_long", "open_short", "hold") if position == "flat" else ("close", "hold")
    )
    assert d == decide("BTC", signals, position)  # type: ignore[arg-type]
    if d.action.startswith("open"):
        assert 0 < d.size_fraction <= 0.5 and d.stop_loss_pct is not None
    assert abs(sum(c.weight for c in d.contributions) - (1 if d.contributions else 0)) < 1e-3
