"""PSR/DSR (Bailey & López de Prado) against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.metrics import (
    day_returns,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    sharpe_moments,
)


def test_psr_normal_returns_by_hand() -> None:
    # SR 0.1 over 253 returns, normal: z = 0.1 * sqrt(252) / sqrt(1 + 0.5 * 0.01) = 1.58350
    assert probabilistic_sharpe(0.1, 253) == pytest.approx(0.943350, abs=1e-5)


def test_psr_skewed_fat_tailed_against_a_benchmark_by_hand() -> None:
    # var = 1 - (-0.5)(0.1) + (5 - 1)/4 * 0.01 = 1.06; z = 0.05 * sqrt(99) / sqrt(1.06) = 0.48320
    assert probabilistic_sharpe(0.1, 100, -0.5, 5.0, 0.05) == pytest.approx(0.685526, abs=1e-5)


def test_expected_max_sharpe_by_hand() -> None:
    # sqrt(0.01) * (0.42278 * z(0.9) + 0.57722 * z(1 - 1/(10e))) = 0.1 * (0.54182 + 1.03287)
    assert expected_max_sharpe(10, 0.01) == pytest.approx(0.157460, abs=1e-5)
    assert expected_max_sharpe(1, 0.01) == 0.0


def test_deflated_sharpe_is_psr_against_the_expected_maximum() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, 500)
    m = sharpe_moments(r)
    trials = [m["sharpe"], 0.0, 0.02, -0.03]
    d = deflated_sharpe(r, trials)
    sr0 = expected_max_sharpe(4, float(np.var(trials, ddof=1)))
    assert d["n_trials"] == 4 and d["expected_max_sharpe"] == pytest.approx(sr0)
    assert d["dsr"] == pytest.approx(
        probabilistic_sharpe(m["sharpe"], 500, m["skew"], m["kurtosis"], sr0)
    )
    assert d["dsr"] < d["psr"]  # more trials can only raise the bar


def test_day_returns_skip_days_without_bars() -> None:
    day = 86_400 * 10**9
    ts = np.array([0, day // 2, 3 * day, 3 * day + 1])  # day 0 (two bars), nothing, day 3
    pnl = np.array([10.0, 20.0, 20.0, 30.0])
    r = day_returns(ts, pnl, 100.0)
    assert r == pytest.approx([0.2, 10.0 / 120.0])
    assert math.isnan(probabilistic_sharpe(0.1, 1))
