"""The policy head's guardrails, one by one, on hand-made probability sequences."""

from __future__ import annotations

import pytest

from hmm_strategy.policy import PolicyConfig, RegimePolicy, default_exposures

BEAR, CALM, BULL = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]
UNSURE = [0.4, 0.3, 0.3]


def run(policy: RegimePolicy, seq: list[list[float]]) -> list[float]:
    return [policy.update(p) for p in seq]


def test_default_exposures_bear_short_bull_long() -> None:
    assert default_exposures(3) == (-1.0, 0.0, 1.0)
    assert default_exposures(2) == (-1.0, 1.0)
    with pytest.raises(ValueError):
        default_exposures(1)


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


def test_invert_trades_the_wrong_way() -> None:
    policy = RegimePolicy(PolicyConfig(min_hold_bars=0, invert=True), 3)
    assert run(policy, [BULL]) == [-1.0]


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
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PolicyConfig(**kwargs)


def test_exposures_must_match_state_count() -> None:
    with pytest.raises(ValueError, match="3 states"):
        RegimePolicy(PolicyConfig(state_exposures=(-1.0, 1.0)), 3)
