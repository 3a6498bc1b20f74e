"""System events (``sys.*``): what the daemon did and why, kept in the database.

The orchestrator creates most of them; agents report theirs over the supervision
channel. The recorder stores each once (``id`` is the primary key, so a resend after a
recorder restart is harmless) and ``bistouryctl events`` lists them.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bistouryd.bus import payload

EventKind = Literal[
    "start",
    "stop",
    "mode",
    "pause",
    "resume",
    "agent_start",
    "agent_exit",
    "agent_restart",
    "agent_silent",
    "giveup",
    "reload",
    "config_error",
    "emergency_stop",
    "alert",
]
EventLevel = Literal["info", "warning", "error", "critical"]
Scalar = str | int | float | bool | None


@payload
class SysEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts_ms: int = Field(default_factory=lambda: int(time.time() * 1000), gt=0)
    kind: EventKind
    level: EventLevel = "info"
    source: str = "orchestrator"
    message: str
    details: dict[str, Scalar] = Field(default_factory=dict)

    @property
    def topic(self) -> str:
        return f"sys.{self.kind}"
