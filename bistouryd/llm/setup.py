"""The trader's fallback chain, built from ``llm:`` in the config and the secrets.

Loading the config already refused a provider whose API key is missing
(``config.cross_check``), so every provider of ``llm.chain`` gets its slot; ``rules``
always ends the chain.
"""

from __future__ import annotations

from bistouryd.config import LLMConfig, Secrets
from bistouryd.llm.chain import DecisionChain, RequestObserver, Slot
from bistouryd.llm.limits import DailyCostCap, RateLimits
from bistouryd.llm.models import lookup
from bistouryd.llm.settings import ProviderSettings

KEY_OF = {"openai": "openai_api_key", "anthropic": "anthropic_api_key"}


def build_chain(
    config: LLMConfig,
    secrets: Secrets,
    seed: int = 0,
    on_request: RequestObserver | None = None,
) -> DecisionChain:
    slots: list[Slot] = []
    for name in config.chain:
        settings = config.settings_of(name)
        key = getattr(secrets, KEY_OF[name]) if name in KEY_OF else None
        slots.append(
            Slot.build(
                ProviderSettings(
                    provider=name,
                    model=settings.model,
                    api_key=key,
                    base_url=settings.base_url,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                    timeout_s=settings.timeout_s or config.timeout_s,
                ),
                lookup(name, settings.model, config.models),
                RateLimits(
                    requests_per_min=settings.requests_per_min,
                    tokens_per_min=settings.tokens_per_min,
                ),
                config.retry,
                config.breaker,
                seed,
            )
        )
    return DecisionChain(
        slots,
        DailyCostCap(config.daily_cost_cap_usd),
        max_wait_s=config.decision_interval_s / 2,
        allow_contaminated=config.allow_contaminated,
        on_request=on_request,
    )
