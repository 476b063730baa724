"""Model artifacts: one self-describing JSON file per fitted model (never pickle/joblib).

Why JSON: an artifact must be readable by any tool, diffable, safe to load from an untrusted
place (no code execution) and checkable. ``load_model`` decodes with a typed msgspec schema and
then validates everything a wrong file could get wrong -- shapes, stochastic rows, positive-definite
covariances, the feature list and a sha256 checksum -- so a bad file fails loudly at start-up
instead of trading on garbage.

Layout (``schema_version`` 2)::

    {"schema_version": 2, "model_version": str, "created_at": ISO-8601 UTC,
     "instrument_id": str, "bar_type": str, "data_range": [first_close_ns, last_close_ns],
     "feature_spec": {"names": [...], ...}, "params": {...}, "diagnostics": {...},
     "slow": null | {"bars_per_bar": int, "feature_spec": {...}, "params": {...},
                     "diagnostics": {...}},
     "checksum": "sha256:<hex>"}

``slow`` is the coarse level of a hierarchical model (``engine.SlowLevel``): the same parameter
layout, fitted on bars aggregated from ``bars_per_bar`` traded bars.

The checksum covers the canonical JSON (sorted keys, no whitespace) of everything that changes
what the model computes, what it applies to, or what is read from it later: params,
feature_spec, data_range, instrument_id, bar_type, diagnostics (training log-likelihood and
sample count feed the online trainer's drift reference) and slow. Only ``created_at`` and
``model_version`` are outside it.

Schema 1 (before diagnostics and ``slow`` were covered) still loads, verified against its own
coverage; its unverifiable diagnostics are dropped (``ModelMetadata.diagnostics == {}``), so
nothing downstream reads numbers that an edit could have changed. ``save_model`` writes schema 2.

``load_model(path, expected=Expected(...))`` rejects an artifact made for another instrument,
bar type, feature windows or slow level, naming every field that differs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from hmm_strategy.atomic import atomic_write
from hmm_strategy.filter import PARAM_SHAPES, check_param_shapes, check_param_values
from hmm_strategy.messages import MAX_STATES
from hmm_strategy.model import COVARIANCE_TYPES, RegimeHMM

SCHEMA_VERSION = 2
_CHECKSUM_PREFIX = "sha256:"
_CHECKSUMMED_V1 = ("params", "feature_spec", "data_range", "instrument_id", "bar_type")
_CHECKSUMMED = (*_CHECKSUMMED_V1, "diagnostics", "slow")
_ANY: Any = object()  # Expected.slow default: the slow level is not checked


class ModelArtifactError(ValueError):
    """A model artifact is missing, malformed, inconsistent or corrupted."""


class SlowModel(msgspec.Struct, frozen=True):
    """The slow level of a hierarchical artifact: its model and what it was fitted on."""

    model: RegimeHMM
    bars_per_bar: int
    feature_spec: dict[str, Any]


class Expected(msgspec.Struct, frozen=True):
    """What the caller will feed the model; ``load_model`` rejects an artifact for anything else.

    ``features`` is compared field by field with the artifact's ``feature_spec`` (names and
    windows). ``instrument_id``/``bar_type`` are checked unless None. ``slow`` is
    ``(bars_per_bar, FeatureSpec)`` for a hierarchical strategy, None for a single-level one
    (then an artifact with a slow level is rejected too); left out, it is not checked.
    """

    features: Any  # FeatureSpec or a mapping with "names"
    instrument_id: str | None = None
    bar_type: str | None = None
    slow: Any = _ANY

    @classmethod
    def strategy(
        cls, features: Any, instrument_id: str, bar_type: str, slow: Any | None
    ) -> Expected:
        """The expectation of a strategy config; ``slow`` is its ``engine.SlowLevel`` or None."""
        level = None if slow is None else (slow.bars_per_bar, slow.features)
        return cls(features, str(instrument_id), str(bar_type), level)


class ModelMetadata(msgspec.Struct, frozen=True):
    """Everything in an artifact except the (fast level's) parameters."""

    path: str
    schema_version: int
    model_version: str
    created_at: str
    instrument_id: str
    bar_type: str
    data_range: tuple[int, int]  # UNIX ns of the first and last training bar close
    feature_spec: dict[str, Any]
    checksum: str
    diagnostics: dict[str, Any]
    slow: SlowModel | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.feature_spec["names"])


class _Params(msgspec.Struct, forbid_unknown_fields=True):
    n_states: int
    n_features: int
    covariance_type: str
    min_covar: float
    startprob: list[float]
    transmat: list[list[float]]
    means: list[list[float]]
    covars: list[list[list[float]]]
    scaler_mean: list[float]
    scaler_std: list[float]


class _Slow(msgspec.Struct, forbid_unknown_fields=True):
    bars_per_bar: int
    feature_spec: dict[str, Any]
    params: _Params
    diagnostics: dict[str, Any]


class _ArtifactV1(msgspec.Struct, forbid_unknown_fields=True):
    schema_version: int
    model_version: str
    created_at: str
    instrument_id: str
    bar_type: str
    data_range: tuple[int, int]
    feature_spec: dict[str, Any]
    params: _Params
    diagnostics: dict[str, Any]
    checksum: str


class _ArtifactV2(_ArtifactV1, forbid_unknown_fields=True):
    slow: _Slow | None = None


_SCHEMAS: dict[int, type[_ArtifactV1]] = {1: _ArtifactV1, 2: _ArtifactV2}


# ------------------------------------------------------------------------------------- save
def save_model(
    model: RegimeHMM,
    path: str | os.PathLike[str],
    *,
    feature_spec: Mapping[str, Any] | msgspec.Struct,
    data_range: tuple[int, int],
    instrument_id: str,
    bar_type: str,
    version: str | None = None,
    slow: tuple[RegimeHMM, int, Mapping[str, Any] | msgspec.Struct] | None = None,
) -> str:
    """Write ``model`` atomically to ``path`` as one JSON artifact; return the model version.

    ``feature_spec`` must name the feature columns in order under ``"names"`` (a msgspec Struct
    with a ``names`` property, such as ``features.FeatureSpec``, is converted). ``slow`` is the
    slow level of a hierarchical model: ``(model, bars_per_bar, feature_spec)``. ``version``
    defaults to ``<created_at>-<checksum prefix>``.
    """
    first, last = _check_data_range(data_range)
    for name, value in (("instrument_id", instrument_id), ("bar_type", bar_type)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, was {value!r}")
    if version is not None and (not isinstance(version, str) or not version.strip()):
        raise ValueError(f"version must be a non-empty string or None, was {version!r}")
    spec, params = _level_doc(model, feature_spec, "")
    slow_doc = None
    if slow is not None:
        slow_model, bars_per_bar, slow_spec = slow
        if isinstance(bars_per_bar, bool) or not isinstance(bars_per_bar, int) or bars_per_bar < 2:
            raise ValueError(f"slow bars_per_bar must be an int >= 2, was {bars_per_bar!r}")
        sspec, sparams = _level_doc(slow_model, slow_spec, "slow ")
        slow_doc = {
            "bars_per_bar": bars_per_bar,
            "feature_spec": sspec,
            "params": sparams,
            "diagnostics": _plain(getattr(slow_model, "diagnostics_", {})),
        }

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model_version": "",
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "instrument_id": instrument_id,
        "bar_type": bar_type,
        "data_range": [first, last],
        "feature_spec": spec,
        "params": params,
        "diagnostics": _plain(getattr(model, "diagnostics_", {})),
        "slow": slow_doc,
        "checksum": "",
    }
    checksum = artifact_checksum(doc)
    doc["checksum"] = checksum
    doc["model_version"] = (
        version or f"{now:%Y%m%dT%H%M%SZ}-{checksum[len(_CHECKSUM_PREFIX) :][:12]}"
    )
    data = json.dumps(doc, indent=1, allow_nan=False).encode() + b"\n"
    atomic_write(Path(path), data)
    return doc["model_version"]


def _level_doc(
    model: RegimeHMM, feature_spec: Mapping[str, Any] | msgspec.Struct, what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The feature spec and params sections of one level (fast or slow)."""
    model.check_fitted()
    spec = _plain_feature_spec(feature_spec)
    names = spec.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{what}feature_spec must contain 'names': the list of feature column names"
        )
    if len(names) != model.n_features_:
        raise ValueError(
            f"{what}feature_spec names {len(names)} features {names}, "
            f"the model has {model.n_features_} features"
        )
    params = {
        "n_states": int(model.n_states_),
        "n_features": int(model.n_features_),
        "covariance_type": model.covariance_type,
        "min_covar": float(model.min_covar),
        "startprob": model.startprob_.tolist(),
        "transmat": model.transmat_.tolist(),
        "means": model.means_.tolist(),
        "covars": model.covars_.tolist(),
        "scaler_mean": model.scaler_mean_.tolist(),
        "scaler_std": model.scaler_std_.tolist(),
    }
    return spec, params


def artifact_checksum(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of the checksummed fields of an artifact dict.

    The covered fields depend on the document's ``schema_version`` (1: without diagnostics/slow).
    """
    keys = _CHECKSUMMED_V1 if doc.get("schema_version") == 1 else _CHECKSUMMED
    payload = {key: doc.get(key) for key in keys}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return _CHECKSUM_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


# ------------------------------------------------------------------------------------- load
def load_model(
    path: str | os.PathLike[str],
    *,
    expected: Expected | None = None,
    expected_features: tuple[str, ...] | None = None,
) -> tuple[RegimeHMM, ModelMetadata]:
    """Read and fully validate an artifact.

    ``expected`` rejects an artifact for another instrument, bar type, feature windows or slow
    level (the error names every differing field); ``expected_features`` only compares the
    feature names (for tools that have no strategy config).
    """
    p = Path(path)

    def fail(msg: str) -> ModelArtifactError:
        return ModelArtifactError(f"model artifact {str(p)!r}: {msg}")

    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise fail("file not found") from None
    except OSError as exc:
        raise fail(f"cannot read file: {exc}") from None
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise fail(f"not valid JSON (truncated or corrupted?): {exc}") from None
    if not isinstance(raw, dict):
        raise fail(f"top level must be a JSON object, got {type(raw).__name__}")
    if "schema_version" not in raw:
        raise fail("missing field 'schema_version'")
    version = raw["schema_version"]
    schema = _SCHEMAS.get(version) if type(version) is int else None
    if schema is None:
        raise fail(f"unknown schema_version {version!r} (this code reads {sorted(_SCHEMAS)})")
    try:
        doc = msgspec.json.decode(data, type=schema)
    except msgspec.ValidationError as exc:
        raise fail(f"invalid content: {_describe(exc)}") from None

    # shapes and names first (a checksum over ragged params cannot be computed meaningfully)
    arr = _level_arrays(doc.params, doc.feature_spec, "", fail)
    slow_doc = getattr(doc, "slow", None)
    slow_arr = None
    if slow_doc is not None:
        slow_arr = _level_arrays(slow_doc.params, slow_doc.feature_spec, "slow.", fail)

    computed = artifact_checksum(msgspec.to_builtins(doc))
    if doc.checksum != computed:
        raise fail(
            f"checksum mismatch, the file is corrupted or was edited "
            f"(stored {doc.checksum}, computed {computed})"
        )
    # schema 1 did not cover diagnostics: never hand out numbers an edit could have changed
    diagnostics = doc.diagnostics if doc.schema_version >= 2 else {}

    if doc.data_range[0] > doc.data_range[1]:
        raise fail(f"data_range first {doc.data_range[0]} is after last {doc.data_range[1]}")
    model = _level_model(doc.params, arr, diagnostics, "", fail)
    slow = None
    if slow_doc is not None:
        if slow_doc.bars_per_bar < 2:
            raise fail(f"slow.bars_per_bar must be >= 2, got {slow_doc.bars_per_bar}")
        slow = SlowModel(
            model=_level_model(slow_doc.params, slow_arr, slow_doc.diagnostics, "slow.", fail),
            bars_per_bar=slow_doc.bars_per_bar,
            feature_spec=slow_doc.feature_spec,
        )
    names = tuple(doc.feature_spec["names"])
    if expected_features is not None and names != tuple(expected_features):
        raise fail(
            f"feature mismatch: model was trained on {names}, expected {tuple(expected_features)}"
        )
    if expected is not None:
        problems = _mismatches(doc, slow, expected)
        if problems:
            raise fail("made for something else than expected: " + "; ".join(problems))

    meta = ModelMetadata(
        path=str(p),
        schema_version=doc.schema_version,
        model_version=doc.model_version,
        created_at=doc.created_at,
        instrument_id=doc.instrument_id,
        bar_type=doc.bar_type,
        data_range=doc.data_range,
        feature_spec=doc.feature_spec,
        checksum=doc.checksum,
        diagnostics=diagnostics,
        slow=slow,
    )
    return model, meta


def _level_arrays(
    prm: _Params, feature_spec: dict[str, Any], where: str, fail: Any
) -> dict[str, np.ndarray]:
    """The parameter arrays of one level, shape-checked and finite (the filter's checks)."""
    k, d = prm.n_states, prm.n_features
    if k < 1 or d < 1:
        raise fail(
            f"{where}params.n_states and {where}params.n_features must be >= 1, got {k} and {d}"
        )
    if not where and k > MAX_STATES:  # its probabilities are what decisions.csv and metrics carry
        raise fail(f"params.n_states must be at most {MAX_STATES} (p0..p7 of a decision), got {k}")
    try:
        arr = check_param_shapes(
            {name: getattr(prm, name) for name in PARAM_SHAPES},
            n_states=k,
            n_features=d,
            where=f"{where}params.",
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    names = feature_spec.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise fail(f"{where}feature_spec.names must be a list of feature column names")
    if len(names) != d:
        raise fail(
            f"{where}feature_spec names {len(names)} features {names} "
            f"but {where}params.n_features={d}"
        )
    return arr


def _level_model(
    prm: _Params, arr: dict[str, np.ndarray], diagnostics: dict[str, Any], where: str, fail: Any
) -> RegimeHMM:
    """Semantic checks of one level's parameters (the filter's), then the model."""
    if prm.covariance_type not in COVARIANCE_TYPES:
        raise fail(
            f"{where}params.covariance_type {prm.covariance_type!r} is not one of "
            f"{COVARIANCE_TYPES}"
        )
    if not prm.min_covar > 0:
        raise fail(f"{where}params.min_covar must be > 0, got {prm.min_covar}")
    try:
        check_param_values(arr, where=f"{where}params.")
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        return RegimeHMM.from_params(
            startprob=arr["startprob"],
            transmat=arr["transmat"],
            means=arr["means"],
            covars=arr["covars"],
            scaler_mean=arr["scaler_mean"],
            scaler_std=arr["scaler_std"],
            covariance_type=prm.covariance_type,
            min_covar=prm.min_covar,
            diagnostics=diagnostics,
        )
    except ValueError as exc:
        raise fail(f"invalid {where}parameters: {exc}") from None


def _mismatches(doc: _ArtifactV1, slow: SlowModel | None, expected: Expected) -> list[str]:
    """Every field in which the artifact differs from what the caller expects, described."""
    out = []
    if expected.instrument_id is not None and doc.instrument_id != expected.instrument_id:
        out.append(f"instrument_id is {doc.instrument_id}, expected {expected.instrument_id}")
    if expected.bar_type is not None and doc.bar_type != expected.bar_type:
        out.append(f"bar_type is {doc.bar_type}, expected {expected.bar_type}")
    out += _spec_mismatches("feature_spec", doc.feature_spec, expected.features)
    if expected.slow is _ANY:
        return out
    if expected.slow is None:
        if slow is not None:
            out.append(
                f"the artifact has a slow level (bars_per_bar={slow.bars_per_bar}), "
                "the strategy is single-level"
            )
        return out
    bars_per_bar, slow_spec = expected.slow
    if slow is None:
        out.append(f"the artifact has no slow level, expected one with bars_per_bar={bars_per_bar}")
        return out
    if slow.bars_per_bar != bars_per_bar:
        out.append(f"slow.bars_per_bar is {slow.bars_per_bar}, expected {bars_per_bar}")
    out += _spec_mismatches("slow.feature_spec", slow.feature_spec, slow_spec)
    return out


def _spec_mismatches(where: str, have: dict[str, Any], want: Any) -> list[str]:
    want_doc = _plain_feature_spec(want)
    out = []
    for key in sorted(set(have) | set(want_doc)):
        a, b = have.get(key, "<absent>"), want_doc.get(key, "<absent>")
        if a != b:
            out.append(f"{where}.{key} is {a}, expected {b}")
    return out


# ---------------------------------------------------------------------------------- helpers
def _describe(exc: msgspec.ValidationError) -> str:
    """msgspec's message with the JSON path made explicit (it already names the field)."""
    return str(exc).replace("`", "'")


def _plain_feature_spec(spec: Mapping[str, Any] | msgspec.Struct) -> dict[str, Any]:
    if isinstance(spec, msgspec.Struct):
        out = msgspec.to_builtins(spec)
        if hasattr(spec, "names"):
            out["names"] = list(spec.names)
    elif isinstance(spec, Mapping):
        out = dict(spec)
    else:
        raise ValueError(f"feature_spec must be a dict or msgspec Struct, got {type(spec)}")
    out = _plain(out)
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature_spec must be plain JSON data: {exc}") from None
    return out


def _check_data_range(data_range: tuple[int, int]) -> tuple[int, int]:
    try:
        first, last = data_range
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be (first_ns, last_ns), got {data_range!r}") from None
    vals = []
    for v in (first, last):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"data_range values must be int UNIX ns, got {data_range!r}")
        vals.append(int(v))
    if vals[0] > vals[1]:
        raise ValueError(f"data_range first {vals[0]} is after last {vals[1]}")
    return vals[0], vals[1]


def _plain(obj: Any) -> Any:
    """Plain JSON data: numpy -> Python, tuples -> lists, non-finite floats -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj
