"""backtests.scaling: same statistics as upstream NautilusTrader, and linear cost per position.

(a) identical: real BTCUSDT 15m bars through a BacktestEngine with default settings and with the
    linear settings give identical statistics, analyzer series and reports;
(b) linear: the analyzer's copy work per closed position (elements ``pd.concat`` copies, counted
    exactly) stays flat when the run is 12x longer with the fix, while the same count grows under
    default settings (so (b) can fail). The time it costs is measured in ``bench/`` (scaling trap).
"""

from __future__ import annotations

import math
import re
import warnings
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from nautilus_trader.analysis.analyzer import PortfolioAnalyzer
from nautilus_trader.backtest.config import BacktestVenueConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import StrategyConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy

from backtests.scaling import (
    ContingentOrderError,
    LinearPortfolioAnalyzer,
    install_linear_analyzer,
    linear_venue_config,
    pending_records,
)
from bench.backtest import make_engine
from marketdata.bars import load_bars
from marketdata.catalog import bars_to_nautilus, instrument_for

REPO = Path(__file__).resolve().parents[1]
INSTRUMENT_ID = "BTCUSDT.BINANCE"
BAR_TYPE = BarType.from_str("BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_SNAPSHOT_SUFFIX = re.compile(f"-{_UUID}$")


class FlipConfig(StrategyConfig, frozen=True):
    every: int = 1  # bars between orders
    size: str = "0.010000"


class Flip(Strategy):
    """Long/short flip with ONE market order every ``every`` bars (NETTING flip path)."""

    def __init__(self, config: FlipConfig) -> None:
        super().__init__(config)
        self.bars = 0
        self.side = OrderSide.BUY

    def on_start(self) -> None:
        self.subscribe_bars(BAR_TYPE)

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1
        if self.bars % self.config.every:
            return
        size = Decimal(self.config.size) * (1 if self.bars == self.config.every else 2)
        self.submit_order(
            self.order_factory.market(BAR_TYPE.instrument_id, self.side, Quantity(size, 6))
        )
        self.side = OrderSide.SELL if self.side == OrderSide.BUY else OrderSide.BUY


def load_real_bars(data_dir: Path) -> list[Bar]:
    """BTCUSDT 15m (Binance spot, 2024) from the shared data, as Nautilus bars."""
    path = data_dir / "binance" / "privet1x_crypto-trading-bot" / "BTCUSDT_15m.csv"
    frame = load_bars(path, "privet_csv").frame
    return bars_to_nautilus(frame, BAR_TYPE, instrument_for(INSTRUMENT_ID))


@pytest.fixture(scope="module")
def real_bars(data_dir: Path) -> list[Bar]:
    return load_real_bars(data_dir)


def strategies() -> list[Strategy]:
    """EMA cross (close + reopen: NETTING snapshots on reopen) and a flipper (flip path)."""
    ema = EMACross(
        EMACrossConfig(
            instrument_id=BAR_TYPE.instrument_id,
            bar_type=BAR_TYPE,
            trade_size=Decimal("0.05"),
            request_bars=False,
            subscribe_trade_ticks=False,
        )
    )
    return [ema, Flip(FlipConfig(strategy_id="FLIP-001", every=7))]


def run(engine: BacktestEngine) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation noise from inside nautilus
        engine.run()


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """A report without what differs between two identical runs: random uuid4 event ids
    (columns made of uuids only) and the uuid4 suffix NETTING snapshots add to a position id."""
    df = df.copy()
    for column in list(df.columns):
        values = df[column].astype(str)
        if len(values) and values.str.fullmatch(_UUID).all():
            df = df.drop(columns=column)
        elif column == "position_id":
            df[column] = values.str.replace(_SNAPSHOT_SUFFIX, "", regex=True)
    df.index = pd.Index([_SNAPSHOT_SUFFIX.sub("", str(i)) for i in df.index], name=df.index.name)
    return df


def same(a, b) -> bool:
    """Equality with NaN == NaN (statistics of an empty series are NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_statistics_and_reports_identical_with_and_without_the_fix(real_bars: list[Bar]) -> None:
    bars = real_bars[:6_000]  # about two months of 15-minute bars
    default = make_engine(bars, strategies(), linear=False)
    fixed = make_engine(bars, strategies(), linear=True)
    run(default)
    run(fixed)
    assert type(fixed.portfolio.analyzer) is LinearPortfolioAnalyzer
    assert type(default.portfolio.analyzer) is PortfolioAnalyzer

    a, b = default.get_result(), fixed.get_result()
    assert a.total_positions > 250, "the check needs many closed positions"
    assert a.total_orders == b.total_orders and a.total_positions == b.total_positions
    assert same(a.stats_pnls, b.stats_pnls)
    assert same(a.stats_returns, b.stats_returns)
    assert a.stats_pnls["USDT"]["PnL (total)"] != 0.0

    an, bn = default.portfolio.analyzer, fixed.portfolio.analyzer
    for name in ("realized_pnls",):
        pd.testing.assert_series_equal(
            getattr(an, name)(USDT).rename(lambda i: _SNAPSHOT_SUFFIX.sub("", i)),
            getattr(bn, name)(USDT).rename(lambda i: _SNAPSHOT_SUFFIX.sub("", i)),
            check_exact=True,
            check_index_type=True,
        )
    pd.testing.assert_series_equal(an.position_returns(), bn.position_returns(), check_exact=True)
    pd.testing.assert_series_equal(an.returns(), bn.returns(), check_exact=True)
    assert same(an.get_performance_stats_general(), bn.get_performance_stats_general())
    assert an.get_stats_pnls_formatted(USDT) == bn.get_stats_pnls_formatted(USDT)
    assert pending_records(bn) == 0  # everything read has been settled

    ta, tb = default.trader, fixed.trader
    venue = Venue("BINANCE")
    for report, args in (
        ("generate_orders_report", ()),
        ("generate_order_fills_report", ()),
        ("generate_fills_report", ()),
        ("generate_positions_report", ()),
        ("generate_account_report", (venue,)),
    ):
        left, right = getattr(ta, report)(*args), getattr(tb, report)(*args)
        assert len(left) > 250, report
        pd.testing.assert_frame_equal(comparable(left), comparable(right), check_exact=True)


def concat_work(bars: list[Bar], *, linear: bool) -> tuple[int, int]:
    """Elements copied by ``pd.concat`` over a run and its statistics, and closed positions.

    Upstream grows the analyzer's Series by one element per closed position with ``pd.concat``,
    copying everything recorded before: the copy work is quadratic. Counting it is exact and
    deterministic; wall or CPU time would be neither (timings live in ``bench/``).
    """
    engine = make_engine(bars, [Flip(FlipConfig(strategy_id="FLIP-001"))], linear=linear)
    copied = 0
    original = pd.concat

    def counting(objs, *args, **kwargs):
        nonlocal copied
        objs = list(objs)
        copied += sum(len(o) for o in objs)
        return original(objs, *args, **kwargs)

    pd.concat = counting
    try:
        run(engine)
        engine.get_result()  # the statistics read every record
    finally:
        pd.concat = original
    positions = engine.get_result().total_positions
    assert positions >= len(bars) - 1  # one closed position per bar
    return copied, positions


def test_analyzer_copy_work_per_position_is_flat_with_the_fix(real_bars: list[Bar]) -> None:
    small, large = real_bars[:200], real_bars[:2_400]
    per_position = {}
    for linear in (True, False):
        (c_small, p_small), (c_large, p_large) = (
            concat_work(bars, linear=linear) for bars in (small, large)
        )
        per_position[linear] = (c_large / p_large) / (c_small / p_small)
    fixed, default = per_position[True], per_position[False]
    print(f"concat copies per position, 12x positions: fixed {fixed:.2f}x, default {default:.2f}x")
    assert fixed < 1.2, f"the fix copies {fixed:.2f}x more per position in a 12x longer run"
    # upstream: the copies per position grow with the positions already recorded (can fail)
    assert default > 6.0, f"default settings: copies per position grew only {default:.2f}x"


def test_settle_matches_upstream_series_exactly() -> None:
    """Mixed currencies, a missing timestamp and reads in between: same Series as upstream."""
    from nautilus_trader.model.currencies import BTC
    from nautilus_trader.model.identifiers import PositionId

    upstream, linear = PortfolioAnalyzer(), PortfolioAnalyzer()
    install_linear_analyzer(linear)
    for i in range(25):
        for analyzer in (upstream, linear):
            currency = BTC if i % 5 == 0 else USDT
            ts = None if i == 7 else 1_700_000_000_000_000_000 + i
            analyzer.record_trade(PositionId(f"P-{i % 3}"), Money(i * 1.25 - 9, currency), ts)
            analyzer.add_trade(PositionId(f"Q-{i}"), Money(-i * 0.5, currency), ts)
            if i == 12:  # a read in the middle settles, later records append to it
                assert len(analyzer._recorded_realized_pnls[USDT]) == 10
    for attr in (
        "_realized_pnls",
        "_realized_pnl_timestamps",
        "_recorded_realized_pnls",
        "_recorded_realized_pnl_timestamps",
    ):
        up, lin = getattr(upstream, attr), getattr(linear, attr)
        assert up.keys() == lin.keys()
        for currency in up:
            pd.testing.assert_series_equal(up[currency], lin[currency], check_exact=True)
            assert list(map(type, up[currency])) == list(map(type, lin[currency]))
    pd.testing.assert_series_equal(upstream.realized_pnls(USDT), linear.realized_pnls(USDT))
    upstream.reset()
    linear.reset()
    assert linear.realized_pnls() is None and upstream.realized_pnls() is None


def test_install_is_idempotent_and_refuses_unknown_targets() -> None:
    analyzer = PortfolioAnalyzer()
    assert install_linear_analyzer(analyzer) is install_linear_analyzer(analyzer)
    with pytest.raises(TypeError, match="no portfolio analyzer"):
        install_linear_analyzer(object())


def test_linear_venue_config_only_turns_off_contingent_order_support() -> None:
    venue = BacktestVenueConfig(
        name="BINANCE", oms_type="NETTING", account_type="MARGIN", starting_balances=["1 USDT"]
    )
    linear = linear_venue_config(venue)
    assert venue.support_contingent_orders and not linear.support_contingent_orders
    assert {**linear.dict(), "support_contingent_orders": True} == venue.dict()


class Bracket(Strategy):
    def on_start(self) -> None:
        self.subscribe_bars(BAR_TYPE)

    def on_bar(self, bar: Bar) -> None:
        if self.cache.orders_total_count() == 0:
            close = bar.close.as_double()
            self.submit_order_list(
                self.order_factory.bracket(
                    BAR_TYPE.instrument_id,
                    OrderSide.BUY,
                    Quantity.from_str("0.010000"),
                    sl_trigger_price=Price(close * 0.9, 2),
                    tp_price=Price(close * 1.1, 2),
                )
            )


def test_guard_fails_a_run_that_sends_contingent_orders(real_bars: list[Bar]) -> None:
    bracket = Bracket(StrategyConfig(strategy_id="BR-001"))
    engine = make_engine(real_bars[:50], [bracket], linear=True)
    with pytest.raises(ContingentOrderError, match="contingent order"):
        run(engine)


def test_comparable_drops_only_uuid_columns_and_snapshot_suffixes() -> None:
    """Guards the report comparison above."""
    uuid = "0b7e2f4c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"
    ids = ["A-1", f"A-1-{uuid}", "A-1-not-a-uuid"]
    df = pd.DataFrame(
        {"position_id": ids, "init_id": [uuid] * 3, "qty": [1, 2, 3]},
        index=pd.Index(ids, name="position_id"),
    )
    out = comparable(df)
    assert list(out.columns) == ["position_id", "qty"]
    assert out["position_id"].tolist() == ["A-1", "A-1", "A-1-not-a-uuid"]
    assert list(out.index) == out["position_id"].tolist()
    assert df["position_id"].tolist() == ids  # input untouched
