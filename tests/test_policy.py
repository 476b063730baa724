"""The policy head's guardrails, one by one, on hand-made probability sequences."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm_strategy.policy import (
    PolicyConfig,
    RegimePolicy,
    argmax,
    argmax_function,
    default_exposures,
)

BEAR, CALM, BULL = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]
UNSURE = [0.4, 0.3, 0.3]


def run(policy: RegimePolicy, seq: list[list[float]]) -> list[float]:
    return [policy.update(p) for p in seq]


def test_default_exposures_bear_short_bull_long() -> None:
    assert default_exposures(3) == (-1.0, 0.0, 1.0)
    assert default_exposures(2) == (-1.0, 1.0)
    with pytest.raises(ValueError):
        default_exposures(1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 0.1, 0.25, 0.5, 1.0, 1e-300]), min_size=1, max_size=6))
def test_unrolled_argmax_is_argmax_ties_included(values: list[float]) -> None:
    # few distinct values: ties (and 0.0 against -0.0) come up in most examples
    probs = tuple(values)
    expected = int(np.argmax(probs))
    assert argmax(probs) == expected
    assert argmax_function(len(probs))(probs) == expected


def test_unrolled_argmax_refuses_a_bad_size() -> None:
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="n_states"):
            argmax_function(bad)


def test_flat_at_start_and_follows_confident_regime() -> None:
    policy = RegimePolicy(PolicyConfig(min_hold_bars=0, cooldown_bars=0), 3)
    assert policy.target == 0.0
    assert run(policy, [BULL, BULL, CALM]) == [1.0, 1.0, 0.0]


def test_min_confidence_holds_current_target() -> None:
    policy = RegimePolicy(PolicyConfig(min_confidence=0.6, min_hold_bars=0), 3)
    assert run(policy, [BULL, UNSURE, UNSURE]) == [1.0, 1.0, 1.0]
    fresh = RegimePolicy(PolicyConfig(min_confidence=0.6), 3)
    assert run(fresh, [UNSURE] * 3) == [0.0] * 3


def test_min_hold_bars_is_hysteresis() -> None:
    policy = RegimePolicy(PolicyConfig(min_hold_bars=3, cooldown_bars=0), 3)
    # first change needs 3 bars held (from start), then the target sticks 3 bars
    assert run(policy, [BULL, BULL, BULL, CALM, CALM, CALM]) == [0, 0, 1, 1, 1, 0]


def test_flip_goes_flat_then_cools_down() -> None:
    policy = RegimePolicy(PolicyConfig(min_hold_bars=0, cooldown_bars=2), 3)
    out = run(policy, [BULL, BEAR, BEAR, BEAR, BEAR])
    assert out == [1.0, 0.0, 0.0, -1.0, -1.0]


def test_long_only_never_short() -> None:
    policy = RegimePolicy(PolicyConfig(min_hold_bars=0, cooldown_bars=0, long_only=True), 3)
    assert min(run(policy, [BEAR, BULL, BEAR, BEAR])) == 0.0


def test_long_flat_is_a_risk_filter() -> None:
    policy = RegimePolicy(PolicyConfig(mode="long_flat", min_hold_bars=0, cooldown_bars=0), 3)
    assert policy.exposures == (0.0, 1.0, 1.0)
    assert run(policy, [CALM, BULL, BEAR, CALM, BEAR]) == [1.0, 1.0, 0.0, 1.0, 0.0]
    custom = PolicyConfig(mode="long_flat", min_hold_bars=0, state_exposures=(-1.0, 0.5, 1.0))
    assert min(run(RegimePolicy(custom, 3), [BEAR, CALM, BEAR])) == 0.0  # never short


def test_vol_target_sizes_by_the_forecast_and_the_band_holds_small_changes() -> None:
    cfg = PolicyConfig(mode="vol_target", target_vol=0.01, min_hold_bars=0, cooldown_bars=0)
    policy = RegimePolicy(cfg, 3)
    vols = [0.02, 0.04, 0.005, 0.0201]
    out = [policy.update(BULL, vol_forecast=v) for v in vols]
    assert out == [0.5, 0.25, 1.0, 0.01 / 0.0201]  # capped at full exposure when calm
    assert policy.update(BEAR, vol_forecast=0.02) == 0.0  # flip: flat first
    with pytest.raises(ValueError, match="vol_forecast"):
        policy.update(BULL)

    banded = RegimePolicy(msgspec.structs.replace(cfg, no_trade_band=0.1), 3)
    out = [banded.update(BULL, vol_forecast=v) for v in (0.02, 0.021, 0.018, 0.015, 0.016)]
    assert out == [0.5, 0.5, 0.5, 0.01 / 0.015, 0.01 / 0.015]  # moves only by >= 0.1
    assert banded.update(CALM, vol_forecast=0.02) == 0.0  # going flat is never held back
    tiny = RegimePolicy(msgspec.structs.replace(cfg, no_trade_band=0.3), 3)
    assert tiny.update(BULL, vol_forecast=0.1) == 0.0  # 0.1 from flat: below the band


def test_min_regime_bars_waits_for_a_persistent_regime() -> None:
    cfg = PolicyConfig(min_hold_bars=0, cooldown_bars=0, min_regime_bars=3)
    policy = RegimePolicy(cfg, 3)
    assert run(policy, [BULL, BULL, CALM, BULL, BULL, BULL, BEAR]) == [0, 0, 0, 0, 0, 1, 1]


def test_slow_regime_sets_direction_and_budget() -> None:
    cfg = PolicyConfig(min_hold_bars=0, cooldown_bars=0, slow_exposures=(-0.5, 1.0))
    policy = RegimePolicy(cfg, 3, n_slow_states=2)
    up = [policy.update(p, slow_state=1) for p in (BULL, BEAR, BEAR)]
    assert up == [1.0, 0.0, 0.0]  # slow bull: longs allowed, shorts are not
    down = [policy.update(p, slow_state=0) for p in (BEAR, BULL, BEAR)]
    assert down == [-0.5, 0.0, -0.5]  # slow bear: half-size shorts only
    # the slow regime turning closes a position even while the fast regime is unsure
    assert policy.update(UNSURE, slow_state=1) == 0.0
    with pytest.raises(ValueError, match="slow_exposures has 2"):
        RegimePolicy(cfg, 3, n_slow_states=3)


def test_default_config_has_no_test_hooks() -> None:
    assert "invert" not in msgspec.structs.asdict(PolicyConfig())


def test_checkpoint_restores_exactly() -> None:
    cfg = PolicyConfig(min_hold_bars=2, cooldown_bars=3)
    seq = [BULL, BULL, BULL, BEAR, BEAR, CALM, BEAR, BEAR, BEAR, BEAR, BULL]
    whole = run(RegimePolicy(cfg, 3), seq)
    first = RegimePolicy(cfg, 3)
    run(first, seq[:5])
    resumed = RegimePolicy(cfg, 3)
    resumed.restore(first.state())
    assert run(first, seq[5:]) == run(resumed, seq[5:]) == whole[5:]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"min_hold_bars": -1}, "min_hold_bars"),
        ({"cooldown_bars": -2}, "cooldown_bars"),
        ({"state_exposures": (0.0, 2.0, 1.0)}, "state_exposures"),
        ({"mode": "martingale"}, "mode"),
        ({"mode": "vol_target"}, "target_vol"),
        ({"no_trade_band": -0.1}, "no_trade_band"),
        ({"min_regime_bars": 0}, "min_regime_bars"),
        ({"slow_exposures": (-2.0, 1.0)}, "slow_exposures"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PolicyConfig(**kwargs)


def test_exposures_must_match_state_count() -> None:
    with pytest.raises(ValueError, match="3 states"):
        RegimePolicy(PolicyConfig(state_exposures=(-1.0, 1.0)), 3)


# ------------------------------------------------------------------- order sizes (strategy)
SIZES = st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(
    exposure=st.floats(-1.0, 1.0),
    notional=st.floats(1.0, 1e6),
    price=st.floats(1e-3, 1e5),
    current_units=st.integers(-(10**7), 10**7),
    step=st.sampled_from(["1", "0.1", "0.001", "0.000001", "1000"]),
    min_units=st.integers(0, 5_000),
    band=st.floats(0.0, 0.5),
)
def test_no_order_below_min_quantity_is_ever_sent(
    exposure, notional, price, current_units, step, min_units, band
) -> None:
    """Whatever the sizes, an order is a whole number of increments >= min_quantity, and the
    position it leads to is flat or >= min_quantity."""
    from decimal import Decimal

    from nautilus_trader.model.objects import Quantity

    from hmm_strategy.strategy import order_quantity, target_quantity

    increment = Quantity.from_str(step)
    inc = increment.as_decimal()
    min_qty = min_units * inc
    current = current_units * inc
    target = target_quantity(exposure, notional, price, increment, min_qty)
    assert target == 0 or abs(target) >= min_qty
    band_qty = Decimal(repr(band * notional / price))
    delta = order_quantity(target, current, inc, min_qty, band_qty)
    if delta is None:
        return
    assert abs(delta) >= min_qty and abs(delta) >= inc and delta != 0
    assert abs(delta) % inc == 0
    assert current + delta == target
    assert target == 0 or abs(delta) >= band_qty
