"""bistouryd.config: YAML validation with line numbers, secrets, reload diffs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from bistouryd import config as cfg
from bistouryd.config import (
    SECRET_VARS,
    Config,
    ConfigError,
    Problem,
    Secrets,
    cross_check,
    diff,
    load,
    load_secrets,
    parse_config_text,
    secrets_diff,
)

REPO = Path(__file__).resolve().parents[2]
KEY = "ab" * 32  # a well-formed 64-hex private key
ADDRESS = "0x" + "12" * 20


@pytest.fixture(autouse=True)
def _no_secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in SECRET_VARS:
        monkeypatch.delenv(var, raising=False)


def problems_of(text: str, file: str = "c.yaml") -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# ---- valid files ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_gives_defaults(text: str) -> None:
    assert parse_config_text(text) == Config()


def test_near_empty_file_keeps_other_defaults() -> None:
    config = parse_config_text("trading:\n  max_positions: 7\n")
    assert config.trading.max_positions == 7
    assert config.trading.pairs == ["BTC", "ETH"]
    assert config.agents.enabled == ["recorder", "collector", "signals", "trader", "positions"]
    assert config.exchange.network == "mainnet"
    assert config.metrics.port == 9464


def test_bundled_example_config_is_valid() -> None:
    text = (REPO / "etc" / "config.yaml").read_text(encoding="utf-8")
    config = parse_config_text(text, "etc/config.yaml")
    assert config.trading.pairs == ["BTC", "ETH"]
    assert config.agents.enabled == ["recorder", "collector", "signals", "trader", "positions"]
    assert config.logging.level == "INFO"


def test_log_level_is_case_insensitive() -> None:
    assert parse_config_text("logging:\n  level: trade\n").logging.level == "TRADE"


def test_section_with_every_key_commented_out_takes_defaults() -> None:
    config = parse_config_text("exchange:\n  # network: testnet\ntrading:\n")
    assert config.exchange == cfg.ExchangeConfig()
    assert config.trading == cfg.TradingConfig()


def test_exchange_api_url() -> None:
    assert cfg.ExchangeConfig().api_url == "https://api.hyperliquid.xyz"
    assert cfg.ExchangeConfig(network="testnet").api_url == "https://api.hyperliquid-testnet.xyz"
    custom = cfg.ExchangeConfig(network="custom", base_url="http://127.0.0.1:3001/")
    assert custom.api_url == "http://127.0.0.1:3001"


def test_storage_db_path_relative_to_state(tmp_path: Path) -> None:
    assert cfg.StorageConfig().db_path(tmp_path) == tmp_path / "bistoury.duckdb"
    absolute = tmp_path / "elsewhere" / "x.duckdb"
    assert cfg.StorageConfig(path=str(absolute)).db_path(tmp_path / "state") == absolute


# ---- problems and their lines -----------------------------------------------------------


def test_every_problem_reported_with_its_line() -> None:
    text = (
        "exchange:\n"  # 1
        "  network: mainnet\n"  # 2
        "trading:\n"  # 3
        "  pairz: [BTC]\n"  # 4
        "  max_positions: 0\n"  # 5
        "strategies:\n"  # 6
        "  multi_timeframe:\n"  # 7
        "    timeframes:\n"  # 8
        "      - 1m\n"  # 9
        "      - 2m\n"  # 10
        "logging:\n"  # 11
        "  level: LOUD\n"  # 12
    )
    problems = problems_of(text)
    assert [(p.line, p.field) for p in problems] == [
        (4, "trading.pairz"),
        (5, "trading.max_positions"),
        (10, "strategies.multi_timeframe.timeframes[1]"),
        (12, "logging.level"),
    ]
    assert all(p.file == "c.yaml" for p in problems)
    assert (
        str(problems[0]) == "c.yaml:4: trading.pairz: unknown key 'pairz' → did you mean 'pairs'?"
    )
    assert str(problems[1]) == (
        "c.yaml:5: trading.max_positions: 0 is out of range → use a value >= 1"
    )
    assert problems[2].message == "'2m' is not allowed"
    assert "'1m'" in problems[2].hint and "'15m'" in problems[2].hint
    assert problems[3].message == "'LOUD' is not allowed"
    assert "'TRADE'" in problems[3].hint


def test_problems_are_sorted_by_line() -> None:
    text = "risk:\n  max_leverage: 100\ntrading:\n  stop_loss_pct: 200\n"
    problems = problems_of(text)
    assert [p.line for p in problems] == [2, 4]
    assert problems[0].field == "risk.max_leverage"
    assert problems[0].hint == "use a value <= 50.0"
    assert problems[1].field == "trading.stop_loss_pct"
    assert problems[1].message == "200 is out of range"
    assert problems[1].hint == "use a value < 100.0"


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("pairz", "pairs"), ("max_postions", "max_positions"), ("stop_los_pct", "stop_loss_pct")],
)
def test_unknown_key_close_typo_gets_did_you_mean(typo: str, expected: str) -> None:
    problem = only(problems_of(f"trading:\n  {typo}: 1\n"))
    assert problem.line == 2
    assert problem.field == f"trading.{typo}"
    assert problem.message == f"unknown key {typo!r}"
    assert problem.hint == f"did you mean {expected!r}?"


def test_unknown_key_far_from_any_lists_known_keys() -> None:
    problem = only(problems_of("\n\ntrading:\n  zzzz: 1\n"))
    assert problem.line == 4
    assert problem.hint == (
        "remove it; known keys here: pairs, position_size_pct, max_positions, "
        "stop_loss_pct, take_profit_pct, paper_equity_usd"
    )


def test_unknown_top_level_section() -> None:
    problem = only(problems_of("trading:\n  max_positions: 2\nqqqq: 1\n"))
    assert (problem.line, problem.field) == (3, "qqqq")
    assert problem.hint.startswith("remove it; known keys here: exchange, trading,")
    assert "agents" in problem.hint


def test_unknown_nested_key_typo() -> None:
    text = "strategies:\n  funding_rate:\n    lookback_hour: 10\n"
    problem = only(problems_of(text))
    assert (problem.line, problem.field) == (3, "strategies.funding_rate.lookback_hour")
    assert problem.hint == "did you mean 'lookback_hours'?"


def test_duplicate_keys_reported() -> None:
    text = "trading:\n  max_positions: 3\n  max_positions: 4\nrisk:\n  max_leverage: 2\n"
    problem = only(problems_of(text))
    assert problem.line == 3
    assert "max_positions" in problem.field
    assert problem.message == "key given more than once"
    assert problem.hint == "keep one of them"


DUPLICATED_SECTION = "trading:\n  max_positions: 3\ntrading:\n  max_positions: 0\n"


def test_duplicate_section_and_other_problem_both_reported() -> None:
    problems = problems_of(DUPLICATED_SECTION)
    assert sorted(p.message for p in problems) == ["0 is out of range", "key given more than once"]
    duplicate = next(p for p in problems if p.message == "key given more than once")
    assert duplicate.line == 3


def test_problem_in_duplicated_section_points_at_the_value_used() -> None:
    problems = problems_of(DUPLICATED_SECTION)
    out_of_range = next(p for p in problems if p.message == "0 is out of range")
    assert out_of_range.line == 4


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("trading:\n  pairs: [BTC]\n  bad: : x\n", 3),
        ("llm:\n  provider: rules\n\tmodel: x\n", 3),
        ("a: b: c\n", 1),
    ],
)
def test_yaml_syntax_error_has_a_line(text: str, line: int) -> None:
    problem = only(problems_of(text))
    assert problem.line == line
    assert problem.field == "(syntax)"
    assert problem.message.startswith("invalid YAML: ")
    assert problem.hint == "fix the syntax there"


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "trading:\n  ? {a: 1}\n  : 2\n"])
def test_unhashable_key_is_a_config_error(text: str) -> None:
    problem = only(problems_of(text))
    assert problem.line is not None


def test_non_string_key() -> None:
    problem = only(problems_of("1: x\n"))
    assert problem.line == 1
    assert "Keys should be strings" in problem.message


def test_several_documents_rejected() -> None:
    problem = only(problems_of("trading: {}\n---\nrisk: {}\n"))
    assert (problem.line, problem.field) == (2, "(syntax)")


def test_python_tags_are_not_constructed() -> None:
    problem = only(problems_of("x: !!python/object/apply:os.system [echo hi]\n"))
    assert (problem.line, problem.field) == (1, "(syntax)")


@pytest.mark.parametrize("text", ["- trading\n- risk\n", "42\n", "just a string\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    problem = only(problems_of(text))
    assert (problem.line, problem.field) == (1, "(top level)")
    assert problem.message == "must be a mapping of sections"


def test_section_of_wrong_type() -> None:
    problem = only(problems_of("\ntrading: 5\n"))
    assert (problem.line, problem.field) == (2, "trading")
    assert problem.message.endswith("(got 5)")
    assert problem.hint == "fix the value's type"


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ("metrics:\n  port: 70000\n", "metrics.port", "use a value <= 65535"),
        ("trading:\n  position_size_pct: 0\n", "trading.position_size_pct", "use a value > 0.0"),
        ("llm:\n  temperature: -1\n", "llm.temperature", "use a value >= 0.0"),
        ("storage:\n  batch_max_ms: 1\n", "storage.batch_max_ms", "use a value >= 10"),
    ],
)
def test_out_of_range_numbers(text: str, field: str, hint: str) -> None:
    problem = only(problems_of(text))
    assert (problem.line, problem.field, problem.hint) == (2, field, hint)
    assert problem.message.endswith("is out of range")


def test_bad_literal() -> None:
    problem = only(problems_of("llm:\n  provider: gpt\n"))
    assert (problem.line, problem.field) == (2, "llm.provider")
    assert problem.message == "'gpt' is not allowed"
    assert problem.hint == "use one of 'openai', 'anthropic', 'ollama' or 'rules'"


def test_wrong_type_value() -> None:
    problem = only(problems_of("trading:\n  max_positions: many\n"))
    assert problem.field == "trading.max_positions"
    assert "(got 'many')" in problem.message
    assert problem.hint == "fix the value's type"


def test_bad_coin_name_and_duplicate_pairs() -> None:
    problem = only(problems_of("trading:\n  pairs: [BTC, 'bad coin!']\n"))
    assert problem.message == "'bad coin!' is not a HyperLiquid coin name"
    problem = only(problems_of("trading:\n  pairs:\n    - ETH\n    - ETH\n"))
    assert (problem.line, problem.message) == (3, "listed more than once: ETH")


def test_custom_network_needs_base_url() -> None:
    problem = only(problems_of("exchange:\n  network: custom\n"))
    assert problem.field == "exchange"
    assert problem.line == 2
    assert problem.message == "network 'custom' needs a base_url"
    assert "base_url: http://127.0.0.1:3001" in problem.hint
    ok = parse_config_text("exchange:\n  network: custom\n  base_url: http://127.0.0.1:3001\n")
    assert ok.exchange.api_url == "http://127.0.0.1:3001"


def test_base_url_must_be_http() -> None:
    problem = only(problems_of("exchange:\n  network: custom\n  base_url: ftp://x\n"))
    assert problem.message == "base_url 'ftp://x' is not an http(s) URL"


def test_unknown_agent_close_and_far() -> None:
    problem = only(problems_of("agents:\n  enabled: [recordr]\n"))
    assert (problem.line, problem.field) == (2, "agents.enabled")
    assert problem.message == "unknown agent 'recordr'"
    assert problem.hint == "did you mean 'recorder'?"
    problem = only(problems_of("agents:\n  enabled: [recorder, zzz]\n"))
    assert problem.hint == "known agents: recorder, collector, signals, trader, positions"


def test_recorder_is_required() -> None:
    problem = only(problems_of("agents:\n  enabled: []\n"))
    assert problem.message == "'recorder' is missing"


def test_agent_listed_twice() -> None:
    problem = only(problems_of("agents:\n  enabled: [recorder, recorder]\n"))
    assert problem.message == "an agent is listed more than once"


def test_heartbeat_timeout_must_be_twice_the_interval() -> None:
    text = "agents:\n  heartbeat_interval_s: 2\n  heartbeat_timeout_s: 3\n"
    problem = only(problems_of(text))
    assert problem.field == "agents"
    assert problem.message == "heartbeat_timeout_s is less than twice heartbeat_interval_s"
    ok = parse_config_text("agents:\n  heartbeat_interval_s: 2\n  heartbeat_timeout_s: 4\n")
    assert ok.agents.heartbeat_timeout_s == 4


def test_problem_str_without_line() -> None:
    assert str(Problem("f.env", None, "X", "bad", "fix")) == "f.env: X: bad → fix"
    assert str(Problem("f.yaml", 7, "a.b", "bad", "fix")) == "f.yaml:7: a.b: bad → fix"


# ---- secrets ----------------------------------------------------------------------------


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bistoury.env"
    path.write_text(text, encoding="utf-8")
    return path


def secret_problems(env_path: Path | None, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_secrets(env_path, environ or {})
    return info.value.problems


def test_secrets_from_env_file(tmp_path: Path) -> None:
    env = write_env(
        tmp_path,
        f"# comment\n\nHYPERLIQUID_ACCOUNT_ADDRESS={ADDRESS}\n"
        f"export HYPERLIQUID_API_WALLET_KEY=0x{KEY}\nOPENAI_API_KEY='sk-test'\n",
    )
    secrets = load_secrets(env, {})
    assert secrets.hyperliquid_account_address is not None
    assert secrets.hyperliquid_account_address.get_secret_value() == ADDRESS
    assert secrets.hyperliquid_api_wallet_key is not None
    assert secrets.hyperliquid_api_wallet_key.get_secret_value() == f"0x{KEY}"
    assert secrets.openai_api_key is not None
    assert secrets.openai_api_key.get_secret_value() == "sk-test"
    assert secrets.hyperliquid_private_key is None
    assert secrets.present() == [
        "HYPERLIQUID_ACCOUNT_ADDRESS",
        "HYPERLIQUID_API_WALLET_KEY",
        "OPENAI_API_KEY",
    ]


def test_secrets_from_environ_mapping() -> None:
    secrets = load_secrets(None, {"HYPERLIQUID_PRIVATE_KEY": KEY, "UNRELATED": "x"})
    assert secrets.hyperliquid_private_key is not None
    assert secrets.hyperliquid_private_key.get_secret_value() == KEY
    assert secrets.present() == ["HYPERLIQUID_PRIVATE_KEY"]


def test_secrets_default_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-process")
    secrets = load_secrets(None)
    assert secrets.anthropic_api_key is not None
    assert secrets.anthropic_api_key.get_secret_value() == "sk-ant-from-process"


def test_file_wins_over_environment(tmp_path: Path) -> None:
    env = write_env(tmp_path, "OPENAI_API_KEY=sk-from-file\n")
    secrets = load_secrets(env, {"OPENAI_API_KEY": "sk-from-env", "ANTHROPIC_API_KEY": "a-env"})
    assert secrets.openai_api_key is not None
    assert secrets.openai_api_key.get_secret_value() == "sk-from-file"
    # What the file does not set still comes from the environment.
    assert secrets.anthropic_api_key is not None
    assert secrets.anthropic_api_key.get_secret_value() == "a-env"


def test_missing_env_file(tmp_path: Path) -> None:
    problem = only(secret_problems(tmp_path / "nope.env"))
    assert problem.message == "secrets file not found"
    assert problem.line is None


def test_malformed_key_and_address_not_echoed(tmp_path: Path) -> None:
    bad_key = KEY[:-2] + "zz"
    bad_address = "0xNOTANADDRESS1234"
    env = write_env(
        tmp_path,
        f"# first line\nHYPERLIQUID_PRIVATE_KEY={bad_key}\n"
        f"HYPERLIQUID_ACCOUNT_ADDRESS={bad_address}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_secrets(env, {})
    problems = info.value.problems
    assert {(p.field, p.line) for p in problems} == {
        ("HYPERLIQUID_PRIVATE_KEY", 2),
        ("HYPERLIQUID_ACCOUNT_ADDRESS", 3),
    }
    assert all(p.file == str(env) for p in problems)
    text = str(info.value)
    assert bad_key not in text
    assert bad_key[:16] not in text
    assert bad_address not in text
    assert "is not a 64-hex-digit private key" in text
    assert "is not a 0x-prefixed 40-hex-digit address" in text


def test_malformed_key_from_environment_not_echoed() -> None:
    bad = "0x" + "g" * 64
    problems = secret_problems(None, {"HYPERLIQUID_API_WALLET_KEY": bad, "X": "1"})
    assert [p.message for p in problems] == [
        "is not a 64-hex-digit private key (value not shown)",
        "an API wallet key needs the account it trades for",
    ]
    for problem in problems:
        assert (problem.file, problem.line) == ("environment", None)
        assert problem.field == "HYPERLIQUID_API_WALLET_KEY"
        assert "g" * 16 not in str(problem)


def test_private_key_and_api_wallet_key_together(tmp_path: Path) -> None:
    env = write_env(
        tmp_path,
        f"HYPERLIQUID_ACCOUNT_ADDRESS={ADDRESS}\nHYPERLIQUID_PRIVATE_KEY={KEY}\n"
        f"HYPERLIQUID_API_WALLET_KEY={KEY}\n",
    )
    problem = only(secret_problems(env))
    assert (problem.field, problem.line) == ("HYPERLIQUID_API_WALLET_KEY", 3)
    assert problem.message == "set together with HYPERLIQUID_PRIVATE_KEY"
    assert KEY not in str(problem)


def test_api_wallet_key_needs_account_address() -> None:
    problem = only(secret_problems(None, {"HYPERLIQUID_API_WALLET_KEY": KEY}))
    assert problem.message == "an API wallet key needs the account it trades for"
    assert "HYPERLIQUID_ACCOUNT_ADDRESS" in problem.hint


def test_unknown_hyperliquid_variable(tmp_path: Path) -> None:
    env = write_env(tmp_path, f"\nHYPERLIQUID_PRIVAT_KEY={KEY}\nHYPERLIQUID_QQQQQQQQQQQQQQQQQQ=1\n")
    problems = secret_problems(env)
    assert [(p.field, p.line, p.hint) for p in problems] == [
        ("HYPERLIQUID_PRIVAT_KEY", 2, "did you mean HYPERLIQUID_PRIVATE_KEY?"),
        ("HYPERLIQUID_QQQQQQQQQQQQQQQQQQ", 3, "known: " + ", ".join(SECRET_VARS)),
    ]
    assert all(p.message == "unknown variable" for p in problems)
    assert KEY not in "\n".join(str(p) for p in problems)


def test_several_secret_problems_at_once(tmp_path: Path) -> None:
    env = write_env(tmp_path, "HYPERLIQUID_ACOUNT_ADDRESS=x\nHYPERLIQUID_PRIVATE_KEY=short\n")
    problems = secret_problems(env)
    assert {p.field for p in problems} == {"HYPERLIQUID_ACOUNT_ADDRESS", "HYPERLIQUID_PRIVATE_KEY"}


def test_secrets_never_shown() -> None:
    values = {
        "hyperliquid_account_address": ADDRESS,
        "hyperliquid_private_key": KEY,
        "openai_api_key": "sk-verysecretvalue",
    }
    secrets = Secrets.model_validate(values)
    shown = [repr(secrets), str(secrets), secrets.model_dump_json(), str(secrets.model_dump())]
    for text in shown:
        for value in values.values():
            assert value not in text
    assert secrets.reveal()["hyperliquid_private_key"] == KEY
    assert secrets.reveal()["anthropic_api_key"] is None


def test_present_ignores_empty_values() -> None:
    secrets = Secrets(openai_api_key=SecretStr(""), anthropic_api_key=SecretStr("k"))
    assert secrets.present() == ["ANTHROPIC_API_KEY"]
    assert Secrets().present() == []


def test_empty_value_in_file_counts_as_unset(tmp_path: Path) -> None:
    env = write_env(tmp_path, "OPENAI_API_KEY=\nANTHROPIC_API_KEY=\n")
    assert load_secrets(env, {}).present() == []


# ---- cross_check ------------------------------------------------------------------------


def test_cross_check_anthropic_without_key() -> None:
    config = parse_config_text("llm:\n  provider: anthropic\n")
    problem = only(cross_check(config, Secrets(), "c.yaml"))
    assert problem.field == "llm.provider"
    assert problem.message == "provider 'anthropic' needs ANTHROPIC_API_KEY, which is not set"
    assert cross_check(config, Secrets(anthropic_api_key=SecretStr("k")), "c.yaml") == []


def test_cross_check_openai_with_base_url_needs_no_key() -> None:
    local = parse_config_text("llm:\n  provider: openai\n  base_url: http://127.0.0.1:8080/v1\n")
    assert cross_check(local, Secrets(), "c.yaml") == []
    remote = parse_config_text("llm:\n  provider: openai\n")
    assert only(cross_check(remote, Secrets(), "c.yaml")).message.endswith(
        "needs OPENAI_API_KEY, which is not set"
    )


def test_cross_check_fallback_provider() -> None:
    config = parse_config_text("llm:\n  provider: rules\n  fallback: [anthropic, ollama]\n")
    problem = only(cross_check(config, Secrets(), "c.yaml"))
    assert problem.field == "llm.fallback"
    assert "ANTHROPIC_API_KEY" in problem.message


# ---- load() -----------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.yaml")
    problem = only(info.value.problems)
    assert problem.message == "config file not found"
    assert problem.file == str(tmp_path / "absent.yaml")


def test_load_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert only(info.value.problems).message.startswith("cannot read: ")


def test_load_valid_files(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llm:\n  provider: anthropic\n", encoding="utf-8")
    env = write_env(tmp_path, "ANTHROPIC_API_KEY=sk-ant-xyz\n")
    loaded = load(path, env)
    assert loaded.config.llm.provider == "anthropic"
    assert loaded.secrets.present() == ["ANTHROPIC_API_KEY"]
    assert loaded.path == path
    assert loaded.env_path == env
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_reports_config_and_secret_problems_together(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("trading:\n  max_positions: 0\n", encoding="utf-8")
    env = write_env(tmp_path, "HYPERLIQUID_PRIVATE_KEY=nope\n")
    with pytest.raises(ConfigError) as info:
        load(path, env)
    assert sorted(p.field for p in info.value.problems) == [
        "HYPERLIQUID_PRIVATE_KEY",
        "trading.max_positions",
    ]


def test_load_runs_cross_check(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llm:\n  provider: anthropic\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path, None)
    problem = only(info.value.problems)
    assert (problem.file, problem.field) == (str(path), "llm.provider")


# ---- diffs ------------------------------------------------------------------------------


def test_diff_lists_changed_settings() -> None:
    old = parse_config_text("")
    new = parse_config_text(
        "logging:\n  level: DEBUG\nagents:\n  heartbeat_timeout_s: 5\ntrading:\n  pairs: [BTC]\n"
    )
    assert diff(old, new) == ["agents.heartbeat_timeout_s", "logging.level", "trading.pairs"]
    assert diff(new, old) == diff(old, new)
    assert diff(old, parse_config_text("# same\n")) == []


def test_secrets_diff_names_only() -> None:
    old = Secrets(openai_api_key=SecretStr("sk-old-value-1"), anthropic_api_key=SecretStr("a"))
    new = Secrets(
        openai_api_key=SecretStr("sk-new-value-2"),
        anthropic_api_key=SecretStr("a"),
        hyperliquid_private_key=SecretStr(KEY),
    )
    changed = secrets_diff(old, new)
    assert changed == ["HYPERLIQUID_PRIVATE_KEY", "OPENAI_API_KEY"]
    joined = " ".join(changed)
    assert "sk-old-value-1" not in joined and "sk-new-value-2" not in joined
    assert secrets_diff(old, old) == []
