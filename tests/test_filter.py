"""ForwardFilter against hmmlearn's public API, checkpoint/resume, robustness and speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hmmlearn.hmm import GaussianHMM

from hmm_strategy.filter import ForwardFilter
from hmm_strategy.model import RegimeHMM

BTC_15M = "binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"


def sample_hmm(n: int, seed: int) -> np.ndarray:
    """4 feature-like columns (return, vol, range, volume) from a known 3-state Gaussian HMM."""
    gen = GaussianHMM(3, covariance_type="full")
    gen.startprob_ = np.array([0.3, 0.4, 0.3])
    gen.transmat_ = np.array([[0.97, 0.02, 0.01], [0.02, 0.96, 0.02], [0.01, 0.03, 0.96]])
    gen.means_ = np.array(
        [[-0.002, 0.012, 0.015, 0.8], [0.0, 0.006, 0.008, 0.0], [0.001, 0.004, 0.005, -0.5]]
    )
    corr = np.full((4, 4), 0.3) + 0.7 * np.eye(4)  # correlated features in the active states
    scales = (
        np.array([0.012, 0.003, 0.004, 1.0]),
        np.array([0.006, 0.0015, 0.002, 0.8]),
        np.array([0.003, 0.001, 0.0012, 0.6]),
    )
    gen.covars_ = np.array([corr * np.outer(s, s) for s in scales[:2]] + [np.diag(scales[2] ** 2)])
    X, _ = gen.sample(n, random_state=seed)
    return X


def btc_features(data_dir: Path) -> np.ndarray:
    """Real BTCUSDT 15m features computed inline: log return, |log return|, log(high/low)."""
    bars = pl.read_csv(data_dir / BTC_15M)
    feats = bars.select(
        r=pl.col("close").log().diff(),
        a=pl.col("close").log().diff().abs(),
        g=(pl.col("high") / pl.col("low")).log(),
    ).drop_nulls()
    return feats.to_numpy().astype(np.float64)


@pytest.fixture(scope="module")
def sampled() -> tuple[RegimeHMM, np.ndarray]:
    X = sample_hmm(2500, seed=0)
    return RegimeHMM(3, n_restarts=2, n_iter=60).fit(X[:2000]), X


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> tuple[RegimeHMM, np.ndarray]:
    X = btc_features(data_dir)
    assert X.shape[0] > 30_000 and np.isfinite(X).all()
    return RegimeHMM(3, n_restarts=2, n_iter=50).fit(X[:3000]), X


def assert_matches_hmmlearn(model: RegimeHMM, X: np.ndarray, steps: list[int]) -> None:
    """Filter output at t == last row of hmmlearn predict_proba(Z[:t+1]); LL == score(Z[:t+1])."""
    hmm = model.to_hmmlearn()
    Z = model.transform(X)
    filt = ForwardFilter.from_model(model)
    check = set(steps)
    prev_score = 0.0
    for t in range(max(steps) + 1):
        probs = filt.update(X[t])
        if t not in check:
            continue
        expected = hmm.predict_proba(Z[: t + 1])[-1]
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-8, err_msg=f"t={t}")
        score = hmm.score(Z[: t + 1])
        assert filt.log_likelihood == pytest.approx(score, rel=1e-10, abs=1e-8), f"t={t}"
        if t - 1 in check or t == 0:
            assert filt.last_log_likelihood == pytest.approx(score - prev_score, abs=1e-7)
        prev_score = score
        assert filt.n_steps == t + 1


def test_matches_hmmlearn_on_sampled_hmm(sampled: tuple[RegimeHMM, np.ndarray]) -> None:
    model, X = sampled
    # in-sample and out-of-sample rows (the filter is applied to bars after the training window)
    assert_matches_hmmlearn(model, X, list(range(300)))
    assert_matches_hmmlearn(model, X[2000:], list(range(0, 500, 3)))


def test_matches_hmmlearn_on_real_btcusdt(btc: tuple[RegimeHMM, np.ndarray]) -> None:
    model, X = btc
    assert_matches_hmmlearn(model, X, list(range(0, 300, 2)))
    # out of sample, including the heavy tails of later 2024
    assert_matches_hmmlearn(model, X[20_000:], [*range(0, 200), *range(200, 1200, 25)])


def test_filter_proba_is_causal(sampled: tuple[RegimeHMM, np.ndarray]) -> None:
    model, X = sampled
    base = model.filter_proba(X[:400])
    changed = X[:400].copy()
    changed[250:] = changed[250:][::-1] * 3.0  # rewrite the "future"
    after = model.filter_proba(changed)
    np.testing.assert_array_equal(base[:250], after[:250])
    assert np.abs(base[250:] - after[250:]).max() > 1e-3


def test_python_and_numpy_backends_agree(btc: tuple[RegimeHMM, np.ndarray]) -> None:
    model, X = btc
    fast = ForwardFilter.from_model(model, backend="python")
    ref = ForwardFilter.from_model(model, backend="numpy")
    assert (fast.backend, ref.backend) == ("python", "numpy")
    np.testing.assert_allclose(fast.update_many(X[:3000]), ref.update_many(X[:3000]), atol=1e-12)
    assert fast.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-12)


def test_state_round_trip_resumes_bit_identically(btc: tuple[RegimeHMM, np.ndarray]) -> None:
    model, X = btc
    straight = ForwardFilter.from_model(model)
    expected = straight.update_many(X[:600])

    first = ForwardFilter.from_model(model)
    first.update_many(X[:250])
    checkpoint = json.loads(json.dumps(first.state()))  # plain JSON data, through text
    resumed = ForwardFilter.from_state(model, checkpoint)
    assert resumed.state() == first.state()
    rest = resumed.update_many(X[250:600])
    np.testing.assert_array_equal(rest, expected[250:])
    assert resumed.log_likelihood == straight.log_likelihood
    assert resumed.last_log_likelihood == straight.last_log_likelihood
    assert resumed.n_steps == 600

    # a fresh checkpoint (before any bar) resumes to the initial distribution
    empty = ForwardFilter.from_model(model)
    empty.restore(json.loads(json.dumps(ForwardFilter.from_model(model).state())))
    np.testing.assert_array_equal(empty.update_many(X[:10]), expected[:10])


def test_restore_rejects_bad_or_foreign_state(
    btc: tuple[RegimeHMM, np.ndarray], sampled: tuple[RegimeHMM, np.ndarray]
) -> None:
    model, X = btc
    filt = ForwardFilter.from_model(model)
    filt.update_many(X[:20])
    state = filt.state()
    other = ForwardFilter.from_model(RegimeHMM(3, n_restarts=1, n_iter=20).fit(X[3000:6000]))
    with pytest.raises(ValueError, match="different model parameters"):
        other.restore(state)
    with pytest.raises(ValueError, match="n_states=3, this filter has"):
        ForwardFilter.from_model(RegimeHMM(2, n_restarts=1, n_iter=10).fit(X[:3000])).restore(state)
    with pytest.raises(ValueError, match="missing field 'alpha'"):
        filt.restore({k: v for k, v in state.items() if k != "alpha"})
    with pytest.raises(ValueError, match="not a probability vector"):
        filt.restore({**state, "alpha": [0.5, 0.5, 0.5]})
    with pytest.raises(ValueError, match="n_steps"):
        filt.restore({**state, "n_steps": -1})
    assert filt.state() == state  # failed restores leave the filter untouched


def test_reset_and_bad_rows(sampled: tuple[RegimeHMM, np.ndarray]) -> None:
    model, X = sampled
    filt = ForwardFilter.from_model(model)
    first = filt.update_many(X[:50])
    before = filt.state()
    with pytest.raises(ValueError, match="NaN or inf"):
        filt.update([np.nan, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        filt.update(np.array([np.inf, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="x has 3 features, the model expects 4"):
        filt.update([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="x has 5 features"):
        filt.update(np.zeros(5))
    with pytest.raises(ValueError, match="zero likelihood under every reachable state"):
        filt.update([1e200, 0.0, 0.0, 0.0])  # finite but absurd: no state can emit it
    assert filt.state() == before  # rejected rows do not advance the filter
    filt.reset()
    assert filt.n_steps == 0 and filt.probs is None and filt.log_likelihood == 0.0
    np.testing.assert_array_equal(filt.update_many(X[:50]), first)


def test_underflow_falls_back_to_log_space() -> None:
    """The most likely emitting state is unreachable: the fast path's sum underflows to 0."""
    model = RegimeHMM.from_params(
        startprob=[1.0, 0.0],
        transmat=[[1.0, 0.0], [0.0, 1.0]],
        means=[[100.0], [0.0]],
        covars=[[[1.0]], [[1.0]]],
        scaler_mean=[0.0],
        scaler_std=[1.0],
    )
    hmm = model.to_hmmlearn()
    X = np.array([[0.0], [1.0], [99.0], [-5.0]])
    for backend in ("python", "numpy"):
        filt = ForwardFilter.from_model(model, backend=backend)
        for t in range(len(X)):
            probs = filt.update(X[t])
            np.testing.assert_allclose(probs, hmm.predict_proba(X[: t + 1])[-1], atol=1e-12)
            assert filt.log_likelihood == pytest.approx(hmm.score(X[: t + 1]), rel=1e-12)
        np.testing.assert_array_equal(probs, [1.0, 0.0])


def test_single_state_and_single_feature_models() -> None:
    model = RegimeHMM.from_params(
        startprob=[1.0],
        transmat=[[1.0]],
        means=[[0.5]],
        covars=[[[2.0]]],
        scaler_mean=[1.0],
        scaler_std=[2.0],
    )
    X = np.array([[1.0], [3.0], [-1.0]])
    filt = ForwardFilter.from_model(model)
    np.testing.assert_array_equal(filt.update_many(X), np.ones((3, 1)))
    assert filt.log_likelihood == pytest.approx(model.score(X), rel=1e-12)


def test_update_is_fast(sampled: tuple[RegimeHMM, np.ndarray]) -> None:
    """Loose bound (shared CI cores): a per-bar hmmlearn call would cost ~100x more."""
    model, X = sampled
    filt = ForwardFilter.from_model(model)
    rows = [tuple(r) for r in X.tolist()] * 2
    best = float("inf")
    for _ in range(3):
        filt.reset()
        start = time.perf_counter()
        for row in rows:
            filt.update(row)
        best = min(best, (time.perf_counter() - start) / len(rows))
    assert best < 50e-6, f"{best * 1e6:.1f} us per update"
