"""The paper broker: orders filled against the L2 book as HyperLiquid would fill them.

Pure (no I/O, no clock: times come from the orders and the market data), so paper-live,
paper-historical and the backtester share it. Marketable orders walk the book
(``bistouryd.exchange.book``) and pay the taker fee; the depth they take stays taken until
the next snapshot, so two orders on one snapshot never fill against the same size. Resting
limits fill as maker only when the public trades show they would have: the size displayed at
their price when placed is queued ahead of them. Position arithmetic and the liquidation
price are ``bistouryd.exchange.account``'s, the simulated exchange's own.

Answers are ``OrderUpdate``s: ``resting`` also for a limit partly filled and still working,
``partially_filled`` only for an IoC whose remainder was canceled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bistouryd.exchange.account import (
    cross_liquidation_px,
    fill_effect,
    funding_payment_usd,
    maintenance_margin_usd,
)
from bistouryd.exchange.book import book_after, walk_book
from bistouryd.exchange.orders import (
    Fill,
    FundingPayment,
    Liquidity,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    Position,
)
from bistouryd.exchange.rules import AssetRules
from bistouryd.market import L2Book, Trade, Trades

# The exchange's own words where it has them (HYPERLIQUID.md §c).
REDUCE_ONLY = "Reduce only order would increase position."
IOC_CANCEL = "Order could not immediately match against any resting orders."
PROTECTED_CLOSED = "Reduce-only order canceled: the position it reduced is closed."

Result = tuple[OrderUpdate, list[Fill]]


@dataclass(frozen=True)
class FeeSchedule:
    """Fee rates on notional; HyperLiquid's base tier, the simulator's default too."""

    taker_rate: float = 0.00045
    maker_rate: float = 0.00015


@dataclass
class _Working:
    """An open order and how far it got: what is left, what is queued ahead of it at its
    price, and its fills so far (for the cumulative ``filled_sz`` and ``avg_px``)."""

    order: OrderRequest
    remaining_sz: float
    queue_ahead_sz: float = 0.0
    filled_sz: float = 0.0
    filled_usd: float = 0.0

    def update(self, status: OrderStatus, ts_ms: int, error: str | None = None) -> OrderUpdate:
        return OrderUpdate(
            cloid=self.order.cloid,
            ts_ms=ts_ms,
            coin=self.order.coin,
            status=status,
            filled_sz=self.filled_sz,
            avg_px=self.filled_usd / self.filled_sz if self.filled_sz > 0 else None,
            error=error,
        )

    def maker_sz(self, trade: Trade) -> float:
        """How much of this resting limit ``trade`` fills: all of it when the trade prints
        through its price; at its price, only what trades beyond the queue ahead."""
        limit_px = self.order.limit_px
        assert limit_px is not None
        if trade.px < limit_px if self.order.is_buy else trade.px > limit_px:
            return self.remaining_sz
        if trade.px != limit_px:
            return 0.0
        excess_sz = trade.sz - self.queue_ahead_sz
        self.queue_ahead_sz = max(0.0, -excess_sz)
        return min(max(0.0, excess_sz), self.remaining_sz)


def _trigger_fires(order: OrderRequest, book: L2Book) -> bool:
    """A sell (protecting a long) watches the best bid it would hit, a buy the best ask."""
    trigger_px = order.trigger_px
    assert trigger_px is not None
    side_px = book.ask_px if order.is_buy else book.bid_px
    if not side_px:
        return False
    px = side_px[0]
    adverse = order.kind == "stop_loss"
    if order.is_buy == adverse:  # a short's stop or a long's target: the price rose to it
        return px >= trigger_px
    return px <= trigger_px


class PaperBroker:
    """One paper account in cross margin: cash, one-way positions, open orders, fills."""

    def __init__(
        self,
        equity_usd: float,
        rules: Mapping[str, AssetRules],
        fees: FeeSchedule = FeeSchedule(),
    ) -> None:
        self.rules = dict(rules)
        self.fees = fees
        self.cash_usd = equity_usd  # starting equity + realised PnL - fees + funding
        self.positions: dict[str, Position] = {}
        self.realised_pnl_usd = 0.0
        self.fees_usd = 0.0
        self.funding_usd = 0.0
        self._open: dict[str, _Working] = {}
        self._books: dict[str, L2Book] = {}  # latest snapshot less the depth taken from it
        self._marks: dict[str, float] = {}
        self._pending: list[OrderUpdate] = []

    @property
    def open_orders(self) -> dict[str, OrderRequest]:
        """Resting limits and waiting triggers, by cloid, as they were submitted."""
        return {cloid: w.order for cloid, w in self._open.items()}

    # -- orders -------------------------------------------------------------------------------

    def submit(self, order: OrderRequest, book: L2Book | None) -> Result:
        """Place ``order``; ``book`` is the caller's latest snapshot of its coin, or ``None``
        for the last one seen. A snapshot no newer than the one held is ignored, so depth
        already taken from it stays taken."""
        if book is not None:
            if book.coin != order.coin:
                raise ValueError(f"a {book.coin} book for a {order.coin} order")
            self._see_book(book)
        work = _Working(order, order.sz)
        ts_ms = order.ts_ms
        if order.cloid in self._open:
            return work.update("rejected", ts_ms, f"duplicate cloid {order.cloid}"), []
        if order.coin not in self.rules:
            return work.update("rejected", ts_ms, f"unknown coin {order.coin}"), []
        if order.reduce_only and self._reducible_sz(order) == 0:
            return work.update("rejected", ts_ms, REDUCE_ONLY), []
        if order.kind in ("stop_loss", "take_profit"):
            self._open[order.cloid] = work
            self._sync_protection(order.coin)
            return work.update("waiting_trigger", ts_ms), []
        view = self._books.get(order.coin)
        if view is None:
            return work.update("rejected", ts_ms, f"no order book for {order.coin} yet"), []
        fills = self._take(work, order.limit_px)
        self._pending += self._cancel_stale(order.coin, ts_ms)
        if order.kind == "market" or work.remaining_sz == 0:
            if not fills:
                return work.update("rejected", ts_ms, IOC_CANCEL), []
            status: OrderStatus = "filled" if work.remaining_sz == 0 else "partially_filled"
            return work.update(status, ts_ms), fills
        own_px, own_sz = (view.bid_px, view.bid_sz) if order.is_buy else (view.ask_px, view.ask_sz)
        work.queue_ahead_sz = sum(
            s for p, s in zip(own_px, own_sz, strict=True) if p == order.limit_px
        )
        self._open[order.cloid] = work
        return work.update("resting", ts_ms), fills

    def cancel(self, cloid: str, ts_ms: int) -> OrderUpdate | None:
        """Cancel an open order; ``None`` if it is not open (filled, canceled, unknown)."""
        work = self._open.pop(cloid, None)
        if work is None:
            return None
        self._sync_protection(work.order.coin)
        return work.update("canceled", ts_ms)

    def cancel_all(self, ts_ms: int, coin: str | None = None) -> list[OrderUpdate]:
        """Cancel every open order, or every one of ``coin``."""
        cloids = [c for c, w in self._open.items() if coin is None or w.order.coin == coin]
        return [u for c in cloids if (u := self.cancel(c, ts_ms)) is not None]

    def drain_updates(self) -> list[OrderUpdate]:
        """Cancellations a ``submit`` caused besides its own answer (the triggers of the
        position it closed), which its single answer cannot carry; each is returned once."""
        pending, self._pending = self._pending, []
        return pending

    # -- market data --------------------------------------------------------------------------

    def on_book(self, book: L2Book) -> list[Result]:
        """A new snapshot: it replaces the consumed one, sets the mark and fires the
        triggers it crosses (each a reduce-only market order; its siblings are canceled).
        A snapshot older than the one held is ignored."""
        held = self._books.get(book.coin)
        if held is not None and book.ts_ms < held.ts_ms:
            return []
        self._see_book(book)
        results: list[Result] = []
        waiting = [
            w
            for w in self._open.values()
            if w.order.coin == book.coin and w.order.trigger_px is not None
        ]
        for work in waiting:
            cloid = work.order.cloid
            if cloid not in self._open or not _trigger_fires(work.order, book):
                continue
            del self._open[cloid]
            fills = self._take(work, None)
            if not fills:
                update = work.update("canceled", book.ts_ms, IOC_CANCEL)
            else:
                status: OrderStatus = "filled" if work.remaining_sz == 0 else "partially_filled"
                update = work.update(status, book.ts_ms)
            results.append((update, fills))
            results += [(u, []) for u in self._cancel_stale(book.coin, book.ts_ms)]
        return results

    def on_trades(self, trades: Trades) -> list[Result]:
        """Public trades: resting limits of their coin fill as maker at their own price.
        One answer per order touched, final state and all its fills."""
        coin = trades.coin
        touched: dict[str, tuple[_Working, list[Fill]]] = {}
        canceled: dict[str, OrderUpdate] = {}
        for trade in trades.trades:
            resting = [
                w
                for w in self._open.values()
                if w.order.coin == coin and w.order.kind == "limit" and w.order.ts_ms <= trade.ts_ms
            ]
            for work in resting:
                if work.order.cloid not in self._open:
                    continue
                if work.order.reduce_only:
                    work.remaining_sz = min(work.remaining_sz, self._reducible_sz(work.order))
                sz = work.maker_sz(trade)
                if sz <= 0:
                    continue
                limit_px = work.order.limit_px
                assert limit_px is not None
                fill = self._fill(work, limit_px, sz, trade.ts_ms, "maker")
                touched.setdefault(work.order.cloid, (work, []))[1].append(fill)
                if work.remaining_sz == 0:
                    del self._open[work.order.cloid]
                canceled.update((u.cloid, u) for u in self._cancel_stale(coin, trade.ts_ms))
        results: list[Result] = []
        for cloid, (work, fills) in touched.items():
            update = canceled.pop(cloid, None)
            if update is None:
                status: OrderStatus = "filled" if work.remaining_sz == 0 else "resting"
                update = work.update(status, fills[-1].ts_ms)
            results.append((update, fills))
        return results + [(u, []) for u in canceled.values()]

    def on_funding(self, coin: str, rate: float, px: float, ts_ms: int) -> FundingPayment | None:
        """Settle one funding payment at ``px`` (the oracle price); ``None`` when flat."""
        pos = self.positions.get(coin)
        if pos is None:
            return None
        amount_usd = funding_payment_usd(pos.szi, px, rate)
        self.cash_usd += amount_usd
        self.funding_usd += amount_usd
        pos.funding_usd += amount_usd
        return FundingPayment(
            ts_ms=ts_ms, coin=coin, szi=pos.szi, rate=rate, px=px, amount_usd=amount_usd
        )

    # -- account ------------------------------------------------------------------------------

    def mark_px(self, coin: str) -> float | None:
        """The mid of the last two-sided book of ``coin``."""
        return self._marks.get(coin)

    def unrealised_pnl_usd(self) -> float:
        return sum(p.unrealised_pnl_usd(self._mark_or_entry(p)) for p in self.positions.values())

    def equity_usd(self) -> float:
        return self.cash_usd + self.unrealised_pnl_usd()

    def exposure_usd(self) -> float:
        return sum(p.notional_usd(self._mark_or_entry(p)) for p in self.positions.values())

    def liquidation_px(self, coin: str) -> float | None:
        """Cross-margin liquidation price of ``coin``'s position, the others at their marks;
        ``None`` when flat or when no positive price would liquidate the account."""
        pos = self.positions.get(coin)
        if pos is None:
            return None
        other_maintenance_usd = sum(
            maintenance_margin_usd(
                p.notional_usd(self._mark_or_entry(p)), self.rules[c].max_leverage
            )
            for c, p in self.positions.items()
            if c != coin
        )
        return cross_liquidation_px(
            pos.szi,
            self._mark_or_entry(pos),
            self.equity_usd(),
            other_maintenance_usd,
            self.rules[coin].max_leverage,
        )

    # -- internals ----------------------------------------------------------------------------

    def _see_book(self, book: L2Book) -> None:
        held = self._books.get(book.coin)
        if held is not None and held.ts_ms >= book.ts_ms:
            return
        self._books[book.coin] = book
        if book.mid_px is not None:
            self._marks[book.coin] = book.mid_px

    def _mark_or_entry(self, pos: Position) -> float:
        return self._marks.get(pos.coin, pos.entry_px)

    def _reducible_sz(self, order: OrderRequest) -> float:
        """How much of ``order`` reduces its coin's position (0 if it would grow it)."""
        pos = self.positions.get(order.coin)
        if pos is None or (pos.szi > 0) == order.is_buy:
            return 0.0
        return min(order.sz, abs(pos.szi))

    def _take(self, work: _Working, limit_px: float | None) -> list[Fill]:
        """Fill what is marketable of ``work`` against the held book as taker, and keep the
        book without the depth taken. A reduce-only order is first capped to the position."""
        order = work.order
        if order.reduce_only:
            work.remaining_sz = min(work.remaining_sz, self._reducible_sz(order))
        book = self._books[order.coin]
        if work.remaining_sz <= 0:
            return []
        walk = walk_book(book, work.remaining_sz, order.is_buy, limit_px)
        if not walk.fills:
            return []
        self._books[order.coin] = book_after(book, order.is_buy, walk)
        return [self._fill(work, lv.px, lv.sz, book.ts_ms, "taker") for lv in walk.fills]

    def _fill(self, work: _Working, px: float, sz: float, ts_ms: int, liquidity: Liquidity) -> Fill:
        """Book one execution: fee, position, cash, the order's progress."""
        order = work.order
        rate = self.fees.taker_rate if liquidity == "taker" else self.fees.maker_rate
        fee_usd = px * sz * rate
        sz_decimals = self.rules[order.coin].sz_decimals
        closed_pnl_usd = self._apply_to_position(order, px, sz, fee_usd, ts_ms)
        work.remaining_sz = max(0.0, round(work.remaining_sz - sz, sz_decimals))
        work.filled_sz = round(work.filled_sz + sz, sz_decimals)
        work.filled_usd += px * sz
        return Fill(
            ts_ms=ts_ms,
            coin=order.coin,
            cloid=order.cloid,
            is_buy=order.is_buy,
            px=px,
            sz=sz,
            fee_usd=fee_usd,
            liquidity=liquidity,
            closed_pnl_usd=closed_pnl_usd,
            purpose=order.purpose,
            decision_id=order.decision_id,
        )

    def _apply_to_position(
        self, order: OrderRequest, px: float, sz: float, fee_usd: float, ts_ms: int
    ) -> float:
        """The shared position arithmetic, plus per-position and session totals; a flip's
        new position carries the share of the fee its opening part paid."""
        coin = order.coin
        pos = self.positions.get(coin)
        start_szi = pos.szi if pos else 0.0
        effect = fill_effect(
            start_szi,
            pos.entry_px if pos else 0.0,
            order.is_buy,
            px,
            sz,
            self.rules[coin].sz_decimals,
        )
        closed_pnl_usd = effect.closed_pnl_usd
        self.cash_usd += closed_pnl_usd - fee_usd
        self.realised_pnl_usd += closed_pnl_usd
        self.fees_usd += fee_usd
        end_szi = effect.end_szi
        if end_szi == 0:
            self.positions.pop(coin, None)
        elif pos is None or (end_szi > 0) != (start_szi > 0):
            self.positions[coin] = Position(
                coin=coin,
                szi=end_szi,
                entry_px=effect.entry_px,
                opened_ts_ms=ts_ms,
                decision_id=order.decision_id,
                fees_usd=fee_usd * abs(end_szi) / sz,
            )
        else:
            pos.szi, pos.entry_px = end_szi, effect.entry_px
            pos.realised_pnl_usd += closed_pnl_usd
            pos.fees_usd += fee_usd
        return closed_pnl_usd

    def _cancel_stale(self, coin: str, ts_ms: int) -> list[OrderUpdate]:
        """Cancel the reduce-only orders of ``coin`` that no longer reduce its position:
        when a position closes (or flips) its stop and target go (one-cancels-other)."""
        pos = self.positions.get(coin)
        stale = [
            w
            for w in self._open.values()
            if w.order.coin == coin
            and w.order.reduce_only
            and (pos is None or (pos.szi > 0) == w.order.is_buy)
        ]
        for work in stale:
            del self._open[work.order.cloid]
        self._sync_protection(coin)
        return [w.update("canceled", ts_ms, PROTECTED_CLOSED) for w in stale]

    def _sync_protection(self, coin: str) -> None:
        """The position's ``stop_px``/``target_px`` from its waiting triggers (latest wins)."""
        pos = self.positions.get(coin)
        if pos is None:
            return
        pos.stop_px = pos.target_px = None
        for work in self._open.values():
            if work.order.coin != coin:
                continue
            if work.order.kind == "stop_loss":
                pos.stop_px = work.order.trigger_px
            elif work.order.kind == "take_profit":
                pos.target_px = work.order.trigger_px
