"""``OnlineTrainer``: refits the strategy's HMM in the node, shadows candidates, promotes them.

The actor wires ``actors.model_lifecycle.ModelLifecycle`` to the node: it subscribes to the
strategy's bars and to its ``RegimeUpdate`` messages (``hmm.regime.<strategy_id>``), keeps a
bounded history, runs candidate fits, records every lifecycle event in ``lifecycle.jsonl``, and
publishes ``ModelUpdate`` on ``hmm.model.<strategy_id>`` to promote or roll back. The strategy
obeys that message (and refuses a bad artifact, keeping its champion); the actor never touches
the strategy.

Fits (``fit_mode``):

* backtest (``auto`` -> ``sync``): the fit runs inline on the bar that triggered it and the
  shadow starts on that bar, so a backtest is reproducible bar for bar (it costs simulated-time
  nothing and wall time one EM fit);
* live (``auto`` -> ``process``): the fit runs in a worker process (no GIL contention with the
  event loop); the result is collected on the next bar or poll timer, so the shadow starts a few
  bars later than in a backtest. ``thread`` is available where processes are not.

Warm start (live): at start the actor requests ``lifecycle.history_bars`` bars of history with
``request_bars`` (``hmm_strategy.history``, as the strategy does), so its first refit need not wait
``min_train_bars`` live bars; the history is strictly before its first live bar.

Operator requests (``python -m actors.promote promote|reject|rollback``) are files in
``requests_dir``; a live node polls them every ``poll_interval_secs`` (timer), a backtest checks
them on every bar. See docs/SYSTEM_DESIGN.md "Model lifecycle".

The ``features``, ``policy`` and ``fit`` settings must be the strategy's: in the node config the
actor names its strategy (``strategy: hmm_btc``) and the loader copies them from there; the
starting champion's artifact is checked against ``features``.
"""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal

import msgspec
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType

from actors.model_lifecycle import (
    FitJob,
    FitRunner,
    LifecycleEvent,
    LifecycleLog,
    LifecycleSettings,
    ModelLifecycle,
    archive_request,
    check_train_rows,
    pending_requests,
)
from actors.registry import MODEL_EVENTS
from hmm_strategy.engine import FitSettings
from hmm_strategy.features import FeatureSpec
from hmm_strategy.history import HistoryRequester
from hmm_strategy.messages import (
    LIFECYCLE_TOPIC,
    MODEL_TOPIC,
    REGIME_TOPIC,
    LifecycleDecision,
    ModelUpdate,
    RegimeUpdate,
    topic_for,
)
from hmm_strategy.policy import PolicyConfig
from hmm_strategy.timers import set_loop_timer
from hmm_strategy.warm_start import WarmStart

_POLL_TIMER = "online_trainer_poll"


class OnlineTrainerConfig(ActorConfig, frozen=True):
    """
    Configuration for ``OnlineTrainer`` instances.

    Parameters
    ----------
    strategy_id : str
        The strategy whose model is maintained, e.g. ``HMMRegimeStrategy-001``.
    instrument_id : str
        Its instrument (candidates are stamped with it).
    bar_type : str
        Its bars (the actor subscribes to the same bars).
    champion_path : str, optional
        The strategy's starting artifact (its ``model_path``); without it the champion is learnt
        from the strategy's updates (its log-likelihood metric is then unknown).
    features, policy, fit
        The strategy's settings (the shadow must compute what the strategy would).
    lifecycle : LifecycleSettings
        Refit schedule, drift trigger, shadow evaluation and promotion rule.
    model_dir : str
        Folder of candidate artifacts.
    log_path : str, optional
        The lifecycle log (default ``<model_dir>/lifecycle.jsonl``).
    requests_dir : str, optional
        Operator request folder (default ``<model_dir>/requests``).
    shadow_decisions_path : str, optional
        CSV of the shadow's decisions (default ``<model_dir>/shadow_decisions.csv``).
    fit_mode : str
        ``auto`` (sync in a backtest, process live), ``sync``, ``thread`` or ``process``.
    poll_interval_secs : float
        Live: how often finished fits and request files are checked.
    warm_start : WarmStart
        Live: history requested at start (``bars`` null = ``lifecycle.history_bars``).

    """

    strategy_id: str
    instrument_id: str
    bar_type: str
    WRITES: ClassVar[tuple[str, ...]] = ("log_path", "shadow_decisions_path")  # checked first

    champion_path: str | None = None
    features: FeatureSpec = msgspec.field(default_factory=FeatureSpec)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    fit: FitSettings = msgspec.field(default_factory=FitSettings)
    lifecycle: LifecycleSettings = msgspec.field(default_factory=LifecycleSettings)
    model_dir: str = "models/online"
    log_path: str | None = None
    requests_dir: str | None = None
    shadow_decisions_path: str | None = None
    fit_mode: Literal["auto", "sync", "thread", "process"] = "auto"
    poll_interval_secs: float = 5.0
    warm_start: WarmStart = msgspec.field(default_factory=WarmStart)

    def __post_init__(self) -> None:
        check_train_rows(self.lifecycle, self.features, self.fit)
        if self.poll_interval_secs <= 0:
            raise ValueError(f"poll_interval_secs must be > 0, was {self.poll_interval_secs}")


class OnlineTrainer(HistoryRequester, Actor):
    """Keeps the champion fresh: refit -> candidate -> shadow -> promote/reject (see module)."""

    def __init__(self, config: OnlineTrainerConfig) -> None:
        super().__init__(config)
        self.lifecycle: ModelLifecycle | None = None
        self.runner: FitRunner | None = None
        self.requests_dir: Path | None = None
        self._live = False
        self._shadow_file = None
        self._shadow_writer = None
        self._model_topic = topic_for(MODEL_TOPIC, config.strategy_id)
        self._regime_topic = topic_for(REGIME_TOPIC, config.strategy_id)
        self._lifecycle_topic = topic_for(LIFECYCLE_TOPIC, config.strategy_id)
        self._warned_unrecorded = False

    # ------------------------------------------------------------------------------ lifecycle
    def on_start(self) -> None:
        from nautilus_trader.common.component import LiveClock

        cfg = self.config
        model_dir = Path(cfg.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self._live = isinstance(self.clock, LiveClock)
        mode = cfg.fit_mode if cfg.fit_mode != "auto" else ("process" if self._live else "sync")
        self.runner = FitRunner(mode)
        shadow_path = Path(cfg.shadow_decisions_path or model_dir / "shadow_decisions.csv")
        shadow_path.parent.mkdir(parents=True, exist_ok=True)
        self._shadow_file = shadow_path.open("a", newline="", buffering=1)
        self._shadow_writer = csv.writer(self._shadow_file)
        if shadow_path.stat().st_size == 0:
            self._shadow_writer.writerow(
                [
                    "ts_event",
                    "strategy_id",
                    "model_version",
                    "state",
                    "target_exposure",
                    "log_likelihood",
                    "probs",
                ]
            )
        self.lifecycle = ModelLifecycle(
            strategy_id=cfg.strategy_id,
            instrument_id=cfg.instrument_id,
            bar_type=cfg.bar_type,
            features=cfg.features,
            policy=cfg.policy,
            fit=cfg.fit,
            settings=cfg.lifecycle,
            model_dir=model_dir,
            log=LifecycleLog(cfg.log_path or model_dir / "lifecycle.jsonl"),
            on_shadow_decision=self._write_shadow_decision,
            on_record=self._publish_decision,
        )
        self.lifecycle.start(self.clock.timestamp_ns(), cfg.champion_path)
        self.requests_dir = Path(cfg.requests_dir or model_dir / "requests")
        self.msgbus.subscribe(self._regime_topic, self.on_regime_update)
        warm = cfg.warm_start
        if self._live and warm.enabled:  # before the subscription: the history comes first
            n = warm.bars or cfg.lifecycle.history_bars
            bar_type = BarType.from_str(cfg.bar_type)
            self.request_history(bar_type, n, warm.timeout_secs, limit=warm.request_limit)
        self.subscribe_bars(BarType.from_str(cfg.bar_type))
        if self._live:
            set_loop_timer(
                self.clock, _POLL_TIMER, timedelta(seconds=cfg.poll_interval_secs), self._on_poll
            )
        self.log.info(
            f"Online trainer for {cfg.strategy_id}: fits {mode}, log {self.lifecycle.log.path}, "
            f"requests {self.requests_dir}"
        )

    def on_stop(self) -> None:
        if _POLL_TIMER in self.clock.timer_names:
            self.clock.cancel_timer(_POLL_TIMER)
        self.cancel_history()
        self.msgbus.unsubscribe(self._regime_topic, self.on_regime_update)
        if self.runner is not None:
            self.runner.shutdown()
        if self._shadow_file is not None:
            self._shadow_file.close()
            self._shadow_file = None

    def on_reset(self) -> None:
        self.lifecycle = None
        self.runner = None

    # --------------------------------------------------------------------------------- inputs
    def warm_up(self, history: list[Bar]) -> None:
        """History bars are bars the lifecycle keeps and counts, like live ones."""
        for bar in history:
            self._feed(bar)
        lc = self.lifecycle
        self.log.info(
            f"Warm start: {len(history)} history bars for the online trainer; it keeps "
            f"{len(lc.history)} bars (a refit needs {self.config.lifecycle.min_train_bars})"
        )

    def no_history(self, why: str) -> None:
        self.log.warning(
            f"Warm start: no history for the online trainer ({why}); it counts bars from the "
            "first live bar"
        )

    def on_bar(self, bar: Bar) -> None:
        if self.waiting_for_history(bar):  # the history is still to come: it goes first
            return
        self._feed(bar)
        if not self._live:
            self._apply_requests(bar.ts_event)

    def _feed(self, bar: Bar) -> None:
        lc = self.lifecycle
        if lc is None:
            return
        ts = bar.ts_event
        self._collect_fit(ts)
        self._execute(
            ts,
            lc.on_bar(
                ts,
                bar.open.as_double(),
                bar.high.as_double(),
                bar.low.as_double(),
                bar.close.as_double(),
                bar.volume.as_double(),
            ),
        )

    def on_regime_update(self, update: RegimeUpdate) -> None:
        if self.lifecycle is not None:
            self._execute(update.ts_event, self.lifecycle.on_regime_update(update))

    def _on_poll(self, event) -> None:
        self._collect_fit(event.ts_event)
        self._apply_requests(event.ts_event)

    # -------------------------------------------------------------------------------- outputs
    def _execute(self, ts: int, actions: list) -> None:
        for action in actions:
            if isinstance(action, ModelUpdate):
                self.log.warning(f"Publishing model {action.model_version}: {action.reason}")
                self.msgbus.publish(self._model_topic, action)
            elif isinstance(action, FitJob):
                self.log.info(f"Fitting a candidate on {len(action.payload['bars']['close'])} bars")
                outcome = self.runner.submit(action.payload)
                if outcome is not None:  # sync: the shadow starts on this bar
                    self._execute(ts, self.lifecycle.on_fit_result(ts, outcome))

    def _collect_fit(self, ts: int) -> None:
        if self.runner is not None and self.runner.busy:
            outcome = self.runner.poll()
            if outcome is not None:
                self._execute(ts, self.lifecycle.on_fit_result(ts, outcome))

    def _apply_requests(self, ts: int) -> None:
        if self.requests_dir is None or not self.requests_dir.is_dir():
            return
        for path, request in pending_requests(self.requests_dir, self.config.strategy_id):
            if isinstance(request, str):
                self.log.error(f"Rejected request {path.name}: {request}")
                archive_request(path, applied=False)
                continue
            applied, message, actions = self.lifecycle.on_request(ts, request)
            archive_request(path, applied=applied)
            log = self.log.warning if applied else self.log.error
            log(f"Request {request.action} ({path.name}): {message}")
            self._execute(ts, actions)

    def _publish_decision(self, entry: LifecycleEvent) -> None:
        """Hand promotions, rejections and rollbacks to the registry's writer (governance)."""
        if entry.event not in MODEL_EVENTS or not entry.version:
            return
        if not self.msgbus.has_subscribers(self._lifecycle_topic) and not self._warned_unrecorded:
            self._warned_unrecorded = True
            self.log.warning(
                "No governance actor listens: model decisions go to lifecycle.jsonl only, not "
                "to the strategy registry"
            )
        ev = entry.evidence
        previous = ev.get("previous_version")
        if entry.event == "rejected":
            previous = ev.get("champion_version")
        self.msgbus.publish(
            self._lifecycle_topic,
            LifecycleDecision(
                ts_event=entry.ts_event,
                strategy_id=entry.strategy_id,
                event=entry.event,
                version=entry.version,
                previous_version=previous,
                model_path=entry.path,
                source=entry.source,
                reason=entry.reason,
                evidence=ev,
                log_seq=entry.seq,
            ),
        )

    def _write_shadow_decision(self, ts, version, probs, state, target, ll) -> None:
        if self._shadow_writer is not None:
            self._shadow_writer.writerow(
                [
                    ts,
                    self.config.strategy_id,
                    version,
                    state,
                    repr(target),
                    repr(ll),
                    " ".join(repr(float(p)) for p in probs),
                ]
            )
