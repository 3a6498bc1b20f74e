"""HyperLiquid perpetuals' trading rules: price ticks, size lots, minimum order value.

Pure (no I/O). The simulated exchange enforces these; the paper broker and the live gateway
round to them before sending, so an order the simulator accepts is one the exchange accepts.

Sources (see ``../shared/HYPERLIQUID.md`` §c): a perp price has at most 5 significant figures
and at most ``6 - szDecimals`` decimals, and an integer price is always valid (SDK
``Exchange._slippage_price`` and the docs' "Tick and lot size"); a size has at most
``szDecimals`` decimals; an order must be worth at least $10 unless it is reduce-only. Wire
strings follow the SDK's ``float_to_wire``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

MAX_PX_SIG_FIGS = 5
MAX_PERP_PX_DECIMALS = 6
MIN_ORDER_USD = 10.0

Number = float | int | str | Decimal


@dataclass(frozen=True)
class AssetRules:
    """One perp of ``meta.universe``; ``asset`` is its index there (the order wire's ``a``)."""

    name: str
    asset: int
    sz_decimals: int
    max_leverage: int

    @property
    def px_decimals(self) -> int:
        """The most decimals a price may have (fewer may apply: 5 significant figures)."""
        return max(0, MAX_PERP_PX_DECIMALS - self.sz_decimals)

    @property
    def lot_sz(self) -> float:
        return float(Decimal(1).scaleb(-self.sz_decimals))


def rules_from_meta(meta: Mapping[str, Any]) -> list[AssetRules]:
    """``AssetRules`` for every asset of a ``meta`` answer, in universe order.

    Raises ``ValueError`` if an entry lacks ``name``, ``szDecimals`` or ``maxLeverage``.
    """
    found = []
    for index, entry in enumerate(meta["universe"]):
        try:
            found.append(
                AssetRules(
                    name=str(entry["name"]),
                    asset=index,
                    sz_decimals=int(entry["szDecimals"]),
                    max_leverage=int(entry["maxLeverage"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"meta universe entry {index} is malformed: {exc!s}") from None
    return found


def _dec(x: Number) -> Decimal:
    """A float as the decimal it prints as (``0.1`` -> ``Decimal("0.1")``), not its binary value."""
    try:
        return x if isinstance(x, Decimal) else Decimal(repr(x) if isinstance(x, float) else x)
    except InvalidOperation:
        raise ValueError(f"not a number: {x!r}") from None


def tick_size(px: Number, sz_decimals: int) -> Decimal:
    """The price increment at ``px``: the 5th significant figure, no finer than
    ``6 - szDecimals`` decimals, and never coarser than 1 (integers are always allowed)."""
    d = _dec(px)
    if not d.is_finite() or d <= 0:
        raise ValueError(f"price must be positive: {px!r}")
    sig_exp = d.adjusted() - (MAX_PX_SIG_FIGS - 1)
    decimals_exp = -(MAX_PERP_PX_DECIMALS - sz_decimals)
    return Decimal(1).scaleb(min(0, max(sig_exp, decimals_exp)))


def valid_px(px: Number, sz_decimals: int) -> bool:
    """Whether the exchange accepts ``px`` as a perp limit or trigger price."""
    try:
        d = _dec(px)
        return d.is_finite() and d > 0 and d % tick_size(d, sz_decimals) == 0
    except ValueError:
        return False


def round_px(px: Number, sz_decimals: int, is_buy: bool | None = None) -> float:
    """The valid price nearest to ``px``; with ``is_buy`` the one on the passive side
    (a buy rounds down, a sell up) so rounding never makes an order more aggressive."""
    d = _dec(px)
    mode = ROUND_HALF_EVEN if is_buy is None else ROUND_FLOOR if is_buy else ROUND_CEILING
    tick = tick_size(d, sz_decimals)
    return float((d / tick).to_integral_value(rounding=mode) * tick)


def valid_sz(sz: Number, sz_decimals: int) -> bool:
    """Whether ``sz`` is a positive whole number of lots (``10**-szDecimals``)."""
    try:
        d = _dec(sz)
    except ValueError:
        return False
    return d.is_finite() and d > 0 and d == d.quantize(Decimal(1).scaleb(-sz_decimals))


def round_sz(sz: Number, sz_decimals: int) -> float:
    """``sz`` rounded to the nearest lot (half to even, as Python's ``round``)."""
    return float(_dec(sz).quantize(Decimal(1).scaleb(-sz_decimals), rounding=ROUND_HALF_EVEN))


def _float_to_wire(x: float) -> str:
    rounded = f"{x:.8f}"
    if abs(float(rounded) - x) >= 1e-12:
        raise ValueError(f"{x!r} has more than 8 decimals and cannot be sent exactly")
    return f"{Decimal(rounded).normalize():f}"


def price_to_wire(px: float) -> str:
    """A price as the SDK sends it (``float_to_wire``): ``60000.0`` -> ``"60000"``."""
    return _float_to_wire(px)


def size_to_wire(sz: float) -> str:
    """A size as the SDK sends it (``float_to_wire``): ``0.0010`` -> ``"0.001"``."""
    return _float_to_wire(sz)
