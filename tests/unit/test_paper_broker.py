"""The paper broker: fills walked on the book, fees, queue-aware resting limits, triggers,
funding and the account numbers, each checked against a hand calculation."""

from __future__ import annotations

from typing import Any

import pytest

from bistouryd.exchange.orders import OrderKind, OrderRequest, Purpose
from bistouryd.exchange.paper import IOC_CANCEL, REDUCE_ONLY, FeeSchedule, PaperBroker
from bistouryd.exchange.rules import AssetRules
from bistouryd.market import L2Book, Trade, Trades

RULES = {"BTC": AssetRules("BTC", 0, 5, 50), "ETH": AssetRules("ETH", 1, 4, 50)}
TAKER, MAKER = 0.00045, 0.00015


def book(
    bids: list[tuple[float, float]], asks: list[tuple[float, float]], ts_ms: int = 1_000
) -> L2Book:
    return L2Book(
        coin="BTC",
        ts_ms=ts_ms,
        bid_px=[p for p, _ in bids],
        bid_sz=[s for _, s in bids],
        bid_n=[1] * len(bids),
        ask_px=[p for p, _ in asks],
        ask_sz=[s for _, s in asks],
        ask_n=[1] * len(asks),
    )


def order(
    kind: OrderKind, is_buy: bool, sz: float, *, ts_ms: int = 1_000, **kw: Any
) -> OrderRequest:
    purpose: Purpose = "open"
    if kind == "stop_loss" or kind == "take_profit":
        purpose = kind
    return OrderRequest(
        ts_ms=ts_ms, coin="BTC", is_buy=is_buy, sz=sz, kind=kind, purpose=purpose, **kw
    )


def trades(*prints: tuple[float, float], ts_ms: int = 2_000) -> Trades:
    return Trades(
        coin="BTC",
        trades=[
            Trade(coin="BTC", ts_ms=ts_ms, px=px, sz=sz, side="sell", tid=i, hash="0x")
            for i, (px, sz) in enumerate(prints)
        ],
    )


ASKS = [(100.0, 1.0), (101.0, 2.0)]
BIDS = [(99.0, 5.0), (98.0, 5.0)]


def broker_with(b: L2Book, equity_usd: float = 10_000.0) -> PaperBroker:
    broker = PaperBroker(equity_usd, RULES)
    broker.on_book(b)
    return broker


# -- market orders ----------------------------------------------------------------------------


def test_a_market_buy_larger_than_the_top_level_pays_the_walked_average_and_taker_fee() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, fills = broker.submit(order("market", True, 2.0), None)
    assert [(f.px, f.sz) for f in fills] == [(100.0, 1.0), (101.0, 1.0)]
    assert all(f.liquidity == "taker" and f.ts_ms == 1_000 for f in fills)
    assert update.status == "filled" and update.filled_sz == 2.0
    assert update.avg_px == pytest.approx(100.5)
    fee = (100 + 101) * 0.00045  # 0.09045
    assert sum(f.fee_usd for f in fills) == pytest.approx(fee)
    assert broker.fees_usd == pytest.approx(fee)
    assert broker.cash_usd == pytest.approx(10_000 - fee)
    pos = broker.positions["BTC"]
    assert pos.szi == 2.0 and pos.entry_px == pytest.approx(100.5)
    assert pos.fees_usd == pytest.approx(fee) and pos.opened_ts_ms == 1_000


def test_a_book_too_thin_fills_partly_and_the_rest_is_canceled() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, fills = broker.submit(order("market", True, 5.0), None)
    assert update.status == "partially_filled" and update.filled_sz == 3.0
    assert update.avg_px == pytest.approx((100 + 202) / 3)
    assert len(fills) == 2 and broker.open_orders == {}


def test_the_limit_price_bounds_a_market_order() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, fills = broker.submit(order("market", True, 2.0, limit_px=99.5), None)
    assert update.status == "rejected" and update.error == IOC_CANCEL and fills == []
    update, fills = broker.submit(order("market", True, 2.0, limit_px=100.0), None)
    assert update.status == "partially_filled" and [(f.px, f.sz) for f in fills] == [(100.0, 1.0)]
    update, _ = broker.submit(order("market", False, 1.0, limit_px=99.5), None)
    assert update.status == "rejected"  # a sell takes no bid below its limit
    assert broker.cash_usd == pytest.approx(10_000 - 100 * TAKER)


def test_no_book_yet_is_a_rejection() -> None:
    broker = PaperBroker(10_000.0, RULES)
    update, fills = broker.submit(order("market", True, 1.0), None)
    assert update.status == "rejected" and update.error == "no order book for BTC yet"
    assert fills == [] and broker.cash_usd == 10_000.0 and broker.positions == {}


def test_orders_on_one_snapshot_do_not_reuse_the_depth_taken() -> None:
    b = book(BIDS, ASKS)
    broker = broker_with(b)
    assert broker.submit(order("market", True, 1.0), b)[1][0].px == 100.0
    assert broker.submit(order("market", True, 1.0), b)[1][0].px == 101.0  # 100 is gone
    update, fills = broker.submit(order("market", True, 2.0), None)
    assert update.status == "partially_filled" and [(f.px, f.sz) for f in fills] == [(101.0, 1.0)]
    broker.on_book(book(BIDS, ASKS, ts_ms=2_000))  # a new snapshot: the depth is back
    assert broker.submit(order("market", True, 1.0), None)[1][0].px == 100.0


def test_closing_a_long_realises_pnl_and_cash_is_pnl_less_fees() -> None:
    broker = broker_with(book(BIDS, ASKS))
    broker.submit(order("market", True, 1.0), None)  # long 1 @ 100
    broker.on_book(book([(110.0, 5.0)], [(111.0, 5.0)], ts_ms=2_000))
    update, fills = broker.submit(order("market", False, 1.0, ts_ms=2_000), None)
    assert update.status == "filled" and fills[0].px == 110.0
    assert fills[0].closed_pnl_usd == pytest.approx(10.0)
    assert broker.positions == {}
    assert broker.realised_pnl_usd == pytest.approx(10.0)
    assert broker.cash_usd == pytest.approx(10_000 + 10 - (100 + 110) * TAKER)
    assert broker.equity_usd() == broker.cash_usd


def test_reduce_only_is_capped_to_the_position_and_rejected_without_one() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, _ = broker.submit(order("market", False, 1.0, reduce_only=True), None)
    assert update.status == "rejected" and update.error == REDUCE_ONLY
    broker.submit(order("market", True, 1.0), None)  # long 1
    update, _ = broker.submit(order("market", True, 1.0, reduce_only=True), None)
    assert update.status == "rejected" and update.error == REDUCE_ONLY  # a buy grows a long
    update, fills = broker.submit(order("market", False, 3.0, reduce_only=True), None)
    assert update.status == "filled" and update.filled_sz == 1.0 and sum(f.sz for f in fills) == 1
    assert broker.positions == {}


def test_a_larger_sell_flips_a_long_into_a_short() -> None:
    broker = broker_with(book(BIDS, ASKS))
    broker.submit(order("market", True, 1.0), None)  # long 1 @ 100
    broker.on_book(book([(110.0, 5.0)], [(111.0, 5.0)], ts_ms=2_000))
    _, fills = broker.submit(order("market", False, 3.0, ts_ms=2_000), None)
    assert fills[0].closed_pnl_usd == pytest.approx(10.0)  # the 1 closed
    pos = broker.positions["BTC"]
    assert pos.side == "short" and pos.szi == -2.0 and pos.entry_px == 110.0
    assert pos.opened_ts_ms == 2_000
    assert pos.fees_usd == pytest.approx(330 * TAKER * 2 / 3)  # the opening part's share


# -- resting limits ---------------------------------------------------------------------------


def test_a_resting_buy_waits_for_its_queue_then_fills_as_maker() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, fills = broker.submit(order("limit", True, 1.0, limit_px=99.0), None)
    assert update.status == "resting" and fills == []
    assert list(broker.open_orders) == [update.cloid]
    assert broker.on_trades(trades((99.0, 3.0), ts_ms=500)) == []  # before it was placed
    assert broker.on_trades(trades((99.0, 3.0), (99.0, 1.5))) == []  # 4.5 of the 5 ahead
    [(update, fills)] = broker.on_trades(trades((99.0, 1.0)))  # 0.5 beyond the queue
    assert update.status == "resting" and update.filled_sz == 0.5
    assert [(f.px, f.sz, f.liquidity) for f in fills] == [(99.0, 0.5, "maker")]
    [(update, fills)] = broker.on_trades(trades((98.5, 0.1)))  # traded through: all the rest
    assert update.status == "filled" and update.filled_sz == 1.0 and update.avg_px == 99.0
    assert fills[0].px == 99.0 and fills[0].sz == 0.5
    assert broker.open_orders == {} and broker.positions["BTC"].szi == 1.0
    assert broker.fees_usd == pytest.approx(99 * 1 * MAKER)
    assert broker.cash_usd == pytest.approx(10_000 - 99 * MAKER)


def test_a_resting_limit_ignores_trades_on_the_far_side_of_its_price() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, _ = broker.submit(order("limit", False, 1.0, limit_px=102.0), None)
    assert update.status == "resting"
    assert broker.on_trades(trades((101.5, 10.0))) == []
    [(update, fills)] = broker.on_trades(trades((102.5, 0.1)))
    assert update.status == "filled" and fills[0].px == 102.0 and fills[0].fee_usd == 102 * MAKER


def test_a_marketable_limit_takes_then_rests_the_rest() -> None:
    broker = broker_with(book(BIDS, ASKS))
    update, fills = broker.submit(order("limit", True, 4.0, limit_px=100.0), None)
    assert update.status == "resting" and update.filled_sz == 1.0  # took the ask at 100
    assert [(f.px, f.liquidity) for f in fills] == [(100.0, "taker")]
    [(update, fills)] = broker.on_trades(trades((100.0, 2.0)))  # no bid at 100: no queue
    assert update.status == "resting" and update.filled_sz == 3.0 and fills[0].sz == 2.0
    cancel = broker.cancel(update.cloid, 3_000)
    assert cancel is not None and cancel.status == "canceled" and cancel.filled_sz == 3.0
    assert broker.cancel(update.cloid, 3_000) is None and broker.open_orders == {}


# -- triggers ---------------------------------------------------------------------------------


def protected(is_long: bool) -> tuple[PaperBroker, str, str]:
    """A position of 1 @ 100 with a stop 5 away and a target 10 away."""
    broker = broker_with(book([(100.0, 5.0)], [(100.0, 5.0)]))
    broker.submit(order("market", is_long, 1.0), None)
    sign = 1 if is_long else -1
    stop = order("stop_loss", not is_long, 1.0, trigger_px=100 - 5 * sign, reduce_only=True)
    target = order("take_profit", not is_long, 1.0, trigger_px=100 + 10 * sign, reduce_only=True)
    assert broker.submit(stop, None)[0].status == "waiting_trigger"
    assert broker.submit(target, None)[0].status == "waiting_trigger"
    pos = broker.positions["BTC"]
    assert (pos.stop_px, pos.target_px) == (stop.trigger_px, target.trigger_px)
    return broker, stop.cloid, target.cloid


@pytest.mark.parametrize(
    ("is_long", "quiet", "firing", "fires", "fill_px"),
    [
        # a long's stop sells at the bid once it is <= 95; its target once the bid is >= 110
        (True, ([(96.0, 1.0)], [(97.0, 1.0)]), ([(95.0, 1.0)], [(96.0, 1.0)]), "stop", 95.0),
        (True, ([(109.0, 1.0)], [(110.0, 1.0)]), ([(110.0, 1.0)], [(111.0, 1.0)]), "target", 110),
        # a short's stop buys at the ask once it is >= 105; its target once the ask is <= 90
        (False, ([(103.0, 1.0)], [(104.0, 1.0)]), ([(104.0, 1.0)], [(105.0, 1.0)]), "stop", 105),
        (False, ([(90.0, 1.0)], [(91.0, 1.0)]), ([(89.0, 1.0)], [(90.0, 1.0)]), "target", 90.0),
    ],
)
def test_a_trigger_fires_on_the_book_and_cancels_its_sibling(
    is_long: bool,
    quiet: tuple[list[tuple[float, float]], list[tuple[float, float]]],
    firing: tuple[list[tuple[float, float]], list[tuple[float, float]]],
    fires: str,
    fill_px: float,
) -> None:
    broker, stop, target = protected(is_long)
    assert broker.on_book(book(*quiet, ts_ms=2_000)) == []
    results = broker.on_book(book(*firing, ts_ms=3_000))
    fired, sibling = (stop, target) if fires == "stop" else (target, stop)
    (update, fills), (cancel, none) = results
    assert update.cloid == fired and update.status == "filled" and update.ts_ms == 3_000
    assert [(f.px, f.sz, f.is_buy, f.liquidity) for f in fills] == [
        (fill_px, 1.0, not is_long, "taker")
    ]
    assert cancel.cloid == sibling and cancel.status == "canceled" and none == []
    assert broker.positions == {} and broker.open_orders == {}
    pnl = (fill_px - 100) * (1 if is_long else -1)
    assert fills[0].closed_pnl_usd == pytest.approx(pnl)
    assert broker.cash_usd == pytest.approx(10_000 + pnl - (100 + fill_px) * TAKER)


def test_closing_by_hand_cancels_the_triggers_and_reports_them_once() -> None:
    broker, stop, target = protected(True)
    update, _ = broker.submit(order("market", False, 1.0), None)
    assert update.status == "filled" and broker.open_orders == {}
    assert {(u.cloid, u.status) for u in broker.drain_updates()} == {
        (stop, "canceled"),
        (target, "canceled"),
    }
    assert broker.drain_updates() == []


def test_canceling_a_trigger_clears_the_position_protection() -> None:
    broker, stop, target = protected(True)
    update = broker.cancel(stop, 2_000)
    assert update is not None and update.status == "canceled"
    pos = broker.positions["BTC"]
    assert pos.stop_px is None and pos.target_px == 110.0
    assert [u.cloid for u in broker.cancel_all(2_000, coin="ETH")] == []
    assert [u.cloid for u in broker.cancel_all(2_000)] == [target]
    assert broker.open_orders == {} and broker.positions["BTC"].target_px is None


def test_a_trigger_without_a_position_is_rejected() -> None:
    broker = broker_with(book(BIDS, ASKS))
    stop = order("stop_loss", False, 1.0, trigger_px=90.0, reduce_only=True)
    update, _ = broker.submit(stop, None)
    assert update.status == "rejected" and update.error == REDUCE_ONLY


# -- funding and the account ------------------------------------------------------------------


@pytest.mark.parametrize(("is_long", "amount_usd"), [(True, -1.25), (False, 1.25)])
def test_funding_longs_pay_a_positive_rate_and_shorts_receive(
    is_long: bool, amount_usd: float
) -> None:
    broker = PaperBroker(100_000.0, RULES, FeeSchedule(0.0, 0.0))
    broker.on_book(book([(50_000.0, 5.0)], [(50_000.0, 5.0)]))
    broker.submit(order("market", is_long, 2.0), None)
    payment = broker.on_funding("BTC", 0.0000125, 50_000.0, 3_600_000)
    assert payment is not None  # -szi x px x rate = -2 x 50000 x 0.0000125
    assert payment.amount_usd == pytest.approx(amount_usd) and payment.szi == (2 if is_long else -2)
    assert broker.cash_usd == pytest.approx(100_000 + amount_usd)
    assert broker.funding_usd == pytest.approx(amount_usd)
    assert broker.positions["BTC"].funding_usd == pytest.approx(amount_usd)
    assert broker.on_funding("ETH", 0.0000125, 3_000.0, 3_600_000) is None  # flat


def test_equity_is_cash_plus_unrealised_at_the_mark() -> None:
    broker = broker_with(book([(99_999.0, 1.0)], [(100_000.0, 1.0)]), equity_usd=1_000.0)
    broker.submit(order("market", True, 0.2), None)  # $20k long on $1k
    cash = 1_000 - 20_000 * TAKER  # 991
    broker.on_book(book([(100_900.0, 1.0)], [(101_100.0, 1.0)], ts_ms=2_000))
    assert broker.mark_px("BTC") == 101_000.0
    assert broker.unrealised_pnl_usd() == pytest.approx(0.2 * 1_000)
    assert broker.equity_usd() == pytest.approx(cash + 200)
    assert broker.exposure_usd() == pytest.approx(0.2 * 101_000)


def test_liquidation_price_of_a_single_leveraged_long() -> None:
    broker = broker_with(book([(99_999.0, 1.0)], [(100_000.0, 1.0)]), equity_usd=1_000.0)
    broker.submit(order("market", True, 0.2), None)
    cash = 1_000 - 20_000 * TAKER  # 991
    # cash + 0.2 (x - 100000) = maintenance 0.2 x / (2 x 50)  ->  x = (20000 - cash) / 0.198
    liq = broker.liquidation_px("BTC")
    assert liq == pytest.approx((20_000 - cash) / (0.2 - 0.2 / 100))  # 96005.05
    assert broker.liquidation_px("ETH") is None
