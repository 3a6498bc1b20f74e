"""What Bistoury knows about the language models it can call: their price per token, their
training cutoff, and an offline token estimate.

The price turns a call's token usage into USD (the daily LLM budget, the ``cost`` metric);
the cutoff says when a backtest is contaminated: a model asked about a period it was
trained on may remember what happened next, so its results there prove nothing.

The catalog holds defaults; the ``overrides`` of ``lookup`` (meant to come from the
config) correct a price that changed or a cutoff we have wrong, and describe a model the
catalog does not know. Pure: no clock, no network.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LlmProvider = Literal["openai", "anthropic", "ollama"]


class ModelInfo(BaseModel):
    """One model's price and training cutoff, as ``lookup`` resolved them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: LlmProvider
    model: str = Field(min_length=1, description="the name asked for")
    pattern: str = Field(min_length=1, description="the catalog or override entry it matched")
    input_usd_per_mtok: float = Field(ge=0, description="USD per 1M input tokens")
    output_usd_per_mtok: float = Field(ge=0, description="USD per 1M output tokens")
    training_cutoff: date = Field(description="the last day the model may have seen")


class ModelOverride(BaseModel):
    """Fields of a ``ModelInfo`` set from the config; the unset ones keep the catalog's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_usd_per_mtok: float | None = Field(default=None, ge=0)
    output_usd_per_mtok: float | None = Field(default=None, ge=0)
    training_cutoff: date | None = None


# (provider, pattern, USD per 1M input tokens, per 1M output tokens, training cutoff).
# A pattern is an exact name or a prefix ending in "*"; the longest one that matches wins,
# so "gpt-4o-mini*" beats "gpt-4o*" and "claude-sonnet-4-5*" beats "claude-sonnet-4*".
# Prices are the providers' published list prices (standard tier, no batch or cache
# discounts). Cutoffs are the published training-data cutoffs; where only a month is
# published it is stored as the month's last day (the conservative reading). Both are
# DEFAULTS: prices change and cutoffs get revised, so a user can override any of them
# (``lookup``'s ``overrides``, from the config).
_CATALOG: tuple[tuple[LlmProvider, str, float, float, date], ...] = (
    # OpenAI
    ("openai", "gpt-3.5-turbo*", 0.50, 1.50, date(2021, 9, 30)),
    ("openai", "gpt-4-turbo*", 10.00, 30.00, date(2023, 12, 31)),
    ("openai", "gpt-4o*", 2.50, 10.00, date(2023, 10, 31)),
    ("openai", "gpt-4o-mini*", 0.15, 0.60, date(2023, 10, 31)),
    ("openai", "gpt-4.1*", 2.00, 8.00, date(2024, 6, 1)),
    ("openai", "gpt-4.1-mini*", 0.40, 1.60, date(2024, 6, 1)),
    ("openai", "gpt-4.1-nano*", 0.10, 0.40, date(2024, 6, 1)),
    ("openai", "gpt-5*", 1.25, 10.00, date(2024, 9, 30)),
    ("openai", "gpt-5-mini*", 0.25, 2.00, date(2024, 5, 31)),
    ("openai", "gpt-5-nano*", 0.05, 0.40, date(2024, 5, 31)),
    ("openai", "gpt-5-pro*", 15.00, 120.00, date(2024, 9, 30)),
    ("openai", "o3-mini*", 1.10, 4.40, date(2023, 10, 31)),
    ("openai", "o3*", 2.00, 8.00, date(2024, 6, 1)),
    ("openai", "o3-pro*", 20.00, 80.00, date(2024, 6, 1)),
    ("openai", "o4-mini*", 1.10, 4.40, date(2024, 6, 1)),
    # Anthropic (dated names such as claude-3-5-haiku-20241022 and -latest aliases match)
    ("anthropic", "claude-3-haiku*", 0.25, 1.25, date(2023, 8, 31)),
    ("anthropic", "claude-3-opus*", 15.00, 75.00, date(2023, 8, 31)),
    ("anthropic", "claude-3-5-sonnet*", 3.00, 15.00, date(2024, 4, 30)),
    ("anthropic", "claude-3-5-haiku*", 0.80, 4.00, date(2024, 7, 31)),
    ("anthropic", "claude-3-7-sonnet*", 3.00, 15.00, date(2024, 11, 30)),
    ("anthropic", "claude-sonnet-4*", 3.00, 15.00, date(2025, 3, 31)),
    ("anthropic", "claude-opus-4*", 15.00, 75.00, date(2025, 3, 31)),
    ("anthropic", "claude-sonnet-4-5*", 3.00, 15.00, date(2025, 7, 31)),
    ("anthropic", "claude-haiku-4-5*", 1.00, 5.00, date(2025, 7, 31)),
    ("anthropic", "claude-opus-4-5*", 5.00, 25.00, date(2025, 8, 31)),
    # Ollama: local, so free; tags such as llama3.1:8b match
    ("ollama", "llama3*", 0.0, 0.0, date(2023, 12, 31)),
    ("ollama", "llama3.1*", 0.0, 0.0, date(2023, 12, 31)),
    ("ollama", "llama3.2*", 0.0, 0.0, date(2023, 12, 31)),
    ("ollama", "llama3.3*", 0.0, 0.0, date(2023, 12, 31)),
    ("ollama", "gpt-oss*", 0.0, 0.0, date(2024, 6, 30)),
)

# What a model the catalog does not know costs when an override leaves the price unset:
# nothing for a local model, unknown (so the override must say) for a paid API.
_DEFAULT_PRICE: dict[LlmProvider, float | None] = {
    "openai": None,
    "anthropic": None,
    "ollama": 0.0,
}


def _match(pattern: str, model: str) -> bool:
    p, m = pattern.lower(), model.lower()
    return m.startswith(p[:-1]) if p.endswith("*") else m == p


def _best(patterns: list[str], model: str) -> str | None:
    """The longest pattern matching ``model``; an exact name beats a prefix of equal length."""
    hits = [p for p in patterns if _match(p, model)]
    if not hits:
        return None
    return max(hits, key=lambda p: (len(p.rstrip("*")), not p.endswith("*")))


def lookup(
    provider: LlmProvider,
    model: str,
    overrides: Mapping[str, ModelOverride | Mapping[str, Any]] | None = None,
) -> ModelInfo | None:
    """The price and cutoff of ``provider``'s ``model``, or None when nothing describes it.

    ``overrides`` maps a model name or pattern (``"gpt-4.1*"``) to the fields to replace;
    the longest matching one applies over the catalog's entry. A model the catalog does
    not know is described only by an override that gives every field (for ``ollama``, the
    price defaults to 0, so the cutoff is enough).
    """
    entries = {p: (pin, pout, cut) for prov, p, pin, pout, cut in _CATALOG if prov == provider}
    base_key = _best(list(entries), model)
    over_map = {k: ModelOverride.model_validate(v) for k, v in (overrides or {}).items()}
    over_key = _best(list(over_map), model)
    over = over_map[over_key] if over_key is not None else ModelOverride()

    pin: float | None
    pout: float | None
    cut: date | None
    if base_key is not None:
        pin, pout, cut = entries[base_key]
    else:
        pin = pout = _DEFAULT_PRICE[provider]
        cut = None
    pin = over.input_usd_per_mtok if over.input_usd_per_mtok is not None else pin
    pout = over.output_usd_per_mtok if over.output_usd_per_mtok is not None else pout
    cut = over.training_cutoff if over.training_cutoff is not None else cut
    pattern = over_key if over_key is not None else base_key
    if pin is None or pout is None or cut is None or pattern is None:
        return None
    return ModelInfo(
        provider=provider,
        model=model,
        pattern=pattern,
        input_usd_per_mtok=pin,
        output_usd_per_mtok=pout,
        training_cutoff=cut,
    )


def cost_usd(info: ModelInfo, input_tokens: int, output_tokens: int) -> float:
    """What a call with this usage costs, in USD."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts cannot be negative")
    return (
        input_tokens * info.input_usd_per_mtok + output_tokens * info.output_usd_per_mtok
    ) / 1_000_000


def contaminated(info: ModelInfo, period_start: date) -> bool:
    """True when a period starting on ``period_start`` is not unseen by the model.

    The cutoff is the last day the model may have seen, so a period starting on or before
    it may be one whose outcome the model remembers: a backtest there is not evidence.
    """
    return period_start <= info.training_cutoff


# ---- token estimate ---------------------------------------------------------------------

# Pieces a BPE tokenizer (OpenAI's o200k/cl100k, Anthropic's, Llama 3's) treats alike:
# runs of ASCII letters, of digits, of whitespace, of ASCII punctuation, and any other
# single character.
_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|\s+|[!-/:-@\[-`{-~]+|.", re.DOTALL)


def estimate_tokens(text: str) -> int:
    """An offline estimate of ``text``'s token count, for budgeting before a call.

    No tokenizer is bundled (their vocabularies are downloads), so this counts what BPE
    tokenizers roughly do: a word of up to 7 letters is one token and every further 7
    letters another (common words are whole tokens, rare ones split); digits go in groups
    of 3 ("64210" is 2 tokens); a space joins the word after it, a run of spaces or line
    breaks is one token; ASCII punctuation goes in pairs (``":`` and ``%);`` are common
    merges); every non-ASCII character (accents, CJK, emoji) is one. On English prose
    with numbers this lands near ``len(text) / 4``, and it errs high rather than low on
    JSON and non-English text. After a call, the provider's reported usage is the truth;
    this is only the estimate before it.
    """
    n = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isspace():
            n += 0 if piece == " " else 1
        elif first.isascii() and first.isalpha():
            n += 1 + (len(piece) - 1) // 7
        elif first.isascii() and first.isdigit():
            n += math.ceil(len(piece) / 3)
        elif first.isascii():
            n += math.ceil(len(piece) / 2)
        else:
            n += 1
    return n
