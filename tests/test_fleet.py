"""One node per venue, side by side: configs/fleet/ builds every node offline with distinct trader
ids, strategy ids, state folders and metrics ports, and the compose file, the Prometheus fleet
config and the ops API's fleet file all name the same nodes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from hmm_strategy.config import REPO_ROOT, ConfigError, trading_node_config, venue_settings
from hmm_strategy.live import parse_args, resolve_settings
from ops.node import check_distinct, load_fleet, resolve_node
from tests.helpers import live_override, override_file

FLEET = REPO_ROOT / "configs" / "fleet"
DUMMY_KEYS = {
    "BINANCE_API_KEY": "dummy-key",
    "BINANCE_API_SECRET": "dummy-secret",
    "BYBIT_API_KEY": "dummy-key",
    "BYBIT_API_SECRET": "dummy-secret",
    "IBKR_ACCOUNT_ID": "DU0000000",
}
pytestmark = [
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning"),
]


def fleet_entries() -> list[dict]:
    return yaml.safe_load((FLEET / "fleet.yaml").read_text())["nodes"]


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the fleet file's paths are relative to the repository


def test_fleet_nodes_are_distinct(in_repo) -> None:
    nodes = load_fleet(FLEET / "fleet.yaml")
    assert [n.venue for n in nodes] == ["replay", "binance_futures", "bybit_linear", "ib"]
    for values in (
        [n.trader_id for n in nodes],
        [n.registry_path.parent.parent for n in nodes],  # state_dir
        [n.kill_switch_path for n in nodes],
        [n.metrics_url for n in nodes],
        [s for n in nodes for s in n.strategy_ids],
    ):
        assert len(set(values)) == len(nodes), values


def test_two_nodes_with_one_trader_id_are_refused(in_repo) -> None:
    a = resolve_node("a", "configs/node.yaml", [str(FLEET / "bybit.yaml")], "bybit_linear")
    b = resolve_node("b", "configs/node.yaml", [str(FLEET / "bybit.yaml")], "bybit_linear")
    with pytest.raises(ConfigError, match="trader_id 'HMM-BYBIT' appears on two nodes"):
        check_distinct([a, b])


@pytest.mark.parametrize("entry", fleet_entries(), ids=lambda e: e["name"])
def test_every_fleet_node_builds_offline(
    entry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_repo
) -> None:
    """Exactly the node's command line (venue profile + fleet layer), folders moved to tmp."""
    for key, value in DUMMY_KEYS.items():
        monkeypatch.setenv(key, value)
    from venues.builders import build_trading_node

    dirs = override_file(tmp_path, live_override(tmp_path), "dirs.yaml")
    argv = ["--venue", entry["venue"]]
    argv += [a for o in [*entry["overrides"], str(dirs)] for a in ("--override", o)]
    settings, name = resolve_settings(parse_args(argv), dict(os.environ))
    fleet_layer = yaml.safe_load(Path(entry["overrides"][0]).read_text())
    assert settings.trader_id == fleet_layer["trader_id"]
    assert settings.live.metrics.port == fleet_layer["live"]["metrics"]["port"]
    venue = msgspec.structs.replace(venue_settings(settings, name), mode="paper")
    node = build_trading_node(trading_node_config(settings, venue, tmp_path / "run"), venue)
    try:
        assert node.trader.id.value == fleet_layer["trader_id"]
        tag = fleet_layer["strategies"][0]["config"]["order_id_tag"]
        assert [s.value for s in node.trader.strategy_ids()] == [f"HMMRegimeStrategy-{tag}"]
    finally:
        node.dispose()


def test_compose_prometheus_and_ops_name_the_same_nodes() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    prom = yaml.safe_load((REPO_ROOT / "observability" / "prometheus.fleet.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "nautilus-node"]
    scraped = {
        sc["labels"]["node"]: sc["targets"] for sc in job["static_configs"]
    }  # node -> ["127.0.0.1:port"]
    for entry in fleet_entries():
        layer = yaml.safe_load(Path(REPO_ROOT / entry["overrides"][0]).read_text())
        port = layer["live"]["metrics"]["port"]
        assert scraped[entry["name"]] == [f"127.0.0.1:{port}"], entry["name"]
        command = compose["services"][entry["name"]]["command"]
        assert command == ["hmm_strategy.live", "--venue", entry["venue"],
                           *[a for o in entry["overrides"] for a in ("--override", o)]]  # fmt: skip
    ops = compose["services"]["ops"]["command"]
    assert ops[:3] == ["ops", "--fleet", "configs/fleet/fleet.yaml"]
    dash = REPO_ROOT / "observability" / "grafana" / "dashboards" / "hmm-fleet.json"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert dash.exists() and home.endswith(dash.name)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_fleet_prometheus_config_is_valid() -> None:
    done = subprocess.run(
        ["promtool", "check", "config", "prometheus.fleet.yml"],
        cwd=REPO_ROOT / "observability", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
