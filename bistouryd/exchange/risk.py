"""The risk engine: every order passes ``check`` before it is sent, in live trading, paper
trading and the backtester alike, so a limit holds the same way everywhere.

Pure (no I/O, no clock: the caller passes ``now_ms``). A model's ``TradeDecision`` becomes
rounded ``OrderRequest``s or a ``Refusal`` naming the rule, the cause and what to do. Sizes
only ever round down and are trimmed to every limit before rounding, so no approved order
can break one; orders that only reduce risk (close, reduce) are never blocked by a pause or
the daily loss limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bistouryd.config import RiskConfig, TradingConfig
from bistouryd.exchange.orders import OrderRequest, Position, Purpose
from bistouryd.exchange.rules import MIN_ORDER_USD, AssetRules, round_px, round_sz
from bistouryd.llm.decision import TradeDecision

RiskRule = Literal[
    "paused",
    "daily_loss",
    "max_positions",
    "per_coin",
    "exposure",
    "leverage",
    "risk_limit",
    "position_size",
    "min_order",
    "no_position",
    "no_price",
]

WARN_AT = 0.8  # share of a limit from which verdicts warn


class RiskLimits(BaseModel):
    """The limits ``check`` enforces; percentages are in percent (10.0 is 10%)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    position_size_pct: float = Field(default=10.0, gt=0, le=100)
    max_position_usd: float | None = Field(default=None, gt=0)
    max_total_exposure_pct: float = Field(default=50.0, gt=0, le=1000)
    max_leverage: float = Field(default=3.0, ge=1, le=50)
    max_positions: int = Field(default=3, ge=1)
    max_positions_per_coin: int = Field(default=1, ge=1)
    daily_loss_limit_pct: float = Field(default=5.0, gt=0, le=100)
    min_order_usd: float = Field(default=10.0, ge=MIN_ORDER_USD)
    risk_limit_usd: float | None = Field(
        default=None, gt=0, description="live only: the total notional allowed by `--risk-limit`"
    )
    stop_loss_pct: float = Field(default=2.0, gt=0, lt=100)
    take_profit_pct: float = Field(default=5.0, gt=0, le=1000)
    max_slippage_pct: float = Field(
        default=1.0, gt=0, le=50, description="a market order's worst price: mark ± this"
    )

    @classmethod
    def from_config(
        cls, trading: TradingConfig, risk: RiskConfig, risk_limit_usd: float | None = None
    ) -> RiskLimits:
        return cls(
            position_size_pct=trading.position_size_pct,
            max_position_usd=risk.max_position_usd,
            max_total_exposure_pct=risk.max_total_exposure_pct,
            max_leverage=risk.max_leverage,
            max_positions=trading.max_positions,
            max_positions_per_coin=risk.max_positions_per_coin,
            daily_loss_limit_pct=risk.daily_loss_limit_pct,
            min_order_usd=risk.min_order_usd,
            risk_limit_usd=risk_limit_usd,
            stop_loss_pct=trading.stop_loss_pct,
            take_profit_pct=trading.take_profit_pct,
        )


@dataclass(frozen=True)
class AccountState:
    """What the account holds now, as the positions agent (or the backtester) sees it."""

    equity_usd: float
    day_start_equity_usd: float
    positions: Mapping[str, Position]
    marks: Mapping[str, float]
    paused: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why a decision produced no order, in the "cause → what to do" form users see."""

    rule: RiskRule
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.message} → {self.hint}"


@dataclass(frozen=True)
class RiskVerdict:
    """The orders to send, or the refusal; an open also says which stop and target to attach
    once it fills (they protect the filled size, not the order's)."""

    orders: tuple[OrderRequest, ...]
    refusal: Refusal | None
    warnings: tuple[str, ...]
    stop_px: float | None = None
    target_px: float | None = None

    @property
    def approved(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class _Cap:
    """One limit on an open's notional: how much it leaves, and how to say so."""

    rule: RiskRule
    room_usd: float
    why: str
    hint: str


def exposure_usd(account: AccountState) -> float:
    """Total notional of the open positions at the mark (at entry for a coin without one)."""
    marks = account.marks
    return sum(
        (p.notional_usd(marks.get(c, p.entry_px)) for c, p in account.positions.items()), 0.0
    )


def remaining_budget_usd(account: AccountState, limits: RiskLimits) -> float:
    """What new positions may still commit (0 when none), for the trader's prompt."""
    exposure = exposure_usd(account)
    equity = max(0.0, account.equity_usd)
    rooms = [
        equity * limits.max_total_exposure_pct / 100 - exposure,
        equity * limits.max_leverage - exposure,
    ]
    if limits.risk_limit_usd is not None:
        rooms.append(limits.risk_limit_usd - exposure)
    return max(0.0, min(rooms))


def daily_loss_breached(account: AccountState, limits: RiskLimits) -> bool:
    """Whether equity fell to the day's start less ``daily_loss_limit_pct`` (or below).
    An account with no starting equity yet (not read) has lost nothing."""
    if account.day_start_equity_usd <= 0:
        return False
    floor_usd = account.day_start_equity_usd * (1 - limits.daily_loss_limit_pct / 100)
    return account.equity_usd <= floor_usd


def protective_orders(
    position: Position, rules: AssetRules, now_ms: int
) -> tuple[OrderRequest, ...]:
    """The reduce-only stop-loss and take-profit trigger orders for ``position.stop_px`` and
    ``target_px``, for the whole position. Triggers round toward the entry (never wider than
    asked), so an already valid price stays as it is."""
    sz = round_sz(abs(position.szi), rules.sz_decimals)
    if sz <= 0:
        return ()
    is_buy = position.szi < 0
    orders = []
    if position.stop_px is not None:
        trigger_px = round_px(position.stop_px, rules.sz_decimals, is_buy=is_buy)
        orders.append(_trigger(position, sz, is_buy, "stop_loss", trigger_px, now_ms))
    if position.target_px is not None:
        trigger_px = round_px(position.target_px, rules.sz_decimals, is_buy=not is_buy)
        orders.append(_trigger(position, sz, is_buy, "take_profit", trigger_px, now_ms))
    return tuple(orders)


EMERGENCY_SLIPPAGE_PCT = 5.0  # the emergency stop must get out: the SDK's market default


def flatten_orders(
    account: AccountState, rules: Mapping[str, AssetRules], now_ms: int
) -> tuple[OrderRequest, ...]:
    """The emergency stop's orders: one reduce-only market (IoC) order closing each open
    position, at worst mark ± 5% (the entry price stands in for a missing mark). They
    can only reduce risk, so no limit refuses them."""
    limits = RiskLimits(max_slippage_pct=EMERGENCY_SLIPPAGE_PCT)
    orders = []
    for coin, position in sorted(account.positions.items()):
        asset = rules.get(coin)
        sz = round_sz(abs(position.szi), asset.sz_decimals) if asset else 0.0
        if asset is None or sz <= 0:
            continue
        is_buy = position.szi < 0
        mark_px = account.marks.get(coin) or position.entry_px
        orders.append(
            OrderRequest(
                ts_ms=now_ms,
                coin=coin,
                is_buy=is_buy,
                sz=sz,
                kind="market",
                limit_px=_market_px(mark_px, is_buy, limits, asset),
                reduce_only=True,
                purpose="emergency",
                decision_id=position.decision_id,
            )
        )
    return tuple(orders)


def _trigger(
    position: Position,
    sz: float,
    is_buy: bool,
    kind: Literal["stop_loss", "take_profit"],
    trigger_px: float,
    now_ms: int,
) -> OrderRequest:
    return OrderRequest(
        ts_ms=now_ms,
        coin=position.coin,
        is_buy=is_buy,
        sz=sz,
        kind=kind,
        trigger_px=trigger_px,
        reduce_only=True,
        purpose=kind,
        decision_id=position.decision_id,
    )


def warnings_for(account: AccountState, limits: RiskLimits) -> tuple[str, ...]:
    """Limits the account is at 80% of or past, each with what to do about it."""
    return _warnings(account, limits, 0, 0.0)


def _warnings(
    account: AccountState, limits: RiskLimits, positions_delta: int, exposure_delta_usd: float
) -> tuple[str, ...]:
    """``warnings_for`` as the account will be once an order's change is applied."""
    found = []
    n = _open_count(account) + positions_delta
    if n >= WARN_AT * limits.max_positions:
        near = "Approaching" if n < limits.max_positions else "At"
        found.append(
            f"{near} position limit ({n}/{limits.max_positions} max positions) → close a "
            "position or raise trading.max_positions"
        )
    exposure = exposure_usd(account) + exposure_delta_usd
    budget = max(0.0, account.equity_usd) * limits.max_total_exposure_pct / 100
    if budget > 0 and exposure >= WARN_AT * budget:
        found.append(
            f"Approaching exposure limit ({_usd(exposure)} of the {_usd(budget)} budget, "
            f"{exposure / budget:.0%}) → close or reduce a position, or raise "
            "risk.max_total_exposure_pct"
        )
    risk_limit = limits.risk_limit_usd
    if risk_limit is not None and exposure >= WARN_AT * risk_limit:
        found.append(
            f"Approaching the risk limit ({_usd(exposure)} of {_usd(risk_limit)}, "
            f"{exposure / risk_limit:.0%}) → close or reduce a position, or restart live "
            "trading with a higher --risk-limit"
        )
    loss = account.day_start_equity_usd - account.equity_usd
    loss_limit = account.day_start_equity_usd * limits.daily_loss_limit_pct / 100
    if loss_limit > 0 and loss >= WARN_AT * loss_limit:
        if daily_loss_breached(account, limits):
            state, todo = "Daily loss limit reached", "no new positions today"
        else:
            state, todo = "Approaching daily loss limit", "new positions stop at the limit"
        found.append(
            f"{state} (today's loss {_usd(loss)} is {loss / loss_limit:.0%} of the "
            f"{_usd(loss_limit)} limit) → {todo}; reduce risk or raise risk.daily_loss_limit_pct"
        )
    return tuple(found)


def check(
    decision: TradeDecision,
    account: AccountState,
    limits: RiskLimits,
    rules: AssetRules,
    now_ms: int,
    decision_id: str | None = None,
) -> RiskVerdict:
    """The orders that carry out ``decision`` within every limit, or the first rule that
    refuses it. Raises ``ValueError`` if ``rules`` are another coin's (a caller's bug)."""
    if decision.coin != rules.name:
        raise ValueError(f"{decision.coin} decision checked with {rules.name}'s trading rules")
    if decision.action == "hold":
        return RiskVerdict((), None, warnings_for(account, limits))
    if decision.action in ("close", "reduce"):
        return _exit(decision, account, limits, rules, now_ms, decision_id)
    return _open(decision, account, limits, rules, now_ms, decision_id)


def _refuse(
    rule: RiskRule, message: str, hint: str, account: AccountState, limits: RiskLimits
) -> RiskVerdict:
    return RiskVerdict((), Refusal(rule, message, hint), warnings_for(account, limits))


def _exit(
    decision: TradeDecision,
    account: AccountState,
    limits: RiskLimits,
    rules: AssetRules,
    now_ms: int,
    decision_id: str | None,
) -> RiskVerdict:
    """Close or reduce: reduce-only, so neither a pause nor the loss limit blocks it."""
    coin, action = decision.coin, decision.action
    position = account.positions.get(coin)
    if position is None or position.szi == 0:
        return _refuse(
            "no_position",
            f"{coin}: no open position to {action}",
            "nothing to do; the model saw a position that is already gone",
            account,
            limits,
        )
    mark_px = account.marks.get(coin)
    if mark_px is None or mark_px <= 0:
        return _refuse(
            "no_price",
            f"{coin}: no mark price to bound a market order",
            "wait for market data; the position's stop still protects it",
            account,
            limits,
        )
    held_sz = abs(position.szi)
    purpose: Purpose
    if action == "close":
        purpose, positions_delta = "close", -1
        sz = round_sz(held_sz, rules.sz_decimals)
    else:
        purpose, positions_delta = "reduce", 0
        sz = _floor_lots(_dec(decision.size_fraction) * _dec(held_sz), rules.sz_decimals)
    if sz <= 0:
        return _refuse(
            "min_order",
            f"{coin}: {action} of {held_sz:g} rounds to 0 lots of {rules.lot_sz:g}",
            "reduce a larger fraction or close the position",
            account,
            limits,
        )
    is_buy = position.szi < 0
    order = OrderRequest(
        ts_ms=now_ms,
        coin=coin,
        is_buy=is_buy,
        sz=sz,
        kind="market",
        limit_px=_market_px(mark_px, is_buy, limits, rules),
        reduce_only=True,
        purpose=purpose,
        decision_id=decision_id,
    )
    warnings = _warnings(account, limits, positions_delta, -sz * mark_px)
    return RiskVerdict((order,), None, warnings)


def _open(
    decision: TradeDecision,
    account: AccountState,
    limits: RiskLimits,
    rules: AssetRules,
    now_ms: int,
    decision_id: str | None,
) -> RiskVerdict:
    coin, is_long = decision.coin, decision.action == "open_long"
    side = "long" if is_long else "short"
    if account.paused:
        return _refuse(
            "paused",
            f"{coin}: trading is paused, no new positions",
            "resume with 'bistouryctl resume trading'",
            account,
            limits,
        )
    if daily_loss_breached(account, limits):
        loss = account.day_start_equity_usd - account.equity_usd
        return _refuse(
            "daily_loss",
            f"{coin}: today's loss {_usd(loss)} reached the daily limit of "
            f"{limits.daily_loss_limit_pct:g}% of the day's starting equity "
            f"{_usd(account.day_start_equity_usd)}",
            "wait for the next trading day or raise risk.daily_loss_limit_pct",
            account,
            limits,
        )
    mark_px = account.marks.get(coin)
    if mark_px is None or mark_px <= 0:
        return _refuse(
            "no_price",
            f"{coin}: no mark price to size and bound the order",
            "wait for market data for this coin",
            account,
            limits,
        )
    held = account.positions.get(coin)
    adding = False
    if held is not None and held.szi != 0:
        if held.side != side:
            return _refuse(
                "per_coin",
                f"{coin}: a {held.side} position is open and HyperLiquid nets a {side} into it",
                f"close the {coin} {held.side} first",
                account,
                limits,
            )
        if limits.max_positions_per_coin <= 1:
            return _refuse(
                "per_coin",
                f"{coin}: a {side} position is open, the maximum per coin is "
                f"{limits.max_positions_per_coin}",
                "let it run, or raise risk.max_positions_per_coin to add to it",
                account,
                limits,
            )
        adding = True
    open_count = _open_count(account)
    if not adding and open_count >= limits.max_positions:
        return _refuse(
            "max_positions",
            f"{coin}: {open_count} positions open, the maximum is {limits.max_positions}",
            "close a position or raise trading.max_positions",
            account,
            limits,
        )

    budget_caps, trade_caps = _caps(account, limits, rules)
    room_usd = max(0.0, min(c.room_usd for c in budget_caps))
    wanted_usd = decision.size_fraction * room_usd
    binding = min(budget_caps + trade_caps, key=lambda c: c.room_usd)
    if binding.room_usd < limits.min_order_usd:
        return _refuse(
            binding.rule,
            f"{coin}: only {_usd(max(0.0, binding.room_usd))} may be committed, below the "
            f"{_usd(limits.min_order_usd)} minimum order, by {binding.why}",
            binding.hint,
            account,
            limits,
        )
    trim = min(trade_caps, key=lambda c: c.room_usd)
    notional_usd = min(wanted_usd, trim.room_usd)
    if notional_usd < limits.min_order_usd:
        return _refuse(
            "min_order",
            f"{coin}: {decision.size_fraction:.0%} of the {_usd(room_usd)} remaining budget is "
            f"{_usd(notional_usd)}, below the {_usd(limits.min_order_usd)} minimum order",
            f"a size_fraction of at least {limits.min_order_usd / room_usd:.2f} would reach it",
            account,
            limits,
        )
    warnings = []
    if notional_usd < wanted_usd:
        warnings.append(
            f"{coin}: order trimmed from {_usd(wanted_usd)} to {_usd(notional_usd)} by {trim.why}"
        )
    sz = _floor_lots(_dec(notional_usd) / _dec(mark_px), rules.sz_decimals)
    if _dec(sz) * _dec(mark_px) < _dec(limits.min_order_usd):
        return _refuse(
            "min_order",
            f"{coin}: {_usd(notional_usd)} rounds down to {sz:g} {coin} (lots of "
            f"{rules.lot_sz:g}), worth {_usd(sz * mark_px)}, below the "
            f"{_usd(limits.min_order_usd)} minimum order",
            f"one lot is worth {_usd(rules.lot_sz * mark_px)}; a larger size_fraction or "
            "budget is needed",
            account,
            limits,
        )

    stop = _fraction(decision.stop_loss_pct, limits.stop_loss_pct)
    target = _fraction(decision.take_profit_pct, limits.take_profit_pct)
    # Stops and targets round toward the mark: never further than asked.
    stop_px = round_px(
        mark_px * (1 - stop if is_long else 1 + stop), rules.sz_decimals, is_buy=not is_long
    )
    target_px: float | None = None
    if is_long or target < 1:
        target_px = round_px(
            mark_px * (1 + target if is_long else 1 - target), rules.sz_decimals, is_buy=is_long
        )
    else:
        warnings.append(
            f"{coin}: a take-profit {target:.0%} below the price is impossible for a short, "
            "none set → give a target under 100%"
        )
    order = OrderRequest(
        ts_ms=now_ms,
        coin=coin,
        is_buy=is_long,
        sz=sz,
        kind="market",
        limit_px=_market_px(mark_px, is_long, limits, rules),
        purpose="open",
        decision_id=decision_id,
    )
    warnings += _warnings(account, limits, 0 if adding else 1, sz * mark_px)
    return RiskVerdict((order,), None, tuple(warnings), stop_px, target_px)


def _caps(
    account: AccountState, limits: RiskLimits, rules: AssetRules
) -> tuple[list[_Cap], list[_Cap]]:
    """The limits on an open: those the size fraction applies to (the remaining budget) and
    those that only trim it (per trade, leverage)."""
    equity = max(0.0, account.equity_usd)
    exposure = exposure_usd(account)
    committed = f"{_usd(exposure)} committed"
    budget = equity * limits.max_total_exposure_pct / 100
    budget_caps = [
        _Cap(
            "exposure",
            budget - exposure,
            f"max_total_exposure_pct ({limits.max_total_exposure_pct:g}% of {_usd(equity)} "
            f"equity: a {_usd(budget)} budget, {committed})",
            "close or reduce a position, or raise risk.max_total_exposure_pct",
        )
    ]
    if limits.risk_limit_usd is not None:
        budget_caps.append(
            _Cap(
                "risk_limit",
                limits.risk_limit_usd - exposure,
                f"the risk limit ({_usd(limits.risk_limit_usd)}, {committed})",
                "close or reduce a position, or restart live trading with a higher --risk-limit",
            )
        )
    if rules.max_leverage < limits.max_leverage:
        leverage, named = float(rules.max_leverage), f"{rules.name}'s maximum leverage"
    else:
        leverage, named = limits.max_leverage, "max_leverage"
    trade_caps = [
        _Cap(
            "leverage",
            equity * leverage - exposure,
            f"{named} ({leverage:g}x of {_usd(equity)} equity, {committed})",
            "close or reduce a position, or raise risk.max_leverage",
        ),
        _Cap(
            "position_size",
            budget * limits.position_size_pct / 100,
            f"position_size_pct ({limits.position_size_pct:g}% of the {_usd(budget)} budget)",
            "raise trading.position_size_pct",
        ),
    ]
    if limits.max_position_usd is not None:
        trade_caps.append(
            _Cap(
                "position_size",
                limits.max_position_usd,
                f"max_position_usd ({_usd(limits.max_position_usd)})",
                "raise risk.max_position_usd",
            )
        )
    return budget_caps, trade_caps


def _fraction(given: float | None, default_pct: float) -> float:
    """The decision's stop or target distance (a fraction), or the configured one (percent)."""
    return default_pct / 100 if given is None else given


def _open_count(account: AccountState) -> int:
    return sum(1 for p in account.positions.values() if p.szi != 0)


def _market_px(mark_px: float, is_buy: bool, limits: RiskLimits, rules: AssetRules) -> float:
    """A market order's worst price, mark ± ``max_slippage_pct``, rounded inward so the
    rounding never lets it slip further."""
    slip = limits.max_slippage_pct / 100
    return round_px(mark_px * (1 + slip if is_buy else 1 - slip), rules.sz_decimals, is_buy=is_buy)


def _dec(x: float) -> Decimal:
    """A float as the decimal it prints as, so 500 / 50000 is exactly 0.01."""
    return Decimal(repr(x))


def _floor_lots(sz: Decimal, sz_decimals: int) -> float:
    """``sz`` rounded down to the lot, so rounding never grows an order past a limit."""
    return float(sz.quantize(Decimal(1).scaleb(-sz_decimals), rounding=ROUND_FLOOR))


def _usd(x: float) -> str:
    """Dollars as users read them: ``$2,500``, ``$7.50``, ``-$12``."""
    sign, x = ("-" if x < 0 else ""), abs(float(x))
    return f"{sign}${x:,.0f}" if x >= 100 or x.is_integer() else f"{sign}${x:,.2f}"
