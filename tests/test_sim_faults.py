"""Venue errors on the live path (NautilusTrader's Binance adapter, the simulated venue): an
insufficient balance (-2010), a filter failure (-1013), a timestamp outside recvWindow (-1021),
HTTP 429 with Retry-After, an order the venue never answers, and a WebSocket drop. The node
survives each, counts it, its consecutive-rejects breaker trips as documented, and it still
trades afterwards."""

from __future__ import annotations

import subprocess

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

REJECTIONS = ["insufficient_balance", "filter_failure", "timestamp", "rate_limit", "unanswered"]


def start_trading(tmp_path, venue, **exec_engine) -> tuple[subprocess.Popen, int]:
    """A live node on the venue, once it has its first fill: in-flight orders are asked about
    after 1 s; only the breaker under test (P&L breakers would stop the orders faults need)."""
    override = node_override(
        tmp_path, dict(venue.urls),
        live={"exec_engine": {"inflight_check_threshold_ms": 1000,
                              "inflight_check_interval_ms": 500, **exec_engine}},
        strategy={"breakers": {"daily_loss_limit": None, "max_drawdown": None}},
    )  # fmt: skip
    port = free_port()
    proc = start_node(tmp_path, override, tmp_path / "run", mode="live", metrics_port=port)
    try:
        wait_until(lambda: total(scrape(port), "order_fills_total") >= 1, proc, 120,
                   "the first fill")  # fmt: skip
    except BaseException:
        proc.kill()
        raise
    return proc, port


def test_each_venue_error_is_survived_and_counted(tmp_path) -> None:
    with BackgroundVenue(sim_config(n_bars=3_500)) as venue:
        admin = venue.urls["base_url_http"] + "/sim/faults"
        # an unanswered order: asked about after 1 s, rejected after 2 more checks
        proc, port = start_trading(tmp_path, venue, inflight_check_retries=2)
        try:
            # a WebSocket drop: streams and the user-data session reconnect, orders still fill
            fills = total(scrape(port), "order_fills_total")
            assert post_json(admin, {"ws_drop": True})["dropped"] >= 2
            wait_until(lambda: sim_state(venue)["sessions"] == 1, proc, 60,
                       "the user-data session to log on again")
            wait_until(lambda: sim_state(venue)["stream_sockets"] >= 1, proc, 60,
                       "the market streams to reconnect")
            wait_until(lambda: total(scrape(port), "order_fills_total") > fills, proc, 60,
                       "a fill after the reconnect")
            # each rejection once, for five orders in a row (the venue applies them in a fixed
            # order): each counted as rejected and as a venue fault
            before = scrape(port)
            post_json(admin, {**dict.fromkeys(REJECTIONS, 1), "retry_after_secs": 1})
            wait_until(
                lambda: [sim_state(venue)["faults_injected"].get(k) for k in REJECTIONS]
                == [1] * len(REJECTIONS),
                proc, 90, "five orders to meet the five faults",
            )  # fmt: skip
            wait_until(
                lambda: total(scrape(port), "orders_rejected_total")
                == total(before, "orders_rejected_total") + 5,
                proc, 60, "the five rejections to be counted",
            )  # fmt: skip
            after = scrape(port)
            for fault, n in (("order_rejected", 4), ("order_timeout", 1)):
                assert total(after, "venue_faults_total", kind=fault) == (
                    total(before, "venue_faults_total", kind=fault) + n
                )
            # the unanswered order was asked about (in-flight check) before it was given up
            assert sim_state(venue)["requests"].get("GET /api/v3/order", 0) >= 1
            # five rejections in a row trip the consecutive-rejects breaker; once it cools down
            # (a few bars) the node trades again
            fills = total(scrape(port), "order_fills_total")
            wait_until(lambda: total(scrape(port), "order_fills_total") > fills, proc, 60,
                       "a fill after the faults")
            out = stop_node(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert "Breaker rejects tripped" in out


def test_a_fill_report_lost_in_a_reconnect_is_booked_once(tmp_path) -> None:
    """The venue fills an order and answers it, but its ``executionReport`` is lost with the
    WebSocket: the node books the fill once (the reconnect's reconciliation waits for the
    in-flight check), so its position is what the account holds and no sell is refused."""
    with BackgroundVenue(sim_config(n_bars=3_500)) as venue:
        admin = venue.urls["base_url_http"] + "/sim/faults"
        proc, port = start_trading(tmp_path, venue)
        try:
            for _ in range(3):  # three orders whose reports are lost, each in its own reconnect
                fills = sim_state(venue)["trades"]
                post_json(admin, {"lost_report": 1})
                wait_until(lambda: sim_state(venue)["faults_injected"].get("lost_report", 0)
                           > 0 and sim_state(venue)["faults_pending"].get("lost_report") == 0,
                           proc, 90, "an order to meet the lost report")  # fmt: skip
                wait_until(lambda n=fills: sim_state(venue)["trades"] > n + 1, proc, 60,
                           "trading to go on after the reconnect")  # fmt: skip
            # every fill the venue made reached the node once, and no order was refused
            wait_until(lambda: total(scrape(port), "order_fills_total")
                       == sim_state(venue)["trades"], proc, 60,
                       "the node's fills to match the venue's")  # fmt: skip
            assert total(scrape(port), "orders_rejected_total") == 0
            out = stop_node(proc)
            assert balance(sim_state(venue), "BTC") == 0  # the stop closed what it held
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
