"""The hierarchical (two-level) regime model: causal coarse bars, the same features and filter on
both levels, no look-ahead on real data, and a known two-level process recovered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hmm_strategy.engine import FitSettings, RegimeEngine, SlowLevel
from hmm_strategy.features import BarAggregator, FeatureSpec, aggregate_bars, feature_matrix
from hmm_strategy.model import RegimeHMM
from hmm_strategy.policy import PolicyConfig
from hmm_strategy.synthetic import generate_two_level_bars
from marketdata.bars import load_bars

OHLCV = ["open", "high", "low", "close", "volume"]
BTC_15M = "binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"
SPY_1H = "fx_or_equity/lean/equity/usa/hour/spy.zip"
POLICY = PolicyConfig(min_confidence=0.8, min_hold_bars=24, cooldown_bars=8)
FIT = FitSettings(warmup_bars=1500, n_restarts=2, n_iter=60)


def run(engine: RegimeEngine, bars: pl.DataFrame) -> list[tuple | None]:
    out = []
    for row in bars.select(OHLCV).iter_rows():
        d = engine.update(*row)
        out.append(None if d is None else (d.probs, d.state, d.slow_state, d.target_exposure))
    return out


def test_streaming_aggregator_is_the_batch_aggregation(data_dir: Path) -> None:
    bars = load_bars(data_dir / BTC_15M).frame.head(5_003)
    batch = aggregate_bars(bars, 16)
    agg = BarAggregator(16)
    stream = [c for c in (agg.update(*r) for r in bars.select(OHLCV).iter_rows()) if c]
    assert len(stream) == batch.height == 5_003 // 16  # the open last coarse bar is not emitted
    assert np.array_equal(np.array(stream), batch.select(OHLCV).to_numpy())
    assert batch["ts_event"].to_list() == bars["ts_event"].to_list()[15::16][: batch.height]
    # a coarse bar closes with its last constituent bar: before that nothing is emitted
    fresh = BarAggregator(4)
    assert [fresh.update(1.0, 2.0, 0.5, 1.5, 1.0) is None for _ in range(4)] == [1, 1, 1, 0]
    resumed = BarAggregator.from_state(json.loads(json.dumps(agg.state())))
    assert resumed.state() == agg.state()


@pytest.fixture(scope="module")
def two_level() -> dict:
    """Two-level synthetic bars; both models fitted on the first half only."""
    bars = generate_two_level_bars(40_000, seed=11)
    level = SlowLevel(features=FeatureSpec(vol_window=6, volume_window=12), warmup_bars=250)
    half = bars.height // 2
    fast_model = RegimeHMM(3, n_restarts=1, n_iter=50).fit(
        feature_matrix(bars.head(half), FeatureSpec())
    )
    coarse = aggregate_bars(bars.head(half), 16)
    slow_model = level.model(FIT).fit(feature_matrix(coarse, level.features))
    return {"bars": bars, "level": level, "fast": fast_model, "slow": slow_model, "half": half}


def test_slow_level_filter_equals_batch_and_recovers_the_slow_regime(two_level: dict) -> None:
    bars, level, half = two_level["bars"], two_level["level"], two_level["half"]
    engine = RegimeEngine(
        FeatureSpec(), POLICY, FIT, two_level["fast"], "test",
        slow=level, slow_model=two_level["slow"],
    )  # fmt: skip
    streamed = []
    for i, row in enumerate(bars.select(OHLCV).iter_rows()):
        engine.update(*row)
        if (i + 1) % 16 == 0 and engine.slow.filter.probs is not None:
            streamed.append(engine.slow.filter.probs)
    # the filter-equality test for the slow level: streaming == batch aggregation + features
    X = feature_matrix(aggregate_bars(bars, 16), level.features)
    batch = two_level["slow"].filter_proba(X)
    assert len(streamed) == len(batch)
    np.testing.assert_allclose(np.array(streamed), batch, atol=1e-7)

    truth = bars["slow_state"].to_numpy()[15::16][level.features.warmup_bars :][: len(batch)]
    pred = np.array(streamed).argmax(axis=1)
    test = slice((half // 16) - level.features.warmup_bars, None)  # coarse bars after training
    match = float((pred[test] == truth[test]).mean())
    assert match >= 0.90, f"slow state recovered on {match:.1%} of held-out coarse bars"


@pytest.mark.parametrize(
    ("rel", "bars_per_bar", "prefix"),
    [(BTC_15M, 16, 20_000), (SPY_1H, 7, 20_000)],
    ids=["btcusdt-15m->4h", "spy-1h->7h"],
)
def test_two_level_engine_decides_identically_on_a_prefix(
    data_dir: Path, rel: str, bars_per_bar: int, prefix: int
) -> None:
    """Truncation: the first N decisions do not change when later bars exist (in-run fits of
    both levels included), and a checkpoint mid-run resumes bit-identically."""
    bars = load_bars(data_dir / rel).frame
    level = SlowLevel(bars_per_bar=bars_per_bar, warmup_bars=250)

    def engine() -> RegimeEngine:
        return RegimeEngine(FeatureSpec(), POLICY, FIT, slow=level)

    full = run(engine(), bars)
    decided = [d for d in full[:prefix] if d is not None]
    assert len(decided) > prefix // 2  # both levels warmed up well before N
    assert {d[2] for d in decided} == {0, 1} and len({d[3] for d in decided}) > 1
    assert run(engine(), bars.head(prefix)) == full[:prefix]

    first = engine()
    run(first, bars.head(prefix))
    state = json.loads(json.dumps(first.state()))
    resumed = engine()
    resumed.restore(state, first.model, first.slow_model)
    assert run(resumed, bars.slice(prefix)) == full[prefix:]
