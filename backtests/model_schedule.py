"""Scheduled model swaps for continuous walk-forward backtests.

A walk-forward that retrains per fold can run its test windows as ONE backtest: the strategy
starts on fold 0's model and, just before the first bar of each later fold's test window, gets
that fold's model through the same ``ModelUpdate`` message an online-trainer promotion sends (the
strategy's own ``on_model_update``: artifact checks, filter burn-in on past rows only, the
policy's memory kept). The position is carried across the seams as it would be live, instead of
every fold starting and ending flat.
"""

from __future__ import annotations

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig

from hmm_strategy.messages import MODEL_TOPIC, ModelUpdate, topic_for


class ModelScheduleConfig(ActorConfig, frozen=True):
    """``schedule``: ``[test_start_ns, artifact_path, model_version]`` per swap, in time order."""

    strategy_id: str
    schedule: list[list] = []

    def __post_init__(self) -> None:
        starts = []
        for entry in self.schedule:
            if len(entry) != 3 or not isinstance(entry[0], int) or entry[0] <= 0:
                raise ValueError(f"schedule entries are [start_ns, path, version], got {entry!r}")
            starts.append(entry[0])
        if starts != sorted(set(starts)):
            raise ValueError("schedule start times must be strictly increasing")


class ModelSchedule(Actor):
    """Publishes each scheduled ``ModelUpdate`` one nanosecond before its first test bar closes."""

    def __init__(self, config: ModelScheduleConfig) -> None:
        super().__init__(config)
        self._topic = topic_for(MODEL_TOPIC, config.strategy_id)

    def on_start(self) -> None:
        for i, (start_ns, path, version) in enumerate(self.config.schedule):
            self.clock.set_time_alert_ns(
                f"model-schedule-{i}",
                start_ns - 1,
                callback=lambda event, p=path, v=version: self.msgbus.publish(
                    self._topic,
                    ModelUpdate(event.ts_event, self.config.strategy_id, p, v, "walk-forward fold"),
                ),
            )
