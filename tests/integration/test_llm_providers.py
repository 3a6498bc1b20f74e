"""``providers.ask`` with each real LangChain client against the local fake provider: a
validated decision with its token usage, one corrective retry for an answer that does not
validate (or names another coin), and every failure as a ``ProviderError`` of the right
kind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.fakeprovider import FakeProvider, hold
from bistouryd.llm.providers import (
    Answer,
    ask,
    chat_model,
    structured_output,
)
from bistouryd.llm.settings import ProviderError, ProviderSettings

pytestmark = pytest.mark.integration

PROVIDERS = ("openai", "anthropic", "ollama")
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-test", "ollama": "llama3.1"}
OPEN = {
    "coin": "BTC",
    "action": "open_long",
    "size_fraction": 0.25,
    "stop_loss_pct": 0.01,
    "take_profit_pct": 0.02,
    "confidence": 0.7,
    "rationale": "cross_signal +0.62 in a trending regime; multi_timeframe agrees.",
    "contributions": [
        {"strategy": "multi_timeframe", "direction": "long", "weight": 1.0, "reason": "15m up"}
    ],
}


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


# One event loop per test, as in the trader: the clients keep their HTTP connections
# (langchain-openai caches its httpx client per base URL), bound to the loop they met.
_loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture(autouse=True)
def loop() -> Iterator[None]:
    global _loop
    _loop = asyncio.new_event_loop()
    yield
    _loop.close()
    _loop = None


def settings(fake: FakeProvider, provider: str, timeout_s: float = 5.0) -> ProviderSettings:
    base = f"{fake.url}/v1" if provider == "openai" else fake.url
    return ProviderSettings(
        provider=provider,  # type: ignore[arg-type]
        model=MODELS[provider],
        api_key=SecretStr("test-key"),
        base_url=base,
        timeout_s=timeout_s,
    )


def run(fake: FakeProvider, provider: str, timeout_s: float = 5.0) -> Answer:
    model = structured_output(chat_model(settings(fake, provider, timeout_s)))
    assert _loop is not None
    return _loop.run_until_complete(ask(model, "You decide.", "Decide for BTC.", "BTC"))


def failure(fake: FakeProvider, provider: str, timeout_s: float = 5.0) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        run(fake, provider, timeout_s)
    return caught.value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_validated_decision_with_its_usage(fake: FakeProvider, provider: str) -> None:
    fake.answer(OPEN)
    answer = run(fake, provider)
    assert answer.decision == TradeDecision.model_validate(OPEN)
    assert answer.attempts == 1
    assert answer.input_tokens and answer.input_tokens > 0
    assert answer.output_tokens and answer.output_tokens > 0
    sent = fake.requests[-1]
    assert (sent.kind, sent.model) == (provider, MODELS[provider])
    assert "Decide for BTC." in sent.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_invalid_answer_is_sent_back_once_with_the_error(
    fake: FakeProvider, provider: str
) -> None:
    fake.invalid_decision()
    fake.answer(OPEN)
    answer = run(fake, provider)
    assert (answer.decision.action, answer.attempts) == ("open_long", 2)
    assert len(fake.requests) == 2
    assert "cannot be used" in fake.requests[1].text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_decision_for_another_coin_is_refused(fake: FakeProvider, provider: str) -> None:
    fake.hallucinated_coin("DOGE", count=2)
    err = failure(fake, provider)
    assert err.kind == "invalid_answer"
    assert "'DOGE'" in err.message and len(fake.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_answers_twice_fail_as_invalid(fake: FakeProvider, provider: str) -> None:
    fake.malformed(count=2)
    assert failure(fake, provider).kind == "invalid_answer"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_then_good_recovers(fake: FakeProvider, provider: str) -> None:
    fake.malformed()
    fake.answer(hold("BTC"))
    assert run(fake, provider).decision.action == "hold"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_http_failures_have_their_kind(fake: FakeProvider, provider: str) -> None:
    fake.rate_limit(retry_after_s=7)
    limited = failure(fake, provider)
    assert limited.kind == "rate_limited"
    if provider != "ollama":  # the ollama client drops response headers
        assert limited.retry_after_s == pytest.approx(7)
    fake.server_error()
    assert failure(fake, provider).kind == "server_error"
    fake.slow(2.0)
    assert failure(fake, provider, timeout_s=0.5).kind == "timeout"


def test_an_unreachable_provider_is_a_connection_failure() -> None:
    with FakeProvider() as gone:
        url = gone.url
    model = structured_output(
        chat_model(ProviderSettings(provider="openai", model="gpt-4o-mini", base_url=f"{url}/v1"))
    )
    assert _loop is not None
    with pytest.raises(ProviderError) as caught:
        _loop.run_until_complete(ask(model, "s", "u", "BTC"))
    assert caught.value.kind == "connection"
