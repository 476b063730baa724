"""A live node SIGKILLed with an open position and an open order at the venue restarts and
finds both (NautilusTrader's reconciliation through the Binance adapter, on the simulated venue),
sends no duplicate order, keeps deciding, and stops flat: the venue's balance is its position."""

from __future__ import annotations

import signal

import polars as pl

from tests.helpers import free_port
from tests.sim_node import (
    balance,
    node_override,
    post_json,
    scrape,
    sim_config,
    sim_state,
    start_node,
    stop_node,
    total,
    wait_until,
)
from venues.sim.server import BackgroundVenue


def test_sigkill_and_restart_reconciles_position_and_open_order(tmp_path) -> None:
    with BackgroundVenue(sim_config(n_bars=1_700, speed=20.0)) as venue:
        admin = venue.urls["base_url_http"] + "/sim/faults"
        override = node_override(tmp_path, dict(venue.urls))
        first = start_node(tmp_path, override, tmp_path / "run1", mode="live",
                           metrics_port=free_port())
        try:
            wait_until(lambda: balance(sim_state(venue), "BTC") > 0, first, 120,
                       "the first node to buy")
            model = tmp_path / "state" / "HMM-001-HMMRegimeStrategy-001.checkpoint.model.json"
            wait_until(model.exists, first, 30, "its fitted model in the checkpoint")
            for _ in range(5):  # its next order stays open at the venue; we want it long then
                wait_until(lambda: balance(sim_state(venue), "BTC") > 0, first, 60, "a long")
                post_json(admin, {"held": 1})
                wait_until(lambda: sim_state(venue)["open_orders"], first, 60, "an open order")
                if balance(sim_state(venue), "BTC") > 0:
                    break
                post_json(admin, {"release": True})  # it was flat: let that order fill, again
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        killed = sim_state(venue)
        held = killed["open_orders"][0]
        btc = balance(killed, "BTC")
        assert btc > 0

        port = free_port()
        second = start_node(tmp_path, override, tmp_path / "run2", mode="live",
                            metrics_port=port)
        try:
            # reconciliation: the position is the strategy's again (exposure is its own)
            wait_until(lambda: total(scrape(port), "exposure_usd") > 0, second, 90,
                       "the restarted node to find its position")
            published = sim_state(venue)["bars_published"]
            wait_until(lambda: sim_state(venue)["bars_published"] >= published + 60, second, 60,
                       "60 more bars")
            during = sim_state(venue)
            # no duplicate: nothing new was sent while its reconciled order was still open
            assert during["orders"] == killed["orders"]
            assert [o["orderId"] for o in during["open_orders"]] == [held["orderId"]]
            post_json(admin, {"release": True})  # the venue fills the open order now
            wait_until(lambda: not sim_state(venue)["open_orders"], second, 30, "the fill")
            wait_until(lambda: total(scrape(port), "order_fills_total") >= 1, second, 30,
                       "the fill of the reconciled order to reach the node")
            out = stop_node(second)
        finally:
            if second.poll() is None:
                second.kill()
        assert second.returncode == 0, out
        final = sim_state(venue)
    # it stopped flat at the venue: it knew what the venue held (a node that believed it was
    # flat after the restart would have left the coins there)
    assert balance(final, "BTC") == 0
    decisions = pl.read_csv(tmp_path / "run2" / "decisions.csv")
    assert decisions.height >= 60  # decisions continued after the restart
