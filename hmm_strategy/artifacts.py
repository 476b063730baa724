"""Model artifacts: one self-describing JSON file per fitted model (never pickle/joblib).

Why JSON: an artifact must be readable by any tool, diffable, safe to load from an untrusted
place (no code execution) and checkable. ``load_model`` decodes with a typed msgspec schema and
then validates everything a wrong file could get wrong -- shapes, stochastic rows, positive-definite
covariances, the feature list and a sha256 checksum -- so a bad file fails loudly at start-up
instead of trading on garbage.

Layout (``schema_version`` 1)::

    {"schema_version": 1, "model_version": str, "created_at": ISO-8601 UTC,
     "instrument_id": str, "bar_type": str, "data_range": [first_close_ns, last_close_ns],
     "feature_spec": {"names": [...], ...}, "params": {...}, "diagnostics": {...},
     "checksum": "sha256:<hex>"}

The checksum covers the canonical JSON (sorted keys, no whitespace) of everything that changes
what the model computes or what it applies to: params, feature_spec, data_range, instrument_id
and bar_type. ``created_at``, ``model_version`` and ``diagnostics`` are descriptive only.
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
from hmm_strategy.model import COVARIANCE_TYPES, RegimeHMM

SCHEMA_VERSION = 1
_CHECKSUM_PREFIX = "sha256:"
_PROB_TOL = 1e-6
_CHECKSUMMED = ("params", "feature_spec", "data_range", "instrument_id", "bar_type")


class ModelArtifactError(ValueError):
    """A model artifact is missing, malformed, inconsistent or corrupted."""


class ModelMetadata(msgspec.Struct, frozen=True):
    """Everything in an artifact except the parameters."""

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
) -> str:
    """Write ``model`` atomically to ``path`` as one JSON artifact; return the model version.

    ``feature_spec`` must name the feature columns in order under ``"names"`` (a msgspec Struct
    with a ``names`` property, such as ``features.FeatureSpec``, is converted). ``version``
    defaults to ``<created_at>-<checksum prefix>``.
    """
    model._check_fitted()
    spec = _plain_feature_spec(feature_spec)
    names = spec.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("feature_spec must contain 'names': the list of feature column names")
    if len(names) != model.n_features_:
        raise ValueError(
            f"feature_spec names {len(names)} features {names}, "
            f"the model has {model.n_features_} features"
        )
    first, last = _check_data_range(data_range)
    for name, value in (("instrument_id", instrument_id), ("bar_type", bar_type)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, was {value!r}")
    if version is not None and (not isinstance(version, str) or not version.strip()):
        raise ValueError(f"version must be a non-empty string or None, was {version!r}")

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model_version": "",
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "instrument_id": instrument_id,
        "bar_type": bar_type,
        "data_range": [first, last],
        "feature_spec": spec,
        "params": {
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
        },
        "diagnostics": _plain(getattr(model, "diagnostics_", {})),
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


def artifact_checksum(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of the checksummed fields of an artifact dict."""
    payload = {key: doc[key] for key in _CHECKSUMMED}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return _CHECKSUM_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


# ------------------------------------------------------------------------------------- load
def load_model(
    path: str | os.PathLike[str], *, expected_features: tuple[str, ...] | None = None
) -> tuple[RegimeHMM, ModelMetadata]:
    """Read and fully validate an artifact; ``expected_features`` rejects another feature list."""
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
    if raw["schema_version"] != SCHEMA_VERSION:
        raise fail(
            f"unknown schema_version {raw['schema_version']!r} (this code reads {SCHEMA_VERSION})"
        )
    try:
        doc = msgspec.json.decode(data, type=_ArtifactV1)
    except msgspec.ValidationError as exc:
        raise fail(f"invalid content: {_describe(exc)}") from None

    prm = doc.params
    k, d = prm.n_states, prm.n_features
    if k < 1 or d < 1:
        raise fail(f"params.n_states and params.n_features must be >= 1, got {k} and {d}")
    arrays = {
        "startprob": (prm.startprob, (k,), "(n_states,)"),
        "transmat": (prm.transmat, (k, k), "(n_states, n_states)"),
        "means": (prm.means, (k, d), "(n_states, n_features)"),
        "covars": (prm.covars, (k, d, d), "(n_states, n_features, n_features)"),
        "scaler_mean": (prm.scaler_mean, (d,), "(n_features,)"),
        "scaler_std": (prm.scaler_std, (d,), "(n_features,)"),
    }
    arr: dict[str, np.ndarray] = {}
    for name, (value, shape, label) in arrays.items():
        try:
            a = np.array(value, dtype=np.float64)
        except ValueError:
            raise fail(f"params.{name} is ragged, expected shape {shape} {label}") from None
        if a.shape != shape:
            raise fail(f"params.{name} has shape {a.shape}, expected {shape} {label}")
        if not np.isfinite(a).all():
            raise fail(f"params.{name} contains NaN or inf")
        arr[name] = a

    names = doc.feature_spec.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise fail("feature_spec.names must be a list of feature column names")
    if len(names) != d:
        raise fail(f"feature_spec names {len(names)} features {names} but params.n_features={d}")

    computed = artifact_checksum(msgspec.to_builtins(doc))
    if doc.checksum != computed:
        raise fail(
            f"checksum mismatch, the file is corrupted or was edited "
            f"(stored {doc.checksum}, computed {computed})"
        )

    if prm.covariance_type not in COVARIANCE_TYPES:
        raise fail(
            f"params.covariance_type {prm.covariance_type!r} is not one of {COVARIANCE_TYPES}"
        )
    if not prm.min_covar > 0:
        raise fail(f"params.min_covar must be > 0, got {prm.min_covar}")
    for name in ("startprob", "transmat"):
        a = arr[name]
        sums = a.sum(axis=-1)
        if (a < 0).any() or (np.abs(sums - 1.0) > _PROB_TOL).any():
            raise fail(
                f"params.{name} rows must be non-negative and sum to 1, row sums {sums.tolist()}"
            )
    if (arr["scaler_std"] <= 0).any():
        raise fail(f"params.scaler_std must be > 0, got {arr['scaler_std'].tolist()}")
    cov = arr["covars"]
    for i in range(k):
        if not np.allclose(cov[i], cov[i].T, rtol=1e-10, atol=1e-12):
            raise fail(f"params.covars[{i}] is not symmetric")
        try:
            np.linalg.cholesky(cov[i])
        except np.linalg.LinAlgError:
            raise fail(f"params.covars[{i}] is not positive definite") from None
    if doc.data_range[0] > doc.data_range[1]:
        raise fail(f"data_range first {doc.data_range[0]} is after last {doc.data_range[1]}")
    if expected_features is not None and tuple(names) != tuple(expected_features):
        raise fail(
            f"feature mismatch: model was trained on {tuple(names)}, "
            f"expected {tuple(expected_features)}"
        )

    try:
        model = RegimeHMM.from_params(
            startprob=arr["startprob"],
            transmat=arr["transmat"],
            means=arr["means"],
            covars=cov,
            scaler_mean=arr["scaler_mean"],
            scaler_std=arr["scaler_std"],
            covariance_type=prm.covariance_type,
            min_covar=prm.min_covar,
            diagnostics=doc.diagnostics,
        )
    except ValueError as exc:
        raise fail(f"invalid parameters: {exc}") from None
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
        diagnostics=doc.diagnostics,
    )
    return model, meta


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


