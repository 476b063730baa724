"""Feature definitions: batch (polars) and streaming twins agree, on real data and edge cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm_strategy import features as features_module
from hmm_strategy.features import (
    FAMILIES,
    FEATURE_NAMES,
    FeatureFamily,
    FeatureSpec,
    StreamingFeatures,
    batch_features,
    column_of,
    feature_matrix,
    order_columns,
)
from hmm_strategy.model import canonical_order

TOL = 1e-9
OHLCV = ["open", "high", "low", "close", "volume"]
# Paths relative to the data_dir fixture (README's "data/..." paths minus the leading "data/").
BTC_15M = "binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"
GBPUSD_M1 = "fx_or_equity/gbpusd-m1-bid-2012.csv"


# ------------------------------------------------------------------------------------ helpers


def load_bars(data_dir: Path, rel: str) -> pl.DataFrame:
    """Real bars as polars; files without volume (FXCM) get volume 0.0."""
    df = pl.read_csv(data_dir / rel)
    if "volume" not in df.columns:
        df = df.with_columns(volume=pl.lit(0.0))
    return df


def stream_all(spec: FeatureSpec, bars: pl.DataFrame) -> tuple[int, np.ndarray]:
    """Run StreamingFeatures over every bar: (number of None outputs, stacked outputs)."""
    sf = StreamingFeatures(spec)
    outs = [sf.update(*row) for row in bars.select(OHLCV).iter_rows()]
    n_none = sum(o is None for o in outs)
    assert all(o is None for o in outs[:n_none]), "None after the first feature row"
    assert all(o is not None for o in outs[n_none:])
    rows = [o for o in outs if o is not None]
    mat = np.vstack(rows) if rows else np.empty((0, len(FEATURE_NAMES)))
    return n_none, mat


def assert_twins_agree(spec: FeatureSpec, bars: pl.DataFrame) -> np.ndarray:
    batch = feature_matrix(bars, spec)
    n_none, stream = stream_all(spec, bars)
    expected_warmup = min(spec.warmup_bars, bars.height)
    assert n_none == expected_warmup
    assert batch.shape == (bars.height - expected_warmup, len(FEATURE_NAMES)) == stream.shape
    assert np.isfinite(batch).all() and np.isfinite(stream).all()
    diff = np.abs(batch - stream)
    if diff.size:
        worst = diff.max(axis=0)
        assert (worst <= TOL).all(), dict(zip(FEATURE_NAMES, worst.tolist(), strict=True))
    return batch


def make_bars(close, volume, range_factor=None) -> pl.DataFrame:
    close = np.asarray(close, dtype=np.float64)
    high = close if range_factor is None else close * np.asarray(range_factor, dtype=np.float64)
    return pl.DataFrame(
        {"open": close, "high": high, "low": close, "close": close, "volume": volume}
    )


# ------------------------------------------------------------------------------------ spec


def test_spec_defaults_names_and_warmup() -> None:
    spec = FeatureSpec()
    assert (spec.vol_window, spec.volume_window) == (20, 50)
    assert spec.names == ("trend", "realized_vol", "norm_range", "volume_z")
    # realized_vol first complete at bar w (returns 1..w); volume_z at bar m-1.
    assert spec.warmup_bars == 49
    assert FeatureSpec(vol_window=20, volume_window=10).warmup_bars == 20
    assert FeatureSpec(vol_window=2, volume_window=2).warmup_bars == 2
    assert msgspec.json.decode(msgspec.json.encode(spec), type=FeatureSpec) == spec


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vol_window": 1}, "vol_window"),
        ({"vol_window": 0}, "vol_window"),
        ({"volume_window": 1}, "volume_window"),
        ({"volume_window": -5}, "volume_window"),
        ({"vol_window": 2.5}, "vol_window"),
        ({"volume_window": True}, "volume_window"),
    ],
)
def test_spec_rejects_bad_windows(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FeatureSpec(**kwargs)


def test_spec_decoding_is_strict() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"vol_window": 20, "vol_windw": 5}, FeatureSpec)
    with pytest.raises(msgspec.ValidationError, match="vol_window must be >= 2"):
        msgspec.convert({"vol_window": 1}, FeatureSpec)


# ------------------------------------------------------------------------------------ registry


def test_the_registry_is_the_one_list_of_features() -> None:
    """Columns, roles, warm-up and checkpoint keys all come from the families, once each."""
    assert tuple(n for f in FAMILIES for n in f.names) == FEATURE_NAMES
    assert FeatureSpec().names == FEATURE_NAMES
    keys = [k for f in FAMILIES for k in f.state_keys]
    assert len(keys) == len(set(keys)), "two families claim the same checkpoint key"
    for spec in (FeatureSpec(), FeatureSpec(vol_window=30, volume_window=5)):
        assert spec.warmup_bars == max(f.warmup(spec) for f in FAMILIES)
        for family in FAMILIES:
            assert tuple(family(spec).state()) == family.state_keys
            assert len(family.roles) == len(family.names)
    assert (column_of(FEATURE_NAMES, "trend"), column_of(FEATURE_NAMES, "volatility")) == (0, 1)
    assert FeatureSpec().column("volatility") == FEATURE_NAMES.index("realized_vol")
    with pytest.raises(ValueError, match="no feature with role 'trend'"):
        column_of(["norm_range", "volume_z"], "trend")


def test_state_order_follows_the_trend_role_not_a_column_position() -> None:
    """The canonical state order keys on whichever column is the trend, then the volatility."""
    means = np.array([[0.3, 1.0, 5.0], [-0.2, 2.0, 1.0], [0.1, 0.5, 3.0]])
    assert canonical_order(means, (0, 1)).tolist() == [1, 2, 0]
    moved = means[:, [2, 1, 0]]  # the trend is now the last column
    moved_order = order_columns(["volume_z", "realized_vol", "trend"])
    assert moved_order == (2, 1)
    assert canonical_order(moved, moved_order).tolist() == [1, 2, 0]
    assert order_columns(["norm_range", "trend"]) == (1,)


class _OpenToClose(FeatureFamily):
    """A feature added in one place: log(close / open) of the bar."""

    names = ("open_to_close",)
    roles = ("",)
    __slots__ = ()

    @staticmethod
    def batch(spec: FeatureSpec) -> list[pl.Expr]:
        return [(pl.col("close") / pl.col("open")).log().alias("open_to_close")]

    def update(self, open, high, low, close, volume, emit):  # noqa: A002
        return (math.log(close / open),) if emit else None


def test_a_new_feature_is_one_family_in_the_list(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """Adding a family to FAMILIES extends batch, streaming and the spec's names together."""
    families = (*FAMILIES, _OpenToClose)
    names = (*FEATURE_NAMES, "open_to_close")
    monkeypatch.setattr(features_module, "FAMILIES", families)
    monkeypatch.setattr(features_module, "FEATURE_NAMES", names)
    spec = FeatureSpec()
    assert spec.names == names
    bars = load_bars(data_dir, BTC_15M).head(3_000)
    batch = feature_matrix(bars, spec)
    _, stream = stream_all(spec, bars)
    assert batch.shape == stream.shape == (3_000 - spec.warmup_bars, 5)
    np.testing.assert_allclose(stream, batch, rtol=0, atol=TOL)
    assert "open_to_close" in batch_features(bars, spec).columns


# ------------------------------------------------------------------------------------ definitions


def test_hand_computed_example() -> None:
    """Closes, ranges and volumes picked so every feature has a closed form (L = ln 2)."""
    spec = FeatureSpec(vol_window=2, volume_window=3)
    close = [1.0, 2.0, 1.0, 2.0, 4.0, 4.0]
    high_over_low = [2.0, 4.0, 1.0, 2.0, 8.0, 1.0]
    volume = [0.0, 1.0, 3.0, 7.0, 1.0, 0.0]  # u = ln(1+v) = L * [0, 1, 2, 3, 1, 0]
    bars = make_bars(close, volume, high_over_low)
    L = math.log(2.0)
    expected = np.array(
        [
            # trend (mean of r = L*[_, 1, -1, 1, 1, 0] over 2), realized_vol, norm_range, volume_z
            [0.0, L, 0.0, math.sqrt(1.5)],  # u window [0,1,2]: (2-1)/sqrt(2/3)
            [0.0, L, L, math.sqrt(1.5)],  # [1,2,3]
            [L, L, 3 * L, -math.sqrt(1.5)],  # [2,3,1]: (1-2)/sqrt(2/3)
            [L / 2, L / math.sqrt(2.0), 0.0, -4.0 / math.sqrt(14.0)],  # [3,1,0]: sd = sqrt(14)/3
        ]
    )
    assert spec.warmup_bars == 2
    np.testing.assert_allclose(feature_matrix(bars, spec), expected, rtol=0, atol=1e-12)
    n_none, stream = stream_all(spec, bars)
    assert n_none == 2
    np.testing.assert_allclose(stream, expected, rtol=0, atol=1e-12)


def test_batch_passes_other_columns_through_aligned() -> None:
    spec = FeatureSpec(vol_window=2, volume_window=3)
    bars = make_bars([1.0, 2.0, 1.0, 2.0, 4.0], [0.0, 1.0, 3.0, 7.0, 1.0]).with_columns(
        ts_event=pl.Series([10, 20, 30, 40, 50], dtype=pl.Int64), tag=pl.lit("x")
    )
    out = batch_features(bars, spec)
    assert out.columns == [*bars.columns, *FEATURE_NAMES]
    assert out["ts_event"].to_list() == [30, 40, 50]
    assert out.select(OHLCV).equals(bars.select(OHLCV).slice(2))
    fm = feature_matrix(bars, spec)
    assert fm.dtype == np.float64 and fm.flags.c_contiguous and fm.shape == (3, 4)
    np.testing.assert_array_equal(fm, out.select(FEATURE_NAMES).to_numpy())


def test_fewer_bars_than_warmup_gives_empty_output() -> None:
    spec = FeatureSpec()
    bars = make_bars(np.linspace(1.0, 2.0, 30), np.ones(30))
    assert batch_features(bars, spec).height == 0
    assert feature_matrix(bars, spec).shape == (0, 4)
    assert stream_all(spec, bars)[0] == 30


def test_constant_volume_gives_zero_z() -> None:
    spec = FeatureSpec(vol_window=3, volume_window=5)
    rng = np.random.default_rng(1)
    bars = make_bars(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40))), np.full(40, 123.25))
    batch = assert_twins_agree(spec, bars)
    assert (batch[:, 3] == 0.0).all()


def test_batch_has_no_lookahead() -> None:
    """Row t of the batch features is unchanged when later bars are removed."""
    spec = FeatureSpec(vol_window=5, volume_window=8)
    rng = np.random.default_rng(2)
    n = 120
    bars = make_bars(
        100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))),
        rng.lognormal(3, 1, n),
        np.exp(np.abs(rng.normal(0, 0.01, n))),
    )
    full = feature_matrix(bars, spec)
    for k in (spec.warmup_bars + 1, 40, 77, n - 1):
        prefix = feature_matrix(bars.head(k), spec)
        np.testing.assert_array_equal(prefix, full[: k - spec.warmup_bars])


# ------------------------------------------------------------------------------------ twins


@pytest.mark.parametrize("rel", [BTC_15M, GBPUSD_M1])
def test_twins_agree_on_real_data(data_dir: Path, rel: str) -> None:
    bars = load_bars(data_dir, rel)
    assert bars.height > 30_000
    spec = FeatureSpec()
    batch = assert_twins_agree(spec, bars)
    if rel == GBPUSD_M1:
        assert (batch[:, 3] == 0.0).all()  # zero volume -> volume_z 0
    else:
        assert np.abs(batch[:, 3]).max() > 1.0  # volume_z is live on crypto


def test_twins_agree_on_real_data_other_windows(data_dir: Path) -> None:
    bars = load_bars(data_dir, BTC_15M).head(8_000)
    for spec in (FeatureSpec(vol_window=2, volume_window=2), FeatureSpec(96, 7)):
        assert_twins_agree(spec, bars)


def bursts_then_flat(spec_seed: int) -> pl.DataFrame:
    """20% per-bar moves and 1e9 volumes, then flat prices / constant volume, then tiny moves."""
    rng = np.random.default_rng(spec_seed)
    n = 600
    close = np.empty(n)
    close[:150] = 100 * np.exp(np.cumsum(rng.normal(0, 0.2, 150)))
    close[150:] = close[149]  # r_t = 0 for t >= 150
    close[400:] = close[399] * np.exp(np.cumsum(rng.normal(0, 1e-6, 200)))
    volume = np.where(np.arange(n) < 230, 1e9 * rng.uniform(0.5, 1.5, n), 0.0)
    volume[287:] = 7.0  # u constant for t >= 287
    return make_bars(close, volume, np.exp(np.abs(rng.normal(0, 0.01, n))))


BURST_SPECS = [FeatureSpec(5, 40), FeatureSpec(4, 68), FeatureSpec(26, 10), FeatureSpec(7, 55)]


@pytest.mark.parametrize("spec", BURST_SPECS, ids=str)
def test_twins_agree_through_bursts_then_flat(spec: FeatureSpec) -> None:
    """No cancellation residue: all-zero return windows and constant-volume windows give exact 0
    in both twins from the first such bar (naive running sums leave ~1e-9 here)."""
    bars = bursts_then_flat(spec.vol_window)
    batch = assert_twins_agree(spec, bars)
    _, stream = stream_all(spec, bars)
    w, m, warm = spec.vol_window, spec.volume_window, spec.warmup_bars
    flat = slice(149 + w - warm, 400 - warm)  # windows of returns r_150.. only
    assert (batch[flat, 1] == 0.0).all() and (stream[flat, 1] == 0.0).all()
    assert batch[flat.start - 1, 1] > 0.0
    const = slice(286 + m - warm, None)  # windows of u_287.. only
    assert (batch[const, 3] == 0.0).all() and (stream[const, 3] == 0.0).all()


@pytest.mark.parametrize("spec", BURST_SPECS[:2], ids=str)
def test_state_round_trip_across_recomputes(spec: FeatureSpec) -> None:
    """Checkpoint at every bar around the regime switches, where the drift guards fire."""
    rows = list(bursts_then_flat(spec.vol_window).select(OHLCV).iter_rows())
    ref = StreamingFeatures(spec)
    ref_out, states = [], []
    for row in rows:
        states.append(json.dumps(ref.state()))
        ref_out.append(ref.update(*row))
    for cut in [*range(140, 200), *range(225, 300), 420]:
        resumed = StreamingFeatures.from_state(spec, json.loads(states[cut]))
        for row, expected in zip(rows[cut:], ref_out[cut:], strict=True):
            got = resumed.update(*row)
            assert (got is None and expected is None) or np.array_equal(got, expected), cut


@settings(max_examples=40, deadline=None)
@given(
    vol_window=st.integers(2, 30),
    volume_window=st.integers(2, 40),
    n=st.integers(0, 250),
    seed=st.integers(0, 2**32 - 1),
    flat_frac=st.floats(0.0, 0.9),
    zero_vol_frac=st.floats(0.0, 1.0),
)
def test_twins_agree_property(
    vol_window: int, volume_window: int, n: int, seed: int, flat_frac: float, zero_vol_frac: float
) -> None:
    rng = np.random.default_rng(seed)
    steps = rng.standard_t(3, n) * 10.0 ** rng.uniform(-5, -1)
    steps[rng.random(n) < flat_frac] = 0.0
    close = 10.0 ** rng.uniform(-4, 5) * np.exp(np.cumsum(steps))
    volume = rng.lognormal(rng.uniform(-2, 15), 2, n)
    volume[rng.random(n) < zero_vol_frac] = 0.0
    bars = make_bars(close, volume, np.exp(np.abs(rng.normal(0, 1e-3, n))))
    assert_twins_agree(FeatureSpec(vol_window, volume_window), bars)


# ------------------------------------------------------------------------------------ state


def test_state_json_round_trip_resumes_bit_identically(data_dir: Path) -> None:
    spec = FeatureSpec()
    rows = list(load_bars(data_dir, BTC_15M).head(6_000).select(OHLCV).iter_rows())
    ref = StreamingFeatures(spec)
    ref_out = [ref.update(*row) for row in rows]
    for cut in (0, 10, spec.warmup_bars, len(rows) // 2 + 7):
        first = StreamingFeatures(spec)
        for row in rows[:cut]:
            first.update(*row)
        blob = json.dumps(first.state())
        resumed = StreamingFeatures.from_state(spec, json.loads(blob))
        assert resumed.bars_seen == cut
        for row, expected in zip(rows[cut:], ref_out[cut:], strict=True):
            got = resumed.update(*row)
            if expected is None:
                assert got is None
            else:
                assert got is not None and np.array_equal(got, expected), cut
        assert json.dumps(resumed.state()) == json.dumps(ref.state())


def test_reset_restarts_warmup() -> None:
    spec = FeatureSpec(vol_window=3, volume_window=4)
    rng = np.random.default_rng(4)
    bars = make_bars(np.exp(np.cumsum(rng.normal(0, 0.01, 30))), rng.lognormal(2, 1, 30))
    rows = list(bars.iter_rows())
    sf = StreamingFeatures(spec)
    first = [sf.update(*r) for r in rows]
    assert sf.ready
    sf.reset()
    assert not sf.ready and sf.bars_seen == 0
    assert sf.state() == StreamingFeatures(spec).state()
    second = [sf.update(*r) for r in rows]
    for a, b in zip(first, second, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_from_state_rejects_mismatch_and_corruption() -> None:
    spec = FeatureSpec(vol_window=3, volume_window=4)
    sf = StreamingFeatures(spec)
    for i in range(10):
        sf.update(1.0 + i, 2.0 + i, 1.0 + i, 1.5 + i, 10.0)
    state = sf.state()
    with pytest.raises(ValueError, match="do not match"):
        StreamingFeatures.from_state(FeatureSpec(vol_window=4, volume_window=4), state)
    with pytest.raises(ValueError, match="missing \\['u_s1'\\]"):
        StreamingFeatures.from_state(spec, {k: v for k, v in state.items() if k != "u_s1"})
    with pytest.raises(ValueError, match="r2_buf"):
        StreamingFeatures.from_state(spec, {**state, "r2_buf": state["r2_buf"][:-1]})
    with pytest.raises(ValueError, match="u_buf"):
        StreamingFeatures.from_state(spec, {**state, "u_buf": [float("nan")] * 4})
    with pytest.raises(ValueError, match="inconsistent"):
        StreamingFeatures.from_state(spec, {**state, "n": 2})


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("bar", "match"),
    [
        ((1.0, 1.0, 1.0, 0.0, 1.0), "positive and finite"),
        ((1.0, 1.0, 1.0, -2.0, 1.0), "positive and finite"),
        ((1.0, 1.0, 1.0, math.nan, 1.0), "close=nan"),
        ((1.0, math.inf, 1.0, 1.0, 1.0), "high=inf"),
        ((0.0, 1.0, 1.0, 1.0, 1.0), "open=0.0"),
        ((1.0, 1.0, -1.0, 1.0, 1.0), "low=-1.0"),
        ((1.0, 1.0, 1.0, 1.0, math.nan), "volume must be finite"),
        ((1.0, 1.0, 1.0, 1.0, -3.0), "volume must be finite and >= 0"),
        ((1.0, 1.0, 2.0, 1.5, 1.0), "high must be >= low"),
    ],
)
def test_streaming_rejects_bad_bar_without_corrupting_state(bar: tuple, match: str) -> None:
    spec = FeatureSpec(vol_window=2, volume_window=2)
    good = [(1.0, 1.1, 0.9, 1.0, 5.0), (1.0, 1.2, 0.95, 1.1, 6.0), (1.1, 1.2, 1.0, 1.05, 4.0)]
    sf = StreamingFeatures(spec)
    sf.update(*good[0])
    sf.update(*good[1])
    before = sf.state()
    with pytest.raises(ValueError, match=match):
        sf.update(*bar)
    assert sf.state() == before
    ref = StreamingFeatures.from_state(spec, before)
    assert np.array_equal(sf.update(*good[2]), ref.update(*good[2]))


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("close", 0.0, "row 3: close must be a positive finite price"),
        ("low", -1.0, "row 3: low must be a positive finite price"),
        ("open", math.nan, "row 3: open must be a positive finite price"),
        ("high", math.inf, "row 3: high must be a positive finite price"),
        ("close", None, "row 3: close must be a positive finite price"),
        ("volume", -1.0, "row 3: volume must be finite and >= 0"),
        ("volume", math.nan, "row 3: volume must be finite and >= 0"),
        ("high", 0.5, "row 3: high must be >= low"),
    ],
)
def test_batch_rejects_bad_rows(column: str, value: float | None, match: str) -> None:
    bars = make_bars(np.linspace(1.0, 2.0, 8), np.ones(8), np.full(8, 1.01))
    col = bars[column].to_list()
    col[3] = value
    bars = bars.with_columns(pl.Series(column, col, dtype=pl.Float64))
    with pytest.raises(ValueError, match=match):
        batch_features(bars, FeatureSpec(2, 2))
    with pytest.raises(ValueError, match=match):
        feature_matrix(bars, FeatureSpec(2, 2))


def test_batch_rejects_bad_frames() -> None:
    bars = make_bars(np.linspace(1.0, 2.0, 8), np.ones(8))
    spec = FeatureSpec(2, 2)
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['volume'\\]"):
        batch_features(bars.drop("volume"), spec)
    with pytest.raises(ValueError, match="'close' must be numeric"):
        batch_features(bars.with_columns(pl.col("close").cast(pl.String)), spec)
    with pytest.raises(ValueError, match="already has feature column"):
        batch_features(bars.with_columns(volume_z=pl.lit(1.0)), spec)
    with pytest.raises(ValueError, match="polars DataFrame"):
        batch_features(bars.to_pandas(), spec)  # type: ignore[arg-type]
