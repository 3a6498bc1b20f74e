"""Writing market data: a batch of domain objects → one Arrow table per DuckDB table →
one ``INSERT … SELECT`` each, all in one transaction.

``write_batch`` takes any mix of ``Candle``, ``L2Book``, ``Trades``, ``AssetCtx``,
``FundingRate``, ``RawMessage`` (and ``SysEvent``, so the recorder can commit system events
in the same transaction). Per table:

* candles: ``INSERT OR REPLACE`` on (coin, interval, open_ts_ms): a bar's final value wins;
  within one batch the last message for a bar wins.
* l2_snapshots, trades, asset_ctx, funding_history: ``INSERT OR IGNORE`` on their keys: a
  REST backfill or a second import adds nothing; within one batch the first row wins.
* raw_messages: appended, ``seq`` taken from the ``raw_messages_seq`` sequence in arrival
  order. ``dedupe_raw=True`` (imports) skips a message whose source, channel, coin, time
  and text are already in the table.

Rows that would break a CHECK constraint (a zero price, a NaN, a negative size...) are not
sent to DuckDB, where they would abort the whole batch: they are counted in
``WriteResult.rejected`` with a sample of the reasons. Never ``executemany``: it is ~400
times slower than an Arrow scan here.

``BatchQueue`` is the recorder's bounded buffer: it says when a batch is due
(``storage.batch_max_rows`` / ``storage.batch_max_ms``) and counts what it had to drop
when full (``storage.queue_max_rows``). Pure: no I/O, no asyncio, the caller passes the
clock.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from bistouryd.events import SysEvent
from bistouryd.exchange.orders import (
    Fill,
    FundingPayment,
    OrderRequest,
    OrderUpdate,
    RiskRefusal,
)
from bistouryd.llm.record import DecisionRecord
from bistouryd.market import AssetCtx, Candle, FundingRate, L2Book, RawMessage, Trades
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.storage.events import insert_events
from bistouryd.strategies.base import Signal

Item = (
    Candle
    | L2Book
    | Trades
    | AssetCtx
    | FundingRate
    | RawMessage
    | SysEvent
    | Signal
    | DecisionRecord
    | OrderRequest
    | OrderUpdate
    | Fill
    | FundingPayment
    | RiskRefusal
    | PortfolioSnapshot
)


@dataclass(frozen=True)
class TableSpec:
    """How one market-data table is written, keyed and aged."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    time_column: str
    conflict: str  # "replace" | "ignore" | "append"
    # SQL that is true for a row DuckDB's CHECK constraints accept (plus finiteness).
    valid_sql: str

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)


def _pos(col: str) -> str:
    return f"({col} > 0 AND isfinite({col}))"


def _nonneg(col: str) -> str:
    return f"({col} >= 0 AND isfinite({col}))"


def _opt(expr: str, col: str) -> str:
    return f"({col} IS NULL OR {expr})"


def _all(*exprs: str) -> str:
    return " AND ".join(exprs)


_F64 = pa.float64()
_LIST_F64 = pa.list_(pa.float64())
_LIST_I32 = pa.list_(pa.int32())

RAW = TableSpec(
    name="raw_messages",
    schema=pa.schema(
        [
            ("seq", pa.int64()),
            ("received_ts_ms", pa.int64()),
            ("source", pa.string()),
            ("channel", pa.string()),
            ("coin", pa.string()),
            ("text", pa.string()),
        ]
    ),
    key=("seq",),
    time_column="received_ts_ms",
    conflict="append",
    valid_sql=_all(
        "received_ts_ms > 0",
        "source IN ('ws', 'rest', 'archive')",
        "length(channel) > 0",
        "(coin IS NULL OR length(coin) > 0)",
        "text IS NOT NULL",
    ),
)

CANDLES = TableSpec(
    name="candles",
    schema=pa.schema(
        [
            ("coin", pa.string()),
            ("interval", pa.string()),
            ("open_ts_ms", pa.int64()),
            ("close_ts_ms", pa.int64()),
            ("open_px", _F64),
            ("high_px", _F64),
            ("low_px", _F64),
            ("close_px", _F64),
            ("volume_sz", _F64),
            ("trades_n", pa.int32()),
        ]
    ),
    key=("coin", "interval", "open_ts_ms"),
    time_column="open_ts_ms",
    conflict="replace",
    valid_sql=_all(
        "length(coin) > 0",
        "open_ts_ms > 0",
        "close_ts_ms >= open_ts_ms",
        _pos("open_px"),
        _pos("high_px"),
        _pos("low_px"),
        _pos("close_px"),
        "high_px >= low_px",
        _nonneg("volume_sz"),
        "(trades_n IS NULL OR trades_n >= 0)",
    ),
)


def _levels_ok(side: str) -> str:
    px, sz, n = f"{side}_px", f"{side}_sz", f"{side}_n"
    return _all(
        f"len({px}) = len({sz})",
        f"len({px}) = len({n})",
        f"coalesce(list_min({px}) > 0, true)",
        f"coalesce(list_min({sz}) >= 0, true)",
        f"coalesce(list_min({n}) >= 0, true)",
        # NaN or infinity anywhere makes the sum non-finite (no lambdas: DuckDB 1.x and 2.x).
        f"coalesce(isfinite(list_sum({px} || {sz})), true)",
    )


L2 = TableSpec(
    name="l2_snapshots",
    schema=pa.schema(
        [
            ("coin", pa.string()),
            ("ts_ms", pa.int64()),
            ("bid_px", _LIST_F64),
            ("bid_sz", _LIST_F64),
            ("bid_n", _LIST_I32),
            ("ask_px", _LIST_F64),
            ("ask_sz", _LIST_F64),
            ("ask_n", _LIST_I32),
        ]
    ),
    key=("coin", "ts_ms"),
    time_column="ts_ms",
    conflict="ignore",
    valid_sql=_all("length(coin) > 0", "ts_ms > 0", _levels_ok("bid"), _levels_ok("ask")),
)

TRADES = TableSpec(
    name="trades",
    schema=pa.schema(
        [
            ("coin", pa.string()),
            ("tid", pa.int64()),
            ("ts_ms", pa.int64()),
            ("px", _F64),
            ("sz", _F64),
            ("side", pa.string()),
            ("hash", pa.string()),
        ]
    ),
    key=("coin", "tid"),
    time_column="ts_ms",
    conflict="ignore",
    valid_sql=_all(
        "length(coin) > 0", "ts_ms > 0", _pos("px"), _nonneg("sz"), "side IN ('buy', 'sell')"
    ),
)

ASSET_CTX = TableSpec(
    name="asset_ctx",
    schema=pa.schema(
        [
            ("coin", pa.string()),
            ("ts_ms", pa.int64()),
            ("funding_rate", _F64),
            ("open_interest_sz", _F64),
            ("mark_px", _F64),
            ("oracle_px", _F64),
            ("mid_px", _F64),
            ("premium", _F64),
            ("prev_day_px", _F64),
            ("day_ntl_vlm_usd", _F64),
            ("impact_bid_px", _F64),
            ("impact_ask_px", _F64),
        ]
    ),
    key=("coin", "ts_ms"),
    time_column="ts_ms",
    conflict="ignore",
    valid_sql=_all(
        "length(coin) > 0",
        "ts_ms > 0",
        "isfinite(funding_rate)",
        _nonneg("open_interest_sz"),
        _pos("mark_px"),
        _pos("oracle_px"),
        _opt(_pos("mid_px"), "mid_px"),
        _opt("isfinite(premium)", "premium"),
        _opt(_pos("prev_day_px"), "prev_day_px"),
        _opt(_nonneg("day_ntl_vlm_usd"), "day_ntl_vlm_usd"),
        _opt(_pos("impact_bid_px"), "impact_bid_px"),
        _opt(_pos("impact_ask_px"), "impact_ask_px"),
    ),
)

FUNDING = TableSpec(
    name="funding_history",
    schema=pa.schema(
        [
            ("coin", pa.string()),
            ("ts_ms", pa.int64()),
            ("funding_rate", _F64),
            ("premium", _F64),
        ]
    ),
    key=("coin", "ts_ms"),
    time_column="ts_ms",
    conflict="ignore",
    valid_sql=_all(
        "length(coin) > 0",
        "ts_ms > 0",
        "isfinite(funding_rate)",
        _opt("isfinite(premium)", "premium"),
    ),
)

# Write order inside a batch (raw first: it is what a replay would rebuild the rest from).
TABLES: dict[str, TableSpec] = {t.name: t for t in (RAW, CANDLES, L2, TRADES, ASSET_CTX, FUNDING)}
MARKET_TABLES: tuple[str, ...] = tuple(TABLES)


# ---- building Arrow tables from domain objects ------------------------------------------


def _columns(items: Sequence[Any], spec: TableSpec, **given: list[Any]) -> pa.Table:
    """An Arrow table of ``spec``'s columns: each is the domain objects' attribute of the
    same name (the tables were designed that way), unless passed in ``given``."""
    return pa.table(
        [given[col] if col in given else [getattr(x, col) for x in items] for col in spec.columns],
        schema=spec.schema,
    )


def _trades(items: Sequence[Trades]) -> pa.Table:
    return _columns([t for msg in items for t in msg.trades], TRADES)


def _raw(items: Sequence[RawMessage], seqs: list[int]) -> pa.Table:
    return _columns(items, RAW, seq=seqs)


def row_count(item: Item) -> int:
    """How many table rows an item becomes (a ``Trades`` message is one row per trade)."""
    return len(item.trades) if isinstance(item, Trades) else 1


def table_of(item: Item) -> str:
    if isinstance(item, Candle):
        return CANDLES.name
    if isinstance(item, L2Book):
        return L2.name
    if isinstance(item, Trades):
        return TRADES.name
    if isinstance(item, AssetCtx):
        return ASSET_CTX.name
    if isinstance(item, FundingRate):
        return FUNDING.name
    if isinstance(item, RawMessage):
        return RAW.name
    if isinstance(item, Signal):
        return "signals"
    if isinstance(item, DecisionRecord):
        return "decisions"
    from bistouryd.storage.trading import TRADING_TABLES

    spec = TRADING_TABLES.get(type(item))
    return spec.name if spec is not None else "sys_events"


# ---- writing ------------------------------------------------------------------------------


@dataclass
class WriteResult:
    """What one batch did, per table. ``written`` feeds ``bistoury_recorder_rows_total``."""

    offered: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.written.values())

    def add(self, other: WriteResult) -> None:
        for mine, theirs in (
            (self.offered, other.offered),
            (self.written, other.written),
            (self.duplicates, other.duplicates),
            (self.rejected, other.rejected),
        ):
            for table, n in theirs.items():
                mine[table] = mine.get(table, 0) + n
        room = 20 - len(self.rejected_samples)
        self.rejected_samples.extend(other.rejected_samples[: max(room, 0)])
        self.seconds += other.seconds


class WriteError(Exception):
    """DuckDB refused the batch; nothing of it was written."""


_VIEW_PREFIX = "_bistoury_batch_"


def _insert(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    data: pa.Table,
    result: WriteResult,
    *,
    dedupe_raw: bool = False,
) -> None:
    view = _VIEW_PREFIX + spec.name
    if spec.conflict in ("replace", "ignore"):
        data = data.append_column("_arrival", pa.array(range(data.num_rows), pa.int64()))
    con.register(view, data)
    try:
        cols = ", ".join(spec.columns)
        bad = con.execute(
            f"SELECT count(*) FROM {view} WHERE NOT coalesce({spec.valid_sql}, false)"
        ).fetchone()
        rejected = int(bad[0]) if bad else 0
        if rejected:
            samples = con.execute(
                f"SELECT {cols} FROM {view} WHERE NOT coalesce({spec.valid_sql}, false) LIMIT 3"
            ).fetchall()
            result.rejected[spec.name] = result.rejected.get(spec.name, 0) + rejected
            result.rejected_samples.extend(
                f"{spec.name}: {dict(zip(spec.columns, row, strict=True))!s:.300}"
                for row in samples
            )
        source = f"SELECT {cols} FROM {view} WHERE coalesce({spec.valid_sql}, false)"
        if spec.conflict in ("replace", "ignore"):
            # One row per key: the last message wins an upsert, the first one an ignore.
            order = "DESC" if spec.conflict == "replace" else "ASC"
            source += (
                f" QUALIFY row_number() OVER (PARTITION BY {', '.join(spec.key)} "
                f"ORDER BY _arrival {order}) = 1"
            )
        elif dedupe_raw:
            source += (
                " AND NOT EXISTS (SELECT 1 FROM raw_messages r"
                f" WHERE r.received_ts_ms = {view}.received_ts_ms"
                f" AND r.source = {view}.source AND r.channel = {view}.channel"
                f" AND r.coin IS NOT DISTINCT FROM {view}.coin AND r.text = {view}.text)"
            )
        verb = {"replace": "INSERT OR REPLACE", "ignore": "INSERT OR IGNORE"}.get(
            spec.conflict, "INSERT"
        )
        done = con.execute(f"{verb} INTO {spec.name} ({cols}) {source}").fetchone()
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister(view)
    written = int(done[0]) if done else 0
    offered = data.num_rows
    result.offered[spec.name] = result.offered.get(spec.name, 0) + offered
    result.written[spec.name] = result.written.get(spec.name, 0) + written
    dupes = offered - rejected - written
    if dupes:
        result.duplicates[spec.name] = result.duplicates.get(spec.name, 0) + dupes


def _reserve_seqs(con: duckdb.DuckDBPyConnection, n: int) -> list[int]:
    rows = con.execute(
        "SELECT nextval('raw_messages_seq') AS s FROM range(?) ORDER BY s", [n]
    ).fetchall()
    return [int(r[0]) for r in rows]


def write_batch(
    con: duckdb.DuckDBPyConnection,
    items: Iterable[Item],
    *,
    dedupe_raw: bool = False,
    clock: Callable[[], float] | None = None,
) -> WriteResult:
    """Write everything in ``items`` in ONE transaction: all of it is committed or none.

    Raises ``WriteError`` (after a rollback) if DuckDB refuses the batch.
    """
    import time

    now = clock or time.perf_counter
    started = now()
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(table_of(item), []).append(item)
    result = WriteResult()
    if not groups:
        return result
    con.begin()
    try:
        raws: list[RawMessage] = groups.get(RAW.name, [])
        if raws:
            _insert(
                con, RAW, _raw(raws, _reserve_seqs(con, len(raws))), result, dedupe_raw=dedupe_raw
            )
        builders: dict[str, Callable[[Any], pa.Table]] = {
            CANDLES.name: lambda xs: _columns(xs, CANDLES),
            L2.name: lambda xs: _columns(xs, L2),
            TRADES.name: _trades,
            ASSET_CTX.name: lambda xs: _columns(xs, ASSET_CTX),
            FUNDING.name: lambda xs: _columns(xs, FUNDING),
        }
        for name, build in builders.items():
            if groups.get(name):
                data = build(groups[name])
                if data.num_rows:
                    _insert(con, TABLES[name], data, result)
        signals: list[Signal] = groups.get("signals", [])
        if signals:
            from bistouryd.storage.signals import insert_signals

            insert_signals(con, signals, result)
        decisions: list[DecisionRecord] = groups.get("decisions", [])
        if decisions:
            from bistouryd.storage.decisions import insert_decisions

            insert_decisions(con, decisions, result)
        from bistouryd.storage.trading import TRADING_TABLES, insert_trading

        for spec in TRADING_TABLES.values():
            if groups.get(spec.name):
                insert_trading(con, spec, groups[spec.name], result)
        events: list[SysEvent] = groups.get("sys_events", [])
        if events:
            insert_events(con, events)
            result.offered["sys_events"] = len(events)
            result.written["sys_events"] = len(events)
        con.commit()
    except duckdb.Error as exc:
        con.rollback()
        raise WriteError(f"batch not written: {exc!s:.500}") from exc
    except BaseException:
        con.rollback()
        raise
    result.seconds = now() - started
    return result


# ---- the recorder's bounded queue ---------------------------------------------------------


class BatchQueue:
    """Items waiting to be written, bounded by rows; says when a batch is due.

    ``offer`` refuses what does not fit (the newest is dropped, the queue keeps its order)
    and counts it per table in ``dropped``: loss is counted, never silent.
    """

    def __init__(self, batch_max_rows: int, batch_max_ms: int, queue_max_rows: int):
        if batch_max_rows < 1 or batch_max_ms < 0 or queue_max_rows < batch_max_rows:
            raise ValueError("need 1 <= batch_max_rows <= queue_max_rows and batch_max_ms >= 0")
        self.batch_max_rows = batch_max_rows
        self.batch_max_ms = batch_max_ms
        self.queue_max_rows = queue_max_rows
        self._items: deque[tuple[Item, int, int]] = deque()  # (item, rows, queued at ms)
        self._rows = 0
        self.dropped: dict[str, int] = {}
        self.accepted_rows = 0

    @classmethod
    def from_config(cls, storage: Any) -> BatchQueue:
        """From a ``StorageConfig`` (typed loosely to keep this module free of config)."""
        return cls(storage.batch_max_rows, storage.batch_max_ms, storage.queue_max_rows)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def dropped_rows(self) -> int:
        return sum(self.dropped.values())

    def offer(self, item: Item, now_ms: int) -> bool:
        """Queue ``item``; False (and counted in ``dropped``) if the queue is full."""
        n = row_count(item)
        if self._rows + n > self.queue_max_rows:
            table = table_of(item)
            self.dropped[table] = self.dropped.get(table, 0) + n
            return False
        self._items.append((item, n, now_ms))
        self._rows += n
        self.accepted_rows += n
        return True

    def offer_many(self, items: Iterable[Item], now_ms: int) -> int:
        """Queue each; return how many items were dropped."""
        return sum(0 if self.offer(item, now_ms) else 1 for item in items)

    def due(self, now_ms: int) -> bool:
        """A batch should be written now: enough rows, or the oldest has waited long enough."""
        if not self._items:
            return False
        if self._rows >= self.batch_max_rows:
            return True
        return now_ms - self._items[0][2] >= self.batch_max_ms

    def due_in_ms(self, now_ms: int) -> int | None:
        """Milliseconds until ``due`` turns true on its own (None: the queue is empty)."""
        if not self._items:
            return None
        if self._rows >= self.batch_max_rows:
            return 0
        return max(0, self._items[0][2] + self.batch_max_ms - now_ms)

    def take(self) -> list[Item]:
        """Remove and return the next batch: whole items, up to ``batch_max_rows`` rows
        (at least one item, so an oversized ``Trades`` message still goes out)."""
        batch: list[Item] = []
        rows = 0
        while self._items:
            item, n, _ = self._items[0]
            if batch and rows + n > self.batch_max_rows:
                break
            self._items.popleft()
            batch.append(item)
            rows += n
        self._rows -= rows
        return batch

    def requeue(self, batch: Sequence[Item], now_ms: int) -> None:
        """Put a batch that could not be written back at the front (e.g. the disk was full
        for a moment). What no longer fits is dropped and counted."""
        for item in reversed(batch):
            n = row_count(item)
            if self._rows + n > self.queue_max_rows:
                table = table_of(item)
                self.dropped[table] = self.dropped.get(table, 0) + n
                continue
            self._items.appendleft((item, n, now_ms))
            self._rows += n
