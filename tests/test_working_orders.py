"""One order at a time, from the moment it is created.

A live node's risk engine queues a submitted order: until the queue is processed the order is
INITIALIZED and the cache counts it neither as open nor as in flight. Found on the simulated
Binance venue after a WebSocket drop: the first bar after the gap tripped the price-jump breaker
(flatten: SELL the whole position), the next bar of the burst rebalanced from the same, not yet
reduced position (SELL again), and the spot venue rejected the second sell for insufficient
balance; on a margin venue it would have opened a short nobody asked for.

Here the queue is made explicit in a real ``BacktestEngine``: the ``RiskEngine.execute``
endpoint is swapped for a list while the strategy acts, then the commands are released in order.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderStatus
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from hmm_strategy.strategy import HMMRegimeStrategy, HMMRegimeStrategyConfig

RISK = "RiskEngine.execute"
MINUTE_NS = 60_000_000_000
START_NS = 1_704_067_200_000_000_000  # 2024-01-01 UTC


def _engine():
    inst = TestInstrumentProvider.btcusdt_binance()
    bar_type = BarType.from_str(f"{inst.id}-1-MINUTE-LAST-EXTERNAL")
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(
        Venue("BINANCE"),
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=None,
        starting_balances=[Money(1_000_000, USDT)],
    )
    engine.add_instrument(inst)
    strategy = HMMRegimeStrategy(
        HMMRegimeStrategyConfig(
            instrument_id=inst.id,
            bar_type=bar_type,
            max_notional=100_000.0,
        )
    )
    engine.add_strategy(strategy)
    closes = 40_000.0 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.001, 40)))
    bars = [
        Bar(
            bar_type,
            Price(c, 2),
            Price(c * 1.001, 2),
            Price(c * 0.999, 2),
            Price(c, 2),
            Quantity(10, 6),
            START_NS + (i + 1) * MINUTE_NS,
            START_NS + (i + 1) * MINUTE_NS,
        )
        for i, c in enumerate(closes)
    ]
    engine.add_data(bars[:30])
    engine.run(streaming=True)  # the strategy keeps running: the test acts through it
    return engine, strategy, iter(bars[30:])


def step(engine: BacktestEngine, bars) -> None:
    """One more bar: the simulated venue answers what was sent (it does so on the next data)."""
    engine.clear_data()
    engine.add_data([next(bars)])
    engine.run(streaming=True)


class Queue:
    """The live risk engine's queue: commands wait until ``release``."""

    def __init__(self, engine: BacktestEngine) -> None:
        self.msgbus, self.risk = engine.kernel.msgbus, engine.kernel.risk_engine
        self.commands: list = []
        self.msgbus.deregister(RISK, self.risk.execute)
        self.msgbus.register(RISK, self.commands.append)

    def release(self) -> None:
        self.msgbus.deregister(RISK, self.commands.append)
        self.msgbus.register(RISK, self.risk.execute)
        for command in self.commands:
            self.risk.execute(command)


@contextmanager
def holding(exposure: float):
    """A running engine whose strategy holds a long of ``exposure`` x 50,000 USDT."""
    engine, strategy, bars = _engine()
    try:
        price = strategy.cache.bar(strategy.config.bar_type).close.as_double()
        strategy.rebalance(exposure, price, 0, 50_000.0)
        step(engine, bars)
        assert strategy.net_position() > 0
        yield engine, strategy, bars, price
    finally:
        engine.end()
        engine.dispose()


def test_two_flattens_and_a_rebalance_before_the_queue_runs_send_one_close() -> None:
    with holding(1.0) as (engine, strategy, bars, price):
        long = strategy.net_position()
        queue = Queue(engine)
        strategy.flatten()  # a breaker trips
        strategy.flatten()  # governance pauses with flatten, in the same instant
        strategy._last_plan = None
        strategy.rebalance(0.5, price, 0, 50_000.0)  # the next bar of the burst
        assert len(queue.commands) == 1, [c.order for c in queue.commands]
        assert queue.commands[0].order.quantity.as_decimal() == long
        assert queue.commands[0].order.status == OrderStatus.INITIALIZED

        queue.release()
        step(engine, bars)
        assert strategy.net_position() == 0  # flat, not short
        assert not strategy.has_pending_orders()


def test_a_flatten_asked_for_while_a_buy_is_queued_closes_what_the_buy_left() -> None:
    with holding(0.5) as (engine, strategy, bars, price):
        queue = Queue(engine)
        strategy._last_plan = None
        strategy.rebalance(1.0, price, 0, 50_000.0)  # a buy, still queued
        strategy.flatten()  # the kill switch: waits for the buy, closes what it then holds
        assert len(queue.commands) == 1

        queue.release()
        step(engine, bars)  # the buy fills; its position event lets the deferred close go
        step(engine, bars)  # which fills
        assert strategy.net_position() == 0
        orders = strategy.cache.orders(strategy_id=strategy.id)
        assert [o.status for o in orders] == [OrderStatus.FILLED] * 3


def test_a_stop_while_a_buy_is_queued_exits_flat() -> None:
    """The live stop's market exit (``venues.runtime.exit_markets``): a flat strategy whose
    last bar's buy still waits in the risk engine's queue takes no new risk, waits for the buy
    and closes what it bought; the stop then finds it flat with nothing working."""
    engine, strategy, bars = _engine()
    try:
        price = strategy.cache.bar(strategy.config.bar_type).close.as_double()
        queue = Queue(engine)
        strategy.rebalance(1.0, price, 0, 50_000.0)  # a buy, still queued
        strategy.exit_market()  # nothing open yet: the close waits for the buy
        strategy._last_plan = None
        strategy.rebalance(-1.0, price, 0, 50_000.0)  # a bar during the exit: no new risk
        assert len(queue.commands) == 1
        assert not strategy.market_exited()
        queue.release()
        step(engine, bars)  # the buy fills; its position event lets the deferred close go
        step(engine, bars)  # which fills
        assert strategy.market_exited()
        orders = strategy.cache.orders(strategy_id=strategy.id)
        assert [(o.side.name, o.is_reduce_only) for o in orders] == [
            ("BUY", False), ("SELL", True)
        ]  # fmt: skip
        strategy.stop()
        assert strategy.is_stopped and strategy.net_position() == 0
    finally:
        engine.end()
        engine.dispose()


def test_a_single_close_at_stop_with_an_order_queued_leaves_a_position() -> None:
    """Why a live stop exits the market first (seen in CI: a paper node stopped SHORT 1.44 BTC,
    exit 6): ``on_stop``'s one close is sized before the queued order fills."""
    engine, strategy, bars = _engine()
    try:
        price = strategy.cache.bar(strategy.config.bar_type).close.as_double()
        queue = Queue(engine)
        strategy.rebalance(1.0, price, 0, 50_000.0)  # a buy, still queued
        strategy.stop()  # nothing open yet: nothing to close
        queue.release()
        for _ in range(3):
            step(engine, bars)
        assert strategy.is_stopped and strategy.net_position() > 0
    finally:
        engine.end()
        engine.dispose()
