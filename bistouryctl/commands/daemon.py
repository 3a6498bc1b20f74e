"""Commands that talk to a running daemon: status, mode, pause, resume, reload, stop, events."""

from __future__ import annotations

import argparse
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from bistouryctl import render
from bistouryctl.commands.common import Failure, call, connect, emit, read_db, request
from bistouryd.protocol import EXIT_FAILED, MODES, PAUSE_SCOPES

STOP_WAIT_S = 30.0
EVENTS_TIMEOUT_S = 8.0


def status(args: argparse.Namespace) -> int:
    result = call(args, "status")
    return emit(args, result, lambda: render.status(result))


def mode(args: argparse.Namespace) -> int:
    result = call(args, "mode", mode=args.name)
    word = "now" if result.get("changed") else "already"
    return emit(args, result, lambda: f"mode: {word} {result['mode']}")


def collect(args: argparse.Namespace) -> int:
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()] if args.pairs else None
    result = call(args, "collect", pairs=pairs)
    return emit(args, result, lambda: f"collecting {', '.join(result['pairs'])} (mode collect)")


def _pause_or_resume(args: argparse.Namespace) -> int:
    result = call(args, args.command, scope=args.scope)
    paused = ", ".join(result.get("paused", [])) or "nothing"
    return emit(args, result, lambda: f"paused: {paused}")


def reload(args: argparse.Namespace) -> int:
    result = call(args, "reload")

    def human() -> str:
        changed = result.get("changed", []) + result.get("secrets_changed", [])
        lines = [
            f"reloaded (config sha256 {result['config_sha256'][:12]}); "
            f"changed: {', '.join(changed) or 'nothing'}"
        ]
        if result.get("restart_required"):
            lines.append(
                "WARNING: these take effect after a restart: "
                + ", ".join(result["restart_required"])
            )
        return "\n".join(lines)

    return emit(args, result, human)


def _gone(pid: int, socket_path: Path) -> bool:
    """Has the daemon exited? A zombie waiting for its parent to reap it counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return not socket_path.exists()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not socket_path.exists()
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def stop(args: argparse.Namespace) -> int:
    # An emergency stop answers once every order is canceled and every position closed.
    client = connect(args, EMERGENCY_REPLY_S if args.emergency else None)
    result = request(client, "stop", emergency=args.emergency)
    what = "emergency stop" if args.emergency else "stop"
    if result.get("flatten") and not args.json:
        print(render.flatten(result["flatten"]))
    if args.no_wait:
        return emit(args, result, lambda: f"bistouryd (pid {result['pid']}): {what} requested")
    deadline = time.monotonic() + STOP_WAIT_S
    while not _gone(int(result["pid"]), client.path):
        if time.monotonic() > deadline:
            raise Failure(
                EXIT_FAILED,
                f"bistouryd (pid {result['pid']}) is still running "
                f"{STOP_WAIT_S:.0f} s after the {what} request",
                "see its log; as a last resort: kill -9 " + str(result["pid"]),
            )
        time.sleep(0.05)
    return emit(
        args,
        {**result, "stopped": True},
        lambda: f"bistouryd (pid {result['pid']}) stopped ({what})",
    )


EMERGENCY_REPLY_S = 45.0


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 10000")
    return value


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str) -> int:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/time (UTC unless it says otherwise)."""
    match = _DURATION.match(text.strip())
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int((time.time() - seconds) * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor a date (2026-01-31T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def events(args: argparse.Namespace) -> int:
    if args.db:
        return _events_offline(args)
    result = call(
        args,
        "events",
        timeout_s=EVENTS_TIMEOUT_S,
        limit=args.limit,
        since_ms=args.since,
        kinds=args.kind or [],
    )
    return emit(args, result, lambda: render.events(result))


def _events_offline(args: argparse.Namespace) -> int:
    from bistouryd.storage.events import query_events

    found = read_db(
        args.db, query_events, limit=args.limit, since_ms=args.since, kinds=args.kind or []
    )
    result = {"events": [e.model_dump(mode="json") for e in found], "pending": 0}
    return emit(args, result, lambda: render.events(result))


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="show mode, uptime and agents",
        description="Show the daemon's mode, uptime, configuration and agents.",
    )
    p.set_defaults(func=status)

    p = sub.add_parser(
        "mode",
        parents=[common],
        help="switch the operating mode",
        description="Switch mode. 'live' needs an explicit confirmation and is refused here.",
    )
    p.add_argument("name", choices=MODES, metavar="NAME", help=" | ".join(MODES))
    p.set_defaults(func=mode)

    p = sub.add_parser(
        "collect",
        parents=[common],
        help="collect market data (mode collect)",
        description="Switch to mode collect: the collector streams candles, the L2 book, "
        "trades and funding/open interest of the pairs into the database. Without --pairs "
        "it collects trading.pairs from the config.",
    )
    p.add_argument("--pairs", metavar="COINS", help="comma-separated coins, e.g. BTC,ETH")
    p.add_argument(
        "--mode",
        choices=["continuous"],
        default="continuous",
        help="continuous: stream until the mode changes (default)",
    )
    p.set_defaults(func=collect)

    for name, verb in (("pause", "Pause"), ("resume", "Resume")):
        p = sub.add_parser(
            name,
            parents=[common],
            help=f"{name} collection and/or trading",
            description=f"{verb} data collection, trading, or both (default).",
        )
        p.add_argument("scope", nargs="?", default="all", choices=PAUSE_SCOPES)
        p.set_defaults(func=_pause_or_resume)

    p = sub.add_parser(
        "reload",
        parents=[common],
        help="re-read config and secrets",
        description="Re-read the config and env files and apply the changes "
        "without restarting agents (same as SIGHUP). A broken file is "
        "rejected and the running configuration stays in force.",
    )
    p.set_defaults(func=reload)

    p = sub.add_parser(
        "stop",
        parents=[common],
        help="stop the daemon",
        description="Stop the daemon cleanly and wait until it has exited.",
    )
    p.add_argument(
        "--emergency",
        action="store_true",
        help="pause trading, cancel every order, close every position at market, save the "
        "state, then stop (also: kill -USR1 PID)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once the request is taken")
    p.set_defaults(func=stop)

    p = sub.add_parser(
        "events",
        parents=[common],
        help="list system events",
        description="List system events (starts, stops, mode changes, agent "
        "restarts, reloads, configuration errors), oldest first.",
    )
    p.add_argument("--limit", type=positive, default=50, help="how many (default 50)")
    p.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="30m, 2h, 7d or an ISO date/time"
    )
    p.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="only this kind (repeatable), e.g. agent_restart",
    )
    p.add_argument(
        "--db",
        metavar="FILE",
        help="read this database file directly (only while the daemon is stopped)",
    )
    p.set_defaults(func=events)
