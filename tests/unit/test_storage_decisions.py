"""The decisions table: stored by the recorder, read by ``bistoury decisions`` and the
decision cache."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bistouryd.llm.decision import SignalContribution, TradeDecision
from bistouryd.llm.record import DecisionRecord, FallbackStep
from bistouryd.storage.db import bundled_migrations, open_db
from bistouryd.storage.decisions import (
    cached_decision,
    decision_stats,
    get_decision,
    insert_decisions,
    query_decisions,
)
from bistouryd.storage.marketdata import WriteResult


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "x.duckdb")
    yield connection
    connection.close()


def write(con: duckdb.DuckDBPyConnection, records: Sequence[DecisionRecord]) -> WriteResult:
    result = WriteResult()
    con.begin()
    insert_decisions(con, records, result)
    con.commit()
    return result


def hold(coin: str, confidence: float = 0.5) -> TradeDecision:
    return TradeDecision(
        coin=coin, action="hold", size_fraction=0, confidence=confidence, rationale="Flat."
    )


def record(
    coin: str = "BTC",
    ts_ms: int = 1000,
    decision: TradeDecision | None = None,
    **fields: Any,
) -> DecisionRecord:
    values: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-x",
        "prompt_version": "v1",
        "prompt_sha256": "a" * 64,
        "prompt_system": "You trade.",
        "prompt_user": f"Signals for {coin}.",
        "raw_answer": "{}",
        "latency_s": 1.0,
    }
    values.update(fields)
    return DecisionRecord(ts_ms=ts_ms, coin=coin, decision=decision or hold(coin), **values)


def full_record() -> DecisionRecord:
    return DecisionRecord(
        id="0123456789abcdef",
        ts_ms=1_700_000_000_000,
        coin="ETH",
        decision=TradeDecision(
            coin="ETH",
            action="open_long",
            size_fraction=0.3,
            stop_loss_pct=0.02,
            take_profit_pct=0.05,
            confidence=0.8,
            rationale='Order flow and funding agree: "long", é.',
            contributions=[
                SignalContribution(
                    strategy="order_flow", direction="long", weight=0.7, reason="bids stack"
                ),
                SignalContribution(
                    strategy="funding_rate", direction="neutral", weight=0.3, reason="flat"
                ),
            ],
        ),
        provider="anthropic",
        model="claude-x",
        prompt_version="v2",
        prompt_sha256="b" * 64,
        prompt_system="system text",
        prompt_user="user text\nwith lines",
        raw_answer='{"action": "open_long"}',
        latency_s=2.5,
        input_tokens=1200,
        output_tokens=150,
        cost_usd=0.0123,
        fallbacks=[
            FallbackStep(
                provider="openai", model="gpt-x", reason="timeout", message="30 s", attempts=2
            )
        ],
        signal_ids=["s1", "s2"],
        cached=False,
        contaminated=True,
    )


def test_the_migration_is_bundled(con: duckdb.DuckDBPyConnection) -> None:
    assert "decisions" in [m.name for m in bundled_migrations()]
    assert con.execute("SELECT count(*) FROM decisions").fetchone() == (0,)


def test_a_decision_round_trips_with_contributions_and_fallbacks(
    con: duckdb.DuckDBPyConnection,
) -> None:
    written = [full_record(), record(input_tokens=None, output_tokens=None)]
    result = write(con, written)
    assert result.written == {"decisions": 2} and not result.rejected
    assert query_decisions(con, limit=10) == [written[1], written[0]]  # oldest first


def test_a_decision_written_twice_is_stored_once(con: duckdb.DuckDBPyConnection) -> None:
    r = full_record()
    write(con, [r])
    again = write(con, [r, r])
    assert again.duplicates == {"decisions": 2} and not again.written.get("decisions")
    assert query_decisions(con, limit=10) == [r]


def test_filters_limit_and_order(con: duckdb.DuckDBPyConnection) -> None:
    rows = [
        record(coin, ts, provider=provider)
        for ts in (1000, 2000, 3000)
        for coin in ("BTC", "ETH")
        for provider in ("openai", "rules")
    ]
    write(con, rows)
    newest = query_decisions(con, limit=5)
    assert [d.ts_ms for d in newest] == [2000, 3000, 3000, 3000, 3000]  # oldest first
    btc = query_decisions(con, limit=100, coin="BTC", provider="rules")
    assert [(d.coin, d.provider, d.ts_ms) for d in btc] == [
        ("BTC", "rules", t) for t in (1000, 2000, 3000)
    ]
    eth = query_decisions(con, limit=100, coin="ETH", since_ms=2000)
    assert [d.ts_ms for d in eth] == [2000, 2000, 3000, 3000]
    assert all(d.coin == d.decision.coin == "ETH" for d in eth)


def test_lookup_by_id_prefix(con: duckdb.DuckDBPyConnection) -> None:
    a = record(id="abcdef0001")
    b = record(id="abcdef0002", ts_ms=2000)
    write(con, [a, b])
    assert get_decision(con, "abcdef0001") == a
    assert get_decision(con, "abcdef00020") is None
    assert get_decision(con, "ffffff") is None
    with pytest.raises(ValueError, match="abcdef0001, abcdef0002"):
        get_decision(con, "abcdef")
    with pytest.raises(ValueError, match="too short"):
        get_decision(con, "abcde")


def test_the_cache_returns_the_newest_non_rules_decision_for_the_prompt(
    con: duckdb.DuckDBPyConnection,
) -> None:
    key: dict[str, Any] = {"provider": "openai", "model": "gpt-x", "prompt_version": "v1"}
    sha = "c" * 64
    old = record(ts_ms=1000, prompt_sha256=sha, **key)
    new = record(ts_ms=2000, prompt_sha256=sha, **key)
    write(
        con,
        [
            old,
            new,
            record(ts_ms=3000, prompt_sha256=sha, provider="rules", model="rules"),
            record(ts_ms=4000, prompt_sha256=sha, provider="openai", model="gpt-y"),
            record(
                ts_ms=5000, prompt_sha256=sha, provider="openai", model="gpt-x", prompt_version="v2"
            ),
            record(ts_ms=6000, prompt_sha256="d" * 64, **key),
        ],
    )
    assert cached_decision(con, "openai", "gpt-x", "v1", sha) == new
    assert cached_decision(con, "rules", "rules", "v1", sha) is None
    assert cached_decision(con, "openai", "gpt-x", "v1", "e" * 64) is None


def test_stats_on_a_handful_of_decisions(con: duckdb.DuckDBPyConnection) -> None:
    step = FallbackStep(provider="openai", model="gpt-x", reason="error", message="500")
    long = TradeDecision(
        coin="BTC",
        action="open_long",
        size_fraction=0.5,
        stop_loss_pct=0.01,
        confidence=0.9,
        rationale="Up.",
    )
    write(
        con,
        [
            record(ts_ms=1000, decision=hold("BTC", 0.1), latency_s=1.0, cost_usd=0.01),
            record(ts_ms=2000, decision=hold("BTC", 0.25), latency_s=2.0, cost_usd=0.02),
            record(ts_ms=3000, decision=long, latency_s=3.0, cost_usd=0.03, cached=True),
            record(
                ts_ms=4000,
                decision=hold("BTC", 1.0),
                provider="anthropic",
                latency_s=4.0,
                cost_usd=0.04,
                fallbacks=[step],
            ),
            record(
                ts_ms=5000,
                decision=hold("BTC", 0.6),
                provider="rules",
                model="rules",
                latency_s=5.0,
                fallbacks=[step, step],
            ),
            record(ts_ms=6000, decision=hold("BTC", 0.75), latency_s=6.0),
        ],
    )
    stats = decision_stats(con)
    assert stats.total == 6
    assert stats.by_action == {"hold": 5, "open_long": 1}
    assert stats.by_provider == {"openai": 4, "anthropic": 1, "rules": 1}
    assert stats.cached == 1
    assert stats.fallback_rate == pytest.approx(2 / 6)
    assert stats.cost_usd_total == pytest.approx(0.10)
    assert stats.cost_usd_per_decision == pytest.approx(0.10 / 6)
    # latencies 1..6: p50 = 3.5; p95 at position 0.95 * 5 = 4.75 → 5.75
    assert stats.latency_p50_s == pytest.approx(3.5)
    assert stats.latency_p95_s == pytest.approx(5.75)
    assert stats.confidence_buckets == {"0-0.25": 1, "0.25-0.5": 1, "0.5-0.75": 1, "0.75-1": 3}

    recent = decision_stats(con, since_ms=4000, provider="openai")
    assert recent.total == 1 and recent.by_provider == {"openai": 1}
    assert recent.fallback_rate == 0 and recent.cost_usd_total == 0
    assert recent.latency_p50_s == pytest.approx(6.0)

    empty = decision_stats(con, since_ms=10_000)
    assert empty.total == 0 and empty.by_action == {} and empty.fallback_rate == 0
    assert empty.cost_usd_per_decision == 0 and empty.latency_p50_s is None
    assert empty.confidence_buckets == {"0-0.25": 0, "0.25-0.5": 0, "0.5-0.75": 0, "0.75-1": 0}


def test_the_recorders_batches_store_decisions_with_the_rest(
    con: duckdb.DuckDBPyConnection,
) -> None:
    from bistouryd.storage.marketdata import write_batch

    rec = full_record()
    result = write_batch(con, [rec])
    assert result.written == {"decisions": 1}
    assert query_decisions(con, limit=5) == [rec]
