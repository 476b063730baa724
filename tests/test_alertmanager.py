"""Alerts reach a person: paper node -> real Prometheus -> real Alertmanager -> a webhook.

The offline paper node runs with an order-submit rate limit of one order per 10 minutes, so
NautilusTrader's RiskEngine denies the strategy's orders after its first, and after
``max_consecutive_rejects`` denials the strategy's ``rejects`` breaker trips (a real
``BreakerTrip``, counted in ``breaker_trips_total``). Prometheus (the bundle's config and rules)
evaluates ``OrdersDenied`` and ``CircuitBreakerTripped`` against the node's metrics and sends
them to Alertmanager running the bundle's ``alertmanager.yml``, with only its webhook URL pointed
at a local aiohttp receiver. The test passes when that receiver gets both alerts with the node's
strategy and venue labels.

Skipped with a message only when the binaries are missing AND ``$CI`` is unset.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tests.helpers import free_port
from tests.test_metrics import http_get, parse
from tests.test_observability import (
    OBS,
    require_tools,
    start_paper_node,
    start_prometheus,
    stop_process,
)

ALERTMANAGER_CONFIGS = ("alertmanager.yml", "alertmanager.examples.yml", "compose/alertmanager.yml")


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None or shutil.which("amtool") is None:
        msg = "alertmanager/amtool not installed (apt-get install -y prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}: CI must run the Alertmanager tests")
        pytest.skip(msg)
    return found


class WebhookReceiver:
    """An aiohttp server on loopback (own thread and loop) that queues every payload POSTed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.payloads: queue.Queue[dict] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.payloads.put(await request.json())
        return web.Response(text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        assert self._ready.wait(30), "webhook receiver did not start"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"


def start_alertmanager(tmp: Path, webhook_url: str) -> tuple[subprocess.Popen, str, Path]:
    """A real Alertmanager with the bundle's config; only the webhook URL is the test's."""
    config = yaml.safe_load((OBS / "alertmanager.yml").read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == config["route"]["receiver"]]
    receiver["webhook_configs"][0]["url"] = webhook_url
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "alertmanager.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [alertmanager_binary(), f"--config.file={path}", f"--storage.path={tmp / 'am'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, f"127.0.0.1:{port}", log


def trips_once_the_replay_is_over(port: int, limit: float = 120.0) -> dict[str, float]:
    """``breaker_trips_total`` by reason (non-zero) once the node's replay has ended: the last
    bar's epoch and the trips stay the same over three scrapes a second apart (trips only happen
    on bars and on the orders they cause)."""
    seen: list[tuple] = []
    deadline = time.monotonic() + limit  # only stops a broken build from hanging
    while time.monotonic() < deadline:
        s = parse(http_get(f"http://127.0.0.1:{port}/metrics")[1])
        trips = {
            dict(lab)["reason"]: v for (n, lab), v in s.items() if n == "breaker_trips_total" and v
        }
        last_bar = max(v for (n, _), v in s.items() if n == "market_data_last_bar_epoch")
        seen.append((last_bar, tuple(sorted(trips.items()))))
        if len(seen) >= 3 and len(set(seen[-3:])) == 1:
            return trips
        time.sleep(1.0)
    raise AssertionError(f"the replay did not end: {seen[-3:]}")


def test_alertmanager_configs_are_valid():
    alertmanager_binary()
    res = subprocess.run(
        ["amtool", "check-config", *ALERTMANAGER_CONFIGS],
        cwd=OBS, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    # every alert the inhibit rules name exists in the rules
    rules = {
        r["alert"]
        for g in yaml.safe_load((OBS / "rules" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    for name in ALERTMANAGER_CONFIGS:
        for inhibit in yaml.safe_load((OBS / name).read_text())["inhibit_rules"]:
            text = " ".join(inhibit["source_matchers"] + inhibit["target_matchers"])
            named = {n for part in text.split('"')[1::2] for n in part.split("|")}
            assert named <= rules, (name, named - rules)


def test_an_alert_from_the_paper_node_reaches_a_webhook(tmp_path):
    require_tools()
    alertmanager_binary()
    node_port = free_port()
    # one order per 10 minutes: the RiskEngine's throttle denies every order after the first;
    # a shorter replay, so the node is quiet again soon after the alerts (for the trip count)
    deny_all = {
        "risk": {"max_order_submit_rate": "1/00:10:00"},
        "live": {"venues": {"replay": {"replay": {"n_bars": 2_500}}}},
    }
    with WebhookReceiver() as receiver:
        am, am_address, am_log = start_alertmanager(tmp_path, receiver.url)
        node_log = tmp_path / "node.log"
        node = start_paper_node(tmp_path, node_port, deny_all, log_to=node_log)
        prom, base, prom_log = start_prometheus(tmp_path, node_port, alertmanager=am_address)
        try:
            wanted = {("OrdersDenied", None), ("CircuitBreakerTripped", "rejects")}
            got: dict[tuple[str, str | None], dict] = {}
            deadline = time.monotonic() + 150  # only stops a broken build from hanging
            while wanted - got.keys():
                assert node.poll() is None, "the paper node exited early"
                assert am.poll() is None, f"alertmanager exited: {am_log.read_text()[-2000:]}"
                if time.monotonic() > deadline:
                    status, body = http_get(f"{base}/api/v1/alerts")
                    raise AssertionError(
                        f"webhook got {sorted(got)}, not {sorted(wanted)}; Prometheus alerts: "
                        f"{body[:1500]!r}; alertmanager log: {am_log.read_text()[-1500:]}"
                    )
                try:
                    payload = receiver.payloads.get(timeout=1)
                except queue.Empty:
                    continue
                assert payload["version"] == "4" and payload["receiver"] == "webhook"
                for alert in payload["alerts"]:
                    if alert["status"] == "firing":
                        labels = alert["labels"]
                        got.setdefault((labels["alertname"], labels.get("reason")), alert)
            trips = trips_once_the_replay_is_over(node_port)
        finally:
            stop_process(prom)
            stop_process(node, signal.SIGINT, wait=60)
            stop_process(am)

    # one count per trip: as many as the strategy logged, per reason (issue 15: 6 logged, 1 counted)
    logged = collections.Counter(re.findall(r"Breaker (\w+) tripped:", node_log.read_text()))
    assert trips == {reason: float(n) for reason, n in logged.items()}, (trips, logged)
    assert trips.get("rejects", 0) >= 2, trips  # the denials tripped it again after each reset
    print("TRIPS", trips)

    denied = got[("OrdersDenied", None)]
    assert denied["labels"]["strategy"] == "HMMRegimeStrategy-001"
    assert denied["labels"]["venue"] == "BINANCE" and denied["labels"]["severity"] == "warning"
    assert (
        denied["annotations"]["summary"]
        == "HMMRegimeStrategy-001 orders denied before reaching BINANCE"
    )
    tripped = got[("CircuitBreakerTripped", "rejects")]["labels"]
    assert tripped["strategy"] == "HMMRegimeStrategy-001" and tripped["severity"] == "warning"
    print("\nWEBHOOK", json.dumps([v["labels"] for v in got.values()]))
