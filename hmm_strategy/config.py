"""The ONE node config: a YAML file validated with msgspec, turned into NautilusTrader's configs.

``load_node_settings(path)`` reads ``configs/node.yaml`` (plus optional override files layered on
top), validates every key, and fails with a ``ConfigError`` naming the file and the key. The same
``ImportableStrategyConfig`` / ``ImportableActorConfig`` lists feed both the backtest
(``BacktestRunConfig``) and the live/paper node (``TradingNodeConfig``), so what is backtested is
what runs.

String values may use ``${VAR}`` (environment), ``{config_dir}`` (the folder of the node config),
``{run_dir}`` (the run's output folder) and ``{state_dir}`` (state that survives restarts).
``${HMM_DATA_DIR}`` defaults to ``<repo>/../shared/data``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import yaml
from nautilus_trader.common.config import ImportableActorConfig, resolve_config_path
from nautilus_trader.trading.config import ImportableStrategyConfig

if TYPE_CHECKING:
    from nautilus_trader.backtest.config import BacktestRunConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "node.yaml"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A config file is invalid; the message names the file and the key."""


class ComponentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A strategy or actor: ``path`` is ``module:Class``; its config defaults to ClassConfig."""

    path: str
    config: dict[str, Any] = {}
    config_path: str | None = None
    name: str | None = None

    @property
    def resolved_config_path(self) -> str:
        return self.config_path or f"{self.path}Config"

    def parsed(self, run_dir: str | Path | None = None, state_dir: str | Path | None = None) -> Any:
        """The config as its class parses it; with ``run_dir``, the folder placeholders filled
        first (``_fill_dirs``)."""
        config = self.config if run_dir is None else _fill_dirs(self.config, run_dir, state_dir)
        return resolve_config_path(self.resolved_config_path).parse(msgspec.json.encode(config))


class RiskSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """NautilusTrader ``RiskEngine`` settings (pre-trade checks); bypass is refused in live."""

    bypass: bool = False
    max_order_submit_rate: str = "100/00:00:01"
    max_order_modify_rate: str = "100/00:00:01"
    max_notional_per_order: dict[str, int] = {}

    def engine_config(self, cls: type, **extra: Any) -> Any:
        """``cls`` (``RiskEngineConfig`` or ``LiveRiskEngineConfig``) with these settings: the
        one place the backtest and the live node turn them into NautilusTrader's config."""
        return cls(
            bypass=self.bypass,
            max_order_submit_rate=self.max_order_submit_rate,
            max_order_modify_rate=self.max_order_modify_rate,
            max_notional_per_order=self.max_notional_per_order,
            **extra,
        )


class DataSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A bar file to import into the catalog (see ``marketdata.bars`` for the formats)."""

    source: str
    instrument_id: str
    bar_type: str
    format: str | None = None
    # maker and taker fee rate written into the instrument (e.g. 0.001 = 10 bp); None keeps the
    # test kit's (0.1% for Binance BTCUSDT, 0.2 bp for FX, 0 for US equities)
    fee_rate: float | None = None

    def __post_init__(self) -> None:
        if self.fee_rate is not None and not 0.0 <= self.fee_rate < 0.1:
            raise ValueError(f"fee_rate must be in [0, 0.1), was {self.fee_rate}")


class FillModelSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    prob_fill_on_limit: float = 1.0
    prob_slippage: float = 0.0
    random_seed: int = 42


class BacktestVenue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A simulated venue: OMS, account, balances, fees (the instrument's maker/taker) and fills."""

    name: str
    starting_balances: list[str]
    oms_type: Literal["NETTING", "HEDGING"] = "NETTING"
    account_type: Literal["MARGIN", "CASH"] = "MARGIN"
    base_currency: str | None = None
    default_leverage: float = 1.0
    fee_model: Literal["maker_taker", "none"] = "maker_taker"
    fill_model: FillModelSettings = msgspec.field(default_factory=FillModelSettings)

    def __post_init__(self) -> None:
        from venues.settings import parse_balance

        for balance in self.starting_balances:  # "1e999 USDT", "100000 USDTT" fail here
            parse_balance(balance)


class BacktestSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    data: list[DataSource]
    venues: list[BacktestVenue]
    catalog_path: str = "catalog"
    output_dir: str = "runs"
    start: str | None = None
    end: str | None = None
    log_level: str = "ERROR"
    # compared with every run (backtests.baselines): buy_and_hold, ema_cross; [] = none
    baselines: list[str] = msgspec.field(default_factory=lambda: ["buy_and_hold", "ema_cross"])
    baseline_notional: float | None = None  # None = the first strategy's full-exposure notional


class MetricsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the live node's Prometheus exporter listens (127.0.0.1 unless you open it up).

    The one source for the exporter in a live/paper node; another interface than loopback needs
    ``allow_remote: true`` (metrics reveal positions and PnL).
    """

    host: str = "127.0.0.1"
    port: int = 9464
    allow_remote: bool = False

    def __post_init__(self) -> None:
        from hmm_strategy.cli import check_listen_host

        if not 0 <= self.port <= 65535:
            raise ValueError(f"live.metrics.port {self.port} is outside 0..65535")
        check_listen_host(
            self.host,
            self.allow_remote,
            what="live.metrics.host",
            allow="set live.metrics.allow_remote: true",
        )


class CacheDatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """NautilusTrader's cache database (Redis): orders, positions and strategy state on stop."""

    host: str = "127.0.0.1"
    port: int = 6379
    flush_on_start: bool = False


class ExecEngineSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """NautilusTrader's live execution engine: how orders the venue never answers are resolved.

    An order still in flight (submitted, no answer) after ``inflight_check_threshold_ms`` is
    queried at the venue every ``inflight_check_interval_ms``; after ``inflight_check_retries``
    unanswered queries it is resolved as rejected (reason ``UNKNOWN``), which the strategy counts
    like any reject. ``reconciliation`` aligns orders and positions with the venue at start.
    """

    reconciliation: bool = True
    inflight_check_interval_ms: int = 2_000
    inflight_check_threshold_ms: int = 5_000
    inflight_check_retries: int = 5
    reconciliation_startup_delay_secs: float = 10.0  # before the in-flight checks begin

    def __post_init__(self) -> None:
        for name in ("inflight_check_interval_ms", "inflight_check_threshold_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"live.exec_engine.{name} must be > 0")
        if not self.reconciliation_startup_delay_secs > 0:
            raise ValueError("live.exec_engine.reconciliation_startup_delay_secs must be > 0")
        if self.inflight_check_retries < 0:
            raise ValueError("live.exec_engine.inflight_check_retries must be >= 0")


class LiveSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The live/paper node: which venue profile, paper or live, where logs and state go.

    ``venues`` maps a profile name to ``venues.VenueSettings`` fields; ``venue`` picks one (the
    ``--venue`` flag overrides it, and ``configs/venues/<name>.yaml`` is layered on top if present).
    """

    venues: dict[str, dict[str, Any]]
    venue: str = "replay"
    mode: Literal["paper", "live"] = "paper"
    output_dir: str = "runs"
    log_dir: str = "logs"
    state_dir: str = "state"
    log_level: str = "INFO"
    timeout_connection: float = 30.0
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    cache_database: CacheDatabaseSettings | None = None  # Redis; None = in-memory only
    exec_engine: ExecEngineSettings = msgspec.field(default_factory=ExecEngineSettings)


class NodeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole node: trader, strategies, actors, risk, and per-environment sections."""

    trader_id: str
    strategies: list[ComponentSpec]
    actors: list[ComponentSpec] = []
    risk: RiskSettings = msgspec.field(default_factory=RiskSettings)
    backtest: BacktestSettings | None = None
    live: LiveSettings | None = None

    def strategy_configs(
        self, run_dir: str | Path, state_dir: str | Path | None = None
    ) -> list[ImportableStrategyConfig]:
        """The strategies as NautilusTrader importable configs (shared by backtest and live),
        each claiming the venue's orders on its instrument (:func:`claim_own_instruments`)."""
        return claim_own_instruments([
            ImportableStrategyConfig(
                strategy_path=s.path,
                config_path=s.resolved_config_path,
                config=_fill_dirs(s.config, run_dir, state_dir),
            )
            for s in self.strategies
        ])

    def actor_configs(
        self, run_dir: str | Path, state_dir: str | Path | None = None
    ) -> list[ImportableActorConfig]:
        """The actors as NautilusTrader importable configs (shared by backtest and live)."""
        return [
            ImportableActorConfig(
                actor_path=a.path,
                config_path=a.resolved_config_path,
                config=_fill_dirs(a.config, run_dir, state_dir),
            )
            for a in self.actors
        ]


def _fill_dirs(value: Any, run_dir: str | Path, state_dir: str | Path | None) -> Any:
    """``{run_dir}``: this run's output folder; ``{state_dir}``: state that must survive restarts
    (live: ``live.state_dir``; a backtest keeps its state inside its run folder)."""
    if isinstance(value, str):
        state = str(state_dir if state_dir is not None else run_dir)
        return value.replace("{run_dir}", str(run_dir)).replace("{state_dir}", state)
    if isinstance(value, dict):
        return {k: _fill_dirs(v, run_dir, state_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_dirs(v, run_dir, state_dir) for v in value]
    return value


def check_written_files(
    settings: NodeSettings, run_dir: str | Path, state_dir: str | Path | None = None
) -> None:
    """Every file an actor will write (the fields its config class lists in ``WRITES``) has a
    writable folder, created now as the actor would: a bad path is one error line before the
    node is built, not NautilusTrader's traceback of a component that failed to start."""
    from hmm_strategy import cli

    for i, spec in enumerate(settings.actors):
        config = spec.parsed(run_dir, state_dir)
        for key in getattr(config, "WRITES", ()):
            path = getattr(config, key)
            if path:
                where = f"actors[{spec.name or i}].config.{key} ({path}): its folder"
                cli.ensure_writable_dir(Path(path).parent, where)


def default_data_dir() -> str:
    return os.environ.get("HMM_DATA_DIR") or str((REPO_ROOT.parent / "shared" / "data").resolve())


def _expand_env(value: Any, source: str, key: str = "$", *, config_dir: str = ".") -> Any:
    """Replace ``${VAR}`` and ``{config_dir}`` in strings; an unset variable names the key."""
    if isinstance(value, str):
        value = value.replace("{config_dir}", config_dir)

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name == "HMM_DATA_DIR":
                return default_data_dir()
            if name not in os.environ:
                raise ConfigError(f"{source}: {key} uses ${{{name}}} but it is not set")
            return os.environ[name]

        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _expand_env(v, source, f"{key}.{k}", config_dir=config_dir) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _expand_env(v, source, f"{key}[{i}]", config_dir=config_dir)
            for i, v in enumerate(value)
        ]
    return value


def _named(items: Any) -> bool:
    return isinstance(items, list) and all(
        isinstance(i, dict) and isinstance(i.get("name"), str) for i in items
    )


def _deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; lists of named items (strategies, actors) merge by ``name``."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merged[key] = _deep_merge(old, value)
        elif _named(value) and _named(old):
            by_name = {item["name"]: item for item in old}
            for item in value:
                by_name[item["name"]] = _deep_merge(by_name.get(item["name"], {}), item)
            merged[key] = list(by_name.values())
        else:
            merged[key] = value
    return merged


def first_non_finite(value: Any, key: str = "$") -> str | None:
    """The key of the first NaN or infinite number in a parsed config, else None.

    YAML reads ``.nan`` and ``.inf`` as floats, and msgspec's JSON turns NaN into ``null``, which
    for a limit means "switched off": a non-finite number is never a valid setting.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return key
    if isinstance(value, dict):
        items = ((f"{key}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_key, sub in items:
        found = first_non_finite(sub, sub_key)
        if found is not None:
            return found
    return None


def read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        bad = first_non_finite(raw)
    except RecursionError:  # a YAML alias that contains itself
        raise ConfigError(f"{path}: nested too deeply (a self-referencing YAML alias?)") from None
    if bad is not None:
        raise ConfigError(f"{path}: {bad[2:]} must be a finite number")
    return raw


def load_node_settings(
    path: str | Path = DEFAULT_CONFIG, overrides: list[str | Path] = ()
) -> NodeSettings:
    """Load, layer, expand and validate the node config; errors name the file and the key."""
    path = Path(path)
    sources = [path, *map(Path, overrides)]
    raw: dict = {}
    for source in sources:
        raw = _deep_merge(raw, read_yaml(source))
    label = " + ".join(str(s) for s in sources)
    try:
        raw = _expand_env(raw, label, config_dir=str(path.resolve().parent))
    except RecursionError:  # e.g. a YAML alias that contains itself
        raise ConfigError(f"{label}: nested too deeply (a self-referencing YAML alias?)") from None
    try:
        settings = msgspec.convert(raw, NodeSettings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    except ValueError as exc:  # raised by a __post_init__ check
        raise ConfigError(f"{label}: {exc}") from None
    _validate_components(settings, label, "strategies")
    settings = _inherit_strategy_settings(settings, label)
    _validate_components(settings, label, "actors")
    _validate_for_rust(settings, label)
    if settings.live is not None:
        if settings.live.venue not in settings.live.venues:
            raise ConfigError(
                f"{label}: live.venue {settings.live.venue!r} is not one of live.venues "
                f"({', '.join(settings.live.venues)})"
            )
        for name in settings.live.venues:
            venue_settings(settings, name, label=label)
    return settings


def add_config_arguments(parser: argparse.ArgumentParser, *, strategy: bool = True) -> None:
    """``--config``, ``--override`` (and ``--strategy``): how each command reads the node config."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="node config (YAML)")
    parser.add_argument(
        "--override", action="append", default=[], help="override YAML file(s), layered in order"
    )
    if strategy:
        parser.add_argument("--strategy", help="strategy name or id (needed if several)")


def venue_settings(settings: NodeSettings, name: str, *, label: str = "node config"):
    """The ``live.venues.<name>`` profile as ``venues.VenueSettings`` (errors name the key)."""
    from venues.errors import VenueConfigError
    from venues.settings import load_venue_settings

    if settings.live is None:
        raise ConfigError(f"{label}: the node config has no 'live' section")
    if name not in settings.live.venues:
        known = ", ".join(settings.live.venues)
        raise ConfigError(f"{label}: live.venues has no profile {name!r} (known: {known})")
    try:
        return load_venue_settings(settings.live.venues[name])
    except VenueConfigError as exc:
        raise ConfigError(f"{label}: live.venues.{name}: {exc}") from None


ENV_OVERRIDES = {
    "TRADE_SYMBOLS": "comma-separated instrument ids: only strategies trading these run",
    "MAX_POSITION_NOTIONAL": "caps every strategy's max_notional (quote currency)",
    "MAX_ORDER_NOTIONAL": "RiskEngine max notional per order, for every traded instrument",
}


def apply_env_overrides(settings: NodeSettings, environ: dict[str, str]) -> NodeSettings:
    """Apply the documented environment overrides (see ``ENV_OVERRIDES`` and .env.example)."""
    strategies = list(settings.strategies)
    risk = settings.risk
    symbols = environ.get("TRADE_SYMBOLS", "").strip()
    if symbols:
        wanted = {s.strip() for s in symbols.split(",") if s.strip()}
        traded = {str(s.config.get("instrument_id")) for s in strategies}
        unknown = sorted(wanted - traded)
        if unknown:
            raise ConfigError(
                f"TRADE_SYMBOLS names {unknown}, which no strategy trades (known: {sorted(traded)})"
            )
        strategies = [s for s in strategies if s.config.get("instrument_id") in wanted]
    if environ.get("MAX_POSITION_NOTIONAL", "").strip():  # empty (as in .env.example) = unset
        cap = _positive_number(environ, "MAX_POSITION_NOTIONAL")
        strategies = [
            msgspec.structs.replace(
                s, config={**s.config, "max_notional": min(cap, s.config.get("max_notional", cap))}
            )
            for s in strategies
        ]
    if environ.get("MAX_ORDER_NOTIONAL", "").strip():  # empty (as in .env.example) = unset
        cap = int(_positive_number(environ, "MAX_ORDER_NOTIONAL"))
        limits = {str(s.config.get("instrument_id")): cap for s in strategies}
        risk = msgspec.structs.replace(risk, max_notional_per_order=limits)
    return msgspec.structs.replace(settings, strategies=strategies, risk=risk)


def _positive_number(environ: dict[str, str], key: str) -> float:
    try:
        value = float(environ[key])
    except ValueError:
        raise ConfigError(f"environment: {key}={environ[key]!r} is not a number") from None
    if not value > 0:
        raise ConfigError(f"environment: {key} must be > 0, was {value}")
    return value


def strategy_id_of(spec: ComponentSpec, config: Any) -> str:
    """The id NautilusTrader gives the strategy ``spec`` with its parsed ``config``:
    ``<strategy_id or class name>-<order_id_tag>``."""
    name = config.strategy_id or spec.path.rsplit(":", 1)[-1]
    return f"{name}-{config.order_id_tag}"


def traded_instruments(settings: NodeSettings) -> tuple[list[str], list[str]]:
    """Instrument ids and bar types the strategies trade (for the venue clients)."""
    ids = sorted({str(s.config["instrument_id"]) for s in settings.strategies})
    bar_types = sorted({str(s.config["bar_type"]) for s in settings.strategies})
    return ids, bar_types


def claim_own_instruments(
    strategies: list[ImportableStrategyConfig],
) -> list[ImportableStrategyConfig]:
    """Each strategy claims the venue's orders on its instrument (NautilusTrader's
    ``external_order_claims``) unless its config names claims or another strategy already claims
    that instrument. After a crash, reconciliation rebuilds the orders and the position from the
    venue; unclaimed they belong to ``EXTERNAL`` and the restarted strategy, seeing no position
    of its own, would buy it all again. Orders placed by hand on the same instrument and account
    are claimed too (and cancelled when the strategy stops)."""
    claimed = {
        i for s in strategies for i in (s.config.get("external_order_claims") or [])
    }
    out = []
    for spec in strategies:
        instrument = spec.config.get("instrument_id")
        if "external_order_claims" not in spec.config and instrument and instrument not in claimed:
            claimed.add(instrument)
            spec = msgspec.structs.replace(
                spec, config={**spec.config, "external_order_claims": [instrument]}
            )
        out.append(spec)
    return out


def trading_node_config(
    settings: NodeSettings,
    venue,
    run_dir: str | Path,
    *,
    log_level: str | None = None,
):
    """The node config as a ``TradingNodeConfig`` (same strategies and actors as the backtest)."""
    from nautilus_trader.live.config import LiveExecEngineConfig, LiveRiskEngineConfig

    from venues.builders import build_trading_node_config

    live = settings.live
    if live is None:
        raise ConfigError("the node config has no 'live' section")
    if venue.mode == "live" and settings.risk.bypass:
        raise ConfigError("risk.bypass must be false for live trading")
    ids, bar_types = traded_instruments(settings)
    config = build_trading_node_config(
        settings.trader_id,
        venue,
        instrument_ids=ids,
        bar_types=bar_types,
        strategies=settings.strategy_configs(run_dir, live.state_dir),
        actors=settings.actor_configs(run_dir, live.state_dir),
        # like every live engine: an exception in its queue stops the node cleanly
        risk_engine=settings.risk.engine_config(
            LiveRiskEngineConfig, graceful_shutdown_on_exception=True
        ),
        log_dir=live.log_dir,
        log_level=log_level or live.log_level,
        timeout_connection=live.timeout_connection,
        exec_engine=LiveExecEngineConfig(
            graceful_shutdown_on_exception=True,
            reconciliation=live.exec_engine.reconciliation,
            inflight_check_interval_ms=live.exec_engine.inflight_check_interval_ms,
            inflight_check_threshold_ms=live.exec_engine.inflight_check_threshold_ms,
            inflight_check_retries=live.exec_engine.inflight_check_retries,
            reconciliation_startup_delay_secs=live.exec_engine.reconciliation_startup_delay_secs,
        ),
    )
    if live.cache_database is None:
        return config
    from nautilus_trader.cache.config import CacheConfig
    from nautilus_trader.common.config import DatabaseConfig

    db = live.cache_database
    cache = CacheConfig(
        database=DatabaseConfig(type="redis", host=db.host, port=db.port),
        flush_on_start=db.flush_on_start,
    )
    return msgspec.structs.replace(config, cache=cache, load_state=True, save_state=True)


def _validate_for_rust(settings: NodeSettings, label: str) -> None:
    """Values NautilusTrader hands to its Rust core, which aborts the process (exit 134, no
    message) on a malformed one: check them here so the user gets a ConfigError instead."""
    import argparse as _argparse

    from hmm_strategy.cli import check_log_level, check_trader_id

    try:
        check_trader_id(settings.trader_id)
        if settings.backtest is not None:
            check_log_level(settings.backtest.log_level, "backtest.log_level")
        if settings.live is not None:
            check_log_level(settings.live.log_level, "live.log_level")
    except (ValueError, _argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{label}: {exc}") from None


INHERITED_FROM_STRATEGY = ("strategy_id", "instrument_id", "bar_type", "features", "fit", "policy")


def _inherit_strategy_settings(settings: NodeSettings, label: str) -> NodeSettings:
    """An actor config with ``strategy: <name>`` (the online trainer) gets that strategy's id,
    instrument, bar type, features, fit and policy settings: one source, no copy that can drift.
    A value the actor sets as well must be the strategy's (a mismatch fails here)."""
    from hmm_strategy.train import strategy_target

    actors = []
    for i, spec in enumerate(settings.actors):
        name = spec.config.get("strategy")
        if name is None:
            actors.append(spec)
            continue
        key = f"actors[{i}].config"
        try:
            target = strategy_target(settings, str(name))
        except ConfigError as exc:
            raise ConfigError(f"{label}: {key}.strategy: {exc}") from None
        config = {k: v for k, v in spec.config.items() if k != "strategy"}
        for field in INHERITED_FROM_STRATEGY:
            value = getattr(target, field)
            if field in config:
                try:
                    same = msgspec.convert(config[field], type(value)) == value
                except (msgspec.ValidationError, ValueError, TypeError):
                    same = False
                if not same:
                    raise ConfigError(
                        f"{label}: {key}.{field} differs from strategy {name!r}'s; remove it "
                        "(it is taken from the strategy)"
                    )
            config[field] = msgspec.to_builtins(value)
        actors.append(msgspec.structs.replace(spec, config=config))
    return msgspec.structs.replace(settings, actors=actors)


def _validate_components(settings: NodeSettings, label: str, kind: str) -> None:
    """Decode every strategy (or actor) config with its own class now, so errors come before
    start."""
    specs = settings.strategies if kind == "strategies" else settings.actors
    for i, spec in enumerate(specs):
        key = f"{kind}[{i}]"
        try:
            config_cls = resolve_config_path(spec.resolved_config_path)
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            msg = f"{label}: {key}.path: cannot import {spec.path!r}: {exc}"
            raise ConfigError(msg) from None
        try:
            config_cls.parse(msgspec.json.encode(_fill_dirs(spec.config, "run", "state")))
        except (
            msgspec.ValidationError,
            msgspec.DecodeError,
            ValueError,
            TypeError,
            OSError,  # a config may read a file (the governance policy)
            RecursionError,
        ) as exc:
            msg = str(exc).replace("`$", f"`{key}.config")
            raise ConfigError(f"{label}: {key}.config: {msg}") from None


def backtest_run_config(
    settings: NodeSettings,
    run_dir: str | Path,
    *,
    start: str | None = None,
    end: str | None = None,
    extra_actors: list[ImportableActorConfig] = (),
    state_dir: str | Path | None = None,
) -> BacktestRunConfig:
    """The node config as a ``BacktestRunConfig`` over the catalog (same strategies and actors)."""
    from nautilus_trader.backtest.config import (
        BacktestDataConfig,
        BacktestEngineConfig,
        BacktestRunConfig,
        BacktestVenueConfig,
        ImportableFeeModelConfig,
        ImportableFillModelConfig,
    )
    from nautilus_trader.common.config import LoggingConfig
    from nautilus_trader.model.data import BarType
    from nautilus_trader.risk.config import RiskEngineConfig

    bt = settings.backtest
    if bt is None:
        raise ConfigError("the node config has no 'backtest' section")
    venues = []
    for v in bt.venues:
        fee_model = None
        if v.fee_model == "maker_taker":
            fee_model = ImportableFeeModelConfig(
                fee_model_path="nautilus_trader.backtest.models:MakerTakerFeeModel",
                config_path="nautilus_trader.backtest.config:MakerTakerFeeModelConfig",
                config={},
            )
        venues.append(
            BacktestVenueConfig(
                name=v.name,
                oms_type=v.oms_type,
                account_type=v.account_type,
                starting_balances=v.starting_balances,
                base_currency=v.base_currency,
                default_leverage=v.default_leverage,
                fee_model=fee_model,
                fill_model=ImportableFillModelConfig(
                    fill_model_path="nautilus_trader.backtest.models:FillModel",
                    config_path="nautilus_trader.backtest.config:FillModelConfig",
                    config=msgspec.to_builtins(v.fill_model),
                ),
            )
        )
    data = []
    for d in bt.data:
        bar_type = BarType.from_str(d.bar_type)
        data.append(
            BacktestDataConfig(
                catalog_path=str(Path(bt.catalog_path).resolve()),
                data_cls="nautilus_trader.model.data:Bar",
                instrument_id=bar_type.instrument_id,
                bar_types=[d.bar_type],
                start_time=start or bt.start,
                end_time=end or bt.end,
            )
        )
    engine = BacktestEngineConfig(
        trader_id=settings.trader_id,
        strategies=settings.strategy_configs(run_dir, state_dir),
        actors=[*settings.actor_configs(run_dir, state_dir), *extra_actors],
        logging=LoggingConfig(log_level=bt.log_level, bypass_logging=False),
        risk_engine=settings.risk.engine_config(RiskEngineConfig),
    )
    return BacktestRunConfig(
        engine=engine,
        venues=venues,
        data=data,
        dispose_on_completion=False,
        raise_exception=True,
    )
