"""``bistouryctl positions`` and ``bistouryctl trades``: the account and what was traded.

``positions`` shows the newest account snapshot (equity, P&L, exposure, each open
position); ``trades`` the newest fills, each with the rationale of the decision that
led to it. Both ask the recorder through the daemon, or read ``--db`` when it is stopped.
"""

from __future__ import annotations

import argparse
from typing import Any

from bistouryctl import render
from bistouryctl.commands.common import Failure, call, emit, read_db
from bistouryctl.commands.daemon import parse_since, positive
from bistouryd.protocol import EXIT_USAGE

TIMEOUT_S = 8.0
TRADE_TIMEOUT_S = 30.0  # the credentials are checked against the exchange


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


def risk(args: argparse.Namespace) -> int:
    value: float | None = None
    if args.action == "set":
        if args.key is None or args.value is None:
            raise Failure(
                EXIT_USAGE,
                "risk set needs a KEY and a VALUE",
                "e.g. bistouryctl risk set risk.max_leverage 2 (see bistouryctl risk)",
            )
        value = _number(args.value)
    elif args.value is not None:
        raise Failure(EXIT_USAGE, f"risk {args.action} takes no VALUE", "bistouryctl risk --help")
    result = call(args, "risk", action=args.action, key=args.key, value=value)
    return emit(args, result, lambda: render.risk(result))


def _number(text: str) -> float | None:
    if text.lower() in ("none", "null", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise Failure(
            EXIT_USAGE, f"{text!r} is not a number", "give a number, or none to remove a cap"
        ) from None


def trade(args: argparse.Namespace) -> int:
    if not args.confirm:
        raise Failure(
            EXIT_USAGE,
            "live trading with real money needs --confirm",
            f"bistouryctl trade --confirm --risk-limit {args.risk_limit:g}",
        )
    result = call(
        args, "trade", timeout_s=TRADE_TIMEOUT_S, confirm=True, risk_limit_usd=args.risk_limit
    )
    return emit(args, result, lambda: render.live(result))


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive amount of USD")
    return value


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

    p = sub.add_parser(
        "risk",
        parents=[common],
        help="show or change the risk limits at run time",
        description="show: the limits in force and which were set here. set KEY VALUE: "
        "change one now (the next order obeys it; kept across restarts, over the config "
        "file, until reset). reset [KEY]: back to the config file's value. Keys: "
        "trading.position_size_pct, trading.max_positions, trading.stop_loss_pct, "
        "trading.take_profit_pct and every risk.* key (e.g. risk.max_leverage, "
        "risk.daily_loss_limit_pct; 'none' removes risk.max_position_usd).",
    )
    p.add_argument("action", nargs="?", default="show", choices=["show", "set", "reset"])
    p.add_argument("key", nargs="?", help="e.g. risk.max_leverage")
    p.add_argument("value", nargs="?", help="a number (none: no cap)")
    p.set_defaults(func=risk)

    p = sub.add_parser(
        "trade",
        parents=[common],
        help="start LIVE trading with real money (needs --confirm)",
        description="Switch to live trading: the credentials in the env file are checked "
        "against the exchange (without trading), what will happen is shown, and the "
        "confirmation is recorded; the positions agent reconciles with the exchange before "
        "the first order. --risk-limit caps the total notional the bot may hold. A restart "
        "resumes live after reconciling; a reload or a new state directory never enters it.",
    )
    p.add_argument("--confirm", action="store_true", help="yes, trade with real money")
    p.add_argument(
        "--risk-limit",
        type=_usd,
        required=True,
        metavar="USD",
        help="the most the bot may hold in total (notional, USD)",
    )
    p.set_defaults(func=trade)
