"""Human-readable output of bistouryctl (tables and durations); ``--json`` bypasses it."""

from __future__ import annotations

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


def decision(r: dict[str, Any]) -> str:
    """One decision in full: what, why, who answered after which failures, the prompt."""
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
            "hit rate and P&L by confidence: once orders are executed (positions agent)",
        ]
    )
