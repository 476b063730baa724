"""Baselines and the comparison report: a short real BTCUSDT run through the user's CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtests.baselines import baseline_notional
from backtests.metrics import METRIC_KEYS, parse_money, performance, state_labels
from backtests.report import period_lines, read_events, traded_period
from backtests.run import main
from hmm_strategy.train import load_frame
from tests.test_backtest import settings_for

END = "2024-01-21"  # ~1,900 bars: the HMM fits on its 1,500 warm-up bars and trades the rest
# the shipped default fits on 60 days (5,760 bars); this short run keeps a 1,500-bar fit
FAST_FIT = {"strategies": [{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 1_500}}}]}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("baselines")
    settings_for(tmp, FAST_FIT)  # writes override.yaml (catalog and output in tmp)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "--override",
                str(tmp / "override.yaml"),
                "--run-dir",
                str(tmp / "run"),
                "--end",
                END,
                "--no-tearsheet",
            ]
        )
    assert code == 0
    run = tmp / "run"
    return {
        "run": run,
        "stdout": out.getvalue(),
        "stats": json.loads((run / "stats.json").read_text()),
        "settings": settings_for(tmp, FAST_FIT),
    }


def test_buy_and_hold_pnl_is_price_change_times_quantity_minus_fees(short_run: dict) -> None:
    run, settings = short_run["run"], short_run["settings"]
    bars = load_frame(settings, "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL", end=END)
    first, last = float(bars["close"][0]), float(bars["close"][-1])
    fills = pd.read_csv(run / "buy_and_hold_fills.csv")
    assert fills["side"].tolist() == ["BUY", "SELL"]  # bought once, sold on stop
    qty = Decimal(str(fills["filled_qty"].iloc[0]))
    notional = baseline_notional(settings)
    step = Decimal("0.000001")  # BTCUSDT lot size
    assert qty == Decimal(math.floor(notional / first / float(step))) * step
    assert fills["avg_px"].tolist() == pytest.approx([first, last], rel=1e-12)
    fees = sum(parse_money(c) for c in fills["commissions"])
    assert fees == pytest.approx(2 * 0.001 * float(qty) * (first + last) / 2, rel=1e-6)
    expected = (last - first) * float(qty) - fees
    # NautilusTrader's own realized PnL of the position, and the report's mark-to-market PnL
    positions = pd.read_csv(run / "buy_and_hold_positions.csv")
    assert sum(parse_money(p) for p in positions["realized_pnl"]) == pytest.approx(
        expected, abs=1e-6
    )
    bh = short_run["stats"]["comparison"]["buy_and_hold"]
    assert bh["pnl"] == pytest.approx(expected, abs=1e-6)
    assert bh["total_return_pct"] == pytest.approx(expected / 100_000 * 100)
    assert bh["trades"] == 1 and bh["fees"] == pytest.approx(fees)


def test_every_run_reports_every_metric_finite(short_run: dict) -> None:
    comparison = short_run["stats"]["comparison"]
    assert list(comparison) == ["buy_and_hold", "ema_cross", "strategy"]  # sorted keys
    for name, metrics in comparison.items():
        assert metrics["capital"] == 100_000.0
        for key in METRIC_KEYS:
            if key == "win_rate_pct" and metrics["trades"] == 0:
                assert metrics[key] is None
                continue
            assert metrics[key] is not None and math.isfinite(metrics[key]), (name, key)
    ema = comparison["ema_cross"]
    assert ema["trades"] > 10 and ema["fees"] > comparison["buy_and_hold"]["fees"]
    diag = short_run["stats"]["regime_diagnostics"]
    n_states = short_run["settings"].strategies[0].config["fit"]["n_states"]
    assert [s["label"] for s in diag["states"]] == list(state_labels(n_states))
    assert sum(s["bars"] for s in diag["states"]) == diag["bars"] - 1
    assert all(d > 1 for d in diag["expected_duration_bars"])


def test_console_prints_a_readable_comparison_table(short_run: dict) -> None:
    out = short_run["stdout"]
    header = next(line for line in out.splitlines() if "buy & hold" in line)
    assert header.split() == ["strategy", "buy", "&", "hold", "EMA", "cross"]
    for label in ("total return", "Sharpe", "max drawdown", "fees", "turnover", "win rate"):
        assert label in out
    assert not re.search(r"\d\.\d{5,}", out.split("regimes (out of sample")[0])  # no raw floats
    bh = short_run["stats"]["comparison"]["buy_and_hold"]["total_return_pct"]
    assert f"{bh:+.2f}%" in out
    assert "data:   2023-12-31 23:15" in out and "switches per 1,000 bars" in out


def test_performance_uses_nautilus_max_drawdown_of_the_marked_curve() -> None:
    ts = (1_704_067_200 + 900 * np.arange(6)) * 10**9
    pnl = np.array([0.0, 100.0, -50.0, 20.0, 130.0, 90.0])
    m = performance(
        ts, pnl, np.ones(6), 1_000.0, fees=3.0, traded_notional=2_000.0, trades=2, wins=1
    )
    equity = 1_000.0 + pnl
    peak = np.maximum.accumulate(equity)
    assert m["max_drawdown_pct"] == pytest.approx(((peak - equity) / peak).max() * 100)
    assert m["max_drawdown_days"] == pytest.approx(2 * 900 / 86_400)  # 1,100 regained at bar 4
    assert m["total_return_pct"] == pytest.approx(9.0) and m["win_rate_pct"] == 50.0
    assert m["time_in_market_pct"] == 100.0 and m["ruined_at"] is None


def test_a_retirement_is_said_on_screen(tmp_path: Path) -> None:
    """events.csv as the DecisionRecorder writes it -> the console names the date and rule."""
    path = tmp_path / "events.csv"
    path.write_text(
        "ts_event,kind,strategy_id,detail\n"
        "1711115100000000000,GovernanceCommand,S-1,action=pause scale=0.0 flatten=True "
        "reason=rule 'max_drawdown' fired (pause): drawdown=0.08 > 0.08\n"
        "1711200000000000000,BreakerRejection,S-1,instrument_id=X reason=drawdown\n"
        "1711200900000000000,BreakerRejection,S-1,instrument_id=X reason=drawdown\n"
        "1714092300000000000,GovernanceCommand,S-1,action=pause scale=0.0 flatten=True "
        "reason=retired: rule 'catastrophic_loss' fired (retire): max_drawdown=0.25 > 0.25\n"
    )
    events = read_events(path)
    assert [e["action"] for e in events] == ["pause", "blocked", "retire"]
    assert events[1]["count"] == 2
    ts = np.array([1_704_067_200, 1_714_000_000, 1_735_000_000]) * 10**9
    period = traded_period(ts, {"position": np.array([1.0, 1.0, 0.0])}, events)
    assert period["stopped_by"] == "retire" and period["stopped_at"] == 1714092300000000000
    text = "\n".join(period_lines(period, events))
    assert "RETIRED the strategy on 2024-04-26 00:45 UTC" in text
    assert "catastrophic_loss" in text and "blocked 2 orders" in text
