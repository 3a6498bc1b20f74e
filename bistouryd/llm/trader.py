"""The trader's logic without sockets: when to ask the model about a coin, what to show
it, and the record of what it answered. The ``trader`` agent drives it from the bus; a
replay or the backtester can drive it from a tape, with the same results.

Time is data time: a coin's clock is the newest signal seen for it, so a replay decides
exactly as live did, whatever the speed. A coin is asked about at most once per
``interval_s`` of that clock, and only when something changed materially since the last
decision: a strategy appeared or changed direction, a strength moved by at least
``min_strength_change``, or the coin's position changed. The first decision on a coin
waits until every expected strategy has spoken (or one interval passed since the first
signal), so the model never decides on the first order-book tick alone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bistouryd.llm.chain import DecisionChain, Outcome
from bistouryd.llm.prompt import DEFAULT_VERSION, PastDecision, build_prompt
from bistouryd.llm.record import DecisionRecord
from bistouryd.portfolio import PortfolioSnapshot, PositionView
from bistouryd.strategies.base import Direction, Signal

RECENT_DECISIONS = 5


@dataclass(frozen=True)
class TraderSettings:
    interval_s: float = 60.0
    min_strength_change: float = 0.15
    prompt_version: str = DEFAULT_VERSION
    expected: frozenset[str] = frozenset()  # the enabled strategies


@dataclass
class _Coin:
    latest: dict[str, Signal] = field(default_factory=dict)
    now_ms: int = 0
    first_ms: int = 0
    asked_ms: int | None = None
    asked_view: dict[str, tuple[Direction, float]] = field(default_factory=dict)
    asked_position: PositionView | None = None
    recent: deque[PastDecision] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))


class Trader:
    def __init__(
        self, chain: DecisionChain, portfolio: PortfolioSnapshot, settings: TraderSettings
    ) -> None:
        self.chain = chain
        self.portfolio = portfolio
        self.settings = settings
        self._coins: dict[str, _Coin] = {}

    def observe(self, signal: Signal) -> None:
        """Take a signal; an older one than held for its strategy is ignored."""
        coin = self._coins.setdefault(signal.coin, _Coin())
        held = coin.latest.get(signal.strategy)
        if held is None or signal.ts_ms >= held.ts_ms:
            coin.latest[signal.strategy] = signal
        coin.now_ms = max(coin.now_ms, signal.ts_ms)
        coin.first_ms = min(coin.first_ms or signal.ts_ms, signal.ts_ms)

    def due(self, coin: str) -> bool:
        """True when ``coin`` should be decided on now (its clock, its changes)."""
        state = self._coins.get(coin)
        if state is None or not state.latest:
            return False
        interval_ms = self.settings.interval_s * 1000
        if state.asked_ms is None:
            missing = self.settings.expected - state.latest.keys()
            return not missing or state.now_ms - state.first_ms >= interval_ms
        if state.now_ms - state.asked_ms < interval_ms:
            return False
        return bool(self.changes(coin))

    def changes(self, coin: str) -> list[str]:
        """What changed materially since the last decision on ``coin``, in words."""
        state = self._coins.get(coin)
        if state is None:
            return []
        if state.asked_ms is None:
            return ["first decision"] if state.latest else []
        out = []
        if self.portfolio.position(coin) != state.asked_position:
            out.append("position changed")
        for name, s in sorted(state.latest.items()):
            before = state.asked_view.get(name)
            if before is None:
                out.append(f"{name} appeared")
            elif s.direction != before[0]:
                out.append(f"{name} turned {s.direction}")
            elif abs(s.strength - before[1]) >= self.settings.min_strength_change:
                out.append(f"{name} strength {before[1]:.2f} -> {s.strength:.2f}")
        return out

    async def decide(self, coin: str) -> tuple[DecisionRecord, Outcome]:
        """Ask the chain about ``coin`` now: the record to publish and store, and the
        chain's outcome (which also says whether this call spent the day's budget)."""
        state = self._coins[coin]
        now, signals = state.now_ms, dict(state.latest)
        account = self.portfolio
        position = account.position(coin)
        prompt = build_prompt(
            coin,
            signals,
            now_ms=now,
            pnl_today_usd=account.pnl_today_usd,
            risk_budget_usd=account.risk_budget_usd,
            max_positions_left=account.max_positions_left,
            position=position,
            recent=list(state.recent),
            version=self.settings.prompt_version,
        )
        # Marked before the call: signals arriving meanwhile are measured against these.
        state.asked_ms = now
        state.asked_view = {name: (s.direction, s.strength) for name, s in signals.items()}
        state.asked_position = position
        outcome = await self.chain.decide(prompt, coin, signals, position.side, now_ms=now)
        state.recent.append(PastDecision(ts_ms=now, decision=outcome.decision))
        ids = sorted(s.id for s in signals.values())
        return DecisionRecord.of(now, coin, prompt, outcome, ids), outcome
