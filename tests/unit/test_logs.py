"""bistouryd.logs: levels, redaction, formats, journald detection and file rotation."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bistouryd import logs
from bistouryd.logs import (
    LLM,
    PERF,
    REDACTED,
    SIGNAL,
    TRADE,
    JournalFormatter,
    PrdFormatter,
    RedactFilter,
    redact,
    under_journald,
)

KEY = "a1b2c3d4" * 8  # 64 hex digits
PRD_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] [A-Z]+: ")


def record(
    msg: str, level: int = logging.INFO, args: tuple[object, ...] = (), **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("t", level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


# ---- levels -----------------------------------------------------------------------------


def test_custom_levels_have_names() -> None:
    assert (PERF, SIGNAL, LLM, TRADE) == (22, 24, 25, 26)
    for number, name in ((PERF, "PERF"), (SIGNAL, "SIGNAL"), (LLM, "LLM"), (TRADE, "TRADE")):
        assert logging.getLevelName(number) == name
        assert logging.getLevelName(name) == number
        assert logs.level_number(name.lower()) == number
    assert logging.INFO < PERF < SIGNAL < LLM < TRADE < logging.WARNING


def test_level_number_unknown_falls_back_to_info() -> None:
    assert logs.level_number("nonsense") == logging.INFO
    assert logs.level_number("debug") == logging.DEBUG


# ---- redaction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key 0x{KEY} end", f"key {REDACTED} end"),
        (f"key {KEY} end", f"key {REDACTED} end"),
        (f"key {KEY.upper()}.", f"key {REDACTED}."),
        ("using sk-abcdefghijklmnop1234 now", f"using {REDACTED} now"),
        ("k=sk-proj-Ab1_Cd2-Ef3_Gh4-Ij5 x", f"k={REDACTED} x"),
        ("sk-ant-api03-" + "x" * 30, REDACTED),
        ("Authorization: Bearer abcdefghijklmnopqrstuv", f"Authorization: Bearer {REDACTED}"),
        ("bearer eyJhbGciOi.JIUzI1NiJ9.abc", f"bearer {REDACTED}"),
        ("url?api_key=supersecretvalue next", f"url?api_key={REDACTED} next"),
        ("API-KEY: abcdefghij", f"API-KEY: {REDACTED}"),
        ("private_key: hunter2hunter2", f"private_key: {REDACTED}"),
        ("password = 'correcthorse'", f"password = '{REDACTED}'"),
    ],
)
def test_redact_secret_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "BTC 65000.5 at 0xabc, size 0.01",
        "tx 0x" + "a" * 40,  # an address is not a key
        "word token and the password field",
        "password=short",
        "sk-short",
        "order 1234567890 filled",
        "a" * 63,
        "",
    ],
)
def test_redact_leaves_normal_text(text: str) -> None:
    assert redact(text) == text


def test_redact_known_secrets() -> None:
    assert redact("login mysecretvalue ok", ["mysecretvalue"]) == f"login {REDACTED} ok"
    # Empty and very short "secrets" would destroy every log line: ignored.
    assert redact("abc def", ["", "abc"]) == "abc def"


def test_redact_filter_on_args_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PrdFormatter())
    handler.addFilter(RedactFilter(["opensesame-42"]))
    logger = logging.getLogger("bistoury.test.redact")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.info("signing with %s and %s", f"0x{KEY}", "opensesame-42")
        try:
            raise RuntimeError(f"bad key {KEY} (opensesame-42)")
        except RuntimeError:
            logger.exception("failed")
        logger.warning("stack", stack_info=True)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert KEY not in out
    assert "opensesame-42" not in out
    assert f"signing with {REDACTED} and {REDACTED}" in out
    assert "Traceback (most recent call last)" in out
    assert f"RuntimeError: bad key {REDACTED} ({REDACTED})" in out
    assert "ERROR: failed\n" in out
    assert "Stack (most recent call last)" in out


def test_redact_filter_set_known() -> None:
    flt = RedactFilter()
    rec = record("rotated %s", args=("newsecret-123",))
    flt.set_known(["newsecret-123", ""])
    assert flt.filter(rec) is True
    assert rec.getMessage() == f"rotated {REDACTED}"
    assert rec.args is None


# ---- formats ----------------------------------------------------------------------------


def test_prd_format() -> None:
    rec = record("hello %s", args=("world",))
    rec.created = 1750000245.0  # 2025-06-15 15:10:45 UTC
    text = PrdFormatter().format(rec)
    assert PRD_LINE.match(text), text
    assert text.endswith("] INFO: hello world")
    assert text[1:20] == logging.Formatter().formatTime(rec, "%Y-%m-%d %H:%M:%S")


def test_prd_format_agent_record() -> None:
    text = PrdFormatter().format(record("batch written", agent="recorder"))
    assert PRD_LINE.match(text)
    assert text.endswith("] INFO: [recorder] batch written")


def test_prd_format_custom_level() -> None:
    assert PrdFormatter().format(record("bought", TRADE)).endswith("] TRADE: bought")


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>DEBUG"),
        (PERF, "<6>PERF"),
        (logging.INFO, "<6>INFO"),
        (SIGNAL, "<6>SIGNAL"),
        (LLM, "<6>LLM"),
        (TRADE, "<5>TRADE"),
        (logging.WARNING, "<4>WARNING"),
        (logging.ERROR, "<3>ERROR"),
        (logging.CRITICAL, "<2>CRITICAL"),
    ],
)
def test_journal_priorities(level: int, prefix: str) -> None:
    assert JournalFormatter().format(record("x", level)) == f"{prefix}: x"


def test_journal_prefixes_every_line() -> None:
    text = JournalFormatter().format(record("one\ntwo\nthree", logging.WARNING))
    assert text.split("\n") == ["<4>WARNING: one", "<4>two", "<4>three"]


def test_journal_agent_record() -> None:
    text = JournalFormatter().format(record("up", agent="recorder"))
    assert text == "<6>INFO: [recorder] up"


# ---- journald detection -----------------------------------------------------------------


@pytest.fixture
def stderr_file(tmp_path: Path) -> Iterator[io.TextIOWrapper]:
    """A real file to put in place of sys.stderr (inside the test body: pytest's capture
    swaps sys.stderr back at each test phase, so a fixture cannot patch it)."""
    with open(tmp_path / "stderr", "w") as fh:
        yield fh


def test_under_journald_matches_stderr(
    stderr_file: io.TextIOWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr_file)
    st = os.fstat(stderr_file.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert under_journald() is True
    other = tmp_path / "other"
    other.write_text("")
    ost = os.stat(other)
    monkeypatch.setenv("JOURNAL_STREAM", f"{ost.st_dev}:{ost.st_ino}")
    assert under_journald() is False
    for garbage in ("", "nonsense", "1:2:3", f"{st.st_dev}"):
        monkeypatch.setenv("JOURNAL_STREAM", garbage)
        assert under_journald() is False
    monkeypatch.delenv("JOURNAL_STREAM")
    assert under_journald() is False


def test_under_journald_with_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    try:
        with open(write_fd, "w", closefd=True) as fh:
            monkeypatch.setattr(sys, "stderr", fh)
            st = os.fstat(write_fd)
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            assert under_journald() is True
    finally:
        os.close(read_fd)


# ---- setup() ----------------------------------------------------------------------------


@pytest.fixture
def root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def test_setup_writes_prd_lines_to_file(root_logger: logging.Logger, tmp_path: Path) -> None:
    path = tmp_path / "logs" / "bistoury.log"
    logs.setup(
        "info",
        file=path,
        max_bytes=1 << 20,
        backup_count=1,
        to_stderr=False,
        known_secrets=["opensesame-42"],
    )
    log = logging.getLogger("bistoury.test.setup")
    log.debug("not at INFO")
    log.info("started with opensesame-42")
    log.log(TRADE, "bought %d BTC", 1)
    log.warning("agent slow", extra={"agent": "recorder"})
    for handler in root_logger.handlers:
        handler.flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3, lines
    assert all(PRD_LINE.match(line) for line in lines)
    assert lines[0].endswith(f"] INFO: started with {REDACTED}")
    assert lines[1].endswith("] TRADE: bought 1 BTC")
    assert lines[2].endswith("] WARNING: [recorder] agent slow")
    assert root_logger.level == logging.INFO


def test_setup_replaces_previous_handlers(root_logger: logging.Logger, tmp_path: Path) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    logs.setup("INFO", file=first, max_bytes=1 << 20, backup_count=0, to_stderr=False)
    redactor = logs.setup("DEBUG", file=second, max_bytes=1 << 20, backup_count=0, to_stderr=False)
    logging.getLogger("bistoury.test.replace").debug("only in second")
    redactor.set_known(["late-secret-99"])
    logging.getLogger("bistoury.test.replace").info("now late-secret-99")
    for handler in root_logger.handlers:
        handler.flush()
    assert len(root_logger.handlers) == 1
    assert first.read_text() == ""
    text = second.read_text()
    assert "DEBUG: only in second" in text
    assert "late-secret-99" not in text
    assert f"INFO: now {REDACTED}" in text


def test_setup_rotates_at_max_bytes(root_logger: logging.Logger, tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    logs.setup("INFO", file=path, max_bytes=400, backup_count=2, to_stderr=False)
    log = logging.getLogger("bistoury.test.rotate")
    for i in range(40):
        log.info("line %02d %s", i, "x" * 30)
    for handler in root_logger.handlers:
        handler.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["b.log", "b.log.1", "b.log.2"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert 0 < size <= 400
        assert all(PRD_LINE.match(line) for line in (tmp_path / name).read_text().splitlines())
    assert "line 39" in path.read_text()


def test_setup_to_stderr_under_journald(
    root_logger: logging.Logger,
    stderr_file: io.TextIOWrapper,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr_file)
    st = os.fstat(stderr_file.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    log_file = tmp_path / "unused.log"
    logs.setup("INFO", file=log_file, max_bytes=1 << 20, backup_count=0, to_stderr=False)
    logging.getLogger("bistoury.test.journal").warning("two\nlines")
    stderr_file.flush()
    assert (tmp_path / "stderr").read_text() == "<4>WARNING: two\n<4>lines\n"
    assert not log_file.exists()
