"""``bistoury data status | export | import``: the stored market data.

The recorder agent is the database's only writer. While the daemon runs, ``data status``
asks it (control command ``data-status``); ``export`` and ``import`` open the file
directly and so are refused until the daemon is stopped. Stopped, ``status`` and
``export`` open the file read-only, ``import`` read-write.

Where the file is: ``--db FILE``, else ``storage.path`` / ``storage.parquet_dir`` of
``--config FILE`` (or of the default config file, if there is one) in the state directory
(``--state-dir``, ``$STATE_DIRECTORY`` or ``~/.local/state/bistoury``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bistouryctl import render
from bistouryctl.client import NotRunning, find_socket
from bistouryctl.commands.common import Failure, call, emit
from bistouryd import paths
from bistouryd.protocol import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    import duckdb

    from bistouryd.storage.archive import ImportReport, Progress

TABLE_NAMES = (
    "candles",
    "l2_snapshots",
    "trades",
    "asset_ctx",
    "funding_history",
    "raw_messages",
)
FORMATS = ("parquet", "csv", "json")
DAY_MS = 86_400_000
STATUS_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Location:
    db: Path
    parquet: Path


def _locate(args: argparse.Namespace) -> Location:
    from bistouryd.config import ConfigError, StorageConfig, parse_config_text

    if args.db:
        db = Path(args.db).expanduser()
        parquet = Path(args.parquet_dir) if args.parquet_dir else db.parent / "parquet"
        return Location(db, parquet)
    storage = StorageConfig()
    config_path = Path(args.config) if args.config else paths.config_file()
    if args.config or config_path.is_file():
        try:
            text = config_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise Failure(
                EXIT_FAILED,
                f"cannot read {config_path}: {exc.strerror}",
                "check the path, or pass --db FILE",
            ) from None
        try:
            storage = parse_config_text(text, str(config_path)).storage
        except ConfigError as exc:
            raise Failure(
                EXIT_FAILED, f"{config_path} is invalid", *[str(p) for p in exc.problems]
            ) from None
    state = paths.state_dir(args.state_dir)
    parquet = Path(args.parquet_dir) if args.parquet_dir else storage.parquet_path(state)
    return Location(storage.db_path(state), parquet)


def _daemon_socket(args: argparse.Namespace) -> Path | None:
    try:
        return find_socket(args.socket)
    except NotRunning:
        return None
    except PermissionError as exc:
        raise Failure(EXIT_FAILED, str(exc)) from None


def _refuse_if_running(args: argparse.Namespace, what: str) -> None:
    sock = _daemon_socket(args)
    if sock is not None:
        raise Failure(
            EXIT_FAILED,
            f"bistouryd is running (it answered at {sock}); {what} opens the database "
            "file directly, and while the daemon runs its recorder is the only writer",
            "stop the daemon first: bistouryctl stop, then run this again",
            "to see what is stored meanwhile: bistoury data status (asks the daemon)",
        )


def _open(loc: Location, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    from bistouryd.storage.db import StorageError, open_db

    if read_only and not loc.db.exists():
        raise Failure(
            EXIT_FAILED,
            f"no database at {loc.db}",
            "start the daemon once or run bistoury init; or pass --db FILE / --state-dir DIR",
        )
    try:
        return open_db(loc.db, read_only=read_only)
    except StorageError as exc:
        raise Failure(EXIT_FAILED, exc.message, exc.hint) from None


def parse_when(text: str, *, end: bool = False) -> int:
    """A date (``2024-01-31``: its start, or with ``end`` the start of the next day) or an
    ISO date and time (UTC unless it says otherwise), as Unix ms."""
    text = text.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2024-01-31) or date and time (2024-01-31T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    ms = int(when.timestamp() * 1000)
    if end and len(text) <= 10:
        ms += DAY_MS
    return ms


def _parse_until(text: str) -> int:
    return parse_when(text, end=True)


# ---- status -------------------------------------------------------------------------------


def _gaps_since(args: argparse.Namespace) -> int | None:
    if not args.since:
        return None
    from bistouryctl.commands.daemon import parse_since

    try:
        return parse_since(args.since)
    except argparse.ArgumentTypeError as exc:
        raise Failure(EXIT_FAILED, str(exc), "e.g. --since 7d or --since 2024-01-31") from None


def status(args: argparse.Namespace) -> int:
    since_ms = _gaps_since(args)
    result: dict[str, Any]
    if not args.db and _daemon_socket(args) is not None:
        try:
            result = call(args, "data-status", timeout_s=STATUS_TIMEOUT_S, gaps_since_ms=since_ms)
        except Failure as exc:
            if "unknown command" in exc.message:
                raise Failure(
                    EXIT_FAILED,
                    "the running bistouryd cannot report the stored data (no data-status "
                    "command in this version)",
                    "stop it and run this again to read the file directly, or upgrade it",
                ) from None
            raise
    else:
        from bistouryd.storage.status import compute_status

        loc = _locate(args)
        con = _open(loc, read_only=True)
        try:
            result = compute_status(
                con, db_path=loc.db, parquet_dir=loc.parquet, gaps_since_ms=since_ms
            ).model_dump(mode="json")
        finally:
            con.close()
    return emit(args, result, lambda: render_status(result))


def _when(ts_ms: int | None) -> str:
    return "-" if ts_ms is None else render.utc(ts_ms)


def render_status(s: dict[str, Any]) -> str:
    lines = [
        f"database  {s.get('db_path') or '-'}  {render.size(s.get('db_bytes'))}  "
        f"(schema {s.get('schema_version')})",
        f"parquet   {s.get('parquet_dir') or '-'}  {render.size(s.get('parquet_bytes'))}",
    ]
    series = s.get("series", [])
    if not series:
        lines.append("no market data stored yet")
        return "\n".join(lines)
    rows = []
    gap_lines = []
    for x in series:
        if not x["gaps_checked"]:
            gaps = "-"
        elif x["gaps_n"] == 0:
            gaps = "none"
        else:
            gaps = f"{x['gaps_n']:,}"
            if x.get("missing_n") is not None:
                gaps += f" ({x['missing_n']:,} missing)"
        name = x["table"] + (f" {x['interval']}" if x.get("interval") else "")
        rows.append(
            [
                name,
                x["coin"] if x["coin"] is not None else "-",
                f"{x['rows']:,}",
                f"{x['rows_db']:,}",
                f"{x['rows_parquet']:,}",
                render.size(x["parquet_bytes"]) if x["parquet_bytes"] else "-",
                _when(x["first_ts_ms"]),
                _when(x["last_ts_ms"]),
                gaps,
            ]
        )
        for g in x.get("gaps", []):
            missing = f", {g['missing_n']:,} missing" if g.get("missing_n") is not None else ""
            span = render.duration((g["before_ts_ms"] - g["after_ts_ms"]) / 1000)
            gap_lines.append(
                f"  {name} {x['coin']}: {_when(g['after_ts_ms'])} → "
                f"{_when(g['before_ts_ms'])} ({span}{missing})"
            )
    headers = ["TABLE", "COIN", "ROWS", "IN DB", "IN PARQUET", "PQ SIZE", "FIRST (UTC)"]
    headers += ["LAST (UTC)", "GAPS"]
    lines.append(render.table(headers, rows))
    if gap_lines:
        since = s.get("gaps_since_ts_ms")
        lines.append("most recent gaps" + (f" since {_when(since)}" if since else "") + ":")
        lines.extend(gap_lines)
    return "\n".join(lines)


# ---- export -------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export(args: argparse.Namespace) -> int:
    from bistouryd.storage.marketdata import TABLES
    from bistouryd.storage.retention import source_sql

    _refuse_if_running(args, "data export")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise Failure(EXIT_FAILED, f"{out} exists", "choose another --out, or add --force")
    if not out.parent.is_dir():
        raise Failure(EXIT_FAILED, f"directory {out.parent} does not exist", "create it first")
    start: int | None = args.from_
    stop: int | None = args.to
    if start is not None and stop is not None and stop <= start:
        raise Failure(EXIT_FAILED, "--to is before --from", "swap them")
    spec = TABLES[args.table]
    ts = spec.time_column
    where = []
    if start is not None:
        where.append(f"{ts} >= {start}")
    if stop is not None:
        where.append(f"{ts} < {stop}")
    if args.coin:
        where.append(f"coin = {_quote(args.coin)}")
    order = ["coin", "interval", ts] if args.table == "candles" else ["coin", ts]
    if args.table == "raw_messages":
        order = [ts, "seq"]
    loc = _locate(args)
    con = _open(loc, read_only=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        query = f"SELECT * FROM ({source_sql(args.table, loc.parquet)})"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY " + ", ".join(order)
        options = {
            "parquet": "FORMAT parquet, COMPRESSION zstd",
            "csv": "FORMAT csv, HEADER true",
            "json": "FORMAT json",
        }[args.format]
        import duckdb as _duckdb

        try:
            done = con.execute(f"COPY ({query}) TO {_quote(str(tmp))} ({options})").fetchone()
        except _duckdb.Error as exc:
            raise Failure(
                EXIT_FAILED, f"export failed: {exc!s:.300}", "check the disk and the path"
            ) from None
        os.replace(tmp, out)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    rows = int(done[0]) if done else 0
    result = {
        "table": args.table,
        "coin": args.coin,
        "from_ts_ms": start,
        "to_ts_ms": stop,
        "format": args.format,
        "out": str(out),
        "rows": rows,
        "bytes": out.stat().st_size,
    }
    return emit(
        args,
        result,
        lambda: (
            f"exported {rows:,} rows of {args.table} to {out} "
            f"({args.format}, {render.size(result['bytes'])})"
        ),
    )


# ---- import -------------------------------------------------------------------------------


class _Printer:
    """Progress lines on stderr, at most one every ``every_s`` per file (and the last)."""

    def __init__(self, every_s: float = 2.0, quiet: bool = False):
        self.every_s = every_s
        self.quiet = quiet
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if self.quiet or p.done or now - self.last < self.every_s:
            return
        self.last = now
        rate = p.lines / p.seconds if p.seconds > 0 else 0.0
        print(
            f"  {p.path}: {p.lines:,} lines, {p.rows:,} rows written ({rate:,.0f} lines/s)",
            file=sys.stderr,
            flush=True,
        )


def _file_line(f: dict[str, Any]) -> str:
    written = (
        ", ".join(f"{t} +{n:,}" for t, n in sorted(f["written"].items()) if n) or "nothing new"
    )
    extra = []
    dupes = sum(f["duplicates"].values())
    if dupes:
        extra.append(f"{dupes:,} already stored")
    if f["malformed_n"]:
        extra.append(f"{f['malformed_n']:,} malformed skipped")
    rejected = sum(f["rejected"].values())
    if rejected:
        extra.append(f"{rejected:,} rejected")
    tail = f" ({'; '.join(extra)})" if extra else ""
    kind = f"[{f.get('format') or '?'}, {f['lines']:,} lines]"
    return f"{f['status']:<8} {f['path']}  {kind} {written}{tail}"


def import_(args: argparse.Namespace) -> int:
    from bistouryd.messages import report as problem
    from bistouryd.storage.archive import ArchiveError, import_paths
    from bistouryd.storage.retention import refresh_views

    _refuse_if_running(args, "data import")
    loc = _locate(args)
    con = _open(loc, read_only=False)
    printer = _Printer(quiet=args.quiet)
    try:
        try:
            imported: ImportReport = import_paths(
                con,
                [Path(p) for p in args.paths],
                raw=not args.no_raw,
                strict=args.strict,
                force=args.force,
                progress=printer,
            )
        except ArchiveError as exc:
            raise Failure(EXIT_FAILED, exc.message, exc.hint) from None
        refresh_views(con, loc.parquet)  # the *_all views follow a moved parquet dir
    finally:
        con.close()
    result = imported.model_dump(mode="json")
    result["written"] = imported.written
    result["database"] = str(loc.db)
    if not args.json:
        for f in result["files"]:
            for warning in f["warnings"]:
                problem(f"{f['path']}: {warning}", level="WARNING")
            for line in f["problems"]:
                problem(line, level="WARNING")
            if f["malformed_n"] > len(f["problems"]):
                problem(
                    f"{f['path']}: {f['malformed_n'] - len(f['problems']):,} more malformed "
                    "line(s) not shown",
                    level="WARNING",
                )
            if f["error"]:
                problem(f["error"], [f["hint"]] if f["hint"] else [])
    emit(
        args,
        result,
        lambda: "\n".join(
            [_file_line(f) for f in result["files"]]
            + [
                f"{len(result['files'])} file(s) into {loc.db}: "
                + (
                    ", ".join(f"{t} +{n:,}" for t, n in sorted(imported.written.items()) if n)
                    or "nothing new"
                )
            ]
        ),
    )
    if not result["files"]:
        raise Failure(EXIT_FAILED, "no data files found", "pass files or directories to import")
    return EXIT_FAILED if imported.failed else EXIT_OK


# ---- registration -------------------------------------------------------------------------


def _where_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="FILE", help="the DuckDB file (default: from the config)")
    p.add_argument(
        "--state-dir", metavar="DIR", help="default: $STATE_DIRECTORY or ~/.local/state/bistoury"
    )
    p.add_argument(
        "--config", metavar="FILE", help="read storage.path and storage.parquet_dir from it"
    )
    p.add_argument(
        "--parquet-dir", metavar="DIR", help="where old rows are (default: from the config)"
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "data",
        parents=[common],
        help="stored market data: status, export, import",
        description="The stored market data.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="status|export|import", required=True)

    c = data_sub.add_parser(
        "status",
        parents=[common],
        help="rows, time span and gaps per table and coin",
        description="Rows, first and last time and gaps per table and coin (DuckDB and "
        "Parquet together), and file sizes. Asks the daemon while it runs; otherwise "
        "reads the file (read-only).",
    )
    _where_args(c)
    c.add_argument("--since", metavar="WHEN", help="look for gaps only after this (7d, 2024-01-31)")
    c.set_defaults(func=status)

    c = data_sub.add_parser(
        "export",
        parents=[common],
        help="write one table's rows to a file",
        description="Write rows of one table (DuckDB and Parquet together) to a Parquet, "
        "CSV or JSON (one object per line) file. Only while the daemon is stopped.",
    )
    _where_args(c)
    c.add_argument("--table", required=True, choices=TABLE_NAMES)
    c.add_argument(
        "--from",
        dest="from_",
        type=parse_when,
        metavar="DATE",
        help="first day (UTC) or date-time (default: the oldest row)",
    )
    c.add_argument(
        "--to",
        type=_parse_until,
        metavar="DATE",
        help="last day (UTC, inclusive) or date-time (exclusive) (default: the newest row)",
    )
    c.add_argument("--coin", metavar="COIN")
    c.add_argument("--format", choices=FORMATS, default="parquet")
    c.add_argument("--out", required=True, metavar="PATH")
    c.add_argument("--force", action="store_true", help="replace --out if it exists")
    c.set_defaults(func=export)

    c = data_sub.add_parser(
        "import",
        parents=[common],
        help="import HyperLiquid historical data files",
        description="Import HyperLiquid's public archive files (l2Book hourly .lz4, "
        "asset_ctxs daily .csv.lz4, compressed or not) and saved candleSnapshot / "
        "fundingHistory JSON arrays. Directories are searched recursively. Importing "
        "the same data twice adds nothing. Only while the daemon is stopped.",
    )
    _where_args(c)
    c.add_argument("paths", nargs="+", metavar="FILE|DIR")
    c.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    c.add_argument("--force", action="store_true", help="read files already imported again")
    c.add_argument("--no-raw", action="store_true", help="do not keep the raw lines")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.set_defaults(func=import_)
