"""Backtest reports: statistics JSON, order/fill/position CSVs, the tearsheet and the regime plot.

Everything a user looks at after ``python -m backtests.run`` is written here, into one run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import polars as pl
from nautilus_trader.analysis.tearsheet import create_tearsheet
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.backtest.results import BacktestResult
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.trading.trader import Trader

REPORT_FILES = (
    "stats.json",
    "orders.csv",
    "fills.csv",
    "positions.csv",
    "account.csv",
    "decisions.csv",
    "tearsheet.html",
    "regimes.html",
)


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


def write_trade_reports(trader: Trader, venues: list[Venue], run_dir: Path) -> None:
    """Orders, fills, positions and account CSVs from a backtest engine's or live node's trader."""
    trader.generate_orders_report().to_csv(run_dir / "orders.csv")
    trader.generate_order_fills_report().to_csv(run_dir / "fills.csv")
    trader.generate_positions_report().to_csv(run_dir / "positions.csv")
    frames = [trader.generate_account_report(venue) for venue in venues]
    frames = [f for f in frames if not f.empty]
    if frames:
        pd.concat(frames).to_csv(run_dir / "account.csv")


def write_tearsheet(node: BacktestNode, run_config_id: str, run_dir: Path) -> None:
    engine = node.get_engine(run_config_id)
    create_tearsheet(engine, output_path=str(run_dir / "tearsheet.html"), title="Nautilus HMM")


def write_regime_plot(decisions_csv: Path, output: Path) -> None:
    """Price with the strategy's target on top, the filtered regime probabilities stacked below."""
    df = pl.read_csv(decisions_csv)
    fig = go.Figure()
    if df.height:
        prob_cols = [c for c in df.columns if c.startswith("p") and df[c].null_count() < df.height]
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.04
        )
        for sid, part in df.group_by("strategy_id", maintain_order=True):
            time = pl.from_epoch(part["ts_event"], time_unit="ns").to_list()
            name = sid[0] if isinstance(sid, tuple) else sid
            fig.add_trace(go.Scattergl(x=time, y=part["close"], name=f"close ({name})"), 1, 1)
            for col in prob_cols:
                fig.add_trace(
                    go.Scatter(
                        x=time,
                        y=part[col],
                        name=f"P(state {col[1:]}) {name}",
                        stackgroup=name,
                        mode="lines",
                        line={"width": 0},
                    ),
                    2,
                    1,
                )
        fig.update_yaxes(title_text="price", row=1, col=1)
        fig.update_yaxes(title_text="P(regime | bars so far)", range=[0, 1], row=2, col=1)
    fig.update_layout(title="Price and filtered regime probabilities", height=800)
    fig.write_html(output, include_plotlyjs=True)
