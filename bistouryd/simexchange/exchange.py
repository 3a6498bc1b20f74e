"""``POST /exchange``: signed actions, answered in HyperLiquid's shapes.

A body that does not have the expected structure gets HTTP 422 with a plain-text
"Failed to deserialize the JSON body into the target type: ..." (what the real server's JSON
extractor answers; the SDK turns a non-JSON 4xx body into ``ClientError``). A well-formed
request that fails as a whole (signature, unknown signer, nonce, unsupported action) gets
HTTP 200 ``{"status": "err", "response": "..."}``; one order rejected among several gets its own
``{"error": "..."}`` in ``statuses``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bistouryd.simexchange import wire
from bistouryd.simexchange.accounts import Account
from bistouryd.simexchange.engine import Engine
from bistouryd.simexchange.matching import Grouping, Tif
from bistouryd.simexchange.signing import NonceBook, SignatureError, recover_signer
from bistouryd.simexchange.venue import OrderRequest, Outcome, TriggerRequest
from bistouryd.simexchange.wire import Answer

_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_CLOID = re.compile(r"^0x[0-9a-fA-F]{32}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class Malformed(ValueError):
    """The body does not deserialize into an action (HTTP 422)."""


@dataclass(frozen=True)
class Place:
    requests: list[OrderRequest]
    grouping: Grouping


@dataclass(frozen=True)
class Cancel:
    refs: list[tuple[int, int | str]]  # (asset, oid or cloid)


@dataclass(frozen=True)
class Modify:
    items: list[tuple[int | str, OrderRequest]]


@dataclass(frozen=True)
class UpdateLeverage:
    asset: int
    is_cross: bool
    leverage: int


@dataclass(frozen=True)
class Unsupported:
    kind: str


Action = Place | Cancel | Modify | UpdateLeverage | Unsupported


def _err(message: str) -> Answer:
    return Answer(200, {"status": "err", "response": message})


def _ok(kind: str, data: Any = None) -> Answer:
    response: dict[str, Any] = {"type": kind}
    if data is not None:
        response["data"] = data
    return Answer(200, {"status": "ok", "response": response})


def _malformed(exc: Malformed) -> Answer:
    return Answer(422, text=f"Failed to deserialize the JSON body into the target type: {exc}")


class ExchangeApi:
    def __init__(self, engine: Engine, wall_ms: Callable[[], int]) -> None:
        self.engine = engine
        self.venue = engine.venue
        self.nonces = NonceBook()
        self._wall_ms = wall_ms

    def handle(self, body: Any) -> Answer:
        try:
            raw, nonce, signature, vault, expires = _envelope(body)
            action = _action(raw)
        except Malformed as exc:
            return _malformed(exc)
        try:
            signer = recover_signer(raw, signature, vault, nonce, expires)
        except SignatureError:
            return _err("Unable to recover signer.")
        account = self.venue.account_for(signer, None)
        if account is None:
            return _err(f"User or API Wallet {signer} does not exist.")
        if vault is not None:
            account = self.venue.account_for(signer, vault)
            if account is None:
                return _err(f"Vault {vault.lower()} does not exist.")
        rejection = self.nonces.use(signer, nonce, self._wall_ms())
        if rejection:
            return _err(rejection)
        account.requests_n += 1
        answer = self._execute(account, action)
        self.engine.publish_user_events()
        return answer

    def _execute(self, account: Account, action: Action) -> Answer:
        venue = self.venue
        if isinstance(action, Place):
            outcomes = venue.place(account, action.requests, action.grouping)
            return _ok("order", {"statuses": self._statuses(outcomes, action.requests)})
        if isinstance(action, Cancel):
            results = venue.cancel(account, action.refs)
            statuses = [r if r == "success" else {"error": r.error} for r in results]
            return _ok("cancel", {"statuses": statuses})
        if isinstance(action, Modify):
            outcomes = venue.modify(account, action.items)
            statuses = self._statuses(outcomes, [r for _, r in action.items])
            return _ok("batchModify", {"statuses": statuses})
        if isinstance(action, UpdateLeverage):
            error = venue.update_leverage(account, action.asset, action.is_cross, action.leverage)
            return _err(error) if error else _ok("default")
        return _err(f"Action type {action.kind} is not supported by the simulated exchange.")

    def _statuses(self, outcomes: list[Outcome], requests: list[OrderRequest]) -> list[Any]:
        by_asset = self.venue.by_asset
        return [
            wire.outcome_json(o, by_asset[r.asset] if 0 <= r.asset < len(by_asset) else None)
            for o, r in zip(outcomes, requests, strict=True)
        ]


def _action(action: dict[str, Any]) -> Action:
    kind = action.get("type")
    if kind == "order":
        grouping = action.get("grouping", "na")
        if grouping not in ("na", "normalTpsl", "positionTpsl"):
            raise Malformed(f"grouping: unknown variant {grouping!r}")
        orders = _list(action, "orders")
        if not orders:
            raise Malformed("orders: empty list")
        return Place([_order(o) for o in orders], grouping)
    if kind == "cancel":
        return Cancel([(_int(c, "a"), _int(c, "o")) for c in map(_dict, _list(action, "cancels"))])
    if kind == "cancelByCloid":
        cancels = map(_dict, _list(action, "cancels"))
        return Cancel([(_int(c, "asset"), _cloid(c.get("cloid"))) for c in cancels])
    if kind == "batchModify":
        items: list[tuple[int | str, OrderRequest]] = []
        for m in map(_dict, _list(action, "modifies")):
            ref = m.get("oid")
            oid = ref if isinstance(ref, int) and not isinstance(ref, bool) else _cloid(ref)
            items.append((oid, _order(m.get("order"))))
        return Modify(items)
    if kind == "updateLeverage":
        is_cross = action.get("isCross")
        if not isinstance(is_cross, bool):
            raise Malformed("isCross: expected a boolean")
        return UpdateLeverage(_int(action, "asset"), is_cross, _int(action, "leverage"))
    if isinstance(kind, str):
        return Unsupported(kind)
    raise Malformed("action: missing field `type`")


def _envelope(body: Any) -> tuple[dict[str, Any], int, dict[str, Any], str | None, int | None]:
    body = _dict(body)
    action = _dict(body.get("action"))
    nonce = _int(body, "nonce")
    signature = _dict(body.get("signature"))
    for part in ("r", "s"):
        if not isinstance(signature.get(part), str) or not _HEX.match(signature[part]):
            raise Malformed(f"signature.{part}: expected a 0x hex string")
    _int(signature, "v")
    vault = body.get("vaultAddress")
    if vault is not None and not (isinstance(vault, str) and _ADDRESS.match(vault)):
        raise Malformed("vaultAddress: expected an address or null")
    expires = body.get("expiresAfter")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
        raise Malformed("expiresAfter: expected an integer or null")
    return action, nonce, signature, vault, expires


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"expected an object, got {type(value).__name__}")
    return value


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise Malformed(f"{key}: expected a list")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"{key}: expected an integer")
    return value


def _decimal_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{name}: expected a decimal string")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise Malformed(f"{name}: {value!r} is not a decimal") from None
    if not d.is_finite():
        raise Malformed(f"{name}: {value!r} is not a decimal")
    return value


def _cloid(value: Any) -> str:
    if not isinstance(value, str) or not _CLOID.match(value):
        raise Malformed("cloid: expected 0x followed by 32 hex digits")
    return value.lower()


def _order(wire_order: Any) -> OrderRequest:
    o = _dict(wire_order)
    is_buy, reduce_only = o.get("b"), o.get("r")
    if not isinstance(is_buy, bool) or not isinstance(reduce_only, bool):
        raise Malformed("order: b and r must be booleans")
    kind = _dict(o.get("t"))
    tif: Tif | None = None
    trigger = None
    if "limit" in kind:
        value = _dict(kind["limit"]).get("tif")
        if value not in ("Gtc", "Ioc", "Alo"):
            raise Malformed(f"tif: unknown variant {value!r}")
        tif = value
    elif "trigger" in kind:
        t = _dict(kind["trigger"])
        is_market, tpsl = t.get("isMarket"), t.get("tpsl")
        if not isinstance(is_market, bool) or tpsl not in ("tp", "sl"):
            raise Malformed("trigger: isMarket must be a boolean and tpsl tp or sl")
        trigger = TriggerRequest(_decimal_str(t.get("triggerPx"), "triggerPx"), is_market, tpsl)
    else:
        raise Malformed("t: expected limit or trigger")
    cloid = o.get("c")
    return OrderRequest(
        asset=_int(o, "a"),
        is_buy=is_buy,
        px=_decimal_str(o.get("p"), "p"),
        sz=_decimal_str(o.get("s"), "s"),
        reduce_only=reduce_only,
        tif=tif,
        trigger=trigger,
        cloid=None if cloid is None else _cloid(cloid),
    )
