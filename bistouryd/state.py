"""The daemon's mode and paused flags, and their file in the state directory.

Modes: ``idle``, ``collect``, ``paper-historical``, ``optimize``, ``paper-live``, ``live``,
in any order the user chooses. The state survives restarts, but a restart never enters
``live`` by itself: a persisted ``live`` comes back as ``idle`` until live trading is
confirmed again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

Mode = Literal["idle", "collect", "paper-historical", "optimize", "paper-live", "live"]
PauseScope = Literal["collect", "trading", "all"]
Pausable = Literal["collect", "trading"]


class ModeError(Exception):
    """A requested change that is not allowed; the message says why and what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(f"{message} → {hint}")
        self.message = message
        self.hint = hint


class LiveSession(BaseModel):
    """The user's confirmation of live trading (``bistouryctl trade --confirm``): kept so
    that a restart resumes live after reconciling, and only then."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confirmed_ts_ms: int = Field(gt=0)
    risk_limit_usd: float = Field(gt=0, description="the total notional the user allowed")
    account: str = Field(description="the account, shortened (0x1234…abcd)")
    equity_usd: float = Field(ge=0, description="the account's equity when confirmed")


class DaemonState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "idle"
    paused: frozenset[Pausable] = frozenset()
    changed_ts_ms: int = Field(default_factory=lambda: int(time.time() * 1000))
    emergency_stop_ts_ms: int | None = None
    collect_pairs: tuple[str, ...] | None = Field(
        default=None, description="pairs chosen by `bistoury collect --pairs` over trading.pairs"
    )
    live: LiveSession | None = None
    risk_overrides: dict[str, float | None] = Field(
        default_factory=dict, description="limits set by `bistouryctl risk set`, over the config"
    )

    @field_serializer("paused")
    def _sorted(self, paused: frozenset[str]) -> list[str]:
        return sorted(paused)

    def with_mode(self, mode: Mode) -> DaemonState:
        if mode == "live":
            raise ModeError(
                "entering live trading needs an explicit confirmation",
                "use 'bistouryctl trade --confirm --risk-limit USD'",
            )
        return self.model_copy(update={"mode": mode, "live": None, "changed_ts_ms": _now_ms()})

    def with_live(self, session: LiveSession) -> DaemonState:
        """Live trading, as confirmed by the user (the only way into ``live``)."""
        return self.model_copy(update={"mode": "live", "live": session, "changed_ts_ms": _now_ms()})

    def with_collect_pairs(self, pairs: list[str] | None) -> DaemonState:
        new = tuple(pairs) if pairs else None
        return self.model_copy(update={"collect_pairs": new, "changed_ts_ms": _now_ms()})

    def with_paused(self, scope: PauseScope, paused: bool) -> DaemonState:
        scopes: set[Pausable] = {"collect", "trading"} if scope == "all" else {scope}
        new = set(self.paused) | scopes if paused else set(self.paused) - scopes
        return self.model_copy(update={"paused": frozenset(new), "changed_ts_ms": _now_ms()})


def _now_ms() -> int:
    return int(time.time() * 1000)


class StateStore:
    """Reads and atomically rewrites ``state.json``."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> tuple[DaemonState, str | None]:
        """The saved state, and a warning when it could not be used as it was."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DaemonState(), None
        try:
            state = DaemonState.model_validate_json(raw)
        except ValidationError as exc:
            keep = self.path.with_suffix(".json.corrupt")
            os.replace(self.path, keep)
            first = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            return DaemonState(), (
                f"{self.path} was unreadable ({first}); kept as {keep}, starting idle"
            )
        if state.mode == "live" and state.live is None:
            restored = state.model_copy(update={"mode": "idle"})
            return restored, (
                "the daemon was live before it stopped without a recorded confirmation; it "
                "restarts idle (live needs bistouryctl trade --confirm)"
            )
        return state, None

    def save(self, state: DaemonState) -> None:
        """Write to a temporary file, fsync, then rename over the old one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(state.model_dump(mode="json"), sort_keys=True, indent=2)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
