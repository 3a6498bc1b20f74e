"""bistouryd.storage: migrations, constraints and the sys_events table, on real DuckDB files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bistouryd.events import SysEvent
from bistouryd.storage.db import (
    StorageError,
    bundled_migrations,
    migrations_from,
    open_db,
    schema_version,
)
from bistouryd.storage.events import insert_events, query_events


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    return {r[0] for r in rows}


def migration_dir(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for name, sql in files.items():
        (root / name).write_text(sql, encoding="utf-8")
    return root


A = "CREATE TABLE a (x INTEGER NOT NULL);"
B = "CREATE TABLE b (y VARCHAR);"


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "db" / "bistoury.duckdb")
    yield connection
    connection.close()


# ---- schema and migrations --------------------------------------------------------------


def test_new_file_gets_schema(tmp_path: Path) -> None:
    path = tmp_path / "new" / "bistoury.duckdb"
    con = open_db(path)
    try:
        bundled = bundled_migrations()
        assert len(bundled) >= 1
        assert [m.version for m in bundled] == list(range(1, len(bundled) + 1))
        assert schema_version(con) == len(bundled)
        assert {"schema_version", "sys_events"} <= tables(con)
        rows = con.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        assert rows == [(m.version, m.name) for m in bundled]
    finally:
        con.close()
    assert path.is_file()


def test_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "bistoury.duckdb"
    open_db(path).close()
    con = open_db(path)
    try:
        count = con.execute("SELECT count(*) FROM schema_version").fetchone()
        assert count == (len(bundled_migrations()),)
    finally:
        con.close()


def test_upgrade_older_file(tmp_path: Path) -> None:
    path = tmp_path / "up.duckdb"
    v1 = migration_dir(tmp_path / "v1", {"0001_a.sql": A, "notes.txt": "ignored"})
    v2 = migration_dir(tmp_path / "v2", {"0001_a.sql": A, "0002_b.sql": B})
    con = open_db(path, migrations=migrations_from(v1))
    assert schema_version(con) == 1
    assert "b" not in tables(con)
    con.execute("INSERT INTO a VALUES (42)")
    con.close()
    con = open_db(path, migrations=migrations_from(v2))
    try:
        assert schema_version(con) == 2
        assert {"a", "b"} <= tables(con)
        assert con.execute("SELECT x FROM a").fetchall() == [(42,)]
        names = con.execute("SELECT name FROM schema_version ORDER BY version").fetchall()
        assert names == [("a",), ("b",)]
    finally:
        con.close()


def test_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.duckdb"
    open_db(path).close()
    raw = duckdb.connect(str(path))
    raw.execute("INSERT INTO schema_version VALUES (999, 'future', 1)")
    raw.close()
    for read_only in (False, True):
        with pytest.raises(StorageError) as info:
            open_db(path, read_only=read_only)
        assert "newer" in info.value.message
        assert "999" in info.value.message
        assert "upgrade" in info.value.hint.lower()
    # Refusing left the file as it was.
    raw = duckdb.connect(str(path), read_only=True)
    try:
        assert schema_version(raw) == 999
    finally:
        raw.close()


def test_failing_migration_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "fail.duckdb"
    v1 = migration_dir(tmp_path / "v1", {"0001_a.sql": A})
    broken = "CREATE TABLE half (y INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    v2 = migration_dir(tmp_path / "v2", {"0001_a.sql": A, "0002_broken.sql": broken})
    open_db(path, migrations=migrations_from(v1)).close()
    with pytest.raises(StorageError) as info:
        open_db(path, migrations=migrations_from(v2))
    assert "0002_broken" in info.value.message
    assert "failed" in info.value.message
    raw = duckdb.connect(str(path), read_only=True)
    try:
        assert schema_version(raw) == 1
        assert "half" not in tables(raw)
        assert "a" in tables(raw)
    finally:
        raw.close()


@pytest.mark.parametrize(
    "names",
    [["0001_a.sql", "0003_c.sql"], ["0002_b.sql"], ["0001_a.sql", "0001_again.sql"]],
)
def test_migration_numbering_gaps_rejected(tmp_path: Path, names: list[str]) -> None:
    folder = migration_dir(tmp_path / "m", {name: A for name in names})
    with pytest.raises(ValueError, match="without gaps"):
        migrations_from(folder)


def test_migration_names_that_do_not_match_are_ignored(tmp_path: Path) -> None:
    folder = migration_dir(
        tmp_path / "m", {"0001_a.sql": A, "1_short.sql": B, "0002_Upper.sql": B, "README": ""}
    )
    assert [(m.version, m.name) for m in migrations_from(folder)] == [(1, "a")]


def test_read_only_open_of_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.duckdb"
    with pytest.raises(StorageError) as info:
        open_db(path, read_only=True)
    assert "does not exist" in info.value.message
    assert not path.exists()


def test_read_only_open_reads(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    con = open_db(path)
    insert_events(con, [SysEvent(kind="start", message="hello", ts_ms=1)])
    con.close()
    ro = open_db(path, read_only=True)
    try:
        assert [e.message for e in query_events(ro, limit=5)] == ["hello"]
        with pytest.raises(duckdb.Error):
            ro.execute("DELETE FROM sys_events")
    finally:
        ro.close()


def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not duckdb" * 512)
    with pytest.raises(StorageError):
        open_db(path)


# ---- constraints ------------------------------------------------------------------------

INSERT = "INSERT INTO sys_events (id, ts_ms, kind, level, source, message) VALUES (?,?,?,?,?,?)"


@pytest.mark.parametrize(
    "row",
    [
        ("x", 1, "start", "debug", "s", "m"),  # level outside the allowed set
        ("x", 0, "start", "info", "s", "m"),  # ts_ms must be > 0
        ("x", -5, "start", "info", "s", "m"),
        ("x", 1, "", "info", "s", "m"),  # empty kind
        ("x", 1, "start", "info", "", "m"),  # empty source
        ("x", 1, "start", "info", "s", None),  # NOT NULL message
        ("x", None, "start", "info", "s", "m"),  # NOT NULL ts_ms
        (None, 1, "start", "info", "s", "m"),  # primary key
    ],
)
def test_constraints_reject_bad_rows(con: duckdb.DuckDBPyConnection, row: tuple) -> None:
    with pytest.raises(duckdb.ConstraintException):
        con.execute(INSERT, list(row))
    assert con.execute("SELECT count(*) FROM sys_events").fetchone() == (0,)


def test_valid_row_and_default_details(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(INSERT, ["x", 1, "start", "critical", "s", "m"])
    assert con.execute("SELECT details FROM sys_events").fetchone() == ("{}",)
    with pytest.raises(duckdb.ConstraintException):
        con.execute(INSERT, ["x", 2, "stop", "info", "s", "again"])


# ---- events -----------------------------------------------------------------------------


def make_events(n: int, start_ts: int = 1000, kind: str = "start") -> list[SysEvent]:
    return [
        SysEvent(kind=kind, ts_ms=start_ts + i, message=f"m{i}", source="test", details={"i": i})
        for i in range(n)
    ]


def test_insert_is_idempotent_by_id(con: duckdb.DuckDBPyConnection) -> None:
    batch = make_events(4)
    insert_events(con, batch)
    insert_events(con, batch)
    insert_events(con, batch[:2] + make_events(1, start_ts=5000))
    assert con.execute("SELECT count(*) FROM sys_events").fetchone() == (5,)
    insert_events(con, [])
    assert con.execute("SELECT count(*) FROM sys_events").fetchone() == (5,)


def test_query_newest_n_oldest_first(con: duckdb.DuckDBPyConnection) -> None:
    batch = make_events(10)
    insert_events(con, list(reversed(batch)))
    got = query_events(con, limit=3)
    assert [e.message for e in got] == ["m7", "m8", "m9"]
    assert got == batch[7:]
    assert query_events(con, limit=100) == batch


def test_query_since_and_kinds(con: duckdb.DuckDBPyConnection) -> None:
    starts = make_events(5, start_ts=1000, kind="start")
    modes = make_events(5, start_ts=1002, kind="mode")
    reloads = make_events(2, start_ts=1001, kind="reload")
    insert_events(con, starts + modes + reloads)
    assert [e.ts_ms for e in query_events(con, limit=50, since_ms=1004)] == [
        1004,
        1004,
        1005,
        1006,
    ]
    only_modes = query_events(con, limit=50, kinds=["mode"])
    assert only_modes == modes
    mixed = query_events(con, limit=50, since_ms=1002, kinds=["start", "reload"])
    assert sorted((e.kind, e.ts_ms) for e in mixed) == [
        ("reload", 1002),
        ("start", 1002),
        ("start", 1003),
        ("start", 1004),
    ]
    assert query_events(con, limit=50, kinds=["giveup"]) == []


def test_details_round_trip(con: duckdb.DuckDBPyConnection) -> None:
    details = {"int": 3, "float": 1.5, "text": 'é ✓ "q"', "yes": True, "none": None}
    event = SysEvent(kind="alert", level="warning", message="m", details=details)
    insert_events(con, [event])
    (got,) = query_events(con, limit=1)
    assert got == event
    assert got.details == details
    assert isinstance(got.details["int"], int)
    assert got.details["yes"] is True
