"""Human-readable output of bistouryctl (tables and durations); ``--json`` bypasses it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{seconds:.1f}s" if round(seconds, 1) < 60 else "1m 00s"


def size(num: float | None) -> str:
    if num is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num) < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} GB"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def utc(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms / 1000))


def status(s: dict[str, Any]) -> str:
    paused = ", ".join(s.get("paused", [])) or "no"
    agents = s.get("agents", [])
    up = sum(1 for a in agents if a.get("alive"))
    lines = [
        f"bistouryd {s['version']} (pid {s['pid']})",
        f"  mode       {s['mode']}",
        f"  paused     {paused}",
        f"  uptime     {duration(s['uptime_s'])}",
        f"  ready      {'yes' if s.get('ready') else 'not yet'}  ({up}/{len(agents)} agents up)",
        f"  config     {s['config_path']} (sha256 {s['config_sha256'][:12]})",
        f"  secrets    {', '.join(s.get('secrets_set', [])) or 'none set'}",
        f"  state dir  {s['state_dir']}",
        f"  metrics    {s.get('metrics_url') or 'off'}",
        f"  last error {s.get('last_error') or 'none'}",
        "",
        table(
            ["AGENT", "STATE", "PID", "RESTARTS", "HEARTBEAT", "UPTIME", "RSS"],
            [
                [
                    a["name"],
                    a["state"],
                    a.get("pid") or "-",
                    a["restarts"],
                    f"{a['heartbeat_age_s']:.1f}s ago"
                    if a.get("heartbeat_age_s") is not None
                    else "-",
                    duration(a.get("uptime_s")),
                    size(a.get("rss_bytes")),
                ]
                for a in agents
            ],
        ),
    ]
    collection = s.get("collection")
    if collection:
        lines += ["", _collection(collection)]
    trading = s.get("trading")
    if trading:
        t = trading
        held = ", ".join(f"{c} {v:+g}" for c, v in sorted(t["positions"].items()))
        lines += [
            "",
            f"TRADING  equity {t['equity_usd']:,.2f} USD; P&L realised "
            f"{t['realised_pnl_usd']:+,.2f}, unrealised {t['unrealised_pnl_usd']:+,.2f}, "
            f"fees {-t['fees_usd']:+,.2f}, funding {t['funding_usd']:+,.2f}; "
            f"positions {held or 'none'}; orders {t['orders']}, refused {t['refusals']}",
        ]
    return "\n".join(lines)


def _collection(c: dict[str, Any]) -> str:
    head = (
        f"COLLECTION  {'connected' if c['connected'] else 'not connected'}; "
        f"pairs {', '.join(c['pairs'])}; reconnects {c['ws_reconnects']}; "
        f"candles backfilled {c['backfilled_candles']}; dropped {c['dropped']}"
    )
    if c.get("storage_bytes"):
        head += "; storage " + ", ".join(
            f"{kind} {size(n)}" for kind, n in sorted(c["storage_bytes"].items())
        )
    rows = [
        [
            st["coin"],
            st["channel"],
            st["messages"],
            f"{st['per_second']:.1f}/s",
            f"{st['last_age_s']:.1f}s ago",
        ]
        for st in c.get("streams", [])
    ]
    if not rows:
        return head
    return head + "\n" + table(["COIN", "CHANNEL", "MESSAGES", "RATE", "LAST"], rows)


def events(result: dict[str, Any]) -> str:
    rows = [
        [utc(e["ts_ms"]), e["level"], e["kind"], e["source"], e["message"]]
        for e in result.get("events", [])
    ]
    if not rows:
        return "no events"
    text = table(["TIME (UTC)", "LEVEL", "KIND", "SOURCE", "MESSAGE"], rows)
    pending = result.get("pending", 0)
    if pending:
        text += f"\n({pending} not yet written to the database)"
    return text


def signals(found: Sequence[dict[str, Any]], header: bool = True) -> str:
    """Each signal on one line, its narrative indented below it."""
    import textwrap  # here, not at the top: `bistouryctl status` must start fast

    if not found:
        return "no signals yet" if header else ""
    lines = ["RECENT SIGNALS"] if header else []
    for s in found:
        lines.append(
            f"{utc(s['ts_ms'])}  {s['coin']:<6} {s['strategy']:<16} {s['direction']:<7} "
            f"strength {s['strength']:.2f}  confidence {s['confidence']:.2f}"
        )
        lines += [f"    {line}" for line in textwrap.wrap(s["narrative"], width=96)]
    return "\n".join(lines)


def decisions(found: Sequence[dict[str, Any]]) -> str:
    if not found:
        return "no decisions yet"
    rows = []
    for r in found:
        d = r["decision"]
        rows.append(
            [
                utc(r["ts_ms"]),
                r["coin"],
                d["action"],
                f"{d['size_fraction']:.2f}",
                f"{d['confidence']:.2f}",
                f"{r['provider']}/{r['model']}",
                f"${r['cost_usd']:.4f}",
                " → ".join(f["provider"] for f in r["fallbacks"]) or "-",
                r["id"][:10],
            ]
        )
    return table(
        ["TIME (UTC)", "COIN", "ACTION", "SIZE", "CONF", "MODEL", "COST", "FELL BACK FROM", "ID"],
        rows,
    )


def decision(r: dict[str, Any], outcome: dict[str, Any] | None = None) -> str:
    """One decision in full: what, why, who answered after which failures, what followed
    (orders, fills, P&L, or the risk engine's refusal), the prompt."""
    import textwrap  # here, not at the top: `bistouryctl status` must start fast

    d = r["decision"]
    stop = f"{d['stop_loss_pct']:.2%}" if d.get("stop_loss_pct") else "-"
    target = f"{d['take_profit_pct']:.2%}" if d.get("take_profit_pct") else "-"
    tokens = (
        f"{r['input_tokens']} in / {r['output_tokens']} out"
        if r.get("input_tokens") is not None
        else "not reported"
    )
    lines = [
        f"decision {r['id']}",
        f"  time        {utc(r['ts_ms'])} UTC",
        f"  coin        {r['coin']}",
        f"  action      {d['action']}  size {d['size_fraction']:.2f}  stop {stop}  target {target}",
        f"  confidence  {d['confidence']:.2f}",
        f"  answered by {r['provider']} ({r['model']}) in {r['latency_s']:.2f} s, "
        f"tokens {tokens}, cost ${r['cost_usd']:.4f}"
        + (" (from the decision cache)" if r.get("cached") else ""),
    ]
    if r.get("contaminated"):
        lines.append("  WARNING     the period is before the model's training cutoff")
    for f in r["fallbacks"]:
        lines.append(
            f"  fell back   {f['provider']} ({f['model']}): {f['reason']} after "
            f"{f['attempts']} attempt(s): {f['message']}"
        )
    lines += [
        "",
        "RATIONALE",
        *textwrap.wrap(d["rationale"], 96, initial_indent="  ", subsequent_indent="  "),
    ]
    if d.get("contributions"):
        lines += ["", "SIGNAL CONTRIBUTIONS"]
        lines += [
            f"  {c['strategy']:<16} {c['direction']:<7} weight {c['weight']:.2f}  {c['reason']}"
            for c in d["contributions"]
        ]
    if outcome is not None:
        lines += ["", "WHAT FOLLOWED", *_outcome_lines(d["action"], outcome)]
    lines += [
        "",
        f"PROMPT ({r['prompt_version']}, sha256 {r['prompt_sha256'][:12]})",
        "  system:",
        *(f"    {line}" for line in r["prompt_system"].splitlines()),
        "  user:",
        *(f"    {line}" for line in r["prompt_user"].splitlines()),
        "",
        "RAW ANSWER",
        *(f"  {line}" for line in (r.get("raw_answer") or "(none: the rules model)").splitlines()),
    ]
    return "\n".join(lines)


def _outcome_lines(action: str, o: dict[str, Any]) -> list[str]:
    if o["refusals"]:
        return [
            f"  refused by the risk engine ({x['rule']}): {x['message']} → {x['hint']}"
            for x in o["refusals"]
        ]
    if not o["orders"]:
        return ["  nothing: hold" if action == "hold" else "  no order (not in a trading mode)"]
    status: dict[str, dict[str, Any]] = {}
    for u in o["updates"]:
        status[u["cloid"]] = u
    lines = []
    for order in o["orders"]:
        u = status.get(order["cloid"], {})
        price = (
            f"trigger {order['trigger_px']:g}"
            if order.get("trigger_px")
            else f"limit {order['limit_px']:g}"
            if order.get("limit_px")
            else "at market"
        )
        lines.append(
            f"  order  {utc(order['ts_ms'])}  {order['kind']:<11} {order['purpose']:<11} "
            f"{'buy' if order['is_buy'] else 'sell':<4} {order['sz']:g} {price}  "
            f"{u.get('status', 'sent')}" + (f": {u['error']}" if u.get("error") else "")
        )
    seen = set()
    for f in [*o["fills"], *o["closing_fills"]]:
        if f["id"] in seen:
            continue
        seen.add(f["id"])
        pnl = f"  closed P&L {f['closed_pnl_usd']:+.2f}" if f["closed_pnl_usd"] else ""
        lines.append(
            f"  fill   {utc(f['ts_ms'])}  {f['purpose']:<11} {'buy' if f['is_buy'] else 'sell':<4} "
            f"{f['sz']:g} @ {f['px']:g}  fee {f['fee_usd']:.4f}{pnl}"
        )
    if action in ("open_long", "open_short"):
        state = "still open" if o["open_sz"] > 0 else "closed"
        lines.append(
            f"  P&L    {o['realised_pnl_usd']:+.2f} USD realised after fees ({state}; "
            f"closed {o['closed_pnl_usd']:+.2f}, fees {o['fees_usd']:.2f})"
        )
    return lines


def decision_stats(s: dict[str, Any]) -> str:
    if not s or not s["total"]:
        return "no decisions yet"

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

    p50, p95 = s.get("latency_p50_s"), s.get("latency_p95_s")
    return "\n".join(
        [
            f"decisions        {s['total']}",
            f"by action        {counts(s['by_action'])}",
            f"by provider      {counts(s['by_provider'])}",
            f"fallback rate    {s['fallback_rate']:.1%}",
            f"from the cache   {s['cached']}",
            f"cost             ${s['cost_usd_total']:.4f} (${s['cost_usd_per_decision']:.4f} "
            "per decision)",
            f"latency          p50 {p50 if p50 is None else f'{p50:.2f} s'}, "
            f"p95 {p95 if p95 is None else f'{p95:.2f} s'}",
            f"confidence       {counts(s['confidence_buckets'])}",
            *_outcome_table(s),
        ]
    )


def _outcome_table(s: dict[str, Any]) -> list[str]:
    """Hit rate and average P&L of the closed positions, by the opening confidence."""
    outcomes = s.get("outcomes") or {}
    if not outcomes:
        return ["closed positions none yet (hit rate and P&L by confidence come with them)"]
    lines = [
        f"realised P&L     {s['realised_pnl_usd']:+.2f} USD after fees"
        + (
            f" (${s['cost_usd_per_pnl_usd']:.4f} of model cost per dollar)"
            if s.get("cost_usd_per_pnl_usd") is not None
            else ""
        ),
        "by confidence    CLOSED  HIT RATE  AVG P&L",
    ]
    rates = []
    for name, o in outcomes.items():
        rate = o["hits"] / o["closed_n"] if o["closed_n"] else 0.0
        rates.append(rate)
        lines.append(f"  {name:<14} {o['closed_n']:>6}  {rate:>8.0%}  {o['avg_pnl_usd']:+.2f}")
    if len(rates) >= 2 and any(b < a for a, b in itertools.pairwise(rates)):
        lines.append("  NOT CALIBRATED: the hit rate does not rise with the model's confidence")
    return lines


def portfolio(p: dict[str, Any] | None) -> str:
    """The account: equity and P&L, then one line per open position."""
    if p is None:
        return "no account yet: the positions agent reports once it trades (paper-live)"
    paused = "  TRADING PAUSED" if p.get("trading_paused") else ""
    lines = [
        f"account ({p['mode']}) at {utc(p['ts_ms'])} UTC{paused}",
        f"  equity        {p['equity_usd']:,.2f} USD  (cash {p['cash_usd']:,.2f})",
        f"  P&L today     {p['pnl_today_usd']:+,.2f} USD",
        f"  this session  realised {p['realised_pnl_usd']:+,.2f}, unrealised "
        f"{p['unrealised_pnl_usd']:+,.2f}, fees {-p['fees_usd']:+,.2f}, funding "
        f"{p['funding_usd']:+,.2f} USD",
        f"  exposure      {p['exposure_usd']:,.2f} USD; risk budget left "
        f"{p['risk_budget_usd']:,.2f} USD, {p['max_positions_left']} more position(s)",
    ]
    if p.get("buy_and_hold"):
        market = ", ".join(f"{c} {r:+.2%}" for c, r in sorted(p["buy_and_hold"].items()))
        lines.append(
            f"  vs market     this session {p['session_return']:+.2%}; buy-and-hold {market}"
        )
    if not p["positions"]:
        return "\n".join([*lines, "", "no open position"])
    lines += ["", f"{'COIN':<8} {'SIDE':<6} {'SIZE':>12} {'ENTRY':>12} {'UNREALISED':>12}"]
    for coin, v in sorted(p["positions"].items()):
        lines.append(
            f"{coin:<8} {v['side']:<6} {v['size_sz']:>12g} {v['entry_px']:>12g} "
            f"{v['unrealised_pnl_usd']:>+12.2f}"
        )
    return "\n".join(lines)


def trades(fills: list[dict[str, Any]], rationales: dict[str, str]) -> str:
    """Fills, oldest first, each with the decision that caused it (or the position's)."""
    if not fills:
        return "no trades yet"
    lines = [
        f"{'TIME (UTC)':<19}  {'COIN':<6} {'SIDE':<4} {'SIZE':>10} {'PRICE':>11} "
        f"{'FEE':>8} {'P&L':>9}  WHY"
    ]
    for f in fills:
        why = f["purpose"]
        decision = f.get("decision_id") if f["purpose"] in ("open", "close", "reduce") else None
        rationale = rationales.get(decision or f.get("opened_by") or "", "")
        pnl = f"{f['closed_pnl_usd']:+.2f}" if f["closed_pnl_usd"] else "-"
        lines.append(
            f"{utc(f['ts_ms'])}  {f['coin']:<6} {'buy' if f['is_buy'] else 'sell':<4} "
            f"{f['sz']:>10g} {f['px']:>11g} {f['fee_usd']:>8.4f} {pnl:>9}  {why}"
        )
        if rationale:
            short = " ".join(rationale.split())
            lines.append(f"{'':21}↳ {short[:110]}{'…' if len(short) > 110 else ''}")
    return "\n".join(lines)


def flatten(r: dict[str, Any]) -> str:
    """What an emergency stop did to the account."""
    closed = ", ".join(f"{c} {v:g}" for c, v in sorted(r["closed"].items())) or "none"
    lines = [
        f"emergency stop: canceled {r['canceled_orders']} order(s); closed: {closed}",
    ]
    if r["remaining"]:
        still = ", ".join(f"{c} {v:+g}" for c, v in sorted(r["remaining"].items()))
        lines.append(f"ERROR: still open: {still}")
        lines.append("  → close them on the exchange by hand")
    lines += [f"ERROR: {e}" for e in r["errors"] if not r["remaining"]]
    if r.get("snapshot_path"):
        lines.append(f"state saved to {r['snapshot_path']}")
    return "\n".join(lines)


def risk(r: dict[str, Any]) -> str:
    """The limits in force; those set with ``risk set`` are marked."""
    lines = [f"{'LIMIT':<28} {'VALUE':>12}"]
    for key, value in r["limits"].items():
        mark = "  (risk set)" if key in r["overrides"] else ""
        shown = "none" if value is None else f"{value:g}"
        lines.append(f"{key:<28} {shown:>12}{mark}")
    if r.get("changed"):
        lines.append(f"changed: {', '.join(r['changed'])} (the next order obeys it)")
    return "\n".join(lines)


def live(r: dict[str, Any]) -> str:
    """What entering live means."""
    held = ", ".join(f"{c} {v:+g}" for c, v in sorted(r["positions"].items())) or "none"
    return "\n".join(
        [
            f"LIVE TRADING confirmed for account {r['account']}",
            f"  equity        {r['equity_usd']:,.2f} USD",
            f"  risk limit    {r['risk_limit_usd']:,.2f} USD of total notional",
            f"  pairs         {', '.join(r['pairs'])}",
            f"  decisions by  {' → '.join(r['models'])}",
            f"  on the exchange now: positions {held}; {r['open_orders']} open order(s)",
            "  the positions agent reconciles with the exchange, then trades; every position "
            "gets an exchange-side stop-loss",
            "  stop: bistouryctl mode paper-live | emergency: bistouryctl stop --emergency",
        ]
    )
