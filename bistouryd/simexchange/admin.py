"""The admin endpoint (``/admin/...``, JSON): the replay clock, accounts, fault injection,
status, and the log of websocket frames sent. Not part of HyperLiquid's API; for tests,
scripts and demos. Errors are HTTP 400 ``{"code": 400, "msg": ...}``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bistouryd.simexchange.clock import parse_speed
from bistouryd.simexchange.config import parse_address
from bistouryd.simexchange.faults import REST_PATHS

if TYPE_CHECKING:
    from bistouryd.simexchange.server import SimServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, server: SimServer) -> None:
    routes: list[tuple[str, str, Callable[[SimServer, dict[str, Any]], Awaitable[Any]]]] = [
        ("POST", "/admin/clock", _clock),
        ("POST", "/admin/accounts", _accounts),
        ("POST", "/admin/agents", _agents),
        ("POST", "/admin/faults/ws-drop", _ws_drop),
        ("POST", "/admin/faults/ws-stall", _ws_stall),
        ("POST", "/admin/faults/http-error", _http_error),
        ("POST", "/admin/faults/delay", _delay),
        ("POST", "/admin/faults/go-away", _go_away),
        ("POST", "/admin/faults/clear", _clear),
    ]
    for method, path, action in routes:
        app.router.add_route(method, path, _wrap(server, action))
    app.router.add_get("/admin/status", _wrap(server, _status, body=False))
    app.router.add_get("/admin/ws-log", _ws_log(server))


def _wrap(
    server: SimServer,
    action: Callable[[SimServer, dict[str, Any]], Awaitable[Any]],
    body: bool = True,
) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        payload: Any = {}
        if body and request.can_read_body:
            try:
                payload = await request.json()
            except json.JSONDecodeError as exc:
                return _bad(f"body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return _bad("body must be a JSON object")
        try:
            result = await action(server, payload)
        except (ValueError, TypeError, KeyError) as exc:
            return _bad(str(exc))
        return web.json_response(result)

    return handle


def _bad(msg: str) -> web.Response:
    return web.json_response({"code": 400, "msg": msg}, status=400)


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    return float(value)


async def _status(server: SimServer, body: dict[str, Any]) -> Any:
    return server.status()


async def _clock(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"set_ms": T}`` | ``{"advance_ms": D}`` and/or ``{"speed": "10x"|"max"|"paused"}``."""
    if "speed" in body:
        server.set_speed(parse_speed(str(body["speed"])))
    if "set_ms" in body:
        await server.set_time(int(_number(body, "set_ms")))
    elif "advance_ms" in body:
        await server.advance(int(_number(body, "advance_ms")))
    elif "speed" not in body:
        raise ValueError("give set_ms, advance_ms or speed")
    return server.status()["clock"]


async def _accounts(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"address": "0x..", "usdc": 10000}``: create, or credit an existing account."""
    address = parse_address(str(body.get("address", "")), "address")
    account = server.engine.venue.add_account(address, _number(body, "usdc"))
    return {"address": account.address, "balance_usd": account.balance_usd}


async def _agents(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"agent": "0x..", "account": "0x.."}``: the agent may sign for the account."""
    agent = parse_address(str(body.get("agent", "")), "agent")
    account = parse_address(str(body.get("account", "")), "account")
    server.engine.venue.add_agent(agent, account)
    return {"agent": agent, "account": account}


async def _ws_drop(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"graceful": false}``: reset every websocket (``true``: close frame 1001)."""
    return {"dropped": await server.hub.drop_all(bool(body.get("graceful", False)))}


async def _ws_stall(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"seconds": N}``: keep websockets open but send nothing (frames meanwhile are lost)."""
    server.faults.stall_ws(_number(body, "seconds"))
    return server.faults.describe()


async def _http_error(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"status": 429, "count": N}`` or ``{"status": 500, "seconds": S}``; optional
    ``"paths"`` (default ``["/info", "/exchange"]``; ``"/ws"`` fails the handshake) and
    ``"info_types"`` (e.g. ``["candleSnapshot"]``: only those /info requests fail) and
    ``"after": true`` (serve the request, then answer the error: its answer is lost)."""
    paths = _paths(body, {"/info", "/exchange", "/ws"})
    count = body.get("count")
    seconds = body.get("seconds")
    types = body.get("info_types")
    if types is not None and not (
        isinstance(types, list) and all(isinstance(t, str) for t in types)
    ):
        raise ValueError("info_types must be a list of /info request types")
    server.faults.fail_http(
        int(body.get("status", 0)),
        None if count is None else int(_number(body, "count")),
        None if seconds is None else _number(body, "seconds"),
        paths,
        None if types is None else frozenset(types),
        bool(body.get("after", False)),
    )
    return server.faults.describe()


async def _delay(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"ms": X}``: serve every /info and /exchange request X ms after receiving it, even if
    the client has given up meanwhile (0 to stop); optional ``"paths"`` (e.g. ``["/exchange"]``:
    only those)."""
    server.faults.delay_ms = int(_number(body, "ms"))
    server.faults.delay_paths = _paths(body, {"/info", "/exchange"})
    return server.faults.describe()


def _paths(body: dict[str, Any], allowed: set[str]) -> frozenset[str]:
    """The ``"paths"`` a fault applies to (default: /info and /exchange)."""
    paths = body.get("paths")
    if paths is not None and not (isinstance(paths, list) and set(paths) <= allowed):
        raise ValueError(f"paths must be a list drawn from {sorted(allowed)}")
    return frozenset(paths) if paths else REST_PATHS


async def _go_away(server: SimServer, body: dict[str, Any]) -> Any:
    """``{"seconds": N}``: answer, then stop listening and drop every connection for N s."""
    seconds = _number(body, "seconds")
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: asyncio.ensure_future(server.go_away(seconds)))
    return {"away_seconds": seconds}


async def _clear(server: SimServer, body: dict[str, Any]) -> Any:
    server.faults.clear()
    return server.faults.describe()


def _ws_log(server: SimServer) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        """``?since=SEQ&conn=ID&limit=N``: frames sent, oldest first; ``next`` continues."""
        try:
            since = int(request.query.get("since", "0"))
            conn = int(request.query["conn"]) if "conn" in request.query else None
            limit = int(request.query.get("limit", "10000"))
        except ValueError:
            return _bad("since, conn and limit must be integers")
        frames = server.sent.since(since, conn, limit)
        return web.json_response(
            {
                "frames": [
                    {
                        "seq": f.seq,
                        "conn": f.conn_id,
                        "wall_ms": f.wall_ts_ms,
                        "replay_ms": f.replay_ts_ms,
                        "text": f.text,
                    }
                    for f in frames
                ],
                "next": frames[-1].seq + 1 if frames else server.sent.next_seq,
                "oldest": server.sent.oldest_seq,
            }
        )

    return handle
