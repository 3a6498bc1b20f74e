"""Prometheus metrics, served by the orchestrator on ``metrics.host:metrics.port``.

The orchestrator owns the only registry. Agents report their samples with their
heartbeats (``MetricSample``) and the orchestrator exports them, so no multiprocess
directory is needed and a dead agent's counters are not lost: ``CarriedSamples`` keeps
each counter's total across the agent's restarts. Samples of the same name and labels
from several processes (the bus counters, for instance) are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bistouryd.bus import BusStats
from bistouryd.protocol import MODES
from bistouryd.supervision import MetricSample, bus_samples

_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(s: MetricSample) -> _Key:
    return s.name, tuple(sorted(s.labels.items()))


@dataclass
class CarriedSamples:
    """An agent's samples across its process restarts; counters never go down."""

    carried: dict[_Key, MetricSample] = field(default_factory=dict)
    current: dict[_Key, MetricSample] = field(default_factory=dict)

    def update(self, samples: Iterable[MetricSample]) -> None:
        self.current = {_key(s): s for s in samples}

    def process_exited(self) -> None:
        for key, s in self.current.items():
            if s.kind != "gauge":
                old = self.carried.get(key)
                self.carried[key] = old.plus(s) if old is not None else s
        self.current = {}

    def export(self) -> list[MetricSample]:
        out = []
        for key in self.carried.keys() | self.current.keys():
            now = self.current.get(key)
            old = self.carried.get(key)
            if now is not None and now.kind != "gauge" and old is not None:
                out.append(old.plus(now))
            elif now is not None:
                out.append(now)
            elif old is not None:
                out.append(old)
        return out


@dataclass(frozen=True)
class AgentView:
    """What the orchestrator knows of one agent, as exported."""

    name: str
    up: bool
    restarts: int
    heartbeat_age_s: float | None
    rss_bytes: float | None
    cpu_seconds_total: float
    samples: list[MetricSample]


class _AgentCollector(Collector):
    def __init__(self, agents: Callable[[], list[AgentView]], own_bus: BusStats):
        self._agents = agents
        self._own_bus = own_bus

    def collect(self) -> Iterator[Metric]:
        views = self._agents()
        up = GaugeMetricFamily(
            "bistoury_agent_up", "1 while the agent heartbeats", labels=["agent"]
        )
        restarts = CounterMetricFamily(
            "bistoury_agent_restarts", "Times the agent was restarted", labels=["agent"]
        )
        age = GaugeMetricFamily(
            "bistoury_agent_heartbeat_age_seconds",
            "Time since the agent's last heartbeat",
            labels=["agent"],
        )
        rss = GaugeMetricFamily(
            "bistoury_agent_resident_memory_bytes",
            "Resident memory of the agent process",
            labels=["agent"],
        )
        cpu = CounterMetricFamily(
            "bistoury_agent_cpu_seconds", "CPU time used by the agent's processes", labels=["agent"]
        )
        for v in views:
            up.add_metric([v.name], 1.0 if v.up else 0.0)
            restarts.add_metric([v.name], v.restarts)
            if v.heartbeat_age_s is not None:
                age.add_metric([v.name], v.heartbeat_age_s)
            if v.rss_bytes is not None:
                rss.add_metric([v.name], v.rss_bytes)
            cpu.add_metric([v.name], v.cpu_seconds_total)
        yield from (up, restarts, age, rss, cpu)
        yield from _merge([s for v in views for s in v.samples] + bus_samples(self._own_bus))


def _merge(samples: list[MetricSample]) -> Iterator[Metric]:
    """Group samples into families, summing equal name+labels from different processes."""
    families: dict[str, tuple[MetricSample, dict[tuple[tuple[str, str], ...], MetricSample]]] = {}
    for s in samples:
        first, series = families.setdefault(s.name, (s, {}))
        if first.kind != s.kind:
            continue
        labels = tuple(sorted(s.labels.items()))
        series[labels] = series[labels].plus(s) if labels in series else s
    for name, (first, series) in sorted(families.items()):
        label_names = sorted(first.labels)
        family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        if first.kind == "counter":
            family = CounterMetricFamily(
                name.removesuffix("_total"), first.help, labels=label_names
            )
        elif first.kind == "histogram":
            family = HistogramMetricFamily(name, first.help, labels=label_names)
        else:
            family = GaugeMetricFamily(name, first.help, labels=label_names)
        for labels, s in sorted(series.items()):
            if [k for k, _ in labels] != label_names:
                continue
            values = [v for _, v in labels]
            if isinstance(family, HistogramMetricFamily):
                buckets = [
                    ("+Inf" if le == float("inf") else repr(le), n) for le, n in s.buckets or []
                ]
                family.add_metric(values, buckets, s.value)
            else:
                family.add_metric(values, s.value)
        yield family


class Metrics:
    """The registry and the orchestrator's own metrics."""

    def __init__(self, agents: Callable[[], list[AgentView]], own_bus: BusStats):
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
        self.registry = CollectorRegistry()
        self.up = Gauge("bistoury_up", "1 while the daemon runs", registry=self.registry)
        self.mode = Gauge(
            "bistoury_mode", "1 for the current mode", ["mode"], registry=self.registry
        )
        self.control_requests = Counter(
            "bistoury_control_requests",
            "Control socket requests",
            ["command", "result"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "bistoury_reloads", "Configuration reloads", ["result"], registry=self.registry
        )
        self.events_dropped = Counter(
            "bistoury_events_dropped",
            "System events dropped because the recorder was away too long",
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.registry.register(_AgentCollector(agents, own_bus))
        self.up.set(1)
        self._server: Any = None
        self._thread: Any = None

    def set_mode(self, mode: str) -> None:
        for m in MODES:
            self.mode.labels(mode=m).set(1 if m == mode else 0)

    def serve(self, host: str, port: int) -> None:
        """Start serving /metrics; raises OSError if the address is taken."""
        self.close()
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None
