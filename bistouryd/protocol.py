"""Wire constants of the control protocol and exit codes, shared by daemon and client.

Stdlib only: ``bistouryctl status`` imports this and must start fast. The daemon's
pydantic models of the same messages live in ``bistouryd.control``.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

# Requests larger than this get an error reply; far larger ones are cut off by ZMQ_MAXMSGSIZE.
MAX_REQUEST_BYTES = 64 * 1024
HARD_MAX_REQUEST_BYTES = 1024 * 1024

MODES = ("idle", "collect", "paper-historical", "optimize", "paper-live", "live")
PAUSE_SCOPES = ("collect", "trading", "all")

COMMANDS = (
    "status",
    "mode",
    "pause",
    "resume",
    "reload",
    "stop",
    "events",
    "config-check",
    "collect",
    "data-status",
    "signals",
    "decisions",
)

# Exit codes of bistouryctl.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

# Exit codes of bistouryd (systemd's RestartPreventExitStatus= lists the last two).
DAEMON_EXIT_OK = 0
DAEMON_EXIT_FAILURE = 1
DAEMON_EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h
DAEMON_EXIT_EMERGENCY = 79
