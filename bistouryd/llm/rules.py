"""The ``rules`` model: a deterministic decision from the signals, in the same schema as
a language model's answer, with a generated rationale.

It lets the whole system run with no API key, makes backtests reproducible, and is the
last step of every fallback chain. It reads the combined ``cross_signal`` view when there
is one (its score, confidence, regime and per-strategy weights), otherwise an equal-weight
combination of the signals it has. Stops and targets follow the 5m (else 1m) ATR that
``multi_timeframe`` reports, with fixed fractions when there is none. Pure: the same
signals and position give the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bistouryd.llm.decision import SignalContribution, TradeDecision
from bistouryd.strategies.base import Signal
from bistouryd.strategies.indicators import clamp01

PositionSide = Literal["flat", "long", "short"]
CROSS = "cross_signal"
REGIMES = {1.0: "trending", 2.0: "ranging", 3.0: "volatile", 4.0: "quiet"}
_SIGN = {"long": 1.0, "short": -1.0, "neutral": 0.0}


class RulesParams(BaseModel):
    """Thresholds of the ``rules`` model (bounded, for the optimizer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_score: float = Field(
        default=0.25, ge=0.05, le=1, description="combined |score| needed to open"
    )
    close_score: float = Field(
        default=0.2, ge=0.05, le=1, description="opposite score that closes a position"
    )
    min_confidence: float = Field(
        default=0.3, ge=0, le=1, description="combined confidence needed to open"
    )
    max_size_fraction: float = Field(
        default=0.5, ge=0.01, le=1, description="largest share of the risk budget for one trade"
    )
    stop_atr_multiple: float = Field(default=2.0, gt=0, le=20)
    target_atr_multiple: float = Field(default=3.0, gt=0, le=50)
    default_stop_pct: float = Field(default=0.01, gt=0, le=0.5, description="without an ATR")
    default_target_pct: float = Field(default=0.02, gt=0, le=2, description="without an ATR")


def decide(
    coin: str,
    signals: Mapping[str, Signal],
    position: PositionSide,
    params: RulesParams | None = None,
) -> TradeDecision:
    """The decision for ``coin`` from its latest signal of each strategy."""
    p = params or RulesParams()
    view = _combined(signals)
    score, confidence = view.score, view.confidence
    lean = "long" if score > 0 else "short" if score < 0 else "neutral"
    summary = view.summary()
    stop, target, risk_note = _stops(signals, p)

    if position == "flat":
        if abs(score) >= p.open_score and confidence >= p.min_confidence:
            action: Literal["open_long", "open_short"] = "open_long" if score > 0 else "open_short"
            # From 5% at the threshold to the full share at a score of ±1, times confidence.
            excess = (abs(score) - p.open_score) / max(1e-9, 1 - p.open_score)
            size = round(min(p.max_size_fraction, max(0.05, clamp01(excess) * confidence)), 3)
            text = f"{summary} Opening {lean} with {size:.0%} of the risk budget; {risk_note}."
            return TradeDecision(
                coin=coin,
                action=action,
                size_fraction=size,
                stop_loss_pct=stop,
                take_profit_pct=target,
                confidence=confidence,
                rationale=text,
                contributions=view.contributions,
            )
        why = (
            f"|score| {abs(score):.2f} is below {p.open_score:.2f}"
            if abs(score) < p.open_score
            else f"confidence {confidence:.2f} is below {p.min_confidence:.2f}"
        )
        return _hold(coin, confidence, f"{summary} Holding flat: {why}.", view.contributions)

    held = 1.0 if position == "long" else -1.0
    if score * held <= -p.close_score:
        text = f"{summary} Closing the {position} position: the view turned {lean}."
        return TradeDecision(
            coin=coin,
            action="close",
            size_fraction=0,
            confidence=confidence,
            rationale=text,
            contributions=view.contributions,
        )
    text = f"{summary} Keeping the {position} position: nothing strong enough against it."
    return _hold(coin, confidence, text, view.contributions)


def _hold(
    coin: str, confidence: float, text: str, contributions: list[SignalContribution]
) -> TradeDecision:
    return TradeDecision(
        coin=coin,
        action="hold",
        size_fraction=0,
        confidence=confidence,
        rationale=text,
        contributions=contributions,
    )


class _View:
    """The combined view the rules act on."""

    def __init__(
        self,
        score: float,
        confidence: float,
        source: str,
        contributions: list[SignalContribution],
    ):
        self.score = max(-1.0, min(1.0, score))
        self.confidence = clamp01(confidence)
        self.source = source
        self.contributions = contributions

    def summary(self) -> str:
        return (
            f"{self.source}: combined score {self.score:+.2f} with confidence "
            f"{self.confidence:.2f}."
        )


def _combined(signals: Mapping[str, Signal]) -> _View:
    cross = signals.get(CROSS)
    if cross is not None:
        f = cross.features
        score = f.get("score", _SIGN[cross.direction] * cross.strength)
        regime = REGIMES.get(f.get("regime_code", 0.0), "unknown")
        weights = {name: f.get(f"weight_{name}", 0.0) for name in signals if name != CROSS}
        total = sum(weights.values()) or 1.0
        contributions = [
            SignalContribution(
                strategy=name,
                direction=signals[name].direction,
                weight=round(w / total, 4),
                reason=f"weight {w:.2f} in the {regime} regime; strength "
                f"{signals[name].strength:.2f}, confidence {signals[name].confidence:.2f}",
            )
            for name, w in sorted(weights.items(), key=lambda kv: -kv[1])
            if w > 0
        ][:20]
        return _View(score, cross.confidence, f"cross_signal ({regime} regime)", contributions)
    parts = [s for name, s in sorted(signals.items())]
    if not parts:
        return _View(0.0, 0.0, "No signals yet", [])
    score = sum(_SIGN[s.direction] * s.strength * s.confidence for s in parts) / len(parts)
    confidence = sum(s.confidence for s in parts) / len(parts)
    contributions = [
        SignalContribution(
            strategy=s.strategy,
            direction=s.direction,
            weight=round(1 / len(parts), 4),
            reason=f"equal weight (no cross_signal); strength {s.strength:.2f}, "
            f"confidence {s.confidence:.2f}",
        )
        for s in parts
    ][:20]
    return _View(score, confidence, f"{len(parts)} signals, equal weights", contributions)


def _stops(signals: Mapping[str, Signal], p: RulesParams) -> tuple[float, float, str]:
    """Stop and target fractions, and how they were set."""
    mtf = signals.get("multi_timeframe")
    for tf in ("5m", "1m", "15m"):
        atr = mtf.features.get(f"atr_pct_{tf}", 0.0) if mtf is not None else 0.0
        if atr > 0:
            stop = min(0.5, max(0.001, p.stop_atr_multiple * atr))
            target = min(2.0, max(0.001, p.target_atr_multiple * atr))
            return (
                stop,
                target,
                (
                    f"stop {stop:.2%} and target {target:.2%} "
                    f"({p.stop_atr_multiple:g}x and {p.target_atr_multiple:g}x the {tf} ATR "
                    f"of {atr:.2%})"
                ),
            )
    return (
        p.default_stop_pct,
        p.default_target_pct,
        (f"stop {p.default_stop_pct:.2%} and target {p.default_target_pct:.2%} (no ATR yet)"),
    )
