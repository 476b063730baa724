"""Real backtests on real data through the user's path: node config -> BacktestNode -> reports."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import polars as pl
import pytest
import yaml
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig

from backtests.report import REPORT_FILES
from backtests.run import main, run_backtest
from hmm_strategy.config import DEFAULT_CONFIG, ComponentSpec, load_node_settings

FILL_COLUMNS = ["client_order_id", "side", "filled_qty", "avg_px", "ts_last"]


def settings_for(tmp: Path, extra: dict | None = None):
    """The shipped node config with the catalog/output in ``tmp`` (and optional overrides)."""
    extra = dict(extra or {})
    backtest = {"catalog_path": str(tmp / "catalog"), "output_dir": str(tmp)}
    override = {**extra, "backtest": {**backtest, **extra.get("backtest", {})}}
    path = tmp / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    return load_node_settings(DEFAULT_CONFIG, [path])


@pytest.fixture(scope="module")
def btc_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("btc")
    settings = settings_for(tmp)
    return {
        "full": run_backtest(settings, tmp / "full", tearsheet=True),
        "again": run_backtest(settings, tmp / "again", tearsheet=False, baselines=False),
        "prefix": run_backtest(
            settings, tmp / "prefix", end="2024-05-01", tearsheet=False, baselines=False
        ),
    }


def test_btcusdt_15m_backtest_trades_and_writes_every_report(btc_runs: dict[str, Path]) -> None:
    run = btc_runs["full"]
    for name in REPORT_FILES:
        assert (run / name).stat().st_size > 0, f"{name} missing or empty"
    stats = json.loads((run / "stats.json").read_text())
    assert stats["bars"] == 34_945
    assert stats["total_orders"] > 10 and stats["total_positions"] > 5
    assert "USDT" in stats["stats_pnls"]
    fills = pl.read_csv(run / "fills.csv")
    assert fills.height == stats["total_orders"]
    decisions = pl.read_csv(run / "decisions.csv")
    probs = decisions.select(pl.col("p0", "p1", "p2").cast(pl.Float64).fill_null(0.0)).to_numpy()
    assert abs(probs.sum(axis=1) - 1.0).max() < 1e-9
    assert "plotly" in (run / "regimes.html").read_text()[:5_000_000].lower()
    # a full year, compared with buy-and-hold and EMACross on the same capital
    assert set(stats["comparison"]) == {"strategy", "buy_and_hold", "ema_cross"}
    assert stats["comparison"]["strategy"]["pnl"] == pytest.approx(
        stats["stats_pnls"]["USDT"]["PnL (total)"], abs=1e-6
    )
    assert stats["period"]["data_last_bar"] == decisions["ts_event"].max()


def test_backtest_is_deterministic(btc_runs: dict[str, Path]) -> None:
    a, b = btc_runs["full"], btc_runs["again"]
    assert (a / "decisions.csv").read_bytes() == (b / "decisions.csv").read_bytes()
    fills_a = pl.read_csv(a / "fills.csv").select(FILL_COLUMNS)
    assert fills_a.equals(pl.read_csv(b / "fills.csv").select(FILL_COLUMNS))
    pnl_a = json.loads((a / "stats.json").read_text())["stats_pnls"]
    assert pnl_a == json.loads((b / "stats.json").read_text())["stats_pnls"]


def test_no_look_ahead_prefix_run_decides_identically(btc_runs: dict[str, Path]) -> None:
    """Decisions on the first N bars do not change when later bars exist."""
    full = pl.read_csv(btc_runs["full"] / "decisions.csv")
    prefix = pl.read_csv(btc_runs["prefix"] / "decisions.csv")
    assert 1_000 < prefix.height < full.height
    assert prefix.equals(full.head(prefix.height))
    fills_full = pl.read_csv(btc_runs["full"] / "fills.csv").select(FILL_COLUMNS)
    fills_prefix = pl.read_csv(btc_runs["prefix"] / "fills.csv").select(FILL_COLUMNS)
    # the prefix run flattens at its end (close_positions_on_stop); every earlier fill matches
    n = fills_prefix.height - 1
    assert n > 0 and fills_prefix.head(n).equals(fills_full.head(n))


def test_fx_backtest_on_fxcm_gbpusd(tmp_path: Path) -> None:
    extra = {
        "strategies": [
            {
                "path": "hmm_strategy.strategy:HMMRegimeStrategy",
                "config": {
                    "instrument_id": "GBP/USD.SIM",
                    "bar_type": "GBP/USD.SIM-1-MINUTE-BID-EXTERNAL",
                    "order_id_tag": "FX",
                    "notional": 100_000.0,
                    "max_notional": 100_000.0,
                    "fit": {"warmup_bars": 2_000},
                    "policy": {"min_confidence": 0.8, "min_hold_bars": 30},
                },
            }
        ],
        "risk": {"max_notional_per_order": {}},
        "backtest": {
            "data": [
                {
                    "source": "${HMM_DATA_DIR}/fx_or_equity/gbpusd-m1-bid-2012.csv",
                    "instrument_id": "GBP/USD.SIM",
                    "bar_type": "GBP/USD.SIM-1-MINUTE-BID-EXTERNAL",
                }
            ],
            "venues": [{"name": "SIM", "starting_balances": ["1000000 USD"]}],
        },
    }
    settings = settings_for(tmp_path, extra)
    run = run_backtest(settings, tmp_path / "fx", tearsheet=False)
    stats = json.loads((run / "stats.json").read_text())
    assert stats["bars"] == 30_117
    assert stats["total_orders"] > 0 and "USD" in stats["stats_pnls"]
    assert pl.read_csv(run / "decisions.csv")["instrument_id"].unique().to_list() == ["GBP/USD.SIM"]


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("backtest:\n  catalog_pth: x\n")
    assert main(["--config", str(DEFAULT_CONFIG), "--override", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "catalog_pth" in err and "bad.yaml" in err


class FailAtBarConfig(ActorConfig, frozen=True):
    bars: int = 7_000


class FailAtBar(Actor):
    """Raises in the middle of a backtest, at its ``bars``-th bar."""

    def on_start(self) -> None:
        self.seen = 0
        self.msgbus.subscribe("data.bars.*", self.on_any_bar)

    def on_any_bar(self, bar) -> None:
        self.seen += 1
        if self.seen == self.config.bars:
            raise RuntimeError(f"test failure at {bar.ts_event}")


def test_a_failed_run_keeps_every_decision_made_before_the_failure(tmp_path: Path) -> None:
    """The recorder holds up to BATCH_ROWS rows; a run that fails mid-way (or is interrupted)
    stops its strategies and actors as a finished run does, so they are written, and the
    run's own error is the one raised (not the node's dispose refusing a running trader)."""
    settings = settings_for(tmp_path)
    crash = ComponentSpec(path="tests.test_backtest:FailAtBar", config={"bars": 7_000})
    settings = msgspec.structs.replace(settings, actors=[*settings.actors, crash])
    with pytest.raises(RuntimeError, match="test failure at") as info:
        run_backtest(settings, tmp_path / "run", end="2024-03-20", tearsheet=False, baselines=False)
    crash_ts = int(str(info.value).rsplit(" ", 1)[-1])
    decisions = pl.read_csv(tmp_path / "run" / "decisions.csv")
    need = settings.strategies[0].config["fit"]["warmup_bars"] + 49  # + the feature windows
    last = decisions["ts_event"].max()
    assert last in (crash_ts - 15 * 60 * 10**9, crash_ts)  # the strategy saw the bar or not
    # the first decision on bar need + 1, then one a bar up to the last handled
    assert decisions.height == 7_000 - need - (last != crash_ts)
    assert (tmp_path / "run" / "events.csv").read_text().startswith("ts_event,kind,")
