"""The recorder: the only process that writes the DuckDB file.

Market data arrives from the bus (``md.*`` typed, ``raw.*`` as received) and system
events from the orchestrator over the supervision channel. Everything waits in one
bounded queue and is written in batches (``storage.batch_max_rows`` /
``storage.batch_max_ms``), each batch in one transaction; system events are
acknowledged after their commit so the orchestrator resends whatever a crash lost.
Market data that finds the queue full is dropped and counted, never lost silently;
system events are never dropped here. Old rows move to Parquet every
``storage.retention_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from pydantic import BaseModel

from bistouryd.agents.base import Agent, run
from bistouryd.bus import StorePuller
from bistouryd.events import SysEvent
from bistouryd.exchange.orders import Fill, FundingPayment, OrderRequest, OrderUpdate, RiskRefusal
from bistouryd.llm.record import DecisionRecord
from bistouryd.market import AssetCtx, Candle, FundingRate, L2Book, RawMessage, Trades
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.storage.db import open_db
from bistouryd.storage.decisions import decision_stats, get_decision, query_decisions
from bistouryd.storage.events import query_events
from bistouryd.storage.marketdata import BatchQueue, Item, WriteError, WriteResult, write_batch
from bistouryd.storage.retention import RetentionSettings, refresh_views, run_retention
from bistouryd.storage.signals import query_signals
from bistouryd.storage.status import compute_status
from bistouryd.storage.trading import decision_outcome, fills_with_rationales, latest_portfolio
from bistouryd.strategies.base import Signal
from bistouryd.supervision import (
    DataStatusQuery,
    DataStatusResult,
    DecisionsQuery,
    DecisionsResult,
    EventsQuery,
    EventsResult,
    EventsStored,
    Histogram,
    MetricSample,
    SignalsQuery,
    SignalsResult,
    StoreEvents,
    TradingQuery,
    TradingResult,
    sample,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

STORABLE = (
    Candle,
    L2Book,
    Trades,
    AssetCtx,
    FundingRate,
    RawMessage,
    Signal,
    DecisionRecord,
    OrderRequest,
    OrderUpdate,
    Fill,
    FundingPayment,
    RiskRefusal,
    PortfolioSnapshot,
)
SIZES_EVERY_S = 10.0
YIELD_EVERY = 200
BACKLOG_BATCHES = 2  # batches queued here before the recorder stops taking more
RETRY_AFTER_S = 1.0
BATCH_SECONDS_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RecorderAgent(Agent):
    name = "recorder"

    async def start(self) -> None:
        storage = self.config.storage
        self.db_path = storage.db_path(self.state_dir)
        self.parquet_dir = storage.parquet_path(self.state_dir)
        self.con: duckdb.DuckDBPyConnection = open_db(self.db_path)
        refresh_views(self.con, self.parquet_dir)
        self._db_lock = asyncio.Lock()
        self.queue = BatchQueue.from_config(storage)
        self._events: list[SysEvent] = []
        self._due = asyncio.Event()
        self._written = asyncio.Event()
        self.totals = WriteResult()
        self.failed_batches = 0
        self.batch_seconds = Histogram(
            "bistoury_recorder_batch_seconds", "Time to write one batch", BATCH_SECONDS_BOUNDS
        )
        self.sizes: dict[str, int] = {}
        self.incoming = StorePuller(self.ctx, self.paths, self.bus_stats)
        log.info("recording to %s", self.db_path)
        self.spawn(self._receive_market(), "market-data")
        self.spawn(self._flusher(), "flusher")
        self.spawn(self._retention(), "retention")
        self.spawn(self._measure_sizes(), "sizes")

    async def on_config(self, changed: list[str]) -> None:
        for key in ("storage.path", "storage.parquet_dir"):
            if key in changed:
                log.warning("%s changed; the recorder keeps using the old one until a restart", key)
        storage = self.config.storage
        self.queue.batch_max_rows = storage.batch_max_rows
        self.queue.batch_max_ms = storage.batch_max_ms
        self.queue.queue_max_rows = storage.queue_max_rows

    async def handle(self, msg: BaseModel) -> None:
        if isinstance(msg, StoreEvents):
            self._events.extend(msg.events)
            self._due.set()
        elif isinstance(msg, EventsQuery):
            await self._answer_events(msg)
        elif isinstance(msg, DataStatusQuery):
            await self._answer_status(msg)
        elif isinstance(msg, SignalsQuery):
            await self._answer_signals(msg)
        elif isinstance(msg, DecisionsQuery):
            await self._answer_decisions(msg)
        elif isinstance(msg, TradingQuery):
            await self._answer_trading(msg)
        else:
            await super().handle(msg)

    # ---- writing ---------------------------------------------------------------------

    async def _receive_market(self) -> None:
        """Take what senders queued for us, but only while our own queue has room: the
        rest waits in the senders' store channel, where a crash of ours cannot lose it."""
        taken = 0
        while True:
            limit = self.config.storage.batch_max_rows
            while self.queue.rows >= BACKLOG_BATCHES * limit:
                self._due.set()
                self._written.clear()
                await self._written.wait()
            _, envelope = await self.incoming.recv()
            if isinstance(envelope.body, STORABLE):
                self.queue.offer(envelope.body, _now_ms())
            if self.queue.rows >= limit:
                self._due.set()
            taken += 1
            if taken % YIELD_EVERY == 0:
                # A ready socket never suspends ``recv``: let heartbeats and writes run.
                await asyncio.sleep(0)

    async def _flusher(self) -> None:
        while True:
            wait_ms = self.queue.due_in_ms(_now_ms())
            timeout = self.config.storage.batch_max_ms / 1000 if wait_ms is None else wait_ms / 1000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._due.wait(), timeout)
            self._due.clear()
            if self._events or self.queue.due(_now_ms()):
                await self._flush()

    async def _flush(self, everything: bool = False) -> None:
        """Write the next batch (all queued batches with ``everything``)."""
        while True:
            batch: list[Item] = [*self.queue.take(), *self._events]
            events, self._events = self._events, []
            if not batch:
                return
            try:
                async with self._db_lock:
                    result = await asyncio.to_thread(write_batch, self.con, batch)
            except WriteError as exc:
                self.failed_batches += 1
                log.error(
                    "Writing to %s failed: %s\n  → check free disk space and the file's "
                    "permissions; the batch is retried",
                    self.db_path,
                    exc,
                )
                self._events = events + self._events
                self.queue.requeue([b for b in batch if not isinstance(b, SysEvent)], _now_ms())
                await asyncio.sleep(RETRY_AFTER_S)
                return
            self.totals.add(result)
            self._written.set()
            self.batch_seconds.observe(result.seconds)
            if result.rejected_samples:
                log.warning(
                    "rows refused by the schema (first of them): %s",
                    "; ".join(result.rejected_samples[:3]),
                )
            if events:
                await self.send(EventsStored(ids=[e.id for e in events]))
            if not everything or not self.queue.rows:
                return

    # ---- queries ---------------------------------------------------------------------

    async def _answer_events(self, query: EventsQuery) -> None:
        await self._flush()
        rid = query.request_id
        try:
            events = await self._read(
                query_events, limit=query.limit, since_ms=query.since_ms, kinds=query.kinds
            )
            await self.send(EventsResult(request_id=rid, events=events))
        except duckdb.Error as exc:
            await self.send(EventsResult(request_id=rid, error=str(exc)))

    async def _answer_signals(self, query: SignalsQuery) -> None:
        await self._flush()
        rid = query.request_id
        try:
            signals = await self._read(
                query_signals,
                limit=query.limit,
                coin=query.coin,
                strategy=query.strategy,
                since_ms=query.since_ms,
            )
            await self.send(SignalsResult(request_id=rid, signals=signals))
        except duckdb.Error as exc:
            await self.send(SignalsResult(request_id=rid, error=str(exc)))

    async def _answer_decisions(self, q: DecisionsQuery) -> None:
        await self._flush()
        rid = q.request_id
        try:
            if q.view == "stats":
                stats = await self._read(decision_stats, since_ms=q.since_ms, provider=q.provider)
                await self.send(DecisionsResult(request_id=rid, stats=stats))
                return
            if q.view == "show":
                found = await self._read(get_decision, id_prefix=q.id_prefix or "")
                outcome = (
                    await self._read(decision_outcome, decision_id=found.id) if found else None
                )
                await self.send(
                    DecisionsResult(
                        request_id=rid, decisions=[found] if found else [], outcome=outcome
                    )
                )
                return
            records = await self._read(
                query_decisions,
                limit=q.limit,
                coin=q.coin,
                since_ms=q.since_ms,
                provider=q.provider,
            )
            await self.send(DecisionsResult(request_id=rid, decisions=records))
        except (duckdb.Error, ValueError) as exc:
            await self.send(DecisionsResult(request_id=rid, error=str(exc)))

    async def _answer_trading(self, q: TradingQuery) -> None:
        await self._flush()
        rid = q.request_id
        try:
            if q.view == "positions":
                portfolio = await self._read(latest_portfolio)
                await self.send(TradingResult(request_id=rid, portfolio=portfolio))
                return
            fills, rationales = await self._read(
                fills_with_rationales, limit=q.limit, coin=q.coin, since_ms=q.since_ms
            )
            await self.send(TradingResult(request_id=rid, fills=fills, rationales=rationales))
        except duckdb.Error as exc:
            await self.send(TradingResult(request_id=rid, error=str(exc)))

    async def _answer_status(self, query: DataStatusQuery) -> None:
        rid = query.request_id
        try:
            status = await self._read(
                compute_status,
                db_path=self.db_path,
                parquet_dir=self.parquet_dir,
                gaps_since_ms=query.gaps_since_ms,
            )
            await self.send(DataStatusResult(request_id=rid, status=status))
        except duckdb.Error as exc:
            await self.send(DataStatusResult(request_id=rid, error=str(exc)))

    async def _read(self, query: Callable[..., T], **params: Any) -> T:
        """Run ``query(con, **params)`` off the loop, between writes."""
        async with self._db_lock:
            return await asyncio.to_thread(query, self.con, **params)

    # ---- upkeep ----------------------------------------------------------------------

    async def _retention(self) -> None:
        while True:
            await asyncio.sleep(self.config.storage.retention_interval_s)
            settings = RetentionSettings.from_config(self.config.storage, self.state_dir)
            async with self._db_lock:
                report = await asyncio.to_thread(run_retention, self.con, _now_ms(), settings)
            if report.moved_rows:
                log.info(
                    "moved %d old rows to Parquet in %s", report.moved_rows, settings.parquet_dir
                )
            for error in report.errors:
                log.error(
                    "Moving old rows to Parquet failed: %s\n  → check free disk space; "
                    "the rows stay in DuckDB and the move is retried",
                    error,
                )

    async def _measure_sizes(self) -> None:
        while True:
            self.sizes = await asyncio.to_thread(_sizes, self.db_path, self.parquet_dir)
            await asyncio.sleep(SIZES_EVERY_S)

    async def stop(self) -> None:
        self.incoming.close()
        await self._flush(everything=True)
        self.con.close()

    def metrics(self) -> list[MetricSample]:
        def per_table(name: str, help: str, counts: dict[str, int]) -> list[MetricSample]:
            return [sample(name, "counter", help, n, table=t) for t, n in sorted(counts.items())]

        return [
            *per_table(
                "bistoury_recorder_rows_total", "Rows committed to DuckDB", self.totals.written
            ),
            *per_table(
                "bistoury_recorder_dropped_total",
                "Rows dropped because the write queue was full",
                self.queue.dropped,
            ),
            *per_table(
                "bistoury_recorder_rejected_total",
                "Rows refused by the schema's constraints",
                self.totals.rejected,
            ),
            *(
                sample("bistoury_storage_bytes", "gauge", "Bytes on disk", n, kind=kind)
                for kind, n in sorted(self.sizes.items())
            ),
            sample(
                "bistoury_recorder_queue_rows",
                "gauge",
                "Rows waiting to be written",
                self.queue.rows,
            ),
            sample(
                "bistoury_recorder_failed_batches_total",
                "counter",
                "Batches DuckDB refused (retried)",
                self.failed_batches,
            ),
            self.batch_seconds.sample(),
        ]


def _sizes(db_path: Path, parquet_dir: Path) -> dict[str, int]:
    wal = Path(f"{db_path}.wal")
    parquet = sum(p.stat().st_size for p in parquet_dir.rglob("*.parquet"))
    return {
        "duckdb": db_path.stat().st_size if db_path.exists() else 0,
        "wal": wal.stat().st_size if wal.exists() else 0,
        "parquet": parquet,
    }


if __name__ == "__main__":
    run(RecorderAgent)
