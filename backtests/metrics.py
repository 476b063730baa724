"""Performance metrics of a run, computed the same way for the strategy and its baselines.

One place used by ``backtests.run``, ``backtests.walk_forward`` and ``backtests.sweep``, so a
number in the console, in ``stats.json`` and in a walk-forward summary means the same thing.

Why not the engine's own return series: NautilusTrader's ``PortfolioAnalyzer`` derives returns
from account balance events, and a MARGIN account's balance moves only when PnL is realized. A
buy-and-hold position would show a flat curve and one jump on the last day. These metrics use
the mark-to-market equity at every bar close instead (cash + position x close, fees included),
rebuilt from the run's fills, and hand its returns to NautilusTrader's own statistics
(``SharpeRatio``, ``SortinoRatio``, ``ReturnsVolatility``, ``CAGR``, ``MaxDrawdown``), which
resample to daily where their definition needs it.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from nautilus_trader.analysis import (
    CAGR,
    MaxDrawdown,
    ReturnsVolatility,
    SharpeRatio,
    SortinoRatio,
)

from hmm_strategy.metric_rows import METRIC_ROWS  # the rows live below backtests (train uses them)

NS_PER_DAY = 86_400 * 1_000_000_000
NS_PER_YEAR = 365 * NS_PER_DAY

METRIC_KEYS = tuple(key for key, _, _ in METRIC_ROWS)


def parse_money(text: Any) -> float:
    """``"['9.99 USDT']"`` or ``"-32.5 USDT"`` (NautilusTrader's reports) -> the amount."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return 0.0
    try:
        items = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        items = [str(text)]
    if isinstance(items, str | float | int):
        items = [items]
    return float(sum(float(str(m).split()[0]) for m in items))


FILL_SCHEMA = {"ts": pl.Int64, "qty": pl.Float64, "px": pl.Float64, "fee": pl.Float64}


def fill_frame(fills: pd.DataFrame | None, instrument_id: str | None = None) -> pl.DataFrame:
    """A fills report (``Trader.generate_order_fills_report`` or its CSV) as ts (ns), signed
    qty, price and commission, in time order."""
    if fills is None or fills.empty or "side" not in fills.columns:
        return pl.DataFrame(schema=FILL_SCHEMA)
    if instrument_id is not None and "instrument_id" in fills.columns:
        fills = fills[fills["instrument_id"].astype(str) == instrument_id]
    ts = pd.to_datetime(fills["ts_last"], utc=True).dt.as_unit("ns").astype("int64")
    sign = np.where(fills["side"].astype(str) == "BUY", 1.0, -1.0)
    return pl.DataFrame(
        {
            "ts": ts.to_numpy(dtype=np.int64),
            "qty": sign * fills["filled_qty"].astype(float).to_numpy(dtype=np.float64),
            "px": fills["avg_px"].astype(float).to_numpy(dtype=np.float64),
            "fee": [parse_money(v) for v in fills["commissions"]],
        },
        schema=FILL_SCHEMA,
    ).sort("ts", maintain_order=True)


def read_fills(path, instrument_id: str | None = None) -> pl.DataFrame:
    """``fills.csv`` of a run folder (empty frame if there were no fills)."""
    if not path.exists() or path.stat().st_size == 0:
        return pl.DataFrame(schema=FILL_SCHEMA)
    return fill_frame(pd.read_csv(path), instrument_id)


def marked_curve(
    bar_ts: np.ndarray, close: np.ndarray, fills: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """PnL and position at every bar close: cash + position x close, fills applied at their
    time (a fill at a bar's close time counts in that bar). Fills after the last bar (flatten on
    stop) are booked into the last bar."""
    n = len(bar_ts)
    pnl, position = np.empty(n), np.empty(n)
    cash = pos = 0.0
    fts, fq, fpx, ffee = (fills[c].to_numpy() for c in ("ts", "qty", "px", "fee"))
    j = 0
    for i in range(n):
        last = i == n - 1
        while j < len(fts) and (last or fts[j] <= bar_ts[i]):
            cash -= fq[j] * fpx[j] + ffee[j]
            pos += fq[j]
            if abs(pos) < 1e-9:  # float residue of a closed position (e.g. -2.2e-16) is flat
                pos = 0.0
            j += 1
        pnl[i] = cash + pos * close[i]
        position[i] = pos
    return pnl, position


def fill_totals(fills: pl.DataFrame) -> dict[str, float]:
    """Fees paid and notional traded (sum of |qty x price|) over ``fills``."""
    if not fills.height:
        return {"fees": 0.0, "traded_notional": 0.0}
    return {
        "fees": float(fills["fee"].sum()),
        "traded_notional": float((fills["qty"].abs() * fills["px"]).sum()),
    }


def trade_counts(positions: pd.DataFrame | None, instrument_id: str | None = None) -> dict:
    """Closed positions (NETTING snapshots included) and how many made money after fees."""
    if positions is None or positions.empty or "realized_pnl" not in positions.columns:
        return {"trades": 0, "wins": 0}
    if instrument_id is not None and "instrument_id" in positions.columns:
        positions = positions[positions["instrument_id"].astype(str) == instrument_id]
    closed = positions[positions["ts_closed"].notna()] if "ts_closed" in positions else positions
    pnl = np.array([parse_money(v) for v in closed["realized_pnl"]])
    return {"trades": int(len(pnl)), "wins": int((pnl > 0).sum())}


def _drawdown_days(ts: np.ndarray, equity: np.ndarray) -> float:
    """Longest time under water: from a peak to the bar that regains it (or the last bar)."""
    if len(equity) == 0:
        return 0.0
    peak_ts, peak, longest = ts[0], equity[0], 0
    for t, e in zip(ts, equity, strict=True):
        if e >= peak:
            peak, peak_ts = e, t
        else:
            longest = max(longest, int(t - peak_ts))
    return longest / NS_PER_DAY


def _stat(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def performance(
    bar_ts: np.ndarray,
    pnl: np.ndarray,
    position: np.ndarray,
    capital: float,
    *,
    fees: float,
    traded_notional: float,
    trades: int,
    wins: int,
) -> dict[str, Any]:
    """Every comparison metric of one mark-to-market PnL curve on ``capital``.

    Returns are per bar on the running equity; annualisation uses the calendar days the data
    covers per year (365 for crypto, fewer for instruments that close at weekends).
    """
    bar_ts = np.asarray(bar_ts, dtype=np.int64)
    equity = capital + np.asarray(pnl, dtype=np.float64)
    n = len(equity)
    span_ns = int(bar_ts[-1] - bar_ts[0]) if n > 1 else 0
    years = span_ns / NS_PER_YEAR
    prev = np.concatenate(([capital], equity[:-1]))
    rets = equity / prev - 1.0
    returns = {int(t): float(r) for t, r in zip(bar_ts, rets, strict=True)}
    days = len(np.unique(bar_ts // NS_PER_DAY))
    period = max(1, round(days / years)) if years > 0 else 365
    traded = traded_notional
    avg_equity = float(equity.mean()) if n else capital
    final = float(pnl[-1]) if n else 0.0
    drawdown = _stat(MaxDrawdown().calculate_from_returns(returns)) if n else None
    broke = np.flatnonzero(equity <= 0)
    return {
        "capital": capital,
        "first_bar": int(bar_ts[0]) if n else None,
        "last_bar": int(bar_ts[-1]) if n else None,
        "bars": n,
        "periods_per_year": period,
        "pnl": final,
        "total_return_pct": final / capital * 100.0,
        "cagr_pct": _pct(CAGR(period).calculate_from_returns(returns)) if days > 1 else None,
        "volatility_pct": _pct(ReturnsVolatility(period).calculate_from_returns(returns)),
        "sharpe": _stat(SharpeRatio(period).calculate_from_returns(returns)),
        "sortino": _stat(SortinoRatio(period).calculate_from_returns(returns)),
        "max_drawdown_pct": None if drawdown is None else -drawdown * 100.0,
        "max_drawdown_days": _drawdown_days(bar_ts, equity),
        "fees": fees,
        "traded_notional": traded,
        "turnover_per_year": (traded / avg_equity / years) if years > 0 and avg_equity else None,
        "time_in_market_pct": float((position != 0).mean() * 100.0) if n else 0.0,
        "trades": trades,
        "wins": wins,
        "win_rate_pct": (wins / trades * 100.0) if trades else None,
        # equity reached zero here: every return-based ratio after it is meaningless
        "ruined_at": int(bar_ts[broke[0]]) if len(broke) else None,
    }


def _pct(value: Any) -> float | None:
    v = _stat(value)
    return None if v is None else v * 100.0


def daily_returns(bar_ts: np.ndarray, pnl: np.ndarray, capital: float) -> pd.Series:
    """Daily returns of the mark-to-market equity (the tearsheet's benchmark series)."""
    equity = pd.Series(
        capital + np.asarray(pnl, dtype=np.float64),
        index=pd.to_datetime(np.asarray(bar_ts, dtype=np.int64), utc=True),
    )
    daily = equity.resample("D").last().ffill()
    return daily.pct_change().fillna(daily.iloc[0] / capital - 1.0) if len(daily) else daily


# --------------------------------------------------------------------------- regime diagnostics
def regime_diagnostics(
    decisions: pl.DataFrame,
    transmat: Sequence[Sequence[float]] | None,
    labels: Sequence[str],
    interval_ns: int | None,
) -> dict[str, Any]:
    """Evidence that the filtered states mean something, on the decisions of the run.

    ``decisions`` are the strategy's own bar-by-bar decisions (causal filter, model fitted on
    earlier bars only), so every number here is out of sample. Per state: the NEXT bar's log
    return (the one a decision could trade), mean and volatility with 95% confidence intervals
    (normal approximation; the mean's interval treats returns as independent, which 15-minute
    crypto returns nearly are, and the volatility's uses the chi-square approximation).
    """
    out: dict[str, Any] = {"bars": decisions.height, "states": []}
    if transmat is not None:
        a = np.asarray(transmat, dtype=np.float64)
        with np.errstate(divide="ignore"):
            dur = 1.0 / (1.0 - np.diag(a))
        out["transition_matrix"] = a.tolist()
        out["expected_duration_bars"] = [None if math.isinf(d) else float(d) for d in dur]
        if interval_ns:
            out["expected_duration_hours"] = [
                None if math.isinf(d) else float(d * interval_ns / 3.6e12) for d in dur
            ]
    if decisions.height < 2:
        return out
    state = decisions["state"].to_numpy()
    close = decisions["close"].to_numpy().astype(np.float64)
    switches = int((state[1:] != state[:-1]).sum())
    out["switches"] = switches
    out["switches_per_1000_bars"] = switches / (len(state) - 1) * 1000.0
    next_ret = np.log(close[1:] / close[:-1])
    now = state[:-1]
    for k, label in enumerate(labels):
        r = next_ret[now == k]
        n = len(r)
        row: dict[str, Any] = {"state": k, "label": label, "bars": n, "share": n / len(now)}
        if n >= 2:
            mean, sd = float(r.mean()), float(r.std(ddof=1))
            half = 1.96 * sd / math.sqrt(n)
            rel = 1.96 / math.sqrt(2.0 * (n - 1))
            row |= {
                "next_bar_mean": mean,
                "next_bar_mean_ci95": [mean - half, mean + half],
                "next_bar_vol": sd,
                "next_bar_vol_ci95": [sd * max(0.0, 1.0 - rel), sd * (1.0 + rel)],
            }
        out["states"].append(row)
    return out


def state_labels(n_states: int) -> tuple[str, ...]:
    """The training report's names: states are ordered bearish -> bullish after every fit."""
    from hmm_strategy.train import _STATE_LABELS

    return _STATE_LABELS.get(n_states, tuple(f"s{k}" for k in range(n_states)))


def evaluate(
    fills_report: pd.DataFrame | None,
    positions_report: pd.DataFrame | None,
    instrument_id: str,
    bar_ts: np.ndarray,
    close: np.ndarray,
    capital: float,
    *,
    measure_from: int | None = None,
    measure_to: int | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics and curves (ts, pnl, position) of one run's reports over its bars.

    ``measure_from`` (ns) drops the earlier bars (a walk-forward fold's warm-up): the PnL is
    rebased to the last bar before it, so a position carried in is valued from there on.
    ``measure_to`` (ns) drops the later bars, and the fills and closed positions after it (one
    fold's window of a continuous walk-forward run: a position carried out stays open).
    """
    fills = fill_frame(fills_report, instrument_id)
    if measure_to is not None:
        keep = np.asarray(bar_ts, dtype=np.int64) <= measure_to
        bar_ts, close = np.asarray(bar_ts)[keep], np.asarray(close)[keep]
        fills = fills.filter(pl.col("ts") <= measure_to)
        if positions_report is not None and not positions_report.empty:
            closed = pd.to_datetime(positions_report["ts_closed"], utc=True)
            cutoff = pd.Timestamp(measure_to, unit="ns", tz="UTC")
            positions_report = positions_report[closed.isna() | (closed <= cutoff)]
    pnl, position = marked_curve(bar_ts, close, fills)
    bar_ts = np.asarray(bar_ts, dtype=np.int64)
    if measure_from is not None:
        i0 = int(np.searchsorted(bar_ts, measure_from, side="left"))
        base = pnl[i0 - 1] if i0 > 0 else 0.0
        bar_ts, pnl, position = bar_ts[i0:], pnl[i0:] - base, position[i0:]
        fills = fills.filter(pl.col("ts") >= measure_from)
        if positions_report is not None and not positions_report.empty:
            closed = pd.to_datetime(positions_report["ts_closed"], utc=True)
            keep = closed.notna() & (closed >= pd.Timestamp(measure_from, unit="ns", tz="UTC"))
            positions_report = positions_report[keep]
    metrics = performance(
        bar_ts,
        pnl,
        position,
        capital,
        **fill_totals(fills),
        **trade_counts(positions_report, instrument_id),
    )
    return metrics, {"ts": bar_ts, "pnl": pnl, "position": position}


def starting_balance(settings) -> tuple[float, str]:
    """First backtest venue's first starting balance, e.g. (100000.0, "USDT"): the capital
    every return in the comparison is measured on."""
    from hmm_strategy.config import ConfigError

    if settings.backtest is None or not settings.backtest.venues:
        raise ConfigError("the node config has no backtest venue")
    amount, currency = settings.backtest.venues[0].starting_balances[0].split()
    return float(amount), currency


# ------------------------------------------------------------- selection bias (Bailey & LdP)
EULER_GAMMA = 0.5772156649015329


def day_returns(bar_ts: np.ndarray, pnl: np.ndarray, capital: float) -> np.ndarray:
    """Returns of the equity between the last bars of consecutive UTC days that HAVE bars.

    Unlike ``daily_returns`` no weekend or holiday is filled with a zero return, which would
    shrink the variance and inflate the per-day Sharpe of a market that closes.
    """
    ts = np.asarray(bar_ts, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(0)
    equity = capital + np.asarray(pnl, dtype=np.float64)
    day = ts // NS_PER_DAY
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    closes = np.r_[capital, equity[last]]
    return closes[1:] / closes[:-1] - 1.0


def sharpe_moments(returns: np.ndarray) -> dict[str, float]:
    """Per-period (not annualised) Sharpe, skewness and kurtosis (3 = normal) of ``returns``."""
    r = np.asarray(returns, dtype=np.float64)
    sd = float(r.std(ddof=1)) if r.size > 1 else 0.0
    if sd == 0.0 or not math.isfinite(sd):
        return {"sharpe": 0.0, "skew": 0.0, "kurtosis": 3.0, "n": int(r.size)}
    z = (r - r.mean()) / r.std()
    return {
        "sharpe": float(r.mean() / sd),
        "skew": float((z**3).mean()),
        "kurtosis": float((z**4).mean()),
        "n": int(r.size),
    }


def probabilistic_sharpe(
    sharpe: float, n: int, skew: float = 0.0, kurtosis: float = 3.0, benchmark: float = 0.0
) -> float:
    """P(true Sharpe > ``benchmark``) given an observed per-period ``sharpe`` over ``n`` returns.

    Bailey & López de Prado (2012): the standard error of a Sharpe estimate grows with negative
    skew and fat tails, so a high Sharpe from few, skewed returns is weak evidence.
    """
    from statistics import NormalDist

    if n < 2:
        return float("nan")
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if var <= 0:
        return float("nan")
    return NormalDist().cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe estimates whose true Sharpe is 0 (per period).

    Bailey & López de Prado (2014), eq. for SR_0: the bar a selected configuration must clear
    before its Sharpe says more than "the best of N lucky draws".
    """
    from statistics import NormalDist

    if n_trials < 2 or sharpe_variance <= 0:
        return 0.0
    q = NormalDist().inv_cdf
    return math.sqrt(sharpe_variance) * (
        (1.0 - EULER_GAMMA) * q(1.0 - 1.0 / n_trials)
        + EULER_GAMMA * q(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe(returns: np.ndarray, trial_sharpes: Sequence[float]) -> dict[str, float]:
    """Deflated Sharpe ratio of the chosen configuration's ``returns`` (per period, e.g. daily)
    against the expected maximum Sharpe of all trials (their per-period Sharpes, this one
    included): PSR with benchmark SR_0 = E[max of N], N = ``len(trial_sharpes)``."""
    m = sharpe_moments(returns)
    trials = np.asarray([s for s in trial_sharpes if s is not None and math.isfinite(s)])
    var = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    sr0 = expected_max_sharpe(int(trials.size), var)
    return {
        **m,
        "n_trials": int(trials.size),
        "trial_sharpe_var": var,
        "expected_max_sharpe": sr0,
        "psr": probabilistic_sharpe(m["sharpe"], m["n"], m["skew"], m["kurtosis"]),
        "dsr": probabilistic_sharpe(m["sharpe"], m["n"], m["skew"], m["kurtosis"], sr0),
    }
