"""The observability bundle against a REAL Prometheus scraping a backtest-driven MetricsExporter.

``promtool`` checks the config and rules and runs the rule unit tests. Then a real Prometheus is
started on loopback (temp storage, free port, 1 s scrapes, config generated from the bundle's
``prometheus.yml`` with the node target pointed at the test's exporter) while a real
BacktestEngine feeds the exporter in chunks, so counters and histograms move between scrapes.
Every PromQL expression of every dashboard panel, and of every alert rule, is then evaluated
through ``/api/v1/query`` and must return data.

Alert conditions (``X > 0.05``) return nothing while the alert is silent, so each alert
expression is evaluated with every top-level comparison turned into its ``bool`` form
(``X > bool 0.05``): that returns one 0/1 sample per watched series, so an empty answer means
the metrics the rule needs are missing, not that the alert is quiet.

Skipped with a message only when ``prometheus``/``promtool`` are missing AND ``$CI`` is unset.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from nautilus_trader.model.data import BarType

from actors.metrics import MetricsExporter, MetricsExporterConfig
from tests.helpers import free_port, live_override, merged, override_file
from tests.test_metrics import build_engine, http_get, make_bars, parse

REPO_ROOT = Path(__file__).resolve().parents[1]
OBS = REPO_ROOT / "observability"
DASHBOARD = OBS / "grafana" / "dashboards" / "hmm-trading-overview.json"
DATASOURCES = OBS / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = OBS / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
COMPOSE = OBS / "docker-compose.observability.yml"
ALERTS = OBS / "rules" / "alerts.yml"
NODE_JOB = "nautilus-node"
# Grafana variables -> what "All" and a short rate window mean for a query sent straight to
# Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$venue": ".*", "$strategy": ".*"}
CHUNKS, CHUNK_BARS = 6, 80


def require_tools() -> None:
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if missing:
        msg = f"{' and '.join(missing)} not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}: CI must run the real-Prometheus tests")
        pytest.skip(msg)


def promtool(*args: str) -> subprocess.CompletedProcess:
    require_tools()
    return subprocess.run(["promtool", *args], cwd=OBS, capture_output=True, text=True, timeout=60)


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def provisioned_uid() -> str:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return source["uid"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title + refId, PromQL with Grafana variables substituted) for every target."""
    out = []
    for panel in load_dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for var, val in GRAFANA_VARS.items():
                expr = expr.replace(var, val)
            assert "$" not in expr, f"unhandled Grafana variable in {expr!r}"
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


_CMP = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def boolify(expr: str) -> str:
    """Turn every comparison outside label matchers and strings into its ``bool`` form."""
    out, depth, quote, i = [], 0, None, 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(expr):
                out.append(expr[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0 and (m := _CMP.match(expr, i)):
            out.append(f"{m.group(1)} bool")
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# -- static checks (no Prometheus needed) ---------------------------------------------------------


def test_boolify_only_touches_comparisons():
    assert boolify('up{job="a"} == 0') == 'up{job="a"} == bool 0'
    assert (
        boolify('x{a!="b", c=~"d"} >= 3 and y < 1') == 'x{a!="b", c=~"d"} >= bool 3 and y < bool 1'
    )
    assert boolify("a > bool 1") == "a > bool 1"
    assert boolify('a{b=">"} / c') == 'a{b=">"} / c'


def test_dashboard_json_structure():
    dash = load_dashboard()
    assert dash["title"] == "HMM • Trading Overview"
    uid = provisioned_uid()
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        assert p["datasource"]["uid"] == uid, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid, (p["title"], t["refId"])
            assert t["expr"].strip()
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == uid
    # every metric family the exporter exports is shown somewhere
    exprs = " ".join(e for _, e in panel_queries())
    exporter = MetricsExporter(MetricsExporterConfig(port=0))
    families = {m.name for m in exporter.registry.collect()}
    assert families
    for name in families:
        shown = name in exprs or f"{name}_total" in exprs or f"{name}_bucket" in exprs
        assert shown, f"metric {name} is on no dashboard panel"


def _targets(config: dict, job: str) -> list[str]:
    (found,) = [j for j in config["scrape_configs"] if j["job_name"] == job]
    return found["static_configs"][0]["targets"]


def test_compose_works_on_docker_desktop_and_linux(tmp_path):
    """No host network (Docker Desktop has none): a bridge network, the host reached as
    host.docker.internal (``host-gateway`` on Linux), UIs published on loopback only."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert "network_mode" not in service, name
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), (name, port)
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"compose mounts missing {source}"
    for name in ("prometheus", "alertmanager"):  # they talk to the node / webhook on the host
        assert "host.docker.internal:host-gateway" in services[name]["extra_hosts"], name
    mounts = {n: dict(v.split(":")[:2] for v in svc["volumes"]) for n, svc in services.items()}

    # compose/prometheus.yml is prometheus.yml with the addresses a container sees
    host_cfg = yaml.safe_load((OBS / "prometheus.yml").read_text())
    box_cfg = yaml.safe_load((OBS / "compose" / "prometheus.yml").read_text())
    assert mounts["prometheus"]["./compose/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["prometheus"]["./rules"] == "/etc/prometheus/rules"
    default = MetricsExporterConfig()
    assert _targets(host_cfg, NODE_JOB) == [f"{default.host}:{default.port}"]
    assert _targets(box_cfg, NODE_JOB) == [f"host.docker.internal:{default.port}"]
    am_port = services["alertmanager"]["ports"][0].split(":")[-1]
    am_targets = [c["static_configs"][0]["targets"] for c in box_cfg["alerting"]["alertmanagers"]]
    assert am_targets == [[f"alertmanager:{am_port}"]]
    for cfg in (host_cfg, box_cfg):
        cfg.pop("alerting")
        for job in cfg["scrape_configs"]:
            job["static_configs"][0]["targets"] = []
    assert host_cfg == box_cfg, "compose/prometheus.yml and prometheus.yml differ"
    (tmp_path / "rules").symlink_to(OBS / "rules")
    shutil.copy(OBS / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    res = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr

    # compose/alertmanager.yml: the same, the webhook on the host
    host_am = yaml.safe_load((OBS / "alertmanager.yml").read_text())
    box_am = yaml.safe_load((OBS / "compose" / "alertmanager.yml").read_text())
    assert mounts["alertmanager"]["./compose/alertmanager.yml"] == (
        "/etc/alertmanager/alertmanager.yml"
    )
    host_url = host_am["receivers"][0]["webhook_configs"][0]["url"]
    box_url = box_am["receivers"][0]["webhook_configs"][0]["url"]
    assert box_url == host_url.replace("127.0.0.1", "host.docker.internal") != host_url
    box_am["receivers"][0]["webhook_configs"][0]["url"] = host_url
    assert host_am == box_am, "compose/alertmanager.yml and alertmanager.yml differ"

    # Grafana: the datasource is the compose service, same uid; dashboards where the provider
    # looks
    graf = mounts["grafana"]
    (host_ds,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    (box_ds,) = yaml.safe_load((OBS / "compose" / "grafana-datasource.yml").read_text())[
        "datasources"
    ]
    prom_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert box_ds.pop("url") == f"http://prometheus:{prom_port}"
    host_url = host_ds.pop("url")
    assert host_ds == box_ds
    assert graf["./compose/grafana-datasource.yml"].startswith(
        "/etc/grafana/provisioning/datasources/"
    )
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert graf["./grafana/dashboards"] == provider["options"]["path"]
    assert graf["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    # the host-run datasource points at the host-run Prometheus's documented address
    assert urllib.parse.urlsplit(host_url).netloc == "127.0.0.1:9090"


def test_promtool_check_config():
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_rules():
    res = promtool("check", "rules", "rules/alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_test_rules():
    res = promtool("test", "rules", "rules/alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


# -- a real Prometheus scraping a backtest-driven exporter -----------------------------------------


def start_prometheus(
    tmp: Path, target_port: int, alertmanager: str | None = None
) -> tuple[subprocess.Popen, str, Path]:
    """A real Prometheus on loopback with the bundle's config, its node job pointed at
    ``target_port``, 1 s scrapes and the bundle's alert rules (the config checked by promtool).
    Alerts go to ``alertmanager`` (host:port), else nowhere (never to a stranger's :9093)."""
    prom_port = free_port()
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    if alertmanager is None:
        del config["alerting"]
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert NODE_JOB in jobs, f"bundle prometheus.yml has no {NODE_JOB!r} job"
    jobs[NODE_JOB]["static_configs"][0]["targets"] = [f"127.0.0.1:{target_port}"]
    if "prometheus" in jobs:
        jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    res = promtool("check", "config", str(config_path))
    assert res.returncode == 0, res.stdout + res.stderr
    log = tmp / "prometheus.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{prom_port}", log


def _query(base: str, expr: str) -> dict:
    status, body = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    data = json.loads(body)
    assert status == 200 and data["status"] == "success", f"{expr!r}: {body[:500]!r}"
    return data["data"]


def _wait(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(prometheus base url, exporter, exporter port) with a few seconds of real scrapes."""
    require_tools()
    tmp = tmp_path_factory.mktemp("prom")
    port = free_port()
    engine, exporter, _, bar_type = build_engine(
        MetricsExporterConfig(
            serve="always", port=port, refresh_interval_secs=60.0, stale_after_secs=120.0
        ),
        bars=make_bars(BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"), CHUNK_BARS),
    )
    proc, base, log = start_prometheus(tmp, port)
    try:
        engine.run(streaming=True)  # first chunk: the exporter serves from here on

        def ready():
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {log.read_text()[-3000:]}")
            try:
                return http_get(f"{base}/-/ready", timeout=1)[0] == 200
            except OSError:
                return False

        _wait(ready, 30, "prometheus /-/ready", log)
        # targets are applied a few seconds after start: feed the rest only once scrapes run
        _wait(
            lambda: _query(base, f'up{{job="{NODE_JOB}"}} == 1')["result"], 30, "first scrape", log
        )
        for k in range(1, CHUNKS):  # more bars between scrapes: counters and histograms move
            time.sleep(1.1)
            engine.clear_data()
            engine.add_data(make_bars(bar_type, CHUNK_BARS, first=k * CHUNK_BARS))
            engine.run(streaming=True)
        _wait(
            lambda: _query(base, f'count_over_time(up{{job="{NODE_JOB}"}}[1m]) >= {CHUNKS + 2}')[
                "result"
            ],
            30,
            "enough scrapes of the exporter",
            log,
        )
        yield base, exporter, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        engine.end()
        engine.dispose()


def test_target_is_up(stack):
    base, _, port = stack
    status, body = http_get(f"{base}/api/v1/targets")
    targets = json.loads(body)["data"]["activeTargets"]
    node = [t for t in targets if t["labels"]["job"] == NODE_JOB]
    assert [t["health"] for t in node] == ["up"], node
    assert node[0]["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"


def test_every_dashboard_panel_returns_data(stack):
    base, _, _ = stack
    empty, all_nan = [], []
    for title, expr in panel_queries():
        result = _query(base, expr)["result"]
        if not result:
            empty.append((title, expr))
        elif not any(math.isfinite(float(r["value"][1])) for r in result):
            all_nan.append((title, expr))
    assert not empty, f"panels with no data: {empty}"
    assert not all_nan, f"panels with only NaN: {all_nan}"


def test_latency_quantiles_reflect_the_histogram(stack):
    base, exporter, _ = stack
    s = parse(exporter.render())
    # the backtest latency model acks at the next 1-minute bar: every observation is 60 s
    count = sum(v for (n, _), v in s.items() if n == "submit_to_ack_ms_count")
    total = sum(v for (n, _), v in s.items() if n == "submit_to_ack_ms_sum")
    assert count > 0 and total / count == pytest.approx(60_000)
    expr = "histogram_quantile(0.5, sum by (le) (rate(submit_to_ack_ms_bucket[1m])))"
    (sample,) = _query(base, expr)["result"]
    assert 30_000 < float(sample["value"][1]) <= 60_000  # inside the (30 s, 60 s] bucket


def test_every_alert_expression_returns_data(stack):
    base, _, _ = stack
    rules = alert_rules()
    assert len(rules) >= 6
    empty = []
    for rule in rules:
        _query(base, rule["expr"])  # the real condition parses and evaluates
        if not _query(base, boolify(rule["expr"]))["result"]:
            empty.append((rule["alert"], boolify(rule["expr"])))
    assert not empty, f"alert rules watching no series: {empty}"


def test_rules_are_loaded_and_evaluate_cleanly(stack):
    base, _, _ = stack
    names = {rule["alert"] for rule in alert_rules()}

    def evaluated():
        groups = json.loads(http_get(f"{base}/api/v1/rules")[1])["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = all(not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if done and {r["name"] for r in rules} == names else None

    rules = _wait(evaluated, 15, "every rule evaluated")
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad


def test_template_variables_have_values(stack):
    base, _, _ = stack
    for var in load_dashboard()["templating"]["list"]:
        query = var["query"]["query"]
        m = re.fullmatch(r"label_values\((?:(\w+),\s*)?(\w+)\)", query)
        assert m, f"unsupported variable query {query!r}"
        metric, label = m.groups()
        if metric:
            result = _query(base, f"count by ({label}) ({metric})")["result"]
            values = [r["metric"][label] for r in result]
        else:
            values = json.loads(http_get(f"{base}/api/v1/label/{label}/values")[1])["data"]
        assert values, f"variable {var['name']} has no values"


def test_scrape_time_with_every_series(stack):
    """Measure /metrics with every series present; the number goes into the bench report."""
    base, exporter, port = stack
    body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    n_series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    families = {m.name for m in exporter.registry.collect()}
    names = {n for (n, _) in parse(body)}
    present = (
        names | {n.removesuffix("_total") for n in names} | {n.rsplit("_", 1)[0] for n in names}
    )
    assert families <= present, f"series missing from the scrape: {families - present}"
    http_ms, render_ms = [], []
    for _ in range(100):
        t0 = time.perf_counter()
        http_get(f"http://127.0.0.1:{port}/metrics")
        http_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        exporter.render()
        render_ms.append((time.perf_counter() - t0) * 1e3)
    prom = _query(base, f'max_over_time(scrape_duration_seconds{{job="{NODE_JOB}"}}[1m])')
    prom_ms = float(prom["result"][0]["value"][1]) * 1e3
    http_med = statistics.median(http_ms)
    http_p95 = sorted(http_ms)[94]
    print(
        f"\nSCRAPE {n_series} series, {len(body)} bytes: HTTP GET /metrics median "
        f"{http_med:.2f} ms p95 {http_p95:.2f} ms; render() median "
        f"{statistics.median(render_ms):.2f} ms; Prometheus scrape_duration max "
        f"{prom_ms:.2f} ms"
    )
    assert http_med > 0  # the number is reported by bench/, never asserted as a time here


def start_paper_node(
    tmp: Path, port: int, extra: dict | None = None, log_to: Path | None = None
) -> subprocess.Popen:
    """The offline paper node (``python -m hmm_strategy.live``) serving metrics on ``port``; a
    fast replay, a short warm-up, and ``extra`` merged into its override file. ``log_to``: its
    console log from WARNING up goes to that file (else only errors, discarded)."""
    override = live_override(
        tmp,
        replay_bars=6_000,
        replay={"speed": 200},
        strategies=[{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}}}],
        # Governance samples on bar time, so on this synthetic series the shipped policy pauses
        # and flattens the strategy for days of replayed time (as a backtest does); the position
        # panels need a position whenever Prometheus looks, so this stack governs with no rules.
        actors=[{"name": "governance", "config": {"policy_path": str(tmp / "policy.yaml")}}],
    )
    (tmp / "policy.yaml").write_text(yaml.safe_dump({"schema_version": 1, "rules": []}))
    override_file(tmp, merged(override, extra or {}), "fast.yaml")
    out = subprocess.DEVNULL if log_to is None else log_to.open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "hmm_strategy.live", "--override", str(tmp / "fast.yaml"),
             "--metrics-port", str(port), "--run-dir", str(tmp / "run"),
             "--log-level", "ERROR" if log_to is None else "WARNING"],
            cwd=tmp, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    finally:
        if log_to is not None:
            out.close()


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 30) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def node_stack(tmp_path_factory):
    """A real Prometheus scraping the offline paper node."""
    require_tools()
    tmp = tmp_path_factory.mktemp("node")
    port = free_port()
    node = start_paper_node(tmp, port)
    proc, base, log = start_prometheus(tmp, port)
    try:

        def traded():
            if node.poll() is not None:
                raise AssertionError("the paper node exited early")
            try:
                return _query(base, "sum(orders_submitted_total) > 1")["result"]
            except (OSError, ValueError, AssertionError):  # Prometheus still starting
                return None

        _wait(traded, 90, "the paper node's orders in Prometheus", log)
        _wait(lambda: _query(base, f'count_over_time(up{{job="{NODE_JOB}"}}[1m]) >= 8')["result"],
              30, "enough scrapes of the node", log)  # fmt: skip
        yield base
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_paper_node_feeds_every_dashboard_panel(node_stack):
    """The real thing: the offline paper node, scraped by Prometheus, fills every panel."""
    empty = [(t, e) for t, e in panel_queries() if not _query(node_stack, e)["result"]]
    assert not empty, f"panels with no data from the paper node: {empty}"


def test_paper_node_feeds_every_alert_rule(node_stack):
    empty = [
        (r["alert"], boolify(r["expr"]))
        for r in alert_rules()
        if not _query(node_stack, boolify(r["expr"]))["result"]
    ]
    assert not empty, f"alert rules watching no series of the paper node: {empty}"


def test_paper_node_times_submit_to_ack_on_the_wall_clock(node_stack):
    """Replay events carry bar time, so event timestamps gave 0 ms for every paper order; the
    exporter times submit -> ack itself, so the paper node's latencies are real (and > 0)."""
    count = float(_query(node_stack, "sum(submit_to_ack_ms_count)")["result"][0]["value"][1])
    total_ms = float(_query(node_stack, "sum(submit_to_ack_ms_sum)")["result"][0]["value"][1])
    assert count > 0 and total_ms > 0


def test_paper_node_series_exist_from_the_first_scrape(node_stack):
    """Issue 15: 20 s after start the order, PnL, exposure and latency series were still absent
    (dashboards said "No data"); now they are in the very first scrape Prometheus took."""
    result = _query(node_stack, f'up{{job="{NODE_JOB}"}}[10m]')["result"]
    first = min(float(ts) for r in result for ts, v in r["values"] if v == "1")
    for name in (
        "orders_submitted_total",
        "orders_denied_total",
        "pnl_realized_total",
        "pnl_unrealized_total",
        "exposure_usd",
        "submit_to_ack_ms_count",
        "breaker_trips_total",
        "market_data_last_bar_epoch",
    ):
        params = urllib.parse.urlencode({"query": f"count({name})", "time": f"{first:.3f}"})
        body = json.loads(http_get(f"{node_stack}/api/v1/query?{params}")[1])
        assert body["data"]["result"], f"{name} missing from the first scrape"
