"""Model lifecycle: candidate -> shadow -> promotion or rejection, rollback (no Nautilus types).

``ModelLifecycle`` is the decision logic the ``OnlineTrainer`` actor runs inside the node. It is
plain Python driven by four inputs -- closed bars, the champion's ``RegimeUpdate`` messages,
finished candidate fits and operator requests -- and returns what to do: ``FitJob`` (fit a
candidate on the bars so far) and ``ModelUpdate`` (the message that makes the strategy swap its
model). Tests drive it without a node; the actor only wires it to the bus and the clock.

The life of a candidate:

1. A fit is due every ``retrain_every_bars`` bars, or earlier on drift: the champion's mean
   one-step predictive log-likelihood over the last ``drift_window`` bars fell more than
   ``drift_threshold`` nats/bar below its training log-likelihood per row (below its mean over its
   first ``drift_window`` bars when its artifact is unknown). The fit uses the last
   ``history_bars`` bars, all closed at or before the current bar; a failed fit is retried after
   ``max(min_bars_between_fits, eval_bars)`` bars.
2. The candidate artifact is loaded back and validated (schema, checksum, features, instrument,
   bar type, states); a corrupt or incompatible one is rejected with the reason and the champion
   keeps trading.
3. Shadow: the candidate runs its own forward filter and policy over the same bars (warmed up on
   the last ``fit.history_bars`` feature rows, like ``RegimeEngine.set_model``), its decisions are
   recorded, it places no orders. Beside it, the champion's published targets are tracked over the
   same bars.
4. After ``eval_bars`` bars both are scored out of sample, on bars after the candidate's training
   data: ``pnl`` = sum of target_{t-1} x simple return_t - ``cost_per_change`` x |target change|
   per unit of capital, or ``log_likelihood`` = mean one-step predictive log-likelihood of the raw
   features (each model's standardised log-likelihood minus its scaler's log-Jacobian, so models
   with different scalers compare). Promote iff ``shadow - champion > margin`` and the shadow's
   drawdown of that PnL stays within ``max_drawdown``; otherwise reject.
5. Promotion publishes ``ModelUpdate``; the next ``confirm_bars`` champion updates must carry the
   new version, else ``promotion_failed`` is recorded (the strategy refused the artifact and kept
   its champion).

Label switching: ``RegimeHMM`` orders states canonically (0 = most bearish) after every fit, so
the policy's state -> exposure map means the same regime for every model. With ``match_states``
the candidate's states are instead permuted to the champion's nearest ones (by standardised
means) when both have the same number of states; the permutation is part of the evidence either
way.

Every step is appended to ``lifecycle.jsonl`` (one JSON object a line, flushed and fsynced) with
its evidence. Operators act through request files (``python -m actors.promote``): the
actor applies each on its next poll and moves it to ``applied/`` or ``rejected/``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from actors import operator_queue
from hmm_strategy.artifacts import Expected, ModelArtifactError, load_model
from hmm_strategy.engine import FitSettings, RegimeEngine
from hmm_strategy.features import FeatureSpec, StreamingFeatures
from hmm_strategy.messages import ModelUpdate, RegimeUpdate
from hmm_strategy.model import BIC_STATES_GRID, RegimeHMM
from hmm_strategy.policy import PolicyConfig

EVENTS = (
    "champion",  # the champion at start, or a version observed on the bus
    "fit_started",
    "fit_failed",
    "candidate",  # a fitted candidate artifact
    "shadow_started",
    "promoted",
    "rejected",
    "rolled_back",
    "promotion_failed",
    "request_rejected",
)
BAR_FIELDS = ("ts_event", "open", "high", "low", "close", "volume")


class LifecycleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When to refit, how long to shadow, and the promotion rule."""

    history_bars: int = 5_000  # bars kept (and fitted on)
    min_train_bars: int = 2_000  # no fit before this many bars
    retrain_every_bars: int | None = 2_000  # scheduled refit; None = only on drift
    drift_window: int | None = 500  # None = no drift trigger
    drift_threshold: float = 1.0  # nats/bar drop of the champion's mean log-likelihood
    min_bars_between_fits: int = 500  # drift refits are at least this far apart
    eval_bars: int = 500  # shadow evaluation period
    metric: Literal["pnl", "log_likelihood"] = "pnl"
    margin: float = 0.0  # shadow must beat the champion by more than this
    cost_per_change: float = 0.001  # per unit of exposure change (fees + slippage)
    max_drawdown: float = 0.10  # of the shadow's exposure PnL, fraction of capital
    match_states: bool = False
    confirm_bars: int = 3

    def __post_init__(self) -> None:
        checks = [
            (self.min_train_bars >= 100, "min_train_bars must be >= 100"),
            (self.history_bars >= self.min_train_bars, "history_bars must be >= min_train_bars"),
            (
                self.retrain_every_bars is None or self.retrain_every_bars >= 1,
                "retrain_every_bars must be >= 1 or null",
            ),
            (self.drift_window is None or self.drift_window >= 10, "drift_window must be >= 10"),
            (
                self.retrain_every_bars is not None or self.drift_window is not None,
                "set retrain_every_bars or drift_window, otherwise nothing ever refits",
            ),
            (self.eval_bars >= 1, "eval_bars must be >= 1"),
            (self.metric in ("pnl", "log_likelihood"), "metric must be 'pnl' or 'log_likelihood'"),
            (self.cost_per_change >= 0, "cost_per_change must be >= 0"),
            (0 < self.max_drawdown <= 1, "max_drawdown must be in (0, 1]"),
            (self.confirm_bars >= 1, "confirm_bars must be >= 1"),
            (self.min_bars_between_fits >= 0, "min_bars_between_fits must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"lifecycle: {message}")


def check_train_rows(settings: LifecycleSettings, features: FeatureSpec, fit: FitSettings) -> None:
    """Fail at configuration time if ``min_train_bars`` cannot fit the configured model."""
    rows = settings.min_train_bars - features.warmup_bars
    k = max(BIC_STATES_GRID) if fit.select_states_by_bic else fit.n_states
    need = fit.min_warmup_bars(len(features.names))  # the fit's own minimum (min_fit_rows)
    if rows < need:
        raise ValueError(
            f"lifecycle.min_train_bars={settings.min_train_bars} gives {rows} feature rows; "
            f"a {k}-state model needs at least {need} (+{features.warmup_bars} warm-up bars)"
        )


# ------------------------------------------------------------------------------ lifecycle log
class LifecycleEvent(msgspec.Struct, frozen=True):
    """One line of ``lifecycle.jsonl``."""

    seq: int
    ts_event: int  # node clock, UNIX ns (simulated time in a backtest)
    time_utc: str
    strategy_id: str
    event: str
    version: str | None = None
    path: str | None = None
    source: str = "policy"  # "policy" (automatic) or "operator"
    reason: str = ""
    evidence: dict[str, Any] = {}


def iso_utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_lifecycle(path: str | os.PathLike[str]) -> list[LifecycleEvent]:
    """All events of a lifecycle log; a torn last line (crash mid-write) is ignored."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_bytes().splitlines()
    events = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(msgspec.json.decode(line, type=LifecycleEvent))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if i == len(lines) - 1:
                break  # an interrupted append
            raise ValueError(f"lifecycle log {p}: line {i + 1} is invalid: {exc}") from None
    return events


class LifecycleLog:
    """Append-only JSONL of lifecycle events (each line flushed and fsynced)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = read_lifecycle(self.path)
        self._seq = existing[-1].seq if existing else 0
        self.paths: dict[str, str] = {e.version: e.path for e in existing if e.version and e.path}

    def append(self, ts_event: int, strategy_id: str, event: str, **fields: Any) -> LifecycleEvent:
        if event not in EVENTS:
            raise ValueError(f"unknown lifecycle event {event!r}")
        self._seq += 1
        entry = LifecycleEvent(
            seq=self._seq,
            ts_event=int(ts_event),
            time_utc=iso_utc(ts_event),
            strategy_id=strategy_id,
            event=event,
            **fields,
        )
        line = json.dumps(msgspec.to_builtins(entry), allow_nan=False, default=str)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if entry.version and entry.path:
            self.paths[entry.version] = entry.path
        return entry


# ---------------------------------------------------------------------------- operator requests
class LifecycleRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operator request, applied by the strategy's ``OnlineTrainer`` at its next poll."""

    id: str
    strategy_id: str
    action: Literal["promote", "reject", "rollback"]
    reason: str
    model_path: str | None = None  # promote/rollback: this artifact
    version: str | None = None  # rollback: this recorded version
    operator: str = ""
    created_utc: str = ""

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("a request needs a reason")
        if self.action == "rollback" and not (self.version or self.model_path):
            raise ValueError("rollback needs a version (--to) or a model path")


def new_request(strategy_id: str, action: str, reason: str, **fields: Any) -> LifecycleRequest:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return LifecycleRequest(
        id=uuid.uuid4().hex[:12],
        strategy_id=strategy_id,
        action=action,  # type: ignore[arg-type]
        reason=reason,
        created_utc=now,
        **fields,
    )


submit_request = operator_queue.submit
archive_request = operator_queue.archive


def pending_requests(
    directory: str | os.PathLike[str], strategy_id: str
) -> list[tuple[Path, LifecycleRequest | str]]:
    """Requests for ``strategy_id`` waiting in ``directory``, oldest first; bad files as errors."""
    out: list[tuple[Path, LifecycleRequest | str]] = []
    for path, req in operator_queue.pending(directory, LifecycleRequest):
        if isinstance(req, Exception):
            out.append((path, f"invalid request file: {req}"))
        elif req.strategy_id == strategy_id:
            out.append((path, req))
    return out


# ------------------------------------------------------------------------------ candidate fits
def match_states(cand_means: np.ndarray, champ_means: np.ndarray) -> list[int]:
    """Permutation ``p`` with candidate state ``p[i]`` nearest champion state ``i`` (same K).

    Means must be comparable (e.g. raw means divided by the champion's scaler std). Exhaustive
    for K <= 7, greedy beyond.
    """
    a, b = np.asarray(cand_means, float), np.asarray(champ_means, float)
    k = len(b)
    if a.shape != b.shape:
        raise ValueError(f"cannot match {a.shape[0]} states to {k}")
    cost = ((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)  # [champion i, candidate j]
    if k <= 7:
        best = min(itertools.permutations(range(k)), key=lambda p: cost[range(k), p].sum())
        return list(best)
    perm, free = [], set(range(k))
    for i in range(k):
        j = min(free, key=lambda j: cost[i, j])
        perm.append(j)
        free.remove(j)
    return perm


def permute_states(model: RegimeHMM, perm: list[int]) -> RegimeHMM:
    p = np.asarray(perm)
    return RegimeHMM.from_params(
        startprob=model.startprob_[p] / model.startprob_[p].sum(),
        transmat=model.transmat_[np.ix_(p, p)],
        means=model.means_[p],
        covars=model.covars_[p],
        scaler_mean=model.scaler_mean_,
        scaler_std=model.scaler_std_,
        covariance_type=model.covariance_type,
        min_covar=model.min_covar,
        diagnostics={**model.diagnostics_, "state_permutation": perm},
    )


def fit_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Fit and save one candidate (runs in the actor, a thread or another process).

    ``payload`` is plain data: the bars (``BAR_FIELDS`` lists), feature/fit settings, identity,
    output folder and, for state matching, the champion's standardised means. Never raises: a
    failure comes back as ``{"ok": False, "error": ...}``.
    """
    import polars as pl

    from hmm_strategy.artifacts import save_model
    from hmm_strategy.train import fit_model, model_version

    try:
        frame = pl.DataFrame({k: payload["bars"][k] for k in BAR_FIELDS})
        features = msgspec.convert(payload["features"], FeatureSpec)
        fit = msgspec.convert(payload["fit"], FitSettings)
        model = fit_model(frame, features, fit)
        evidence: dict[str, Any] = {}
        champ = payload.get("champion_means_std")
        if champ is not None and len(champ) == model.n_states_:
            scale = np.asarray(payload["champion_scaler_std"], float)
            perm = match_states(model.means_raw() / scale, np.asarray(champ, float))
            evidence["state_match"] = perm
            evidence["canonical_matches_champion"] = perm == list(range(model.n_states_))
            if payload.get("match_states") and perm != list(range(model.n_states_)):
                model = permute_states(model, perm)
                evidence["states_permuted"] = True
        ts = frame["ts_event"]
        first, last = int(ts[0]), int(ts[-1])
        version = model_version(payload["name"], last, model)
        path = Path(payload["model_dir"]) / f"{version}.json"
        save_model(
            model,
            path,
            feature_spec=features,
            data_range=(first, last),
            instrument_id=payload["instrument_id"],
            bar_type=payload["bar_type"],
            version=version,
        )
        n_rows = int(model.diagnostics_.get("n_samples", frame.height))
        return {
            "ok": True,
            "version": version,
            "path": str(path),
            "data_range": [first, last],
            "bars": frame.height,
            "n_states": model.n_states_,
            "train_loglik_per_row": float(model.log_likelihood_ or 0.0) / max(n_rows, 1),
            "converged": bool(model.converged_),
            "n_iter": int(model.n_iter_),
            "fit_pid": os.getpid(),  # the worker process's when fit_mode is "process"
            **evidence,
        }
    except Exception as exc:  # reported as a failed fit; the champion keeps trading
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Worker initializer: end this process when the node dies (SIGKILL leaves no orphans).

    A ``ProcessPoolExecutor`` worker outlives a killed parent, holding its memory; a crash-restart
    loop would pile them up. A daemon thread watches the parent and exits within ``interval``.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class FitRunner:
    """Runs ``fit_candidate`` inline (``sync``) or in a worker ``thread`` / ``process``.

    ``sync`` blocks the caller, which a backtest wants (the result lands on the bar that asked,
    so a run is reproducible); the others return at once and ``poll`` picks up the result, so a
    live event loop never blocks on EM. ``process`` also escapes the GIL (hmmlearn's C loops).
    """

    def __init__(self, mode: Literal["sync", "thread", "process"]) -> None:
        if mode not in ("sync", "thread", "process"):
            raise ValueError(f"fit mode must be sync, thread or process, was {mode!r}")
        self.mode = mode
        self._pool: ThreadPoolExecutor | ProcessPoolExecutor | None = None
        self._future: Future | None = None

    @property
    def busy(self) -> bool:
        return self._future is not None

    def submit(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Start a fit; the outcome now (sync) or None (collect it with ``poll``)."""
        if self.mode == "sync":
            return fit_candidate(payload)
        if self._future is not None:
            raise RuntimeError("a candidate fit is already running")
        if self._pool is None:
            if self.mode == "thread":
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hmm-fit")
            else:
                import multiprocessing

                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=ctx,
                    initializer=exit_with_parent,
                    initargs=(os.getpid(),),
                )
        self._future = self._pool.submit(fit_candidate, payload)
        return None

    def poll(self) -> dict[str, Any] | None:
        """The outcome of the running fit once it is done, else None."""
        fut = self._future
        if fut is None or not fut.done():
            return None
        self._future = None
        try:
            return fut.result()
        except Exception as exc:  # e.g. the worker process died
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._future = None


# ----------------------------------------------------------------------------- the lifecycle
@dataclass(frozen=True)
class FitJob:
    """Fit a candidate with this payload (``fit_candidate``), then call ``on_fit_result``."""

    payload: dict[str, Any]


class Track:
    """Out-of-sample score of one model's target exposures over the evaluation bars."""

    def __init__(self, cost_per_change: float) -> None:
        self.cost = cost_per_change
        self.pnl = 0.0
        self.peak = 0.0
        self.max_drawdown = 0.0
        self.turnover = 0.0
        self.n = 0
        self.ll_sum = 0.0
        self.ll_n = 0
        self.close: float | None = None
        self.target = 0.0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    @property
    def started(self) -> bool:
        return self.close is not None

    def start(self, ts: int, close: float, target: float) -> None:
        self.close, self.target, self.first_ts = close, target, ts

    def step(self, ts: int, close: float, target: float, ll: float | None) -> None:
        change = abs(target - self.target)
        self.pnl += self.target * (close / self.close - 1.0) - self.cost * change
        self.turnover += change
        self.peak = max(self.peak, self.pnl)
        self.max_drawdown = max(self.max_drawdown, (self.peak - self.pnl) / (1.0 + self.peak))
        if ll is not None and math.isfinite(ll):
            self.ll_sum += ll
            self.ll_n += 1
        self.n += 1
        self.close, self.target, self.last_ts = close, target, ts

    @property
    def mean_ll(self) -> float | None:
        return self.ll_sum / self.ll_n if self.ll_n else None

    def summary(self) -> dict[str, Any]:
        return {
            "bars": self.n,
            "pnl": self.pnl,
            "max_drawdown": self.max_drawdown,
            "turnover": self.turnover,
            "mean_loglik": self.mean_ll,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


@dataclass
class Champion:
    version: str
    path: str | None = None
    log_jacobian: float | None = None  # sum(log scaler_std), None if the model is unknown
    means_std: list[list[float]] | None = None  # raw means / scaler std (state matching)
    scaler_std: list[float] | None = None
    train_ll_per_row: float | None = None  # standardised, the drift reference


@dataclass
class Shadow:
    version: str
    path: str
    engine: RegimeEngine  # the strategy's own engine, on the candidate
    log_jacobian: float
    start_ts: int
    track: Track
    candidate: dict[str, Any] = field(default_factory=dict)


class ModelLifecycle:
    """Decides refits, runs the shadow, promotes/rejects/rolls back; see the module docstring."""

    def __init__(
        self,
        *,
        strategy_id: str,
        instrument_id: str,
        bar_type: str,
        features: FeatureSpec,
        policy: PolicyConfig,
        fit: FitSettings,
        settings: LifecycleSettings,
        model_dir: str | os.PathLike[str],
        log: LifecycleLog,
        on_shadow_decision: Callable[..., None] | None = None,
        on_record: Callable[[LifecycleEvent], None] | None = None,
    ) -> None:
        self.strategy_id = strategy_id
        self.instrument_id = instrument_id
        self.bar_type = bar_type
        self.features_spec = features
        # the trainer fits single-level models: a candidate must match on everything
        self._expected = Expected.strategy(features, instrument_id, bar_type, None)
        self.policy_config = policy
        self.fit = fit
        self.settings = settings
        self.model_dir = Path(model_dir)
        self.log = log
        self.on_shadow_decision = on_shadow_decision
        self.on_record = on_record
        self.features = StreamingFeatures(features)
        self.history: deque[tuple[int, float, float, float, float, float]] = deque(
            maxlen=settings.history_bars
        )
        self.recent: deque[np.ndarray] = deque(maxlen=fit.history_bars)
        self.champion: Champion | None = None
        self.shadow: Shadow | None = None
        self.champion_track: Track | None = None
        self.fit_pending = False
        self.bars_since_fit = 0
        self.skipped_bars = 0
        self.last_update: RegimeUpdate | None = None
        self._pending: tuple[Champion, Champion | None] | None = None  # (promoted, previous)
        self._pending_misses = 0
        self._ll_window: deque[float] = deque(maxlen=settings.drift_window or 1)
        self._ll_reference: float | None = None
        self._ll_reference_kind = ""
        self._ll_seen = 0
        self._ll_first_sum = 0.0
        self._bars = 0
        self._retry_after = 0
        self._fit_retry_bars = max(settings.min_bars_between_fits, settings.eval_bars)
        check_train_rows(settings, features, fit)

    # ------------------------------------------------------------------------------ helpers
    def _record(self, ts: int, event: str, **fields: Any) -> LifecycleEvent:
        entry = self.log.append(ts, self.strategy_id, event, **fields)
        if self.on_record is not None:
            self.on_record(entry)
        return entry

    def validate(self, path: str) -> tuple[RegimeHMM, Any]:
        """Load an artifact and check it fits this strategy; raises ``ValueError`` with why."""
        model, meta = load_model(path, expected=self._expected)
        problems = []
        if model.n_states_ < 2:
            problems.append(f"{model.n_states_} state(s); the policy needs >= 2")
        exposures = self.policy_config.state_exposures
        if exposures is not None and len(exposures) != model.n_states_:
            problems.append(
                f"{model.n_states_} states but policy.state_exposures has {len(exposures)}"
            )
        if problems:
            raise ModelArtifactError(
                f"model artifact {path!r} is incompatible: " + "; ".join(problems)
            )
        return model, meta

    def _champion_from(self, version: str, path: str | None) -> Champion:
        champ = Champion(version=version, path=path)
        if path is not None:
            try:
                model, _ = load_model(path, expected=self._expected)
            except ModelArtifactError:
                return champ
            champ.log_jacobian = float(np.log(model.scaler_std_).sum())
            champ.scaler_std = model.scaler_std_.tolist()
            champ.means_std = (model.means_raw() / model.scaler_std_).tolist()
            n = model.diagnostics_.get("n_samples")
            if model.log_likelihood_ is not None and n:
                champ.train_ll_per_row = float(model.log_likelihood_) / int(n)
        return champ

    def _reset_drift(self) -> None:
        self._ll_window.clear()
        self._ll_reference = None
        self._ll_reference_kind = ""
        self._ll_seen = 0
        self._ll_first_sum = 0.0

    # ------------------------------------------------------------------------------- inputs
    def start(self, ts: int, champion_path: str | None) -> None:
        """Record the starting champion (the strategy's ``model_path``), if it has one."""
        if champion_path is None:
            return
        _, meta = self.validate(champion_path)
        self.champion = self._champion_from(meta.model_version, champion_path)
        self._record(
            ts,
            "champion",
            version=meta.model_version,
            path=str(champion_path),
            reason="champion at start",
            evidence={"data_range": list(meta.data_range)},
        )

    def on_bar(
        self, ts: int, open_: float, high: float, low: float, close: float, volume: float
    ) -> list[FitJob | ModelUpdate]:
        try:
            x = self.features.update(open_, high, low, close, volume)
        except ValueError:
            self.skipped_bars += 1  # the strategy skips it too
            return []
        self.history.append((ts, open_, high, low, close, volume))
        self.bars_since_fit += 1
        self._bars += 1
        actions: list[FitJob | ModelUpdate] = []
        if x is not None:
            self.recent.append(x)
            if self.shadow is not None:
                actions += self._shadow_step(ts, (open_, high, low, close, volume))
        actions += self._maybe_decide(ts)
        actions += self._maybe_fit(ts)
        return actions

    def on_regime_update(self, update: RegimeUpdate) -> list[FitJob | ModelUpdate]:
        if update.strategy_id != self.strategy_id:
            return []
        self.last_update = update
        ts = update.ts_event
        self._observe_version(update)
        champ = self.champion
        jac = champ.log_jacobian if champ is not None else None
        ll_raw = None if jac is None else update.log_likelihood - jac
        self._observe_drift(update.log_likelihood)
        track = self.champion_track
        if self.shadow is not None and track is not None and ts >= self.shadow.start_ts:
            if not track.started:
                track.start(ts, update.close, update.target_exposure)
            else:
                track.step(ts, update.close, update.target_exposure, ll_raw)
        return self._maybe_decide(ts)

    def on_fit_result(self, ts: int, outcome: dict[str, Any]) -> list[FitJob | ModelUpdate]:
        """A candidate fit finished: validate it and start its shadow, or record why not."""
        self.fit_pending = False
        if not outcome.get("ok"):
            self._record(ts, "fit_failed", reason=str(outcome.get("error")))
            self._retry_after = self._bars + self._fit_retry_bars
            return []
        version, path = outcome["version"], outcome["path"]
        evidence = {k: v for k, v in outcome.items() if k not in ("ok", "version", "path")}
        self._record(ts, "candidate", version=version, path=path, evidence=evidence)
        try:
            model, _ = self.validate(path)
            self._start_shadow(ts, version, path, model, evidence)
        except ValueError as exc:
            self._record(
                ts, "rejected", version=version, path=path, reason=f"invalid candidate: {exc}"
            )
            return []
        assert self.shadow is not None
        self._record(
            ts,
            "shadow_started",
            version=version,
            path=path,
            reason=f"burn-in over {self.shadow.engine.filter.n_steps} feature rows",
            evidence={"target": self.shadow.engine.policy.target},
        )
        return self._maybe_decide(ts)

    def on_request(
        self, ts: int, request: LifecycleRequest
    ) -> tuple[bool, str, list[FitJob | ModelUpdate]]:
        """Apply an operator request: (applied, message, actions)."""
        reason = f"{request.action} by {request.operator or 'operator'}: {request.reason}"
        ev = {"request_id": request.id, "operator": request.operator}
        if request.action == "reject":
            if self.shadow is None:
                return self._refuse(ts, request, "no candidate is in shadow")
            s = self.shadow
            self._reject_shadow(ts, s, reason, source="operator", context=ev)
            return True, f"rejected {s.version}", []
        path = request.model_path
        if request.action == "promote" and path is None:
            if self.shadow is None:
                return self._refuse(ts, request, "no candidate is in shadow and no model given")
            path = self.shadow.path
        if request.action == "rollback" and path is None:
            path = self.log.paths.get(request.version or "")
            if path is None:
                guess = self.model_dir / f"{request.version}.json"
                path = str(guess) if guess.exists() else None
            if path is None:
                return self._refuse(ts, request, f"version {request.version!r} is not recorded")
        try:
            _, meta = self.validate(path)
        except ValueError as exc:
            return self._refuse(ts, request, str(exc))
        if request.version and meta.model_version != request.version:
            return self._refuse(
                ts, request, f"{path} holds version {meta.model_version}, not {request.version}"
            )
        if self.shadow is not None:
            s = self.shadow
            ev.update(self._evidence(s))
            if s.path != path:
                superseded = f"superseded by operator {request.action} of {meta.model_version}"
                self._reject_shadow(ts, s, superseded, source="operator", evidence={})
            else:
                self._end_shadow()
        event = "promoted" if request.action == "promote" else "rolled_back"
        actions = self._promote(ts, meta.model_version, path, event, "operator", reason, ev)
        return True, f"{event} {meta.model_version}", actions

    # ----------------------------------------------------------------------------- internals
    def _refuse(
        self, ts: int, request: LifecycleRequest, why: str
    ) -> tuple[bool, str, list[FitJob | ModelUpdate]]:
        self._record(
            ts,
            "request_rejected",
            source="operator",
            version=request.version,
            path=request.model_path,
            reason=f"{request.action} refused: {why}",
            evidence={"request_id": request.id, "operator": request.operator},
        )
        return False, why, []

    def _observe_version(self, update: RegimeUpdate) -> None:
        version = update.model_version
        if self._pending is not None:
            promoted, previous = self._pending
            if version == promoted.version:
                self._pending = None
            else:
                self._pending_misses += 1
                if self._pending_misses >= self.settings.confirm_bars:
                    self._pending = None
                    self._record(
                        update.ts_event,
                        "promotion_failed",
                        version=promoted.version,
                        path=promoted.path,
                        reason=(
                            f"the strategy still runs {version} {self._pending_misses} bars "
                            "after the ModelUpdate (it rejected the artifact: see its log)"
                        ),
                        evidence={
                            "running_version": version,
                            "previous_version": previous.version if previous else None,
                        },
                    )
                    self.champion = previous
                    self._reset_drift()
                return
        if self.champion is None or version != self.champion.version:
            path = self.log.paths.get(version)
            self.champion = self._champion_from(version, path)
            self._reset_drift()
            self._record(
                update.ts_event,
                "champion",
                version=version,
                path=path,
                source="observed",
                reason="model version seen on the strategy's updates",
            )

    def _observe_drift(self, ll: float) -> None:
        w = self.settings.drift_window
        if w is None or not math.isfinite(ll):
            return
        self._ll_window.append(ll)
        self._ll_seen += 1
        if self._ll_reference is None and self.champion is not None:
            self._ll_reference = self.champion.train_ll_per_row
            self._ll_reference_kind = "its training log-likelihood per row"
        if self._ll_seen <= w:
            self._ll_first_sum += ll
            if self._ll_seen == w and self._ll_reference is None:
                self._ll_reference = self._ll_first_sum / w
                self._ll_reference_kind = f"its first {w} bars"

    def drift(self) -> tuple[float, float] | None:
        """(reference, recent) mean log-likelihoods when the drop exceeds the threshold."""
        w = self.settings.drift_window
        if w is None or self._ll_reference is None or len(self._ll_window) < w:
            return None
        recent = sum(self._ll_window) / len(self._ll_window)
        if self._ll_reference - recent > self.settings.drift_threshold:
            return self._ll_reference, recent
        return None

    def _maybe_fit(self, ts: int) -> list[FitJob | ModelUpdate]:
        s = self.settings
        if self.shadow is not None or self.fit_pending or self._pending is not None:
            return []
        if self.last_update is None or len(self.history) < s.min_train_bars:
            return []  # no champion decisions yet, or too little history
        if self._bars < self._retry_after:
            return []  # a fit failed recently: do not retry on every bar
        reason = None
        if s.retrain_every_bars is not None and self.bars_since_fit >= s.retrain_every_bars:
            reason = f"schedule: {self.bars_since_fit} bars since the last fit"
        elif self.bars_since_fit >= s.min_bars_between_fits and (d := self.drift()) is not None:
            reason = (
                f"drift: champion mean log-likelihood {d[1]:.3f} over the last "
                f"{s.drift_window} bars vs {d[0]:.3f} ({self._ll_reference_kind}; threshold "
                f"{s.drift_threshold})"
            )
        if reason is None:
            return []
        self.fit_pending = True
        self.bars_since_fit = 0
        bars = list(zip(*self.history, strict=True))
        payload: dict[str, Any] = {
            "bars": {name: list(col) for name, col in zip(BAR_FIELDS, bars, strict=True)},
            "features": msgspec.to_builtins(self.features_spec),
            "fit": msgspec.to_builtins(self.fit),
            "name": self.strategy_id,
            "instrument_id": self.instrument_id,
            "bar_type": self.bar_type,
            "model_dir": str(self.model_dir),
            "match_states": s.match_states,
        }
        champ = self.champion
        if champ is not None and champ.means_std is not None:
            payload["champion_means_std"] = champ.means_std
            payload["champion_scaler_std"] = champ.scaler_std
        first, last = self.history[0][0], self.history[-1][0]
        self._record(
            ts,
            "fit_started",
            reason=reason,
            evidence={"bars": len(self.history), "data_range": [first, last]},
        )
        return [FitJob(payload)]

    def _start_shadow(
        self, ts: int, version: str, path: str, model: RegimeHMM, candidate: dict[str, Any]
    ) -> None:
        # the strategy's engine on the candidate, from the bars this lifecycle has seen: its
        # features, the recent rows (filter and policy burn-in) and every policy mode's sizing
        engine = RegimeEngine(self.features_spec, self.policy_config, self.fit)
        engine.follow(self.features, self.recent)
        engine.set_model(model, version, replay_policy=True)
        # evaluation starts at the last bar (the fit may land on a timer between bars, live)
        ts, close = self.history[-1][0], self.history[-1][4]
        track = Track(self.settings.cost_per_change)
        track.start(ts, close, engine.policy.target)
        self.shadow = Shadow(
            version=version,
            path=path,
            engine=engine,
            log_jacobian=float(np.log(model.scaler_std_).sum()),
            start_ts=ts,
            track=track,
            candidate=candidate,
        )
        self.champion_track = Track(self.settings.cost_per_change)
        last = self.last_update
        if last is not None and last.ts_event == ts:  # the champion already decided this bar
            self.champion_track.start(ts, last.close, last.target_exposure)

    def _shadow_step(self, ts: int, bar: tuple[float, ...]) -> list[FitJob | ModelUpdate]:
        s = self.shadow
        assert s is not None
        try:
            d = s.engine.update(*bar)
        except ValueError as exc:
            self._reject_shadow(ts, s, f"shadow filter failed: {exc}")
            return []
        assert d is not None  # features, filter and policy are all ready from the start
        ll = d.log_likelihood
        s.track.step(ts, bar[3], d.target_exposure, ll - s.log_jacobian)
        if self.on_shadow_decision is not None:
            self.on_shadow_decision(ts, s.version, d.probs, d.state, d.target_exposure, ll)
        return []

    def _end_shadow(self) -> None:
        self.shadow = None
        self.champion_track = None
        self.bars_since_fit = 0

    def _reject_shadow(
        self,
        ts: int,
        s: Shadow,
        reason: str,
        *,
        source: str = "policy",
        evidence: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """End the shadow and record the rejection of its candidate: the one way a shadow fails.

        ``evidence`` is what the caller measured before; without it, ``context`` plus what is
        known once the shadow has ended (its own track; the champion's is gone)."""
        self._end_shadow()
        if evidence is None:
            evidence = {**(context or {}), **self._evidence(s)}
        fields = {"version": s.version, "path": s.path, "source": source, "reason": reason}
        self._record(ts, "rejected", **fields, evidence=evidence)

    def _evidence(self, s: Shadow) -> dict[str, Any]:
        champ = self.champion_track
        return {
            "metric": self.settings.metric,
            "margin": self.settings.margin,
            "max_drawdown_limit": self.settings.max_drawdown,
            "cost_per_change": self.settings.cost_per_change,
            "champion_version": self.champion.version if self.champion else None,
            "shadow": s.track.summary(),
            "champion": champ.summary() if champ is not None else None,
            "candidate": s.candidate,
        }

    def _maybe_decide(self, ts: int) -> list[FitJob | ModelUpdate]:
        s, champ = self.shadow, self.champion_track
        n = self.settings.eval_bars
        if s is None or champ is None or s.track.n < n:
            return []
        if champ.n < n:
            if s.track.n < 2 * n:
                return []  # the champion's update for this bar may still come
            reason = f"the champion published only {champ.n} decisions in {s.track.n} bars"
            self._reject_shadow(ts, s, reason, evidence=self._evidence(s))
            return []
        return self._decide(ts, s, champ)

    def _decide(self, ts: int, s: Shadow, champ: Track) -> list[FitJob | ModelUpdate]:
        st = self.settings
        evidence = self._evidence(s)
        if st.metric == "pnl":
            shadow_score, champ_score = s.track.pnl, champ.pnl
        else:
            shadow_score, champ_score = s.track.mean_ll, champ.mean_ll
        evidence.update(shadow_score=shadow_score, champion_score=champ_score)
        self._end_shadow()
        if shadow_score is None or champ_score is None:
            reason = "champion log-likelihood unknown (its artifact is not known to the trainer)"
            self._reject_shadow(ts, s, reason, evidence=evidence)
            return []
        improvement = shadow_score - champ_score
        evidence["improvement"] = improvement
        within_dd = s.track.max_drawdown <= st.max_drawdown
        text = (
            f"{st.metric} shadow {shadow_score:.6g} vs champion {champ_score:.6g} over "
            f"{s.track.n} bars: {improvement:+.6g} (margin {st.margin:g}); shadow drawdown "
            f"{s.track.max_drawdown:.4f} (limit {st.max_drawdown:g})"
        )
        if improvement > st.margin and within_dd:
            return self._promote(ts, s.version, s.path, "promoted", "policy", text, evidence)
        self._reject_shadow(ts, s, text, evidence=evidence)
        return []

    def _promote(
        self,
        ts: int,
        version: str,
        path: str,
        event: str,
        source: str,
        reason: str,
        evidence: dict[str, Any],
    ) -> list[FitJob | ModelUpdate]:
        previous = self.champion
        self.champion = self._champion_from(version, path)
        self._pending = (self.champion, previous)
        self._pending_misses = 0
        self._reset_drift()
        self.bars_since_fit = 0
        evidence = {**evidence, "previous_version": previous.version if previous else None}
        self._record(
            ts, event, version=version, path=path, source=source, reason=reason, evidence=evidence
        )
        return [
            ModelUpdate(
                ts_event=ts,
                strategy_id=self.strategy_id,
                model_path=str(path),
                model_version=version,
                reason=f"{event}: {reason}",
            )
        ]
