"""Capital allocator: the documented rule (inverse volatility, Sharpe tilt, floors/caps, cash
buffer, damping), paused strategies funding the others, and clear config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.capital_allocator import (
    Candidate,
    CapitalAllocatorConfig,
    WeightLimits,
    bounded,
    plan_budgets,
    target_weights,
)
from hmm_strategy.config import DEFAULT_CONFIG, ConfigError, load_node_settings


def cfg(**kw) -> CapitalAllocatorConfig:
    base = {"cash_buffer": 0.0, "sharpe_tilt": 0.0, "max_change": 1.0, "dead_band": 0.0}
    return CapitalAllocatorConfig(**{**base, **kw})


def test_inverse_volatility_weights() -> None:
    w = target_weights([Candidate("A", True, 0.2), Candidate("B", True, 0.4)], cfg())
    assert w == pytest.approx({"A": 2 / 3, "B": 1 / 3})


def test_sharpe_tilt_is_bounded() -> None:
    c = cfg(sharpe_tilt=0.5, tilt_min=0.5, tilt_max=1.5)
    w = target_weights([Candidate("A", True, 0.3, 2.0), Candidate("B", True, 0.3, -10.0)], c)
    assert w["A"] / w["B"] == pytest.approx(1.5 / 0.5)  # 1 + 0.5 * 2 = 2 -> capped at 1.5


def test_unknown_volatility_takes_the_median_and_nobody_known_is_equal() -> None:
    w = target_weights(
        [Candidate("A", True, 0.2), Candidate("B", True, 0.4), Candidate("C", True, None)], cfg()
    )
    assert w["C"] == pytest.approx(w["A"] * 0.2 / 0.3)  # median(0.2, 0.4) = 0.3
    w = target_weights([Candidate("A", True), Candidate("B", True)], cfg())
    assert w == pytest.approx({"A": 0.5, "B": 0.5})


def test_vol_floor_stops_a_flat_strategy_taking_everything() -> None:
    w = target_weights([Candidate("A", True, 1e-9), Candidate("B", True, 0.1)], cfg(vol_floor=0.05))
    assert w["A"] == pytest.approx(2 / 3)


def test_paused_strategy_gets_nothing_and_its_capital_goes_to_the_others() -> None:
    live = [Candidate("A", True, 0.2), Candidate("B", True, 0.2), Candidate("C", True, 0.2)]
    before = plan_budgets(90_000, live, None, cfg(cash_buffer=0.1))
    assert before == pytest.approx({"A": 27_000, "B": 27_000, "C": 27_000})
    paused = [live[0], Candidate("B", False, 0.2), live[2]]
    after = plan_budgets(90_000, paused, before, cfg(cash_buffer=0.1))
    assert after == pytest.approx({"A": 40_500, "B": 0.0, "C": 40_500})


def test_caps_floors_and_cash_left_when_every_cap_binds() -> None:
    floor = cfg(limits={"A": WeightLimits(min_weight=0.3)})
    w = target_weights([Candidate("A", True, 10.0), Candidate("B", True, 0.1)], floor)
    assert w == pytest.approx({"A": 0.3, "B": 0.7})  # A's inverse-vol share is ~1%
    caps = cfg(max_weight=0.4, limits={"A": WeightLimits(max_weight=0.35)})
    w = target_weights([Candidate("A", True, 10.0), Candidate("B", True, 0.1)], caps)
    assert w == pytest.approx({"A": 0.35, "B": 0.4})  # 25% stays in cash
    w = bounded({"A": 0.9, "B": 0.05, "C": 0.05}, dict.fromkeys("ABC", 0.0),
                dict.fromkeys("ABC", 0.5))
    assert w == pytest.approx({"A": 0.5, "B": 0.25, "C": 0.25})


def test_increases_are_rate_limited_cuts_are_not_and_small_moves_are_not_sent() -> None:
    c = cfg(max_change=0.1)
    prev = {"A": 80_000.0, "B": 20_000.0}
    new = plan_budgets(100_000, [Candidate("A", True, 0.1), Candidate("B", True, 0.1)], prev, c)
    assert new == pytest.approx({"A": 50_000, "B": 30_000})  # cut at once, raise by 10%
    c = cfg(dead_band=0.05)
    prev = {"A": 50_000.0, "B": 50_000.0}
    new = plan_budgets(103_000, [Candidate("A", True, 0.1), Candidate("B", True, 0.1)], prev, c)
    assert new == {"A": 50_000.0, "B": 50_000.0}  # +3% each: inside the dead band


@settings(max_examples=200, deadline=None)
@given(
    equity=st.floats(0, 1e7),
    rows=st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.none(), st.floats(1e-6, 5.0)),
            st.one_of(st.none(), st.floats(-10, 10)),
            st.floats(0, 1e7),
        ),
        min_size=1,
        max_size=6,
    ),
    buffer=st.floats(0, 0.9),
    cap=st.floats(0.05, 1.0),
    max_change=st.floats(0.01, 1.0),
)
def test_budgets_never_exceed_the_investable_equity(equity, rows, buffer, cap, max_change) -> None:
    c = cfg(cash_buffer=buffer, max_weight=cap, max_change=max_change, sharpe_tilt=0.3)
    cands = [Candidate(f"S{i}", a, v, s) for i, (a, v, s, _) in enumerate(rows)]
    prev = {f"S{i}": p for i, (*_, p) in enumerate(rows)}
    investable = equity * (1 - buffer)
    new = plan_budgets(equity, cands, prev, c)
    tol = 1e-6 * (investable + 1)
    for cand in cands:
        value, old = new[cand.strategy_id], prev[cand.strategy_id]
        assert value >= 0
        if not cand.active:
            assert value == 0
        assert value <= max(old, cap * investable) + tol  # within its cap (or cut towards it)
        assert value - old <= max_change * investable + tol
    if sum(prev.values()) <= investable:
        assert sum(new.values()) <= investable + tol


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="cash_buffer: must be in"):
        CapitalAllocatorConfig(cash_buffer=1.5)
    with pytest.raises(ValueError, match=r"limits.B.min_weight: 0.6 exceeds max_weight 0.5"):
        CapitalAllocatorConfig(limits={"B": WeightLimits(min_weight=0.6, max_weight=0.5)})
    with pytest.raises(ValueError, match="vol_window: window '20m' holds fewer than 2"):
        CapitalAllocatorConfig(vol_window="20m")
    with pytest.raises(ValueError, match="rebalance_interval: invalid duration"):
        CapitalAllocatorConfig(rebalance_interval="daily")


def test_node_config_with_a_bad_allocator_fails_at_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    actor = {"path": "actors.capital_allocator:CapitalAllocator", "config": {"max_chnage": 0.1}}
    bad.write_text(yaml.safe_dump({"actors": [actor]}))
    with pytest.raises(ConfigError, match=r"actors\[0\]\.config.*max_chnage"):
        load_node_settings(DEFAULT_CONFIG, [bad])
    actor["config"] = {"max_change": 0.0}
    bad.write_text(yaml.safe_dump({"actors": [actor]}))
    with pytest.raises(ConfigError, match=r"actors\[0\]\.config.*max_change: must be in"):
        load_node_settings(DEFAULT_CONFIG, [bad])


def test_unknown_strategy_in_limits_is_an_error_at_start(tmp_path: Path, data_dir: Path) -> None:
    from backtests.run import run_backtest
    from tests.test_governance import node_settings

    settings = node_settings(
        tmp_path,
        allocator={"limits": {"HMMRegimeStrategy-NOPE": {"max_weight": 0.5}}},
        governance=None,
    )
    expected = r"allocator: strategy id\(s\) \['HMMRegimeStrategy-NOPE'\] are not in this node"
    with pytest.raises(ValueError, match=expected):
        run_backtest(settings, tmp_path / "run", start="2024-01-01", end="2024-01-02",
                     tearsheet=False)
