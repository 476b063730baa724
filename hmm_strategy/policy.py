"""Policy head: filtered regime probabilities -> target exposure in [-1, 1], with guardrails.

The policy is a small deterministic state machine so that backtest and live make the same decision
from the same probabilities. Guardrails, in the order they apply each bar:

1. warm-up: flat until the strategy has a model and a complete feature vector (the strategy simply
   does not call the policy before that, so the initial target is 0);
2. minimum confidence: act only when the most likely regime has probability >= ``min_confidence``;
   otherwise keep the current target (no new information strong enough to act on);
3. minimum holding: a target is kept for at least ``min_hold_bars`` bars (hysteresis against
   flickering between regimes);
4. flip cooldown: a change of direction (long <-> short) first goes flat and stays flat for
   ``cooldown_bars`` bars before the opposite side is taken;
5. long-only: negative targets are clipped to 0.

Position notional limits are applied by the strategy when it sizes the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np


class PolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Guardrails; ``state_exposures`` maps canonical states (0 = most bearish) to targets."""

    min_confidence: float = 0.6
    min_hold_bars: int = 4
    cooldown_bars: int = 4
    long_only: bool = False
    state_exposures: tuple[float, ...] | None = None
    invert: bool = False  # deliberately wrong-way policy, used to test governance

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], was {self.min_confidence}")
        if self.min_hold_bars < 0:
            raise ValueError(f"min_hold_bars must be >= 0, was {self.min_hold_bars}")
        if self.cooldown_bars < 0:
            raise ValueError(f"cooldown_bars must be >= 0, was {self.cooldown_bars}")
        if self.state_exposures is not None:
            bad = [e for e in self.state_exposures if not -1.0 <= e <= 1.0]
            if bad:
                raise ValueError(f"state_exposures must lie in [-1, 1], got {bad}")


def argmax(probs: Sequence[float]) -> int:
    """Index of the largest probability, the first one on ties (like ``np.argmax``).

    Pure Python: for 3-4 states it is ~10x cheaper than ``np.argmax`` on a tuple or small array.
    """
    best, state = probs[0], 0
    for i in range(1, len(probs)):
        if probs[i] > best:
            best, state = probs[i], i
    return state


def default_exposures(n_states: int) -> tuple[float, ...]:
    """Most bearish state short, most bullish long, everything in between flat."""
    if n_states < 2:
        raise ValueError(f"need at least 2 states, got {n_states}")
    exposures = [0.0] * n_states
    exposures[0], exposures[-1] = -1.0, 1.0
    return tuple(exposures)


class RegimePolicy:
    """Stateful guardrailed mapping from regime probabilities to a target exposure."""

    def __init__(self, config: PolicyConfig, n_states: int) -> None:
        exposures = config.state_exposures or default_exposures(n_states)
        if len(exposures) != n_states:
            raise ValueError(
                f"state_exposures has {len(exposures)} entries but the model has {n_states} states"
            )
        sign = -1.0 if config.invert else 1.0
        self.config = config
        self.exposures = tuple(sign * e for e in exposures)
        self.target = 0.0
        self.bars_held = 0
        self.cooldown_left = 0

    def update(self, probs: np.ndarray | Sequence[float], state: int | None = None) -> float:
        """Advance one bar and return the target exposure for it.

        ``state`` is ``argmax(probs)`` when the caller already has it (the engine does).
        """
        cfg = self.config
        self.bars_held += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1

        if state is None:
            state = argmax(probs)
        if probs[state] < cfg.min_confidence:
            return self.target
        desired = self.exposures[state]
        if cfg.long_only:
            desired = max(desired, 0.0)
        if desired == self.target or self.bars_held < cfg.min_hold_bars:
            return self.target
        if self.target * desired < 0.0:  # direction flip: flat first, then cool down
            self._set(0.0)
            self.cooldown_left = cfg.cooldown_bars
            return self.target
        if desired != 0.0 and self.cooldown_left > 0:
            return self.target
        self._set(desired)
        return self.target

    def _set(self, target: float) -> None:
        self.target = target
        self.bars_held = 0

    def state(self) -> dict:
        """Plain-data checkpoint of the policy's memory."""
        return {
            "target": self.target,
            "bars_held": self.bars_held,
            "cooldown_left": self.cooldown_left,
        }

    def restore(self, state: dict) -> None:
        self.target = float(state["target"])
        self.bars_held = int(state["bars_held"])
        self.cooldown_left = int(state["cooldown_left"])
