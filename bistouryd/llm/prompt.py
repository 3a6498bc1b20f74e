"""The decision prompt for one coin: what the trader shows a language model.

The text comes from a versioned template (``prompts/<version>.md``, see
``decision_v1.md`` for its format) filled with the coin's current signals, its position,
the account's P&L today, the remaining risk budget and the recent decisions for the coin.
The answer's shape is not described here: the providers get ``TradeDecision`` as the
structured-output schema, field descriptions included.

The user text is compact because it is paid per token, and deterministic: the same inputs
give the same text and the same ``sha256`` (the decision cache's key), whatever the order
the signals came in. Pure: every time is passed in, the only file read is the bundled
template.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.models import estimate_tokens
from bistouryd.portfolio import FLAT, PositionView
from bistouryd.strategies.base import Signal

DEFAULT_VERSION = "decision_v1"
CROSS = "cross_signal"
SYSTEM_MARK = "<!-- system -->"
USER_MARK = "<!-- user -->"
# Tokens a chat API adds around each message (role, separators): a rough allowance.
MESSAGE_OVERHEAD_TOKENS = 4

_VERSION_NAME = re.compile(r"^[a-z0-9_]+$")


class PastDecision(BaseModel):
    """A decision taken earlier for the coin, and when (a ``TradeDecision`` has no time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ts_ms: int = Field(gt=0)
    decision: TradeDecision


class Prompt(BaseModel):
    """The messages for one decision, and what identifies and sizes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    system: str
    user: str
    sha256: str = Field(description="of version, system and user: the decision cache's key")
    input_tokens_estimate: int = Field(
        ge=0, description="both messages and the TradeDecision schema, before the call"
    )


class PromptTemplate(BaseModel):
    """One template version, its two texts still holding their ``$placeholders``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    system: str
    user: str


# The bundled templates, next to this module (a path object: nothing is read here).
_PROMPTS = resources.files("bistouryd.llm").joinpath("prompts")


def available_versions() -> list[str]:
    """The template versions bundled with the package, sorted."""
    return sorted(f.name.removesuffix(".md") for f in _PROMPTS.iterdir() if f.name.endswith(".md"))


@functools.lru_cache(maxsize=16)
def load_template(version: str = DEFAULT_VERSION) -> PromptTemplate:
    """The template ``prompts/<version>.md``; an unknown version names the known ones."""
    known = available_versions()
    if not _VERSION_NAME.match(version) or version not in known:
        raise ValueError(
            f"unknown prompt version {version!r}; available: {', '.join(known) or 'none'}"
        )
    text = _PROMPTS.joinpath(f"{version}.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() in (SYSTEM_MARK, USER_MARK)]
    if [lines[i].strip() for i in marks] != [SYSTEM_MARK, USER_MARK]:
        raise ValueError(
            f"prompt template {version}.md needs one {SYSTEM_MARK} line, then one {USER_MARK}"
        )
    s, u = marks
    return PromptTemplate(
        version=version,
        system="\n".join(lines[s + 1 : u]).strip(),
        user="\n".join(lines[u + 1 :]).strip(),
    )


def build_prompt(
    coin: str,
    signals: Mapping[str, Signal] | Iterable[Signal],
    *,
    now_ms: int,
    pnl_today_usd: float,
    risk_budget_usd: float,
    max_positions_left: int,
    position: PositionView = FLAT,
    recent: Sequence[PastDecision] = (),
    max_recent: int = 5,
    rationale_chars: int = 200,
    version: str = DEFAULT_VERSION,
) -> Prompt:
    """The prompt for deciding on ``coin`` at ``now_ms``.

    ``signals`` are the latest of each strategy (a mapping by strategy, as the rules model
    takes, or any iterable; of several from one strategy the newest counts). ``recent``
    are past decisions for the coin in any order; the newest ``max_recent`` are shown,
    oldest first, each rationale cut to ``rationale_chars``. Anything about another coin
    or stamped after ``now_ms`` is an error: the first is a routing bug, the second
    lookahead in a replay.
    """
    if risk_budget_usd < 0 or max_positions_left < 0:
        raise ValueError("risk_budget_usd and max_positions_left cannot be negative")
    if max_recent < 0 or rationale_chars < 1:
        raise ValueError("max_recent must be 0 or more and rationale_chars 1 or more")
    template = load_template(version)
    values = {
        "coin": coin,
        "now": _iso(now_ms),
        "signals": _signal_lines(coin, signals, now_ms),
        "position": _position_line(coin, position),
        "account": f"Account: P&L today {pnl_today_usd:+.2f} USD",
        "budget": _budget_line(risk_budget_usd, max_positions_left),
        "decisions": _decision_lines(coin, recent, now_ms, max_recent, rationale_chars),
    }
    try:
        system = string.Template(template.system).substitute(values)
        user = string.Template(template.user).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"prompt template {version}.md has a bad placeholder: {exc}") from exc
    digest = hashlib.sha256("\x00".join((version, system, user)).encode("utf-8")).hexdigest()
    tokens = estimate_tokens(system) + estimate_tokens(user) + _schema_tokens()
    return Prompt(
        version=version,
        system=system,
        user=user,
        sha256=digest,
        input_tokens_estimate=tokens + 2 * MESSAGE_OVERHEAD_TOKENS,
    )


@functools.lru_cache(maxsize=1)
def _schema_tokens() -> int:
    """The TradeDecision schema the provider sends along (as a tool or response format)."""
    return estimate_tokens(json.dumps(TradeDecision.model_json_schema(), sort_keys=True))


# ---- the lines --------------------------------------------------------------------------


def _signal_lines(coin: str, signals: Mapping[str, Signal] | Iterable[Signal], now_ms: int) -> str:
    items = signals.values() if isinstance(signals, Mapping) else signals
    latest: dict[str, Signal] = {}
    for s in items:
        if s.coin != coin:
            raise ValueError(f"a {s.strategy} signal for {s.coin} in the prompt for {coin}")
        if s.ts_ms > now_ms:
            raise ValueError(f"the {s.strategy} signal at {_iso(s.ts_ms)} is after now")
        held = latest.get(s.strategy)
        if held is None or (s.ts_ms, s.id) > (held.ts_ms, held.id):
            latest[s.strategy] = s
    if not latest:
        return "(none yet)"
    order = sorted(latest, key=lambda name: (name != CROSS, name))
    return "\n".join(_signal_line(latest[name], now_ms) for name in order)


def _signal_line(s: Signal, now_ms: int) -> str:
    return (
        f"- {s.strategy} ({s.direction}, strength {s.strength:.2f}, "
        f"confidence {s.confidence:.2f}, age {_age(now_ms - s.ts_ms)}): {_one_line(s.narrative)}"
    )


def _position_line(coin: str, p: PositionView) -> str:
    if p.side == "flat":
        return f"Position: flat (no open {coin} position)"
    return (
        f"Position: {p.side} {_plain(p.size_sz)} {coin}, entry {_plain(p.entry_px or 0.0)}, "
        f"unrealised P&L {p.unrealised_pnl_usd:+.2f} USD"
    )


def _budget_line(risk_budget_usd: float, max_positions_left: int) -> str:
    line = (
        f"Risk budget left: {risk_budget_usd:.2f} USD, "
        f"{max_positions_left} more position{'s' if max_positions_left != 1 else ''} allowed"
    )
    if risk_budget_usd == 0 or max_positions_left == 0:
        line += " (no new position possible)"
    return line


def _decision_lines(
    coin: str, recent: Sequence[PastDecision], now_ms: int, max_recent: int, chars: int
) -> str:
    for past in recent:
        if past.decision.coin != coin:
            raise ValueError(f"a decision for {past.decision.coin} in the prompt for {coin}")
        if past.ts_ms > now_ms:
            raise ValueError(f"the decision at {_iso(past.ts_ms)} is after now")
    # sorted() is stable: decisions with the same time keep the order they were given in.
    shown = sorted(recent, key=lambda p: p.ts_ms)[-max_recent:] if max_recent else []
    if not shown:
        return "(none)"
    return "\n".join(_decision_line(p, chars) for p in shown)


def _decision_line(p: PastDecision, chars: int) -> str:
    d = p.decision
    parts: list[str] = [d.action]
    if d.action != "hold" and d.action != "close":
        parts.append(f"size {d.size_fraction:.2f}")
    if d.stop_loss_pct is not None:
        parts.append(f"stop {d.stop_loss_pct:.2%}")
    if d.take_profit_pct is not None:
        parts.append(f"target {d.take_profit_pct:.2%}")
    parts.append(f"confidence {d.confidence:.2f}")
    rationale = _one_line(d.rationale)
    if len(rationale) > chars:
        rationale = rationale[: chars - 1].rstrip() + "…"
    return f"- {_iso(p.ts_ms)} {', '.join(parts)}: {rationale}"


# ---- formatting -------------------------------------------------------------------------


def _iso(ts_ms: int) -> str:
    """UTC ISO 8601 to the second (what the model needs, in few tokens)."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(ms: int) -> str:
    s = ms // 1000
    if s < 120:
        return f"{s}s"
    if s < 120 * 60:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _plain(x: float) -> str:
    """The shortest exact decimal, never in exponent form (a 1e-05 price confuses)."""
    text = format(Decimal(repr(x)), "f")
    return text.removesuffix(".0")


def _one_line(text: str) -> str:
    return " ".join(text.split())
