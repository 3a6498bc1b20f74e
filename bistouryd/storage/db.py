"""Opening the database and bringing its schema up to date.

Migrations are numbered SQL files (``migrations/NNNN_name.sql``) applied in order, each
in its own transaction, and recorded in ``schema_version``. A file written by a newer
Bistoury (a higher version than any migration here) is refused rather than guessed at.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StorageError(Exception):
    """The database cannot be used; the message says why and what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(f"{message} → {hint}")
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    folder = resources.files("bistouryd.storage") / "migrations"
    return _parse((entry.name, entry.read_text(encoding="utf-8")) for entry in folder.iterdir())


def migrations_from(directory: Path) -> list[Migration]:
    return _parse((p.name, p.read_text(encoding="utf-8")) for p in directory.iterdir())


def _parse(files: Iterable[tuple[str, str]]) -> list[Migration]:
    found = []
    for name, sql in files:
        match = _MIGRATION_NAME.match(name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), sql))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1..N without gaps, found {versions}")
    return found


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not row or row[0] == 0:
        return 0
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(current[0]) if current else 0


def migrate(con: duckdb.DuckDBPyConnection, migrations: list[Migration], path: Path) -> int:
    """Apply what is missing; return the resulting version."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_ts_ms BIGINT NOT NULL)"
    )
    current = schema_version(con)
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise StorageError(
            f"{path} has schema version {current}, newer than this Bistoury knows ({known})",
            "upgrade Bistoury, or point storage.path at another database file",
        )
    for migration in migrations:
        if migration.version <= current:
            continue
        con.begin()
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.name, int(time.time() * 1000)],
            )
            con.commit()
        except duckdb.Error as exc:
            con.rollback()
            raise StorageError(
                f"migration {migration.version:04d}_{migration.name} failed on {path}: {exc}",
                "restore the file from a backup or report the bug",
            ) from None
        current = migration.version
    return current


def open_db(
    path: Path, *, read_only: bool = False, migrations: list[Migration] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open (creating and migrating when writable) the database file at ``path``."""
    if read_only and not path.exists():
        raise StorageError(f"{path} does not exist", "start the daemon once or run bistoury init")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            holder = re.search(r"\(PID (\d+)\)", str(exc))
            who = f"process {holder.group(1)}" if holder else "another process"
            raise StorageError(
                f"{path} is in use by {who} (a running bistouryd?)",
                "ask the daemon through bistouryctl, or stop it first",
            ) from None
        raise StorageError(f"cannot open {path}: {exc}", "check the path and permissions") from None
    except duckdb.Error as exc:
        raise StorageError(
            f"{path} is not a usable DuckDB database: {exc}",
            "point storage.path at another file, or restore it from a backup",
        ) from None
    try:
        if read_only:
            known = (migrations or bundled_migrations())[-1].version
            if schema_version(con) > known:
                raise StorageError(
                    f"{path} was written by a newer Bistoury (schema {schema_version(con)})",
                    "upgrade Bistoury to read it",
                )
        else:
            migrate(con, bundled_migrations() if migrations is None else migrations, path)
    except BaseException:
        con.close()
        raise
    return con


def newest_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[str],
    *,
    limit: int,
    since_ms: int | None = None,
    equal: Mapping[str, object | None] | None = None,
    any_of: tuple[str, Sequence[object]] | None = None,
) -> list[tuple[Any, ...]]:
    """The newest ``limit`` rows of ``table`` by ``ts_ms`` (then ``id``), oldest first:
    from ``since_ms`` on, where each ``equal`` column that is not None matches, and the
    ``any_of`` column is one of its values (when given any). The listings of the client
    (events, signals, decisions) all read this way."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (equal or {}).items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since_ms is not None:
        where.append("ts_ms >= ?")
        params.append(since_ms)
    if any_of is not None and any_of[1]:
        column, values = any_of
        where.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = con.execute(
        f"SELECT {', '.join(columns)} FROM {table} {clause} ORDER BY ts_ms DESC, id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return list(reversed(rows))
