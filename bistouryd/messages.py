"""User-facing error and warning lines in the PRD 8.5 style (stdlib only)::

ERROR: Connection to HyperLiquid failed
  → Check your internet connection
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO


def format_problem(message: str, hints: Iterable[str] = (), level: str = "ERROR") -> str:
    lines = [f"{level}: {message}"]
    lines.extend(f"  → {hint}" for hint in hints)
    return "\n".join(lines)


def report(
    message: str, hints: Iterable[str] = (), *, level: str = "ERROR", stream: TextIO | None = None
) -> None:
    print(format_problem(message, hints, level), file=stream or sys.stderr)
