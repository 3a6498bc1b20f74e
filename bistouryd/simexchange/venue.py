"""The trading core of the simulated exchange: accounts, orders, matching, triggers, funding.

Orders are checked like the real exchange checks them (size lots, price ticks, the $10 minimum,
the 80% price band, reduce-only, post-only, margin) and answered with its error strings
(HYPERLIQUID.md §c). A marketable order walks the current book (``bistouryd.exchange.book``)
and pays the taker fee; the rest rests and fills as maker when the market trades through it.
Simulated users trade only against the market data: their orders do not show in the public
book and do not match each other.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bistouryd.exchange.book import BookWalk, walk_book
from bistouryd.exchange.rules import MIN_ORDER_USD, AssetRules, round_sz, valid_px, valid_sz
from bistouryd.market import L2Book
from bistouryd.simexchange.accounts import Account, FundingPayment, MarginView, UserFill, usd
from bistouryd.simexchange.feed import PublicTrade
from bistouryd.simexchange.matching import (
    Grouping,
    SimOrder,
    Tif,
    Tpsl,
    Trigger,
    crosses,
    reducible_sz,
    traded_through,
    trigger_fires,
)

# The exchange's own words (docs "Error responses", via HYPERLIQUID.md §c).
TICK = "Price must be divisible by tick size."
MIN_VALUE = "Order must have minimum value of $10."
MARGIN = "Insufficient margin to place order."
REDUCE_ONLY = "Reduce only order would increase position."
IOC_CANCEL = "Order could not immediately match against any resting orders."
NO_LIQUIDITY = "No liquidity available for market order."
MISSING = "Order was never placed, already canceled, or filled."
BAD_SIZE = "Order has invalid size."
PRICE_BAND = "Order price cannot be more than 80% away from the reference price"
MAX_PRICE_DEVIATION = 0.8
KEEP_ORDERS = 50_000
HISTORY_ANSWER = 2000


class MarketView(Protocol):
    def book(self, coin: str) -> L2Book: ...

    def mark_px(self, coin: str) -> float: ...

    def take(self, coin: str, is_buy: bool, walk: BookWalk) -> None:
        """Remove the depth a user's marketable order consumed."""


@dataclass(frozen=True)
class Fees:
    taker: float
    maker: float


@dataclass(frozen=True)
class TriggerRequest:
    px: str
    is_market: bool
    tpsl: Tpsl


@dataclass(frozen=True)
class OrderRequest:
    """One order as the wire gives it; prices and sizes stay strings until checked."""

    asset: int
    is_buy: bool
    px: str
    sz: str
    reduce_only: bool
    tif: Tif | None
    trigger: TriggerRequest | None
    cloid: str | None


@dataclass(frozen=True)
class Resting:
    oid: int
    cloid: str | None


@dataclass(frozen=True)
class Filled:
    total_sz: float
    avg_px: float
    oid: int
    cloid: str | None


@dataclass(frozen=True)
class Rejected:
    error: str


@dataclass(frozen=True)
class Waiting:
    status: Literal["waitingForTrigger", "waitingForFill"]


Outcome = Resting | Filled | Rejected | Waiting
CancelOutcome = Literal["success"] | Rejected


@dataclass(frozen=True)
class FillsEvent:
    user: str
    fills: tuple[UserFill, ...]


@dataclass(frozen=True)
class OrderUpdate:
    user: str
    order: SimOrder  # a copy taken when the status changed


@dataclass(frozen=True)
class FundingEvent:
    user: str
    payment: FundingPayment


UserEvent = FillsEvent | OrderUpdate | FundingEvent


class Venue:
    def __init__(
        self,
        rules: Sequence[AssetRules],
        market: MarketView,
        fees: Fees,
        now_ms: Callable[[], int],
    ) -> None:
        self.by_asset = list(rules)
        self.rules = {r.name: r for r in rules}
        self.market = market
        self.fees = fees
        self.now_ms = now_ms
        self.accounts: dict[str, Account] = {}
        self.agents: dict[str, str] = {}
        self._open: dict[int, SimOrder] = {}
        self._orders: OrderedDict[int, SimOrder] = OrderedDict()
        self._cloids: dict[tuple[str, str], int] = {}
        self._next_oid = 10_000_000_000
        self._next_tid = 500_000_000_000_000
        self._events: list[UserEvent] = []

    # -- accounts ---------------------------------------------------------------------------

    def add_account(self, address: str, usdc: float) -> Account:
        """Create an account, or credit an existing one with ``usdc`` more."""
        key = address.lower()
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = Account(key, usdc)
        else:
            account.balance_usd += usdc
        return account

    def add_agent(self, agent: str, account: str) -> None:
        """Let ``agent`` (an API wallet) sign for ``account``."""
        self.agents[agent.lower()] = account.lower()

    def account_for(self, signer: str, vault: str | None) -> Account | None:
        """The account an action signed by ``signer`` trades for; ``None`` if unknown."""
        signer = signer.lower()
        owner = self.agents.get(signer, signer if signer in self.accounts else None)
        if owner is None:
            return None
        return self.accounts.get(vault.lower() if vault else owner)

    def margin(self, account: Account) -> MarginView:
        return account.margin({c: self.market.mark_px(c) for c in account.positions}, self.rules)

    def drain_events(self) -> list[UserEvent]:
        events, self._events = self._events, []
        return events

    # -- actions ----------------------------------------------------------------------------

    def place(
        self, account: Account, requests: Sequence[OrderRequest], grouping: Grouping
    ) -> list[Outcome]:
        """One outcome per request. ``normalTpsl``: the first order is the entry, the others
        its TP/SL, armed once it has filled; ``positionTpsl``: TP/SL on the whole position."""
        if grouping == "na":
            return [self._place(account, r) for r in requests]
        group: list[SimOrder] = []
        if grouping == "positionTpsl":
            outcomes = [self._place(account, r, group=group, position_tpsl=True) for r in requests]
        else:
            first = self._place(account, requests[0])
            outcomes = [first]
            for request in requests[1:]:
                if isinstance(first, Rejected):
                    outcomes.append(first)
                    continue
                parent = first.oid if isinstance(first, Resting) else None
                outcomes.append(self._place(account, request, group=group, parent_oid=parent))
        for order in group:
            order.siblings = [o.oid for o in group if o is not order]
        return outcomes

    def cancel(
        self, account: Account, refs: Iterable[tuple[int, int | str]]
    ) -> list[CancelOutcome]:
        """Cancel by (asset, oid) or (asset, cloid)."""
        results: list[CancelOutcome] = []
        for asset, ref in refs:
            order = self._find_open(account, ref)
            if order is None or self.rules[order.coin].asset != asset:
                results.append(Rejected(MISSING))
            else:
                self._close(order, "canceled")
                results.append("success")
        return results

    def modify(
        self, account: Account, items: Iterable[tuple[int | str, OrderRequest]]
    ) -> list[Outcome]:
        """Replace open orders; the old order stays if the new one is rejected."""
        outcomes: list[Outcome] = []
        for ref, request in items:
            old = self._find_open(account, ref)
            if old is None:
                outcomes.append(Rejected(MISSING))
                continue
            del self._open[old.oid]  # its margin is free for the replacement
            outcome = self._place(account, request)
            self._open[old.oid] = old
            if not isinstance(outcome, Rejected):
                self._close(old, "canceled")
            outcomes.append(outcome)
        return outcomes

    def update_leverage(self, account: Account, asset: int, is_cross: bool, leverage: int) -> str:
        """Set the leverage of one asset; returns an error message or ``""``."""
        if not 0 <= asset < len(self.by_asset):
            return f"Asset {asset} does not exist."
        rules = self.by_asset[asset]
        if not is_cross:
            return "Isolated margin is not supported by the simulated exchange."
        if not 1 <= leverage <= rules.max_leverage:
            return f"Leverage must be between 1 and {rules.max_leverage} for {rules.name}."
        account.leverage[rules.name] = leverage
        return ""

    # -- market events ----------------------------------------------------------------------

    def on_trades(self, coin: str, trades: Sequence[PublicTrade]) -> None:
        """Fill resting orders the public tape traded through."""
        for order in self._resting(coin):
            for trade in trades:
                if order.oid in self._open and traded_through(order, trade.px):
                    self._maker_fill(order, trade.ts_ms)
                    break

    def on_market(self, coin: str, bid_px: float, ask_px: float, mark_px: float, ts: int) -> None:
        """After a step: resting orders the touch moved through fill; triggers fire."""
        for order in self._resting(coin):
            live = order.oid in self._open
            if live and traded_through(order, ask_px if order.is_buy else bid_px):
                self._maker_fill(order, ts)
        for order in [o for o in self._open.values() if o.coin == coin and self._armed(o)]:
            if order.oid in self._open and trigger_fires(order, mark_px):
                self._fire(order, ts)

    def on_funding(self, coin: str, rate: float, oracle_px: float, ts: int) -> None:
        for account in self.accounts.values():
            digest = hashlib.sha256(f"funding:{coin}:{ts}:{account.address}".encode()).hexdigest()
            payment = account.apply_funding(coin, rate, oracle_px, ts, "0x" + digest)
            if payment is not None:
                self._events.append(FundingEvent(account.address, payment))

    # -- queries ----------------------------------------------------------------------------

    def open_orders(self, account: Account) -> list[SimOrder]:
        """Resting and waiting orders, newest first (children are listed under their parent)."""
        mine = [o for o in self._open.values() if o.user == account.address]
        return sorted(
            (o for o in mine if o.parent_oid is None),
            key=lambda o: (o.timestamp_ms, o.oid),
            reverse=True,
        )

    def children(self, order: SimOrder) -> list[SimOrder]:
        return [self._open[c] for c in order.children if c in self._open]

    def order(self, account: Account, ref: int | str) -> SimOrder | None:
        oid = ref if isinstance(ref, int) else self._cloids.get((account.address, ref.lower()))
        found = self._orders.get(oid) if oid is not None else None
        return found if found is not None and found.user == account.address else None

    def historical_orders(self, account: Account) -> list[SimOrder]:
        mine = [o for o in reversed(self._orders.values()) if o.user == account.address]
        return mine[:HISTORY_ANSWER]

    # -- internals --------------------------------------------------------------------------

    def _place(
        self,
        account: Account,
        request: OrderRequest,
        *,
        group: list[SimOrder] | None = None,
        parent_oid: int | None = None,
        position_tpsl: bool = False,
    ) -> Outcome:
        if not 0 <= request.asset < len(self.by_asset):
            return Rejected(f"Asset {request.asset} does not exist.")
        rules = self.by_asset[request.asset]
        d = rules.sz_decimals
        if not valid_sz(request.sz, d):
            return Rejected(BAD_SIZE)
        if not valid_px(request.px, d):
            return Rejected(TICK)
        if request.trigger is not None and not valid_px(request.trigger.px, d):
            return Rejected(TICK)
        px, sz = float(request.px), float(request.sz)
        if not request.reduce_only and px * sz < MIN_ORDER_USD:
            return Rejected(MIN_VALUE)
        if abs(px / self.market.mark_px(rules.name) - 1) > MAX_PRICE_DEVIATION:
            return Rejected(PRICE_BAND)
        now = self.now_ms()
        order = SimOrder(
            oid=self._oid(),
            user=account.address,
            coin=rules.name,
            is_buy=request.is_buy,
            limit_px=px,
            sz=sz,
            orig_sz=sz,
            tif=request.tif,
            reduce_only=request.reduce_only,
            cloid=request.cloid.lower() if request.cloid else None,
            timestamp_ms=now,
            status_ts_ms=now,
        )
        if request.trigger is not None:
            t = request.trigger
            order.trigger = Trigger(float(t.px), t.is_market, t.tpsl)
            order.tif = None
            order.is_position_tpsl = position_tpsl
            order.parent_oid = parent_oid
            if parent_oid is not None:
                self._open[parent_oid].children.append(order.oid)
            self._register(order)
            self._open[order.oid] = order
            self._update(order)
            if group is None:
                return Resting(order.oid, order.cloid)
            group.append(order)
            return Waiting("waitingForFill" if parent_oid is not None else "waitingForTrigger")
        if request.reduce_only and reducible_sz(order.is_buy, sz, account.szi(rules.name)) == 0:
            return Rejected(REDUCE_ONLY)
        book = self.market.book(rules.name)
        bid = book.bid_px[0] if book.bid_px else None
        ask = book.ask_px[0] if book.ask_px else None
        marketable = crosses(order.is_buy, px, ask if order.is_buy else bid)
        if order.tif == "Alo" and marketable:
            return Rejected(f"Post only order would have immediately matched, bbo was {bid}@{ask}.")
        if not request.reduce_only:
            if order.is_buy:
                ref_px = min(px, ask) if ask is not None else px
            else:
                ref_px = max(px, bid) if bid is not None else px
            if not self._margin_ok(account, rules, order.is_buy, sz, ref_px):
                return Rejected(MARGIN)
        self._register(order)
        return self._execute(account, order, rules)

    def _execute(self, account: Account, order: SimOrder, rules: AssetRules) -> Outcome:
        """Take what the book offers up to the limit price, then rest, cancel or finish."""
        book = self.market.book(order.coin)
        levels = book.ask_px if order.is_buy else book.bid_px
        take = order.sz
        if order.reduce_only:
            take = reducible_sz(order.is_buy, order.sz, account.szi(order.coin))
        walk = None
        if take > 0 and crosses(order.is_buy, order.limit_px, levels[0] if levels else None):
            walk = walk_book(book, take, order.is_buy, order.limit_px)
        filled = 0.0
        if walk is not None and walk.filled_sz > 0:
            self.market.take(order.coin, order.is_buy, walk)
            now = self.now_ms()
            tx = self._hash(order.oid, now)
            fills = tuple(
                self._fill(account, order, rules, f.px, f.sz, True, tx, now) for f in walk.fills
            )
            self._events.append(FillsEvent(account.address, fills))
            filled = round_sz(walk.filled_sz, rules.sz_decimals)
            order.sz = round_sz(order.sz - filled, rules.sz_decimals)
        if order.sz <= 0 or (order.reduce_only and filled and account.szi(order.coin) == 0):
            order.sz = 0.0
            self._close(order, "filled")
            self._after_fill(order, account)
        elif order.tif == "Ioc":
            self._close(order, "canceled" if filled else "iocCancelRejected", notify=bool(filled))
            if filled:
                self._after_fill(order, account)
            else:
                return Rejected(IOC_CANCEL if levels else NO_LIQUIDITY)
        else:
            order.status = "open"
            self._open[order.oid] = order
            self._update(order)
            if filled:
                self._after_fill(order, account)
            return Resting(order.oid, order.cloid)
        assert walk is not None and walk.avg_px is not None
        return Filled(filled, walk.avg_px, order.oid, order.cloid)

    def _maker_fill(self, order: SimOrder, ts: int) -> None:
        account = self.accounts[order.user]
        rules = self.rules[order.coin]
        sz = order.sz
        if order.reduce_only:
            sz = reducible_sz(order.is_buy, sz, account.szi(order.coin))
            if sz == 0:
                self._close(order, "reduceOnlyCanceled")
                return
        fill = self._fill(
            account, order, rules, order.limit_px, sz, False, self._hash(order.oid, ts), ts
        )
        self._events.append(FillsEvent(account.address, (fill,)))
        order.sz = 0.0
        self._close(order, "filled", ts)
        self._after_fill(order, account)

    def _fire(self, order: SimOrder, ts: int) -> None:
        account = self.accounts[order.user]
        assert order.trigger is not None
        order.triggered = True
        order.tif = "Ioc" if order.trigger.is_market else "Gtc"
        del self._open[order.oid]
        order.status, order.status_ts_ms = "triggered", ts
        self._update(order)
        if order.reduce_only and reducible_sz(order.is_buy, order.sz, account.szi(order.coin)) == 0:
            self._close(order, "reduceOnlyCanceled", ts)
            return
        self._execute(account, order, self.rules[order.coin])

    def _after_fill(self, order: SimOrder, account: Account) -> None:
        """Arm a filled entry's TP/SL, cancel the other leg of a pair, and drop position
        TP/SL once the position is closed."""
        for child in self.children(order):
            child.parent_oid = None
        order.children = []
        for oid in order.siblings:
            sibling = self._open.get(oid)
            if sibling is not None:
                self._close(sibling, "siblingFilledCanceled")
        if account.szi(order.coin) == 0:
            for other in list(self._open.values()):
                mine = other.user == account.address and other.coin == order.coin
                if mine and other.is_position_tpsl:
                    self._close(other, "canceled")

    def _fill(
        self,
        account: Account,
        order: SimOrder,
        rules: AssetRules,
        px: float,
        sz: float,
        crossed: bool,
        tx_hash: str,
        ts: int,
    ) -> UserFill:
        rate = self.fees.taker if crossed else self.fees.maker
        self._next_tid += 1
        return account.apply_fill(
            rules,
            order.is_buy,
            px,
            round_sz(sz, rules.sz_decimals),
            usd(px * sz * rate),
            time_ms=ts,
            oid=order.oid,
            tid=self._next_tid,
            hash=tx_hash,
            crossed=crossed,
            cloid=order.cloid,
        )

    def _margin_ok(
        self, account: Account, rules: AssetRules, is_buy: bool, sz: float, px: float
    ) -> bool:
        """Initial margin of the part that grows the position, against free margin (account
        value less the margin of positions and of the other open orders)."""
        position = account.szi(rules.name)
        reducing = min(sz, abs(position)) if position and (position > 0) != is_buy else 0.0
        required = (sz - reducing) * px / account.leverage_for(rules)
        reserved = sum(
            o.sz * o.limit_px / account.leverage_for(self.rules[o.coin])
            for o in self._open.values()
            if o.user == account.address and not o.reduce_only and o.trigger is None
        )
        view = self.margin(account)
        return required <= view.account_value_usd - view.total_margin_used_usd - reserved + 1e-9

    def _resting(self, coin: str) -> list[SimOrder]:
        return [
            o
            for o in self._open.values()
            if o.coin == coin and not o.waiting_trigger and o.parent_oid is None
        ]

    def _armed(self, order: SimOrder) -> bool:
        return order.waiting_trigger and order.parent_oid is None

    def _find_open(self, account: Account, ref: int | str) -> SimOrder | None:
        oid = ref if isinstance(ref, int) else self._cloids.get((account.address, ref.lower()))
        order = self._open.get(oid) if oid is not None else None
        return order if order is not None and order.user == account.address else None

    def _close(
        self, order: SimOrder, status: str, ts: int | None = None, notify: bool = True
    ) -> None:
        """End an order's life with ``status``; a cancelled parent takes its children along."""
        self._open.pop(order.oid, None)
        order.status, order.status_ts_ms = status, self.now_ms() if ts is None else ts
        if notify:
            self._update(order)
        if status != "filled":
            for child in self.children(order):
                self._close(child, "canceled", ts)

    def _update(self, order: SimOrder) -> None:
        self._events.append(OrderUpdate(order.user, copy.copy(order)))

    def _register(self, order: SimOrder) -> None:
        self._orders[order.oid] = order
        if order.cloid:
            self._cloids[(order.user, order.cloid)] = order.oid
        for _ in range(len(self._orders) - KEEP_ORDERS):
            oid, old = next(iter(self._orders.items()))
            if oid in self._open:  # still open: keep it, it ages out once closed
                self._orders.move_to_end(oid)
                continue
            del self._orders[oid]
            if old.cloid and self._cloids.get((old.user, old.cloid)) == oid:
                del self._cloids[(old.user, old.cloid)]

    def _oid(self) -> int:
        self._next_oid += 1
        return self._next_oid

    @staticmethod
    def _hash(oid: int, ts: int) -> str:
        return "0x" + hashlib.sha256(f"tx:{oid}:{ts}".encode()).hexdigest()
