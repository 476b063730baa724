"""The per-bar regime pipeline: streaming features -> forward filter -> policy.

``RegimeEngine`` is what the strategy runs on every closed bar, kept free of NautilusTrader types so
the same object is used by the strategy, the benchmarks and the tests. It either starts from a saved
model or fits one in-run on the first ``warmup_bars`` feature rows; in both cases each decision at
bar t uses only bars closed at or before t.
"""

from __future__ import annotations

from collections import deque

import msgspec
import numpy as np

from hmm_strategy.features import FeatureSpec, StreamingFeatures
from hmm_strategy.filter import ForwardFilter
from hmm_strategy.model import RegimeHMM
from hmm_strategy.policy import PolicyConfig, RegimePolicy, argmax


class FitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to fit a model in-run when the strategy starts without an artifact."""

    warmup_bars: int = 1_500
    n_states: int = 3
    select_states_by_bic: bool = False
    n_restarts: int = 3
    n_iter: int = 100
    seed: int = 0
    history_bars: int = 500  # recent feature rows kept to bring a swapped-in model up to date

    def __post_init__(self) -> None:
        if self.warmup_bars < 100:
            raise ValueError(f"warmup_bars must be >= 100, was {self.warmup_bars}")
        if self.n_states < 2:
            raise ValueError(f"n_states must be >= 2, was {self.n_states}")
        if self.n_restarts < 1:
            raise ValueError(f"n_restarts must be >= 1, was {self.n_restarts}")


class SlowLevel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The slow level of the hierarchical model (strategy config ``slow``; absent = one level).

    Every ``bars_per_bar`` traded bars are aggregated into one coarse bar (open of the first,
    max high, min low, close of the last, summed volume); the coarse bar enters the slow level
    only once its last traded bar has closed. The slow level runs the same features and the same
    forward filter as the fast one, on coarse bars. Aggregation counts bars from the first bar
    the engine sees (a data gap shifts the boundaries; no calendar alignment).
    """

    bars_per_bar: int = 16  # e.g. 15-minute bars -> 4-hour bars
    features: FeatureSpec = msgspec.field(
        default_factory=lambda: FeatureSpec(vol_window=12, volume_window=24)
    )
    n_states: int = 2
    covariance_type: str = "diag"
    sticky: float = 0.0  # transmat prior pseudo-counts per row on the diagonal (0 = none)
    warmup_bars: int = 250  # coarse bars fitted on in-run (250 x 16 x 15m = ~42 days)

    def __post_init__(self) -> None:
        if isinstance(self.bars_per_bar, bool) or self.bars_per_bar < 2:
            raise ValueError(f"slow.bars_per_bar must be >= 2, was {self.bars_per_bar}")
        if self.n_states < 2:
            raise ValueError(f"slow.n_states must be >= 2, was {self.n_states}")
        if self.sticky < 0:
            raise ValueError(f"slow.sticky must be >= 0, was {self.sticky}")
        if self.warmup_bars < 50:
            raise ValueError(f"slow.warmup_bars must be >= 50, was {self.warmup_bars}")


class Decision(msgspec.Struct, frozen=True):
    """What the engine concluded at one bar close."""

    probs: tuple[float, ...]
    state: int
    target_exposure: float
    log_likelihood: float


class RegimeEngine:
    """Streaming features + causal forward filter + guardrailed policy, O(K^2) per bar."""

    def __init__(
        self,
        features: FeatureSpec,
        policy: PolicyConfig,
        fit: FitSettings,
        model: RegimeHMM | None = None,
        model_version: str = "",
    ) -> None:
        self.feature_spec = features
        self.policy_config = policy
        self.fit_settings = fit
        self.features = StreamingFeatures(features)
        self.model: RegimeHMM | None = None
        self.filter: ForwardFilter | None = None
        self.policy: RegimePolicy | None = None
        self.model_version = ""
        self.bars_seen = 0
        self.rejected_bars = 0
        self._warmup_rows: list[np.ndarray] = []
        self._recent: deque[np.ndarray] = deque(maxlen=fit.history_bars)
        if model is not None:
            self.set_model(model, model_version)

    @property
    def ready(self) -> bool:
        return self.filter is not None

    def set_model(self, model: RegimeHMM, version: str) -> None:
        """Install a fitted model: a new filter run over the recent feature rows (all in the past).

        The policy keeps its memory (current target, holding, cooldown) across a swap when the
        number of states is unchanged, so a promotion does not by itself cause a trade.
        """
        if model.n_features_ != len(self.feature_spec.names):
            raise ValueError(
                f"model has {model.n_features_} features, the strategy computes "
                f"{len(self.feature_spec.names)} ({', '.join(self.feature_spec.names)})"
            )
        new_filter = ForwardFilter.from_model(model)
        for row in self._recent:
            new_filter.update(row)
        self.model = model
        self.model_version = version
        self.filter = new_filter
        if self.policy is None or len(self.policy.exposures) != model.n_states_:
            self.policy = RegimePolicy(self.policy_config, model.n_states_)

    def update(
        self, open_: float, high: float, low: float, close: float, volume: float
    ) -> Decision | None:
        """Consume one closed bar; return a decision once a model and features are ready.

        A bar the features cannot use (non-positive or non-finite prices, high < low, an overflowing
        range) raises ``ValueError`` and leaves the engine unchanged. A finite feature row so
        extreme that no state can produce it also raises, after the feature windows took the bar.
        """
        x = self.features.update(open_, high, low, close, volume)
        self.bars_seen += 1
        if x is None:
            return None
        if self.filter is None:
            self._warmup_rows.append(np.array(x, dtype=np.float64))
            if len(self._warmup_rows) < self.fit_settings.warmup_bars:
                return None
            self._fit_on_warmup()
            return None
        # Hot path (every bar): tuples of Python floats and one pure-Python argmax; numpy calls
        # on 3-4 numbers cost ~1 us each (np.array, np.argmax twice, a float() per element).
        probs = self.filter.update_tuple(x)
        self._recent.append(x)
        state = argmax(probs)
        target = self.policy.update(probs, state)
        return Decision(
            probs=probs,
            state=state,
            target_exposure=target,
            log_likelihood=float(self.filter.last_log_likelihood),
        )

    def _fit_on_warmup(self) -> None:
        """Fit on the warm-up rows only (all closed in the past), then run the filter over them."""
        s = self.fit_settings
        X = np.vstack(self._warmup_rows)
        self._warmup_rows = []
        model = RegimeHMM(
            n_states="bic" if s.select_states_by_bic else s.n_states,
            n_restarts=s.n_restarts,
            n_iter=s.n_iter,
            random_state=s.seed,
        ).fit(X)
        self._recent.extend(X)  # the deque keeps the last ``history_bars`` rows
        self.set_model(model, f"inrun-{self.bars_seen}")

    # ------------------------------------------------------------------ checkpointing

    def state(self) -> dict:
        """Plain JSON data: with the model (saved separately) it resumes bit-identically."""
        return {
            "format": 1,
            "bars_seen": self.bars_seen,
            "rejected_bars": self.rejected_bars,
            "model_version": self.model_version,
            "features": self.features.state(),
            "filter": None if self.filter is None else self.filter.state(),
            "policy": None if self.policy is None else self.policy.state(),
            "warmup_rows": [list(map(float, r)) for r in self._warmup_rows],
            "recent": [list(map(float, r)) for r in self._recent],
        }

    def restore(self, state: dict, model: RegimeHMM | None) -> None:
        """Resume from :meth:`state`; ``model`` is the one that was active (None in warm-up)."""
        if state.get("format") != 1:
            raise ValueError(f"engine state format {state.get('format')!r} is not 1")
        if (state["filter"] is None) != (model is None):
            raise ValueError("engine state and model disagree on whether a model was active")
        self.features = StreamingFeatures.from_state(self.feature_spec, state["features"])
        self._warmup_rows = [np.array(r, dtype=np.float64) for r in state["warmup_rows"]]
        self._recent.clear()
        self._recent.extend(np.array(r, dtype=np.float64) for r in state["recent"])
        if model is not None:
            self.model = model
            self.model_version = state["model_version"]
            self.filter = ForwardFilter.from_state(model, state["filter"])
            self.policy = RegimePolicy(self.policy_config, model.n_states_)
            self.policy.restore(state["policy"])
        self.bars_seen = int(state["bars_seen"])
        self.rejected_bars = int(state["rejected_bars"])
