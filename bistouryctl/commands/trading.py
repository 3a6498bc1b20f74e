"""``bistouryctl positions`` and ``bistouryctl trades``: the account and what was traded.

``positions`` shows the newest account snapshot (equity, P&L, exposure, each open
position); ``trades`` the newest fills, each with the rationale of the decision that
led to it. Both ask the recorder through the daemon, or read ``--db`` when it is stopped.
"""

from __future__ import annotations

import argparse
from typing import Any

from bistouryctl import render
from bistouryctl.commands.common import call, emit, read_db
from bistouryctl.commands.daemon import parse_since, positive

TIMEOUT_S = 8.0


def positions(args: argparse.Namespace) -> int:
    if args.db:
        from bistouryd.storage.trading import latest_portfolio

        found = read_db(args.db, latest_portfolio)
        result = {"portfolio": found.model_dump(mode="json") if found else None}
    else:
        result = call(args, "positions", timeout_s=TIMEOUT_S)
    return emit(args, result, lambda: render.portfolio(result["portfolio"]))


def trades(args: argparse.Namespace) -> int:
    if args.db:
        from bistouryd.storage.trading import fills_with_rationales

        fills, rationales = read_db(
            args.db, fills_with_rationales, limit=args.limit, coin=args.coin, since_ms=args.since
        )
        result: dict[str, Any] = {
            "fills": [f.model_dump(mode="json") for f in fills],
            "rationales": rationales,
        }
    else:
        result = call(
            args,
            "trades",
            timeout_s=TIMEOUT_S,
            limit=args.limit,
            coin=args.coin,
            since_ms=args.since,
        )
    return emit(args, result, lambda: render.trades(result["fills"], result["rationales"]))


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    db_help = "read this database file directly (only while the daemon is stopped)"
    p = sub.add_parser(
        "positions",
        parents=[common],
        help="open positions, equity and P&L",
        description="The account as the positions agent last reported it: equity, cash, "
        "P&L today and this session (realised, unrealised, fees, funding), exposure, the "
        "risk budget left, and each open position with its entry and unrealised P&L.",
    )
    p.add_argument("--db", metavar="FILE", help=db_help)
    p.set_defaults(func=positions)

    p = sub.add_parser(
        "trades",
        parents=[common],
        help="fills, with the decision behind each",
        description="The newest fills, oldest first: side, size, price, fee, realised P&L, "
        "why (open, close, stop_loss, ...) and the rationale of the decision that led to it.",
    )
    p.add_argument("--coin", metavar="COIN", help="only this coin")
    p.add_argument("--limit", type=positive, default=50, help="how many (default 50)")
    p.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="30m, 2h, 7d or an ISO date/time"
    )
    p.add_argument("--db", metavar="FILE", help=db_help)
    p.set_defaults(func=trades)
