"""HMM fit time and walk-forward wall time.

Fit: ``RegimeHMM`` (full covariance, the project's features, standardised) on 100k and 500k
synthetic bars, 3 and 4 states. To keep the whole benchmark within minutes each timed fit is ONE
EM run of a fixed number of iterations (``tol`` tiny, so it does not stop early): time per EM
iteration is the scale-free number, and the fit with the strategy's defaults (3 restarts x up to
100 iterations) costs at most 300 of those iterations.

Walk-forward: ``backtests.walk_forward.walk_forward`` over one year of synthetic 15-minute bars
(35,040 bars, written as a CSV and imported like any data file), the shipped node config,
60-day train / 14-day test rolling folds: every fold trains its model and runs a real
``BacktestNode`` over its test window.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from bench.data import BAR_TYPE, INSTRUMENT_ID, benchmark_frame
from hmm_strategy.features import FeatureSpec, feature_matrix
from hmm_strategy.model import RegimeHMM

BARS_PER_DAY_15M = 96


def fit_time(X: np.ndarray, n_states: int, n_iter: int) -> dict[str, Any]:
    model = RegimeHMM(n_states, n_restarts=1, n_iter=n_iter, tol=1e-12, random_state=0)
    cpu, wall = time.process_time(), time.perf_counter()
    model.fit(X)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    iterations = int(model.n_iter_)
    plain = plain_hmmlearn_fit(X, n_states, n_iter)
    return {
        "n_states": n_states,
        "rows": int(X.shape[0]),
        "em_iterations": iterations,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "ms_per_em_iteration": cpu / iterations * 1e3,
        "default_fit_upper_bound_s": cpu / iterations * 300,  # 3 restarts x 100 iterations
        "hmmlearn": plain,
        "vs_hmmlearn_per_iteration": (cpu / iterations) / plain["cpu_seconds_per_iteration"],
    }


def plain_hmmlearn_fit(X: np.ndarray, n_states: int, n_iter: int) -> dict[str, Any]:
    """The same EM in plain hmmlearn: ``GaussianHMM``, full covariance, the standardised
    features, the same number of iterations (``tol`` tiny): what ``RegimeHMM`` adds per EM
    iteration (its sticky prior, checks and restarts bookkeeping) against the library alone."""
    from hmmlearn.hmm import GaussianHMM

    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    model = GaussianHMM(
        n_states, covariance_type="full", n_iter=n_iter, tol=1e-12, random_state=0
    )
    cpu = time.process_time()
    model.fit(Z)
    cpu = time.process_time() - cpu
    iterations = max(int(model.monitor_.iter), 1)
    return {
        "em_iterations": iterations,
        "cpu_seconds": cpu,
        "cpu_seconds_per_iteration": cpu / iterations,
        "ms_per_em_iteration": cpu / iterations * 1e3,
    }


def fit_benchmarks(sizes: tuple[int, ...], n_iter: int, seed: int = 5) -> list[dict[str, Any]]:
    frame = benchmark_frame(max(sizes) + 100, seed)
    X_all = feature_matrix(frame, FeatureSpec())
    out = []
    for size in sizes:
        for k in (3, 4):
            out.append(fit_time(X_all[:size], k, n_iter))
    return out


def write_bars_csv(path: Path, n_bars: int, seed: int = 21) -> int:
    """Synthetic 15-minute bars as an ``ohlcv_csv`` file; returns the bar count."""
    frame = benchmark_frame(n_bars, seed)
    frame.with_columns(
        timestamp=pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC")
    ).select("timestamp", "open", "high", "low", "close", "volume").write_csv(path)
    return frame.height


def walk_forward_benchmark(
    work_dir: Path,
    *,
    days: int = 365,
    train: str = "60d",
    test: str = "14d",
    max_folds: int | None = None,
    seed: int = 21,
) -> dict[str, Any]:
    from backtests.walk_forward import WalkForwardSpec, walk_forward
    from hmm_strategy.config import DEFAULT_CONFIG, load_node_settings

    work_dir.mkdir(parents=True, exist_ok=True)
    csv = work_dir / "bars_15m.csv"
    bars = write_bars_csv(csv, days * BARS_PER_DAY_15M, seed)
    override = {
        "backtest": {
            "catalog_path": str(work_dir / "catalog"),
            "output_dir": str(work_dir / "runs"),
            "data": [
                {
                    "source": str(csv),
                    "format": "ohlcv_csv",
                    "instrument_id": INSTRUMENT_ID,
                    "bar_type": BAR_TYPE,
                }
            ],
        },
    }
    path = work_dir / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [path])
    spec = WalkForwardSpec(train=train, test=test, max_folds=max_folds)
    wall = time.perf_counter()
    summary = walk_forward(settings, work_dir / "walk_forward", spec)
    wall = time.perf_counter() - wall
    return {
        "bars": bars,
        "days": days,
        "train": train,
        "test": test,
        "folds": int(summary["folds"]),
        "wall_seconds": wall,
        "seconds_per_fold": wall / max(int(summary["folds"]), 1),
        "includes_catalog_import": True,
    }


def _walk_forward_task(work_dir: str, seed: int, days: int, train: str, test: str,
                       max_folds: int | None) -> dict[str, Any]:
    """One series' walk-forward in a Dask worker process (BLAS pinned to one thread)."""
    from bench import pin_blas_threads

    pin_blas_threads()
    cpu = time.process_time()
    out = walk_forward_benchmark(
        Path(work_dir), days=days, train=train, test=test, max_folds=max_folds, seed=seed
    )
    out["cpu_seconds"] = time.process_time() - cpu
    return out


def dask_walk_forward(
    work_dir: Path,
    n_series: int,
    *,
    days: int,
    train: str,
    test: str,
    max_folds: int | None,
    workers: int = 2,
) -> dict[str, Any]:
    """``walk_forward_benchmark`` over ``n_series`` synthetic series (one per instrument stand-in:
    its own seed, CSV and catalog) as tasks on a Dask ``LocalCluster`` of ``workers``
    single-threaded worker processes; wall time of the whole, and the tasks' own times."""
    from dask.distributed import Client, LocalCluster

    work_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        started = time.perf_counter()
        futures = [
            client.submit(
                _walk_forward_task, str(work_dir / f"series-{i:02d}"), 100 + i, days, train,
                test, max_folds, pure=False,
            )
            for i in range(n_series)
        ]
        tasks = client.gather(futures)
        compute = time.perf_counter() - started
    wall = time.perf_counter() - wall
    task_wall = sum(t["wall_seconds"] for t in tasks)
    return {
        "cluster": f"dask.distributed LocalCluster, {workers} worker processes x 1 thread",
        "series": n_series,
        "days": days,
        "train": train,
        "test": test,
        "folds": sum(t["folds"] for t in tasks),
        "wall_seconds": wall,
        "compute_wall_seconds": compute,
        "sum_of_task_wall_seconds": task_wall,
        "parallel_speedup": task_wall / compute,
        "tasks": tasks,
    }
