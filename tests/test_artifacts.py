"""JSON model artifacts: exact round trip, atomic writes, and a clear error for every corruption."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM

from hmm_strategy.artifacts import (
    SCHEMA_VERSION,
    Expected,
    ModelArtifactError,
    ModelMetadata,
    artifact_checksum,
    load_model,
    save_model,
)
from hmm_strategy.filter import ForwardFilter
from hmm_strategy.model import RegimeHMM

NAMES = ("log_return", "realized_vol", "norm_range", "volume_z")
SPEC = {"names": list(NAMES), "vol_window": 20, "volume_window": 50}
RANGE = (1_704_067_200_000_000_000, 1_735_516_800_000_000_000)
INSTRUMENT = "BTCUSDT.BINANCE"
BAR_TYPE = "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"


def sample_hmm(n: int, seed: int) -> np.ndarray:
    gen = GaussianHMM(3, covariance_type="full")
    gen.startprob_ = np.array([0.3, 0.4, 0.3])
    gen.transmat_ = np.array([[0.95, 0.04, 0.01], [0.03, 0.95, 0.02], [0.01, 0.04, 0.95]])
    gen.means_ = np.array([[-2.0, 1.5, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [1.5, -0.5, 0.3, -0.5]])
    corr = np.full((4, 4), 0.2) + 0.8 * np.eye(4)
    gen.covars_ = np.array([corr * s for s in (1.0, 0.4, 0.6)])
    return gen.sample(n, random_state=seed)[0]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return sample_hmm(1600, seed=3)


@pytest.fixture(scope="module")
def model(data: np.ndarray) -> RegimeHMM:
    return RegimeHMM(3, n_restarts=2, n_iter=40).fit(data[:1200])


@pytest.fixture
def saved(model: RegimeHMM, tmp_path: Path) -> Path:
    path = tmp_path / "models" / "regime.json"
    save_model(
        model,
        path,
        feature_spec=SPEC,
        data_range=RANGE,
        instrument_id=INSTRUMENT,
        bar_type=BAR_TYPE,
    )
    return path


def edit(path: Path, change: Callable[[dict[str, Any]], None], *, reseal: bool = False) -> None:
    """Rewrite the artifact after ``change``; ``reseal`` recomputes the checksum (a deliberate,
    consistent edit) so that the semantic validation behind the checksum is exercised."""
    doc = json.loads(path.read_text())
    change(doc)
    if reseal:
        doc["checksum"] = artifact_checksum(doc)
    path.write_text(json.dumps(doc))


def load_error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ModelArtifactError) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert str(path) in message  # every error names the file
    return message


def test_round_trip_gives_identical_filter_outputs(
    model: RegimeHMM, data: np.ndarray, saved: Path
) -> None:
    loaded, meta = load_model(saved, expected_features=NAMES)
    for name in ("startprob_", "transmat_", "means_", "covars_", "scaler_mean_", "scaler_std_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
    np.testing.assert_array_equal(loaded.filter_proba(data), model.filter_proba(data))
    np.testing.assert_array_equal(loaded.predict_proba(data), model.predict_proba(data))
    assert loaded.score(data) == model.score(data)
    filt = ForwardFilter.from_model(loaded)
    filt.update_many(data[:100])
    assert filt.params_digest == ForwardFilter.from_model(model).params_digest

    assert isinstance(meta, ModelMetadata)
    assert meta.schema_version == SCHEMA_VERSION == 2
    assert meta.feature_names == NAMES
    assert meta.feature_spec == SPEC
    assert meta.data_range == RANGE
    assert (meta.instrument_id, meta.bar_type) == (INSTRUMENT, BAR_TYPE)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", meta.model_version)
    assert meta.checksum.startswith("sha256:") and meta.model_version[-12:] in meta.checksum
    assert meta.diagnostics["restarts"] == model.diagnostics_["restarts"]
    assert loaded.n_states_ == 3 and loaded.log_likelihood_ == model.log_likelihood_


def test_file_is_plain_json_and_the_write_is_atomic(model: RegimeHMM, saved: Path) -> None:
    raw = saved.read_bytes()
    doc = json.loads(raw)  # valid JSON, no pickle/joblib payload
    assert raw.lstrip().startswith(b"{")
    assert isinstance(doc["params"]["covars"], list)
    assert np.array(doc["params"]["covars"]).shape == (3, 4, 4)
    assert [p.name for p in saved.parent.iterdir()] == ["regime.json"]  # no temp file left

    version = save_model(
        model,
        saved,
        feature_spec=SPEC,
        data_range=RANGE,
        instrument_id=INSTRUMENT,
        bar_type=BAR_TYPE,
        version="v2",
    )
    assert version == "v2" and load_model(saved)[1].model_version == "v2"
    # a failed save (bad argument) leaves the previous artifact untouched
    with pytest.raises(ValueError, match="feature_spec names 3 features"):
        save_model(
            model,
            saved,
            feature_spec={"names": list(NAMES[:3])},
            data_range=RANGE,
            instrument_id=INSTRUMENT,
            bar_type=BAR_TYPE,
        )
    with pytest.raises(ValueError, match="plain JSON"):
        save_model(
            model,
            saved,
            feature_spec={"names": list(NAMES), "bad": object()},
            data_range=RANGE,
            instrument_id=INSTRUMENT,
            bar_type=BAR_TYPE,
        )
    with pytest.raises(ValueError, match="data_range first"):
        save_model(
            model,
            saved,
            feature_spec=SPEC,
            data_range=(RANGE[1], RANGE[0]),
            instrument_id=INSTRUMENT,
            bar_type=BAR_TYPE,
        )
    assert load_model(saved)[1].model_version == "v2"
    assert [p.name for p in saved.parent.iterdir()] == ["regime.json"]


def test_missing_and_truncated_files(saved: Path) -> None:
    assert "file not found" in load_error(saved.with_name("nope.json"))
    raw = saved.read_bytes()
    saved.write_bytes(raw[: len(raw) // 2])
    assert "not valid JSON" in load_error(saved)
    saved.write_bytes(b"")
    assert "not valid JSON" in load_error(saved)
    saved.write_text("[1, 2]")
    assert "top level must be a JSON object" in load_error(saved)


def test_flipped_digit_in_a_parameter_is_a_checksum_error(saved: Path) -> None:
    text = saved.read_text()
    start = text.index('"means"')
    match = re.compile(r"\d\.(\d{6})").search(text, start)
    assert match is not None
    i = match.start(1) + 3
    flipped = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]
    saved.write_text(flipped)
    json.loads(flipped)  # still valid JSON with the right shapes: only the checksum can tell
    assert "checksum mismatch" in load_error(saved)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("schema_version", "missing field 'schema_version'"),
        ("bar_type", "missing required field 'bar_type'"),
        ("checksum", "missing required field 'checksum'"),
    ],
)
def test_missing_top_level_field_is_named(saved: Path, field: str, expected: str) -> None:
    edit(saved, lambda d: d.pop(field))
    assert expected in load_error(saved)


def test_missing_or_extra_nested_field_is_named(saved: Path) -> None:
    original = saved.read_text()
    edit(saved, lambda d: d["params"].pop("transmat"))
    message = load_error(saved)
    assert "missing required field 'transmat'" in message and "$.params" in message
    saved.write_text(original)
    edit(saved, lambda d: d.update(surprise=1))
    assert "unknown field 'surprise'" in load_error(saved)
    saved.write_text(original)
    edit(saved, lambda d: d["params"].update(extra_matrix=[[1.0]]))
    message = load_error(saved)
    assert "unknown field 'extra_matrix'" in message and "$.params" in message


def test_unknown_schema_version(saved: Path) -> None:
    edit(saved, lambda d: d.update(schema_version=3))
    assert "unknown schema_version 3" in load_error(saved)
    edit(saved, lambda d: d.update(schema_version=True))
    assert "unknown schema_version True" in load_error(saved)


def test_wrong_types_are_named(saved: Path) -> None:
    edit(saved, lambda d: d["params"].update(n_states="3"))
    message = load_error(saved)
    assert "Expected 'int', got 'str'" in message and "$.params.n_states" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["params"]["transmat"].pop(),
            "params.transmat has shape (2, 3), expected (3, 3) (n_states, n_states)",
        ),
        (
            lambda d: d["params"]["covars"][1].pop(),
            "params.covars is ragged, expected shape (3, 4, 4)",
        ),
        (
            lambda d: d["params"]["means"][0].append(0.0),
            "params.means is ragged",
        ),
        (
            lambda d: d["params"].update(scaler_std=[1.0, 1.0]),
            "params.scaler_std has shape (2,), expected (4,)",
        ),
        (
            lambda d: d["feature_spec"]["names"].pop(),
            "feature_spec names 3 features",
        ),
        (
            lambda d: d["feature_spec"].pop("names"),
            "feature_spec.names must be a list",
        ),
    ],
)
def test_wrong_shapes_are_named(saved: Path, change: Callable[..., Any], expected: str) -> None:
    edit(saved, change)
    assert expected in load_error(saved)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["params"]["transmat"][1].__setitem__(0, 0.5),
            "params.transmat rows must be non-negative and sum to 1",
        ),
        (
            lambda d: d["params"].update(startprob=[0.5, 0.6, -0.1]),
            "params.startprob rows must be non-negative and sum to 1",
        ),
        (
            lambda d: d["params"]["covars"].__setitem__(2, (-np.eye(4)).tolist()),
            "params.covars[2] is not positive definite",
        ),
        (
            lambda d: d["params"]["covars"][0][0].__setitem__(1, 9.0),
            "params.covars[0] is not symmetric",
        ),
        (
            lambda d: d["params"].update(scaler_std=[1.0, 0.0, 1.0, 1.0]),
            "params.scaler_std must be > 0",
        ),
        (
            lambda d: d.update(data_range=[5, 4]),
            "data_range first 5 is after last 4",
        ),
        (  # decisions.csv and the metrics carry p0..p7: a 9th probability would be dropped
            lambda d: d["params"].update(n_states=9),
            "params.n_states must be at most 8 (p0..p7 of a decision), got 9",
        ),
    ],
)
def test_invalid_parameters_are_rejected_even_with_a_valid_checksum(
    saved: Path, change: Callable[..., Any], expected: str
) -> None:
    edit(saved, change, reseal=True)
    assert expected in load_error(saved)


def test_edited_metadata_breaks_the_checksum(saved: Path) -> None:
    edit(saved, lambda d: d.update(instrument_id="ETHUSDT.BINANCE"))
    assert "checksum mismatch" in load_error(saved)
    edit(saved, lambda d: d.update(instrument_id=INSTRUMENT))
    load_model(saved)  # restoring the value restores the artifact


def test_feature_mismatch(saved: Path) -> None:
    reordered = (NAMES[1], NAMES[0], *NAMES[2:])
    message = load_error(saved, expected_features=reordered)
    assert "feature mismatch" in message and "realized_vol" in message
    assert "feature mismatch" in load_error(saved, expected_features=NAMES[:3])
    load_model(saved, expected_features=NAMES)


def test_struct_feature_spec_with_names_is_accepted(model: RegimeHMM, tmp_path: Path) -> None:
    import msgspec

    class Spec(msgspec.Struct, frozen=True):
        vol_window: int = 20

        @property
        def names(self) -> tuple[str, ...]:
            return NAMES

    path = tmp_path / "m.json"
    save_model(
        model,
        str(path),
        feature_spec=Spec(),
        data_range=RANGE,
        instrument_id=INSTRUMENT,
        bar_type=BAR_TYPE,
    )
    assert load_model(path)[1].feature_spec == {"vol_window": 20, "names": list(NAMES)}


# ------------------------------------------------------------ what the artifact was made for
WANT = Expected(features=SPEC, instrument_id=INSTRUMENT, bar_type=BAR_TYPE, slow=None)


def test_expected_match_loads(saved: Path) -> None:
    model, meta = load_model(saved, expected=WANT)
    assert meta.slow is None and model.n_states_ == 3


@pytest.mark.parametrize(
    ("want", "named"),
    [
        ({"instrument_id": "ETHUSDT.BINANCE"}, ["instrument_id is BTCUSDT.BINANCE"]),
        ({"bar_type": "BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL"}, ["bar_type is BTCUSDT"]),
        ({"features": {**SPEC, "vol_window": 30}}, ["feature_spec.vol_window is 20, expected 30"]),
        (
            {"features": {**SPEC, "volume_window": 10}, "instrument_id": "EUR/USD.SIM"},
            ["instrument_id", "feature_spec.volume_window is 50, expected 10"],
        ),
        ({"features": {**SPEC, "extra": 1}}, ["feature_spec.extra is <absent>, expected 1"]),
        ({"slow": (16, SPEC)}, ["no slow level, expected one with bars_per_bar=16"]),
    ],
)
def test_artifact_for_something_else_is_rejected_naming_each_difference(
    saved: Path, want: dict[str, Any], named: list[str]
) -> None:
    base = {
        "features": SPEC,
        "instrument_id": INSTRUMENT,
        "bar_type": BAR_TYPE,
        "slow": None,
    }
    message = load_error(saved, expected=Expected(**{**base, **want}))
    assert "made for something else" in message
    for part in named:
        assert part in message
    assert message.count(";") == len(named) - 1  # exactly the differing fields, nothing else


def test_strategy_expectation_from_a_real_feature_spec(model: RegimeHMM, tmp_path: Path) -> None:
    from hmm_strategy.engine import SlowLevel
    from hmm_strategy.features import FeatureSpec

    path = tmp_path / "m.json"
    spec = FeatureSpec(vol_window=20, volume_window=50)
    save_model(model, path, feature_spec=spec, data_range=RANGE, instrument_id=INSTRUMENT,
               bar_type=BAR_TYPE)  # fmt: skip
    load_model(path, expected=Expected.strategy(spec, INSTRUMENT, BAR_TYPE, None))
    other = FeatureSpec(vol_window=21, volume_window=50)
    message = load_error(path, expected=Expected.strategy(other, INSTRUMENT, BAR_TYPE, None))
    assert "feature_spec.vol_window is 20, expected 21" in message
    message = load_error(path, expected=Expected.strategy(spec, INSTRUMENT, BAR_TYPE, SlowLevel()))
    assert "no slow level" in message


def test_diagnostics_are_under_the_checksum(saved: Path) -> None:
    edit(saved, lambda d: d["diagnostics"].update(log_likelihood=1e9))
    assert "checksum mismatch" in load_error(saved)


def test_schema_1_still_loads_without_its_unverifiable_diagnostics(
    model: RegimeHMM, data: np.ndarray, saved: Path
) -> None:
    def to_v1(doc: dict[str, Any]) -> None:
        doc["schema_version"] = 1
        del doc["slow"]

    edit(saved, to_v1, reseal=True)
    loaded, meta = load_model(saved, expected=WANT)
    assert meta.schema_version == 1 and meta.diagnostics == {} and loaded.diagnostics_ == {}
    np.testing.assert_array_equal(loaded.filter_proba(data), model.filter_proba(data))
    # schema 1 never covered diagnostics: editing them keeps the file loadable, but unused
    edit(saved, lambda d: d["diagnostics"].update(log_likelihood=1e9))
    assert load_model(saved)[1].diagnostics == {}
    edit(saved, lambda d: d["params"]["means"][0].__setitem__(0, 0.5))
    assert "checksum mismatch" in load_error(saved)


def test_two_level_artifact_round_trip_and_slow_checks(
    model: RegimeHMM, data: np.ndarray, tmp_path: Path
) -> None:
    slow_model = RegimeHMM(2, n_restarts=1, n_iter=30, covariance_type="diag").fit(data[:800])
    slow_spec = {**SPEC, "vol_window": 8, "volume_window": 16}
    path = tmp_path / "two.json"
    save_model(model, path, feature_spec=SPEC, data_range=RANGE, instrument_id=INSTRUMENT,
               bar_type=BAR_TYPE, slow=(slow_model, 16, slow_spec))  # fmt: skip
    loaded, meta = load_model(path, expected=Expected(SPEC, INSTRUMENT, BAR_TYPE, (16, slow_spec)))
    assert meta.slow is not None and meta.slow.bars_per_bar == 16
    np.testing.assert_array_equal(loaded.filter_proba(data), model.filter_proba(data))
    np.testing.assert_array_equal(meta.slow.model.filter_proba(data), slow_model.filter_proba(data))
    assert meta.slow.model.covariance_type == "diag"

    message = load_error(path, expected=Expected(SPEC, INSTRUMENT, BAR_TYPE, (24, SPEC)))
    assert "slow.bars_per_bar is 16, expected 24" in message
    assert "slow.feature_spec.vol_window is 8, expected 20" in message
    assert "the strategy is single-level" in load_error(path, expected=WANT)

    edit(path, lambda d: d["slow"]["params"]["transmat"][0].__setitem__(0, 0.5))
    assert "checksum mismatch" in load_error(path)
    edit(path, lambda d: d["slow"]["params"]["transmat"][0].__setitem__(0, 0.5), reseal=True)
    assert "slow.params.transmat rows must be non-negative and sum to 1" in load_error(path)


# --------------------------------------------- the call sites: strategy start/swap and promote
def _fast_artifact(model: RegimeHMM, path: Path, **overrides: Any) -> Path:
    from hmm_strategy.features import FeatureSpec

    kwargs = {"feature_spec": FeatureSpec(), "data_range": RANGE, "instrument_id": INSTRUMENT,
              "bar_type": BAR_TYPE, **overrides}  # fmt: skip
    save_model(model, path, **kwargs)
    return path


def test_strategy_refuses_an_artifact_for_another_instrument_or_windows(
    model: RegimeHMM, tmp_path: Path
) -> None:
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.identifiers import InstrumentId

    from hmm_strategy.features import FeatureSpec
    from hmm_strategy.messages import ModelUpdate
    from hmm_strategy.strategy import HMMRegimeStrategy, HMMRegimeStrategyConfig

    good = _fast_artifact(model, tmp_path / "good.json")
    eth = _fast_artifact(model, tmp_path / "eth.json", instrument_id="ETHUSDT.BINANCE")
    wide = _fast_artifact(model, tmp_path / "wide.json", feature_spec=FeatureSpec(vol_window=30))

    def strategy(path: Path) -> HMMRegimeStrategy:
        return HMMRegimeStrategy(
            HMMRegimeStrategyConfig(
                instrument_id=InstrumentId.from_str(INSTRUMENT),
                bar_type=BarType.from_str(BAR_TYPE),
                model_path=str(path),
            )
        )

    # refused when the strategy config is made (the node config loads), before any engine
    with pytest.raises(ModelArtifactError, match="model_path: .*instrument_id is ETHUSDT.BINANCE"):
        strategy(eth)
    with pytest.raises(ModelArtifactError, match="feature_spec.vol_window is 30, expected 20"):
        strategy(wide)
    running = strategy(good)
    running.engine = running._new_engine()
    before = running.engine.model_version
    for bad in (eth, wide):
        running.on_model_update(ModelUpdate(0, "HMMRegimeStrategy-000", str(bad), "v-bad", "x"))
        assert running.engine.model_version == before  # the swap was refused


def test_promote_checks_the_artifact_against_the_strategy_config(
    model: RegimeHMM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from actors.promote import main as promote_main
    from hmm_strategy.config import DEFAULT_CONFIG
    from hmm_strategy.features import FeatureSpec

    common = ["--config", str(DEFAULT_CONFIG), "--strategy", "hmm_btc",
              "--requests-dir", str(tmp_path / "requests"), "--reason", "test"]  # fmt: skip
    hourly = _fast_artifact(
        model, tmp_path / "h.json", bar_type="BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL",
        feature_spec=FeatureSpec(volume_window=40),
    )  # fmt: skip
    assert promote_main(["promote", *common, "--model", str(hourly)]) == 2
    err = capsys.readouterr().err
    assert "bar_type is BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL" in err
    assert "feature_spec.volume_window is 40, expected 50" in err
    good = _fast_artifact(model, tmp_path / "good.json")
    assert promote_main(["promote", *common, "--model", str(good)]) == 0
