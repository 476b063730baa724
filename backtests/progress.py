"""A text progress bar for long backtests, driven by the bars the engine replays.

Backtest-only (added by the runner, not by the node config): it writes a single updating line to
stderr with the share of the data's time range already processed.
"""

from __future__ import annotations

import sys
import time

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType


class BacktestProgressConfig(ActorConfig, frozen=True):
    bar_type: str
    start_ns: int
    end_ns: int
    min_interval_secs: float = 0.5


class BacktestProgress(Actor):
    """Prints ``[#####.....]  48%  12,345 bars  3.2s`` while the backtest runs."""

    def __init__(self, config: BacktestProgressConfig) -> None:
        super().__init__(config)
        self._bars = 0
        self._started = 0.0
        self._last_print = 0.0

    def on_start(self) -> None:
        self._started = time.monotonic()
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        self._bars += 1
        now = time.monotonic()
        if now - self._last_print >= self.config.min_interval_secs:
            self._last_print = now
            self._print(bar.ts_event, now)

    def on_stop(self) -> None:
        self._print(self.config.end_ns, time.monotonic())
        sys.stderr.write("\n")

    def _print(self, ts: int, now: float) -> None:
        span = max(self.config.end_ns - self.config.start_ns, 1)
        done = min(max((ts - self.config.start_ns) / span, 0.0), 1.0)
        bar = "#" * int(done * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {done:4.0%}  {self._bars:,} bars  {now - self._started:.1f}s"
        )
        sys.stderr.flush()
