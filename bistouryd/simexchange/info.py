"""``POST /info``: the read-only queries, answered from the replay (never beyond its clock)
and from the simulated accounts, in HyperLiquid's shapes.

``dex`` is accepted and must be empty (the default perp dex). Unknown request types, and bodies
missing a required field, get the real server's HTTP 422 plain-text answer. Queries about an
unknown coin answer ``null`` (l2Book) or ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bistouryd.exchange.rules import AssetRules
from bistouryd.market import INTERVAL_MS
from bistouryd.simexchange import wire
from bistouryd.simexchange.accounts import Account
from bistouryd.simexchange.engine import Engine
from bistouryd.simexchange.venue import Fees
from bistouryd.simexchange.wire import Answer, Json

USER_FILLS_ANSWER = 2000
FUNDING_ANSWER = 500
EMPTY_SPOT_META: Json = {"universe": [], "tokens": []}


class BadRequest(ValueError):
    """A query missing a field or with one of the wrong type (HTTP 422)."""


def _field(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadRequest(f"missing field `{key}`" if value is None else f"invalid type: `{key}`")
    return value


class InfoApi:
    def __init__(self, engine: Engine, fees: Fees) -> None:
        self.engine = engine
        self.venue = engine.venue
        self.fees = fees
        self._handlers: dict[str, Callable[[dict[str, Any]], Json]] = {
            "meta": lambda b: self._meta(),
            "metaAndAssetCtxs": lambda b: [self._meta(), [self._ctx(c) for c in self.engine.coins]],
            "spotMeta": lambda b: EMPTY_SPOT_META,
            "spotMetaAndAssetCtxs": lambda b: [EMPTY_SPOT_META, []],
            "perpDexs": lambda b: [None],
            "allMids": lambda b: self.engine.mids(),
            "l2Book": self._l2_book,
            "candleSnapshot": self._candles,
            "fundingHistory": self._funding,
            "recentTrades": self._recent_trades,
            "clearinghouseState": self._clearinghouse,
            "spotClearinghouseState": lambda b: {"balances": []},
            "openOrders": self._open_orders,
            "frontendOpenOrders": self._frontend_open_orders,
            "userFills": self._user_fills,
            "userFillsByTime": self._user_fills_by_time,
            "orderStatus": self._order_status,
            "historicalOrders": self._historical_orders,
            "userFunding": self._user_funding,
            "userFees": self._user_fees,
            "userRateLimit": self._user_rate_limit,
            "userRole": self._user_role,
        }

    def handle(self, body: Any) -> Answer:
        if not isinstance(body, dict):
            return _unreadable("expected an object")
        kind = body.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return _unreadable(f"unknown variant `{kind}`" if kind else "missing field `type`")
        dex = body.get("dex")
        if dex not in (None, ""):
            return _unreadable(f"unknown perp dex `{dex}` (only the default dex is simulated)")
        try:
            return Answer(200, handler(body))
        except BadRequest as exc:
            return _unreadable(str(exc))

    # -- market -----------------------------------------------------------------------------

    def _rules(self, coin: Any) -> AssetRules | None:
        state = self.engine.coins.get(coin) if isinstance(coin, str) else None
        return state.rules if state is not None else None

    def _meta(self) -> Json:
        universe = [
            {"szDecimals": r.sz_decimals, "name": r.name, "maxLeverage": r.max_leverage}
            for r in self.engine.rules
        ]
        return {"universe": universe}

    def _ctx(self, coin: str) -> Json:
        return wire.ctx_json(self.engine.ctx(coin), self.engine.coins[coin].rules)

    def _l2_book(self, body: dict[str, Any]) -> Json:
        coin = _field(body, "coin", str)
        rules = self._rules(coin)
        if rules is None:
            return None
        if any(body.get(k) is not None for k in ("nSigFigs", "mantissa")):
            raise BadRequest("nSigFigs/mantissa aggregation is not simulated")
        return wire.book_json(self.engine.book(coin), rules)

    def _candles(self, body: dict[str, Any]) -> Json:
        req = _field(body, "req", dict)
        coin = _field(req, "coin", str)
        interval = _field(req, "interval", str)
        start = _field(req, "startTime", int)
        end = req.get("endTime")
        if end is not None and (not isinstance(end, int) or isinstance(end, bool)):
            raise BadRequest("invalid type: `endTime`")
        if interval not in INTERVAL_MS and interval != "1M":
            raise BadRequest(f"unknown variant `{interval}`")
        if self._rules(coin) is None or interval not in INTERVAL_MS:
            return []
        end_ms = end if end is not None else self.engine.time_ms
        bars = self.engine.candles(coin, INTERVAL_MS[interval], start, end_ms)
        return [wire.candle_json(b) for b in bars]

    def _funding(self, body: dict[str, Any]) -> Json:
        coin = _field(body, "coin", str)
        start = _field(body, "startTime", int)
        end = body.get("endTime")
        if self._rules(coin) is None:
            return []
        feed = self.engine.coins[coin].feed
        end_ms = end if isinstance(end, int) else feed.time_ms
        return [wire.funding_json(r) for r in feed.funding_history(start, end_ms)]

    def _recent_trades(self, body: dict[str, Any]) -> Json:
        coin = _field(body, "coin", str)
        rules = self._rules(coin)
        if rules is None:
            return []
        return [wire.trade_json(t, rules) for t in self.engine.recent_trades(coin)]

    # -- accounts ---------------------------------------------------------------------------

    def _account(self, body: dict[str, Any]) -> Account | None:
        user = _field(body, "user", str)
        return self.venue.accounts.get(user.lower())

    def _clearinghouse(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        account = account if account is not None else Account(body["user"].lower(), 0.0)
        view = self.venue.margin(account)
        return wire.clearinghouse_json(view, self.venue.rules, self.engine.time_ms)

    def _open_orders(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        if account is None:
            return []
        rules = self.venue.rules
        return [wire.order_json(o, rules[o.coin]) for o in self.venue.open_orders(account)]

    def _frontend_open_orders(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        if account is None:
            return []
        rules = self.venue.rules
        return [
            wire.frontend_order_json(o, rules[o.coin], self.venue.children(o))
            for o in self.venue.open_orders(account)
        ]

    def _user_fills(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        if account is None:
            return []
        fills = list(account.fills)[-USER_FILLS_ANSWER:]
        return [wire.fill_json(f, self.venue.rules[f.coin]) for f in reversed(fills)]

    def _user_fills_by_time(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        start = _field(body, "startTime", int)
        end = body.get("endTime")
        if account is None:
            return []
        fills = [
            f
            for f in account.fills
            if f.time_ms >= start and (not isinstance(end, int) or f.time_ms <= end)
        ]
        return [wire.fill_json(f, self.venue.rules[f.coin]) for f in fills[:USER_FILLS_ANSWER]]

    def _order_status(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        ref = body.get("oid")
        if not isinstance(ref, (int, str)) or isinstance(ref, bool):
            raise BadRequest("missing field `oid`")
        order = self.venue.order(account, ref) if account is not None else None
        if order is None:
            return {"status": "unknownOid"}
        rules = self.venue.rules[order.coin]
        return {
            "status": "order",
            "order": {
                "order": wire.frontend_order_json(order, rules, self.venue.children(order)),
                "status": order.status,
                "statusTimestamp": order.status_ts_ms,
            },
        }

    def _historical_orders(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        if account is None:
            return []
        return [
            {
                "order": wire.frontend_order_json(o, self.venue.rules[o.coin], []),
                "status": o.status,
                "statusTimestamp": o.status_ts_ms,
            }
            for o in self.venue.historical_orders(account)
        ]

    def _user_funding(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        start = _field(body, "startTime", int)
        end = body.get("endTime")
        if account is None:
            return []
        return [
            wire.user_funding_json(p, self.venue.rules[p.coin])
            for p in account.fundings
            if p.time_ms >= start and (not isinstance(end, int) or p.time_ms <= end)
        ][:FUNDING_ANSWER]

    def _user_fees(self, body: dict[str, Any]) -> Json:
        self._account(body)
        taker, maker = wire.num(self.fees.taker), wire.num(self.fees.maker)
        return {
            "dailyUserVlm": [],
            "feeSchedule": {
                "cross": taker,
                "add": maker,
                "tiers": {"vip": [], "mm": []},
                "referralDiscount": "0.0",
            },
            "userCrossRate": taker,
            "userAddRate": maker,
            "activeReferralDiscount": "0.0",
        }

    def _user_rate_limit(self, body: dict[str, Any]) -> Json:
        account = self._account(body)
        volume = account.volume_usd if account is not None else 0.0
        used = account.requests_n if account is not None else 0
        return {
            "cumVlm": wire.usd_str(volume),
            "nRequestsUsed": used,
            "nRequestsCap": 10_000 + int(volume),
        }

    def _user_role(self, body: dict[str, Any]) -> Json:
        """An API wallet is an ``agent`` of its account; vaults and sub-accounts are not
        simulated."""
        user = _field(body, "user", str).lower()
        master = self.venue.agents.get(user)
        if master is not None:
            return {"role": "agent", "data": {"user": master}}
        return {"role": "user" if user in self.venue.accounts else "missing"}


def _unreadable(detail: str) -> Answer:
    return Answer(422, text=f"Failed to deserialize the JSON body into the target type: {detail}")
