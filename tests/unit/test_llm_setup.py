"""``llm:`` in the config and the fallback chain built from it."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import SecretStr

from bistouryd.config import Secrets, parse_config_text
from bistouryd.llm.setup import build_chain
from tests.unit.test_config import only, problems_of

CHAIN = """
llm:
  provider: anthropic
  model: claude-3-5-haiku-latest
  fallback: [openai, ollama]
  daily_cost_cap_usd: 2.5
  providers:
    openai: {model: gpt-4o-mini, requests_per_min: 30, tokens_per_min: 90000}
    ollama: {model: llama3.1, base_url: "http://127.0.0.1:11434", timeout_s: 90}
  retry: {max_attempts: 2}
  models:
    llama3.1: {training_cutoff: 2023-12-31}
"""


def test_the_chain_follows_provider_then_fallback_and_ends_before_rules() -> None:
    llm = parse_config_text(CHAIN).llm
    assert llm.chain == ["anthropic", "openai", "ollama"]
    assert llm.settings_of("anthropic").model == "claude-3-5-haiku-latest"
    assert llm.settings_of("ollama").timeout_s == 90
    rules_first = parse_config_text("llm:\n  provider: rules\n  fallback: [openai]\n").llm
    assert rules_first.chain == []  # rules answers first: nothing after it is asked


def test_a_provider_without_a_model_gets_its_default_and_twice_is_refused() -> None:
    llm = parse_config_text("llm:\n  provider: openai\n  fallback: [ollama]\n").llm
    assert [llm.settings_of(n).model for n in llm.chain] == ["gpt-4o-mini", "llama3.1"]
    problem = only(problems_of("llm:\n  provider: openai\n  model: m\n  fallback: [openai]\n"))
    assert "twice" in problem.message


def test_bounds_of_the_guards_are_checked() -> None:
    problem = only(problems_of("llm:\n  retry:\n    max_attempts: 0\n"))
    assert problem.field == "llm.retry.max_attempts"
    problem = only(problems_of("llm:\n  providers:\n    openai:\n      modle: x\n"))
    assert problem.field == "llm.providers.openai.modle"


def test_build_chain_uses_keys_limits_and_model_info() -> None:
    llm = parse_config_text(CHAIN).llm
    secrets = Secrets(
        anthropic_api_key=SecretStr("sk-ant-test"), openai_api_key=SecretStr("sk-test")
    )
    chain = build_chain(llm, secrets)
    names = [s.settings.provider for s in chain.slots]
    assert names == ["anthropic", "openai", "ollama"]
    openai = chain.slots[1]
    assert openai.limiter.limits.requests_per_min == 30
    assert openai.info is not None and openai.info.input_usd_per_mtok > 0 and openai.paid
    ollama = chain.slots[2]
    assert ollama.info is not None and ollama.info.training_cutoff == date(2023, 12, 31)
    assert not ollama.paid
    assert chain.cost_cap.cap_usd == 2.5


def test_a_provider_without_its_key_is_refused_when_loading() -> None:
    from bistouryd.config import cross_check

    config = parse_config_text(CHAIN)
    problems = cross_check(config, Secrets(openai_api_key=SecretStr("sk-test")), "c.yaml")
    assert [p.message for p in problems] == [
        "provider 'anthropic' needs ANTHROPIC_API_KEY, which is not set"
    ]
    local = parse_config_text(
        "llm:\n  provider: anthropic\n  fallback: [openai]\n  providers:\n"
        "    openai: {base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    problems = cross_check(local, Secrets(anthropic_api_key=SecretStr("k")), "c.yaml")
    assert problems == []  # an OpenAI-compatible local server needs no key


@pytest.mark.parametrize("text", ["", "llm:\n  provider: rules\n"])
def test_the_default_is_rules_alone(text: str) -> None:
    assert build_chain(parse_config_text(text).llm, Secrets()).slots == []


def test_an_unknown_prompt_version_is_refused_with_the_known_ones() -> None:
    problem = only(problems_of("llm:\n  prompt_version: decision_v9\n"))
    assert problem.message == "no prompt template 'decision_v9'"
    assert problem.hint == "use one of: decision_v1"
