"""The trader agent in a real daemon: the simulated exchange feeds the collector, the
signals agent feeds the trader, and the trader asks a real LangChain client talking to
the fake provider. Decisions are made only in a trading mode, stored, logged on ``LLM``
lines and counted in the metrics; a misbehaving model ends in ``rules`` with the reason
recorded and never puts another coin's decision on the bus; a reload switches provider
without a restart."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bistouryd.llm.fakeprovider import FakeProvider
from bistouryd.simexchange import SimExchange
from tests.conftest import Daemon, wait_for

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]


def trader_config(sim_url: str, fake_url: str, provider: str) -> str:
    return f"""
exchange:
  network: custom
  base_url: {sim_url}
metrics:
  port: 0
logging:
  level: INFO
storage:
  batch_max_ms: 50
collector:
  backfill_minutes: 120
strategies:
  order_flow:
    emit_interval_s: 2
  cross_signal:
    emit_interval_s: 5
llm:
  provider: {provider}
  fallback: [rules]
  decision_interval_s: 20
  min_strength_change: 0.05
  allow_contaminated: true
  providers:
    openai: {{model: gpt-4o-mini, base_url: "{fake_url}/v1", timeout_s: 5}}
    anthropic: {{model: claude-3-5-haiku-latest, base_url: "{fake_url}", timeout_s: 5}}
agents:
  enabled: [recorder, collector, signals, trader]
  heartbeat_interval_s: 0.2
  heartbeat_timeout_s: 2.0
  stop_timeout_s: 5
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def decisions(d: Daemon, *args: str) -> list[dict[str, Any]]:
    done = d.ctl("decisions", "list", "--json", "--limit", "1000", *args)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)["decisions"]
    return found


def for_both_coins(d: Daemon, provider: str) -> list[dict[str, Any]] | None:
    found = decisions(d, "--provider", provider)
    return found if {x["coin"] for x in found} == {"BTC", "ETH"} else None


def scrape(d: Daemon) -> str:
    with urllib.request.urlopen(d.status()["metrics_url"], timeout=5) as response:
        body: str = response.read().decode()
    return body


def metric(body: str, prefix: str) -> float:
    values = [float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines() if ln.startswith(prefix)]
    return sum(values)


def test_the_trader_decides_through_the_model_and_a_reload_switches_provider(
    make_daemon: MakeDaemon, replay_sim: SimExchange, fake: FakeProvider
) -> None:
    d = make_daemon(
        config=trader_config(replay_sim.url, fake.url, "openai"), env="ANTHROPIC_API_KEY=test-key\n"
    )
    d.start()

    # Collecting only: signals flow, but nobody asks a model.
    assert d.ctl("collect").returncode == 0
    wait_for(
        lambda: d.ctl("signals", "--json", "--limit", "1").stdout.count('"id"') > 0,
        60,
        "a first signal",
        0.5,
    )
    time.sleep(1.0)
    assert decisions(d) == [] and fake.requests == []

    # Paper-live: each coin gets decisions from openai through the real ChatOpenAI client.
    assert d.ctl("mode", "paper-live").returncode == 0
    found = wait_for(lambda: for_both_coins(d, "openai"), 60, "openai decisions", 0.5)
    assert all(x["provider"] == "openai" and x["model"] == "gpt-4o-mini" for x in found)
    assert all(x["fallbacks"] == [] and x["input_tokens"] and x["cost_usd"] > 0 for x in found)
    assert {r.path for r in fake.requests} == {"/v1/chat/completions"}
    assert any("Coin: ETH" in r.text for r in fake.requests)

    shown = d.ctl("decisions", "show", found[0]["id"][:10])
    assert shown.returncode == 0, shown.stderr
    assert "openai (gpt-4o-mini)" in shown.stdout and "Signals (strategy" in shown.stdout

    llm_lines = [ln for ln in d.log_file.read_text().splitlines() if "] LLM: " in ln]
    assert any("hold (confidence 0.50) by openai/gpt-4o-mini in" in ln for ln in llm_lines)

    body = scrape(d)
    assert metric(body, 'bistoury_llm_requests_total{provider="openai",result="ok"}') >= 2
    assert metric(body, 'bistoury_llm_latency_seconds_count{provider="openai"}') >= 2
    assert metric(body, 'bistoury_llm_tokens_total{kind="input",provider="openai"}') > 0
    assert metric(body, 'bistoury_llm_cost_usd_total{provider="openai"}') > 0

    # A model answering for another coin: retried once, then rules decides; the reason is
    # recorded and no decision for the invented coin is stored.
    before = len(decisions(d))
    fake.hallucinated_coin("XYZ", count=1000)
    fell_back = wait_for(
        lambda: [x for x in decisions(d, "--provider", "rules") if x["fallbacks"]] or None,
        60,
        "a decision by rules after openai failed",
        0.5,
    )
    step = fell_back[0]["fallbacks"][0]
    assert (step["provider"], step["reason"]) == ("openai", "invalid_answer")
    assert "XYZ" in step["message"]
    assert len(decisions(d)) > before
    assert {x["coin"] for x in decisions(d)} == {"BTC", "ETH"}
    assert metric(
        scrape(d), 'bistoury_llm_requests_total{provider="openai",result="invalid_answer"}'
    )
    assert metric(scrape(d), "bistoury_llm_fallbacks_total") >= 1

    # Reload to anthropic: the same agent process now asks the Anthropic client.
    fake.reset()
    trader_pid = d.agent("trader")["pid"]
    d.config.write_text(trader_config(replay_sim.url, fake.url, "anthropic"))
    assert d.ctl("reload").returncode == 0
    wait_for(
        lambda: decisions(d, "--provider", "anthropic") or None,
        60,
        "a decision by anthropic after the reload",
        0.5,
    )
    assert {r.path for r in fake.requests} == {"/v1/messages"}
    assert d.agent("trader")["pid"] == trader_pid

    # Trading paused: no more questions to the model.
    assert d.ctl("pause", "trading").returncode == 0
    time.sleep(1.0)
    asked = len(fake.requests)
    time.sleep(3.0)
    assert len(fake.requests) == asked
