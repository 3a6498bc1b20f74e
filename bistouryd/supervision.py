"""Messages between the orchestrator and its agents on the supervision channel.

The channel is a ROUTER socket of the orchestrator (``agents.sock``) with one DEALER per
agent whose identity is the agent's name. It carries what must not be lost or delayed
behind market data: heartbeats with the agent's counters, configuration and mode
updates, stop requests, log records, system events and their acknowledgements.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bistouryd.bus import BusStats
from bistouryd.config import Config
from bistouryd.events import SysEvent
from bistouryd.state import Mode, Pausable


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

    name: str = Field(pattern=r"^bistoury_[a-z0-9_]+$")
    kind: Literal["counter", "gauge"]
    help: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


def sample(
    name: str, kind: Literal["counter", "gauge"], help: str, value: float, **labels: str
) -> MetricSample:
    return MetricSample(name=name, kind=kind, help=help, labels=labels, value=value)


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


class EventsStored(_Msg):
    """The recorder committed these events."""

    type: Literal["stored"] = "stored"
    ids: list[str]


class EventsResult(_Msg):
    type: Literal["events_result"] = "events_result"
    request_id: str
    events: list[SysEvent] = Field(default_factory=list)
    error: str | None = None


FromAgent = Annotated[
    Hello | Heartbeat | ReportEvent | LogRecord | EventsStored | EventsResult,
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


class Stop(_Msg):
    type: Literal["stop"] = "stop"
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


ToAgent = Annotated[
    Init | ConfigUpdate | ModeUpdate | Stop | StoreEvents | EventsQuery,
    Field(discriminator="type"),
]

from_agent: TypeAdapter[FromAgent] = TypeAdapter(FromAgent)
to_agent: TypeAdapter[ToAgent] = TypeAdapter(ToAgent)
