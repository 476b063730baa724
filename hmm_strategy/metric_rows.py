"""The performance metrics' rows (key, label, format) and how a person reads each format.

One place for a metric's label and format: the backtest's console and reports
(``backtests.metrics``, ``backtests.report``), the research tables and the training report's
in-sample comparison (``hmm_strategy.train``, which may not import ``backtests``) all read it.
"""

from __future__ import annotations

import math

# key, label, format ("pct": the value is already in percent)
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return_pct", "total return", "signed_pct"),
    ("cagr_pct", "CAGR", "signed_pct"),
    ("volatility_pct", "volatility (ann.)", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"),
    ("max_drawdown_pct", "max drawdown", "pct"),
    ("max_drawdown_days", "max DD duration (days)", "days"),
    ("pnl", "PnL", "money"),
    ("fees", "fees", "money"),
    ("turnover_per_year", "turnover (x equity / yr)", "ratio"),
    ("time_in_market_pct", "time in market", "pct"),
    ("trades", "trades", "int"),
    ("win_rate_pct", "win rate", "pct"),
)


def fmt(value, kind: str) -> str:
    """A metric as a person reads it: -3.77%, 1.23, 8,032, 164 days; '-' when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "signed_pct":
        return f"{value:+.2f}%" if value else "0.00%"
    if kind == "pct":
        return f"{value:.2f}%"
    if kind == "money":
        return f"{value:,.0f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "days":
        return f"{value:.1f}"
    return f"{value:.2f}"
