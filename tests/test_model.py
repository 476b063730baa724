"""RegimeHMM: restarts, canonical state order, BIC selection, training-window scaler, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM

from hmm_strategy.model import RegimeHMM, canonical_order, n_free_parameters

# A clearly separated 3-state process over 4 "features" (drift, vol, range, volume-like).
# The generating states are deliberately NOT in ascending order of feature 0.
TRUE_MEANS = np.array(
    [
        [0.0, -1.0, 0.0, 0.0],
        [3.0, 0.5, 2.0, -1.0],
        [-3.0, 2.0, 0.0, 1.0],
    ]
)
TRUE_TRANSMAT = np.array([[0.96, 0.02, 0.02], [0.03, 0.95, 0.02], [0.02, 0.03, 0.95]])


def sample_hmm(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = GaussianHMM(3, covariance_type="full")
    gen.startprob_ = np.array([0.5, 0.3, 0.2])
    gen.transmat_ = TRUE_TRANSMAT
    gen.means_ = TRUE_MEANS
    gen.covars_ = np.array([np.eye(4) * v + 0.1 for v in (0.5, 0.3, 1.0)])
    X, states = gen.sample(n, random_state=seed)
    return X, states


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return sample_hmm(2000, seed=0)[0]


@pytest.fixture(scope="module")
def fitted(data: np.ndarray) -> RegimeHMM:
    return RegimeHMM(3, n_restarts=3, n_iter=60).fit(data)


def test_restarts_keep_the_best_log_likelihood(data: np.ndarray) -> None:
    # 4 states on 3-state data: EM has several local optima, so the restarts really differ
    single = RegimeHMM(4, n_restarts=1, n_iter=40, random_state=0).fit(data)
    model = RegimeHMM(4, n_restarts=4, n_iter=40, random_state=0).fit(data)
    restarts = model.diagnostics_["restarts"]
    lls = [r["log_likelihood"] for r in restarts]
    assert [r["seed"] for r in restarts] == [0, 1, 2, 3]
    assert max(lls) - min(lls) > 1.0, "restarts should reach different optima here"
    # restart 0 is the single-restart fit; the kept one is the best of all
    assert lls[0] == pytest.approx(single.log_likelihood_, rel=1e-9)
    assert model.log_likelihood_ == pytest.approx(max(lls), rel=1e-12)
    assert model.log_likelihood_ > single.log_likelihood_ + 1.0
    assert model.diagnostics_["best_seed"] == int(np.argmax(lls))
    # the kept parameters are the ones that score that likelihood, after relabelling
    assert model.score(data) == pytest.approx(model.log_likelihood_, rel=1e-9)


def test_canonical_order_is_ascending_and_a_consistent_permutation(
    data: np.ndarray, fitted: RegimeHMM
) -> None:
    means = fitted.means_raw()
    assert np.all(np.diff(means[:, 0]) > 0)
    np.testing.assert_allclose(means, TRUE_MEANS[np.argsort(TRUE_MEANS[:, 0])], atol=0.15)
    order = fitted.diagnostics_["state_order"]
    assert sorted(order) == [0, 1, 2]
    # transmat rows AND columns were permuted with the means: persistence stays on the diagonal
    assert np.all(np.diag(fitted.transmat_) > 0.9)
    np.testing.assert_allclose(fitted.transmat_.sum(axis=1), 1.0)
    np.testing.assert_allclose(
        fitted.transmat_, TRUE_TRANSMAT[np.ix_([2, 0, 1], [2, 0, 1])], atol=0.03
    )


def test_canonical_order_stable_across_seeds_and_refits(data: np.ndarray) -> None:
    models = [RegimeHMM(3, n_restarts=2, n_iter=60, random_state=s).fit(data) for s in (5, 11, 42)]
    ref = models[0]
    for m in models[1:]:
        np.testing.assert_allclose(m.means_raw(), ref.means_raw(), atol=1e-3)
        np.testing.assert_allclose(m.transmat_, ref.transmat_, atol=1e-3)
        np.testing.assert_allclose(
            m.filter_proba(data[:300]), ref.filter_proba(data[:300]), atol=1e-3
        )
    # a refit on more data of the same process keeps the same meaning for each state index
    more = np.vstack([data, sample_hmm(1000, seed=3)[0]])
    refit = RegimeHMM(3, n_restarts=2, n_iter=60, random_state=99).fit(more)
    np.testing.assert_allclose(refit.means_raw(), ref.means_raw(), atol=0.2)


def test_canonical_order_function_breaks_ties_by_feature_1() -> None:
    means = np.array([[0.5, 1.0], [-1.0, 9.0], [0.5, 0.2], [2.0, 0.0]])
    assert canonical_order(means).tolist() == [1, 2, 0, 3]
    assert canonical_order(np.array([[2.0], [-1.0]])).tolist() == [1, 0]


def test_bic_selects_the_true_number_of_states() -> None:
    X, _ = sample_hmm(2000, seed=1)
    model = RegimeHMM("bic", n_states_grid=(2, 3, 4, 5), n_restarts=2, n_iter=50).fit(X)
    assert model.n_states_ == 3
    table = model.diagnostics_["bic_by_n_states"]
    assert [row["n_states"] for row in table] == [2, 3, 4, 5]
    assert model.bic_ == min(row["bic"] for row in table)
    assert model.diagnostics_["selection"] == "bic"
    # bic() is hmmlearn's BIC on the standardised features, same parameter count
    assert model.bic(X) == pytest.approx(model.to_hmmlearn().bic(model.transform(X)), rel=1e-12)
    assert model.bic(X) == pytest.approx(model.bic_, rel=1e-9)


def test_scaler_is_fitted_on_the_training_window_only() -> None:
    X, _ = sample_hmm(3000, seed=2)
    X = X + np.linspace(0.0, 5.0, len(X))[:, None]  # drifting features: later rows differ
    n = 1500
    model = RegimeHMM(3, n_restarts=1, n_iter=30).fit(X[:n])
    np.testing.assert_array_equal(model.scaler_mean_, X[:n].mean(axis=0))
    np.testing.assert_array_equal(model.scaler_std_, X[:n].std(axis=0))
    assert not np.allclose(model.scaler_mean_, X.mean(axis=0))
    np.testing.assert_allclose(model.transform(X[n:]), (X[n:] - X[:n].mean(0)) / X[:n].std(0))


def test_constant_feature_gets_unit_scale() -> None:
    X, _ = sample_hmm(1500, seed=4)
    X[:, 3] = 7.0
    model = RegimeHMM(2, n_restarts=1, n_iter=20).fit(X)
    assert model.scaler_std_[3] == 1.0
    assert np.isfinite(model.filter_proba(X[:50])).all()


def test_predict_filter_and_hmmlearn_agree(data: np.ndarray, fitted: RegimeHMM) -> None:
    Z = fitted.transform(data[:400])
    smoothed = fitted.predict_proba(data[:400])
    np.testing.assert_allclose(smoothed, fitted.to_hmmlearn().predict_proba(Z), atol=1e-12)
    filtered = fitted.filter_proba(data[:400])
    assert filtered.shape == (400, 3)
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0)
    # the last filtered row is the last smoothed row (no future left to use) ...
    np.testing.assert_allclose(filtered[-1], smoothed[-1], atol=1e-8)
    # ... but earlier rows differ: smoothing looks ahead, the filter does not
    assert np.abs(filtered[:-1] - smoothed[:-1]).max() > 1e-3


def test_lengths_split_sequences(data: np.ndarray, fitted: RegimeHMM) -> None:
    both = fitted.filter_proba(data[:200], lengths=[120, 80])
    np.testing.assert_allclose(both[120:], fitted.filter_proba(data[120:200]), atol=1e-15)
    assert fitted.score(data[:200], lengths=[120, 80]) == pytest.approx(
        fitted.score(data[:120]) + fitted.score(data[120:200])
    )
    model = RegimeHMM(3, n_restarts=1, n_iter=20).fit(data, lengths=[1000, 1000])
    assert model.diagnostics_["n_sequences"] == 2
    with pytest.raises(ValueError, match="lengths"):
        fitted.filter_proba(data[:200], lengths=[100, 50])


def test_expected_durations_and_diagnostics_are_plain_data(fitted: RegimeHMM) -> None:
    np.testing.assert_allclose(fitted.expected_durations(), 1.0 / (1.0 - np.diag(fitted.transmat_)))
    json.dumps(fitted.diagnostics_, allow_nan=False)  # raises if numpy or NaN slipped in
    assert fitted.diagnostics_["n_samples"] == 2000
    assert fitted.covars_.shape == (3, 4, 4)
    assert fitted.n_states_ == 3 and fitted.n_features_ == 4


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "tied"])
def test_other_covariance_types(data: np.ndarray, covariance_type: str) -> None:
    model = RegimeHMM(3, covariance_type=covariance_type, n_restarts=1, n_iter=30).fit(data)
    assert model.covars_.shape == (3, 4, 4)  # always stored full
    if covariance_type != "tied":
        off = model.covars_ - np.stack([np.diag(np.diag(c)) for c in model.covars_])
        assert np.all(off == 0.0)
    hmm = model.to_hmmlearn()
    assert hmm.covariance_type == covariance_type
    Z = model.transform(data[:100])
    np.testing.assert_allclose(
        model.filter_proba(data[:100])[-1], hmm.predict_proba(Z)[-1], atol=1e-8
    )
    assert model.score(data) == pytest.approx(model.log_likelihood_, rel=1e-9)
    assert model.bic(data) == pytest.approx(hmm.bic(model.transform(data)), rel=1e-12)


def test_bad_input_raises_clear_errors(data: np.ndarray, fitted: RegimeHMM) -> None:
    bad = data.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 1 row\(s\), first at row 17"):
        RegimeHMM(3).fit(bad)
    bad[17, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        RegimeHMM(3).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        RegimeHMM(3).fit(data[:, 0])
    need = 10 * n_free_parameters(3, 4)
    with pytest.raises(ValueError, match=f"too few rows to fit: got 100, need at least {need}"):
        RegimeHMM(3).fit(data[:100])
    with pytest.raises(ValueError, match="n_states=5"):
        RegimeHMM("bic", n_states_grid=(2, 5)).fit(data[:800])
    with pytest.raises(ValueError, match="model was fitted with 4"):
        fitted.transform(data[:, :3])
    with pytest.raises(ValueError, match="n_states"):
        RegimeHMM(0)
    with pytest.raises(ValueError, match="covariance_type"):
        RegimeHMM(3, covariance_type="banana")
    with pytest.raises(RuntimeError, match="not fitted"):
        RegimeHMM(3).filter_proba(data)


def test_from_params_checks_the_covariance_structure(fitted: RegimeHMM) -> None:
    params = {
        "startprob": fitted.startprob_,
        "transmat": fitted.transmat_,
        "means": fitted.means_,
        "covars": fitted.covars_,
        "scaler_mean": fitted.scaler_mean_,
        "scaler_std": fitted.scaler_std_,
    }
    same = RegimeHMM.from_params(**params)
    np.testing.assert_array_equal(same.covars_, fitted.covars_)
    with pytest.raises(ValueError, match="off-diagonal"):
        RegimeHMM.from_params(**params, covariance_type="diag")
    with pytest.raises(ValueError, match="transmat rows must be non-negative and sum to 1"):
        RegimeHMM.from_params(**{**params, "transmat": fitted.transmat_ * 0.5})
    with pytest.raises(ValueError, match="covars has shape"):
        RegimeHMM.from_params(**{**params, "covars": fitted.covars_[:, :3, :3]})


def test_sticky_prior_lengthens_regimes_and_zero_changes_nothing(
    data: np.ndarray, fitted: RegimeHMM
) -> None:
    params = fitted.get_params()
    same = RegimeHMM(**{**params, "sticky": 0.0}).fit(data)
    np.testing.assert_array_equal(same.transmat_, fitted.transmat_)
    np.testing.assert_array_equal(same.means_, fitted.means_)
    sticky = RegimeHMM(**{**params, "sticky": 2_000.0}).fit(data)
    assert (np.diag(sticky.transmat_) > np.diag(fitted.transmat_)).all()
    assert (sticky.expected_durations() > fitted.expected_durations()).all()
    with pytest.raises(ValueError, match="sticky"):
        RegimeHMM(sticky=-1.0)
