"""The recorder: the only process that writes the DuckDB file.

System events arrive from the orchestrator over the supervision channel. They are
written in batches (``storage.batch_max_rows`` / ``storage.batch_max_ms``) and each batch
is acknowledged after its commit, so the orchestrator resends anything a crash lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import duckdb
from pydantic import BaseModel

from bistouryd.agents.base import Agent, run
from bistouryd.events import SysEvent
from bistouryd.storage.db import open_db
from bistouryd.storage.events import insert_events, query_events
from bistouryd.supervision import (
    EventsQuery,
    EventsResult,
    EventsStored,
    MetricSample,
    StoreEvents,
    sample,
)

log = logging.getLogger(__name__)


class RecorderAgent(Agent):
    name = "recorder"

    async def start(self) -> None:
        self.db_path = self.config.storage.db_path(self.state_dir)
        self.con: duckdb.DuckDBPyConnection = open_db(self.db_path)
        self._db_lock = asyncio.Lock()
        self._pending: list[SysEvent] = []
        self._flush_due = asyncio.Event()
        self._rows = 0
        self._batches = 0
        self._last_batch_s = 0.0
        log.info("recording to %s", self.db_path)
        self.spawn(self._flusher(), "flusher")

    async def on_config(self, changed: list[str]) -> None:
        if "storage.path" in changed:
            log.warning(
                "storage.path changed; the recorder keeps writing %s until a restart", self.db_path
            )

    async def handle(self, msg: BaseModel) -> None:
        if isinstance(msg, StoreEvents):
            self._pending.extend(msg.events)
            if len(self._pending) >= self.config.storage.batch_max_rows:
                self._flush_due.set()
        elif isinstance(msg, EventsQuery):
            await self._answer(msg)
        else:
            await super().handle(msg)

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._flush_due.wait(), self.config.storage.batch_max_ms / 1000
                )
            self._flush_due.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        started = time.perf_counter()
        async with self._db_lock:
            await asyncio.to_thread(self._write, batch)
        self._last_batch_s = time.perf_counter() - started
        self._rows += len(batch)
        self._batches += 1
        await self.send(EventsStored(ids=[e.id for e in batch]))

    def _write(self, batch: list[SysEvent]) -> None:
        self.con.begin()
        try:
            insert_events(self.con, batch)
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise

    async def _answer(self, query: EventsQuery) -> None:
        await self._flush()
        try:
            async with self._db_lock:
                events = await asyncio.to_thread(
                    query_events,
                    self.con,
                    limit=query.limit,
                    since_ms=query.since_ms,
                    kinds=query.kinds,
                )
            result = EventsResult(request_id=query.request_id, events=events)
        except duckdb.Error as exc:
            result = EventsResult(request_id=query.request_id, error=str(exc))
        await self.send(result)

    async def stop(self) -> None:
        await self._flush()
        self.con.close()

    def metrics(self) -> list[MetricSample]:
        return [
            sample(
                "bistoury_recorder_rows_total",
                "counter",
                "Rows committed to DuckDB",
                self._rows,
                table="sys_events",
            ),
            sample(
                "bistoury_recorder_batches_total",
                "counter",
                "Batches committed to DuckDB",
                self._batches,
            ),
            sample(
                "bistoury_recorder_last_batch_seconds",
                "gauge",
                "Time the last batch took to commit",
                self._last_batch_s,
            ),
        ]


if __name__ == "__main__":
    run(RecorderAgent)
