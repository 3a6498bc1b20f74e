"""bistouryctl: rendering, --since parsing, finding the socket and the retrying client."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import zmq

from bistouryctl import render
from bistouryctl.client import Client, NoReply, NotRunning, Refused, find_socket, listening
from bistouryctl.commands.daemon import parse_since
from bistouryd.control import AgentStatus, EventsResult, StatusResult
from bistouryd.events import SysEvent

# ---- durations and sizes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (5.25, "5.2s"),
        (59.4, "59.4s"),
        (60, "1m 00s"),
        (61.9, "1m 01s"),
        (3599, "59m 59s"),
        (3600, "1h 00m 00s"),
        (3661, "1h 01m 01s"),
        (86399, "23h 59m 59s"),
        (86400, "1d 0h 00m"),
        (90061, "1d 1h 01m"),
        (10 * 86400 + 5 * 3600 + 7 * 60, "10d 5h 07m"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert render.duration(seconds) == text


@pytest.mark.parametrize(
    ("num", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (1536, "1.5 KB"),
        (1024**2, "1.0 MB"),
        (int(2.5 * 1024**2), "2.5 MB"),
        (5 * 1024**3, "5.0 GB"),
        (3 * 1024**4, "3072.0 GB"),
    ],
)
def test_size(num: float | None, text: str) -> None:
    assert render.size(num) == text


def test_table_alignment() -> None:
    text = render.table(["A", "LONGHEAD", "C"], [["xxxxx", 1, ""], ["y", 22222222222, "z"]])
    assert text.split("\n") == [
        "A      LONGHEAD     C",
        "xxxxx  1",
        "y      22222222222  z",
    ]


def test_table_columns_start_at_same_offset() -> None:
    rows = [["recorder", "running", 12], ["x", "crash-looping", 123456]]
    lines = render.table(["NAME", "STATE", "PID"], rows).split("\n")
    starts = {
        line.index(cell) for line, cell in zip(lines, ["STATE", "running", "crash"], strict=True)
    }
    assert len(starts) == 1
    assert {line.rindex(str(c)) for line, c in zip(lines, ["PID", 12, 123456], strict=True)} == {
        len("recorder") + 2 + len("crash-looping") + 2
    }
    assert render.table(["ONLY"], []) == "ONLY"


def test_utc() -> None:
    assert render.utc(1_750_000_245_000) == "2025-06-15 15:10:45"
    assert render.utc(0) == "1970-01-01 00:00:00"


# ---- status and events ------------------------------------------------------------------


def status_dict(**override: Any) -> dict[str, Any]:
    agents = [
        AgentStatus(
            name="recorder",
            pid=4242,
            alive=True,
            state="running",
            restarts=2,
            heartbeat_age_s=0.5,
            uptime_s=3661,
            rss_bytes=int(1.5 * 1024**2),
            config_sha256="c" * 64,
        ),
        AgentStatus(
            name="collector",
            pid=None,
            alive=False,
            state="backoff",
            restarts=7,
            heartbeat_age_s=None,
            uptime_s=None,
            rss_bytes=None,
            config_sha256=None,
        ),
    ]
    result = StatusResult(
        version="0.1.0",
        pid=1234,
        mode="collect",
        paused=["trading"],
        uptime_s=90061,
        started_ts_ms=1_750_000_000_000,
        config_path="/etc/bistoury/config.yaml",
        config_sha256="0123456789abcdef" * 4,
        secrets_set=["HYPERLIQUID_PRIVATE_KEY", "OPENAI_API_KEY"],
        state_dir="/var/lib/bistoury",
        runtime_dir="/run/bistoury",
        metrics_url="http://127.0.0.1:9464/metrics",
        ready=True,
        last_error=None,
        agents=agents,
    )
    data: dict[str, Any] = json.loads(result.model_dump_json())
    data.update(override)
    return data


def test_status_rendering() -> None:
    lines = render.status(status_dict()).split("\n")
    assert lines[:10] == [
        "bistouryd 0.1.0 (pid 1234)",
        "  mode       collect",
        "  paused     trading",
        "  uptime     1d 1h 01m",
        "  ready      yes  (1/2 agents up)",
        "  config     /etc/bistoury/config.yaml (sha256 0123456789ab)",
        "  secrets    HYPERLIQUID_PRIVATE_KEY, OPENAI_API_KEY",
        "  state dir  /var/lib/bistoury",
        "  metrics    http://127.0.0.1:9464/metrics",
        "  last error none",
    ]
    assert lines[10] == ""
    header, recorder, collector = lines[11:]
    assert header.split() == ["AGENT", "STATE", "PID", "RESTARTS", "HEARTBEAT", "UPTIME", "RSS"]
    assert recorder.split()[:6] == ["recorder", "running", "4242", "2", "0.5s", "ago"]
    assert "1h 01m 01s" in recorder
    assert recorder.endswith("1.5 MB")
    assert collector.split() == ["collector", "backoff", "-", "7", "-", "-", "-"]
    assert header.index("STATE") == recorder.index("running") == collector.index("backoff")
    assert header.index("RSS") == recorder.index("1.5 MB")


def test_status_rendering_quiet_daemon() -> None:
    text = render.status(
        status_dict(
            paused=[],
            secrets_set=[],
            metrics_url=None,
            ready=False,
            last_error="agent recorder gave up",
            agents=[],
        )
    )
    assert "  paused     no" in text
    assert "  secrets    none set" in text
    assert "  metrics    off" in text
    assert "  ready      not yet  (0/0 agents up)" in text
    assert "  last error agent recorder gave up" in text
    assert text.endswith("AGENT  STATE  PID  RESTARTS  HEARTBEAT  UPTIME  RSS")


def test_events_rendering() -> None:
    events = [
        SysEvent(id="1", ts_ms=1_750_000_245_000, kind="start", message="started"),
        SysEvent(
            id="2",
            ts_ms=1_750_000_246_000,
            kind="agent_restart",
            level="warning",
            source="supervisor",
            message="recorder restarted",
        ),
    ]
    result = json.loads(EventsResult(events=events, pending=0).model_dump_json())
    lines = render.events(result).split("\n")
    assert lines[0].split() == ["TIME", "(UTC)", "LEVEL", "KIND", "SOURCE", "MESSAGE"]
    assert lines[1].split() == [
        "2025-06-15",
        "15:10:45",
        "info",
        "start",
        "orchestrator",
        "started",
    ]
    assert lines[2].split()[:5] == [
        "2025-06-15",
        "15:10:46",
        "warning",
        "agent_restart",
        "supervisor",
    ]
    assert lines[2].endswith("recorder restarted")
    assert len(lines) == 3
    result["pending"] = 4
    assert render.events(result).endswith("\n(4 not yet written to the database)")
    assert render.events({"events": [], "pending": 3}) == "no events"
    assert render.events({}) == "no events"


# ---- --since ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("7d", 7 * 86400), ("10s", 10), ("1.5h", 5400), (" 5m ", 300)],
)
def test_parse_since_durations(text: str, seconds: float) -> None:
    before = time.time()
    got = parse_since(text)
    after = time.time()
    assert int((before - seconds) * 1000) - 1 <= got <= int((after - seconds) * 1000) + 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=timezone.utc)),
        ("2026-01-31T12:00", datetime(2026, 1, 31, 12, tzinfo=timezone.utc)),
        ("2026-01-31 12:00:30", datetime(2026, 1, 31, 12, 0, 30, tzinfo=timezone.utc)),
        ("2026-01-31T12:00+02:00", datetime(2026, 1, 31, 10, tzinfo=timezone.utc)),
    ],
)
def test_parse_since_dates(text: str, expected: datetime) -> None:
    assert parse_since(text) == int(expected.timestamp() * 1000)


@pytest.mark.parametrize("text", ["yesterday", "", "30 m", "5w", "-5m", "2026-13-01", "m30"])
def test_parse_since_garbage(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
        parse_since(text)


# ---- finding the socket -----------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="bk", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_find_socket_missing_path(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with pytest.raises(NotRunning) as info:
        find_socket(str(path))
    assert info.value.tried == [path]
    assert str(path) in str(info.value)


def test_find_socket_stale_file(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    assert listening(path) is False
    with pytest.raises(NotRunning):
        find_socket(str(path))


def test_find_socket_listening(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = short_dir / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    try:
        assert listening(path) is True
        assert find_socket(str(path)) == path
        monkeypatch.setenv("BISTOURY_SOCKET", str(path))
        assert find_socket(None) == path
    finally:
        server.close()


def test_listening_on_a_zmq_socket(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{path}")
    try:
        assert listening(path) is True
    finally:
        router.close()
        ctx.term()


# ---- the client against a real ROUTER ---------------------------------------------------


class FakeDaemon(threading.Thread):
    """A ROUTER that ignores the first ``drop`` requests and answers the rest."""

    def __init__(self, path: Path, drop: int, reply: dict[str, Any]):
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"ipc://{path}")
        self.drop = drop
        self.reply = reply
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            identity, empty, body = self.sock.recv_multipart()
            request = json.loads(body)
            self.seen.append(request)
            if len(self.seen) <= self.drop:
                continue
            answer = {"v": 1, "id": request["id"], **self.reply}
            self.sock.send_multipart([identity, empty, json.dumps(answer).encode()])

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.sock.close()
        self.ctx.term()


def test_client_retries_with_the_same_id(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    daemon = FakeDaemon(path, drop=1, reply={"ok": True, "result": {"mode": "idle"}})
    daemon.start()
    try:
        result = Client(path, timeout_s=0.2, attempts=2).call("status")
    finally:
        daemon.close()
    assert result == {"mode": "idle"}
    assert len(daemon.seen) == 2
    assert daemon.seen[0] == daemon.seen[1]
    assert daemon.seen[0]["cmd"] == "status" and daemon.seen[0]["v"] == 1


def test_client_refused_and_no_reply(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    error = {"message": "not now", "hints": ["later"]}
    daemon = FakeDaemon(path, drop=0, reply={"ok": False, "error": error})
    daemon.start()
    try:
        with pytest.raises(Refused) as info:
            Client(path, timeout_s=1).call("mode", mode="live")
    finally:
        daemon.close()
    assert (info.value.message, info.value.hints) == ("not now", ["later"])
    assert daemon.seen[0]["mode"] == "live"

    silent = FakeDaemon(path, drop=10, reply={})
    silent.start()
    try:
        with pytest.raises(NoReply):
            Client(path, timeout_s=0.1, attempts=2).call("status")
    finally:
        silent.close()
    assert len(silent.seen) == 2
