"""``bistoury-simexchange`` as a real process: the command line, the admin endpoint over HTTP,
going away for real, the firehose, and the errors a user can hit."""

from __future__ import annotations

import collections
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info

from tests.conftest import BIN, wait_for

pytestmark = pytest.mark.integration

SIMEXCHANGE = str(BIN / "bistoury-simexchange")


class Running:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            answer = requests.get(self.url + path, timeout=30)
        else:
            answer = requests.post(self.url + path, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    procs: list[subprocess.Popen[str]] = []

    def run(*args: str) -> Running:
        ready = tmp_path / f"ready-{len(procs)}"
        proc = subprocess.Popen(
            [SIMEXCHANGE, "--port", "0", "--ready-file", str(ready), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"bistoury-simexchange exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
            return ready.exists()

        wait_for(up, 20, "the ready file")
        return Running(proc, ready.read_text().strip())

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_the_command_serves_the_sdk_and_logs_what_it_sent(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    wallet = Account.create()
    ws_log = tmp_path / "sent.ndjson"
    sim = start(
        "--speed",
        "0",
        "--account",
        f"{wallet.address}=1000",
        "--ws-log",
        str(ws_log),
        "--log-level",
        "DEBUG",
    )
    assert sim.url.startswith("http://127.0.0.1:")
    info = Info(sim.url, skip_ws=False)
    got: list[Any] = []
    info.subscribe({"type": "trades", "coin": "BTC"}, got.append)
    time.sleep(0.3)
    clock = sim.admin("/admin/clock", {"advance_ms": 5_000})
    assert clock["speed"] == "paused" and clock["exchange_ms"] == clock["start_ms"] + 5_000
    wait_for(lambda: got, 5, "trades")
    answer = Exchange(wallet, sim.url).market_open("BTC", True, 0.001)
    assert "filled" in answer["response"]["data"]["statuses"][0]
    status = sim.admin("/admin/status")
    origins = {(s["coin"], s["channel"]): s["origin"] for s in status["sources"]}
    assert origins[("BTC", "candle")] == "recorded" and origins[("BTC", "trades")] == "synthetic"
    assert origins[("BTC", "l2Book")] == "synthetic"
    assert status["accounts"][0]["positions"] == {"BTC": "0.001"}
    log = sim.admin("/admin/ws-log?since=0")
    frames = [f["text"] for f in log["frames"]]
    assert frames[0] == "Websocket connection established."
    assert any(json.loads(t).get("channel") == "trades" for t in frames[1:])
    info.disconnect_websocket()
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(timeout=10) == 0
    stdout = sim.proc.stdout.read()  # type: ignore[union-attr]
    [line] = stdout.splitlines()
    assert line.startswith(f"{sim.url} ready: replay of BTC, ETH from 2025-07-2")
    assert line.endswith(" at paused")
    filed = [json.loads(line)["text"] for line in ws_log.read_text().splitlines()]
    assert filed == frames
    stderr = sim.proc.stderr.read()  # type: ignore[union-attr]
    assert "POST /exchange -> 200" in stderr and "Traceback" not in stderr


def test_going_away_closes_the_port_and_comes_back_on_it(start: Callable[..., Running]) -> None:
    sim = start("--speed", "0")
    port = int(sim.url.rsplit(":", 1)[1])
    sim.admin("/admin/faults/go-away", {"seconds": 1.5})

    def refused() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_for(refused, 2, "the port to refuse connections", interval=0.02)
    wait_for(lambda: not refused(), 5, "the port to accept connections again", interval=0.05)
    assert Info(sim.url, skip_ws=True).all_mids()


def test_http_faults_over_the_admin_endpoint(start: Callable[..., Running]) -> None:
    sim = start("--speed", "0")
    sim.admin("/admin/faults/http-error", {"status": 500, "seconds": 0.5})
    assert requests.post(sim.url + "/info", json={"type": "allMids"}).status_code == 500
    time.sleep(0.6)
    assert requests.post(sim.url + "/info", json={"type": "allMids"}).status_code == 200
    bad = requests.post(sim.url + "/admin/faults/http-error", json={"status": 200, "count": 1})
    assert bad.status_code == 400 and set(bad.json()) == {"code", "msg"}


def test_a_synthetic_firehose(start: Callable[..., Running]) -> None:
    sim = start("--synthetic", "12", "--rate", "1500", "--seed", "4")
    info = Info(sim.url, skip_ws=False)
    coins = list(info.all_mids())
    assert len(coins) == 12 and coins[:2] == ["BTC", "ETH"]
    counts: collections.Counter[str] = collections.Counter()
    for coin in coins:
        for kind in ("trades", "l2Book"):
            info.subscribe({"type": kind, "coin": coin}, lambda m: counts.update([m["channel"]]))  # type: ignore[misc, arg-type]
    time.sleep(1.0)
    before, started = sum(counts.values()), time.monotonic()
    time.sleep(2.0)
    rate = (sum(counts.values()) - before) / (time.monotonic() - started)
    info.disconnect_websocket()
    assert rate >= 1000, f"only {rate:.0f} messages/s"
    status = sim.admin("/admin/status")
    assert status["mode"] == "synthetic"
    assert {s["origin"] for s in status["sources"] if s["coin"] != "*"} == {"synthetic"}


def test_replaying_a_folder_of_the_users_own_files(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    first = 1_749_999_600_000  # a whole hour
    bars = []
    px = 150.0
    for i in range(3 * 24 * 60):
        o, c = px, round(px * (1.0005 if i % 3 else 0.9995), 3)
        bars.append(
            {
                "t": first + i * 60_000,
                "T": first + i * 60_000 + 59_999,
                "s": "SOL",
                "i": "1m",
                "o": str(o),
                "c": str(c),
                "h": str(max(o, c) + 0.05),
                "l": str(min(o, c) - 0.05),
                "v": "12.34",
                "n": 9,
            }
        )
        px = c
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "sol.json").write_text(json.dumps(bars))
    sim = start("--data", str(tmp_path / "mine"), "--speed", "0")
    info = Info(sim.url, skip_ws=True)
    assert info.meta()["universe"] == [{"szDecimals": 2, "name": "SOL", "maxLeverage": 20}]
    now = sim.admin("/admin/status")["clock"]["exchange_ms"]
    assert now == first + 86_400_000
    candles = info.candles_snapshot("SOL", "1h", first, now + 86_400_000)
    assert len(candles) == 24 and candles[0]["o"] == bars[0]["o"]


def test_help() -> None:
    done = subprocess.run([SIMEXCHANGE, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for option in ("--data", "--speed", "--synthetic", "--account", "--agent", "--ready-file"):
        assert option in done.stdout


def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--data", "/nonexistent/folder"], "does not exist"),
        (["--account", "0x12=100"], "40 hex digits"),
        (["--speed", "fast"], "speed must look like"),
        (["--start", "tomorrow"], "ISO-8601"),
        (["--synthetic", "3", "--data", "/tmp"], "alternatives"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(args: list[str], says: str) -> None:
    done = subprocess.run(
        [SIMEXCHANGE, "--port", "0", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert done.stderr.startswith("ERROR: ") and "\n  → " in done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_a_port_in_use_is_reported(tmp_path: Path) -> None:
    for port in busy_port():
        done = subprocess.run(
            [SIMEXCHANGE, "--port", str(port)], capture_output=True, text=True, timeout=30
        )
        assert done.returncode != 0
        assert "already in use" in done.stderr and "--port" in done.stderr
        assert "Traceback" not in done.stderr


def test_an_unreadable_data_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('[{"t": 1, "T": 2, "s": "X", "i": "1m"')
    (tmp_path / "bad.jsonl").write_text('{"channel": "l2Book"}\nnot json\n')
    done = subprocess.run(
        [SIMEXCHANGE, "--port", "0", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and done.stderr.startswith("ERROR: cannot use ")
    assert "Traceback" not in done.stderr
