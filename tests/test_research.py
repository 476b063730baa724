"""The research protocol's markets load as node configs and keep selection before held-out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from backtests.research import (
    MARKETS,
    _start,
    candidates,
    deployed_turnover,
    goal_check,
    market_settings,
    override,
)
from backtests.sweep import combinations


@pytest.mark.parametrize("name", sorted(MARKETS))
def test_market_override_is_a_valid_node_config(name: str, tmp_path: Path) -> None:
    market = MARKETS[name]
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(override(market, tmp_path / "catalog")))
    settings = market_settings(path, market)
    (source,) = settings.backtest.data
    assert source.instrument_id == market.instrument_id
    assert source.fee_rate == market.fee_rate
    assert settings.strategies[0].config["breakers"]["calendar"] == market.calendar
    assert [v.name for v in settings.backtest.venues] == [market.venue]


@pytest.mark.parametrize("name", sorted(MARKETS))
def test_held_out_tests_start_after_the_selection(name: str) -> None:
    market = MARKETS[name]
    assert pd.Timestamp(market.selection[1]) < pd.Timestamp(market.held_out[0])
    # the held-out folds' first TEST window starts at held_out[0]; training before it is past data
    first_test = pd.Timestamp(_start(market.held_out[0], market.train)) + pd.Timedelta(market.train)
    assert first_test == pd.Timestamp(market.held_out[0])
    assert len(combinations(candidates(market))) == 16


def test_turnover_carries_the_position_across_folds() -> None:
    day = 86_400 * 10**9
    year = 365 * day
    folds = [  # buy 1 unit at 100 and hold through two folds: one entry, nothing at the seam
        {"fold": 0, "curve": {"ts": [0, day], "close": [100.0, 100.0], "x_position": [1.0, 0.0]}},
        {"fold": 1, "curve": {"ts": [year - 2 * day, year - day, year],
                              "close": [100.0, 100.0, 100.0], "x_position": [1.0, 0.0, 0.0]}},
    ]  # fmt: skip
    # fold 0's flattening on its last bar is dropped: bought 100 and sold 100 in one year
    assert deployed_turnover(folds, "x", 100.0)["continuous"] == pytest.approx(2.0)
    # fold 1 starts flat for a bar, then re-enters long (held to the end): bridged, one entry
    folds[1]["curve"]["x_position"] = [0.0, 1.0, 0.0]
    t = deployed_turnover(folds, "x", 100.0)
    assert t["continuous"] == pytest.approx(3.0) and t["bridged"] == pytest.approx(1.0)


def test_goal_check_states_each_criterion() -> None:
    comparison = {
        "strategy": {"sharpe": 0.9, "max_drawdown_pct": 1.2},
        "buy_and_hold": {"sharpe": 0.8, "max_drawdown_pct": 3.0},
    }
    goal = goal_check(comparison, {"measured": 3.2, "continuous": 1.1})
    assert goal["sharpe_at_least_buy_and_hold"] and goal["drawdown_at_most_0.6x"]
    assert goal["drawdown_ratio"] == pytest.approx(0.4)
    assert not goal["turnover_measured_under_3"] and goal["turnover_continuous_under_3"]
