"""Synthetic regime-switching bars from a known HMM, for demos, the offline replay feed and tests.

The true state of every bar is returned beside the bars so that tests can check how well the
filter recovers it. States are ordered like the model's canonical order: 0 = bear (negative drift,
high volatility), 1 = calm (no drift, medium volatility), 2 = bull (positive drift, low volatility).
"""

from __future__ import annotations

import msgspec
import numpy as np
import polars as pl

NS_PER_MINUTE = 60_000_000_000


class RegimeProcess(msgspec.Struct, frozen=True):
    """Parameters of the generating HMM (per-bar log-return drift/volatility per state)."""

    drift: tuple[float, ...] = (-0.0015, 0.0, 0.0010)
    volatility: tuple[float, ...] = (0.012, 0.006, 0.003)
    log_volume: tuple[float, ...] = (4.0, 3.2, 2.6)
    stay_prob: float = 0.995  # expected regime length 1 / (1 - stay_prob) = 200 bars
    start_price: float = 30_000.0


def generate_regime_bars(
    n_bars: int = 5_000,
    seed: int = 7,
    *,
    interval_minutes: int = 15,
    start_ns: int = 1_704_067_200_000_000_000,  # 2024-01-01T00:00:00Z
    process: RegimeProcess | None = None,
) -> pl.DataFrame:
    """Bars with columns ts_event (close, UNIX ns), open, high, low, close, volume, state."""
    if n_bars < 2:
        raise ValueError(f"n_bars must be >= 2, was {n_bars}")
    p = process or RegimeProcess()
    k = len(p.drift)
    rng = np.random.default_rng(seed)
    transmat = np.full((k, k), (1.0 - p.stay_prob) / (k - 1))
    np.fill_diagonal(transmat, p.stay_prob)

    states = np.empty(n_bars, dtype=np.int64)
    states[0] = k // 2
    draws = rng.random(n_bars)
    cumulative = np.cumsum(transmat, axis=1)
    for t in range(1, n_bars):
        states[t] = min(int(np.searchsorted(cumulative[states[t - 1]], draws[t])), k - 1)

    drift = np.asarray(p.drift)[states]
    vol = np.asarray(p.volatility)[states]
    returns = drift + vol * rng.standard_normal(n_bars)
    close = p.start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([p.start_price], close[:-1]))
    wick = np.abs(rng.standard_normal((2, n_bars))) * vol * 0.5
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = np.exp(np.asarray(p.log_volume)[states] + 0.3 * rng.standard_normal(n_bars))
    interval_ns = interval_minutes * NS_PER_MINUTE
    ts_event = start_ns + interval_ns * np.arange(1, n_bars + 1, dtype=np.int64)
    return pl.DataFrame(
        {
            "ts_event": ts_event,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "state": states,
        }
    )
