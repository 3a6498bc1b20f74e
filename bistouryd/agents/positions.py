"""The positions agent: decisions in, risk-checked orders out, positions and P&L kept.

Every decision (``dec.<coin>``) goes through the risk engine (``exchange/risk.py``)
before anything is sent; a refusal is recorded with its rule. Approved orders go to the
paper broker (``exchange/paper.py``), which fills them against the latest book the
collector published. An opening fill gets its stop-loss and take-profit at once; the
broker checks them on every book update, here, so they never wait for the trader or a
model. Funding is settled hourly from the recorded rates. A daily-loss breach pauses
trading through the orchestrator until the next UTC day or ``bistouryctl resume trading``.

The account is published on ``pos`` after every change and every few seconds (the
trader shows it to the model), and everything is handed to the recorder: orders, their
updates, fills, funding, refusals and the account snapshots (the equity curve).

Paper modes only: live execution through the exchange is not built yet, and the
orchestrator does not let the daemon into ``live``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import BaseModel

from bistouryd.agents.base import Agent, run
from bistouryd.events import SysEvent
from bistouryd.exchange.gateway import ExchangeFill, GatewayError, LiveGateway
from bistouryd.exchange.live import LiveAccount
from bistouryd.exchange.orders import (
    Fill,
    FundingPayment,
    OrderRequest,
    OrderUpdate,
    Position,
    RiskRefusal,
    TradingMode,
)
from bistouryd.exchange.paper import PaperBroker
from bistouryd.exchange.risk import (
    AccountState,
    RiskLimits,
    RiskVerdict,
    check,
    daily_loss_breached,
    exposure_usd,
    flatten_orders,
    protective_orders,
    remaining_budget_usd,
)
from bistouryd.exchange.rules import AssetRules, rules_from_meta
from bistouryd.llm.record import DecisionRecord
from bistouryd.logs import TRADE
from bistouryd.market import AssetCtx, FundingRate, L2Book, Trades
from bistouryd.portfolio import PortfolioSnapshot, PositionView
from bistouryd.strategies.base import Signal
from bistouryd.supervision import (
    Flatten,
    FlattenReport,
    HistogramFamily,
    MetricSample,
    TradingPause,
    labelled,
    sample,
)

log = logging.getLogger(__name__)

PAPER_MODES = ("paper-historical", "paper-live")
BATCH = 200
SNAPSHOT_EVERY_S = 5.0
STORE_SNAPSHOT_EVERY_S = 10.0
RULES_RETRY_S = 5.0
LIVE_POLL_S = 1.0  # fills (stops and targets fill on the exchange) and the account
LIVE_RETRY_S = 5.0
ALERT_EVERY_S = 60.0
RECONCILE_FILLS_MS = 24 * 3_600_000  # fills looked for after a (re)start
FLATTEN_ATTEMPTS = 5
FLATTEN_RETRY_S = 1.0  # a new book arrives meanwhile: the next attempt takes its depth
# From 50 µs to 1 s: the risk check and a paper fill take well under a millisecond.
LATENCY_BOUNDS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)
REDUCING = ("close", "reduce", "stop_loss", "take_profit", "emergency")


class PositionsAgent(Agent):
    name = "positions"

    async def start(self) -> None:
        self.rules: dict[str, AssetRules] = {}
        self.broker = PaperBroker(self.config.trading.paper_equity_usd, self.rules)
        self.limits = RiskLimits.from_config(self.config.trading, self.config.risk)
        self.books: dict[str, L2Book] = {}
        self.oracle_px: dict[str, float] = {}
        self.funded_ts_ms: dict[str, int] = {}
        self.day: int | None = None
        self.day_start_equity_usd = self.broker.equity_usd()
        self.loss_paused = False
        self.now_ms = 0
        self.orders: dict[tuple[str, ...], float] = {}
        self.refusals: dict[tuple[str, ...], float] = {}
        self.latency = HistogramFamily(
            "bistoury_order_latency_seconds",
            "Decision received to order acknowledged (by the paper broker or the exchange)",
            LATENCY_BOUNDS,
            "mode",
        )
        self._stored_snapshot_s = 0.0
        self.flattening = False
        self.gateway: LiveGateway | None = None
        self.live = LiveAccount()
        self.live_ready = False  # reconciled with the exchange since the last (re)connect
        self.live_day_start_usd = 0.0
        self._live_task: asyncio.Task[None] | None = None
        self._live_alerted_s = -ALERT_EVERY_S
        self._stream_close: Callable[[], None] | None = None
        self.fills_seen: dict[tuple[str, ...], float] = {}  # live fills, by how they came
        self.start_equity_usd = self.broker.equity_usd()
        self.start_px: dict[str, float] = {}  # the first mark of each coin while trading
        self.last_decisions: dict[str, DecisionRecord] = {}
        self.last_signals: dict[tuple[str, str], Signal] = {}
        self.spawn(self._load_rules(), "rules")
        self.spawn(self._consume(), "consume")
        self.spawn(self._snapshots(), "snapshots")
        if self.is_live:  # a confirmed live session survives a restart: reconcile, resume
            self._live_task = self.spawn(self._run_live(), "live")
        log.info(
            "positions agent: paper account of %.2f USD, risk budget %.0f%% of equity",
            self.broker.equity_usd(),
            self.limits.max_total_exposure_pct,
        )

    async def on_config(self, changed: list[str]) -> None:
        if any(c.startswith(("trading", "risk")) for c in changed):
            self.limits = RiskLimits.from_config(self.config.trading, self.config.risk)
            log.info("positions agent: new risk limits apply from the next order")

    @property
    def active(self) -> bool:
        return self.mode in PAPER_MODES or self.is_live

    @property
    def is_live(self) -> bool:
        return self.mode == "live"

    async def on_mode(self) -> None:
        if self.is_live and self._live_task is None:
            self._live_task = self.spawn(self._run_live(), "live")
        elif self.active:
            self._publish_snapshot()  # the trader waits for the account before deciding

    # ---- inputs -----------------------------------------------------------------------

    async def _load_rules(self) -> None:
        """Tick, lot and leverage of every coin, from the exchange's ``meta``."""
        url = f"{self.config.exchange.api_url}/info"
        while not self.rules:
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    response = await client.post(url, json={"type": "meta"})
                    response.raise_for_status()
                    meta = response.json()
                loaded = {r.name: r for r in rules_from_meta(meta)}
                self.broker.rules.update(loaded)
                self.rules.update(loaded)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "positions agent cannot read the exchange's asset list from %s: %s\n"
                    "  → check exchange.network / exchange.base_url; retrying in %.0f s",
                    url,
                    exc,
                    RULES_RETRY_S,
                )
                await asyncio.sleep(RULES_RETRY_S)

    async def _consume(self) -> None:
        sub = self.subscribe(["dec.", "sig.", "md.l2.", "md.trades.", "md.funding.", "md.ctx."])
        while True:
            batch = await sub.recv_batch(BATCH)
            for _, envelope in batch:
                body = envelope.body
                if isinstance(body, L2Book):
                    self._on_book(body)
                elif isinstance(body, Trades):
                    self._apply(self.broker.on_trades(body), self._openers())
                elif isinstance(body, AssetCtx):
                    self.oracle_px[body.coin] = body.oracle_px
                elif isinstance(body, FundingRate):
                    self._on_funding(body)
                elif isinstance(body, DecisionRecord):
                    self.last_decisions[body.coin] = body
                    await self._on_decision(body)
                elif isinstance(body, Signal):
                    self.last_signals[(body.coin, body.strategy)] = body
            if len(batch) == BATCH:
                await asyncio.sleep(0)

    def _on_book(self, book: L2Book) -> None:
        self.books[book.coin] = book
        first = not self.now_ms
        self.now_ms = max(self.now_ms, book.ts_ms)
        if first and self.active:
            self._publish_snapshot()  # the trader waits for the account before deciding
        self._roll_day(book.ts_ms)
        self._apply(self.broker.on_book(book), self._openers())
        mark = self.broker.mark_px(book.coin)
        if self.active and mark is not None:
            self.start_px.setdefault(book.coin, mark)
        # In live, only a reconciled account counts (before, its equity reads 0).
        watching = self.active and not self.loss_paused and (not self.is_live or self.live_ready)
        if watching and daily_loss_breached(self._account(), self.limits):
            self._pause_for_loss()

    def _on_funding(self, funding: FundingRate) -> None:
        if funding.ts_ms <= self.funded_ts_ms.get(funding.coin, 0):
            return
        self.funded_ts_ms[funding.coin] = funding.ts_ms
        position = self.broker.positions.get(funding.coin)
        px = self.oracle_px.get(funding.coin) or self.broker.mark_px(funding.coin)
        if position is None or px is None or position.opened_ts_ms > funding.ts_ms:
            return
        payment = self.broker.on_funding(funding.coin, funding.funding_rate, px, funding.ts_ms)
        if payment is not None:
            self._push(payment)
            log.log(
                TRADE,
                "%s funding %+.4f USD (rate %.6f%% on %.6g at %.6g)",
                payment.coin,
                payment.amount_usd,
                payment.rate * 100,
                payment.szi,
                payment.px,
            )
            self._publish_snapshot(store=True)

    # ---- decisions --------------------------------------------------------------------

    async def _on_decision(self, record: DecisionRecord) -> None:
        decision = record.decision
        if decision.action == "hold":
            return
        if self.flattening:
            log.warning("positions agent ignores a %s decision: emergency stop", decision.action)
            return
        if not self.active:
            log.debug("positions agent ignores a decision in mode %s", self.mode)
            return
        started = time.perf_counter()
        coin = record.coin
        rules = self.rules.get(coin)
        now_ms = max(self.now_ms, record.ts_ms)
        if rules is None:
            self._refuse(record, "no_price", f"{coin}: asset rules not loaded yet", "wait")
            return
        if self.is_live and not self.live_ready:
            self._refuse(
                record,
                "unavailable",
                f"{coin}: not reconciled with the exchange",
                "wait for the connection to the exchange (see the alerts)",
            )
            return
        limits = self.limits
        if self.is_live:
            limits = limits.model_copy(update={"risk_limit_usd": self.live_risk_limit_usd})
        verdict = check(decision, self._account(), limits, rules, now_ms, record.id)
        for warning in verdict.warnings:
            log.log(TRADE, "%s", warning)
        if verdict.refusal is not None:
            r = verdict.refusal
            self._refuse(record, r.rule, r.message, r.hint)
            return
        if self.is_live:
            await self._decide_live(record, verdict, started, now_ms)
            return
        openers = self._openers()
        for order in verdict.orders:
            self._submit(order, openers)
        self.latency.observe("paper", time.perf_counter() - started)
        if decision.action in ("open_long", "open_short"):
            self._protect(coin, verdict, now_ms)
        self._publish_snapshot(store=True)

    def _submit(self, order: OrderRequest, openers: dict[str, str | None]) -> None:
        self._push(order)
        self._apply([self.broker.submit(order, self.books.get(order.coin))], openers)
        # Protection a close made pointless is canceled by the broker; record that too.
        self._apply([(u, []) for u in self.broker.drain_updates()], openers)

    def _protect(self, coin: str, verdict: RiskVerdict, now_ms: int) -> None:
        """Stop-loss and take-profit for the position an open just made (or grew)."""
        position = self.broker.positions.get(coin)
        if position is None:
            return
        for cloid, resting in list(self.broker.open_orders.items()):
            if resting.coin == coin and resting.kind in ("stop_loss", "take_profit"):
                update = self.broker.cancel(cloid, now_ms)
                if update is not None:
                    self._push(update)
        protected = position.model_copy(
            update={"stop_px": verdict.stop_px, "target_px": verdict.target_px}
        )
        for order in protective_orders(protected, self.rules[coin], now_ms):
            self._submit(order, self._openers())

    def _refuse(self, record: DecisionRecord, rule: str, message: str, hint: str) -> None:
        refusal = RiskRefusal(
            ts_ms=max(self.now_ms, record.ts_ms),
            coin=record.coin,
            decision_id=record.id,
            action=record.decision.action,
            rule=rule,
            message=message,
            hint=hint,
        )
        self._push(refusal)
        key = (rule,)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        log.log(
            TRADE, "%s %s refused (%s): %s → %s", record.coin, refusal.action, rule, message, hint
        )

    # ---- live -------------------------------------------------------------------------

    async def _run_live(self) -> None:
        """Connect, reconcile (the exchange is the truth), then keep polling fills and the
        account; any failure alerts, drops the connection and starts over with a
        reconcile, so nothing is decided on a stale picture."""
        try:
            while self.is_live:
                try:
                    if self.gateway is None:
                        self.live_ready = False
                        self.gateway = await asyncio.to_thread(self._connect)
                        await self._stream_fills(self.gateway)
                    if not self.live_ready:
                        await self._reconcile()
                    await self._poll_live()
                except GatewayError as exc:
                    self.live_ready = False
                    if exc.kind == "unavailable":
                        self._close_stream()
                        self.gateway = None
                    message = exc.message
                    if exc.kind == "auth":
                        message = f"failed authentication attempt with the exchange: {message}"
                    await self._live_alert(message, exc.hint)
                    await asyncio.sleep(LIVE_RETRY_S)
                    continue
                await asyncio.sleep(LIVE_POLL_S)
        finally:
            self._close_stream()
            self._live_task = None

    async def _stream_fills(self, gw: LiveGateway) -> None:
        """Fills as the exchange sends them; the poll every second catches any it drops."""
        loop = asyncio.get_running_loop()

        def arrived(fills: list[ExchangeFill]) -> None:  # on the SDK's thread
            loop.call_soon_threadsafe(self._on_streamed, fills)

        self._stream_close = await asyncio.to_thread(gw.stream_fills, arrived)

    def _on_streamed(self, fills: list[ExchangeFill]) -> None:
        new = self.live.on_fills(fills)
        self.fills_seen[("stream",)] = self.fills_seen.get(("stream",), 0) + len(new)
        self._record_fills(new)
        if new:
            self._publish_snapshot(store=True)

    def _close_stream(self) -> None:
        if self._stream_close is not None:
            close, self._stream_close = self._stream_close, None
            try:
                close()
            except Exception as exc:  # the SDK's thread may be gone already
                log.debug("closing the fills websocket: %r", exc)

    def _connect(self) -> LiveGateway:
        address = self.secrets.hyperliquid_account_address
        key = self.secrets.hyperliquid_api_wallet_key or self.secrets.hyperliquid_private_key
        if address is None or key is None:
            raise GatewayError(
                "auth",
                "live trading needs HYPERLIQUID_ACCOUNT_ADDRESS and an API wallet key",
                "add them to the env file and reload",
            )
        return LiveGateway(
            self.config.exchange.api_url, address.get_secret_value(), key.get_secret_value()
        )

    async def _reconcile(self) -> None:
        gw = self._gateway()
        account = await asyncio.to_thread(gw.account)
        orders = await asyncio.to_thread(gw.open_orders)
        now_ms = self.now_ms or int(time.time() * 1000)
        since = self.live.last_fill_ms or now_ms - RECONCILE_FILLS_MS
        missed = self.live.on_fills(await asyncio.to_thread(gw.fills_since, since))
        self.fills_seen[("poll",)] = self.fills_seen.get(("poll",), 0) + len(missed)
        self._record_fills(missed)
        for difference in self.live.reconcile(account, orders, now_ms):
            log.warning("reconcile: %s", difference)
        if not self.live_day_start_usd:
            self.live_day_start_usd = account.equity_usd
        for position in self.live.unprotected():
            await self._protect_live(position, None, None, now_ms)
        self.live_ready = True
        log.info(
            "positions agent reconciled with the exchange: equity %.2f USD, positions %s, "
            "%d open order(s)",
            account.equity_usd,
            {c: p.szi for c, p in self.live.positions.items()} or "none",
            len(orders),
        )
        self._publish_snapshot(store=True)

    async def _poll_live(self) -> None:
        gw = self._gateway()
        since = self.live.last_fill_ms or self.now_ms
        fills = self.live.on_fills(await asyncio.to_thread(gw.fills_since, since))
        self.fills_seen[("poll",)] = self.fills_seen.get(("poll",), 0) + len(fills)
        self._record_fills(fills)
        account = await asyncio.to_thread(gw.account)
        orders = await asyncio.to_thread(gw.open_orders)
        for difference in self.live.reconcile(account, orders, self.now_ms or _wall_ms()):
            log.warning("reconcile: %s", difference)
        await self._cancel_orphans()
        if fills:
            self._publish_snapshot(store=True)

    async def _cancel_orphans(self) -> None:
        """A stop or target whose position is gone (closed, or its sibling fired) is
        canceled: left on the exchange it could open a position later."""
        for o in self.live.open_orders:
            if o.kind in ("stop_loss", "take_profit") and o.coin not in self.live.positions:
                if o.cloid is None:
                    continue
                update = await asyncio.to_thread(self._gateway().cancel, o.cloid, o.coin)
                self._apply([(update, [])], {})

    async def _decide_live(
        self, record: DecisionRecord, verdict: RiskVerdict, started: float, now_ms: int
    ) -> None:
        for order in verdict.orders:
            await self._send_live(order)
        self.latency.observe("live", time.perf_counter() - started)
        try:
            await self._poll_live()
        except GatewayError as exc:
            self.live_ready = False
            await self._live_alert(exc.message, exc.hint)
            return
        position = self.live.positions.get(record.coin)
        if record.decision.action in ("open_long", "open_short") and position is not None:
            await self._protect_live(position, verdict.stop_px, verdict.target_px, now_ms)
        self._publish_snapshot(store=True)

    async def _send_live(self, order: OrderRequest) -> None:
        """One order to the exchange; the gateway retries idempotently (by cloid)."""
        order = order.model_copy(update={"mode": "live"})
        self.live.track(order)
        self._push(order)
        try:
            update = await asyncio.to_thread(self._gateway().submit, order)
        except GatewayError as exc:
            self.live_ready = False
            await self._live_alert(f"{order.coin} order not confirmed: {exc.message}", exc.hint)
            return
        self._apply([(update, [])], {})

    async def _protect_live(
        self, position: Position, stop_px: float | None, target_px: float | None, now_ms: int
    ) -> None:
        """Exchange-side stop-loss and take-profit for ``position`` (replacing any)."""
        rules = self.rules.get(position.coin)
        if rules is None:
            return
        for o in self.live.open_orders:
            if o.coin == position.coin and o.kind in ("stop_loss", "take_profit") and o.cloid:
                update = await asyncio.to_thread(self._gateway().cancel, o.cloid, o.coin)
                self._push(update)
        sign = 1 if position.szi > 0 else -1
        stop = stop_px or position.entry_px * (1 - sign * self.limits.stop_loss_pct / 100)
        target = target_px or position.entry_px * (1 + sign * self.limits.take_profit_pct / 100)
        protected = position.model_copy(update={"stop_px": stop, "target_px": target})
        for order in protective_orders(protected, rules, now_ms):
            await self._send_live(order)

    def _record_fills(self, fills: list[Fill]) -> None:
        for fill in fills:
            self.publisher.send(fill.topic, fill)
            self._push(fill)
            self._log_fill(fill)

    def _gateway(self) -> LiveGateway:
        if self.gateway is None:
            raise GatewayError("unavailable", "not connected to the exchange", "it reconnects")
        return self.gateway

    async def _live_alert(self, message: str, hint: str) -> None:
        log.error("live trading: %s\n  → %s", message, hint)
        now = time.monotonic()
        if now - self._live_alerted_s >= ALERT_EVERY_S:
            self._live_alerted_s = now
            self._alert(message)

    def _alert(self, message: str) -> None:
        event = SysEvent(kind="alert", level="error", source=self.name, message=message)
        self.spawn(self.report(event), "alert")

    # ---- emergency stop ------------------------------------------------------------------

    async def handle(self, msg: BaseModel) -> None:
        if isinstance(msg, Flatten):
            await self.send(await self._flatten(msg.reason))
        else:
            await super().handle(msg)

    async def _flatten(self, reason: str) -> FlattenReport:
        """Cancel every order, close every position (retrying on fresh books), and save
        the state before and after. Decisions arriving meanwhile are ignored."""
        self.flattening = True
        before = self.snapshot()
        held = {coin: p.szi for coin, p in self._ledger().positions.items()}
        log.critical("emergency stop (%s): flattening %s", reason, held or "no position")
        errors: list[str] = []
        if self.is_live:
            canceled, remaining = await self._flatten_live(errors)
        else:
            canceled, remaining = await self._flatten_paper()
        if remaining:
            errors.append(
                f"still open after {FLATTEN_ATTEMPTS} attempts: "
                + ", ".join(f"{c} {v:+g}" for c, v in sorted(remaining.items()))
            )
        after = self.snapshot()
        self.store.push(after.topic, after)
        path = self._save_emergency(reason, before, after, canceled, errors)
        return FlattenReport(
            canceled_orders=canceled,
            closed={c: abs(v) - abs(remaining.get(c, 0.0)) for c, v in held.items()},
            remaining=remaining,
            snapshot_path=str(path) if path else None,
            errors=errors,
        )

    async def _flatten_paper(self) -> tuple[int, dict[str, float]]:
        now_ms = self.now_ms or _wall_ms()
        canceled = self.broker.cancel_all(now_ms)
        self._apply([(u, []) for u in canceled], self._openers())
        for attempt in range(FLATTEN_ATTEMPTS):
            if not self.broker.positions:
                break
            if attempt:
                await asyncio.sleep(FLATTEN_RETRY_S)
            for order in flatten_orders(self._account(), self.rules, self.now_ms or now_ms):
                self._submit(order, self._openers())
        return len(canceled), {coin: p.szi for coin, p in self.broker.positions.items()}

    async def _flatten_live(self, errors: list[str]) -> tuple[int, dict[str, float]]:
        """On the exchange: cancel every open order, then reduce-only market orders until
        the exchange reports no position (or the attempts run out)."""
        canceled = 0
        try:
            if self.gateway is None:
                self.gateway = await asyncio.to_thread(self._connect)
            await self._poll_live()
            for o in list(self.live.open_orders):
                if o.cloid is None:
                    errors.append(f"{o.coin} order {o.oid} has no client id: cancel it by hand")
                    continue
                update = await asyncio.to_thread(self._gateway().cancel, o.cloid, o.coin)
                self._push(update)
                canceled += update.status == "canceled"
            for attempt in range(FLATTEN_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(FLATTEN_RETRY_S)
                await self._poll_live()
                if not self.live.positions:
                    break
                for order in flatten_orders(self._account(), self.rules, self.now_ms or _wall_ms()):
                    await self._send_live(order)
            await self._poll_live()
        except GatewayError as exc:
            errors.append(f"{exc.message} → {exc.hint}")
        return canceled, {coin: p.szi for coin, p in self.live.positions.items()}

    def _save_emergency(
        self,
        reason: str,
        before: PortfolioSnapshot,
        after: PortfolioSnapshot,
        canceled: int,
        errors: list[str],
    ) -> Path | None:
        """The whole picture at the emergency stop, as one JSON file in the state dir."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.state_dir / f"emergency-{stamp}.json"
        record = {
            "reason": reason,
            "wall_ts_ms": int(time.time() * 1000),
            "before": before.model_dump(mode="json"),
            "after": after.model_dump(mode="json"),
            "canceled_orders": canceled,
            "errors": errors,
            "last_decisions": {
                c: r.model_dump(mode="json", exclude={"prompt_system"})
                for c, r in self.last_decisions.items()
            },
            "last_signals": [s.model_dump(mode="json") for s in self.last_signals.values()],
        }
        try:
            path.write_text(json.dumps(record, indent=2), encoding="utf-8")
        except OSError as exc:
            log.error("cannot save the emergency snapshot to %s: %s", path, exc)
            return None
        return path

    # ---- results ----------------------------------------------------------------------

    def _openers(self) -> dict[str, str | None]:
        return {coin: p.decision_id for coin, p in self.broker.positions.items()}

    def _apply(
        self,
        results: list[tuple[OrderUpdate, list[Fill]]],
        openers: dict[str, str | None],
    ) -> None:
        changed = False
        for update, fills in results:
            self._push(update)
            key = (update.status,)
            self.orders[key] = self.orders.get(key, 0) + 1
            if update.status == "rejected":
                log.log(
                    TRADE, "%s order %s rejected: %s", update.coin, update.cloid[:10], update.error
                )
                if self.is_live:  # real money: someone should look
                    self._alert(
                        f"{update.coin} order {update.cloid[:10]} rejected by the exchange: "
                        f"{update.error}"
                    )
            changed = changed or bool(fills)
            self._record_fills(
                [
                    f.model_copy(update={"opened_by": openers.get(f.coin)})
                    if f.purpose in REDUCING
                    else f
                    for f in fills
                ]
            )
        if changed:
            self._publish_snapshot(store=True)

    def _log_fill(self, fill: Fill) -> None:
        log.log(
            TRADE,
            "%s %s %.6g @ %.6g (%s, %s, %s, fee %.4f USD%s)",
            fill.coin,
            "buy" if fill.is_buy else "sell",
            fill.sz,
            fill.px,
            fill.purpose,
            fill.liquidity,
            fill.mode,
            fill.fee_usd,
            f", closed P&L {fill.closed_pnl_usd:+.4f} USD" if fill.closed_pnl_usd else "",
        )

    def _push(self, item: OrderRequest | OrderUpdate | Fill | FundingPayment | RiskRefusal) -> None:
        self.store.push(item.topic, item)

    # ---- the account -----------------------------------------------------------------

    def _marks(self) -> dict[str, float]:
        return {coin: px for coin in self.books if (px := self.broker.mark_px(coin)) is not None}

    def _ledger(self) -> _Ledger:
        """The account being traded: the live one in live, the paper broker's otherwise."""
        marks = self._marks()
        if self.is_live:
            live = self.live
            unrealised = live.unrealised_pnl_usd(marks)
            return _Ledger(
                mode="live",
                positions=dict(live.positions),
                marks=marks,
                equity_usd=live.equity_usd,
                cash_usd=live.equity_usd - unrealised,
                realised_pnl_usd=live.realised_pnl_usd,
                unrealised_pnl_usd=unrealised,
                fees_usd=live.fees_usd,
                funding_usd=0.0,  # in the exchange's equity; not itemised here yet
                day_start_usd=self.live_day_start_usd or live.equity_usd,
                start_usd=live.start_equity_usd or live.equity_usd,
            )
        b = self.broker
        return _Ledger(
            mode="paper",
            positions=dict(b.positions),
            marks=marks,
            equity_usd=b.equity_usd(),
            cash_usd=b.cash_usd,
            realised_pnl_usd=b.realised_pnl_usd,
            unrealised_pnl_usd=b.unrealised_pnl_usd(),
            fees_usd=b.fees_usd,
            funding_usd=b.funding_usd,
            day_start_usd=self.day_start_equity_usd,
            start_usd=self.start_equity_usd,
        )

    def _account(self) -> AccountState:
        ledger = self._ledger()
        return AccountState(
            equity_usd=ledger.equity_usd,
            day_start_equity_usd=ledger.day_start_usd,
            positions=ledger.positions,
            marks=ledger.marks,
            paused=self.loss_paused or "trading" in self.paused,
        )

    def _roll_day(self, ts_ms: int) -> None:
        day = ts_ms // 86_400_000
        if self.day == day:
            return
        first = self.day is None
        self.day = day
        self.day_start_equity_usd = self.broker.equity_usd()
        if self.is_live and self.live_ready:
            self.live_day_start_usd = self.live.equity_usd
        if not first and self.loss_paused:
            self.loss_paused = False
            self._tell(TradingPause(pause=False, reason="a new UTC day began"))

    def _pause_for_loss(self) -> None:
        self.loss_paused = True
        ledger = self._ledger()
        equity, start = ledger.equity_usd, ledger.day_start_usd
        lost_pct = (1 - equity / start) * 100 if start else 0.0
        reason = (
            f"daily loss limit hit: equity {equity:.2f} USD is {lost_pct:.2f}% below the day's "
            f"start ({start:.2f} USD; limit {self.limits.daily_loss_limit_pct:g}%)"
        )
        log.error(
            "%s\n  → trading paused until 00:00 UTC; bistouryctl resume trading to go on", reason
        )
        self._tell(TradingPause(pause=True, reason=reason))
        self._alert(reason)

    def _tell(self, msg: TradingPause) -> None:
        self.spawn(self.send(msg), "trading-pause")

    def snapshot(self) -> PortfolioSnapshot:
        ledger = self._ledger()
        account = self._account()
        marks = ledger.marks
        views = {c: _view(p, marks.get(c, p.entry_px)) for c, p in ledger.positions.items()}
        equity = ledger.equity_usd
        limits = self.limits
        if self.is_live:
            limits = limits.model_copy(update={"risk_limit_usd": self.live_risk_limit_usd})
        return PortfolioSnapshot(
            ts_ms=self.now_ms or _wall_ms(),
            equity_usd=max(0.0, equity),
            pnl_today_usd=equity - ledger.day_start_usd,
            risk_budget_usd=remaining_budget_usd(account, limits),
            max_positions_left=max(0, limits.max_positions - len(views)),
            positions=views,
            cash_usd=ledger.cash_usd,
            exposure_usd=exposure_usd(account),
            unrealised_pnl_usd=ledger.unrealised_pnl_usd,
            realised_pnl_usd=ledger.realised_pnl_usd,
            fees_usd=ledger.fees_usd,
            funding_usd=ledger.funding_usd,
            trading_paused=account.paused,
            mode=ledger.mode,
            session_return=equity / ledger.start_usd - 1 if ledger.start_usd else 0.0,
            buy_and_hold={
                coin: marks[coin] / px - 1 for coin, px in self.start_px.items() if coin in marks
            },
        )

    def _publish_snapshot(self, store: bool = False) -> None:
        if self.is_live and not self.live_ready:
            return  # never show the trader (or the database) an unreconciled account
        if not self.now_ms:
            return  # no book yet: no data clock to stamp the equity curve with
        snap = self.snapshot()
        self.publisher.send(snap.topic, snap)
        now = time.monotonic()
        if store or now - self._stored_snapshot_s >= STORE_SNAPSHOT_EVERY_S:
            self._stored_snapshot_s = now
            self.store.push(snap.topic, snap)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY_S)
            if self.active or self.broker.positions:
                self._publish_snapshot()

    def metrics(self) -> list[MetricSample]:
        ledger = self._ledger()
        return [
            sample(
                "bistoury_equity_usd",
                "gauge",
                "Account equity",
                ledger.equity_usd,
                mode=ledger.mode,
            ),
            *[
                sample(
                    "bistoury_position_size",
                    "gauge",
                    "Signed position size in coin units",
                    p.szi,
                    coin=coin,
                )
                for coin, p in sorted(ledger.positions.items())
            ],
            *[
                sample("bistoury_pnl_usd", "gauge", "P&L by kind, this session", v, kind=k)
                for k, v in (
                    ("realised", ledger.realised_pnl_usd),
                    ("unrealised", ledger.unrealised_pnl_usd),
                    ("fees", -ledger.fees_usd),
                    ("funding", ledger.funding_usd),
                )
            ],
            *labelled(
                "bistoury_orders_total", "counter", "Orders by outcome", self.orders, ("result",)
            ),
            *labelled(
                "bistoury_risk_rejections_total",
                "counter",
                "Decisions the risk engine refused, by rule",
                self.refusals,
                ("rule",),
            ),
            *self.latency.samples(),
            *labelled(
                "bistoury_live_fills_total",
                "counter",
                "Live fills recorded, by how they arrived (stream: websocket, poll: REST)",
                self.fills_seen,
                ("source",),
            ),
        ]


@dataclass(frozen=True)
class _Ledger:
    mode: TradingMode
    positions: dict[str, Position]
    marks: dict[str, float]
    equity_usd: float
    cash_usd: float
    realised_pnl_usd: float
    unrealised_pnl_usd: float
    fees_usd: float
    funding_usd: float
    day_start_usd: float
    start_usd: float


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _view(p: Position, mark_px: float) -> PositionView:
    return PositionView(
        side=p.side,
        size_sz=abs(p.szi),
        entry_px=p.entry_px,
        unrealised_pnl_usd=p.unrealised_pnl_usd(mark_px),
    )


if __name__ == "__main__":
    run(PositionsAgent)
