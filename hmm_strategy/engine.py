"""The per-bar regime pipeline: streaming features -> forward filter -> policy.

``RegimeEngine`` is what the strategy runs on every closed bar, kept free of NautilusTrader types so
the same object is used by the strategy, the benchmarks and the tests. It either starts from a saved
model or fits one in-run on the first ``warmup_bars`` feature rows; in both cases each decision at
bar t uses only bars closed at or before t.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable

import msgspec
import numpy as np

from hmm_strategy.features import (
    FEATURE_NAMES,
    BarAggregator,
    FeatureSpec,
    StreamingFeatures,
    order_columns,
)
from hmm_strategy.filter import ForwardFilter
from hmm_strategy.messages import MAX_STATES
from hmm_strategy.model import BIC_STATES_GRID, RegimeHMM, min_fit_rows
from hmm_strategy.policy import PolicyConfig, RegimePolicy, argmax, argmax_function


class FitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to fit a model in-run when the strategy starts without an artifact."""

    warmup_bars: int = 1_500
    n_states: int = 3
    select_states_by_bic: bool = False
    n_restarts: int = 3
    n_iter: int = 100
    seed: int = 0
    history_bars: int = 500  # recent feature rows kept to bring a swapped-in model up to date
    sticky: float = 0.0  # persistence prior: extra self-transition pseudo-counts (0 = none)

    def __post_init__(self) -> None:
        if self.warmup_bars < 1:
            raise ValueError(f"warmup_bars must be >= 1, was {self.warmup_bars}")
        if not 2 <= self.n_states <= MAX_STATES:  # the decision file and metrics carry p0..p7
            raise ValueError(f"n_states must be 2..{MAX_STATES}, was {self.n_states}")
        if self.n_restarts < 1:
            raise ValueError(f"n_restarts must be >= 1, was {self.n_restarts}")
        if not 0.0 <= self.sticky < math.inf:
            raise ValueError(f"sticky must be >= 0, was {self.sticky}")

    def model(self, n_states: int | None = None) -> RegimeHMM:
        """An unfitted model with these settings: the one place fit settings become a
        ``RegimeHMM`` (in-run fit, offline training, online refits); ``n_states`` overrides."""
        return RegimeHMM(
            n_states=n_states or ("bic" if self.select_states_by_bic else self.n_states),
            n_restarts=self.n_restarts,
            n_iter=self.n_iter,
            random_state=self.seed,
            sticky=self.sticky,
            order_by=order_columns(FEATURE_NAMES),  # the registry's trend, then volatility
        )

    def min_warmup_bars(self, n_features: int) -> int:
        """The fewest warm-up rows the in-run fit accepts (``RegimeHMM.fit``'s own minimum)."""
        grid = BIC_STATES_GRID if self.select_states_by_bic else self.n_states
        return min_fit_rows(grid, n_features)


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
        need = min_fit_rows(self.n_states, len(self.features.names), self.covariance_type)
        if self.warmup_bars < need:
            raise ValueError(
                f"slow.warmup_bars must be >= {need} to fit {self.n_states} states "
                f"({self.covariance_type} covariances), was {self.warmup_bars}"
            )

    def model(self, fit: FitSettings) -> RegimeHMM:
        """An unfitted slow-level model (restarts, iterations and seed from ``fit``)."""
        return RegimeHMM(
            n_states=self.n_states,
            covariance_type=self.covariance_type,
            n_restarts=fit.n_restarts,
            n_iter=fit.n_iter,
            random_state=fit.seed,
            sticky=self.sticky,
            order_by=order_columns(self.features.names),
        )


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What the engine concluded at one bar close (one per bar: ``gc=False``, numbers only, so
    the collector never tracks it)."""

    probs: tuple[float, ...]
    state: int
    target_exposure: float
    log_likelihood: float
    slow_state: int | None = None  # the last closed coarse bar's regime (hierarchical only)


class _SlowRuntime:
    """The slow level's streaming parts: aggregator -> features -> filter (same code as fast)."""

    def __init__(self, level: SlowLevel, history: int) -> None:
        self.level = level
        self.aggregator = BarAggregator(level.bars_per_bar)
        self.features = StreamingFeatures(level.features)
        self.model: RegimeHMM | None = None
        self.filter: ForwardFilter | None = None
        self.warmup_rows: list[tuple[float, ...]] = []
        self.recent: deque[np.ndarray | tuple[float, ...]] = deque(maxlen=history)
        self.state: int | None = None  # argmax of the last filtered probabilities

    def set_model(self, model: RegimeHMM) -> None:
        if model.n_features_ != len(self.level.features.names):
            raise ValueError(
                f"slow model has {model.n_features_} features, the slow level computes "
                f"{len(self.level.features.names)}"
            )
        new_filter = ForwardFilter.from_model(model)
        probs = None
        for row in self.recent:
            probs = new_filter.update_tuple(row)
        self.model, self.filter = model, new_filter
        self.state = None if probs is None else argmax(probs)

    def update(self, bar: tuple[float, float, float, float, float], fit: FitSettings) -> None:
        """One closed traded bar; the slow regime moves only when a coarse bar closes."""
        coarse = self.aggregator.update(*bar)
        if coarse is None:
            return
        x = self.features.update_tuple(*coarse)
        if x is None:
            return
        if self.filter is None:
            self.warmup_rows.append(x)
            if len(self.warmup_rows) >= self.level.warmup_bars:
                X = np.vstack(self.warmup_rows)
                self.warmup_rows = []
                self.recent.extend(X)
                self.set_model(self.level.model(fit).fit(X))
            return
        self.recent.append(x)
        self.state = argmax(self.filter.update_tuple(x))

    def snapshot(self) -> dict:
        return {
            "aggregator": self.aggregator.state(),
            "features": self.features.state(),
            "filter": None if self.filter is None else self.filter.state(),
            "warmup_rows": [list(map(float, r)) for r in self.warmup_rows],
            "recent": [list(map(float, r)) for r in self.recent],
            "state": self.state,
        }

    def restore(self, snap: dict, model: RegimeHMM | None) -> None:
        if (snap["filter"] is None) != (model is None):
            raise ValueError("engine state and slow model disagree on whether one was active")
        self.aggregator = BarAggregator.from_state(snap["aggregator"])
        self.features = StreamingFeatures.from_state(self.level.features, snap["features"])
        self.warmup_rows = [np.array(r, dtype=np.float64) for r in snap["warmup_rows"]]
        self.recent.clear()
        self.recent.extend(np.array(r, dtype=np.float64) for r in snap["recent"])
        self.model = model
        self.filter = None if model is None else ForwardFilter.from_state(model, snap["filter"])
        self.state = snap["state"]


def inrun_version(ts_event: int, bars_seen: int) -> str:
    """The version of a model fitted in the run: the time (UTC) of the last bar it was fitted on
    and the usable bars seen up to it, e.g. ``inrun-20240301T121500Z-5809`` -- which data, so a
    backtest, a paper run and a live run fitted on the same bars carry the same version. The time
    is rounded to the nearest second: Binance stamps a kline with its close time (``...59.999``)
    where a backtest's bar closes on the boundary; the bar count tells bars of one second apart.
    ``inrun-5809`` when the caller gave no bar time."""
    if ts_event <= 0:
        return f"inrun-{bars_seen}"
    secs = (ts_event + 500_000_000) // 1_000_000_000
    return f"inrun-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(secs))}Z-{bars_seen}"


class RegimeEngine:
    """Streaming features + causal forward filter + guardrailed policy, O(K^2) per bar.

    With ``slow`` (a :class:`SlowLevel`) it is the hierarchical model: the traded bars are also
    aggregated into coarse bars that drive a second, slow regime level through the same feature
    and filter code; the policy combines both. No decision is made until both levels are ready.
    """

    def __init__(
        self,
        features: FeatureSpec,
        policy: PolicyConfig,
        fit: FitSettings,
        model: RegimeHMM | None = None,
        model_version: str = "",
        *,
        slow: SlowLevel | None = None,
        slow_model: RegimeHMM | None = None,
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
        # feature rows: tuples from the stream, arrays from a fit, a restore or ``follow``
        self._recent: deque[np.ndarray | tuple[float, ...]] = deque(maxlen=fit.history_bars)
        self._next_var: tuple[float, ...] | None = None  # vol_target: E[r^2_t+1 | state_t]
        self._argmax = argmax  # unrolled for the model's number of states once one is set
        self.slow = None if slow is None else _SlowRuntime(slow, fit.history_bars)
        if slow_model is not None:
            if self.slow is None:
                raise ValueError("a slow model was given but the engine has no slow level")
            self.slow.set_model(slow_model)
        if model is not None:
            self.set_model(model, model_version)

    @property
    def ready(self) -> bool:
        return self.filter is not None and (self.slow is None or self.slow.filter is not None)

    @property
    def slow_model(self) -> RegimeHMM | None:
        return None if self.slow is None else self.slow.model

    def set_model(
        self,
        model: RegimeHMM,
        version: str,
        slow_model: RegimeHMM | None = None,
        *,
        replay_policy: bool = False,
    ) -> None:
        """Install a fitted model: a new filter run over the recent feature rows (all in the past).

        ``slow_model`` replaces the slow level's model too (hierarchical engines; without it the
        slow level keeps its model). The policy keeps its memory (current target, holding,
        cooldown) across a swap when the numbers of states are unchanged, so a promotion does not
        by itself cause a trade. ``replay_policy`` also runs the policy over those rows, so its
        memory is what this model would have built (a shadow evaluated from its first bar).
        """
        if model.n_features_ != len(self.feature_spec.names):
            raise ValueError(
                f"model has {model.n_features_} features, the strategy computes "
                f"{len(self.feature_spec.names)} ({', '.join(self.feature_spec.names)})"
            )
        if slow_model is not None and self.slow is None:
            raise ValueError("a slow model was given but the engine has no slow level")
        if replay_policy and self.slow is not None:
            raise ValueError("replay_policy is for single-level engines")
        new_filter = ForwardFilter.from_model(model)
        replayed = [new_filter.update_tuple(row) for row in self._recent]
        if slow_model is not None:
            self.slow.set_model(slow_model)
        self.model = model
        self.model_version = version
        self.filter = new_filter
        self._derive_from_model()
        self._ensure_policy()
        if replay_policy:
            for probs in replayed:
                self.policy.update(probs, argmax(probs), vol_forecast=self._vol_forecast(probs))

    def follow(self, features: StreamingFeatures, recent: Iterable[np.ndarray]) -> None:
        """Take over another stream's feature windows and recent rows (bars already seen), so a
        model installed next decides from the next bar on: the online trainer's shadow."""
        self.features = StreamingFeatures.from_state(self.feature_spec, features.state())
        self._recent.clear()
        self._recent.extend(recent)

    def _derive_from_model(self) -> None:
        """Per-model constants of the hot path (vol_target: E[r^2 at t+1 | state at t])."""
        self._argmax = argmax_function(self.model.n_states_)
        self._next_var = None
        if self.policy_config.mode == "vol_target":
            vol = self.model.feature_second_moment(self.feature_spec.column("volatility"))
            self._next_var = tuple((self.model.transmat_ @ vol).tolist())

    def _vol_forecast(self, probs: tuple[float, ...]) -> float | None:
        """vol_target: the next bar's expected return volatility given the state probabilities."""
        if self._next_var is None:
            return None
        return math.sqrt(sum(p * v for p, v in zip(probs, self._next_var, strict=True)))

    def _ensure_policy(self) -> None:
        k = self.model.n_states_
        k_slow = 0 if self.slow_model is None else self.slow_model.n_states_
        policy = self.policy
        if policy is None or len(policy.exposures) != k or len(policy.slow_exposures) != k_slow:
            self.policy = RegimePolicy(self.policy_config, k, k_slow)

    def update(
        self,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        ts_event: int = 0,
    ) -> Decision | None:
        """Consume one closed bar; return a decision once a model and features are ready.

        ``ts_event`` (UNIX ns, the bar's time) is read only by the in-run fit, to name its model
        after the last bar it was fitted on (:func:`inrun_version`); 0 when unknown.

        A bar the features cannot use (non-positive or non-finite prices, high < low, an overflowing
        range) raises ``ValueError`` and leaves the engine unchanged. A finite feature row so
        extreme that no state can produce it also raises, after the feature windows took the bar.
        """
        x = self.features.update_tuple(open_, high, low, close, volume)
        self.bars_seen += 1
        slow = self.slow
        if slow is not None:  # the bar passed validation above; a coarse bar may close now
            slow.update((open_, high, low, close, volume), self.fit_settings)
            if slow.model is not None and self.model is not None:
                self._ensure_policy()
        if x is None:
            return None
        filt = self.filter
        if filt is None:
            self._warmup_rows.append(np.array(x, dtype=np.float64))
            if len(self._warmup_rows) < self.fit_settings.warmup_bars:
                return None
            self._fit_on_warmup(ts_event)
            return None
        # Hot path (every bar): tuples of Python floats from the features to the policy, an
        # argmax unrolled for the model's states and the policy called positionally; numpy
        # calls on 3-4 numbers cost ~1 us each (np.array, np.argmax, a float() per element), so
        # none is made here.
        probs = filt.update_tuple(x)
        self._recent.append(x)
        slow_state = None
        if slow is not None:
            slow_state = slow.state
            if slow_state is None:  # slow level still warming up: no decision (flat)
                return None
        state = self._argmax(probs)
        vol = None if self._next_var is None else self._vol_forecast(probs)
        target = self.policy.advance(probs, state, slow_state, vol)
        # positional: the order of Decision's fields (probs, state, target, log-likelihood, slow)
        return Decision(probs, state, target, filt.last_log_likelihood, slow_state)

    def _fit_on_warmup(self, ts_event: int) -> None:
        """Fit on the warm-up rows only (all closed in the past), then run the filter over them."""
        X = np.vstack(self._warmup_rows)
        self._warmup_rows = []
        model = self.fit_settings.model().fit(X)
        self._recent.extend(X)  # the deque keeps the last ``history_bars`` rows
        self.set_model(model, inrun_version(ts_event, self.bars_seen))

    # ------------------------------------------------------------------ checkpointing

    def state(self) -> dict:
        """Plain JSON data: with the model(s) (saved separately) it resumes bit-identically."""
        out = {
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
        if self.slow is not None:
            out["slow"] = self.slow.snapshot()
        return out

    def restore(
        self, state: dict, model: RegimeHMM | None, slow_model: RegimeHMM | None = None
    ) -> None:
        """Resume from :meth:`state`; ``model``/``slow_model`` are those that were active."""
        if state.get("format") != 1:
            raise ValueError(f"engine state format {state.get('format')!r} is not 1")
        if (state["filter"] is None) != (model is None):
            raise ValueError("engine state and model disagree on whether a model was active")
        if ("slow" in state) != (self.slow is not None):
            raise ValueError("engine state and config disagree on whether there is a slow level")
        self.features = StreamingFeatures.from_state(self.feature_spec, state["features"])
        self._warmup_rows = [np.array(r, dtype=np.float64) for r in state["warmup_rows"]]
        self._recent.clear()
        self._recent.extend(np.array(r, dtype=np.float64) for r in state["recent"])
        if self.slow is not None:
            self.slow.restore(state["slow"], slow_model)
        if model is not None:
            self.model = model
            self.model_version = state["model_version"]
            self.filter = ForwardFilter.from_state(model, state["filter"])
            self._derive_from_model()
            self.policy = None
            self._ensure_policy()
            self.policy.restore(state["policy"])
        self.bars_seen = int(state["bars_seen"])
        self.rejected_bars = int(state["rejected_bars"])
