"""The trading tables: orders, updates, fills, funding, refusals and account snapshots are
written by the recorder's batch writer and read back as what followed a decision, the
trades with their rationale, the newest account, and hit rate by confidence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bistouryd.exchange.orders import Fill, FundingPayment, OrderRequest, OrderUpdate, RiskRefusal
from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.record import DecisionRecord
from bistouryd.portfolio import PortfolioSnapshot, PositionView
from bistouryd.storage.db import open_db
from bistouryd.storage.decisions import decision_stats
from bistouryd.storage.marketdata import write_batch
from bistouryd.storage.trading import (
    decision_outcome,
    fills_with_rationales,
    latest_portfolio,
    query_fills,
)
from tests.unit.test_storage_decisions import record

T = 1_753_200_000_000


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "t.duckdb")
    yield connection
    connection.close()


def opening(confidence: float, ts_ms: int) -> DecisionRecord:
    decision = TradeDecision(
        coin="BTC",
        action="open_long",
        size_fraction=0.5,
        stop_loss_pct=0.01,
        confidence=confidence,
        rationale=f"Open at confidence {confidence}.",
    )
    return record("BTC", ts_ms, decision)


def fill(decision_id: str, purpose: str, px: float, pnl: float = 0.0, **kw: object) -> Fill:
    return Fill(
        ts_ms=T + len(purpose),
        coin="BTC",
        cloid="0x" + "1" * 32,
        is_buy=purpose == "open",
        px=px,
        sz=0.01,
        fee_usd=px * 0.01 * 0.00045,
        liquidity="taker",
        closed_pnl_usd=pnl,
        purpose=purpose,  # type: ignore[arg-type]
        decision_id=decision_id,
        **kw,  # type: ignore[arg-type]
    )


def round_trip(d: DecisionRecord, exit_px: float) -> list[Fill]:
    """Open 0.01 at 100,000 by ``d``; its stop closes it at ``exit_px``."""
    return [
        fill(d.id, "open", 100_000),
        fill(d.id, "stop_loss", exit_px, (exit_px - 100_000) * 0.01, opened_by=d.id),
    ]


def test_what_followed_a_decision_its_orders_fills_and_net_pnl(
    con: duckdb.DuckDBPyConnection,
) -> None:
    d = opening(0.8, T)
    order = OrderRequest(
        ts_ms=T, coin="BTC", is_buy=True, sz=0.01, kind="market", limit_px=101_000,
        purpose="open", decision_id=d.id,
    )  # fmt: skip
    update = OrderUpdate(
        cloid=order.cloid, ts_ms=T, coin="BTC", status="filled", filled_sz=0.01, avg_px=100_000
    )
    fills = round_trip(d, 101_000)
    write_batch(con, [d, order, update, *fills])

    out = decision_outcome(con, d.id)
    assert [o.cloid for o in out.orders] == [order.cloid]
    assert [u.status for u in out.updates] == ["filled"]
    assert {f.purpose for f in out.fills} == {"open", "stop_loss"}
    assert [f.purpose for f in out.closing_fills] == ["stop_loss"]
    fees = (100_000 + 101_000) * 0.01 * 0.00045
    assert out.closed_pnl_usd == pytest.approx(10.0)
    assert out.fees_usd == pytest.approx(fees)  # the stop's fee counted once
    assert out.realised_pnl_usd == pytest.approx(10.0 - fees)
    assert out.open_sz == 0

    nothing = decision_outcome(con, "f" * 32)
    assert (nothing.orders, nothing.fills, nothing.realised_pnl_usd) == ([], [], 0.0)


def test_a_refusal_is_what_followed(con: duckdb.DuckDBPyConnection) -> None:
    d = opening(0.6, T)
    refusal = RiskRefusal(
        ts_ms=T, coin="BTC", decision_id=d.id, action="open_long", rule="max_positions",
        message="3 positions open", hint="close one",
    )  # fmt: skip
    write_batch(con, [d, refusal])
    out = decision_outcome(con, d.id)
    assert [r.rule for r in out.refusals] == ["max_positions"] and out.orders == []


def test_trades_come_with_the_rationale_behind_them(con: duckdb.DuckDBPyConnection) -> None:
    d = opening(0.7, T)
    write_batch(con, [d, *round_trip(d, 99_000)])
    fills, rationales = fills_with_rationales(con, limit=10)
    assert [f.purpose for f in fills] == ["open", "stop_loss"]  # oldest first
    assert rationales == {d.id: "Open at confidence 0.7."}
    assert [f.coin for f in query_fills(con, limit=1)] == ["BTC"]
    assert fills_with_rationales(con, limit=10, coin="ETH") == ([], {})


def test_the_newest_account_snapshot(con: duckdb.DuckDBPyConnection) -> None:
    assert latest_portfolio(con) is None
    older = PortfolioSnapshot(
        ts_ms=T, equity_usd=10_000, risk_budget_usd=5_000, max_positions_left=3
    )
    newer = PortfolioSnapshot(
        ts_ms=T + 1000,
        equity_usd=10_010,
        risk_budget_usd=4_000,
        max_positions_left=2,
        positions={"BTC": PositionView(side="long", size_sz=0.01, entry_px=100_000)},
        fees_usd=0.9,
        session_return=0.001,
        buy_and_hold={"BTC": 0.012},
    )
    write_batch(con, [newer, older])
    assert latest_portfolio(con) == newer


def test_funding_payments_are_stored_once(con: duckdb.DuckDBPyConnection) -> None:
    pay = FundingPayment(ts_ms=T, coin="BTC", szi=2, rate=0.0000125, px=50_000, amount_usd=-1.25)
    write_batch(con, [pay])
    result = write_batch(con, [pay])
    assert result.written.get("funding_payments", 0) == 0
    assert con.execute("SELECT amount_usd FROM funding_payments").fetchall() == [(-1.25,)]


def test_hit_rate_and_pnl_by_confidence_of_closed_positions(
    con: duckdb.DuckDBPyConnection,
) -> None:
    won, lost, sure = opening(0.6, T), opening(0.7, T + 1), opening(0.9, T + 2)
    still_open = opening(0.9, T + 3)
    items: list[object] = [won, lost, sure, still_open]
    items += round_trip(won, 101_000) + round_trip(lost, 99_000) + round_trip(sure, 102_000)
    items.append(fill(still_open.id, "open", 100_000))
    write_batch(con, items)  # type: ignore[arg-type]

    stats = decision_stats(con)
    mid, high = stats.outcomes["0.5-0.75"], stats.outcomes["0.75-1"]
    assert (mid.closed_n, mid.hits, high.closed_n, high.hits) == (2, 1, 1, 1)
    fee = 0.45 + 0.4545  # entry at 100,000 and exit at 101,000, 0.01 each
    assert mid.avg_pnl_usd == pytest.approx(((10 - fee) + (-10 - (0.45 + 0.4455))) / 2)
    assert stats.calibrated is True  # 50% then 100%
    assert stats.realised_pnl_usd == pytest.approx(
        sum(o.avg_pnl_usd * o.closed_n for o in stats.outcomes.values())
    )
    assert "0-0.25" not in stats.outcomes
