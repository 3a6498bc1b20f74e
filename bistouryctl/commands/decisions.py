"""``bistouryctl decisions list | show ID | stats``: what the trader decided, and why.

Every decision is stored with its prompt, the model's raw answer, who answered after
which failures, and what it cost; ``show`` prints all of it.
"""

from __future__ import annotations

import argparse
from typing import Any

from bistouryctl import render
from bistouryctl.commands.common import Failure, call, emit, read_db
from bistouryctl.commands.daemon import parse_since, positive
from bistouryd.protocol import EXIT_FAILED, EXIT_USAGE

TIMEOUT_S = 8.0


def decisions(args: argparse.Namespace) -> int:
    view = args.view
    if view == "show" and not args.id:
        raise Failure(
            EXIT_USAGE, "decisions show needs an ID", "list them: bistouryctl decisions list"
        )
    result = _offline(args) if args.db else _ask(args)
    if view == "show":
        if not result["decisions"]:
            raise Failure(
                EXIT_FAILED,
                f"no decision with an id starting {args.id!r}",
                "list them: bistouryctl decisions list",
            )
        return emit(
            args, result, lambda: render.decision(result["decisions"][0], result.get("outcome"))
        )
    if view == "stats":
        if args.provider != "rules":  # the deterministic model over the same period, beside it
            rules = _offline(args, "rules") if args.db else _ask(args, "rules")
            result["rules"] = rules["stats"]
        return emit(
            args,
            result,
            lambda: (
                render.decision_stats(result["stats"])
                + (
                    "\n\nthe rules model, same period\n" + render.decision_stats(result["rules"])
                    if result.get("rules")
                    else ""
                )
            ),
        )
    return emit(args, result, lambda: render.decisions(result["decisions"]))


def _ask(args: argparse.Namespace, provider: str | None = None) -> dict[str, Any]:
    return call(
        args,
        "decisions",
        timeout_s=TIMEOUT_S,
        view=args.view,
        limit=args.limit,
        decision_id=args.id,
        coin=args.coin,
        provider=provider or args.provider,
        since_ms=args.since,
    )


def _offline(args: argparse.Namespace, provider: str | None = None) -> dict[str, Any]:
    """Read the database file directly; only possible while the daemon is stopped."""
    from bistouryd.storage.decisions import decision_stats, get_decision, query_decisions
    from bistouryd.storage.trading import decision_outcome

    if args.view == "stats":
        stats = read_db(
            args.db, decision_stats, since_ms=args.since, provider=provider or args.provider
        )
        return {"decisions": [], "stats": stats.model_dump(mode="json")}
    if args.view == "show":
        try:
            found = read_db(args.db, get_decision, id_prefix=args.id)
        except ValueError as exc:
            raise Failure(EXIT_FAILED, str(exc), "give more characters of the id") from None
        records = [found] if found is not None else []
        if found is not None:
            outcome = read_db(args.db, decision_outcome, decision_id=found.id)
            return {
                "decisions": [found.model_dump(mode="json")],
                "stats": None,
                "outcome": outcome.model_dump(mode="json"),
            }
    else:
        records = read_db(
            args.db,
            query_decisions,
            limit=args.limit,
            coin=args.coin,
            since_ms=args.since,
            provider=args.provider,
        )
    return {"decisions": [r.model_dump(mode="json") for r in records], "stats": None}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "decisions",
        parents=[common],
        help="the trader's decisions: list, show ID, stats",
        description="list: the newest decisions, oldest first. show ID: one decision in "
        "full (its prompt, the model's answer, the fallback path, the cost). stats: "
        "decisions by action and provider, fallback rate, cost, latency, confidence.",
    )
    p.add_argument("view", nargs="?", default="list", choices=["list", "show", "stats"])
    p.add_argument("id", nargs="?", help="for show: the id or its first 6+ characters")
    p.add_argument("--coin", metavar="COIN", help="only this coin")
    p.add_argument("--provider", metavar="NAME", help="only answers from openai, anthropic, ...")
    p.add_argument("--limit", type=positive, default=20, help="how many (default 20)")
    p.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="30m, 2h, 7d or an ISO date/time"
    )
    p.add_argument(
        "--db",
        metavar="FILE",
        help="read this database file directly (only while the daemon is stopped)",
    )
    p.set_defaults(func=decisions)
