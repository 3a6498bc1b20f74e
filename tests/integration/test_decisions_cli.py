"""``bistouryctl decisions``: records pushed to a running daemon's recorder (as the trader
agent pushes them) are listed, shown in full and summarised; ``--db`` reads the file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq.asyncio

from bistouryd.bus import BusStats, StorePusher
from bistouryd.llm.record import DecisionRecord
from bistouryd.paths import RuntimePaths
from bistouryd.storage.db import open_db
from bistouryd.storage.marketdata import write_batch
from tests.conftest import BISTOURYCTL, Daemon, wait_for
from tests.unit.test_storage_decisions import full_record, record

pytestmark = pytest.mark.integration


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BISTOURYCTL, *args], capture_output=True, text=True, timeout=30)


def records() -> list[DecisionRecord]:
    return [
        full_record(),
        record("BTC", 1_700_000_100_000, provider="rules", model="rules", cost_usd=0.0),
        record("BTC", 1_700_000_200_000, cost_usd=0.002),
    ]


def stored(d: Daemon, n: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = json.loads(d.ctl("decisions", "list", "--json").stdout)[
        "decisions"
    ]
    return found if len(found) == n else None


def test_list_show_and_stats_through_the_daemon(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon().start()
    ctx = zmq.asyncio.Context()
    pusher = StorePusher(ctx, RuntimePaths(d.runtime), "trader", BusStats())
    try:
        for r in records():
            pusher.push(r.topic, r)
        listed = wait_for(lambda: stored(d, 3), 15, "three stored decisions", 0.2)
    finally:
        pusher.close()
        ctx.term()
    assert [r["coin"] for r in listed] == ["ETH", "BTC", "BTC"]  # oldest first

    table = d.ctl("decisions", "--coin", "BTC")
    assert table.returncode == 0 and table.stdout.count("BTC") == 2 and "ETH" not in table.stdout

    shown = d.ctl("decisions", "show", "0123456789")
    assert shown.returncode == 0, shown.stderr
    for part in (
        "open_long",
        "anthropic (claude-x)",
        "fell back   openai (gpt-x): timeout after 2 attempt(s)",
        "RATIONALE",
        "order_flow",
        "PROMPT (v2",
        "user text",
        "RAW ANSWER",
        "training cutoff",
    ):
        assert part in shown.stdout, part

    stats = json.loads(d.ctl("decisions", "stats", "--json").stdout)["stats"]
    assert stats["total"] == 3 and stats["by_provider"]["rules"] == 1
    assert stats["fallback_rate"] == pytest.approx(1 / 3)

    missing = d.ctl("decisions", "show", "ffffffffff")
    assert missing.returncode == 1
    assert "no decision with an id starting 'ffffffffff'" in missing.stderr


def test_the_database_file_can_be_read_while_the_daemon_is_stopped(tmp_path: Path) -> None:
    path = tmp_path / "bistoury.duckdb"
    con = open_db(path)
    write_batch(con, records())
    con.close()
    listed = ctl("decisions", "--db", str(path), "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["decisions"]) == 3
    shown = ctl("decisions", "show", "012345", "--db", str(path))
    assert shown.returncode == 0 and "RATIONALE" in shown.stdout
    stats = ctl("decisions", "stats", "--db", str(path))
    assert stats.returncode == 0 and "decisions        3" in stats.stdout
    short = ctl("decisions", "show", "01", "--db", str(path))
    assert short.returncode == 1 and "ERROR:" in short.stderr
