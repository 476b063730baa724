"""Backtest throughput: the same bars, the same ``BacktestEngine`` settings, three strategies.

Strategies: a no-op (receives every bar, does nothing: the framework's floor), NautilusTrader's
own example ``EMACross`` and ``HMMRegimeStrategy`` with a pre-fitted model artifact (the fit is
timed in the fit section, not here). Every engine gets the linear-cost settings of
``backtests.scaling`` unless ``linear=False`` (used only to show the quadratic trap).

Times are CPU seconds of this process (``time.process_time``) around ``engine.run()``; on a
shared 2-core machine other processes inflate wall time but hardly CPU time, so ratios between
strategies stay stable. Wall seconds are recorded too.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
import warnings
from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import MakerTakerFeeModel
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.trading.strategy import Strategy

from backtests.scaling import VENUE_SETTINGS, install_linear_scaling
from bench.data import BAR_TYPE, instrument
from bench.memory import current_rss_mb, peak_rss_mb, reset_peak_rss
from bench.rounds import least_of_rounds, median_ratio
from hmm_strategy.strategy import HMMRegimeStrategy, HMMRegimeStrategyConfig

STRATEGIES = ("noop", "ema_cross", "hmm")


class NoOpConfig(StrategyConfig, frozen=True):
    bar_type: str = BAR_TYPE


class NoOp(Strategy):
    """Subscribes to the bars and does nothing: the cost of delivering a bar to a strategy."""

    def on_start(self) -> None:
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        pass


def make_strategy(name: str, model_path: str | None) -> Strategy:
    bar_type = BarType.from_str(BAR_TYPE)
    if name == "noop":
        return NoOp(NoOpConfig(strategy_id="NOOP-001"))
    if name == "ema_cross":
        return EMACross(
            EMACrossConfig(
                instrument_id=bar_type.instrument_id,
                bar_type=bar_type,
                trade_size=Decimal("0.01"),
                request_bars=False,  # no historical request in a backtest
                subscribe_trade_ticks=False,  # bars only, like the other two
            )
        )
    if name == "hmm":
        if model_path is None:
            raise ValueError("the HMM strategy benchmark needs a model artifact (model_path)")
        return HMMRegimeStrategy(
            HMMRegimeStrategyConfig(
                instrument_id=bar_type.instrument_id,
                bar_type=bar_type,
                model_path=model_path,
                order_id_tag="001",
                checkpoint_dir=None,
            )
        )
    raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def make_engine(
    bars: list[Bar],
    strategies: Sequence[Strategy],
    *,
    linear: bool = True,
    actors: Sequence[Actor] = (),
) -> BacktestEngine:
    """One BINANCE NETTING margin venue, the BTCUSDT instrument, the bars, the strategies.

    ``linear=False`` keeps NautilusTrader's defaults (the quadratic trap; tests/test_scaling.py).
    """
    engine = BacktestEngine(
        BacktestEngineConfig(trader_id="BENCH-001", logging=LoggingConfig(log_level="ERROR"))
    )
    engine.add_venue(
        venue=Venue("BINANCE"),
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        starting_balances=[Money(10_000_000, USDT)],
        default_leverage=Decimal(1),
        fee_model=MakerTakerFeeModel(),
        **(VENUE_SETTINGS if linear else {}),
    )
    engine.add_instrument(instrument())
    engine.add_data(bars)
    for strategy in strategies:
        engine.add_strategy(strategy)
    for actor in actors:
        engine.add_actor(actor)
    if linear:
        install_linear_scaling(engine)
    return engine


def run_backtest(
    bars: list[Bar],
    name: str,
    model_path: str | None,
    *,
    linear: bool = True,
    extra_actors: Sequence[Actor] = (),
) -> dict[str, Any]:
    """Build, run and measure one backtest; the engine is disposed afterwards."""
    gc.collect()
    reset_peak_rss()
    rss_before = current_rss_mb()
    setup = time.perf_counter()
    strategy = make_strategy(name, model_path)
    engine = make_engine(bars, [strategy], linear=linear, actors=extra_actors)
    setup = time.perf_counter() - setup
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation noise from inside nautilus
        engine.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = engine.get_result()
    peak = peak_rss_mb()
    out = {
        "strategy": name,
        "bars": len(bars),
        "linear_settings": linear,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "bars_per_s": len(bars) / cpu,
        "bars_per_wall_s": len(bars) / wall,
        "setup_seconds": setup,
        "iterations": int(result.iterations),
        "orders": int(result.total_orders),
        "positions": int(result.total_positions),
        "pnl_total": result.stats_pnls.get("USDT", {}).get("PnL (total)"),
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "run_rss_increase_mb": None if peak is None or rss_before is None else peak - rss_before,
    }
    engine.dispose()
    del engine
    gc.collect()
    return out


def interleaved_runs(
    bars: list[Bar], model_path: str | None, rounds: int, names: Sequence[str] = STRATEGIES
) -> list[dict[str, Any]]:
    """Every strategy once per round, in turn; each keeps its least CPU time
    (``bench.rounds.least_of_rounds``)."""
    jobs = [(name, partial(run_backtest, bars, name, model_path)) for name in names]
    return least_of_rounds(jobs, rounds)


def profile_backtest(
    bars: list[Bar], name: str, model_path: str | None, top: int = 12
) -> dict[str, Any]:
    """cProfile one backtest: the Python functions with the most own time (Cython is opaque)."""
    engine = make_engine(bars, [make_strategy(name, model_path)])
    profiler = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profiler.runcall(engine.run)
    engine.dispose()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt
    rows = []
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append(
            {
                "function": f"{_short(path)}:{line}({func})",
                "calls": ncalls,
                "own_us_per_bar": tottime / len(bars) * 1e6,
                "own_share": tottime / total,
                "cum_us_per_bar": cumtime / len(bars) * 1e6,
            }
        )
    rows.sort(key=lambda r: -r["own_share"])
    return {"bars": len(bars), "strategy": name, "profiled_seconds": total, "top": rows[:top]}


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def throughput_table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios from the measured runs of ``interleaved_runs`` (same bars): HMM vs no-op and vs
    EMA cross."""
    by = {r["strategy"]: r for r in runs}
    hmm, noop, ema = by["hmm"], by["noop"], by["ema_cross"]
    return {
        "hmm_vs_noop": hmm["bars_per_s"] / noop["bars_per_s"],
        "hmm_vs_ema_cross": hmm["bars_per_s"] / ema["bars_per_s"],
        "hmm_vs_noop_wall": hmm["bars_per_wall_s"] / noop["bars_per_wall_s"],
        "hmm_vs_ema_cross_wall": hmm["bars_per_wall_s"] / ema["bars_per_wall_s"],
        "hmm_vs_noop_median": median_ratio(noop, hmm),
        "hmm_vs_ema_cross_median": median_ratio(ema, hmm),
    }
