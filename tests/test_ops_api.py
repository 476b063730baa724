"""The operations API (``ops``): bearer-token auth on every state-changing route, the same files
and records as the operator CLIs, and a real paper node steered and aggregated over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import msgspec
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors.kill_switch import main as kill_switch_main
from actors.metrics_server import MetricsHTTPServer
from actors.model_lifecycle import LifecycleRequest
from actors.promote import main as promote_main
from actors.registry import Override, Registry, read_registry
from actors.registry import main as registry_main
from hmm_strategy.config import REPO_ROOT
from ops.__main__ import main as ops_main
from ops.api import create_app
from ops.api import log as api_log
from ops.node import NodeTarget, resolve_node
from tests.helpers import free_port, live_override, merged, override_file

TOKEN = "s3cret-token-for-tests-0123456789"
SID = "HMMRegimeStrategy-001"
STATE_CHANGING = [
    *[(f"/strategy/{SID}/{a}", {"reason": "r"}) for a in ("pause", "resume", "throttle", "retire")],
    *[(f"/strategy/{SID}/model/{a}", {"reason": "r"}) for a in ("promote", "reject", "rollback")],
    ("/killswitch/on", {"reason": "r"}),
    ("/killswitch/off", {}),
]
BAD_AUTH = [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "]


def node_override(tmp: Path, extra: dict | None = None, *, trainer: bool = True) -> Path:
    """The shipped config with state, models and logs in ``tmp`` (and a fast replay); with
    ``trainer`` it is layered on configs/train.yaml (the online trainer's model folder);
    ``extra`` is merged over it key by key."""
    data = live_override(
        tmp,
        replay_bars=3_000,
        strategies=[{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}}}],
        actors=[
            {"name": "governance", "config": {"override_poll_interval": "1s"}},
            *(
                [{"name": "online_trainer", "config": {"model_dir": str(tmp / "models")}}]
                if trainer
                else []
            ),
        ],
    )
    return override_file(tmp, merged(data, extra or {}), "ops-node.yaml")


def layers(tmp: Path) -> list[str]:
    return [str(REPO_ROOT / "configs" / "train.yaml"), str(node_override(tmp))]


def the_node(tmp: Path, metrics_url: str | None = None) -> NodeTarget:
    return resolve_node(
        "paper", REPO_ROOT / "configs" / "node.yaml", layers(tmp), metrics_url=metrics_url
    )


def seed_registry(node: NodeTarget) -> None:
    """A registry that knows the strategy (what a node that ran leaves behind)."""
    registry = Registry.open(node.registry_path, node.trader_id)
    registry.strategy(SID)
    registry.save(1)


def nothing_changed(tmp: Path, node: NodeTarget) -> list[str]:
    """Every file an accepted call could have written (none must exist)."""
    queues = [node.registry_path.parent / "overrides", tmp / "models" / "requests"]
    written = [str(p) for q in queues if q.exists() for p in q.rglob("*.json")]
    return written + ([str(node.kill_switch_path)] if node.kill_switch_path.exists() else [])


def unauthorized_total(body: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name == "ops_api_unauthorized_total"
    )


async def _client(app) -> TestClient:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def test_wrong_or_missing_token_is_401_counted_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = the_node(tmp_path)
    seed_registry(node)

    async def run() -> tuple[list[int], float, list[int]]:
        client = await _client(create_app([node], token=TOKEN))
        try:
            codes = []
            for path, body in STATE_CHANGING:
                for auth in BAD_AUTH:
                    headers = {"Authorization": auth} if auth is not None else {}
                    r = await client.post(path, json=body, headers=headers)
                    codes.append(r.status)
                    assert "error" in await r.json()
            counted = unauthorized_total(await (await client.get("/metrics")).text())
            reads = [
                (await client.get(p)).status
                for p in ("/strategy", f"/strategy/{SID}", "/killswitch", "/aggregate/pnl")
            ]
            return codes, counted, reads
        finally:
            await client.close()

    with caplog.at_level(logging.DEBUG):
        codes, counted, reads = asyncio.run(run())
    assert set(codes) == {401}
    assert counted == len(STATE_CHANGING) * len(BAD_AUTH)
    assert nothing_changed(tmp_path, node) == []
    assert read_registry(node.registry_path).strategies[SID].decisions == []
    assert reads == [200, 200, 200, 200]  # reading needs no token
    assert TOKEN not in caplog.text and "wrong" not in caplog.text  # no token is ever logged


def test_without_a_configured_token_state_changing_routes_are_off(tmp_path: Path) -> None:
    node = the_node(tmp_path)
    seed_registry(node)

    async def run() -> list[int]:
        client = await _client(create_app([node], token=None))
        try:
            return [
                (await client.post(p, json=b, headers={"Authorization": f"Bearer {TOKEN}"})).status
                for p, b in STATE_CHANGING
            ]
        finally:
            await client.close()

    assert set(asyncio.run(run())) == {403}
    assert nothing_changed(tmp_path, node) == []
    # and the server refuses to start on a public address unless told to
    assert ops_main(["--host", "0.0.0.0", "--override", str(node_override(tmp_path))]) == 2


def test_api_leaves_the_same_requests_as_the_clis(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Governance override and model request: the file the CLI writes, field for field (bar
    id, time and operator); the kill switch file says who and why; bad input is a 400."""
    node = the_node(tmp_path)
    seed_registry(node)
    registry = str(node.registry_path)
    overrides = node.registry_path.parent / "overrides"
    requests = tmp_path / "models" / "requests"
    common = ["--config", str(REPO_ROOT / "configs" / "node.yaml")]
    common += [a for layer in layers(tmp_path) for a in ("--override", layer)]
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def new_file(folder: Path, before: set[Path]) -> bytes:
        (path,) = set(folder.glob("*.json")) - before
        return path.read_bytes()

    async def run() -> dict:
        client = await _client(create_app([node], token=TOKEN))
        out: dict = {}
        try:
            for action, extra in (("throttle", {"scale": 0.3}), ("pause", {"flatten": True})):
                before = set(overrides.glob("*.json"))
                cli = ["--registry", registry, action, SID, "--reason", "drill"]
                cli += ["--scale", "0.3"] if action == "throttle" else ["--flatten"]
                assert registry_main(cli) == 0
                cli_file = new_file(overrides, before)
                before = set(overrides.glob("*.json"))
                r = await client.post(
                    f"/strategy/{SID}/{action}",
                    json={"reason": "drill", "operator": "alice", **extra},
                    headers=auth,
                )
                assert r.status == 202, await r.text()
                out[action] = (cli_file, new_file(overrides, before))
            assert promote_main(["reject", *common, "--strategy", SID, "--reason", "bad"]) == 0
            cli_file = new_file(requests, set())
            before = set(requests.glob("*.json"))
            r = await client.post(
                f"/strategy/{SID}/model/reject", json={"reason": "bad"}, headers=auth
            )
            assert r.status == 202, await r.text()
            out["reject"] = (cli_file, new_file(requests, before))
            bad = [
                await client.post(
                    f"/strategy/{SID}/throttle", json={"reason": "x", "scale": 2}, headers=auth
                ),
                await client.post(f"/strategy/{SID}/pause", json={"reason": " "}, headers=auth),
                await client.post(f"/strategy/{SID}/pause", json={"why": "x"}, headers=auth),
                await client.post("/strategy/Nope-9/pause", json={"reason": "x"}, headers=auth),
                await client.post(
                    f"/strategy/{SID}/model/rollback",
                    json={"reason": "x", "to": "v-none"},
                    headers=auth,
                ),
            ]
            out["bad"] = [(b.status, (await b.text())) for b in bad]
            r = await client.post(
                "/killswitch/on", json={"reason": "drill halt", "operator": "bob"}, headers=auth
            )
            out["on"] = (r.status, node.kill_switch_path.read_text())
            out["switch"] = await (await client.get("/killswitch")).json()
            r = await client.post("/killswitch/off", json={}, headers=auth)
            out["off"] = (r.status, node.kill_switch_path.exists())
        finally:
            await client.close()
        return out

    with caplog.at_level(logging.WARNING, logger=api_log.name):
        out = asyncio.run(run())
    # every refused request is in the operator's log, with its status and reason
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 5 and all("(400)" in line for line in refused), refused
    assert "unknown strategy 'Nope-9'" in refused[3]
    for action in ("throttle", "pause"):
        cli, api = (msgspec.json.decode(b, type=Override) for b in out[action])
        assert api.operator == "alice@ops-api"
        keep = ("id", "created_utc", "operator")
        assert msgspec.structs.replace(api, **{k: getattr(cli, k) for k in keep}) == cli
    cli, api = (msgspec.json.decode(b, type=LifecycleRequest) for b in out["reject"])
    assert api.operator == "ops-api"
    keep = ("id", "created_utc", "operator")
    assert msgspec.structs.replace(api, **{k: getattr(cli, k) for k in keep}) == cli
    statuses = [s for s, _ in out["bad"]]
    assert statuses == [400] * 5, out["bad"]
    assert "scale" in out["bad"][0][1] and "reason" in out["bad"][1][1]
    assert "unknown strategy 'Nope-9'" in out["bad"][3][1] and "v-none" in out["bad"][4][1]
    assert out["on"] == (202, "drill halt [operator bob@ops-api]\n")
    assert out["switch"]["nodes"]["paper"]["on"] is True
    assert out["off"] == (202, False)


def test_kill_switch_cli_writes_what_the_actor_reads(tmp_path: Path, capsys) -> None:
    """``python -m actors.kill_switch``: the file the KillSwitchActor polls (reason line with
    who, optional flatten line); a missing reason is one line and exit 2, nothing written."""
    path = tmp_path / "state" / "KILL_SWITCH"
    assert kill_switch_main(["on", "--path", str(path)]) == 2
    assert "one-line --reason" in capsys.readouterr().err and not path.exists()
    assert kill_switch_main(["on", "--path", str(path), "--reason", "halt", "--flatten"]) == 0
    lines = path.read_text().splitlines()
    assert lines[0].startswith("halt [operator ") and lines[1:] == ["flatten"]
    assert kill_switch_main(["off", "--path", str(path)]) == 0 and not path.exists()


def fake_node(values: dict[tuple[str, str, str], float]) -> MetricsHTTPServer:
    """Another venue's exporter: the node exporter's metric names, known values."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(name, name, ("venue", "strategy", "instrument"), registry=registry)
        for name in ("pnl_realized_total", "pnl_unrealized_total", "exposure_usd")
    }
    for (name, venue, strategy), value in values.items():
        gauges[name].labels(venue, strategy, "X.Y").set(value)
    server = MetricsHTTPServer("127.0.0.1", 0, lambda: generate_latest(registry), lambda: (1, ""))
    server.start()
    return server


def _metric(url: str, name: str, **labels: str) -> float | None:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    for f in text_string_to_metric_families(body):
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


class PaperNode(msgspec.Struct):
    proc: subprocess.Popen
    url: str
    node: NodeTarget
    other: MetricsHTTPServer
    log: Path  # the node's console output (a file: a pipe nobody reads could block the node)


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory):
    """A real offline paper node (subprocess, the user's command) that has opened a position,
    and a second exporter with known values standing in for another venue's node."""
    tmp = tmp_path_factory.mktemp("paper")
    # the stand-in binds first: bound after free_port() released the node's port, it could get it
    other = fake_node({
        ("pnl_realized_total", "BYBIT", "B-002"): 120.5,
        ("pnl_unrealized_total", "BYBIT", "B-002"): -20.25,
        ("exposure_usd", "BYBIT", "B-002"): -3000.0,
        ("exposure_usd", "BYBIT", "C-003"): 1000.0,
    })  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    longer = {"live": {"venues": {"replay": {"replay": {"n_bars": 200_000}}}}}
    override = node_override(tmp, longer, trainer=False)
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(override),
        "--run-dir", str(tmp / "run"), "--metrics-port", str(port), "--log-level", "WARNING",
    ]  # fmt: skip
    log = tmp / "node.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
    node = resolve_node("paper", REPO_ROOT / "configs" / "node.yaml", [str(override)],
                        metrics_url=url)  # fmt: skip
    running = PaperNode(proc, url, node, other, log)
    try:
        deadline = time.monotonic() + 120
        # until the strategy has decided and filled an order (the exporter zero-initialises its
        # series, so their presence alone says nothing)
        while (
            (_metric(url, "order_fills_total") or 0.0) < 1
            or _metric(url, "regime_state") is None
            or not node.registry_path.exists()
        ):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the paper node never opened a position"
            time.sleep(0.5)
        yield running
    finally:
        other.stop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node_log_until(paper: PaperNode, text: str, timeout: float = 15) -> bool:
    """Wait for ``text`` in the node's output (the node keeps running)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in paper.log.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def test_paper_node_steered_and_aggregated_over_http(paper: PaperNode) -> None:
    """The user's path: a real offline paper node; the ops API pauses its strategy (governance
    applies and records it, the node's metrics show it), flips its kill switch (the node logs the
    reason) and sums its PnL/exposure with another node's; an unreachable node is reported."""
    node, url, other = paper.node, paper.url, paper.other
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def run() -> dict:
        app = create_app(
            [node],
            token=TOKEN,
            scrape_only={
                "bybit": f"http://127.0.0.1:{other.port}/metrics",
                "down": f"http://127.0.0.1:{free_port()}/metrics",
            },
        )
        client = await _client(app)
        out: dict = {}
        try:
            r = await client.post(
                f"/strategy/{SID}/pause", json={"reason": "ops drill", "operator": "carol"},
                headers=auth,
            )  # fmt: skip
            out["pause"] = r.status
            end = time.monotonic() + 30
            while time.monotonic() < end:
                record = read_registry(node.registry_path).strategies[SID]
                if record.state == "paused" and record.manual is not None:  # the operator's
                    break
                await asyncio.sleep(0.5)
            out["status"] = await (await client.get(f"/strategy/{SID}")).json()
            r = await client.post("/killswitch/on", json={"reason": "ops api drill"},
                                  headers=auth)  # fmt: skip
            out["kill"] = r.status
            out["pnl"] = await (await client.get("/aggregate/pnl")).json()
            out["exposure"] = await (await client.get("/aggregate/exposure")).json()
        finally:
            await client.close()
        return out

    out = asyncio.run(run())
    paused_gauge = _metric(url, "strategy_governance_state", strategy=SID, state="paused")
    logged = node_log_until(paper, "Kill switch ON: ops api drill [operator ops-api]")
    assert out["pause"] == 202
    record = read_registry(node.registry_path).strategies[SID]
    (decision,) = [d for d in record.decisions if d.source == "operator"]
    assert (decision.action, decision.state) == ("pause", "paused")
    assert decision.reason == "operator carol@ops-api pause: ops drill"
    assert decision.operator == "carol@ops-api" and record.manual.reason == "ops drill"
    assert paused_gauge == 1.0
    status = out["status"]
    assert status["state"] == "paused" and status["trader_id"] == "HMM-001"
    assert status["regime"]["instrument"] == "BTCUSDT.BINANCE" and "pnl" in status
    assert status["manual_override"]["reason"] == "ops drill" and status["decisions"]
    assert out["kill"] == 202 and logged

    pnl, exposure = out["pnl"], out["exposure"]
    assert pnl["complete"] is False and exposure["complete"] is False
    down = {n["node"]: n for n in pnl["nodes"]}
    assert down["down"]["ok"] is False and down["paper"]["ok"] and down["bybit"]["ok"]
    assert pnl["by_venue"]["BYBIT"] == {"realized": 120.5, "unrealized": -20.25, "total": 100.25}
    assert pnl["by_strategy"]["B-002"]["total"] == 100.25
    mine = [r for r in pnl["rows"] if r["node"] == "paper"]
    assert mine and {(r["venue"], r["strategy"]) for r in mine} == {("BINANCE", SID)}
    assert pnl["total"]["total"] == pytest.approx(sum(r["total"] for r in pnl["rows"]))
    assert exposure["by_venue"]["BYBIT"] == {"net": -2000.0, "gross": 4000.0}
    assert exposure["by_strategy"][SID]["gross"] == abs(exposure["by_strategy"][SID]["net"])
    assert exposure["total"]["gross"] == pytest.approx(
        4000.0 + exposure["by_venue"]["BINANCE"]["gross"]
    )


FLEET_DASHBOARD = REPO_ROOT / "observability" / "grafana" / "dashboards" / "hmm-fleet.json"


def fleet_panel_queries() -> list[tuple[str, str]]:
    """(title, PromQL) of every panel of the fleet dashboard, ``$node`` meaning all nodes."""
    dash = json.loads(FLEET_DASHBOARD.read_text())
    assert {v["name"] for v in dash["templating"]["list"]} == {"node"}
    return [
        (p["title"], t["expr"].replace("$node", ".*"))
        for p in dash["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_fleet_dashboard_panels_return_data(paper: PaperNode, tmp_path: Path) -> None:
    """The Grafana fleet row, evaluated by a real Prometheus that scrapes the paper node (as
    node "paper") and the ops API: every panel returns data."""
    queries = fleet_panel_queries()
    assert len(queries) >= 8

    async def run() -> dict[str, list]:
        client = await _client(create_app([paper.node], token=TOKEN))
        prom_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "nautilus-node", "static_configs": [
                    {"targets": [paper.url.split("/")[2]], "labels": {"node": "paper"}}]},
                {"job_name": "ops-api", "static_configs": [
                    {"targets": [f"127.0.0.1:{client.server.port}"]}]},
            ],
        }  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with (tmp_path / "prometheus.log").open("w") as log:
            prom = subprocess.Popen(
                ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        results: dict[str, list] = {}
        try:
            refused = await client.post("/killswitch/on", json={"reason": "x"},
                                        headers={"Authorization": "Bearer nope"})  # fmt: skip
            assert refused.status == 401
            api = f"http://127.0.0.1:{prom_port}/api/v1/query"
            async with aiohttp.ClientSession() as session:
                end = time.monotonic() + 60
                while time.monotonic() < end and not (results and all(results.values())):
                    await asyncio.sleep(1)
                    for title, expr in queries:
                        try:
                            async with session.get(api, params={"query": expr}) as r:
                                body = await r.json()
                        except aiohttp.ClientError:
                            break  # Prometheus still starting
                        assert body["status"] == "success", (title, body)
                        results[title] = body["data"]["result"]
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            await client.close()
        return results

    results = asyncio.run(run())
    empty = [title for title, _ in queries if not results.get(title)]
    assert not empty, f"panels without data: {empty}"
    assert float(results["Nodes up"][0]["value"][1]) == 1.0


def test_python_m_ops_takes_the_token_from_the_environment_only(tmp_path: Path) -> None:
    """The user's command: ``OPS_API_TOKEN=... python -m ops``; a refused and an accepted call;
    neither the token nor the wrong one shows in its output."""
    node = the_node(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops", "--port", str(port),
         *[a for layer in layers(tmp_path) for a in ("--override", layer)]],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPS_API_TOKEN": TOKEN},
    )  # fmt: skip

    def post(auth: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/killswitch/on", method="POST",
            data=b'{"reason": "drill"}', headers={"Authorization": auth},
        )  # fmt: skip
        try:
            return urllib.request.urlopen(request, timeout=5).status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "python -m ops never answered"
                time.sleep(0.3)
        refused = post("Bearer not-the-token")
        assert not node.kill_switch_path.exists()
        accepted = post(f"Bearer {TOKEN}")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert (refused, accepted) == (401, 202), out
    assert node.kill_switch_path.read_text() == "drill [operator ops-api]\n"
    assert "refused POST /killswitch/{action}" in out and "kill switch on" in out
    assert TOKEN not in out and "not-the-token" not in out


def test_a_fleet_routes_each_call_to_the_node_running_the_strategy(tmp_path: Path) -> None:
    """Two nodes of configs/fleet/ (state moved to tmp): a strategy's override lands in its own
    node's folder, the kill switch reaches every node or the one named, unknown ids are 404."""
    fleet = REPO_ROOT / "configs" / "fleet"
    nodes = []
    for name, venue in (("paper", "replay"), ("bybit", "bybit_linear")):
        state = tmp_path / name / "state"
        layer = tmp_path / f"{name}.yaml"
        layer.write_text(yaml.safe_dump({"live": {"state_dir": str(state)}}))
        nodes.append(
            resolve_node(
                name,
                REPO_ROOT / "configs" / "node.yaml",
                [str(fleet / f"{name}.yaml"), str(layer)],
                venue,
            )  # fmt: skip
        )
    paper, bybit = nodes
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"reason": "drill", "force": True}

    async def run() -> list[int]:
        client = await _client(create_app(nodes, token=TOKEN))
        try:
            return [
                (await client.post("/strategy/HMMRegimeStrategy-201/pause", json=body,
                                   headers=auth)).status,
                (await client.post("/strategy/HMMRegimeStrategy-999/pause", json=body,
                                   headers=auth)).status,
                (await client.post("/killswitch/on?node=bybit", json={"reason": "one"},
                                   headers=auth)).status,
                int(paper.kill_switch_path.exists()),  # ?node=bybit reached bybit only
                (await client.post("/killswitch/on", json={"reason": "all"}, headers=auth)).status,
                (await client.post("/killswitch/on?node=nope", json={"reason": "x"},
                                   headers=auth)).status,
            ]  # fmt: skip
        finally:
            await client.close()

    codes = asyncio.run(run())
    assert codes == [202, 404, 202, 0, 202, 404]
    assert len(list((bybit.registry_path.parent / "overrides").glob("*.json"))) == 1
    assert not (paper.registry_path.parent / "overrides").exists()
    assert paper.kill_switch_path.read_text().startswith("all [")
    assert bybit.kill_switch_path.read_text().startswith("all [")
