"""Accounts of the simulated exchange: USDC balance, one-way positions, fills, funding, and
the cross-margin numbers ``clearinghouseState`` reports.

Margin model (cross only): initial margin = position notional at mark / leverage;
maintenance margin = notional / (2 x the asset's max leverage), which reproduces the
``crossMaintenanceMarginUsed`` of a real recorded account (ccxt sample, 2024). Funding payment
= size x oracle price x rate; longs pay when the rate is positive. Money is rounded to 6
decimals (USDC) where HyperLiquid reports it. The arithmetic is ``bistouryd.exchange.account``'s,
shared with the paper broker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from bistouryd.exchange.account import (
    cross_liquidation_px,
    fill_effect,
    funding_payment_usd,
    maintenance_margin_usd,
)
from bistouryd.exchange.rules import AssetRules

DEFAULT_LEVERAGE = 20  # what a fresh real account shows for every asset (capped at max)
KEEP_FILLS = 10_000


def usd(x: float) -> float:
    return round(x, 6)


@dataclass(frozen=True)
class UserFill:
    """One fill of one account, as ``userFills`` reports it."""

    coin: str
    px: float
    sz: float
    side: str  # "B" bought, "A" sold
    time_ms: int
    start_position: float
    dir: str
    closed_pnl_usd: float
    hash: str
    oid: int
    crossed: bool  # taker
    fee_usd: float
    tid: int
    cloid: str | None


@dataclass(frozen=True)
class FundingPayment:
    time_ms: int
    coin: str
    usdc: float  # received (+) or paid (-)
    szi: float
    funding_rate: float
    hash: str


@dataclass
class Position:
    coin: str
    szi: float
    entry_px: float
    funding_all_time_usd: float = 0.0  # paid (+) / received (-), as cumFunding
    funding_since_open_usd: float = 0.0
    funding_since_change_usd: float = 0.0


@dataclass(frozen=True)
class PositionView:
    coin: str
    szi: float
    entry_px: float
    leverage: int
    max_leverage: int
    position_value_usd: float
    unrealized_pnl_usd: float
    return_on_equity: float
    margin_used_usd: float
    liquidation_px: float | None
    funding_all_time_usd: float
    funding_since_open_usd: float
    funding_since_change_usd: float


@dataclass(frozen=True)
class MarginView:
    account_value_usd: float
    total_ntl_pos_usd: float
    total_raw_usd: float
    total_margin_used_usd: float
    maintenance_margin_usd: float
    withdrawable_usd: float
    positions: tuple[PositionView, ...]


@dataclass
class Account:
    address: str  # lowercase
    balance_usd: float
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    fills: deque[UserFill] = field(default_factory=lambda: deque(maxlen=KEEP_FILLS))
    fundings: deque[FundingPayment] = field(default_factory=lambda: deque(maxlen=KEEP_FILLS))
    volume_usd: float = 0.0
    requests_n: int = 0

    def leverage_for(self, rules: AssetRules) -> int:
        return self.leverage.get(rules.name, min(DEFAULT_LEVERAGE, rules.max_leverage))

    def szi(self, coin: str) -> float:
        pos = self.positions.get(coin)
        return pos.szi if pos else 0.0

    def apply_fill(
        self,
        rules: AssetRules,
        is_buy: bool,
        px: float,
        sz: float,
        fee_usd: float,
        *,
        time_ms: int,
        oid: int,
        tid: int,
        hash: str,
        crossed: bool,
        cloid: str | None,
    ) -> UserFill:
        """Book a fill: position, entry price, realised PnL and fee."""
        coin = rules.name
        pos = self.positions.get(coin)
        start = pos.szi if pos else 0.0
        effect = fill_effect(start, pos.entry_px if pos else 0.0, is_buy, px, sz, rules.sz_decimals)
        end = effect.end_szi
        if end == 0:
            self.positions.pop(coin, None)
        elif pos is None or (end > 0) != (start > 0):
            self.positions[coin] = Position(coin, end, effect.entry_px)
        else:
            pos.szi, pos.entry_px = end, effect.entry_px
            pos.funding_since_change_usd = 0.0
        self.balance_usd += effect.closed_pnl_usd - fee_usd
        self.volume_usd += px * sz
        fill = UserFill(
            coin=coin,
            px=px,
            sz=sz,
            side="B" if is_buy else "A",
            time_ms=time_ms,
            start_position=start,
            dir=effect.direction,
            closed_pnl_usd=usd(effect.closed_pnl_usd),
            hash=hash,
            oid=oid,
            crossed=crossed,
            fee_usd=fee_usd,
            tid=tid,
            cloid=cloid,
        )
        self.fills.append(fill)
        return fill

    def apply_funding(
        self, coin: str, rate: float, oracle_px: float, time_ms: int, hash: str
    ) -> FundingPayment | None:
        """Settle one hour of funding on ``coin``; ``None`` without a position."""
        pos = self.positions.get(coin)
        if pos is None:
            return None
        paid = -funding_payment_usd(pos.szi, oracle_px, rate)
        self.balance_usd -= paid
        pos.funding_all_time_usd += paid
        pos.funding_since_open_usd += paid
        pos.funding_since_change_usd += paid
        payment = FundingPayment(time_ms, coin, usd(-paid), pos.szi, rate, hash)
        self.fundings.append(payment)
        return payment

    def margin(self, marks: Mapping[str, float], rules: Mapping[str, AssetRules]) -> MarginView:
        """The account at the given mark prices (the ``clearinghouseState`` numbers)."""
        upnl = {c: p.szi * (marks[c] - p.entry_px) for c, p in self.positions.items()}
        value = self.balance_usd + sum(upnl.values())
        notional = {c: abs(p.szi) * marks[c] for c, p in self.positions.items()}
        maint = {
            c: maintenance_margin_usd(notional[c], rules[c].max_leverage) for c in self.positions
        }
        total_maint = sum(maint.values())
        used = 0.0
        views = []
        for coin, pos in sorted(self.positions.items()):
            lev = self.leverage_for(rules[coin])
            margin = notional[coin] / lev
            used += margin
            entry_margin = abs(pos.szi) * pos.entry_px / lev
            liq = cross_liquidation_px(
                pos.szi, marks[coin], value, total_maint - maint[coin], rules[coin].max_leverage
            )
            views.append(
                PositionView(
                    coin=coin,
                    szi=pos.szi,
                    entry_px=pos.entry_px,
                    leverage=lev,
                    max_leverage=rules[coin].max_leverage,
                    position_value_usd=notional[coin],
                    unrealized_pnl_usd=upnl[coin],
                    return_on_equity=upnl[coin] / entry_margin if entry_margin else 0.0,
                    margin_used_usd=margin,
                    liquidation_px=liq,
                    funding_all_time_usd=pos.funding_all_time_usd,
                    funding_since_open_usd=pos.funding_since_open_usd,
                    funding_since_change_usd=pos.funding_since_change_usd,
                )
            )
        return MarginView(
            account_value_usd=value,
            total_ntl_pos_usd=sum(notional.values()),
            total_raw_usd=value - sum(p.szi * marks[c] for c, p in self.positions.items()),
            total_margin_used_usd=used,
            maintenance_margin_usd=total_maint,
            withdrawable_usd=max(0.0, value - used),
            positions=tuple(views),
        )
