"""The trader agent: signals in, decisions out.

It keeps the latest signal of every strategy for every traded coin (``sig.*``) and the
account the positions agent reports (``pos``), and, in the trading modes (paper-historical,
paper-live, live) and while trading is not paused, asks the fallback chain for a decision
whenever ``Trader`` says a coin is due. One call per coin is in flight at a time; calls
for different coins run side by side. Each decision is published on ``dec.<coin>``,
handed to the recorder, and logged on an ``LLM`` line with who answered, what it cost
and the fallback path.

With a positions agent running, nothing is decided before it has reported the account
(in live: reconciled with the exchange). A reload that changes ``llm:`` rebuilds the
chain, so the provider or model switches without a restart; the day's spending carries
over to the new chain's cost cap.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bistouryd.agents.base import Agent, run
from bistouryd.config import strategy_settings
from bistouryd.events import SysEvent
from bistouryd.llm.chain import DecisionChain, Outcome
from bistouryd.llm.record import DecisionRecord
from bistouryd.llm.setup import build_chain
from bistouryd.llm.trader import Trader, TraderSettings
from bistouryd.logs import LLM
from bistouryd.portfolio import TOPIC as PORTFOLIO_TOPIC
from bistouryd.portfolio import PortfolioSnapshot
from bistouryd.strategies.base import Signal
from bistouryd.supervision import HistogramFamily, MetricSample, labelled, sample

log = logging.getLogger(__name__)

TRADING_MODES = ("paper-historical", "paper-live", "live")
BATCH = 200
ERROR_LOG_EVERY_S = 60.0
RATIONALE_CHARS = 240
# From 10 ms (a local server) to 2 min (a slow model past its timeout).
LATENCY_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class TraderAgent(Agent):
    name = "trader"

    async def start(self) -> None:
        self.requests: dict[tuple[str, ...], float] = {}
        self.latency = HistogramFamily(
            "bistoury_llm_latency_seconds",
            "Time one request to a language-model provider took",
            LATENCY_BOUNDS,
            "provider",
        )
        self.tokens: dict[tuple[str, ...], float] = {}
        self.cost_usd: dict[str, float] = {}
        self.decisions: dict[tuple[str, ...], float] = {}
        self.fallbacks = 0
        self.errors = 0
        self._error_logged_s = -ERROR_LOG_EVERY_S
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.trader = Trader(self._chain(), self._assumed_portfolio(), self._settings())
        log.info("trader agent asks %s for %s", self._chain_text(), ", ".join(self.pairs))
        self.spawn(self._consume(), "consume")

    # ---- configuration ------------------------------------------------------------

    def _chain(self) -> DecisionChain:
        return build_chain(self.config.llm, self.secrets, on_request=self._observe_request)

    def _chain_text(self) -> str:
        return " → ".join(
            [
                *(f"{n}/{self.config.llm.settings_of(n).model}" for n in self.config.llm.chain),
                "rules",
            ]
        )

    def _settings(self) -> TraderSettings:
        llm = self.config.llm
        enabled = [
            name for name, params in strategy_settings(self.config).items() if params.enabled
        ]
        return TraderSettings(
            interval_s=llm.decision_interval_s,
            min_strength_change=llm.min_strength_change,
            prompt_version=llm.prompt_version,
            expected=frozenset(enabled),
        )

    def _assumed_portfolio(self) -> PortfolioSnapshot:
        trading = self.config.trading
        return PortfolioSnapshot.assumed_flat(
            int(time.time() * 1000),
            trading.paper_equity_usd,
            self.config.risk.max_total_exposure_pct,
            trading.max_positions,
        )

    async def on_config(self, changed: list[str]) -> None:
        if any(c.startswith("llm") for c in changed):
            old = self.trader.chain
            new = self._chain()
            now_s = time.time()
            new.cost_cap.add(now_s, old.cost_cap.spent_today_usd(now_s))
            self.trader.chain = new
            log.info("trader agent now asks %s", self._chain_text())
        if any(c.startswith(("llm", "strategies")) for c in changed):
            self.trader.settings = self._settings()
        if self.trader.portfolio.assumed and any(
            c.startswith(("trading", "risk")) for c in changed
        ):
            self.trader.portfolio = self._assumed_portfolio()

    async def on_mode(self) -> None:
        if self.active:
            for coin in self.pairs:
                self._maybe_decide(coin)

    @property
    def active(self) -> bool:
        return self.mode in TRADING_MODES and "trading" not in self.paused

    # ---- the loop -------------------------------------------------------------------

    async def _consume(self) -> None:
        sub = self.subscribe(["sig.", PORTFOLIO_TOPIC])
        while True:
            batch = await sub.recv_batch(BATCH)
            touched: set[str] = set()
            for _, envelope in batch:
                body = envelope.body
                if isinstance(body, Signal):
                    self.trader.observe(body)
                    touched.add(body.coin)
                elif isinstance(body, PortfolioSnapshot):
                    self.trader.portfolio = body
                    touched.update(self.pairs)
            if self.active:
                for coin in sorted(touched.intersection(self.pairs)):
                    self._maybe_decide(coin)
            if len(batch) == BATCH:
                await asyncio.sleep(0)

    def _maybe_decide(self, coin: str) -> None:
        if coin in self._inflight or not self.trader.due(coin):
            return
        if self.trader.portfolio.assumed and "positions" in self.config.agents.enabled:
            # The positions agent has not reported the account yet (starting, or in live
            # not yet reconciled with the exchange): a decision now would be made on a
            # guess and refused. Its first report makes every coin due again.
            return
        why = ", ".join(self.trader.changes(coin))
        task = asyncio.create_task(self._decide(coin, why), name=f"decide-{coin}")
        self._inflight[coin] = task

    async def _decide(self, coin: str, why: str) -> None:
        try:
            record, outcome = await self.trader.decide(coin)
        except Exception as exc:
            self._failed_decision(coin, exc)
            return
        finally:
            self._inflight.pop(coin, None)
        self.publisher.send(record.topic, record)
        self.store.push(record.topic, record)
        self._count(record)
        self._log(record, why)
        if outcome.cost_cap_crossed:
            await self._cost_cap_alert(outcome)

    async def stop(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    # ---- reporting ------------------------------------------------------------------

    def _log(self, r: DecisionRecord, why: str) -> None:
        d = r.decision
        size = f" {d.size_fraction:.2f}" if d.size_fraction else ""
        who = f"{r.provider}/{r.model}" if r.provider != "rules" else "rules"
        how = "from the cache" if r.cached else f"in {r.latency_s:.2f} s"
        usage = ""
        if r.input_tokens is not None or r.output_tokens is not None:
            usage = f", {r.input_tokens or 0}+{r.output_tokens or 0} tokens, ${r.cost_usd:.4f}"
        path = ""
        if r.fallbacks:
            path = "; fell back past " + ", ".join(
                f"{f.provider} ({f.reason})" for f in r.fallbacks
            )
        rationale = " ".join(d.rationale.split())
        if len(rationale) > RATIONALE_CHARS:
            rationale = rationale[: RATIONALE_CHARS - 1].rstrip() + "…"
        log.log(
            LLM,
            "%s %s%s (confidence %.2f) by %s %s%s%s [%s] decision %s: %s",
            r.coin,
            d.action,
            size,
            d.confidence,
            who,
            how,
            usage,
            path,
            why,
            r.id[:12],
            rationale,
        )

    def _count(self, r: DecisionRecord) -> None:
        key = (r.provider, r.decision.action)
        self.decisions[key] = self.decisions.get(key, 0) + 1
        if r.fallbacks:
            self.fallbacks += 1
        if r.provider != "rules" and not r.cached:
            for kind, n in (("input", r.input_tokens), ("output", r.output_tokens)):
                if n:
                    self.tokens[(r.provider, kind)] = self.tokens.get((r.provider, kind), 0) + n
            self.cost_usd[r.provider] = self.cost_usd.get(r.provider, 0.0) + r.cost_usd

    def _observe_request(self, provider: str, result: str, seconds: float) -> None:
        key = (provider, result)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.observe(provider, seconds)

    async def _cost_cap_alert(self, outcome: Outcome) -> None:
        cap = self.trader.chain.cost_cap.cap_usd or 0.0
        message = (
            f"today's LLM cost cap of ${cap:.2f} is spent; paid models are skipped "
            "until 00:00 UTC (rules or a local model decide)"
        )
        log.warning("%s\n  → raise llm.daily_cost_cap_usd and reload to go on", message)
        await self.report(
            SysEvent(
                kind="alert",
                level="warning",
                source=self.name,
                message=message,
                details={"cap_usd": cap, "provider": outcome.provider},
            )
        )

    def _failed_decision(self, coin: str, exc: Exception) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._error_logged_s >= ERROR_LOG_EVERY_S:
            self._error_logged_s = now
            log.error(
                "the decision for %s failed (%d failures so far): %r\n"
                "  → no decision was published; this is a bug, please report it",
                coin,
                self.errors,
                exc,
                exc_info=exc,
            )

    def metrics(self) -> list[MetricSample]:
        cost: dict[tuple[str, ...], float] = {(p,): usd for p, usd in self.cost_usd.items()}
        return [
            *labelled(
                "bistoury_llm_requests_total",
                "counter",
                "Requests to language-model providers, by result (ok or why they failed)",
                self.requests,
                ("provider", "result"),
            ),
            *self.latency.samples(),
            *labelled(
                "bistoury_llm_tokens_total",
                "counter",
                "Tokens used",
                self.tokens,
                ("provider", "kind"),
            ),
            *labelled(
                "bistoury_llm_cost_usd_total", "counter", "Spent on models", cost, ("provider",)
            ),
            *labelled(
                "bistoury_llm_decisions_total",
                "counter",
                "Decisions made, by who answered and the action",
                self.decisions,
                ("provider", "action"),
            ),
            sample(
                "bistoury_llm_fallbacks_total",
                "counter",
                "Decisions not given by the first provider of the chain",
                self.fallbacks,
            ),
            sample(
                "bistoury_llm_decision_errors_total",
                "counter",
                "Decisions that failed with an unexpected error (none was published)",
                self.errors,
            ),
        ]


if __name__ == "__main__":
    run(TraderAgent)
