"""Parameter sweeps over walk-forward folds, on all local cores or on a Dask cluster.

``python -m backtests.sweep --grid fit.n_states=2,3 --grid policy.min_confidence=0.6,0.8
--train 60d --test 14d [--workers N | --scheduler tcp://host:8786]``

Grid keys are dotted paths into the strategy's config (``fit.n_states``, ``features.vol_window``,
``policy.min_confidence``...). Every combination is evaluated out of sample on the same
walk-forward folds (``backtests.walk_forward``: train on the fold's past, real backtest on its
test window) and ranked by its stitched out-of-sample metric.

One task = one (model settings, fold): it trains the fold's model once and backtests every
evaluation-only combination (keys outside ``features.``/``fit.``, e.g. policy thresholds) with
it, so a policy grid costs backtests, not refits.

Reproducibility: a task is a pure function of its payload -- its seed is the config's
``fit.seed`` (or the grid's), never a worker's state; BLAS/OpenMP run single-threaded inside a
task; model versions are content digests; results are sorted by (combination, fold) before they
are aggregated and ranked (ties by combination index). The results are therefore identical with
1 or N local processes and on any Dask cluster, which the test-suite checks.

Why Dask.distributed for the cluster: pure Python, installs from PyPI (``pip install
"dask[distributed]"``), the same ``Future`` API as ``concurrent.futures``, a ``LocalCluster``
that tests can start in-process, and ``dask scheduler`` / ``dask worker`` to span machines
without a resource manager. Ray would pull a large binary runtime for no gain here. Workers must
be able to import this project and read the catalog and the output folder at the same paths
(shared filesystem); the metrics come back as data.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import yaml
from tqdm import tqdm

from backtests.metrics import day_returns, deflated_sharpe, sharpe_moments
from backtests.walk_forward import (
    Fold,
    WalkForwardSpec,
    _warmup_bars,
    add_walk_forward_arguments,
    make_folds,
    markdown_table,
    run_fold,
    stitch,
    summarize,
    train_fold,
    walk_forward_spec,
)
from hmm_strategy import cli
from hmm_strategy.config import (
    ConfigError,
    NodeSettings,
    add_config_arguments,
    load_node_settings,
)
from hmm_strategy.train import iso, load_frame, strategy_target

MODEL_PREFIXES = ("features.", "fit.")
METRICS = ("sharpe", "pnl", "return_pct", "mean_loglik", "max_drawdown_pct")


class SweepSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A grid over the strategy config (dotted keys -> values) and the ranking metric."""

    grid: dict[str, list[Any]]
    rank_by: str = "sharpe"

    def __post_init__(self) -> None:
        if not self.grid:
            raise ValueError("the grid is empty: give at least one key with values")
        for key, values in self.grid.items():
            if not key or key.startswith(".") or key.endswith(".") or key == "model_path":
                raise ValueError(f"bad grid key {key!r}: use a dotted config path, e.g. fit.seed")
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid key {key!r} needs a non-empty list of values")
        if self.rank_by not in METRICS:
            raise ValueError(f"rank_by must be one of {METRICS}, was {self.rank_by!r}")


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"fit.n_states": 2}`` -> ``{"fit": {"n_states": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """All combinations, in grid order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def split_grid(grid: Mapping[str, Sequence[Any]]) -> tuple[dict, dict]:
    """(keys that change the model, keys that only change the evaluation)."""
    model = {k: v for k, v in grid.items() if k.startswith(MODEL_PREFIXES)}
    evaluation = {k: v for k, v in grid.items() if not k.startswith(MODEL_PREFIXES)}
    return model, evaluation


# --------------------------------------------------------------------------------- the tasks
def absolute_paths(settings: NodeSettings) -> NodeSettings:
    """Catalog and data paths made absolute, so a worker in another folder reads the same."""
    bt = settings.backtest
    if bt is None:
        raise ConfigError("the node config has no 'backtest' section")
    data = [msgspec.structs.replace(d, source=str(Path(d.source).resolve())) for d in bt.data]
    bt = msgspec.structs.replace(
        bt,
        catalog_path=str(Path(bt.catalog_path).resolve()),
        output_dir=str(Path(bt.output_dir).resolve()),
        data=data,
    )
    return msgspec.structs.replace(settings, backtest=bt)


def build_tasks(
    settings: NodeSettings,
    strategy: str | None,
    spec: SweepSpec,
    folds: Sequence[Fold],
    out_dir: Path,
) -> list[dict[str, Any]]:
    """Plain-data payloads: (model combination x fold), each with its evaluation combinations."""
    model_grid, eval_grid = split_grid(spec.grid)
    model_combos = combinations(model_grid) if model_grid else [{}]
    eval_combos = combinations(eval_grid) if eval_grid else [{}]
    raw_settings = msgspec.to_builtins(settings)
    tasks = []
    for mi, mc in enumerate(model_combos):
        for fold in folds:
            task_id = f"m{mi:03d}-f{fold.index:03d}"
            tasks.append(
                {
                    "task_id": task_id,
                    "settings": raw_settings,
                    "strategy": strategy,
                    "fold": msgspec.to_builtins(fold),
                    "model_index": mi,
                    "model_params": mc,
                    "eval_params": eval_combos,
                    "dir": str((out_dir / "tasks" / task_id).resolve()),
                }
            )
    return tasks


def execute_task(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run one task (in any process): train once, backtest each evaluation combination."""
    from threadpoolctl import threadpool_limits

    settings = msgspec.convert(task["settings"], NodeSettings)
    fold = msgspec.convert(task["fold"], Fold)
    target = strategy_target(settings, task["strategy"])
    n_eval = len(task["eval_params"])
    out = Path(task["dir"])
    rows = []
    with threadpool_limits(limits=1):  # same arithmetic in every worker, no oversubscription
        try:
            model_update = nested(task["model_params"])
            trained = train_fold(settings, target, fold, out, config_update=model_update)
        except Exception as exc:  # reported per combination, the sweep goes on
            trained, error = None, f"{type(exc).__name__}: {exc}"
        for ei, ep in enumerate(task["eval_params"]):
            params = {**task["model_params"], **ep}
            row: dict[str, Any] = {
                "combo": task["model_index"] * n_eval + ei,
                "fold": fold.index,
                "params": params,
            }
            if trained is None:
                rows.append({**row, "error": error})
                continue
            try:
                result = run_fold(
                    settings,
                    target,
                    fold,
                    out / f"e{ei:03d}",
                    config_update=nested(params),
                    trained=trained,
                )
                rows.append({**row, **result, "error": None})
            except Exception as exc:
                detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
                rows.append({**row, "error": detail})
    # NautilusTrader's Rust catalog sessions must be dropped on the thread that made them (a
    # Dask worker runs tasks in a pool thread and would collect them on its event-loop thread)
    gc.collect()
    return rows


# -------------------------------------------------------------------------------- executors
def run_tasks(
    tasks: Sequence[Mapping[str, Any]],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Execute the tasks inline (workers=1), on a local process pool, or on Dask."""
    bar = tqdm(total=len(tasks), disable=not progress, unit="task", file=sys.stderr)
    batches: list[list[dict[str, Any]]] = []
    if scheduler is not None:
        batches = _run_dask(tasks, scheduler, bar.update)
    elif workers <= 1:
        for task in tasks:
            batches.append(execute_task(task))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")  # never fork a process running Nautilus
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(execute_task, task) for task in tasks]
            for _ in as_completed(futures):
                bar.update()
            batches = [f.result() for f in futures]
    bar.close()
    rows = [row for batch in batches for row in batch]
    return sorted(rows, key=lambda r: (r["combo"], r["fold"]))


def _run_dask(
    tasks: Sequence[Mapping[str, Any]], scheduler: str, step: Callable[[], object]
) -> list[list[dict[str, Any]]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError:
        raise ConfigError(
            "a Dask scheduler was given but dask.distributed is not installed: "
            'pip install "nautilus-hmm[distributed]"'
        ) from None
    with Client(scheduler) as client:
        futures = client.map(execute_task, list(tasks), pure=False)
        for _ in dask_as_completed(futures):
            step()
        return client.gather(futures)


# ---------------------------------------------------------------------------------- results
def aggregate(rows: Iterable[dict[str, Any]], rank_by: str) -> list[dict[str, Any]]:
    """One row per combination over its folds (stitched OOS curve), ranked best first."""
    by_combo: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_combo.setdefault(r["combo"], []).append(r)
    out = []
    for combo, rs in sorted(by_combo.items()):
        errors = [r["error"] for r in rs if r.get("error")]
        base = {"combo": combo, "params": rs[0]["params"], "folds": len(rs)}
        if errors:
            out.append({**base, "error": errors[0]})
            continue
        s = summarize(rs)
        curve = stitch(rs)
        daily = day_returns(curve["ts_event"].to_numpy(), curve["pnl"].to_numpy(), rs[0]["capital"])
        out.append(
            {
                **base,
                **{k: s[k] for k in ("pnl", "return_pct", "sharpe", "max_drawdown_pct")},
                "mean_loglik": s["mean_loglik"],
                "orders": s["orders"],
                **{
                    f"{name}_return_pct": s["comparison"][name]["total_return_pct"]
                    for name in ("buy_and_hold", "ema_cross")
                    if name in s["comparison"]
                },
                "positive_folds": s["positive_folds"],
                "turnover_per_year": s["comparison"]["strategy"]["turnover_per_year"],
                "daily_returns": daily.tolist(),
                "daily_sharpe": sharpe_moments(daily)["sharpe"],
                "error": None,
            }
        )
    # selection bias: every combination's Sharpe is deflated for the N combinations tried
    trials = [r["daily_sharpe"] for r in out if r.get("error") is None]
    for r in out:
        if r.get("error") is None:
            d = deflated_sharpe(np.asarray(r.pop("daily_returns")), trials)
            r.update(psr=d["psr"], dsr=d["dsr"], n_trials=d["n_trials"])
            r["expected_max_daily_sharpe"] = d["expected_max_sharpe"]
    sign = 1.0 if rank_by == "max_drawdown_pct" else -1.0  # drawdown: lower is better

    def key(r: dict[str, Any]) -> tuple:
        v = r.get(rank_by)
        bad = r.get("error") is not None or v is None or not np.isfinite(v)
        return (bad, 0.0 if bad else sign * v, r["combo"])

    ranked = sorted(out, key=key)
    for i, r in enumerate(ranked):
        r["rank"] = i + 1
    return ranked


def results_table(ranked: Sequence[dict[str, Any]], keys: Sequence[str]) -> pl.DataFrame:
    cols = (
        "pnl",
        "return_pct",
        "buy_and_hold_return_pct",
        "ema_cross_return_pct",
        "sharpe",
        "psr",
        "dsr",
        "max_drawdown_pct",
        "turnover_per_year",
        "mean_loglik",
        "orders",
    )
    rows = []
    for r in ranked:
        row = {"rank": r["rank"], "combo": r["combo"]}
        row.update({k: r["params"].get(k) for k in keys})
        row.update({c: r.get(c) for c in cols})
        row["error"] = r.get("error")
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def sweep(
    settings: NodeSettings,
    out_dir: str | Path,
    spec: SweepSpec,
    wf: WalkForwardSpec,
    *,
    strategy: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the sweep; write results.csv/.md, folds.csv, sweep.json; return the ranked results."""
    from marketdata.ingest import ensure_catalog

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = absolute_paths(settings)
    ensure_catalog(settings.backtest)  # once, before any worker reads it
    target = strategy_target(settings, strategy)
    ts = load_frame(settings, target.bar_type, wf.start, wf.end)["ts_event"].to_numpy()
    # warm-up: the largest of the grid's feature windows, so every combination has its bars
    model_grid = split_grid(spec.grid)[0]
    combos = combinations(model_grid) if model_grid else [{}]
    warmup = max(_warmup_bars(settings, target, nested(c)) for c in combos)
    folds = make_folds(ts, wf, warmup)
    tasks = build_tasks(settings, strategy, spec, folds, out)
    rows = run_tasks(tasks, workers=workers, scheduler=scheduler, progress=progress)
    ranked = aggregate(rows, spec.rank_by)
    keys = list(spec.grid)
    table = results_table(ranked, keys)
    table.write_csv(out / "results.csv")
    (out / "results.md").write_text(markdown_table(table))
    fold_rows = [
        {
            "combo": r["combo"],
            "fold": r["fold"],
            **{k: r["params"].get(k) for k in keys},
            "test_start": iso(r["test_start"]) if "test_start" in r else None,
            **{m: r.get(m) for m in ("pnl", "sharpe", "max_drawdown_pct", "mean_loglik")},
            "orders": r.get("orders"),
            "error": r.get("error"),
        }
        for r in rows
    ]
    pl.DataFrame(fold_rows, infer_schema_length=None).write_csv(out / "folds.csv")
    doc = {
        "strategy": target.name,
        "grid": spec.grid,
        "rank_by": spec.rank_by,
        "walk_forward": msgspec.to_builtins(wf),
        "folds": [msgspec.to_builtins(f) for f in folds],
        "tasks": len(tasks),
        "results": ranked,
    }
    (out / "sweep.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    best = next((r for r in ranked if r.get("error") is None), None)
    if best is not None:
        best_rows = [r for r in rows if r["combo"] == best["combo"]]
        stitch(best_rows).write_csv(out / "best_equity.csv")
    return {"results": ranked, "rows": rows, "folds": folds, "table": table}


# ------------------------------------------------------------------------------------- CLI
def check_grid(settings: NodeSettings, strategy: str | None, grid: Mapping[str, Any]) -> None:
    """Every grid value must make a valid strategy config, checked before any task runs: a
    mistyped key would otherwise fail every task one by one and the sweep would "succeed"."""
    from nautilus_trader.common.config import resolve_config_path

    from backtests.walk_forward import deep_merge

    target = strategy_target(settings, strategy)
    spec = settings.strategies[target.index]
    config_cls = resolve_config_path(spec.resolved_config_path)
    for key, values in grid.items():
        for value in values:
            merged = deep_merge(spec.config, nested({key: value}))
            try:
                config_cls.parse(msgspec.json.encode(merged))
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError, TypeError) as exc:
                msg = f"grid {key}={value!r} is not a valid strategy config: {exc}"
                raise ValueError(msg) from None


def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """``policy.min_confidence=0.6,0.8`` -> ("policy.min_confidence", [0.6, 0.8])."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--grid needs KEY=V1,V2,..., got {text!r}")
    key, values = text.split("=", 1)
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not parsed:
        raise argparse.ArgumentTypeError(f"--grid {key} has no values")
    return key.strip(), parsed


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m backtests.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--grid", action="append", type=parse_grid_arg, default=[], help="KEY=V1,V2 (repeat)"
    )
    parser.add_argument("--grid-file", help="YAML mapping of dotted keys to lists of values")
    parser.add_argument("--rank-by", default="sharpe", choices=METRICS)
    add_walk_forward_arguments(parser)
    parser.add_argument(
        "--workers",
        type=cli.positive_int,
        default=multiprocessing.cpu_count(),
        help="local processes",
    )
    parser.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786)")
    parser.add_argument("--out", help="output folder (default: <output_dir>/sweep)")
    args = parser.parse_args(argv)
    try:
        grid: dict[str, list[Any]] = {}
        if args.grid_file:
            loaded = yaml.safe_load(Path(args.grid_file).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{args.grid_file}: must be a mapping of key -> list")
            grid.update(loaded)
        grid.update(dict(args.grid))
        spec = SweepSpec(grid=grid, rank_by=args.rank_by)
        wf = walk_forward_spec(args)
        settings = load_node_settings(args.config, args.override)
        check_grid(settings, args.strategy, spec.grid)
        out = cli.ensure_writable_dir(
            args.out or Path(settings.backtest.output_dir) / "sweep", "--out"
        )
        result = sweep(
            settings,
            out,
            spec,
            wf,
            strategy=args.strategy,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=sys.stderr.isatty(),
        )
    except (ConfigError, ValueError, OSError, cli.CLIError) as exc:
        print(cli.describe(exc, known=True), file=sys.stderr)
        return 2
    print(markdown_table(result["table"]))
    print(
        f"{len(result['folds'])} folds x {len(result['results'])} combinations; "
        f"ranked by out-of-sample {spec.rank_by}; reports in {out}/"
    )
    best = next((r for r in result["results"] if r.get("error") is None), None)
    if best is not None:
        print(
            f"deflated Sharpe of the top combination: DSR {best['dsr']:.3f} (PSR vs 0 "
            f"{best['psr']:.3f}; N = {best['n_trials']} trials, expected max daily Sharpe of "
            f"N null trials {best['expected_max_daily_sharpe']:.4f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
