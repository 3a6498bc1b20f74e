"""The daemon as a user and systemd see it: real processes, sockets and files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import zmq

from tests.conftest import BASE_CONFIG, BISTOURYCTL, REPO, Daemon, wait_for

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]


def kinds(events: list[dict[str, object]]) -> list[object]:
    return [e["kind"] for e in events]


# ---- systemd notifications -----------------------------------------------------------


def test_ready_status_and_watchdog_are_sent(make_daemon: MakeDaemon) -> None:
    d = make_daemon(extra_env={"WATCHDOG_USEC": "400000"})  # ping every 0.2 s
    d.start()
    assert d.notify is not None
    wait_for(lambda: d.notify.has("READY=1"), 5, "READY=1")
    status_lines = [line for _, line in d.notify.lines() if line.startswith("STATUS=")]
    assert any("mode idle" in line and "agents 1/1 up" in line for line in status_lines)
    wait_for(lambda: len(d.notify.times("WATCHDOG=1")) >= 3, 5, "three WATCHDOG=1 pings")


def test_watchdog_pauses_while_an_agent_does_not_heartbeat(make_daemon: MakeDaemon) -> None:
    config = BASE_CONFIG.replace("heartbeat_timeout_s: 1.0", "heartbeat_timeout_s: 10")
    d = make_daemon(config=config, extra_env={"WATCHDOG_USEC": "400000"})
    d.start()
    assert d.notify is not None
    pid = d.agent()["pid"]
    wait_for(lambda: len(d.notify.times("WATCHDOG=1")) >= 2, 5, "watchdog pings")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # heartbeats are 0.2 s apart: after 0.4 s the agent is stale
        quiet_from = time.monotonic()
        time.sleep(1.5)
        assert [t for t in d.notify.times("WATCHDOG=1") if t > quiet_from] == []
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(
        lambda: any(t > resumed for t in d.notify.times("WATCHDOG=1")), 5, "watchdog to resume"
    )
    assert d.agent()["restarts"] == 0


# ---- supervision ---------------------------------------------------------------------


def test_kill_9_agent_is_restarted_and_counted(daemon: Daemon) -> None:
    before = daemon.agent()
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict[str, object] | None:
        agent = daemon.agent()
        return agent if agent["alive"] and agent["pid"] != before["pid"] else None

    after = wait_for(restarted, 5, "the recorder to be restarted")
    assert after["restarts"] == 1
    assert not psutil.pid_exists(before["pid"]) or (
        psutil.Process(before["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    events = wait_for(
        lambda: (e := daemon.events()) and "agent_restart" in kinds(e) and e, 5, "restart events"
    )
    exits = [e for e in events if e["kind"] == "agent_exit"]
    assert exits and "SIGKILL" in str(exits[0]["message"])
    # The metrics count the restart too.
    assert 'bistoury_agent_restarts_total{agent="recorder"} 1.0' in scrape(daemon)


def test_silent_agent_is_killed_and_restarted(daemon: Daemon) -> None:
    before = daemon.agent()
    os.kill(before["pid"], signal.SIGSTOP)
    started = time.monotonic()
    after = wait_for(
        lambda: (a := daemon.agent())["alive"] and a["pid"] != before["pid"] and a,
        5,
        "the frozen recorder to be replaced",
    )
    assert time.monotonic() - started < 5
    assert after["restarts"] == 1
    assert "agent_silent" in kinds(daemon.events())


def test_gives_up_after_too_many_crashes(make_daemon: MakeDaemon) -> None:
    config = BASE_CONFIG.replace(
        "enabled: [recorder]", "enabled: [recorder]\n  max_crashes: 3\n  crash_window_s: 60"
    )
    d = make_daemon(config=config)
    d.start()
    for crash in range(3):
        pid = wait_for(lambda: (a := d.agent())["alive"] and a["pid"], 5, "recorder up")
        os.kill(pid, signal.SIGKILL)
        if crash < 2:
            wait_for(lambda p=pid: (a := d.agent())["alive"] and a["pid"] != p, 5, "restart")
    code = d.wait_exit(timeout=20)
    assert code == 1
    assert "giving up" in d.log_file.read_text()
    assert d.processes() == []


# ---- reload --------------------------------------------------------------------------


def test_sighup_applies_a_valid_change_without_restarting_agents(daemon: Daemon) -> None:
    assert daemon.proc is not None and daemon.notify is not None
    before = daemon.status()
    daemon.config.write_text(
        daemon.config.read_text().replace("level: DEBUG", "level: INFO")
        + "trading:\n  pairs: [BTC, ETH, SOL]\n"
    )
    sent = time.monotonic()
    os.kill(daemon.proc.pid, signal.SIGHUP)

    def applied() -> dict[str, object] | None:
        s = daemon.status()
        agent = s["agents"][0]
        changed = s["config_sha256"] != before["config_sha256"]
        return s if changed and agent["config_sha256"] == s["config_sha256"] else None

    after = wait_for(applied, 5, "the new config to reach the recorder")
    assert after["agents"][0]["pid"] == before["agents"][0]["pid"]
    assert after["agents"][0]["restarts"] == 0
    reloading = [
        (t, line)
        for t, line in daemon.notify.lines()
        if t >= sent and line.startswith(("RELOADING=1", "MONOTONIC_USEC=", "READY=1"))
    ]
    names = [line.split("=")[0] for _, line in reloading]
    assert names[:3] == ["RELOADING", "MONOTONIC_USEC", "READY"]
    usec = int(reloading[1][1].split("=")[1])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
    reloads = [e for e in daemon.events() if e["kind"] == "reload"]
    assert reloads and "trading.pairs" in str(reloads[-1]["message"])


def test_sighup_with_a_broken_file_keeps_the_old_config(daemon: Daemon) -> None:
    assert daemon.proc is not None
    before = daemon.status()
    daemon.config.write_text("trading:\n  pairs: [BTC\n")
    os.kill(daemon.proc.pid, signal.SIGHUP)
    events = wait_for(
        lambda: (e := daemon.events()) and "config_error" in kinds(e) and e,
        5,
        "the rejected reload to be recorded",
    )
    after = daemon.status()
    assert after["config_sha256"] == before["config_sha256"]
    assert after["agents"][0]["pid"] == before["agents"][0]["pid"]
    assert daemon.proc.poll() is None
    error = next(e for e in events if e["kind"] == "config_error")
    assert "config.yaml:3: (syntax)" in str(error["message"])
    assert "flow sequence started on line 2" in str(error["message"])


def test_reload_command_reports_problems_and_exit_1(daemon: Daemon) -> None:
    daemon.config.write_text(BASE_CONFIG + "trading:\n  max_postions: 4\n")
    done = daemon.ctl("reload")
    assert done.returncode == 1
    assert "rejected" in done.stderr
    assert "max_postions" in done.stderr and "did you mean 'max_positions'" in done.stderr
    daemon.config.write_text(BASE_CONFIG + "trading:\n  max_positions: 4\n")
    done = daemon.ctl("reload")
    assert done.returncode == 0, done.stderr
    assert "trading.max_positions" in done.stdout


def test_reload_rereads_the_env_file(make_daemon: MakeDaemon) -> None:
    key = "ab" * 32
    d = make_daemon(env=f"HYPERLIQUID_PRIVATE_KEY=0x{key}\n").start()
    assert d.status()["secrets_set"] == ["HYPERLIQUID_PRIVATE_KEY"]
    assert d.env_file is not None
    d.env_file.write_text(
        f"HYPERLIQUID_PRIVATE_KEY=0x{'cd' * 32}\nOPENAI_API_KEY=sk-test-123456789012345\n"
    )
    done = d.ctl("reload", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["secrets_changed"] == ["HYPERLIQUID_PRIVATE_KEY", "OPENAI_API_KEY"]
    status_text = d.ctl("status", "--json").stdout
    assert key not in status_text and "cd" * 32 not in status_text
    assert sorted(json.loads(status_text)["secrets_set"]) == [
        "HYPERLIQUID_PRIVATE_KEY",
        "OPENAI_API_KEY",
    ]
    log_text = d.log_file.read_text()
    assert key not in log_text and "cd" * 32 not in log_text and "sk-test-1234" not in log_text


# ---- control socket ------------------------------------------------------------------


def raw_request(
    path: Path, frames: list[bytes], timeout_ms: int = 3000
) -> dict[str, object] | None:
    """Send frames from a DEALER (so any framing can be tried); None when no reply came."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send_multipart(frames)
        if not sock.poll(timeout_ms):
            return None
        reply = sock.recv_multipart()
        result: dict[str, object] = json.loads(reply[-1])
        return result
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([b"", b"\x00\xffnot json"], "not JSON"),
        ([b"", b"[1, 2, 3]"], "invalid request"),
        ([b"", b'{"v": 1, "id": "a", "cmd": "launch-missiles"}'], "unknown command"),
        ([b"", b'{"v": 9, "id": "a", "cmd": "status"}'], "protocol version"),
        ([b"", b'{"v": 1, "id": "a", "cmd": "mode", "mode": "yolo"}'], "invalid request"),
        ([b"", b'{"v": 1, "id": "a", "cmd": "status", "extra": 1}'], "invalid request"),
        ([b"", b'{"v": 1, "id": "a", "cmd": "status"}', b"more"], "exactly one frame"),
        ([b"", b"x" * 200_000], "too large"),
    ],
)
def test_bad_control_requests_get_errors_and_daemon_survives(
    daemon: Daemon, frames: list[bytes], expected: str
) -> None:
    reply = raw_request(daemon.socket, frames)
    assert reply is not None and reply["ok"] is False
    assert expected in json.dumps(reply["error"])
    assert daemon.status()["mode"] == "idle"


def test_huge_frame_is_dropped_and_daemon_survives(daemon: Daemon) -> None:
    assert raw_request(daemon.socket, [b"", b"y" * 3_000_000], timeout_ms=1000) is None
    assert daemon.status()["ready"] is True
    metrics = scrape(daemon)
    assert 'bistoury_control_requests_total{command="status",result="ok"}' in metrics


def test_control_socket_is_0660_and_runtime_dir_0750(daemon: Daemon) -> None:
    assert daemon.socket.stat().st_mode & 0o777 == 0o660
    assert daemon.runtime.stat().st_mode & 0o777 == 0o750


# ---- bistouryctl ---------------------------------------------------------------------


def test_ctl_without_daemon_exits_3_and_says_how_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [BISTOURYCTL, "--socket", str(tmp_path / "control.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 3
    assert "not running" in done.stderr and "bistouryd --config" in done.stderr
    assert "Traceback" not in done.stderr


def test_ctl_with_stale_socket_file_exits_3(tmp_path: Path) -> None:
    import socket as pysocket

    path = tmp_path / "control.sock"
    sock = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # leaves the file behind with nobody listening, as after kill -9
    done = subprocess.run(
        [BISTOURYCTL, "--socket", str(path), "status"], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 3, done.stderr


def test_ctl_usage_error_exits_2(daemon: Daemon) -> None:
    assert daemon.ctl("mode", "moon").returncode == 2
    assert daemon.ctl("frobnicate").returncode == 2


def test_status_human_and_json(daemon: Daemon) -> None:
    human = daemon.ctl("status")
    assert human.returncode == 0
    assert "mode       idle" in human.stdout and "recorder" in human.stdout
    status = daemon.status()
    for key in ("mode", "paused", "uptime_s", "version", "config_sha256", "agents"):
        assert key in status
    agent = status["agents"][0]
    for key in ("name", "pid", "alive", "restarts", "heartbeat_age_s"):
        assert key in agent
    assert agent["heartbeat_age_s"] < 1.0


def test_status_does_not_import_the_heavy_stack(daemon: Daemon) -> None:
    done = subprocess.run(
        [
            str(Path(BISTOURYCTL).parent / "python"),
            "-X",
            "importtime",
            BISTOURYCTL,
            "--socket",
            str(daemon.socket),
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    heavy = {
        "duckdb",
        "pydantic",
        "yaml",
        "hyperliquid",
        "langchain",
        "langchain_core",
        "prometheus_client",
        "psutil",
        "eth_account",
        "bistouryd.config",
    }
    assert imported, "no -X importtime output"
    assert not heavy & imported


def test_mode_pause_resume_are_persisted_across_restart(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    assert d.ctl("mode", "collect").returncode == 0
    assert d.ctl("pause", "trading").returncode == 0
    refused = d.ctl("mode", "live")
    assert refused.returncode == 1 and "confirm" in refused.stderr
    assert d.ctl("stop").returncode == 0
    assert d.wait_exit() == 0
    d.start()
    status = d.status()
    assert status["mode"] == "collect"
    assert status["paused"] == ["trading"]
    assert d.ctl("resume").returncode == 0
    assert d.status()["paused"] == []
    history = kinds(d.events())
    for kind in ("start", "mode", "pause", "stop", "resume"):
        assert kind in history
    metrics = scrape(d)
    assert 'bistoury_mode{mode="collect"} 1.0' in metrics


def test_stop_is_clean(daemon: Daemon) -> None:
    assert daemon.notify is not None
    agent_pid = daemon.agent()["pid"]
    started = time.monotonic()
    done = daemon.ctl("stop")
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert daemon.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert daemon.notify.has("STOPPING=1")
    assert daemon.processes() == []
    assert not psutil.pid_exists(agent_pid)
    assert not daemon.socket.exists()
    after = subprocess.run(
        [
            BISTOURYCTL,
            "--socket",
            str(daemon.socket),
            "events",
            "--json",
            "--db",
            str(daemon.state / "bistoury.duckdb"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert after.returncode == 0, after.stderr
    assert kinds(json.loads(after.stdout)["events"])[-1] == "stop"


def test_sigterm_is_a_clean_stop(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=10) == 0
    assert daemon.processes() == []


def test_emergency_stop_stops_everything_and_is_recorded(daemon: Daemon) -> None:
    done = daemon.ctl("stop", "--emergency")
    assert done.returncode == 0, done.stderr
    assert daemon.wait_exit(timeout=10) == 79
    assert daemon.processes() == []
    state = json.loads((daemon.state / "state.json").read_text())
    assert state["emergency_stop_ts_ms"] > 0
    after = subprocess.run(
        [BISTOURYCTL, "events", "--json", "--db", str(daemon.state / "bistoury.duckdb")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "emergency_stop" in kinds(json.loads(after.stdout)["events"])


def test_events_db_flag_refuses_while_daemon_runs(daemon: Daemon) -> None:
    done = daemon.ctl("events", "--db", str(daemon.state / "bistoury.duckdb"))
    assert done.returncode == 1
    assert "in use" in done.stderr and "Traceback" not in done.stderr


# ---- startup errors ------------------------------------------------------------------


def test_invalid_config_exits_78_with_located_problems(make_daemon: MakeDaemon) -> None:
    d = make_daemon(config="metrics:\n  port: 0\ntrading:\n  pairz: [BTC]\n")
    d.start(wait_ready=False)
    assert d.wait_exit() == 78
    err = d.stderr()
    assert "config.yaml:4: trading.pairz: unknown key 'pairz' → did you mean 'pairs'?" in err
    assert "Traceback" not in err


def test_database_newer_than_code_is_refused(make_daemon: MakeDaemon) -> None:
    import duckdb

    d = make_daemon()
    d.state.mkdir(parents=True)
    con = duckdb.connect(str(d.state / "bistoury.duckdb"))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT "
        "NULL, applied_ts_ms BIGINT NOT NULL)"
    )
    con.execute("INSERT INTO schema_version VALUES (999, 'future', 1)")
    con.close()
    d.start(wait_ready=False)
    assert d.wait_exit(timeout=30) == 78
    log = d.log_file.read_text()
    assert "newer than this Bistoury knows" in log and "upgrade Bistoury" in log
    assert d.processes() == []


def test_second_instance_is_refused(daemon: Daemon) -> None:
    second = subprocess.run(
        daemon.args(), capture_output=True, text=True, timeout=30, env=daemon.environ()
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert daemon.status()["ready"] is True


def test_daemon_flag_detaches_and_uses_a_pidfile(make_daemon: MakeDaemon) -> None:
    d = make_daemon(notify=False)
    pidfile = d.root / "bistouryd.pid"
    d.runtime.mkdir(parents=True)
    (d.runtime / "bistouryd.lock").write_text("424242\n")  # left by a killed daemon
    pidfile.write_text("424242\n")
    done = subprocess.run(
        d.args("--daemon", "--pidfile", str(pidfile)),
        capture_output=True,
        text=True,
        timeout=30,
        env=d.environ(),
    )
    assert done.returncode == 0, done.stderr
    status = wait_for(d.try_status, 30, "the detached daemon")
    pid = int(pidfile.read_text())
    try:
        assert status["pid"] == pid != 424242
        assert os.getsid(pid) != os.getsid(0)  # left our session: detached from the terminal
        assert d.ctl("stop").returncode == 0
        wait_for(lambda: not psutil.pid_exists(pid), 10, "the detached daemon to exit")
        assert not pidfile.exists()
    finally:
        if psutil.pid_exists(pid):
            os.killpg(os.getsid(pid), signal.SIGKILL)


def test_daemon_flag_is_refused_under_systemd(make_daemon: MakeDaemon) -> None:
    d = make_daemon(extra_env={"INVOCATION_ID": "0123456789abcdef"})
    done = subprocess.run(
        d.args("--daemon"), capture_output=True, text=True, timeout=30, env=d.environ()
    )
    assert done.returncode == 2
    assert "--daemon cannot be used under systemd" in done.stderr


def test_journald_output_has_priorities_and_no_timestamps(make_daemon: MakeDaemon) -> None:
    d = make_daemon()
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    env = d.environ()
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen(
        d.args(), env=env, stderr=write_fd, stdout=subprocess.DEVNULL, start_new_session=True
    )
    os.close(write_fd)
    d.proc = proc  # type: ignore[assignment]
    try:
        d.wait_ready()
        assert d.ctl("stop").returncode == 0
        proc.wait(timeout=10)
    finally:
        d.kill_all()
    text = os.read(read_fd, 1_000_000).decode()
    os.close(read_fd)
    lines = [line for line in text.splitlines() if line]
    assert lines and all(line.startswith("<") for line in lines)
    assert any(line.startswith("<6>INFO: ") for line in lines)
    assert not any(line.startswith("<6>[20") for line in lines)
    assert not d.log_file.exists()


# ---- metrics -------------------------------------------------------------------------


def scrape(d: Daemon) -> str:
    import urllib.request

    url = d.status()["metrics_url"]
    with urllib.request.urlopen(url, timeout=5) as response:
        body: str = response.read().decode()
    return body


def test_metrics_are_served_and_parse(daemon: Daemon) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    daemon.ctl("status")
    rss = re.compile(r'bistoury_agent_resident_memory_bytes\{agent="recorder"\} (\S+)')
    wait_for(
        lambda: (m := rss.search(scrape(daemon))) and float(m.group(1)) > 10e6,
        5,
        "an RSS sample of the running recorder",
    )
    families = {f.name: f for f in text_string_to_metric_families(scrape(daemon))}
    for name in (
        "bistoury_up",
        "bistoury_agent_up",
        "bistoury_agent_restarts",
        "bistoury_bus_messages",
        "bistoury_bus_dropped",
        "bistoury_control_requests",
        "bistoury_reloads",
        "bistoury_mode",
        "bistoury_agent_resident_memory_bytes",
        "bistoury_agent_cpu_seconds",
        "bistoury_recorder_rows",
        "process_resident_memory_bytes",
    ):
        assert name in families, name

    def value(family: str, **labels: str) -> float:
        for s in families[family].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith(
                "_created"
            ):
                return float(s.value)
        raise AssertionError(f"no sample {family} {labels}")

    assert value("bistoury_up") == 1
    assert value("bistoury_agent_up", agent="recorder") == 1
    assert value("bistoury_mode", mode="idle") == 1
    assert value("bistoury_mode", mode="collect") == 0
    assert value("bistoury_bus_messages", topic_class="sys") >= 1
    assert value("bistoury_control_requests", command="status", result="ok") >= 1
    assert value("bistoury_agent_resident_memory_bytes", agent="recorder") > 10_000_000
    assert families["bistoury_agent_restarts"].type == "counter"


# ---- directories, init, client robustness --------------------------------------------


def test_systemd_directory_variables_are_honoured(make_daemon: MakeDaemon) -> None:
    d = make_daemon()
    conf_dir, logs_dir = d.root / "etc", d.root / "logs"
    conf_dir.mkdir()
    (conf_dir / "config.yaml").write_text(BASE_CONFIG)
    (conf_dir / "bistoury.env").write_text("OPENAI_API_KEY=sk-from-conf-dir-0123456789\n")
    env = d.environ()
    env.update(
        {
            "RUNTIME_DIRECTORY": str(d.runtime),
            "STATE_DIRECTORY": str(d.state),
            "CONFIGURATION_DIRECTORY": str(conf_dir),
            "LOGS_DIRECTORY": str(logs_dir),
        }
    )
    with open(d.root / "stderr.log", "w") as err:
        d.proc = subprocess.Popen(
            [str(Path(BISTOURYCTL).parent / "bistouryd")],
            env=env,
            stderr=err,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    status = d.wait_ready()
    assert status["config_path"] == str(conf_dir / "config.yaml")
    assert status["secrets_set"] == ["OPENAI_API_KEY"]
    assert status["state_dir"] == str(d.state)
    assert (d.state / "bistoury.duckdb").exists()
    assert (logs_dir / "bistoury.log").exists()
    # The client finds the socket through the same variable.
    done = subprocess.run(
        [BISTOURYCTL, "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "RUNTIME_DIRECTORY": str(d.runtime)},
    )
    assert json.loads(done.stdout)["pid"] == d.proc.pid


def test_init_creates_state_and_database(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("trading:\n  pairs: [BTC]\n")
    state = tmp_path / "state"
    done = subprocess.run(
        [
            BISTOURYCTL,
            "init",
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--socket",
            str(tmp_path / "none.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    from bistouryd.storage.db import bundled_migrations

    assert f"schema version {len(bundled_migrations())}" in done.stdout
    assert (state / "bistoury.duckdb").exists()
    config.write_text("trading:\n  pairs: [BTC, BTC]\n")
    bad = subprocess.run(
        [BISTOURYCTL, "init", "--config", str(config), "--state-dir", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "config.yaml:2: trading.pairs: listed more than once: BTC" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_init_refuses_while_the_daemon_runs(daemon: Daemon) -> None:
    done = daemon.ctl("init", "--config", str(daemon.config), "--state-dir", str(daemon.state))
    assert done.returncode == 1
    assert "already owns the database" in done.stderr


def test_config_check_through_the_daemon(daemon: Daemon) -> None:
    assert daemon.ctl("config", "check").returncode == 0
    daemon.config.write_text(BASE_CONFIG + "risk:\n  max_leverage: 500\n")
    done = daemon.ctl("config", "check")
    assert done.returncode == 1
    assert "risk.max_leverage: 500 is out of range → use a value <= 50" in done.stdout
    assert daemon.status()["config_sha256"] != ""  # still running the old file


def test_client_times_out_on_a_hung_daemon_and_recovers(daemon: Daemon) -> None:
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = daemon.ctl("status", "--timeout", "0.5")
        elapsed = time.monotonic() - started
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert done.returncode == 3
    assert "did not answer" in done.stderr
    assert elapsed < 5
    assert daemon.status()["ready"] is True


def test_agents_exit_when_the_daemon_is_killed_and_a_restart_works(daemon: Daemon) -> None:
    assert daemon.proc is not None
    agent_pid = daemon.agent()["pid"]
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.wait_exit()
    wait_for(
        lambda: (
            not psutil.pid_exists(agent_pid)
            or psutil.Process(agent_pid).status() == psutil.STATUS_ZOMBIE
        ),
        5,
        "the orphaned agent to exit",
    )
    assert daemon.socket.exists()  # left behind by kill -9
    daemon.start()  # the lock died with the process; stale sockets are replaced
    assert "start" in kinds(daemon.events())


def test_shipped_alert_rules_use_metrics_the_daemon_exports(daemon: Daemon) -> None:
    """The alert expressions name only series that exist (a renamed metric breaks a rule)."""
    import yaml

    rules = yaml.safe_load((REPO / "etc" / "prometheus" / "alerts.yml").read_text())
    daemon.ctl("reload")  # so that bistoury_reloads_total has a sample
    exported = set(re.findall(r"^(bistoury_\w+)", scrape(daemon), re.MULTILINE))
    named = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(bistoury_\w+)", rule["expr"])
    }
    assert named and named <= exported, named - exported
