"""What the database side costs on its own, measured on the rows an ingest run stored.

* Bulk insert: the run's websocket frames are read back from its DuckDB file, turned
  into the same items the collector sends the recorder (a ``RawMessage`` and the parsed
  market events of each frame, in arrival order), cut into batches exactly as the
  recorder's ``BatchQueue`` cuts them (``storage.batch_max_rows``), and written with
  ``write_batch`` into a fresh file. Building the items is not timed; the writes are.
  This is the ceiling the recorder could reach if receiving cost nothing.
* Bytes per l2Book message: the run's l2Book frames are written into a fresh file, first
  as ``l2_snapshots`` rows, then as their ``raw_messages`` copies, with a ``CHECKPOINT``
  and the blocks in use after each (the file's growth is kept too: it also holds blocks
  a checkpoint freed); then ``run_retention`` moves both to Parquet and the files are
  measured.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb

from bistouryd.market import L2Book, MarketDataError, RawMessage, parse_l2book, parse_ws_message
from bistouryd.storage.db import open_db
from bistouryd.storage.marketdata import MARKET_TABLES, BatchQueue, Item, write_batch
from bistouryd.storage.retention import DAY_MS, RetentionSettings, run_retention

BULK_MAX_FRAMES = 150_000
L2_MAX_FRAMES = 40_000
BATCH_SIZE_FRAMES = 20_000


def _frames(db_path: Path, channel: str | None, limit: int) -> list[tuple[int, str, Any, str]]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        where = "source = 'ws'" + ("" if channel is None else " AND channel = ?")
        params: list[Any] = [] if channel is None else [channel]
        rows = con.execute(
            f"SELECT received_ts_ms, channel, coin, text FROM raw_messages WHERE {where} "
            "ORDER BY seq LIMIT ?",
            [*params, limit],
        ).fetchall()
    finally:
        con.close()
    return [(int(ts), str(ch), coin, str(text)) for ts, ch, coin, text in rows]


def _raw(ts: int, channel: str, coin: Any, text: str) -> RawMessage:
    return RawMessage(received_ts_ms=ts, source="ws", channel=channel, coin=coin, text=text)


def _batches(items: list[Item], batch_max_rows: int) -> list[list[Item]]:
    queue = BatchQueue(batch_max_rows, 0, max(batch_max_rows, 10 * len(items) + 1))
    queue.offer_many(items, 0)
    out = []
    while len(queue):
        out.append(queue.take())
    return out


def used_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """Bytes of the blocks in use: a file keeps the blocks a checkpoint freed (rewritten
    row groups), so its size overstates what the data takes."""
    row = con.execute("SELECT block_size * used_blocks FROM pragma_database_size()").fetchone()
    return int(row[0]) if row else 0


def _file_bytes(path: Path) -> int:
    wal = Path(f"{path}.wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _items(frames: list[tuple[int, str, Any, str]]) -> list[Item]:
    """What the collector sends the recorder for these frames, in the same order."""
    items: list[Item] = []
    for ts, channel, coin, text in frames:
        items.append(_raw(ts, channel, coin, text))
        try:
            msg = json.loads(text)
        except ValueError:
            continue
        if isinstance(msg, dict):
            try:
                items.extend(parse_ws_message(msg, ts))
            except MarketDataError:
                continue
    return items


def bulk_insert(run_db: Path, workdir: Path, batch_max_rows: int) -> dict[str, Any]:
    """``write_batch`` of the run's frames (raw + typed) into a fresh file."""
    frames = _frames(run_db, None, BULK_MAX_FRAMES)
    items = _items(frames)
    batches = _batches(items, batch_max_rows)
    path = workdir / "bulk.duckdb"
    con = open_db(path)
    written: dict[str, int] = {}
    try:
        started = time.perf_counter()
        for batch in batches:
            result = write_batch(con, batch)
            for table, n in result.written.items():
                written[table] = written.get(table, 0) + n
        seconds = time.perf_counter() - started
    finally:
        con.close()
    rows = sum(written.values())
    return {
        "frames": len(frames),
        "items": len(items),
        "batches": len(batches),
        "batch_max_rows": batch_max_rows,
        "rows_written": written,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "messages_per_s": round(len(frames) / seconds),
        "file_bytes": _file_bytes(path),
    }


class _TimedConnection:
    """A DuckDB connection that adds up the time of each kind of call made on it."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._con, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                key = _kind(name, args)
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

        return timed


def _kind(method: str, args: tuple[Any, ...]) -> str:
    if method != "execute" or not args:
        return method
    sql = str(args[0])
    if "nextval" in sql:
        return "reserve raw seq"
    if sql.startswith("SELECT count(*)"):
        return "validity count (SELECT)"
    if sql.startswith("INSERT"):
        table = sql.split(" INTO ", 1)[1].split(" ", 1)[0] if " INTO " in sql else "?"
        return f"INSERT {table}"
    return sql.split(" ", 1)[0]


def batch_sizes(run_db: Path, workdir: Path, sizes: list[int]) -> dict[str, Any]:
    """``write_batch`` of the same frames cut into batches of each size, with the time of
    each kind of DuckDB call: what a batch costs beyond its rows."""
    frames = _frames(run_db, None, BATCH_SIZE_FRAMES)
    items = _items(frames)
    out: dict[str, Any] = {"frames": len(frames), "sizes": {}}
    for size in sizes:
        path = workdir / f"batches-{size}.duckdb"
        raw = open_db(path)
        con = _TimedConnection(raw)
        batches = _batches(items, size)
        try:
            started = time.perf_counter()
            for batch in batches:
                write_batch(con, batch)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
        finally:
            raw.close()
        path.unlink(missing_ok=True)
        calls = sum(con.seconds.values())
        out["sizes"][str(size)] = {
            "batches": len(batches),
            "seconds": round(seconds, 3),
            "us_per_frame": round(seconds / max(len(frames), 1) * 1e6, 1),
            "ms_per_batch": round(seconds / max(len(batches), 1) * 1000, 2),
            "ms_per_batch_by_call": {
                k: round(v / max(len(batches), 1) * 1000, 2)
                for k, v in sorted(con.seconds.items(), key=lambda kv: -kv[1])
            }
            | {"Python (Arrow tables, grouping)": round((seconds - calls) / len(batches) * 1e3, 2)},
        }
    return out


def l2_bytes(run_db: Path, workdir: Path, batch_max_rows: int) -> dict[str, Any]:
    """File growth per l2Book message, in DuckDB (typed, then raw) and in Parquet."""
    frames = _frames(run_db, "l2Book", L2_MAX_FRAMES)
    books: list[L2Book] = []
    for _, _, _, text in frames:
        books.append(parse_l2book(json.loads(text)["data"]))
    raws = [_raw(*f) for f in frames]
    n = len(frames)
    if not n:
        return {}
    path = workdir / "l2.duckdb"
    parquet = workdir / "parquet"
    con = open_db(path)
    try:
        con.execute("CHECKPOINT")
        empty, empty_file = used_bytes(con), _file_bytes(path)
        for batch in _batches(list(books), batch_max_rows):
            write_batch(con, batch)
        con.execute("CHECKPOINT")
        with_l2, with_l2_file = used_bytes(con), _file_bytes(path)
        for batch in _batches(list(raws), batch_max_rows):
            write_batch(con, batch)
        con.execute("CHECKPOINT")
        with_raw, with_raw_file = used_bytes(con), _file_bytes(path)
        last_ms = max(max(b.ts_ms for b in books), max(r.received_ts_ms for r in raws))
        keep = {t: (0 if t in ("l2_snapshots", "raw_messages") else None) for t in MARKET_TABLES}
        report = run_retention(con, last_ms + 2 * DAY_MS, RetentionSettings(keep, parquet))
    finally:
        con.close()
    moved = {t.table: t.moved_rows for t in report.tables if t.moved_rows}
    pq = {
        table: sum(p.stat().st_size for p in (parquet / table).rglob("*.parquet"))
        for table in ("l2_snapshots", "raw_messages")
    }
    files = {
        table: sum(1 for _ in (parquet / table).rglob("*.parquet"))
        for table in ("l2_snapshots", "raw_messages")
    }
    levels = sum(len(b.bid_px) + len(b.ask_px) for b in books) / n
    return {
        "messages": n,
        "levels_per_book": round(levels, 1),
        "json_text_bytes_per_message": round(sum(len(r.text) for r in raws) / n, 1),
        "duckdb_empty_bytes": empty,
        "duckdb_l2_snapshots_bytes_per_message": round((with_l2 - empty) / n, 1),
        "duckdb_raw_messages_bytes_per_message": round((with_raw - with_l2) / n, 1),
        "duckdb_file_growth_bytes_per_message": {
            "l2_snapshots": round((with_l2_file - empty_file) / n, 1),
            "raw_messages": round((with_raw_file - with_l2_file) / n, 1),
        },
        "parquet_moved_rows": moved,
        "parquet_files": files,
        "parquet_l2_snapshots_bytes_per_message": round(pq["l2_snapshots"] / n, 1),
        "parquet_raw_messages_bytes_per_message": round(pq["raw_messages"] / n, 1),
    }
