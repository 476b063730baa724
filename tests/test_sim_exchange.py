"""The simulated Binance venue on its own (no node): signatures, timestamps, filters, balances,
limit orders, the state file, and klines as NautilusTrader's Binance adapter requests them
(``request_binance_bars``, the call behind ``request_bars``: no look-ahead, paginated)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest

from hmm_strategy.config import REPO_ROOT
from tests.sim_node import KEYS, get_json, sim_config
from venues.sim.exchange import Exchange, VenueError
from venues.sim.server import BackgroundVenue


def signed(venue, method: str, path: str, params: dict, *, secret: str | None = None,
           key: str | None = None) -> tuple[int, object]:  # fmt: skip
    params = {**params, "timestamp": params.get("timestamp", int(time.time() * 1000))}
    query = urllib.parse.urlencode(params)
    sig = hmac.new((secret or KEYS["BINANCE_API_SECRET"]).encode(), query.encode(),
                   hashlib.sha256).hexdigest()  # fmt: skip
    req = urllib.request.Request(
        f"{venue.urls['base_url_http']}{path}?{query}&signature={sig}", method=method,
        headers={"X-MBX-APIKEY": key or KEYS["BINANCE_API_KEY"]},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def venue():
    with BackgroundVenue(sim_config(wait_for_subscriber=True)) as v:
        yield v


def test_signed_requests_are_checked(venue) -> None:
    assert signed(venue, "GET", "/api/v3/account", {})[0] == 200
    assert signed(venue, "GET", "/api/v3/account", {}, secret="wrong")[1]["code"] == -1022
    assert signed(venue, "GET", "/api/v3/account", {}, key="wrong")[1]["code"] == -2015
    stale = int(time.time() * 1000) - 60_000
    assert signed(venue, "GET", "/api/v3/account", {"timestamp": stale})[1]["code"] == -1021


def test_orders_filters_balances_and_cancel(venue) -> None:
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}
    assert signed(venue, "POST", "/api/v3/order", {**order, "quantity": "0.000001"})[1][
        "code"] == -1013  # below the lot size  # fmt: skip
    assert signed(venue, "POST", "/api/v3/order", {**order, "quantity": "1000"})[1][
        "code"] == -2010  # more than 100,000 USDT buys  # fmt: skip
    status, ack = signed(venue, "POST", "/api/v3/order",
                         {**order, "quantity": "0.10000", "newClientOrderId": "a-1"})
    assert status == 200 and ack["clientOrderId"] == "a-1"
    state = get_json(venue.urls["base_url_http"] + "/sim/state")
    btc = {b["asset"]: b for b in state["balances"]}
    assert Decimal(btc["BTC"]["free"]) == Decimal("0.1")
    (trade,) = signed(venue, "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"})[1]
    notional = Decimal(trade["price"]) * Decimal("0.1")
    assert Decimal(trade["commission"]) == (notional * Decimal("0.001")).quantize(Decimal("1e-8"))
    assert Decimal(btc["USDT"]["free"]) == 100_000 - notional - Decimal(trade["commission"])
    # a resting limit buy locks its USDT; cancel releases it
    limit = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.10000", "price": "1000.00", "newClientOrderId": "l-1"}  # fmt: skip
    assert signed(venue, "POST", "/api/v3/order", limit)[0] == 200
    (open_order,) = signed(venue, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})[1]
    assert open_order["clientOrderId"] == "l-1" and open_order["status"] == "NEW"
    status, canceled = signed(venue, "DELETE", "/api/v3/order",
                              {"symbol": "BTCUSDT", "origClientOrderId": "l-1"})
    assert status == 200 and canceled["status"] == "CANCELED"
    state = get_json(venue.urls["base_url_http"] + "/sim/state")
    assert {b["asset"]: b["locked"] for b in state["balances"]}["USDT"] == "0"
    assert signed(venue, "GET", "/api/v3/order",
                  {"symbol": "BTCUSDT", "origClientOrderId": "nope"})[1]["code"] == -2013


def test_cancel_all_open_orders(venue) -> None:
    """``DELETE /api/v3/openOrders``, which the adapter's ``cancel_all_orders`` calls (a stop's
    first step): every open order cancelled and its balance released; none open: -2011."""
    for i in (1, 2):
        limit = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                 "quantity": "0.10000", "price": f"100{i}.00",
                 "newClientOrderId": f"c-{i}"}  # fmt: skip
        assert signed(venue, "POST", "/api/v3/order", limit)[0] == 200
    status, canceled = signed(venue, "DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert status == 200
    assert sorted((o["clientOrderId"], o["status"]) for o in canceled) == [
        ("c-1", "CANCELED"), ("c-2", "CANCELED")
    ]  # fmt: skip
    assert signed(venue, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})[1] == []
    state = get_json(venue.urls["base_url_http"] + "/sim/state")
    assert {b["asset"]: b["locked"] for b in state["balances"]}["USDT"] == "0"
    assert signed(venue, "DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})[1][
        "code"] == -2011  # fmt: skip


def test_limit_order_fills_when_a_bar_trades_through_it(tmp_path) -> None:
    ex = Exchange(state_path=tmp_path / "sim.json")
    ex.on_price(Decimal("100.00"), Decimal("100.02"), Decimal("99"), Decimal("101"), 1)
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "1.00000", "price": "95.00"}  # fmt: skip
    _, events = ex.new_order(params, 2)
    assert [e["x"] for e in events if e["e"] == "executionReport"] == ["NEW"]
    assert ex.on_price(Decimal("97"), Decimal("97.02"), Decimal("96"), Decimal("98"), 3) == []
    events = ex.on_price(Decimal("94"), Decimal("94.02"), Decimal("94.5"), Decimal("96"), 4)
    (fill,) = [e for e in events if e["e"] == "executionReport"]
    assert fill["x"] == "TRADE" and fill["L"] == "95.00" and fill["m"] is True
    # the state file is the venue's memory: a restarted venue holds the same account
    again = Exchange(state_path=tmp_path / "sim.json")
    assert again.balances() == ex.balances() and again.trades == ex.trades
    assert again.free["BTC"] == Decimal(1)
    with pytest.raises(VenueError, match="-2013"):
        again.find(None, "unknown")


def test_klines_as_the_adapter_requests_them(venue) -> None:
    """The adapter's own HTTP client and kline pagination, against the venue: history only up to
    the last published bar, in order, each bar once, and more as bars are published."""
    from nautilus_trader.adapters.binance.common.enums import (
        BinanceAccountType,
        BinanceKlineInterval,
    )
    from nautilus_trader.adapters.binance.http.client import BinanceHttpClient
    from nautilus_trader.adapters.binance.spot.http.market import BinanceSpotMarketHttpAPI
    from nautilus_trader.common.component import LiveClock
    from nautilus_trader.model.data import BarType

    client = BinanceHttpClient(clock=LiveClock(), api_key=None, api_secret=None,
                               base_url=venue.urls["base_url_http"])  # fmt: skip
    market = BinanceSpotMarketHttpAPI(client, BinanceAccountType.SPOT)
    bar_type = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
    now_ms = int(time.time() * 1000)

    async def bars(start_ms: int, limit: int | None):
        return await market.request_binance_bars(
            bar_type=bar_type, interval=BinanceKlineInterval.SECOND_1,
            start_time=start_ms, end_time=now_ms, limit=limit,
        )  # fmt: skip

    history = asyncio.run(bars(now_ms - 3_600_000, None))  # pages of 500 until the end
    assert len(history) == 500  # the venue's history, nothing published after it
    closes = [b.ts_event for b in history]
    assert closes == sorted(set(closes)) and closes[-1] <= now_ms * 1_000_000
    assert [str(b.close) for b in history[-2:]] == [
        row[4] for row in get_json(
            f"{venue.urls['base_url_http']}/api/v3/klines?symbol=BTCUSDT&interval=1s&limit=2")
    ]  # fmt: skip
    paged = asyncio.run(bars(now_ms - 3_600_000, 100))  # the adapter pages by `limit`
    assert [b.ts_event for b in paged] == closes
    # publishing a bar makes exactly one more kline available
    asyncio.run_coroutine_threadsafe(venue.publish_next(), venue.loop).result(5)
    rows = get_json(f"{venue.urls['base_url_http']}/api/v3/klines?symbol=BTCUSDT&interval=1s"
                    "&limit=1000")  # fmt: skip
    assert len(rows) == 501


def test_command_serves_until_ctrl_c_and_refuses_missing_keys(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    missing = subprocess.run([sys.executable, "-m", "venues.sim"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: set BINANCE_API_KEY and BINANCE_API_SECRET (the pair the node will use)"
    )
    urls = tmp_path / "urls.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "venues.sim", "--port", "0", "--source", "synthetic",
         "--bars", "600", "--history-bars", "500", "--interval", "1s", "--urls-file", str(urls),
         "--state", str(tmp_path / "sim.json")],
        cwd=tmp_path, env={**env, **KEYS}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not urls.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        base = json.loads(urls.read_text())["base_url_http"]
        assert base.startswith("http://127.0.0.1:")
        assert get_json(base + "/api/v3/time")["serverTime"] > 0
        assert (tmp_path / "sim.json").exists()  # the account's state file
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out


def test_bad_fault_requests_are_refused_with_a_reason(venue) -> None:
    url = venue.urls["base_url_http"] + "/sim/faults"
    for body, reason in (
        ([], "the body must be a JSON object, got list"),
        ({"rate_limit": -3}, "whole numbers >= 0"),
        ({"rate_limit": 1.5}, "whole numbers >= 0"),
        ({"typo": 1}, "unknown fault kinds ['typo']"),
    ):
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 400 and reason in json.loads(err.value.read())["error"]
    assert get_json(venue.urls["base_url_http"] + "/sim/state")["faults_pending"] == {}
