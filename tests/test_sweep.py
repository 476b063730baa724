"""Parameter sweeps over walk-forward folds: identical results inline, on a pool and on Dask."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from backtests.sweep import (
    SweepSpec,
    aggregate,
    combinations,
    nested,
    parse_grid_arg,
    split_grid,
    sweep,
)
from backtests.walk_forward import WalkForwardSpec
from tests.test_train import real_bars, settings_for, write_csv

GRID = {"fit.n_states": [2, 3], "policy.min_confidence": [0.6, 0.8]}
WF = WalkForwardSpec(train="10d", test="3d", start="2024-01-01", max_folds=2)
FOLD_COLUMNS = ["combo", "fold", "test_start", "pnl", "sharpe", "max_drawdown_pct", "orders"]


def test_grid_helpers() -> None:
    assert combinations(GRID)[1] == {"fit.n_states": 2, "policy.min_confidence": 0.8}
    assert len(combinations(GRID)) == 4
    assert split_grid(GRID) == ({"fit.n_states": [2, 3]}, {"policy.min_confidence": [0.6, 0.8]})
    assert nested({"fit.n_states": 2, "fit.seed": 1, "policy.long_only": True}) == {
        "fit": {"n_states": 2, "seed": 1},
        "policy": {"long_only": True},
    }
    assert parse_grid_arg("features.vol_window=10,20") == ("features.vol_window", [10, 20])
    assert parse_grid_arg("policy.long_only=true,false")[1] == [True, False]
    with pytest.raises(ValueError, match="rank_by"):
        SweepSpec(grid=GRID, rank_by="luck")
    with pytest.raises(ValueError, match="non-empty list"):
        SweepSpec(grid={"fit.n_states": []})


def test_ranking_puts_errors_last_and_breaks_ties_by_combination() -> None:
    def row(combo: int, fold: int, pnl: float, error: str | None = None) -> dict:
        curve = {"ts": [fold * 10 + 1, fold * 10 + 2], "pnl": [0.0, pnl], "close": [1.0, 1.0]}
        return {
            "combo": combo,
            "fold": fold,
            "params": {"k": combo},
            "error": error,
            "pnl": pnl,
            "mean_loglik": 1.0,
            "decisions": 2,
            "test_bars": 2,
            "orders": 1,
            "capital": 1000.0,
            "interval_ns": 900 * 10**9,
            "curve": curve,
        }

    rows = [
        row(0, 0, 5.0),
        row(0, 1, -1.0),
        row(1, 0, 0.0, "ValueError: bad"),
        row(1, 1, 9.0),
        row(2, 0, 5.0),
        row(2, 1, -1.0),
        row(3, 0, 6.0),
        row(3, 1, -1.0),
    ]
    ranked = aggregate(rows, "pnl")
    assert [r["combo"] for r in ranked] == [3, 0, 2, 1]
    assert ranked[-1]["error"] == "ValueError: bad" and ranked[0]["pnl"] == 5.0
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["combo"] for r in aggregate(rows, "max_drawdown_pct")][-1] == 1


@pytest.fixture(scope="module")
def sweeps(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same sweep inline (1 worker), on 2 local processes and on a Dask LocalCluster."""
    from distributed import LocalCluster

    tmp = tmp_path_factory.mktemp("sweep")
    source = write_csv(real_bars(data_dir, "2024-01-01", "2024-01-18"), tmp / "btc.csv")
    settings = settings_for(tmp, source)
    spec = SweepSpec(grid=GRID, rank_by="sharpe")
    out = {
        "inline": sweep(settings, tmp / "inline", spec, WF, workers=1),
        "pool": sweep(settings, tmp / "pool", spec, WF, workers=2),
    }
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out["dask"] = sweep(settings, tmp / "dask", spec, WF, scheduler=cluster.scheduler_address)
    out["dirs"] = {k: tmp / k for k in ("inline", "pool", "dask")}
    return out


def test_sweep_ranks_every_combination_out_of_sample(sweeps: dict) -> None:
    table = sweeps["inline"]["table"]
    assert table.height == 4 and table["error"].null_count() == 4
    assert table["rank"].to_list() == [1, 2, 3, 4]
    assert table["sharpe"].to_list() == sorted(table["sharpe"].to_list(), reverse=True)
    assert sorted(zip(table["fit.n_states"], table["policy.min_confidence"], strict=True)) == [
        (2, 0.6),
        (2, 0.8),
        (3, 0.6),
        (3, 0.8),
    ]
    rows = sweeps["inline"]["rows"]
    assert len(rows) == 8 and all(r["test_start"] > r["train_last_bar"] for r in rows)
    # the policy grid shares one model per (n_states, fold); n_states changes the model
    by_key = {(r["params"]["fit.n_states"], r["fold"]): set() for r in rows}
    for r in rows:
        by_key[(r["params"]["fit.n_states"], r["fold"])].add(r["model_version"])
    assert all(len(v) == 1 for v in by_key.values())
    assert {r["n_states"] for r in rows} == {2, 3}
    doc = json.loads((sweeps["dirs"]["inline"] / "sweep.json").read_text())
    assert doc["tasks"] == 4 and len(doc["folds"]) == 2
    assert pl.read_csv(sweeps["dirs"]["inline"] / "results.csv").height == 4
    assert (sweeps["dirs"]["inline"] / "results.md").read_text().startswith("| rank |")


@pytest.mark.parametrize("other", ["pool", "dask"])
def test_results_do_not_depend_on_workers(sweeps: dict, other: str) -> None:
    assert sweeps[other]["table"].equals(sweeps["inline"]["table"])
    a = pl.read_csv(sweeps["dirs"]["inline"] / "folds.csv").select(FOLD_COLUMNS)
    b = pl.read_csv(sweeps["dirs"][other] / "folds.csv").select(FOLD_COLUMNS)
    assert a.equals(b)
    versions = [r["model_version"] for r in sweeps["inline"]["rows"]]
    assert [r["model_version"] for r in sweeps[other]["rows"]] == versions
