"""Walk-forward on real BTCUSDT bars through the real backtest engine: out of sample only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from backtests.walk_forward import WalkForwardSpec, main, make_folds, walk_forward
from hmm_strategy.artifacts import load_model
from hmm_strategy.train import to_ns
from tests.test_train import real_bars, settings_for, write_csv

DAY = 86_400 * 10**9
BAR = 15 * 60 * 10**9
WARMUP = 49  # FeatureSpec(20, 50).warmup_bars
COMPARED = (
    "model_version",
    "train_first_bar",
    "train_last_bar",
    "test_start",
    "test_end",
    "run_start",
    "decisions",
    "orders",
    "pnl",
    "sharpe",
    "max_drawdown_pct",
    "mean_loglik",
)


def test_fold_layout_rolling_and_expanding() -> None:
    ts = np.arange(0, 40 * DAY, BAR, dtype=np.int64) + BAR
    rolling = make_folds(ts, WalkForwardSpec(train="10d", test="7d"), WARMUP)
    assert [f.test_start for f in rolling] == [ts[0] + 10 * DAY + k * 7 * DAY for k in range(4)]
    for f in rolling:
        assert f.train_end == f.test_start - 1 < f.test_start <= f.test_end
        assert f.test_end - f.test_start + 1 == 7 * DAY
        assert f.train_start == f.test_start - 10 * DAY
        i0 = int(np.searchsorted(ts, f.test_start))
        assert f.run_start == ts[i0 - WARMUP] > f.train_start  # warm-up from the past only
    expanding = make_folds(ts, WalkForwardSpec(train="10d", test="7d", mode="expanding"), WARMUP)
    assert [f.train_start for f in expanding] == [ts[0]] * 4
    # appending data adds folds, never changes existing ones; an incomplete window is no fold
    spec = WalkForwardSpec(train="10d", test="7d")

    def appended(n_bars: int) -> np.ndarray:
        return np.concatenate([ts, ts[-1] + BAR * np.arange(1, n_bars + 1)])

    assert make_folds(appended(4 * 96), spec, WARMUP) == rolling  # 5th window incomplete
    five = make_folds(appended(7 * 96), spec, WARMUP)
    assert five[:4] == rolling and len(five) == 5
    with pytest.raises(ValueError, match="no complete fold"):
        make_folds(ts, WalkForwardSpec(train="30d", test="20d"), WARMUP)
    with pytest.raises(ValueError, match="cannot parse interval"):
        WalkForwardSpec(train="a while")


@pytest.fixture(scope="module")
def runs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same walk-forward on Jan 1 - Feb 6 (CLI) and on data extending to Mar 1."""
    tmp = tmp_path_factory.mktemp("wf")
    short = write_csv(real_bars(data_dir, "2024-01-01", "2024-02-06"), tmp / "short.csv")
    long = write_csv(real_bars(data_dir, "2024-01-01", "2024-03-01"), tmp / "long.csv")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    settings_for(tmp / "a", short)
    argv = [
        "--override",
        str(tmp / "a" / "override.yaml"),
        "--train",
        "21d",
        "--test",
        "5d",
        "--start",
        "2024-01-01",
        "--out",
        str(tmp / "a" / "wf"),
    ]
    assert main(argv) == 0
    spec = WalkForwardSpec(train="21d", test="5d", start="2024-01-01", max_folds=3)
    appended = walk_forward(settings_for(tmp / "b", long), tmp / "b" / "wf", spec)
    return {"a": tmp / "a" / "wf", "b": tmp / "b" / "wf", "appended": appended}


def test_walk_forward_reports_out_of_sample_folds(runs: dict) -> None:
    out = runs["a"]
    folds = pl.read_csv(out / "folds.csv")
    assert folds.height == 3
    assert folds["test_start"].to_list() == [
        "2024-01-22T00:00:00+00:00",
        "2024-01-27T00:00:00+00:00",
        "2024-02-01T00:00:00+00:00",
    ]
    assert (folds["test_bars"] == 5 * 96).all() and (folds["decisions"] == 5 * 96).all()
    assert folds["orders"].sum() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 3 and summary["test_bars"] == 3 * 5 * 96
    assert summary["pnl"] == pytest.approx(folds["pnl"].sum())
    equity = pl.read_csv(out / "equity.csv")
    assert equity.height == 3 * 5 * 96 and equity["ts_event"].is_sorted()
    assert equity["pnl"][-1] == pytest.approx(summary["pnl"])
    assert (out / "folds.md").read_text().startswith("| fold |")
    html = (out / "walk_forward.html").read_text()
    assert "plotly" in html[:3_000_000].lower()
    assert '"name":"buy and hold"' in html and '"name":"ema cross"' in html  # baselines drawn


def test_no_fold_sees_its_future(runs: dict) -> None:
    for r in runs["appended"]["fold_results"]:
        _, meta = load_model(r["artifact"])
        assert meta.data_range[1] == r["train_last_bar"] < r["test_start"]
        assert meta.data_range[0] >= r["train_start"]
        run = Path(r["artifact"]).parent / "run"
        decisions = pl.read_csv(run / "decisions.csv")
        assert decisions["ts_event"].min() == r["test_start"]  # first decision = first test bar
        assert decisions["ts_event"].max() <= r["test_end"]
        assert (decisions["model_version"] == r["model_version"]).all()
        stats = json.loads((run / "stats.json").read_text())
        assert stats["bars"] == r["test_bars"] + WARMUP  # warm-up bars precede the window
        # the marked-to-market PnL from the fills equals the engine's (flat at the end)
        assert r["pnl"] == pytest.approx(r["engine_pnl"], abs=1e-6)


def test_results_unchanged_when_later_data_is_appended(runs: dict) -> None:
    a = pl.read_csv(runs["a"] / "folds.csv")
    b = pl.read_csv(runs["b"] / "folds.csv")
    assert a.equals(b)
    for fold in range(3):
        da = (runs["a"] / f"fold-{fold:03d}" / "run" / "decisions.csv").read_bytes()
        db = (runs["b"] / f"fold-{fold:03d}" / "run" / "decisions.csv").read_bytes()
        assert da == db
    sa = json.loads((runs["a"] / "summary.json").read_text())
    sb = json.loads((runs["b"] / "summary.json").read_text())
    assert {k: sa[k] for k in ("pnl", "sharpe", "orders")} == {
        k: sb[k] for k in ("pnl", "sharpe", "orders")
    }
    assert {k for k in COMPARED} <= set(runs["appended"]["fold_results"][0])


def test_cli_rejects_bad_windows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--train", "forever", "--out", str(tmp_path)]) == 2
    assert "train window: cannot parse interval" in capsys.readouterr().err
    assert main(["--test", "0d", "--out", str(tmp_path)]) == 2
    assert "test window: interval must be positive, got '0d'" in capsys.readouterr().err
    assert to_ns("2024-01-01") % DAY == 0


def test_continuous_walk_forward_carries_positions_across_folds(
    runs: dict, data_dir: Path, tmp_path: Path
) -> None:
    """One run over the same folds: each window is decided by its own fold's model (switched in
    just before its first bar), positions cross the seams, buy-and-hold buys once, and the
    folds' slices add up to the run."""
    source = write_csv(real_bars(data_dir, "2024-01-01", "2024-02-06"), tmp_path / "short.csv")
    spec = WalkForwardSpec(train="21d", test="5d", start="2024-01-01")
    summary = walk_forward(
        settings_for(tmp_path, source), tmp_path / "wf", spec, continuous=True
    )
    folds = summary["fold_results"]
    separate = runs["appended"]["fold_results"]
    assert len(folds) == len(separate) == 3
    # the same models, trained on the same windows, as the fold-by-fold walk-forward
    assert [r["model_version"] for r in folds] == [r["model_version"] for r in separate]
    decisions = pl.read_csv(tmp_path / "wf" / "run" / "decisions.csv")
    assert decisions["ts_event"].min() == folds[0]["test_start"]  # nothing decided in warm-up
    for r in folds:
        _, meta = load_model(r["artifact"])
        assert meta.data_range[1] < r["test_start"]
        window = decisions.filter(pl.col("ts_event").is_between(r["test_start"], r["test_end"]))
        assert window.height == r["test_bars"] == 5 * 96
        assert set(window["model_version"]) == {r["model_version"]}
    # slices add up to the one run, for the strategy and the baselines
    whole = summary["comparison"]
    assert sum(r["pnl"] for r in folds) == pytest.approx(whole["strategy"]["pnl"], abs=1e-6)
    for name in ("buy_and_hold", "ema_cross"):
        assert sum(r["comparison"][name]["pnl"] for r in folds) == pytest.approx(
            whole[name]["pnl"], abs=1e-6
        )
    assert whole["buy_and_hold"]["trades"] <= 1  # bought once, not once per fold
    equity = pl.read_csv(tmp_path / "wf" / "equity.csv")
    assert equity["pnl"][-1] == pytest.approx(whole["strategy"]["pnl"], abs=1e-6)
    # positions cross the seams: buy-and-hold is held through every one, and the strategy's
    # position only changes at a seam by an order it decided on the new fold's first bar
    fills = pl.read_csv(tmp_path / "wf" / "run" / "fills.csv")
    fill_ts = set(
        pl.Series(fills["ts_last"]).str.to_datetime(time_zone="UTC").dt.epoch("ns").to_list()
    )
    for a, b in zip(folds, folds[1:], strict=False):
        assert a["curve"]["buy_and_hold_position"][-1] == b["curve"]["buy_and_hold_position"][0] > 0
        before, after = a["curve"]["strategy_position"][-1], b["curve"]["strategy_position"][0]
        assert before == after or b["test_start"] in fill_ts, (before, after)
