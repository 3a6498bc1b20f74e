"""The signals table: written in the recorder's batches, read by ``bistouryctl signals``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bistouryd.storage.db import open_db
from bistouryd.storage.marketdata import write_batch
from bistouryd.storage.signals import query_signals
from bistouryd.strategies.base import Signal


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "test.duckdb")
    yield connection
    connection.close()


def signal(strategy: str, coin: str, ts_ms: int, **features: float) -> Signal:
    return Signal(
        strategy=strategy,
        coin=coin,
        ts_ms=ts_ms,
        direction="long",
        strength=0.5,
        confidence=0.25,
        narrative=f"{strategy} on {coin}.",
        features=features,
    )


def test_signals_round_trip_with_their_features(con: duckdb.DuckDBPyConnection) -> None:
    written = [signal("order_flow", "BTC", 1000, imbalance_5=-0.25, spread_frac=1e-5)]
    result = write_batch(con, written)
    assert result.written == {"signals": 1}
    assert query_signals(con, limit=10) == written


def test_filters_limit_and_order(con: duckdb.DuckDBPyConnection) -> None:
    rows = [
        signal(name, coin, ts)
        for ts in (1000, 2000, 3000)
        for name in ("order_flow", "cross_signal")
        for coin in ("BTC", "ETH")
    ]
    write_batch(con, rows)
    newest = query_signals(con, limit=3)
    assert [s.ts_ms for s in newest] == [3000, 3000, 3000]  # the newest 3, oldest first
    btc = query_signals(con, limit=100, coin="BTC", strategy="cross_signal")
    assert [(s.coin, s.strategy, s.ts_ms) for s in btc] == [
        ("BTC", "cross_signal", t) for t in (1000, 2000, 3000)
    ]
    assert [s.ts_ms for s in query_signals(con, limit=100, coin="ETH", since_ms=2000)] == [
        2000,
        2000,
        3000,
        3000,
    ]


def test_a_signal_written_twice_is_stored_once(con: duckdb.DuckDBPyConnection) -> None:
    s = signal("funding_rate", "ETH", 5000, funding_z=1.5)
    write_batch(con, [s])
    again = write_batch(con, [s])
    assert again.duplicates == {"signals": 1} and not again.written.get("signals")
    assert query_signals(con, limit=10) == [s]
