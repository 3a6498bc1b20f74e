"""``Trader``: when a coin is due for a decision (its data clock, the interval, material
changes), what the prompt is built from, and the record of the answer. The chain here is
rules-only: no provider, no network."""

from __future__ import annotations

import asyncio

import pytest

from bistouryd.llm.chain import DecisionChain
from bistouryd.llm.limits import DailyCostCap
from bistouryd.llm.record import DecisionRecord
from bistouryd.llm.trader import Trader, TraderSettings
from bistouryd.portfolio import PortfolioSnapshot, PositionView
from bistouryd.strategies.base import Direction, Signal

T0 = 1_753_200_000_000
S = 1000


def sig(
    ts_ms: int,
    direction: Direction = "long",
    strength: float = 0.6,
    strategy: str = "cross_signal",
    coin: str = "BTC",
) -> Signal:
    score = strength if direction == "long" else -strength if direction == "short" else 0.0
    return Signal(
        strategy=strategy,
        coin=coin,
        ts_ms=ts_ms,
        direction=direction,
        strength=strength,
        confidence=0.8,
        narrative=f"combined score {score:+.2f}",
        features={"score": score, "regime_code": 1.0},
    )


def account(position: PositionView | None = None) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_ms=T0,
        equity_usd=10_000,
        pnl_today_usd=-12.5,
        risk_budget_usd=5_000,
        max_positions_left=2,
        positions={"BTC": position} if position else {},
    )


def trader(interval_s: float = 60, min_change: float = 0.15) -> Trader:
    return Trader(
        DecisionChain([], DailyCostCap(None)),
        account(),
        TraderSettings(interval_s=interval_s, min_strength_change=min_change),
    )


def decide(t: Trader, coin: str = "BTC") -> DecisionRecord:
    record, _ = asyncio.run(t.decide(coin))
    return record


def test_nothing_is_due_before_a_signal() -> None:
    t = trader()
    assert not t.due("BTC") and t.changes("BTC") == []


def test_the_first_signal_makes_the_coin_due_and_the_record_is_complete() -> None:
    t = trader()
    first = sig(T0)
    t.observe(first)
    assert t.due("BTC") and t.changes("BTC") == ["first decision"]
    record = decide(t)
    assert (record.coin, record.ts_ms, record.provider) == ("BTC", T0, "rules")
    assert record.decision.action == "open_long"  # score +0.6 at confidence 0.8
    assert record.signal_ids == [first.id]
    assert "Account: P&L today -12.50 USD" in record.prompt_user
    assert "Risk budget left: 5000.00 USD, 2 more positions allowed" in record.prompt_user
    assert not t.due("BTC")  # just decided, nothing changed


def test_at_most_once_per_interval_of_data_time() -> None:
    t = trader(interval_s=60)
    t.observe(sig(T0))
    decide(t)
    t.observe(sig(T0 + 59 * S, direction="short"))
    assert not t.due("BTC")  # changed, but only 59 s of data time passed
    assert t.changes("BTC") == ["cross_signal turned short"]
    t.observe(sig(T0 + 60 * S, direction="short"))
    assert t.due("BTC")


def test_without_a_material_change_the_interval_alone_asks_nothing() -> None:
    t = trader(min_change=0.15)
    t.observe(sig(T0, strength=0.6))
    decide(t)
    t.observe(sig(T0 + 600 * S, strength=0.7))  # moved 0.10 < 0.15
    assert not t.due("BTC") and t.changes("BTC") == []
    t.observe(sig(T0 + 601 * S, strength=0.75))  # 0.15 from what was asked
    assert t.changes("BTC") == ["cross_signal strength 0.60 -> 0.75"]
    assert t.due("BTC")


def test_a_new_strategy_or_a_position_change_is_material() -> None:
    t = trader()
    t.observe(sig(T0))
    decide(t)
    t.observe(sig(T0 + 120 * S, strategy="order_flow", direction="neutral", strength=0.1))
    assert t.changes("BTC") == ["order_flow appeared"]
    decide(t)
    t.observe(sig(T0 + 240 * S))
    assert not t.due("BTC")
    t.portfolio = account(PositionView(side="long", size_sz=0.01, entry_px=64_000))
    assert t.changes("BTC") == ["position changed"] and t.due("BTC")
    record = decide(t)
    assert "Position: long 0.01 BTC, entry 64000" in record.prompt_user
    assert record.decision.action == "hold"  # long already, the view is still long


def test_an_older_signal_does_not_replace_a_newer_one_or_move_the_clock_back() -> None:
    t = trader()
    newer = sig(T0 + 10 * S, direction="short")
    t.observe(newer)
    t.observe(sig(T0, direction="long"))  # late, e.g. a backfill
    record = decide(t)
    assert record.ts_ms == T0 + 10 * S and record.signal_ids == [newer.id]
    assert record.decision.action == "open_short"


def test_coins_are_independent() -> None:
    t = trader()
    t.observe(sig(T0, coin="BTC"))
    t.observe(sig(T0, coin="ETH", direction="short"))
    assert decide(t, "BTC").decision.action == "open_long"
    assert t.due("ETH") and not t.due("BTC")
    eth = decide(t, "ETH")
    assert eth.coin == "ETH" and eth.decision.coin == "ETH" and "Coin: ETH" in eth.prompt_user


def test_recent_decisions_are_shown_to_the_next_prompt() -> None:
    t = trader()
    t.observe(sig(T0))
    decide(t)
    t.observe(sig(T0 + 120 * S, direction="short"))
    second = decide(t)
    assert "open_long" in second.prompt_user.split("Your recent decisions")[1]


def test_a_decision_already_asked_does_not_re_trigger_while_in_flight() -> None:
    """The state is marked before the model is asked, so signals arriving during a slow
    call are compared with what was asked, not with the previous decision."""
    t = trader(interval_s=1)
    t.observe(sig(T0))

    async def scenario() -> tuple[bool, bool]:
        call = asyncio.ensure_future(t.decide("BTC"))
        await asyncio.sleep(0)  # the call has started
        t.observe(sig(T0 + 5 * S))  # same view
        during = t.due("BTC")
        await call
        t.observe(sig(T0 + 6 * S, direction="short"))
        return during, t.due("BTC")

    during, after = asyncio.run(scenario())
    assert (during, after) == (False, True)


def test_assumed_portfolio_is_flat_with_the_configured_budget() -> None:
    p = PortfolioSnapshot.assumed_flat(T0, 10_000, 50, 3)
    assert p.assumed and p.position("BTC").side == "flat"
    assert (p.risk_budget_usd, p.max_positions_left) == (5_000, 3)
    with pytest.raises(ValueError):
        PortfolioSnapshot.assumed_flat(T0, -1, 50, 3)


def test_the_first_decision_waits_for_every_expected_strategy_or_one_interval() -> None:
    t = Trader(
        DecisionChain([], DailyCostCap(None)),
        account(),
        TraderSettings(interval_s=60, expected=frozenset({"cross_signal", "order_flow"})),
    )
    t.observe(sig(T0, strategy="order_flow", direction="neutral", strength=0.1))
    assert not t.due("BTC")  # cross_signal has not spoken yet
    t.observe(sig(T0 + 5 * S))
    assert t.due("BTC")

    late = Trader(t.chain, account(), t.settings)
    late.observe(sig(T0, strategy="order_flow", direction="neutral", strength=0.1))
    late.observe(sig(T0 + 59 * S, strategy="order_flow", direction="neutral", strength=0.1))
    assert not late.due("BTC")
    late.observe(sig(T0 + 60 * S, strategy="order_flow", direction="neutral", strength=0.1))
    assert late.due("BTC")  # one interval after the first signal, whoever is missing
