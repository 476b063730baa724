"""Build NautilusTrader's own venue clients (Binance, Bybit, IB, replay) from ``VenueSettings``.

Paper mode on any venue = that venue's live data client + NautilusTrader's
``SandboxExecutionClient`` (one per traded venue) with the settings' starting balances, plus a
:mod:`venues.paper` actor that subscribes to quotes/trades so the sandbox has prices to fill at.
Live mode = the venue's own execution client, with keys from the environment
(:mod:`venues.secrets`). Nothing connects while configs are built or ``node.build()`` runs,
except IB, whose adapter connects inside ``build()`` (see ``IBSettings.max_connection_attempts``).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.factory import SandboxLiveExecClientFactory
from nautilus_trader.config import (
    ImportableActorConfig,
    ImportableStrategyConfig,
    InstrumentProviderConfig,
    LiveDataClientConfig,
    LiveDataEngineConfig,
    LiveExecClientConfig,
    LiveExecEngineConfig,
    LiveRiskEngineConfig,
    LoggingConfig,
    TradingNodeConfig,
)
from nautilus_trader.live.factories import LiveDataClientFactory, LiveExecClientFactory
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import BarType
from nautilus_trader.model.identifiers import InstrumentId, Venue

from venues.errors import VenueConfigError
from venues.paper import paper_price_feed_actor
from venues.replay import (
    REPLAY_CLIENT_NAME,
    ReplayDataClientConfig,
    ReplayLiveDataClientFactory,
    wire_replay_clients,
)
from venues.secrets import (
    binance_credentials,
    bybit_credentials,
    ib_connection,
    masked_key_factory,
    require_secrets,
    tws_login,
)
from venues.settings import VenueSettings, load_venue_settings

SANDBOX = "SANDBOX"  # factory name; client keys are "SANDBOX-<VENUE>" (the node splits on '-')
IB = "IB"

DataFactory = type[LiveDataClientFactory]
ExecFactory = type[LiveExecClientFactory]
FactoryEntry = tuple[str, DataFactory | None, ExecFactory | None]


@dataclass(frozen=True)
class VenueClients:
    """Client configs and the factories a ``TradingNode`` needs to build them.

    ``factories`` holds ``(name, data factory or None, exec factory or None)``; register with
    ``node.add_data_client_factory(name, data)`` / ``node.add_exec_client_factory(name, exec)``.
    ``actors`` are extra actors the venue needs (the paper price feed).
    """

    data_clients: dict[str, LiveDataClientConfig] = field(default_factory=dict)
    exec_clients: dict[str, LiveExecClientConfig] = field(default_factory=dict)
    factories: list[FactoryEntry] = field(default_factory=list)
    actors: list[ImportableActorConfig] = field(default_factory=list)

    def merged(self, other: VenueClients) -> VenueClients:
        """Both sets of clients in one node; a client name used twice is an error."""
        for kind, mine, theirs in (
            ("data", self.data_clients, other.data_clients),
            ("execution", self.exec_clients, other.exec_clients),
        ):
            clash = set(mine) & set(theirs)
            if clash:
                raise VenueConfigError(f"{kind} client names used twice: {sorted(clash)}")
        return VenueClients(
            data_clients={**self.data_clients, **other.data_clients},
            exec_clients={**self.exec_clients, **other.exec_clients},
            factories=_merge_factories(self.factories + other.factories),
            actors=self.actors + other.actors,
        )


def _merge_factories(entries: list[FactoryEntry]) -> list[FactoryEntry]:
    merged: dict[str, list[Any]] = {}
    for name, data, exe in entries:
        slot = merged.setdefault(name, [None, None])
        for i, factory in enumerate((data, exe)):
            if factory is None:
                continue
            if slot[i] is not None and slot[i] is not factory:
                raise VenueConfigError(f"two different factories registered as {name!r}")
            slot[i] = factory
    return [(name, d, e) for name, (d, e) in merged.items()]


# -- parsing and validation -----------------------------------------------------------------------


def _parse_ids(
    instrument_ids: Sequence[str], bar_types: Sequence[str]
) -> tuple[list[str], list[str]]:
    if isinstance(instrument_ids, str) or isinstance(bar_types, str):
        raise VenueConfigError("instrument_ids and bar_types must be lists of strings")
    ids: list[str] = []
    for raw in instrument_ids:
        try:
            ids.append(InstrumentId.from_str(raw).value)
        except (ValueError, TypeError) as e:
            raise VenueConfigError(
                f"bad instrument id {raw!r}: expected 'SYMBOL.VENUE' ({e})"
            ) from None
    bts: list[str] = []
    for raw in bar_types:
        try:
            bar_type = BarType.from_str(raw)
        except (ValueError, TypeError) as e:
            raise VenueConfigError(
                f"bad bar type {raw!r}: expected e.g. "
                f"'BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL' ({e})",
            ) from None
        bts.append(str(bar_type))
        if bar_type.instrument_id.value not in ids:
            ids.append(bar_type.instrument_id.value)
    if not ids:
        raise VenueConfigError("at least one instrument id (or bar type) is needed")
    return list(dict.fromkeys(ids)), list(dict.fromkeys(bts))


def _check_venues(settings: VenueSettings, ids: list[str]) -> None:
    venue = settings.venue
    if venue is None:
        return
    examples = {
        "binance_spot": "BTCUSDT",
        "binance_futures": "BTCUSDT-PERP",
        "bybit_linear": "BTCUSDT-LINEAR",
    }
    for iid in ids:
        if InstrumentId.from_str(iid).venue.value != venue:
            raise VenueConfigError(
                f"instrument {iid} is not on venue {venue} traded by kind={settings.kind!r} "
                f"(expected e.g. {examples[settings.kind]}.{venue})",
            )
    if settings.kind == "bybit_linear":
        bad = [i for i in ids if not InstrumentId.from_str(i).symbol.value.endswith("-LINEAR")]
        if bad:
            raise VenueConfigError(
                f"bybit_linear instruments end in '-LINEAR' (e.g. BTCUSDT-LINEAR.BYBIT), got {bad}"
            )


def _venues_of(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(InstrumentId.from_str(i).venue.value for i in ids))


def _load_ids(ids: list[str]) -> InstrumentProviderConfig:
    return InstrumentProviderConfig(load_ids=frozenset(InstrumentId.from_str(i) for i in ids))


# -- per-kind client configs ----------------------------------------------------------------------


def _sandboxes(settings: VenueSettings, ids: list[str]) -> dict[str, LiveExecClientConfig]:
    return {
        f"{SANDBOX}-{venue}": SandboxExecutionClientConfig(
            venue=venue,
            starting_balances=list(settings.starting_balances),
            oms_type=settings.oms_type,
            account_type=settings.sandbox_account_type,
            default_leverage=Decimal(str(settings.default_leverage)),
        )
        for venue in _venues_of(ids)
    }


def _paper_clients(
    settings: VenueSettings, ids: list[str], name: str, data: LiveDataClientConfig, factory: type
) -> VenueClients:
    """Paper mode on a real venue: its own data client, NautilusTrader's sandbox for fills."""
    return VenueClients(
        data_clients={name: data},
        exec_clients=_sandboxes(settings, ids),
        factories=[(name, factory, None), (SANDBOX, None, SandboxLiveExecClientFactory)],
    )


def _binance(settings: VenueSettings, ids: list[str]) -> VenueClients:
    from nautilus_trader.adapters.binance import (
        BinanceAccountType,
        BinanceDataClientConfig,
        BinanceExecClientConfig,
    )
    from nautilus_trader.adapters.binance.common.enums import BinanceEnvironment

    BinanceLiveDataClientFactory, BinanceLiveExecClientFactory = binance_factories()  # noqa: N806

    futures = settings.kind == "binance_futures"
    account_type = BinanceAccountType.USDT_FUTURES if futures else BinanceAccountType.SPOT
    if not settings.testnet:
        environment = BinanceEnvironment.LIVE
    else:
        environment = BinanceEnvironment.DEMO if settings.demo else BinanceEnvironment.TESTNET
    name = settings.venue
    assert name is not None
    data = BinanceDataClientConfig(
        venue=Venue(name),
        account_type=account_type,
        environment=environment,
        base_url_http=settings.base_url_http,
        base_url_ws=settings.base_url_ws,
        instrument_provider=_load_ids(ids),
    )
    if settings.mode == "paper":
        return _paper_clients(settings, ids, name, data, BinanceLiveDataClientFactory)
    creds = binance_credentials(futures=futures)
    exe = BinanceExecClientConfig(
        venue=Venue(name),
        account_type=account_type,
        environment=environment,
        api_key=creds.api_key,
        api_secret=creds.api_secret,
        base_url_http=settings.base_url_http,
        base_url_ws=settings.base_url_ws_api,  # the adapter's name for its WebSocket API URL
        base_url_ws_stream=settings.base_url_ws_stream,
        instrument_provider=_load_ids(ids),
    )
    return VenueClients(
        data_clients={name: data},
        exec_clients={name: exe},
        factories=[(name, BinanceLiveDataClientFactory, BinanceLiveExecClientFactory)],
    )


@functools.cache
def binance_factories() -> tuple[DataFactory, ExecFactory]:
    """NautilusTrader's Binance factories with the API key masked fully in the log; spot
    execution clients report the held base asset as the position (``venues.binance_spot``)."""
    from nautilus_trader.adapters.binance import (
        BinanceLiveDataClientFactory,
        BinanceLiveExecClientFactory,
    )

    from venues.binance_spot import with_spot_positions

    mod, getter = "nautilus_trader.adapters.binance.factories", "get_cached_binance_http_client"
    return (
        masked_key_factory(BinanceLiveDataClientFactory, mod, getter),
        with_spot_positions(masked_key_factory(BinanceLiveExecClientFactory, mod, getter)),
    )


@functools.cache
def bybit_factories() -> tuple[DataFactory, ExecFactory]:
    """NautilusTrader's Bybit factories, except that the API key is masked fully in the log
    (the adapter logs 8 of its characters otherwise; see ``venues.secrets.MaskedKeyHttpClient``)."""
    from nautilus_trader.adapters.bybit.factories import (
        BybitLiveDataClientFactory,
        BybitLiveExecClientFactory,
    )

    mod, getter = "nautilus_trader.adapters.bybit.factories", "get_cached_bybit_http_client"
    return (
        masked_key_factory(BybitLiveDataClientFactory, mod, getter),
        masked_key_factory(BybitLiveExecClientFactory, mod, getter),
    )


def _bybit(settings: VenueSettings, ids: list[str]) -> VenueClients:
    from nautilus_trader.adapters.bybit.config import BybitDataClientConfig, BybitExecClientConfig
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment, BybitProductType

    BybitLiveDataClientFactory, BybitLiveExecClientFactory = bybit_factories()  # noqa: N806

    if not settings.testnet:
        environment = BybitEnvironment.MAINNET
    else:
        environment = BybitEnvironment.DEMO if settings.demo else BybitEnvironment.TESTNET
    products = (BybitProductType.LINEAR,)
    name = "BYBIT"
    data = BybitDataClientConfig(
        product_types=products,
        environment=environment,
        base_url_http=settings.base_url_http,
        instrument_provider=_load_ids(ids),
    )
    if settings.mode == "paper":
        return _paper_clients(settings, ids, name, data, BybitLiveDataClientFactory)
    creds = bybit_credentials()
    exe = BybitExecClientConfig(
        api_key=creds.api_key,
        api_secret=creds.api_secret,
        product_types=products,
        environment=environment,
        base_url_http=settings.base_url_http,
        base_url_ws_private=settings.base_url_ws_private,
        base_url_ws_trade=settings.base_url_ws_trade,
        instrument_provider=_load_ids(ids),
    )
    return VenueClients(
        data_clients={name: data},
        exec_clients={name: exe},
        factories=[(name, BybitLiveDataClientFactory, BybitLiveExecClientFactory)],
    )


def _ib(settings: VenueSettings, ids: list[str]) -> VenueClients:
    try:
        from ibapi.common import MarketDataTypeEnum
    except ImportError:
        raise VenueConfigError(
            "the IB adapter needs the 'ib' extra: pip install 'nautilus_trader[ib]==1.231.0'",
        ) from None
    from nautilus_trader.adapters.interactive_brokers.config import (
        DockerizedIBGatewayConfig,
        InteractiveBrokersDataClientConfig,
        InteractiveBrokersExecClientConfig,
        InteractiveBrokersInstrumentProviderConfig,
    )
    from nautilus_trader.adapters.interactive_brokers.factories import (
        InteractiveBrokersLiveDataClientFactory,
        InteractiveBrokersLiveExecClientFactory,
    )

    ib = settings.ib
    conn = ib_connection(settings)
    docker = None
    if ib.gateway == "docker":
        username, password = tws_login()
        docker = DockerizedIBGatewayConfig(
            username=username,
            password=password,
            trading_mode="paper" if settings.testnet else "live",
            read_only_api=settings.mode == "paper",
        )
    provider = InteractiveBrokersInstrumentProviderConfig(
        load_ids=frozenset(InstrumentId.from_str(i) for i in ids),
    )
    market_data = {
        "realtime": MarketDataTypeEnum.REALTIME,
        "frozen": MarketDataTypeEnum.FROZEN,
        "delayed": MarketDataTypeEnum.DELAYED,
        "delayed_frozen": MarketDataTypeEnum.DELAYED_FROZEN,
    }[ib.market_data_type]
    common: dict[str, Any] = {
        "ibg_host": conn.host,
        "ibg_port": conn.port,
        "ibg_client_id": conn.client_id,
        "dockerized_gateway": docker,
        "instrument_provider": provider,
        "connection_timeout": ib.connection_timeout_secs,
        "request_timeout_secs": ib.request_timeout_secs,
    }
    data = InteractiveBrokersDataClientConfig(
        use_regular_trading_hours=ib.use_regular_trading_hours,
        market_data_type=market_data,
        **common,
    )
    if settings.mode == "paper":
        return _paper_clients(settings, ids, IB, data, InteractiveBrokersLiveDataClientFactory)
    exe = InteractiveBrokersExecClientConfig(account_id=conn.account_id, **common)
    return VenueClients(
        data_clients={IB: data},
        exec_clients={IB: exe},
        factories=[
            (IB, InteractiveBrokersLiveDataClientFactory, InteractiveBrokersLiveExecClientFactory)
        ],
    )


def ib_factories() -> tuple[DataFactory, ExecFactory]:
    from nautilus_trader.adapters.interactive_brokers.factories import (
        InteractiveBrokersLiveDataClientFactory,
        InteractiveBrokersLiveExecClientFactory,
    )

    return InteractiveBrokersLiveDataClientFactory, InteractiveBrokersLiveExecClientFactory


@dataclass(frozen=True)
class VenueKind:
    """How one adapter kind is built: its clients, its factories and the name they go under."""

    clients: Callable[[VenueSettings, list[str]], VenueClients]
    factories: Callable[[], tuple[DataFactory, ExecFactory]]
    factory_name: Callable[[VenueSettings], str]


# One entry per adapter kind (``replay`` is the offline feed, built apart: it replays bar types).
VENUE_KINDS: dict[str, VenueKind] = {
    "binance_spot": VenueKind(_binance, binance_factories, lambda s: s.venue or ""),
    "binance_futures": VenueKind(_binance, binance_factories, lambda s: s.venue or ""),
    "bybit_linear": VenueKind(_bybit, bybit_factories, lambda s: "BYBIT"),
    "ib": VenueKind(_ib, ib_factories, lambda s: IB),
}


def _replay(settings: VenueSettings, ids: list[str], bar_types: list[str]) -> VenueClients:
    replay = settings.replay
    faults = replay.faults
    if not bar_types and replay.bar_type:
        bar_types = [str(BarType.from_str(replay.bar_type))]
        ids = list(dict.fromkeys([*ids, str(BarType.from_str(replay.bar_type).instrument_id)]))
    elif replay.bar_type and str(BarType.from_str(replay.bar_type)) not in bar_types:
        raise VenueConfigError(
            f"replay.bar_type {replay.bar_type} is not among bar_types {bar_types}"
        )
    if not bar_types:
        raise VenueConfigError("replay needs a bar type (bar_types or replay.bar_type)")
    # the client config mirrors the settings field by field, by name
    mirrored = set(ReplayDataClientConfig.__struct_fields__) & set(replay.__struct_fields__)
    fields = {name: getattr(replay, name) for name in mirrored}
    if fields["history_bars"] == "auto":  # resolved from the strategies by the live entry point
        fields["history_bars"] = 0
    data = ReplayDataClientConfig(
        instrument_ids=tuple(ids),
        bar_types=tuple(bar_types),
        **fields,
        outages=tuple((o.after_bars, o.bars) for o in (faults.data_outages if faults else ())),
        unanswered_history=bool(faults and faults.unanswered_history),
    )
    exec_clients = _sandboxes(settings, ids)
    order_faults = _order_fault_drill(settings)
    if order_faults is not None:
        from venues.faults import FaultySandboxConfig

        exec_clients = {
            name: FaultySandboxConfig(
                **msgspec.structs.asdict(cfg),
                unanswered_orders=tuple(order_faults.unanswered_orders),
                rejected_orders=tuple(order_faults.rejected_orders),
            )
            for name, cfg in exec_clients.items()
        }
    return VenueClients(
        data_clients={REPLAY_CLIENT_NAME: data},
        exec_clients=exec_clients,
        factories=[
            (REPLAY_CLIENT_NAME, ReplayLiveDataClientFactory, None),
            (SANDBOX, None, _sandbox_factory(settings)),
        ],
    )


def build_venue_clients(
    settings: VenueSettings | Mapping[str, Any],
    instrument_ids: Sequence[str],
    bar_types: Sequence[str] = (),
) -> VenueClients:
    """Data/execution client configs + factories for one venue.

    Checks, before anything can connect: settings are valid, ids parse and sit on the venue
    the kind trades, and (live mode) every required secret is in the environment.
    Instruments named only by a bar type are added to ``instrument_ids``.
    """
    settings = load_venue_settings(settings)
    ids, bts = _parse_ids(instrument_ids, bar_types)
    _check_venues(settings, ids)
    require_secrets(settings)
    kind = VENUE_KINDS.get(settings.kind)
    if kind is None:  # the offline replay feed: bars, not an adapter
        return _replay(settings, ids, bts)
    clients = kind.clients(settings, ids)
    if settings.mode == "paper":
        actor = paper_price_feed_actor(ids, settings.paper_price_feed, settings.venue or "IB")
        clients = VenueClients(
            clients.data_clients, clients.exec_clients, clients.factories, [actor]
        )
    return clients


# -- several venues in one node -------------------------------------------------------------------


def _as_list(settings: VenueSettings | Mapping[str, Any] | Sequence[Any]) -> list[VenueSettings]:
    if isinstance(settings, (VenueSettings, Mapping)):
        return [load_venue_settings(settings)]
    items = [load_venue_settings(s) for s in settings]
    if not items:
        raise VenueConfigError("no venue settings given")
    return items


def _partition(settings: list[VenueSettings], ids: list[str]) -> list[list[str]]:
    """Give each instrument to the settings trading its venue (ib/replay take the rest)."""
    if len(settings) == 1:
        return [ids]
    venues = [s.venue for s in settings]
    fixed = [v for v in venues if v is not None]
    if len(set(fixed)) != len(fixed):
        raise VenueConfigError(f"two venue settings trade the same venue: {fixed}")
    open_slots = [i for i, v in enumerate(venues) if v is None]
    if len(open_slots) > 1:
        raise VenueConfigError("at most one multi-venue kind (ib/replay) per node")
    parts: list[list[str]] = [[] for _ in settings]
    for iid in ids:
        venue = InstrumentId.from_str(iid).venue.value
        if venue in venues:
            parts[venues.index(venue)].append(iid)
        elif open_slots:
            parts[open_slots[0]].append(iid)
        else:
            raise VenueConfigError(f"no venue settings trade {iid} (venues: {fixed})")
    for s, part in zip(settings, parts, strict=True):
        if not part:
            raise VenueConfigError(f"venue settings kind={s.kind!r} got no instruments")
    return parts


def build_all_venue_clients(
    settings: VenueSettings | Mapping[str, Any] | Sequence[VenueSettings | Mapping[str, Any]],
    instrument_ids: Sequence[str],
    bar_types: Sequence[str] = (),
) -> VenueClients:
    """Like :func:`build_venue_clients` for one or several venues (e.g. Binance spot + futures)."""
    items = _as_list(settings)
    ids, bts = _parse_ids(instrument_ids, bar_types)
    parts = _partition(items, ids)
    result: VenueClients | None = None
    for s, part in zip(items, parts, strict=True):
        own_bars = [b for b in bts if str(BarType.from_str(b).instrument_id) in part]
        clients = build_venue_clients(s, part, own_bars)
        result = clients if result is None else result.merged(clients)
    assert result is not None
    return result


def build_trading_node_config(
    trader_id: str,
    settings: VenueSettings | Mapping[str, Any] | Sequence[VenueSettings | Mapping[str, Any]],
    instrument_ids: Sequence[str],
    bar_types: Sequence[str] = (),
    strategies: Sequence[ImportableStrategyConfig] = (),
    actors: Sequence[ImportableActorConfig] = (),
    risk_engine: LiveRiskEngineConfig | None = None,
    log_dir: str | Path | None = None,
    log_level: str = "INFO",
    log_level_file: str = "DEBUG",
    timeout_connection: float = 30.0,
    timeout_reconciliation: float = 10.0,
    timeout_portfolio: float = 10.0,
    timeout_disconnection: float = 10.0,
    timeout_post_stop: float = 2.0,  # run_node has waited for the orders (exit_markets); after
    # a ShutdownSystem the kernel's own stop waits only this long for the strategies' closes
    data_engine: LiveDataEngineConfig | None = None,
    exec_engine: LiveExecEngineConfig | None = None,
) -> TradingNodeConfig:
    """A complete ``TradingNodeConfig``: venue clients + the caller's strategies and actors.

    ``settings`` may be one ``VenueSettings`` or several (instruments are assigned by venue).
    Venue-required actors (the paper price feed) are appended to ``actors``. ``log_dir`` turns
    on file logging there at ``log_level_file``. Engines not given default to
    ``graceful_shutdown_on_exception=True``: an exception in an engine queue then stops the node
    cleanly (logged) instead of NautilusTrader's default ``os._exit(1)``, which loses the log.
    """
    clients = build_all_venue_clients(settings, instrument_ids, bar_types)
    logging = LoggingConfig(log_level=log_level)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        logging = LoggingConfig(
            log_level=log_level,
            log_level_file=log_level_file,
            log_directory=str(log_dir),
        )
    try:
        return TradingNodeConfig(
            trader_id=trader_id,
            logging=logging,
            data_engine=data_engine or LiveDataEngineConfig(graceful_shutdown_on_exception=True),
            risk_engine=risk_engine or LiveRiskEngineConfig(graceful_shutdown_on_exception=True),
            exec_engine=exec_engine or LiveExecEngineConfig(graceful_shutdown_on_exception=True),
            data_clients=dict(clients.data_clients),
            exec_clients=dict(clients.exec_clients),
            strategies=list(strategies),
            actors=[*actors, *clients.actors],
            timeout_connection=timeout_connection,
            timeout_reconciliation=timeout_reconciliation,
            timeout_portfolio=timeout_portfolio,
            timeout_disconnection=timeout_disconnection,
            timeout_post_stop=timeout_post_stop,
        )
    except (ValueError, TypeError) as e:  # e.g. a malformed trader id
        raise VenueConfigError(f"invalid trading node config: {e}") from None


# -- building the node ----------------------------------------------------------------------------


def venue_factories(
    settings: VenueSettings | Mapping[str, Any] | Sequence[VenueSettings | Mapping[str, Any]],
) -> list[FactoryEntry]:
    """The client factories the settings need (same names as the built client configs)."""
    entries: list[FactoryEntry] = []
    for s in _as_list(settings):
        kind = VENUE_KINDS.get(s.kind)
        if kind is None:
            entries.append((REPLAY_CLIENT_NAME, ReplayLiveDataClientFactory, None))
        else:
            data_factory, exec_factory = kind.factories()
            exe = exec_factory if s.mode == "live" else None
            entries.append((kind.factory_name(s), data_factory, exe))
        if s.mode == "paper":
            entries.append((SANDBOX, None, _sandbox_factory(s)))
    return _merge_factories(entries)


def _order_fault_drill(settings: VenueSettings):
    """The replay venue's fault drill when it injects order faults, else None."""
    faults = settings.replay.faults if settings.kind == "replay" else None
    if faults is not None and (faults.unanswered_orders or faults.rejected_orders):
        return faults
    return None


def _sandbox_factory(settings: VenueSettings) -> type:
    """NautilusTrader's sandbox, or its fault-drill twin when the replay venue asks for one."""
    if _order_fault_drill(settings) is not None:
        from venues.faults import FaultySandboxFactory

        return FaultySandboxFactory
    return SandboxLiveExecClientFactory


@contextmanager
def _env_var(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _drop_stale_ib_clients(loop: asyncio.AbstractEventLoop) -> None:
    """The IB factory caches clients per (host, port, client id) at module level; a client from
    an earlier node in this process is bound to a closed loop and must not be reused."""
    from nautilus_trader.adapters.interactive_brokers import factories as ibf

    for key, client in list(ibf.IB_CLIENTS.items()):
        if client._loop is not loop:
            ibf.IB_CLIENTS.pop(key, None)
            for pkey in [k for k in ibf.IB_INSTRUMENT_PROVIDERS if k[0] == key]:
                ibf.IB_INSTRUMENT_PROVIDERS.pop(pkey, None)


def _set_ib_reconnects(loop: asyncio.AbstractEventLoop, attempts: int) -> None:
    from nautilus_trader.adapters.interactive_brokers import factories as ibf

    for client in ibf.IB_CLIENTS.values():
        if client._loop is loop:  # private fields of InteractiveBrokersClient (1.231.0)
            client._max_connection_attempts = attempts
            client._indefinite_reconnect = attempts == 0


def _usable_loop() -> asyncio.AbstractEventLoop:
    """The running loop, else the current one if still open, else a new current loop (a node
    disposed earlier in this process closes its loop, which would break the next node)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def build_trading_node(
    config: TradingNodeConfig,
    settings: VenueSettings | Mapping[str, Any] | Sequence[VenueSettings | Mapping[str, Any]],
    loop: asyncio.AbstractEventLoop | None = None,
) -> TradingNode:
    """Create the ``TradingNode``, register the venue factories and run ``node.build()``.

    IB: ``IB_MAX_CONNECTION_ATTEMPTS`` is set to ``ib.max_connection_attempts`` during the build
    (the adapter otherwise retries forever inside it), then the clients get
    ``ib.max_reconnect_attempts`` for the rest of the run.
    """
    items = _as_list(settings)
    factories = venue_factories(items)
    names_data = {n for n, d, _ in factories if d is not None}
    names_exec = {n for n, _, e in factories if e is not None}
    for key in config.data_clients:
        if key.partition("-")[0] not in names_data:
            raise VenueConfigError(f"data client {key!r} has no factory for these venue settings")
    for key in config.exec_clients:
        if key.partition("-")[0] not in names_exec:
            raise VenueConfigError(
                f"execution client {key!r} has no factory for these venue settings"
            )

    node = TradingNode(config=config, loop=loop or _usable_loop())
    for name, data_factory, exec_factory in factories:
        if data_factory is not None:
            node.add_data_client_factory(name, data_factory)
        if exec_factory is not None:
            node.add_exec_client_factory(name, exec_factory)

    ib = next((s for s in items if s.kind == "ib"), None)
    node_loop = node.get_event_loop()
    assert node_loop is not None
    if ib is not None:
        _drop_stale_ib_clients(node_loop)
    attempts = str(ib.ib.max_connection_attempts) if ib is not None else None
    with _env_var("IB_MAX_CONNECTION_ATTEMPTS", attempts):
        node.build()
    if ib is not None:
        _set_ib_reconnects(node_loop, ib.ib.max_reconnect_attempts)
    wire_replay_clients(node)
    return node
