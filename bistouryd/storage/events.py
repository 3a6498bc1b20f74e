"""Writing and reading the ``sys_events`` table."""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb

from bistouryd.events import SysEvent
from bistouryd.storage.db import newest_rows

_COLUMNS = ("id", "ts_ms", "kind", "level", "source", "message", "details")


def insert_events(con: duckdb.DuckDBPyConnection, events: Sequence[SysEvent]) -> None:
    """Insert a batch in one statement (column lists, unnested); known ids are skipped."""
    if not events:
        return
    columns = [
        [e.id for e in events],
        [e.ts_ms for e in events],
        [e.kind for e in events],
        [e.level for e in events],
        [e.source for e in events],
        [e.message for e in events],
        [json.dumps(e.details, separators=(",", ":")) for e in events],
    ]
    unnest = ", ".join(f"unnest(${i + 1})" for i in range(len(_COLUMNS)))
    con.execute(
        f"INSERT OR IGNORE INTO sys_events ({', '.join(_COLUMNS)}) SELECT {unnest}", columns
    )


def query_events(
    con: duckdb.DuckDBPyConnection,
    *,
    limit: int,
    since_ms: int | None = None,
    kinds: Sequence[str] = (),
) -> list[SysEvent]:
    """The newest ``limit`` events (oldest first), optionally since a time and of some kinds."""
    rows = newest_rows(
        con, "sys_events", _COLUMNS, limit=limit, since_ms=since_ms, any_of=("kind", kinds)
    )
    return [
        SysEvent(
            id=r[0],
            ts_ms=r[1],
            kind=r[2],
            level=r[3],
            source=r[4],
            message=r[5],
            details=json.loads(r[6]),
        )
        for r in rows
    ]
