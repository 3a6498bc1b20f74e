"""What the database holds: rows, time span and gaps per table and coin, and sizes.

``compute_status`` works on any connection (the recorder's own while the daemon runs, a
read-only one of ``bistoury data status`` while it is stopped) and returns a pydantic
model, so both paths print the same thing.

Gaps: a step between two consecutive rows of one series (one coin; one coin and
interval for candles) larger than the series' expected spacing. Candles must be exactly
one interval apart (``missing_n`` counts the missing bars), settled funding one hour
(±30 min), L2 snapshots and asset contexts at most ``GAP_THRESHOLD_MS`` apart (a silent
collector). Trades and raw messages have no expected spacing (a quiet market is not a
gap) and are not checked.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from bistouryd.market import INTERVAL_MS
from bistouryd.storage.db import schema_version
from bistouryd.storage.marketdata import MARKET_TABLES, TABLES
from bistouryd.storage.reports import DataStatus, Gap, SeriesStatus
from bistouryd.storage.retention import has_parquet, parquet_bytes, read_parquet_sql

HOUR_MS = 3_600_000
# The largest step between two rows that is not a gap, for tables without a fixed period.
GAP_THRESHOLD_MS: dict[str, int | None] = {
    "raw_messages": None,
    "trades": None,
    "l2_snapshots": 60_000,
    "asset_ctx": 300_000,
    "funding_history": HOUR_MS + HOUR_MS // 2,
}


def _existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
    ).fetchall()
    return {r[0] for r in rows}


def _threshold_sql(table: str) -> tuple[str, str] | None:
    """(step beyond which it is a gap, missing rows in a gap) as SQL over t, prev, interval."""
    if table == "candles":
        cases = " ".join(f"WHEN '{i}' THEN {ms}" for i, ms in INTERVAL_MS.items())
        step = f"(CASE interval {cases} END)"
        return step, f"(t - prev) // {step} - 1"
    threshold = GAP_THRESHOLD_MS.get(table)
    if threshold is None:
        return None
    if table == "funding_history":
        return str(threshold), f"CAST(round((t - prev) / {HOUR_MS}) AS BIGINT) - 1"
    return str(threshold), "NULL"


def _series(
    con: duckdb.DuckDBPyConnection,
    table: str,
    parquet_dir: Path | None,
    since_ms: int | None,
    gaps_limit: int,
) -> list[SeriesStatus]:
    spec = TABLES[table]
    ts = spec.time_column
    group = ["coin", "interval"] if table == "candles" else ["coin"]
    cols = ", ".join(group)
    src = f"SELECT {cols}, {ts} AS t, false AS pq FROM {table}"
    if parquet_dir is not None and has_parquet(parquet_dir, table):
        files = read_parquet_sql(parquet_dir, table)
        src += f" UNION ALL SELECT {cols}, {ts} AS t, true AS pq FROM {files}"
    found: dict[tuple[str | None, ...], SeriesStatus] = {}
    for row in con.execute(
        f"SELECT {cols}, count(*), count(*) FILTER (WHERE NOT pq), count(*) FILTER (WHERE pq), "
        f"min(t), max(t) FROM ({src}) GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        key = tuple(row[: len(group)])
        n, n_db, n_pq, first, last = row[len(group) :]
        found[key] = SeriesStatus(
            table=table,
            coin=key[0],
            interval=key[1] if len(key) > 1 else None,
            rows=n,
            rows_db=n_db,
            rows_parquet=n_pq,
            first_ts_ms=first,
            last_ts_ms=last,
            gaps_checked=False,
        )
    rule = _threshold_sql(table)
    if rule is not None and found:
        step, missing = rule
        where = f"WHERE t >= {int(since_ms)}" if since_ms is not None else ""
        gaps = (
            f"SELECT {cols}, prev, t, {missing} AS missing FROM ("
            f"SELECT {cols}, t, lag(t) OVER (PARTITION BY {cols} ORDER BY t) AS prev "
            f"FROM ({src}) {where}) WHERE t - prev > {step}"
        )
        for row in con.execute(
            f"SELECT {cols}, count(*), sum(missing) FROM ({gaps}) GROUP BY ALL"
        ).fetchall():
            s = found[tuple(row[: len(group)])]
            s.gaps_n = int(row[len(group)])
            s.missing_n = None if row[len(group) + 1] is None else int(row[len(group) + 1])
        for row in con.execute(
            f"SELECT * FROM ({gaps}) QUALIFY row_number() OVER "
            f"(PARTITION BY {cols} ORDER BY t DESC) <= {int(gaps_limit)} ORDER BY t DESC"
        ).fetchall():
            s = found[tuple(row[: len(group)])]
            prev, t, missing = row[len(group) :]
            s.gaps.append(Gap(after_ts_ms=prev, before_ts_ms=t, missing_n=missing))
        for s in found.values():
            if table == "candles" and s.interval not in INTERVAL_MS:
                continue  # 1M bars have no fixed length
            s.gaps_checked = True
            if s.missing_n is None and table in ("candles", "funding_history"):
                s.missing_n = 0
    if parquet_dir is not None:
        for coin, size in parquet_bytes(parquet_dir, table).items():
            for s in found.values():
                if s.coin == coin:
                    s.parquet_bytes += size
                    break
    return list(found.values())


def compute_status(
    con: duckdb.DuckDBPyConnection,
    *,
    db_path: Path | None = None,
    parquet_dir: Path | None = None,
    gaps_since_ms: int | None = None,
    gaps_limit: int = 5,
    now_ms: int | None = None,
) -> DataStatus:
    """Rows, first/last time and gaps per table and coin, DuckDB and Parquet together.

    ``gaps_since_ms`` limits the gap search (the expensive part on a large database) to
    recent rows; counts and times always cover everything.
    """
    existing = _existing_tables(con)
    series: list[SeriesStatus] = []
    totals: dict[str, int] = {}
    for table in MARKET_TABLES:
        if table not in existing:
            continue
        found = _series(con, table, parquet_dir, gaps_since_ms, gaps_limit)
        totals[table] = sum(s.rows for s in found)
        series.extend(found)
    db_bytes = None
    if db_path is not None:
        db_bytes = sum(p.stat().st_size for p in (db_path, Path(f"{db_path}.wal")) if p.exists())
    pq_bytes = 0
    if parquet_dir is not None:
        pq_bytes = sum(sum(parquet_bytes(parquet_dir, t).values()) for t in MARKET_TABLES)
    return DataStatus(
        generated_ts_ms=now_ms if now_ms is not None else int(time.time() * 1000),
        db_path=str(db_path) if db_path is not None else None,
        db_bytes=db_bytes,
        parquet_dir=str(parquet_dir) if parquet_dir is not None else None,
        parquet_bytes=pq_bytes,
        schema_version=schema_version(con),
        gaps_since_ts_ms=gaps_since_ms,
        tables=totals,
        series=series,
    )
