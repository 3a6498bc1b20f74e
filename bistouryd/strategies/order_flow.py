"""Order flow: L2 book imbalance, walls and aggressor flow (strategy ``order_flow``).

Fed full L2 snapshots (about two a second per coin, ~20 levels a side, best first) and
the public trades, it keeps:

* the depth-weighted imbalance of the book at each of ``depth_levels`` depths,
  ``(Σ bid_sz·w − Σ ask_sz·w) / (Σ bid_sz·w + Σ ask_sz·w)`` with ``w_i = 1/(i+1)``
  over the first ``d`` levels (``i`` from 0 at the best level), from −1 to 1;
* the spread and the top-of-book microprice ``(bid·ask_sz + ask·bid_sz)/(bid_sz+ask_sz)``;
* walls: levels at least ``wall_size_multiple`` times the typical level size (the mean,
  over the last ``typical_level_books`` books, of each book's median level size),
  followed by side and price from book to book: they appear, grow, and end either
  *eaten* (price traded through them, or trades at their price account for most of the
  size they lost) or *pulled* (gone with no such trades and the mid not across them);
* the aggressor flow over ``flow_window_s`` (buy minus sell volume, and its share);
* absorption: aggressive selling while the mid does not fall and bid depth holds is
  accumulation (long), aggressive buying while the mid does not rise and ask depth
  holds is distribution (short); absorbed flow then counts for the absorbing side.

It leans long on bid-heavy books, net aggressive buying, a bid wall below (support),
an ask wall pulled or eaten, and accumulation; short on the mirror image of each. Every
side-dependent quantity is computed so that mirroring the market (bids ↔ asks, prices
reflected, buys ↔ sells) negates it exactly, so the direction flips exactly too.

It emits on book updates, at most once per ``emit_interval_s`` of event time, once it
has seen 10 books.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import pairwise
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from bistouryd.market import L2Book, MarketEvent, Trades
from bistouryd.strategies.base import Direction, Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.indicators import Rolling, clamp01


class OrderFlowParams(StrategyParams):
    depth_levels: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [5, 10, 20],
        min_length=1,
        max_length=5,
        description="book depths (levels per side) at which the weighted imbalance is "
        "measured, strictly increasing",
    )
    wall_size_multiple: float = Field(
        default=5.0,
        gt=1,
        le=100,
        description="a level at least this many times the typical level size is a wall",
    )
    emit_interval_s: int = Field(
        default=10, ge=1, le=3600, description="at most one signal per this many seconds"
    )
    flow_window_s: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="window of the aggressor flow, of absorption and of wall events",
    )
    typical_level_books: int = Field(
        default=120,
        ge=10,
        le=5000,
        description="how many past books define the typical level size",
    )

    @field_validator("depth_levels")
    @classmethod
    def _increasing(cls, levels: list[int]) -> list[int]:
        if any(b <= a for a, b in pairwise(levels)):
            raise ValueError("depth_levels must be sorted and unique")
        return levels


WARMUP_BOOKS = 10
_W = [1.0 / (i + 1) for i in range(100)]  # level weights w_i = 1/(i+1)

# Wall events.
_APPEAR, _GROW, _PULLED, _EATEN = 1, 2, 3, 4
_EVENT_WORD = {_APPEAR: "appeared", _GROW: "grew", _PULLED: "was pulled", _EATEN: "was eaten"}
_GROW_RATIO = 1.5  # a wall grew: 1.5x its size at its previous event
_KEEP_RATIO = 0.5  # a wall lives on while at least half the wall threshold
_EATEN_SHARE = 0.5  # traded volume at/through it >= half the size it lost: eaten
_MAX_SINCE_BOOK = 20_000  # trades kept between two books

# Direction.
_W_IMBALANCE, _W_FLOW, _W_WALL = 0.35, 0.35, 0.30
_DIRECTION_THRESHOLD = 0.15
_FULL_STRENGTH_SCORE = 0.6
_BALANCED = 0.1  # |imbalance| below this: a balanced book
_ABSORB_DELTA = 0.2  # |normalised delta| at least this for absorption
_DEPTH_HOLDS = 0.95  # depth now >= 95% of the depth at the start of the window


class _Wall:
    __slots__ = ("first_ts", "idx", "max_sz", "px", "ref_sz", "side", "sz")

    def __init__(self, side: int, px: float, idx: int, sz: float, ts: int):
        self.side = side  # +1 bid, -1 ask
        self.px = px
        self.idx = idx
        self.sz = sz
        self.ref_sz = sz  # size at its last appear/grow event
        self.max_sz = sz
        self.first_ts = ts


class _WallEvent:
    __slots__ = ("idx", "kind", "multiple", "px", "side", "ts")

    def __init__(self, ts: int, kind: int, side: int, px: float, multiple: float, idx: int):
        self.ts = ts
        self.kind = kind
        self.side = side
        self.px = px
        self.multiple = multiple
        self.idx = idx

    def rank(self) -> tuple[int, float, int]:
        """Which of several events of the same book to report: an end first, then the
        biggest, then the nearest to the mid."""
        return (1 if self.kind >= _PULLED else 0, self.multiple, -self.idx)


class OrderFlow(Strategy[OrderFlowParams]):
    name: ClassVar[str] = "order_flow"
    Params: ClassVar[type[StrategyParams]] = OrderFlowParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"l2", "trades"})

    def __init__(self, coin: str, params: OrderFlowParams):
        super().__init__(coin, params)
        self._books = 0
        self._last_emit_ts: int | None = None
        self._typical = Rolling(params.typical_level_books)  # per-book median level size
        self._walls: dict[tuple[int, float], _Wall] = {}
        self._last_event: _WallEvent | None = None
        # Ended walls (ts, weight) per side, for the decaying wall-event lean.
        self._ended_bid: deque[tuple[int, float]] = deque()
        self._ended_ask: deque[tuple[int, float]] = deque()
        # Trades since the last book (px, sz, is_buy), to tell eaten from pulled.
        self._since_book: list[tuple[float, float, bool]] = []
        # Aggressor flow in one-second buckets [second, buy_sz, sell_sz, trades_n].
        self._flow: deque[list[float]] = deque()
        # Books over the flow window: (ts, mid, bid depth, ask depth); the first one is
        # the reference at (or just before) the window's start.
        self._hist: deque[tuple[int, float, float, float]] = deque()

    def reconfigure(self, params: OrderFlowParams) -> None:
        old = self.params
        super().reconfigure(params)
        if params.typical_level_books != old.typical_level_books:
            typical = Rolling(params.typical_level_books)
            for v in list(self._typical.values)[-params.typical_level_books :]:
                typical.push(v)
            self._typical = typical
        if params.depth_levels[-1] != old.depth_levels[-1]:
            self._hist.clear()  # depths summed over a different number of levels

    # ---- events --------------------------------------------------------------------

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        if isinstance(event, L2Book):
            return self._on_book(event)
        if isinstance(event, Trades):
            self._on_trades(event)
        return None

    def _on_trades(self, event: Trades) -> None:
        flow = self._flow
        since = self._since_book
        window_s = self.params.flow_window_s
        for t in event.trades:
            sz = t.sz
            if not (sz > 0 and math.isfinite(sz) and math.isfinite(t.px)):
                continue
            buy = t.side == "buy"
            if len(since) >= _MAX_SINCE_BOOK:  # no books for a long while: bound it
                del since[: _MAX_SINCE_BOOK // 2]
            since.append((t.px, sz, buy))
            sec = t.ts_ms // 1000
            if not flow or sec > flow[-1][0]:
                # Seconds that no later book can count any more (books come after trades).
                while flow and flow[0][0] <= sec - window_s - 1:
                    flow.popleft()
                flow.append([float(sec), 0.0, 0.0, 0.0])
            bucket = flow[-1]  # a late trade counts in the newest second
            bucket[1 if buy else 2] += sz
            bucket[3] += 1.0

    def _on_book(self, book: L2Book) -> Signal | None:
        bpx, bsz, apx, asz = book.bid_px, book.bid_sz, book.ask_px, book.ask_sz
        if not bpx or not apx:
            return None
        mid = (bpx[0] + apx[0]) / 2
        if not (mid > 0 and math.isfinite(mid)):
            return None
        p = self.params
        ts = book.ts_ms
        window_ms = p.flow_window_s * 1000
        self._books += 1

        # Typical level size: mean over recent books of each book's median level size.
        sizes = sorted(bsz + asz)
        n = len(sizes)
        median = sizes[n // 2] if n % 2 else (sizes[n // 2 - 1] + sizes[n // 2]) / 2
        self._typical.push(median)
        typical = self._typical.mean

        self._track_walls(book, mid, typical, ts)
        self._since_book.clear()

        # Depth-weighted imbalances, one pass per side up to the deepest depth.
        depths = p.depth_levels
        bid_w, bid_depth = _weighted(bsz, depths)
        ask_w, ask_depth = _weighted(asz, depths)

        # Windows: book history and flow buckets.
        hist = self._hist
        hist.append((ts, mid, bid_depth, ask_depth))
        while len(hist) > 1 and hist[1][0] <= ts - window_ms:
            hist.popleft()
        flow = self._flow
        while flow and flow[0][0] * 1000 + 1000 <= ts - window_ms:
            flow.popleft()
        for ended in (self._ended_bid, self._ended_ask):
            while ended and ended[0][0] <= ts - window_ms:
                ended.popleft()

        if self._books < WARMUP_BOOKS:
            return None
        if self._last_emit_ts is not None and ts - self._last_emit_ts < p.emit_interval_s * 1000:
            return None
        self._last_emit_ts = ts
        return self._emit(book, mid, typical, bid_w, ask_w, bid_depth, ask_depth)

    # ---- walls ---------------------------------------------------------------------

    def _track_walls(self, book: L2Book, mid: float, typical: float, ts: int) -> None:
        thr_multiple = self.params.wall_size_multiple
        threshold = thr_multiple * typical if typical > 0 else math.inf
        walls = self._walls
        events: list[_WallEvent] = []
        appeared: dict[tuple[int, float], _WallEvent] = {}
        seen: set[tuple[int, float]] = set()
        for side, pxs, szs in ((1, book.bid_px, book.bid_sz), (-1, book.ask_px, book.ask_sz)):
            for i, sz in enumerate(szs):
                if sz < threshold:
                    continue
                key = (side, pxs[i])
                seen.add(key)
                wall = walls.get(key)
                if wall is None:
                    walls[key] = _Wall(side, pxs[i], i, sz, ts)
                    appeared[key] = _WallEvent(ts, _APPEAR, side, pxs[i], sz / typical, i)
                    continue
                wall.sz, wall.idx = sz, i
                wall.max_sz = max(wall.max_sz, sz)
                if sz >= _GROW_RATIO * wall.ref_sz:
                    wall.ref_sz = sz
                    events.append(_WallEvent(ts, _GROW, side, pxs[i], sz / typical, i))

        gone = [key for key in walls if key not in seen]
        if gone:
            index = {
                1: {px: i for i, px in enumerate(book.bid_px)},
                -1: {px: i for i, px in enumerate(book.ask_px)},
            }
            for key in gone:
                side, px = key
                wall = walls[key]
                szs = book.bid_sz if side == 1 else book.ask_sz
                j = index[side].get(px)
                now_sz = szs[j] if j is not None else 0.0
                if j is not None and now_sz >= _KEEP_RATIO * threshold:
                    wall.sz, wall.idx = now_sz, j  # smaller, but still a wall
                    continue
                del walls[key]
                if j is not None and now_sz >= _KEEP_RATIO * wall.sz:
                    continue  # the typical size grew past it: no longer a wall, no event
                crossed = mid <= px if side == 1 else mid >= px
                if j is None and not crossed:
                    last = book.bid_px[-1] if side == 1 else book.ask_px[-1]
                    if (px < last) if side == 1 else (px > last):
                        continue  # out of the book's view as the price moved away
                # Volume that hit it: sells at or below a bid, buys at or above an ask.
                hit = 0.0
                for tpx, tsz, buy in self._since_book:
                    if (not buy and tpx <= px) if side == 1 else (buy and tpx >= px):
                        hit += tsz
                eaten = crossed or hit >= _EATEN_SHARE * (wall.sz - now_sz)
                if not eaten and self._moved(wall, appeared):
                    continue
                multiple = wall.max_sz / typical if typical > 0 else 0.0
                events.append(
                    _WallEvent(ts, _EATEN if eaten else _PULLED, side, px, multiple, wall.idx)
                )
                weight = min(1.0, multiple / (2 * thr_multiple))
                (self._ended_bid if side == 1 else self._ended_ask).append((ts, 0.5 + weight))
        events.extend(appeared.values())
        if events:
            self._last_event = max(events, key=_WallEvent.rank)

    def _moved(self, wall: _Wall, appeared: dict[tuple[int, float], _WallEvent]) -> bool:
        """A wall gone from its price while one of a similar size appeared on the same
        side in the same book was moved (re-quoted as the price drifts), not pulled: the
        new one takes its place and history, and neither event is reported."""
        best: _WallEvent | None = None
        for ev in appeared.values():
            if ev.side != wall.side:
                continue
            new = self._walls[(ev.side, ev.px)]
            if new.sz < _KEEP_RATIO * wall.sz:
                continue
            if best is None or abs(ev.px - wall.px) < abs(best.px - wall.px):
                best = ev
        if best is None:
            return False
        del appeared[(best.side, best.px)]
        new = self._walls[(best.side, best.px)]
        new.first_ts = wall.first_ts
        new.ref_sz = wall.ref_sz
        new.max_sz = max(new.max_sz, wall.max_sz)
        return True

    def _biggest_wall(self, side: int, typical: float) -> _Wall | None:
        best: _Wall | None = None
        for wall in self._walls.values():
            if wall.side != side or wall.sz < self.params.wall_size_multiple * typical:
                continue
            if best is None or (wall.sz, -wall.idx) > (best.sz, -best.idx):
                best = wall
        return best

    # ---- the signal ----------------------------------------------------------------

    def _emit(
        self,
        book: L2Book,
        mid: float,
        typical: float,
        bid_w: list[float],
        ask_w: list[float],
        bid_depth: float,
        ask_depth: float,
    ) -> Signal:
        p = self.params
        ts = book.ts_ms
        window_ms = p.flow_window_s * 1000
        f: dict[str, float] = {}

        # Imbalance.
        imbalances = []
        for d, b, a in zip(p.depth_levels, bid_w, ask_w, strict=True):
            total = b + a
            imb = (b - a) / total if total > 0 else 0.0
            imbalances.append(imb)
            f[f"imbalance_{d}"] = imb
        imb_mix = math.fsum(imbalances) / len(imbalances)
        # Cite the most lopsided depth among those that agree with the mix.
        agreeing = [k for k, v in enumerate(imbalances) if v * imb_mix > 0] or list(
            range(len(imbalances))
        )
        cited = max(agreeing, key=lambda k: (abs(imbalances[k]), -k))
        f["imbalance_mix"] = imb_mix
        f["imbalance_cited_levels"] = float(p.depth_levels[cited])

        # Spread and microprice.
        bid0, ask0 = book.bid_px[0], book.ask_px[0]
        bsz0, asz0 = book.bid_sz[0], book.ask_sz[0]
        top = bsz0 + asz0
        micro = (bid0 * asz0 + ask0 * bsz0) / top if top > 0 else mid
        f["mid_px"] = mid
        f["spread_frac"] = (ask0 - bid0) / mid
        f["microprice_px"] = micro
        f["microprice_offset_frac"] = (micro - mid) / mid

        # Walls.
        f["typical_level_sz"] = typical
        f["wall_size_multiple"] = p.wall_size_multiple
        leans = {}
        walls = {}
        for side, name in ((1, "bid"), (-1, "ask")):
            wall = self._biggest_wall(side, typical)
            walls[side] = wall
            if wall is None:
                f[f"{name}_wall_present"] = 0.0
                f[f"{name}_wall_px"] = 0.0
                f[f"{name}_wall_multiple"] = 0.0
                f[f"{name}_wall_dist_frac"] = 0.0
                f[f"{name}_wall_level"] = 0.0
                leans[side] = 0.0
                continue
            multiple = wall.sz / typical
            f[f"{name}_wall_present"] = 1.0
            f[f"{name}_wall_px"] = wall.px
            f[f"{name}_wall_multiple"] = multiple
            f[f"{name}_wall_dist_frac"] = side * (mid - wall.px) / mid
            f[f"{name}_wall_level"] = float(wall.idx)
            proximity = 1.0 / (1.0 + wall.idx / 5.0)
            leans[side] = min(1.0, multiple / (2 * p.wall_size_multiple)) * proximity
        bid_ended = _decayed(self._ended_bid, ts, window_ms)
        ask_ended = _decayed(self._ended_ask, ts, window_ms)
        wall_lean = max(-1.0, min(1.0, (leans[1] - leans[-1]) + (ask_ended - bid_ended)))
        f["wall_ended_lean"] = ask_ended - bid_ended
        f["wall_lean"] = wall_lean
        ev = self._last_event
        if ev is not None:
            f["last_wall_event_kind"] = float(ev.kind)
            f["last_wall_event_side"] = float(ev.side)
            f["last_wall_event_px"] = ev.px
            f["last_wall_event_multiple"] = ev.multiple
            f["last_wall_event_age_s"] = (ts - ev.ts) / 1000
        else:
            for k in ("kind", "side", "px", "multiple", "age_s"):
                f[f"last_wall_event_{k}"] = 0.0

        # Aggressor flow.
        buy = math.fsum(b[1] for b in self._flow)
        sell = math.fsum(b[2] for b in self._flow)
        total = buy + sell
        delta = (buy - sell) / total if total > 0 else 0.0
        f["flow_window_s"] = float(p.flow_window_s)
        f["flow_buy_sz"] = buy
        f["flow_sell_sz"] = sell
        f["flow_net_sz"] = buy - sell
        f["flow_delta_norm"] = delta
        f["flow_buy_share"] = buy / total if total > 0 else 0.5
        f["flow_sell_share"] = sell / total if total > 0 else 0.5
        f["flow_trades_n"] = math.fsum(b[3] for b in self._flow)

        # Absorption against the book at the start of the window.
        ref_ts, ref_mid, ref_bid, ref_ask = self._hist[0]
        spans = ts - ref_ts >= window_ms / 2
        bid_ratio = bid_depth / ref_bid if ref_bid > 0 else 1.0
        ask_ratio = ask_depth / ref_ask if ref_ask > 0 else 1.0
        absorption = 0.0
        if spans and total > 0:
            if delta <= -_ABSORB_DELTA and mid >= ref_mid and bid_ratio >= _DEPTH_HOLDS:
                absorption = -delta  # accumulation
            elif delta >= _ABSORB_DELTA and mid <= ref_mid and ask_ratio >= _DEPTH_HOLDS:
                absorption = -delta  # distribution
        f["mid_change_frac"] = (mid - ref_mid) / ref_mid if spans else 0.0
        f["bid_depth_ratio"] = bid_ratio if spans else 1.0
        f["ask_depth_ratio"] = ask_ratio if spans else 1.0
        f["absorption"] = absorption
        # Absorbed flow reads the other way: the passive side is winning.
        flow_lean = absorption if absorption else delta
        f["flow_lean"] = flow_lean

        # Direction.
        parts = (
            (_W_IMBALANCE, imb_mix),
            (_W_FLOW, flow_lean),
            (_W_WALL, wall_lean),
        )
        score = 0.0
        for w, c in parts:
            score += w * c
        f["score"] = score
        f["books_n"] = float(self._books)
        warm = min(1.0, self._books / p.typical_level_books)
        if score >= _DIRECTION_THRESHOLD or score <= -_DIRECTION_THRESHOLD:
            direction: Direction = "long" if score > 0 else "short"
            sign = 1.0 if score > 0 else -1.0
            agree = sum(w * max(0.0, sign * c) for w, c in parts)
            spread = sum(w * abs(c) for w, c in parts)
            agreement = agree / spread if spread > 0 else 0.0
            confidence = (0.4 + 0.6 * agreement) * (0.5 + 0.5 * warm)
        else:
            direction = "neutral"
            confidence = (0.3 + 0.4 * (1 - abs(score) / _DIRECTION_THRESHOLD)) * (0.5 + 0.5 * warm)
        strength = clamp01(abs(score) / _FULL_STRENGTH_SCORE)

        narrative = self._narrative(f, imbalances[cited], walls, ev, ts, window_ms)
        return self.signal(ts, direction, strength, confidence, narrative, f)

    def _narrative(
        self,
        f: dict[str, float],
        imb: float,
        walls: dict[int, _Wall | None],
        ev: _WallEvent | None,
        ts: int,
        window_ms: int,
    ) -> str:
        mix = f["imbalance_mix"]
        lead = (
            "Bids outweigh asks"
            if mix >= _BALANCED
            else "Asks outweigh bids"
            if mix <= -_BALANCED
            else "Bids and asks are balanced"
        )
        offset = f["microprice_offset_frac"]
        levels = f["imbalance_cited_levels"]
        where = "above" if offset > 0 else "below" if offset < 0 else "at"
        book = (
            f"{lead} (imbalance {imb:+.2f} at {levels:.0f} level{'' if levels == 1 else 's'}), "
            f"spread {f['spread_frac'] * 1e4:.1f} bps, microprice "
            + (f"{abs(offset) * 1e4:.2f} bps {where} mid." if offset else "at mid.")
        )

        clauses = []
        for side, name, rel in ((1, "bid", "below"), (-1, "ask", "above")):
            if walls[side] is None:
                continue
            px = f[f"{name}_wall_px"]
            dist = f[f"{name}_wall_dist_frac"]
            rel_word = rel if dist >= 0 else ("above" if rel == "below" else "below")
            clauses.append(
                f"a {f[f'{name}_wall_multiple']:.1f}x {name} wall at {_px(px)} is "
                f"{abs(dist) * 1e4:.1f} bps {rel_word} mid"
            )
        if ev is not None and ev.kind >= _PULLED and ts - ev.ts < window_ms:
            name = "bid" if ev.side == 1 else "ask"
            clauses.append(
                f"a {f['last_wall_event_multiple']:.1f}x {name} wall at "
                f"{_px(f['last_wall_event_px'])} {_EVENT_WORD[ev.kind]} "
                f"{f['last_wall_event_age_s']:.0f}s ago"
            )
        if clauses:
            text = "; ".join(clauses)
            wall_text = text[0].upper() + text[1:] + "."
        else:
            wall_text = f"No walls of {f['wall_size_multiple']:.1f}x the typical level size."

        window = f"{f['flow_window_s']:.0f}s"
        if f["flow_buy_sz"] + f["flow_sell_sz"] > 0:
            buying = f["flow_buy_share"] >= 0.5
            share = f["flow_buy_share"] if buying else f["flow_sell_share"]
            flow_text = (
                f"Aggressive {'buying' if buying else 'selling'} {share * 100:.0f}% "
                f"of {window} flow"
            )
            if f["absorption"] > 0:
                flow_text += ", absorbed as bids hold (accumulation)"
            elif f["absorption"] < 0:
                flow_text += ", absorbed as asks hold (distribution)"
            flow_text += "."
        else:
            flow_text = f"No trades in the last {window}."

        sentences = [book, wall_text, flow_text]
        while len(" ".join(sentences)) > 600 and len(sentences) > 1:
            sentences.pop(1)
        return " ".join(sentences)[:600]


def _weighted(sizes: list[float], depths: list[int]) -> tuple[list[float], float]:
    """Weighted size sums at each depth, and the plain size sum at the deepest one."""
    out = []
    acc = 0.0
    plain = 0.0
    i = 0
    n = len(sizes)
    for d in depths:
        stop = min(d, n)
        while i < stop:
            sz = sizes[i]
            acc += sz * _W[i]
            plain += sz
            i += 1
        out.append(acc)
    return out, plain


def _decayed(ended: deque[tuple[int, float]], ts: int, window_ms: int) -> float:
    """The lean from ended walls of one side, each fading linearly over the window."""
    total = 0.0
    for t, weight in ended:
        total += weight * max(0.0, 1.0 - (ts - t) / window_ms)
    return min(1.0, total)


def _px(px: float) -> str:
    """A price with at most five significant figures (HyperLiquid's own precision)."""
    if px <= 0 or not math.isfinite(px):
        return f"{px:,.0f}"
    decimals = min(8, max(0, 4 - math.floor(math.log10(px))))
    text = f"{px:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
