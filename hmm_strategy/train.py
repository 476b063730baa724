"""Offline training: ``python -m hmm_strategy.train --config configs/node.yaml --start --end``.

Fits the HMM of one strategy of the node config on a date range of bars, with exactly the
strategy's ``FeatureSpec`` and fit settings (so the artifact is what that strategy would compute
live), writes a versioned model artifact and a training report (JSON + Markdown) next to it::

    <out>/<strategy name>/<version>.json          the artifact (hmm_strategy.artifacts)
    <out>/<strategy name>/<version>.report.json   log-likelihood, BIC per K, states, transitions
    <out>/<strategy name>/<version>.report.md     the same for humans
    <out>/<strategy name>/<version>.insample/     the model beside buy-and-hold and EMA cross
                                                  over the training window (backtest engine;
                                                  --no-compare skips it)

Only bars whose close time lies in ``[start, end]`` (both inclusive, UTC) are read: the training
set never contains a bar after ``end``. Bars come from the backtest catalog (imported from the
config's ``backtest.data`` on first use, so training sees the same rounded prices as the
backtest) or from a bar file given with ``--data``.

The version is ``<strategy>-<last bar close>-<parameter digest>``: a pure function of the data and
settings, so retraining the same range reproduces the same version and file name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import polars as pl
import yaml
from threadpoolctl import threadpool_limits

from hmm_strategy import cli
from hmm_strategy.artifacts import Expected, save_model
from hmm_strategy.config import (
    ComponentSpec,
    ConfigError,
    NodeSettings,
    add_config_arguments,
    load_node_settings,
    strategy_id_of,
)
from hmm_strategy.engine import FitSettings, SlowLevel
from hmm_strategy.features import FeatureSpec, aggregate_bars, batch_features, feature_matrix
from hmm_strategy.metric_rows import METRIC_ROWS, fmt
from hmm_strategy.model import BIC_STATES_GRID, RegimeHMM
from hmm_strategy.policy import PolicyConfig

DEFAULT_BIC_GRID = BIC_STATES_GRID  # the report compares the K that BIC selection tries
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# ----------------------------------------------------------------------------- strategy target
@dataclass(frozen=True)
class StrategyTarget:
    """What a model is trained for: one strategy of the node config, fully validated."""

    name: str  # the config entry's name (or its strategy id when unnamed)
    index: int  # position in settings.strategies
    strategy_id: str  # NautilusTrader StrategyId, e.g. HMMRegimeStrategy-001
    instrument_id: str
    bar_type: str
    features: FeatureSpec
    fit: FitSettings
    policy: PolicyConfig
    model_path: str | None
    slow: SlowLevel | None = None

    def expected_model(self) -> Expected:
        """What this strategy's model artifacts must have been made for."""
        return Expected.strategy(self.features, self.instrument_id, self.bar_type, self.slow)


HMM_SETTINGS = ("features", "fit", "policy", "instrument_id", "bar_type")


def strategy_target(
    settings: NodeSettings, name: str | None = None, *, first: bool = False
) -> StrategyTarget:
    """The HMM strategy called ``name`` (config name or strategy id); without a name the only
    one (``first``: the first one) -- other strategies in the node (e.g. a baseline) are skipped."""
    if not settings.strategies:
        raise ConfigError("the node config has no strategies")
    found: list[tuple[int, ComponentSpec, Any, str]] = []
    every: list[str] = []  # "name = id": both are accepted, the errors list both
    for i, spec in enumerate(settings.strategies):
        cfg = spec.parsed()
        sid = strategy_id_of(spec, cfg)
        every.append(f"{spec.name} = {sid}" if spec.name and spec.name != sid else sid)
        missing = [attr for attr in HMM_SETTINGS if not hasattr(cfg, attr)]
        if name is not None and name in (spec.name, sid) and missing:
            raise ConfigError(
                f"strategy {cli.quoted(name)} has no {missing[0]!r} setting: not an HMM strategy"
            )
        if not missing and (name is None or name in (spec.name, sid)):
            found.append((i, spec, cfg, sid))
    if found and first:
        found = found[:1]
    if not found:
        if name is None:
            raise ConfigError(f"the node config has no HMM strategy (have {', '.join(every)})")
        raise ConfigError(  # what to type first: a long list is cut at the end of the line
            f"no strategy {cli.quoted(name)} in the node config; known by name or id: "
            f"{', '.join(every)}"
        )
    if len(found) > 1:
        known = ", ".join(every[i] for i, *_ in found)
        if name is not None:  # ids are unique: the name of one strategy is the id of another
            handles = [
                cli.quoted(sid if spec.name == name else (spec.name or sid))
                for _, spec, _, sid in found
            ]
            raise ConfigError(
                f"pass {' or '.join(handles)}: {cli.quoted(name)} is one strategy's name and "
                f"another's id ({known})"
            )
        raise ConfigError(
            f"pass --strategy NAME or ID: the node config has several HMM strategies: {known}"
        )
    i, spec, cfg, sid = found[0]
    return StrategyTarget(
        name=spec.name or sid,
        index=i,
        strategy_id=sid,
        instrument_id=str(cfg.instrument_id),
        bar_type=str(cfg.bar_type),
        features=cfg.features,
        fit=cfg.fit,
        policy=cfg.policy,
        model_path=cfg.model_path,
        slow=cfg.slow,
    )


# ----------------------------------------------------------------------------------- time/data
def to_ns(value: str | int | pd.Timestamp | None) -> int | None:
    """UNIX ns from an ISO date/time (naive = UTC), a pandas Timestamp or an int of ns."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot parse time {value!r}: {exc}") from None
    if ts is pd.NaT:
        raise ValueError(f"cannot parse time {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def iso(ns: int) -> str:
    """ISO-8601 UTC with nanoseconds (what the catalog and ``run_backtest`` accept)."""
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def bars_frame(bars: Sequence[Any]) -> pl.DataFrame:
    """NautilusTrader ``Bar`` objects -> the normalized frame (ts_event = close, ns)."""
    return pl.DataFrame(
        {
            "ts_event": [b.ts_event for b in bars],
            "open": [b.open.as_double() for b in bars],
            "high": [b.high.as_double() for b in bars],
            "low": [b.low.as_double() for b in bars],
            "close": [b.close.as_double() for b in bars],
            "volume": [b.volume.as_double() for b in bars],
        },
        schema={
            "ts_event": pl.Int64,
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        },
    )


def load_frame(
    settings: NodeSettings,
    bar_type: str,
    start: str | int | None = None,
    end: str | int | None = None,
    *,
    data: str | Path | None = None,
    fmt: str | None = None,
) -> pl.DataFrame:
    """Bars of ``bar_type`` closing in [start, end], from the catalog or a bar file ``data``."""
    start_ns, end_ns = to_ns(start), to_ns(end)
    if start_ns is not None and end_ns is not None and start_ns > end_ns:
        raise ValueError(f"start {iso(start_ns)} is after end {iso(end_ns)}")
    if data is not None:
        from marketdata.bars import load_bars

        frame = load_bars(data, fmt).frame.select(
            "ts_event", "open", "high", "low", "close", "volume"
        )
    else:
        from marketdata.catalog import load_catalog_bars
        from marketdata.ingest import ensure_catalog

        if settings.backtest is None:
            raise ConfigError("the node config has no 'backtest' section (catalog); use --data")
        ensure_catalog(settings.backtest)
        bars = load_catalog_bars(settings.backtest.catalog_path, bar_type, start_ns, end_ns)
        frame = bars_frame(bars)
    if start_ns is not None:
        frame = frame.filter(pl.col("ts_event") >= start_ns)
    if end_ns is not None:
        frame = frame.filter(pl.col("ts_event") <= end_ns)
    return frame


# ------------------------------------------------------------------------------------- fitting
def fit_model(
    frame: pl.DataFrame, features: FeatureSpec, fit: FitSettings, *, n_states: int | None = None
) -> RegimeHMM:
    """Fit ``RegimeHMM`` on the batch features of ``frame`` with the strategy's fit settings."""
    X = batch_features(frame, features).select(features.names).to_numpy()
    if len(X) == 0:
        raise ValueError(
            f"{frame.height} bars give no feature row (the features need "
            f"{features.warmup_bars + 1} bars)"
        )
    model = fit.model(n_states)
    # One BLAS/OpenMP thread: on these small matrices threads only add synchronisation (KMeans
    # init was ~10x slower with 2 threads on a busy 2-core machine), and single-threaded
    # arithmetic is the same in every process, which keeps sweeps reproducible.
    with threadpool_limits(limits=1):
        return model.fit(np.ascontiguousarray(X, dtype=np.float64))


def fit_slow_model(frame: pl.DataFrame, slow: SlowLevel, fit: FitSettings) -> RegimeHMM:
    """Fit the slow level on coarse bars aggregated from ``frame`` exactly as the engine does
    (counting from the first bar; the incomplete last coarse bar is left out)."""
    coarse = aggregate_bars(frame, slow.bars_per_bar)
    X = feature_matrix(coarse, slow.features)
    if len(X) < slow.warmup_bars:
        raise ValueError(
            f"{frame.height} bars give {len(X)} slow feature rows, the slow level needs "
            f"{slow.warmup_bars} (slow.warmup_bars)"
        )
    with threadpool_limits(limits=1):
        return slow.model(fit).fit(X)


def model_digest(model: RegimeHMM) -> str:
    """Short sha256 of the fitted parameters (what the model computes), for version names."""
    h = hashlib.sha256()
    for arr in model.fitted_arrays():
        h.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    return h.hexdigest()[:10]


def model_version(
    name: str, last_ns: int, model: RegimeHMM, slow_model: RegimeHMM | None = None
) -> str:
    stamp = pd.Timestamp(last_ns, unit="ns", tz="UTC").strftime("%Y%m%dT%H%M")
    digest = model_digest(model)
    if slow_model is not None:
        digest += f"-{model_digest(slow_model)[:6]}"
    return f"{_SAFE.sub('_', name)}-{stamp}-{digest}"


# -------------------------------------------------------------------------------------- report
_STATE_LABELS = {2: ("bear", "bull"), 3: ("bear", "calm", "bull")}


def training_report(
    model: RegimeHMM,
    frame: pl.DataFrame,
    features: FeatureSpec,
    *,
    comparison: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plain-data training report: fit quality, BIC per K, states in raw units, transitions."""
    feats = batch_features(frame, features)
    X = feats.select(features.names).to_numpy()
    n = len(X)
    close = frame["close"].to_numpy()
    ret = np.log(close[1:] / close[:-1])[features.warmup_bars - 1 :]  # return of each row's bar
    # smoothed probabilities are fine here: the report describes the training window offline
    gamma = model.predict_proba(X)
    ts = frame["ts_event"]
    diffs = np.diff(ts.to_numpy())
    interval_ns = int(np.median(diffs)) if len(diffs) else None
    std_raw = np.sqrt(np.diagonal(model.covars_, axis1=1, axis2=2)) * model.scaler_std_
    means_raw = model.means_raw()
    durations = model.expected_durations()
    labels = _STATE_LABELS.get(model.n_states_, tuple(f"s{k}" for k in range(model.n_states_)))
    states = []
    for k in range(model.n_states_):
        w = gamma[:, k]
        wsum = float(w.sum())
        mu = float((w * ret).sum() / wsum) if wsum > 0 else None
        vol = None
        if mu is not None:
            vol = float(math.sqrt(max((w * (ret - mu) ** 2).sum() / wsum, 0.0)))
        dur = float(durations[k])
        states.append(
            {
                "state": k,
                "label": labels[k],
                "occupancy": wsum / n,
                "return_mean": mu,  # per-bar log return, probability-weighted
                "return_volatility": vol,
                "expected_duration_bars": None if math.isinf(dur) else dur,
                "expected_duration_hours": (
                    None if math.isinf(dur) or not interval_ns else dur * interval_ns / 3.6e12
                ),
                "feature_means": dict(zip(features.names, means_raw[k].tolist(), strict=True)),
                "feature_std": dict(zip(features.names, std_raw[k].tolist(), strict=True)),
            }
        )
    ll = float(model.log_likelihood_ if model.log_likelihood_ is not None else model.score(X))
    chosen = {
        "n_states": model.n_states_,
        "log_likelihood": ll,
        "bic": model.bic_,
        "chosen": True,
    }
    by_k = comparison or [
        {**c, "chosen": c.get("n_states") == model.n_states_}
        for c in model.diagnostics_.get("bic_by_n_states", [chosen])
    ]
    return {
        **(meta or {}),
        "bars": frame.height,
        "feature_rows": n,
        "first_bar": iso(int(ts[0])),
        "last_bar": iso(int(ts[-1])),
        "interval_ns": interval_ns,
        "features": {**msgspec.to_builtins(features), "names": list(features.names)},
        "n_states": model.n_states_,
        "log_likelihood": ll,
        "log_likelihood_per_row": ll / n,
        "bic": model.bic_,
        "converged": model.converged_,
        "n_iter": model.n_iter_,
        "bic_by_n_states": by_k,
        "states": states,
        "transition_matrix": model.transmat_.tolist(),
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The training report as Markdown (what ``--out`` writes next to the artifact)."""

    def f(v: Any, spec: str = ".4g") -> str:
        return "-" if v is None else format(v, spec)

    lines = [
        f"# Training report: {report.get('model_version', '')}",
        "",
        f"- strategy: {report.get('strategy', '')} ({report.get('strategy_id', '')})",
        f"- bars: {report.get('bar_type', '')}, {report['bars']:,} bars closing "
        f"{report['first_bar']} -> {report['last_bar']} ({report['feature_rows']:,} feature rows)",
        f"- log-likelihood {f(report['log_likelihood'], ',.1f')} "
        f"({f(report['log_likelihood_per_row'], '.4f')} per row), BIC {f(report['bic'], ',.1f')}, "
        f"converged {report['converged']} after {report['n_iter']} EM iterations",
        "",
        "## BIC per number of states (lower is better)",
        "",
        "| states | log-likelihood | BIC | |",
        "|---:|---:|---:|---|",
    ]
    for c in report["bic_by_n_states"]:
        mark = "chosen" if c.get("chosen") else (c.get("error") or "")
        lines.append(
            f"| {c['n_states']} | {f(c.get('log_likelihood'), ',.1f')} | "
            f"{f(c.get('bic'), ',.1f')} | {mark} |"
        )
    names = report["features"]["names"]
    lines += [
        "",
        "## States (raw units; returns are per-bar log returns)",
        "",
        "| state | share | return mean | return vol | duration (bars) | duration (h) | "
        + " | ".join(f"{n} mean (sd)" for n in names)
        + " |",
        "|---" * (6 + len(names)) + "|",
    ]
    for s in report["states"]:
        cells = [
            f"{s['state']} {s['label']}",
            f"{s['occupancy']:.1%}",
            f(s["return_mean"], ".2e"),
            f(s["return_volatility"], ".2e"),
            f(s["expected_duration_bars"], ".1f"),
            f(s["expected_duration_hours"], ".1f"),
        ]
        cells += [f"{s['feature_means'][n]:.3g} ({s['feature_std'][n]:.2g})" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    k = len(report["transition_matrix"])
    lines += [
        "",
        "## Transition matrix (row = from, column = to)",
        "",
        "| from \\ to | " + " | ".join(str(j) for j in range(k)) + " |",
        "|---" * (k + 1) + "|",
    ]
    for i, row in enumerate(report["transition_matrix"]):
        lines.append(f"| {i} | " + " | ".join(f"{p:.4f}" for p in row) + " |")
    if "in_sample_comparison" in report:
        lines += comparison_markdown(report["in_sample_comparison"])
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainResult:
    artifact: Path
    version: str
    report: dict[str, Any]
    report_json: Path | None
    report_md: Path | None


def train(
    target: StrategyTarget,
    frame: pl.DataFrame,
    out_dir: str | Path,
    *,
    bic_grid: Sequence[int] = (),
    write_report: bool = True,
    fit: FitSettings | None = None,
    features: FeatureSpec | None = None,
    subdir: bool = True,
) -> TrainResult:
    """Fit on ``frame`` (already cut to the training range), save artifact and report.

    ``bic_grid`` fits the other numbers of states too, for the report's BIC comparison (the
    artifact is still the configured K unless the strategy selects K by BIC). ``fit`` and
    ``features`` override the strategy's settings (sweeps).
    """
    fit = fit or target.fit
    features = features or target.features
    if frame.height == 0:
        raise ValueError("no bars in the training range")
    model = fit_model(frame, features, fit)
    comparison: list[dict[str, Any]] | None = None
    if bic_grid and not fit.select_states_by_bic:
        comparison = []
        for k in sorted(set(bic_grid) | {model.n_states_}):
            if k == model.n_states_:
                m: RegimeHMM | None = model
                err = None
            else:
                try:
                    m, err = fit_model(frame, features, fit, n_states=k), None
                except ValueError as exc:
                    m, err = None, str(exc)
            comparison.append(
                {
                    "n_states": k,
                    "log_likelihood": None if m is None else m.log_likelihood_,
                    "bic": None if m is None else m.bic_,
                    "chosen": k == model.n_states_,
                    **({"error": err} if err else {}),
                }
            )
    slow_model = None if target.slow is None else fit_slow_model(frame, target.slow, fit)
    ts = frame["ts_event"]
    first, last = int(ts[0]), int(ts[-1])
    version = model_version(target.name, last, model, slow_model)
    folder = Path(out_dir) / _SAFE.sub("_", target.name) if subdir else Path(out_dir)
    artifact = folder / f"{version}.json"
    save_model(
        model,
        artifact,
        feature_spec=features,
        data_range=(first, last),
        instrument_id=target.instrument_id,
        bar_type=target.bar_type,
        version=version,
        slow=None
        if slow_model is None
        else (slow_model, target.slow.bars_per_bar, target.slow.features),
    )
    meta = {
        "model_version": version,
        "artifact": str(artifact),
        "strategy": target.name,
        "strategy_id": target.strategy_id,
        "instrument_id": target.instrument_id,
        "bar_type": target.bar_type,
        "fit": msgspec.to_builtins(fit),
    }
    if slow_model is not None:
        meta["slow"] = {
            **msgspec.to_builtins(target.slow),
            "n_states": slow_model.n_states_,
            "expected_durations_coarse_bars": slow_model.diagnostics_["expected_durations"],
            "means_raw": slow_model.diagnostics_["means_raw"],
        }
    report = training_report(model, frame, features, comparison=comparison, meta=meta)
    rj = rm = None
    if write_report:
        rj = folder / f"{version}.report.json"
        rm = folder / f"{version}.report.md"
        rj.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        rm.write_text(report_markdown(report))
    return TrainResult(artifact, version, report, rj, rm)


# ------------------------------------------------------------------------ in-sample comparison
# the backtest's metric rows shown in the report, labelled and formatted as the backtest does
COMPARISON_KEYS = (
    "total_return_pct", "sharpe", "max_drawdown_pct", "fees", "turnover_per_year", "trades",
)  # fmt: skip
COMPARISON_ROWS = tuple({row[0]: row for row in METRIC_ROWS}[key] for key in COMPARISON_KEYS)
RUNS = (("strategy", "strategy"), ("buy_and_hold", "buy & hold"), ("ema_cross", "EMA cross"))


def in_sample_comparison(
    config: str,
    overrides: Sequence[str],
    strategy: str,
    artifact: Path,
    start: str,
    end: str,
    run_dir: Path,
) -> dict[str, Any]:
    """The trained model, buy-and-hold and EMA cross over the training window, through the
    backtest engine with the node config's bars, fees and capital (``python -m backtests.run``,
    run as a child process: the training command stays below the backtest package).

    In sample: it shows what the model does on the bars it was fitted on, an upper bound and not
    evidence; out-of-sample figures come from ``python -m backtests.walk_forward``.
    Returns ``{"run_dir", "comparison"}`` or ``{"run_dir", "error"}``; a failed run never raises.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    override = run_dir.parent / f"{run_dir.name}.override.yaml"
    doc = {"strategies": [{"name": strategy, "config": {"model_path": str(artifact.resolve())}}]}
    override.write_text(yaml.safe_dump(doc, sort_keys=False))
    cmd = [
        sys.executable, "-m", "backtests.run", "--config", config,
        *[arg for o in overrides for arg in ("--override", o)], "--override", str(override),
        "--start", start, "--end", end, "--run-dir", str(run_dir), "--no-tearsheet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    stats = run_dir / "stats.json"
    if proc.returncode != 0 or not stats.exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        out["error"] = cli.one_line(lines[-1] if lines else f"exit {proc.returncode}")
        return out
    doc = json.loads(stats.read_text())
    comparison = doc.get("comparison") or {}
    out["capital"] = (comparison.get("strategy") or {}).get("capital")
    out["baseline_notional"] = doc.get("baseline_notional")
    out["comparison"] = {
        run: {key: comparison[run].get(key) for key, _, _ in COMPARISON_ROWS}
        for run, _ in RUNS
        if run in comparison
    }
    return out


def comparison_markdown(section: dict[str, Any]) -> list[str]:
    """The in-sample comparison as a Markdown table (or the reason it is missing)."""
    lines = ["", "## In-sample comparison (training window, same backtest engine)", ""]
    if "comparison" not in section:
        why = section.get("error") or section.get("skipped") or "not run"
        return [*lines, f"Not available: {why}"]
    cells = comparison_cells(section)
    lines += [
        "In sample: the model is judged on the bars it was fitted on (an upper bound, not "
        "evidence; see `python -m backtests.walk_forward` for out-of-sample results). "
        f"{sizing(section)}. Run folder: `{section['run_dir']}`.",
        "",
        "| | " + " | ".join(cells) + " |",
        "|---|" + "---|" * len(cells),
    ]
    for i, (_, label, _) in enumerate(COMPARISON_ROWS):
        lines.append(f"| {label} | " + " | ".join(column[i] for column in cells.values()) + " |")
    return lines


def sizing(section: dict[str, Any]) -> str:
    """What the runs traded: the capital, and the notional the baselines hold."""
    capital, notional = section.get("capital"), section.get("baseline_notional")
    text = "On the same capital" + (f" ({capital:,.0f})" if capital else "")
    if notional:
        text += (
            f"; baselines trade {notional:,.0f} notional, the strategy's full exposure under the "
            "node config's allocator (a walk-forward runs without it, so its sizes differ)"
        )
    return text


def comparison_cells(section: dict[str, Any]) -> dict[str, list[str]]:
    """Run label -> its formatted metrics in ``COMPARISON_ROWS`` order ('-' when undefined)."""

    def cell(value: Any, kind: str) -> str:
        return fmt(value if isinstance(value, int | float) else None, kind)

    return {
        label: [cell(section["comparison"][run].get(key), kind) for key, _, kind in COMPARISON_ROWS]
        for run, label in RUNS
        if run in section["comparison"]
    }


# ----------------------------------------------------------------------------------------- CLI
def _grid(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bic-grid must be e.g. 2,3,4,5, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m hmm_strategy.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--start", required=True, type=cli.iso_time, help="first bar close (ISO, UTC), inclusive"
    )
    parser.add_argument(
        "--end", required=True, type=cli.iso_time, help="last bar close (ISO, UTC), inclusive"
    )
    parser.add_argument("--out", default="models", help="output folder (default: models/)")
    parser.add_argument("--data", help="read bars from this file instead of the catalog")
    parser.add_argument("--format", help="format of --data (detected when omitted)")
    parser.add_argument(
        "--bic-grid",
        type=_grid,
        default=DEFAULT_BIC_GRID,
        help="numbers of states compared by BIC in the report ('' = skip), default 2,3,4,5",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="skip the in-sample backtest of the model beside buy-and-hold and EMA cross",
    )
    args = parser.parse_args(argv)
    try:
        cli.check_time_order(args.start, args.end)
        cli.ensure_writable_dir(args.out, "--out")
        settings = load_node_settings(args.config, args.override)
        target = strategy_target(settings, args.strategy)
        frame = load_frame(
            settings, target.bar_type, args.start, args.end, data=args.data, fmt=args.format
        )
        if frame.height == 0:
            raise ValueError(f"no {target.bar_type} bars close in [{args.start}, {args.end}]")
        result = train(target, frame, args.out, bic_grid=args.bic_grid)
    except (ConfigError, ValueError, OSError, cli.CLIError) as exc:
        print(cli.describe(exc, known=True), file=sys.stderr)
        return 2
    r = result.report
    if args.no_compare:
        section: dict[str, Any] = {"skipped": "--no-compare"}
    elif args.data:
        section = {
            "skipped": "trained on --data, which the backtest does not read; run "
            "python -m backtests.run with this model_path on the config's data"
        }
    else:
        print("comparing in sample: the model, buy-and-hold and EMA cross through the backtest")
        section = in_sample_comparison(
            args.config, args.override, target.name, result.artifact, args.start, args.end,
            result.artifact.with_name(f"{result.version}.insample"),
        )  # fmt: skip
    r["in_sample_comparison"] = section
    if result.report_json is not None and result.report_md is not None:
        result.report_json.write_text(json.dumps(r, indent=1, allow_nan=False) + "\n")
        result.report_md.write_text(report_markdown(r))
    if "error" in section:
        print(f"warning: in-sample comparison failed: {section['error']}", file=sys.stderr)
    print(
        f"trained {result.version}: {r['n_states']} states on {r['bars']:,} bars "
        f"({r['first_bar']} -> {r['last_bar']}), log-lik/row {r['log_likelihood_per_row']:.4f}"
    )
    print(f"artifact {result.artifact}")
    print(f"report   {result.report_md}")
    if "comparison" not in section:
        print(f"in-sample comparison: not available: {section.get('skipped') or 'see above'}")
    else:
        print("in sample (the training window; out-of-sample: python -m backtests.walk_forward):")
        print(f"  {sizing(section)}")
        table = pd.DataFrame(
            comparison_cells(section), index=[label for _, label, _ in COMPARISON_ROWS]
        )
        print("\n".join("  " + line for line in table.to_string(col_space=10).splitlines()))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
