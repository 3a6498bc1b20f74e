"""bistouryd.storage.archive: HyperLiquid's historical files, built here in the archive's
format (LZ4 frames, NDJSON, CSV) and imported into a real DuckDB file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bistouryd.storage.archive import (
    ArchiveError,
    Progress,
    import_file,
    import_paths,
    parse_time_ms,
)
from bistouryd.storage.db import open_db

T0 = 1_681_516_807_400  # 2023-04-15T00:00:07.400Z


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_db(tmp_path / "imp.duckdb")
    yield connection
    connection.close()


def lz4_write(path: Path, text: str) -> Path:
    frame = pytest.importorskip("lz4.frame")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frame.compress(text.encode()))
    return path


def l2_line(i: int, coin: str = "BTC") -> str:
    data = {
        "coin": coin,
        "time": T0 + 500 * i,
        "levels": [
            [{"px": f"{30000 - k}.5", "sz": f"{k + 1}.25", "n": k + 1} for k in range(3)],
            [{"px": f"{30001 + k}.5", "sz": "0.001", "n": 1} for k in range(2)],
        ],
    }
    capture = f"2023-04-15T00:00:{8 + i // 2:02d}.{(i % 2) * 5}05751164"
    return json.dumps(
        {"time": capture, "ver_num": 1, "raw": {"channel": "l2Book", "data": data}},
        separators=(",", ":"),
    )


CTX_HEADER = (
    "time,coin,funding,open_interest,prev_day_px,day_ntl_vlm,premium,oracle_px,mark_px,"
    "mid_px,impact_bid_px,impact_ask_px"
)


def ctx_csv(rows: int = 3, header: str = CTX_HEADER) -> str:
    lines = [header]
    for i in range(rows):
        for coin in ("BTC", "ETH"):
            lines.append(
                f"2023-05-20T00:{i:02d}:00Z,{coin},0.0000125,{1000 + i},27000.0,1.5e9,"
                f"0.0001,27001.0,27000.5,27000.25,26999.0,"
            )
    return "\n".join(lines) + "\n"


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    return con.execute(sql).fetchall()


def n(con: duckdb.DuckDBPyConnection, table: str) -> int:
    found = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert found is not None
    return int(found[0])


# ---- l2Book hourly files ------------------------------------------------------------------


def test_archive_l2book_lz4(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    lines = [l2_line(i) for i in range(6)]
    path = lz4_write(tmp_path / "market_data/20230415/0/l2Book/BTC.lz4", "\n".join(lines) + "\n")
    report = import_file(con, path)
    assert report.status == "imported", report
    assert report.format == "ndjson" and report.lines == 6
    assert report.written == {"l2_snapshots": 6, "raw_messages": 6}
    first = rows(con, "SELECT * FROM l2_snapshots ORDER BY ts_ms LIMIT 1")[0]
    # Keyed by the exchange's raw.data.time, levels exactly as sent.
    assert first == (
        "BTC",
        T0,
        [30000.5, 29999.5, 29998.5],
        [1.25, 2.25, 3.25],
        [1, 2, 3],
        [30001.5, 30002.5],
        [0.001, 0.001],
        [1, 1],
    )
    raw = rows(
        con,
        "SELECT received_ts_ms, source, channel, coin, text FROM raw_messages ORDER BY seq LIMIT 2",
    )
    # The raw line is kept verbatim; its time is the capture time (ms, UTC).
    assert raw[0] == (1_681_516_808_005, "archive", "l2Book", "BTC", lines[0])
    assert raw[1][0] == 1_681_516_808_505


def test_importing_twice_adds_nothing(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = lz4_write(tmp_path / "BTC.lz4", "\n".join(l2_line(i) for i in range(4)))
    import_file(con, path)
    again = import_file(con, path)
    assert again.status == "skipped" and "already imported" in again.warnings[0]
    forced = import_file(con, path, force=True)
    assert forced.status == "imported"
    assert forced.written == {"l2_snapshots": 0, "raw_messages": 0}
    assert forced.duplicates == {"l2_snapshots": 4, "raw_messages": 4}
    # The same data in another file (decompressed, say) is not added either.
    plain = tmp_path / "BTC"
    plain.write_text("\n".join(l2_line(i) for i in range(4)))
    assert import_file(con, plain).written == {"l2_snapshots": 0, "raw_messages": 0}
    assert (n(con, "l2_snapshots"), n(con, "raw_messages")) == (4, 4)
    assert n(con, "import_log") == 2


def test_malformed_lines_are_reported_and_skipped(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    lines = [
        l2_line(0),
        "{not json",
        l2_line(1),
        '{"time":"x","raw":{"channel":"l2Book","data":{"coin":"BTC"}}}',
        "",
        l2_line(2),
        '{"channel":"pong"}',
    ]
    path = lz4_write(tmp_path / "BTC.lz4", "\n".join(lines))
    report = import_file(con, path)
    assert report.status == "imported"
    assert report.malformed_n == 2
    assert report.problems[0].startswith(f"{path}:2: not JSON")
    assert report.problems[1].startswith(f"{path}:4: capture time")
    assert "1 line(s) of channel 'pong' not imported" in report.warnings
    assert n(con, "l2_snapshots") == 3


def test_strict_stops_at_the_first_bad_line(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    lines = [l2_line(0), l2_line(1), '{"raw":{"channel":"l2Book","data":{"levels":[]}}}']
    path = tmp_path / "BTC.ndjson"
    path.write_text("\n".join([*lines, l2_line(3)]))
    with pytest.raises(ArchiveError) as info:
        import_file(con, path, strict=True)
    assert f"{path}:3: malformed l2Book" in info.value.message
    assert "--strict" in info.value.message
    assert n(con, "l2_snapshots") == 2  # what came before the bad line is kept
    assert n(con, "import_log") == 0  # not complete: a later import reads it again


def test_websocket_frames_per_line(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    frames = [
        {
            "channel": "trades",
            "data": [
                {
                    "coin": "ETH",
                    "side": "A",
                    "px": "1900.5",
                    "sz": "0.5",
                    "time": T0,
                    "hash": "0xab",
                    "tid": 77,
                }
            ],
        },
        {
            "channel": "candle",
            "data": {
                "t": T0,
                "T": T0 + 59_999,
                "s": "ETH",
                "i": "1m",
                "o": "1",
                "c": "2",
                "h": "2",
                "l": "1",
                "v": "10",
                "n": 3,
            },
        },
    ]
    path = tmp_path / "frames.jsonl"
    path.write_text("\n".join(json.dumps(f) for f in frames))
    report = import_file(con, path)
    assert report.written == {"trades": 1, "candles": 1, "raw_messages": 2}
    assert rows(con, "SELECT side, px, tid FROM trades") == [("sell", 1900.5, 77)]


def test_truncated_lz4_file_fails_clearly(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = lz4_write(tmp_path / "BTC.lz4", "\n".join(l2_line(i) for i in range(50)))
    path.write_bytes(path.read_bytes()[:-40])
    report = import_file(con, path)
    assert report.status == "failed"
    assert report.error is not None and "cannot be read" in report.error
    assert report.hint is not None and "download it again" in report.hint


# ---- asset_ctxs daily CSV -----------------------------------------------------------------


def test_asset_ctxs_csv_lz4(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = lz4_write(tmp_path / "asset_ctxs/20230520.csv.lz4", ctx_csv(3))
    report = import_file(con, path)
    assert report.status == "imported" and report.format == "asset_ctxs-csv"
    assert report.written == {"asset_ctx": 6}
    assert report.warnings == []
    got = rows(con, "SELECT * FROM asset_ctx WHERE coin = 'ETH' ORDER BY ts_ms LIMIT 1")[0]
    assert got == (
        "ETH",
        1_684_540_800_000,
        0.0000125,
        1000.0,
        27000.5,
        27001.0,
        27000.25,
        0.0001,
        27000.0,
        1.5e9,
        26999.0,
        None,
    )
    assert import_file(con, path).status == "skipped"


def test_asset_ctxs_columns_by_name(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    # Other order, camelCase, epoch-ms times, an unknown column, optional ones missing.
    text = "coin,markPx,time,oraclePx,openInterest,funding,shiny_new\n"
    text += "SOL,20.5,1684540800000,20.6,5000,-0.00002,7\nSOL,20.7,1684540860000,20.8,5001,0,8\n"
    path = tmp_path / "ctx.csv"
    path.write_text(text)
    report = import_file(con, path)
    assert report.written == {"asset_ctx": 2}
    assert report.warnings == ["ignored unknown column(s): shiny_new"]
    assert rows(con, "SELECT ts_ms, mark_px, mid_px FROM asset_ctx ORDER BY 1") == [
        (1_684_540_800_000, 20.5, None),
        (1_684_540_860_000, 20.7, None),
    ]


def test_asset_ctxs_missing_columns_stop_the_file(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "ctx.csv.gz"
    path.write_bytes(gzip.compress(b"time,coin,funding,open_interest\n1,BTC,0,1\n"))
    report = import_file(con, path)
    assert report.status == "failed"
    assert report.error is not None
    assert "lacks column(s) mark_px, oracle_px" in report.error
    assert "(its header: time, coin, funding, open_interest)" in report.error
    assert n(con, "asset_ctx") == 0


def test_asset_ctxs_bad_row_has_its_line_number(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    text = ctx_csv(2).replace("27000.5,27000.25", "oops,27000.25", 1)
    path = tmp_path / "ctx.csv"
    path.write_text(text)
    report = import_file(con, path)
    assert report.malformed_n == 1
    assert report.problems[0].startswith(f"{path}:2: ")
    assert n(con, "asset_ctx") == 3


# ---- REST responses saved as JSON ---------------------------------------------------------


def test_candle_snapshot_and_funding_history_json(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    candles = [
        {
            "t": T0 + 60_000 * i,
            "T": T0 + 60_000 * i + 59_999,
            "s": "kPEPE",
            "i": "1m",
            "o": "0.001601",
            "c": "0.001604",
            "h": "0.001616",
            "l": "0.001601",
            "v": "520665683.0",
            "n": 709,
        }
        for i in range(5)
    ]
    funding = [
        {
            "coin": "BTC",
            "fundingRate": "0.0000125",
            "premium": "0.00007028",
            "time": 1689627600065 + 3_600_000 * i,
        }
        for i in range(4)
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "candles.json").write_text(json.dumps(candles))
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "funding.json").write_text(json.dumps(funding, indent=1))
    (tmp_path / "in" / "README.md").write_text("# not data")
    (tmp_path / "in" / ".hidden.json").write_text("[")
    seen: list[Progress] = []
    report = import_paths(con, [tmp_path / "in"], progress=seen.append)
    assert [(Path(f.path).name, f.format, f.status) for f in report.files] == [
        ("candles.json", "candleSnapshot-json", "imported"),
        ("funding.json", "fundingHistory-json", "imported"),
    ]
    assert report.written == {"candles": 5, "funding_history": 4, "raw_messages": 2}
    assert rows(con, "SELECT DISTINCT source, channel FROM raw_messages ORDER BY 2") == [
        ("rest", "candleSnapshot"),
        ("rest", "fundingHistory"),
    ]
    assert rows(con, "SELECT close_px, trades_n FROM candles LIMIT 1") == [(0.001604, 709)]
    assert seen and seen[-1].done
    again = import_paths(con, [tmp_path / "in"], force=True)
    assert again.written == {"candles": 5, "funding_history": 0, "raw_messages": 0}
    assert (n(con, "candles"), n(con, "funding_history"), n(con, "raw_messages")) == (5, 4, 2)


def test_unknown_files_and_paths(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\n")
    report = import_paths(con, [odd, tmp_path / "missing.lz4"])
    assert [f.status for f in report.files] == ["failed", "failed"]
    assert report.files[0].error is not None and "not a recognised format" in report.files[0].error
    assert report.files[1].error is not None and "no such file" in report.files[1].error
    (tmp_path / "weird.json").write_text('[{"foo": 1}]')
    failed = import_file(con, tmp_path / "weird.json")
    assert failed.error is not None and "neither candleSnapshot nor fundingHistory" in failed.error
    with pytest.raises(ArchiveError):
        import_paths(con, [tmp_path / "missing.lz4"], strict=True)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2023-04-15T00:00:07.705751164", 1_681_516_807_705),
        ("2023-04-15T00:00:07Z", 1_681_516_807_000),
        ("2023-04-15 02:00:07.5+02:00", 1_681_516_807_500),
        (1_681_516_807, 1_681_516_807_000),
        ("1681516807705", 1_681_516_807_705),
        (1_681_516_807_705_751, 1_681_516_807_705),
        (1_681_516_807_705_751_164, 1_681_516_807_705),
    ],
)
def test_parse_time_ms(value: object, ms: int) -> None:
    assert parse_time_ms(value) == ms


@pytest.mark.parametrize("value", ["", "yesterday", "2023-13-01T00:00:00", -5, True])
def test_parse_time_ms_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_time_ms(value)
