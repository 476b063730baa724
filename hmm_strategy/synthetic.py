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


class TwoLevelProcess(msgspec.Struct, frozen=True):
    """A slow regime (0 = bear, 1 = bull) switching once per coarse bar, with the fast process
    of :class:`RegimeProcess` inside it: the slow state adds its drift to every bar and scales
    its volatility."""

    bars_per_slow_bar: int = 16
    slow_drift: tuple[float, ...] = (-0.0012, 0.0012)
    slow_vol_scale: tuple[float, ...] = (1.4, 0.8)
    slow_stay_prob: float = 0.97  # per coarse bar: ~33 coarse bars per slow regime
    fast: RegimeProcess = RegimeProcess(
        drift=(-0.0004, 0.0, 0.0004), volatility=(0.006, 0.004, 0.003), stay_prob=0.98
    )


def generate_two_level_bars(
    n_bars: int = 40_000,
    seed: int = 11,
    *,
    interval_minutes: int = 15,
    process: TwoLevelProcess | None = None,
) -> pl.DataFrame:
    """Bars of a two-level regime process; ``state`` is the fast and ``slow_state`` the slow
    true state of every bar (the slow state is constant within each coarse bar)."""
    p = process or TwoLevelProcess()
    n_slow = -(-n_bars // p.bars_per_slow_bar)
    rng = np.random.default_rng(seed)
    slow = np.empty(n_slow, dtype=np.int64)
    slow[0] = 0
    k = len(p.slow_drift)
    for j in range(1, n_slow):
        stay = rng.random() < p.slow_stay_prob
        slow[j] = slow[j - 1] if stay else (slow[j - 1] + 1 + rng.integers(k - 1)) % k
    slow_state = np.repeat(slow, p.bars_per_slow_bar)[:n_bars]
    fast = generate_regime_bars(n_bars, seed + 1, interval_minutes=interval_minutes, process=p.fast)
    noise = np.random.default_rng(seed + 2).standard_normal(n_bars)
    fast_state = fast["state"].to_numpy()
    drift = np.asarray(p.fast.drift)[fast_state] + np.asarray(p.slow_drift)[slow_state]
    vol = np.asarray(p.fast.volatility)[fast_state] * np.asarray(p.slow_vol_scale)[slow_state]
    close = p.fast.start_price * np.exp(np.cumsum(drift + vol * noise))
    open_ = np.concatenate(([p.fast.start_price], close[:-1]))
    wick = np.abs(rng.standard_normal((2, n_bars))) * vol * 0.5
    return fast.with_columns(
        open=pl.Series(open_),
        high=pl.Series(np.maximum(open_, close) * np.exp(wick[0])),
        low=pl.Series(np.minimum(open_, close) * np.exp(-wick[1])),
        close=pl.Series(close),
        slow_state=pl.Series(slow_state),
    )
