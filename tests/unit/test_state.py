"""bistouryd.state: modes, pause scopes and the state file."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from bistouryd import protocol
from bistouryd.state import DaemonState, LiveSession, Mode, ModeError, PauseScope, StateStore

NON_LIVE: tuple[Mode, ...] = ("idle", "collect", "paper-historical", "optimize", "paper-live")


@pytest.mark.parametrize("start", NON_LIVE)
@pytest.mark.parametrize("target", NON_LIVE)
def test_transitions_between_non_live_modes(start: Mode, target: Mode) -> None:
    state = DaemonState(mode=start, changed_ts_ms=1)
    new = state.with_mode(target)
    assert new.mode == target
    assert new.changed_ts_ms > 1
    assert state.mode == start  # immutable


@pytest.mark.parametrize("start", NON_LIVE)
def test_live_is_refused(start: Mode) -> None:
    state = DaemonState(mode=start)
    with pytest.raises(ModeError) as info:
        state.with_mode("live")
    assert "confirm" in info.value.hint
    assert "--confirm" in info.value.hint
    assert "confirmation" in info.value.message
    assert str(info.value) == f"{info.value.message} → {info.value.hint}"


def test_pause_and_resume_scopes() -> None:
    state = DaemonState()
    assert state.paused == frozenset()
    collect = state.with_paused("collect", True)
    assert collect.paused == {"collect"}
    both = collect.with_paused("trading", True)
    assert both.paused == {"collect", "trading"}
    assert both.with_paused("collect", False).paused == {"trading"}
    assert both.with_paused("all", False).paused == frozenset()
    assert state.with_paused("all", True).paused == {"collect", "trading"}
    # Idempotent both ways.
    assert both.with_paused("all", True).paused == both.paused
    assert state.with_paused("trading", False).paused == frozenset()


def test_pause_keeps_mode() -> None:
    state = DaemonState().with_mode("collect").with_paused("trading", True)
    assert (state.mode, state.paused) == ("collect", {"trading"})
    assert state.with_mode("optimize").paused == {"trading"}


def test_protocol_constants_match_literals() -> None:
    assert typing.get_args(Mode) == protocol.MODES
    assert typing.get_args(PauseScope) == protocol.PAUSE_SCOPES


# ---- StateStore -------------------------------------------------------------------------


def test_missing_file_is_idle(tmp_path: Path) -> None:
    state, warning = StateStore(tmp_path / "state.json").load()
    assert (state.mode, state.paused, warning) == ("idle", frozenset(), None)


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    store = StateStore(path)
    state = DaemonState(
        mode="paper-live",
        paused=frozenset({"trading", "collect"}),
        changed_ts_ms=1234,
        emergency_stop_ts_ms=99,
    )
    store.save(state)
    assert store.load() == (state, None)
    assert json.loads(path.read_text())["paused"] == ["collect", "trading"]
    # Atomic write: nothing but the state file is left in the directory.
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    store.save(state.with_mode("idle"))
    assert store.load()[0].mode == "idle"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '{"mode": "moon"}', '{"mode": "idle", "bogus": 1}', ""],
)
def test_corrupt_file_is_kept_aside(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    state, warning = StateStore(path).load()
    assert state.mode == "idle"
    assert warning is not None
    assert "unreadable" in warning and "starting idle" in warning
    kept = tmp_path / "state.json.corrupt"
    assert str(kept) in warning
    assert kept.read_text() == content
    assert not path.exists()
    # The next start is clean.
    assert StateStore(path).load()[1] is None


def test_non_utf8_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    state, warning = StateStore(path).load()
    assert state.mode == "idle"
    assert warning is not None
    assert (tmp_path / "state.json.corrupt").exists()


def test_persisted_live_comes_back_idle(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"mode": "live", "paused": ["trading"], "changed_ts_ms": 5}))
    state, warning = StateStore(path).load()
    assert state.mode == "idle"
    assert state.paused == {"trading"}
    assert warning is not None and "live" in warning and "confirmation" in warning


def test_a_confirmed_live_session_survives_a_restart_and_only_trade_enters_it(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.json")
    session = LiveSession(confirmed_ts_ms=5, risk_limit_usd=2000, account="0x12…ab", equity_usd=1)
    store.save(DaemonState().with_live(session))
    state, warning = store.load()
    assert (state.mode, state.live, warning) == ("live", session, None)
    left = state.with_mode("paper-live")  # leaving live ends the session
    assert left.live is None and left.mode == "paper-live"
    with pytest.raises(ModeError):
        left.with_mode("live")
