"""Live path on the wall clock: order submitted -> venue ack, through NautilusTrader's Binance
adapter against the simulated Binance venue (``venues.sim``) on 127.0.0.1.

The node is ``python -m hmm_strategy.live --venue binance_sim --mode live`` built in-process (the
shipped config on 1-second bars with short feature windows and an in-run fit, as in the tests:
regimes then switch often enough for a percentile) with a ``SubmitAckProbe`` actor. The probe
stamps ``OrderSubmitted`` (the adapter emits it just before the signed REST
``POST /api/v3/order``) and ``OrderAccepted`` (built from the venue's ``executionReport`` on the
WebSocket-API user-data stream) with ``time.perf_counter_ns`` when each reaches the message bus:
the full round trip of REST request, venue matching, user-data event and the engines' queues.
Loopback, so this is the node's own share of the latency, not an exchange's.

``python -m bench`` runs this section in a child process (``python -m bench.sim``): the offline
paper nodes of section 4 run in the bench's process first, and their sandbox execution client
registers the BINANCE account as one NautilusTrader calculates from fills, in a registry global
to the process (``AccountFactory``). A live Binance node after it in the same process then books
every fill twice (once from the venue's balance update, once from the fill) and its first large
buy shut it down on ``AccountBalanceNegative``. One node per process, as users run it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.events import OrderAccepted, OrderFilled, OrderSubmitted

from bench.live import latency_summary, probed_node

KEYS = {"BINANCE_API_KEY": "bench-sim-key", "BINANCE_API_SECRET": "bench-sim-secret"}


class SubmitAckProbeConfig(ActorConfig, frozen=True):
    output_path: str


class SubmitAckProbe(Actor):
    """Wall-clock submit -> accepted and submit -> filled per order (ms)."""

    def __init__(self, config: SubmitAckProbeConfig) -> None:
        super().__init__(config)
        self._submitted: dict[str, int] = {}
        self.ack_ms: list[float] = []
        self.fill_ms: list[float] = []

    def on_start(self) -> None:
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event, priority=100)

    def _on_order_event(self, event) -> None:
        now = time.perf_counter_ns()
        coid = event.client_order_id.value
        if type(event) is OrderSubmitted:
            self._submitted[coid] = now
        elif type(event) is OrderAccepted and coid in self._submitted:
            self.ack_ms.append((now - self._submitted[coid]) / 1e6)
        elif type(event) is OrderFilled and coid in self._submitted:
            self.fill_ms.append((now - self._submitted.pop(coid)) / 1e6)

    def on_stop(self) -> None:
        Path(self.config.output_path).write_text(
            json.dumps({"ack_ms": self.ack_ms, "fill_ms": self.fill_ms})
        )


def sim_latency(work_dir: Path, n_bars: int) -> dict[str, Any]:
    """Run a live node on the simulated venue: a 310-bar in-run fit, then ``n_bars`` trading
    bars (1-second bars, 40 per second)."""
    from hmm_strategy.config import (
        DEFAULT_CONFIG,
        ComponentSpec,
        load_node_settings,
    )
    from venues.runtime import run_node
    from venues.sim.server import BackgroundVenue, SimConfig

    work_dir.mkdir(parents=True, exist_ok=True)
    history, warmup = 100, 310
    sim = SimConfig(
        api_key=KEYS["BINANCE_API_KEY"], api_secret=KEYS["BINANCE_API_SECRET"],
        source="synthetic", n_bars=history + warmup + n_bars, seed=3, interval="1s",
        history_bars=history, speed=40.0,
    )  # fmt: skip
    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update(KEYS)  # the node reads its keys from the environment, as in production
    try:
        with BackgroundVenue(sim) as venue:
            override = {
                "strategies": [{"name": "hmm_btc", "config": {
                    "bar_type": "BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL",
                    "features": {"vol_window": 5, "volume_window": 10},
                    "fit": {"warmup_bars": warmup, "n_restarts": 1, "n_iter": 30, "sticky": 0.0},
                    "checkpoint_dir": None,
                    "policy": {"min_confidence": 0.5, "min_hold_bars": 2, "cooldown_bars": 1},
                    "breakers": {"daily_loss_limit": None, "max_drawdown": None},
                }}],
                "live": {
                    "log_dir": str(work_dir / "logs"),
                    "state_dir": str(work_dir / "state"),
                    "log_level": "ERROR",
                    "metrics": {"port": 0},
                    "venues": {"binance_sim": dict(venue.urls)},
                },
            }  # fmt: skip
            path = work_dir / "override.yaml"
            path.write_text(yaml.safe_dump(override))
            venue_file = DEFAULT_CONFIG.parent / "venues" / "binance_sim.yaml"
            settings = load_node_settings(DEFAULT_CONFIG, [venue_file, path])
            output = work_dir / "submit_ack.json"
            probe = ComponentSpec(path="bench.sim:SubmitAckProbe",
                                  config={"output_path": str(output)})
            node = probed_node(settings, probe, "binance_sim", work_dir / "run", mode="live")
            wall = time.perf_counter()
            run_node(node, stop_when=lambda: venue.timeline.finished, max_runtime_secs=600)
            wall = time.perf_counter() - wall
            orders = venue.exchange.next_order_id - 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    data = json.loads(output.read_text())
    return {
        "bars": n_bars,
        "wall_seconds": wall,
        "venue_orders": orders,
        "submit_to_ack_ms": latency_summary(data["ack_ms"]),
        "submit_to_fill_ms": latency_summary(data["fill_ms"]),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.sim --bars N --work-dir DIR --output FILE``: section 4b alone, in a
    process of its own; the JSON result goes to FILE."""
    import argparse

    from bench import pin_blas_threads

    pin_blas_threads()
    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=main.__doc__)
    parser.add_argument("--bars", type=int, required=True, help="trading bars")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    result = sim_latency(args.work_dir, args.bars)
    args.output.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
