"""Writing and reading the ``decisions`` table (the recorder stores every ``DecisionRecord``).

The decision is flattened into columns (``action`` … ``rationale``); its ``coin`` is the
record's (a provider answer for another coin never becomes a decision). Contributions,
fallback steps and signal ids are JSON arrays. Besides listing (``query_decisions``) and
``bistoury decisions show`` (``get_decision``), the table backs the decision cache
(``cached_decision``, ``StoredDecisionCache``) and the summary ``decision_stats``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from bistouryd.llm.cache import CachedAnswer, CacheKey, MemoryCache
from bistouryd.llm.record import DecisionRecord
from bistouryd.storage.db import newest_rows
from bistouryd.storage.marketdata import TableSpec, WriteResult, _columns, _insert
from bistouryd.storage.reports import BucketOutcome, DecisionStats

DECISIONS = TableSpec(
    name="decisions",
    schema=pa.schema(
        [
            ("id", pa.string()),
            ("ts_ms", pa.int64()),
            ("coin", pa.string()),
            ("action", pa.string()),
            ("size_fraction", pa.float64()),
            ("stop_loss_pct", pa.float64()),
            ("take_profit_pct", pa.float64()),
            ("confidence", pa.float64()),
            ("rationale", pa.string()),
            ("contributions", pa.string()),
            ("provider", pa.string()),
            ("model", pa.string()),
            ("prompt_version", pa.string()),
            ("prompt_sha256", pa.string()),
            ("prompt_system", pa.string()),
            ("prompt_user", pa.string()),
            ("raw_answer", pa.string()),
            ("latency_s", pa.float64()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("fallbacks", pa.string()),
            ("signal_ids", pa.string()),
            ("cached", pa.bool_()),
            ("contaminated", pa.bool_()),
        ]
    ),
    key=("id",),
    time_column="ts_ms",
    conflict="ignore",
    valid_sql=" AND ".join(
        (
            "length(id) > 0",
            "ts_ms > 0",
            "length(coin) > 0",
            "action IN ('open_long', 'open_short', 'close', 'reduce', 'hold')",
            "size_fraction BETWEEN 0 AND 1",
            "(stop_loss_pct IS NULL OR (stop_loss_pct > 0 AND stop_loss_pct <= 0.5))",
            "(take_profit_pct IS NULL OR (take_profit_pct > 0 AND take_profit_pct <= 2))",
            "confidence BETWEEN 0 AND 1",
            "length(rationale) > 0",
            "contributions IS NOT NULL",
            "length(provider) > 0",
            "length(model) > 0",
            "prompt_version IS NOT NULL",
            "prompt_sha256 IS NOT NULL",
            "prompt_system IS NOT NULL",
            "prompt_user IS NOT NULL",
            "raw_answer IS NOT NULL",
            "(latency_s >= 0 AND isfinite(latency_s))",
            "(input_tokens IS NULL OR input_tokens >= 0)",
            "(output_tokens IS NULL OR output_tokens >= 0)",
            "(cost_usd >= 0 AND isfinite(cost_usd))",
            "fallbacks IS NOT NULL",
            "signal_ids IS NOT NULL",
            "cached IS NOT NULL",
            "contaminated IS NOT NULL",
        )
    ),
)
_COLUMNS = ", ".join(DECISIONS.columns)
MIN_PREFIX = 6
RULES = "rules"
# Confidence buckets of ``decision_stats``: [low, high), the last one closed.
CONFIDENCE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0-0.25", 0.0, 0.25),
    ("0.25-0.5", 0.25, 0.5),
    ("0.5-0.75", 0.5, 0.75),
    ("0.75-1", 0.75, 1.0),
)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


_DECISION_FIELDS = (
    "coin",
    "action",
    "size_fraction",
    "stop_loss_pct",
    "take_profit_pct",
    "confidence",
    "rationale",
)


def insert_decisions(
    con: duckdb.DuckDBPyConnection, records: Sequence[DecisionRecord], result: WriteResult
) -> None:
    """Inside the caller's transaction; a decision already stored (same id) is skipped."""
    decisions = [r.decision for r in records]
    given: dict[str, list[Any]] = {
        name: [getattr(d, name) for d in decisions] for name in _DECISION_FIELDS[1:]
    }
    given["contributions"] = [
        _json([c.model_dump(mode="json") for c in d.contributions]) for d in decisions
    ]
    given["fallbacks"] = [_json([f.model_dump(mode="json") for f in r.fallbacks]) for r in records]
    given["signal_ids"] = [_json(list(r.signal_ids)) for r in records]
    _insert(con, DECISIONS, _columns(records, DECISIONS, **given), result)


def _record(row: tuple[Any, ...]) -> DecisionRecord:
    r = dict(zip(DECISIONS.columns, row, strict=True))
    decision = {name: r[name] for name in _DECISION_FIELDS}
    decision["contributions"] = json.loads(r.pop("contributions"))
    for name in _DECISION_FIELDS[1:]:
        del r[name]
    for name in ("fallbacks", "signal_ids"):
        r[name] = json.loads(r[name])
    return DecisionRecord.model_validate({**r, "decision": decision})


def query_decisions(
    con: duckdb.DuckDBPyConnection,
    *,
    limit: int,
    coin: str | None = None,
    since_ms: int | None = None,
    provider: str | None = None,
) -> list[DecisionRecord]:
    """The newest ``limit`` decisions (oldest first), optionally of one coin or provider."""
    equal = {"coin": coin, "provider": provider}
    rows = newest_rows(
        con, "decisions", DECISIONS.columns, limit=limit, since_ms=since_ms, equal=equal
    )
    return [_record(r) for r in rows]


def get_decision(con: duckdb.DuckDBPyConnection, id_prefix: str) -> DecisionRecord | None:
    """The decision whose id starts with ``id_prefix`` (at least 6 characters), or None.

    Raises ``ValueError`` if the prefix is too short, or matches several decisions (the
    message names them, up to 10).
    """
    if len(id_prefix) < MIN_PREFIX:
        raise ValueError(
            f"decision id prefix {id_prefix!r} is too short: give at least {MIN_PREFIX} characters"
        )
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM decisions WHERE starts_with(id, ?) ORDER BY id LIMIT 11",
        [id_prefix],
    ).fetchall()
    if not rows:
        return None
    if len(rows) > 1:
        ids = ", ".join(str(r[0]) for r in rows[:10]) + (", …" if len(rows) > 10 else "")
        raise ValueError(f"decision id prefix {id_prefix!r} is ambiguous: matches {ids}")
    return _record(rows[0])


def cached_decision(
    con: duckdb.DuckDBPyConnection,
    provider: str,
    model: str,
    prompt_version: str,
    prompt_sha256: str,
) -> DecisionRecord | None:
    """The newest stored decision by ``provider``/``model`` for exactly this prompt (same
    version and hash), for reproducible replays; None if there is none. Decisions of the
    ``rules`` fallback are never cached: they are cheap to recompute and not a model's."""
    if provider == RULES:
        return None
    row = con.execute(
        f"SELECT {_COLUMNS} FROM decisions"
        " WHERE prompt_sha256 = ? AND provider = ? AND model = ? AND prompt_version = ?"
        " AND provider <> ? ORDER BY ts_ms DESC, id DESC LIMIT 1",
        [prompt_sha256, provider, model, prompt_version, RULES],
    ).fetchone()
    return _record(row) if row else None


class StoredDecisionCache:
    """The decision cache over a database's ``decisions`` table (a ``DecisionCache``):
    answers stored by earlier runs, plus those of this run, kept in memory."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.fresh = MemoryCache()
        self.hits = 0

    def get(self, key: CacheKey) -> CachedAnswer | None:
        answer = self.fresh.get(key)
        if answer is None:
            record = cached_decision(self.con, *key)
            if record is not None:
                answer = CachedAnswer(
                    record.decision, record.raw_answer, record.input_tokens, record.output_tokens
                )
        self.hits += answer is not None
        return answer

    def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        self.fresh.put(key, answer)


def decision_stats(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ms: int | None = None,
    provider: str | None = None,
) -> DecisionStats:
    """Counts, fallback rate, cost, latency and confidence of the decisions since
    ``since_ms`` (all by default), optionally of one provider."""
    conditions = [("ts_ms >= ?", since_ms), ("provider = ?", provider)]
    params: list[object] = [value for _, value in conditions if value is not None]
    used = [sql for sql, value in conditions if value is not None]
    clause = f"WHERE {' AND '.join(used)}" if used else ""
    buckets = ", ".join(
        f"count(*) FILTER (WHERE confidence >= {low} AND confidence "
        f"{'<=' if high >= 1 else '<'} {high})"
        for _, low, high in CONFIDENCE_BUCKETS
    )
    row = con.execute(
        "SELECT count(*),"
        " count(*) FILTER (WHERE cached),"
        " count(*) FILTER (WHERE json_array_length(fallbacks) > 0),"
        " coalesce(sum(cost_usd), 0),"
        " quantile_cont(latency_s, 0.5),"
        " quantile_cont(latency_s, 0.95),"
        f" {buckets}"
        f" FROM decisions {clause}",
        params,
    ).fetchone()
    assert row is not None  # an aggregate always returns one row
    total, cached, with_fallbacks, cost, p50, p95 = row[:6]

    def counts(column: str) -> dict[str, int]:
        rows = con.execute(
            f"SELECT {column}, count(*) FROM decisions {clause} GROUP BY {column}"
            f" ORDER BY count(*) DESC, {column}",
            params,
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    outcomes, realised = _outcomes(con, clause, params)
    return DecisionStats(
        total=int(total),
        by_action=counts("action"),
        by_provider=counts("provider"),
        cached=int(cached),
        fallback_rate=with_fallbacks / total if total else 0.0,
        cost_usd_total=float(cost),
        cost_usd_per_decision=float(cost) / total if total else 0.0,
        latency_p50_s=None if p50 is None else float(p50),
        latency_p95_s=None if p95 is None else float(p95),
        confidence_buckets={
            name: int(n) for (name, _, _), n in zip(CONFIDENCE_BUCKETS, row[6:], strict=True)
        },
        outcomes=outcomes,
        realised_pnl_usd=realised,
        cost_usd_per_pnl_usd=float(cost) / realised if realised > 0 else None,
    )


def _outcomes(
    con: duckdb.DuckDBPyConnection, clause: str, params: list[object]
) -> tuple[dict[str, BucketOutcome], float]:
    """Hit rate and average realised P&L (after fees) of the positions the decisions
    opened and that are closed by now, by confidence bucket; and their total."""
    where = f"{clause} AND" if clause else "WHERE"
    bucket = (
        "CASE "
        + " ".join(
            f"WHEN confidence {'<=' if high >= 1 else '<'} {high} THEN '{name}'"
            for name, _, high in CONFIDENCE_BUCKETS
        )
        + " END"
    )
    rows = con.execute(
        f"""
        WITH opened AS (
            SELECT d.id, {bucket} AS bucket,
                (SELECT coalesce(sum(sz), 0) FROM fills f
                    WHERE f.decision_id = d.id AND f.purpose = 'open') AS entered_sz,
                (SELECT coalesce(sum(sz), 0) FROM fills f WHERE f.opened_by = d.id) AS exited_sz,
                (SELECT coalesce(sum(closed_pnl_usd), 0) FROM fills f
                    WHERE f.opened_by = d.id)
                - (SELECT coalesce(sum(fee_usd), 0) FROM fills f
                    WHERE f.decision_id = d.id OR f.opened_by = d.id) AS pnl_usd
            FROM decisions d {where} action IN ('open_long', 'open_short')
        )
        SELECT bucket, count(*), count(*) FILTER (WHERE pnl_usd > 0), avg(pnl_usd), sum(pnl_usd)
        FROM opened WHERE entered_sz > 0 AND exited_sz >= entered_sz * 0.999999
        GROUP BY bucket
        """,
        params,
    ).fetchall()
    found = {str(b): (int(n), int(hits), float(avg)) for b, n, hits, avg, _ in rows}
    outcomes = {
        name: BucketOutcome(
            closed_n=found[name][0], hits=found[name][1], avg_pnl_usd=found[name][2]
        )
        for name, _, _ in CONFIDENCE_BUCKETS
        if name in found
    }
    return outcomes, float(sum(r[4] for r in rows))
