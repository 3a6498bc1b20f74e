"""bistouryd.control: a real ControlServer on a Unix socket, driven by REQ/DEALER sockets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from pydantic import BaseModel

from bistouryd.control import (
    ControlError,
    ControlServer,
    ModeRequest,
    StatusRequest,
    StopRequest,
    error_reply,
    ok_reply,
)
from bistouryd.paths import ipc
from bistouryd.protocol import COMMANDS, MAX_REQUEST_BYTES

TIMEOUT_S = 5.0


class Small(BaseModel):
    answer: int
    word: str


class Harness:
    """Handlers that count their calls, and the server's on_request log."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.gate = asyncio.Event()

    def count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def status(self, request: StatusRequest) -> Small:
        self.count("status")
        return Small(answer=42, word=request.id)

    async def mode(self, request: ModeRequest) -> Small:
        self.count("mode")
        raise ControlError(f"mode {request.mode} refused", "first hint", "second hint")

    async def stop(self, request: StopRequest) -> Small:
        self.count("stop")
        raise RuntimeError("boom")

    async def reload(self, request: Any) -> Small:
        self.count("reload")
        await self.gate.wait()
        return Small(answer=self.calls["reload"], word="slow")

    async def unused(self, request: Any) -> Small:
        raise ControlError(f"{request.cmd} is not part of this harness")

    def handlers(self) -> dict[str, Any]:
        """A handler for every command, as the server requires; most refuse."""
        return {
            **{command: self.unused for command in COMMANDS},
            "status": self.status,
            "mode": self.mode,
            "stop": self.stop,
            "reload": self.reload,
        }


@pytest.fixture
def sock_path() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="bc", dir="/tmp"))
    yield root / "control.sock"
    shutil.rmtree(root, ignore_errors=True)


Scenario = Callable[[ControlServer, Harness, zmq.asyncio.Context], Awaitable[None]]


def run(path: Path, scenario: Scenario) -> Harness:
    """Serve on ``path`` while ``scenario`` talks to the server; return the harness."""

    async def main() -> Harness:
        harness = Harness()
        ctx = zmq.asyncio.Context()
        server = ControlServer(
            ctx, path, harness.handlers(), lambda c, r: harness.requests.append((c, r))
        )
        task = asyncio.create_task(server.serve())
        try:
            await asyncio.wait_for(scenario(server, harness, ctx), timeout=TIMEOUT_S * 2)
        finally:
            task.cancel()
            server.close()
            ctx.term()
        return harness

    return asyncio.run(main())


async def ask(ctx: zmq.asyncio.Context, path: Path, payload: bytes) -> bytes:
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(ipc(path))
    try:
        await req.send(payload)
        assert await req.poll(int(TIMEOUT_S * 1000)), "no reply"
        return await req.recv()
    finally:
        req.close()


async def ask_json(ctx: zmq.asyncio.Context, path: Path, body: Any) -> dict[str, Any]:
    reply = json.loads(await ask(ctx, path, json.dumps(body).encode()))
    assert isinstance(reply, dict)
    return reply


def req(cmd: str, id: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"v": 1, "id": id, "cmd": cmd, **extra}


# ---- replies ----------------------------------------------------------------------------


def test_ok_reply_shape(sock_path: Path) -> None:
    got: dict[str, Any] = {}

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        got["reply"] = await ask_json(ctx, sock_path, req("status", id="abc-1"))

    harness = run(sock_path, scenario)
    assert got["reply"] == {
        "v": 1,
        "id": "abc-1",
        "ok": True,
        "result": {"answer": 42, "word": "abc-1"},
    }
    assert harness.calls == {"status": 1}
    assert harness.requests == [("status", "ok")]


def test_socket_file_mode(sock_path: Path) -> None:
    modes: list[int] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        st = os.stat(sock_path)
        assert stat.S_ISSOCK(st.st_mode)
        modes.append(stat.S_IMODE(st.st_mode))

    run(sock_path, scenario)
    assert modes == [0o660]


def test_refused_by_handler(sock_path: Path) -> None:
    got: dict[str, Any] = {}

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        got["reply"] = await ask_json(ctx, sock_path, req("mode", mode="collect"))

    harness = run(sock_path, scenario)
    assert got["reply"] == {
        "v": 1,
        "id": "r1",
        "ok": False,
        "error": {"message": "mode collect refused", "hints": ["first hint", "second hint"]},
    }
    assert harness.requests == [("mode", "refused")]


@pytest.mark.parametrize(
    ("body", "message", "hint"),
    [
        (req("dance"), "unknown command 'dance'", "known commands: " + ", ".join(COMMANDS)),
        (req("status", v=2) | {"v": 2}, "protocol version 2 is not supported", "bistouryctl"),
        ({"id": "r1", "cmd": "status"}, "protocol version None is not supported", "bistouryctl"),
        (req("status", extra=1), "invalid request: extra:", "bistouryctl --help"),
        (req("mode", mode="moon"), "invalid request: mode:", "bistouryctl --help"),
        (req("status", id=""), "invalid request: id:", "bistouryctl --help"),
        ({"v": 1, "id": "r1"}, "invalid request: request:", "bistouryctl --help"),
        ([1, 2, 3], "invalid request: request:", "bistouryctl --help"),
        ("just a string", "invalid request: request:", "bistouryctl --help"),
    ],
)
def test_invalid_requests(sock_path: Path, body: Any, message: str, hint: str) -> None:
    got: dict[str, Any] = {}

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        got["reply"] = await ask_json(ctx, sock_path, body)

    harness = run(sock_path, scenario)
    reply = got["reply"]
    assert reply["ok"] is False
    assert reply["v"] == 1
    assert reply["id"] == (body.get("id") if isinstance(body, dict) else None)
    assert reply["error"]["message"].startswith(message), reply
    assert any(hint in h for h in reply["error"]["hints"]), reply
    assert harness.calls == {}
    assert harness.requests == [("invalid", "error")]


def test_not_json_and_too_large(sock_path: Path) -> None:
    replies: list[dict[str, Any]] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        replies.append(json.loads(await ask(ctx, sock_path, b"{not json")))
        replies.append(json.loads(await ask(ctx, sock_path, b"\xff\xfe\xfd")))
        big = json.dumps(req("status", pad="x" * 100_000)).encode()
        assert len(big) > MAX_REQUEST_BYTES
        replies.append(json.loads(await ask(ctx, sock_path, big)))
        replies.append(await ask_json(ctx, sock_path, req("status", id="after")))

    harness = run(sock_path, scenario)
    assert [r["error"]["message"] for r in replies[:2]] == ["request is not JSON"] * 2
    assert replies[2]["ok"] is False
    assert "too large" in replies[2]["error"]["message"]
    assert replies[2]["error"]["hints"] == [f"requests are at most {MAX_REQUEST_BYTES} bytes"]
    assert replies[3]["ok"] is True
    assert harness.requests == [("invalid", "error")] * 3 + [("status", "ok")]


def test_multi_frame_from_dealer(sock_path: Path) -> None:
    replies: list[list[bytes]] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(ipc(sock_path))
        try:
            body = json.dumps(req("status")).encode()
            # REQ-style envelope with an extra frame.
            await dealer.send_multipart([b"", body, b"extra"])
            assert await dealer.poll(int(TIMEOUT_S * 1000))
            replies.append(await dealer.recv_multipart())
            # Bare DEALER, two frames, no empty delimiter.
            await dealer.send_multipart([body, body])
            assert await dealer.poll(int(TIMEOUT_S * 1000))
            replies.append(await dealer.recv_multipart())
            # Bare DEALER, one frame: a valid request.
            await dealer.send_multipart([json.dumps(req("status", id="d1")).encode()])
            assert await dealer.poll(int(TIMEOUT_S * 1000))
            replies.append(await dealer.recv_multipart())
        finally:
            dealer.close()

    harness = run(sock_path, scenario)
    assert replies[0][0] == b""
    first = json.loads(replies[0][1])
    assert (first["ok"], first["error"]["message"]) == (False, "a request is exactly one frame")
    assert len(replies[1]) == 1
    assert json.loads(replies[1][0])["error"]["message"] == "a request is exactly one frame"
    assert json.loads(replies[2][0])["result"] == {"answer": 42, "word": "d1"}
    assert harness.calls == {"status": 1}


def test_handler_crash_is_an_error_reply_and_server_keeps_serving(sock_path: Path) -> None:
    replies: list[dict[str, Any]] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        replies.append(await ask_json(ctx, sock_path, req("stop", id="s1")))
        replies.append(await ask_json(ctx, sock_path, req("status", id="s2")))

    harness = run(sock_path, scenario)
    assert replies[0] == {
        "v": 1,
        "id": "s1",
        "ok": False,
        "error": {
            "message": "stop failed inside the daemon",
            "hints": ["see the daemon's log for the cause"],
        },
    }
    assert replies[1]["ok"] is True
    assert harness.requests == [("stop", "error"), ("status", "ok")]


def test_same_id_runs_once(sock_path: Path) -> None:
    raw: list[bytes] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        payload = json.dumps(req("status", id="once")).encode()
        raw.append(await ask(ctx, sock_path, payload))
        raw.append(await ask(ctx, sock_path, payload))
        raw.append(await ask(ctx, sock_path, json.dumps(req("stop", id="twice")).encode()))
        raw.append(await ask(ctx, sock_path, json.dumps(req("stop", id="twice")).encode()))

    harness = run(sock_path, scenario)
    assert raw[0] == raw[1]
    assert json.loads(raw[0])["result"]["word"] == "once"
    assert raw[2] == raw[3]
    assert harness.calls == {"status": 1, "stop": 1}
    assert harness.requests == [("status", "ok"), ("stop", "error")]


def test_same_id_while_in_flight_runs_once(sock_path: Path) -> None:
    raw: list[bytes] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        payload = json.dumps(req("reload", id="slow")).encode()
        first = asyncio.create_task(ask(ctx, sock_path, payload))
        second = asyncio.create_task(ask(ctx, sock_path, payload))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S
        while not server._inflight or len(server._tasks) < 2:
            assert loop.time() < deadline, "requests did not arrive"
            await asyncio.sleep(0.005)
        h.gate.set()
        raw.extend(await asyncio.gather(first, second))

    harness = run(sock_path, scenario)
    assert raw[0] == raw[1]
    assert json.loads(raw[0])["result"] == {"answer": 1, "word": "slow"}
    assert harness.calls == {"reload": 1}
    assert harness.requests == [("reload", "ok")]


def test_concurrent_requests_do_not_block_each_other(sock_path: Path) -> None:
    got: list[dict[str, Any]] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        slow = asyncio.create_task(ask_json(ctx, sock_path, req("reload", id="slow")))
        got.append(await ask_json(ctx, sock_path, req("status", id="fast")))
        assert not slow.done()
        h.gate.set()
        got.append(await slow)

    run(sock_path, scenario)
    assert [r["id"] for r in got] == ["fast", "slow"]


def test_reply_helpers() -> None:
    assert json.loads(ok_reply('x"y', Small(answer=1, word="w"))) == {
        "v": 1,
        "id": 'x"y',
        "ok": True,
        "result": {"answer": 1, "word": "w"},
    }
    assert json.loads(error_reply(None, "m", ["h"])) == {
        "v": 1,
        "id": None,
        "ok": False,
        "error": {"message": "m", "hints": ["h"]},
    }


DEEPLY_NESTED = b"[" * 50_000  # valid-looking, under MAX_REQUEST_BYTES, breaks json.loads


def test_deeply_nested_json_gets_an_error_reply(sock_path: Path) -> None:
    replies: list[bytes | None] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ipc(sock_path))
        try:
            await sock.send(DEEPLY_NESTED)
            replies.append(await sock.recv() if await sock.poll(500) else None)
        finally:
            sock.close()

    run(sock_path, scenario)
    assert replies[0] is not None
    assert json.loads(replies[0])["ok"] is False


def test_deeply_nested_json_does_not_stop_the_server(sock_path: Path) -> None:
    got: list[dict[str, Any]] = []

    async def scenario(server: ControlServer, h: Harness, ctx: zmq.asyncio.Context) -> None:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ipc(sock_path))
        try:
            await sock.send(DEEPLY_NESTED)
            got.append(await ask_json(ctx, sock_path, req("status", id="next")))
        finally:
            sock.close()

    run(sock_path, scenario)
    assert got[0]["ok"] is True
    assert got[0]["id"] == "next"
