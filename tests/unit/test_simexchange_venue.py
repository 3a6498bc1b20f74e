"""Matching, triggers, margin and funding of the simulated venue, against a fixed book."""

from __future__ import annotations

import pytest

from bistouryd.exchange.book import BookWalk, book_after
from bistouryd.exchange.rules import AssetRules
from bistouryd.market import L2Book
from bistouryd.simexchange.accounts import Account
from bistouryd.simexchange.feed import PublicTrade
from bistouryd.simexchange.venue import (
    MARGIN,
    MIN_VALUE,
    MISSING,
    REDUCE_ONLY,
    TICK,
    Fees,
    Filled,
    FillsEvent,
    FundingEvent,
    OrderRequest,
    OrderUpdate,
    Rejected,
    Resting,
    TriggerRequest,
    Venue,
    Waiting,
)

BTC = AssetRules("BTC", 0, 5, 50)


class FixedMarket:
    """The venue's view of one coin: a book that only user orders change."""

    def __init__(self) -> None:
        self.books = {
            "BTC": L2Book(
                coin="BTC",
                ts_ms=0,
                bid_px=[99_990.0, 99_980.0, 99_970.0],
                bid_sz=[0.1, 0.2, 0.5],
                bid_n=[1, 1, 1],
                ask_px=[100_000.0, 100_010.0, 100_020.0],
                ask_sz=[0.1, 0.2, 0.5],
                ask_n=[1, 1, 1],
            )
        }

    def book(self, coin: str) -> L2Book:
        return self.books[coin]

    def mark_px(self, coin: str) -> float:
        return 99_995.0

    def take(self, coin: str, is_buy: bool, walk: BookWalk) -> None:
        self.books[coin] = book_after(self.books[coin], is_buy, walk)


@pytest.fixture
def venue() -> Venue:
    v = Venue([BTC], FixedMarket(), Fees(taker=0.00045, maker=0.00015), lambda: 1_000)
    v.add_account("0xA", 10_000.0)
    return v


def acct(venue: Venue) -> Account:
    return venue.accounts["0xa"]


def order(
    is_buy: bool,
    px: str,
    sz: str,
    tif: str | None = "Gtc",
    reduce_only: bool = False,
    trigger: TriggerRequest | None = None,
) -> OrderRequest:
    return OrderRequest(0, is_buy, px, sz, reduce_only, tif, trigger, None)  # type: ignore[arg-type]


def trade(px: float, ts: int = 2_000) -> PublicTrade:
    return PublicTrade("BTC", ts, px, 0.01, "A", 1, "0x", ("0xb", "0xs"))


def test_a_market_buy_walks_the_book_and_pays_the_taker_fee(venue: Venue) -> None:
    [out] = venue.place(acct(venue), [order(True, "105000", "0.25", "Ioc")], "na")
    assert isinstance(out, Filled)
    assert out.total_sz == 0.25
    assert out.avg_px == pytest.approx((100_000 * 0.1 + 100_010 * 0.15) / 0.25)  # 100006
    fills = next(e for e in venue.drain_events() if isinstance(e, FillsEvent)).fills
    assert [(f.px, f.sz) for f in fills] == [(100_000.0, 0.1), (100_010.0, 0.15)]
    assert sum(f.fee_usd for f in fills) == pytest.approx(25_001.5 * 0.00045, abs=1e-6)
    assert all(f.crossed for f in fills)
    assert venue.market.book("BTC").ask_px[0] == 100_010.0  # the depth taken is gone


def test_a_resting_order_fills_as_maker_only_when_traded_through(venue: Venue) -> None:
    a = acct(venue)
    [out] = venue.place(a, [order(True, "99900", "0.01")], "na")
    assert isinstance(out, Resting)
    venue.on_trades("BTC", [trade(99_900.0)])  # touched, not traded through
    assert venue.open_orders(a)
    venue.on_trades("BTC", [trade(99_899.0)])
    assert not venue.open_orders(a)
    fill = a.fills[-1]
    assert (fill.px, fill.crossed, fill.fee_usd) == (99_900.0, False, round(999.0 * 0.00015, 6))
    statuses = [e.order.status for e in venue.drain_events() if isinstance(e, OrderUpdate)]
    assert statuses == ["open", "filled"]


def test_rejections_use_the_exchange_wording(venue: Venue) -> None:
    a = acct(venue)
    cases = {
        TICK: order(True, "99900.5", "0.01"),
        MIN_VALUE: order(True, "99900", "0.0001"),
        MARGIN: order(True, "99900", "3"),  # $300k at 20x needs $15k
        REDUCE_ONLY: order(True, "99900", "0.01", reduce_only=True),
        "Order has invalid size.": order(True, "99900", "0.000001"),
    }
    for error, request in cases.items():
        assert venue.place(a, [request], "na") == [Rejected(error)]
    [alo] = venue.place(a, [order(True, "100000", "0.01", "Alo")], "na")
    assert alo == Rejected(
        "Post only order would have immediately matched, bbo was 99990.0@100000.0."
    )
    [ioc] = venue.place(a, [order(True, "99000", "0.01", "Ioc")], "na")
    assert ioc == Rejected("Order could not immediately match against any resting orders.")
    [far] = venue.place(a, [order(True, "10000", "0.01")], "na")
    assert far == Rejected("Order price cannot be more than 80% away from the reference price")


def test_reduce_only_never_grows_the_position(venue: Venue) -> None:
    a = acct(venue)
    venue.place(a, [order(True, "105000", "0.05", "Ioc")], "na")
    [out] = venue.place(a, [order(False, "90000", "0.08", "Ioc", reduce_only=True)], "na")
    assert isinstance(out, Filled) and out.total_sz == 0.05
    assert a.szi("BTC") == 0


def test_a_stop_loss_fires_when_the_mark_falls_to_it(venue: Venue) -> None:
    a = acct(venue)
    venue.place(a, [order(True, "105000", "0.05", "Ioc")], "na")
    stop = TriggerRequest("99000", True, "sl")
    [out] = venue.place(a, [order(False, "90000", "0.05", None, True, stop)], "na")
    assert isinstance(out, Resting)
    venue.on_market("BTC", 99_990.0, 100_000.0, 99_500.0, 3_000)
    assert a.szi("BTC") == 0.05  # not yet
    venue.on_market("BTC", 99_990.0, 100_000.0, 99_000.0, 4_000)
    assert a.szi("BTC") == 0 and a.fills[-1].dir == "Close Long"
    statuses = [e.order.status for e in venue.drain_events() if isinstance(e, OrderUpdate)]
    assert statuses[-2:] == ["triggered", "filled"]


def test_normal_tpsl_arms_the_children_once_the_entry_fills(venue: Venue) -> None:
    a = acct(venue)
    entry = order(True, "99900", "0.02")
    tp = order(False, "101000", "0.02", None, True, TriggerRequest("101000", False, "tp"))
    sl = order(False, "98000", "0.02", None, True, TriggerRequest("98500", True, "sl"))
    outcomes = venue.place(a, [entry, tp, sl], "normalTpsl")
    assert isinstance(outcomes[0], Resting)
    assert outcomes[1:] == [Waiting("waitingForFill"), Waiting("waitingForFill")]
    [parent] = venue.open_orders(a)
    assert len(venue.children(parent)) == 2
    venue.on_market("BTC", 99_990.0, 100_000.0, 101_500.0, 3_000)  # children not armed yet
    assert a.szi("BTC") == 0
    venue.on_trades("BTC", [trade(99_800.0)])
    assert a.szi("BTC") == 0.02
    venue.on_market("BTC", 99_990.0, 100_000.0, 98_400.0, 4_000)  # the stop fires
    assert a.szi("BTC") == 0
    assert not venue.open_orders(a)  # the take-profit leg was cancelled with it
    tp_order = venue.order(a, parent.oid + 1)
    assert tp_order is not None and tp_order.status == "siblingFilledCanceled"


def test_position_tpsl_goes_away_with_the_position(venue: Venue) -> None:
    a = acct(venue)
    venue.place(a, [order(True, "105000", "0.05", "Ioc")], "na")
    tp = order(False, "110000", "0.05", None, True, TriggerRequest("110000", True, "tp"))
    assert venue.place(a, [tp], "positionTpsl") == [Waiting("waitingForTrigger")]
    venue.place(a, [order(False, "90000", "0.05", "Ioc", reduce_only=True)], "na")
    assert not venue.open_orders(a)


def test_cancel_and_modify(venue: Venue) -> None:
    a = acct(venue)
    [out] = venue.place(a, [order(True, "99000", "0.01")], "na")
    assert isinstance(out, Resting)
    [bad] = venue.modify(a, [(out.oid, order(True, "99000.5", "0.01"))])
    assert bad == Rejected(TICK) and venue.open_orders(a)[0].oid == out.oid  # old one kept
    [new] = venue.modify(a, [(out.oid, order(True, "98000", "0.02"))])
    assert isinstance(new, Resting) and new.oid != out.oid
    assert venue.cancel(a, [(0, out.oid)]) == [Rejected(MISSING)]
    assert venue.cancel(a, [(0, new.oid)]) == ["success"]
    assert venue.cancel(a, [(0, new.oid)]) == [Rejected(MISSING)]


def test_funding_settles_on_open_positions(venue: Venue) -> None:
    a = acct(venue)
    venue.place(a, [order(True, "105000", "0.1", "Ioc")], "na")
    venue.drain_events()
    before = a.balance_usd
    venue.on_funding("BTC", 0.0001, 100_000.0, 3_600_000)
    assert a.balance_usd == pytest.approx(before - 1.0)  # 0.1 x 100000 x 0.01%
    [event] = venue.drain_events()
    assert isinstance(event, FundingEvent) and event.payment.usdc == -1.0


def test_signers_and_agents(venue: Venue) -> None:
    venue.add_agent("0xAgent", "0xA")
    assert venue.account_for("0xAGENT", None) is acct(venue)
    assert venue.account_for("0xa", None) is acct(venue)
    assert venue.account_for("0xnobody", None) is None
    venue.add_account("0xVault", 5.0)
    assert venue.account_for("0xa", "0xVAULT") is venue.accounts["0xvault"]
