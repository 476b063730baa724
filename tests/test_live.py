"""`python -m hmm_strategy.live`: one config for backtest and live, every venue builds offline,
the offline default runs end to end and stops on SIGINT, and paper decisions equal the backtest's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from backtests.run import run_backtest
from hmm_strategy.config import (
    REPO_ROOT,
    backtest_run_config,
    load_node_settings,
    trading_node_config,
    venue_settings,
)
from hmm_strategy.live import main, parse_args, resolve_settings
from hmm_strategy.synthetic import generate_regime_bars
from tests.helpers import free_port, live_override, merged, override_file

# Building a node without running it leaves adapter coroutines un-awaited (NautilusTrader's own).
pytestmark = [
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning"),
]

VENUES = ["replay", "binance_spot", "binance_futures", "bybit_linear", "ib"]
DUMMY_KEYS = {
    "BINANCE_API_KEY": "dummy-key",
    "BINANCE_API_SECRET": "dummy-secret",
    "BYBIT_API_KEY": "dummy-key",
    "BYBIT_API_SECRET": "dummy-secret",
    "IBKR_ACCOUNT_ID": "DU0000000",
}
FILL_COLUMNS = ["ts_last", "side", "filled_qty", "avg_px"]


def fast_override(tmp: Path, replay: dict | None = None, extra: dict | None = None) -> Path:
    """Small, fast replay and warm-up; everything else is the shipped config."""
    data = live_override(
        tmp,
        replay_bars=2_500,
        replay=replay,
        strategies=[{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}}}],
    )
    return override_file(tmp, merged(data, extra or {}), "fast.yaml")


@pytest.mark.parametrize("venue_name", VENUES)
@pytest.mark.parametrize("mode", ["paper", "live"])
def test_every_venue_builds_offline_with_dummy_keys(
    venue_name: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if venue_name == "replay" and mode == "live":
        pytest.skip("the replay feed has no live execution (tested below)")
    for key, value in DUMMY_KEYS.items():
        monkeypatch.setenv(key, value)
    from venues.builders import build_trading_node
    from venues.secrets import require_secrets

    args = parse_args(["--venue", venue_name, "--override", str(fast_override(tmp_path))])
    settings, name = resolve_settings(args, dict(os.environ))
    import msgspec

    venue = msgspec.structs.replace(venue_settings(settings, name), mode=mode)
    require_secrets(venue)
    config = trading_node_config(settings, venue, tmp_path / "run")
    node = build_trading_node(config, venue)  # node.build() inside; nothing connects
    try:
        assert node.is_built
        assert node.trader.strategy_ids()
    finally:
        node.dispose()


def test_strategy_and_actor_configs_are_identical_in_backtest_and_live(tmp_path: Path) -> None:
    settings = load_node_settings(overrides=[fast_override(tmp_path)])  # logs, state in tmp
    run_dir = tmp_path / "run"
    state_dir = settings.live.state_dir  # {state_dir} is a path of the environment, like run_dir
    backtest = backtest_run_config(settings, run_dir, state_dir=state_dir)
    live = trading_node_config(settings, venue_settings(settings, "replay"), run_dir)
    assert backtest.engine.strategies == live.strategies
    assert backtest.engine.actors == live.actors[: len(backtest.engine.actors)]
    assert [a.actor_path for a in live.actors[len(backtest.engine.actors) :]] == []


def test_live_mode_needs_trading_enabled(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for key, value in DUMMY_KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TRADING_ENABLED", raising=False)
    assert main(["--venue", "binance_spot", "--mode", "live"]) == 2
    assert "TRADING_ENABLED=true" in capsys.readouterr().err


def test_live_mode_missing_secret_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # the default state/ folder is relative: keep the checkout's out
    monkeypatch.setenv("TRADING_ENABLED", "true")
    for key in DUMMY_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert main(["--venue", "bybit_linear", "--mode", "live"]) == 2
    assert "BYBIT_API_KEY" in capsys.readouterr().err


def test_replay_cannot_route_live_orders(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TRADING_ENABLED", "true")
    assert main(["--mode", "live"]) == 2
    assert "replay" in capsys.readouterr().err


def test_unknown_venue_profile(capsys) -> None:
    assert main(["--venue", "kraken"]) == 2
    assert "kraken" in capsys.readouterr().err


def test_offline_default_runs_trades_and_stops_on_sigint(tmp_path: Path) -> None:
    """The user's command in a subprocess: starts, trades on sandbox fills, SIGINT stops it."""
    port = free_port()
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "hmm_strategy.live",
        "--override", str(fast_override(tmp_path)),
        "--run-dir", str(run_dir), "--metrics-port", str(port), "--log-level", "WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        submitted = 0.0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and submitted < 2:
            time.sleep(0.5)
            assert proc.poll() is None, proc.stdout.read()
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            except OSError:
                continue
            submitted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.decode().splitlines()
                if line.startswith("orders_submitted_total{")
            )
        assert submitted >= 2, "the strategy never traded in the paper node"
        decisions = pl.read_csv(run_dir / "decisions.csv")
        while decisions.height <= 100 and time.monotonic() < deadline:  # warm start: the orders
            time.sleep(0.2)  # can come within the first 100 live bars; the feed goes on
            decisions = pl.read_csv(run_dir / "decisions.csv")
        assert decisions.height > 100
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert took < 10, f"shutdown took {took:.1f}s"
    assert "stopped cleanly" in out
    fills = pl.read_csv(run_dir / "fills.csv")
    assert fills.height >= 2
    assert (run_dir / "positions.csv").exists()
    assert list((tmp_path / "logs").glob("*")), "no log file written"


# A governance policy that acts within a short replay (the shipped one needs weeks of losses):
# pauses with a flatten, resumes on probation, throttles and releases.
ACTIVE_POLICY = {
    "schema_version": 1,
    "sample_interval": "15m",
    "rules": [
        {"name": "drawdown", "metric": "drawdown", "op": ">", "threshold": 0.01,
         "action": "pause", "flatten": True, "cooldown": "6h",
         "resume_when": {"metric": "shadow_return", "window": "12h", "op": ">", "threshold": 0.0},
         "resume_scale": 0.5, "probation": "1d"},
        {"name": "losing", "metric": "sharpe", "window": "1d", "op": "<", "threshold": 0.0,
         "action": "throttle", "scale": 0.5, "hysteresis": 0.25, "cooldown": "4h"},
    ],
}  # fmt: skip


def test_paper_node_decides_like_the_backtest_over_the_same_bars(tmp_path: Path) -> None:
    """Backtest/live parity: the same config over the same bars, once through BacktestNode and
    once through the TradingNode with the replay feed (as fast as it goes) and sandbox fills.
    Governance and the allocator act during the run (pauses with flattens, throttles, daily
    budgets): in the paper node they sample on the data's time, so they act at the same bars."""
    bars = generate_regime_bars(2_500, seed=11)
    csv = tmp_path / "bars.csv"
    bars.with_columns(
        timestamp=pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC")
    ).select("timestamp", "open", "high", "low", "close", "volume").write_csv(csv)
    policy = tmp_path / "governance.yaml"
    policy.write_text(yaml.safe_dump(ACTIVE_POLICY))
    bar_type = "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"
    extra = {
        "backtest": {
            "catalog_path": str(tmp_path / "catalog"),
            "data": [{"source": str(csv), "instrument_id": "BTCUSDT.BINANCE",
                      "bar_type": bar_type}],
        },
        "actors": [{"name": "governance", "config": {"policy_path": str(policy)}}],
    }  # fmt: skip
    override = fast_override(
        tmp_path, replay={"source": "csv", "path": str(csv), "bar_type": bar_type}, extra=extra
    )
    settings = load_node_settings(REPO_ROOT / "configs" / "node.yaml", [override])
    backtest_dir = run_backtest(settings, tmp_path / "backtest", tearsheet=False)

    paper_dir = tmp_path / "paper"
    code = main([
        "--override", str(override), "--run-dir", str(paper_dir),
        "--metrics-port", "0", "--exit-when-replayed", "--log-level", "ERROR",
    ])  # fmt: skip
    assert code == 0
    backtest = pl.read_csv(backtest_dir / "decisions.csv")
    paper = pl.read_csv(paper_dir / "decisions.csv")
    assert backtest.height == paper.height > 1_000
    # identical decisions: same bars, same probabilities (bit for bit), same targets
    assert paper.equals(backtest)
    # the in-run model is named after the bar it was fitted up to (the one before the first
    # decision) and how many bars that was, in both runs alike
    ts = bars["ts_event"].to_list()
    fit_bar = ts.index(backtest["ts_event"][0]) - 1
    stamp = pl.from_epoch(pl.Series([ts[fit_bar]]), time_unit="ns").dt.strftime("%Y%m%dT%H%M%SZ")
    assert backtest["model_version"].unique().to_list() == [f"inrun-{stamp[0]}-{fit_bar + 1}"]
    # identical governance: the same commands (action, scale, flatten, reason) at the same times
    bt_events = pl.read_csv(backtest_dir / "events.csv")
    paper_events = pl.read_csv(paper_dir / "events.csv")
    bt_gov = bt_events.filter(pl.col("kind") == "GovernanceCommand")
    paper_gov = paper_events.filter(pl.col("kind") == "GovernanceCommand")
    actions = set(bt_gov["detail"].str.extract(r"action=(\w+)").to_list())
    assert {"pause", "throttle"} <= actions, bt_gov  # the policy really acted
    assert "flatten=True" in " ".join(bt_gov["detail"].to_list())
    assert paper_gov.equals(bt_gov)
    assert paper_events.equals(bt_events)  # breakers and data gaps too
    # fills: same orders at the same prices, also after governance acted; the paper run
    # flattens on stop like the backtest (reports sort by client order id, which embeds the
    # wall clock in paper: sort by fill time)
    bt_fills = pl.read_csv(backtest_dir / "fills.csv").sort("ts_last").select(FILL_COLUMNS)
    paper_fills = pl.read_csv(paper_dir / "fills.csv").sort("ts_last").select(FILL_COLUMNS)
    first_action = bt_gov["ts_event"].min()
    fill_ns = bt_fills["ts_last"].str.to_datetime(time_zone="UTC").dt.epoch("ns")
    assert (fill_ns > first_action).sum() >= 5
    same = ["ts_last", "side", "filled_qty"]
    assert paper_fills.select(same).equals(bt_fills.select(same))
    # Documented tolerance: the backtest's simulated book from bars can fill a large order over
    # a few price ticks (slippage); the sandbox fills at the bar-close trade. <= 1 bp apart.
    rel = (paper_fills["avg_px"] / bt_fills["avg_px"] - 1.0).abs()
    assert rel.max() <= 1e-4
