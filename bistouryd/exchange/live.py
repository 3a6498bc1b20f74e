"""The positions agent's picture of a live account, kept from what the exchange reports.

The exchange is the truth for positions, open orders and fills: ``reconcile`` adopts
what it says (and returns every difference, for the log), ``on_fills`` turns its fills
into ``Fill`` records once each. What the exchange does not know is kept here: which
decision caused each order (by client order id) and opened each position, and the
session's realised P&L and fees. Pure: the I/O is the agent's (``LiveGateway``).
"""

from __future__ import annotations

from collections.abc import Mapping

from bistouryd.exchange.account import fill_effect
from bistouryd.exchange.gateway import ExchangeAccount, ExchangeFill, ExchangeOrder
from bistouryd.exchange.orders import Fill, OrderRequest, Position, Purpose

KEEP_TIDS = 100_000  # fills remembered to never record one twice
SZ_DECIMALS = 10  # local bookkeeping only: the exchange's sizes are exact already


class LiveAccount:
    def __init__(self) -> None:
        self.orders: dict[str, OrderRequest] = {}  # every order we sent, by cloid
        self.positions: dict[str, Position] = {}
        self.open_orders: list[ExchangeOrder] = []
        self.equity_usd = 0.0
        self.start_equity_usd: float | None = None
        self.realised_pnl_usd = 0.0
        self.fees_usd = 0.0
        self.last_fill_ms = 0
        self._tids: dict[int, None] = {}  # insertion-ordered set, trimmed to KEEP_TIDS

    def track(self, order: OrderRequest) -> None:
        self.orders[order.cloid] = order

    def reconcile(
        self, account: ExchangeAccount, orders: list[ExchangeOrder], now_ms: int
    ) -> list[str]:
        """Adopt the exchange's positions and open orders; say what differed."""
        differences = []
        self.equity_usd = account.equity_usd
        if self.start_equity_usd is None:
            self.start_equity_usd = account.equity_usd
        triggers = {(o.coin, o.kind): o.trigger_px for o in orders if o.trigger_px is not None}
        adopted: dict[str, Position] = {}
        for coin in sorted(set(self.positions) | set(account.positions)):
            mine, theirs = self.positions.get(coin), account.positions.get(coin)
            local_szi = mine.szi if mine else 0.0
            if theirs is None:
                if mine is not None:
                    differences.append(f"{coin}: held {local_szi:+g} here, flat on the exchange")
                continue
            if abs(theirs.szi - local_szi) > 1e-12:
                differences.append(
                    f"{coin}: {local_szi:+g} here, {theirs.szi:+g} on the exchange; "
                    "adopting the exchange's"
                )
            same_side = mine is not None and (mine.szi > 0) == (theirs.szi > 0)
            adopted[coin] = Position(
                coin=coin,
                szi=theirs.szi,
                entry_px=theirs.entry_px,
                opened_ts_ms=mine.opened_ts_ms if mine and same_side else now_ms,
                decision_id=mine.decision_id if mine and same_side else None,
                stop_px=triggers.get((coin, "stop_loss")),
                target_px=triggers.get((coin, "take_profit")),
                realised_pnl_usd=mine.realised_pnl_usd if mine and same_side else 0.0,
                fees_usd=mine.fees_usd if mine and same_side else 0.0,
            )
        self.positions = adopted
        self.open_orders = orders
        return differences

    def on_fills(self, fills: list[ExchangeFill]) -> list[Fill]:
        """The exchange's fills not seen before, as ``Fill`` records: which order of ours
        and which decision they belong to, and which decision opened what they reduce."""
        out = []
        for f in sorted(fills, key=lambda x: (x.ts_ms, x.tid)):
            if f.tid in self._tids:
                continue
            self._tids[f.tid] = None
            if len(self._tids) > KEEP_TIDS:
                del self._tids[next(iter(self._tids))]
            order = self.orders.get(f.cloid or "")
            held = self.positions.get(f.coin)
            reduces = held is not None and (held.szi > 0) != f.is_buy
            purpose: Purpose = order.purpose if order else ("close" if reduces else "open")
            fill = Fill(
                ts_ms=f.ts_ms,
                coin=f.coin,
                cloid=f.cloid or order_cloid_of(f.oid),
                is_buy=f.is_buy,
                px=f.px,
                sz=f.sz,
                fee_usd=f.fee_usd,
                liquidity="taker" if f.crossed else "maker",
                closed_pnl_usd=f.closed_pnl_usd,
                purpose=purpose,
                decision_id=order.decision_id if order else None,
                opened_by=held.decision_id if reduces and held else None,
                mode="live",
            )
            self.realised_pnl_usd += f.closed_pnl_usd
            self.fees_usd += f.fee_usd
            self.last_fill_ms = max(self.last_fill_ms, f.ts_ms)
            self._apply(fill, held)
            out.append(fill)
        return out

    def _apply(self, fill: Fill, held: Position | None) -> None:
        """Move the local position with the fill until the next ``reconcile`` (so a
        close seen in the same batch as its open still knows the opening decision)."""
        start = held.szi if held else 0.0
        effect = fill_effect(start, held.entry_px if held else fill.px, fill.is_buy, fill.px,
                             fill.sz, SZ_DECIMALS)  # fmt: skip
        if effect.end_szi == 0:
            self.positions.pop(fill.coin, None)
        elif held is None or (effect.end_szi > 0) != (start > 0):
            self.positions[fill.coin] = Position(
                coin=fill.coin,
                szi=effect.end_szi,
                entry_px=effect.entry_px,
                opened_ts_ms=fill.ts_ms,
                decision_id=fill.decision_id,
            )
        else:
            held.szi, held.entry_px = effect.end_szi, effect.entry_px

    def unprotected(self) -> list[Position]:
        """Open positions the exchange holds no stop-loss for."""
        return [p for p in self.positions.values() if p.stop_px is None]

    def unrealised_pnl_usd(self, marks: Mapping[str, float]) -> float:
        return sum(
            p.unrealised_pnl_usd(marks.get(c, p.entry_px)) for c, p in self.positions.items()
        )


def order_cloid_of(oid: int) -> str:
    """A stand-in client order id for a fill of an order placed without one (by hand)."""
    return f"0x{oid:032x}"
