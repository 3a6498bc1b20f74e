"""The model catalog: lookup by name and pattern, config overrides, cost, contamination and
the offline token estimate."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pydantic import ValidationError

from bistouryd.llm.models import (
    ModelInfo,
    ModelOverride,
    contaminated,
    cost_usd,
    estimate_tokens,
    lookup,
)


def info(model: str = "gpt-4o-mini", provider: str = "openai") -> ModelInfo:
    found = lookup(provider, model)  # type: ignore[arg-type]
    assert found is not None
    return found


def test_exact_name() -> None:
    i = info("gpt-4o-mini")
    assert (i.provider, i.model, i.pattern) == ("openai", "gpt-4o-mini", "gpt-4o-mini*")
    assert (i.input_usd_per_mtok, i.output_usd_per_mtok) == (0.15, 0.60)
    assert i.training_cutoff == date(2023, 10, 31)


@pytest.mark.parametrize(
    ("provider", "model", "pattern"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini*"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o*"),
        ("openai", "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini*"),
        ("openai", "gpt-4.1", "gpt-4.1*"),
        ("openai", "o3-mini", "o3-mini*"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku*"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku*"),
        ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4*"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5*"),
        ("ollama", "llama3.1:8b", "llama3.1*"),
        ("ollama", "llama3:70b", "llama3*"),
        ("ollama", "LLAMA3.1", "llama3.1*"),
    ],
)
def test_prefixed_names_take_the_longest_pattern(provider: str, model: str, pattern: str) -> None:
    assert info(model, provider).pattern == pattern


def test_local_models_are_free() -> None:
    i = info("llama3.1:70b", "ollama")
    assert i.input_usd_per_mtok == i.output_usd_per_mtok == 0
    assert cost_usd(i, 10_000, 1_000) == 0


def test_unknown_models_and_wrong_providers_are_none() -> None:
    assert lookup("openai", "my-finetune") is None
    assert lookup("ollama", "mistral:7b") is None
    assert lookup("anthropic", "gpt-4o") is None  # the catalog is per provider
    assert lookup("openai", "gpt-4") is None  # "gpt-4o*" is not a prefix of "gpt-4"


def test_overrides_win_field_by_field() -> None:
    i = lookup("openai", "gpt-4o-mini-2024-07-18", {"gpt-4o-mini": {"input_usd_per_mtok": 0.1}})
    # "gpt-4o-mini" is an exact name, so it does not match the dated one
    assert i is not None and i.input_usd_per_mtok == 0.15
    over = {"gpt-4o-mini*": {"input_usd_per_mtok": 0.1, "training_cutoff": "2024-01-15"}}
    i = lookup("openai", "gpt-4o-mini-2024-07-18", over)
    assert i is not None
    assert i.input_usd_per_mtok == 0.1
    assert i.output_usd_per_mtok == 0.60  # kept from the catalog
    assert i.training_cutoff == date(2024, 1, 15)
    assert i.pattern == "gpt-4o-mini*"


def test_the_longest_override_applies() -> None:
    over = {
        "gpt-4.1*": ModelOverride(output_usd_per_mtok=9.0),
        "gpt-4.1-nano": ModelOverride(output_usd_per_mtok=0.5),
    }
    nano = lookup("openai", "gpt-4.1-nano", over)
    mini = lookup("openai", "gpt-4.1-mini", over)
    assert nano is not None and nano.output_usd_per_mtok == 0.5
    assert mini is not None and mini.output_usd_per_mtok == 9.0


def test_a_complete_override_describes_an_unknown_model() -> None:
    full = {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2, "training_cutoff": "2024-03-31"}
    i = lookup("openai", "my-finetune", {"my-finetune": full})
    assert i is not None and i.pattern == "my-finetune" and i.output_usd_per_mtok == 2
    assert lookup("openai", "my-finetune", {"my-finetune": {"input_usd_per_mtok": 1}}) is None
    # a local model is free unless said otherwise, so its cutoff is enough
    local = lookup("ollama", "mistral:7b", {"mistral*": {"training_cutoff": date(2023, 9, 1)}})
    assert local is not None and local.input_usd_per_mtok == 0


def test_a_bad_override_is_an_error() -> None:
    with pytest.raises(ValidationError):
        lookup("openai", "gpt-4o", {"gpt-4o": {"input_price": 1}})
    with pytest.raises(ValidationError):
        lookup("openai", "gpt-4o", {"gpt-4o": {"input_usd_per_mtok": -1}})


def test_cost_arithmetic() -> None:
    i = info("claude-sonnet-4-20250514", "anthropic")  # 3 in, 15 out
    assert cost_usd(i, 1_000_000, 0) == pytest.approx(3.0)
    assert cost_usd(i, 0, 1_000_000) == pytest.approx(15.0)
    assert cost_usd(i, 2_000, 500) == pytest.approx(2_000 * 3e-6 + 500 * 15e-6)
    assert cost_usd(i, 0, 0) == 0
    with pytest.raises(ValueError, match="negative"):
        cost_usd(i, -1, 0)


def test_contaminated_on_both_sides_of_the_cutoff() -> None:
    i = info("gpt-4o")
    cutoff = i.training_cutoff
    assert contaminated(i, cutoff - timedelta(days=365))
    assert contaminated(i, cutoff)  # the cutoff day itself may have been seen
    assert not contaminated(i, cutoff + timedelta(days=1))
    assert not contaminated(i, date(2025, 7, 22))


def test_model_info_is_frozen() -> None:
    with pytest.raises(ValidationError):
        info().input_usd_per_mtok = 0


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog, again and again, until it is tired.",
        "15m range-bound below the 20-bar mean (-0.24%); 5m downtrend (EMA20 slope "
        "-0.02%/bar), with bearish engulfing on 1.1x average volume.",
        "Position: long 0.015 BTC, entry 64210.5, unrealised P&L +12.30 USD\n" * 20,
        '{"coin": "BTC", "action": "hold", "size_fraction": 0.0, "confidence": 0.5}',
    ],
)
def test_estimate_is_near_a_quarter_of_the_characters(text: str) -> None:
    n = estimate_tokens(text)
    assert len(text) / 4 * 0.6 <= n <= len(text) / 4 * 2.0


def test_estimate_small_cases() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello") == 1
    assert estimate_tokens("hello world") == 2
    assert estimate_tokens("64210") == 2
    assert estimate_tokens("日本語") == 3
    assert estimate_tokens("a" * 4000) <= 4000 / 4 * 2
