"""``DecisionRecorder``: writes every strategy decision published on the bus to a CSV file.

It is how a backtest report gets its regime-probability plot and how the no-look-ahead and
backtest/live parity tests compare runs: the file holds exactly what the strategies decided, bar by
bar, in the order they decided it. A live node writes rows as they arrive (line-buffered), so one
that crashes keeps everything up to its last bar; a backtest buffers them (a write call per bar
cost more than the row) and they are on disk when it stops.
"""

from __future__ import annotations

import csv
from pathlib import Path

import msgspec
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import LiveClock
from nautilus_trader.config import ActorConfig

from hmm_strategy.messages import (
    BREAKER_TOPIC,
    FEED_TOPIC,
    GOVERNANCE_TOPIC,
    KILL_SWITCH_TOPIC,
    MODEL_TOPIC,
    REGIME_TOPIC,
    RegimeUpdate,
)

AUDITED_TOPICS = (
    f"{BREAKER_TOPIC}.*",
    f"{FEED_TOPIC}.*",
    f"{GOVERNANCE_TOPIC}.*",
    f"{MODEL_TOPIC}.*",
    KILL_SWITCH_TOPIC,
)

MAX_STATES = 8
_PADDING = {n: ("",) * (MAX_STATES - n) for n in range(MAX_STATES + 1)}  # more states: none


class DecisionRecorderConfig(ActorConfig, frozen=True):
    """
    Configuration for ``DecisionRecorder``.

    Parameters
    ----------
    output_path : str
        The CSV file to write (parent folders are created).
    events_path : str, optional
        A second CSV with every breaker rejection, governance command, model update and kill
        switch published on the bus (the audit trail); None to skip it.

    """

    output_path: str = "runs/decisions.csv"
    events_path: str | None = "runs/events.csv"


class DecisionRecorder(Actor):
    """Append one CSV row per ``RegimeUpdate`` published by any strategy."""

    def __init__(self, config: DecisionRecorderConfig) -> None:
        super().__init__(config)
        self._file = None
        self._writer = None
        self._events_file = None
        self._events = None

    def on_start(self) -> None:
        path = Path(self.config.output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffering = 1 if isinstance(self.clock, LiveClock) else -1
        self._file = path.open("w", newline="", buffering=buffering)
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
        if self.config.events_path:
            events = Path(self.config.events_path)
            events.parent.mkdir(parents=True, exist_ok=True)
            self._events_file = events.open("w", newline="", buffering=buffering)
            self._events = csv.writer(self._events_file)
            self._events.writerow(["ts_event", "kind", "strategy_id", "detail"])
            for topic in AUDITED_TOPICS:
                self.msgbus.subscribe(topic, self.on_audit_event)

    def on_regime_update(self, update: RegimeUpdate) -> None:
        # floats go in as they are: the csv module writes them as repr() (the same text), without
        # a string per field first; the probabilities are padded to MAX_STATES columns
        probs = update.probs
        self._writer.writerow(
            (
                update.ts_event,
                update.strategy_id,
                update.instrument_id,
                update.close,
                update.state,
                update.target_exposure,
                update.model_version,
                update.log_likelihood,
                *probs,
                *_PADDING.get(len(probs), ()),
            )
        )

    def on_audit_event(self, event: msgspec.Struct) -> None:
        fields = msgspec.structs.asdict(event)
        ts = fields.pop("ts_event", 0)
        strategy = fields.pop("strategy_id", "")
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        self._events.writerow([ts, type(event).__name__, strategy, detail])

    def on_stop(self) -> None:
        if self._file is not None:
            self.msgbus.unsubscribe(f"{REGIME_TOPIC}.*", self.on_regime_update)
            self._file.close()
            self._file = None
        if self._events_file is not None:
            for topic in AUDITED_TOPICS:
                self.msgbus.unsubscribe(topic, self.on_audit_event)
            self._events_file.close()
            self._events_file = None
