"""Importing HyperLiquid's historical data files (``bistoury data import``).

Recognised by content, not by name, each LZ4-frame compressed (``.lz4``), gzip'ed, or plain:

* **L2 snapshots from the public archive** (``market_data/{YYYYMMDD}/{H}/l2Book/{COIN}.lz4``):
  NDJSON, one line per snapshot, ``{"time":"2023-04-15T00:00:07.705751164","ver_num":1,
  "raw":{"channel":"l2Book","data":{"coin","time","levels"}}}``. The row is keyed by the
  exchange's ``raw.data.time``; the capture ``time`` becomes the raw message's
  ``received_ts_ms``. Lines that are bare websocket frames (``{"channel":..,"data":..}``:
  l2Book, trades, candle, activeAssetCtx) or bare REST l2Book bodies are accepted too.
* **Asset contexts from the public archive** (``asset_ctxs/{YYYYMMDD}.csv.lz4``): CSV with
  a header. Columns are read by name (snake_case or camelCase); the required ones are
  ``time, coin, funding, open_interest, mark_px, oracle_px``; ``prev_day_px, day_ntl_vlm,
  premium, mid_px, impact_bid_px, impact_ask_px`` are used when present; any other column
  is reported and ignored. ``time`` may be ISO 8601 (UTC unless it says otherwise) or Unix
  seconds / milliseconds. The exact header of the real files is NOT verified.
* **REST responses saved as JSON arrays**: ``candleSnapshot`` and ``fundingHistory``.

Every file goes through ``marketdata.write_batch`` (idempotent: typed rows are keyed, raw
messages already present are skipped) in batches, and is recorded in ``import_log`` by
its SHA-256, so importing the same file again is skipped outright (``force`` re-reads it,
still without adding duplicates). Raw archive lines are stored with ``source='archive'``.
A malformed line is reported with its line number and skipped (``strict``: the file stops
there; what was already written stays).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import io
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import duckdb
from pydantic import BaseModel

from bistouryd.market import (
    AssetCtx,
    MarketDataError,
    RawMessage,
    parse_candle,
    parse_funding,
    parse_l2book,
    parse_ws_message,
)
from bistouryd.storage.marketdata import Item, WriteError, WriteResult, write_batch

LZ4_MAGIC = b"\x04\x22\x4d\x18"
GZIP_MAGIC = b"\x1f\x8b"
ARCHIVE_SOURCE = "archive"
MAX_PROBLEMS = 20
DATA_SUFFIXES = (".lz4", ".json", ".csv", ".ndjson", ".jsonl", ".gz", ".txt", "")

# asset_ctxs CSV: column (normalised: lower case, no "_") → AssetCtx field.
CTX_COLUMNS: dict[str, str] = {
    "time": "ts_ms",
    "coin": "coin",
    "funding": "funding_rate",
    "openinterest": "open_interest_sz",
    "markpx": "mark_px",
    "oraclepx": "oracle_px",
    "prevdaypx": "prev_day_px",
    "dayntlvlm": "day_ntl_vlm_usd",
    "premium": "premium",
    "midpx": "mid_px",
    "impactbidpx": "impact_bid_px",
    "impactaskpx": "impact_ask_px",
}
CTX_REQUIRED = ("time", "coin", "funding", "openinterest", "markpx", "oraclepx")
_CTX_NAMES = {
    "time": "time",
    "coin": "coin",
    "funding": "funding",
    "openinterest": "open_interest",
    "markpx": "mark_px",
    "oraclepx": "oracle_px",
}


class ArchiveError(Exception):
    """A file cannot be imported; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(f"{message} → {hint}")
        self.message = message
        self.hint = hint


class Malformed(ValueError):
    """One line or element that is not what its format says."""


class FileReport(BaseModel):
    path: str
    format: str | None = None
    sha256: str | None = None
    status: str = "imported"  # imported | skipped | failed
    lines: int = 0
    written: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    rejected: dict[str, int] = {}
    malformed_n: int = 0
    problems: list[str] = []  # "file:line: what" (the first MAX_PROBLEMS)
    warnings: list[str] = []
    error: str | None = None
    hint: str | None = None
    seconds: float = 0.0


class ImportReport(BaseModel):
    files: list[FileReport]

    @property
    def written(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for f in self.files:
            for table, n in f.written.items():
                total[table] = total.get(table, 0) + n
        return total

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def malformed_n(self) -> int:
        return sum(f.malformed_n for f in self.files)


class Progress(BaseModel):
    path: str
    lines: int
    rows: int
    seconds: float
    done: bool = False


# ---- time stamps --------------------------------------------------------------------------

_ISO_FRACTION = re.compile(r"^(.*T\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:?\d\d)?$")


def parse_time_ms(value: Any) -> int:
    """Unix ms from ISO 8601 (naive = UTC; any number of fraction digits) or a number of
    seconds / milliseconds / microseconds / nanoseconds since the epoch."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            return _iso_ms(text)
    if number != number or number <= 0:
        raise ValueError(f"not a time: {value!r}")
    if number < 1e11:  # seconds (until the year 5138)
        return round(number * 1000)
    if number < 1e14:
        return int(number)
    if number < 1e17:
        return int(number // 1000)
    return int(number // 1_000_000)


def _iso_ms(text: str) -> int:
    match = _ISO_FRACTION.match(text.replace(" ", "T", 1))
    if not match:
        raise ValueError(f"not a time: {text!r}")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        when = datetime.fromisoformat(base + zone)
    except ValueError:
        raise ValueError(f"not a time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    ms = int(when.timestamp()) * 1000
    if fraction:
        ms += int((fraction + "000")[:3])
    return ms


def _archive_raw(received_ms: int, channel: str, coin: str | None, text: str) -> RawMessage:
    # RawMessage.source is Literal["ws", "rest"] in bistouryd.market; the table accepts
    # 'archive' too. model_construct skips only that check (every other value is built here).
    return RawMessage.model_construct(
        received_ts_ms=received_ms, source=ARCHIVE_SOURCE, channel=channel, coin=coin, text=text
    )


# ---- opening and sniffing -----------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_text(path: Path) -> IO[str]:
    """The file's text, decompressing LZ4 frames and gzip by their magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == LZ4_MAGIC:
        try:
            lz4_frame = importlib.import_module("lz4.frame")  # untyped; optional dependency
        except ImportError:
            raise ArchiveError(
                f"{path} is LZ4-compressed and the Python module lz4 is not installed",
                "install it (pip install lz4), or decompress the file first: lz4 -d FILE",
            ) from None
        binary: Any = lz4_frame.open(path, "rb")
    elif magic[:2] == GZIP_MAGIC:
        binary = gzip.open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    else:
        binary = open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(binary, encoding="utf-8", errors="strict", newline="")


def _sniff(first: str) -> str | None:
    head = first.lstrip("\ufeff \t\r\n")
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        return "ndjson"
    header = [h.strip().lower().replace("_", "") for h in head.split(",")]
    if "coin" in header and "time" in header:
        return "csv"
    return None


# ---- the importer -------------------------------------------------------------------------


class _FileImport:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: Path,
        report: FileReport,
        *,
        raw: bool,
        strict: bool,
        batch_rows: int,
        progress: Callable[[Progress], None] | None,
    ):
        self.con = con
        self.path = path
        self.report = report
        self.raw = raw
        self.strict = strict
        self.batch_rows = batch_rows
        self.progress = progress
        self.started = time.perf_counter()
        self.pending: list[Item] = []
        self.pending_rows = 0
        self.totals = WriteResult()
        self.skipped_channels: dict[str, int] = {}

    # problems
    def malformed(self, where: str, what: str) -> None:
        self.report.malformed_n += 1
        message = f"{self.path}:{where}: {what}"
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(message)
        if self.strict:
            self.flush()
            raise ArchiveError(
                f"{message} (stopped: --strict; rows before it were imported)",
                "fix or remove that line, or import without --strict to skip bad lines",
            )

    # batching
    def add(self, items: Iterable[Item]) -> None:
        for item in items:
            self.pending.append(item)
            self.pending_rows += 1
        if self.pending_rows >= self.batch_rows:
            self.flush()

    def flush(self, done: bool = False) -> None:
        if self.pending:
            try:
                result = write_batch(self.con, self.pending, dedupe_raw=True)
            except WriteError as exc:
                raise ArchiveError(
                    f"{self.path}: {exc}", "nothing of the last batch was written; see the cause"
                ) from None
            self.totals.add(result)
            self.pending = []
            self.pending_rows = 0
        if self.progress is not None:
            self.progress(
                Progress(
                    path=str(self.path),
                    lines=self.report.lines,
                    rows=self.totals.rows,
                    seconds=time.perf_counter() - self.started,
                    done=done,
                )
            )

    def finish(self) -> None:
        self.flush(done=True)
        self.report.written = dict(self.totals.written)
        self.report.duplicates = dict(self.totals.duplicates)
        self.report.rejected = dict(self.totals.rejected)
        for sample in self.totals.rejected_samples[:5]:
            self.report.warnings.append(f"rejected (fails a table constraint): {sample}")
        for channel, n in sorted(self.skipped_channels.items()):
            self.report.warnings.append(f"{n} line(s) of channel {channel!r} not imported")

    # formats
    def ndjson(self, lines: Iterable[str]) -> None:
        self.report.format = "ndjson"
        for number, line in enumerate(lines, start=1):
            self.report.lines = number
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                self.add(self._ndjson_line(text))
            except Malformed as exc:
                self.malformed(f"{number}", str(exc))

    def _ndjson_line(self, text: str) -> list[Item]:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise Malformed(f"not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise Malformed("not a JSON object")
        captured: int | None = None
        frame: Any = obj
        if "raw" in obj:
            frame = obj["raw"]
            if "time" in obj:
                try:
                    captured = parse_time_ms(obj["time"])
                except ValueError as exc:
                    raise Malformed(f"capture time: {exc}") from None
        if not isinstance(frame, dict):
            raise Malformed("'raw' is not a JSON object")
        try:
            if "channel" not in frame and "levels" in frame:
                book = parse_l2book(frame)
                events: list[Any] = [book]
                channel, coin, received = "l2Book", book.coin, captured or book.ts_ms
            else:
                channel = str(frame.get("channel", ""))
                if channel == "l2Book":
                    book = parse_l2book(frame.get("data") or {})
                    events = [book]
                    coin, received = book.coin, captured or book.ts_ms
                else:
                    if captured is None and channel == "activeAssetCtx":
                        raise Malformed("activeAssetCtx without a capture time")
                    received = captured or 0
                    events = parse_ws_message(frame, received)
                    if not events:
                        self.skipped_channels[channel or "?"] = (
                            self.skipped_channels.get(channel or "?", 0) + 1
                        )
                        return []
                    first = events[0]
                    coin = first.coin
                    if not received:
                        received = max(_event_ts(e) for e in events)
        except MarketDataError as exc:
            raise Malformed(str(exc)) from None
        if self.raw:
            events.append(_archive_raw(received, channel, coin, text))
        return events

    def csv(self, stream: Iterable[str]) -> None:
        self.report.format = "asset_ctxs-csv"
        reader = csv.reader(stream)
        try:
            header = next(reader)
        except StopIteration:
            return
        names = [h.strip().lstrip("\ufeff") for h in header]
        norm = [n.lower().replace("_", "") for n in names]
        missing = [_CTX_NAMES[c] for c in CTX_REQUIRED if c not in norm]
        if missing:
            raise ArchiveError(
                f"{self.path}: asset_ctxs CSV lacks column(s) {', '.join(missing)} "
                f"(its header: {', '.join(names)})",
                "the archive's format may have changed: report the header line "
                "(the first line of the decompressed file) to the Bistoury developers",
            )
        unknown = [n for n, k in zip(names, norm, strict=True) if k not in CTX_COLUMNS]
        if unknown:
            self.report.warnings.append(f"ignored unknown column(s): {', '.join(unknown)}")
        fields = [(i, CTX_COLUMNS[k]) for i, k in enumerate(norm) if k in CTX_COLUMNS]
        for row in reader:
            self.report.lines = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            try:
                self.add([self._ctx_row(row, fields)])
            except Malformed as exc:
                self.malformed(f"{reader.line_num}", str(exc))

    def _ctx_row(self, row: Sequence[str], fields: list[tuple[int, str]]) -> AssetCtx:
        if len(row) < len(fields) or len(row) < max(i for i, _ in fields) + 1:
            raise Malformed(f"{len(row)} fields, the header has more")
        values: dict[str, Any] = {}
        try:
            for i, name in fields:
                cell = row[i].strip()
                if name == "coin":
                    values[name] = cell
                elif name == "ts_ms":
                    values[name] = parse_time_ms(cell)
                else:
                    values[name] = float(cell) if cell else None
            return AssetCtx(**values)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise Malformed(f"{exc!s:.300}".replace("\n", " ")) from None

    def json_array(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ArchiveError(
                f"{self.path}: not valid JSON ({exc})", "check the file is complete"
            ) from None
        if not isinstance(data, list):
            raise ArchiveError(f"{self.path}: not a JSON array", "see docs/storage.md")
        self.report.lines = len(data)
        if not data:
            self.report.format = "json"
            return
        first = data[0] if isinstance(data[0], dict) else {}
        parse: Callable[[Any], Item]
        if {"t", "T", "s", "i"} <= first.keys():
            kind, parse, coin_key = "candleSnapshot", parse_candle, "s"
        elif "fundingRate" in first:
            kind, parse, coin_key = "fundingHistory", parse_funding, "coin"
        else:
            raise ArchiveError(
                f"{self.path}: a JSON array of neither candleSnapshot nor fundingHistory "
                f"entries (first element keys: {', '.join(sorted(first))[:200]})",
                "import candleSnapshot or fundingHistory responses, or archive files",
            )
        self.report.format = f"{kind}-json"
        items: list[Item] = []
        for index, element in enumerate(data):
            try:
                if not isinstance(element, dict):
                    raise MarketDataError("not a JSON object")
                items.append(parse(element))
            except MarketDataError as exc:
                self.malformed(f"element {index}", str(exc))
        if self.raw:
            coin = first.get(coin_key)
            mtime_ms = int(self.path.stat().st_mtime * 1000)
            self.add(
                [
                    RawMessage(
                        received_ts_ms=mtime_ms,
                        source="rest",
                        channel=kind,
                        coin=coin if isinstance(coin, str) else None,
                        text=text.strip(),
                    )
                ]
            )
        for chunk in _chunks(items, self.batch_rows):
            self.add(chunk)


def _event_ts(event: Any) -> int:
    if hasattr(event, "ts_ms"):
        return int(event.ts_ms)
    if hasattr(event, "open_ts_ms"):
        return int(event.open_ts_ms)
    return max((t.ts_ms for t in getattr(event, "trades", [])), default=0)


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def expand(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Files to import: the files given, and the data files found under directories
    (recursively, sorted; hidden files skipped). Also returns problems (missing paths)."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = found.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if found.suffix.lower() in DATA_SUFFIXES:
                    files.append(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or directory")
    return files, problems


def _already(con: duckdb.DuckDBPyConnection, sha: str) -> int | None:
    row = con.execute("SELECT imported_ts_ms FROM import_log WHERE sha256 = ?", [sha]).fetchone()
    return int(row[0]) if row else None


def import_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    raw: bool = True,
    strict: bool = False,
    force: bool = False,
    batch_rows: int = 5000,
    progress: Callable[[Progress], None] | None = None,
    from_directory: bool = False,
) -> FileReport:
    """Import one file; never raises for a problem of the file (see ``FileReport``),
    except ``ArchiveError`` in ``strict`` mode."""
    report = FileReport(path=str(path))
    started = time.perf_counter()
    try:
        report.sha256 = _sha256(path)
        when = _already(con, report.sha256)
        if when is not None and not force:
            report.status = "skipped"
            stamp = datetime.fromtimestamp(when / 1000, tz=timezone.utc)
            report.warnings.append(
                f"already imported on {stamp:%Y-%m-%d %H:%M} UTC (same content); "
                "--force reads it again"
            )
            return report
        job = _FileImport(
            con, path, report, raw=raw, strict=strict, batch_rows=batch_rows, progress=progress
        )
        with open_text(path) as stream:
            try:
                first = stream.readline()
                kind = _sniff(first)
                if kind is None:
                    if from_directory:
                        report.status = "skipped"
                        report.warnings.append("not a recognised data file")
                        return report
                    raise ArchiveError(
                        f"{path}: not a recognised format (first line: {first[:80]!r})",
                        "import archive l2Book NDJSON, asset_ctxs CSV, or candleSnapshot / "
                        "fundingHistory JSON arrays (see docs/storage.md)",
                    )
                if kind == "json":
                    job.json_array(first + stream.read())
                elif kind == "ndjson":
                    job.ndjson(itertools.chain([first], stream))
                else:
                    job.csv(itertools.chain([first], stream))
            except UnicodeDecodeError as exc:
                raise ArchiveError(
                    f"{path}: not UTF-8 text after decompression ({exc.reason})",
                    "check that it is an archive file and not truncated",
                ) from None
            except (EOFError, OSError, RuntimeError) as exc:  # lz4/gzip: truncated or corrupt
                raise ArchiveError(
                    f"{path}: cannot be read ({exc})",
                    "the file is truncated or corrupt: download it again",
                ) from None
            job.finish()
        con.execute(
            "INSERT OR REPLACE INTO import_log VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                report.sha256,
                path.name,
                path.stat().st_size,
                report.format or "?",
                int(time.time() * 1000),
                report.lines,
                json.dumps(report.written),
            ],
        )
    except ArchiveError as exc:
        report.status = "failed"
        report.error, report.hint = exc.message, exc.hint
        if strict:
            raise
    except OSError as exc:
        report.status = "failed"
        report.error, report.hint = f"{path}: {exc.strerror or exc}", "check the path"
    finally:
        report.seconds = round(time.perf_counter() - started, 3)
    return report


def import_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[Path],
    *,
    raw: bool = True,
    strict: bool = False,
    force: bool = False,
    batch_rows: int = 5000,
    progress: Callable[[Progress], None] | None = None,
) -> ImportReport:
    """Import files and directories in order; see ``import_file``."""
    reports: list[FileReport] = []
    for given in paths:
        files, problems = expand([given])
        for problem in problems:
            reports.append(
                FileReport(path=str(given), status="failed", error=problem, hint="check the path")
            )
            if strict:
                raise ArchiveError(problem, "check the path")
        for path in files:
            reports.append(
                import_file(
                    con,
                    path,
                    raw=raw,
                    strict=strict,
                    force=force,
                    batch_rows=batch_rows,
                    progress=progress,
                    from_directory=path != given,
                )
            )
    return ImportReport(files=reports)
