"""Incremental, causal forward filter for a Gaussian HMM: P(state_t | x_1..t), one bar at a time.

Why not hmmlearn per bar: ``predict_proba`` runs forward-backward over a whole window, which costs
O(window) per bar and, on a growing window, is O(T^2) over a backtest. The forward recursion only
needs the previous filtered vector, so one update is O(K^2 + K*D^2).

Maths (standardised features z = (x - scaler_mean) / scaler_std, full covariances S_k = L_k L_k'):

    log b_k(z)   = -0.5 * (D log 2pi + log|S_k| + |L_k^-1 (z - mu_k)|^2)
    alpha_1      = normalise(startprob * b(z_1))
    alpha_t      = normalise((alpha_{t-1} @ A) * b(z_t))
    log p(z_t | z_1..t-1) = max_k log b_k + log sum_j pred_j * exp(log b_j - max_k log b_k)

The log-likelihoods are those of the *standardised* features, i.e. the same numbers as
``RegimeHMM.score`` / hmmlearn's ``score`` on ``RegimeHMM.transform(X)``.

Speed: numpy costs about 1 us per call on tiny arrays, so the hot path is a straight-line Python
function generated once per model with every parameter inlined as a float literal (unrolled
standardisation, forward substitution with the Cholesky factors and the K x K transition), which
runs in a few microseconds for K=3..4, D=4. The generated source contains only ``repr`` of floats
and integers built from validated arrays, never user strings. A vectorised numpy backend computes
the same recursion; it is the reference and the fallback for large K*D^2.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from hmm_strategy.model import RegimeHMM

Backend = Literal["auto", "python", "numpy"]

_LOG_2PI = math.log(2.0 * math.pi)
_NDARRAY = np.ndarray  # one global lookup on the per-bar path instead of two
# Above this many unrolled multiply-adds per update the generated source gets unwieldy; use numpy.
_MAX_UNROLLED_OPS = 6_000
STATE_FORMAT = 1

_StepResult = tuple[tuple[float, ...], float] | None  # (alpha_t, log p(x_t | past)) or None
_StepFn = Callable[..., _StepResult]


class ForwardFilter:
    """Exact forward filter P(state_t | x_1..t) updated one observation at a time.

    Build it with :meth:`from_model`; call :meth:`update` with each new raw feature row. The filter
    checkpoints to plain JSON data with :meth:`state` and resumes bit-identically with
    :meth:`restore` / :meth:`from_state`.
    """

    def __init__(
        self,
        startprob: Any,
        transmat: Any,
        means: Any,
        covars: Any,
        scaler_mean: Any,
        scaler_std: Any,
        *,
        backend: Backend = "auto",
    ) -> None:
        pi, a, mu, cov, sm, ss = validate_params(
            startprob, transmat, means, covars, scaler_mean, scaler_std
        )
        k, d = mu.shape
        self.n_states = k
        self.n_features = d
        self._startprob = pi
        self._transmat = a
        self._means = mu
        self._scaler_mean = sm
        self._scaler_std = ss

        chol = cholesky_factors(cov)
        self._chol = chol
        self._chol_inv = np.stack([np.linalg.inv(c) for c in chol])
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        self._log_norm = -0.5 * (d * _LOG_2PI + logdet)  # per-state constant of log b_k
        self.params_digest = _digest(pi, a, mu, cov, sm, ss)

        if backend == "auto":
            backend = "python" if k * d * (d + 3) // 2 <= _MAX_UNROLLED_OPS else "numpy"
        if backend == "python":
            self._first, self._step = _compile_kernels(pi, a, mu, chol, self._log_norm, sm, ss)
        elif backend == "numpy":
            self._first, self._step = self._numpy_first, self._numpy_step
        else:
            raise ValueError(f"backend must be 'auto', 'python' or 'numpy', was {backend!r}")
        self.backend: str = backend
        self.reset()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_model(cls, model: RegimeHMM, *, backend: Backend = "auto") -> ForwardFilter:
        """Filter for a fitted :class:`~hmm_strategy.model.RegimeHMM` (canonical state order)."""
        return cls(*model.fitted_arrays(), backend=backend)

    @classmethod
    def from_state(
        cls, model: RegimeHMM, state: Mapping[str, Any], *, backend: Backend = "auto"
    ) -> ForwardFilter:
        """Filter for ``model`` resumed from a :meth:`state` checkpoint."""
        filt = cls.from_model(model, backend=backend)
        filt.restore(state)
        return filt

    # -------------------------------------------------------------------------------- recursion
    def reset(self) -> None:
        """Forget all observations; the next update uses the initial distribution."""
        self._alpha: tuple[float, ...] | None = None
        self.n_steps = 0
        self.log_likelihood = 0.0
        self.last_log_likelihood: float | None = None

    def update(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """Add one raw feature row; return the filtered probabilities, shape (n_states,)."""
        return np.array(self.update_tuple(x))

    def update_tuple(self, x: Sequence[float] | np.ndarray) -> tuple[float, ...]:
        """:meth:`update` returning a tuple of Python floats (no array allocation)."""
        if type(x) is _NDARRAY:
            x = x.tolist()
        alpha = self._alpha
        try:
            out = self._first(x) if alpha is None else self._step(x, alpha)
        except (ValueError, TypeError):
            self._check_row(x)
            raise
        if out is None:  # non-finite input, or an underflow the log-space path resolves
            out = self._log_space_step(x)
        alpha, ll = out
        self._alpha = alpha
        self.n_steps += 1
        self.log_likelihood += ll
        self.last_log_likelihood = ll
        return alpha

    def update_many(self, X: Any) -> np.ndarray:
        """Feed the rows of ``X`` in order (continuing from the current state); (T, n_states)."""
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n_samples, {self.n_features}), got {arr.shape}")
        out = np.empty((arr.shape[0], self.n_states))
        update = self.update_tuple
        for t, row in enumerate(arr.tolist()):
            out[t] = update(row)
        return out

    @property
    def probs(self) -> tuple[float, ...] | None:
        """Last filtered probabilities (None before the first update)."""
        return self._alpha

    # ----------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Plain JSON-able checkpoint: resuming from it continues bit-identically."""
        return {
            "format": STATE_FORMAT,
            "n_states": self.n_states,
            "n_features": self.n_features,
            "params_digest": self.params_digest,
            "n_steps": self.n_steps,
            "alpha": None if self._alpha is None else list(self._alpha),
            "log_likelihood": self.log_likelihood,
            "last_log_likelihood": self.last_log_likelihood,
        }

    def restore(self, state: Mapping[str, Any], *, check_model: bool = True) -> None:
        """Resume from :meth:`state`; ``check_model`` rejects a checkpoint of another model."""
        try:
            fmt = state["format"]
            k = state["n_states"]
            n_steps = state["n_steps"]
            alpha = state["alpha"]
            ll = state["log_likelihood"]
            last = state["last_log_likelihood"]
            digest = state["params_digest"]
        except KeyError as exc:
            raise ValueError(f"filter state is missing field {exc.args[0]!r}") from None
        except TypeError:
            kind = type(state).__name__
            raise ValueError(f"filter state must be a mapping, got {kind}") from None
        if fmt != STATE_FORMAT:
            raise ValueError(f"unsupported filter state format {fmt!r} (expected {STATE_FORMAT})")
        if k != self.n_states:
            raise ValueError(f"filter state has n_states={k}, this filter has {self.n_states}")
        if check_model and digest != self.params_digest:
            raise ValueError(
                "filter state was saved with different model parameters "
                f"(digest {digest!r}, this model {self.params_digest!r})"
            )
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"filter state n_steps must be an int >= 0, was {n_steps!r}")
        if n_steps == 0:
            if alpha is not None:
                raise ValueError("filter state has n_steps=0 but a non-null alpha")
            self.reset()
            return
        if alpha is None or len(alpha) != k:
            raise ValueError(f"filter state alpha must be a list of {k} probabilities")
        alpha_t = tuple(float(v) for v in alpha)
        if not all(math.isfinite(v) and v >= 0.0 for v in alpha_t) or abs(sum(alpha_t) - 1) > 1e-9:
            raise ValueError(f"filter state alpha is not a probability vector: {alpha_t}")
        if not math.isfinite(float(ll)) or (last is not None and not math.isfinite(float(last))):
            raise ValueError("filter state log-likelihoods must be finite")
        self._alpha = alpha_t
        self.n_steps = n_steps
        self.log_likelihood = float(ll)
        self.last_log_likelihood = None if last is None else float(last)

    # ------------------------------------------------------------------------------- internals
    def _check_row(self, x: Any) -> None:
        try:
            n = len(x)
        except TypeError:
            raise ValueError(f"x must be a sequence of {self.n_features} floats") from None
        if n != self.n_features:
            raise ValueError(f"x has {n} features, the model expects {self.n_features}")

    def _log_emissions(self, x: Any) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self._scaler_mean) / self._scaler_std
        y = np.einsum("kij,kj->ki", self._chol_inv, z - self._means)
        return self._log_norm - 0.5 * np.einsum("ki,ki->k", y, y)

    def _numpy_first(self, x: Any) -> _StepResult:
        return self._numpy_combine(self._startprob, self._log_emissions(x))

    def _numpy_step(self, x: Any, alpha: tuple[float, ...]) -> _StepResult:
        return self._numpy_combine(np.asarray(alpha) @ self._transmat, self._log_emissions(x))

    @staticmethod
    def _numpy_combine(pred: np.ndarray, logb: np.ndarray) -> _StepResult:
        mx = logb.max()
        p = pred * np.exp(logb - mx)
        s = p.sum()
        if not 0.0 < s < math.inf:
            return None
        return tuple((p / s).tolist()), float(mx + math.log(s))

    def _log_space_step(self, x: Any) -> tuple[tuple[float, ...], float]:
        """Slow but underflow-proof step; also the place where bad input is reported."""
        self._check_row(x)
        xa = np.asarray(x, dtype=np.float64)
        if not np.isfinite(xa).all():
            raise ValueError(f"x contains NaN or inf: {xa.tolist()}")
        pred = self._startprob if self._alpha is None else np.asarray(self._alpha) @ self._transmat
        with np.errstate(divide="ignore"):
            v = np.log(pred) + self._log_emissions(xa)
        mx = v.max()
        if not math.isfinite(mx):
            raise ValueError(f"x has zero likelihood under every reachable state: {xa.tolist()}")
        w = np.exp(v - mx)
        s = w.sum()
        return tuple((w / s).tolist()), float(mx + math.log(s))


# ---------------------------------------------------------------------------------- helpers
PARAM_SHAPES: dict[str, tuple[str, ...]] = {
    "startprob": ("n_states",),
    "transmat": ("n_states", "n_states"),
    "means": ("n_states", "n_features"),
    "covars": ("n_states", "n_features", "n_features"),
    "scaler_mean": ("n_features",),
    "scaler_std": ("n_features",),
}
PROB_TOL = 1e-6  # rows of startprob/transmat sum to 1 within this (hand-edited files included)


def check_param_shapes(
    params: Mapping[str, Any], *, n_states: int | None = None, n_features: int | None = None,
    where: str = "",
) -> dict[str, np.ndarray]:
    """The six parameter arrays as float64, shape- and finiteness-checked.

    ``n_states``/``n_features`` default to the shape of ``means``. ``ValueError`` names the
    first problem, prefixed with ``where`` (e.g. ``"slow.params."``).
    """
    known = {"n_states": n_states, "n_features": n_features}
    arrs: dict[str, np.ndarray] = {}
    for name, dims in PARAM_SHAPES.items():
        try:
            arrs[name] = np.array(params[name], dtype=np.float64)
        except ValueError:
            shape = "" if None in known.values() else f"{tuple(known[d] for d in dims)} "
            raise ValueError(
                f"{where}{name} is ragged, expected shape {shape}{_label(name)}"
            ) from None
    mu = arrs["means"]
    if n_states is None or n_features is None:
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(
                f"{where}means has shape {mu.shape}, expected (n_states, n_features)"
            )
        n_states, n_features = mu.shape
    sizes = {"n_states": n_states, "n_features": n_features}
    for name, dims in PARAM_SHAPES.items():
        shape = tuple(sizes[dim] for dim in dims)
        if arrs[name].shape != shape:
            raise ValueError(
                f"{where}{name} has shape {arrs[name].shape}, expected {shape} {_label(name)}"
            )
    for name, arr in arrs.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}{name} contains NaN or inf")
    return arrs


def check_param_values(arrs: Mapping[str, np.ndarray], *, where: str = "") -> np.ndarray:
    """Probabilities, scales and covariances of shape-checked arrays make sense; returns the
    covariances' Cholesky factors (each must be symmetric positive definite)."""
    for name in ("startprob", "transmat"):
        a = arrs[name]
        sums = a.sum(axis=-1)
        if (a < 0).any() or (np.abs(sums - 1.0) > PROB_TOL).any():
            raise ValueError(
                f"{where}{name} rows must be non-negative and sum to 1, "
                f"row sums {np.atleast_1d(sums).tolist()}"
            )
    if (arrs["scaler_std"] <= 0).any():
        raise ValueError(f"{where}scaler_std must be > 0, got {arrs['scaler_std'].tolist()}")
    cov = arrs["covars"]
    for i in range(cov.shape[0]):
        if not np.allclose(cov[i], cov[i].T, rtol=1e-10, atol=1e-12):
            raise ValueError(f"{where}covars[{i}] is not symmetric")
    return cholesky_factors(cov, where=where)


def validate_params(
    startprob: Any, transmat: Any, means: Any, covars: Any, scaler_mean: Any, scaler_std: Any
) -> tuple[np.ndarray, ...]:
    """The six parameter arrays as float64, every check of ``check_param_shapes`` and
    ``check_param_values`` passed; the filter, ``RegimeHMM.from_params`` and the artifact loader
    share these checks."""
    arrs = check_param_shapes(
        {
            "startprob": startprob,
            "transmat": transmat,
            "means": means,
            "covars": covars,
            "scaler_mean": scaler_mean,
            "scaler_std": scaler_std,
        }
    )
    check_param_values(arrs)
    return tuple(arrs[name] for name in PARAM_SHAPES)


def _label(name: str) -> str:
    return "(" + ", ".join(PARAM_SHAPES[name]) + ("," if len(PARAM_SHAPES[name]) == 1 else "") + ")"


def cholesky_factors(cov: np.ndarray, *, where: str = "") -> np.ndarray:
    """Lower Cholesky factor of each state's covariance; ``ValueError`` if one is not PD."""
    chol = np.empty_like(cov)
    for i in range(cov.shape[0]):
        try:
            chol[i] = np.linalg.cholesky(cov[i])
        except np.linalg.LinAlgError:
            raise ValueError(f"{where}covars[{i}] is not positive definite") from None
    return chol


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in arrays:
        h.update(repr(arr.shape).encode())
        h.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


def _compile_kernels(
    pi: np.ndarray,
    a: np.ndarray,
    mu: np.ndarray,
    chol: np.ndarray,
    log_norm: np.ndarray,
    sm: np.ndarray,
    ss: np.ndarray,
) -> tuple[_StepFn, _StepFn]:
    """Generate the straight-line first-step and step functions with parameters inlined."""
    k, d = mu.shape

    def f(v: float) -> str:
        return repr(float(v))

    xs = ", ".join(f"x{i}" for i in range(d)) + ("," if d == 1 else "")
    emis = [f"    {xs} = x"]
    emis += [f"    z{i} = (x{i} - {f(sm[i])}) / {f(ss[i])}" for i in range(d)]
    for s in range(k):
        L = chol[s]
        for i in range(d):
            terms = "".join(f" - {f(L[i, j])} * y{j}" for j in range(i))
            emis.append(f"    y{i} = ((z{i} - {f(mu[s, i])}){terms}) / {f(L[i, i])}")
        sq = " + ".join(f"y{i} * y{i}" for i in range(d))
        emis.append(f"    l{s} = {f(log_norm[s])} - 0.5 * ({sq})")
    # mx = max(l0, l1, ...) without the builtin call: the same comparisons in the same order
    # (a later value replaces the running maximum only when strictly greater)
    emis.append("    mx = l0")
    emis += [f"    if l{s} > mx:\n        mx = l{s}" for s in range(1, k)]

    def tail(preds: list[str]) -> list[str]:
        lines = [f"    p{s} = ({preds[s]}) * exp(l{s} - mx)" for s in range(k)]
        lines.append("    s = " + " + ".join(f"p{s}" for s in range(k)))
        lines.append("    if not 0.0 < s < INF:")
        lines.append("        return None")
        out = ", ".join(f"p{s} / s" for s in range(k)) + ("," if k == 1 else "")
        lines.append(f"    return ({out}), mx + log(s)")
        return lines

    first_preds = [f(pi[s]) for s in range(k)]
    step_preds = [" + ".join(f"a{i} * {f(a[i, s])}" for i in range(k)) for s in range(k)]
    alphas = ", ".join(f"a{i}" for i in range(k)) + ("," if k == 1 else "")
    src = "\n".join(
        ["def _first(x):", *emis, *tail(first_preds), "", "def _step(x, alpha):"]
        + [f"    {alphas} = alpha", *emis, *tail(step_preds)]
    )
    namespace: dict[str, Any] = {"exp": math.exp, "log": math.log, "INF": math.inf}
    exec(compile(src, "<hmm_strategy.filter kernel>", "exec"), namespace)  # noqa: S102
    return namespace["_first"], namespace["_step"]
