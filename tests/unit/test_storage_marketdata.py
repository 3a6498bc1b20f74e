"""bistouryd.storage.marketdata: the market-data tables, the Arrow batch writer and the
recorder's bounded queue, on real DuckDB files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bistouryd.events import SysEvent
from bistouryd.market import (
    AssetCtx,
    Candle,
    FundingRate,
    L2Book,
    RawMessage,
    Trade,
    Trades,
)
from bistouryd.storage.db import bundled_migrations, open_db, schema_version
from bistouryd.storage.marketdata import (
    MARKET_TABLES,
    BatchQueue,
    Item,
    WriteError,
    write_batch,
)

T0 = 1_700_000_000_000


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "md.duckdb")
    yield connection
    connection.close()


def candle(i: int = 0, close: float = 1.5, coin: str = "BTC", interval: str = "1m") -> Candle:
    start = T0 + 60_000 * i
    return Candle(
        coin=coin,
        interval=interval,  # type: ignore[arg-type]
        open_ts_ms=start,
        close_ts_ms=start + 59_999,
        open_px=1.0,
        high_px=2.0,
        low_px=0.5,
        close_px=close,
        volume_sz=3.25,
        trades_n=7,
    )


def trades(tids: range, coin: str = "BTC") -> Trades:
    return Trades(
        coin=coin,
        trades=[
            Trade(
                coin=coin,
                ts_ms=T0 + tid,
                px=100.0 + tid,
                sz=0.01,
                side="buy" if tid % 2 else "sell",
                tid=tid,
                hash=f"0x{tid:064x}",
            )
            for tid in tids
        ],
    )


def book(ts: int, coin: str = "ETH") -> L2Book:
    return L2Book(
        coin=coin,
        ts_ms=ts,
        bid_px=[2000.1, 2000.0, 0.1 + 0.2, 1e-8],
        bid_sz=[0.3, 123456.789, 1e-9, 0.0],
        bid_n=[1, 20, 3, 0],
        ask_px=[2000.2, 2000.3],
        ask_sz=[5.5, 6.25],
        ask_n=[2, 4],
    )


def ctx(ts: int, coin: str = "BTC", **kw: float | None) -> AssetCtx:
    values: dict[str, float | None] = dict(
        funding_rate=0.0000125,
        open_interest_sz=1234.5,
        mark_px=30000.5,
        oracle_px=30001.0,
        mid_px=30000.75,
        premium=-0.0001,
        prev_day_px=29000.0,
        day_ntl_vlm_usd=1.5e9,
        impact_bid_px=30000.0,
        impact_ask_px=30001.5,
    )
    values.update(kw)
    return AssetCtx(coin=coin, ts_ms=ts, **values)  # type: ignore[arg-type]


def raw(i: int, coin: str | None = "BTC") -> RawMessage:
    return RawMessage(
        received_ts_ms=T0 + i // 3,  # several messages in the same millisecond
        source="ws",
        channel="trades",
        coin=coin,
        text=f'{{"channel":"trades","data":[{{"n":{i}}}]}}',
    )


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# ---- schema -------------------------------------------------------------------------------


def test_schema_has_the_market_tables(con: duckdb.DuckDBPyConnection) -> None:
    assert schema_version(con) == len(bundled_migrations()) >= 2
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    names = {r[0] for r in rows}
    for table in MARKET_TABLES:
        assert table in names
        assert f"{table}_all" in names
    assert "import_log" in names


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO trades VALUES ('BTC', 1, 1, 10.0, 1.0, 'long', 'h')",
        "INSERT INTO trades VALUES ('BTC', 1, 1, 0.0, 1.0, 'buy', 'h')",
        "INSERT INTO trades VALUES ('BTC', 1, 1, 10.0, -1.0, 'buy', 'h')",
        "INSERT INTO candles VALUES ('BTC', '2m', 1, 2, 1, 1, 1, 1, 0, 1)",
        "INSERT INTO candles VALUES ('BTC', '1m', 1, 2, 1, 1, 2, 1, 0, 1)",
        "INSERT INTO l2_snapshots VALUES ('BTC', 1, [1.0], [1.0, 2.0], [1], [], [], [])",
        "INSERT INTO l2_snapshots VALUES ('BTC', 1, [1.0], [-1.0], [1], [], [], [])",
        "INSERT INTO asset_ctx VALUES ('BTC', 1, 0, 1, 0, 1, NULL, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO raw_messages VALUES (1, 1, 'carrier-pigeon', 'x', NULL, '{}')",
        "INSERT INTO funding_history VALUES ('BTC', 1, NULL, NULL)",
    ],
)
def test_constraints_refuse_nonsense(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.ConstraintException):
        con.execute(sql)


# ---- round trips --------------------------------------------------------------------------


def test_candles_round_trip(con: duckdb.DuckDBPyConnection) -> None:
    bars = [candle(i, close=1.0 + i / 10) for i in range(5)]
    result = write_batch(con, bars)
    assert result.written == {"candles": 5}
    rows = con.execute("SELECT * FROM candles ORDER BY open_ts_ms").fetchall()
    assert rows == [
        (
            c.coin,
            c.interval,
            c.open_ts_ms,
            c.close_ts_ms,
            c.open_px,
            c.high_px,
            c.low_px,
            c.close_px,
            c.volume_sz,
            c.trades_n,
        )
        for c in bars
    ]


def test_candle_upsert_final_value_wins(con: duckdb.DuckDBPyConnection) -> None:
    write_batch(con, [candle(0, close=1.1), candle(1, close=1.2)])
    # Within one batch the last message for a bar wins; across batches the newer batch.
    result = write_batch(con, [candle(0, close=1.3), candle(0, close=1.4), candle(2)])
    assert result.written["candles"] == 2
    assert result.duplicates == {"candles": 1}
    rows = con.execute("SELECT open_ts_ms, close_px FROM candles ORDER BY 1").fetchall()
    assert rows == [(T0, 1.4), (T0 + 60_000, 1.2), (T0 + 120_000, 1.5)]


def test_duplicate_trades_are_ignored(con: duckdb.DuckDBPyConnection) -> None:
    first = write_batch(con, [trades(range(0, 100))])
    assert first.written == {"trades": 100}
    # A REST backfill overlapping what the websocket delivered, with a duplicate inside.
    again = write_batch(con, [trades(range(50, 150)), trades(range(140, 141))])
    assert again.written == {"trades": 50}
    assert again.duplicates == {"trades": 51}
    assert count(con, "trades") == 150
    row = con.execute("SELECT coin, tid, ts_ms, px, sz, side, hash FROM trades WHERE tid = 7")
    assert row.fetchone() == ("BTC", 7, T0 + 7, 107.0, 0.01, "buy", f"0x{7:064x}")


def test_l2_levels_round_trip_exactly(con: duckdb.DuckDBPyConnection) -> None:
    books = [book(T0 + i) for i in range(3)] + [
        L2Book(
            coin="ETH",
            ts_ms=T0 + 10,
            bid_px=[],
            bid_sz=[],
            bid_n=[],
            ask_px=[1.0],
            ask_sz=[2.0],
            ask_n=[1],
        )
    ]
    assert write_batch(con, books).written == {"l2_snapshots": 4}
    assert write_batch(con, books[:2]).written == {"l2_snapshots": 0}
    got = con.execute("SELECT * FROM l2_snapshots ORDER BY ts_ms").fetchall()
    back = [
        L2Book(
            coin=r[0],
            ts_ms=r[1],
            bid_px=r[2],
            bid_sz=r[3],
            bid_n=r[4],
            ask_px=r[5],
            ask_sz=r[6],
            ask_n=r[7],
        )
        for r in got
    ]
    assert back == books
    assert back[0].bids[2].px == 0.1 + 0.2  # bit-exact, not 0.3
    best = con.execute("SELECT bid_px[1], ask_px[1] FROM l2_snapshots WHERE ts_ms = ?", [T0])
    assert best.fetchone() == (2000.1, 2000.2)


def test_asset_ctx_and_funding_round_trip(con: duckdb.DuckDBPyConnection) -> None:
    ctxs = [ctx(T0), ctx(T0 + 1000, mid_px=None, premium=None, impact_bid_px=None)]
    rates = [
        FundingRate(coin="BTC", ts_ms=T0 + 3_600_000 * i, funding_rate=1.25e-5, premium=None)
        for i in range(3)
    ]
    result = write_batch(con, [*ctxs, *rates, *rates])
    assert result.written == {"asset_ctx": 2, "funding_history": 3}
    assert result.duplicates == {"funding_history": 3}
    rows = con.execute("SELECT * FROM asset_ctx ORDER BY ts_ms").fetchall()
    assert [AssetCtx(**dict(zip(AssetCtx.model_fields, r, strict=True))) for r in rows] == ctxs
    got = con.execute("SELECT coin, ts_ms, funding_rate, premium FROM funding_history ORDER BY 2")
    assert got.fetchall() == [(f.coin, f.ts_ms, f.funding_rate, f.premium) for f in rates]


def test_raw_messages_keep_arrival_order(con: duckdb.DuckDBPyConnection) -> None:
    messages = [raw(i, coin=None if i % 5 == 0 else "BTC") for i in range(30)]
    for start in range(0, 30, 7):
        write_batch(con, messages[start : start + 7])
    rows = con.execute(
        "SELECT received_ts_ms, source, channel, coin, text FROM raw_messages ORDER BY seq"
    ).fetchall()
    assert rows == [(m.received_ts_ms, m.source, m.channel, m.coin, m.text) for m in messages]
    seqs = [r[0] for r in con.execute("SELECT seq FROM raw_messages ORDER BY seq").fetchall()]
    assert len(set(seqs)) == 30


def test_raw_dedupe_for_imports(con: duckdb.DuckDBPyConnection) -> None:
    messages = [raw(i) for i in range(10)]
    write_batch(con, messages, dedupe_raw=True)
    result = write_batch(con, [*messages, raw(99)], dedupe_raw=True)
    assert result.written == {"raw_messages": 1}
    assert count(con, "raw_messages") == 11
    # Without dedupe (live recording) identical messages are all kept.
    write_batch(con, messages[:2])
    assert count(con, "raw_messages") == 13


def test_mixed_batch_reports_rows_per_table(con: duckdb.DuckDBPyConnection) -> None:
    event = SysEvent(kind="start", level="info", source="test", message="hello")
    items: list[Item] = [
        candle(0),
        trades(range(3)),
        book(T0),
        ctx(T0),
        raw(0),
        event,
        FundingRate(coin="BTC", ts_ms=T0, funding_rate=0.0),
    ]
    result = write_batch(con, items)
    assert result.written == {
        "raw_messages": 1,
        "candles": 1,
        "l2_snapshots": 1,
        "trades": 3,
        "asset_ctx": 1,
        "funding_history": 1,
        "sys_events": 1,
    }
    assert result.rows == 9
    assert count(con, "sys_events") == 1


def test_invalid_rows_are_counted_not_fatal(con: duckdb.DuckDBPyConnection) -> None:
    bad_ctx = ctx(T0 + 1, mark_px=0.0)
    nan_candle = candle(1).model_copy(update={"close_px": float("nan")})
    bad_book = L2Book(
        coin="ETH",
        ts_ms=T0,
        bid_px=[float("inf")],
        bid_sz=[1.0],
        bid_n=[1],
        ask_px=[],
        ask_sz=[],
        ask_n=[],
    )
    result = write_batch(con, [ctx(T0), bad_ctx, candle(0), nan_candle, bad_book, book(T0 + 5)])
    assert result.written == {"asset_ctx": 1, "candles": 1, "l2_snapshots": 1}
    assert result.rejected == {"asset_ctx": 1, "candles": 1, "l2_snapshots": 1}
    assert any("mark_px" in s for s in result.rejected_samples)
    assert result.duplicates == {}


def test_a_failing_batch_writes_nothing(con: duckdb.DuckDBPyConnection) -> None:
    write_batch(con, [candle(0)])
    con.execute("DROP TABLE funding_history")  # the last insert of the next batch fails
    with pytest.raises(WriteError):
        write_batch(
            con,
            [
                candle(1),
                trades(range(5)),
                raw(1),
                FundingRate(coin="BTC", ts_ms=T0, funding_rate=0.0),
            ],
        )
    assert count(con, "candles") == 1
    assert count(con, "trades") == 0
    assert count(con, "raw_messages") == 0
    write_batch(con, [candle(2)])  # the connection is usable again
    assert count(con, "candles") == 2


def test_empty_batch_is_a_no_op(con: duckdb.DuckDBPyConnection) -> None:
    assert write_batch(con, []).rows == 0
    assert write_batch(con, [Trades(coin="BTC", trades=[])]).written == {}


def test_arrow_path_writes_100k_rows_well_under_a_second(con: duckdb.DuckDBPyConnection) -> None:
    messages = [trades(range(i, i + 100)) for i in range(0, 100_000, 100)]
    bars = [candle(i) for i in range(100_000)]
    started = time.perf_counter()
    assert write_batch(con, messages).written == {"trades": 100_000}
    trades_s = time.perf_counter() - started
    started = time.perf_counter()
    assert write_batch(con, bars).written == {"candles": 100_000}
    candles_s = time.perf_counter() - started
    # executemany manages ~2,700 rows/s here (37 s for this); an Arrow scan ~300k+ rows/s.
    assert trades_s < 1.0, f"100k trades took {trades_s:.2f} s"
    assert candles_s < 1.0, f"100k candles took {candles_s:.2f} s"


# ---- the batching queue -------------------------------------------------------------------


def test_queue_due_by_rows_and_by_time() -> None:
    q = BatchQueue(batch_max_rows=10, batch_max_ms=250, queue_max_rows=100)
    assert not q.due(0) and q.due_in_ms(0) is None
    q.offer(candle(0), now_ms=1000)
    assert not q.due(1100)
    assert q.due_in_ms(1100) == 150
    assert q.due(1250)
    q.offer(trades(range(20)), now_ms=1010)  # one message, 20 rows
    assert q.rows == 21 and q.due(1011) and q.due_in_ms(1011) == 0


def test_queue_take_whole_items_up_to_batch_rows() -> None:
    q = BatchQueue(batch_max_rows=10, batch_max_ms=250, queue_max_rows=100)
    q.offer(trades(range(4)), 0)
    q.offer(trades(range(4, 8)), 0)
    q.offer(trades(range(8, 12)), 5)
    first = q.take()
    assert [len(t.trades) for t in first if isinstance(t, Trades)] == [4, 4]
    assert q.rows == 4 and len(q) == 1
    assert q.due_in_ms(10) == 245  # the oldest left was queued at 5
    big = BatchQueue(batch_max_rows=10, batch_max_ms=250, queue_max_rows=100)
    big.offer(trades(range(50)), 0)
    assert len(big.take()) == 1  # an oversized message still goes out alone
    assert big.rows == 0 and big.take() == []


def test_queue_counts_what_it_drops() -> None:
    q = BatchQueue(batch_max_rows=5, batch_max_ms=250, queue_max_rows=10)
    assert q.offer(trades(range(8)), 0)
    assert not q.offer(trades(range(8, 11)), 0)
    assert q.offer(book(T0), 0)  # 9 rows of 10
    assert q.offer_many([candle(0), candle(1)], 0) == 1
    assert q.dropped == {"trades": 3, "candles": 1}
    assert q.dropped_rows == 4
    batch = q.take()
    q.requeue(batch, now_ms=1)  # a failed write goes back in front, nothing lost
    assert q.take() == batch


def test_queue_from_config() -> None:
    from bistouryd.config import StorageConfig

    q = BatchQueue.from_config(StorageConfig())
    assert (q.batch_max_rows, q.batch_max_ms, q.queue_max_rows) == (5000, 250, 500_000)
    with pytest.raises(ValueError):
        BatchQueue(batch_max_rows=10, batch_max_ms=1, queue_max_rows=5)
