"""``DecisionRecord``: one decision as the trader made it, for the bus (``dec.<coin>``),
the ``decisions`` table and ``bistoury decisions show``.

It keeps everything needed to explain and replay the decision: the prompt as sent, the
raw answer, the parsed decision, who answered after which failures, what it cost, and
the signals it was made from.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from bistouryd.bus import payload
from bistouryd.llm.decision import TradeDecision

if TYPE_CHECKING:  # the recorder stores records without loading the LangChain stack
    from bistouryd.llm.chain import Outcome
    from bistouryd.llm.prompt import Prompt


class FallbackStep(BaseModel):
    """A provider that did not give the decision, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str
    reason: str
    message: str
    attempts: int = 0


@payload
class DecisionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts_ms: int = Field(gt=0, description="when the decision was asked for")
    coin: str
    decision: TradeDecision
    provider: str = Field(description="who answered: openai, anthropic, ollama or rules")
    model: str
    prompt_version: str
    prompt_sha256: str
    prompt_system: str
    prompt_user: str
    raw_answer: str = ""
    latency_s: float = Field(ge=0)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    fallbacks: list[FallbackStep] = Field(default_factory=list)
    signal_ids: list[str] = Field(default_factory=list, description="the signals in the prompt")
    cached: bool = Field(default=False, description="answered from the decision cache")
    contaminated: bool = Field(
        default=False, description="the period is before the model's training cutoff"
    )

    @property
    def topic(self) -> str:
        return f"dec.{self.coin}"

    @classmethod
    def of(
        cls,
        ts_ms: int,
        coin: str,
        prompt: Prompt,
        outcome: Outcome,
        signal_ids: list[str],
    ) -> DecisionRecord:
        return cls(
            ts_ms=ts_ms,
            coin=coin,
            decision=outcome.decision,
            provider=outcome.provider,
            model=outcome.model,
            prompt_version=prompt.version,
            prompt_sha256=prompt.sha256,
            prompt_system=prompt.system,
            prompt_user=prompt.user,
            raw_answer=outcome.raw_text,
            latency_s=outcome.latency_s,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cost_usd=outcome.cost_usd,
            fallbacks=[
                FallbackStep(
                    provider=h.provider,
                    model=h.model,
                    reason=h.reason,
                    message=h.message,
                    attempts=h.attempts,
                )
                for h in outcome.fallbacks
            ],
            signal_ids=signal_ids,
            cached=outcome.cached,
            contaminated=outcome.contaminated,
        )
