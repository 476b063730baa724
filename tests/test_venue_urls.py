"""Venue endpoint overrides (``base_url_*``): checked in the settings, handed to the adapters, and
for Bybit, whose adapter has no simulator here, proven to reach a local server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hmm_strategy.config import REPO_ROOT
from tests.helpers import live_override, override_file
from tests.sim_node import sim_config, sim_state
from venues.errors import VenueConfigError
from venues.settings import load_venue_settings
from venues.sim.server import BackgroundVenue


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "replay", "base_url_http": "http://127.0.0.1:1"}, "cannot be set for kind"),
        ({"kind": "bybit_linear", "base_url_ws_api": "ws://127.0.0.1:1"}, "cannot be set"),
        ({"kind": "binance_spot", "base_url_http": "ws://127.0.0.1:1"}, "must start with http"),
        ({"kind": "binance_spot", "base_url_ws": "http://127.0.0.1:1"}, "must start with ws"),
    ],
)
def test_bad_url_overrides_are_refused(data: dict, message: str) -> None:
    with pytest.raises(VenueConfigError, match=message):
        load_venue_settings(data)


def test_binance_urls_reach_the_adapter_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    from venues.builders import build_venue_clients

    monkeypatch.setenv("BINANCE_API_KEY", "k")
    monkeypatch.setenv("BINANCE_API_SECRET", "s")
    settings = load_venue_settings({
        "kind": "binance_spot", "mode": "live", "base_url_http": "http://127.0.0.1:9",
        "base_url_ws": "ws://127.0.0.1:9", "base_url_ws_api": "ws://127.0.0.1:9/ws-api/v3",
    })  # fmt: skip
    clients = build_venue_clients(settings, ["BTCUSDT.BINANCE"], [])
    data, exe = clients.data_clients["BINANCE"], clients.exec_clients["BINANCE"]
    assert (data.base_url_http, data.base_url_ws) == ("http://127.0.0.1:9", "ws://127.0.0.1:9")
    assert (exe.base_url_http, exe.base_url_ws) == ("http://127.0.0.1:9",
                                                    "ws://127.0.0.1:9/ws-api/v3")  # fmt: skip
    assert "127.0.0.1:9" in settings.data_source_id  # state on another venue is never resumed


def test_bybit_rest_override_reaches_a_local_server(tmp_path) -> None:
    """Bybit's data client sends its first REST request to ``base_url_http``; the local server
    (the Binance simulator, which does not speak Bybit) answers 404 and the node refuses to
    start: exit 3, its last line says why."""
    with BackgroundVenue(sim_config()) as venue:
        data = live_override(tmp_path, live={
            "timeout_connection": 3.0,
            "venues": {"bybit_linear": {"base_url_http": venue.urls["base_url_http"]}},
        })  # fmt: skip
        override = override_file(tmp_path, data, "bybit.yaml")
        proc = subprocess.run(
            [sys.executable, "-m", "hmm_strategy.live", "--venue", "bybit_linear",
             "--override", str(override), "--run-dir", str(tmp_path / "run"),
             "--metrics-port", "0", "--log-level", "ERROR"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)},
        )  # fmt: skip
        requests = sim_state(venue)["requests"]
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trading node is not trading")
    assert requests.get("GET /v5/market/instruments-info", 0) >= 1
