"""Position arithmetic shared by the simulated exchange and the paper broker.

Pure (no I/O). One code path for what a fill does to a one-way position (new signed size,
entry price, realised PnL, HyperLiquid's ``dir`` label), for funding and for the cross-margin
liquidation price, so the simulator's ``clearinghouseState`` and the paper broker never
disagree. Maintenance margin = notional / (2 x the asset's max leverage), which reproduces a
real recorded account's ``crossMaintenanceMarginUsed``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FillEffect:
    """A fill's effect on a position: what is left, at what entry, and what it realised.

    ``entry_px`` is meaningless when ``end_szi`` is 0 (the position is gone);
    ``closed_pnl_usd`` is before fees.
    """

    end_szi: float
    entry_px: float
    closed_pnl_usd: float
    direction: str  # "Open Long", "Close Short", "Long > Short", ... as ``userFills`` ``dir``


def fill_effect(
    start_szi: float, entry_px: float, is_buy: bool, px: float, sz: float, sz_decimals: int
) -> FillEffect:
    """Apply a fill of ``sz`` at ``px`` to a position of ``start_szi`` entered at
    ``entry_px`` (ignored when flat). Adding averages the entry by size; reducing keeps it
    and realises PnL on the closed part; a flip closes all and opens the rest at ``px``."""
    end = round(start_szi + (sz if is_buy else -sz), sz_decimals)
    if start_szi == 0 or (start_szi > 0) == is_buy:
        direction = "Open Long" if is_buy else "Open Short"
        if start_szi == 0:
            return FillEffect(end, px, 0.0, direction)
        avg = (abs(start_szi) * entry_px + sz * px) / (abs(start_szi) + sz)
        return FillEffect(end, avg, 0.0, direction)
    long = start_szi > 0
    closed = min(sz, abs(start_szi)) * (px - entry_px) * (1 if long else -1)
    if end != 0 and (end > 0) != long:
        return FillEffect(end, px, closed, "Long > Short" if long else "Short > Long")
    return FillEffect(end, entry_px, closed, "Close Long" if long else "Close Short")


def maintenance_margin_usd(notional_usd: float, max_leverage: int) -> float:
    """Half the initial margin at max leverage."""
    return notional_usd / (2 * max_leverage)


def cross_liquidation_px(
    szi: float,
    mark_px: float,
    account_value_usd: float,
    other_maintenance_usd: float,
    max_leverage: int,
) -> float | None:
    """The mark at which a cross account's value falls to its maintenance margin, the other
    positions held at their marks; ``None`` when no positive price would do it.

    Account value at mark ``x`` is ``V + szi (x - mark)``, maintenance is
    ``other + |szi| x / (2 max_leverage)``; equating them gives the price.
    """
    half = 1 / (2 * max_leverage)
    liq = (other_maintenance_usd - account_value_usd + szi * mark_px) / (szi - abs(szi) * half)
    return liq if liq > 0 else None


def funding_payment_usd(szi: float, px: float, rate: float) -> float:
    """One funding payment, received (+) or paid (-): longs pay a positive rate."""
    return -szi * px * rate
