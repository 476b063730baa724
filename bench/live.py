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
"""

from __future__ import annotations

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
    bar_type: str
    output_path: str


class LatencyProbe(Actor):
    """Stamps bars before the strategy sees them; measures decision and order latency."""

    def __init__(self, config: LatencyProbeConfig) -> None:
        super().__init__(config)
        self._bar_ns = 0
        self._bar_ts_event = 0
        self.decision_us: list[float] = []
        self.order_us: list[float] = []

    def on_start(self) -> None:
        topic = f"data.bars.{BarType.from_str(self.config.bar_type)}"
        self.msgbus.subscribe(topic=topic, handler=self._on_bar_first, priority=100)
        self.msgbus.subscribe(topic=f"{REGIME_TOPIC}.*", handler=self._on_decision)
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)

    def _on_bar_first(self, bar) -> None:
        self._bar_ns = time.perf_counter_ns()
        self._bar_ts_event = bar.ts_event

    def _on_decision(self, update) -> None:
        if update.ts_event == self._bar_ts_event:
            self.decision_us.append((time.perf_counter_ns() - self._bar_ns) / 1e3)

    def _on_order_event(self, event) -> None:
        if type(event) is not OrderSubmitted or not self._bar_ns:
            return
        order = self.cache.order(event.client_order_id)
        if order is not None and order.ts_init >= self._bar_ts_event:
            self.order_us.append((time.perf_counter_ns() - self._bar_ns) / 1e3)

    def on_stop(self) -> None:
        Path(self.config.output_path).write_text(
            json.dumps({"decision_us": self.decision_us, "order_us": self.order_us})
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
        config={"bar_type": bar_type, "output_path": str(output)},
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
