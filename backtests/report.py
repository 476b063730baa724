"""Backtest reports: statistics JSON, order/fill/position CSVs, the tearsheet and the regime plot.

Everything a user looks at after ``python -m backtests.run`` is written here, into one run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import polars as pl
from nautilus_trader.analysis.tearsheet import create_tearsheet
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.backtest.results import BacktestResult
from plotly.subplots import make_subplots

from backtests.metrics import METRIC_ROWS, read_fills, state_labels
from hmm_strategy.metric_rows import fmt

REPORT_FILES = (
    "stats.json",
    "orders.csv",
    "fills.csv",
    "positions.csv",
    "account.csv",
    "decisions.csv",
    "tearsheet.html",
    "regimes.html",
    "comparison.html",
    "equity.csv",
)
# column headers of the comparison, in this order (unknown names keep their key)
RUN_LABELS = {"strategy": "strategy", "buy_and_hold": "buy & hold", "ema_cross": "EMA cross"}
STATE_COLORS = {"bear": "#d62728", "calm": "#7f7f7f", "bull": "#2ca02c"}


def _finite(value):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_stats(result: BacktestResult, run_dir: Path, extra: dict | None = None) -> dict:
    stats = _finite(dataclasses.asdict(result))
    stats.update(_finite(extra or {}))
    (run_dir / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True, default=str))
    return stats


def write_tearsheet(
    node: BacktestNode,
    run_config_id: str,
    run_dir: Path,
    benchmark_returns: pd.Series | None = None,
) -> None:
    """NautilusTrader's tearsheet, with buy-and-hold's daily returns as the benchmark."""
    engine = node.get_engine(run_config_id)
    create_tearsheet(
        engine,
        output_path=str(run_dir / "tearsheet.html"),
        title="Nautilus HMM (benchmark: buy & hold, same capital and fees)",
        benchmark_returns=benchmark_returns,
        benchmark_name="Buy & hold",
    )


def write_equity(curves: dict[str, dict], close: np.ndarray, path: Path) -> None:
    """Bar-by-bar mark-to-market PnL of the strategy and each baseline (``<name>_pnl``)."""
    base = curves["strategy"]
    cols = {"ts_event": base["ts"], "close": close}
    for name, c in curves.items():
        cols[f"{name}_pnl"] = c["pnl"]
        cols[f"{name}_position"] = c["position"]
    pl.DataFrame(cols).write_csv(path)


# ------------------------------------------------------------------------- console comparison
def comparison_table(comparison: dict[str, dict], notional: float | None = None) -> str:
    """The side-by-side table printed after every run (strategy first, then the baselines)."""
    names = sorted(comparison, key=lambda n: list(RUN_LABELS).index(n) if n in RUN_LABELS else 99)
    cells = {
        RUN_LABELS.get(n, n): [fmt(comparison[n].get(key), kind) for key, _, kind in METRIC_ROWS]
        for n in names
    }
    table = pd.DataFrame(cells, index=[label for _, label, _ in METRIC_ROWS])
    first = next(iter(comparison.values()), {})
    capital = first.get("capital")
    title = "  performance on the same capital"
    if capital:
        title += f" ({capital:,.0f})"
    if notional and len(names) > 1:
        title += f"; baselines trade {notional:,.0f} notional (the strategy's full exposure)"
    out = [title, *("  " + line for line in table.to_string(col_space=10).splitlines())]
    for n in names:
        if comparison[n].get("ruined_at") is not None:
            out.append(
                f"  note: {RUN_LABELS.get(n, n)} lost all its capital on "
                f"{_day(comparison[n]['ruined_at'])} UTC; its ratios are not meaningful"
            )
    return "\n".join(out)


def regime_lines(diag: dict | None) -> list[str]:
    """Out-of-sample regime evidence for the console: durations, switches, next-bar returns."""
    if not diag or not diag.get("states"):
        return []
    hours = diag.get("expected_duration_hours") or [None] * len(diag["states"])
    lines = [
        f"  regimes (out of sample, {diag['bars']:,} decisions): "
        f"{diag.get('switches_per_1000_bars', 0):.1f} switches per 1,000 bars; "
        "next-bar log return per state in basis points, 95% CI:",
        f"    {'state':<6} {'share':>6} {'E[duration]':>11} {'mean':>22} {'volatility':>20}",
    ]
    for s, h in zip(diag["states"], hours, strict=False):
        if "next_bar_mean" not in s:
            lines.append(f"    {s['label']:<6} {s['share']:>6.1%}  (too few bars)")
            continue
        lo, hi = (10_000 * v for v in s["next_bar_mean_ci95"])
        vlo, vhi = (10_000 * v for v in s["next_bar_vol_ci95"])
        dur = "-" if h is None else f"{h:.1f} h"
        lines.append(
            f"    {s['label']:<6} {s['share']:>6.1%} {dur:>11} "
            f"{10_000 * s['next_bar_mean']:>+7.2f} [{lo:+6.2f},{hi:+6.2f}] "
            f"{10_000 * s['next_bar_vol']:>6.1f} [{vlo:5.1f},{vhi:5.1f}]"
        )
    return lines


# ---------------------------------------------------------------- governance and traded period
def read_events(path: Path) -> list[dict]:
    """Governance commands, breaker trips and kill switches of a run (``events.csv``), in order;
    consecutive breaker rejections for the same reason are collapsed into one entry."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    df = pl.read_csv(path, infer_schema_length=0)
    out: list[dict] = []
    for ts, kind, sid, detail in df.select("ts_event", "kind", "strategy_id", "detail").rows():
        ts = int(ts)
        if kind == "GovernanceCommand":
            fields = _fields(detail)
            action = fields.get("action", "")
            reason = fields.get("reason", "")
            if action == "pause" and reason.startswith("retired"):
                action = "retire"
            out.append(
                {
                    "ts": ts,
                    "kind": "governance",
                    "action": action,
                    "strategy_id": sid,
                    "reason": reason,
                }
            )
        elif kind == "BreakerRejection":
            reason = _fields(detail).get("reason", "")
            last = out[-1] if out else None
            if last and last["kind"] == "breaker" and last["reason"] == reason:
                last["count"] += 1
                last["last_ts"] = ts
                continue
            out.append(
                {
                    "ts": ts,
                    "last_ts": ts,
                    "kind": "breaker",
                    "action": "blocked",
                    "strategy_id": sid,
                    "reason": reason,
                    "count": 1,
                }
            )
        elif kind == "KillSwitch":
            out.append(
                {
                    "ts": ts,
                    "kind": "kill_switch",
                    "action": "halt",
                    "strategy_id": sid,
                    "reason": detail,
                }
            )
    return out


def _fields(detail: str) -> dict[str, str]:
    """``action=pause scale=0.0 reason=rule 'x' fired`` -> dict (``reason`` takes the rest)."""
    out: dict[str, str] = {}
    head, _, reason = (detail or "").partition(" reason=")
    for part in head.split(" "):
        key, _, value = part.partition("=")
        if key:
            out[key] = value
    if " reason=" in (detail or ""):
        out["reason"] = reason
    return out


def traded_period(bar_ts: np.ndarray, curve: dict, events: list[dict]) -> dict:
    """The data period versus the period the strategy actually traded, and why it stopped."""
    ts = np.asarray(bar_ts, dtype=np.int64)
    position = np.asarray(curve["position"])
    held = np.flatnonzero(position != 0)
    retired = next((e for e in events if e["action"] == "retire"), None)
    last_gov = next((e for e in reversed(events) if e["kind"] == "governance"), None)
    stopped = None
    if retired is not None:
        stopped = retired
    elif last_gov is not None and last_gov["action"] == "pause":
        stopped = last_gov
    return {
        "data_first_bar": int(ts[0]) if len(ts) else None,
        "data_last_bar": int(ts[-1]) if len(ts) else None,
        "first_in_market": int(ts[held[0]]) if len(held) else None,
        "last_in_market": int(ts[held[-1]]) if len(held) else None,
        "stopped_at": None if stopped is None else stopped["ts"],
        "stopped_by": None if stopped is None else stopped["action"],
        "stopped_reason": None if stopped is None else stopped["reason"],
    }


def _day(ns: int | None) -> str:
    return "-" if ns is None else pd.Timestamp(ns, unit="ns", tz="UTC").strftime("%Y-%m-%d %H:%M")


def period_lines(period: dict, events: list[dict]) -> list[str]:
    """What the console says about the traded period, governance and breakers."""
    lines = [
        f"  data:   {_day(period['data_first_bar'])} -> {_day(period['data_last_bar'])} UTC",
        f"  traded: {_day(period['first_in_market'])} -> {_day(period['last_in_market'])} UTC"
        " (first and last bar holding a position)",
    ]
    if period.get("stopped_at") is not None and period.get("data_last_bar"):
        idle = (period["data_last_bar"] - period["stopped_at"]) / 86_400e9
        verb = "RETIRED" if period["stopped_by"] == "retire" else "PAUSED"
        lines.append(
            f"  !! governance {verb} the strategy on {_day(period['stopped_at'])} UTC and it never "
            f"traded again (the last {idle:.0f} days idle): {period['stopped_reason']}"
        )
    gov = [e for e in events if e["kind"] != "breaker"]
    if gov:
        lines.append(f"  governance events ({len(gov)}):")
        lines += [f"    {_day(e['ts'])}  {e['action']:<8} {e['reason']}" for e in gov]
    breakers = [e for e in events if e["kind"] == "breaker"]
    if breakers:
        total = sum(e["count"] for e in breakers)
        lines.append(f"  circuit breakers blocked {total:,} orders in {len(breakers)} episodes:")
        lines += [
            f"    {_day(e['ts'])} -> {_day(e['last_ts'])}  {e['reason']} ({e['count']}x)"
            for e in breakers[:10]
        ]
        if len(breakers) > 10:
            lines.append(f"    ... {len(breakers) - 10} more in stats.json")
    return lines


# ----------------------------------------------------------------------------------- the plots
_EVENT_COLORS = {
    "retire": "black",
    "pause": "#d62728",
    "throttle": "#ff7f0e",
    "resume": "#2ca02c",
    "blocked": "#9467bd",
    "halt": "black",
}


def _mark_events(fig: go.Figure, events: list[dict], end_ns: int | None) -> None:
    """Governance/breaker/kill-switch events as vertical lines; a retirement shades the rest."""
    for e in events:
        x = pd.Timestamp(e["ts"], unit="ns", tz="UTC")
        color = _EVENT_COLORS.get(e["action"], "grey")
        fig.add_vline(x=x, line_color=color, line_dash="dot", line_width=1, opacity=0.8)
        if e["action"] == "retire" and end_ns is not None:
            fig.add_vrect(
                x0=x,
                x1=pd.Timestamp(end_ns, unit="ns", tz="UTC"),
                fillcolor="black",
                opacity=0.08,
                line_width=0,
            )
    for action in sorted({e["action"] for e in events}):
        # legend entries for the vertical lines (shapes have no legend of their own)
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                name=f"governance: {action}"
                if action not in ("blocked", "halt")
                else f"breaker: {action}",
                line={"color": _EVENT_COLORS.get(action, "grey"), "dash": "dot"},
            )
        )


def write_comparison_plot(curves: dict[str, dict], events: list[dict], output: Path) -> None:
    """Mark-to-market equity of the strategy and its baselines on one chart, events marked."""
    fig = go.Figure()
    for name, c in curves.items():
        t = pd.to_datetime(np.asarray(c["ts"], dtype=np.int64), utc=True)
        fig.add_trace(go.Scattergl(x=t, y=c["pnl"], name=RUN_LABELS.get(name, name)))
    end = int(curves["strategy"]["ts"][-1]) if len(curves["strategy"]["ts"]) else None
    _mark_events(fig, events, end)
    retired = next((e for e in events if e["action"] == "retire"), None)
    title = "Mark-to-market PnL: strategy vs baselines (same bars, fees and capital)"
    if retired is not None:
        title += f"<br><sub>retired by governance on {_day(retired['ts'])} UTC (shaded)</sub>"
    # a ruined baseline (PnL below -capital) would squash every other line flat: the axis spans
    # the strategy and buy-and-hold, and the ruined line runs off the chart (it is in the table)
    spans = [np.asarray(c["pnl"], dtype=float) for n, c in curves.items() if n != "ema_cross"]
    spans = [v[np.isfinite(v)] for v in spans if len(v)]
    if spans and any(len(v) for v in spans):
        lo = min(float(v.min()) for v in spans if len(v))
        hi = max(float(v.max()) for v in spans if len(v))
        pad = 0.1 * (hi - lo or 1.0)
        fig.update_yaxes(range=[lo - pad, hi + pad])
    fig.update_layout(title=title, height=600, yaxis_title="PnL (quote currency)")
    fig.write_html(output, include_plotlyjs=True)


def write_regime_plot(
    decisions_csv: Path,
    output: Path,
    *,
    fills_csv: Path | None = None,
    events: list[dict] | None = None,
    bucket: str | None = None,
) -> None:
    """Price with fills, then per time bucket (default: ~300 over the run) the most likely
    state as a named ribbon, the mean regime probabilities and the mean target exposure, and
    governance events: readable over a year of 15-minute bars (raw values in decisions.csv)."""
    df = pl.read_csv(decisions_csv, infer_schema_length=10_000)
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        row_heights=[0.45, 0.08, 0.27, 0.2],
    )
    if df.height:
        prob_cols = [
            c
            for c in df.columns
            if c[:1] == "p" and c[1:].isdigit() and df[c].null_count() < df.height
        ]
        labels = state_labels(len(prob_cols))
        df = df.with_columns(pl.from_epoch("ts_event", time_unit="ns").alias("time"))
        for (sid,), part in df.group_by("strategy_id", maintain_order=True):
            fig.add_trace(
                go.Scattergl(
                    x=part["time"],
                    y=part["close"],
                    name=f"close ({sid})",
                    line={"color": "#1f77b4", "width": 1},
                ),
                1,
                1,
            )
            colors = [STATE_COLORS.get(lbl, "#17becf") for lbl in labels]
            k = max(len(labels) - 1, 1)
            scale = []
            for i, c in enumerate(colors):
                scale += [[i / (k + 1) if i else 0.0, c], [(i + 1) / (k + 1), c]]
            span_h = (part["ts_event"].max() - part["ts_event"].min()) / 3.6e12
            every = bucket or f"{max(1, math.ceil(span_h / 300))}h"  # ~300 points per panel
            binned = (
                part.sort("time")
                .group_by_dynamic("time", every=every)
                .agg([pl.col(c).mean() for c in prob_cols] + [pl.col("target_exposure").mean()])
            )
            probs = binned.select(prob_cols).to_numpy()
            fig.add_trace(
                go.Heatmap(
                    x=binned["time"],
                    y=["state"],
                    z=[probs.argmax(axis=1).tolist()],
                    zmin=-0.5,
                    zmax=len(labels) - 0.5,
                    colorscale=scale,
                    showscale=False,
                    name="most likely state",
                    hovertemplate="%{x}<br>state %{z}<extra></extra>",
                ),
                2,
                1,
            )
            for col, lbl, c in zip(prob_cols, labels, colors, strict=True):
                fig.add_trace(
                    go.Scatter(
                        x=binned["time"],
                        y=binned[col],
                        stackgroup=sid,
                        name=f"P({lbl}), {every} mean",
                        mode="lines",
                        line={"width": 0, "color": c},
                    ),
                    3,
                    1,
                )
            fig.add_trace(
                go.Scatter(
                    x=binned["time"],
                    y=binned["target_exposure"],
                    name=f"target exposure, {every} mean",
                    line={"color": "#8c564b"},
                ),
                4,
                1,
            )
        for lbl, c in zip(labels, [STATE_COLORS.get(x, "#17becf") for x in labels], strict=True):
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=f"state: {lbl}",
                    marker={"color": c, "symbol": "square", "size": 10},
                )
            )
        fills = read_fills(fills_csv) if fills_csv is not None else None
        if fills is not None and fills.height:
            t = pd.to_datetime(fills["ts"].to_numpy(), utc=True)
            buy = fills["qty"].to_numpy() > 0
            px = fills["px"].to_numpy()
            for mask, name, sym, color in (
                (buy, "buy fill", "triangle-up", "#2ca02c"),
                (~buy, "sell fill", "triangle-down", "#d62728"),
            ):
                fig.add_trace(
                    go.Scattergl(
                        x=t[mask],
                        y=px[mask],
                        mode="markers",
                        name=name,
                        marker={"symbol": sym, "color": color, "size": 7},
                    ),
                    1,
                    1,
                )
        _mark_events(fig, events or [], int(df["ts_event"][-1]))
        fig.update_yaxes(title_text="price", row=1, col=1)
        fig.update_yaxes(showticklabels=False, row=2, col=1)
        fig.update_yaxes(title_text="P(regime)", range=[0, 1], row=3, col=1)
        fig.update_yaxes(title_text="exposure", range=[-1.1, 1.1], row=4, col=1)
    fig.update_layout(
        title="Price, fills, filtered regimes (states named by their mean trend feature), "
        "target exposure and governance events",
        height=950,
    )
    fig.write_html(output, include_plotlyjs=True)
