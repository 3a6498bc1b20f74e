"""Messages between the orchestrator and its agents on the supervision channel.

The channel is a ROUTER socket of the orchestrator (``agents.sock``) with one DEALER per
agent whose identity is the agent's name. It carries what must not be lost or delayed
behind market data: heartbeats with the agent's counters, configuration and mode
updates, stop requests, log records, system events and their acknowledgements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bistouryd.bus import BusStats
from bistouryd.config import Config
from bistouryd.events import SysEvent
from bistouryd.exchange.orders import Fill
from bistouryd.llm.record import DecisionRecord
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.state import Mode, Pausable
from bistouryd.storage.reports import DataStatus, DecisionOutcome, DecisionStats
from bistouryd.strategies.base import Signal


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- agent → orchestrator ------------------------------------------------------------


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    name: str
    pid: int


class MetricSample(_Msg):
    """One Prometheus sample an agent reports; the orchestrator exports it.

    Counters restart from zero with a new agent process; the orchestrator carries the
    previous process's total forward so that exported ``_total`` series never go down.
    """

    # A histogram's last bucket is +Inf: send it as the JSON constant Infinity, not null.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    name: str = Field(pattern=r"^bistoury_[a-z0-9_]+$")
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float = Field(description="the value; for a histogram, the sum of observations")
    buckets: list[tuple[float, float]] | None = Field(
        default=None, description="histogram only: (upper bound, cumulative count), +Inf last"
    )

    def plus(self, other: MetricSample) -> MetricSample:
        """This sample with ``other`` (same series) added: carried totals, merged processes."""
        if self.buckets is None or other.buckets is None:
            return self.model_copy(update={"value": self.value + other.value})
        mine, theirs = dict(self.buckets), dict(other.buckets)
        buckets = [(le, mine.get(le, 0.0) + theirs.get(le, 0.0)) for le in sorted(mine | theirs)]
        return self.model_copy(update={"value": self.value + other.value, "buckets": buckets})


class Histogram:
    """Observations bucketed in the agent, reported as one cumulative ``MetricSample``."""

    def __init__(
        self, name: str, help: str, bounds: tuple[float, ...], labels: dict[str, str] | None = None
    ):
        self.name, self.help = name, help
        self.labels = labels or {}
        self.bounds = (*sorted(bounds), float("inf"))
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def sample(self) -> MetricSample:
        cumulative, running = [], 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return MetricSample(
            name=self.name,
            kind="histogram",
            help=self.help,
            labels=self.labels,
            value=self.sum,
            buckets=cumulative,
        )


class HistogramFamily:
    """One histogram per value of one label (e.g. per strategy), created on first use."""

    def __init__(self, name: str, help: str, bounds: tuple[float, ...], label: str):
        self.name, self.help, self.bounds, self.label = name, help, bounds, label
        self.by_value: dict[str, Histogram] = {}

    def observe(self, value: str, x: float) -> None:
        hist = self.by_value.get(value)
        if hist is None:
            hist = self.by_value[value] = Histogram(
                self.name, self.help, self.bounds, labels={self.label: value}
            )
        hist.observe(x)

    def samples(self) -> list[MetricSample]:
        return [hist.sample() for _, hist in sorted(self.by_value.items())]


def sample(
    name: str, kind: Literal["counter", "gauge"], help: str, value: float, /, **labels: str
) -> MetricSample:
    """A counter or gauge sample; labels are keyword arguments (``kind`` included)."""
    return MetricSample(name=name, kind=kind, help=help, labels=labels, value=value)


def labelled(
    name: str,
    kind: Literal["counter", "gauge"],
    help: str,
    values: Mapping[tuple[str, ...], float],
    labels: tuple[str, ...],
) -> list[MetricSample]:
    """One sample per key of ``values``; a key holds the values of ``labels``, in order."""
    return [
        MetricSample(
            name=name, kind=kind, help=help, labels=dict(zip(labels, key, strict=True)), value=v
        )
        for key, v in sorted(values.items())
    ]


def bus_samples(stats: BusStats) -> list[MetricSample]:
    """One process's bus counters as samples."""
    out = [
        sample(
            "bistoury_bus_messages_total",
            "counter",
            "Messages published on the bus",
            count,
            topic_class=cls,
        )
        for cls, count in sorted(stats.published.items())
    ]
    out.append(
        sample(
            "bistoury_bus_received_total",
            "counter",
            "Messages received from the bus",
            stats.received,
        )
    )
    out.append(
        sample(
            "bistoury_bus_dropped_total",
            "counter",
            "Messages lost on the bus (gaps in publishers' sequence numbers)",
            stats.dropped,
        )
    )
    out.append(
        sample(
            "bistoury_store_sent_total",
            "counter",
            "Messages sent to the recorder on the store channel",
            stats.store_sent,
        )
    )
    out.extend(
        sample(
            "bistoury_store_dropped_total",
            "counter",
            "Messages for the recorder dropped because its queue was full",
            count,
            topic_class=cls,
        )
        for cls, count in sorted(stats.store_dropped.items())
    )
    out.append(
        sample(
            "bistoury_bus_invalid_total",
            "counter",
            "Malformed bus messages skipped by subscribers",
            stats.invalid,
        )
    )
    return out


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    name: str
    pid: int
    config_sha256: str
    metrics: list[MetricSample] = Field(default_factory=list)


class ReportEvent(_Msg):
    type: Literal["event"] = "event"
    event: SysEvent


class LogRecord(_Msg):
    type: Literal["log"] = "log"
    level: int
    logger: str
    message: str
    created: float


class TradingPause(_Msg):
    """An agent asks to pause (or resume) trading, e.g. on a daily-loss breach; the
    orchestrator changes the daemon state as ``bistouryctl pause trading`` would."""

    type: Literal["trading_pause"] = "trading_pause"
    pause: bool
    reason: str


class FlattenReport(_Msg):
    """What the positions agent did on an emergency stop."""

    type: Literal["flatten_report"] = "flatten_report"
    canceled_orders: int = 0
    closed: dict[str, float] = Field(default_factory=dict, description="coin -> size closed")
    remaining: dict[str, float] = Field(
        default_factory=dict, description="coin -> signed size still open (should be none)"
    )
    snapshot_path: str | None = None
    errors: list[str] = Field(default_factory=list)


class EventsStored(_Msg):
    """The recorder committed these events."""

    type: Literal["stored"] = "stored"
    ids: list[str]


class EventsResult(_Msg):
    type: Literal["events_result"] = "events_result"
    request_id: str
    events: list[SysEvent] = Field(default_factory=list)
    error: str | None = None


class DataStatusResult(_Msg):
    type: Literal["data_status_result"] = "data_status_result"
    request_id: str
    status: DataStatus | None = None
    error: str | None = None


class SignalsResult(_Msg):
    type: Literal["signals_result"] = "signals_result"
    request_id: str
    signals: list[Signal] = Field(default_factory=list)
    error: str | None = None


class DecisionsResult(_Msg):
    type: Literal["decisions_result"] = "decisions_result"
    request_id: str
    decisions: list[DecisionRecord] = Field(default_factory=list)
    stats: DecisionStats | None = None
    outcome: DecisionOutcome | None = None
    error: str | None = None


class TradingResult(_Msg):
    type: Literal["trading_result"] = "trading_result"
    request_id: str
    portfolio: PortfolioSnapshot | None = None
    fills: list[Fill] = Field(default_factory=list)
    rationales: dict[str, str] = Field(
        default_factory=dict, description="decision id -> the rationale that led to a fill"
    )
    error: str | None = None


RecorderAnswer = EventsResult | DataStatusResult | SignalsResult | DecisionsResult | TradingResult


FromAgent = Annotated[
    Hello
    | Heartbeat
    | ReportEvent
    | LogRecord
    | TradingPause
    | FlattenReport
    | EventsStored
    | EventsResult
    | DataStatusResult
    | SignalsResult
    | DecisionsResult
    | TradingResult,
    Field(discriminator="type"),
]


# ---- orchestrator → agent ------------------------------------------------------------


class Init(_Msg):
    type: Literal["init"] = "init"
    config: Config
    secrets: dict[str, str | None]
    config_sha256: str
    mode: Mode
    paused: list[Pausable]
    collect_pairs: list[str] | None = None
    state_dir: str
    live_risk_limit_usd: float | None = None  # set while a confirmed live session runs


class ConfigUpdate(_Msg):
    type: Literal["config"] = "config"
    config: Config
    secrets: dict[str, str | None]
    config_sha256: str
    changed: list[str]


class ModeUpdate(_Msg):
    type: Literal["mode"] = "mode"
    mode: Mode
    paused: list[Pausable]
    collect_pairs: list[str] | None = None
    live_risk_limit_usd: float | None = None


class Stop(_Msg):
    type: Literal["stop"] = "stop"
    reason: str


class Flatten(_Msg):
    """Emergency stop: cancel every order and close every position now."""

    type: Literal["flatten"] = "flatten"
    reason: str


class StoreEvents(_Msg):
    type: Literal["store"] = "store"
    events: list[SysEvent]


class EventsQuery(_Msg):
    type: Literal["events_query"] = "events_query"
    request_id: str
    limit: int
    since_ms: int | None = None
    kinds: list[str] = Field(default_factory=list)


class DataStatusQuery(_Msg):
    type: Literal["data_status_query"] = "data_status_query"
    request_id: str
    gaps_since_ms: int | None = None


class SignalsQuery(_Msg):
    type: Literal["signals_query"] = "signals_query"
    request_id: str
    limit: int
    coin: str | None = None
    strategy: str | None = None
    since_ms: int | None = None


class DecisionsQuery(_Msg):
    """``view``: the newest ``limit`` (list), one by id prefix (show), or a summary (stats)."""

    type: Literal["decisions_query"] = "decisions_query"
    request_id: str
    view: Literal["list", "show", "stats"]
    limit: int = 20
    id_prefix: str | None = None
    coin: str | None = None
    provider: str | None = None
    since_ms: int | None = None


class TradingQuery(_Msg):
    """``positions``: the newest account snapshot; ``trades``: the newest fills."""

    type: Literal["trading_query"] = "trading_query"
    request_id: str
    view: Literal["positions", "trades"]
    limit: int = 50
    coin: str | None = None
    since_ms: int | None = None


RecorderQuery = EventsQuery | DataStatusQuery | SignalsQuery | DecisionsQuery | TradingQuery

ToAgent = Annotated[
    Init
    | ConfigUpdate
    | ModeUpdate
    | Stop
    | Flatten
    | StoreEvents
    | EventsQuery
    | DataStatusQuery
    | SignalsQuery
    | DecisionsQuery
    | TradingQuery,
    Field(discriminator="type"),
]

from_agent: TypeAdapter[FromAgent] = TypeAdapter(FromAgent)
to_agent: TypeAdapter[ToAgent] = TypeAdapter(ToAgent)
