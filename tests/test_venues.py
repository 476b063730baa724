"""Venue configs build into real TradingNodes offline; bad settings and missing secrets fail early.

Nothing here reaches a venue: ``node.build()`` creates clients without connecting, except the IB
adapter, which tries 127.0.0.1 on a free (closed) port once and gives up.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue

from venues import (
    VenueConfigError,
    VenueSettings,
    build_trading_node,
    build_trading_node_config,
    build_venue_clients,
    load_venue_settings,
)
from venues.replay import ReplayDataClient
from venues.settings import IBSettings, ReplaySettings

# Building without running leaves adapter coroutines un-awaited on a closed loop: harmless.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

KEY = "KEY-SENTINEL-8c1f"
SECRET = "SECRET-SENTINEL-77ab"
BT_SPOT = "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"
BT_FUT = "BTCUSDT-PERP.BINANCE_FUTURES-1-MINUTE-LAST-EXTERNAL"
BT_BYBIT = "BTCUSDT-LINEAR.BYBIT-1-MINUTE-LAST-EXTERNAL"
BT_IB = "SPY.ARCA-5-SECOND-LAST-EXTERNAL"
ALL_ENV = [
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "BINANCE_FUTURES_API_KEY",
    "BINANCE_FUTURES_API_SECRET",
    "BYBIT_API_KEY",
    "BYBIT_API_SECRET",
    "IBKR_HOST",
    "IBKR_PORT",
    "IBKR_CLIENT_ID",
    "IBKR_ACCOUNT_ID",
    "TWS_USERNAME",
    "TWS_PASSWORD",
    "IB_MAX_CONNECTION_ATTEMPTS",
]


def random_walk(n_bars: int, seed: int):
    """Tiny bar generator for replay builds (a random walk, independent of the synthetic HMM)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.001, n_bars)))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    return pl.DataFrame(
        {
            "ts_event": 1_600_000_000_000_000_000 + (np.arange(n_bars) + 1) * 60_000_000_000,
            "open": open_,
            "high": np.maximum(open_, close) + 1.0,
            "low": np.minimum(open_, close) - 1.0,
            "close": close,
            "volume": np.full(n_bars, 10.0),
        },
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def keys(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Dummy keys for every venue; IB pointed at a closed local port."""
    for prefix in ("BINANCE", "BYBIT"):
        clean_env.setenv(f"{prefix}_API_KEY", KEY)
        clean_env.setenv(f"{prefix}_API_SECRET", SECRET)
    clean_env.setenv("IBKR_HOST", "127.0.0.1")
    clean_env.setenv("IBKR_PORT", str(_free_port()))
    clean_env.setenv("IBKR_ACCOUNT_ID", "DU0000000")
    return clean_env


def _replay_settings(**kw) -> VenueSettings:
    replay = ReplaySettings(generator="tests.test_venues:random_walk", n_bars=20, **kw)
    return VenueSettings(kind="replay", replay=replay)


CASES = [
    ("binance_spot", "paper", ["BTCUSDT.BINANCE"], [BT_SPOT], "BINANCE"),
    ("binance_spot", "live", ["BTCUSDT.BINANCE"], [BT_SPOT], "BINANCE"),
    ("binance_futures", "paper", ["BTCUSDT-PERP.BINANCE_FUTURES"], [BT_FUT], "BINANCE_FUTURES"),
    ("binance_futures", "live", ["BTCUSDT-PERP.BINANCE_FUTURES"], [BT_FUT], "BINANCE_FUTURES"),
    ("bybit_linear", "paper", ["BTCUSDT-LINEAR.BYBIT"], [BT_BYBIT], "BYBIT"),
    ("bybit_linear", "live", ["BTCUSDT-LINEAR.BYBIT"], [BT_BYBIT], "BYBIT"),
    ("ib", "paper", ["SPY.ARCA"], [BT_IB], "IB"),
    ("ib", "live", ["SPY.ARCA"], [BT_IB], "IB"),
    ("replay", "paper", ["BTCUSDT.BINANCE"], [BT_SPOT], "REPLAY"),
]


def _build(settings, ids, bars) -> TradingNode:
    config = build_trading_node_config("TESTER-001", settings, ids, bars, log_level="ERROR")
    return build_trading_node(config, settings, loop=asyncio.new_event_loop())


@pytest.mark.parametrize(("kind", "mode", "ids", "bars", "data_name"), CASES)
def test_every_venue_builds_offline(keys, kind, mode, ids, bars, data_name):
    settings = _replay_settings() if kind == "replay" else VenueSettings(kind=kind, mode=mode)
    t0 = time.perf_counter()
    node = _build(settings, ids, bars)
    try:
        assert time.perf_counter() - t0 < 10.0  # IB gives up after one refused attempt
        data_clients = node.kernel.data_engine._clients
        exec_clients = node.kernel.exec_engine._clients
        assert ClientId(data_name) in data_clients
        venue = ids[0].split(".")[-1]
        if mode == "paper":
            # the sandbox is keyed by the instrument's venue and simulates fills there
            sandbox = exec_clients[ClientId(venue)]
            assert isinstance(sandbox, SandboxExecutionClient)
            assert sandbox.venue == Venue(venue)
            balance = sandbox.exchange.get_account().balances_total()
            assert [m.as_double() for m in balance.values()] == [100_000.0]
        else:
            assert len(exec_clients) == 1
            (client,) = exec_clients.values()
            assert not isinstance(client, SandboxExecutionClient)
        if kind == "replay":
            assert isinstance(data_clients[ClientId("REPLAY")], ReplayDataClient)
            # instruments are in the cache before the sandbox connects
            assert node.cache.instrument(InstrumentId.from_str(ids[0])) is not None
        # paper on a real venue adds the actor that feeds prices to the sandbox
        actor_ids = [str(a.id) for a in node.trader.actors()]
        feeds = [a for a in actor_ids if a.startswith("PaperPriceFeed")]
        assert len(feeds) == (1 if mode == "paper" and kind != "replay" else 0)
    finally:
        node.dispose()


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_binance_spot_and_futures_share_one_node(keys, mode):
    settings = [
        VenueSettings(kind="binance_spot", mode=mode),
        VenueSettings(kind="binance_futures", mode=mode),
    ]
    ids = ["BTCUSDT.BINANCE", "BTCUSDT-PERP.BINANCE_FUTURES"]
    node = _build(settings, ids, [BT_SPOT, BT_FUT])
    try:
        data_clients = node.kernel.data_engine._clients
        exec_clients = node.kernel.exec_engine._clients
        assert {str(c) for c in data_clients} == {"BINANCE", "BINANCE_FUTURES"}
        assert {c.venue for c in exec_clients.values()} == {
            Venue("BINANCE"),
            Venue("BINANCE_FUTURES"),
        }
        routing = node.kernel.exec_engine._routing_map
        assert routing[Venue("BINANCE")] is not routing[Venue("BINANCE_FUTURES")]
    finally:
        node.dispose()


def test_futures_venue_collision_is_what_distinct_venues_avoid(keys):
    # Both Binance kinds forced onto one venue: rejected before any node exists.
    settings = [
        VenueSettings(kind="binance_spot", mode="live"),
        VenueSettings(kind="binance_futures", mode="live", venue_name="BINANCE"),
    ]
    with pytest.raises(VenueConfigError, match="same venue"):
        build_trading_node_config("TESTER-001", settings, ["BTCUSDT.BINANCE"], [])


def test_futures_keys_fall_back_to_spot_keys(keys):
    clients = build_venue_clients(
        VenueSettings(kind="binance_futures", mode="live"),
        ["BTCUSDT-PERP.BINANCE_FUTURES"],
    )
    assert clients.exec_clients["BINANCE_FUTURES"].api_key == KEY


def test_futures_keys_take_precedence(keys):
    keys.setenv("BINANCE_FUTURES_API_KEY", "fut-key")
    keys.setenv("BINANCE_FUTURES_API_SECRET", "fut-secret")
    clients = build_venue_clients(
        VenueSettings(kind="binance_futures", mode="live"),
        ["BTCUSDT-PERP.BINANCE_FUTURES"],
    )
    assert clients.exec_clients["BINANCE_FUTURES"].api_key == "fut-key"
    assert clients.exec_clients["BINANCE_FUTURES"].api_secret == "fut-secret"


@pytest.mark.parametrize(
    ("kind", "ids", "env", "missing"),
    [
        ("binance_spot", ["BTCUSDT.BINANCE"], {}, "BINANCE_API_KEY"),
        ("binance_spot", ["BTCUSDT.BINANCE"], {"BINANCE_API_KEY": "k"}, "BINANCE_API_SECRET"),
        ("binance_futures", ["BTCUSDT-PERP.BINANCE_FUTURES"], {}, "BINANCE_FUTURES_API_KEY"),
        (
            "binance_futures",
            ["BTCUSDT-PERP.BINANCE_FUTURES"],
            {"BINANCE_FUTURES_API_KEY": "k"},
            "BINANCE_FUTURES_API_SECRET",
        ),
        ("bybit_linear", ["BTCUSDT-LINEAR.BYBIT"], {}, "BYBIT_API_KEY"),
        ("bybit_linear", ["BTCUSDT-LINEAR.BYBIT"], {"BYBIT_API_KEY": "k"}, "BYBIT_API_SECRET"),
        ("ib", ["SPY.ARCA"], {}, "IBKR_ACCOUNT_ID"),
    ],
)
def test_live_mode_missing_secret_names_the_env_var(clean_env, kind, ids, env, missing):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(VenueConfigError, match=missing):
        build_trading_node_config("TESTER-001", VenueSettings(kind=kind, mode="live"), ids)


def test_paper_mode_needs_no_secrets(clean_env):
    for kind, iid in [
        ("binance_spot", "BTCUSDT.BINANCE"),
        ("binance_futures", "BTCUSDT-PERP.BINANCE_FUTURES"),
        ("bybit_linear", "BTCUSDT-LINEAR.BYBIT"),
        ("ib", "SPY.ARCA"),
    ]:
        clients = build_venue_clients(VenueSettings(kind=kind, mode="paper"), [iid])
        assert clients.exec_clients and clients.data_clients


def test_dockerized_ib_gateway_needs_tws_login(keys):
    settings = VenueSettings(kind="ib", mode="paper", ib=IBSettings(gateway="docker"))
    with pytest.raises(VenueConfigError, match="TWS_USERNAME"):
        build_venue_clients(settings, ["SPY.ARCA"])
    keys.setenv("TWS_USERNAME", "someone")
    keys.setenv("TWS_PASSWORD", "hunter2-SENTINEL")
    clients = build_venue_clients(settings, ["SPY.ARCA"])
    gateway = clients.data_clients["IB"].dockerized_gateway
    assert gateway.trading_mode == "paper" and gateway.read_only_api
    assert "hunter2-SENTINEL" not in repr(clients.data_clients)


def test_ib_port_follows_gateway_and_testnet(clean_env):
    def port(**kw) -> int:
        testnet = kw.pop("testnet", True)
        s = VenueSettings(kind="ib", mode="paper", testnet=testnet, ib=IBSettings(**kw))
        return build_venue_clients(s, ["SPY.ARCA"]).data_clients["IB"].ibg_port

    assert port() == 4002
    assert port(testnet=False) == 4001
    assert port(gateway="tws") == 7497
    assert port(gateway="tws", testnet=False) == 7496
    clean_env.setenv("IBKR_PORT", "4999")
    assert port() == 4999


def test_testnet_and_demo_flags_reach_the_adapters(clean_env):
    from nautilus_trader.adapters.binance.common.enums import BinanceEnvironment
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment

    def env(kind, iid, **kw):
        return build_venue_clients(VenueSettings(kind=kind, **kw), [iid]).data_clients

    spot = "BTCUSDT.BINANCE"
    assert env("binance_spot", spot)["BINANCE"].environment == BinanceEnvironment.TESTNET
    assert (
        env("binance_spot", spot, testnet=False)["BINANCE"].environment == BinanceEnvironment.LIVE
    )
    assert env("binance_spot", spot, demo=True)["BINANCE"].environment == BinanceEnvironment.DEMO
    bybit = "BTCUSDT-LINEAR.BYBIT"
    assert env("bybit_linear", bybit)["BYBIT"].environment == BybitEnvironment.TESTNET
    assert env("bybit_linear", bybit, demo=True)["BYBIT"].environment == BybitEnvironment.DEMO
    assert (
        env("bybit_linear", bybit, testnet=False)["BYBIT"].environment == BybitEnvironment.MAINNET
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"kind": "kraken"}, "kind"),
        ({"kind": "binance_spot", "mod": "paper"}, "mod"),
        ({"mode": "yolo"}, "mode"),
        ({"starting_balances": ["100000USDT"]}, "100000USDT"),
        ({"starting_balances": ["-5 USDT"]}, "positive"),
        ({"starting_balances": ["abc USDT"]}, "not a number"),
        ({"starting_balances": []}, "starting_balances"),
        ({"starting_balances": ["1 USDT", "2 USDT"]}, "twice"),
        ({"kind": "replay", "mode": "live"}, "replay"),
        ({"replay": {"speed": -1}}, "speed"),
        ({"replay": {"source": "csv"}}, "replay.path"),
        ({"replay": {"generator": "not a path"}}, "generator"),
        ({"ib": {"port": 70000}}, "port"),
        ({"kind": "binance_futures", "venue_name": "binance-fut"}, "venue_name"),
        ({"kind": "ib", "demo": True}, "demo"),
    ],
)
def test_bad_settings_give_clear_errors(data, fragment):
    with pytest.raises(VenueConfigError, match=fragment):
        load_venue_settings(data)


def test_direct_construction_is_checked_too():
    with pytest.raises(VenueConfigError, match="kind"):
        VenueSettings(kind="kraken")  # type: ignore[arg-type]
    with pytest.raises(VenueConfigError, match="100000USDT"):
        VenueSettings(starting_balances=["100000USDT"])


@pytest.mark.parametrize(
    ("kind", "ids", "fragment"),
    [
        ("binance_spot", ["BTCUSDT.BYBIT"], "BINANCE"),
        ("binance_futures", ["BTCUSDT-PERP.BINANCE"], "BINANCE_FUTURES"),
        ("bybit_linear", ["BTCUSDT.BYBIT"], "LINEAR"),
        ("binance_spot", ["not-an-id"], "instrument id"),
        ("binance_spot", [], "at least one"),
    ],
)
def test_instruments_must_match_the_venue(clean_env, kind, ids, fragment):
    with pytest.raises(VenueConfigError, match=fragment):
        build_venue_clients(VenueSettings(kind=kind), ids)


def test_bad_bar_type_is_rejected(clean_env):
    with pytest.raises(VenueConfigError, match="bar type"):
        build_venue_clients(VenueSettings(kind="binance_spot"), ["BTCUSDT.BINANCE"], ["1-MINUTE"])


def test_secrets_never_in_reprs(keys):
    settings = [
        VenueSettings(kind="binance_spot", mode="live"),
        VenueSettings(kind="binance_futures", mode="live"),
    ]
    assert KEY not in repr(settings) and SECRET not in repr(settings)
    config = build_trading_node_config(
        "TESTER-001",
        settings,
        ["BTCUSDT.BINANCE", "BTCUSDT-PERP.BINANCE_FUTURES"],
        log_level="DEBUG",
    )
    for text in (repr(config), str(config), repr(config.exec_clients)):
        assert KEY not in text and SECRET not in text
    # the adapters still get the real values
    assert config.exec_clients["BINANCE"].api_key == KEY
    assert config.exec_clients["BINANCE"].api_secret == SECRET
    json_text = config.json().decode()  # NautilusTrader's own JSON dump of the config
    assert KEY not in json_text and SECRET not in json_text

    bybit = VenueSettings(kind="bybit_linear", mode="live")
    config = build_trading_node_config("TESTER-001", bybit, ["BTCUSDT-LINEAR.BYBIT"])
    assert KEY not in repr(config) and SECRET not in repr(config)
    assert config.exec_clients["BYBIT"].api_secret == SECRET


_LOG_SCRIPT = """
import asyncio
from venues import VenueSettings, build_trading_node, build_trading_node_config
settings = [VenueSettings(kind="binance_spot", mode="live"),
            VenueSettings(kind="binance_futures", mode="live")]
config = build_trading_node_config("TESTER-001", settings,
    ["BTCUSDT.BINANCE", "BTCUSDT-PERP.BINANCE_FUTURES"], log_level="DEBUG")
node = build_trading_node(config, settings, loop=asyncio.new_event_loop())
node.dispose()
"""


def test_secrets_never_in_node_logs(keys):
    # Logging is process-global in NautilusTrader (first level wins): use a fresh process.
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-c", _LOG_SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    assert "ExecClient-BINANCE_FUTURES" in output  # the node logged its clients at DEBUG
    assert KEY not in output and SECRET not in output


def test_build_trading_node_rejects_config_without_matching_factory(keys):
    config = build_trading_node_config(
        "TESTER-001",
        VenueSettings(kind="binance_spot"),
        ["BTCUSDT.BINANCE"],
    )
    with pytest.raises(VenueConfigError, match="no factory"):
        build_trading_node(config, VenueSettings(kind="bybit_linear"))


def test_every_venue_kind_has_one_table_entry_for_its_secrets() -> None:
    """A new venue kind is a table entry (its secrets check included), not another elif."""
    import typing

    from venues.builders import VENUE_KINDS
    from venues.secrets import SECRETS_BY_KIND
    from venues.settings import VenueKind

    kinds = set(typing.get_args(VenueKind))
    assert set(SECRETS_BY_KIND) == kinds
    assert set(VENUE_KINDS) == kinds - {"replay"}  # the offline feed is built apart
