"""Walk-forward evaluation: ``python -m backtests.walk_forward --train 60d --test 14d``.

Every fold trains a model on its train window only (``hmm_strategy.train``), then runs the REAL
backtest (``backtests.run.run_backtest``, the node's strategy with ``model_path`` set to that
artifact) over the following test window. Only out-of-sample results are reported; the folds'
PnL curves are stitched into one equity curve.

Windows are half-open on bar CLOSE times, anchored at the first bar (so appending later data
never changes an existing fold)::

    rolling:    train [t_k - train, t_k)   test [t_k, t_k + test)      t_k = t_0 + train + k*test
    expanding:  train [t_0,         t_k)   test [t_k, t_k + test)

A fold exists only once the data covers its whole test window. The model's ``data_range`` (first
and last training bar) is read back from the artifact and must end before the test window.

Feature warm-up: the strategy needs ``FeatureSpec.warmup_bars`` bars before its first feature row.
The test run is therefore fed from exactly ``warmup_bars`` bars BEFORE the test window (those bars
lie in the past of the window), so the strategy's first decision, and with it its first possible
order, is on the first bar of the test window. Decisions, orders and PnL all fall inside the test
window; this is checked for every fold. Those warm-up bars only fill the feature windows: the
filter starts from the model's initial distribution at the first test bar.

Each fold's backtest is an independent run from the configured starting balance, with the target
strategy alone plus a ``DecisionRecorder`` (operational actors such as metrics, governance, an
online trainer are left out: a walk-forward judges a fixed model). The stitched curve adds the
folds' PnL (no compounding). PnL is marked to market at every bar close from the run's fills
(cash + position x close, commissions included) and agrees with the engine's realized PnL once
the strategy flattens on stop.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import polars as pl

from backtests.metrics import (
    METRIC_KEYS,
    evaluate,
    fill_frame,
    performance,
    read_fills,
    starting_balance,
)
from hmm_strategy import cli
from hmm_strategy.config import (
    ComponentSpec,
    ConfigError,
    NodeSettings,
    add_config_arguments,
    load_node_settings,
)
from hmm_strategy.train import (
    StrategyTarget,
    iso,
    load_frame,
    strategy_target,
    to_ns,
    train,
)
from marketdata.bars import parse_interval, typical_spacing

RECORDER_PATH = "actors.decision_recorder:DecisionRecorder"
TABLE_COLUMNS = (
    "fold",
    "train_first_bar",
    "train_last_bar",
    "test_start",
    "test_end",
    "n_states",
    "test_bars",
    "decisions",
    "orders",
    "pnl",
    "return_pct",
    "sharpe",
    "max_drawdown_pct",
    "exposure_share",
    "mean_loglik",
    "fees",
    "buy_hold_return_pct",
    "ema_cross_return_pct",
)


class WalkForwardSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fold layout: window lengths as durations ("60d", "12h", "15m")."""

    train: str = "60d"
    test: str = "14d"
    mode: Literal["rolling", "expanding"] = "rolling"
    start: str | None = None  # first bar considered (default: first bar of the data)
    end: str | None = None  # last bar close considered (default: last bar)
    max_folds: int | None = None

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            try:
                parse_interval(getattr(self, name))
            except ValueError as exc:  # name the window: "--test"/"test:" say which one
                raise ValueError(f"{name} window: {exc}") from None
        if self.mode not in ("rolling", "expanding"):
            raise ValueError(f"mode must be 'rolling' or 'expanding', was {self.mode!r}")
        if self.max_folds is not None and self.max_folds < 1:
            raise ValueError(f"max_folds must be >= 1, was {self.max_folds}")


class Fold(msgspec.Struct, frozen=True):
    """One fold; all times are inclusive UNIX ns of bar closes."""

    index: int
    train_start: int
    train_end: int  # = test_start - 1 ns: strictly before the test window
    test_start: int
    test_end: int
    run_start: int  # first bar fed to the test run (feature warm-up, in the past)


# ---------------------------------------------------------------------------------- the folds
def make_folds(ts: np.ndarray, spec: WalkForwardSpec, warmup_bars: int) -> list[Fold]:
    """Folds over sorted bar close times ``ts`` (see the module docstring for the layout)."""
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size == 0:
        raise ValueError("no bars to walk forward over")
    start_ns, end_ns = to_ns(spec.start), to_ns(spec.end)
    if start_ns is not None:
        ts = ts[ts >= start_ns]
    if end_ns is not None:
        ts = ts[ts <= end_ns]
    if ts.size < 2:
        raise ValueError(f"fewer than 2 bars between {spec.start} and {spec.end}")
    spacing = typical_spacing(pl.Series(ts)) or 1
    # the data covers its last bar's interval; a window needs no bar after this to be complete
    covered = int(ts[-1]) + spacing - 1
    if end_ns is not None:
        covered = min(covered, end_ns)
    anchor = int(ts[0])
    train_ns, test_ns = parse_interval(spec.train), parse_interval(spec.test)
    folds: list[Fold] = []
    k = 0
    while spec.max_folds is None or len(folds) < spec.max_folds:
        test_start = anchor + train_ns + k * test_ns
        test_end = test_start + test_ns - 1
        if test_end > covered:
            break
        k += 1
        i0 = int(np.searchsorted(ts, test_start, side="left"))
        i1 = int(np.searchsorted(ts, test_end, side="right"))
        if i1 <= i0 or i0 < warmup_bars:
            continue  # no bar in the test window (data gap) or not enough bars for warm-up
        train_start = anchor if spec.mode == "expanding" else test_start - train_ns
        folds.append(
            Fold(
                index=len(folds),
                train_start=train_start,
                train_end=test_start - 1,
                test_start=test_start,
                test_end=test_end,
                run_start=int(ts[i0 - warmup_bars]),
            )
        )
    if not folds:
        raise ValueError(
            f"no complete fold: data {iso(int(ts[0]))} -> {iso(int(ts[-1]))} is shorter than "
            f"train {spec.train} + test {spec.test}"
        )
    return folds


# ------------------------------------------------------------------------------ one fold's run
def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def fold_settings(
    settings: NodeSettings, target: StrategyTarget, config_update: Mapping[str, Any]
) -> NodeSettings:
    """The node config with only the target strategy (updated) and a ``DecisionRecorder``."""
    spec = settings.strategies[target.index]
    strategy = msgspec.structs.replace(spec, config=deep_merge(spec.config, config_update))
    recorders = [a for a in settings.actors if a.path == RECORDER_PATH][:1] or [
        ComponentSpec(path=RECORDER_PATH, config={"output_path": "{run_dir}/decisions.csv"})
    ]
    recorder = msgspec.structs.replace(
        recorders[0], config={**recorders[0].config, "output_path": "{run_dir}/decisions.csv"}
    )
    return msgspec.structs.replace(settings, strategies=[strategy], actors=[recorder])


class TrainedFold(msgspec.Struct, frozen=True):
    """A fold's model: the artifact trained on the fold's train window only."""

    artifact: str
    version: str
    n_states: int
    train_first_bar: int
    train_last_bar: int
    train_loglik_per_row: float
    log_jacobian: float  # sum(log scaler_std): standardised -> raw-feature log-likelihood


def train_fold(
    settings: NodeSettings,
    target: StrategyTarget,
    fold: Fold,
    out_dir: str | Path,
    *,
    config_update: Mapping[str, Any] | None = None,
) -> TrainedFold:
    """Fit the fold's model on bars closing in [train_start, train_end] (before the test)."""
    from hmm_strategy.artifacts import load_model
    from hmm_strategy.engine import FitSettings
    from hmm_strategy.features import FeatureSpec

    merged = deep_merge(settings.strategies[target.index].config, config_update or {})
    features = msgspec.convert(merged.get("features", {}), FeatureSpec)
    fit = msgspec.convert(merged.get("fit", {}), FitSettings)
    frame = load_frame(settings, target.bar_type, fold.train_start, fold.train_end)
    try:
        trained = train(target, frame, out_dir, features=features, fit=fit, subdir=False)
    except ValueError as exc:
        raise ValueError(f"fold {fold.index}: training failed: {exc}") from None
    model, meta = load_model(trained.artifact, expected_features=features.names)
    if meta.data_range[1] >= fold.test_start:  # the model must not have seen the test window
        raise RuntimeError(f"fold {fold.index}: model trained up to {iso(meta.data_range[1])}")
    return TrainedFold(
        artifact=str(trained.artifact.resolve()),
        version=trained.version,
        n_states=int(model.n_states_),
        train_first_bar=int(meta.data_range[0]),
        train_last_bar=int(meta.data_range[1]),
        train_loglik_per_row=float(trained.report["log_likelihood_per_row"]),
        # the strategy's log-likelihoods are of standardised features; adding the log-Jacobian
        # of the scaler makes them raw-feature densities, comparable between folds and models
        log_jacobian=float(np.log(model.scaler_std_).sum()),
    )


def run_fold(
    settings: NodeSettings,
    target: StrategyTarget,
    fold: Fold,
    out_dir: str | Path,
    *,
    config_update: Mapping[str, Any] | None = None,
    trained: TrainedFold | None = None,
    keep_reports: bool = False,
) -> dict[str, Any]:
    """Train on the fold's train window (unless ``trained``), backtest its test window.

    ``config_update`` is deep-merged into the strategy's config (sweeps). Returns plain data:
    the out-of-sample metrics and the per-bar PnL curve of the test window (``curve``).
    """
    from backtests.run import run_backtest

    update = dict(config_update or {})
    fold_dir = Path(out_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    if trained is None:
        trained = train_fold(settings, target, fold, fold_dir, config_update=update)
    test = load_frame(settings, target.bar_type, fold.test_start, fold.test_end)

    update["model_path"] = trained.artifact
    run_settings = fold_settings(settings, target, update)
    run = run_backtest(
        run_settings,
        fold_dir / "run",
        start=iso(fold.run_start),
        end=iso(fold.test_end),
        tearsheet=False,
        measure_from=fold.test_start,
    )
    if not keep_reports:
        for name in ("regimes.html", "comparison.html"):
            (run / name).unlink(missing_ok=True)

    decisions = read_decisions(run)
    fills = read_fills(run / "fills.csv")
    check_inside(fold, decisions, fills)
    capital, currency = starting_balance(settings)
    # mark-to-market curves of the strategy and its baselines over the test window only
    equity = pl.read_csv(run / "equity.csv")
    if equity.height != test.height or (equity["ts_event"] != test["ts_event"]).any():
        raise RuntimeError(f"fold {fold.index}: the run's bars differ from the test window")
    stats = json.loads((run / "stats.json").read_text())
    curves = {
        name: {"pnl": equity[f"{name}_pnl"].to_list(), "position": equity[f"{name}_position"]}
        for name in stats["comparison"]
    }
    engine_pnl = stats.get("stats_pnls", {}).get(currency, {}).get("PnL (total)")
    return fold_result(
        fold,
        trained,
        equity["ts_event"],
        equity["close"],
        decisions,
        stats["comparison"],
        curves,
        orders=fills.height,
        engine_pnl=None if engine_pnl is None else float(engine_pnl),
        baseline_notional=stats.get("baseline_notional"),
        capital=capital,
        currency=currency,
        update=update,
    )


def read_decisions(run: Path) -> pl.DataFrame:
    return pl.read_csv(run / "decisions.csv", infer_schema_length=0).with_columns(
        pl.col("ts_event").cast(pl.Int64),
        pl.col("target_exposure").cast(pl.Float64),
        pl.col("log_likelihood").cast(pl.Float64),
    )


def check_inside(fold: Fold, decisions: pl.DataFrame, fills: pl.DataFrame) -> None:
    """No decision and no fill before the fold's test window (its warm-up only fills features)."""
    if decisions.height and int(decisions["ts_event"].min()) < fold.test_start:
        first = iso(int(decisions["ts_event"].min()))
        raise RuntimeError(f"fold {fold.index}: a decision at {first} precedes the test window")
    if fills.height and int(fills["ts"].min()) < fold.test_start:
        raise RuntimeError(f"fold {fold.index}: an order filled before the test window")


def fold_result(
    fold: Fold,
    trained: TrainedFold,
    ts: pl.Series,
    close: pl.Series,
    decisions: pl.DataFrame,
    comparison: dict[str, dict[str, Any]],
    curves: dict[str, dict[str, Any]],
    *,
    orders: int,
    engine_pnl: float | None,
    baseline_notional: float | None,
    capital: float,
    currency: str,
    update: Mapping[str, Any],
) -> dict[str, Any]:
    """One fold's plain-data result: out-of-sample metrics and the PnL curves of its window
    (``curves[name]``: ``pnl`` from 0 at the window's start and ``position`` per bar)."""
    mine = comparison["strategy"]
    exposure = decisions["target_exposure"].to_numpy() if decisions.height else np.zeros(0)
    curve: dict[str, Any] = {"ts": ts.to_list(), "close": close.to_list()}
    for name, c in curves.items():
        curve[f"{name}_pnl"] = np.asarray(c["pnl"], dtype=np.float64).tolist()
        curve[f"{name}_position"] = np.asarray(c["position"], dtype=np.float64).tolist()
    curve["pnl"] = curve["strategy_pnl"]
    return {
        "fold": fold.index,
        **{name: getattr(fold, name) for name in Fold.__struct_fields__ if name != "index"},
        "train_first_bar": trained.train_first_bar,
        "train_last_bar": trained.train_last_bar,
        "model_version": trained.version,
        "artifact": trained.artifact,
        "n_states": trained.n_states,
        "train_loglik_per_row": trained.train_loglik_per_row,
        "test_bars": int(len(ts)),
        "decisions": int(decisions.height),
        "orders": int(orders),
        **{k: mine[k] for k in METRIC_KEYS},
        "return_pct": mine["total_return_pct"],
        "engine_pnl": engine_pnl,
        "exposure_share": float((exposure != 0).mean()) if len(exposure) else 0.0,
        "mean_loglik": (
            float(decisions["log_likelihood"].mean()) - trained.log_jacobian
            if decisions.height
            else None
        ),
        "buy_hold_return_pct": comparison.get("buy_and_hold", {}).get("total_return_pct"),
        "ema_cross_return_pct": comparison.get("ema_cross", {}).get("total_return_pct"),
        "comparison": comparison,
        "baseline_notional": baseline_notional,
        "interval_ns": int(typical_spacing(ts) or 1),
        "capital": capital,
        "currency": currency,
        "config_update": {k: v for k, v in update.items() if k != "model_path"},
        "curve": curve,
    }


def run_continuous(
    settings: NodeSettings,
    target: StrategyTarget,
    folds: list[Fold],
    out_dir: str | Path,
    *,
    config_update: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every fold's model trained on its own train window, then ONE backtest over all the test
    windows: the strategy starts on fold 0's model and switches to fold k's just before fold k's
    first test bar (``backtests.model_schedule``), carrying its position across the seams as it
    would live. Returns the per-fold results (each window's slice of the run) and the whole
    run's comparison (strategy and baselines over the joined test windows)."""
    import pandas as pd

    from backtests.run import run_backtest

    update = dict(config_update or {})
    out = Path(out_dir)
    trained = [
        train_fold(settings, target, f, out / f"fold-{f.index:03d}", config_update=update)
        for f in folds
    ]
    run_settings = fold_settings(settings, target, {**update, "model_path": trained[0].artifact})
    schedule = ComponentSpec(
        path="backtests.model_schedule:ModelSchedule",
        config={
            "strategy_id": target.strategy_id,
            "schedule": [
                [f.test_start, t.artifact, t.version]
                for f, t in zip(folds[1:], trained[1:], strict=True)
            ],
        },
    )
    run_settings = msgspec.structs.replace(run_settings, actors=[*run_settings.actors, schedule])
    run = run_backtest(
        run_settings,
        out / "run",
        start=iso(folds[0].run_start),
        end=iso(folds[-1].test_end),
        tearsheet=False,
        measure_from=folds[0].test_start,
    )
    for name in ("regimes.html", "comparison.html"):
        (run / name).unlink(missing_ok=True)
    stats = json.loads((run / "stats.json").read_text())
    capital, currency = starting_balance(settings)
    bars = load_frame(settings, target.bar_type, iso(folds[0].run_start), iso(folds[-1].test_end))
    bar_ts, close = bars["ts_event"].to_numpy(), bars["close"].to_numpy()
    decisions = read_decisions(run)

    def report(path: Path) -> pd.DataFrame | None:
        return pd.read_csv(path) if path.exists() and path.stat().st_size else None

    reports = {  # each run's fills and positions reports, read once for every fold's window
        name: tuple(
            report(run / f"{'' if name == 'strategy' else name + '_'}{kind}.csv")
            for kind in ("fills", "positions")
        )
        for name in stats["comparison"]
    }
    all_fills = fill_frame(reports["strategy"][0])
    check_inside(folds[0], decisions, all_fills)
    results = []
    for fold, model in zip(folds, trained, strict=True):
        window = (pl.col("ts_event") >= fold.test_start) & (pl.col("ts_event") <= fold.test_end)
        mine = decisions.filter(window)
        wrong = mine.filter(pl.col("model_version") != model.version)
        if wrong.height:  # the schedule must have switched exactly at the window's start
            raise RuntimeError(
                f"fold {fold.index}: a decision at {iso(int(wrong['ts_event'][0]))} used model "
                f"{wrong['model_version'][0]}, not {model.version}"
            )
        comparison, curves = {}, {}
        for name, (fills, positions) in reports.items():
            comparison[name], curves[name] = evaluate(
                fills, positions, target.instrument_id, bar_ts, close, capital,
                measure_from=fold.test_start, measure_to=fold.test_end,
            )  # fmt: skip
        inside = (bar_ts >= fold.test_start) & (bar_ts <= fold.test_end)
        orders = all_fills.filter(
            (pl.col("ts") >= fold.test_start) & (pl.col("ts") <= fold.test_end)
        ).height
        results.append(
            fold_result(
                fold,
                model,
                pl.Series(bar_ts[inside]),
                pl.Series(close[inside]),
                mine,
                comparison,
                curves,
                orders=orders,
                engine_pnl=None,
                baseline_notional=stats.get("baseline_notional"),
                capital=capital,
                currency=currency,
                update=update,
            )
        )
    return results, stats["comparison"]


# ---------------------------------------------------------------------------------- stitching
def stitch(folds: list[dict[str, Any]], key: str = "pnl") -> pl.DataFrame:
    """One out-of-sample curve: each fold's PnL (``curve[key]``, the strategy's by default, or
    a baseline's ``<name>_pnl``) added onto the previous folds' final PnL."""
    parts, offset = [], 0.0
    for r in sorted(folds, key=lambda r: r["fold"]):
        c = r["curve"]
        pnl = np.asarray(c[key], dtype=np.float64)
        parts.append(
            pl.DataFrame(
                {
                    "ts_event": np.asarray(c["ts"], dtype=np.int64),
                    "fold": np.full(len(pnl), r["fold"], dtype=np.int64),
                    "close": np.asarray(c["close"], dtype=np.float64),
                    "fold_pnl": pnl,
                    "pnl": offset + pnl,
                }
            )
        )
        if len(pnl):
            offset += float(pnl[-1])
    if not parts:
        return pl.DataFrame(
            schema={
                "ts_event": pl.Int64,
                "fold": pl.Int64,
                "close": pl.Float64,
                "fold_pnl": pl.Float64,
                "pnl": pl.Float64,
            }
        )
    return pl.concat(parts)


def stitched_comparison(folds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The comparison metrics of the stitched out-of-sample curves: the strategy and every
    baseline that ran in all folds; fees, traded notional and trades are the folds' sums."""
    ordered = sorted(folds, key=lambda r: r["fold"])
    names = ["strategy"]
    if all("comparison" in r for r in ordered):
        names += [n for n in ordered[0]["comparison"] if n != "strategy"]
        names = [n for n in names if all(n in r["comparison"] for r in ordered)]
    capital = ordered[0]["capital"]
    out = {}
    for name in names:
        key = "pnl" if name == "strategy" else f"{name}_pnl"
        if not all(key in r["curve"] for r in ordered):
            continue
        curve = stitch(ordered, key)
        pos_key = f"{name}_position"
        position = np.concatenate(
            [
                np.asarray(r["curve"].get(pos_key, r["curve"][key]), dtype=np.float64)
                if pos_key in r["curve"]
                else np.zeros(len(r["curve"][key]))
                for r in ordered
            ]
        )
        parts = [r.get("comparison", {}).get(name, {}) for r in ordered]

        def total(field: str, parts: list = parts) -> float:
            return sum(p.get(field) or 0 for p in parts)

        out[name] = performance(
            curve["ts_event"].to_numpy(),
            curve["pnl"].to_numpy(),
            position,
            capital,
            fees=float(total("fees")),
            traded_notional=float(total("traded_notional")),
            trades=int(total("trades")),
            wins=int(total("wins")),
        )
    return out


def summarize(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Out-of-sample aggregates over the stitched curves (strategy and baselines)."""
    if not folds:
        return {"folds": 0}
    curve = stitch(folds)
    comparison = stitched_comparison(folds)
    mine = comparison["strategy"]
    lls = [r["mean_loglik"] * r["decisions"] for r in folds if r["mean_loglik"] is not None]
    n_dec = sum(r["decisions"] for r in folds if r["mean_loglik"] is not None)
    return {
        "folds": len(folds),
        "test_bars": int(sum(r["test_bars"] for r in folds)),
        "orders": int(sum(r["orders"] for r in folds)),
        "pnl": mine["pnl"],
        "return_pct": mine["total_return_pct"],
        "sharpe": mine["sharpe"],
        "max_drawdown_pct": mine["max_drawdown_pct"],
        "mean_loglik": (sum(lls) / n_dec) if n_dec else None,
        "positive_folds": float(np.mean([r["pnl"] > 0 for r in folds])),
        "first_test_bar": iso(int(curve["ts_event"][0])) if curve.height else None,
        "last_test_bar": iso(int(curve["ts_event"][-1])) if curve.height else None,
        "comparison": comparison,
    }


def table(folds: list[dict[str, Any]]) -> pl.DataFrame:
    rows = []
    for r in sorted(folds, key=lambda r: r["fold"]):
        row = {c: r.get(c) for c in TABLE_COLUMNS}
        for c in ("train_first_bar", "train_last_bar", "test_start", "test_end"):
            row[c] = iso(int(r[c]))
        rows.append(row)
    return pl.DataFrame(rows)


def markdown_table(df: pl.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|---" * df.width + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join(lines) + "\n"


def write_plot(curve: pl.DataFrame, path: Path, title: str) -> None:
    """Stitched out-of-sample PnL over price, folds shaded alternately."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.05
    )
    if curve.height:
        t = pl.from_epoch(curve["ts_event"], time_unit="ns").to_list()
        fig.add_trace(go.Scattergl(x=t, y=curve["pnl"].to_list(), name="OOS PnL (stitched)"), 1, 1)
        for column in curve.columns:  # the baselines, same capital, fees and folds
            if column.endswith("_pnl") and column != "fold_pnl":
                label = column.removesuffix("_pnl").replace("_", " ")
                fig.add_trace(
                    go.Scattergl(x=t, y=curve[column].to_list(), name=label, opacity=0.6), 1, 1
                )
        fig.add_trace(go.Scattergl(x=t, y=curve["close"].to_list(), name="close"), 2, 1)
        for (fold,), part in curve.group_by("fold", maintain_order=True):
            if fold % 2:
                x0 = pl.from_epoch(part["ts_event"].head(1), time_unit="ns")[0]
                x1 = pl.from_epoch(part["ts_event"].tail(1), time_unit="ns")[0]
                fig.add_vrect(x0=x0, x1=x1, fillcolor="grey", opacity=0.12, line_width=0)
    fig.update_yaxes(title_text="PnL (quote)", row=1, col=1)
    fig.update_yaxes(title_text="price", row=2, col=1)
    fig.update_layout(title=title, height=800)
    fig.write_html(path, include_plotlyjs=True)


def write_outputs(
    folds: list[dict[str, Any]],
    out_dir: Path,
    meta: Mapping[str, Any],
    comparison: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """folds.csv/.md, equity.csv, summary.json and walk_forward.html in ``out_dir``.

    ``comparison`` (a continuous run's own, over all test windows) replaces the one computed
    from the stitched folds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**meta, **summarize(folds)}
    if comparison is not None:
        summary["comparison"] = comparison
        for key, field in (("return_pct", "total_return_pct"), ("sharpe", "sharpe")):
            summary[key] = comparison["strategy"][field]
        summary["max_drawdown_pct"] = comparison["strategy"]["max_drawdown_pct"]
        summary["pnl"] = comparison["strategy"]["pnl"]
    df = table(folds)
    df.write_csv(out_dir / "folds.csv")
    (out_dir / "folds.md").write_text(markdown_table(df))
    curve = stitch(folds)
    for name in summary.get("comparison", {}):
        if name != "strategy":
            curve = curve.with_columns(stitch(folds, f"{name}_pnl")["pnl"].alias(f"{name}_pnl"))
    curve.write_csv(out_dir / "equity.csv")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    write_plot(curve, out_dir / "walk_forward.html", f"Walk-forward, {meta.get('strategy', '')}")
    return summary


# ------------------------------------------------------------------------------------ the run
def walk_forward(
    settings: NodeSettings,
    out_dir: str | Path,
    spec: WalkForwardSpec,
    *,
    strategy: str | None = None,
    config_update: Mapping[str, Any] | None = None,
    on_fold: Callable[[dict[str, Any]], None] | None = None,
    continuous: bool = False,
) -> dict[str, Any]:
    """Run every fold in order; write the reports; return the summary (with ``fold_results``).

    ``continuous``: one backtest over all test windows with the folds' models switched in at
    their windows (``run_continuous``) instead of one flat-to-flat run per fold."""
    out = Path(out_dir)
    target = strategy_target(settings, strategy)
    warmup = _warmup_bars(settings, target, config_update or {})
    ts = load_frame(settings, target.bar_type, spec.start, spec.end)["ts_event"].to_numpy()
    folds = make_folds(ts, spec, warmup)
    whole = None
    if continuous:
        results, whole = run_continuous(
            settings, target, folds, out, config_update=config_update
        )
        for r in results:
            if on_fold is not None:
                on_fold(r)
    else:
        results = []
        for fold in folds:
            r = run_fold(
                settings, target, fold, out / f"fold-{fold.index:03d}", config_update=config_update
            )
            results.append(r)
            if on_fold is not None:
                on_fold(r)
    meta = {
        "strategy": target.name,
        "spec": msgspec.to_builtins(spec),
        "continuous": continuous,
    }
    summary = write_outputs(results, out, meta, whole)
    summary["fold_results"] = results
    return summary


def _warmup_bars(
    settings: NodeSettings, target: StrategyTarget, config_update: Mapping[str, Any]
) -> int:
    from hmm_strategy.features import FeatureSpec

    merged = deep_merge(settings.strategies[target.index].config, config_update)
    return msgspec.convert(merged.get("features", {}), FeatureSpec).warmup_bars


def add_walk_forward_arguments(parser: argparse.ArgumentParser) -> None:
    """The fold layout flags, shared by ``backtests.walk_forward`` and ``backtests.sweep``."""
    parser.add_argument("--train", default="60d", help="train window length (default 60d)")
    parser.add_argument("--test", default="14d", help="test window length (default 14d)")
    parser.add_argument("--mode", default="rolling", choices=("rolling", "expanding"))
    parser.add_argument("--start", type=cli.iso_time, help="first bar considered (ISO, UTC)")
    parser.add_argument("--end", type=cli.iso_time, help="last bar close considered (ISO, UTC)")
    parser.add_argument("--max-folds", type=cli.positive_int)


def walk_forward_spec(args: argparse.Namespace) -> WalkForwardSpec:
    """The fold layout from ``add_walk_forward_arguments``' flags (time order checked)."""
    cli.check_time_order(args.start, args.end)
    return WalkForwardSpec(
        train=args.train,
        test=args.test,
        mode=args.mode,
        start=args.start,
        end=args.end,
        max_folds=args.max_folds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m backtests.walk_forward",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    add_walk_forward_arguments(parser)
    parser.add_argument("--out", help="output folder (default: <output_dir>/walk_forward)")
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="one backtest over all test windows, each fold's model switched in at its window "
        "(positions carried across folds) instead of one flat-to-flat run per fold",
    )
    args = parser.parse_args(argv)
    try:
        spec = walk_forward_spec(args)
        settings = load_node_settings(args.config, args.override)
        out = cli.ensure_writable_dir(
            args.out or Path(settings.backtest.output_dir) / "walk_forward", "--out"
        )

        def progress(r: dict[str, Any]) -> None:
            print(
                f"fold {r['fold']}: test {iso(r['test_start'])} -> {iso(r['test_end'])}: "
                f"PnL {r['pnl']:,.2f}, Sharpe {r['sharpe']:.2f}, {r['orders']} orders",
                file=sys.stderr,
            )

        summary = walk_forward(
            settings,
            out,
            spec,
            strategy=args.strategy,
            on_fold=progress,
            continuous=args.continuous,
        )
    except (ConfigError, ValueError, cli.CLIError) as exc:
        print(cli.one_line(f"error: {exc}"), file=sys.stderr)
        return 2
    from backtests.report import comparison_table

    print((out / "folds.md").read_text())
    print(f"out-of-sample, {summary['folds']} folds stitched:")
    results = summary.get("fold_results") or [{}]
    print(comparison_table(summary["comparison"], results[0].get("baseline_notional")))
    print(f"reports in {out}/ (folds.csv, folds.md, equity.csv, summary.json, walk_forward.html)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
