"""Cross-signal intelligence: one combined view per coin from the other strategies' signals.

It reads two things:

* the FINAL bars of ``regime_interval`` (a bar is final once a bar of the same interval
  with a later ``open_ts_ms`` arrives), to classify the market regime: realised
  volatility (standard deviation of the log returns of the last ``regime_bars`` bars)
  ranked against its own history (the previous ``10 × regime_bars`` values), and the
  efficiency ratio ``|Σ r| / Σ |r|`` of those returns (1 = a straight line, 0 = going
  nowhere). Volatility percentile ``>= vol_high_pct`` → *volatile*; else efficiency
  ``>= trend_threshold`` → *trending*; else percentile ``<= vol_low_pct`` → *quiet*;
  else *ranging*. The volatility rank is used once ``regime_bars`` past values exist;
  before that only the efficiency ratio decides (trending or ranging). Until
  ``regime_bars`` returns are in, the regime is unknown.
* the ``Signal`` of every other strategy of the same coin (built-ins or plug-ins; its
  own and other coins' signals are ignored). The newest one per strategy counts while it
  is at most ``signal_ttl_s`` old; a strategy silent for four TTLs is forgotten.

Combination, over the live components, with ``w`` the regime's weight of the strategy
(``default_weight`` when the regime has none for it, or for all while the regime is
unknown) and ``dir`` +1 long, −1 short, 0 neutral::

    score      = Σ w·dir·strength·confidence / Σ w          (−1 … +1)
    direction  = long if score > min_score, short if score < −min_score, else neutral
    strength   = |score|
    confidence = agree_weight_share × coverage × regime_factor × component_confidence

``agree_weight_share`` is the share of the weight whose direction is the combined one,
``coverage`` the live share of the strategies heard from, ``regime_factor`` 1 with a
known regime and 0.5 without, ``component_confidence`` the weighted mean of the
components' own confidences.

Emission: on a component signal, at most once per ``emit_interval_s`` of event time, with
``ts_ms`` the newest input's time. A component arriving with the same ``ts_ms`` as the
last emission re-emits it refined, so that strategies closing the same bar together are
combined whatever the order they arrive in.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bistouryd.market import Candle, MarketEvent
from bistouryd.strategies.base import Direction, Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.indicators import Rolling, RollingRank, clamp01

Regime = Literal["trending", "ranging", "volatile", "quiet", "unknown"]
REGIMES: tuple[str, ...] = ("trending", "ranging", "volatile", "quiet")
REGIME_CODE: dict[str, float] = {
    "unknown": 0.0,
    "trending": 1.0,
    "ranging": 2.0,
    "volatile": 3.0,
    "quiet": 4.0,
}
MAX_WEIGHT = 10.0
MAX_STRATEGIES_PER_REGIME = 64
VOL_HISTORY_BARS = 10  # volatility is ranked against this many × regime_bars past values
FORGET_AFTER_TTLS = 4  # a strategy silent this many TTLs no longer counts for coverage
UNKNOWN_REGIME_FACTOR = 0.5
NARRATIVE_MAX = 600

_DIR: dict[str, float] = {"long": 1.0, "short": -1.0, "neutral": 0.0}


def _default_weights() -> dict[str, dict[str, float]]:
    return {
        "trending": {
            "multi_timeframe": 1.0,
            "volume_profile": 0.6,
            "order_flow": 0.5,
            "funding_rate": 0.4,
        },
        "ranging": {
            "volume_profile": 1.0,
            "order_flow": 0.8,
            "funding_rate": 0.6,
            "multi_timeframe": 0.4,
        },
        "volatile": {
            "order_flow": 1.0,
            "funding_rate": 0.8,
            "multi_timeframe": 0.5,
            "volume_profile": 0.5,
        },
        "quiet": {
            "funding_rate": 1.0,
            "volume_profile": 0.7,
            "multi_timeframe": 0.5,
            "order_flow": 0.3,
        },
    }


class CrossSignalParams(StrategyParams):
    regime_interval: Literal["1m", "5m", "15m"] = Field(
        default="5m", description="bar interval the regime classifier reads"
    )
    regime_bars: int = Field(
        default=48,
        ge=10,
        le=2000,
        description="bars of log returns behind realised volatility and the efficiency ratio",
    )
    vol_high_pct: float = Field(
        default=75.0,
        ge=50,
        le=99,
        description="volatility percentile (vs its own history) at or above which the "
        "market is volatile",
    )
    vol_low_pct: float = Field(
        default=25.0,
        ge=1,
        le=50,
        description="volatility percentile at or below which a non-trending market is quiet",
    )
    trend_threshold: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="efficiency ratio |net move| / Σ|moves| at or above which it is trending",
    )
    signal_ttl_s: float = Field(
        default=900.0, ge=30, le=86_400, description="a component signal older than this expires"
    )
    emit_interval_s: float = Field(
        default=60.0, ge=5, le=3600, description="at most one combined signal per this many s"
    )
    min_score: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="|combined score| above which the direction is long or short",
    )
    default_weight: float = Field(
        default=0.5,
        ge=0,
        le=MAX_WEIGHT,
        description="weight of a strategy the regime's table does not list (and of all "
        "while the regime is unknown)",
    )
    weights: dict[str, dict[str, float]] = Field(
        default_factory=_default_weights,
        description="regime (trending, ranging, volatile, quiet) → strategy → weight (0..10)",
    )

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, weights: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        unknown = sorted(set(weights) - set(REGIMES))
        if unknown:
            raise ValueError(f"unknown regime(s) {', '.join(unknown)}; use {', '.join(REGIMES)}")
        for regime, table in weights.items():
            if len(table) > MAX_STRATEGIES_PER_REGIME:
                raise ValueError(
                    f"{regime}: at most {MAX_STRATEGIES_PER_REGIME} strategies per regime"
                )
            for name, w in table.items():
                if not name:
                    raise ValueError(f"{regime}: empty strategy name")
                if not (math.isfinite(w) and 0.0 <= w <= MAX_WEIGHT):
                    raise ValueError(f"{regime}.{name}: weight must be within 0..{MAX_WEIGHT:g}")
        return weights


class CrossSignal(Strategy[CrossSignalParams]):
    name: ClassVar[str] = "cross_signal"
    Params: ClassVar[type[StrategyParams]] = CrossSignalParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"candle", "signal"})

    def __init__(self, coin: str, params: CrossSignalParams):
        super().__init__(coin, params)
        n = params.regime_bars
        # candles of regime_interval: the bar still forming and the last final one
        self._bar: Candle | None = None
        self._final_open_ms: int | None = None
        self._last_close: float | None = None
        # log returns of final bars, kept to rebuild the windows when regime_bars changes
        self._history: deque[float] = deque(maxlen=(VOL_HISTORY_BARS + 1) * n)
        # (open_ts_ms, close_px) of those bars, to fit in a late backfilled bar
        self._closes: deque[tuple[int, float]] = deque(maxlen=(VOL_HISTORY_BARS + 1) * n + 1)
        self._ret = Rolling(n)
        self._abs_ret = Rolling(n)
        self._vol_rank = RollingRank(VOL_HISTORY_BARS * n)
        self._er = 0.0
        self._vol = 0.0
        self._vol_pctile: float | None = None  # 0..100; None while the history is short
        self._regime: Regime = "unknown"
        # component signals
        self._components: dict[str, Signal] = {}
        self._newest_ms = 0
        self._last_emit_ms: int | None = None

    # ---- parameters ---------------------------------------------------------------------

    def reconfigure(self, params: CrossSignalParams) -> None:
        old = self.params
        self.params = params
        if params.regime_interval != old.regime_interval:
            self._bar = None
            self._final_open_ms = None
            self._last_close = None
            self._history = deque(maxlen=(VOL_HISTORY_BARS + 1) * params.regime_bars)
            self._closes = deque(maxlen=(VOL_HISTORY_BARS + 1) * params.regime_bars + 1)
            self._reset_windows()
        elif params.regime_bars != old.regime_bars:
            # replay the returns we still have through windows of the new size
            history = self._history
            self._history = deque(history, maxlen=(VOL_HISTORY_BARS + 1) * params.regime_bars)
            self._closes = deque(
                self._closes, maxlen=(VOL_HISTORY_BARS + 1) * params.regime_bars + 1
            )
            self._reset_windows()
            for r in self._history:
                self._push_return(r)
        else:
            self._classify()  # thresholds may have changed

    def _reset_windows(self) -> None:
        n = self.params.regime_bars
        self._ret = Rolling(n)
        self._abs_ret = Rolling(n)
        self._vol_rank = RollingRank(VOL_HISTORY_BARS * n)
        self._er = 0.0
        self._vol = 0.0
        self._vol_pctile = None
        self._regime = "unknown"

    # ---- events -------------------------------------------------------------------------

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        if isinstance(event, Signal):
            return self._on_signal(event)
        if isinstance(event, Candle):
            self._on_candle(event)
        return None

    def _on_candle(self, c: Candle) -> None:
        if c.interval != self.params.regime_interval or c.coin != self.coin:
            return
        bar = self._bar
        if (self._final_open_ms is not None and c.open_ts_ms <= self._final_open_ms) or (
            bar is not None and c.open_ts_ms < bar.open_ts_ms
        ):
            self._late_bar(c)
        elif bar is None or c.open_ts_ms == bar.open_ts_ms:
            self._bar = c  # the latest version of the bar still forming
        else:
            self._final_open_ms = bar.open_ts_ms
            self._close_bar(bar)
            self._bar = c

    def _late_bar(self, c: Candle) -> None:
        """A final bar older than the forming one, from a backfill that landed after the
        live stream had started: fitted into the history, which is then replayed."""
        known = {ts for ts, _ in self._closes}
        closes = self._closes
        if c.open_ts_ms in known or c.close_px <= 0:
            return
        if len(closes) == closes.maxlen and c.open_ts_ms < closes[0][0]:
            return
        merged = sorted([*closes, (c.open_ts_ms, c.close_px)])
        closes.clear()
        closes.extend(merged)
        self._final_open_ms = max(self._final_open_ms or c.open_ts_ms, c.open_ts_ms)
        self._history.clear()
        self._reset_windows()
        for (_, a), (_, b) in zip(list(closes), list(closes)[1:], strict=False):
            self._history.append(math.log(b / a))
            self._push_return(self._history[-1])
        self._last_close = closes[-1][1]

    def _close_bar(self, bar: Candle) -> None:
        close = bar.close_px
        prev = self._last_close
        if prev is not None and prev > 0 and close > 0:
            r = math.log(close / prev)
            self._history.append(r)
            self._push_return(r)
        if close > 0:
            self._last_close = close
            self._closes.append((bar.open_ts_ms, close))
        self._newest_ms = max(self._newest_ms, bar.close_ts_ms)

    def _push_return(self, r: float) -> None:
        n = self.params.regime_bars
        self._ret.push(r)
        self._abs_ret.push(abs(r))
        if not self._ret.full:
            return
        mean_abs = self._abs_ret.mean
        self._er = clamp01(abs(self._ret.mean) / mean_abs) if mean_abs > 0 else 0.0
        # 9 significant digits: equal volatilities rank as ties despite float noise
        vol = float(f"{self._ret.std:.9g}")
        self._vol = vol
        rank = self._vol_rank
        self._vol_pctile = 100.0 * rank.percentile(vol) if len(rank) >= n else None
        rank.push(vol)
        self._classify()

    def _classify(self) -> None:
        p = self.params
        if not self._ret.full:
            self._regime = "unknown"
            return
        pct = self._vol_pctile
        if pct is not None and pct >= p.vol_high_pct:
            self._regime = "volatile"
        elif self._er >= p.trend_threshold:
            self._regime = "trending"
        elif pct is not None and pct <= p.vol_low_pct:
            self._regime = "quiet"
        else:
            self._regime = "ranging"

    def _on_signal(self, sig: Signal) -> Signal | None:
        if sig.coin != self.coin or sig.strategy == self.name:
            return None
        prev = self._components.get(sig.strategy)
        if prev is not None and sig.ts_ms < prev.ts_ms:
            return None  # an older view than the one we have
        self._components[sig.strategy] = sig
        now = max(self._newest_ms, sig.ts_ms)
        self._newest_ms = now
        p = self.params
        ttl_ms = p.signal_ttl_s * 1000.0
        forget_ms = FORGET_AFTER_TTLS * ttl_ms
        for name in [k for k, s in self._components.items() if now - s.ts_ms > forget_ms]:
            del self._components[name]
        last = self._last_emit_ms
        if last is not None and now != last and now - last < p.emit_interval_s * 1000.0:
            return None
        live = {k: s for k, s in self._components.items() if now - s.ts_ms <= ttl_ms}
        if not live:
            return None
        self._last_emit_ms = now
        return self._assess(now, live, len(self._components))

    # ---- the combined view --------------------------------------------------------------

    def _assess(self, now: int, live: dict[str, Signal], known_n: int) -> Signal:
        p = self.params
        regime = self._regime
        table = p.weights.get(regime, {}) if regime != "unknown" else {}
        names = sorted(live)
        weight = {k: table.get(k, p.default_weight) for k in names}
        total_w = math.fsum(weight.values())
        if total_w > 0:
            score = (
                math.fsum(
                    weight[k] * _DIR[live[k].direction] * live[k].strength * live[k].confidence
                    for k in names
                )
                / total_w
            )
            comp_conf = math.fsum(weight[k] * live[k].confidence for k in names) / total_w
        else:
            score = comp_conf = 0.0
        score = max(-1.0, min(1.0, score))
        direction: Direction = (
            "long" if score > p.min_score else "short" if score < -p.min_score else "neutral"
        )
        agree_w = math.fsum(weight[k] for k in names if live[k].direction == direction)
        agree_share = agree_w / total_w if total_w > 0 else 0.0
        coverage = len(live) / known_n if known_n else 0.0
        regime_factor = 1.0 if regime != "unknown" else UNKNOWN_REGIME_FACTOR
        confidence = agree_share * coverage * regime_factor * comp_conf

        groups: dict[str, list[str]] = {"long": [], "short": [], "neutral": []}
        for k in sorted(names, key=lambda k: (-weight[k], k)):
            groups[live[k].direction].append(_label(k))

        pct = self._vol_pctile
        features: dict[str, float] = {
            "regime_code": REGIME_CODE[regime],
            "regime_known": 1.0 if regime != "unknown" else 0.0,
            "regime_bars": float(p.regime_bars),
            "regime_bars_seen": float(len(self._ret)),
            "efficiency_ratio": self._er,
            "realised_vol": self._vol,
            "vol_pctile": pct if pct is not None else 50.0,
            "vol_rank_ready": 1.0 if pct is not None else 0.0,
            "score": score,
            "agree_weight_share": agree_share,
            "coverage": coverage,
            "regime_factor": regime_factor,
            "component_confidence": comp_conf,
            "live_n": float(len(live)),
            "known_n": float(known_n),
            "long_n": float(len(groups["long"])),
            "short_n": float(len(groups["short"])),
            "neutral_n": float(len(groups["neutral"])),
        }
        for k in names:
            s, key = live[k], _label(k)
            features[f"dir_{key}"] = _DIR[s.direction]
            features[f"strength_{key}"] = s.strength
            features[f"confidence_{key}"] = s.confidence
            features[f"weight_{key}"] = weight[k]
            features[f"age_s_{key}"] = (now - s.ts_ms) / 1000.0

        narrative = self._narrative(regime, groups, direction, score, features)
        return self.signal(now, direction, abs(score), confidence, narrative, features)

    def _narrative(
        self,
        regime: Regime,
        groups: dict[str, list[str]],
        direction: Direction,
        score: float,
        f: dict[str, float],
    ) -> str:
        if regime == "unknown":
            head = (
                f"Regime not yet known ({f['regime_bars_seen']:.0f} of "
                f"{f['regime_bars']:.0f} bars); all signals weighted equally."
            )
        elif f["vol_rank_ready"]:
            head = (
                f"{regime.capitalize()} regime (efficiency {f['efficiency_ratio']:.2f}, "
                f"volatility at percentile {f['vol_pctile']:.0f})."
            )
        else:
            head = (
                f"{regime.capitalize()} regime (efficiency {f['efficiency_ratio']:.2f}; "
                f"volatility history still building)."
            )
        tail = f"combined score {score:+.2f} ({direction})."

        parts: list[str] = []
        if direction != "neutral":
            other = "short" if direction == "long" else "long"
            agree, oppose = groups[direction], groups[other]
            if agree:
                parts.append(f"{_join(agree)} agree{'' if len(agree) > 1 else 's'} {direction}")
            if oppose:
                parts.append(f"{_join(oppose)} lean{'' if len(oppose) > 1 else 's'} {other}")
        else:
            for side in ("long", "short"):
                if groups[side]:
                    many = len(groups[side]) > 1
                    parts.append(f"{_join(groups[side])} lean{'' if many else 's'} {side}")
        if groups["neutral"]:
            many = len(groups["neutral"]) > 1
            parts.append(f"{_join(groups['neutral'])} {'are' if many else 'is'} neutral")
        text = f"{head} {'; '.join([*parts, tail])}"
        if len(text) <= NARRATIVE_MAX:
            return text
        # too many components to name: counts instead
        counts = (
            f"{f['long_n']:.0f} signals lean long, {f['short_n']:.0f} short and "
            f"{f['neutral_n']:.0f} neutral; {tail}"
        )
        return f"{head} {counts}"[:NARRATIVE_MAX]


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _label(name: str) -> str:
    """A strategy name safe for feature keys and narratives: word characters only and not
    starting with a digit, so no part of it reads as a number."""
    label = _UNSAFE.sub("_", name) or "unnamed"
    return f"s_{label}" if label[:1].isdigit() else label


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
