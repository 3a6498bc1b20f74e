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
from pathlib import Path

import httpx
from pydantic import BaseModel

from bistouryd.agents.base import Agent, run
from bistouryd.exchange.orders import (
    Fill,
    FundingPayment,
    OrderRequest,
    OrderUpdate,
    Position,
    RiskRefusal,
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
        self.start_equity_usd = self.broker.equity_usd()
        self.start_px: dict[str, float] = {}  # the first mark of each coin while trading
        self.last_decisions: dict[str, DecisionRecord] = {}
        self.last_signals: dict[tuple[str, str], Signal] = {}
        self.spawn(self._load_rules(), "rules")
        self.spawn(self._consume(), "consume")
        self.spawn(self._snapshots(), "snapshots")
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
        return self.mode in PAPER_MODES

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
        self.now_ms = max(self.now_ms, book.ts_ms)
        self._roll_day(book.ts_ms)
        self._apply(self.broker.on_book(book), self._openers())
        mark = self.broker.mark_px(book.coin)
        if self.active and mark is not None:
            self.start_px.setdefault(book.coin, mark)
        if (
            self.active
            and not self.loss_paused
            and daily_loss_breached(self._account(), self.limits)
        ):
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
        verdict = check(decision, self._account(), self.limits, rules, now_ms, record.id)
        for warning in verdict.warnings:
            log.log(TRADE, "%s", warning)
        if verdict.refusal is not None:
            r = verdict.refusal
            self._refuse(record, r.rule, r.message, r.hint)
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
        held = {coin: p.szi for coin, p in self.broker.positions.items()}
        log.critical("emergency stop (%s): flattening %s", reason, held or "no position")
        now_ms = self.now_ms or int(time.time() * 1000)
        canceled = self.broker.cancel_all(now_ms)
        self._apply([(u, []) for u in canceled], self._openers())
        errors: list[str] = []
        for attempt in range(FLATTEN_ATTEMPTS):
            if not self.broker.positions:
                break
            if attempt:
                await asyncio.sleep(FLATTEN_RETRY_S)
            for order in flatten_orders(self._account(), self.rules, self.now_ms or now_ms):
                self._submit(order, self._openers())
        remaining = {coin: p.szi for coin, p in self.broker.positions.items()}
        if remaining:
            errors.append(
                f"still open after {FLATTEN_ATTEMPTS} attempts: "
                + ", ".join(f"{c} {v:+g}" for c, v in sorted(remaining.items()))
            )
        after = self.snapshot()
        self.store.push(after.topic, after)
        path = self._save_emergency(reason, before, after, len(canceled), errors)
        return FlattenReport(
            canceled_orders=len(canceled),
            closed={c: abs(v) - abs(remaining.get(c, 0.0)) for c, v in held.items()},
            remaining=remaining,
            snapshot_path=str(path) if path else None,
            errors=errors,
        )

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
            for fill in fills:
                if fill.purpose in REDUCING:
                    fill = fill.model_copy(update={"opened_by": openers.get(fill.coin)})
                self.publisher.send(fill.topic, fill)
                self._push(fill)
                changed = True
                log.log(
                    TRADE,
                    "%s %s %.6g @ %.6g (%s, %s, fee %.4f USD%s)",
                    fill.coin,
                    "buy" if fill.is_buy else "sell",
                    fill.sz,
                    fill.px,
                    fill.purpose,
                    fill.liquidity,
                    fill.fee_usd,
                    f", closed P&L {fill.closed_pnl_usd:+.4f} USD" if fill.closed_pnl_usd else "",
                )
        if changed:
            self._publish_snapshot(store=True)

    def _push(self, item: OrderRequest | OrderUpdate | Fill | FundingPayment | RiskRefusal) -> None:
        self.store.push(item.topic, item)

    # ---- the account -----------------------------------------------------------------

    def _marks(self) -> dict[str, float]:
        return {coin: px for coin in self.books if (px := self.broker.mark_px(coin)) is not None}

    def _account(self) -> AccountState:
        return AccountState(
            equity_usd=self.broker.equity_usd(),
            day_start_equity_usd=self.day_start_equity_usd,
            positions=dict(self.broker.positions),
            marks=self._marks(),
            paused=self.loss_paused or "trading" in self.paused,
        )

    def _roll_day(self, ts_ms: int) -> None:
        day = ts_ms // 86_400_000
        if self.day == day:
            return
        first = self.day is None
        self.day = day
        self.day_start_equity_usd = self.broker.equity_usd()
        if not first and self.loss_paused:
            self.loss_paused = False
            self._tell(TradingPause(pause=False, reason="a new UTC day began"))

    def _pause_for_loss(self) -> None:
        self.loss_paused = True
        equity = self.broker.equity_usd()
        start = self.day_start_equity_usd
        lost_pct = (1 - equity / start) * 100 if start else 0.0
        reason = (
            f"daily loss limit hit: equity {equity:.2f} USD is {lost_pct:.2f}% below the day's "
            f"start ({start:.2f} USD; limit {self.limits.daily_loss_limit_pct:g}%)"
        )
        log.error(
            "%s\n  → trading paused until 00:00 UTC; bistouryctl resume trading to go on", reason
        )
        self._tell(TradingPause(pause=True, reason=reason))

    def _tell(self, msg: TradingPause) -> None:
        self.spawn(self.send(msg), "trading-pause")

    def snapshot(self) -> PortfolioSnapshot:
        account = self._account()
        marks = account.marks
        views = {}
        for coin, p in self.broker.positions.items():
            views[coin] = _view(p, marks.get(coin, p.entry_px))
        equity = account.equity_usd
        return PortfolioSnapshot(
            ts_ms=self.now_ms or int(time.time() * 1000),
            equity_usd=max(0.0, equity),
            pnl_today_usd=equity - self.day_start_equity_usd,
            risk_budget_usd=remaining_budget_usd(account, self.limits),
            max_positions_left=max(0, self.limits.max_positions - len(views)),
            positions=views,
            cash_usd=self.broker.cash_usd,
            exposure_usd=exposure_usd(account),
            unrealised_pnl_usd=self.broker.unrealised_pnl_usd(),
            realised_pnl_usd=self.broker.realised_pnl_usd,
            fees_usd=self.broker.fees_usd,
            funding_usd=self.broker.funding_usd,
            trading_paused=account.paused,
            session_return=equity / self.start_equity_usd - 1 if self.start_equity_usd else 0.0,
            buy_and_hold={
                coin: marks[coin] / px - 1 for coin, px in self.start_px.items() if coin in marks
            },
        )

    def _publish_snapshot(self, store: bool = False) -> None:
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
        account = self._account()
        return [
            sample("bistoury_equity_usd", "gauge", "Account equity (paper)", account.equity_usd),
            *[
                sample(
                    "bistoury_position_size",
                    "gauge",
                    "Signed position size in coin units",
                    p.szi,
                    coin=coin,
                )
                for coin, p in sorted(self.broker.positions.items())
            ],
            *[
                sample("bistoury_pnl_usd", "gauge", "P&L by kind, this session", v, kind=k)
                for k, v in (
                    ("realised", self.broker.realised_pnl_usd),
                    ("unrealised", self.broker.unrealised_pnl_usd()),
                    ("fees", -self.broker.fees_usd),
                    ("funding", self.broker.funding_usd),
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
        ]


def _view(p: Position, mark_px: float) -> PositionView:
    return PositionView(
        side=p.side,
        size_sz=abs(p.szi),
        entry_px=p.entry_px,
        unrealised_pnl_usd=p.unrealised_pnl_usd(mark_px),
    )


if __name__ == "__main__":
    run(PositionsAgent)
