"""The llm suite: what deciding costs apart from the model.

1. The ``rules`` model: ``decide`` on snapshots of the latest signals of each coin, taken
   from two hours of the bundled real data through every strategy (``market_tape``).
2. Around a provider call: building the prompt and the ``DecisionRecord`` (in process),
   and ``Trader.decide`` (prompt, the chain through each real LangChain client against the
   local fake provider, parsing, record) next to the same request body replayed with a
   bare ``httpx`` client to the same server in the same run: the difference is what the
   agent's work and the client stack add to the server's own response time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from bench.foundation import SuiteResult
from bench.stats import Aim, Dist, Figure, compare
from bistouryd.config import Config, strategy_settings
from bistouryd.llm.chain import DecisionChain, Outcome, Slot
from bistouryd.llm.fakeprovider import FakeProvider, LlmRequest
from bistouryd.llm.limits import BreakerSettings, DailyCostCap, RateLimits, RetrySettings
from bistouryd.llm.models import lookup
from bistouryd.llm.prompt import Prompt, build_prompt
from bistouryd.llm.record import DecisionRecord
from bistouryd.llm.rules import decide
from bistouryd.llm.settings import ProviderSettings
from bistouryd.llm.trader import Trader, TraderSettings
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.simexchange.config import SimConfig
from bistouryd.simexchange.tape import market_tape
from bistouryd.strategies.base import Signal
from bistouryd.strategies.engine import SignalEngine

Log = Callable[[str], None]
TAPE_MS = 2 * 3_600_000
TAPE_START_MS = 1_753_200_000_000
RULES_ROUNDS = 5
CALLS = 150
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "ollama": "llama3.1"}
RULES_AIM = Aim(1000.0)  # µs: far inside the PRD's 100 ms from signal to order


def run(log: Log) -> SuiteResult:
    result = SuiteResult()
    log(f"llm: signals from {TAPE_MS // 3_600_000} h of the bundled real data")
    snapshots = signal_snapshots()
    log(f"llm: {len(snapshots)} signal snapshots")
    in_process(result, snapshots, log)
    for provider in MODELS:
        provider_overhead(result, provider, snapshots[-1], log)
    return result


Snapshot = tuple[str, dict[str, Signal], int]  # coin, latest signal per strategy, time


def signal_snapshots() -> list[Snapshot]:
    events = market_tape(SimConfig(start_ms=TAPE_START_MS, seed=0), TAPE_MS)
    engine = SignalEngine(strategy_settings(Config()), ["BTC", "ETH"])
    latest: dict[str, dict[str, Signal]] = {"BTC": {}, "ETH": {}}
    out: list[Snapshot] = []
    for event in events:
        for signal in engine.feed(event):
            latest[signal.coin][signal.strategy] = signal
            if signal.strategy == "cross_signal":
                out.append((signal.coin, dict(latest[signal.coin]), signal.ts_ms))
    return out


def make_prompt(snapshot: Snapshot) -> Prompt:
    coin, signals, ts_ms = snapshot
    return build_prompt(
        coin,
        signals,
        now_ms=ts_ms,
        pnl_today_usd=0.0,
        risk_budget_usd=1000.0,
        max_positions_left=3,
    )


def in_process(result: SuiteResult, snapshots: list[Snapshot], log: Log) -> None:
    rules: list[list[float]] = []
    prompts: list[list[float]] = []
    records: list[list[float]] = []
    for _ in range(RULES_ROUNDS):
        r, p, c = [], [], []
        for coin, signals, ts_ms in snapshots:
            t0 = time.perf_counter_ns()
            decision = decide(coin, signals, "flat")
            t1 = time.perf_counter_ns()
            prompt = make_prompt((coin, signals, ts_ms))
            t2 = time.perf_counter_ns()
            outcome = Outcome(decision, "rules", "rules", 1, 0.0, None, None, 0.0, [])
            DecisionRecord.of(ts_ms, coin, prompt, outcome, [s.id for s in signals.values()])
            t3 = time.perf_counter_ns()
            r.append(t1 - t0)
            p.append(t2 - t1)
            c.append(t3 - t2)
        rules.append(r)
        prompts.append(p)
        records.append(c)
    d = {
        "rules": Dist.best_of("rules model decide()", "µs", rules, 1e-3),
        "prompt": Dist.best_of("build_prompt()", "µs", prompts, 1e-3),
        "record": Dist.best_of("DecisionRecord.of()", "µs", records, 1e-3),
    }
    result.add("in_process", d)
    log(f"llm: rules model p50 {d['rules'].p50} µs, p99 {d['rules'].p99} µs")
    result.figures += [
        compare("rules_p50", "Rules model: one decision, p50", d["rules"], "p50", aim=RULES_AIM),
        compare("rules_p99", "Rules model: one decision, p99", d["rules"], "p99", aim=RULES_AIM),
        compare("prompt_p50", "Prompt build, p50", d["prompt"], "p50"),
        compare("record_p50", "Decision record, p50", d["record"], "p50"),
    ]
    result.details["in_process"] = {"snapshots": len(snapshots), "rounds": RULES_ROUNDS}


def provider_overhead(result: SuiteResult, provider: str, snapshot: Snapshot, log: Log) -> None:
    coin, signals, ts_ms = snapshot
    answer = {
        "coin": coin,
        "action": "open_long",
        "size_fraction": 0.2,
        "stop_loss_pct": 0.01,
        "take_profit_pct": 0.02,
        "confidence": 0.6,
        "rationale": "cross_signal long with multi_timeframe; order_flow neutral.",
    }
    with FakeProvider(lambda _req: answer) as fake:
        base = f"{fake.url}/v1" if provider == "openai" else fake.url
        settings = ProviderSettings(
            provider=provider,  # type: ignore[arg-type]
            model=MODELS[provider],
            api_key=SecretStr("bench"),
            base_url=base,
        )
        slot = Slot.build(
            settings,
            lookup(provider, MODELS[provider]),  # type: ignore[arg-type]
            RateLimits(),
            RetrySettings(),
            BreakerSettings(),
        )
        # The bundled data may predate a model's cutoff; this measures speed, not skill.
        chain = DecisionChain([slot], DailyCostCap(None), allow_contaminated=True)
        trader = Trader(
            chain, PortfolioSnapshot.assumed_flat(ts_ms, 10_000, 50, 3), TraderSettings()
        )
        for signal in signals.values():
            trader.observe(signal)
        loop = asyncio.new_event_loop()
        try:
            calls = [
                _timed(lambda: loop.run_until_complete(_decide(trader, coin))) for _ in range(CALLS)
            ]
        finally:
            loop.close()
        sent: LlmRequest = fake.requests[-1]
        bare = _bare(f"{fake.url}{sent.path}", sent.body)
    d_trader = Dist.of(f"{provider}: Trader.decide (prompt, call, record)", "ms", calls, 1e-6)
    d_bare = Dist.of(f"{provider}: same request, bare httpx", "ms", bare, 1e-6)
    result.add(f"provider_{provider}", {"trader": d_trader, "bare": d_bare})
    overhead_ms = d_trader.p50 - d_bare.p50
    log(f"llm: {provider}: decide p50 {d_trader.p50} ms vs bare {d_bare.p50} ms")
    result.figures += [
        compare(
            f"{provider}_decide_p50",
            f"{provider} through LangChain: one decision, p50",
            d_trader,
            "p50",
            d_bare,
        ),
        Figure(
            id=f"{provider}_overhead_ms",
            title=f"{provider}: prompt + client stack + parsing + record over the server, p50",
            unit="ms",
            stat="value",
            measured=round(overhead_ms, 3),
        ),
    ]


async def _decide(trader: Trader, coin: str) -> DecisionRecord:
    record, _ = await trader.decide(coin)
    if record.provider == "rules":
        raise RuntimeError(f"the fake provider did not answer: {record.fallbacks}")
    return record


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return float(time.perf_counter_ns() - t0)


def _bare(url: str, body: dict[str, Any]) -> list[float]:
    with httpx.Client(timeout=10) as client:
        client.post(url, json=body).read()  # connect once, as the SDK clients keep it open
        out = []
        for _ in range(CALLS):
            t0 = time.perf_counter_ns()
            response = client.post(url, json=body)
            response.read()
            out.append(float(time.perf_counter_ns() - t0))
    return out
