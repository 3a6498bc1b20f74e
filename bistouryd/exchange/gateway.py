"""The live gateway: the only code that sends real orders to HyperLiquid, through the official
SDK (``hyperliquid.exchange.Exchange`` for signing and posting, its ``Info`` for reads).

Money safety: every order carries its ``cloid``, and each action is signed once, with one
nonce. When an answer is lost (timeout, connection reset, HTTP 5xx or 429, an unreadable body)
the gateway first asks the exchange for the order by cloid; only if the exchange has never
seen it does it resend, and it resends the very same signed request. HyperLiquid refuses a
nonce it has already seen, so even a first copy that was still on its way cannot become a
second order.

Facts used (``../shared/HYPERLIQUID.md`` §a-c): /exchange answers, per-order ``{"error": ...}``
and whole-request ``{"status": "err", ...}``, ``orderStatus`` by cloid (``unknownOid`` when
never seen), and ``userRole`` (an API wallet is an ``agent`` whose ``data.user`` is the account
it trades for).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import requests
from eth_account import Account
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.constants import MAINNET_API_URL
from hyperliquid.utils.error import ClientError, ServerError
from hyperliquid.utils.signing import order_request_to_order_wire, sign_l1_action
from hyperliquid.utils.types import Cloid

from bistouryd.exchange.orders import OrderRequest, OrderStatus, OrderUpdate, new_cloid
from bistouryd.exchange.rules import round_px, round_sz

GatewayErrorKind = Literal["auth", "rejected", "unavailable"]
OrderKind = Literal["limit", "stop_loss", "take_profit"]

TRIGGER_SLIPPAGE = 0.10  # a fired stop/take-profit accepts up to 10% beyond its trigger
FILLS_PAGE = 2000  # the most fills one userFillsByTime answer holds
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_LIVE = ("resting", "waiting_trigger")
_T = TypeVar("_T")


class GatewayError(Exception):
    """The exchange cannot be used for this call; ``hint`` says what to do about it."""

    def __init__(self, kind: GatewayErrorKind, message: str, hint: str) -> None:
        super().__init__(f"{message} → {hint}")
        self.kind = kind
        self.message = message
        self.hint = hint


class _Unreadable(Exception):
    """An answer the gateway cannot interpret: as uncertain as a lost one."""


_LOST = (requests.RequestException, ServerError, _Unreadable)


@dataclass(frozen=True)
class ExchangeOrder:
    """An open order as the exchange reports it (``sz`` is what is left to fill)."""

    coin: str
    oid: int
    cloid: str | None
    is_buy: bool
    sz: float
    limit_px: float
    kind: OrderKind
    trigger_px: float | None
    reduce_only: bool


@dataclass(frozen=True)
class ExchangePosition:
    coin: str
    szi: float
    entry_px: float
    liquidation_px: float | None


@dataclass(frozen=True)
class ExchangeAccount:
    equity_usd: float
    margin_used_usd: float
    positions: dict[str, ExchangePosition]


@dataclass(frozen=True)
class ExchangeFill:
    """One of the account's fills; ``crossed`` means it took liquidity (taker)."""

    coin: str
    px: float
    sz: float
    is_buy: bool
    ts_ms: int
    fee_usd: float
    closed_pnl_usd: float
    oid: int
    tid: int
    cloid: str | None
    crossed: bool


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lost(exc: Exception) -> bool:
    """Whether a failed call may or may not have reached the exchange (or may succeed later)."""
    return isinstance(exc, _LOST) or (isinstance(exc, ClientError) and exc.status_code == 429)


def _cause(exc: Exception) -> str:
    if isinstance(exc, (ClientError, ServerError)):
        return f"HTTP {exc.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _signer_refused(message: str) -> bool:
    """Whether a whole-request error is about who signed (unknown wallet, bad signature)."""
    lowered = message.lower()
    return "does not exist" in lowered or "signer" in lowered


class LiveGateway:
    """Orders, cancels and account reads for one HyperLiquid account.

    ``secret_key`` is an API wallet's key (recommended: it can trade but not withdraw) or the
    account's own key; either way orders trade for ``account_address``. Construction reads the
    exchange's ``meta`` (asset ids, size decimals) and raises ``GatewayError("unavailable")``
    when it cannot.
    """

    def __init__(
        self, base_url: str, account_address: str, secret_key: str, *, timeout_s: float = 10.0
    ) -> None:
        if not _ADDRESS.match(account_address):
            raise GatewayError(
                "auth",
                f"account address {account_address!r} is not 0x followed by 40 hex digits",
                "give the address of the HyperLiquid account to trade for (not the API wallet's)",
            )
        try:
            wallet = Account.from_key(secret_key)
        except Exception:  # eth_account raises several kinds; never echo the key
            raise GatewayError(
                "auth",
                "the secret key is not a private key (0x followed by 64 hex digits)",
                "paste the API wallet's private key as HyperLiquid showed it when you created it",
            ) from None
        self.base_url = base_url
        self.account_address = account_address.lower()
        self.signer_address = str(wallet.address).lower()
        try:
            self._exchange: Any = Exchange(
                wallet, base_url, account_address=self.account_address, timeout=timeout_s
            )
        except (requests.RequestException, ClientError, ServerError, KeyError, ValueError) as exc:
            raise GatewayError(
                "unavailable",
                f"cannot read the exchange's metadata at {base_url} ({_cause(exc)})",
                "check the URL and the network, then try again; nothing was sent",
            ) from None
        self._info: Any = self._exchange.info
        self._is_mainnet = base_url == MAINNET_API_URL
        self._nonce_lock = threading.Lock()
        self._last_nonce = 0

    # -- credentials and reads --------------------------------------------------------------

    def check_credentials(self) -> ExchangeAccount:
        """Prove the key may trade for the account without trading: cancel a cloid that was
        never used (a good signer hears "never placed"), then check that an API wallet is
        approved for this very account, not another one."""
        assets: dict[str, int] = self._info.coin_to_asset
        self.cancel(new_cloid(), min(assets, key=assets.__getitem__))  # perp 0 (BTC on mainnet)
        if self.signer_address != self.account_address:
            role = self._read("the API wallet's role", self._info.user_role, self.signer_address)
            master = role.get("data", {}).get("user") if role.get("role") == "agent" else None
            if str(master).lower() != self.account_address:
                raise GatewayError(
                    "auth",
                    f"the API wallet {self.signer_address} trades for "
                    f"{master or 'no account'} ({role.get('role')}), not {self.account_address}",
                    "approve the API wallet for this account in the HyperLiquid app, or set "
                    "the account address the wallet was approved for",
                )
        return self.account()

    def account(self) -> ExchangeAccount:
        state = self._read("the account", self._info.user_state, self.account_address)
        positions = {}
        for entry in state["assetPositions"]:
            p = entry["position"]
            liq = p.get("liquidationPx")
            positions[p["coin"]] = ExchangePosition(
                coin=p["coin"],
                szi=float(p["szi"]),
                entry_px=float(p["entryPx"]),
                liquidation_px=None if liq is None else float(liq),
            )
        summary = state["marginSummary"]
        return ExchangeAccount(
            equity_usd=float(summary["accountValue"]),
            margin_used_usd=float(summary["totalMarginUsed"]),
            positions=positions,
        )

    def open_orders(self) -> list[ExchangeOrder]:
        """Resting limits and waiting triggers (TP/SL children of a parent included)."""
        raw = self._read("the open orders", self._info.frontend_open_orders, self.account_address)
        found: list[ExchangeOrder] = []
        pending = list(raw)
        while pending:
            o = pending.pop(0)
            pending.extend(o.get("children") or [])
            kind: OrderKind = "limit"
            if o.get("isTrigger"):
                take_profit = str(o["orderType"]).startswith("Take Profit")
                kind = "take_profit" if take_profit else "stop_loss"
            found.append(
                ExchangeOrder(
                    coin=o["coin"],
                    oid=int(o["oid"]),
                    cloid=o.get("cloid"),
                    is_buy=o["side"] == "B",
                    sz=float(o["sz"]),
                    limit_px=float(o["limitPx"]),
                    kind=kind,
                    trigger_px=float(o["triggerPx"]) if kind != "limit" else None,
                    reduce_only=bool(o.get("reduceOnly")),
                )
            )
        return found

    def fills_since(self, since_ms: int) -> list[ExchangeFill]:
        """The account's fills at or after ``since_ms`` (exchange time), oldest first."""
        found: dict[int, ExchangeFill] = {}
        start_ms = since_ms
        while True:
            page = self._read(
                "the fills", self._info.user_fills_by_time, self.account_address, start_ms
            )
            for f in page:
                fill = _fill(f)
                found.setdefault(fill.tid, fill)
            last_ms = max((int(f["time"]) for f in page), default=start_ms)
            if len(page) < FILLS_PAGE or last_ms == start_ms:
                break
            start_ms = last_ms  # the next page overlaps by one millisecond; tids dedupe it
        return sorted(found.values(), key=lambda f: (f.ts_ms, f.tid))

    def stream_fills(self, on_fills: Callable[[list[ExchangeFill]], None]) -> Callable[[], None]:
        """Subscribe to the account's fills on the websocket (``userFills``); ``on_fills``
        runs on the SDK's thread with each batch, the first being the recent history.
        Returns the function that closes the connection. Polling ``fills_since`` stays
        the safety net: a dropped websocket loses nothing, it only delays."""
        try:
            info: Any = Info(self.base_url, skip_ws=False)
        except (requests.RequestException, ClientError, ServerError, KeyError, ValueError) as exc:
            raise GatewayError(
                "unavailable",
                f"cannot open the exchange's websocket at {self.base_url} ({_cause(exc)})",
                "it retries; fills are still read every second meanwhile",
            ) from None

        def handle(message: Any) -> None:
            data = message.get("data") if isinstance(message, dict) else None
            raw = data.get("fills") if isinstance(data, dict) else None
            if isinstance(raw, list) and raw:
                on_fills([_fill(f) for f in raw])

        info.subscribe({"type": "userFills", "user": self.account_address}, handle)
        return info.disconnect_websocket  # type: ignore[no-any-return]

    def order_status(self, cloid: str) -> OrderUpdate | None:
        """The order's current state by cloid; ``None`` if the exchange never accepted it."""
        query = self._info.query_order_by_cloid
        answer = self._read("the order's status", query, self.account_address, Cloid(cloid))
        if answer.get("status") != "order":
            return None
        entry = answer["order"]
        order, status = entry["order"], str(entry["status"])
        sz_decimals = self._info.asset_to_sz_decimals[self._asset(order["coin"])]
        filled_sz = round_sz(float(order["origSz"]) - float(order["sz"]), sz_decimals)
        update_status: OrderStatus
        error = None
        if status == "open" or status == "triggered":
            live = order.get("isTrigger") and status == "open"
            update_status = "waiting_trigger" if live else "resting"
        elif status == "filled":
            update_status = "filled"
        elif status.lower().endswith("canceled"):
            update_status = "partially_filled" if filled_sz > 0 else "canceled"
        else:  # "rejected", "iocCancelRejected", and anything this code does not know
            update_status, error = "rejected", f"the exchange reports the order as {status!r}"
        avg_px = self._avg_px(int(order["oid"]), int(order["timestamp"])) if filled_sz else None
        return OrderUpdate(
            cloid=cloid,
            ts_ms=int(entry.get("statusTimestamp") or _now_ms()),
            coin=order["coin"],
            status=update_status,
            filled_sz=filled_sz,
            avg_px=avg_px,
            oid=int(order["oid"]),
            error=error,
        )

    # -- actions ----------------------------------------------------------------------------

    def submit(self, order: OrderRequest) -> OrderUpdate:
        """Send one order; never two for its cloid, however the network behaves (see module)."""
        try:
            action = self._order_action(order)
        except ValueError as exc:
            return _update(order.cloid, order.coin, "rejected", error=str(exc))

        def parse(answer: Any) -> OrderUpdate:
            return self._order_answer(order, answer)

        return self._send(
            f"order {order.cloid}", action, lambda: self.order_status(order.cloid), parse
        )

    def cancel(self, cloid: str, coin: str) -> OrderUpdate:
        """Cancel by cloid: ``canceled``, or ``rejected`` with the exchange's reason (an order
        that already filled or never existed)."""
        try:
            asset = self._asset(coin)
            raw = Cloid(cloid).to_raw()  # the SDK's validation: 0x and 32 hex digits
            action = {"type": "cancelByCloid", "cancels": [{"asset": asset, "cloid": raw}]}
        except (ValueError, TypeError) as exc:
            return _update(cloid, coin, "rejected", error=str(exc))

        def settled() -> OrderUpdate | None:
            """After a lost answer: done if the order is no longer open (whoever closed it)."""
            found = self.order_status(cloid)
            if found is None:
                return _update(cloid, coin, "rejected", error="no order with this cloid")
            return None if found.status in _LIVE else found

        def parse(answer: Any) -> OrderUpdate:
            [status] = self._statuses(answer, cloid, coin)
            if status == "success":
                return _update(cloid, coin, "canceled")
            if isinstance(status, dict) and "error" in status:
                return _update(cloid, coin, "rejected", error=str(status["error"]))
            raise _Unreadable(f"unexpected cancel status {status!r}")

        return self._send(f"cancel of {cloid}", action, settled, parse)

    # -- internals --------------------------------------------------------------------------

    def _asset(self, coin: str) -> int:
        try:
            return int(self._info.name_to_asset(coin))
        except KeyError:
            raise ValueError(f"unknown coin {coin!r}: not in the exchange's meta") from None

    def _order_action(self, order: OrderRequest) -> dict[str, Any]:
        """The SDK's order action for one order (raises ``ValueError`` if it cannot be sent)."""
        asset = self._asset(order.coin)
        order_type: dict[str, Any]
        reduce_only = order.reduce_only
        if order.kind in ("stop_loss", "take_profit"):
            assert order.trigger_px is not None  # OrderRequest's validator guarantees it
            slip = 1 + TRIGGER_SLIPPAGE if order.is_buy else 1 - TRIGGER_SLIPPAGE
            limit_px = round_px(order.trigger_px * slip, self._info.asset_to_sz_decimals[asset])
            tpsl = "sl" if order.kind == "stop_loss" else "tp"
            order_type = {
                "trigger": {"isMarket": True, "triggerPx": order.trigger_px, "tpsl": tpsl}
            }
            reduce_only = True
        elif order.limit_px is None:
            raise ValueError("a market order needs limit_px: the worst price it may fill at")
        else:
            limit_px = order.limit_px
            order_type = {"limit": {"tif": "Ioc" if order.kind == "market" else "Gtc"}}
        wire = order_request_to_order_wire(
            {
                "coin": order.coin,
                "is_buy": order.is_buy,
                "sz": order.sz,
                "limit_px": limit_px,
                "order_type": order_type,
                "reduce_only": reduce_only,
                "cloid": Cloid(order.cloid),
            },
            asset,
        )
        return {"type": "order", "orders": [wire], "grouping": "na"}

    def _order_answer(self, order: OrderRequest, answer: Any) -> OrderUpdate:
        [status] = self._statuses(answer, order.cloid, order.coin)
        waiting = order.kind in ("stop_loss", "take_profit")
        if status in ("waitingForTrigger", "waitingForFill"):
            return _update(order.cloid, order.coin, "waiting_trigger")
        if isinstance(status, dict) and "resting" in status:
            kind: OrderStatus = "waiting_trigger" if waiting else "resting"
            return _update(order.cloid, order.coin, kind, oid=int(status["resting"]["oid"]))
        if isinstance(status, dict) and "filled" in status:
            filled = status["filled"]
            total_sz = float(filled["totalSz"])
            complete = total_sz >= order.sz * (1 - 1e-9)
            return _update(
                order.cloid,
                order.coin,
                "filled" if complete else "partially_filled",
                filled_sz=total_sz,
                avg_px=float(filled["avgPx"]),
                oid=int(filled["oid"]),
            )
        if isinstance(status, dict) and "error" in status:
            return _update(order.cloid, order.coin, "rejected", error=str(status["error"]))
        raise _Unreadable(f"unexpected order status {status!r}")

    def _statuses(self, answer: Any, cloid: str, coin: str) -> list[Any]:
        """The per-order statuses of an /exchange answer; a whole-request refusal of the signer
        raises ``GatewayError("auth")``, any other becomes the single status ``{"error"}``."""
        if not isinstance(answer, dict):
            raise _Unreadable(f"answer is not an object: {answer!r:.200}")
        if answer.get("status") == "err":
            message = str(answer.get("response"))
            if _signer_refused(message):
                raise GatewayError(
                    "auth",
                    f"HyperLiquid refuses the signing key: {message}",
                    f"approve the API wallet {self.signer_address} for {self.account_address} "
                    "in the HyperLiquid app (More → API), on the same network as the URL",
                )
            return [{"error": message}]
        try:
            statuses = answer["response"]["data"]["statuses"]
        except (KeyError, TypeError):
            raise _Unreadable(f"answer has no statuses: {answer!r:.200}") from None
        if not isinstance(statuses, list) or len(statuses) != 1:
            raise _Unreadable(f"expected one status, got {statuses!r:.200}")
        return statuses

    def _send(
        self,
        what: str,
        action: dict[str, Any],
        settled: Callable[[], OrderUpdate | None],
        parse: Callable[[Any], OrderUpdate],
    ) -> OrderUpdate:
        """Post ``action`` signed once; after a lost answer, ``settled`` (a lookup on the
        exchange) says whether it took effect, and only if not is the same request resent."""
        nonce = self._next_nonce()
        signature = sign_l1_action(
            self._exchange.wallet,
            action,
            self._exchange.vault_address,
            nonce,
            self._exchange.expires_after,
            self._is_mainnet,
        )
        failures: list[str] = []
        for attempt in (1, 2):
            try:
                answer = self._exchange._post_action(action, signature, nonce)
                refused = isinstance(answer, dict) and answer.get("status") == "err"
                if attempt == 2 and refused and "nonce" in str(answer["response"]).lower():
                    # The first copy arrived after all: the exchange knows what became of it.
                    found = self._settled(what, settled, failures)
                    if found is not None:
                        return found
                return parse(answer)
            except ClientError as exc:
                if not _lost(exc):
                    refusal = f"HTTP {exc.status_code}: {exc.error_message}"
                    return parse({"status": "err", "response": refusal})
                failures.append(_cause(exc))
            except _LOST as exc:
                failures.append(_cause(exc))
            found = self._settled(what, settled, failures)
            if found is not None:
                return found
        raise GatewayError(
            "unavailable",
            f"{what} could not be sent: {'; then '.join(failures)}",
            "the exchange never acknowledged it and may still receive it (the same signed "
            "request cannot take effect twice); read order_status(cloid) before acting again",
        )

    def _settled(
        self, what: str, settled: Callable[[], OrderUpdate | None], failures: list[str]
    ) -> OrderUpdate | None:
        try:
            return settled()
        except GatewayError as exc:
            raise GatewayError(
                "unavailable",
                f"{what}: the answer was lost ({failures[-1] if failures else 'no answer'}) "
                f"and the exchange cannot say whether it took effect ({exc.message})",
                "do not resend under a new cloid; read order_status(cloid) once the exchange "
                "answers again",
            ) from None

    def _next_nonce(self) -> int:
        """Milliseconds, strictly increasing: HyperLiquid refuses a nonce it has seen."""
        with self._nonce_lock:
            self._last_nonce = max(_now_ms(), self._last_nonce + 1)
            return self._last_nonce

    def _read(self, what: str, call: Callable[..., _T], *args: Any) -> _T:
        """An /info read, tried twice (reads are harmless to repeat)."""
        failure = ""
        for _ in range(2):
            try:
                return call(*args)
            except (ClientError, *_LOST) as exc:
                failure = _cause(exc)
                if isinstance(exc, ClientError) and not _lost(exc):
                    break
        raise GatewayError(
            "unavailable",
            f"cannot read {what} from {self.base_url} ({failure})",
            "check the network and HyperLiquid's status; nothing was sent",
        )

    def _avg_px(self, oid: int, since_ms: int) -> float | None:
        """Volume-weighted price of an order's fills (orderStatus does not report it)."""
        fills = [f for f in self.fills_since(since_ms) if f.oid == oid]
        sz = sum(f.sz for f in fills)
        return sum(f.px * f.sz for f in fills) / sz if sz else None


def _update(
    cloid: str,
    coin: str,
    status: OrderStatus,
    *,
    filled_sz: float = 0.0,
    avg_px: float | None = None,
    oid: int | None = None,
    error: str | None = None,
) -> OrderUpdate:
    return OrderUpdate(
        cloid=cloid,
        ts_ms=_now_ms(),
        coin=coin,
        status=status,
        filled_sz=filled_sz,
        avg_px=avg_px,
        oid=oid,
        error=error,
    )


def _fill(raw: dict[str, Any]) -> ExchangeFill:
    return ExchangeFill(
        coin=raw["coin"],
        px=float(raw["px"]),
        sz=float(raw["sz"]),
        is_buy=raw["side"] == "B",
        ts_ms=int(raw["time"]),
        fee_usd=float(raw["fee"]),
        closed_pnl_usd=float(raw["closedPnl"]),
        oid=int(raw["oid"]),
        tid=int(raw["tid"]),
        cloid=raw.get("cloid"),
        crossed=bool(raw["crossed"]),
    )
