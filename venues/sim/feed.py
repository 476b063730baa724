"""Bars for the simulated venue on the wall clock, and the pace they are served at.

The venue replays a fixed series of bars (real ones from a CSV, or synthetic regime bars). The
first ``history_bars`` are history that ends when the venue starts: ``GET /api/v3/klines``
serves them at once, so a node that starts with the venue and asks for the latest bars (a warm
start, NautilusTrader's ``request_bars``) gets them, as it would from Binance. The rest are
published one by one, ``speed`` bars per second, each as a closed kline continuing the same
timeline; above real time (``speed * interval > 1``) their timestamps run ahead of the wall clock,
as the replay venue's run behind it: strategies and breakers work on bar time. Klines are served
only up to the bar last published: no look-ahead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

INTERVALS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
             "2h": 7200, "4h": 14400, "1d": 86400}


@dataclass(frozen=True)
class Bar:
    open_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str


def load_series(
    source: str, *, path: str | None, n_bars: int, seed: int, fmt: str | None = None
) -> np.ndarray:
    """OHLCV rows (float) from ``synthetic`` regime bars or a bar file (``csv``)."""
    if source == "synthetic":
        from hmm_strategy.synthetic import generate_regime_bars

        frame = generate_regime_bars(n_bars=n_bars, seed=seed)
    elif source == "csv":
        if not path:
            raise ValueError("source 'csv' needs a path")
        from marketdata.bars import load_bars

        frame = load_bars(path, fmt=fmt).frame.tail(n_bars)
    else:
        raise ValueError(f"source must be 'synthetic' or 'csv', was {source!r}")
    rows = frame.select(["open", "high", "low", "close", "volume"]).to_numpy()
    if len(rows) < 2:
        raise ValueError(f"{source} gave {len(rows)} bars; at least 2 are needed")
    return rows


class Timeline:
    """Bars on the wall clock and how many are published (see module)."""

    def __init__(
        self,
        rows: np.ndarray,
        *,
        interval: str,
        history_bars: int,
        speed: float,
        tick: str,
        start_s: float | None = None,
    ) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {list(INTERVALS)}, was {interval!r}")
        step = INTERVALS[interval]
        speed = speed or 1.0 / step
        if not speed > 0:
            raise ValueError(f"speed must be positive bars per second, was {speed}")
        if not 0 < history_bars < len(rows):
            raise ValueError(f"history_bars must be in 1..{len(rows) - 1}, was {history_bars}")
        self.interval, self.step_ms, self.speed = interval, step * 1000, speed
        self.history = history_bars
        q = Decimal(tick)
        start_s = time.time() if start_s is None else start_s
        # the last history bar is the one that closed last before the start
        first_open = (int(start_s * 1000) // self.step_ms - history_bars) * self.step_ms
        self.bars = [
            Bar(first_open + i * self.step_ms,
                *(str(Decimal(repr(float(v))).quantize(q)) for v in row[:4]),
                f"{max(float(row[4]), 0.0):.5f}")
            for i, row in enumerate(rows)
        ]
        self.published = history_bars  # bars [0, published) are public

    def close_ms(self, bar: Bar) -> int:
        return bar.open_ms + self.step_ms - 1  # Binance's close time: the last ms of the bar

    @property
    def finished(self) -> bool:
        return self.published >= len(self.bars)

    def klines(
        self, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[object]]:
        """``GET /api/v3/klines`` rows among the published bars (open time in [start, end])."""
        bars = self.bars[: self.published]
        if start_ms is not None:
            bars = [b for b in bars if b.open_ms >= start_ms]
        if end_ms is not None:
            bars = [b for b in bars if b.open_ms <= end_ms]
        bars = bars[:limit] if start_ms is not None else bars[-limit:]
        return [self.kline_row(b) for b in bars]

    def kline_row(self, b: Bar) -> list[object]:
        quote_vol = f"{float(b.volume) * float(b.close):.8f}"
        return [b.open_ms, b.open, b.high, b.low, b.close, b.volume, self.close_ms(b), quote_vol,
                1, "0", "0", "0"]
