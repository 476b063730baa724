"""``HMMRegimeStrategy``: trades one instrument toward the target of an HMM regime policy.

One order path for backtest and live: on each closed bar the ``RegimeEngine`` produces a decision,
the decision is published on the message bus (for recorders, metrics and governance), and the
strategy submits one market order for the difference between the target and the net position.
Capital comes from the allocator's ``Budget`` messages (capped by ``max_notional``); governance
``pause``/``throttle``/``resume`` commands arrive on the bus, so the strategy keeps its data and
state while paused and only stops adding risk.
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

from hmm_strategy.artifacts import load_model
from hmm_strategy.engine import FitSettings, RegimeEngine
from hmm_strategy.features import FeatureSpec
from hmm_strategy.messages import (
    BUDGET_TOPIC,
    GOVERNANCE_TOPIC,
    MODEL_TOPIC,
    REGIME_TOPIC,
    Budget,
    GovernanceCommand,
    ModelUpdate,
    RegimeUpdate,
    topic_for,
)
from hmm_strategy.policy import PolicyConfig


class HMMRegimeStrategyConfig(StrategyConfig, frozen=True):
    """
    Configuration for ``HMMRegimeStrategy`` instances.

    Parameters
    ----------
    instrument_id : InstrumentId
        The instrument to trade.
    bar_type : BarType
        The bars that drive the model (EXTERNAL bars, one decision per bar close).
    model_path : str, optional
        A saved model artifact (JSON). Without one, a model is fitted in-run on ``fit.warmup_bars``.
    features, policy, fit
        Feature windows, policy guardrails and in-run fit settings.
    notional : float
        Capital (quote currency) used for a full +-1 exposure until the allocator sends a budget.
    max_notional : float
        Hard cap on the position notional, whatever the budget says.
    close_positions_on_stop : bool
        Flatten when the strategy stops.

    """

    instrument_id: InstrumentId
    bar_type: BarType
    model_path: str | None = None
    features: FeatureSpec = msgspec.field(default_factory=FeatureSpec)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    fit: FitSettings = msgspec.field(default_factory=FitSettings)
    notional: float = 10_000.0
    max_notional: float = 50_000.0
    close_positions_on_stop: bool = True


class HMMRegimeStrategy(Strategy):
    """HMM regime strategy: features -> causal forward filter -> policy -> one market order."""

    def __init__(self, config: HMMRegimeStrategyConfig) -> None:
        super().__init__(config)
        self.instrument = None
        self.engine: RegimeEngine | None = None
        self.budget = config.notional
        self.scale = 1.0
        self.paused = False
        self._last_plan: tuple[float, float] | None = None

    def on_start(self) -> None:
        cfg = self.config
        self.instrument = self.cache.instrument(cfg.instrument_id)
        if self.instrument is None:
            self.log.error(f"Could not find instrument for {cfg.instrument_id}")
            self.stop()
            return
        model, version = None, ""
        if cfg.model_path:
            model, meta = load_model(cfg.model_path, expected_features=cfg.features.names)
            version = meta.model_version
        self.engine = RegimeEngine(cfg.features, cfg.policy, cfg.fit, model, version)
        sid = str(self.id)
        self.msgbus.subscribe(topic_for(BUDGET_TOPIC, sid), self.on_budget)
        self.msgbus.subscribe(topic_for(GOVERNANCE_TOPIC, sid), self.on_governance)
        self.msgbus.subscribe(topic_for(MODEL_TOPIC, sid), self.on_model_update)
        self.subscribe_bars(cfg.bar_type)

    def on_bar(self, bar: Bar) -> None:
        try:
            decision = self.engine.update(
                bar.open.as_double(),
                bar.high.as_double(),
                bar.low.as_double(),
                bar.close.as_double(),
                bar.volume.as_double(),
            )
        except ValueError as exc:  # a bar the model cannot use: skip it, never trade on it
            self.engine.rejected_bars += 1
            self.log.warning(f"Skipped bar {bar}: {exc}")
            return
        if decision is None:
            return
        close = bar.close.as_double()
        self.msgbus.publish(
            topic_for(REGIME_TOPIC, str(self.id)),
            RegimeUpdate(
                ts_event=bar.ts_event,
                strategy_id=str(self.id),
                instrument_id=str(bar.bar_type.instrument_id),
                close=close,
                probs=decision.probs,
                state=decision.state,
                target_exposure=decision.target_exposure,
                model_version=self.engine.model_version,
                log_likelihood=decision.log_likelihood,
            ),
        )
        if not self.paused:
            self.rebalance(decision.target_exposure, close)

    def on_budget(self, budget: Budget) -> None:
        self.budget = budget.notional

    def on_governance(self, command: GovernanceCommand) -> None:
        self.log.warning(f"Governance {command.action} (scale={command.scale}): {command.reason}")
        if command.action == "pause":
            self.paused = True
            if command.flatten:
                self.cancel_all_orders(self.config.instrument_id)
                self.close_all_positions(self.config.instrument_id)
        elif command.action in ("throttle", "resume"):
            self.paused = False
            self.scale = command.scale
        self._last_plan = None  # re-plan on the next bar with the new allocation

    def on_model_update(self, update: ModelUpdate) -> None:
        """Swap in a promoted (or rolled-back) model; a bad artifact keeps the current one."""
        try:
            names = self.config.features.names
            model, meta = load_model(update.model_path, expected_features=names)
            self.engine.set_model(model, meta.model_version)
        except ValueError as exc:
            self.log.error(f"Rejected model {update.model_version} ({update.model_path}): {exc}")
            return
        self.log.warning(f"Model now {meta.model_version}: {update.reason}")

    def rebalance(self, exposure: float, price: float) -> None:
        """Submit one market order moving the net position to ``exposure`` of the allocation."""
        notional = min(self.budget * self.scale, self.config.max_notional)
        plan = (exposure, notional)
        if plan == self._last_plan or self.has_pending_orders():
            return
        target_qty = target_quantity(exposure, notional, price, self.instrument.size_increment)
        current = self.portfolio.net_position(self.config.instrument_id)
        delta = target_qty - current
        self._last_plan = plan
        if abs(delta) < self.instrument.size_increment.as_decimal():
            return
        order = self.order_factory.market(
            instrument_id=self.config.instrument_id,
            order_side=OrderSide.BUY if delta > 0 else OrderSide.SELL,
            quantity=self.instrument.make_qty(abs(delta)),
            time_in_force=TimeInForce.GTC,
        )
        self.submit_order(order)

    def has_pending_orders(self) -> bool:
        return (
            self.cache.orders_open_count(strategy_id=self.id) > 0
            or self.cache.orders_inflight_count(strategy_id=self.id) > 0
        )

    def on_stop(self) -> None:
        self.cancel_all_orders(self.config.instrument_id)
        if self.config.close_positions_on_stop:
            self.close_all_positions(self.config.instrument_id)

    def on_reset(self) -> None:
        self.engine = None
        self._last_plan = None


def target_quantity(exposure: float, notional: float, price: float, increment) -> Decimal:
    """Signed quantity for ``exposure`` x ``notional`` at ``price``, rounded toward zero."""
    step = increment.as_decimal()
    units = math.floor(abs(exposure) * notional / price / float(step))
    return Decimal(units) * step * (1 if exposure >= 0 else -1)
