"""The language-model providers through LangChain: one call, one validated decision.

``chat_model`` builds the LangChain client of a provider (``openai`` with any
OpenAI-compatible ``base_url``, ``anthropic``, ``ollama``) with the client's own retries
off: retries, rate limits and fallbacks belong to the trader, which sees every attempt.
``ask`` sends one prompt with structured output (``TradeDecision``); an answer that does
not validate is sent back once with the validation error, and if the second one fails
too the call fails as ``invalid_answer``. Every failure is a ``ProviderError`` with a
kind the retry policy understands, and the server's ``Retry-After`` when it gave one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from pydantic import SecretStr

from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.settings import ProviderError, ProviderSettings


@dataclass(frozen=True)
class Answer:
    """A validated decision and what it cost."""

    decision: TradeDecision
    raw_text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float
    attempts: int  # 2 when the first answer did not validate


def chat_model(settings: ProviderSettings) -> BaseChatModel:
    """The LangChain chat model for ``settings`` (imported only for the provider in use)."""
    key = settings.api_key
    if settings.provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=settings.model,
            api_key=key or SecretStr("not-needed"),
            base_url=settings.base_url,
            temperature=settings.temperature,
            max_completion_tokens=settings.max_tokens,
            timeout=settings.timeout_s,
            max_retries=0,
        )
    if settings.provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(
            model_name=settings.model,
            api_key=key or SecretStr("not-needed"),
            base_url=settings.base_url,
            temperature=settings.temperature,
            max_tokens_to_sample=settings.max_tokens,
            stop=None,
            timeout=settings.timeout_s,
            max_retries=0,
        )
    from langchain_ollama import ChatOllama

    return ChatOllama(
        model=settings.model,
        base_url=settings.base_url,
        temperature=settings.temperature,
        num_predict=settings.max_tokens,
        client_kwargs={"timeout": settings.timeout_s},
    )


def structured_output(model: BaseChatModel) -> Runnable[Any, Any]:
    """``model`` answering ``TradeDecision``s, raw message included. Building it costs a
    millisecond or two (the schema conversion), so callers keep it."""
    return model.with_structured_output(TradeDecision, include_raw=True)


async def ask(structured: Runnable[Any, Any], system: str, user: str, coin: str) -> Answer:
    """One decision about ``coin`` from a ``structured_output`` runnable; raises
    ``ProviderError``.

    An answer that does not validate, or decides for another coin, is sent back once
    with what was wrong; some clients report it as a parsing error, others raise it, and
    a tool call that does not parse comes back as no decision at all.
    """
    messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(user)]
    started = time.monotonic()
    tokens_in = tokens_out = 0
    seen_usage = False
    for attempt in (1, 2):
        raw: AIMessage | None = None
        try:
            result: Any = await structured.ainvoke(messages)
        except Exception as exc:
            failure = classify(exc)
            if failure.kind != "invalid_answer":
                raise failure from exc
            problem = failure.message
        else:
            raw = result.get("raw")
            usage = getattr(raw, "usage_metadata", None)
            if usage:
                seen_usage = True
                tokens_in += int(usage.get("input_tokens", 0))
                tokens_out += int(usage.get("output_tokens", 0))
            parsed = result.get("parsed")
            problem = _problem(parsed, result.get("parsing_error"), coin)
            if not problem and isinstance(parsed, TradeDecision):
                return Answer(
                    decision=parsed,
                    raw_text=_text(raw),
                    input_tokens=tokens_in if seen_usage else None,
                    output_tokens=tokens_out if seen_usage else None,
                    latency_s=time.monotonic() - started,
                    attempts=attempt,
                )
        if attempt == 2:
            raise ProviderError(
                "invalid_answer", f"no valid decision in two answers: {problem}", raw=_text(raw)
            )
        messages = [
            *messages,
            AIMessage(_text(raw) or "(no usable answer)"),
            HumanMessage(
                f"That answer cannot be used: {problem}. Answer again for {coin}, "
                "with every field valid."
            ),
        ]
    raise AssertionError("unreachable")


def _problem(parsed: Any, parsing_error: Any, coin: str) -> str:
    """What is wrong with a structured answer ('' when nothing)."""
    if parsing_error is not None:
        return (
            _short(parsing_error)
            if isinstance(parsing_error, BaseException)
            else str(parsing_error)
        )
    if not isinstance(parsed, TradeDecision):
        return "the answer was not a TradeDecision"
    if parsed.coin != coin:
        return f"the decision is for {parsed.coin!r}, but the request is about {coin!r}"
    return ""


def _text(message: AIMessage | None) -> str:
    """What the model said, tool-call arguments included (for the record)."""
    if message is None:
        return ""
    parts = [message.content if isinstance(message.content, str) else repr(message.content)]
    parts += [repr(call.get("args")) for call in message.tool_calls]
    raw_calls = message.additional_kwargs.get("tool_calls")
    if raw_calls and not message.tool_calls:
        parts.append(repr(raw_calls))
    return "\n".join(p for p in parts if p)


def classify(exc: BaseException) -> ProviderError:
    """A client's exception as a ``ProviderError`` (any provider)."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if isinstance(status, int) and status > 0:
        retry_after = _retry_after(headers)
        message = f"HTTP {status}: {_short(exc)}"
        if status == 429:
            return ProviderError("rate_limited", message, retry_after)
        if status in (401, 403):
            return ProviderError("auth", message)
        if status == 408 or status >= 500:
            return ProviderError("server_error", message, retry_after)
        return ProviderError("bad_request", message)
    name = type(exc).__name__
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)) or "Timeout" in name:
        return ProviderError("timeout", f"no answer in time ({name})")
    if isinstance(exc, (httpx.TransportError, ConnectionError)) or "Connection" in name:
        return ProviderError("connection", f"cannot reach the provider: {_short(exc)}")
    if isinstance(exc, ValueError):  # a body that is not JSON, a tool call that does not parse
        return ProviderError("invalid_answer", f"unreadable answer: {_short(exc)}")
    return ProviderError("bad_request", f"{name}: {_short(exc)}")


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
