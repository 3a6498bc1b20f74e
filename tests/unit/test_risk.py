"""The risk engine on hand-computed cases: each refusing rule, sizing and trimming, exits,
stops and targets, slippage bounds, warnings and the protective trigger orders."""

from __future__ import annotations

import re

import pytest

from bistouryd.config import Config
from bistouryd.exchange.orders import CLOID_PATTERN, Position
from bistouryd.exchange.risk import (
    AccountState,
    Refusal,
    RiskLimits,
    RiskRule,
    RiskVerdict,
    check,
    daily_loss_breached,
    exposure_usd,
    protective_orders,
    remaining_budget_usd,
    warnings_for,
)
from bistouryd.exchange.rules import AssetRules, valid_px
from bistouryd.llm.decision import Action, TradeDecision

T0 = 1_753_200_000_000
BTC = AssetRules(name="BTC", asset=0, sz_decimals=5, max_leverage=40)
ETH = AssetRules(name="ETH", asset=1, sz_decimals=4, max_leverage=25)
BTC_PX = 50_000.0
ETH_PX = 3333.33  # tick 0.1 here: rounding shows
DEFAULTS = RiskLimits()  # budget 50% of equity, 10% of it per trade, 3x, 3 positions


def decide(
    action: Action,
    coin: str = "BTC",
    size: float | None = None,
    stop: float | None = 0.02,
    target: float | None = 0.05,
) -> TradeDecision:
    opening = action in ("open_long", "open_short")
    if size is None:
        size = 0.5 if opening or action == "reduce" else 0.0
    return TradeDecision(
        coin=coin,
        action=action,
        size_fraction=size,
        stop_loss_pct=stop if opening else None,
        take_profit_pct=target if opening else None,
        confidence=0.7,
        rationale="test",
    )


def pos(
    coin: str,
    szi: float,
    entry_px: float,
    stop_px: float | None = None,
    target_px: float | None = None,
    decision_id: str | None = None,
) -> Position:
    return Position(
        coin=coin,
        szi=szi,
        entry_px=entry_px,
        opened_ts_ms=T0 - 1,
        stop_px=stop_px,
        target_px=target_px,
        decision_id=decision_id,
    )


def account(
    equity: float = 10_000.0,
    *positions: Position,
    day_start: float | None = None,
    marks: dict[str, float] | None = None,
    paused: bool = False,
) -> AccountState:
    return AccountState(
        equity_usd=equity,
        day_start_equity_usd=equity if day_start is None else day_start,
        positions={p.coin: p for p in positions},
        marks={"BTC": BTC_PX, "ETH": ETH_PX} if marks is None else marks,
        paused=paused,
    )


def refused(verdict: RiskVerdict, rule: RiskRule) -> Refusal:
    assert verdict.refusal is not None and verdict.refusal.rule == rule, verdict
    assert verdict.orders == () and not verdict.approved
    assert verdict.stop_px is None and verdict.target_px is None
    assert verdict.refusal.message and verdict.refusal.hint
    return verdict.refusal


def run(
    decision: TradeDecision,
    acct: AccountState | None = None,
    limits: RiskLimits = DEFAULTS,
    rules: AssetRules = BTC,
) -> RiskVerdict:
    return check(decision, acct or account(), limits, rules, T0, decision_id="d1")


# --- hold, sizing -----------------------------------------------------------------------


def test_hold_is_approved_with_no_orders() -> None:
    verdict = run(decide("hold"))
    assert verdict.approved and verdict.orders == () and verdict.refusal is None


def test_open_sized_by_hand_and_trimmed_to_the_per_trade_cap() -> None:
    # equity 10,000 x 50% = 5,000 budget; 10% of it = 500 per trade; 0.5 x 5,000 = 2,500.
    verdict = run(decide("open_long", size=0.5))
    assert verdict.approved
    (order,) = verdict.orders
    assert order.sz == 0.01  # 500 / 50,000
    assert order.is_buy and not order.reduce_only
    assert (order.kind, order.purpose, order.coin) == ("market", "open", "BTC")
    assert order.decision_id == "d1" and order.ts_ms == T0
    assert verdict.warnings[0] == (
        "BTC: order trimmed from $2,500 to $500 by position_size_pct (10% of the $5,000 budget)"
    )


def test_size_fraction_applies_to_the_remaining_budget() -> None:
    # 4,000 of the 5,000 budget committed on ETH: 0.3 x 1,000 = 300, under the 500 cap.
    eth = pos("ETH", 2.0, 1900.0)
    verdict = run(
        decide("open_short", size=0.3), account(10_000, eth, marks={"BTC": BTC_PX, "ETH": 2000.0})
    )
    (order,) = verdict.orders
    assert order.sz == 0.006 and not order.is_buy
    assert not any("trimmed" in w for w in verdict.warnings)


def test_size_is_rounded_down_to_the_lot() -> None:
    # 500 / 30,001 = 0.0166661... -> 0.01666, never up to 0.01667 (which would be > $500).
    verdict = run(decide("open_long"), account(marks={"BTC": 30_001.0}))
    (order,) = verdict.orders
    assert order.sz == 0.01666
    assert order.sz * 30_001.0 <= 500


def test_max_position_usd_trims_below_the_percentage_cap() -> None:
    limits = RiskLimits(max_position_usd=200.0)
    verdict = run(decide("open_long"), limits=limits)
    assert verdict.orders[0].sz == 0.004
    assert (
        verdict.warnings[0] == "BTC: order trimmed from $2,500 to $200 by max_position_usd ($200)"
    )


def test_risk_limit_binds_the_room_the_fraction_applies_to() -> None:
    # The live risk limit (300) is below the 5,000 budget: 0.5 x 300 = 150.
    verdict = run(decide("open_long"), limits=RiskLimits(risk_limit_usd=300.0))
    assert verdict.orders[0].sz == 0.003


def test_leverage_trims() -> None:
    # Budget 500% of equity and 100% of it per trade: only 3x leverage binds.
    limits = RiskLimits(max_total_exposure_pct=500, position_size_pct=100)
    eth = pos("ETH", 8.7, 3333.33)  # ~29,000 committed: 1,000 leverage room
    verdict = run(decide("open_long", size=0.5), account(10_000, eth), limits)
    (order,) = verdict.orders
    assert order.sz * BTC_PX <= 30_000 - exposure_usd(account(10_000, eth))
    assert order.sz == 0.02000
    assert "by max_leverage (3x of $10,000 equity" in verdict.warnings[0]


def test_the_assets_own_max_leverage_binds_when_lower() -> None:
    limits = RiskLimits(max_total_exposure_pct=500, position_size_pct=100)
    low = AssetRules(name="BTC", asset=0, sz_decimals=5, max_leverage=2)
    verdict = run(decide("open_long", size=1.0), limits=limits, rules=low)
    assert verdict.orders[0].sz == 0.4  # 2 x 10,000 / 50,000
    assert "BTC's maximum leverage (2x" in verdict.warnings[0]


# --- each refusing rule -----------------------------------------------------------------


def test_paused_refuses_opens() -> None:
    refused(run(decide("open_long"), account(paused=True)), "paused")


def test_daily_loss_refuses_opens() -> None:
    refusal = refused(run(decide("open_long"), account(9_400.0, day_start=10_000.0)), "daily_loss")
    assert "$600" in refusal.message


def test_no_mark_refuses_opens() -> None:
    refused(run(decide("open_long"), account(marks={"ETH": ETH_PX})), "no_price")


def test_opposite_direction_on_an_open_coin_is_refused() -> None:
    long = pos("BTC", 0.01, 49_000.0)
    limits = RiskLimits(max_positions_per_coin=2)
    refusal = refused(run(decide("open_short"), account(10_000, long), limits), "per_coin")
    assert "long position is open" in refusal.message
    assert refusal.hint == "close the BTC long first"


def test_same_direction_add_needs_more_than_one_position_per_coin() -> None:
    long = pos("BTC", 0.01, 49_000.0)
    refused(run(decide("open_long"), account(10_000, long)), "per_coin")
    added = run(decide("open_long"), account(10_000, long), RiskLimits(max_positions_per_coin=2))
    assert added.approved and added.orders[0].is_buy


def test_max_positions_refuses_a_new_coin_but_not_an_add() -> None:
    sol, doge = pos("SOL", 1, 150.0), pos("DOGE", 100, 0.2)
    eth = pos("ETH", 0.1, 3000.0)
    full = account(10_000, sol, doge, eth)
    refusal = refused(run(decide("open_long"), full), "max_positions")
    assert refusal.hint == "close a position or raise trading.max_positions"
    assert refusal.message == "BTC: 3 positions open, the maximum is 3"
    add = run(
        decide("open_long", coin="ETH"), full, RiskLimits(max_positions_per_coin=2), rules=ETH
    )
    assert add.approved


def test_exposure_budget_used_up_is_refused() -> None:
    eth = pos("ETH", 1.4985, 3333.33)  # ~4,995 of the 5,000 budget
    refused(run(decide("open_long", size=1.0), account(10_000, eth)), "exposure")


def test_risk_limit_used_up_is_refused() -> None:
    eth = pos("ETH", 0.3, 3333.33)  # ~1,000 committed
    limits = RiskLimits(risk_limit_usd=1_005.0)
    refused(run(decide("open_long", size=1.0), account(10_000, eth), limits), "risk_limit")


def test_leverage_used_up_is_refused() -> None:
    limits = RiskLimits(max_total_exposure_pct=500, position_size_pct=100)
    eth = pos("ETH", 8.9985, 3333.33)  # ~29,995 of the 30,000 that 3x allows
    refused(run(decide("open_long", size=1.0), account(10_000, eth), limits), "leverage")


def test_per_trade_cap_below_the_minimum_order_is_refused() -> None:
    refused(run(decide("open_long"), limits=RiskLimits(position_size_pct=0.1)), "position_size")


def test_a_tiny_size_fraction_is_refused_as_min_order() -> None:
    refusal = refused(run(decide("open_long", size=0.001)), "min_order")  # $5 of $5,000
    assert "is $5, below the $10 minimum order" in refusal.message


def test_min_order_is_checked_again_after_rounding_to_the_lot() -> None:
    # $11 asked, but whole lots of a $6 coin: 1 lot = $6 < $10.
    xyz = AssetRules(name="XYZ", asset=2, sz_decimals=0, max_leverage=3)
    verdict = run(
        decide("open_long", coin="XYZ", size=0.0022), account(marks={"XYZ": 6.0}), rules=xyz
    )
    assert "worth $6, below the $10 minimum" in refused(verdict, "min_order").message


def test_rules_of_another_coin_are_a_bug() -> None:
    with pytest.raises(ValueError, match="ETH's trading rules"):
        run(decide("open_long"), rules=ETH)


# --- close and reduce -------------------------------------------------------------------


@pytest.mark.parametrize(("szi", "is_buy"), [(0.3, False), (-0.3, True)])
def test_close_is_a_reduce_only_market_order_for_the_whole_position(
    szi: float, is_buy: bool
) -> None:
    verdict = run(decide("close"), account(10_000, pos("BTC", szi, 48_000.0)))
    (order,) = verdict.orders
    assert (order.sz, order.is_buy, order.reduce_only) == (0.3, is_buy, True)
    assert (order.kind, order.purpose, order.decision_id) == ("market", "close", "d1")
    assert order.limit_px == (50_500.0 if is_buy else 49_500.0)


def test_close_and_reduce_are_allowed_while_paused_or_past_the_loss_limit() -> None:
    stressed = account(9_000.0, pos("BTC", 0.3, 48_000.0), day_start=10_000.0, paused=True)
    assert run(decide("close"), stressed).approved
    assert run(decide("reduce"), stressed).approved


def test_reduce_rounds_the_share_down_to_the_lot() -> None:
    verdict = run(decide("reduce", size=0.5), account(10_000, pos("BTC", -0.12345, 48_000.0)))
    (order,) = verdict.orders
    assert (order.sz, order.is_buy, order.reduce_only, order.purpose) == (
        0.06172,
        True,
        True,
        "reduce",
    )


def test_reduce_below_the_minimum_order_value_is_allowed() -> None:
    verdict = run(decide("reduce", size=0.5), account(10_000, pos("BTC", 0.0001, 48_000.0)))
    assert verdict.orders[0].sz == 0.00005  # $2.50, reduce-only


def test_reduce_to_zero_lots_is_refused() -> None:
    verdict = run(decide("reduce", size=0.5), account(10_000, pos("BTC", 0.00001, 48_000.0)))
    refused(verdict, "min_order")


@pytest.mark.parametrize("action", ["close", "reduce"])
def test_exits_when_flat_are_refused(action: Action) -> None:
    refused(run(decide(action)), "no_position")


def test_exits_without_a_mark_are_refused() -> None:
    flat_marks = account(10_000, pos("BTC", 0.3, 48_000.0), marks={})
    refused(run(decide("close"), flat_marks), "no_price")


# --- prices -----------------------------------------------------------------------------


def test_stop_and_target_for_a_long_and_a_short() -> None:
    long = run(decide("open_long", stop=0.02, target=0.05))
    assert (long.stop_px, long.target_px) == (49_000.0, 52_500.0)
    short = run(decide("open_short", stop=0.02, target=0.05))
    assert (short.stop_px, short.target_px) == (51_000.0, 47_500.0)


def test_stop_and_target_round_toward_the_mark() -> None:
    # 3333.33 x 0.98 = 3266.66 -> 3266.7; x 1.05 = 3499.99 -> 3499.9 (tick 0.1).
    long = run(decide("open_long", coin="ETH"), rules=ETH)
    assert (long.stop_px, long.target_px) == (3266.7, 3499.9)
    short = run(decide("open_short", coin="ETH"), rules=ETH)
    assert (short.stop_px, short.target_px) == (3399.9, 3166.7)
    for px in (long.stop_px, long.target_px, short.stop_px, short.target_px):
        assert px is not None and valid_px(px, ETH.sz_decimals)


def test_default_target_comes_from_the_limits_in_percent() -> None:
    verdict = run(decide("open_long", target=None), limits=RiskLimits(take_profit_pct=4.0))
    assert verdict.target_px == 52_000.0


def test_an_impossible_short_target_is_left_out_with_a_warning() -> None:
    verdict = run(decide("open_short", target=1.5))
    assert verdict.approved and verdict.target_px is None
    assert any("impossible for a short" in w for w in verdict.warnings)


@pytest.mark.parametrize("action", ["open_long", "open_short"])
def test_market_limit_px_stays_within_the_slippage_bound(action: Action) -> None:
    (order,) = run(decide(action, coin="ETH"), rules=ETH).orders
    assert order.limit_px is not None and valid_px(order.limit_px, ETH.sz_decimals)
    if order.is_buy:
        assert ETH_PX < order.limit_px <= ETH_PX * 1.01
        assert order.limit_px == 3366.6
    else:
        assert ETH_PX * 0.99 <= order.limit_px < ETH_PX
        assert order.limit_px == 3300.0


# --- warnings, helpers ------------------------------------------------------------------


def test_position_warning_counts_the_new_position() -> None:
    limits = RiskLimits(max_positions=5, max_total_exposure_pct=1000, position_size_pct=1)
    held = [pos(c, 1, 10.0) for c in ("SOL", "DOGE", "ETH")]
    acct = account(10_000, *held, marks={"BTC": BTC_PX, "SOL": 10, "DOGE": 10, "ETH": 10})
    assert warnings_for(acct, limits) == ()  # 3/5 = 60%
    verdict = run(decide("open_long", size=0.01), acct, limits)  # not trimmed: no other warning
    assert verdict.warnings == (
        "Approaching position limit (4/5 max positions) → close a position or raise "
        "trading.max_positions",
    )


def test_exposure_warning_from_80_percent_of_the_budget() -> None:
    eth = pos("ETH", 1.3, 3000.0)  # 3,900 of 5,000: 78%
    marks = {"BTC": BTC_PX, "ETH": 3000.0}
    assert warnings_for(account(10_000, eth, marks=marks), DEFAULTS) == ()
    verdict = run(decide("open_long", size=0.1), account(10_000, eth, marks=marks))
    assert verdict.orders[0].sz == 0.0022  # 0.1 x 1,100 = 110 -> 4,010 of 5,000: 80.2%
    assert verdict.warnings[0].startswith("Approaching exposure limit ($4,010 of the $5,000 budget")


def test_daily_loss_warning_from_80_percent_of_the_limit() -> None:
    assert warnings_for(account(9_610.0, day_start=10_000.0), DEFAULTS) == ()
    (warning,) = warnings_for(account(9_600.0, day_start=10_000.0), DEFAULTS)
    assert warning.startswith("Approaching daily loss limit (today's loss $400 is 80% of the $500")
    verdict = run(decide("hold"), account(9_600.0, day_start=10_000.0))
    assert verdict.warnings == (warning,)


def test_daily_loss_breached_at_the_limit_exactly() -> None:
    assert daily_loss_breached(account(9_500.0, day_start=10_000.0), DEFAULTS)
    assert not daily_loss_breached(account(9_500.01, day_start=10_000.0), DEFAULTS)
    assert not daily_loss_breached(account(11_000.0, day_start=10_000.0), DEFAULTS)


def test_remaining_budget() -> None:
    eth = pos("ETH", 1.0, 3000.0)
    marks = {"ETH": 3000.0}
    assert remaining_budget_usd(account(10_000, eth, marks=marks), DEFAULTS) == 2_000.0
    with_limit = RiskLimits(risk_limit_usd=3_500.0)
    assert remaining_budget_usd(account(10_000, eth, marks=marks), with_limit) == 500.0
    assert remaining_budget_usd(account(5_000, eth, marks=marks), DEFAULTS) == 0.0
    assert remaining_budget_usd(account(-100.0), DEFAULTS) == 0.0


def test_exposure_uses_the_mark_or_else_the_entry() -> None:
    acct = account(10_000, pos("ETH", -2.0, 3000.0), pos("SOL", 10, 150.0), marks={"ETH": 3100.0})
    assert exposure_usd(acct) == 2 * 3100 + 10 * 150


# --- protective orders ------------------------------------------------------------------


def test_protective_orders_for_a_long() -> None:
    long = pos("ETH", 1.5, 3333.33, stop_px=3266.66, target_px=3499.99)
    stop, target = protective_orders(long, ETH, T0)
    assert (stop.kind, stop.purpose, stop.trigger_px) == ("stop_loss", "stop_loss", 3266.7)
    assert (target.kind, target.purpose, target.trigger_px) == (
        "take_profit",
        "take_profit",
        3499.9,
    )
    for order in (stop, target):
        assert (order.sz, order.is_buy, order.reduce_only, order.coin) == (1.5, False, True, "ETH")
        assert order.ts_ms == T0


def test_protective_orders_for_a_short() -> None:
    short = pos("BTC", -0.25, 50_000.0, stop_px=51_000.0, target_px=47_500.0, decision_id="d7")
    stop, target = protective_orders(short, BTC, T0)
    assert (stop.kind, stop.trigger_px, target.kind, target.trigger_px) == (
        "stop_loss",
        51_000.0,
        "take_profit",
        47_500.0,
    )
    for order in (stop, target):
        assert (order.sz, order.is_buy, order.reduce_only, order.decision_id) == (
            0.25,
            True,
            True,
            "d7",
        )
    assert stop.cloid != target.cloid


def test_protective_orders_only_for_what_is_set() -> None:
    assert protective_orders(pos("BTC", 0.1, 50_000.0), BTC, T0) == ()
    (only,) = protective_orders(pos("BTC", 0.1, 50_000.0, stop_px=49_000.0), BTC, T0)
    assert only.kind == "stop_loss"


def test_orders_carry_fresh_cloids() -> None:
    first, second = run(decide("open_long")), run(decide("open_long"))
    assert first.orders[0].cloid != second.orders[0].cloid
    assert re.match(CLOID_PATTERN, first.orders[0].cloid)


# --- configuration ----------------------------------------------------------------------


def test_limits_from_config() -> None:
    config = Config()
    limits = RiskLimits.from_config(config.trading, config.risk, risk_limit_usd=1_000.0)
    trading, risk = config.trading, config.risk
    assert limits.position_size_pct == trading.position_size_pct
    assert limits.max_positions == trading.max_positions
    assert limits.stop_loss_pct == trading.stop_loss_pct
    assert limits.take_profit_pct == trading.take_profit_pct
    assert limits.max_total_exposure_pct == risk.max_total_exposure_pct
    assert limits.max_leverage == risk.max_leverage
    assert limits.daily_loss_limit_pct == risk.daily_loss_limit_pct
    assert limits.max_position_usd == risk.max_position_usd
    assert limits.max_positions_per_coin == risk.max_positions_per_coin
    assert limits.min_order_usd == risk.min_order_usd
    assert limits.risk_limit_usd == 1_000.0
    custom = Config.model_validate(
        {
            "trading": {"position_size_pct": 20, "max_positions": 7},
            "risk": {"max_position_usd": 900},
        }
    )
    mapped = RiskLimits.from_config(custom.trading, custom.risk)
    assert (mapped.position_size_pct, mapped.max_positions, mapped.max_position_usd) == (20, 7, 900)
    assert mapped.risk_limit_usd is None


def test_an_order_worth_exactly_the_minimum_is_approved() -> None:
    verdict = run(decide("open_long", size=0.002))  # 0.002 x 5,000 = $10 = 0.0002 BTC
    assert verdict.approved and verdict.orders[0].sz == 0.0002


def test_an_account_not_read_yet_has_not_breached_the_daily_loss() -> None:
    unread = AccountState(equity_usd=0.0, day_start_equity_usd=0.0, positions={}, marks={})
    assert not daily_loss_breached(unread, RiskLimits())
