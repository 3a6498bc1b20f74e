"""Funding-rate narratives: how crowded one side is, and who is opening or closing.

Inputs: ``AssetCtx`` (the predicted hourly funding rate, open interest and mark price,
every few seconds) and ``market.FundingRate`` (the settled hourly funding).

Features
- The current predicted funding (hourly fraction) and annualised (×24×365).
- Its z-score and percentile (0..100) against the settled funding history: one point per
  settlement hour (``ts_ms // 1h``), the last ``lookback_hours`` of them. A point of an hour
  already seen, or older, is ignored, so repeated deliveries of the history change nothing.
- ``funding_extreme``: ``|rate| >= extreme_threshold``.
- Open-interest and mark-price change over ``oi_change_hours``: the current context against
  the oldest kept sample inside that window (samples at least window/2000 apart, so the
  deque holds about 2000 whatever the feed rate).
- The OI/price quadrant: price up + OI up = new longs (long), price up + OI down = short
  covering (weak rally, no lean), price down + OI up = new shorts (short), price down + OI
  down = long liquidation (capitulation, no lean). A move counts when OI changed by at
  least 0.5% and price by at least 0.2%.
- Funding flips: the latest settled funding has the opposite sign of the previous one, or
  the predicted rate has the opposite sign of the latest settled one.

Direction: extreme positive funding means crowded longs, a contrarian short lean (extreme
negative: long); otherwise the quadrant's lean; neutral when neither says anything.
Strength grows with extremity and |z| (quadrant-only views with the size of the moves,
capped at 0.5); confidence with the history length, the OI window covered, and whether the
quadrant and the funding agree.

Emit policy: only on ``AssetCtx`` events, once ready: at least ``min_history`` settled
points and context samples covering ten minutes (or a quarter of ``oi_change_hours`` if
less): far less than the full window, so a restart does not go silent for hours; the
change is then measured over the span covered, which the narrative states and confidence
reflects.
Then at most once per ``emit_interval_s`` of event time, and immediately (on the next
context) after a settled funding flip, or the first time in a settlement period the
predicted rate turns against the last settled one (once per period, so a rate hovering
around zero does not flap). The signal's ``ts_ms`` is that context's ``ts_ms``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar, NamedTuple

from pydantic import Field

from bistouryd.market import AssetCtx, MarketEvent
from bistouryd.market import FundingRate as FundingEvent
from bistouryd.strategies.base import Direction, Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.indicators import RollingRank, clamp01

HOUR_MS = 3_600_000
HOURS_PER_YEAR = 24 * 365
MAX_LOOKBACK_HOURS = 24 * 365

# A quadrant needs OI to move at least this much (fraction) and price at least this much.
OI_MOVE = 0.005
PX_MOVE = 0.002
# Below this standard deviation (hourly fraction) the history counts as flat: it keeps the
# running-sum rounding noise of a constant history from giving huge z-scores.
STD_FLOOR = 1e-6
Z_CAP = 10.0
# Context samples are kept at least window / SAMPLES apart.
SAMPLES = 2000
WARMUP_MS = 10 * 60_000  # context history needed before the first signal

# quadrant codes
NONE, NEW_LONGS, SHORT_COVERING, NEW_SHORTS, LONG_LIQUIDATION = 0, 1, 2, 3, 4
_QUADRANT_LEAN = {NONE: 0, NEW_LONGS: 1, SHORT_COVERING: 0, NEW_SHORTS: -1, LONG_LIQUIDATION: 0}
_QUADRANT_TEXT = {
    NONE: "no clear positioning change",
    NEW_LONGS: "new longs are opening, confirming the move up",
    SHORT_COVERING: "shorts are covering, a weak rally",
    NEW_SHORTS: "new shorts are opening",
    LONG_LIQUIDATION: "longs are liquidating (capitulation)",
}


class FundingRateParams(StrategyParams):
    extreme_threshold: float = Field(
        default=0.0008,
        gt=0,
        lt=0.04,
        description="hourly funding (fraction) at or beyond which one side counts as crowded",
    )
    lookback_hours: int = Field(
        default=168,
        ge=8,
        le=MAX_LOOKBACK_HOURS,
        description="settled hourly funding points the current rate is ranked against",
    )
    oi_change_hours: float = Field(
        default=4.0,
        ge=0.25,
        le=72,
        description="window (hours) of the open-interest and price changes",
    )
    emit_interval_s: int = Field(
        default=300,
        ge=10,
        le=86_400,
        description="at most one signal per this many seconds of event time (flips excepted)",
    )
    min_history: int = Field(
        default=8,
        ge=2,
        le=1000,
        description="settled funding points needed before emitting",
    )


class _Sample(NamedTuple):
    ts_ms: int
    oi: float
    mark: float


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _change(now: float, ref: float) -> float:
    return now / ref - 1.0 if ref > 0 else 0.0


def _quadrant(oi_change: float, px_change: float) -> int:
    oi = 1 if oi_change >= OI_MOVE else -1 if oi_change <= -OI_MOVE else 0
    px = 1 if px_change >= PX_MOVE else -1 if px_change <= -PX_MOVE else 0
    if oi == 0 or px == 0:
        return NONE
    if px > 0:
        return NEW_LONGS if oi > 0 else SHORT_COVERING
    return NEW_SHORTS if oi > 0 else LONG_LIQUIDATION


class FundingRate(Strategy[FundingRateParams]):
    name: ClassVar[str] = "funding_rate"
    Params: ClassVar[type[StrategyParams]] = FundingRateParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"ctx", "funding"})

    def __init__(self, coin: str, params: FundingRateParams):
        super().__init__(coin, params)
        # settled funding: (hour, rate), oldest first; enough for any lookback
        self._settled: deque[tuple[int, float]] = deque(maxlen=MAX_LOOKBACK_HOURS)
        self._rank = RollingRank(params.lookback_hours)
        self._pending_flip = False  # a settled flip not yet reported
        self._predicted_flip_done = False  # the predicted flip of this period was reported
        self._samples: deque[_Sample] = deque()
        self._last_ctx_ms: int | None = None
        self._last_emit_ms: int | None = None

    def reconfigure(self, params: FundingRateParams) -> None:
        if params.lookback_hours != self.params.lookback_hours:
            self._rank = RollingRank(params.lookback_hours)
            for _, rate in list(self._settled)[-params.lookback_hours :]:
                self._rank.push(rate)
        self.params = params

    # ---- events ------------------------------------------------------------------------

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        if isinstance(event, FundingEvent):
            self._on_funding(event)
            return None
        if isinstance(event, AssetCtx):
            return self._on_ctx(event)
        return None

    def _on_funding(self, ev: FundingEvent) -> None:
        if not math.isfinite(ev.funding_rate):
            return
        hour = ev.ts_ms // HOUR_MS
        if self._settled and hour <= self._settled[-1][0]:
            return  # a repeat, or older than what we have
        if self._settled and _sign(ev.funding_rate) * _sign(self._settled[-1][1]) < 0:
            self._pending_flip = True
        self._settled.append((hour, ev.funding_rate))
        self._rank.push(ev.funding_rate)
        self._predicted_flip_done = False

    def _on_ctx(self, ev: AssetCtx) -> Signal | None:
        if not all(math.isfinite(v) for v in (ev.funding_rate, ev.open_interest_sz, ev.mark_px)):
            return None
        if self._last_ctx_ms is not None and ev.ts_ms < self._last_ctx_ms:
            return None
        self._last_ctx_ms = ev.ts_ms
        window_ms = round(self.params.oi_change_hours * HOUR_MS)
        samples = self._samples
        if not samples or ev.ts_ms - samples[-1].ts_ms >= window_ms // SAMPLES:
            samples.append(_Sample(ev.ts_ms, ev.open_interest_sz, ev.mark_px))
        while samples[0].ts_ms < ev.ts_ms - window_ms:
            samples.popleft()
        span_ms = ev.ts_ms - samples[0].ts_ms
        if len(self._rank) < self.params.min_history or span_ms < min(window_ms // 4, WARMUP_MS):
            return None

        last_settled = self._settled[-1][1]
        predicted_flip = _sign(ev.funding_rate) * _sign(last_settled) < 0
        trigger_predicted = predicted_flip and not self._predicted_flip_done
        due = (
            self._last_emit_ms is None
            or ev.ts_ms - self._last_emit_ms >= self.params.emit_interval_s * 1000
        )
        if not (due or self._pending_flip or trigger_predicted):
            return None
        self._pending_flip = False
        if predicted_flip:
            self._predicted_flip_done = True
        self._last_emit_ms = ev.ts_ms
        return self._build(ev, samples[0], span_ms, window_ms, predicted_flip)

    # ---- the view ----------------------------------------------------------------------

    def _build(
        self, ev: AssetCtx, ref: _Sample, span_ms: int, window_ms: int, predicted_flip: bool
    ) -> Signal:
        p = self.params
        rate = ev.funding_rate
        stats = self._rank.window
        n = len(self._rank)
        sd = stats.std
        z = (rate - stats.mean) / sd if sd >= STD_FLOOR else 0.0
        z = max(-Z_CAP, min(Z_CAP, z))
        pctile = 100.0 * self._rank.percentile(rate)
        extreme = abs(rate) >= p.extreme_threshold

        settled = self._settled[-1][1]
        prev_settled = self._settled[-2][1] if len(self._settled) >= 2 else settled
        settled_flip = _sign(settled) * _sign(prev_settled) < 0

        oi_change = _change(ev.open_interest_sz, ref.oi)
        px_change = _change(ev.mark_px, ref.mark)
        quadrant = _quadrant(oi_change, px_change)
        lean = _QUADRANT_LEAN[quadrant]
        price_side = _sign(px_change) if quadrant != NONE else 0

        # direction, strength and how the other half agrees (+1 / 0 / -1)
        direction: Direction
        if extreme:
            side = -_sign(rate)
            excess = clamp01((abs(rate) / p.extreme_threshold - 1.0) / 2.0)
            strength = 0.4 + 0.3 * excess + 0.3 * clamp01(z * _sign(rate) / 3.0)
            agreement = price_side * side  # the unwind already under way, or not
        elif lean != 0:
            side = lean
            q_mag = clamp01((abs(oi_change) / OI_MOVE + abs(px_change) / PX_MOVE) / 10.0)
            strength = 0.5 * q_mag
            funding_side = _sign(z) if abs(z) >= 1.0 else 0
            agreement = funding_side * side  # e.g. new longs while longs pay more
        else:
            side = 0
            strength = 0.0
            agreement = 0
        direction = "long" if side > 0 else "short" if side < 0 else "neutral"

        history = clamp01(n / p.lookback_hours)
        coverage = clamp01(span_ms / window_ms)
        confidence = (0.4 + 0.6 * history) * (0.5 + 0.5 * coverage)
        confidence *= {1: 1.0, 0: 0.8, -1: 0.55}[agreement]

        span_h = span_ms / HOUR_MS
        features: dict[str, float] = {
            "funding_rate_h": rate,
            "funding_annual": rate * HOURS_PER_YEAR,
            "funding_z": z,
            "funding_pctile": pctile,
            "funding_extreme": float(extreme),
            "extreme_threshold_h": p.extreme_threshold,
            "settled_rate_h": settled,
            "prev_settled_rate_h": prev_settled,
            "settled_flip": float(settled_flip),
            "predicted_flip": float(predicted_flip),
            "history_n": float(n),
            "history_days": n / 24.0,
            "lookback_days": p.lookback_hours / 24.0,
            "oi_sz": ev.open_interest_sz,
            "mark_px": ev.mark_px,
            "oi_change_frac": oi_change,
            "mark_change_frac": px_change,
            "oi_window_h": p.oi_change_hours,
            "oi_span_h": span_h,
            "quadrant": float(quadrant),
            "quadrant_lean": float(lean),
            "agreement": float(agreement),
        }

        history_text = f"{n // 24} days" if n % 24 == 0 and n >= 48 else f"{n} hours"
        text = (
            f"Funding {rate * 100:.4f}%/h ({rate * HOURS_PER_YEAR * 100:.2f}% annualised) "
            f"sits at percentile {pctile:.0f} of the last {history_text} (z {z:+.1f})"
        )
        if extreme and rate > 0:
            text += ": longs are crowded, a contrarian short lean."
        elif extreme:
            text += ": shorts are crowded, a contrarian long lean."
        else:
            text += ", not extreme."
        if settled_flip:
            turned = "positive" if settled > 0 else "negative"
            text += (
                f" Settled funding flipped {turned}: {settled * 100:.4f}%/h after"
                f" {prev_settled * 100:.4f}%/h."
            )
        elif predicted_flip:
            turned = "positive" if rate > 0 else "negative"
            text += (
                f" The predicted rate has turned {turned} against the last settled"
                f" {settled * 100:.4f}%/h."
            )
        text += (
            f" Open interest {oi_change * 100:+.1f}% while price {px_change * 100:+.1f}%"
            f" over {span_h:.1f}h: {_QUADRANT_TEXT[quadrant]}."
        )
        return self.signal(ev.ts_ms, direction, strength, confidence, text, features)
