"""Telling a data file's kind from its content, and refusing unusable folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bistouryd.simexchange.datafiles import DataError, bundled_data_dir, load_folder

CANDLES = [
    {
        "t": 0,
        "T": 59_999,
        "s": "SOL",
        "i": "1m",
        "o": "150.1",
        "c": "150.3",
        "h": "150.4",
        "l": "150.0",
        "v": "12.34",
        "n": 7,
    },
    {
        "t": 60_000,
        "T": 119_999,
        "s": "SOL",
        "i": "1m",
        "o": "150.3",
        "c": "150.2",
        "h": "150.5",
        "l": "150.1",
        "v": "3.2",
    },
]
BOOK = {
    "coin": "SOL",
    "time": 30_000,
    "levels": [[{"px": "150.2", "sz": "3.1", "n": 2}], [{"px": "150.3", "sz": "1.0", "n": 1}]],
}


def write(folder: Path, name: str, content: object) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / name).write_text(text)


def test_kinds_are_detected_from_content(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.json",
        {
            "request": {"type": "meta"},
            "response": {"universe": [{"name": "SOL", "szDecimals": 2, "maxLeverage": 20}]},
        },
    )
    write(tmp_path, "b.json", CANDLES)
    write(tmp_path, "c.json", [{"coin": "SOL", "fundingRate": "0.0000125", "time": 3_600_000}])
    write(tmp_path, "d.json", BOOK)
    archive = [
        {"time": "2025-07-21T00:00:00.5", "ver_num": 1, "raw": {"channel": "l2Book", "data": BOOK}},
        {
            "time": "2025-07-21T00:00:01.5",
            "ver_num": 1,
            "raw": {"channel": "l2Book", "data": {**BOOK, "time": 31_000}},
        },
    ]
    write(tmp_path, "e.ndjson", "\n".join(json.dumps(x) for x in archive) + "\n")
    frames = [
        {"channel": "subscriptionResponse", "data": {"method": "subscribe"}},
        {
            "channel": "trades",
            "data": [
                {
                    "coin": "SOL",
                    "side": "B",
                    "px": "150.3",
                    "sz": "1.5",
                    "time": 40_000,
                    "hash": "0x1",
                    "tid": 9,
                }
            ],
        },
    ]
    write(tmp_path, "f.jsonl", "\n".join(json.dumps(x) for x in frames))
    write(tmp_path, "notes.md", "# my notes")
    write(tmp_path, "g.json.lz4", "xx")
    data = load_folder(tmp_path)
    kinds = {f.path.name: f.kind for f in data.files}
    assert kinds == {
        "a.json": "meta",
        "b.json": "candles",
        "c.json": "funding",
        "d.json": "l2Book",
        "e.ndjson": "wsFrames",
        "f.jsonl": "wsFrames",
        "notes.md": "ignored",
        "g.json.lz4": "ignored",
    }
    assert [r.name for r in data.meta] == ["SOL"]
    bars = data.candles["SOL"][60_000]
    assert [b.trades_n for b in bars] == [7, None]
    assert [b.ts_ms for b in data.books["SOL"]] == [30_000, 31_000]  # archive keyed by data.time
    assert data.trades["SOL"][0].tid == 9 and data.funding["SOL"][0].funding_rate == 0.0000125
    reasons = {f.path.name: f.detail for f in data.files}
    assert "lz4 -d" in reasons["g.json.lz4"]


def test_a_corrupt_line_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "a.ndjson", json.dumps({"channel": "l2Book", "data": BOOK}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"a\.ndjson: line 2 is not JSON"):
        load_folder(tmp_path)


def test_a_malformed_candle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.json", [{**CANDLES[0], "o": "not a price"}])
    with pytest.raises(DataError, match="malformed") as caught:
        load_folder(tmp_path)
    assert "move it out" in caught.value.hint


def test_unusable_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "missing")
    write(tmp_path, "a.json", {"hello": "world"})
    with pytest.raises(DataError, match="no market data"):
        load_folder(tmp_path)


def test_the_bundled_sample() -> None:
    data = load_folder(bundled_data_dir())
    assert sorted(data.candles) == ["BTC", "ETH"]
    assert sorted(data.candles["BTC"]) == [60_000, 3_600_000]
    assert len(data.candles["BTC"][60_000]) == 5368
    assert len(data.funding["BTC"]) > 700 and len(data.funding["ETH"]) > 700
    assert sorted(data.books) == ["BTC", "DYDX"]
    assert data.mids["BTC"] == 30135.0
    ignored = [f.path.name for f in data.files if f.kind == "ignored"]
    assert ignored == ["SOURCES.md"]
