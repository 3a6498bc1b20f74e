"""Writing and reading what the positions agent did: ``orders``, ``order_updates``,
``fills``, ``funding_payments``, ``risk_refusals`` and ``portfolio`` (the equity curve).

Each table's columns are the fields of the bus payload of the same name, so a row is
written straight from the model and read back into it. Linking is by ids: an order and
its fills carry the ``decision_id`` that caused them, a fill that reduces a position the
``opened_by`` decision that opened it; ``decision_outcome`` gathers both for
``bistoury decisions show``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from bistouryd.exchange.orders import Fill, FundingPayment, OrderRequest, OrderUpdate, RiskRefusal
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.storage.db import newest_rows
from bistouryd.storage.marketdata import TableSpec, WriteResult, _columns, _insert
from bistouryd.storage.reports import DecisionOutcome

M = TypeVar("M", bound=BaseModel)

_S, _F, _I, _B = pa.string(), pa.float64(), pa.int64(), pa.bool_()


def _spec(
    name: str, cols: list[tuple[str, pa.DataType]], key: tuple[str, ...], *valid: str
) -> TableSpec:
    return TableSpec(
        name=name,
        schema=pa.schema(cols),
        key=key,
        time_column="ts_ms",
        conflict="ignore",
        valid_sql=" AND ".join(("ts_ms > 0", *valid)),
    )


ORDERS = _spec(
    "orders",
    [
        ("cloid", _S),
        ("ts_ms", _I),
        ("coin", _S),
        ("is_buy", _B),
        ("sz", _F),
        ("kind", _S),
        ("limit_px", _F),
        ("trigger_px", _F),
        ("reduce_only", _B),
        ("purpose", _S),
        ("decision_id", _S),
        ("mode", _S),
    ],
    ("cloid",),
    "length(cloid) = 34",
    "sz > 0",
)
ORDER_UPDATES = _spec(
    "order_updates",
    [
        ("cloid", _S),
        ("ts_ms", _I),
        ("coin", _S),
        ("status", _S),
        ("filled_sz", _F),
        ("avg_px", _F),
        ("oid", _I),
        ("error", _S),
    ],
    ("cloid", "status", "ts_ms"),
    "filled_sz >= 0",
)
FILLS = _spec(
    "fills",
    [
        ("id", _S),
        ("ts_ms", _I),
        ("coin", _S),
        ("cloid", _S),
        ("is_buy", _B),
        ("px", _F),
        ("sz", _F),
        ("fee_usd", _F),
        ("liquidity", _S),
        ("closed_pnl_usd", _F),
        ("purpose", _S),
        ("decision_id", _S),
        ("opened_by", _S),
        ("mode", _S),
    ],
    ("id",),
    "px > 0",
    "sz > 0",
)
FUNDING_PAYMENTS = _spec(
    "funding_payments",
    [
        ("ts_ms", _I),
        ("coin", _S),
        ("szi", _F),
        ("rate", _F),
        ("px", _F),
        ("amount_usd", _F),
        ("mode", _S),
    ],
    ("mode", "coin", "ts_ms"),
    "px > 0",
)
RISK_REFUSALS = _spec(
    "risk_refusals",
    [
        ("id", _S),
        ("ts_ms", _I),
        ("coin", _S),
        ("decision_id", _S),
        ("action", _S),
        ("rule", _S),
        ("message", _S),
        ("hint", _S),
        ("mode", _S),
    ],
    ("id",),
)
PORTFOLIO = _spec(
    "portfolio",
    [
        ("ts_ms", _I),
        ("mode", _S),
        ("equity_usd", _F),
        ("cash_usd", _F),
        ("exposure_usd", _F),
        ("unrealised_pnl_usd", _F),
        ("realised_pnl_usd", _F),
        ("fees_usd", _F),
        ("funding_usd", _F),
        ("pnl_today_usd", _F),
        ("risk_budget_usd", _F),
        ("max_positions_left", _I),
        ("trading_paused", _B),
        ("positions", _S),
        ("session_return", _F),
        ("buy_and_hold", _S),
    ],
    ("mode", "ts_ms"),
)

TRADING_TABLES: dict[type, TableSpec] = {
    OrderRequest: ORDERS,
    OrderUpdate: ORDER_UPDATES,
    Fill: FILLS,
    FundingPayment: FUNDING_PAYMENTS,
    RiskRefusal: RISK_REFUSALS,
    PortfolioSnapshot: PORTFOLIO,
}
STORABLE = tuple(TRADING_TABLES)


def insert_trading(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, items: Sequence[Any], result: WriteResult
) -> None:
    """Inside the caller's transaction; a row already stored (same key) is skipped."""
    given: dict[str, list[Any]] = {}
    if spec is PORTFOLIO:
        given["positions"] = [
            json.dumps({c: p.model_dump(mode="json") for c, p in s.positions.items()})
            for s in items
        ]
        given["buy_and_hold"] = [json.dumps(s.buy_and_hold) for s in items]
    _insert(con, spec, _columns(items, spec, **given), result)


# ---- reading ------------------------------------------------------------------------------


def query_fills(
    con: duckdb.DuckDBPyConnection,
    *,
    limit: int,
    coin: str | None = None,
    since_ms: int | None = None,
    mode: str | None = None,
) -> list[Fill]:
    """The newest ``limit`` fills (oldest first)."""
    rows = newest_rows(
        con,
        "fills",
        FILLS.columns,
        limit=limit,
        since_ms=since_ms,
        equal={"coin": coin, "mode": mode},
    )
    return [Fill.model_validate(dict(zip(FILLS.columns, r, strict=True))) for r in rows]


def fills_with_rationales(
    con: duckdb.DuckDBPyConnection,
    *,
    limit: int,
    coin: str | None = None,
    since_ms: int | None = None,
) -> tuple[list[Fill], dict[str, str]]:
    """The newest fills and, for each decision they came from (or whose position they
    closed), that decision's rationale: ``bistoury trades`` shows why each trade happened."""
    fills = query_fills(con, limit=limit, coin=coin, since_ms=since_ms)
    ids = sorted({i for f in fills for i in (f.decision_id, f.opened_by) if i})
    if not ids:
        return fills, {}
    rows = con.execute(
        f"SELECT id, rationale FROM decisions WHERE id IN ({', '.join('?' for _ in ids)})", ids
    ).fetchall()
    return fills, {str(i): str(r) for i, r in rows}


def _models(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, model: type[M], where: str, arg: object
) -> list[M]:
    rows = con.execute(
        f"SELECT {', '.join(spec.columns)} FROM {spec.name} WHERE {where} ORDER BY ts_ms", [arg]
    ).fetchall()
    return [model.model_validate(dict(zip(spec.columns, r, strict=True))) for r in rows]


def decision_outcome(con: duckdb.DuckDBPyConnection, decision_id: str) -> DecisionOutcome:
    """Everything that followed decision ``decision_id`` (empty lists: nothing did)."""
    fills = _models(con, FILLS, Fill, "decision_id = ?", decision_id)
    closing = _models(con, FILLS, Fill, "opened_by = ?", decision_id)
    entered = sum(f.sz for f in fills if f.purpose == "open")
    own = {f.id for f in fills}
    fees = sum(f.fee_usd for f in fills) + sum(f.fee_usd for f in closing if f.id not in own)
    closed_pnl = sum(f.closed_pnl_usd for f in closing)
    return DecisionOutcome(
        open_sz=max(0.0, entered - sum(f.sz for f in closing)),
        closed_pnl_usd=closed_pnl,
        fees_usd=fees,
        realised_pnl_usd=closed_pnl - fees,
        decision_id=decision_id,
        orders=_models(con, ORDERS, OrderRequest, "decision_id = ?", decision_id),
        updates=_models(
            con,
            ORDER_UPDATES,
            OrderUpdate,
            "cloid IN (SELECT cloid FROM orders WHERE decision_id = ?)",
            decision_id,
        ),
        fills=fills,
        closing_fills=closing,
        refusals=_models(con, RISK_REFUSALS, RiskRefusal, "decision_id = ?", decision_id),
    )


def latest_portfolio(con: duckdb.DuckDBPyConnection) -> PortfolioSnapshot | None:
    """The newest account snapshot (paper or live), if any."""
    row = con.execute(
        f"SELECT {', '.join(PORTFOLIO.columns)} FROM portfolio ORDER BY ts_ms DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    values = dict(zip(PORTFOLIO.columns, row, strict=True))
    values["positions"] = json.loads(values["positions"])
    values["buy_and_hold"] = json.loads(values["buy_and_hold"])
    return PortfolioSnapshot.model_validate(values)
