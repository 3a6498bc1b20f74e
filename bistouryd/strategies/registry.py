"""Which strategies exist: the built-in ones and any installed plug-in.

A plug-in package adds one with an entry point in the ``bistoury.strategies`` group,
``name = "package.module:StrategyClass"``; it is then configured under ``strategies:``
like the built-ins. Nothing else needs to change.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from bistouryd.strategies.base import Strategy

BUILTIN = {
    "multi_timeframe": "bistouryd.strategies.multi_timeframe:MultiTimeframe",
    "funding_rate": "bistouryd.strategies.funding_rate:FundingRate",
    "order_flow": "bistouryd.strategies.order_flow:OrderFlow",
    "volume_profile": "bistouryd.strategies.volume_profile:VolumeProfile",
    "cross_signal": "bistouryd.strategies.cross_signal:CrossSignal",
}
ENTRY_POINT_GROUP = "bistoury.strategies"


def _load(target: str) -> type[Strategy]:  # type: ignore[type-arg]
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"{target} is not a Strategy subclass")
    return cls


@cache
def strategy_classes() -> dict[str, type[Strategy]]:  # type: ignore[type-arg]
    """Name → class, built-ins first, in a stable order."""
    found = {name: _load(target) for name, target in BUILTIN.items()}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name not in found:
            found[ep.name] = _load(ep.value)
    for name, cls in found.items():
        if cls.name != name:
            raise TypeError(f"strategy {name!r} is registered with a class named {cls.name!r}")
    return found
