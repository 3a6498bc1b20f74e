"""What the storage layer reports, as plain models.

Kept apart from the code that computes them so that the orchestrator, which relays a
``DataStatus`` from the recorder to the client, does not load DuckDB and pyarrow.
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field

from bistouryd.exchange.orders import Fill, OrderRequest, OrderUpdate, RiskRefusal


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


class BucketOutcome(BaseModel):
    """The closed positions opened by decisions of one confidence range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    closed_n: int
    hits: int = Field(description="closed with a profit after fees")
    avg_pnl_usd: float

    @property
    def hit_rate(self) -> float:
        return self.hits / self.closed_n if self.closed_n else 0.0


class DecisionStats(BaseModel):
    """A summary of stored decisions (``bistoury decisions stats``).

    ``fallback_rate``: the share of decisions with at least one fallback step (a provider
    that failed or was skipped first). ``latency_*_s``: continuous quantiles, None when
    there are no decisions. ``confidence_buckets``: decisions per confidence range,
    [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1]. ``outcomes``: per range, the
    positions opened by those decisions that are closed, with their hit rate and average
    realised P&L after fees (a calibrated model's hit rate rises with its confidence).
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
    outcomes: dict[str, BucketOutcome] = Field(default_factory=dict)
    realised_pnl_usd: float = 0.0
    cost_usd_per_pnl_usd: float | None = Field(
        default=None, description="model cost per dollar of realised P&L (None: no profit)"
    )

    @property
    def calibrated(self) -> bool | None:
        """Whether the hit rate rises (never falls) with confidence; None below two ranges."""
        rates = [o.hit_rate for o in self.outcomes.values() if o.closed_n]
        if len(rates) < 2:
            return None
        return all(a <= b for a, b in itertools.pairwise(rates))


class DecisionOutcome(BaseModel):
    """What followed one decision: its orders and what became of them, their fills, the
    refusal if the risk engine said no, and the fills that later reduced the position it
    opened (its stop, its target, a later close)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_id: str
    orders: list[OrderRequest] = Field(default_factory=list)
    updates: list[OrderUpdate] = Field(default_factory=list)
    fills: list[Fill] = Field(default_factory=list)
    closing_fills: list[Fill] = Field(default_factory=list)
    refusals: list[RiskRefusal] = Field(default_factory=list)
    open_sz: float = Field(default=0.0, description="entered size not yet closed")
    closed_pnl_usd: float = Field(default=0.0, description="before fees")
    fees_usd: float = Field(default=0.0, description="on every fill of the position")
    realised_pnl_usd: float = Field(default=0.0, description="closed P&L after fees")
