"""Reading a folder of HyperLiquid data files, whatever their names: each file's kind is told
from its content, so a user can replay their own recordings or exports.

Recognised (all in HyperLiquid's own JSON shapes, as ``/info`` or the websocket send them):
``meta`` and ``metaAndAssetCtxs`` answers, ``candleSnapshot`` arrays, ``fundingHistory`` arrays,
``l2Book`` snapshots, ``allMids`` answers, ``recentTrades`` arrays, and NDJSON files of websocket
frames (``{"channel": ..., "data": ...}`` per line) or of the S3 archive's l2Book lines
(``{"time": ..., "ver_num": 1, "raw": {"channel": "l2Book", "data": {...}}}``). A file holding
``{"request": ..., "response": ...}`` (the SDK's recorded cassettes) is read as its response.
Other files are listed as ignored, with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bistouryd.exchange.rules import AssetRules, rules_from_meta
from bistouryd.market import (
    INTERVAL_MS,
    Candle,
    FundingRate,
    L2Book,
    MarketDataError,
    parse_candle,
    parse_funding,
    parse_l2book,
)
from bistouryd.simexchange.feed import PublicTrade

_READABLE = {".json", ".jsonl", ".ndjson"}
_CANDLE_KEYS = {"t", "T", "s", "i", "o", "c", "h", "l", "v"}
_FUNDING_KEYS = {"coin", "fundingRate", "time"}
_TRADE_KEYS = {"coin", "side", "px", "sz", "time"}
_BOOK_KEYS = {"coin", "time", "levels"}


class DataError(Exception):
    """A data folder or file the simulator cannot use; ``hint`` says what to do."""

    def __init__(self, cause: str, hint: str) -> None:
        super().__init__(cause)
        self.cause = cause
        self.hint = hint


@dataclass(frozen=True)
class DataFile:
    path: Path
    kind: str  # meta, candles, funding, l2Book, allMids, trades, wsFrames, ignored
    detail: str


@dataclass
class RecordedData:
    """Everything read from a folder, by coin; lists sorted by time, duplicates dropped."""

    folder: Path
    meta: list[AssetRules] = field(default_factory=list)
    candles: dict[str, dict[int, list[Candle]]] = field(default_factory=dict)
    funding: dict[str, list[FundingRate]] = field(default_factory=dict)
    books: dict[str, list[L2Book]] = field(default_factory=dict)
    trades: dict[str, list[PublicTrade]] = field(default_factory=dict)
    mids: dict[str, float] = field(default_factory=dict)
    files: list[DataFile] = field(default_factory=list)

    def all_books(self) -> list[L2Book]:
        return [b for books in self.books.values() for b in books]


def bundled_data_dir() -> Path:
    """The sample of real HyperLiquid data shipped with the package (see its SOURCES.md)."""
    return Path(__file__).resolve().parent / "data"


def load_folder(folder: Path) -> RecordedData:
    """Read every file under ``folder``; raises ``DataError`` on an unusable folder or file."""
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist or is not a directory",
            "pass --data an existing folder of HyperLiquid JSON files, or leave it out to "
            "replay the bundled sample",
        )
    data = RecordedData(folder=folder)
    collected = _Collector(data)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() == ".lz4":
            collected.ignore(path, "LZ4-compressed: decompress it first (lz4 -d FILE)")
            continue
        if path.suffix.lower() not in _READABLE:
            collected.ignore(path, "not a .json/.jsonl/.ndjson file")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(
                f"cannot read {path}: {exc}",
                "check the file's permissions and encoding (UTF-8 JSON), or move it out of "
                "the folder",
            ) from None
        collected.read(path, text)
    collected.finish()
    if not data.candles and not data.books:
        raise DataError(
            f"no market data in {folder}: no candleSnapshot arrays and no l2Book snapshots found",
            "put HyperLiquid candleSnapshot/fundingHistory/l2Book JSON files there "
            "(see docs/simexchange.md), or leave out --data to replay the bundled sample",
        )
    return data


class _Collector:
    def __init__(self, data: RecordedData) -> None:
        self.data = data
        self._candles: dict[tuple[str, int], dict[int, Candle]] = {}
        self._funding: dict[str, dict[int, FundingRate]] = {}
        self._books: dict[str, dict[int, L2Book]] = {}
        self._trades: dict[str, dict[int, PublicTrade]] = {}

    def ignore(self, path: Path, why: str) -> None:
        self.data.files.append(DataFile(path, "ignored", why))

    def read(self, path: Path, text: str) -> None:
        try:
            whole: Any = json.loads(text)
        except json.JSONDecodeError:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if not lines:
                self.ignore(path, "empty file")
                return
            self._read_lines(path, lines)
            return
        self._read_value(path, whole)

    def _fail(self, path: Path, what: str) -> DataError:
        return DataError(
            f"cannot use {path}: {what}",
            "fix the file (HyperLiquid JSON shapes, see docs/simexchange.md) or move it out of "
            "the data folder",
        )

    def _read_value(self, path: Path, value: Any) -> None:
        if isinstance(value, dict) and "request" in value and "response" in value:
            value = value["response"]
        try:
            kind, detail = self._classify(value)
        except (MarketDataError, KeyError, TypeError, ValueError) as exc:
            raise self._fail(path, f"malformed content ({exc!s:.200})") from None
        if kind == "ignored":
            self.ignore(path, detail)
        else:
            self.data.files.append(DataFile(path, kind, detail))

    def _classify(self, value: Any) -> tuple[str, str]:
        if isinstance(value, list) and len(value) == 2 and _is_meta(value[0]):
            return self._meta(value[0])
        if _is_meta(value):
            return self._meta(value)
        if isinstance(value, dict) and "universe" in value and "tokens" in value:
            return "ignored", "spot metadata (the simulator trades perps only)"
        if isinstance(value, dict) and value.keys() >= _BOOK_KEYS:
            book = parse_l2book(value)
            self._books.setdefault(book.coin, {})[book.ts_ms] = book
            return "l2Book", f"{book.coin} snapshot at {book.ts_ms}"
        if isinstance(value, dict) and "channel" in value:
            return self._frames([value])
        if isinstance(value, dict) and value and all(_is_number_str(v) for v in value.values()):
            self.data.mids.update({k: float(v) for k, v in value.items()})
            return "allMids", f"{len(value)} mids"
        if not isinstance(value, list) or not value:
            return "ignored", "not a recognised HyperLiquid shape"
        head = value[0]
        if not isinstance(head, dict):
            return "ignored", "not a recognised HyperLiquid shape"
        if head.keys() >= _CANDLE_KEYS:
            return self._candle_list(value)
        if head.keys() >= _FUNDING_KEYS:
            rates = [parse_funding(x) for x in value]
            for r in rates:
                self._funding.setdefault(r.coin, {})[r.ts_ms] = r
            coins = sorted({r.coin for r in rates})
            return "funding", f"{', '.join(coins)}: {len(rates)} rates"
        if head.keys() >= _TRADE_KEYS:
            trades = [_trade(x) for x in value]
            for t in trades:
                self._trades.setdefault(t.coin, {})[t.tid] = t
            return "trades", f"{len(trades)} trades"
        return "ignored", "not a recognised HyperLiquid shape"

    def _meta(self, meta: Mapping[str, Any]) -> tuple[str, str]:
        self.data.meta = rules_from_meta(meta)
        return "meta", f"{len(self.data.meta)} perps"

    def _candle_list(self, items: list[Any]) -> tuple[str, str]:
        skipped = 0
        counted: dict[tuple[str, str], int] = {}
        for item in items:
            if item.get("i") not in INTERVAL_MS:
                skipped += 1
                continue
            bar = parse_candle(item)
            key = (bar.coin, INTERVAL_MS[bar.interval])
            self._candles.setdefault(key, {})[bar.open_ts_ms] = bar
            counted[(bar.coin, bar.interval)] = counted.get((bar.coin, bar.interval), 0) + 1
        detail = ", ".join(f"{c} {i}: {n} bars" for (c, i), n in sorted(counted.items()))
        if skipped:
            detail += f" ({skipped} bars of unsupported intervals skipped)"
        return "candles", detail

    def _read_lines(self, path: Path, lines: list[str]) -> None:
        frames = []
        for number, line in enumerate(lines, 1):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise self._fail(path, f"line {number} is not JSON ({exc.msg})") from None
            if isinstance(value, dict) and isinstance(value.get("raw"), dict):
                value = value["raw"]  # an S3 archive line: capture time + verbatim frame
            frames.append(value)
        try:
            kind, detail = self._frames(frames)
        except (MarketDataError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._fail(path, f"malformed frame ({exc!s:.200})") from None
        self.data.files.append(DataFile(path, kind, detail))

    def _frames(self, frames: list[Any]) -> tuple[str, str]:
        counts: dict[str, int] = {}
        for frame in frames:
            channel = frame.get("channel") if isinstance(frame, dict) else None
            data = frame.get("data") if isinstance(frame, dict) else None
            used = True
            if channel == "l2Book" and isinstance(data, dict):
                book = parse_l2book(data)
                self._books.setdefault(book.coin, {})[book.ts_ms] = book
            elif channel == "trades" and isinstance(data, list):
                for t in map(_trade, data):
                    self._trades.setdefault(t.coin, {})[t.tid] = t
            elif channel == "candle" and isinstance(data, dict) and data.get("i") in INTERVAL_MS:
                bar = parse_candle(data)  # later updates of a bar replace earlier ones
                self._candles.setdefault((bar.coin, INTERVAL_MS[bar.interval]), {})[
                    bar.open_ts_ms
                ] = bar
            else:
                used = False
            name = f"{channel}" if used else f"{channel} (not replayed)"
            counts[name] = counts.get(name, 0) + 1
        return "wsFrames", ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))

    def finish(self) -> None:
        data = self.data
        for (coin, interval), bars in self._candles.items():
            data.candles.setdefault(coin, {})[interval] = [bars[t] for t in sorted(bars)]
        for coin, rates in self._funding.items():
            data.funding[coin] = [rates[t] for t in sorted(rates)]
        for coin, books in self._books.items():
            data.books[coin] = [books[t] for t in sorted(books)]
        for coin, trades in self._trades.items():
            data.trades[coin] = sorted(trades.values(), key=lambda t: (t.ts_ms, t.tid))


def _is_meta(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("universe"), list)
        and "tokens" not in value
        and all(isinstance(x, dict) and "szDecimals" in x for x in value["universe"])
    )


def _is_number_str(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _trade(d: Mapping[str, Any]) -> PublicTrade:
    side = d["side"]
    if side not in ("A", "B"):
        raise ValueError(f"trade side must be A or B, not {side!r}")
    users = d.get("users") or ["", ""]
    return PublicTrade(
        coin=str(d["coin"]),
        ts_ms=int(d["time"]),
        px=float(d["px"]),
        sz=float(d["sz"]),
        side=side,
        tid=int(d.get("tid", 0)),
        hash=str(d.get("hash", "")),
        users=(str(users[0]), str(users[1])),
    )
