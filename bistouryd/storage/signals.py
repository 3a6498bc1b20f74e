"""Writing and reading the ``signals`` table (the recorder stores every signal)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from bistouryd.storage.db import newest_rows
from bistouryd.storage.marketdata import TableSpec, WriteResult, _columns, _insert
from bistouryd.strategies.base import Signal

SIGNALS = TableSpec(
    name="signals",
    schema=pa.schema(
        [
            ("id", pa.string()),
            ("strategy", pa.string()),
            ("coin", pa.string()),
            ("ts_ms", pa.int64()),
            ("direction", pa.string()),
            ("strength", pa.float64()),
            ("confidence", pa.float64()),
            ("narrative", pa.string()),
            ("features", pa.string()),
        ]
    ),
    key=("id",),
    time_column="ts_ms",
    conflict="ignore",
    valid_sql=" AND ".join(
        (
            "length(strategy) > 0",
            "length(coin) > 0",
            "ts_ms > 0",
            "direction IN ('long', 'short', 'neutral')",
            "strength BETWEEN 0 AND 1",
            "confidence BETWEEN 0 AND 1",
            "length(narrative) > 0",
        )
    ),
)


def insert_signals(
    con: duckdb.DuckDBPyConnection, signals: Sequence[Signal], result: WriteResult
) -> None:
    """Inside the caller's transaction; a signal already stored (same id) is skipped."""
    features = [json.dumps(s.features, separators=(",", ":")) for s in signals]
    _insert(con, SIGNALS, _columns(signals, SIGNALS, features=features), result)


def query_signals(
    con: duckdb.DuckDBPyConnection,
    *,
    limit: int,
    coin: str | None = None,
    strategy: str | None = None,
    since_ms: int | None = None,
) -> list[Signal]:
    """The newest ``limit`` signals (oldest first), optionally of one coin or strategy."""
    equal = {"coin": coin, "strategy": strategy}
    rows = newest_rows(con, "signals", SIGNALS.columns, limit=limit, since_ms=since_ms, equal=equal)
    return [
        Signal(
            id=r[0],
            strategy=r[1],
            coin=r[2],
            ts_ms=r[3],
            direction=r[4],
            strength=r[5],
            confidence=r[6],
            narrative=r[7],
            features=json.loads(r[8]),
        )
        for r in rows
    ]
