"""A progress bar for long backtests (tqdm), driven by the bars the engine replays.

Backtest-only (added by the runner, not by the node config): one updating stderr line with the
share of the data's time range already processed, in days of data.
"""

from __future__ import annotations

import sys

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType
from tqdm import tqdm

NS_PER_DAY = 86_400 * 10**9


class BacktestProgressConfig(ActorConfig, frozen=True):
    bar_type: str
    start_ns: int
    end_ns: int
    min_interval_secs: float = 0.5


class BacktestProgress(Actor):
    """Shows ``48%|#####     | 176/366 days [00:03<00:03, 52.1 days/s, bars=16,791]``."""

    def __init__(self, config: BacktestProgressConfig) -> None:
        super().__init__(config)
        self._bars = 0
        self._done_ns = config.start_ns
        self._bar: tqdm | None = None

    def on_start(self) -> None:
        span_days = max(self.config.end_ns - self.config.start_ns, 1) / NS_PER_DAY
        self._bar = tqdm(
            total=round(span_days, 2),
            unit="day",
            file=sys.stderr,
            mininterval=self.config.min_interval_secs,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} days [{elapsed}<{remaining}{postfix}]",
        )
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        self._bars += 1
        ts = min(max(bar.ts_event, self.config.start_ns), self.config.end_ns)
        if ts > self._done_ns and self._bar is not None:
            self._bar.update((ts - self._done_ns) / NS_PER_DAY)
            self._done_ns = ts
            if self._bars % 1024 == 0:
                self._bar.set_postfix_str(f"bars={self._bars:,}", refresh=False)

    def on_stop(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"bars={self._bars:,}", refresh=False)
            self._bar.close()
            self._bar = None
