"""The fallback chain: ask the configured providers in order, each behind its guards,
and end with the ``rules`` model, which always answers.

For each provider: its circuit breaker must be closed (or half-open for a trial), the
daily cost cap must not be spent (a free local model is still asked), and its rate limit
must allow the call within ``max_wait_s``; retryable failures are retried with backoff
(honouring ``Retry-After``), others move on to the next provider at once. Every skip and
failure is kept, in order, in the ``Outcome``: that is the fallback path a reviewer reads.

Before any of that, two checks. A model whose training data reaches the decision's date
may remember what happened next: it is skipped (reason ``contaminated``) unless the run
allows it, and then the outcome is marked. And with a ``DecisionCache``, a prompt the
model already answered gets that answer again, free and identical.

Time, sleeping and the wall clock are injected so that tests and replays control them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from bistouryd.llm.cache import CachedAnswer, CacheKey, DecisionCache
from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.limits import (
    BreakerSettings,
    CircuitBreaker,
    DailyCostCap,
    FailureKind,
    RateLimiter,
    RateLimits,
    RetryPolicy,
    RetrySettings,
    retryable,
)
from bistouryd.llm.models import ModelInfo, contaminated, cost_usd
from bistouryd.llm.prompt import Prompt
from bistouryd.llm.rules import PositionSide, RulesParams, decide
from bistouryd.llm.settings import ProviderError, ProviderSettings
from bistouryd.strategies.base import Signal

if TYPE_CHECKING:  # LangChain is loaded on the first call to a provider, not for rules
    from langchain_core.runnables import Runnable

    from bistouryd.llm.providers import Answer

SkipReason = Literal["circuit_open", "cost_cap", "rate_limit_wait", "contaminated"]
RequestObserver = Callable[[str, str, float], None]
"""Called after every request to a provider: (provider, "ok" or the failure kind, seconds)."""


@dataclass(frozen=True)
class Hop:
    """One provider that did not give the decision, and why."""

    provider: str
    model: str
    reason: FailureKind | SkipReason
    message: str
    attempts: int = 0


@dataclass(frozen=True)
class Outcome:
    """The decision, who gave it, what it cost, and the path to it."""

    decision: TradeDecision
    provider: str  # "rules" when every model failed or was skipped
    model: str
    attempts: int
    latency_s: float
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float
    fallbacks: list[Hop]
    raw_text: str = ""
    cost_cap_crossed: bool = False  # this call used the last of today's budget
    cached: bool = False  # the answer came from the decision cache
    contaminated: bool = False  # a model asked about a date before its training cutoff


@dataclass
class Slot:
    """One provider of the chain with its guards (kept across decisions)."""

    settings: ProviderSettings
    info: ModelInfo | None
    limiter: RateLimiter
    breaker: CircuitBreaker
    retry: RetryPolicy
    runnable: Runnable[Any, Any] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: ProviderSettings,
        info: ModelInfo | None,
        limits: RateLimits,
        retry: RetrySettings,
        breaker: BreakerSettings,
        seed: int = 0,
    ) -> Slot:
        return cls(
            settings=settings,
            info=info,
            limiter=RateLimiter(limits),
            breaker=CircuitBreaker(breaker),
            retry=RetryPolicy(retry, random.Random(f"{seed}:{settings.provider}")),
        )

    @property
    def paid(self) -> bool:
        """Free local models (or ones priced at 0) are asked even when the cap is spent."""
        if self.info is None:
            return self.settings.provider != "ollama"
        return self.info.input_usd_per_mtok > 0 or self.info.output_usd_per_mtok > 0

    async def structured(self) -> Runnable[Any, Any]:
        """The client, built on first use and kept (with its connections). Built in a
        thread: importing a provider's SDK takes a second or two of CPU, and the agent's
        loop must keep sending heartbeats meanwhile (or it is restarted as silent)."""
        if self.runnable is None:
            self.runnable = await asyncio.to_thread(_build_client, self.settings)
        return self.runnable


def _build_client(settings: ProviderSettings) -> Runnable[Any, Any]:
    from bistouryd.llm.providers import chat_model, structured_output

    return structured_output(chat_model(settings))


class DecisionChain:
    def __init__(
        self,
        slots: list[Slot],
        cost_cap: DailyCostCap,
        rules: RulesParams | None = None,
        *,
        max_wait_s: float = 30.0,
        allow_contaminated: bool = False,
        cache: DecisionCache | None = None,
        on_request: RequestObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.slots = slots
        self.cost_cap = cost_cap
        self.rules = rules or RulesParams()
        self.max_wait_s = max_wait_s
        self.allow_contaminated = allow_contaminated
        self.cache = cache
        self.on_request = on_request
        self.clock, self.wall, self.sleep = clock, wall, sleep

    async def decide(
        self,
        prompt: Prompt,
        coin: str,
        signals: Mapping[str, Signal],
        position: PositionSide,
        *,
        now_ms: int,
    ) -> Outcome:
        """The decision for ``coin`` at data time ``now_ms`` (what contamination is
        judged by: in a replay it is the replayed time, not the wall clock)."""
        hops: list[Hop] = []
        for slot in self.slots:
            outcome = await self._try(slot, prompt, coin, hops, now_ms)
            if outcome is not None:
                return outcome
        started = self.clock()
        decision = decide(coin, signals, position, self.rules)
        return Outcome(
            decision=decision,
            provider="rules",
            model="rules",
            attempts=1,
            latency_s=self.clock() - started,
            input_tokens=None,
            output_tokens=None,
            cost_usd=0.0,
            fallbacks=hops,
        )

    async def _try(
        self, slot: Slot, prompt: Prompt, coin: str, hops: list[Hop], now_ms: int
    ) -> Outcome | None:
        name, model = slot.settings.provider, slot.settings.model
        day = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).date()
        tainted = slot.info is not None and contaminated(slot.info, day)
        if tainted and not self.allow_contaminated:
            assert slot.info is not None
            hops.append(
                Hop(
                    name,
                    model,
                    "contaminated",
                    f"its training data reaches {slot.info.training_cutoff}, on or after "
                    f"{day}: it may remember what happened next",
                )
            )
            return None
        key = CacheKey(name, model, prompt.version, prompt.sha256)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            return Outcome(
                decision=hit.decision,
                provider=name,
                model=model,
                attempts=0,
                latency_s=0.0,
                input_tokens=hit.input_tokens,
                output_tokens=hit.output_tokens,
                cost_usd=0.0,
                fallbacks=hops,
                raw_text=hit.raw_text,
                cached=True,
                contaminated=tainted,
            )
        if slot.paid and self.cost_cap.exceeded(self.wall()):
            spent = self.cost_cap.spent_today_usd(self.wall())
            hops.append(Hop(name, model, "cost_cap", f"today's cost cap is spent (${spent:.2f})"))
            return None
        attempt = 0
        started = self.clock()
        while True:
            if slot.breaker.state(self.clock()) == "open":
                hops.append(
                    Hop(name, model, "circuit_open", "the circuit breaker is open", attempt)
                )
                return None
            if not await self._wait_for_rate(slot, prompt.input_tokens_estimate):
                hops.append(
                    Hop(
                        name,
                        model,
                        "rate_limit_wait",
                        f"the rate limit would delay the call beyond {self.max_wait_s:g} s",
                        attempt,
                    )
                )
                return None
            if not slot.breaker.allow(self.clock()):  # a half-open trial is already out
                slot.limiter.settle(0, prompt.input_tokens_estimate)
                hops.append(
                    Hop(name, model, "circuit_open", "the circuit breaker is open", attempt)
                )
                return None
            attempt += 1
            asked = self.clock()
            try:
                answer = await _ask(await slot.structured(), prompt.system, prompt.user, coin)
            except ProviderError as exc:
                self._observe(name, exc.kind, asked)
                slot.limiter.settle(0, prompt.input_tokens_estimate)
                slot.breaker.record_failure(self.clock())
                delay = (
                    slot.retry.delay_s(attempt, exc.retry_after_s) if retryable(exc.kind) else None
                )
                if delay is None:
                    hops.append(Hop(name, model, exc.kind, exc.message, attempt))
                    return None
                await self.sleep(delay)
                continue
            self._observe(name, "ok", asked)
            if self.cache is not None:
                self.cache.put(
                    key,
                    CachedAnswer(
                        answer.decision, answer.raw_text, answer.input_tokens, answer.output_tokens
                    ),
                )
            used_in = answer.input_tokens or prompt.input_tokens_estimate
            used_out = answer.output_tokens or 0
            slot.limiter.settle(used_in + used_out, prompt.input_tokens_estimate)
            slot.breaker.record_success(self.clock())
            cost = cost_usd(slot.info, used_in, used_out) if slot.info is not None else 0.0
            crossed = self.cost_cap.add(self.wall(), cost)
            return Outcome(
                decision=answer.decision,
                provider=name,
                model=model,
                attempts=attempt,
                latency_s=self.clock() - started,
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
                cost_usd=cost,
                fallbacks=hops,
                raw_text=answer.raw_text,
                cost_cap_crossed=crossed,
                contaminated=tainted,
            )

    def _observe(self, provider: str, result: str, asked: float) -> None:
        if self.on_request is not None:
            self.on_request(provider, result, self.clock() - asked)

    async def _wait_for_rate(self, slot: Slot, tokens_estimate: int) -> bool:
        """Sleep until the limiter allows the call; False if that is too long."""
        waited = 0.0
        while (wait := slot.limiter.reserve(self.clock(), tokens_estimate)) > 0:
            if waited + wait > self.max_wait_s:
                return False
            await self.sleep(wait)
            waited += wait
        return True


async def _ask(runnable: Runnable[Any, Any], system: str, user: str, coin: str) -> Answer:
    from bistouryd.llm.providers import ask

    return await ask(runnable, system, user, coin)
