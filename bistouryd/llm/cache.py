"""The decision cache: a model's answer to one exact prompt, kept so that a replay or a
backtest run again gets the same decisions without paying for them again.

The key is the provider, the model, the prompt version and the prompt's sha256: any
change to the wording, the signals, the position or the time misses. The ``rules`` model
is never cached (it is free and deterministic). ``MemoryCache`` lives for one run;
``bistouryd.storage.decisions.StoredDecisionCache`` reads the decisions a database
already holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from bistouryd.llm.decision import TradeDecision


class CacheKey(NamedTuple):
    provider: str
    model: str
    prompt_version: str
    prompt_sha256: str


@dataclass(frozen=True)
class CachedAnswer:
    """What the model answered, as it was parsed and paid for the first time."""

    decision: TradeDecision
    raw_text: str
    input_tokens: int | None
    output_tokens: int | None


class DecisionCache(Protocol):
    def get(self, key: CacheKey) -> CachedAnswer | None: ...

    def put(self, key: CacheKey, answer: CachedAnswer) -> None: ...


class MemoryCache:
    """A cache for one run (a dict); ``hits`` and ``misses`` say how well it served."""

    def __init__(self) -> None:
        self._answers: dict[CacheKey, CachedAnswer] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: CacheKey) -> CachedAnswer | None:
        answer = self._answers.get(key)
        if answer is None:
            self.misses += 1
        else:
            self.hits += 1
        return answer

    def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        self._answers[key] = answer
