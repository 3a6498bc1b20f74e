"""Runs the enabled strategies for a set of coins: routing, chaining and timing.

The signals agent, paper-historical replay and the backtester all drive strategies
through this one class, so a signal is computed the same way wherever it comes from.
Events are routed to the strategies that declare their type as an input; a signal a
strategy emits is handed on, for the same coin, to the strategies that take signals
(cross_signal), never back to its author. A reconfiguration only touches the
strategies whose parameters changed: the others keep their rolling state.

Pure apart from reading ``time.perf_counter`` when a compute-time callback is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from bistouryd.market import AssetCtx, Candle, FundingRate, L2Book, MarketEvent, Trades
from bistouryd.strategies.base import Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.registry import strategy_classes

INPUT_OF: dict[type, Input] = {
    Candle: "candle",
    L2Book: "l2",
    Trades: "trades",
    AssetCtx: "ctx",
    FundingRate: "funding",
    Signal: "signal",
}

ComputeObserver = Callable[[str, float], None]
ErrorObserver = Callable[[str, str, Exception], None]


@dataclass
class _Coin:
    """The strategy instances of one coin, by name, in registry order."""

    strategies: dict[str, Strategy] = field(default_factory=dict)  # type: ignore[type-arg]


class SignalEngine:
    """Per-coin strategy instances fed by market events.

    ``settings`` maps strategy names to their parameters (the ``strategies:`` section);
    only those with ``enabled`` run; ``classes`` defaults to the registry.
    ``on_compute(strategy, seconds)`` is called with the time of every update,
    ``on_error(strategy, coin, exc)`` when a strategy raises (the event is skipped for
    that strategy, the others go on).
    """

    def __init__(
        self,
        settings: Mapping[str, StrategyParams],
        coins: Iterable[str],
        *,
        on_compute: ComputeObserver | None = None,
        on_error: ErrorObserver | None = None,
        classes: Mapping[str, type[Strategy]] | None = None,  # type: ignore[type-arg]
    ):
        self.classes = dict(strategy_classes() if classes is None else classes)
        self.on_compute = on_compute
        self.on_error = on_error
        self.settings: dict[str, StrategyParams] = {}
        self.coins: dict[str, _Coin] = {}
        self.configure(settings, coins)

    @property
    def enabled(self) -> list[str]:
        return [name for name, params in self.settings.items() if params.enabled]

    def configure(self, settings: Mapping[str, StrategyParams], coins: Iterable[str]) -> None:
        """Apply new settings and coins, keeping every rolling state that still applies."""
        classes = self.classes
        unknown = sorted(set(settings) - set(classes))
        if unknown:
            raise ValueError(f"unknown strategies: {', '.join(unknown)}")
        wanted = list(dict.fromkeys(coins))
        for coin in list(self.coins):
            if coin not in wanted:
                del self.coins[coin]
        for coin in wanted:
            self.coins.setdefault(coin, _Coin())
        self.settings = {name: settings[name] for name in classes if name in settings}
        for coin, state in self.coins.items():
            for name, params in self.settings.items():
                current = state.strategies.get(name)
                if not params.enabled:
                    state.strategies.pop(name, None)
                elif current is None:
                    state.strategies[name] = classes[name](coin, params)
                elif current.params != params:
                    current.reconfigure(params)
            for name in list(state.strategies):
                if name not in self.settings:
                    del state.strategies[name]
            # Keep registry order so chained strategies see their inputs first.
            state.strategies = {
                n: state.strategies[n] for n in self.settings if n in state.strategies
            }

    def feed(self, event: MarketEvent) -> list[Signal]:
        """Every signal this event leads to, chained signals included, in order."""
        state = self.coins.get(event.coin)
        if state is None:
            return []
        out: list[Signal] = []
        pending: list[tuple[MarketEvent | Signal, str | None]] = [(event, None)]
        while pending:
            item, author = pending.pop(0)
            kind = INPUT_OF.get(type(item))
            for name, strategy in list(state.strategies.items()):
                if name == author or kind not in strategy.inputs:
                    continue
                signal = self._update(name, strategy, item)
                if signal is not None:
                    out.append(signal)
                    pending.append((signal, name))
        return out

    def _update(
        self,
        name: str,
        strategy: Strategy,  # type: ignore[type-arg]
        item: MarketEvent | Signal,
    ) -> Signal | None:
        start = time.perf_counter() if self.on_compute is not None else 0.0
        try:
            signal = strategy.update(item)
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error(name, strategy.coin, exc)
            return None
        if self.on_compute is not None:
            self.on_compute(name, time.perf_counter() - start)
        return signal
