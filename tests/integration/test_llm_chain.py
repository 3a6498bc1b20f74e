"""The fallback chain with real LangChain clients against the fake provider, on a fake
clock: retries honour Retry-After, failures fall through to the next provider and end in
``rules``, the breaker and the cost cap skip providers, and the path is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pydantic import SecretStr

from bistouryd.llm.chain import DecisionChain, Outcome, Slot
from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.fakeprovider import FakeProvider, hold
from bistouryd.llm.limits import BreakerSettings, DailyCostCap, RateLimits, RetrySettings
from bistouryd.llm.models import lookup
from bistouryd.llm.prompt import build_prompt
from bistouryd.llm.record import DecisionRecord
from bistouryd.llm.settings import ProviderSettings
from bistouryd.storage.db import open_db
from bistouryd.storage.decisions import StoredDecisionCache, insert_decisions
from bistouryd.storage.marketdata import WriteResult
from bistouryd.strategies.base import Signal

pytestmark = pytest.mark.integration

NOW_MS = 1_753_200_000_000
CROSS = Signal(
    strategy="cross_signal",
    coin="BTC",
    ts_ms=NOW_MS - 5_000,
    direction="long",
    strength=0.62,
    confidence=0.8,
    narrative="Trending regime (efficiency 0.42). multi_timeframe agrees long; score +0.62.",
    features={"score": 0.62, "regime_code": 1.0},
)
SIGNALS = {"cross_signal": CROSS}
OPEN = {
    "coin": "BTC",
    "action": "open_long",
    "size_fraction": 0.2,
    "stop_loss_pct": 0.01,
    "confidence": 0.6,
    "rationale": "cross_signal +0.62, trending.",
}


class Clock:
    """Monotonic and wall time that only move when the chain sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return NOW_MS / 1000 + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def slot(
    fake: FakeProvider,
    provider: str,
    model: str,
    limits: RateLimits | None = None,
    breaker: BreakerSettings | None = None,
) -> Slot:
    base = f"{fake.url}/v1" if provider == "openai" else fake.url
    settings = ProviderSettings(
        provider=provider,  # type: ignore[arg-type]
        model=model,
        api_key=SecretStr("k"),
        base_url=base,
        timeout_s=5,
    )
    return Slot.build(
        settings,
        lookup(provider, model),  # type: ignore[arg-type]
        limits or RateLimits(),
        RetrySettings(initial_s=1, max_s=4, max_attempts=3, max_retry_after_s=30),
        breaker or BreakerSettings(failure_threshold=3, cooldown_s=60, max_cooldown_s=600),
    )


def chain(slots: list[Slot], clock: Clock, cap_usd: float | None = None) -> DecisionChain:
    return DecisionChain(
        slots, DailyCostCap(cap_usd), clock=clock, wall=clock.wall, sleep=clock.sleep
    )


PROMPT = build_prompt(
    "BTC", SIGNALS, now_ms=NOW_MS, pnl_today_usd=0, risk_budget_usd=1000, max_positions_left=3
)


def decide(loop: asyncio.AbstractEventLoop, c: DecisionChain) -> Outcome:
    return loop.run_until_complete(c.decide(PROMPT, "BTC", SIGNALS, "flat", now_ms=NOW_MS))


def test_the_first_provider_answers_and_its_cost_is_counted(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    fake.answer(OPEN)
    out = decide(loop, chain([slot(fake, "openai", "gpt-4o-mini")], clock))
    assert (out.provider, out.model, out.attempts, out.fallbacks) == (
        "openai",
        "gpt-4o-mini",
        1,
        [],
    )
    assert out.decision == TradeDecision.model_validate(OPEN)
    assert out.input_tokens and out.output_tokens and out.cost_usd > 0


def test_a_rate_limit_is_retried_after_the_servers_delay(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    fake.rate_limit(retry_after_s=5)
    fake.answer(OPEN)
    out = decide(loop, chain([slot(fake, "anthropic", "claude-test")], clock))
    assert (out.provider, out.attempts) == ("anthropic", 2)
    assert clock.slept and clock.slept[0] >= 5


def test_failures_fall_through_to_the_next_provider_then_to_rules(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    fake.server_error(count=3)  # openai: three attempts, all 500
    fake.invalid_decision(count=2)  # ollama: invalid twice, not retried
    slots = [slot(fake, "openai", "gpt-4o-mini"), slot(fake, "ollama", "llama3.1")]
    out = decide(loop, chain(slots, clock))
    assert out.provider == "rules" and out.decision.action == "open_long"
    assert [(h.provider, h.reason, h.attempts) for h in out.fallbacks] == [
        ("openai", "server_error", 3),
        ("ollama", "invalid_answer", 1),
    ]
    assert len(clock.slept) == 2  # the backoff between openai's attempts


def test_an_open_breaker_skips_the_provider_until_its_cooldown(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    s = slot(fake, "openai", "gpt-4o-mini")
    c = chain([s], clock)
    fake.server_error(count=3)
    assert decide(loop, c).fallbacks[0].reason == "server_error"  # 3 failures: open
    asked = len(fake.requests)
    skipped = decide(loop, c)
    assert [h.reason for h in skipped.fallbacks] == ["circuit_open"]
    assert len(fake.requests) == asked  # not even asked
    clock.now += 61  # past the cooldown: one trial goes through and closes it
    fake.answer(hold("BTC"))
    assert decide(loop, c).provider == "openai"


def test_the_cost_cap_sends_paid_models_to_rules_but_not_free_ones(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    paid = slot(fake, "openai", "gpt-4o")
    free = slot(fake, "ollama", "llama3.1")
    c = chain([paid, free], clock, cap_usd=1e-9)
    fake.answer(hold("BTC"), count=3)
    first = decide(loop, c)
    assert first.provider == "openai" and first.cost_cap_crossed
    second = decide(loop, c)
    assert second.provider == "ollama" and second.cost_usd == 0
    assert [h.reason for h in second.fallbacks] == ["cost_cap"]


def test_a_rate_limit_wait_longer_than_allowed_falls_back(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    s = slot(fake, "openai", "gpt-4o-mini", limits=RateLimits(requests_per_min=1))
    c = chain([s], clock)
    c.max_wait_s = 10
    fake.answer(hold("BTC"), count=2)
    assert decide(loop, c).provider == "openai"
    out = decide(loop, c)  # the next request slot is a minute away
    assert out.provider == "rules"
    assert [h.reason for h in out.fallbacks] == ["rate_limit_wait"]


def test_a_model_that_may_remember_the_period_is_skipped_unless_allowed(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    s = slot(fake, "openai", "gpt-4o-mini")
    assert s.info is not None
    s.info = s.info.model_copy(update={"training_cutoff": date(2025, 7, 22)})  # = NOW's day
    refused = decide(loop, chain([s], clock))
    assert refused.provider == "rules" and not refused.contaminated
    assert [h.reason for h in refused.fallbacks] == ["contaminated"]
    assert "2025-07-22" in refused.fallbacks[0].message and fake.requests == []

    allowed = chain([s], clock)
    allowed.allow_contaminated = True
    fake.answer(OPEN)
    out = decide(loop, allowed)
    assert out.provider == "openai" and out.contaminated

    s.info = s.info.model_copy(update={"training_cutoff": date(2025, 7, 21)})
    fake.answer(OPEN)
    clean = decide(loop, chain([s], clock))
    assert clean.provider == "openai" and not clean.contaminated


def test_every_request_is_reported_with_its_result(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    seen: list[tuple[str, str]] = []
    c = chain([slot(fake, "openai", "gpt-4o-mini"), slot(fake, "anthropic", "claude-x")], clock)
    c.on_request = lambda provider, result, _s: seen.append((provider, result))
    fake.rate_limit(1.0)
    fake.answer(hold("XYZ"), count=2)  # a hallucinated coin, twice: invalid after the retry
    fake.answer(OPEN)
    out = decide(loop, c)
    assert out.provider == "anthropic"
    assert seen == [
        ("openai", "rate_limited"),
        ("openai", "invalid_answer"),
        ("anthropic", "ok"),
    ]


def test_a_replay_from_the_cache_asks_no_model_and_decides_the_same(
    fake: FakeProvider, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    """Run 1 asks the model and its records are stored; run 2, with a fresh chain over
    the stored decisions, gets identical decisions for free, and a changed prompt misses."""
    clock = Clock()
    fake.answer(OPEN)
    first = decide(loop, chain([slot(fake, "openai", "gpt-4o-mini")], clock))
    assert first.provider == "openai" and not first.cached and first.cost_usd > 0
    record = DecisionRecord.of(NOW_MS, "BTC", PROMPT, first, [CROSS.id])
    con = open_db(tmp_path / "cache.duckdb")
    try:
        result = WriteResult()
        con.begin()
        insert_decisions(con, [record], result)
        con.commit()

        asked = len(fake.requests)
        replay = chain([slot(fake, "openai", "gpt-4o-mini")], clock)
        replay.cache = cache = StoredDecisionCache(con)
        again = decide(loop, replay)
        assert len(fake.requests) == asked  # nothing sent
        assert again.cached and again.cost_usd == 0 and cache.hits == 1
        assert again.decision == first.decision and again.raw_text == first.raw_text
        assert DecisionRecord.of(NOW_MS, "BTC", PROMPT, again, [CROSS.id]).cached

        other_model = chain([slot(fake, "openai", "gpt-4o")], clock)
        other_model.cache = cache
        fake.answer(OPEN)
        assert not decide(loop, other_model).cached  # another model: a miss, asked
        assert len(fake.requests) == asked + 1
    finally:
        con.close()
