"""The decision prompt: its lines, their order, its determinism and its hash."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bistouryd.llm.decision import TradeDecision
from bistouryd.llm.models import estimate_tokens
from bistouryd.llm.prompt import (
    DEFAULT_VERSION,
    PastDecision,
    Prompt,
    available_versions,
    build_prompt,
    load_template,
)
from bistouryd.portfolio import PositionView
from bistouryd.strategies.base import Signal

T = 1_753_200_000_000  # 2025-07-22T16:00:00Z
MIN = 60_000

NARRATIVES = {
    "cross_signal": "Trending regime: the combined view is short (score -0.41), "
    "multi_timeframe and order_flow agree, funding_rate disagrees.",
    "multi_timeframe": "15m range-bound below the 20-bar mean (-0.24%); 5m downtrend "
    "(EMA20 slope -0.02%/bar), with bearish engulfing on 1.1x average volume.",
    "order_flow": "Asks outweigh bids 1.8x within 10 bps; a 42 BTC ask wall grew.",
    "funding_rate": "Predicted funding 0.0012% is at the 35th percentile of 7 days.",
}


def sig(strategy: str, direction: str = "short", age_ms: int = 30_000, **kw: Any) -> Signal:
    return Signal.model_validate(
        {
            "strategy": strategy,
            "coin": "BTC",
            "ts_ms": T - age_ms,
            "direction": direction,
            "strength": 0.62,
            "confidence": 0.71,
            "narrative": NARRATIVES.get(strategy, f"{strategy} says so."),
            **kw,
        }
    )


def signals() -> list[Signal]:
    # cross_signal deliberately not first
    return [sig("order_flow"), sig("multi_timeframe"), sig("funding_rate", "long"), sig(CROSS)]


CROSS = "cross_signal"


def hold(rationale: str = "Nothing strong enough.", coin: str = "BTC") -> TradeDecision:
    return TradeDecision(
        coin=coin, action="hold", size_fraction=0, confidence=0.4, rationale=rationale
    )


def past(minutes_ago: int, rationale: str | None = None) -> PastDecision:
    return PastDecision(
        ts_ms=T - minutes_ago * MIN, decision=hold(rationale or f"decision {minutes_ago}m ago")
    )


LONG = PositionView(side="long", size_sz=0.015, entry_px=64210.5, unrealised_pnl_usd=12.3)

BASE: dict[str, Any] = {
    "now_ms": T,
    "pnl_today_usd": -45.1,
    "risk_budget_usd": 250.0,
    "max_positions_left": 2,
    "position": LONG,
    "recent": [past(10), past(5)],
}


def build(**changes: Any) -> Prompt:
    args = BASE | changes
    sigs = args.pop("signals", signals())
    coin = args.pop("coin", "BTC")
    return build_prompt(coin, sigs, **args)


def test_each_narrative_appears_once() -> None:
    p = build()
    for narrative in NARRATIVES.values():
        assert p.user.count(narrative) == 1
    assert NARRATIVES["cross_signal"] not in p.system


def test_one_line_per_signal_with_its_numbers() -> None:
    lines = [ln for ln in build().user.splitlines() if ln.startswith("- ") and "strength" in ln]
    assert len(lines) == 4
    assert lines[2] == (
        "- multi_timeframe (short, strength 0.62, confidence 0.71, age 30s): "
        + NARRATIVES["multi_timeframe"]
    )


def test_cross_signal_comes_first_then_by_name() -> None:
    user = build().user
    at = {name: user.index(f"- {name} (") for name in NARRATIVES}
    assert at["cross_signal"] < at["funding_rate"] < at["multi_timeframe"] < at["order_flow"]


def test_a_mapping_and_a_list_give_the_same_prompt() -> None:
    as_list = build()
    as_dict = build(signals={s.strategy: s for s in reversed(signals())})
    assert as_list == as_dict


def test_the_newest_signal_of_a_strategy_counts() -> None:
    old = sig("order_flow", narrative="An old order book view.", age_ms=5 * MIN)
    p = build(signals=[*signals(), old])
    assert "An old order book view." not in p.user
    p = build(signals=[sig("order_flow", narrative="Newer view.", age_ms=1_000), *signals()])
    assert "Newer view." in p.user and NARRATIVES["order_flow"] not in p.user


def test_no_signals() -> None:
    assert "(none yet)" in build(signals=[]).user


def test_position_account_and_budget_lines() -> None:
    user = build().user
    assert "Position: long 0.015 BTC, entry 64210.5, unrealised P&L +12.30 USD" in user
    assert "Account: P&L today -45.10 USD" in user
    assert "Risk budget left: 250.00 USD, 2 more positions allowed" in user
    flat = build(position=PositionView(), risk_budget_usd=0.0, max_positions_left=1).user
    assert "Position: flat (no open BTC position)" in flat
    assert "Risk budget left: 0.00 USD, 1 more position allowed (no new position possible)" in (
        flat
    )


def test_small_prices_are_plain_decimals() -> None:
    tiny = PositionView(side="short", size_sz=1_500_000, entry_px=0.0000123)
    user = build(position=tiny).user
    assert "Position: short 1500000 BTC, entry 0.0000123, unrealised P&L +0.00 USD" in user


def test_position_view_must_be_consistent() -> None:
    with pytest.raises(ValidationError):
        PositionView(side="long", size_sz=0, entry_px=100)
    with pytest.raises(ValidationError):
        PositionView(side="short", size_sz=1)
    with pytest.raises(ValidationError):
        PositionView(side="flat", size_sz=1, entry_px=100)


def test_recent_decisions_newest_last_and_capped() -> None:
    shuffled = [past(m) for m in (30, 5, 60, 1, 15, 45)]
    user = build(recent=shuffled, max_recent=3).user
    shown = [ln for ln in user.splitlines() if "m ago" in ln]
    assert [ln.rsplit(": ", 1)[1] for ln in shown] == [
        "decision 15m ago",
        "decision 5m ago",
        "decision 1m ago",
    ]
    assert shown[-1].startswith("- 2025-07-22T15:59:00Z hold, confidence 0.40:")
    assert "(none)" in build(recent=[]).user
    assert "(none)" in build(max_recent=0).user


def test_a_past_open_shows_its_size_stop_and_target() -> None:
    opened = TradeDecision(
        coin="BTC",
        action="open_short",
        size_fraction=0.25,
        stop_loss_pct=0.012,
        take_profit_pct=0.024,
        confidence=0.66,
        rationale="cross_signal short at 0.41.",
    )
    user = build(recent=[PastDecision(ts_ms=T - 10 * MIN, decision=opened)]).user
    assert (
        "- 2025-07-22T15:50:00Z open_short, size 0.25, stop 1.20%, target 2.40%, "
        "confidence 0.66: cross_signal short at 0.41." in user
    )


def test_long_rationales_are_cut() -> None:
    user = build(recent=[past(5, "word " * 300)], rationale_chars=50).user
    line = next(ln for ln in user.splitlines() if "word" in ln)
    assert line.endswith("…") and line.count("word") < 15


def test_other_coins_and_the_future_are_refused() -> None:
    eth = sig("order_flow").model_copy(update={"coin": "ETH"})
    with pytest.raises(ValueError, match="ETH"):
        build(signals=[eth])
    with pytest.raises(ValueError, match="after now"):
        build(signals=[sig("order_flow", age_ms=-1)])
    with pytest.raises(ValueError, match="ETH"):
        build(recent=[PastDecision(ts_ms=T - MIN, decision=hold(coin="ETH"))])
    with pytest.raises(ValueError, match="after now"):
        build(recent=[PastDecision(ts_ms=T + MIN, decision=hold())])
    with pytest.raises(ValueError, match="negative"):
        build(risk_budget_usd=-1.0)


def test_every_placeholder_is_filled() -> None:
    p = build()
    assert "$" not in p.user and "$" not in p.system
    assert "Coin: BTC" in p.user and "Time: 2025-07-22T16:00:00Z" in p.user


def test_system_text_states_the_rules() -> None:
    system = build().system
    for must in (
        "HyperLiquid perpetual",
        "TradeDecision",
        "Never invent a coin",
        "hold",
        "stop_loss_pct",
        "REMAINING risk budget",
        "rationale",
        "numbers",
    ):
        assert must in system
    # the same for every coin and time, so provider prompt caches can reuse it
    assert system == build(coin="ETH", signals=[], recent=[], now_ms=T + 1).system


def test_same_inputs_same_prompt_and_hash() -> None:
    a, b = build(), build()
    assert a == b
    assert len(a.sha256) == 64 and a.version == DEFAULT_VERSION


@pytest.mark.parametrize(
    "change",
    [
        {"coin": "ETH", "signals": [], "recent": []},
        {"now_ms": T + 1_000},
        {"signals": signals()[:3]},
        {"signals": [*signals()[:3], sig(CROSS, confidence=0.72)]},
        {"signals": [*signals()[:3], sig(CROSS, narrative="Another view.")]},
        {"position": PositionView()},
        {"position": LONG.model_copy(update={"unrealised_pnl_usd": 12.4})},
        {"pnl_today_usd": -45.2},
        {"risk_budget_usd": 251.0},
        {"max_positions_left": 1},
        {"recent": [past(10)]},
        {"max_recent": 1},
    ],
)
def test_any_input_change_changes_the_hash(change: dict[str, Any]) -> None:
    assert build(**change).sha256 != build().sha256


def test_unknown_version_names_the_available_ones() -> None:
    assert "decision_v1" in available_versions()
    with pytest.raises(ValueError, match=r"unknown prompt version 'decision_v9'.*decision_v1"):
        build(version="decision_v9")
    with pytest.raises(ValueError, match=r"available: .*decision_v1"):
        load_template("../decision_v1")


def test_template_sections() -> None:
    t = load_template("decision_v1")
    assert t.version == "decision_v1"
    assert "<!--" not in t.system and "<!--" not in t.user
    assert "placeholders" not in t.system  # the maintainers' header is not sent
    assert "$signals" in t.user


def test_token_estimate_is_sane() -> None:
    p = build()
    text_tokens = estimate_tokens(p.system) + estimate_tokens(p.user)
    chars = len(p.system) + len(p.user)
    assert chars / 4 * 0.6 <= text_tokens <= chars / 4 * 1.6
    # the estimate adds the schema sent with the call and the messages' framing
    assert text_tokens < p.input_tokens_estimate < text_tokens + 1500
