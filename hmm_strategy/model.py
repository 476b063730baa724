"""Gaussian HMM regime model: fitting with restarts, BIC selection and a canonical state order.

All HMM maths of the strategy lives here and in :mod:`hmm_strategy.filter`:

* features are standardised with a scaler fitted on the training window only (no look-ahead when
  the model is later applied to newer bars);
* EM (hmmlearn ``GaussianHMM``) is restarted from several seeds and the best training
  log-likelihood wins, because EM only finds a local optimum; each run starts from a sticky
  transition matrix, and every M-step adds ``min_covar`` to the covariance diagonal so that no
  covariance becomes singular (see ``_RidgeGaussianHMM``);
* states are relabelled into a canonical order after every fit -- ascending by the state's mean
  of the ``order_by`` columns (the caller passes the feature registry's ``trend`` column, then
  its ``volatility`` column: ``features.order_columns``) -- so that state 0 is the most bearish
  and state K-1 the most bullish across refits (hmmlearn's labels are arbitrary).

Parameters (``means_``, ``covars_``) are in the standardised space; likelihoods (``score``,
``bic``, ``log_likelihood_``) are those of the standardised features.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import sklearn.exceptions
from hmmlearn.hmm import GaussianHMM
from sklearn.base import BaseEstimator
from sklearn.cluster import kmeans_plusplus
from threadpoolctl import threadpool_limits

from hmm_strategy.filter import ForwardFilter, validate_params

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
MIN_ROWS_PER_PARAMETER = 10
BIC_STATES_GRID = (2, 3, 4, 5)  # K tried when n_states='bic'


def min_fit_rows(
    n_states: int | tuple[int, ...], n_features: int, covariance_type: str = "full"
) -> int:
    """The fewest rows ``RegimeHMM.fit`` accepts (the largest K of a BIC grid decides): the one
    minimum that config validation and the fit both use."""
    ks = (n_states,) if isinstance(n_states, int) else tuple(n_states)
    return max(
        MIN_ROWS_PER_PARAMETER * n_free_parameters(k, n_features, covariance_type) for k in ks
    )


def n_free_parameters(n_states: int, n_features: int, covariance_type: str = "full") -> int:
    """Number of free scalars of a Gaussian HMM (the same count hmmlearn's ``bic`` uses)."""
    k, d = n_states, n_features
    cov = {
        "full": k * d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
        "tied": d * (d + 1) // 2,
    }[covariance_type]
    return (k - 1) + k * (k - 1) + k * d + cov


class _DropNonMonotoneWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Model is not converging")


@contextlib.contextmanager
def _quiet_ridge_em() -> Iterator[None]:
    """Mute hmmlearn's "not converging" log while fitting: with the M-step ridge the
    log-likelihood can dip by ~1e-5 at convergence, which hmmlearn reports as a warning."""
    log = logging.getLogger("hmmlearn.base")
    flt = _DropNonMonotoneWarning()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


class _RidgeGaussianHMM(GaussianHMM):
    """GaussianHMM whose M-step adds ``min_covar`` to every covariance diagonal.

    hmmlearn only uses ``min_covar`` at initialisation; its default ``covars_prior`` for full
    covariances is a scalar broadcast to an all-ones (rank-one) matrix. On market features
    (collinear within a regime, or a regime that empties out) that yields near-singular or huge
    rank-one covariances and an ill-conditioned filter. A ridge at every M-step (like sklearn's
    ``GaussianMixture(reg_covar=...)``) keeps every covariance's eigenvalues >= ``min_covar``.
    """

    def _do_mstep(self, stats: dict[str, Any]) -> None:
        super()._do_mstep(stats)
        if "c" in self.params:
            ridge = self.min_covar
            if self.covariance_type in ("full", "tied"):
                ridge = self.min_covar * np.eye(self.n_features)
            covars = self._covars_ + ridge
            if self.covariance_type == "spherical":
                # hmmlearn 0.3 tiles spherical variances to (K, D) here, which its own
                # ``covars_`` getter then expands to (K*D, D, D); keep the (K,) layout
                covars = np.asarray(covars).reshape(self.n_components, -1).mean(axis=1)
            self._covars_ = covars


def canonical_order(means_raw: np.ndarray, order_by: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Permutation sorting states by their mean of column ``order_by[0]`` (the trend), ties by
    the next ones (volatility); columns beyond the data's width are ignored.

    ``canonical[i] = fitted[order[i]]``: state 0 is the most bearish, state K-1 the most bullish.
    """
    m = np.asarray(means_raw, dtype=np.float64)
    cols = [c for c in order_by if c < m.shape[1]] or [0]
    return np.lexsort(tuple(m[:, c] for c in reversed(cols)))  # the last key is the primary one


class NotFittedError(sklearn.exceptions.NotFittedError, RuntimeError):
    """scikit-learn's error for an unfitted estimator; a ``RuntimeError`` as it always was here."""


class RegimeHMM(BaseEstimator):
    """Gaussian HMM over standardised features, a scikit-learn estimator as hmmlearn's are
    (``get_params``/``set_params``/``clone`` from ``BaseEstimator``, ``check_is_fitted``).

    ``n_states="bic"`` fits every K in ``n_states_grid`` and keeps the lowest BIC.
    ``sticky`` > 0 is a persistence prior: hmmlearn's Dirichlet ``transmat_prior`` with
    ``sticky`` extra pseudo-counts on each self-transition (MAP EM), so that the fit prefers
    longer regimes; with n bars in training, ``sticky`` ~ n / K / 10 is a moderate pull.
    """

    def __init__(
        self,
        n_states: int | str = 3,
        n_states_grid: tuple[int, ...] = BIC_STATES_GRID,
        covariance_type: str = "full",
        n_restarts: int = 5,
        n_iter: int = 200,
        tol: float = 1e-4,
        random_state: int = 0,
        min_covar: float = 1e-3,
        sticky: float = 0.0,
        order_by: tuple[int, ...] = (0, 1),
    ) -> None:
        if n_states != "bic" and (
            isinstance(n_states, bool) or not isinstance(n_states, int) or n_states < 1
        ):
            raise ValueError(f"n_states must be an int >= 1 or 'bic', was {n_states!r}")
        grid = tuple(n_states_grid)
        if not grid or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid):
            raise ValueError(f"n_states_grid must be a non-empty tuple of ints >= 1, was {grid!r}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, was {covariance_type!r}"
            )
        if not isinstance(n_restarts, int) or n_restarts < 1:
            raise ValueError(f"n_restarts must be an int >= 1, was {n_restarts!r}")
        if not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"n_iter must be an int >= 1, was {n_iter!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, was {tol!r}")
        if not isinstance(random_state, int):
            raise ValueError(f"random_state must be an int (restart seeds), was {random_state!r}")
        if not min_covar > 0:
            raise ValueError(f"min_covar must be > 0, was {min_covar!r}")
        if not 0.0 <= sticky < math.inf:
            raise ValueError(f"sticky must be a finite number >= 0, was {sticky!r}")
        self.n_states = n_states
        self.n_states_grid = grid
        self.covariance_type = covariance_type
        self.n_restarts = n_restarts
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state
        self.min_covar = min_covar
        self.sticky = sticky
        order_by = tuple(order_by)
        if not order_by or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in order_by
        ):
            raise ValueError(f"order_by must be a non-empty tuple of column indices: {order_by!r}")
        self.order_by = order_by

    def __repr__(self) -> str:  # every parameter, in the constructor's order
        names = inspect.signature(type(self).__init__).parameters
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in names if k != "self")
        return f"RegimeHMM({args})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "transmat_")

    # ------------------------------------------------------------------------------------ fit
    def fit(self, X: Any, lengths: Any = None) -> RegimeHMM:
        """Fit on ``X`` (n_samples, n_features); ``lengths`` splits X into independent sequences.

        BLAS/OpenMP run single-threaded during the fit: the matrices are tiny (D=4), so thread
        start-up dominated (a three-week backtest's fit took 3.7-8 s threaded vs ~1 s here), and a
        node keeps its other core for the event loop.
        """
        with threadpool_limits(limits=1):
            return self._fit(X, lengths)

    def _fit(self, X: Any, lengths: Any) -> RegimeHMM:
        X = _check_array(X)
        n, d = X.shape
        lengths = _check_lengths(lengths, n)
        candidates = self.n_states_grid if self.n_states == "bic" else (int(self.n_states),)
        for k in candidates:
            need = min_fit_rows(k, d, self.covariance_type)
            if n < need:
                raise ValueError(
                    f"too few rows to fit: got {n}, need at least {need} "
                    f"({MIN_ROWS_PER_PARAMETER} x {need // MIN_ROWS_PER_PARAMETER} free parameters"
                    f" for n_states={k}, n_features={d}, covariance_type={self.covariance_type!r})"
                )

        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[~(std > 0)] = 1.0  # constant feature: leave it centred but unscaled
        Z = (X - mean) / std

        by_k: list[dict[str, Any]] = []
        best: tuple[float, GaussianHMM, dict[str, Any]] | None = None
        for k in candidates:
            try:
                hmm, seed, restarts = self._fit_restarts(Z, lengths, k)
            except ValueError as exc:
                if len(candidates) == 1:
                    raise
                by_k.append({"n_states": k, "log_likelihood": None, "bic": None, "error": str(exc)})
                continue  # BIC selection: skip a K whose every restart failed
            ll = float(hmm.score(Z, lengths))
            bic = float(-2.0 * ll + n_free_parameters(k, d, self.covariance_type) * math.log(n))
            info = {
                "n_states": k,
                "log_likelihood": ll,
                "bic": bic,
                "restarts": restarts,
                "best_seed": seed,
            }
            by_k.append(info)
            if best is None or bic < best[0]:
                best = (bic, hmm, info)
        if best is None:
            errors = "; ".join(f"n_states={c['n_states']}: {c['error']}" for c in by_k)
            raise ValueError(f"no number of states could be fitted: {errors}")
        bic, hmm, info = best

        order = canonical_order(hmm.means_ * std + mean, self.order_by)
        # expected share of training bars per state: a ~0 entry flags an empty, useless state
        occupancy = hmm.predict_proba(Z, lengths).mean(axis=0)[order]
        self.scaler_mean_ = mean
        self.scaler_std_ = std
        self.startprob_ = np.asarray(hmm.startprob_)[order].copy()
        self.transmat_ = np.asarray(hmm.transmat_)[np.ix_(order, order)].copy()
        self.means_ = np.asarray(hmm.means_)[order].copy()
        full_covars = np.asarray(hmm.covars_)
        if full_covars.shape != (hmm.n_components, d, d):
            raise RuntimeError(f"unexpected hmmlearn covars_ shape {full_covars.shape}")
        self.covars_ = full_covars[order].copy()  # always full (K, D, D)
        self.n_states_ = int(info["n_states"])
        self.n_features_ = d
        self.log_likelihood_ = float(info["log_likelihood"])
        self.bic_ = bic
        chosen = next(r for r in info["restarts"] if r["seed"] == info["best_seed"])
        self.converged_ = bool(chosen["converged"])
        self.n_iter_ = int(chosen["n_iter"])
        self.diagnostics_ = {
            "n_samples": n,
            "n_sequences": 1 if lengths is None else len(lengths),
            "n_features": d,
            "covariance_type": self.covariance_type,
            "selection": "bic" if self.n_states == "bic" else "fixed",
            "n_states": self.n_states_,
            "log_likelihood": self.log_likelihood_,
            "bic": bic,
            "best_seed": info["best_seed"],
            "converged": self.converged_,
            "n_iter": self.n_iter_,
            "restarts": info["restarts"],
            "bic_by_n_states": [
                {key: v for key, v in c.items() if key != "restarts"} for c in by_k
            ],
            "state_order": order.tolist(),
            "state_occupancy": occupancy.tolist(),
            "means_raw": self.means_raw().tolist(),
            "expected_durations": [
                None if math.isinf(v) else v for v in self.expected_durations().tolist()
            ],
        }
        return self

    def _fit_restarts(
        self, Z: np.ndarray, lengths: list[int] | None, k: int
    ) -> tuple[GaussianHMM, int, list[dict[str, Any]]]:
        """Best-of-``n_restarts`` EM fit (seeds random_state + i); ties keep the earliest seed."""
        best: GaussianHMM | None = None
        best_ll, best_seed = -math.inf, self.random_state
        restarts: list[dict[str, Any]] = []
        for i in range(self.n_restarts):
            seed = self.random_state + i
            hmm = self._initial_hmm(Z, k, seed, kmeans=(i == 0))
            record: dict[str, Any] = {"seed": seed}
            try:
                with np.errstate(divide="ignore", under="ignore"), _quiet_ridge_em():
                    hmm.fit(Z, lengths)
                    ll = float(hmm.score(Z, lengths))
                if not math.isfinite(ll) or not _finite_params(hmm):
                    raise ValueError("non-finite parameters or log-likelihood")
            except (ValueError, np.linalg.LinAlgError) as exc:
                record.update(log_likelihood=None, converged=False, n_iter=0, error=str(exc))
                restarts.append(record)
                continue
            record.update(
                log_likelihood=ll,
                converged=_em_converged(hmm),
                n_iter=int(hmm.monitor_.iter),
            )
            restarts.append(record)
            if ll > best_ll:
                best, best_ll, best_seed = hmm, ll, seed
        if best is None:
            errors = "; ".join(r["error"] for r in restarts)
            raise ValueError(f"all {self.n_restarts} EM restarts failed for n_states={k}: {errors}")
        return best, best_seed, restarts

    def _initial_hmm(self, Z: np.ndarray, k: int, seed: int, *, kmeans: bool) -> GaussianHMM:
        """Starting point of one EM run.

        hmmlearn's default draws startprob/transmat from Dirichlet(1/K), i.e. near-degenerate
        rows that often trap EM in poor optima for persistent regimes. Here every run starts
        from a uniform start distribution and a sticky random transmat (diagonal ~0.9); the
        first run takes KMeans centres as means, the others k-means++ seeds (diverse, decent).
        """
        rng = np.random.default_rng(seed)
        hmm = _RidgeGaussianHMM(
            n_components=k,
            covariance_type=self.covariance_type,
            min_covar=self.min_covar,
            covars_prior=0.0,
            n_iter=self.n_iter,
            tol=self.tol,
            random_state=seed,
            init_params="mc" if kmeans else "c",
        )
        if self.sticky > 0.0:  # Dirichlet prior on each row: sticky extra self-transitions
            hmm.transmat_prior = np.ones((k, k)) + self.sticky * np.eye(k)
        hmm.startprob_ = np.full(k, 1.0 / k)
        if k == 1:
            hmm.transmat_ = np.ones((1, 1))
        else:
            conc = np.ones((k, k)) + np.eye(k) * (9.0 * (k - 1) - 1.0)
            hmm.transmat_ = np.vstack([rng.dirichlet(row) for row in conc])
        if not kmeans:
            centres, _ = kmeans_plusplus(Z, n_clusters=k, random_state=seed)
            hmm.means_ = centres
        return hmm

    # ------------------------------------------------------------------------- construction
    @classmethod
    def from_params(
        cls,
        *,
        startprob: Any,
        transmat: Any,
        means: Any,
        covars: Any,
        scaler_mean: Any,
        scaler_std: Any,
        covariance_type: str = "full",
        min_covar: float = 1e-3,
        diagnostics: dict[str, Any] | None = None,
    ) -> RegimeHMM:
        """A fitted model from explicit parameters (standardised space, full covariances).

        Used to load artifacts. The states are taken in the given order (already canonical).
        """
        pi, a, mu, cov, sm, ss = validate_params(
            startprob, transmat, means, covars, scaler_mean, scaler_std
        )
        k, d = mu.shape
        model = cls(n_states=k, covariance_type=covariance_type, min_covar=min_covar)
        _check_covariance_structure(np.asarray(covars, dtype=np.float64), covariance_type)
        model.startprob_ = pi
        model.transmat_ = a
        model.means_ = mu
        model.covars_ = np.array(covars, dtype=np.float64)
        model.scaler_mean_ = sm
        model.scaler_std_ = ss
        model.n_states_ = k
        model.n_features_ = d
        diag = dict(diagnostics or {})
        model.diagnostics_ = diag
        model.log_likelihood_ = _opt_float(diag.get("log_likelihood"))
        model.bic_ = _opt_float(diag.get("bic"))
        model.converged_ = bool(diag.get("converged", False))
        model.n_iter_ = int(diag.get("n_iter", 0))
        return model

    # ------------------------------------------------------------------------------ inference
    def fitted_arrays(self) -> tuple[np.ndarray, ...]:
        """``(startprob, transmat, means, covars, scaler_mean, scaler_std)``: what the model
        computes with, in the order ``ForwardFilter`` takes them."""
        self.check_fitted()
        return (
            self.startprob_,
            self.transmat_,
            self.means_,
            self.covars_,
            self.scaler_mean_,
            self.scaler_std_,
        )

    def fitted_params(self) -> dict[str, Any]:
        """The fitted parameters as plain lists: ``RegimeHMM.from_params(**p)`` rebuilds it."""
        return {
            "startprob": self.startprob_.tolist(),
            "transmat": self.transmat_.tolist(),
            "means": self.means_.tolist(),
            "covars": self.covars_.tolist(),
            "scaler_mean": self.scaler_mean_.tolist(),
            "scaler_std": self.scaler_std_.tolist(),
            "covariance_type": self.covariance_type,
            "min_covar": float(self.min_covar),
        }

    def transform(self, X: Any) -> np.ndarray:
        """Standardise with the training-window scaler."""
        self.check_fitted()
        return (self._check_features(X) - self.scaler_mean_) / self.scaler_std_

    def _check_features(self, X: Any) -> np.ndarray:
        X = _check_array(X)
        if X.shape[1] != self.n_features_:
            raise ValueError(
                f"X has {X.shape[1]} features, the model was fitted with {self.n_features_}"
            )
        return X

    def to_hmmlearn(self) -> GaussianHMM:
        """An hmmlearn ``GaussianHMM`` with these parameters, operating on ``transform(X)``."""
        self.check_fitted()
        hmm = GaussianHMM(
            n_components=self.n_states_,
            covariance_type=self.covariance_type,
            min_covar=self.min_covar,
            init_params="",
            params="",
        )
        hmm.n_features = self.n_features_
        hmm.startprob_ = self.startprob_.copy()
        hmm.transmat_ = self.transmat_.copy()
        hmm.means_ = self.means_.copy()
        full = self.covars_
        hmm.covars_ = {
            "full": full,
            "diag": np.diagonal(full, axis1=1, axis2=2),
            "spherical": np.diagonal(full, axis1=1, axis2=2).mean(axis=1),
            "tied": full[0],
        }[self.covariance_type].copy()
        return hmm

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Smoothed P(state_t | x_1..T) (forward-backward: uses the future; offline only)."""
        Z = self.transform(X)
        return self.to_hmmlearn().predict_proba(Z, _check_lengths(lengths, len(Z)))

    def filter_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Causal P(state_t | x_1..t): row t uses only X[:t+1] (each sequence starts afresh)."""
        self.check_fitted()
        raw = self._check_features(X)  # the filter standardises raw rows itself
        lens = _check_lengths(lengths, len(raw)) or [len(raw)]
        flt = ForwardFilter.from_model(self)
        out, start = [], 0
        for m in lens:
            flt.reset()
            out.append(flt.update_many(raw[start : start + m]))
            start += m
        return np.concatenate(out)

    def score(self, X: Any, lengths: Any = None) -> float:
        """Log-likelihood of the standardised features."""
        Z = self.transform(X)
        return float(self.to_hmmlearn().score(Z, _check_lengths(lengths, len(Z))))

    def bic(self, X: Any, lengths: Any = None) -> float:
        """BIC = -2 log L + n_params log(n_samples) (lower is better)."""
        n_params = n_free_parameters(self.n_states_, self.n_features_, self.covariance_type)
        return -2.0 * self.score(X, lengths) + n_params * math.log(len(np.asarray(X)))

    def expected_durations(self) -> np.ndarray:
        """Expected regime length in bars, 1 / (1 - A_kk) (inf for an absorbing state)."""
        self.check_fitted()
        with np.errstate(divide="ignore"):
            return 1.0 / (1.0 - np.diag(self.transmat_))

    def feature_second_moment(self, j: int) -> np.ndarray:
        """E[x_j^2 | state k] in raw units, (K,): mean^2 + variance of feature ``j``.

        For ``realized_vol`` (an RMS of returns) this is each state's expected squared per-bar
        return, which ``vol_target`` propagates one step to forecast the next bar's volatility.
        """
        self.check_fitted()
        std = self.scaler_std_[j]
        mean = self.means_[:, j] * std + self.scaler_mean_[j]
        return mean * mean + self.covars_[:, j, j] * std * std

    def means_raw(self) -> np.ndarray:
        """State means in raw feature units (K, D)."""
        self.check_fitted()
        return self.means_ * self.scaler_std_ + self.scaler_mean_

    def check_fitted(self) -> None:
        """:class:`NotFittedError` unless fitted or loaded (the filter asks before reading)."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError("RegimeHMM is not fitted: call fit() or load a model artifact")


# ------------------------------------------------------------------------------------ helpers
def _check_array(X: Any) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X must be a numeric 2-D array: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"X is empty, shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"X contains NaN or inf in {bad.size} row(s), first at row {int(bad[0])}: "
            f"{arr[bad[0]].tolist()}"
        )
    return arr


def _check_lengths(lengths: Any, n: int) -> list[int] | None:
    if lengths is None:
        return None
    lens = [int(v) for v in np.asarray(lengths).ravel()]
    if any(v <= 0 for v in lens) or sum(lens) != n:
        raise ValueError(f"lengths must be positive and sum to n_samples={n}, got {lens}")
    return lens


def _check_covariance_structure(covars: np.ndarray, covariance_type: str) -> None:
    """Full (K, D, D) covariances must have the structure their type claims, otherwise
    ``to_hmmlearn`` (which keeps only that structure) and the filter would disagree."""
    diag = np.stack([np.diag(np.diag(c)) for c in covars])
    if covariance_type in ("diag", "spherical") and not np.array_equal(covars, diag):
        raise ValueError(f"covariance_type={covariance_type!r} but covars have off-diagonal terms")
    if covariance_type == "spherical":
        d = np.diagonal(covars, axis1=1, axis2=2)
        if not np.array_equal(d, np.repeat(d[:, :1], d.shape[1], axis=1)):
            raise ValueError("covariance_type='spherical' but covars have unequal variances")
    if covariance_type == "tied" and not all(np.array_equal(c, covars[0]) for c in covars):
        raise ValueError("covariance_type='tied' but the states' covars differ")


def _finite_params(hmm: GaussianHMM) -> bool:
    return all(
        np.isfinite(np.asarray(p)).all()
        for p in (hmm.startprob_, hmm.transmat_, hmm.means_, hmm.covars_)
    )


def _em_converged(hmm: GaussianHMM) -> bool:
    """Log-likelihood gain below tol (hmmlearn's ``converged`` is also True at max iterations)."""
    hist = list(hmm.monitor_.history)
    return len(hist) >= 2 and hist[-1] - hist[-2] < hmm.monitor_.tol


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)
