"""Live-path latency in the offline paper node: bar handled -> decision -> order submitted.

The node is the one ``python -m hmm_strategy.live`` builds from ``configs/node.yaml`` (replay feed
of synthetic bars as fast as the node takes them, sandbox execution, every configured actor), with
the strategy on the benchmark's pre-fitted model and a more active policy so that enough orders
are sent for a p99. A ``LatencyProbe`` actor is added:

* it subscribes to the bar topic at a higher priority than the strategy, so it stamps each bar
  (wall clock) just before the strategy's ``on_bar`` runs ("bar handled");
* ``RegimeUpdate`` (published by the strategy at the end of its decision) -> bar -> decision;
* ``OrderSubmitted`` for an order the strategy created on that bar -> bar -> order submitted
  (through the RiskEngine, the ExecutionEngine and the sandbox execution client).

Section 4c runs the same node with N instruments (:func:`paper_latency_many`): one HMM strategy
per instrument (US equities on ARCA, each with its own pre-fitted artifact), the shipped actors
pointed at ARCA/USD, one replay feed publishing every instrument's bars interleaved in time
order, and the same node with one instrument over as many bars in all: the same probe, every
instrument's bar topic. With N instruments the bars of one close arrive together and the event
loop handles them one after the other, so the probe also measures from the first bar of each
close ("close -> decision", "close -> order submitted"): the k-th instrument's latency includes
the handling of the k-1 bars before it (and the feed's settling between them, which a live feed
does not do: an upper bound). With one instrument, close and bar are the same.

Only bars the probe stamped count, and an ``OrderSubmitted`` counts only for the instrument of
the bar being handled and for an order created after that bar's stamp (the feed publishes the
next bar once the engines' queues are drained): orders a ``DataTime`` sample caused (allocator
budgets) are not the bar's.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import BarType
from nautilus_trader.model.events import OrderSubmitted

from hmm_strategy.messages import REGIME_TOPIC

if TYPE_CHECKING:
    from nautilus_trader.live.node import TradingNode

    from hmm_strategy.config import ComponentSpec, NodeSettings


class LatencyProbeConfig(ActorConfig, frozen=True):
    bar_types: tuple[str, ...]
    output_path: str


class LatencyProbe(Actor):
    """Stamps bars before the strategies see them; measures decision and order latency."""

    def __init__(self, config: LatencyProbeConfig) -> None:
        super().__init__(config)
        self._bar_ns = 0  # perf_counter_ns of the stamp of the bar being handled
        self._bar_wall_ns = 0  # the same stamp on the clock of order.ts_init
        self._bar_ts_event = 0
        self._bar_instrument = ""
        self._close_ns = 0  # perf_counter_ns of the first bar stamped at this bar close
        self.decision_us: list[float] = []
        self.order_us: list[float] = []
        self.close_decision_us: list[float] = []
        self.close_order_us: list[float] = []
        self.instruments: set[str] = set()
        self.orders_submitted = 0  # every OrderSubmitted, the bar's or not

    def on_start(self) -> None:
        for bar_type in self.config.bar_types:
            topic = f"data.bars.{BarType.from_str(bar_type)}"
            self.msgbus.subscribe(topic=topic, handler=self._on_bar_first, priority=100)
        self.msgbus.subscribe(topic=f"{REGIME_TOPIC}.*", handler=self._on_decision)
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)

    def _on_bar_first(self, bar) -> None:
        self._bar_wall_ns = self.clock.timestamp_ns()
        new_close = bar.ts_event != self._bar_ts_event
        self._bar_ts_event = bar.ts_event
        self._bar_instrument = str(bar.bar_type.instrument_id)
        self._bar_ns = time.perf_counter_ns()
        if new_close:
            self._close_ns = self._bar_ns

    def _on_decision(self, update) -> None:
        if update.ts_event == self._bar_ts_event and update.instrument_id == self._bar_instrument:
            now = time.perf_counter_ns()
            self.decision_us.append((now - self._bar_ns) / 1e3)
            self.close_decision_us.append((now - self._close_ns) / 1e3)
            self.instruments.add(update.instrument_id)

    def _on_order_event(self, event) -> None:
        if type(event) is not OrderSubmitted:
            return
        self.orders_submitted += 1
        if not self._bar_ns or str(event.instrument_id) != self._bar_instrument:
            return
        order = self.cache.order(event.client_order_id)
        if order is not None and order.ts_init >= self._bar_wall_ns:
            now = time.perf_counter_ns()
            self.order_us.append((now - self._bar_ns) / 1e3)
            self.close_order_us.append((now - self._close_ns) / 1e3)

    def on_stop(self) -> None:
        Path(self.config.output_path).write_text(
            json.dumps(
                {
                    "decision_us": self.decision_us,
                    "order_us": self.order_us,
                    "close_decision_us": self.close_decision_us,
                    "close_order_us": self.close_order_us,
                    "instruments_deciding": sorted(self.instruments),
                    "orders_submitted": self.orders_submitted,
                }
            )
        )


def latency_summary(values: list[float]) -> dict[str, float | int]:
    """n, p50, p99 and max of latency samples (``{"n": 0}`` when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def probed_node(
    settings: NodeSettings,
    probe: ComponentSpec,
    venue_name: str,
    run_dir: Path,
    mode: str | None = None,
) -> TradingNode:
    """The node of ``settings`` with its metrics server off and the ``probe`` actor added, built
    for the ``venue_name`` profile (``mode`` overrides the profile's): what each latency section
    measures."""
    from hmm_strategy.config import trading_node_config, venue_settings
    from venues.builders import build_trading_node

    actors = [
        msgspec.structs.replace(a, config={**a.config, "port": 0})
        if a.path.startswith("actors.metrics:")
        else a
        for a in settings.actors
    ]
    settings = msgspec.structs.replace(settings, actors=[*actors, probe])
    venue = venue_settings(settings, venue_name)
    if mode is not None:
        venue = msgspec.structs.replace(venue, mode=mode)
    run_dir.mkdir(parents=True, exist_ok=True)
    return build_trading_node(
        trading_node_config(settings, venue, run_dir, log_level="ERROR"), venue
    )


def paper_latency(work_dir: Path, model_path: str, n_bars: int) -> dict[str, Any]:
    """Run the offline paper node over ``n_bars`` replayed bars; latency percentiles in us."""
    from hmm_strategy.config import (
        DEFAULT_CONFIG,
        ComponentSpec,
        load_node_settings,
    )
    from venues.replay import replay_finished
    from venues.runtime import run_node

    work_dir.mkdir(parents=True, exist_ok=True)
    override = {
        "strategies": [
            {
                "name": "hmm_btc",
                "config": {
                    "model_path": model_path,
                    "checkpoint_dir": None,
                    "policy": {"min_confidence": 0.5, "min_hold_bars": 2, "cooldown_bars": 0},
                },
            }
        ],
        "live": {
            "log_dir": str(work_dir / "logs"),
            "state_dir": str(work_dir / "state"),
            "log_level": "ERROR",
            "metrics": {"port": 0},
            "venues": {"replay": {"replay": {"n_bars": n_bars, "speed": 0, "seed": 7}}},
        },
    }
    path = work_dir / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [path])
    strategy = settings.strategies[0]
    bar_type = strategy.config["bar_type"]
    output = work_dir / "latency.json"
    probe = ComponentSpec(
        path="bench.live:LatencyProbe",
        config={"bar_types": [bar_type], "output_path": str(output)},
    )
    node = probed_node(settings, probe, "replay", work_dir / "run")
    wall = time.perf_counter()
    run_node(node, stop_when=lambda: replay_finished(node), max_runtime_secs=600)
    wall = time.perf_counter() - wall
    data = json.loads(output.read_text())
    return {
        "bars": n_bars,
        "wall_seconds": wall,
        "actors": [a.path for a in settings.actors],
        "bar_to_decision_us": latency_summary(data["decision_us"]),
        "bar_to_order_submitted_us": latency_summary(data["order_us"]),
    }


EQUITY_PRICE_DIVISOR = 300.0  # the bench's ~30,000 price level -> ~$100 a share


def equity_bars(n_bars: int, seed: int):
    """Replay generator for section 4c: the bench's mean-reverting regime bars at ~$100 a share
    (prices / 300, volumes x 300: the same returns and dollar volume), so a US-equity instrument
    (whole shares) can take the strategy's notional."""
    import polars as pl

    from bench.data import benchmark_frame

    d = EQUITY_PRICE_DIVISOR
    return benchmark_frame(n_bars, seed).with_columns(
        *(pl.col(c) / d for c in ("open", "high", "low", "close")), pl.col("volume") * d
    )


def _many_settings(work_dir: Path, model_path: str, symbols: list[str], n_bars: int):
    """``configs/node.yaml`` + an override file + ``TRADE_SYMBOLS`` (what a user of
    ``python -m hmm_strategy.live --override ...`` writes): one HMM strategy per symbol, each
    on its own pre-fitted artifact, the shipped actors on ARCA/USD, the replay venue's
    synthetic source publishing ``n_bars`` bars of every symbol."""
    from hmm_strategy.artifacts import load_model, save_model
    from hmm_strategy.config import DEFAULT_CONFIG, apply_env_overrides, load_node_settings

    model, meta = load_model(model_path)
    strategies = []
    for i, symbol in enumerate(symbols):
        bar_type = f"{symbol}-15-MINUTE-LAST-EXTERNAL"
        artifact = work_dir / f"model-{symbol}.json"
        save_model(
            model, artifact, feature_spec=meta.feature_spec, data_range=meta.data_range,
            instrument_id=symbol, bar_type=bar_type, version="bench",
        )  # fmt: skip
        strategies.append(
            {"name": f"hmm_{i:02d}", "path": "hmm_strategy.strategy:HMMRegimeStrategy",
             "config": {"instrument_id": symbol, "bar_type": bar_type,
                        "order_id_tag": f"{i:03d}", "model_path": str(artifact),
                        "checkpoint_dir": None, "notional": 10_000.0, "max_notional": 50_000.0,
                        "policy": {"min_confidence": 0.5, "min_hold_bars": 2,
                                   "cooldown_bars": 0}}}
        )  # fmt: skip
    override = {
        "strategies": strategies,
        "actors": [
            {"name": "metrics", "config": {"venue": "ARCA"}},
            {"name": "allocator", "config": {"venue": "ARCA", "currency": "USD"}},
            {"name": "governance", "config": {"currency": "USD"}},
        ],
        "risk": {"max_notional_per_order": {s: 1_000_000 for s in symbols}},
        "live": {
            "log_dir": str(work_dir / "logs"),
            "state_dir": str(work_dir / "state"),
            "log_level": "ERROR",
            "metrics": {"port": 0},
            "venues": {
                "replay": {
                    "starting_balances": ["10000000 USD"],
                    "replay": {"n_bars": n_bars, "speed": 0, "seed": 7,
                               "generator": "bench.live:equity_bars"},
                }
            },
        },
    }  # fmt: skip
    path = work_dir / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [path])
    return apply_env_overrides(settings, {"TRADE_SYMBOLS": ",".join(symbols)})


class GcPauses:
    """Python garbage-collector pauses while in use (``gc.callbacks``), per generation: what the
    latency maxima are made of."""

    def __init__(self) -> None:
        self.ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        else:
            self.ms[info["generation"]].append((time.perf_counter_ns() - self._t0) / 1e6)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, dict[str, float | int]]:
        return {
            f"gen{g}": {"n": len(v), "max_ms": max(v, default=0.0), "total_ms": sum(v, 0.0)}
            for g, v in self.ms.items()
        }


def _probed_run(work_dir: Path, model_path: str, symbols: list[str], n_bars: int) -> dict:
    from hmm_strategy.config import ComponentSpec, traded_instruments
    from venues.replay import replay_clients, replay_finished
    from venues.runtime import run_node

    work_dir.mkdir(parents=True, exist_ok=True)
    settings = _many_settings(work_dir, model_path, symbols, n_bars)
    _, bar_types = traded_instruments(settings)
    output = work_dir / "latency.json"
    probe = ComponentSpec(
        path="bench.live:LatencyProbe",
        config={"bar_types": bar_types, "output_path": str(output)},
    )
    # What the bench process holds already (every section's bars and results) is frozen out of
    # the collector: a node process does not carry it, and one full collection over it took 2 s
    # in the tiny bench (ran during the node's start or stop, but it may as well hit a bar).
    gc.collect()
    gc.freeze()
    try:
        node = probed_node(settings, probe, "replay", work_dir / "run")
        (client,) = replay_clients(node)
        published = client.n_bars
        wall = time.perf_counter()
        with GcPauses() as pauses:
            run_node(node, stop_when=lambda: replay_finished(node), max_runtime_secs=1_800)
        wall = time.perf_counter() - wall
    finally:
        gc.unfreeze()
    data = json.loads(output.read_text())
    return {
        "instruments": len(symbols),
        "strategies": len(settings.strategies),
        "bars_per_instrument": n_bars,
        "bars": published,
        "wall_seconds": wall,
        "instruments_deciding": len(data["instruments_deciding"]),
        "orders_submitted": data["orders_submitted"],
        "actors": [a.path for a in settings.actors],
        "bar_to_decision_us": latency_summary(data["decision_us"]),
        "bar_to_order_submitted_us": latency_summary(data["order_us"]),
        "close_to_decision_us": latency_summary(data["close_decision_us"]),
        "close_to_order_submitted_us": latency_summary(data["close_order_us"]),
        "gc_pauses": pauses.summary(),
    }


LATENCIES = (
    "bar_to_decision_us",
    "bar_to_order_submitted_us",
    "close_to_decision_us",
    "close_to_order_submitted_us",
)


def paper_latency_many(
    work_dir: Path, model_path: str, instruments: int, bars_per_instrument: int
) -> dict[str, Any]:
    """The offline paper node with ``instruments`` HMM strategies on as many instruments, then
    with one of them over ``instruments x bars_per_instrument`` bars (the same number of bars
    and about as many orders): bar -> decision and bar -> OrderSubmitted, N / 1."""
    symbols = [f"S{i:02d}.ARCA" for i in range(instruments)]
    one = _probed_run(work_dir / "one", model_path, symbols[:1], instruments * bars_per_instrument)
    many = _probed_run(work_dir / "many", model_path, symbols, bars_per_instrument)
    ratios = {}
    for key in LATENCIES:
        for q in ("p50", "p99"):
            a, b = many[key].get(q), one[key].get(q)
            ratios[f"{key.removesuffix('_us')}_{q}"] = a / b if a and b else None
    return {
        "setup": "python -m hmm_strategy.live's offline paper node (replay feed, sandbox fills, "
        "every actor of configs/node.yaml on ARCA/USD), one HMM strategy per US-equity "
        "instrument with a pre-fitted artifact, bars of all instruments interleaved in time",
        "runs": [one, many],
        "n_vs_one": ratios,
    }
