"""bistouryd.storage.retention: old rows to zstd Parquet, deleted only after, read back
through the ``*_all`` views; idempotent, on real DuckDB files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bistouryd.config import StorageConfig
from bistouryd.market import Candle, L2Book, RawMessage, Trade, Trades
from bistouryd.storage.db import open_db
from bistouryd.storage.marketdata import write_batch
from bistouryd.storage.retention import (
    DAY_MS,
    STAGING,
    RetentionSettings,
    cutoff_ms,
    parquet_files,
    refresh_views,
    run_retention,
    source_sql,
)

NOW = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
TODAY = NOW // DAY_MS * DAY_MS
COINS = ("BTC", "PURR/USDC", "xyz:XYZ100", "@107")


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "r.duckdb")
    yield connection
    connection.close()


def settings(tmp_path: Path, **keep: int | None) -> RetentionSettings:
    return RetentionSettings(keep_days=keep, parquet_dir=tmp_path / "parquet")


def fill(con: duckdb.DuckDBPyConnection, days: int = 10) -> None:
    """Per coin and day (today and the ``days - 1`` before): 10 trades, 2 books, a raw
    message (no coin for the last coin), a candle."""
    items: list[object] = []
    for c, coin in enumerate(COINS):
        for d in range(days):
            ts = TODAY - d * DAY_MS + 3_600_000
            items.append(
                Trades(
                    coin=coin,
                    trades=[
                        Trade(
                            coin=coin,
                            ts_ms=ts + i,
                            px=10.0 + i,
                            sz=1.0,
                            side="buy",
                            tid=c * 1_000_000 + d * 100 + i,
                            hash="0x1",
                        )
                        for i in range(10)
                    ],
                )
            )
            for k in range(2):
                items.append(
                    L2Book(
                        coin=coin,
                        ts_ms=ts + k,
                        bid_px=[2.0, 1.5],
                        bid_sz=[1.0, 3.0],
                        bid_n=[1, 2],
                        ask_px=[2.5],
                        ask_sz=[0.5],
                        ask_n=[1],
                    )
                )
            items.append(
                RawMessage(
                    received_ts_ms=ts,
                    source="ws",
                    channel="l2Book",
                    coin=None if coin == "@107" else coin,
                    text=f'{{"d":{d}}}',
                )
            )
            items.append(
                Candle(
                    coin=coin,
                    interval="1h",
                    open_ts_ms=ts,
                    close_ts_ms=ts + 3_599_999,
                    open_px=1,
                    high_px=1,
                    low_px=1,
                    close_px=1,
                    volume_sz=0,
                )
            )
    write_batch(con, items)  # type: ignore[arg-type]


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()
    assert row is not None
    return int(row[0])


def test_cutoff_is_whole_utc_days() -> None:
    assert cutoff_ms(NOW, 7) == TODAY - 7 * DAY_MS
    assert cutoff_ms(TODAY, 1) == TODAY - DAY_MS


def test_old_rows_move_to_parquet_and_stay_readable(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    fill(con)
    before = {t: count(con, f"SELECT * FROM {t}") for t in ("trades", "l2_snapshots")}
    all_before = con.execute("SELECT * FROM trades ORDER BY coin, tid").fetchall()
    books_before = con.execute("SELECT * FROM l2_snapshots ORDER BY coin, ts_ms").fetchall()
    s = settings(tmp_path, trades=3, l2_snapshots=5, raw_messages=1, candles=None)
    report = run_retention(con, NOW, s)
    by_table = {t.table: t for t in report.tables}
    # Keeping 3 days keeps today and the 3 days before: days 4..9 ago of trades move
    # (6 days x 4 coins x 10), days 6..9 of books (4 x 4 x 2), days 2..9 of raw (8 x 4).
    assert by_table["trades"].moved_rows == by_table["trades"].deleted_rows == 6 * 4 * 10
    assert by_table["l2_snapshots"].moved_rows == 4 * 4 * 2
    assert by_table["raw_messages"].moved_rows == 8 * 4
    assert by_table["candles"].moved_rows == 0 and by_table["candles"].keep_days is None
    assert report.errors == []
    assert report.moved_rows == 240 + 32 + 32
    # Gone from the tables, older than the cutoff only...
    cutoff = cutoff_ms(NOW, 3)
    assert count(con, "SELECT * FROM trades") == before["trades"] - 240
    assert count(con, f"SELECT * FROM trades WHERE ts_ms < {cutoff}") == 0
    assert count(con, "SELECT * FROM candles") == 40
    # ... but every row is still there through the views, exactly.
    assert con.execute("SELECT * FROM trades_all ORDER BY coin, tid").fetchall() == all_before
    books = con.execute("SELECT * FROM l2_snapshots_all ORDER BY coin, ts_ms").fetchall()
    assert books == books_before
    assert count(con, "SELECT * FROM raw_messages_all WHERE coin IS NULL") == 10
    assert count(con, source_sql("l2_snapshots", s.parquet_dir)) == before["l2_snapshots"]
    # One coin, one time range: only that coin's files are read.
    plan = con.execute(
        "EXPLAIN ANALYZE SELECT count(*) FROM trades_all WHERE coin = 'PURR/USDC'"
    ).fetchall()[0][1]
    assert "Scanning Files: 6/24" in plan


def test_layout_and_zstd(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    fill(con, days=4)
    s = settings(tmp_path, trades=1)
    report = run_retention(con, NOW, s)
    files = parquet_files(s.parquet_dir, "trades")
    assert len(files) == report.tables[3].files == 2 * 4  # 2 old days x 4 coins
    rel = sorted(str(f.parent.relative_to(s.parquet_dir)) for f in files)
    assert "trades/coin=PURR%2FUSDC/date=2023-11-12" in rel
    assert "trades/coin=xyz%3AXYZ100/date=2023-11-11" in rel
    assert all(f.name.startswith("part-") for f in files)
    codecs = con.execute(
        f"SELECT DISTINCT compression FROM parquet_metadata('{s.parquet_dir}/trades/*/*/*.parquet')"
    ).fetchall()
    assert codecs == [("ZSTD",)]
    assert not (s.parquet_dir / STAGING).exists() or not any((s.parquet_dir / STAGING).iterdir())


def test_second_run_moves_nothing(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    fill(con)
    s = settings(tmp_path, trades=3, l2_snapshots=5, raw_messages=1)
    run_retention(con, NOW, s)
    files = parquet_files(s.parquet_dir, "trades")
    again = run_retention(con, NOW, s)
    assert again.moved_rows == 0
    assert all(t.deleted_rows == 0 and t.files == 0 for t in again.tables)
    assert parquet_files(s.parquet_dir, "trades") == files


def test_interrupted_run_or_reimport_never_duplicates(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Rows that are already in Parquet and again in the table (a crash between the file
    and the delete, or old data imported a second time) are deleted, not exported twice."""
    fill(con)
    s = settings(tmp_path, trades=3)
    total = count(con, "SELECT * FROM trades")
    run_retention(con, NOW, s)
    fill(con)  # the same rows again: the moved ones come back into the table
    assert count(con, "SELECT * FROM trades_all") == total + 240
    report = run_retention(con, NOW, s).tables[3]
    assert report.moved_rows == 0
    assert report.already_in_parquet_rows == report.deleted_rows == 240
    assert count(con, "SELECT * FROM trades_all") == total
    # A leftover staging file (a crash during COPY) is cleaned up and never read.
    junk = s.parquet_dir / STAGING / "trades-x" / "coin=BTC" / "date=2023-11-01"
    junk.mkdir(parents=True)
    (junk / "part-1.parquet").write_bytes(b"PAR1 truncated")
    run_retention(con, NOW, s)
    assert not junk.exists()
    assert count(con, "SELECT * FROM trades_all") == total


def test_a_failed_move_keeps_the_rows(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    fill(con)
    s = settings(tmp_path, trades=3)
    s.parquet_dir.write_text("not a directory")
    report = run_retention(con, NOW, s)
    trades = report.tables[3]
    assert trades.error is not None and trades.moved_rows == 0
    assert report.errors and report.errors[0].startswith("trades: ")
    assert count(con, "SELECT * FROM trades") == 4 * 10 * 10


def test_read_only_connection_sees_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    con = open_db(path)
    fill(con)
    s = settings(tmp_path, trades=3)
    run_retention(con, NOW, s)
    con.close()
    ro = open_db(path, read_only=True)
    try:
        assert refresh_views(ro, s.parquet_dir) == ["trades_all"]
        assert count(ro, "SELECT * FROM trades_all") == 400
        assert count(ro, "SELECT * FROM trades") == 160  # today and the 3 days before
    finally:
        ro.close()


def test_settings_from_config(tmp_path: Path) -> None:
    storage = StorageConfig.model_validate(
        {"parquet_dir": "old", "retention": {"trades": 2, "candles": 400}}
    )
    s = RetentionSettings.from_config(storage, tmp_path)
    assert s.parquet_dir == tmp_path / "old"
    assert s.keep_days == {
        "raw_messages": 7,
        "candles": 400,
        "l2_snapshots": 14,
        "trades": 2,
        "asset_ctx": None,
        "funding_history": None,
    }
    defaults = RetentionSettings.from_config(StorageConfig(), tmp_path)
    assert defaults.parquet_dir == tmp_path / "parquet"
