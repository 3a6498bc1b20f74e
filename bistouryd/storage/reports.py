"""What the storage layer reports, as plain models.

Kept apart from the code that computes them so that the orchestrator, which relays a
``DataStatus`` from the recorder to the client, does not load DuckDB and pyarrow.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Gap(BaseModel):
    after_ts_ms: int
    before_ts_ms: int
    missing_n: int | None = None  # candles and funding: rows that should be there


class SeriesStatus(BaseModel):
    table: str
    coin: str | None
    interval: str | None = None
    rows: int
    rows_db: int
    rows_parquet: int
    first_ts_ms: int | None
    last_ts_ms: int | None
    gaps_checked: bool
    gaps_n: int = 0
    missing_n: int | None = None
    gaps: list[Gap] = []  # the most recent ones, newest first
    parquet_bytes: int = 0


class DataStatus(BaseModel):
    generated_ts_ms: int
    db_path: str | None
    db_bytes: int | None
    parquet_dir: str | None
    parquet_bytes: int
    schema_version: int
    gaps_since_ts_ms: int | None
    tables: dict[str, int]  # rows per table, DuckDB and Parquet together
    series: list[SeriesStatus]


class DecisionStats(BaseModel):
    """A summary of stored decisions (``bistoury decisions stats``).

    ``fallback_rate``: the share of decisions with at least one fallback step (a provider
    that failed or was skipped first). ``latency_*_s``: continuous quantiles, None when
    there are no decisions. ``confidence_buckets``: decisions per confidence range,
    [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1]. Hit rate and realised P&L are not
    here: they need the positions the decisions led to, and come with them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: int
    by_action: dict[str, int]
    by_provider: dict[str, int]
    cached: int
    fallback_rate: float
    cost_usd_total: float
    cost_usd_per_decision: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    confidence_buckets: dict[str, int]
