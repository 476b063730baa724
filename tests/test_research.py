"""The research protocol's markets load as node configs and keep selection before held-out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from backtests.research import MARKETS, _start, candidates, market_settings, override
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
