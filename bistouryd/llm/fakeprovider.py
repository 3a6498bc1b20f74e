"""A fake LLM provider for tests: an aiohttp server speaking enough of the OpenAI chat
completions, Anthropic messages and Ollama chat APIs for the real LangChain clients to run
against it unchanged (through their base URL), answering from a script::

    with FakeProvider() as fake:
        fake.rate_limit(2.0)
        llm = ChatOpenAI(base_url=f"{fake.url}/v1", api_key="test", model="gpt-4o-mini")

Every request is recorded in ``fake.requests``. Scripted behaviours are consumed in order,
each for ``count`` requests; once the queue is empty the default responder answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from bistouryd.background import BackgroundServer

Kind = Literal["openai", "anthropic", "ollama"]
Answer = dict[str, Any] | str
"""A decision dict (sent as the tool call or JSON content) or plain text."""
Responder = Callable[["LlmRequest"], Answer]
Step = Literal["answer", "rate_limit", "server_error", "slow", "malformed", "invalid", "coin"]

MAX_KEPT = 10_000  # requests remembered; a long demo must not grow without bound
MALFORMED_JSON = '{"coin": "BTC", "action": "hold", "size_fraction": '


@dataclass(frozen=True)
class LlmRequest:
    """One request as received: its path, provider kind, model, all message text, and body."""

    path: str
    kind: Kind
    model: str
    text: str
    body: dict[str, Any]

    @property
    def tool_name(self) -> str | None:
        """The tool the answer must call, if the client sent tools."""
        return _tool_name(self.kind, self.body)

    @property
    def wants_json(self) -> bool:
        """True when the client asked for JSON content (response_format, format, output)."""
        body = self.body
        if self.kind == "openai":
            return "response_format" in body
        if self.kind == "ollama":
            return bool(body.get("format"))
        return "output_format" in body or "format" in (body.get("output_config") or {})


def hold(coin: str = "BTC") -> dict[str, Any]:
    """A valid ``hold`` decision."""
    return {
        "coin": coin,
        "action": "hold",
        "size_fraction": 0.0,
        "confidence": 0.5,
        "rationale": "No signal is strong enough.",
        "contributions": [],
    }


_ASKED_COIN = re.compile(r"^Coin: (\S+)$", re.MULTILINE)
_CROSS_LINE = re.compile(
    r"^- cross_signal \((long|short|neutral), strength ([0-9.]+), confidence ([0-9.]+)",
    re.MULTILINE,
)
_POSITION = re.compile(r"^Position: (flat|long|short)", re.MULTILINE)


def _default_responder(request: LlmRequest) -> Answer:
    """A hold for the coin the prompt asks about (BTC when it names none)."""
    asked = _ASKED_COIN.search(request.text)
    return hold(asked.group(1) if asked else "BTC")


def prompt_responder(request: LlmRequest) -> Answer:
    """A decision read off the prompt the way a cautious model might: follow a
    ``cross_signal`` of strength 0.3 or more when flat, close against it, else hold. For
    the demo (``make demo LLM=fake``): the decisions change with the market."""
    asked = _ASKED_COIN.search(request.text)
    coin = asked.group(1) if asked else "BTC"
    cross = _CROSS_LINE.search(request.text)
    position = _POSITION.search(request.text)
    side = position.group(1) if position else "flat"
    if cross is None:
        return hold(coin)
    direction, strength, confidence = cross.group(1), float(cross.group(2)), float(cross.group(3))
    why = f"cross_signal is {direction} with strength {strength:.2f}, confidence {confidence:.2f}"
    decision: dict[str, Any] = {**hold(coin), "confidence": confidence}
    if side == "flat" and direction != "neutral" and strength >= 0.3:
        decision.update(
            action=f"open_{direction}",
            size_fraction=0.1,
            stop_loss_pct=0.01,
            take_profit_pct=0.02,
            rationale=f"{why}: opening {direction} with 10% of the budget.",
        )
    elif side != "flat" and direction not in ("neutral", side) and strength >= 0.2:
        decision.update(action="close", rationale=f"{why}, against the {side} position: closing.")
    else:
        decision.update(rationale=f"{why}: nothing to do.")
    return decision


@dataclass
class _Scripted:
    step: Step
    left: int
    value: Any = None


@dataclass
class _State:
    responder: Responder
    queue: list[_Scripted] = field(default_factory=list)
    requests: deque[LlmRequest] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> _Scripted | None:
        with self.lock:
            if not self.queue:
                return None
            first = self.queue[0]
            first.left -= 1
            if first.left <= 0:
                self.queue.pop(0)
            return first


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(t for t in (_text(v) for v in value) if t)
    if isinstance(value, dict):
        return _text(value.get("text", value.get("content", "")))
    return ""


def _tool_name(kind: Kind, body: dict[str, Any]) -> str | None:
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        named = choice.get("name") or (choice.get("function") or {}).get("name")
        if named:
            return str(named)
    first = tools[0]
    return str(first["name"] if kind == "anthropic" else first["function"]["name"])


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _error(kind: Kind, status: int, message: str, headers: dict[str, str]) -> web.Response:
    body: dict[str, Any]
    if kind == "openai":
        etype, code = {
            429: ("requests", "rate_limit_exceeded"),
            400: ("invalid_request_error", None),
        }.get(status, ("server_error", None))
        body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    elif kind == "anthropic":
        etype = {429: "rate_limit_error", 400: "invalid_request_error"}.get(status, "api_error")
        body = {"type": "error", "error": {"type": etype, "message": message}}
    else:
        body = {"error": message}
    return web.json_response(body, status=status, headers=headers)


class FakeServer:
    """The fake provider inside one asyncio loop."""

    def __init__(self, state: _State, host: str, port: int) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def open(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._route("openai"))
        app.router.add_post("/chat/completions", self._route("openai"))
        app.router.add_post("/v1/messages", self._route("anthropic"))
        app.router.add_post("/api/chat", self._route("ollama"))
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=0.5,
            access_log=None,
            handler_cancellation=True,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _route(self, kind: Kind) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(kind, request)

        return handle

    async def _handle(self, kind: Kind, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            return _error(kind, 400, f"invalid JSON body: {exc}", {})
        text = _text([body.get("system", ""), body.get("messages", [])])
        req = LlmRequest(request.path, kind, str(body.get("model", "")), text, body)
        with self.state.lock:
            self.state.requests.append(req)
            responder = self.state.responder
        if kind != "ollama" and body.get("stream"):
            return _error(kind, 400, "the fake provider does not stream", {})
        step = self.state.take() or _Scripted("answer", 0, responder)
        what, value = step.step, step.value
        if what == "rate_limit":
            retry = {"Retry-After": str(math.ceil(value)), "retry-after-ms": str(int(value * 1000))}
            return _error(kind, 429, "Rate limit reached (fake provider).", retry)
        if what == "server_error":
            return _error(kind, 500, "The server had an error (fake provider).", {})
        if what == "malformed" and value:
            return web.Response(text=MALFORMED_JSON, content_type="application/json")
        if what == "slow":
            await asyncio.sleep(value)
        answer = (value if what == "answer" else responder)(req)
        if what in ("invalid", "coin"):
            decision = dict(answer) if isinstance(answer, dict) else hold()
            if what == "coin":
                decision["coin"] = value
            else:
                decision.update(action="open_long", size_fraction=0.2, confidence=3.0)
                decision.pop("stop_loss_pct", None)
            answer = decision
        if what == "malformed":
            content = MALFORMED_JSON
        else:
            content = answer if isinstance(answer, str) else json.dumps(answer)
        usage = (_tokens(text), _tokens(content))
        if kind == "openai":
            return web.json_response(_openai(req, content, usage))
        if kind == "anthropic":
            return web.json_response(_anthropic(req, content, answer, what, usage))
        return await _ollama(request, req, content, answer, what, usage)


def _openai(req: LlmRequest, content: str, usage: tuple[int, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    finish = "stop"
    tool = req.tool_name
    if tool is not None and not req.wants_json:
        call = {"name": tool, "arguments": content}
        message.update(
            content=None,
            tool_calls=[
                {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": call}
            ],
        )
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        },
        "system_fingerprint": None,
    }


def _anthropic(
    req: LlmRequest, content: str, answer: Answer, what: Step, usage: tuple[int, int]
) -> dict[str, Any]:
    tool = req.tool_name
    block: dict[str, Any] = {"type": "text", "text": content}
    stop = "end_turn"
    if tool is not None and not req.wants_json and what != "malformed" and isinstance(answer, dict):
        block = {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex[:24]}",
            "name": tool,
            "input": answer,
        }
        stop = "tool_use"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


async def _ollama(
    request: web.Request,
    req: LlmRequest,
    content: str,
    answer: Answer,
    what: Step,
    usage: tuple[int, int],
) -> web.StreamResponse:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    tool = req.tool_name
    if tool is not None and not req.wants_json and what != "malformed" and isinstance(answer, dict):
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": tool, "arguments": answer}}],
        }
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    base = {"model": req.model, "created_at": created}
    final = {
        **base,
        "done": True,
        "done_reason": "stop",
        "total_duration": 1_000_000,
        "load_duration": 1_000,
        "prompt_eval_count": usage[0],
        "prompt_eval_duration": 1_000,
        "eval_count": usage[1],
        "eval_duration": 1_000,
    }
    if req.body.get("stream", True) is False:
        return web.json_response({**final, "message": message})
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for chunk in (
        {**base, "message": message, "done": False},
        {**final, "message": {"role": "assistant", "content": ""}},
    ):
        await response.write(json.dumps(chunk).encode() + b"\n")
    await response.write_eof()
    return response


class FakeProvider(BackgroundServer[FakeServer]):
    """The fake provider in a background thread; ``port=0`` picks a free port."""

    what = "the fake provider"

    def __init__(
        self, responder: Responder | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__()
        self._state = _State(responder or _default_responder)
        self._host, self._port = host, port

    def _make(self) -> FakeServer:
        return FakeServer(self._state, self._host, self._port)

    @property
    def requests(self) -> list[LlmRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    # -- the script (thread-safe) -------------------------------------------------------------

    def _push(self, step: Step, count: int, value: Any = None) -> None:
        with self._state.lock:
            self._state.queue.append(_Scripted(step, count, value))

    def set_responder(self, responder: Responder) -> None:
        """Replace the default responder (used when the script is empty)."""
        with self._state.lock:
            self._state.responder = responder

    def answer(self, answer: Answer | Responder, count: int = 1) -> None:
        """Answer with this decision (or text, or responder) for ``count`` requests."""
        self._push("answer", count, answer if callable(answer) else (lambda _r: answer))

    def rate_limit(self, retry_after_s: float = 1.0, count: int = 1) -> None:
        """HTTP 429 with ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``."""
        self._push("rate_limit", count, retry_after_s)

    def server_error(self, count: int = 1) -> None:
        """HTTP 500 with the provider's error JSON."""
        self._push("server_error", count)

    def slow(self, seconds: float, count: int = 1) -> None:
        """Answer normally after ``seconds``."""
        self._push("slow", count, seconds)

    def malformed(self, count: int = 1, body: bool = False) -> None:
        """Answer with broken JSON as content / tool arguments, or (``body``) a broken body."""
        self._push("malformed", count, body)

    def invalid_decision(self, count: int = 1) -> None:
        """A well-formed decision failing validation: open_long, no stop, confidence 3."""
        self._push("invalid", count)

    def hallucinated_coin(self, coin: str = "XYZ", count: int = 1) -> None:
        """The responder's decision, but for ``coin``."""
        self._push("coin", count, coin)

    def pending(self) -> int:
        """Scripted requests not yet consumed."""
        with self._state.lock:
            return sum(s.left for s in self._state.queue)

    def reset(self, responder: Responder | None = None) -> None:
        """Drop the script and the recorded requests; set the default responder."""
        with self._state.lock:
            self._state.queue.clear()
            self._state.requests.clear()
            self._state.responder = responder or _default_responder


def main(argv: list[str] | None = None) -> int:
    """``python -m bistouryd.llm.fakeprovider``: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        description="A fake OpenAI / Anthropic / Ollama server for tests and the demo: "
        "it answers every chat request with a decision read off the prompt."
    )
    parser.add_argument("--host", default="127.0.0.1", help="default %(default)s")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--ready-file", type=Path, help="write the base URL here once listening")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        fake = FakeProvider(prompt_responder, args.host, args.port)
        url = fake.start()
    except (OSError, RuntimeError) as exc:
        print(f"ERROR: the fake provider could not start: {exc}", file=sys.stderr)
        print("  → pick another --port, or 0 for a free one", file=sys.stderr)
        return 2
    print(f"{url} ready: fake OpenAI (/v1), Anthropic and Ollama APIs", flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(url)
        os.replace(tmp, args.ready_file)
    try:
        stop.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
