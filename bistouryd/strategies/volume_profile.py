"""Volume profile evolution: where volume traded, and how price behaves at the edges of value.

The profile is traded size by price bin over a rolling window of ``window_minutes`` of
event time, and also (``session``) over the current UTC day. From it:

* **POC** (point of control): the bin with the most volume; ties go to the bin nearest the
  last trade's bin, then to the lower bin. Reported as the bin's centre.
* **Value area** (VAL..VAH): the standard expansion from the POC. Until ``value_area_pct``
  of the window's volume is covered, compare the next bin above with the next bin below
  (bins inside the profile's range that saw no trade count as 0) and add the larger one;
  on a tie add both; when one side has reached the end of the profile add the other.
  VAL is the lower edge of the lowest value-area bin, VAH the upper edge of the highest,
  so the POC always lies inside and the area covers at least ``value_area_pct``.
* **POC migration**: the POC now against the POC at the previous signal, as a fraction of
  price (written in bps).
* **Nodes**: the range between the lowest and highest bins that hold volume has a mean bin
  volume; a high-volume node (HVN) holds at least ``node_threshold`` × that mean, a
  low-volume node (LVN) at most mean / ``node_threshold`` (empty bins in the range are
  LVNs). The nearest of each above and below the last trade's bin are reported.
* **Position and auction at the edges**: every trade is classified against a reference
  value area (recomputed from the profile every 10 s of trade time and at every signal)
  as above VAH, inside, or below VAL. A run of consecutive trades outside on one side is
  an *excursion*; it is **accepted** once it lasted at least ``acceptance_trades`` trades
  and ``acceptance_minutes`` minutes (continuation: long above VAH, short below VAL). An
  excursion that ends with a trade back inside before being accepted is a **rejection**
  (mean reversion to the POC: short after a rejection at VAH, long at VAL); it stays the
  active read until price trades in the POC bin, ``rejection_minutes`` pass, or a new
  excursion starts. An accepted excursion that comes back inside is simply over. When a
  refresh of the value area moves its edge past the excursion (the edge now contains
  the last outside trade), the excursion is absorbed: value moved, nothing was rejected.

Inputs: trades are the source of volume by price (size in the base asset, at the trade's
price). Candles are only a fallback for the time before the first trade is seen (typically
the 1m backfill at start-up): each FINAL ``1m`` candle's volume is split equally among the
bins its low..high range spans, and it counts as ``trades_n`` trades (1 when unknown) for the
warm-up. Other intervals, in-progress bars, and every candle once a trade has been seen are
ignored, so candle and trade volume never overlap.

Bins: their width is ``bin_bps`` of the first price seen and stays fixed (bins are centred on
that first price plus whole multiples of the width), so the bins do not drift as price
moves. A reconfigure that changes ``bin_bps`` rebuilds both profiles from the kept trades
(the rolling window's entries and the session's volume by exact price).

Emission: on Trades events only, at most once per ``emit_interval_s`` of trade time, once
the rolling window holds at least ``min_trades`` trades. Trades are processed one by one and
the signal is taken right after the trade that makes it due (its ``ts_ms`` is that trade's),
so splitting a Trades message into several gives the same signals as long as no single
message spans ``emit_interval_s`` (if one does, only its last due signal is returned).

Old volume leaves the rolling window by event time: entries are kept in a deque (trades at
the same time and price merged) and subtracted from their bins when they fall out of the
window, O(1) amortised per trade. The value area and nodes are O(bins) and only computed at
refreshes and signals.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar

from pydantic import Field

from bistouryd.market import Candle, MarketEvent, Trades
from bistouryd.strategies.base import Direction, Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.indicators import clamp01

_DAY_MS = 86_400_000
_REFRESH_MS = 10_000  # the reference value area for acceptance/rejection is this fresh
_DIRECTION_THRESHOLD = 0.15  # |score| needed for a long/short call


class VolumeProfileParams(StrategyParams):
    value_area_pct: float = Field(
        default=70.0, gt=0, lt=100, description="share of the window's volume in the value area"
    )
    window_minutes: int = Field(
        default=240, ge=15, le=7 * 24 * 60, description="rolling profile window (event time)"
    )
    bin_bps: float = Field(
        default=5.0,
        ge=0.5,
        le=200,
        description="price bin width in bps of the first price seen (fixed once set)",
    )
    emit_interval_s: int = Field(
        default=60, ge=10, le=3600, description="at most one signal per this many seconds"
    )
    node_threshold: float = Field(
        default=1.5,
        ge=1,
        le=10,
        description="HVN: bin volume >= this x mean bin volume; LVN: <= mean / this",
    )
    session: bool = Field(
        default=True, description="also keep a UTC-day session profile (reset at 00:00 UTC)"
    )
    min_trades: int = Field(
        default=50, ge=10, le=5000, description="trades in the window before any signal"
    )
    acceptance_trades: int = Field(
        default=30,
        ge=1,
        le=1000,
        description="consecutive trades outside the value area for acceptance",
    )
    acceptance_minutes: float = Field(
        default=5.0, ge=0, le=120, description="minutes outside the value area for acceptance"
    )
    rejection_minutes: float = Field(
        default=30.0,
        ge=1,
        le=240,
        description="how long a rejection stays the active read unless price reaches the POC",
    )


class _Area:
    """A value area in bin indices, with its volumes."""

    __slots__ = ("covered", "hi", "hi_b", "lo", "lo_b", "poc", "total")

    def __init__(
        self, poc: int, lo: int, hi: int, covered: float, total: float, lo_b: int, hi_b: int
    ):
        self.poc, self.lo, self.hi = poc, lo, hi
        self.covered, self.total = covered, total
        self.lo_b, self.hi_b = lo_b, hi_b

    def side(self, idx: int) -> int:
        """+1 above VAH, -1 below VAL, 0 inside."""
        return 1 if idx > self.hi else -1 if idx < self.lo else 0


def _value_area(bins: dict[int, float], last_idx: int, pct: float) -> _Area | None:
    if not bins:
        return None
    lo_b, hi_b = min(bins), max(bins)
    total = math.fsum(bins.values())
    if total <= 0:
        return None
    poc = min(bins, key=lambda i: (-bins[i], abs(i - last_idx), i))
    target = pct / 100.0 * total
    lo = hi = poc
    covered = bins[poc]
    slack = 1e-12 * total
    while covered < target - slack and (lo > lo_b or hi < hi_b):
        up = bins.get(hi + 1, 0.0) if hi < hi_b else -1.0
        dn = bins.get(lo - 1, 0.0) if lo > lo_b else -1.0
        if up > dn:
            hi += 1
            covered += up
        elif dn > up:
            lo -= 1
            covered += dn
        else:  # a tie (both sides still open): add both
            hi += 1
            lo -= 1
            covered += up + dn
    return _Area(poc, lo, hi, covered, total, lo_b, hi_b)


class VolumeProfile(Strategy[VolumeProfileParams]):
    name: ClassVar[str] = "volume_profile"
    Params: ClassVar[type[StrategyParams]] = VolumeProfileParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"trades", "candle"})

    def __init__(self, coin: str, params: VolumeProfileParams):
        super().__init__(coin, params)
        # bin grid
        self._first_px: float | None = None
        self._origin = 0.0
        self._width = 0.0
        # rolling window: entries [ts_ms, lo_px, hi_px, sz, trades_n] (lo == hi for a trade)
        self._entries: deque[list[float]] = deque()
        self._bins: dict[int, float] = {}
        self._bin_entries: dict[int, int] = {}
        self._prints = 0  # trades in the window (candles count trades_n)
        # session (UTC day)
        self._day: int | None = None
        self._s_bins: dict[int, float] = {}
        self._s_px: dict[float, float] = {}
        self._s_ranges: list[tuple[float, float, float]] = []
        self._s_prints = 0
        # time and price
        self._now = 0
        self._last_px: float | None = None
        self._trade_seen = False
        # candles (fallback before the first trade)
        self._bar: Candle | None = None
        self._last_final_open: int | None = None
        # reference value area and the auction at its edges
        self._ref: _Area | None = None
        self._ref_ts: int | None = None
        self._out_side = 0
        self._out_since = 0
        self._out_trades = 0
        self._out_extreme = 0.0
        self._accepted = False
        self._rej_side = 0
        self._rej_ts = 0
        self._rej_extreme = 0.0
        self._rej_edge = 0.0
        # emission
        self._last_emit: int | None = None
        self._prev_poc_px: float | None = None

    # ---- events -------------------------------------------------------------------------

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        if isinstance(event, Trades):
            out: Signal | None = None
            for t in event.trades:
                sig = self._on_trade(t.ts_ms, t.px, t.sz)
                if sig is not None:
                    out = sig
            return out
        if isinstance(event, Candle):
            self._on_candle(event)
        return None

    def reconfigure(self, params: VolumeProfileParams) -> None:
        old = self.params
        self.params = params
        if not params.session:
            self._reset_session(None)
        if params.bin_bps != old.bin_bps and self._first_px is not None:
            self._set_grid(self._first_px)
            self._bins.clear()
            self._bin_entries.clear()
            for e in self._entries:
                self._add_bins(self._bins, e[1], e[2], e[3], self._bin_entries)
            self._s_bins.clear()
            for px, sz in self._s_px.items():
                self._add_bins(self._s_bins, px, px, sz, None)
            for lo, hi, sz in self._s_ranges:
                self._add_bins(self._s_bins, lo, hi, sz, None)
            self._ref = None
            self._ref_ts = None
            if self._last_px is not None and self._prints >= params.min_trades:
                self._refresh(self._now, self._last_px)

    # ---- bins ---------------------------------------------------------------------------

    def _set_grid(self, first_px: float) -> None:
        self._first_px = first_px
        self._width = first_px * self.params.bin_bps / 10_000.0
        self._origin = first_px - self._width / 2.0

    def _idx(self, px: float) -> int:
        return math.floor((px - self._origin) / self._width)

    def _center(self, idx: int) -> float:
        return self._origin + (idx + 0.5) * self._width

    def _add_bins(
        self,
        bins: dict[int, float],
        lo_px: float,
        hi_px: float,
        sz: float,
        counts: dict[int, int] | None,
    ) -> None:
        a, b = self._idx(lo_px), self._idx(hi_px)
        share = sz / (b - a + 1)
        for i in range(a, b + 1):
            bins[i] = bins.get(i, 0.0) + share
            if counts is not None:
                counts[i] = counts.get(i, 0) + 1

    def _remove_entry(self, e: list[float]) -> None:
        a, b = self._idx(e[1]), self._idx(e[2])
        share = e[3] / (b - a + 1)
        bins, counts = self._bins, self._bin_entries
        for i in range(a, b + 1):
            left = counts[i] - 1
            if left <= 0:
                del counts[i]
                del bins[i]
            else:
                counts[i] = left
                bins[i] -= share
        self._prints -= int(e[4])

    def _expire(self, now: int) -> None:
        horizon = now - self.params.window_minutes * 60_000
        entries = self._entries
        while entries and entries[0][0] <= horizon:
            self._remove_entry(entries.popleft())

    def _reset_session(self, day: int | None) -> None:
        self._day = day
        self._s_bins.clear()
        self._s_px.clear()
        self._s_ranges.clear()
        self._s_prints = 0

    def _roll_session(self, now: int) -> None:
        day = now // _DAY_MS
        if day != self._day:
            self._reset_session(day)

    # ---- candles (fallback) -------------------------------------------------------------

    def _on_candle(self, c: Candle) -> None:
        if c.interval != "1m" or self._trade_seen:
            return
        if self._last_final_open is not None and c.open_ts_ms <= self._last_final_open:
            return
        bar = self._bar
        if bar is None or c.open_ts_ms == bar.open_ts_ms:
            self._bar = c
            return
        if c.open_ts_ms < bar.open_ts_ms:
            return
        self._last_final_open = bar.open_ts_ms
        self._bar = c
        self._ingest_bar(bar)

    def _ingest_bar(self, bar: Candle) -> None:
        lo, hi = min(bar.low_px, bar.high_px), max(bar.low_px, bar.high_px)
        if lo <= 0 or bar.volume_sz <= 0:
            return
        if self._first_px is None:
            self._set_grid(bar.close_px if bar.close_px > 0 else lo)
        now = max(self._now, bar.close_ts_ms)
        self._now = now
        self._expire(now)
        n = bar.trades_n if bar.trades_n else 1
        self._entries.append([float(bar.close_ts_ms), lo, hi, bar.volume_sz, float(n)])
        self._add_bins(self._bins, lo, hi, bar.volume_sz, self._bin_entries)
        self._prints += n
        if self.params.session:
            self._roll_session(now)
            self._s_ranges.append((lo, hi, bar.volume_sz))
            self._add_bins(self._s_bins, lo, hi, bar.volume_sz, None)
            self._s_prints += n
        self._last_px = bar.close_px

    # ---- trades -------------------------------------------------------------------------

    def _on_trade(self, ts: int, px: float, sz: float) -> Signal | None:
        if not (px > 0 and sz > 0 and math.isfinite(px) and math.isfinite(sz)):
            return None
        p = self.params
        self._trade_seen = True
        self._bar = None
        if self._first_px is None:
            self._set_grid(px)
        now = max(self._now, ts)
        self._now = now
        self._expire(now)
        # the rolling window (a trade at the same time and price as the last one merges)
        last = self._entries[-1] if self._entries else None
        if last is not None and last[0] == ts and last[1] == px and last[2] == px:
            last[3] += sz
            last[4] += 1
            i = self._idx(px)
            self._bins[i] += sz
        else:
            self._entries.append([float(ts), px, px, sz, 1.0])
            self._add_bins(self._bins, px, px, sz, self._bin_entries)
        self._prints += 1
        if p.session:
            self._roll_session(now)
            self._s_px[px] = self._s_px.get(px, 0.0) + sz
            i = self._idx(px)
            self._s_bins[i] = self._s_bins.get(i, 0.0) + sz
            self._s_prints += 1
        prev_px = self._last_px
        self._last_px = px

        warm = self._prints >= p.min_trades
        if not warm:
            self._ref = None
            self._ref_ts = None
            self._out_side = 0
            self._accepted = False
            self._rej_side = 0
            return None
        due = self._last_emit is None or now >= self._last_emit + p.emit_interval_s * 1000
        if due or self._ref_ts is None or now >= self._ref_ts + _REFRESH_MS:
            self._refresh(now, prev_px)
        self._classify(now, px)
        if not due:
            return None
        self._last_emit = now
        return self._emit(ts, px)

    def _refresh(self, now: int, prev_px: float | None) -> None:
        """A new reference value area; an excursion its edge now contains is absorbed."""
        ref = _value_area(self._bins, self._idx(self._last_px or 0.0), self.params.value_area_pct)
        self._ref = ref
        self._ref_ts = now
        if (
            ref is not None
            and self._out_side
            and prev_px is not None
            and ref.side(self._idx(prev_px)) != self._out_side
        ):
            self._out_side = 0
            self._accepted = False

    def _classify(self, now: int, px: float) -> None:
        ref = self._ref
        if ref is None:
            return
        p = self.params
        idx = self._idx(px)
        side = ref.side(idx)
        if side and side == self._out_side:
            self._out_trades += 1
            self._out_extreme = (
                max(self._out_extreme, px) if side > 0 else min(self._out_extreme, px)
            )
        elif side:
            self._out_side, self._out_since, self._out_trades = side, now, 1
            self._out_extreme = px
            self._accepted = False
            self._rej_side = 0
        elif self._out_side:
            if not self._accepted:
                self._rej_side = self._out_side
                self._rej_ts = now
                self._rej_extreme = self._out_extreme
                self._rej_edge = (
                    self._center(ref.hi) + self._width / 2
                    if self._out_side > 0
                    else self._center(ref.lo) - self._width / 2
                )
            self._out_side = 0
            self._accepted = False
        if (
            self._out_side
            and not self._accepted
            and self._out_trades >= p.acceptance_trades
            and now - self._out_since >= p.acceptance_minutes * 60_000
        ):
            self._accepted = True
        if self._rej_side and (idx == ref.poc or now - self._rej_ts > p.rejection_minutes * 60_000):
            self._rej_side = 0

    # ---- the signal ---------------------------------------------------------------------

    def _emit(self, ts: int, px: float) -> Signal | None:
        p = self.params
        area = self._ref
        if area is None:
            return None
        w = self._width
        idx = self._idx(px)
        poc_px = self._center(area.poc)
        vah = self._center(area.hi) + w / 2
        val = self._center(area.lo) - w / 2
        prev_poc = self._prev_poc_px
        migration = (poc_px - prev_poc) / prev_poc if prev_poc else 0.0
        self._prev_poc_px = poc_px
        position = area.side(idx)
        span_ms = self._now - self._entries[0][0] if self._entries else 0.0
        window_ms = p.window_minutes * 60_000

        f: dict[str, float] = {
            "last_px": px,
            "poc_px": poc_px,
            "vah_px": vah,
            "val_px": val,
            "va_width_frac": (vah - val) / poc_px,
            "value_area_target": p.value_area_pct / 100.0,
            "value_area_covered": area.covered / area.total,
            "poc_volume_frac": self._bins[area.poc] / area.total,
            "window_minutes": float(p.window_minutes),
            "window_span_minutes": span_ms / 60_000.0,
            "window_trades_n": float(self._prints),
            "window_volume_sz": area.total,
            "bin_width_px": w,
            "bin_bps": p.bin_bps,
            "profile_bins_n": float(area.hi_b - area.lo_b + 1),
            "poc_migration_frac": migration,
            "prev_poc_px": prev_poc if prev_poc else poc_px,
            "first_look": 0.0 if prev_poc else 1.0,
            "px_vs_poc_frac": (px - poc_px) / poc_px,
            "price_position": float(position),
        }

        # state at the edges
        accepted = bool(self._out_side and self._accepted and self._out_side == position)
        testing = bool(position and not accepted)
        rejected = bool(position == 0 and self._rej_side)
        f["accepted_above"] = 1.0 if accepted and position > 0 else 0.0
        f["accepted_below"] = 1.0 if accepted and position < 0 else 0.0
        f["rejected_vah"] = 1.0 if rejected and self._rej_side > 0 else 0.0
        f["rejected_val"] = 1.0 if rejected and self._rej_side < 0 else 0.0
        if position and self._out_side == position:
            f["outside_trades_n"] = float(self._out_trades)
            f["outside_minutes"] = (self._now - self._out_since) / 60_000.0
            f["outside_extreme_px"] = self._out_extreme
        if rejected:
            f["rejection_extreme_px"] = self._rej_extreme
            f["rejection_edge_px"] = self._rej_edge
            f["rejection_age_minutes"] = (self._now - self._rej_ts) / 60_000.0

        # nodes around price
        nodes = self._nodes(area, idx)
        f.update(nodes)

        # session profile
        s_area = None
        if p.session and self._s_bins:
            s_area = _value_area(self._s_bins, idx, p.value_area_pct)
        if s_area is not None:
            s_poc = self._center(s_area.poc)
            f["session_poc_px"] = s_poc
            f["session_vah_px"] = self._center(s_area.hi) + w / 2
            f["session_val_px"] = self._center(s_area.lo) - w / 2
            f["session_volume_sz"] = s_area.total
            f["session_trades_n"] = float(self._s_prints)
            f["px_vs_session_poc_frac"] = (px - s_poc) / s_poc

        # score: the auction at the edges, plus a lean from the POC's migration
        va_w = max(vah - val, w)
        if accepted:
            ext = (px - vah) / va_w if position > 0 else (val - px) / va_w
            base = position * (0.55 + 0.45 * clamp01(ext))
        elif rejected:
            room = abs(px - poc_px) / max(abs(self._rej_edge - poc_px), w)
            base = -self._rej_side * (0.4 + 0.45 * clamp01(room))
        elif testing:
            base = 0.1 * position
        else:
            base = 0.0
        lean = 0.3 * max(-1.0, min(1.0, migration * 10_000.0 / (3.0 * p.bin_bps)))
        score = max(-1.0, min(1.0, base + lean))
        f["edge_score"] = base
        f["migration_lean"] = lean
        f["score"] = score
        direction: Direction = (
            "long"
            if score > _DIRECTION_THRESHOLD
            else "short"
            if score < -_DIRECTION_THRESHOLD
            else "neutral"
        )

        coverage = clamp01(span_ms / window_ms)
        depth = clamp01(self._prints / (4.0 * p.min_trades))
        if direction == "neutral" or migration == 0:
            agree = 0.5
        else:
            agree = 1.0 if (migration > 0) == (score > 0) else 0.0
        confidence = 0.25 + 0.35 * coverage + 0.25 * depth + 0.15 * agree

        narrative = self._narrative(f, accepted, testing, rejected, position, s_area is not None)
        return self.signal(ts, direction, abs(score), confidence, narrative, f)

    def _nodes(self, area: _Area, idx: int) -> dict[str, float]:
        bins = self._bins
        mean = area.total / (area.hi_b - area.lo_b + 1)
        thr = self.params.node_threshold
        hvn_min, lvn_max = thr * mean, mean / thr
        out: dict[str, float] = {"mean_bin_sz": mean, "node_threshold": thr}
        for step, end, tag in ((1, area.hi_b + 1, "above"), (-1, area.lo_b - 1, "below")):
            hvn = lvn = None
            for i in range(idx + step, end, step):
                v = bins.get(i, 0.0)
                if hvn is None and v >= hvn_min:
                    hvn = i
                if lvn is None and v <= lvn_max:
                    lvn = i
                if hvn is not None and lvn is not None:
                    break
            if hvn is not None:
                out[f"hvn_{tag}_px"] = self._center(hvn)
            if lvn is not None:
                out[f"lvn_{tag}_px"] = self._center(lvn)
        return out

    def _narrative(
        self,
        f: dict[str, float],
        accepted: bool,
        testing: bool,
        rejected: bool,
        position: int,
        session: bool,
    ) -> str:
        d = min(8, max(0, 1 - math.floor(math.log10(self._width))))

        def px(key: str) -> str:
            return f"{f[key]:,.{d}f}"

        va = (
            f"VAH {px('vah_px')}, VAL {px('val_px')}, {f['value_area_target'] * 100:.0f}% "
            f"of the last {f['window_minutes']:.0f} minutes' volume"
        )
        where = "above" if position > 0 else "below"
        if accepted:
            first = (
                f"Price {px('last_px')} accepted {where} the value area ({va}): "
                f"{f['outside_trades_n']:.0f} trades over {f['outside_minutes']:.1f} minutes "
                f"outside, favouring continuation."
            )
        elif testing:
            held = (
                f", {f['outside_trades_n']:.0f} "
                f"{'trade' if f['outside_trades_n'] == 1 else 'trades'} so far, not yet accepted"
                if "outside_trades_n" in f
                else ", not yet accepted"
            )
            first = f"Price {px('last_px')} is testing {where} the value area ({va}){held}."
        elif rejected:
            edge = "high" if f["rejected_vah"] else "low"
            first = (
                f"Price {px('last_px')} was rejected at the value-area {edge} ({va}): it poked "
                f"to {px('rejection_extreme_px')} and came back inside "
                f"{f['rejection_age_minutes']:.1f} minutes ago, pointing back to the POC."
            )
        else:
            off = f["px_vs_poc_frac"]
            rel = (
                "at the POC"
                if self._idx(f["last_px"]) == self._idx(f["poc_px"])
                else f"{abs(off) * 10_000:.1f} bps {'above' if off > 0 else 'below'} the POC"
            )
            first = f"Price {px('last_px')} trades inside the value area ({va}), {rel}."
        mig = f["poc_migration_frac"]
        if f["first_look"]:
            second = f"POC {px('poc_px')} (first look)"
        elif f["prev_poc_px"] != f["poc_px"]:
            second = f"POC {px('poc_px')} migrated {mig * 10_000:+.1f} bps since the last look"
        else:
            second = f"POC {px('poc_px')} unchanged since the last look"
        if session:
            second += f"; UTC-session POC {px('session_poc_px')}"
        second += "."
        parts = []
        for kind, label in (("lvn", "low-volume node"), ("hvn", "high-volume node")):
            sides = [
                f"{px(f'{kind}_{tag}_px')} {tag}"
                for tag in ("above", "below")
                if f"{kind}_{tag}_px" in f
            ]
            if sides:
                parts.append(f"nearest {label} {' / '.join(sides)}")
        sentences = [first, second]
        if parts:
            third = "; ".join(parts)
            sentences.append(third[0].upper() + third[1:] + ".")
        text = ""
        for s in sentences:
            candidate = f"{text} {s}" if text else s
            if len(candidate) > 600:
                break
            text = candidate
        return text or "Volume profile updated."
