"""bistouryd.metrics: carried counters, the exposition and the HTTP endpoint."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bistouryd.bus import BusStats
from bistouryd.metrics import AgentView, CarriedSamples, Metrics
from bistouryd.protocol import MODES
from bistouryd.supervision import bus_samples, sample

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def values(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def exported(carried: CarriedSamples) -> dict[str, float]:
    return {s.name: s.value for s in carried.export()}


# ---- CarriedSamples ---------------------------------------------------------------------


def test_counters_carried_across_restart() -> None:
    carried = CarriedSamples()
    carried.update(
        [sample("bistoury_x_total", "counter", "x", 5), sample("bistoury_g", "gauge", "g", 3)]
    )
    assert exported(carried) == {"bistoury_x_total": 5, "bistoury_g": 3}
    carried.process_exited()
    # Between processes the counter keeps its total, the gauge is gone.
    assert exported(carried) == {"bistoury_x_total": 5}
    carried.update(
        [sample("bistoury_x_total", "counter", "x", 2), sample("bistoury_g", "gauge", "g", 1)]
    )
    assert exported(carried) == {"bistoury_x_total": 7, "bistoury_g": 1}
    carried.update([sample("bistoury_x_total", "counter", "x", 4)])
    assert exported(carried) == {"bistoury_x_total": 9}
    carried.process_exited()
    carried.update([sample("bistoury_x_total", "counter", "x", 1)])
    assert exported(carried) == {"bistoury_x_total": 10}


def test_exit_without_new_samples_does_not_double_count() -> None:
    carried = CarriedSamples()
    carried.update([sample("bistoury_x_total", "counter", "x", 5)])
    carried.process_exited()
    carried.process_exited()  # e.g. a start that failed before its first heartbeat
    assert exported(carried) == {"bistoury_x_total": 5}


def test_carried_counters_keep_labels_apart() -> None:
    carried = CarriedSamples()
    carried.update(
        [
            sample("bistoury_m_total", "counter", "m", 3, topic_class="md"),
            sample("bistoury_m_total", "counter", "m", 4, topic_class="sys"),
        ]
    )
    carried.process_exited()
    carried.update([sample("bistoury_m_total", "counter", "m", 1, topic_class="md")])
    got = {s.labels["topic_class"]: s.value for s in carried.export()}
    assert got == {"md": 4, "sys": 4}


def test_bus_samples() -> None:
    stats = BusStats(
        published={"sys": 2, "md": 9},
        received=5,
        dropped=1,
        invalid=3,
        store_sent=7,
        store_dropped={"raw": 2},
    )
    got = {(s.name, tuple(s.labels.items())): (s.kind, s.value) for s in bus_samples(stats)}
    assert got == {
        ("bistoury_bus_messages_total", (("topic_class", "md"),)): ("counter", 9),
        ("bistoury_bus_messages_total", (("topic_class", "sys"),)): ("counter", 2),
        ("bistoury_bus_received_total", ()): ("counter", 5),
        ("bistoury_bus_dropped_total", ()): ("counter", 1),
        ("bistoury_bus_invalid_total", ()): ("counter", 3),
        ("bistoury_store_sent_total", ()): ("counter", 7),
        ("bistoury_store_dropped_total", (("topic_class", "raw"),)): ("counter", 2),
    }


# ---- exposition -------------------------------------------------------------------------


@pytest.fixture
def metrics() -> Metrics:
    own = BusStats(published={"sys": 1}, received=4, dropped=1)
    recorder = BusStats(published={"md": 10, "sys": 2}, received=100, dropped=3)
    collector = BusStats(published={"md": 5}, dropped=4, invalid=2)
    views = [
        AgentView("recorder", True, 2, 0.5, 1000.0, 1.5, bus_samples(recorder)),
        AgentView("collector", False, 0, None, None, 0.0, bus_samples(collector)),
    ]
    return Metrics(lambda: views, own)


def test_exposition(metrics: Metrics) -> None:
    metrics.set_mode("collect")
    metrics.control_requests.labels(command="status", result="ok").inc()
    metrics.control_requests.labels(command="status", result="ok").inc()
    metrics.control_requests.labels(command="mode", result="refused").inc()
    metrics.reloads.labels(result="ok").inc()
    metrics.reloads.labels(result="error").inc(3)
    text = generate_latest(metrics.registry).decode()
    got = parse(text)

    assert got[("bistoury_up", ())] == 1
    mode = values(got, "bistoury_mode")
    assert mode == {(("mode", m),): (1.0 if m == "collect" else 0.0) for m in MODES}
    assert values(got, "bistoury_agent_up") == {
        (("agent", "recorder"),): 1,
        (("agent", "collector"),): 0,
    }
    assert values(got, "bistoury_agent_restarts_total") == {
        (("agent", "recorder"),): 2,
        (("agent", "collector"),): 0,
    }
    assert values(got, "bistoury_agent_heartbeat_age_seconds") == {(("agent", "recorder"),): 0.5}
    assert values(got, "bistoury_agent_resident_memory_bytes") == {(("agent", "recorder"),): 1000}
    assert values(got, "bistoury_bus_messages_total") == {
        (("topic_class", "md"),): 15,
        (("topic_class", "sys"),): 3,
    }
    assert got[("bistoury_bus_dropped_total", ())] == 8
    assert got[("bistoury_bus_received_total", ())] == 104
    assert got[("bistoury_bus_invalid_total", ())] == 2
    assert values(got, "bistoury_control_requests_total") == {
        (("command", "status"), ("result", "ok")): 2,
        (("command", "mode"), ("result", "refused")): 1,
    }
    assert values(got, "bistoury_reloads_total") == {
        (("result", "ok"),): 1,
        (("result", "error"),): 3,
    }
    assert got[("bistoury_events_dropped_total", ())] == 0
    assert not [name for name, _ in got if name.endswith("_created")]
    assert "_created" not in text


def test_set_mode_moves_the_one(metrics: Metrics) -> None:
    for mode in ("idle", "paper-live", "idle"):
        metrics.set_mode(mode)
        got = values(parse(generate_latest(metrics.registry).decode()), "bistoury_mode")
        assert [labels[0][1] for labels, v in got.items() if v == 1] == [mode]
        assert len(got) == len(MODES)


def test_serve_on_port_zero_and_close(metrics: Metrics) -> None:
    metrics.set_mode("optimize")
    assert metrics.address is None
    metrics.serve("127.0.0.1", 0)
    try:
        address = metrics.address
        assert address is not None
        host, port = address
        assert host == "127.0.0.1" and port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200
            body = reply.read().decode()
        got = parse(body)
        assert got[("bistoury_up", ())] == 1
        assert got[("bistoury_mode", (("mode", "optimize"),))] == 1
        assert ("bistoury_bus_dropped_total", ()) in got
    finally:
        metrics.close()
    assert metrics.address is None
    # The port is free again: nothing accepts connections there.
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(2)
        probe.connect(("127.0.0.1", port))
    metrics.close()  # closing twice is harmless


def test_serve_again_replaces_the_server(metrics: Metrics) -> None:
    metrics.serve("127.0.0.1", 0)
    try:
        first = metrics.address
        metrics.serve("127.0.0.1", 0)
        second = metrics.address
        assert first is not None and second is not None
        assert first != second
        with urllib.request.urlopen(f"http://127.0.0.1:{second[1]}/metrics", timeout=5) as r:
            assert b"bistoury_up 1.0" in r.read()
    finally:
        metrics.close()


def test_serve_on_taken_port_raises(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            metrics.serve("127.0.0.1", taken.getsockname()[1])
    assert metrics.address is None
