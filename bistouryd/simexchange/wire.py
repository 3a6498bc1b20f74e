"""HyperLiquid's JSON shapes, built from the simulator's domain objects: the HTTP and websocket
edge. Numbers go out as strings the way HyperLiquid writes them (``"118712.0"``, ``"0.001"``),
field names and order as in the recorded answers under ``../shared/data/hyperliquid``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bistouryd.exchange.rules import AssetRules
from bistouryd.market import AssetCtx, Candle, FundingRate, L2Book
from bistouryd.simexchange.accounts import FundingPayment, MarginView, UserFill
from bistouryd.simexchange.feed import PublicTrade
from bistouryd.simexchange.matching import SimOrder
from bistouryd.simexchange.venue import Filled, Outcome, Rejected, Resting, Waiting

Json = Any


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: a JSON ``body`` (status 200), or a plain ``text`` with an error status."""

    status: int
    body: Json = None
    text: str = ""


def num(x: float) -> str:
    """A number as HyperLiquid prints it: the shortest decimal, no exponent, ``.0`` on integers."""
    text = repr(float(x))
    if "e" in text:
        text = format(Decimal(text), "f")
    if text == "-0.0":
        return "0.0"
    return text if "." in text else text + ".0"


def px_str(px: float, rules: AssetRules) -> str:
    return num(round(px, rules.px_decimals))


def mid_str(px: float, rules: AssetRules) -> str:
    """A mid or mark: half a tick may need one decimal more than a price."""
    return num(round(px, rules.px_decimals + 1))


def sz_str(sz: float, rules: AssetRules) -> str:
    return num(round(sz, rules.sz_decimals))


def usd_str(x: float) -> str:
    return num(round(x, 6))


def ws_text(channel: str, data: Json) -> str:
    """One websocket frame, compact as the real server writes it."""
    return json.dumps({"channel": channel, "data": data}, separators=(",", ":"))


def candle_json(bar: Candle) -> Json:
    return {
        "t": bar.open_ts_ms,
        "T": bar.close_ts_ms,
        "s": bar.coin,
        "i": bar.interval,
        "o": num(bar.open_px),
        "c": num(bar.close_px),
        "h": num(bar.high_px),
        "l": num(bar.low_px),
        "v": num(bar.volume_sz),
        "n": bar.trades_n or 0,
    }


def book_json(book: L2Book, rules: AssetRules) -> Json:
    pd, sd = rules.px_decimals, rules.sz_decimals
    return {
        "coin": book.coin,
        "time": book.ts_ms,
        "levels": [
            [
                {"px": num(round(p, pd)), "sz": num(round(s, sd)), "n": n}
                for p, s, n in zip(prices, sizes, counts, strict=True)
            ]
            for prices, sizes, counts in (
                (book.bid_px, book.bid_sz, book.bid_n),
                (book.ask_px, book.ask_sz, book.ask_n),
            )
        ],
    }


def trade_json(trade: PublicTrade, rules: AssetRules) -> Json:
    return {
        "coin": trade.coin,
        "side": trade.side,
        "px": px_str(trade.px, rules),
        "sz": sz_str(trade.sz, rules),
        "time": trade.ts_ms,
        "hash": trade.hash,
        "tid": trade.tid,
        "users": list(trade.users),
    }


def fill_json(fill: UserFill, rules: AssetRules) -> Json:
    out: dict[str, Json] = {
        "coin": fill.coin,
        "px": px_str(fill.px, rules),
        "sz": sz_str(fill.sz, rules),
        "side": fill.side,
        "time": fill.time_ms,
        "startPosition": sz_str(fill.start_position, rules),
        "dir": fill.dir,
        "closedPnl": usd_str(fill.closed_pnl_usd),
        "hash": fill.hash,
        "oid": fill.oid,
        "crossed": fill.crossed,
        "fee": usd_str(fill.fee_usd),
        "tid": fill.tid,
        "feeToken": "USDC",
    }
    if fill.cloid:
        out["cloid"] = fill.cloid
    return out


def order_json(order: SimOrder, rules: AssetRules) -> Json:
    """The short order of ``openOrders`` and ``orderUpdates``."""
    out: dict[str, Json] = {
        "coin": order.coin,
        "side": order.side,
        "limitPx": px_str(order.limit_px, rules),
        "sz": sz_str(order.sz, rules),
        "oid": order.oid,
        "timestamp": order.timestamp_ms,
        "origSz": sz_str(order.orig_sz, rules),
    }
    if order.cloid:
        out["cloid"] = order.cloid
    return out


def frontend_order_json(order: SimOrder, rules: AssetRules, children: list[SimOrder]) -> Json:
    """The full order of ``frontendOpenOrders``, ``orderStatus`` and ``historicalOrders``."""
    trigger = order.trigger
    condition = "N/A"
    if trigger is not None:
        condition = f"Price {'above' if order.fires_above else 'below'} {px_str(trigger.px, rules)}"
    return {
        "coin": order.coin,
        "side": order.side,
        "limitPx": px_str(order.limit_px, rules),
        "sz": sz_str(order.sz, rules),
        "oid": order.oid,
        "timestamp": order.timestamp_ms,
        "triggerCondition": condition,
        "isTrigger": trigger is not None,
        "triggerPx": px_str(trigger.px, rules) if trigger else "0.0",
        "children": [frontend_order_json(c, rules, []) for c in children],
        "isPositionTpsl": order.is_position_tpsl,
        "reduceOnly": order.reduce_only,
        "orderType": order.order_type,
        "origSz": sz_str(order.orig_sz, rules),
        "tif": order.tif,
        "cloid": order.cloid,
    }


def order_update_json(order: SimOrder, rules: AssetRules) -> Json:
    return {
        "order": order_json(order, rules),
        "status": order.status,
        "statusTimestamp": order.status_ts_ms,
    }


def outcome_json(outcome: Outcome, rules: AssetRules | None) -> Json:
    """One entry of an order answer's ``statuses``."""
    if isinstance(outcome, Rejected):
        return {"error": outcome.error}
    if isinstance(outcome, Waiting):
        return outcome.status
    assert rules is not None
    if isinstance(outcome, Resting):
        resting: dict[str, Json] = {"oid": outcome.oid}
        if outcome.cloid:
            resting["cloid"] = outcome.cloid
        return {"resting": resting}
    assert isinstance(outcome, Filled)
    filled: dict[str, Json] = {
        "totalSz": sz_str(outcome.total_sz, rules),
        "avgPx": num(float(f"{outcome.avg_px:.10g}")),
        "oid": outcome.oid,
    }
    if outcome.cloid:
        filled["cloid"] = outcome.cloid
    return {"filled": filled}


def funding_json(rate: FundingRate) -> Json:
    out: dict[str, Json] = {"coin": rate.coin, "fundingRate": num(rate.funding_rate)}
    if rate.premium is not None:
        out["premium"] = num(rate.premium)
    out["time"] = rate.ts_ms
    return out


def ctx_json(ctx: AssetCtx, rules: AssetRules) -> Json:
    impact = None
    if ctx.impact_bid_px is not None and ctx.impact_ask_px is not None:
        impact = [mid_str(ctx.impact_bid_px, rules), mid_str(ctx.impact_ask_px, rules)]
    return {
        "funding": num(round(ctx.funding_rate, 10)),
        "openInterest": sz_str(ctx.open_interest_sz, rules),
        "prevDayPx": px_str(ctx.prev_day_px or ctx.mark_px, rules),
        "dayNtlVlm": num(round(ctx.day_ntl_vlm_usd or 0.0, 6)),
        "premium": None if ctx.premium is None else num(round(ctx.premium, 8)),
        "oraclePx": mid_str(ctx.oracle_px, rules),
        "markPx": mid_str(ctx.mark_px, rules),
        "midPx": None if ctx.mid_px is None else mid_str(ctx.mid_px, rules),
        "impactPxs": impact,
    }


def clearinghouse_json(view: MarginView, rules: dict[str, AssetRules], time_ms: int) -> Json:
    summary = {
        "accountValue": usd_str(view.account_value_usd),
        "totalNtlPos": usd_str(view.total_ntl_pos_usd),
        "totalRawUsd": usd_str(view.total_raw_usd),
        "totalMarginUsed": usd_str(view.total_margin_used_usd),
    }
    positions = []
    for p in view.positions:
        r = rules[p.coin]
        positions.append(
            {
                "type": "oneWay",
                "position": {
                    "coin": p.coin,
                    "szi": sz_str(p.szi, r),
                    "leverage": {"type": "cross", "value": p.leverage},
                    "entryPx": num(float(f"{p.entry_px:.10g}")),
                    "positionValue": usd_str(p.position_value_usd),
                    "unrealizedPnl": usd_str(p.unrealized_pnl_usd),
                    "returnOnEquity": num(round(p.return_on_equity, 8)),
                    "liquidationPx": None
                    if p.liquidation_px is None
                    else num(float(f"{p.liquidation_px:.12g}")),
                    "marginUsed": usd_str(p.margin_used_usd),
                    "maxLeverage": p.max_leverage,
                    "cumFunding": {
                        "allTime": usd_str(p.funding_all_time_usd),
                        "sinceOpen": usd_str(p.funding_since_open_usd),
                        "sinceChange": usd_str(p.funding_since_change_usd),
                    },
                },
            }
        )
    return {
        "marginSummary": summary,
        "crossMarginSummary": dict(summary),
        "crossMaintenanceMarginUsed": usd_str(view.maintenance_margin_usd),
        "withdrawable": usd_str(view.withdrawable_usd),
        "assetPositions": positions,
        "time": time_ms,
    }


def user_funding_json(payment: FundingPayment, rules: AssetRules) -> Json:
    """One ``userFunding`` entry."""
    return {
        "time": payment.time_ms,
        "hash": payment.hash,
        "delta": {
            "type": "funding",
            "coin": payment.coin,
            "usdc": usd_str(payment.usdc),
            "szi": sz_str(payment.szi, rules),
            "fundingRate": num(payment.funding_rate),
            "nSamples": None,
        },
    }


def funding_event_json(payment: FundingPayment, rules: AssetRules) -> Json:
    """The ``funding`` of a ``user`` (userEvents) websocket message."""
    return {
        "time": payment.time_ms,
        "coin": payment.coin,
        "usdc": usd_str(payment.usdc),
        "szi": sz_str(payment.szi, rules),
        "fundingRate": num(payment.funding_rate),
    }
