"""Logging: the PRD's extra levels, its line format, journald output and key redaction.

Only the orchestrator writes log output. Agents forward their records to it over the
supervision channel (``bistouryd.agents.base``), so there is one log file, one rotation
and one place where redaction happens last.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

PERF = 22
SIGNAL = 24
LLM = 25
TRADE = 26
for _level, _name in ((PERF, "PERF"), (SIGNAL, "SIGNAL"), (LLM, "LLM"), (TRADE, "TRADE")):
    logging.addLevelName(_level, _name)

# sd-daemon(3) priority prefixes understood by journald on a service's stderr.
_SYSLOG_PRIORITY = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (TRADE, 5),
    (logging.INFO, 6),
    (logging.DEBUG, 7),
)

# Shapes of secrets: EVM private keys (64 hex digits, with or without 0x), OpenAI and
# Anthropic keys (sk-..., sk-proj-..., sk-ant-...), bearer tokens and key=value pairs.
_SECRET_SHAPES = (
    re.compile(r"\b(?:0x)?[0-9a-fA-F]{64}\b"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-]{16,}"),
    re.compile(
        r"(?i)\b((?:api[_-]?key|secret[_-]?key|private[_-]?key|password|token)['\"]?\s*[=:]\s*"
        r"['\"]?)[^\s'\",&]{8,}"
    ),
)
REDACTED = "[REDACTED]"


def redact(text: str, known: Iterable[str] = ()) -> str:
    """Replace known secret values and anything shaped like a key with ``[REDACTED]``."""
    for secret in known:
        if secret and len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    for shape in _SECRET_SHAPES:
        text = shape.sub(rf"\1{REDACTED}" if shape.groups else REDACTED, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record's message (arguments and traceback included) before output."""

    def __init__(self, known: Iterable[str] = ()):
        super().__init__()
        self.known = [k for k in known if k]

    def set_known(self, known: Iterable[str]) -> None:
        self.known = [k for k in known if k]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            message += "\n" + record.stack_info
            record.stack_info = None
        record.msg = redact(message, self.known)
        record.args = None
        return True


class PrdFormatter(logging.Formatter):
    """``[2025-06-15 14:30:45] INFO: message`` (PRD 8.4); agent lines name their agent."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return _with_agent(record, super().format(record))


class JournalFormatter(logging.Formatter):
    """``<6>INFO: message``: journald adds the time and reads the priority prefix."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next(p for level, p in _SYSLOG_PRIORITY if record.levelno >= level or p == 7)
        text = _with_agent(record, super().format(record))
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


def _with_agent(record: logging.LogRecord, text: str) -> str:
    agent = getattr(record, "agent", None)
    if not agent:
        return text
    head, sep, rest = text.partition(": ")
    return f"{head}{sep}[{agent}] {rest}" if sep else text


def under_journald() -> bool:
    """True when stderr is the journal stream systemd connected (``$JOURNAL_STREAM``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def level_number(name: str) -> int:
    value = logging.getLevelName(name.upper())
    return value if isinstance(value, int) else logging.INFO


def setup(
    level: str,
    *,
    file: Path | None,
    max_bytes: int,
    backup_count: int,
    to_stderr: bool,
    known_secrets: Iterable[str] = (),
) -> RedactFilter:
    """Configure the root logger of the orchestrator; returns the filter to update on reload.

    Under journald everything goes to stderr with priority prefixes and no time stamps.
    Elsewhere lines go to a size-rotated file (and to stderr when running in a terminal).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    redactor = RedactFilter(known_secrets)
    handlers: list[logging.Handler] = []
    if under_journald():
        journal = logging.StreamHandler(sys.stderr)
        journal.setFormatter(JournalFormatter())
        handlers.append(journal)
    else:
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            rotating = logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
            )
            rotating.setFormatter(PrdFormatter())
            handlers.append(rotating)
        if to_stderr:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(PrdFormatter())
            handlers.append(console)
    for handler in handlers:
        handler.addFilter(redactor)
        root.addHandler(handler)
    root.setLevel(level_number(level))
    return redactor
