"""A real TradingNode runs offline on the replay feed with sandbox execution.

The test strategy buys on the 5th bar and sells on the 10th; the sandbox must fill both at those
bars' close prices, with the bars' own (historical) timestamps.
"""

from __future__ import annotations

import asyncio
import sys
import time
import types
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from nautilus_trader.config import ImportableStrategyConfig, StrategyConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import OrderFilled, PositionClosed, PositionOpened
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

from tests.helpers import live_override, override_file
from venues import (
    REPLAY_DONE_TOPIC,
    NodeStartError,
    ReplayDone,
    VenueConfigError,
    VenueSettings,
    build_trading_node,
    build_trading_node_config,
    replay_clients,
    replay_finished,
    run_node,
)
from venues.replay import ReplayDataClient, frame_to_bars
from venues.settings import ReplaySettings

# Building without running leaves adapter coroutines un-awaited on a closed loop: harmless.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

IID = "BTCUSDT.BINANCE"
BAR_TYPE = "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"
T0 = 1_700_000_000_000_000_000
MINUTE = 60_000_000_000
QTY = 0.5
RESULTS: dict[str, dict] = {}


def random_walk(n_bars: int, seed: int) -> pl.DataFrame:
    """Random-walk OHLCV bars; ts_event is the bar close in UNIX ns."""
    rng = np.random.default_rng(seed)
    close = 50_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n_bars)))
    open_ = np.concatenate([[50_000.0], close[:-1]])
    return pl.DataFrame(
        {
            "ts_event": T0 + (np.arange(n_bars, dtype=np.int64) + 1) * MINUTE,
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.uniform(5.0, 50.0, n_bars),
        },
    )


def unsorted_walk(n_bars: int, seed: int) -> pl.DataFrame:
    frame = random_walk(n_bars, seed)
    return frame.with_columns(pl.col("ts_event").reverse())


def no_volume_walk(n_bars: int, seed: int) -> pl.DataFrame:
    return random_walk(n_bars, seed).drop("volume")


class BuySellConfig(StrategyConfig, frozen=True):
    tag: str
    instrument_id: str = IID
    bar_type: str = BAR_TYPE
    buy_on: int = 5
    sell_on: int = 10
    history_at_start: int = 0  # bars requested in on_start, before the subscription


class BuySellStrategy(Strategy):
    """Buys QTY on the 5th bar and sells it on the 10th, recording everything it sees."""

    def __init__(self, config: BuySellConfig) -> None:
        super().__init__(config)
        self.rec: dict = {
            "bars": [],
            "arrivals": [],
            "fills": [],
            "opened": [],
            "closed": [],
            "done": [],
            "history": [],
            "started_at": None,
        }
        RESULTS[config.tag] = self.rec

    def on_start(self) -> None:
        self.rec["started_at"] = time.monotonic()
        self.msgbus.subscribe(REPLAY_DONE_TOPIC, self.rec["done"].append)
        if self.config.history_at_start:  # a warm start
            start = self.clock.utc_now() - timedelta(days=1)
            bar_type = BarType.from_str(self.config.bar_type)
            self.request_bars(bar_type, start=start, limit=self.config.history_at_start)
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        self.rec["bars"].append((bar.ts_event, bar.ts_init, bar.close.as_double()))
        self.rec["arrivals"].append(time.monotonic())
        n = len(self.rec["bars"])
        if n in (self.config.buy_on, self.config.sell_on):
            iid = InstrumentId.from_str(self.config.instrument_id)
            side = OrderSide.BUY if n == self.config.buy_on else OrderSide.SELL
            qty = self.cache.instrument(iid).make_qty(QTY)
            self.submit_order(self.order_factory.market(iid, side, qty))
        if n == self.config.sell_on:  # history so far: the replay never serves future bars
            start = self.clock.utc_now() - timedelta(days=1)
            self.request_bars(BarType.from_str(self.config.bar_type), start=start, limit=3)

    def on_historical_data(self, data) -> None:
        if isinstance(data, Bar):
            self.rec["history"].append(data.ts_event)

    def on_order_filled(self, event: OrderFilled) -> None:
        self.rec["fills"].append(
            {
                "bars_seen": len(self.rec["bars"]),
                "side": event.order_side,
                "px": event.last_px.as_double(),
                "qty": event.last_qty.as_double(),
                "ts": event.ts_event,
                "commission": event.commission.as_double(),
            },
        )

    def on_position_opened(self, event: PositionOpened) -> None:
        self.rec["opened"].append(event.avg_px_open)

    def on_position_closed(self, event: PositionClosed) -> None:
        self.rec["closed"].append(
            {
                "open": event.avg_px_open,
                "close": event.avg_px_close,
                "pnl": event.realized_pnl.as_double(),
            },
        )

    def on_stop(self) -> None:
        pass


def _strategy(tag: str, **config) -> ImportableStrategyConfig:
    return ImportableStrategyConfig(
        strategy_path="tests.test_replay:BuySellStrategy",
        config_path="tests.test_replay:BuySellConfig",
        config={"tag": tag, **config},
    )


def _settings(**replay) -> VenueSettings:
    replay.setdefault("generator", "tests.test_replay:random_walk")
    return VenueSettings(kind="replay", mode="paper", replay=ReplaySettings(**replay))


def _node(settings: VenueSettings, tag: str, bar_types=(BAR_TYPE,), **kw):
    config = build_trading_node_config(
        "TESTER-001",
        settings,
        [IID],
        list(bar_types),
        strategies=[_strategy(tag, **kw.pop("strategy", {}))],
        log_level="ERROR",
        timeout_connection=kw.pop("timeout_connection", 5.0),
        timeout_disconnection=2.0,
        timeout_post_stop=0.2,
    )
    return build_trading_node(config, settings, loop=asyncio.new_event_loop())


def _run_until_done(node, linger_secs: float = 0.2, max_secs: float = 20.0) -> None:
    """Run until the feed finished, then a little longer (nothing more may arrive)."""
    finished_at: list[float] = []

    def stop_when() -> bool:
        if not replay_finished(node):
            return False
        if not finished_at:
            finished_at.append(time.monotonic())
        return time.monotonic() - finished_at[0] >= linger_secs

    run_node(node, stop_when=stop_when, max_runtime_secs=max_secs)


def test_replayed_node_fills_at_bar_closes():
    n_bars, seed = 50, 3
    frame = random_walk(n_bars, seed)
    node = _node(_settings(n_bars=n_bars, seed=seed), "main")
    t0 = time.perf_counter()
    _run_until_done(node)
    elapsed = time.perf_counter() - t0
    rec = RESULTS["main"]

    # bars arrive once each, in order, with their original timestamps and rounded closes
    assert [b[0] for b in rec["bars"]] == frame["ts_event"].to_list()
    assert all(ts_init == ts_event for ts_event, ts_init, _ in rec["bars"])
    assert [b[2] for b in rec["bars"]] == pytest.approx(frame["close"].round(2).to_list())

    # the sandbox filled the buy at bar 5's close and the sell at bar 10's close, at bar time
    bar5, bar10 = rec["bars"][4], rec["bars"][9]
    buy, sell = rec["fills"]
    assert (buy["side"], buy["bars_seen"], buy["px"], buy["ts"]) == (
        OrderSide.BUY,
        5,
        bar5[2],
        bar5[0],
    )
    assert (sell["side"], sell["bars_seen"], sell["px"], sell["ts"]) == (
        OrderSide.SELL,
        10,
        bar10[2],
        bar10[0],
    )
    assert buy["qty"] == sell["qty"] == QTY

    # one position opened and closed; its P&L is the close-to-close move less commissions
    assert rec["opened"] == [pytest.approx(bar5[2])]
    (closed,) = rec["closed"]
    assert (closed["open"], closed["close"]) == (pytest.approx(bar5[2]), pytest.approx(bar10[2]))
    expected = (bar10[2] - bar5[2]) * QTY - buy["commission"] - sell["commission"]
    assert closed["pnl"] == pytest.approx(expected, abs=0.02)

    # a history request at bar 10 returned the last 3 bars seen, nothing from the future
    assert rec["history"] == [b[0] for b in rec["bars"][7:10]]

    # the feed announced its end once and published nothing after it
    (done,) = rec["done"]
    assert isinstance(done, ReplayDone)
    assert (done.n_bars, done.ts_first, done.ts_last) == (
        n_bars,
        rec["bars"][0][0],
        rec["bars"][-1][0],
    )

    # the node stopped cleanly and quickly
    assert not node.is_running()
    assert elapsed < 20.0


def test_speed_paces_bars_on_the_wall_clock():
    n_bars, speed, delay = 12, 40.0, 0.3
    node = _node(_settings(n_bars=n_bars, speed=speed, start_delay_secs=delay), "paced")
    _run_until_done(node, linger_secs=0.0)
    rec = RESULTS["paced"]
    arrivals = rec["arrivals"]
    assert len(arrivals) == n_bars
    assert arrivals[0] - rec["started_at"] >= delay - 0.02
    span = arrivals[-1] - arrivals[0]
    assert (n_bars - 1) / speed - 0.02 <= span < 3.0
    # bars still carry their historical timestamps, one minute apart
    ts = [b[0] for b in rec["bars"]]
    assert np.all(np.diff(ts) == MINUTE)


def test_node_that_never_connects_raises_instead_of_hanging(monkeypatch):
    async def never_connects(self) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(ReplayDataClient, "_connect", never_connects)
    node = _node(_settings(n_bars=20), "stuck", timeout_connection=0.5)
    t0 = time.perf_counter()
    with pytest.raises(NodeStartError, match="REPLAY"):
        run_node(node, max_runtime_secs=5.0, start_timeout=2.0)
    assert time.perf_counter() - t0 < 10.0
    assert "stuck" not in RESULTS or not RESULTS["stuck"]["bars"]


def test_two_bar_types_are_merged_in_time_order():
    eth = "ETHUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"
    node = _node(_settings(n_bars=15), "merged-build", bar_types=(BAR_TYPE, eth))
    try:
        (client,) = replay_clients(node)
        ts = [b.ts_event for b in client._bars]
        assert len(ts) == 30 and ts == sorted(ts)
        assert {str(b.bar_type) for b in client._bars} == {BAR_TYPE, eth}
        # both instruments are in the cache for the sandbox
        assert node.cache.instrument(InstrumentId.from_str("ETHUSDT.BINANCE")) is not None
    finally:
        node.dispose()


def test_several_instruments_through_the_node_config(monkeypatch, tmp_path):
    """``python -m hmm_strategy.live --override ...`` with one strategy per instrument (the
    shipped strategy left out with ``TRADE_SYMBOLS``, every shipped actor kept): one replay feed
    publishes each instrument's own series, interleaved in time order, and each strategy trades
    its instrument at its own bars' closes."""
    from hmm_strategy.live import main

    symbols = ["ETHUSDT.BINANCE", "ADAUSDT.BINANCE", "BTCUSDT-PERP.BINANCE"]
    n_bars = 20
    override = live_override(
        tmp_path,
        replay_bars=n_bars,
        replay={"generator": "tests.test_replay:random_walk", "history_bars": 0},
        strategies=[
            {"name": f"buy_sell_{i}", "path": "tests.test_replay:BuySellStrategy",
             "config_path": "tests.test_replay:BuySellConfig",
             "config": {"tag": f"multi-{i}", "instrument_id": iid, "order_id_tag": f"00{i}",
                        "bar_type": f"{iid}-1-MINUTE-LAST-EXTERNAL", "buy_on": 5 + i,
                        "sell_on": 10 + i}}
            for i, iid in enumerate(symbols)
        ],
    )  # fmt: skip
    path = override_file(tmp_path, override, "multi.yaml")
    monkeypatch.setenv("TRADE_SYMBOLS", ",".join(symbols))
    code = main([
        "--override", str(path), "--run-dir", str(tmp_path / "run"), "--metrics-port", "0",
        "--exit-when-replayed", "--log-level", "ERROR",
    ])  # fmt: skip
    assert code == 0
    recs = [RESULTS[f"multi-{i}"] for i in range(len(symbols))]
    times = random_walk(n_bars, 7)["ts_event"].to_list()
    arrivals = []
    for i, rec in enumerate(recs):
        # its own series (seed 7 + i: the i-th bar type in sorted order), every bar once
        bar_types = sorted(f"{iid}-1-MINUTE-LAST-EXTERNAL" for iid in symbols)
        seed = 7 + bar_types.index(f"{symbols[i]}-1-MINUTE-LAST-EXTERNAL")
        assert [b[0] for b in rec["bars"]] == times
        closes = random_walk(n_bars, seed)["close"].to_list()
        assert [b[2] for b in rec["bars"]] == pytest.approx(closes, rel=1e-4)
        arrivals += [(t, ts) for t, (ts, _, _) in zip(rec["arrivals"], rec["bars"], strict=True)]
        # bought at bar 5+i's close, sold at bar 10+i's, at those bars' times
        buy, sell = rec["fills"]
        assert (buy["side"], buy["bars_seen"]) == (OrderSide.BUY, 5 + i)
        assert (sell["side"], sell["bars_seen"]) == (OrderSide.SELL, 10 + i)
        for fill in (buy, sell):
            bar = rec["bars"][fill["bars_seen"] - 1]
            assert (fill["px"], fill["ts"]) == (pytest.approx(bar[2]), bar[0])
        assert len(rec["done"]) == 1 and rec["done"][0].n_bars == n_bars * len(symbols)
    # one feed, bars interleaved: every bar of a close arrives before any bar of the next
    arrivals.sort()
    assert [ts for _, ts in arrivals] == sorted(ts for _, ts in arrivals)
    assert len({rec["bars"][0][2] for rec in recs}) == len(symbols)  # three different series


def test_csv_source_goes_through_backtests_loader(monkeypatch, tmp_path):
    calls = []

    def load_bars(path, fmt=None):
        calls.append((path, fmt))
        return types.SimpleNamespace(frame=random_walk(25, 1))

    stub = types.ModuleType("marketdata.bars")
    stub.load_bars = load_bars
    monkeypatch.setitem(sys.modules, "marketdata.bars", stub)
    csv = tmp_path / "bars.csv"
    csv.write_text("stub\n")
    node = _node(_settings(source="csv", path=str(csv), format="binance_klines"), "csv-build")
    try:
        (client,) = replay_clients(node)
        assert client.n_bars == 25
        assert calls == [(csv, "binance_klines")]
    finally:
        node.dispose()


def test_real_binance_csv_through_backtests_loader(data_dir):
    path = data_dir / "binance" / "ADABTC-1m-2021-11-27.csv"
    raw = np.loadtxt(path, delimiter=",", usecols=(4, 6))  # close, close_time_ms
    settings = _settings(source="csv", path=str(path))
    ada = "ADABTC.BINANCE-1-MINUTE-LAST-EXTERNAL"
    config = build_trading_node_config(
        "TESTER-001", settings, ["ADABTC.BINANCE"], [ada], log_level="ERROR"
    )
    node = build_trading_node(config, settings, loop=asyncio.new_event_loop())
    try:
        (client,) = replay_clients(node)
        bars = client._bars
        assert len(bars) == len(raw) == 10
        assert [b.ts_event for b in bars] == [int(t + 1) * 1_000_000 for t in raw[:, 1]]
        assert [b.close.as_double() for b in bars] == pytest.approx(raw[:, 0].tolist())
    finally:
        node.dispose()


def test_default_generator_is_the_regime_generator():
    pytest.importorskip("hmm_strategy.synthetic")
    settings = VenueSettings(kind="replay", replay=ReplaySettings(n_bars=200))
    quarter = "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"
    config = build_trading_node_config("TESTER-001", settings, [IID], [quarter], log_level="ERROR")
    node = build_trading_node(config, settings, loop=asyncio.new_event_loop())
    try:
        (client,) = replay_clients(node)
        assert client.n_bars == 200
    finally:
        node.dispose()
    # the same 15-minute bars cannot be replayed as 1-minute bars
    config = build_trading_node_config("TESTER-001", settings, [IID], [BAR_TYPE], log_level="ERROR")
    with pytest.raises(VenueConfigError, match="900 s"):
        build_trading_node(config, settings, loop=asyncio.new_event_loop())


def test_catalog_source(tmp_path):
    from nautilus_trader.persistence.catalog import ParquetDataCatalog
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    instrument = TestInstrumentProvider.btcusdt_binance()
    bars = frame_to_bars(random_walk(30, 5), BarType.from_str(BAR_TYPE), instrument)
    catalog = ParquetDataCatalog(str(tmp_path))
    catalog.write_data([instrument])
    catalog.write_data(bars)
    node = _node(_settings(source="catalog", path=str(tmp_path), max_bars=20), "catalog-build")
    try:
        (client,) = replay_clients(node)
        assert client.n_bars == 20
        assert [b.ts_event for b in client._bars] == [b.ts_event for b in bars[:20]]
    finally:
        node.dispose()


def test_catalog_history_precedes_the_live_feed(tmp_path):
    """history_bars: the catalog's first bars answer request_bars at start and are never
    published live; later requests see history and replayed bars, never future ones."""
    from nautilus_trader.persistence.catalog import ParquetDataCatalog
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    instrument = TestInstrumentProvider.btcusdt_binance()
    bars = frame_to_bars(random_walk(30, 5), BarType.from_str(BAR_TYPE), instrument)
    catalog = ParquetDataCatalog(str(tmp_path))
    catalog.write_data([instrument])
    catalog.write_data(bars)
    settings = _settings(source="catalog", path=str(tmp_path), history_bars=12)
    node = _node(settings, "catalog-history", strategy={"history_at_start": 4})
    (client,) = replay_clients(node)
    assert (client.n_history, client.n_bars) == (12, 18)
    _run_until_done(node)
    rec = RESULTS["catalog-history"]
    ts = [b.ts_event for b in bars]
    assert [b[0] for b in rec["bars"]] == ts[12:]  # the live feed starts after the history
    # at start: the newest 4 history bars; at the 10th live bar: the 3 bars before it
    assert rec["history"] == ts[8:12] + ts[19:22]
    assert rec["fills"][0]["px"] == rec["bars"][4][2]  # trading starts on live bars


@pytest.mark.parametrize(
    ("replay", "fragment"),
    [
        ({"generator": "tests.test_replay:unsorted_walk"}, "strictly increasing"),
        ({"generator": "tests.test_replay:no_volume_walk"}, "volume"),
        ({"generator": "tests.no_such_module:walk"}, "cannot import"),
        ({"source": "csv", "path": "/nonexistent/bars.csv"}, "not found"),
        ({"source": "catalog", "path": "/nonexistent/catalog"}, "not found"),
    ],
)
def test_bad_replay_data_fails_at_build(replay, fragment):
    settings = _settings(n_bars=10, **replay)
    config = build_trading_node_config("TESTER-001", settings, [IID], [BAR_TYPE], log_level="ERROR")
    with pytest.raises(VenueConfigError, match=fragment):
        build_trading_node(config, settings, loop=asyncio.new_event_loop())


def test_internal_bar_types_are_rejected():
    settings = _settings(n_bars=10)
    internal = "BTCUSDT.BINANCE-1-MINUTE-LAST-INTERNAL"
    config = build_trading_node_config("TESTER-001", settings, [IID], [internal], log_level="ERROR")
    with pytest.raises(VenueConfigError, match="EXTERNAL"):
        build_trading_node(config, settings, loop=asyncio.new_event_loop())
