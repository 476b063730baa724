"""MetricsExporter inside a real NautilusTrader BacktestEngine: values, HTTP, secrets, multiprocess.

The engine runs NautilusTrader's example ``EMACross`` (it trades, and with a latency model some
of its reduce-only closes get rejected) beside ``ProbeStrategy``, which publishes the project's
bus messages (``RegimeUpdate``, ``Budget``, ``GovernanceCommand``, ``BreakerRejection``) and
submits one order the venue rejects and one the risk engine denies. Every expected value is
computed independently from the engine's cache/portfolio or from what the probe published.
"""

from __future__ import annotations

import math
import socket
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import LatencyModel
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, LoggingConfig, StrategyConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.events import OrderAccepted, OrderFilled, OrderRejected, OrderSubmitted
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics import (
    REJECT_REASONS,
    MetricsExporter,
    MetricsExporterConfig,
    rejection_reason,
)
from hmm_strategy.messages import (
    BREAKER_TOPIC,
    BUDGET_TOPIC,
    GOVERNANCE_TOPIC,
    REGIME_TOPIC,
    BreakerRejection,
    Budget,
    GovernanceCommand,
    RegimeUpdate,
    topic_for,
)
from tests.helpers import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
VENUE = "BINANCE"
START_NS = 1_733_011_200_000_000_000  # 2024-12-01T00:00:00Z
MINUTE_NS = 60_000_000_000
V1 = "20241101T000000Z-aaaa1111"  # artifact-style version: creation time in the name
V2 = "inrun-20241201T035900Z-240"  # in-run fit: its last bar's time inside (bar 238)
V2_FITTED = 1_733_025_540  # 2024-12-01T03:59:00Z, from V2
SWITCH_BAR = 240  # the probe switches model version here
GOVERNANCE_PLAN = {
    60: ("throttle", 0.5),
    130: ("pause", 1.0),
    200: ("resume", 1.0),
    290: ("pause", 1.0),
}
BREAKER_PLAN = {45: "daily_loss", 95: "drawdown", 96: "drawdown", 150: "not_a_known_reason"}


# -- backtest plumbing (also used by test_observability) ------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def make_bars(bar_type: BarType, n: int, first: int = 0, seed: int = 7) -> list[Bar]:
    """``n`` one-minute bars (index ``first``..): a noisy oscillation, so EMA crosses happen."""
    rng = np.random.default_rng(seed)
    idx = np.arange(first + n)
    log_px = np.cumsum(rng.normal(0.0, 0.002, first + n)) + 0.03 * np.sin(idx / 15)
    closes = 40_000.0 * np.exp(log_px)
    inst = TestInstrumentProvider.btcusdt_binance()
    bars = []
    for i in range(first, first + n):
        o = closes[i - 1] if i else closes[0]
        c = closes[i]
        ts = START_NS + (i + 1) * MINUTE_NS
        bars.append(
            Bar(
                bar_type,
                inst.make_price(o),
                inst.make_price(max(o, c) * 1.0005),
                inst.make_price(min(o, c) * 0.9995),
                inst.make_price(c),
                Quantity.from_str("10.000000"),
                ts,
                ts,
            )
        )
    return bars


def probs_for(i: int) -> tuple[float, ...]:
    z = np.array([math.sin(i / 7), math.cos(i / 11), 0.3])
    e = np.exp(z - z.max())
    return tuple(float(x) for x in e / e.sum())


class ProbeStrategyConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType
    probe_url: str | None = None  # GET <url>/readyz and /health from on_start


class ProbeStrategy(Strategy):
    """Publishes the project's bus messages each bar, plus one rejected and one denied order."""

    def __init__(self, config: ProbeStrategyConfig) -> None:
        super().__init__(config)
        self.n_bars = 0
        self.regime: dict[str, RegimeUpdate] = {}
        self.first_seen_v2_ns: int | None = None
        self.budgets: list[Budget] = []
        self.commands: list[GovernanceCommand] = []
        self.breakers: list[BreakerRejection] = []
        self.probe_at_start: dict[str, tuple[int, bytes]] = {}

    def on_start(self) -> None:
        if self.config.probe_url:
            for path in ("/readyz", "/health", "/metrics"):
                self.probe_at_start[path] = http_get(self.config.probe_url + path)
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar: Bar) -> None:
        i = self.n_bars
        self.n_bars += 1
        sid = str(self.id)
        version = V1 if i < SWITCH_BAR else V2
        if version == V2 and self.first_seen_v2_ns is None:
            self.first_seen_v2_ns = bar.ts_event
        probs = probs_for(i)
        update = RegimeUpdate(
            ts_event=bar.ts_event,
            strategy_id=sid,
            instrument_id=str(bar.bar_type.instrument_id),
            close=bar.close.as_double(),
            probs=probs,
            state=int(np.argmax(probs)),
            target_exposure=probs[0] - probs[1],
            model_version=version,
            log_likelihood=-1.0,
        )
        self.regime[sid] = update
        self.msgbus.publish(topic_for(REGIME_TOPIC, sid), update)
        if i % 50 == 0:
            budget = Budget(ts_event=bar.ts_event, strategy_id=sid, notional=1_000.0 + i)
            self.budgets.append(budget)
            self.msgbus.publish(topic_for(BUDGET_TOPIC, sid), budget)
        if i in GOVERNANCE_PLAN:
            action, scale = GOVERNANCE_PLAN[i]
            cmd = GovernanceCommand(bar.ts_event, sid, action, scale=scale, reason="test")
            self.commands.append(cmd)
            self.msgbus.publish(topic_for(GOVERNANCE_TOPIC, sid), cmd)
        if i in BREAKER_PLAN:
            rej = BreakerRejection(
                bar.ts_event, sid, str(bar.bar_type.instrument_id), BREAKER_PLAN[i]
            )
            self.breakers.append(rej)
            self.msgbus.publish(topic_for(BREAKER_TOPIC, sid), rej)
        inst = self.cache.instrument(self.config.instrument_id)
        if i == 20:  # marketable post-only limit: the venue rejects it
            self.submit_order(
                self.order_factory.limit(
                    instrument_id=inst.id,
                    order_side=OrderSide.BUY,
                    quantity=inst.make_qty(0.001),
                    price=inst.make_price(bar.close.as_double() * 1.02),
                    time_in_force=TimeInForce.GTC,
                    post_only=True,
                )
            )
        if i == 30:  # above the instrument's max quantity: the risk engine denies it
            self.submit_order(
                self.order_factory.market(
                    instrument_id=inst.id,
                    order_side=OrderSide.BUY,
                    quantity=inst.make_qty(float(inst.max_quantity) * 2),
                )
            )


def build_engine(
    exporter_config: MetricsExporterConfig,
    bars: list[Bar] | None = None,
    probe_url: str | None = None,
) -> tuple[BacktestEngine, MetricsExporter, ProbeStrategy, BarType]:
    """A real BacktestEngine: BINANCE margin venue, BTCUSDT, EMACross, the probe, the exporter."""
    inst = TestInstrumentProvider.btcusdt_binance()
    bar_type = BarType.from_str(f"{inst.id}-1-MINUTE-LAST-EXTERNAL")
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(
        Venue(VENUE),
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=None,
        starting_balances=[Money(1_000_000, USDT)],
        latency_model=LatencyModel(base_latency_nanos=0, insert_latency_nanos=25_000_000),
    )
    engine.add_instrument(inst)
    exporter = MetricsExporter(exporter_config)
    engine.add_actor(exporter)  # first: it is running before the probe starts
    engine.add_strategy(
        EMACross(
            EMACrossConfig(
                instrument_id=inst.id,
                bar_type=bar_type,
                trade_size=Decimal("0.01"),
                request_bars=False,
                subscribe_trade_ticks=False,
            )
        )
    )
    probe = ProbeStrategy(
        ProbeStrategyConfig(instrument_id=inst.id, bar_type=bar_type, probe_url=probe_url)
    )
    engine.add_strategy(probe)
    engine.add_data(bars if bars is not None else make_bars(bar_type, 400))
    return engine, exporter, probe, bar_type


def parse(text: bytes | str) -> dict[tuple[str, frozenset], float]:
    """Exposition text -> {(sample name, labels): value}."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, (
        f"missing {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    )
    return samples[key]


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


# -- tests ----------------------------------------------------------------------------------------


def test_exporter_values_match_the_engine():
    engine, exporter, probe, bar_type = build_engine(
        MetricsExporterConfig(port=0, refresh_interval_secs=60.0)
    )
    try:
        engine.run(streaming=True)
        exporter.refresh()  # the timer refreshed at the last whole minute; same data, same values
        s = parse(exporter.render())
        cache, portfolio = engine.cache, engine.portfolio
        inst_id = str(bar_type.instrument_id)

        # order flow, per strategy, against the orders' own event histories
        sid = str(probe.id)
        for strategy in ("EMACross-000", sid):
            orders = [o for o in cache.orders() if o.strategy_id.value == strategy]
            kinds = [type(e).__name__ for o in orders for e in o.events]
            lab = {"venue": VENUE, "strategy": strategy}
            assert value(s, "orders_submitted_total", **lab) == kinds.count("OrderSubmitted")
            # rejections by reason class, from each OrderRejected's own reason text
            rejected = [e.reason for o in orders for e in o.events if isinstance(e, OrderRejected)]
            for reason in REJECT_REASONS:
                want = sum(rejection_reason(r) == reason for r in rejected)
                assert value(s, "orders_rejected_total", reason=reason, **lab) == want
            assert value(s, "orders_denied_total", **lab) == kinds.count("OrderDenied")
            assert value(s, "order_fills_total", **lab) == kinds.count("OrderFilled")
        # the probe's post-only limit is rejected as a taker; EMACross's reduce-only closes too
        assert value(s, "orders_rejected_total", venue=VENUE, strategy=sid, reason="post_only") == 1
        lab = {"venue": VENUE, "strategy": "EMACross-000", "reason": "reduce_only"}
        assert value(s, "orders_rejected_total", **lab) > 0
        assert value(s, "orders_denied_total", venue=VENUE, strategy=sid) == 1
        submitted = sum(
            1 for o in cache.orders() for e in o.events if isinstance(e, OrderSubmitted)
        )
        assert total(s, "orders_submitted_total") == submitted > 10
        assert total(s, "orders_rejected_total") >= 2  # the probe's + EMACross's reduce-only ones

        # submit -> ack latency: first OrderAccepted/OrderFilled after OrderSubmitted, per order
        lat = []
        for o in cache.orders(strategy_id=None):
            ts_sub = next((e.ts_event for e in o.events if isinstance(e, OrderSubmitted)), None)
            ack = next(
                (e.ts_event for e in o.events if isinstance(e, OrderAccepted | OrderFilled)), None
            )
            if ts_sub is not None and ack is not None and o.strategy_id.value == "EMACross-000":
                lat.append((ack - ts_sub) / 1e6)
        lab = {"venue": VENUE, "strategy": "EMACross-000"}
        assert value(s, "submit_to_ack_ms_count", **lab) == len(lat) > 0
        assert value(s, "submit_to_ack_ms_sum", **lab) == pytest.approx(sum(lat))
        assert value(s, "submit_to_ack_ms_bucket", le="60000.0", **lab) == sum(
            x <= 60000 for x in lat
        )

        # PnL, exposure, equity against the portfolio
        inst_id_obj = bar_type.instrument_id
        lab = {"venue": VENUE, "strategy": "EMACross-000", "instrument": inst_id}
        assert value(s, "pnl_realized_total", **lab) == pytest.approx(
            portfolio.realized_pnl(inst_id_obj).as_double(), abs=1e-6
        )
        assert value(s, "pnl_unrealized_total", **lab) == pytest.approx(
            portfolio.unrealized_pnl(inst_id_obj).as_double(), abs=1e-6
        )
        close = cache.bar(bar_type).close.as_double()
        net = float(portfolio.net_position(inst_id_obj))
        assert value(s, "exposure_usd", **lab) == pytest.approx(net * close, rel=1e-9)
        assert value(s, "portfolio_equity_usd", venue=VENUE) == pytest.approx(
            portfolio.equity(Venue(VENUE))[USDT].as_double(), abs=1e-6
        )
        last_ts = cache.bar(bar_type).ts_event / 1e9
        assert value(s, "ops_portfolio_last_refresh_epoch", venue=VENUE) == last_ts
        assert value(s, "ops_exposure_last_refresh_epoch", venue=VENUE) == last_ts

        # regime / model gauges equal the last message the probe published
        last = probe.regime[sid]
        assert probe.n_bars == 400
        for k, p in enumerate(last.probs):
            assert (
                value(s, "regime_probability", strategy=sid, instrument=inst_id, hmm_state=str(k))
                == p
            )
        assert value(s, "regime_state", strategy=sid, instrument=inst_id) == last.state
        # freshness: the node clock when the last bar / regime update arrived (the last bar's
        # time in a backtest), and the bar interval of each strategy's bar type
        for strategy in ("EMACross-000", sid):
            lab = {"strategy": strategy, "instrument": inst_id}
            assert value(s, "market_data_last_bar_epoch", **lab) == last_ts
            assert value(s, "strategy_bar_interval_seconds", **lab) == 60
        assert value(s, "regime_last_update_epoch", strategy=sid, instrument=inst_id) == (
            last.ts_event / 1e9
        )
        assert value(s, "target_exposure", strategy=sid, instrument=inst_id) == last.target_exposure
        assert value(s, "model_info", strategy=sid, instrument=inst_id, model_version=V2) == 1
        assert (
            "model_info",
            frozenset({"strategy": sid, "instrument": inst_id, "model_version": V1}.items()),
        ) not in s
        assert value(s, "model_age_seconds", strategy=sid, instrument=inst_id) == pytest.approx(
            last.ts_event / 1e9 - V2_FITTED
        )  # from the bar time in the version, not from when the exporter first saw it
        assert probe.first_seen_v2_ns / 1e9 > V2_FITTED

        # governance and budget
        last_state = {"pause": "paused", "throttle": "throttled", "resume": "active"}[
            probe.commands[-1].action
        ]
        for state in ("active", "throttled", "paused"):
            expected = 1.0 if state == last_state else 0.0
            assert value(s, "strategy_governance_state", strategy=sid, state=state) == expected
        assert value(s, "strategy_allocation_notional", strategy=sid) == probe.budgets[-1].notional
        assert value(s, "breaker_rejections_total", strategy=sid, reason="drawdown") == 2
        assert value(s, "breaker_rejections_total", strategy=sid, reason="daily_loss") == 1
        assert value(s, "breaker_rejections_total", strategy=sid, reason="other") == 1
        assert value(s, "breaker_rejections_total", strategy=sid, reason="stale_data") == 0

        # bounded labels: no order ids, no account ids, no pid label
        text = exporter.render().decode()
        assert "O-2024" not in text and "BINANCE-001" not in text and "client_order" not in text
    finally:
        engine.end()
        engine.dispose()


class HistoryAtBar(Actor):
    """At its ``at``-th bar, feeds the data engine the answer to a history request: the first
    100 bars again, older than the live ones (cached, but not published on the live topic)."""

    def __init__(self, bar_type: BarType, at: int | None) -> None:
        super().__init__(ActorConfig(component_id="HistoryAtBar"))
        self.bar_type, self.at, self.seen = bar_type, at, 0

    def on_start(self) -> None:
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.seen += 1
        if self.seen == self.at:
            for old in make_bars(self.bar_type, 100):
                self._data_engine.process_historical(old)


@pytest.mark.parametrize("history_at", [None, 250, 400])
def test_staleness_gauge_read_from_the_cache_equals_a_write_per_bar(history_at):
    """An unserved backtest fills ``market_data_last_bar_epoch`` from the cache when read; a
    served one writes it at every bar. Same values, also when history bars (older, cached, never
    published on the live topic) arrive mid-run or with the last bar (``cache.bar()``, the bar
    added last, then took the gauge back in time)."""
    values = []
    for config in (
        MetricsExporterConfig(serve="always", port=free_port()),  # per bar
        MetricsExporterConfig(serve="never", port=0),  # from the cache when read
    ):
        engine, exporter, _probe, bar_type = build_engine(config)
        feeder = HistoryAtBar(bar_type, history_at)
        engine.add_actor(feeder)
        feeder._data_engine = engine.kernel.data_engine
        try:
            engine.run(streaming=True)
            mid = parse(exporter.render())
            engine.end()
            end = parse(exporter.render())
        finally:
            engine.dispose()
        gauge = "market_data_last_bar_epoch"
        values.append([{k: v for k, v in s.items() if k[0] == gauge} for s in (mid, end)])
    served, unserved = values
    assert served == unserved
    last = max(b.ts_init for b in make_bars(bar_type, 400)) / 1e9
    assert set(served[1].values()) == {last}


@pytest.mark.parametrize(
    ("version", "iso"),
    [
        ("20241101T000000Z-aaaa1111", "2024-11-01T00:00:00"),  # an artifact's creation time
        ("hmm_btc-20240430T0000-3cdd82be3c", "2024-04-30T00:00:00"),  # trained: its last bar
        ("HMMRegimeStrategy-001-20240301T1145-0a1b2c3d4e", "2024-03-01T11:45:00"),  # candidate
        ("inrun-20240301T121500Z-5809", "2024-03-01T12:15:00"),  # in-run fit: its last bar
        ("inrun-5809", None),  # no bar time given: counted from first sight
        ("bench", None),
        ("x-20241301T0000-y", None),  # month 13: the shape of a time, not one
        ("v20240101T0000", None),  # not a field of its own
    ],
)
def test_model_age_counts_from_the_time_a_version_names(version: str, iso: str | None) -> None:
    from datetime import UTC, datetime

    from actors.metrics import version_time

    expected = None if iso is None else datetime.fromisoformat(iso).replace(tzinfo=UTC)
    assert version_time(version) == (None if expected is None else expected.timestamp())


def test_model_age_uses_the_timestamp_in_an_artifact_version():
    engine, exporter, probe, bar_type = build_engine(
        MetricsExporterConfig(port=0),
        bars=make_bars(BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"), 100),
    )
    try:
        engine.run(streaming=True)
        s = parse(exporter.render())
        last = probe.regime[str(probe.id)]
        created = 1_730_419_200  # 2024-11-01T00:00:00Z, from V1
        age = value(
            s, "model_age_seconds", strategy=str(probe.id), instrument=str(bar_type.instrument_id)
        )
        assert age == pytest.approx(last.ts_event / 1e9 - created)
    finally:
        engine.end()
        engine.dispose()


def test_http_endpoints_readiness_and_port_release():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stale_after = 1.5
    engine, exporter, probe, _ = build_engine(
        MetricsExporterConfig(
            serve="always", port=port, stale_after_secs=stale_after, refresh_interval_secs=60.0
        ),
        probe_url=base,
    )
    try:
        engine.run(streaming=True)
        t_done = time.monotonic()
        # while running but before any RegimeUpdate, the probe (started after the exporter) saw:
        assert probe.probe_at_start["/readyz"][0] == 503
        assert b"no data" in probe.probe_at_start["/readyz"][1]
        assert probe.probe_at_start["/health"][0] == 200

        status, body = http_get(base + "/readyz")
        assert status == 200, body
        status, body = http_get(base + "/metrics")
        assert status == 200
        assert parse(body) == parse(exporter.render())
        assert (
            value(parse(body), "orders_submitted_total", venue=VENUE, strategy="EMACross-000") > 0
        )
        assert http_get(base + "/nope")[0] == 404

        time.sleep(max(0.0, stale_after + 0.3 - (time.monotonic() - t_done)))
        status, body = http_get(base + "/readyz")
        assert status == 503 and b"stale" in body
        assert http_get(base + "/health")[0] == 200  # alive, just not ready
    finally:
        engine.end()  # stops the exporter: the server shuts down and the port is released
        engine.dispose()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/health", timeout=2)
    with socket.socket() as s:  # a restarted node can bind it (TIME_WAIT needs SO_REUSEADDR)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_metrics_never_contain_secrets(monkeypatch):
    sentinels = {
        "BINANCE_API_KEY": "SENTINELKEY987",
        "BINANCE_API_SECRET": "SENTINEL123",
        "BYBIT_API_SECRET": "SENTINELBYBIT55",
    }
    for k, v in sentinels.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    engine, exporter, _, _ = build_engine(
        MetricsExporterConfig(serve="always", port=port), probe_url=base
    )
    try:
        engine.run(streaming=True)
        bodies = [http_get(base + p)[1] for p in ("/metrics", "/health", "/readyz")]
        bodies.append(exporter.render())
        assert b"orders_submitted_total" in bodies[0]
        for body in bodies:
            for secret in sentinels.values():
                assert secret.encode() not in body
            assert b"SENTINEL" not in body
    finally:
        engine.end()
        engine.dispose()


def test_bad_config_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="port"):
        MetricsExporter(MetricsExporterConfig(port=70000))
    with pytest.raises(ValueError, match="stale_after_secs"):
        MetricsExporter(MetricsExporterConfig(stale_after_secs=0))
    with pytest.raises(ValueError, match="venue"):
        MetricsExporter(MetricsExporterConfig(venue="bad venue{}"))
    with pytest.raises(ValueError, match="multiprocess_dir"):
        MetricsExporter(MetricsExporterConfig(multiprocess_dir="/definitely/not/here"))


def test_two_exporters_in_one_process_do_not_collide():
    a = MetricsExporter(MetricsExporterConfig(port=0, component_id="MetricsExporter-A"))
    b = MetricsExporter(MetricsExporterConfig(port=0, component_id="MetricsExporter-B"))
    a.on_budget(Budget(ts_event=1, strategy_id="S-1", notional=5.0))
    assert b"S-1" in a.render() and b"S-1" not in b.render()


def test_label_values_are_capped():
    exporter = MetricsExporter(MetricsExporterConfig(port=0, max_label_values=2))
    for k in range(5):
        exporter.on_budget(Budget(ts_event=1, strategy_id=f"S-{k}", notional=float(k)))
    exporter.on_budget(Budget(ts_event=1, strategy_id='bad"label{}', notional=9.0))
    strategies = {
        dict(labels)["strategy"]
        for (name, labels) in parse(exporter.render())
        if name == "strategy_allocation_notional"
    }
    assert strategies == {"S-0", "S-1", "other"}


def test_every_series_exists_from_the_first_scrape():
    """Issue 15: before any order, fill or bar, the first scrape already has every order, latency
    and PnL/exposure series of each registered strategy (zero), so dashboards and ``rate()`` show
    0 rather than "No data". The probe scrapes ``/metrics`` from its ``on_start``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    engine, exporter, probe, bar_type = build_engine(
        MetricsExporterConfig(serve="always", port=port), probe_url=base
    )
    try:
        engine.run(streaming=True)
        status, body = probe.probe_at_start["/metrics"]
        assert status == 200
        s = parse(body)
        inst = str(bar_type.instrument_id)
        for strategy in ("EMACross-000", str(probe.id)):
            lab = {"venue": VENUE, "strategy": strategy}
            for reason in REJECT_REASONS:
                assert value(s, "orders_rejected_total", reason=reason, **lab) == 0
            for name in (
                "orders_submitted_total",
                "orders_denied_total",
                "order_fills_total",
                "submit_to_ack_ms_count",
                "submit_to_ack_ms_sum",
            ):
                assert value(s, name, **lab) == 0
            assert value(s, "venue_faults_total", kind="order_timeout", **lab) == 0
            for name in ("pnl_realized_total", "pnl_unrealized_total", "exposure_usd"):
                assert value(s, name, instrument=inst, **lab) == 0
        # ... and the engine then moves them: the zero series are the real ones
        after = parse(exporter.render())
        lab = {"venue": VENUE, "strategy": "EMACross-000"}
        assert value(after, "orders_submitted_total", **lab) > 0
        assert value(after, "submit_to_ack_ms_count", **lab) > 0
        # no `_created` series (a quarter of the samples, read by nothing here)
        assert not [name for name, _ in after if name.endswith("_created")]
        assert any(name.endswith("_total") for name, _ in after)
    finally:
        engine.end()
        engine.dispose()


def test_breaker_trips_count_trips_and_rejections_count_blocked_orders():
    """A trip is counted once however many orders it blocks; reasons are the risk module's."""
    from hmm_strategy.messages import BreakerTrip
    from hmm_strategy.risk import BREAKER_REASONS

    exporter = MetricsExporter(MetricsExporterConfig(port=0))
    exporter.on_breaker_trip(BreakerTrip(1, "S-1", "BTCUSDT.BINANCE", "drawdown"))
    for _ in range(3):
        exporter.on_breaker_rejection(BreakerRejection(2, "S-1", "BTCUSDT.BINANCE", "drawdown"))
    exporter.on_breaker_trip(BreakerTrip(3, "S-1", "BTCUSDT.BINANCE", "no_such_breaker"))
    s = parse(exporter.render())
    assert value(s, "breaker_trips_total", strategy="S-1", reason="drawdown") == 1
    assert value(s, "breaker_rejections_total", strategy="S-1", reason="drawdown") == 3
    assert value(s, "breaker_trips_total", strategy="S-1", reason="other") == 1
    reasons = {dict(lab)["reason"] for (n, lab) in s if n == "breaker_trips_total"}
    assert reasons == {*BREAKER_REASONS, "other"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("UNKNOWN", "timeout"),  # NautilusTrader resolved an order the venue never answered
        ("{'code': -2010, 'msg': 'Account has insufficient balance for requested action.'}",
         "insufficient_balance"),
        ('{"code":-1013,"msg":"Filter failure: LOT_SIZE"}', "filter"),
        ('{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}',
         "clock"),
        ('{"code":-1015,"msg":"Too many new orders."}', "rate_limit"),
        ("HTTP 429 Too Many Requests", "rate_limit"),
        ("POST_ONLY LIMIT BUY order limit px of 41326.35 would have been a TAKER", "post_only"),
        ("REDUCE_ONLY MARKET BUY order would have increased position", "reduce_only"),
        ("limit px of 429.50 is odd", "other"),  # a price is not an HTTP status
        ("something new", "other"),
    ],
)  # fmt: skip
def test_rejection_reasons_are_a_fixed_set(text, reason):
    assert rejection_reason(text) == reason in REJECT_REASONS
