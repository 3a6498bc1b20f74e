"""Settings of a simulated exchange, and parsing of their command-line spellings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

# Base-tier perp fees. Current schedule per the docs' "Fees" page as remembered in
# HYPERLIQUID.md (not verified there): taker 0.045%, maker 0.015%. The verified 2024-07
# schedule (a recorded userFees answer) was 0.035% / 0.01%.
DEFAULT_TAKER_FEE = 0.00045
DEFAULT_MAKER_FEE = 0.00015
UPDATES_PER_COIN_PER_S = 2.0

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 3001  # the SDK's LOCAL_API_URL port; 0 picks a free one
    data_dir: Path | None = None  # None: the bundled sample
    speed: float | None = 1.0  # replay time per wall time; None: max; 0: paused
    start_ms: int | None = None  # None: one day into the data (replay) or now (synthetic)
    synthetic: tuple[str, ...] | int = ()  # coin names, or how many; empty: replay data_dir
    seed: int = 0
    rate: float | None = None  # synthetic updates per second, all coins together
    accounts: dict[str, float] = field(default_factory=dict)  # address -> starting USDC
    agents: dict[str, str] = field(default_factory=dict)  # API wallet -> account
    taker_fee: float = DEFAULT_TAKER_FEE
    maker_fee: float = DEFAULT_MAKER_FEE
    ws_log_size: int = 100_000  # frames kept in memory for /admin/ws-log and sent_frames()
    ws_log_path: Path | None = None  # also append every sent frame here (NDJSON)
    ws_queue_max: int = 10_000  # frames queued per connection before it is dropped

    def update_rate(self, coins: int) -> float:
        """Synthetic market updates per second over all ``coins``."""
        return self.rate if self.rate else UPDATES_PER_COIN_PER_S * coins


def parse_address(text: str, what: str) -> str:
    if not _ADDRESS.match(text.strip()):
        raise ValueError(f"{what} must be 0x followed by 40 hex digits, not {text!r}")
    return text.strip().lower()


def parse_account(text: str) -> tuple[str, float]:
    """``0xADDR=10000`` -> (address, USDC)."""
    address, sep, amount = text.partition("=")
    if not sep:
        raise ValueError(f"--account takes ADDRESS=USDC, not {text!r}")
    try:
        usdc = float(amount)
    except ValueError:
        raise ValueError(f"--account balance must be a number of USDC, not {amount!r}") from None
    if usdc < 0:
        raise ValueError("--account balance cannot be negative")
    return parse_address(address, "--account address"), usdc


def parse_agent(text: str) -> tuple[str, str]:
    """``0xAGENT=0xACCOUNT`` -> (agent, account)."""
    agent, sep, account = text.partition("=")
    if not sep:
        raise ValueError(f"--agent takes AGENT_ADDRESS=ACCOUNT_ADDRESS, not {text!r}")
    return parse_address(agent, "--agent address"), parse_address(account, "--agent account")


def parse_fee(text: str) -> float:
    """A fee rate as a fraction (``0.00045``) or a percentage (``0.045%``)."""
    raw = text.strip()
    try:
        value = Decimal(raw[:-1]) / 100 if raw.endswith("%") else Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"fee must look like 0.00045 or 0.045%, not {text!r}") from None
    if not -0.01 <= value <= 0.01:
        raise ValueError(f"fee {text!r} is outside -1%..1%; give a fraction or a percentage")
    return float(value)


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time must be epoch milliseconds or ISO-8601 like 2025-07-22T12:00:00Z, not {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def synthetic_names(spec: str, known: list[str]) -> tuple[str, ...]:
    """``"3"`` -> the first 3 real names (then SYN0004...), ``"BTC,ETH"`` -> those names."""
    raw = spec.strip()
    if raw.isdigit():
        count = int(raw)
        if count < 1:
            raise ValueError("--synthetic needs at least one coin")
        names = known[:count] + [f"SYN{i:04d}" for i in range(len(known) + 1, count + 1)]
        return tuple(names)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--synthetic takes a count or distinct coin names, not {spec!r}")
    return tuple(names)
