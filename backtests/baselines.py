"""Baselines every backtest is compared with: buy-and-hold and NautilusTrader's ``EMACross``.

A strategy's return only means something next to what the same capital would have earned doing
something simple. Each baseline is its own ``BacktestRunConfig``: the same catalog bars, venue,
fee and fill models, starting balances and risk engine as the strategy's run, with the baseline
strategy alone (no HMM fit, no actors), so it costs a fraction of the main run. Both baselines
trade the same notional as the HMM strategy's full exposure.
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec
from nautilus_trader.backtest.config import BacktestRunConfig
from nautilus_trader.config import ImportableStrategyConfig, StrategyConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.trading.strategy import Strategy

from hmm_strategy.config import NodeSettings

BASELINES = ("buy_and_hold", "ema_cross")
ALLOCATOR_PATH = "actors.capital_allocator:CapitalAllocator"


class BuyAndHoldConfig(StrategyConfig, frozen=True):
    """
    Configuration for ``BuyAndHold``.

    Parameters
    ----------
    instrument_id : InstrumentId
        The instrument to buy.
    bar_type : BarType
        The bars to wait for; the first one triggers the purchase.
    notional : float
        Quote-currency amount to buy at the first bar's close (rounded down to the lot size).
    trade_from_ns : int, optional
        Buy on the first bar closing at or after this UNIX time (ns), e.g. a walk-forward
        fold's test window after its warm-up bars; None buys on the first bar.
    close_positions_on_stop : bool, default True
        Sell at the end, so the realized PnL is the whole holding's PnL.

    """

    instrument_id: InstrumentId
    bar_type: BarType
    notional: float
    trade_from_ns: int | None = None
    close_positions_on_stop: bool = True


class BuyAndHold(Strategy):
    """Buy ``notional`` worth once on the first bar, hold to the end of the run."""

    def __init__(self, config: BuyAndHoldConfig) -> None:
        super().__init__(config)
        self.instrument: Instrument | None = None
        self.bought = False

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.config.instrument_id)
        if self.instrument is None:
            self.log.error(f"Could not find instrument for {self.config.instrument_id}")
            self.stop()
            return
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar: Bar) -> None:
        if self.bought or bar.ts_event < (self.config.trade_from_ns or 0):
            return
        self.bought = True
        quantity = units_for_notional(self.config.notional, bar.close.as_double(), self.instrument)
        if quantity <= 0:
            self.log.error(f"notional {self.config.notional} buys less than one lot")
            return
        order = self.order_factory.market(
            instrument_id=self.config.instrument_id,
            order_side=OrderSide.BUY,
            quantity=self.instrument.make_qty(quantity),
        )
        self.submit_order(order)

    def on_stop(self) -> None:
        if self.config.close_positions_on_stop:
            self.close_all_positions(self.config.instrument_id)
        self.unsubscribe_bars(self.config.bar_type)


def units_for_notional(notional: float, price: float, instrument: Instrument) -> Decimal:
    """``notional / price`` rounded DOWN to the lot size, so the cost never exceeds notional."""
    step = instrument.size_increment.as_decimal()
    lots = math.floor(notional / price / float(step))
    return Decimal(lots) * step


def baseline_notional(settings: NodeSettings, strategy_index: int = 0) -> float:
    """The HMM strategy's full-exposure notional: what the baselines trade.

    The strategy sizes ``min(budget, max_notional)``; with the capital allocator in the node its
    budget is a share of equity (far above ``max_notional`` with the shipped config), without it
    the budget is ``notional``. ``backtest.baseline_notional`` overrides both.
    """
    bt = settings.backtest
    if bt is not None and bt.baseline_notional is not None:
        return float(bt.baseline_notional)
    config = settings.strategies[strategy_index].config
    notional = float(config.get("notional", 10_000.0))
    cap = float(config.get("max_notional", math.inf))
    if any(a.path == ALLOCATOR_PATH for a in settings.actors):
        return cap if math.isfinite(cap) else notional
    return min(notional, cap)


def baseline_strategy(
    name: str,
    instrument_id: str,
    bar_type: str,
    notional: float,
    first_close: float,
    trade_from_ns: int | None = None,
) -> ImportableStrategyConfig:
    """The baseline's strategy config; EMACross gets a fixed size = notional at the first close."""
    if name == "buy_and_hold":
        return ImportableStrategyConfig(
            strategy_path="backtests.baselines:BuyAndHold",
            config_path="backtests.baselines:BuyAndHoldConfig",
            config={
                "instrument_id": instrument_id,
                "bar_type": bar_type,
                "notional": notional,
                "trade_from_ns": trade_from_ns,
                "order_id_tag": "BH",
            },
        )
    if name == "ema_cross":
        from marketdata.catalog import instrument_for

        size = units_for_notional(notional, first_close, instrument_for(instrument_id))
        return ImportableStrategyConfig(
            strategy_path="nautilus_trader.examples.strategies.ema_cross:EMACross",
            config_path="nautilus_trader.examples.strategies.ema_cross:EMACrossConfig",
            config={
                "instrument_id": instrument_id,
                "bar_type": bar_type,
                "trade_size": str(size),
                "subscribe_trade_ticks": False,  # bars only, as the HMM strategy sees
                "request_bars": False,  # no history before the run's first bar (no look-ahead)
                "order_id_tag": "EMA",
            },
        )
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def baseline_run_configs(
    run_config: BacktestRunConfig,
    names: tuple[str, ...] | list[str],
    *,
    instrument_id: str,
    bar_type: str,
    notional: float,
    first_close: float,
    trade_from_ns: int | None = None,
) -> dict[str, BacktestRunConfig]:
    """One run config per baseline: ``run_config``'s venues, data and risk, the baseline alone."""
    out = {}
    for name in names:
        engine = msgspec.structs.replace(
            run_config.engine,
            strategies=[
                baseline_strategy(
                    name, instrument_id, bar_type, notional, first_close, trade_from_ns
                )
            ],
            actors=[],
        )
        out[name] = msgspec.structs.replace(run_config, engine=engine)
    return out
