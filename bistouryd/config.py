"""The configuration file (``config.yaml``) and the secrets file (``bistoury.env``).

Everything a user can put in the YAML file is a pydantic model here, with defaults so a
near-empty file works and ``extra="forbid"`` so a typo is an error, not a silent default.
Problems are reported as ``file:line: field: what is wrong → how to fix``, with line
numbers from the YAML node marks. Secrets come from the env file (python-dotenv) or the
process environment and only ever live in ``SecretStr`` fields.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bistouryd.agents import AGENTS
from bistouryd.llm.limits import BreakerSettings, RetrySettings
from bistouryd.llm.models import ModelOverride

if TYPE_CHECKING:
    from bistouryd.strategies.base import StrategyParams

Interval = Literal["1m", "5m", "15m"]
INTERVALS: tuple[Interval, ...] = ("1m", "5m", "15m")
Provider = Literal["openai", "anthropic", "ollama", "rules"]
LogLevel = Literal[
    "DEBUG", "PERF", "INFO", "SIGNAL", "LLM", "TRADE", "WARNING", "ERROR", "CRITICAL"
]

_COIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:@/_-]{0,31}$")


def hinted(message: str, hint: str) -> PydanticCustomError:
    """A validation error that carries its own "how to fix"."""
    return PydanticCustomError("hinted", message, {"hint": hint})


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section with every key commented out is YAML null: it means the defaults."""
        if not isinstance(data, dict):
            return data
        return {
            key: {} if value is None and _is_section(cls.model_fields.get(key)) else value
            for key, value in data.items()
        }


def _is_section(info: Any) -> bool:
    annotation = getattr(info, "annotation", None)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class ExchangeConfig(Section):
    """Which HyperLiquid API to talk to. ``custom`` is for the bundled simulated exchange."""

    network: Literal["mainnet", "testnet", "custom"] = "mainnet"
    base_url: str | None = Field(
        default=None, description="Required with network: custom, e.g. http://127.0.0.1:3001"
    )

    @model_validator(mode="after")
    def _url_matches_network(self) -> ExchangeConfig:
        if self.network == "custom" and not self.base_url:
            raise hinted(
                "network 'custom' needs a base_url",
                "add base_url: http://127.0.0.1:3001 (the simulated exchange)",
            )
        if self.base_url and not re.match(r"^https?://[^\s/]+", self.base_url):
            raise hinted(
                f"base_url {self.base_url!r} is not an http(s) URL", "write it as http://host:port"
            )
        return self

    @property
    def api_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.network == "testnet":
            return "https://api.hyperliquid-testnet.xyz"
        return "https://api.hyperliquid.xyz"


class TradingConfig(Section):
    pairs: list[str] = Field(default_factory=lambda: ["BTC", "ETH"], min_length=1)
    position_size_pct: float = Field(default=10.0, gt=0, le=100)
    max_positions: int = Field(default=3, ge=1, le=100)
    stop_loss_pct: float = Field(default=2.0, gt=0, lt=100)
    take_profit_pct: float = Field(default=5.0, gt=0, le=1000)
    paper_equity_usd: float = Field(
        default=10_000.0, gt=0, le=1e12, description="the paper account's starting equity"
    )

    @field_validator("pairs")
    @classmethod
    def _valid_coins(cls, pairs: list[str]) -> list[str]:
        for coin in pairs:
            if not _COIN.match(coin):
                raise hinted(
                    f"{coin!r} is not a HyperLiquid coin name",
                    "use the exchange's names, e.g. BTC, ETH, kPEPE",
                )
        dupes = sorted({c for c in pairs if pairs.count(c) > 1})
        if dupes:
            raise hinted(f"listed more than once: {', '.join(dupes)}", "keep each coin once")
        return pairs


def _strategies_section() -> type[Section]:
    """``strategies:``: one sub-section per registered strategy, typed by its ``Params``.

    Built from the registry, so a plug-in strategy is configured like the built-ins and
    its bounds are checked here, before the daemon ever uses them.
    """
    from bistouryd.strategies.registry import strategy_classes

    fields: dict[str, Any] = {
        name: (cls.Params, Field(default_factory=cls.Params))
        for name, cls in strategy_classes().items()
    }
    return create_model("StrategiesConfig", __base__=Section, **fields)


if TYPE_CHECKING:
    StrategiesConfig = Section
else:
    StrategiesConfig = _strategies_section()


def strategy_settings(config: Config) -> dict[str, StrategyParams]:
    """Name → parameters of every registered strategy (enabled or not)."""
    return {name: getattr(config.strategies, name) for name in type(config.strategies).model_fields}


LLMBackend = Literal["openai", "anthropic", "ollama"]
# Used when the config names a provider but no model: small, cheap, widely available.
DEFAULT_MODELS: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "ollama": "llama3.1",
}


class ProviderConfig(Section):
    """One language-model provider of the chain (``llm.providers.<name>``)."""

    model: str = Field(default="", max_length=200, description="e.g. gpt-4o-mini, llama3.1")
    base_url: str | None = Field(default=None, description="an OpenAI-compatible server, ...")
    timeout_s: float | None = Field(default=None, gt=0, le=600, description="default: llm's")
    requests_per_min: int | None = Field(default=None, ge=1, le=1_000_000)
    tokens_per_min: int | None = Field(default=None, ge=1, le=1_000_000_000)


class LLMConfig(Section):
    provider: Provider = "rules"
    model: str = ""
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=500, ge=16, le=32000)
    base_url: str | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    fallback: list[Provider] = Field(default_factory=list)
    decision_interval_s: float = Field(
        default=60.0, ge=1, description="a coin is asked about at most once per interval"
    )
    min_strength_change: float = Field(
        default=0.15,
        ge=0,
        le=2,
        description="a signal's strength must move this much (or its direction change) "
        "for a new decision",
    )
    allow_contaminated: bool = Field(
        default=False,
        description="ask a model about dates before its training cutoff (replays, backtests); "
        "such decisions are marked",
    )
    providers: dict[LLMBackend, ProviderConfig] = Field(default_factory=dict)
    daily_cost_cap_usd: float | None = Field(default=None, ge=0)
    prompt_version: str = Field(default="decision_v1", pattern=r"^[a-z0-9_]+$")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    models: dict[str, ModelOverride] = Field(
        default_factory=dict, description="price and training-cutoff overrides by model name"
    )

    @field_validator("prompt_version")
    @classmethod
    def _known_prompt(cls, version: str) -> str:
        from bistouryd.llm.prompt import available_versions

        known = available_versions()
        if version not in known:
            raise hinted(f"no prompt template {version!r}", f"use one of: {', '.join(known)}")
        return version

    @model_validator(mode="after")
    def _each_once(self) -> LLMConfig:
        if len(set(self.chain)) != len(self.chain):
            raise hinted("a provider appears twice in provider + fallback", "list each once")
        return self

    @property
    def chain(self) -> list[LLMBackend]:
        """The language models to ask, in order; ``rules`` always ends the chain."""
        names = [self.provider, *self.fallback]
        cut = names.index("rules") if "rules" in names else len(names)
        return [n for n in names[:cut] if n != "rules"]

    def settings_of(self, name: LLMBackend) -> ProviderConfig:
        """``llm.providers.<name>``; the primary falls back on ``llm.model`` and
        ``llm.base_url``, and a provider without a model gets its default one."""
        own = self.providers.get(name, ProviderConfig())
        primary = name == self.provider
        return own.model_copy(
            update={
                "model": own.model or (self.model if primary else "") or DEFAULT_MODELS[name],
                "base_url": own.base_url or (self.base_url if primary else None),
            }
        )


class RiskConfig(Section):
    max_total_exposure_pct: float = Field(default=50.0, gt=0, le=1000)
    max_leverage: float = Field(default=3.0, ge=1, le=50)
    daily_loss_limit_pct: float = Field(default=5.0, gt=0, le=100)
    max_position_usd: float | None = Field(default=None, gt=0)
    max_positions_per_coin: int = Field(default=1, ge=1)
    min_order_usd: float = Field(default=10.0, ge=10)


class RetentionConfig(Section):
    """Days each table keeps its rows in DuckDB; older rows move to Parquet files (still
    readable through the ``<table>_all`` views). ``null`` keeps them in DuckDB forever."""

    raw_messages: int | None = Field(default=7, ge=1, le=100_000)
    l2_snapshots: int | None = Field(default=14, ge=1, le=100_000)
    trades: int | None = Field(default=30, ge=1, le=100_000)
    candles: int | None = Field(default=None, ge=1, le=100_000)
    asset_ctx: int | None = Field(default=None, ge=1, le=100_000)
    funding_history: int | None = Field(default=None, ge=1, le=100_000)


class StorageConfig(Section):
    path: str = Field(default="bistoury.duckdb", description="Relative paths are in the state dir")
    batch_max_rows: int = Field(default=5000, ge=1, le=1_000_000)
    batch_max_ms: int = Field(default=250, ge=10, le=60_000)
    queue_max_rows: int = Field(
        default=500_000,
        ge=1,
        le=50_000_000,
        description="Rows waiting for the database beyond this are dropped (and counted)",
    )
    parquet_dir: str = Field(default="parquet", description="Relative paths are in the state dir")
    retention: RetentionConfig = RetentionConfig()
    retention_interval_s: float = Field(
        default=3600.0, ge=10, le=7 * 86400, description="How often old rows move to Parquet"
    )

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> StorageConfig:
        if self.queue_max_rows < self.batch_max_rows:
            raise hinted(
                "queue_max_rows is smaller than batch_max_rows",
                f"raise queue_max_rows to at least {self.batch_max_rows}",
            )
        return self

    def db_path(self, state: Path) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else state / p

    def parquet_path(self, state: Path) -> Path:
        p = Path(self.parquet_dir).expanduser()
        return p if p.is_absolute() else state / p


class CollectorConfig(Section):
    intervals: list[Interval] = Field(default_factory=lambda: list(INTERVALS), min_length=1)
    l2_book: bool = True
    trades: bool = True
    asset_ctx: bool = True
    stale_after_s: float = Field(
        default=30.0, ge=0.5, description="reconnect when the websocket is silent this long"
    )
    reconnect_max_backoff_s: float = Field(default=60.0, ge=1)
    backfill_minutes: int = Field(
        default=24 * 60, ge=1, le=60 * 24 * 30, description="candle history fetched at start"
    )
    funding_poll_s: float = Field(default=300.0, ge=1, description="how often to fetch funding")
    funding_lookback_hours: int = Field(default=7 * 24, ge=1, le=24 * 365)
    queue_max: int = Field(
        default=100_000, ge=100, description="websocket frames waiting to be processed"
    )


class MetricsConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port")


class LoggingConfig(Section):
    level: LogLevel = "INFO"
    file: str | None = Field(default=None, description="Default: bistoury.log in the logs dir")
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    backup_count: int = Field(default=5, ge=0, le=100)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class AgentsConfig(Section):
    enabled: list[str] = Field(
        default_factory=lambda: ["recorder", "collector", "signals", "trader", "positions"]
    )
    heartbeat_interval_s: float = Field(default=1.0, ge=0.1, le=10)
    heartbeat_timeout_s: float = Field(default=3.0, ge=0.5, le=60)
    restart_backoff_initial_s: float = Field(default=0.5, ge=0, le=60)
    restart_backoff_max_s: float = Field(default=30.0, ge=0, le=3600)
    restart_reset_after_s: float = Field(default=60.0, ge=1)
    max_crashes: int = Field(default=5, ge=1, le=1000)
    crash_window_s: float = Field(default=300.0, ge=1)
    stop_timeout_s: float = Field(default=5.0, ge=0.5, le=120)

    @field_validator("enabled")
    @classmethod
    def _known_agents(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in AGENTS:
                close = difflib.get_close_matches(name, list(AGENTS), n=1)
                raise hinted(
                    f"unknown agent {name!r}",
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"known agents: {', '.join(AGENTS)}",
                )
        if "recorder" not in names:
            raise hinted("'recorder' is missing", "add it: it is the only writer of the database")
        if len(set(names)) != len(names):
            raise hinted("an agent is listed more than once", "keep each agent once")
        return names

    @model_validator(mode="after")
    def _timeouts(self) -> AgentsConfig:
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            raise hinted(
                "heartbeat_timeout_s is less than twice heartbeat_interval_s",
                "raise heartbeat_timeout_s, or one late heartbeat restarts an agent",
            )
        return self


class Config(Section):
    exchange: ExchangeConfig = ExchangeConfig()
    trading: TradingConfig = TradingConfig()
    strategies: StrategiesConfig = Field(default_factory=StrategiesConfig)
    llm: LLMConfig = LLMConfig()
    risk: RiskConfig = RiskConfig()
    storage: StorageConfig = StorageConfig()
    collector: CollectorConfig = CollectorConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    agents: AgentsConfig = AgentsConfig()


# Reload applies everything except these, which need a restart of the daemon.
RESTART_REQUIRED = ("storage.path", "storage.parquet_dir")


# ---------------------------------------------------------------------------------------
# Secrets

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_PRIVATE_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class Secrets(BaseModel):
    """Credentials, read from the env file or the environment; never logged or shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hyperliquid_account_address: SecretStr | None = None
    hyperliquid_private_key: SecretStr | None = None
    hyperliquid_api_wallet_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None

    def present(self) -> list[str]:
        """Names (env-var spelling) of the secrets that are set: safe to show."""
        return [
            name.upper()
            for name, value in self
            if isinstance(value, SecretStr) and value.get_secret_value()
        ]

    def reveal(self) -> dict[str, str | None]:
        """Plain values, only for handing to an agent process over the private runtime dir."""
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else None
            for name, value in self
        }


SECRET_VARS = tuple(name.upper() for name in Secrets.model_fields)


# ---------------------------------------------------------------------------------------
# Problems and their locations


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, in the shape the user reads."""

    file: str
    line: int | None
    field: str
    message: str
    hint: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message} → {self.hint}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _duplicates(
    node: yaml.Node | None, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], yaml.Node]]:
    """Keys given twice in the same mapping (YAML keeps the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                yield (*path, key), key_node
            if key is not None:
                seen.add(key)
            yield from _duplicates(value_node, (*path, key if key is not None else "?"))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicates(item, (*path, index))


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) of ``part`` inside a mapping or sequence node."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in reversed(node.value):  # the last one is the one used
            if key_node.value == part:
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None, None


def _locate(root: yaml.Node | None, loc: tuple[str | int, ...], *, key: bool) -> int | None:
    """Line of the node at ``loc``; the deepest existing ancestor when it is missing."""
    node = root
    line = _line(root)
    for i, part in enumerate(loc):
        key_node, value_node = _child(node, part)
        if value_node is None:
            return line
        last = i == len(loc) - 1
        line = _line(key_node if (last and key and key_node is not None) else value_node)
        node = value_node
    return line


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The config model that owns the mapping at ``loc`` (for "did you mean" hints)."""
    model: type[BaseModel] = Config
    for part in loc:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    """(what is wrong, how to fix) for one pydantic error."""
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        name = str(loc[-1])
        known = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            return f"unknown key {name!r}", f"did you mean {close[0]!r}?"
        return f"unknown key {name!r}", f"remove it; known keys here: {', '.join(known)}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err['input']!r} is not allowed", f"use one of {expected}"
    if kind == "missing":
        return "is required", "add it"
    if kind == "hinted":
        return str(err["msg"]), str(err["ctx"]["hint"])
    message = str(err["msg"])
    message = message.removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    bounds = {k: ctx[k] for k in ("gt", "ge", "lt", "le") if k in ctx}
    if bounds:
        words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        limit = " and ".join(f"{words[k]} {v}" for k, v in bounds.items())
        return f"{err['input']!r} is out of range", f"use a value {limit}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{message} (got {err['input']!r})", "fix the value's type"
    return message, "fix the value"


def _validation_problems(file: str, root: yaml.Node | None, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line = _locate(root, loc, key=err["type"] == "extra_forbidden")
        message, hint = _describe(err)
        problems.append(Problem(file, line, _dotted(loc), message, hint))
    return problems


# ---------------------------------------------------------------------------------------
# Loading


def parse_config_text(text: str, file: str = "config.yaml") -> Config:
    """Validate YAML text; raise ``ConfigError`` listing every problem found."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            what += f" ({context} started on line {context_mark.line + 1})"
        raise ConfigError(
            [Problem(file, line, "(syntax)", f"invalid YAML: {what}", "fix the syntax there")]
        ) from None
    finally:
        loader.dispose()
    problems = [
        Problem(file, _line(node), _dotted(path), "key given more than once", "keep one of them")
        for path, node in _duplicates(root)
    ]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(
            Problem(
                file,
                _line(root),
                "(top level)",
                "must be a mapping of sections",
                "start with a section such as 'trading:'",
            )
        )
        raise ConfigError(problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(file, root, exc))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    return config


def _env_lines(path: Path) -> dict[str, int]:
    lines: dict[str, int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip().removeprefix("export ").strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            lines.setdefault(stripped.split("=", 1)[0].strip(), number)
    return lines


def load_secrets(env_path: Path | None, environ: Mapping[str, str] | None = None) -> Secrets:
    """Secrets from the env file, falling back to the process environment.

    The file wins over the environment so that a reload picks up a rotated key even
    under systemd, whose ``EnvironmentFile=`` is read only at start.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    problems: list[Problem] = []
    file_values: dict[str, str | None] = {}
    lines: dict[str, int] = {}
    label = str(env_path) if env_path else "environment"
    if env_path is not None:
        if not env_path.is_file():
            raise ConfigError(
                [
                    Problem(
                        str(env_path),
                        None,
                        "(file)",
                        "secrets file not found",
                        "create it from etc/bistoury.env.example or drop --env-file",
                    )
                ]
            )
        try:
            file_values = dotenv_values(env_path)
            lines = _env_lines(env_path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                [
                    Problem(
                        str(env_path),
                        None,
                        "(file)",
                        f"cannot read: {exc}",
                        "check the file's permissions and encoding",
                    )
                ]
            ) from None
        for name in file_values:
            if name.startswith(("HYPERLIQUID_", "BISTOURY_")) and name not in SECRET_VARS:
                close = difflib.get_close_matches(name, SECRET_VARS, n=1)
                hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(SECRET_VARS)}"
                problems.append(Problem(label, lines.get(name), name, "unknown variable", hint))
    for var in SECRET_VARS:
        value = file_values.get(var) if var in file_values else environ.get(var)
        values[var.lower()] = value or None

    def bad(var: str, what: str, hint: str) -> None:
        problems.append(Problem(label, lines.get(var), var, what, hint))

    address = values["hyperliquid_account_address"]
    if address and not _ADDRESS.match(address):
        bad(
            "HYPERLIQUID_ACCOUNT_ADDRESS",
            "is not a 0x-prefixed 40-hex-digit address",
            "copy the address of the account that holds the funds",
        )
    for var in ("HYPERLIQUID_PRIVATE_KEY", "HYPERLIQUID_API_WALLET_KEY"):
        key = values[var.lower()]
        if key and not _PRIVATE_KEY.match(key):
            bad(
                var,
                "is not a 64-hex-digit private key (value not shown)",
                "paste the key again, with or without 0x",
            )
    if values["hyperliquid_private_key"] and values["hyperliquid_api_wallet_key"]:
        bad(
            "HYPERLIQUID_API_WALLET_KEY",
            "set together with HYPERLIQUID_PRIVATE_KEY",
            "keep one: an API wallet key (recommended) or the main wallet's key",
        )
    if values["hyperliquid_api_wallet_key"] and not address:
        bad(
            "HYPERLIQUID_API_WALLET_KEY",
            "an API wallet key needs the account it trades for",
            "set HYPERLIQUID_ACCOUNT_ADDRESS to the main wallet's address",
        )
    if problems:
        raise ConfigError(problems)
    return Secrets.model_validate(values)


def cross_check(config: Config, secrets: Secrets, file: str) -> list[Problem]:
    """Problems that need both files, such as a provider chosen without its API key."""
    problems = []
    for provider in dict.fromkeys((config.llm.provider, *config.llm.fallback)):
        if provider == "anthropic" and secrets.anthropic_api_key is None:
            var = "ANTHROPIC_API_KEY"
        elif (
            provider == "openai"
            and secrets.openai_api_key is None
            and not config.llm.settings_of("openai").base_url
        ):
            var = "OPENAI_API_KEY"  # a local OpenAI-compatible server (base_url) may need none
        else:
            continue
        where = "llm.provider" if provider == config.llm.provider else "llm.fallback"
        problems.append(
            Problem(
                file,
                None,
                where,
                f"provider {provider!r} needs {var}, which is not set",
                f"add {var} to the env file, or use provider: rules",
            )
        )
    return problems


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration with its secrets and where they came from."""

    config: Config
    secrets: Secrets
    path: Path
    env_path: Path | None
    sha256: str
    warnings: list[str] = field(default_factory=list)


def load(path: Path, env_path: Path | None = None) -> LoadedConfig:
    """Read and validate both files; raise ``ConfigError`` with every problem found."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    None,
                    "(file)",
                    "config file not found",
                    "copy etc/config.yaml there, or pass --config FILE",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    None,
                    "(file)",
                    f"cannot read: {exc.strerror}",
                    "check the path and its permissions",
                )
            ]
        ) from None
    problems: list[Problem] = []
    config: Config | None = None
    secrets: Secrets | None = None
    try:
        config = parse_config_text(raw.decode("utf-8", errors="replace"), str(path))
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        secrets = load_secrets(env_path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if config is not None and secrets is not None:
        problems.extend(cross_check(config, secrets, str(path)))
    if problems or config is None or secrets is None:
        raise ConfigError(problems)
    return LoadedConfig(config, secrets, path, env_path, hashlib.sha256(raw).hexdigest())


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(sub, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


# What ``bistouryctl risk set`` may change at run time: every limit, nothing else.
RISK_KEYS: tuple[str, ...] = (
    "trading.position_size_pct",
    "trading.max_positions",
    "trading.stop_loss_pct",
    "trading.take_profit_pct",
    *(f"risk.{name}" for name in RiskConfig.model_fields),
)


def with_overrides(config: Config, overrides: Mapping[str, float | None]) -> Config:
    """``config`` with the ``risk set`` overrides applied and the result validated
    (``ValueError`` with the problem, e.g. an out-of-range value)."""
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        if key not in RISK_KEYS:
            raise ValueError(f"{key!r} is not a risk limit; known: {', '.join(RISK_KEYS)}")
        section, name = key.split(".")
        data[section][name] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def diff(old: Config, new: Config) -> list[str]:
    """Dotted paths of the settings that differ, e.g. ``["agents.enabled", "logging.level"]``."""
    before = dict(_flatten(old.model_dump(mode="json")))
    after = dict(_flatten(new.model_dump(mode="json")))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def secrets_diff(old: Secrets, new: Secrets) -> list[str]:
    """Names of the secrets that changed (never their values)."""
    before, after = old.reveal(), new.reveal()
    return sorted(name.upper() for name in before if before[name] != after[name])
