"""What the chain needs to know about a provider without loading its LangChain client:
its settings and the error a failed call ends with (``providers`` does the calling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from bistouryd.llm.limits import FailureKind

LLMProvider = Literal["openai", "anthropic", "ollama"]


@dataclass(frozen=True)
class ProviderSettings:
    provider: LLMProvider
    model: str
    api_key: SecretStr | None = None
    base_url: str | None = None
    temperature: float = 0.7
    max_tokens: int = 500
    timeout_s: float = 30.0


class ProviderError(Exception):
    """One failed call: ``kind`` decides whether to retry, fall back or alert."""

    def __init__(
        self, kind: FailureKind, message: str, retry_after_s: float | None = None, raw: str = ""
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s
        self.raw = raw
