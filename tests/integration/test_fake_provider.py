"""The fake LLM provider driven by the real LangChain clients (OpenAI, Anthropic, Ollama)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pydantic
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.fakeprovider import FakeProvider, LlmRequest, prompt_responder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

LONG: dict[str, Any] = {
    "coin": "ETH",
    "action": "open_long",
    "size_fraction": 0.25,
    "stop_loss_pct": 0.02,
    "take_profit_pct": 0.05,
    "confidence": 0.8,
    "rationale": "Momentum and funding agree.",
    "contributions": [
        {"strategy": "momentum", "direction": "long", "weight": 0.7, "reason": "breakout"}
    ],
}
PROMPT = "Decide for ETH."


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    server.reset()
    return server


def openai_llm(fake: FakeProvider, **kw: Any) -> ChatOpenAI:
    url, key = f"{fake.url}/v1", SecretStr("test")
    return ChatOpenAI(base_url=url, api_key=key, model="gpt-4o-mini", max_retries=0, **kw)


def anthropic_llm(fake: FakeProvider, **kw: Any) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=fake.url, api_key=SecretStr("test"), model_name="claude-test", max_retries=0, **kw
    )


def ollama_llm(fake: FakeProvider, timeout: float = 5.0) -> ChatOllama:
    return ChatOllama(base_url=fake.url, model="llama3.1", client_kwargs={"timeout": timeout})


def assert_usage(message: Any) -> None:
    assert isinstance(message, AIMessage)
    usage = message.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


# -- OpenAI -------------------------------------------------------------------------------


def test_openai_plain_invoke_reports_usage(fake: FakeProvider) -> None:
    fake.answer("Nothing to do.")
    message = openai_llm(fake).invoke(PROMPT)
    assert message.content == "Nothing to do."
    assert_usage(message)
    (req,) = fake.requests
    assert (req.path, req.kind, req.model) == ("/v1/chat/completions", "openai", "gpt-4o-mini")
    assert PROMPT in req.text and not req.body.get("stream")


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_openai_structured_output(fake: FakeProvider, method: str) -> None:
    fake.answer(LONG)
    llm = openai_llm(fake).with_structured_output(TradeDecision, method=method)  # type: ignore[arg-type]
    assert llm.invoke(PROMPT) == TradeDecision.model_validate(LONG)
    body = fake.requests[-1].body
    if method == "function_calling":
        assert body["tool_choice"] == {"type": "function", "function": {"name": "TradeDecision"}}
        assert body["tools"][0]["function"]["name"] == "TradeDecision"
    else:
        kind = "json_object" if method == "json_mode" else "json_schema"
        assert body["response_format"]["type"] == kind


def test_openai_rate_limit_server_error_and_timeout(fake: FakeProvider) -> None:
    llm = openai_llm(fake, timeout=0.5)
    fake.rate_limit(2.5)
    with pytest.raises(openai.RateLimitError) as limited:
        llm.invoke(PROMPT)
    assert limited.value.response.headers["Retry-After"] == "3"
    assert limited.value.body == {
        "message": "Rate limit reached (fake provider).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    fake.server_error()
    with pytest.raises(openai.InternalServerError):
        llm.invoke(PROMPT)
    fake.slow(2.0)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        llm.invoke(PROMPT)
    assert time.monotonic() - started < 1.5
    assert llm.invoke(PROMPT).content  # the script is used up: back to normal


def test_openai_malformed(fake: FakeProvider) -> None:
    llm = openai_llm(fake)
    fake.malformed()
    with pytest.raises(pydantic.ValidationError, match="Invalid JSON"):
        llm.with_structured_output(TradeDecision).invoke(PROMPT)
    # Broken tool arguments are not an error in LangChain: nothing is parsed.
    fake.malformed()
    tools = llm.with_structured_output(TradeDecision, method="function_calling", include_raw=True)
    out = tools.invoke(PROMPT)
    assert isinstance(out, dict) and out["parsed"] is None and out["parsing_error"] is None
    assert out["raw"].invalid_tool_calls and not out["raw"].tool_calls
    fake.malformed(body=True)
    with pytest.raises(ValueError):
        llm.invoke(PROMPT)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_openai_invalid_decision(fake: FakeProvider, method: str) -> None:
    fake.invalid_decision()
    llm = openai_llm(fake).with_structured_output(TradeDecision, method=method)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        llm.invoke(PROMPT)


# -- Anthropic ----------------------------------------------------------------------------


def test_anthropic_plain_invoke_reports_usage(fake: FakeProvider) -> None:
    fake.answer("Nothing to do.")
    message = anthropic_llm(fake).invoke([("system", "You trade."), ("human", PROMPT)])
    assert message.content == "Nothing to do."
    assert_usage(message)
    (req,) = fake.requests
    assert (req.path, req.kind, req.model) == ("/v1/messages", "anthropic", "claude-test")
    assert "You trade." in req.text and PROMPT in req.text


def test_anthropic_structured_output_uses_tool(fake: FakeProvider) -> None:
    fake.answer(LONG)
    out = anthropic_llm(fake).with_structured_output(TradeDecision, include_raw=True)
    result = out.invoke(PROMPT)
    assert isinstance(result, dict)
    assert result["parsed"] == TradeDecision.model_validate(LONG)
    assert_usage(result["raw"])
    body = fake.requests[-1].body
    assert body["tool_choice"] == {"type": "tool", "name": "TradeDecision"}
    assert body["tools"][0]["name"] == "TradeDecision"


def test_anthropic_rate_limit_server_error_and_timeout(fake: FakeProvider) -> None:
    llm = anthropic_llm(fake, timeout=0.5)
    fake.rate_limit(1)
    with pytest.raises(anthropic.RateLimitError) as limited:
        llm.invoke(PROMPT)
    assert limited.value.response.headers["Retry-After"] == "1"
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached (fake provider)."},
    }
    fake.server_error()
    with pytest.raises(anthropic.InternalServerError):
        llm.invoke(PROMPT)
    fake.slow(2.0)
    with pytest.raises(anthropic.APITimeoutError):
        llm.invoke(PROMPT)


def test_anthropic_malformed_and_invalid(fake: FakeProvider) -> None:
    llm = anthropic_llm(fake)
    fake.malformed()  # the model answers broken JSON text instead of calling the tool
    out = llm.with_structured_output(TradeDecision, include_raw=True).invoke(PROMPT)
    assert isinstance(out, dict) and out["parsed"] is None and not out["raw"].tool_calls
    fake.malformed()
    with pytest.raises(OutputParserException):
        llm.with_structured_output(TradeDecision, method="json_schema").invoke(PROMPT)
    fake.invalid_decision()
    out = llm.with_structured_output(TradeDecision, include_raw=True).invoke(PROMPT)
    assert isinstance(out, dict) and isinstance(out["parsing_error"], pydantic.ValidationError)
    fake.invalid_decision()
    with pytest.raises(pydantic.ValidationError):
        llm.with_structured_output(TradeDecision).invoke(PROMPT)


# -- Ollama -------------------------------------------------------------------------------


def test_ollama_plain_invoke_streams_and_reports_usage(fake: FakeProvider) -> None:
    fake.answer("Nothing to do.")
    message = ollama_llm(fake).invoke(PROMPT)
    assert message.content == "Nothing to do."
    assert_usage(message)
    (req,) = fake.requests
    assert (req.path, req.kind, req.model) == ("/api/chat", "ollama", "llama3.1")
    assert req.body["stream"] is True  # ChatOllama always asks for NDJSON


def test_ollama_non_streaming_client(fake: FakeProvider) -> None:
    fake.answer(LONG)
    answer = ollama.Client(host=fake.url).chat(
        model="llama3.1", messages=[{"role": "user", "content": PROMPT}], stream=False
    )
    assert TradeDecision.model_validate_json(answer.message.content or "") == (
        TradeDecision.model_validate(LONG)
    )
    assert answer.prompt_eval_count and answer.eval_count


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_ollama_structured_output(fake: FakeProvider, method: str) -> None:
    fake.answer(LONG)
    llm = ollama_llm(fake).with_structured_output(TradeDecision, method=method)  # type: ignore[arg-type]
    assert llm.invoke(PROMPT) == TradeDecision.model_validate(LONG)
    body = fake.requests[-1].body
    if method == "json_schema":
        assert body["format"]["title"] == "TradeDecision"
    else:
        assert body["tools"][0]["function"]["name"] == "TradeDecision"


def test_ollama_rate_limit_server_error_and_timeout(fake: FakeProvider) -> None:
    llm = ollama_llm(fake, timeout=0.5)
    fake.rate_limit(2)
    with pytest.raises(ollama.ResponseError) as limited:
        llm.invoke(PROMPT)
    assert limited.value.status_code == 429
    fake.rate_limit(2)  # the ollama client drops the headers: look at them directly
    raw = httpx.post(f"{fake.url}/api/chat", json={"model": "m", "messages": []}, timeout=2)
    assert raw.status_code == 429 and raw.headers["Retry-After"] == "2"
    assert raw.json() == {"error": "Rate limit reached (fake provider)."}
    fake.server_error()
    with pytest.raises(ollama.ResponseError) as failed:
        llm.invoke(PROMPT)
    assert failed.value.status_code == 500
    fake.slow(2.0)
    with pytest.raises(httpx.TimeoutException):
        llm.invoke(PROMPT)


def test_ollama_malformed_and_invalid(fake: FakeProvider) -> None:
    llm = ollama_llm(fake)
    fake.malformed()
    out = llm.with_structured_output(TradeDecision, include_raw=True).invoke(PROMPT)
    assert isinstance(out, dict) and isinstance(out["parsing_error"], OutputParserException)
    fake.invalid_decision()
    with pytest.raises(pydantic.ValidationError):
        llm.with_structured_output(TradeDecision, method="function_calling").invoke(PROMPT)
    fake.malformed(body=True)
    with pytest.raises(ValueError):
        llm.invoke(PROMPT)


# -- the script ---------------------------------------------------------------------------


def test_responder_and_hallucinated_coin(fake: FakeProvider) -> None:
    seen: list[LlmRequest] = []

    def responder(req: LlmRequest) -> dict[str, Any]:
        seen.append(req)
        return {**LONG, "coin": "SOL" if "SOL" in req.text else "ETH"}

    fake.set_responder(responder)
    fake.hallucinated_coin("DOGE", count=2)
    structured = openai_llm(fake).with_structured_output(TradeDecision)
    answers = [structured.invoke("Decide for SOL.") for _ in range(3)]
    assert [TradeDecision.model_validate(a).coin for a in answers] == ["DOGE", "DOGE", "SOL"]
    assert [r.kind for r in seen] == ["openai"] * 3 and fake.pending() == 0


def test_streaming_is_refused_for_openai(fake: FakeProvider) -> None:
    with pytest.raises(openai.BadRequestError):
        list(openai_llm(fake).stream(PROMPT))


def prompt_with(cross: str, position: str = "flat") -> str:
    return (
        "Coin: SOL\nTime: 2025-07-22T16:00:00Z\n\n"
        f"Signals (strategy (direction, strength, confidence, age): narrative):\n{cross}\n"
        f"- order_flow (neutral, strength 0.10, confidence 0.40, age 5s): balanced book\n\n"
        f"Position: {position}\nDecide for SOL."
    )


def test_the_prompt_responder_follows_the_cross_signal() -> None:
    def ask(text: str) -> dict[str, Any]:
        answer = prompt_responder(LlmRequest("/v1/chat/completions", "openai", "m", text, {}))
        assert isinstance(answer, dict)
        TradeDecision.model_validate(answer)
        return answer

    strong = "- cross_signal (short, strength 0.45, confidence 0.70, age 2s): trending down"
    weak = "- cross_signal (long, strength 0.12, confidence 0.70, age 2s): drifting"
    opened = ask(prompt_with(strong))
    assert (opened["coin"], opened["action"], opened["confidence"]) == ("SOL", "open_short", 0.7)
    assert ask(prompt_with(weak))["action"] == "hold"
    assert ask(prompt_with(strong, "long 2 SOL, entry 150"))["action"] == "close"
    assert ask(prompt_with(strong, "short 2 SOL, entry 150"))["action"] == "hold"
    assert ask("Coin: SOL\nno signals yet")["action"] == "hold"


def test_the_fake_provider_runs_as_a_process(tmp_path: Path) -> None:
    ready = tmp_path / "fake.url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bistouryd.llm.fakeprovider", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = ready.read_text()
        assert url.startswith("http://127.0.0.1:")
        strong = "- cross_signal (long, strength 0.50, confidence 0.60, age 2s): up"
        llm = ChatOpenAI(base_url=f"{url}/v1", api_key=SecretStr("k"), model="gpt-4o-mini")
        decision = llm.with_structured_output(TradeDecision).invoke(prompt_with(strong))
        assert isinstance(decision, TradeDecision)
        assert (decision.coin, decision.action) == ("SOL", "open_long")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
