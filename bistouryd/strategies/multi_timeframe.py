"""Multi-timeframe candlestick narratives: trend, structure and classic patterns on 1m, 5m
and 15m bars, combined into one view where higher timeframes weigh more.

Per timeframe, on each FINAL bar (a bar is final once a candle of the same interval with a
later ``open_ts_ms`` arrives; the in-progress bar is replaced by its newer versions and
never used), from the last ``lookback_periods`` final bars:

- trend: EMA(``ma_bars``) slope per bar, close against the ``ma_bars`` mean, and structure
  (higher highs and higher lows, or lower highs and lower lows, across three blocks of
  ``ma_bars // 4`` bars); two of the three agreeing make an uptrend or a downtrend;
- the last bar: range against the ATR, volume against the mean of the prior bars, and
  the classic patterns (engulfing, hammer / shooting star, doji, inside / outside bar,
  close beyond the prior ``range_bars`` high or low).

A signal is emitted when a bar of the smallest configured timeframe becomes final and
every timeframe has a view built from at least ``ma_bars`` final bars. Its ``ts_ms`` is
when that became known: the ``open_ts_ms`` of the candle that ended the bar (its close
plus 1 ms when bars follow each other), so a signal never carries a time before the data
it needed. A higher timeframe contributes its latest final bar closed by the bar's close
(never a later one, whatever order the timeframes' candles arrive in), and none at all, so
no signal, when that bar closed more than three of its intervals earlier. Bars older than
the forming one that arrive late (a backfill landing after the live stream started) fill
the history without emitting.

Features are per timeframe (``trend_15m``, ``ema_slope_pct_5m``, ``volume_x_1m``, ...).
The ``_pct`` features are fractions (0.0012 is 0.12 %), so that the narrative can print
them with ``%`` and ``unbacked_numbers`` finds them; ``_x`` features are multiples and
``_px`` features prices.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from bistouryd.market import INTERVAL_MS, Candle, MarketEvent
from bistouryd.strategies.base import Direction, Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.indicators import clamp01, slope, sma, true_range

Timeframe = Literal["1m", "5m", "15m"]
_ALL_TIMEFRAMES: tuple[Timeframe, ...] = ("1m", "5m", "15m")

# Higher timeframes weigh more in the confluence score.
_WEIGHT = {"1m": 1.0, "5m": 2.0, "15m": 3.0}
# |confluence score| below this is neutral; a timeframe leans when |score| reaches _LEAN.
_NEUTRAL_BAND = 0.15
_LEAN = 0.1
# The EMA slope counts as a trend vote only above this share of the ATR per bar.
_SLOPE_DEADBAND_ATR = 0.02
# EMA computed over at most this many multiples of its length (older weights < e^-8).
_EMA_SPAN = 4
_SLOPE_POINTS = 5
# A higher timeframe whose last final bar closed more than this many of its bars before
# the signal is stale (its feed stopped): no signal until it comes back.
_STALE_BARS = 3
_VOLUME_X_CAP = 100.0
_MAX_NARRATIVE = 600


class MultiTimeframeParams(StrategyParams):
    timeframes: list[Timeframe] = Field(
        default_factory=lambda: list(_ALL_TIMEFRAMES),
        min_length=1,
        max_length=3,
        description="bar intervals read; signals are emitted on closes of the smallest",
    )
    lookback_periods: int = Field(
        default=60, ge=5, le=5000, description="final bars kept per timeframe"
    )
    ma_bars: int = Field(
        default=20,
        ge=3,
        le=200,
        description="length of the EMA, the mean, the ATR and the volume average, in bars; "
        "also the warm-up every timeframe needs before a signal",
    )
    range_bars: int = Field(
        default=20,
        ge=5,
        le=500,
        description="bars before the last whose high/low a close must clear to break out",
    )
    volume_confirm_multiple: float = Field(
        default=1.5,
        ge=1.0,
        le=10.0,
        description="bar volume over the prior bars' mean volume that confirms a pattern",
    )

    @field_validator("timeframes")
    @classmethod
    def _unique(cls, timeframes: list[Timeframe]) -> list[Timeframe]:
        dupes = sorted({tf for tf in timeframes if timeframes.count(tf) > 1})
        if dupes:
            raise ValueError(f"timeframes listed more than once: {', '.join(dupes)}")
        return timeframes

    @model_validator(mode="after")
    def _lookback_covers_windows(self) -> MultiTimeframeParams:
        need = max(self.ma_bars, self.range_bars)
        if self.lookback_periods < need:
            raise ValueError(
                f"lookback_periods ({self.lookback_periods}) must be at least ma_bars "
                f"({self.ma_bars}) and range_bars ({self.range_bars}): raise it to {need} "
                "or shorten the windows"
            )
        return self


@dataclass(frozen=True, slots=True)
class _Bar:
    open_ts_ms: int
    close_ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(slots=True)
class _View:
    """One timeframe as of one final bar: its features (unsuffixed) and score."""

    tf: str
    close_ts_ms: int
    bars_n: int
    f: dict[str, float]


@dataclass(slots=True)
class _Series:
    bars: deque[_Bar]
    views: deque[_View]
    pending: Candle | None = None
    last_final_open_ms: int = -1


def _bar(c: Candle) -> _Bar:
    return _Bar(
        c.open_ts_ms, c.close_ts_ms, c.open_px, c.high_px, c.low_px, c.close_px, c.volume_sz
    )


def _sign(x: float) -> int:
    return 1 if x > 0 else -1 if x < 0 else 0


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def _px(x: float) -> str:
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 1:
        return f"{x:,.2f}"
    if ax == 0:
        return "0"
    decimals = min(10, 3 - math.floor(math.log10(ax)))
    return f"{x:.{decimals}f}"


def _view(tf: str, bars: deque[_Bar], p: MultiTimeframeParams) -> _View:
    """Features of the last final bar of one timeframe (``len(bars) >= ma_bars``)."""
    n = len(bars)
    ma = p.ma_bars
    b = bars[-1]
    prev = bars[-2] if n >= 2 else None
    close = b.close

    # Mean, ATR and volume average over the last ma_bars bars.
    closes = [bars[i].close for i in range(n - ma, n)]
    mean = sma(closes)
    trs = [
        true_range(bars[i].high, bars[i].low, bars[i - 1].close if i > 0 else None)
        for i in range(n - ma, n)
    ]
    atr = sma(trs)
    prior_vol = [bars[i].volume for i in range(max(0, n - 1 - ma), n - 1)]
    vol_mean = sma(prior_vol)
    if vol_mean > 0:
        volume_x = min(_VOLUME_X_CAP, b.volume / vol_mean)
    else:
        volume_x = 1.0 if b.volume <= 0 else _VOLUME_X_CAP

    # EMA over the recent closes, and its least-squares slope over the last few points.
    alpha = 2.0 / (ma + 1)
    start = max(0, n - _EMA_SPAN * ma)
    ema = bars[start].close
    tail: deque[float] = deque([ema], maxlen=_SLOPE_POINTS)
    for i in range(start + 1, n):
        ema += alpha * (bars[i].close - ema)
        tail.append(ema)
    slope_px = slope(list(tail))
    ema_slope = slope_px / ema if ema else 0.0
    close_vs_mean = (close - mean) / mean if mean else 0.0

    # Structure: three blocks of w bars, highs and lows compared block to block.
    w = max(1, ma // 4)
    blocks = [[bars[i] for i in range(n - (3 - k) * w, n - (2 - k) * w)] for k in range(3)]
    highs = [max(x.high for x in blk) for blk in blocks]
    lows = [min(x.low for x in blk) for blk in blocks]
    structure = (
        sum(_sign(highs[k + 1] - highs[k]) + _sign(lows[k + 1] - lows[k]) for k in range(2)) / 4.0
    )

    slope_vote = _sign(slope_px) if atr > 0 and abs(slope_px) > _SLOPE_DEADBAND_ATR * atr else 0
    structure_vote = 1 if structure >= 0.5 else -1 if structure <= -0.5 else 0
    votes = slope_vote + structure_vote + _sign(close - mean)
    trend = 1 if votes >= 2 else -1 if votes <= -2 else 0

    # Patterns of the last bar (and the one before).
    rng = b.high - b.low
    body = abs(b.close - b.open)
    upper = b.high - max(b.open, b.close)
    lower = min(b.open, b.close) - b.low
    doji = rng > 0 and body <= 0.1 * rng
    hammer = 0
    if rng > 0 and not doji:
        if lower >= 2 * body and upper <= body:
            hammer = 1
        elif upper >= 2 * body and lower <= body:
            hammer = -1
    engulfing = inside = outside = 0
    if prev is not None:
        p_body = abs(prev.close - prev.open)
        if (
            prev.close < prev.open
            and b.close > b.open
            and b.open <= prev.close
            and b.close >= prev.open
            and body > p_body
        ):
            engulfing = 1
        elif (
            prev.close > prev.open
            and b.close < b.open
            and b.open >= prev.close
            and b.close <= prev.open
            and body > p_body
        ):
            engulfing = -1
        if b.high <= prev.high and b.low >= prev.low and (b.high < prev.high or b.low > prev.low):
            inside = 1
        if b.high >= prev.high and b.low <= prev.low and (b.high > prev.high or b.low < prev.low):
            outside = 1
    prior = [bars[i] for i in range(max(0, n - 1 - p.range_bars), n - 1)]
    range_high = max((x.high for x in prior), default=b.high)
    range_low = min((x.low for x in prior), default=b.low)
    breakout = 1 if prior and close > range_high else -1 if prior and close < range_low else 0

    # The timeframe's own lean, in [-1, 1].
    trend_part = 0.4 * trend + 0.1 * structure + 0.1 * _sign(close_vs_mean)
    if doji:
        trend_part *= 0.8
    pattern_part = 0.3 * engulfing + 0.2 * hammer + 0.3 * breakout
    if outside:
        pattern_part += 0.1 * _sign(b.close - b.open)
    confirmed = volume_x >= p.volume_confirm_multiple
    if confirmed:
        pattern_part *= 1.5
    score = max(-1.0, min(1.0, trend_part + pattern_part))

    f = {
        "trend": float(trend),
        "structure": structure,
        "ema_slope_pct": ema_slope,
        "close_vs_mean_pct": close_vs_mean,
        "atr_pct": atr / close if close else 0.0,
        "range_atr": rng / atr if atr > 0 else 0.0,
        "volume_x": volume_x,
        "volume_confirmed": 1.0 if confirmed else 0.0,
        "engulfing": float(engulfing),
        "hammer": float(hammer),
        "doji": 1.0 if doji else 0.0,
        "inside_bar": float(inside),
        "outside_bar": float(outside),
        "breakout": float(breakout),
        "range_high_px": range_high,
        "range_low_px": range_low,
        "close_px": close,
        "score": score,
    }
    return _View(tf, b.close_ts_ms, n, f)


def _patterns(v: _View, p: MultiTimeframeParams) -> list[str]:
    f = v.f
    out: list[str] = []
    if f["breakout"] > 0:
        out.append(f"a close above the {p.range_bars}-bar high of {_px(f['range_high_px'])}")
    elif f["breakout"] < 0:
        out.append(f"a close below the {p.range_bars}-bar low of {_px(f['range_low_px'])}")
    if f["engulfing"]:
        out.append("bullish engulfing" if f["engulfing"] > 0 else "bearish engulfing")
    if f["hammer"]:
        out.append("a hammer" if f["hammer"] > 0 else "a shooting star")
    if f["doji"]:
        out.append("a doji")
    if f["outside_bar"]:
        out.append("an outside bar")
    if f["inside_bar"]:
        out.append("an inside bar")
    return out[:2]


def _state(v: _View, higher_trend: int, p: MultiTimeframeParams) -> str:
    f = v.f
    trend = int(f["trend"])
    mean = f"the {p.ma_bars}-bar mean ({_pct(f['close_vs_mean_pct'])})"
    above = f["close_vs_mean_pct"] > 0
    if trend:
        word = "uptrend" if trend > 0 else "downtrend"
        return f"{word} (EMA{p.ma_bars} slope {_pct(f['ema_slope_pct'])}/bar)"
    if higher_trend > 0:
        return f"pullback holding above {mean}" if above else f"pullback below {mean}"
    if higher_trend < 0:
        return f"bounce above {mean}" if above else f"bounce capped below {mean}"
    return f"range-bound {'above' if above else 'below'} {mean}"


def _phrase(v: _View, higher_trend: int, p: MultiTimeframeParams, with_patterns: bool) -> str:
    text = f"{v.tf} {_state(v, higher_trend, p)}"
    pats = _patterns(v, p) if with_patterns else []
    if pats:
        text += f", with {' and '.join(pats)} on {v.f['volume_x']:.1f}x average volume"
    return text


class MultiTimeframe(Strategy[MultiTimeframeParams]):
    """Candlestick trend, structure and patterns on several timeframes, in confluence."""

    name = "multi_timeframe"
    Params = MultiTimeframeParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"candle"})

    def __init__(self, coin: str, params: MultiTimeframeParams):
        super().__init__(coin, params)
        self._series: dict[str, _Series] = {}
        self._order: list[str] = []
        self._configure(params)

    # ---- configuration --------------------------------------------------------------

    def _configure(self, params: MultiTimeframeParams) -> None:
        self.params = params
        self._order = sorted(params.timeframes, key=lambda tf: INTERVAL_MS[tf])
        keep = params.lookback_periods + 1
        series: dict[str, _Series] = {}
        for tf in self._order:
            old = self._series.get(tf)
            bars: deque[_Bar] = deque(old.bars if old else (), maxlen=keep)
            s = _Series(bars=bars, views=deque(maxlen=keep))
            if old is not None:
                s.pending = old.pending
                s.last_final_open_ms = old.last_final_open_ms
                if len(bars) >= params.ma_bars:
                    s.views.append(_view(tf, bars, params))
            series[tf] = s
        self._series = series

    def reconfigure(self, params: MultiTimeframeParams) -> None:
        """Keeps the final bars (up to the new lookback) and the in-progress ones; the
        latest view of each timeframe is recomputed with the new windows."""
        self._configure(params)

    # ---- events ---------------------------------------------------------------------

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        if not isinstance(event, Candle) or event.coin != self.coin:
            return None
        s = self._series.get(event.interval)
        if s is None:
            return None
        pending = s.pending
        if event.open_ts_ms <= s.last_final_open_ms or (
            pending is not None and event.open_ts_ms < pending.open_ts_ms
        ):
            self._history(event.interval, s, event)
            return None
        if pending is None or event.open_ts_ms == pending.open_ts_ms:
            s.pending = event
            return None
        # A later bar: the pending one is final.
        s.pending = event
        s.last_final_open_ms = pending.open_ts_ms
        s.bars.append(_bar(pending))
        if len(s.bars) < self.params.ma_bars:
            return None
        view = _view(event.interval, s.bars, self.params)
        s.views.append(view)
        if event.interval != self._order[0]:
            return None
        return self._emit(view, event.open_ts_ms)

    def _history(self, tf: str, s: _Series, event: Candle) -> None:
        """A bar older than the forming one: final, as a later one exists. It comes from a
        backfill that landed after the live stream had started (the collector subscribes
        first, then fetches what it missed), so it fills the history; it is not news and
        emits nothing. A bar already known is left as it was."""
        known = {b.open_ts_ms for b in s.bars}
        if event.open_ts_ms in known or (
            len(s.bars) == s.bars.maxlen and s.bars and event.open_ts_ms < s.bars[0].open_ts_ms
        ):
            return
        bars = sorted([*s.bars, _bar(event)], key=lambda b: b.open_ts_ms)
        s.bars.clear()
        s.bars.extend(bars)  # the deque's maxlen drops the oldest
        s.last_final_open_ms = max(s.last_final_open_ms, event.open_ts_ms)
        if len(s.bars) >= self.params.ma_bars:
            view = _view(tf, s.bars, self.params)
            while s.views and s.views[-1].close_ts_ms >= view.close_ts_ms:
                s.views.pop()
            s.views.append(view)

    def _at(self, tf: str, ts_ms: int) -> _View | None:
        """The latest view of ``tf`` whose bar closed by ``ts_ms``, unless it is stale (its
        candles stopped coming): then there is no view of ``tf`` to tell."""
        for v in reversed(self._series[tf].views):
            if v.close_ts_ms <= ts_ms:
                return v if ts_ms - v.close_ts_ms <= _STALE_BARS * INTERVAL_MS[tf] else None
        return None

    # ---- the signal -----------------------------------------------------------------

    def _emit(self, base: _View, known_ts_ms: int) -> Signal | None:
        p = self.params
        ts = base.close_ts_ms
        views = [base]
        for tf in self._order[1:]:
            v = self._at(tf, ts)
            if v is None:
                return None
            views.append(v)

        total_w = sum(_WEIGHT[v.tf] for v in views)
        score = sum(_WEIGHT[v.tf] * v.f["score"] for v in views) / total_w
        direction: Direction = (
            "long" if score >= _NEUTRAL_BAND else "short" if score <= -_NEUTRAL_BAND else "neutral"
        )
        n = len(views)
        long_n = sum(1 for v in views if v.f["score"] >= _LEAN)
        short_n = sum(1 for v in views if v.f["score"] <= -_LEAN)
        fill = min(v.bars_n for v in views) / (p.lookback_periods + 1)
        if direction == "neutral":
            agree = n - long_n - short_n
            strength = abs(score)
            confidence = 0.2 + 0.4 * agree / n + 0.1 * fill
        else:
            sgn = 1 if direction == "long" else -1
            agree = long_n if sgn > 0 else short_n
            oppose = short_n if sgn > 0 else long_n
            vol_confirmed = any(
                v.f["volume_confirmed"]
                and sgn * (v.f["engulfing"] + v.f["hammer"] + v.f["breakout"]) > 0
                for v in views
            )
            strength = 0.75 * abs(score) / 0.6 + 0.25 * agree / n
            confidence = (
                0.25
                + 0.5 * agree / n
                - 0.2 * oppose / n
                + (0.15 if vol_confirmed else 0.0)
                + 0.1 * fill
            )

        features: dict[str, float] = {
            "confluence_score": score,
            "agree_n": float(agree),
            "long_n": float(long_n),
            "short_n": float(short_n),
            "timeframes_n": float(n),
            "ma_bars": float(p.ma_bars),
            "range_bars": float(p.range_bars),
            "volume_confirm_x": p.volume_confirm_multiple,
        }
        for v in views:
            for k, x in v.f.items():
                features[f"{k}_{v.tf}"] = x
            features[f"bars_{v.tf}"] = float(v.bars_n)

        narrative = self._narrative(views, direction, score, agree, long_n, short_n)
        return self.signal(
            known_ts_ms, direction, clamp01(strength), clamp01(confidence), narrative, features
        )

    def _narrative(
        self,
        views: list[_View],
        direction: Direction,
        score: float,
        agree: int,
        long_n: int,
        short_n: int,
    ) -> str:
        p = self.params
        n = len(views)
        if n == 1:
            tail = (
                f"No clear lean (score {score:+.2f})."
                if direction == "neutral"
                else f"Leaning {direction} (score {score:+.2f})."
            )
        elif direction == "neutral":
            tail = (
                f"No clear confluence ({long_n} long, {short_n} short of {n}; score {score:+.2f})."
            )
        else:
            word = "Long" if direction == "long" else "Short"
            tail = f"{word} confluence: {agree} of {n} timeframes agree (score {score:+.2f})."
        # Highest timeframe first; a timeframe with no trend reads against the trend above.
        ordered = list(reversed(views))
        for with_patterns in ("all", "smallest", "none"):
            parts: list[str] = []
            higher = 0
            for v in ordered:
                show = with_patterns == "all" or (with_patterns == "smallest" and v is views[0])
                parts.append(_phrase(v, higher, p, show))
                higher = higher or int(v.f["trend"])
            text = f"{'; '.join(parts)}. {tail}"
            if len(text) <= _MAX_NARRATIVE:
                return text
        return tail
