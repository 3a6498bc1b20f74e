"""``bistouryctl signals``: recent strategy signals with their narratives.

The "RECENT SIGNALS" box of the dashboard, on the command line. ``--follow`` keeps
polling the daemon and prints each new signal once, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from bistouryctl import render
from bistouryctl.commands.common import Failure, connect, emit, read_db, request
from bistouryctl.commands.daemon import parse_since, positive
from bistouryd.protocol import EXIT_FAILED, EXIT_OK

TIMEOUT_S = 8.0
FOLLOW_EVERY_S = 2.0
# A signal is stamped with the time of its data, not of its arrival: a slow strategy's
# signal can land behind a faster one's, so following looks back this far.
FOLLOW_LOOKBACK_MS = 15 * 60_000
FOLLOW_LIMIT = 1000


def signals(args: argparse.Namespace) -> int:
    if args.db:
        if args.follow:
            raise Failure(EXIT_FAILED, "--follow needs a running daemon", "drop --db or --follow")
        return _offline(args)
    client = connect(args, TIMEOUT_S)
    query = {"coin": args.coin, "strategy": args.strategy}
    result = request(client, "signals", limit=args.limit, since_ms=args.since, **query)
    if not args.follow:
        return emit(args, result, lambda: render.signals(result["signals"]))
    return _follow(args, client, result["signals"], query)


def _follow(
    args: argparse.Namespace, client: Any, first: list[dict[str, Any]], query: dict[str, Any]
) -> int:
    seen: dict[str, int] = {}  # id → ts_ms of what was printed or skipped, in the look-back

    def show(batch: list[dict[str, Any]]) -> None:
        fresh = [s for s in batch if s["id"] not in seen]
        if not fresh:
            return
        if args.json:
            sys.stdout.write("".join(json.dumps(s, sort_keys=True) + "\n" for s in fresh))
        else:
            print(render.signals(fresh, header=not printed))
        sys.stdout.flush()
        seen.update((s["id"], s["ts_ms"]) for s in fresh)
        printed.append(len(fresh))

    printed: list[int] = []
    show(first)
    # Everything already stored counts as seen: only signals that arrive from now on follow.
    if first:
        since = max(s["ts_ms"] for s in first) - FOLLOW_LOOKBACK_MS
        backlog = request(client, "signals", limit=FOLLOW_LIMIT, since_ms=since, **query)
        seen.update((s["id"], s["ts_ms"]) for s in backlog["signals"])
    elif not args.json:
        print("no signals yet; waiting for new ones (Ctrl-C to stop)", flush=True)
    # Ctrl-C ends the loop between two polls, never in the middle of printing a signal.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(FOLLOW_EVERY_S):
        newest = max(seen.values(), default=args.since or int(time.time() * 1000))
        since = newest - FOLLOW_LOOKBACK_MS
        for key in [k for k, ts in seen.items() if ts < since]:
            del seen[key]
        show(request(client, "signals", limit=FOLLOW_LIMIT, since_ms=since, **query)["signals"])
    return EXIT_OK


def _offline(args: argparse.Namespace) -> int:
    from bistouryd.storage.signals import query_signals

    found = read_db(
        args.db,
        query_signals,
        limit=args.limit,
        coin=args.coin,
        strategy=args.strategy,
        since_ms=args.since,
    )
    result = {"signals": [s.model_dump(mode="json") for s in found]}
    return emit(args, result, lambda: render.signals(result["signals"]))


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "signals",
        parents=[common],
        help="show recent strategy signals and their narratives",
        description="Show the newest strategy signals (oldest first): time, coin, "
        "strategy, direction, strength and confidence, and the narrative the trader reads.",
    )
    p.add_argument("--coin", metavar="COIN", help="only this coin, e.g. BTC")
    p.add_argument(
        "--strategy", metavar="NAME", help="only this strategy, e.g. cross_signal or order_flow"
    )
    p.add_argument("--limit", type=positive, default=20, help="how many (default 20)")
    p.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="30m, 2h, 7d or an ISO date/time"
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new signals as they come (Ctrl-C to stop)",
    )
    p.add_argument(
        "--db",
        metavar="FILE",
        help="read this database file directly (only while the daemon is stopped)",
    )
    p.set_defaults(func=signals)
