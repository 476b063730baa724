"""``HMMRegimeStrategy``: trades one instrument toward the target of an HMM regime policy.

One order path for backtest and live: on each closed bar the ``RegimeEngine`` produces a decision,
the decision is published on the message bus (for recorders, metrics and governance), and the
strategy submits one market order for the difference between the target and the net position,
unless a circuit breaker blocks the new risk. Capital comes from the allocator's ``Budget``
messages (capped by ``max_notional``); governance ``pause``/``throttle``/``resume`` commands and the
operator's kill switch arrive on the bus, so the strategy keeps its data and state while paused and
only stops adding risk. Its state is checkpointed (live) and saved through NautilusTrader's
``on_save``/``on_load`` (Redis cache database), so a restart resumes the same regime state.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
from nautilus_trader.common.component import LiveClock
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide, PriceType, TimeInForce
from nautilus_trader.model.events import (
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionEvent,
)
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.orders import Order
from nautilus_trader.trading.strategy import Strategy

from hmm_strategy.artifacts import Expected, load_model
from hmm_strategy.checkpoint import (
    checkpoint_path,
    ensure_checkpoint_dir,
)
from hmm_strategy.config import ConfigError
from hmm_strategy.engine import FitSettings, RegimeEngine, SlowLevel
from hmm_strategy.features import FeatureSpec
from hmm_strategy.history import HistoryRequester
from hmm_strategy.messages import (
    BREAKER_TOPIC,
    BREAKER_TRIP_TOPIC,
    BUDGET_TOPIC,
    FEED_TOPIC,
    GOVERNANCE_TOPIC,
    KILL_SWITCH_CACHE_KEY,
    KILL_SWITCH_TOPIC,
    MODEL_TOPIC,
    REGIME_TOPIC,
    WARM_START_TOPIC,
    BreakerRejection,
    BreakerTrip,
    Budget,
    DataGap,
    GovernanceCommand,
    KillSwitch,
    ModelUpdate,
    RegimeUpdate,
    WarmStartReport,
    topic_for,
)
from hmm_strategy.persistence import StrategyPersistence
from hmm_strategy.policy import PolicyConfig
from hmm_strategy.risk import BreakerConfig, CircuitBreakers, PnLTracker
from hmm_strategy.timers import set_loop_timer
from hmm_strategy.warm_start import WarmStart, bars_needed

CHECKPOINT_TIMER = "hmm-checkpoint"


def bar_time(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


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
    features, policy, fit, breakers
        Feature windows, policy guardrails, in-run fit settings and circuit breakers.
    slow : SlowLevel, optional
        The slow level of a hierarchical model (coarse bars aggregated from ``bar_type``);
        None = single level.
    notional : float
        Capital (quote currency) used for a full +-1 exposure until the allocator sends a budget.
    max_notional : float
        Hard cap on the position notional, whatever the budget says.
    warm_start : WarmStart
        Live and paper nodes request history from the venue's data client at start
        (``request_bars``) and run it through the engine, so a fresh strategy decides on its first
        live bar; resumed state and backtests need none.
    checkpoint_dir : str, optional
        Live nodes write a crash-safe checkpoint here every ``checkpoint_interval_secs`` and
        resume from it on start (backtests never read or write checkpoints).
    data_source : str, optional
        Identity of the data the strategy runs on (set by the node from the venue profile); a
        checkpoint written on another source is never resumed.
    close_positions_on_stop : bool
        Flatten when the strategy stops (a live node first exits the market and waits until the
        position is closed and no order works, ``venues.runtime.exit_markets``).

    """

    instrument_id: InstrumentId
    bar_type: BarType
    model_path: str | None = None
    features: FeatureSpec = msgspec.field(default_factory=FeatureSpec)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    fit: FitSettings = msgspec.field(default_factory=FitSettings)
    slow: SlowLevel | None = None
    breakers: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    warm_start: WarmStart = msgspec.field(default_factory=WarmStart)
    notional: float = 10_000.0
    max_notional: float = 50_000.0
    checkpoint_dir: str | None = "state"
    checkpoint_interval_secs: float = 5.0
    data_source: str | None = None
    close_positions_on_stop: bool = True

    def __post_init__(self) -> None:
        need = self.fit.min_warmup_bars(len(self.features.names))
        if self.model_path is None and self.fit.warmup_bars < need:
            states = "the BIC grid" if self.fit.select_states_by_bic else self.fit.n_states
            raise ValueError(
                f"fit.warmup_bars must be >= {need} (the fit's minimum for n_states={states} on "
                f"{len(self.features.names)} features), was {self.fit.warmup_bars}"
            )
        if self.model_path is not None:  # a bad artifact fails when the config loads
            try:
                load_model(self.model_path, expected=self.expected_model())
            except ValueError as exc:  # same type, the key named
                raise type(exc)(f"model_path: {exc}") from None
        for name in ("notional", "max_notional", "checkpoint_interval_secs"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ValueError(f"{name} must be > 0, was {getattr(self, name)}")

    def expected_model(self) -> Expected:
        """What a model artifact must have been made for to drive this strategy."""
        return Expected.strategy(self.features, self.instrument_id, self.bar_type, self.slow)

    def warm_start_bars(self) -> int:
        """History bars requested at start (0 = warm start off)."""
        if not self.warm_start.enabled:
            return 0
        return self.warm_start.bars or self.bars_to_first_decision()

    def bars_to_first_decision(self) -> int:
        """Bars the engine needs before its first decision (history or live)."""
        return bars_needed(self.features, self.fit, self.slow, self.model_path is not None)


class HMMRegimeStrategy(HistoryRequester, StrategyPersistence, Strategy):
    """HMM regime strategy: features -> causal forward filter -> policy -> one market order."""

    def __init__(self, config: HMMRegimeStrategyConfig) -> None:
        super().__init__(config)
        self.instrument = None
        self.engine: RegimeEngine | None = None
        self.breakers = CircuitBreakers(config.breakers)
        self.pnl = PnLTracker()
        self.budget = config.notional
        self.scale = 1.0
        self.paused = False
        self.skipped_bars = 0
        self.skip_warnings = 0  # "Skipped bar" lines logged (rate-limited)
        self._checkpoint_failures = 0  # checkpoint writes failed in a row (see checkpoint_failed)
        self._checkpoint_writer: ThreadPoolExecutor | None = None  # timer writes (persistence)
        self._checkpoint_future: Future | None = None
        self._last_plan: tuple[float, float] | None = None
        # orders this strategy sent, from creation to a final state: a live node's risk engine
        # queues a submitted order, so the cache counts it as in flight only later (see
        # has_pending_orders); and a flatten asked for while one works waits for it to settle
        self._working: list[Order] = []
        self._flatten_pending = False
        self._exiting = False  # the live stop's market exit has begun: no new risk
        self._last_bar_ts = 0
        self._prev_close = 0.0
        self._checkpoint: Path | None = None
        self._saved_model_version = ""
        self._sid = ""  # str(self.id), the regime topic and the bars' instrument, set on start
        self._regime_topic = ""
        self._bar_instrument = ""

    def on_start(self) -> None:
        cfg = self.config
        self.instrument = self.cache.instrument(cfg.instrument_id)
        if self.instrument is None:  # fail the start: a strategy that cannot trade is no run
            raise ConfigError(
                f"instrument {cfg.instrument_id} is not known to the node (not in the backtest "
                "data or the venue's instruments): check the strategy's instrument_id"
            )
        if self.engine is None:  # not already restored by on_load (Redis)
            self.engine = self._new_engine()
            if cfg.checkpoint_dir and isinstance(self.clock, LiveClock):
                self._checkpoint = checkpoint_path(cfg.checkpoint_dir, self.trader_id, self.id)
                ensure_checkpoint_dir(self._checkpoint)  # a bad folder fails the start
                self._resume_from_checkpoint()
        sid = str(self.id)
        self._sid = sid  # strings built once here, not on every bar
        self._regime_topic = topic_for(REGIME_TOPIC, sid)
        self._bar_instrument = str(cfg.bar_type.instrument_id)
        self._feed_topic = topic_for(FEED_TOPIC, sid)
        self.msgbus.subscribe(topic_for(BUDGET_TOPIC, sid), self.on_budget)
        self.msgbus.subscribe(topic_for(GOVERNANCE_TOPIC, sid), self.on_governance)
        self.msgbus.subscribe(topic_for(MODEL_TOPIC, sid), self.on_model_update)
        self.msgbus.subscribe(KILL_SWITCH_TOPIC, self.on_kill_switch)
        self._apply_current_kill_switch()
        if self._checkpoint is not None:
            set_loop_timer(
                self.clock,
                CHECKPOINT_TIMER,
                timedelta(seconds=cfg.checkpoint_interval_secs),
                lambda _event: self.write_checkpoint_in_background(),
            )
        self._request_history()  # before the subscription: the history comes first
        self.subscribe_bars(cfg.bar_type)
        if self.breakers.tripped or self.paused:
            blocks = [f"{r} ({why})" for r, why in self.breakers.tripped.items()]
            blocks += ["governance pause"] if self.paused else []
            self.log.warning(f"New risk is blocked at start by: {'; '.join(blocks)}")

    def _apply_current_kill_switch(self) -> None:
        """The kill switch's current state wins over one restored from a checkpoint: read it from
        the cache (the kill switch actor started first) or wait for its broadcast (it starts
        later); either way the halt holds from the first bar."""
        raw = self.cache.get(KILL_SWITCH_CACHE_KEY)
        current = msgspec.json.decode(raw, type=KillSwitch) if raw is not None else None
        restored = self.breakers.tripped.get("kill_switch")
        if restored is not None and (current is None or not current.halted):
            self.breakers.set_kill_switch(False)
            self._last_plan = None
            self.log.warning(
                f"Kill switch halt from the checkpoint ({restored}) dropped: the switch is not "
                "on now"
            )
        if current is not None:
            self.on_kill_switch(current)

    # ------------------------------------------------------------------ warm start

    def _request_history(self) -> None:
        """Ask the venue's data client for the bars the engine needs before its first decision.
        Backtests stream their data from its first bar and resumed state needs no history."""
        cfg = self.config
        if not isinstance(self.clock, LiveClock):
            return
        n = cfg.warm_start_bars()
        if n == 0:
            need = cfg.bars_to_first_decision()
            self._report_warm_start(
                f"off (warm_start.enabled: false): first decision after {need} live bars"
            )
            return
        if self.engine.bars_seen:
            self._report_warm_start(f"not needed (state resumed at bar {self.engine.bars_seen})")
            return
        warm = cfg.warm_start
        self.request_history(cfg.bar_type, n, warm.timeout_secs, limit=warm.request_limit)

    def warm_up(self, history: list[Bar]) -> None:
        """The history through the engine, as live bars but without decisions or orders."""
        engine = self.engine
        lls = []
        for bar in history:
            close = bar.close.as_double()
            try:
                decision = engine.update(
                    bar.open.as_double(),
                    bar.high.as_double(),
                    bar.low.as_double(),
                    close,
                    bar.volume.as_double(),
                    bar.ts_event,
                )
            except ValueError:  # as on a live bar: skipped, counted
                engine.rejected_bars += 1
                continue
            except Exception as exc:  # as on a live bar: logged, the next bar goes on
                self.log.exception(f"Error on handling history {bar!r}", exc)
                continue
            self._last_bar_ts, self._prev_close = bar.ts_event, close
            if decision is not None:
                lls.append(decision.log_likelihood)
        # the breakers' clock as if the history had been streamed: a gap between the last
        # history bar and the first live bar is a data gap (and may be stale data)
        ts = [b.ts_event for b in history]
        steps = [b - a for a, b in zip(ts, ts[1:], strict=False) if b > a]
        breakers = self.breakers
        breakers.last_ts = ts[-1]
        if steps:  # the bar interval: the smallest step seen
            breakers.interval_ns = min(steps)
        venue = self.config.bar_type.instrument_id.venue
        used = (
            f"{len(history)} history bars of {self.config.bar_type} from the {venue} data "
            f"client ({bar_time(history[0].ts_event)} .. {bar_time(history[-1].ts_event)})"
        )
        span = (len(history), history[0].ts_event, history[-1].ts_event)
        short = self._bars_still_needed()
        if short:
            need = self.config.bars_to_first_decision()
            self._report_warm_start(
                f"{used}: fewer than the {need} the model needs; warming up on the next {short} "
                "live bars before the first decision",
                span,
                warning=True,
            )
            return
        check = ""
        if lls and self.config.model_path:
            check = f"; mean log-likelihood {sum(lls) / len(lls):.3f}/bar on them"
        self._report_warm_start(
            f"{used}: model {engine.model_version}{check}; first decision on the first live bar",
            span,
        )

    def _bars_still_needed(self) -> int:
        """Live bars before the first decision, 0 once the engine is ready to decide."""
        need = self.config.bars_to_first_decision()
        return max(0, need - self.engine.bars_seen)  # bars_seen counts usable bars only

    def no_history(self, why: str) -> None:
        self._report_warm_start(
            f"no history used ({why}); warming up on the next {self._bars_still_needed()} live "
            "bars before the first decision",
            warning=True,
        )

    def _report_warm_start(
        self, detail: str, span: tuple[int, int, int] = (0, 0, 0), *, warning: bool = False
    ) -> None:
        """Log which history was used (or why none) and publish it for the start banner."""
        (self.log.warning if warning else self.log.info)(f"Warm start: {detail}")
        self.msgbus.publish(
            topic_for(WARM_START_TOPIC, str(self.id)),
            WarmStartReport(str(self.id), *span, detail),
        )

    # ------------------------------------------------------------------ bars

    def on_bar(self, bar: Bar) -> None:
        # the history is still to come: it goes first (no call on every bar once it came)
        if self._history_request is not None and self.waiting_for_history(bar):
            return
        ts = bar.ts_event
        if ts <= self._last_bar_ts:  # duplicate, out of order, or replayed after restart
            self.skipped_bars += 1
            return
        engine = self.engine
        close = bar.close.as_double()
        try:
            decision = engine.update(
                bar.open.as_double(),
                bar.high.as_double(),
                bar.low.as_double(),
                close,
                bar.volume.as_double(),
                ts,
            )
        except ValueError as exc:  # a bar the model cannot use: skip it, never trade on it
            engine.rejected_bars += 1
            n = engine.rejected_bars
            if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: a flood of bad bars cannot flood the log
                self.log.warning(f"Skipped bar {bar}: {exc} ({n} skipped so far)")
                self.skip_warnings += 1
            return
        previous, self._last_bar_ts = self._last_bar_ts, ts
        breakers, pnl, prev_close = self.breakers, self.pnl, self._prev_close
        log_return = math.log(close / prev_close) if prev_close > 0.0 else None
        tripped = breakers.observe_return(log_return)
        self._prev_close = close
        if "price_jump" not in breakers.tripped:  # never mark P&L at a distrusted price
            pnl.mark(close)
        capital = self.capital()
        tripped += breakers.on_bar(ts, pnl.equity_pnl, capital)
        if breakers.missing_bars:
            self.on_data_gap(previous, ts, breakers.missing_bars)
        if tripped:
            self.on_breakers_tripped(tripped, ts)
        if decision is None:
            return
        target = decision.target_exposure
        self.msgbus.publish(
            self._regime_topic,
            RegimeUpdate(
                ts,
                self._sid,
                self._bar_instrument,
                close,
                decision.probs,
                decision.state,
                target,
                engine.model_version,
                decision.log_likelihood,
            ),
        )
        if self.paused or "price_jump" in breakers.tripped:
            return  # never size or reduce at a price the jump breaker distrusts
        if (target, capital) != self._last_plan:  # rebalance's own first test, without its call
            self.rebalance(target, close, ts, capital)

    def on_data_gap(self, last_ts: int, ts_event: int, missing: int) -> None:
        """Bars never arrived (feed disconnect, venue halt, market closure): count and log it."""
        self.log.warning(f"Data gap: {missing} bar(s) missing before {bar_time(ts_event)}")
        self.msgbus.publish(
            self._feed_topic,
            DataGap(ts_event, self._sid, self._bar_instrument, missing, last_ts),
        )

    def on_budget(self, budget: Budget) -> None:
        self.budget = budget.notional

    def on_governance(self, command: GovernanceCommand) -> None:
        self.log.warning(f"Governance {command.action} (scale={command.scale}): {command.reason}")
        if command.action == "pause":
            self.paused = True
            if command.flatten:
                self.flatten()
        elif command.action in ("throttle", "resume"):
            self.paused = False
            self.scale = command.scale
            if command.action == "resume":
                self.breakers.reset("drawdown")
        self._last_plan = None  # re-plan on the next bar with the new allocation

    def on_kill_switch(self, switch: KillSwitch) -> None:
        was_halted = "kill_switch" in self.breakers.tripped
        tripped = self.breakers.set_kill_switch(switch.halted, switch.reason)
        self._publish_trips(tripped, switch.ts_event)
        if switch.halted and switch.flatten:
            self.flatten()
        if switch.halted != was_halted:  # "off" announced at start changes nothing
            self.log.warning(f"Kill switch {'ON' if switch.halted else 'off'}: {switch.reason}")
            self._last_plan = None

    def on_model_update(self, update: ModelUpdate) -> None:
        """Swap in a promoted (or rolled-back) model; a bad artifact keeps the current one."""
        try:
            model, meta = load_model(update.model_path, expected=self.expected_model())
            slow = meta.slow.model if meta.slow is not None else None
            self.engine.set_model(model, meta.model_version, slow)
        except ValueError as exc:
            self.log.error(f"Rejected model {update.model_version} ({update.model_path}): {exc}")
            return
        self.log.warning(f"Model now {meta.model_version}: {update.reason}")

    def on_order_filled(self, event: OrderFilled) -> None:
        signed = event.last_qty.as_double() * (1.0 if event.order_side == OrderSide.BUY else -1.0)
        self.pnl.on_fill(signed, event.last_px.as_double(), event.commission.as_double())
        self.breakers.on_fill()

    def on_order_rejected(self, event: OrderRejected) -> None:
        self.on_breakers_tripped(self.breakers.on_reject(), event.ts_event)
        self._last_plan = None  # try again on the next bar (unless the rejects breaker tripped)
        self._flatten_if_settled()

    def on_order_denied(self, event: OrderDenied) -> None:
        self.log.warning(f"Order denied by the RiskEngine: {event.reason}")
        self.on_breakers_tripped(self.breakers.on_reject(), event.ts_event)
        self._last_plan = None
        self._flatten_if_settled()

    def on_order_canceled(self, event: OrderCanceled) -> None:
        self._flatten_if_settled()

    def on_order_expired(self, event: OrderExpired) -> None:
        self._flatten_if_settled()

    def on_position_event(self, event: PositionEvent) -> None:
        # a fill reaches the strategy before the position it changes: a deferred flatten waits
        # for the position event, so it closes the position as it now is
        self._flatten_if_settled()

    def on_breakers_tripped(self, reasons: list[str], ts_event: int) -> None:
        for reason in reasons:
            self.log.warning(f"Breaker {reason} tripped: {self.breakers.tripped.get(reason)}")
        self._publish_trips(reasons, ts_event)
        if reasons and self.config.breakers.flatten_on_trip:
            self.flatten()
        if reasons:
            self._last_plan = None

    def _publish_trips(self, reasons: list[str], ts_event: int) -> None:
        """One ``BreakerTrip`` per new trip, for the metrics (blocked orders are counted apart)."""
        for reason in reasons:
            self.msgbus.publish(
                topic_for(BREAKER_TRIP_TOPIC, str(self.id)),
                BreakerTrip(
                    ts_event=ts_event,
                    strategy_id=str(self.id),
                    instrument_id=str(self.config.instrument_id),
                    reason=reason,
                ),
            )

    def capital(self) -> float:
        return min(self.budget * self.scale, self.config.max_notional)

    def rebalance(
        self, exposure: float, price: float, ts_event: int, notional: float | None = None
    ) -> None:
        """Submit one market order moving the net position to ``exposure`` of the allocation."""
        if notional is None:
            notional = self.capital()
        plan = (exposure, notional)
        if plan == self._last_plan or self._exiting or self.has_pending_orders():
            return
        self._last_plan = plan
        inst = self.instrument
        min_qty = inst.min_quantity.as_decimal() if inst.min_quantity is not None else Decimal(0)
        target_qty = target_quantity(exposure, notional, price, inst.size_increment, min_qty)
        current = self.net_position()
        band = Decimal(repr(self.config.policy.no_trade_band * notional / price))
        delta = order_quantity(target_qty, current, inst.size_increment.as_decimal(), min_qty, band)
        if delta is None:
            return
        other = self.other_notional() if self.config.breakers.max_total_notional else 0.0
        blocked = self.breakers.check_order(
            float(current), float(target_qty), price, self.config.max_notional, other
        )
        if blocked is not None:
            self.log.warning(f"Breaker {blocked} blocked a move to {target_qty} ({exposure:+.2f})")
            self.msgbus.publish(
                topic_for(BREAKER_TOPIC, str(self.id)),
                BreakerRejection(
                    ts_event=ts_event,
                    strategy_id=str(self.id),
                    instrument_id=str(self.config.instrument_id),
                    reason=blocked,
                ),
            )
            return
        order = self.order_factory.market(
            instrument_id=self.config.instrument_id,
            order_side=OrderSide.BUY if delta > 0 else OrderSide.SELL,
            quantity=self.instrument.make_qty(abs(delta)),
            time_in_force=TimeInForce.GTC,
        )
        self._working.append(order)
        self.submit_order(order)

    def net_position(self) -> Decimal:
        """This strategy's own signed position (other strategies may trade the instrument too)."""
        positions = self.cache.positions_open(
            instrument_id=self.config.instrument_id, strategy_id=self.id
        )
        return sum((p.signed_decimal_qty() for p in positions), Decimal(0))

    def other_notional(self) -> float:
        """Notional of every open position the node holds except this strategy's own, at the
        last price (entry price before any): the ``max_total_notional`` breaker's other half."""
        total = 0.0
        for position in self.cache.positions_open():
            if position.strategy_id == self.id:
                continue
            last = self.cache.price(position.instrument_id, PriceType.LAST)
            px = last.as_double() if last is not None else position.avg_px_open
            total += abs(position.signed_qty) * px
        return total

    def flatten(self) -> None:
        """Close this strategy's position, once: while an order it sent still works, the close
        waits for that order to settle (a second close of the same position, or a close sized
        before a buy fills, would leave the account short or long)."""
        self.cancel_all_orders(self.config.instrument_id)
        if self.has_pending_orders():
            self._flatten_pending = True
            return
        self._flatten_pending = False
        for position in self.cache.positions_open(
            instrument_id=self.config.instrument_id, strategy_id=self.id
        ):
            order = self.order_factory.market(
                instrument_id=position.instrument_id,
                order_side=Order.closing_side(position.side),
                quantity=position.quantity,
                time_in_force=TimeInForce.GTC,
                reduce_only=True,
            )
            self._working.append(order)
            self.submit_order(order, position_id=position.id)

    def exit_market(self) -> None:
        """The live stop's first step (``venues.runtime.exit_markets``, on the event loop): no
        new risk from here on, and the position closed once no order works. Called again while
        a position is open and nothing works (a close that filled in part, a refused close)."""
        self._exiting = True
        self._last_plan = None
        self.flatten()

    def market_exited(self) -> bool:
        """Nothing works and nothing is open: the stop may persist and disconnect."""
        return not self.has_pending_orders() and self.net_position() == 0

    def _flatten_if_settled(self) -> None:
        if self._flatten_pending and not self.has_pending_orders():
            self.flatten()

    def has_pending_orders(self) -> bool:
        """An order of this strategy is working: from its creation (a live risk engine queues
        it, and the cache counts it only once processed) to a final state."""
        working = self._working
        if working:
            working[:] = [order for order in working if not order.is_closed]
            if working:
                return True
        return (
            self.cache.orders_open_count(strategy_id=self.id) > 0
            or self.cache.orders_inflight_count(strategy_id=self.id) > 0
        )

    def on_stop(self) -> None:
        """Close first, persist after: a full or read-only state folder must never keep a
        position open."""
        if CHECKPOINT_TIMER in self.clock.timer_names:
            self.clock.cancel_timer(CHECKPOINT_TIMER)
        self.cancel_history()
        self.cancel_all_orders(self.config.instrument_id)
        if self.config.close_positions_on_stop:  # (live: exit_market has closed them)
            self.close_all_positions(self.config.instrument_id)
        self.unsubscribe_bars(self.config.bar_type)
        if self._checkpoint is not None:
            self.write_checkpoint()
        self.stop_checkpoint_writer()

    def on_reset(self) -> None:
        self.engine = None
        self._last_plan = None
        self._working.clear()
        self._flatten_pending = False
        self._exiting = False

    # ------------------------------------------------------------------ state

    def expected_model(self) -> Expected:
        """What a model artifact must have been made for to drive this strategy."""
        return self.config.expected_model()

    def _new_engine(self) -> RegimeEngine:
        cfg = self.config
        model, version, slow_model = None, "", None
        if cfg.model_path:
            model, meta = load_model(cfg.model_path, expected=self.expected_model())
            version = meta.model_version
            slow_model = meta.slow.model if meta.slow is not None else None
        return RegimeEngine(
            cfg.features, cfg.policy, cfg.fit, model, version, slow=cfg.slow, slow_model=slow_model
        )


def target_quantity(
    exposure: float, notional: float, price: float, increment, min_quantity: Decimal = Decimal(0)
) -> Decimal:
    """Signed quantity for ``exposure`` x ``notional`` at ``price``, rounded toward zero.

    A target below ``min_quantity`` is 0: such a position could be neither opened nor closed.
    """
    step = increment.as_decimal()
    units = math.floor(abs(exposure) * notional / price / float(step))
    qty = Decimal(units) * step
    if qty < min_quantity:
        return Decimal(0)
    return qty * (1 if exposure >= 0 else -1)


def order_quantity(
    target: Decimal,
    current: Decimal,
    increment: Decimal,
    min_quantity: Decimal = Decimal(0),
    band: Decimal = Decimal(0),
) -> Decimal | None:
    """Signed order quantity moving ``current`` to ``target``, or None when nothing is sent.

    Nothing is sent when the move is below one size increment, below the venue's
    ``min_quantity`` (it would be denied and count toward the consecutive-rejects breaker), or,
    unless it goes flat, smaller than the no-trade ``band`` (quantity; small rebalances from a
    changed budget or a vol-target size are not worth their costs).
    """
    delta = target - current
    size = abs(delta)
    if size < increment or size < min_quantity or size == 0:
        return None
    if target != 0 and size < band:
        return None
    return delta
