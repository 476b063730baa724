"""``DecisionRecorder``: writes every strategy decision published on the bus to a CSV file.

It is how a backtest report gets its regime-probability plot and how the no-look-ahead and
backtest/live parity tests compare runs: the file holds exactly what the strategies decided, bar by
bar, in the order they decided it. Rows are written as they arrive (line-buffered), so a live node
that crashes keeps everything up to its last bar.
"""

from __future__ import annotations

import csv
from pathlib import Path

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig

from hmm_strategy.messages import REGIME_TOPIC, RegimeUpdate

MAX_STATES = 8


class DecisionRecorderConfig(ActorConfig, frozen=True):
    """
    Configuration for ``DecisionRecorder``.

    Parameters
    ----------
    output_path : str
        The CSV file to write (parent folders are created).

    """

    output_path: str = "runs/decisions.csv"


class DecisionRecorder(Actor):
    """Append one CSV row per ``RegimeUpdate`` published by any strategy."""

    def __init__(self, config: DecisionRecorderConfig) -> None:
        super().__init__(config)
        self._file = None
        self._writer = None

    def on_start(self) -> None:
        path = Path(self.config.output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="", buffering=1)
        self._writer = csv.writer(self._file)
        self._writer.writerow(
            [
                "ts_event",
                "strategy_id",
                "instrument_id",
                "close",
                "state",
                "target_exposure",
                "model_version",
                "log_likelihood",
                *(f"p{k}" for k in range(MAX_STATES)),
            ]
        )
        self.msgbus.subscribe(f"{REGIME_TOPIC}.*", self.on_regime_update)

    def on_regime_update(self, update: RegimeUpdate) -> None:
        probs = [repr(p) for p in update.probs] + [""] * (MAX_STATES - len(update.probs))
        self._writer.writerow(
            [
                update.ts_event,
                update.strategy_id,
                update.instrument_id,
                repr(update.close),
                update.state,
                repr(update.target_exposure),
                update.model_version,
                repr(update.log_likelihood),
                *probs,
            ]
        )

    def on_stop(self) -> None:
        if self._file is not None:
            self.msgbus.unsubscribe(f"{REGIME_TOPIC}.*", self.on_regime_update)
            self._file.close()
            self._file = None
