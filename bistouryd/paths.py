"""Where the daemon keeps its sockets, state, configuration and logs.

Shared by the daemon and the client so both find the control socket the same way.
Stdlib only: the client imports this on every call.

Order of precedence for each directory: the command-line flag, then systemd's
``*_DIRECTORY`` variable (set by ``RuntimeDirectory=`` etc. in the unit), then the
per-user XDG location.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONTROL_SOCKET = "control.sock"
BUS_IN_SOCKET = "bus-in.sock"
BUS_OUT_SOCKET = "bus-out.sock"
SUPERVISION_SOCKET = "agents.sock"
STORE_SOCKET = "store.sock"
LOCK_FILE = "bistouryd.lock"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
ENV_FILE = "bistoury.env"
SYSTEM_RUNTIME_DIR = Path("/run/bistoury")

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_IPC_PATH = 107


def _env_dir(var: str) -> Path | None:
    """First entry of a systemd ``*_DIRECTORY`` variable (it may list several, colon-separated)."""
    value = os.environ.get(var, "")
    first = value.split(":")[0]
    return Path(first) if first else None


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_runtime_dir() -> Path:
    """The per-user runtime directory used outside systemd."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "bistoury"
    return Path(f"/tmp/bistoury-{os.getuid()}")


def runtime_dir(flag: str | Path | None = None) -> Path:
    if flag:
        return Path(flag)
    return _env_dir("RUNTIME_DIRECTORY") or default_runtime_dir()


def state_dir(flag: str | Path | None = None) -> Path:
    if flag:
        return Path(flag)
    return _env_dir("STATE_DIRECTORY") or _xdg("XDG_STATE_HOME", ".local/state") / "bistoury"


def config_dir() -> Path:
    return _env_dir("CONFIGURATION_DIRECTORY") or _xdg("XDG_CONFIG_HOME", ".config") / "bistoury"


def logs_dir(state: Path) -> Path:
    return _env_dir("LOGS_DIRECTORY") or state / "logs"


def config_file(flag: str | Path | None = None) -> Path:
    return Path(flag) if flag else config_dir() / CONFIG_FILE


def env_file(flag: str | Path | None, config_path: Path) -> Path | None:
    """The secrets file: the flag, else ``bistoury.env`` next to the config, else none."""
    if flag:
        return Path(flag)
    beside = config_path.parent / ENV_FILE
    return beside if beside.exists() else None


def control_socket_candidates(flag: str | None = None) -> list[Path]:
    """Where a client looks for the control socket, most specific first."""
    if flag:
        return [Path(flag)]
    env = os.environ.get("BISTOURY_SOCKET")
    if env:
        return [Path(env)]
    seen: list[Path] = []
    for directory in (_env_dir("RUNTIME_DIRECTORY"), default_runtime_dir(), SYSTEM_RUNTIME_DIR):
        if directory is not None and directory / CONTROL_SOCKET not in seen:
            seen.append(directory / CONTROL_SOCKET)
    return seen


@dataclass(frozen=True)
class RuntimePaths:
    """The sockets and lock file of one daemon instance, all inside its runtime directory."""

    root: Path

    @property
    def control(self) -> Path:
        return self.root / CONTROL_SOCKET

    @property
    def bus_in(self) -> Path:
        return self.root / BUS_IN_SOCKET

    @property
    def bus_out(self) -> Path:
        return self.root / BUS_OUT_SOCKET

    @property
    def supervision(self) -> Path:
        return self.root / SUPERVISION_SOCKET

    @property
    def store(self) -> Path:
        return self.root / STORE_SOCKET

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    def sockets(self) -> list[Path]:
        return [self.control, self.bus_in, self.bus_out, self.supervision, self.store]

    def too_long(self) -> list[Path]:
        """Socket paths the kernel would refuse (``sun_path`` holds 107 bytes)."""
        return [p for p in self.sockets() if len(os.fsencode(p)) > MAX_IPC_PATH]


def ipc(path: Path) -> str:
    return f"ipc://{path}"
