"""Moving old rows out of DuckDB into Parquet files, and reading them back.

Each market-data table keeps ``storage.retention.<table>`` days in DuckDB (``null``:
forever). Older rows, whole UTC days at a time, are written to zstd Parquet files::

    <parquet_dir>/<table>/coin=<COIN>/date=<YYYY-MM-DD>/part-<uuid>.parquet

(hive partitioning; the coin is URL-encoded as DuckDB does it, a missing coin is
``__HIVE_DEFAULT_PARTITION__``; the files hold every column but ``coin``). The order of a
run, per table:

1. select the rows older than the cutoff that are not already in a Parquet file of their
   partition (so an interrupted run, or rows imported again later, never duplicate);
2. ``COPY`` them to a staging directory, check every file's row count against the rows
   selected for its partition, fsync, and rename the files into place;
3. only then delete the old rows from the table, in one transaction.

A crash anywhere leaves either the rows in DuckDB (and maybe also in Parquet, which the
next run recognises) or in Parquet only: never lost, never read twice.

``<table>_all`` views (``refresh_views``) are the table ``UNION ALL`` its Parquet files, so
queries and the backtester see old and new rows alike. ``source_sql`` gives the same for
code that should not depend on the views.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
from pydantic import BaseModel

from bistouryd.storage.marketdata import MARKET_TABLES, TABLES

DAY_MS = 86_400_000
STAGING = ".staging"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class RetentionSettings:
    keep_days: Mapping[str, int | None]
    parquet_dir: Path

    @classmethod
    def from_config(cls, storage: Any, state_dir: Path) -> RetentionSettings:
        """From a ``StorageConfig`` and the state directory."""
        return cls(
            keep_days={t: getattr(storage.retention, t) for t in MARKET_TABLES},
            parquet_dir=storage.parquet_path(state_dir),
        )


class TableRetention(BaseModel):
    table: str
    keep_days: int | None
    cutoff_ts_ms: int | None = None
    moved_rows: int = 0
    already_in_parquet_rows: int = 0
    deleted_rows: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None


class RetentionReport(BaseModel):
    now_ms: int
    parquet_dir: str
    tables: list[TableRetention]

    @property
    def moved_rows(self) -> int:
        return sum(t.moved_rows for t in self.tables)

    @property
    def errors(self) -> list[str]:
        return [f"{t.table}: {t.error}" for t in self.tables if t.error]


# ---- reading old and new rows -------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_dir(parquet_dir: Path, table: str) -> Path:
    return parquet_dir / table


def parquet_files(parquet_dir: Path, table: str) -> list[Path]:
    return sorted(table_dir(parquet_dir, table).glob("*/*/*.parquet"))


def has_parquet(parquet_dir: Path, table: str) -> bool:
    return next(iter(table_dir(parquet_dir, table).glob("*/*/*.parquet")), None) is not None


def read_parquet_sql(parquet_dir: Path, table: str) -> str:
    """``read_parquet(...)`` of a table's files, with ``coin`` and ``date`` from the path."""
    glob = str(table_dir(parquet_dir, table).absolute() / "*" / "*" / "*.parquet")
    return (
        f"read_parquet({_quote(glob)}, hive_partitioning = true, union_by_name = true, "
        "hive_types = {'coin': 'VARCHAR', 'date': 'DATE'})"
    )


def source_sql(table: str, parquet_dir: Path | None) -> str:
    """A subquery with the rows of ``table`` in DuckDB and in Parquet, same columns."""
    cols = ", ".join(TABLES[table].columns)
    sql = f"SELECT {cols} FROM {table}"
    if parquet_dir is not None and has_parquet(parquet_dir, table):
        sql += f" UNION ALL SELECT {cols} FROM {read_parquet_sql(parquet_dir, table)}"
    return sql


def _read_only(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return bool(row and row[0])


def refresh_views(con: duckdb.DuckDBPyConnection, parquet_dir: Path) -> list[str]:
    """(Re)create the ``<table>_all`` views for where the Parquet files are now.

    On a writable connection the views are stored in the database (so any DuckDB client
    sees them); on a read-only one they are temporary views of this connection.
    Returns the names of the views that include Parquet files.
    """
    temp = "TEMP " if _read_only(con) else ""
    with_files = []
    for table in MARKET_TABLES:
        con.execute(f"CREATE OR REPLACE {temp}VIEW {table}_all AS {source_sql(table, parquet_dir)}")
        if has_parquet(parquet_dir, table):
            with_files.append(f"{table}_all")
    return with_files


# ---- moving old rows ----------------------------------------------------------------------


def cutoff_ms(now_ms: int, keep_days: int) -> int:
    """Rows before this move: the start of the UTC day ``keep_days`` days before today's."""
    return (now_ms // DAY_MS - keep_days) * DAY_MS


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _partition_of(path: Path) -> tuple[str | None, str]:
    """(coin, date) from ``.../coin=X/date=Y/file``."""
    coin = unquote(path.parent.parent.name.split("=", 1)[1])
    date = unquote(path.parent.name.split("=", 1)[1])
    return (None if coin == NULL_PARTITION else coin), date


def _move_table(
    con: duckdb.DuckDBPyConnection, table: str, cutoff: int, parquet_dir: Path
) -> TableRetention:
    spec = TABLES[table]
    ts = spec.time_column
    report = TableRetention(table=table, keep_days=None, cutoff_ts_ms=cutoff)
    old = con.execute(f"SELECT count(*) FROM {table} WHERE {ts} < ?", [cutoff]).fetchone()
    total = int(old[0]) if old else 0
    if total == 0:
        return report
    cols = ", ".join(f"t.{c}" for c in spec.columns)
    select = (
        f"SELECT {cols}, CAST(epoch_ms(t.{ts}) AS DATE) AS date "
        f"FROM {table} t WHERE t.{ts} < {cutoff}"
    )
    if has_parquet(parquet_dir, table):
        span = con.execute(
            f"SELECT CAST(epoch_ms(min({ts})) AS DATE), CAST(epoch_ms(max({ts})) AS DATE) "
            f"FROM {table} WHERE {ts} < ?",
            [cutoff],
        ).fetchone()
        assert span is not None
        match = " AND ".join(f"p.{k} = t.{k}" for k in spec.key if k != "coin")
        select += (
            f" AND NOT EXISTS (SELECT 1 FROM {read_parquet_sql(parquet_dir, table)} p"
            f" WHERE p.date BETWEEN DATE '{span[0]}' AND DATE '{span[1]}'"
            f" AND p.coin IS NOT DISTINCT FROM t.coin AND {match})"
        )
    expected = {
        (row[0], str(row[1])): int(row[2])
        for row in con.execute(
            f"SELECT coin, date, count(*) FROM ({select}) GROUP BY ALL"
        ).fetchall()
    }
    moving = sum(expected.values())
    report.already_in_parquet_rows = total - moving
    staging = parquet_dir / STAGING / f"{table}-{uuid.uuid4().hex}"
    try:
        if moving:
            staging.mkdir(parents=True)
            copied = con.execute(
                f"COPY ({select}) TO {_quote(str(staging))} (FORMAT parquet, "
                "COMPRESSION zstd, PARTITION_BY (coin, date), RETURN_FILES true, "
                "FILENAME_PATTERN 'part-{uuid}')"
            ).fetchone()
            assert copied is not None
            files = [Path(f) for f in copied[1]]
            counts = con.execute(
                "SELECT file_name, num_rows FROM parquet_file_metadata("
                f"[{', '.join(_quote(str(f)) for f in files)}])"
            ).fetchall()
            found: dict[tuple[str | None, str], int] = {}
            for name, rows in counts:
                key = _partition_of(Path(name))
                found[key] = found.get(key, 0) + int(rows)
            if found != expected or int(copied[0]) != moving:
                raise RuntimeError(
                    f"Parquet files hold {sum(found.values())} rows in {len(found)} "
                    f"partitions, expected {moving} in {len(expected)}; nothing deleted"
                )
            for staged in files:
                _fsync(staged)
                target = parquet_dir / table / staged.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
                report.bytes += target.stat().st_size
                report.files += 1
            for directory in {parquet_dir / table / f.relative_to(staging).parent for f in files}:
                _fsync(directory, directory=True)
        con.begin()
        try:
            deleted = con.execute(f"DELETE FROM {table} WHERE {ts} < ?", [cutoff]).fetchone()
            con.commit()
        except BaseException:
            con.rollback()
            raise
        report.deleted_rows = int(deleted[0]) if deleted else 0
        report.moved_rows = moving
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def run_retention(
    con: duckdb.DuckDBPyConnection,
    now_ms: int,
    settings: RetentionSettings,
    *,
    tables: Iterable[str] | None = None,
    checkpoint: bool = True,
) -> RetentionReport:
    """Move every table's rows older than its retention to Parquet; report what moved.

    Call it from the database's single writer, with nothing else writing meanwhile (the
    recorder holds its write lock). A table whose move fails keeps its rows and reports
    the error; the others go on. Idempotent: a second run moves nothing more.
    """
    parquet_dir = settings.parquet_dir
    with contextlib.suppress(OSError):
        shutil.rmtree(parquet_dir / STAGING)  # left by a crash: never in the views' glob
    reports = []
    moved_any = False
    for table in tables if tables is not None else MARKET_TABLES:
        keep = settings.keep_days.get(table)
        if keep is None:
            reports.append(TableRetention(table=table, keep_days=None))
            continue
        started = time.perf_counter()
        cutoff = cutoff_ms(now_ms, keep)
        try:
            report = _move_table(con, table, cutoff, parquet_dir)
        except (duckdb.Error, OSError, RuntimeError) as exc:
            report = TableRetention(table=table, keep_days=keep, cutoff_ts_ms=cutoff)
            report.error = f"{exc!s:.500}"
        report.keep_days = keep
        report.seconds = round(time.perf_counter() - started, 3)
        moved_any = moved_any or report.files > 0 or report.deleted_rows > 0
        reports.append(report)
    if moved_any and not _read_only(con):
        refresh_views(con, parquet_dir)
        if checkpoint:
            con.execute("CHECKPOINT")
    return RetentionReport(now_ms=now_ms, parquet_dir=str(parquet_dir), tables=reports)


def parquet_bytes(parquet_dir: Path, table: str) -> dict[str | None, int]:
    """Bytes of Parquet files per coin of one table."""
    sizes: dict[str | None, int] = {}
    for path in parquet_files(parquet_dir, table):
        coin, _ = _partition_of(path)
        sizes[coin] = sizes.get(coin, 0) + path.stat().st_size
    return sizes
