"""Benchmark data: synthetic regime bars that stay in a realistic price range for 1M bars.

``hmm_strategy.synthetic.generate_regime_bars`` is a random walk in log price: over a million
bars its drift and volatility would carry the price to zero or to absurd levels (prices that
round to 0 at the instrument's precision, or margin that no balance covers). The benchmark keeps
the generator's regimes, returns, wicks and volumes but adds a slow pull of the log price towards
the start price (an Ornstein-Uhlenbeck term with a half-life of 1,000 bars), which changes
no bar's character but keeps every bar of a long run tradable.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.instruments import Instrument
from scipy.signal import lfilter

from hmm_strategy.features import FeatureSpec, feature_matrix
from hmm_strategy.synthetic import RegimeProcess, generate_regime_bars
from marketdata.catalog import bars_to_nautilus, instrument_for

INSTRUMENT_ID = "BTCUSDT.BINANCE"
BAR_TYPE = "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"
PROCESS = RegimeProcess(drift=(-0.001, 0.0, 0.001))  # symmetric: no long-run drift to fight
HALF_LIFE_BARS = 1_000


def benchmark_frame(n_bars: int, seed: int = 11) -> pl.DataFrame:
    """``n_bars`` regime bars (columns as ``generate_regime_bars``) with a mean-reverting level."""
    df = generate_regime_bars(n_bars, seed, process=PROCESS)
    start = PROCESS.start_price
    close = df["close"].to_numpy()
    open_ = df["open"].to_numpy()
    returns = np.diff(np.log(close), prepend=math.log(start))
    keep = 1.0 - math.log(2.0) / HALF_LIFE_BARS
    level = lfilter([1.0], [1.0, -keep], returns)  # y_t = keep * y_{t-1} + r_t
    new_close = start * np.exp(level)
    new_open = np.concatenate(([start], new_close[:-1]))
    top = df["high"].to_numpy() / np.maximum(open_, close)  # wick sizes of the original bars
    bottom = df["low"].to_numpy() / np.minimum(open_, close)
    return df.with_columns(
        open=pl.Series(new_open),
        high=pl.Series(np.maximum(new_open, new_close) * top),
        low=pl.Series(np.minimum(new_open, new_close) * bottom),
        close=pl.Series(new_close),
    )


def instrument() -> Instrument:
    return instrument_for(INSTRUMENT_ID)


def to_bars(df: pl.DataFrame, inst: Instrument | None = None) -> list[Bar]:
    return bars_to_nautilus(df, BarType.from_str(BAR_TYPE), inst or instrument())


def fit_artifact(path: Path, n_bars: int = 20_000, seed: int = 99, n_states: int = 3) -> str:
    """Fit a model on a separate synthetic path (not the benchmark bars) and save it as JSON."""
    from hmm_strategy.artifacts import save_model
    from hmm_strategy.model import RegimeHMM

    df = benchmark_frame(n_bars, seed)
    spec = FeatureSpec()
    X = feature_matrix(df, spec)
    model = RegimeHMM(n_states, n_restarts=1, n_iter=50, random_state=0).fit(X)
    ts = df["ts_event"]
    save_model(
        model,
        path,
        feature_spec=spec,
        data_range=(int(ts[0]), int(ts[-1])),
        instrument_id=INSTRUMENT_ID,
        bar_type=BAR_TYPE,
        version="bench",
    )
    return str(path)
