"""Observation features of the HMM: the single definition, with a batch and a streaming twin.

The HMM is fitted on features computed in batch (polars, whole history) and filtered live on
features computed bar by bar (``StreamingFeatures``). Both implement exactly the definitions
below, and the test-suite proves they agree on real data, so a model never sees features in live
trading that differ from those it was trained on.

Definitions, at bar ``t`` with close ``c_t``, high ``h_t``, low ``l_t``, volume ``v_t``
(``w = FeatureSpec.vol_window``, ``m = FeatureSpec.volume_window``):

* ``trend``        ``mean(r_{t-w+1}, ..., r_t)`` with ``r_t = ln(c_t / c_{t-1})``: the drift of the
  last ``w`` log returns. (A single bar's return has a signal-to-noise ratio near zero: a Gaussian
  HMM given the raw return splits bars by the sign of their return instead of finding persistent
  regimes; see docs/SYSTEM_DESIGN.md.)
* ``realized_vol`` ``sqrt(mean(r_{t-w+1}^2, ..., r_t^2))``: RMS of the last ``w`` returns, no
  mean subtraction (the mean of short-horizon returns is noise).
* ``norm_range``   ``ln(h_t / l_t)``: intrabar range, scale free.
* ``volume_z``     ``(u_t - mean(u_{t-m+1..t})) / std(u_{t-m+1..t})`` with ``u = ln(1 + v)`` and
  the population std (ddof=0); ``0.0`` when that std is below ``1e-12`` (constant volume, e.g.
  FX feeds with no volume at all).

The registry: each definition lives in one *family* class below (``ReturnWindow``,
``BarRange``, ``VolumeZ``) holding its columns, their roles, the window it reads, its polars
expressions and its O(1) streaming update together; ``FAMILIES`` lists them in column order.
A new feature is one family in that list (plus a ``FeatureSpec`` field if it has a new window).
Roles say what a column means to the rest of the system: the model orders its states by the
``trend`` column (ties by ``volatility``), and the ``vol_target`` policy forecasts with the
``volatility`` column; nobody assumes a column position.

A feature row at ``t`` uses bars ``<= t`` only (no look-ahead). The first complete row is at
index ``FeatureSpec.warmup_bars = max(w, m - 1)`` (0-based).

Inputs must be positive finite prices with ``high >= low`` and a finite volume ``>= 0``; anything
else raises ``ValueError`` instead of silently producing NaN features.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import msgspec
import numpy as np
import polars as pl

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
REQUIRED_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
STD_FLOOR = 1e-12  # below this the volume std is treated as zero -> volume_z = 0.0
STATE_VERSION = 2

_INF = math.inf
# Exact recompute when a running sum falls below this fraction of its peak since the last exact
# recompute: keeps the relative error of realized_vol and volume_z far below the 1e-9 contract.
_R2_COLLAPSE = 1e-4
_VAR_COLLAPSE = 1e-3


class FeatureSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Window lengths of the features (the only free parameters of the definitions)."""

    vol_window: int = 20
    volume_window: int = 50

    def __post_init__(self) -> None:
        for name in ("vol_window", "volume_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"FeatureSpec.{name} must be an int, got {value!r}")
            if value < 2:
                raise ValueError(f"FeatureSpec.{name} must be >= 2, got {value}")

    @property
    def names(self) -> tuple[str, ...]:
        """Feature column names, in the order of the feature vector."""
        return FEATURE_NAMES

    @property
    def warmup_bars(self) -> int:
        """Bars before the first complete feature row (its 0-based index)."""
        return max(family.warmup(self) for family in FAMILIES)

    def column(self, role: str) -> int:
        """Index of the column with this role (``trend``, ``volatility``) in the vector."""
        return column_of(self.names, role)


# --------------------------------------------------------------------------------------------
# The registry: one family class per definition, batch and streaming side by side
# --------------------------------------------------------------------------------------------


class FeatureFamily:
    """One definition: its columns, their roles, its batch expressions and streaming update.

    ``update`` receives a validated bar and ``emit`` (True once every family's window is full,
    i.e. the whole vector is ready); it returns the family's values when ``emit`` and advances
    its state either way. ``state``/``load_state`` give plain JSON data (keys unique across
    families) so a checkpoint resumes bit-identically.
    """

    __slots__ = ("spec",)
    names: ClassVar[tuple[str, ...]]
    roles: ClassVar[tuple[str, ...]]  # per column: "trend", "volatility" or "" (no role)
    state_keys: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def warmup(spec: FeatureSpec) -> int:
        """0-based index of the family's first complete row."""
        return 0

    @staticmethod
    def batch(spec: FeatureSpec) -> list[pl.Expr]:
        """The columns over the validated input frame, aliased to ``names``."""
        raise NotImplementedError

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        """Forget all history."""

    def update(
        self, open: float, high: float, low: float, close: float, volume: float, emit: bool
    ) -> tuple[float, ...] | None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], n: int) -> None:
        """Take the validated values of ``state_keys`` (``n``: bars seen so far)."""


class ReturnWindow(FeatureFamily):
    """``trend`` and ``realized_vol`` over the last ``vol_window`` log returns.

    Rings of ``r`` and ``r^2`` with running sums; exact recomputes (``math.fsum``) whenever the
    ring wraps (amortised O(1)) and when the ``r^2`` sum collapses far below its recent peak
    (cancellation would otherwise leave residue, e.g. realized_vol ~1e-9 instead of 0 after a
    burst followed by flat prices).
    """

    names = ("trend", "realized_vol")
    roles = ("trend", "volatility")
    state_keys = (
        "prev_close", "r_buf", "r_sum", "r2_buf", "r2_pos", "r2_count", "r2_sum", "r2_peak",
    )
    __slots__ = (
        "_w", "_prev_close", "_r_buf", "_r_sum", "_r2_buf", "_r2_pos", "_r2_count",
        "_r2_sum", "_r2_peak",
    )

    @staticmethod
    def warmup(spec: FeatureSpec) -> int:
        return spec.vol_window  # needs w returns: bars 1..w

    @staticmethod
    def batch(spec: FeatureSpec) -> list[pl.Expr]:
        w = spec.vol_window
        close = pl.col("close").cast(pl.Float64)
        r = (close / close.shift(1)).log()
        r2 = r * r
        # polars' rolling mean leaves add/subtract residue (~1e-17 after large returns) that
        # sqrt would blow up to ~1e-9 over flat prices; a window of zero returns is exactly 0.
        nonzero = (r2 > 0.0).cast(pl.Int64).rolling_sum(w, min_samples=w)
        return [
            r.rolling_mean(w, min_samples=w).alias("trend"),
            pl.when(nonzero == 0)
            .then(pl.lit(0.0))
            .otherwise(r2.rolling_mean(w, min_samples=w).clip(lower_bound=0.0).sqrt())
            .alias("realized_vol"),
        ]

    def reset(self) -> None:
        w = self._w = self.spec.vol_window
        self._prev_close: float | None = None
        self._r_buf = [0.0] * w
        self._r_sum = 0.0
        self._r2_buf = [0.0] * w
        self._r2_pos = 0
        self._r2_count = 0
        self._r2_sum = 0.0
        self._r2_peak = 0.0  # max running r2 sum since the last exact recompute

    def _recompute(self) -> None:
        self._r2_sum = self._r2_peak = math.fsum(self._r2_buf)
        self._r_sum = math.fsum(self._r_buf)

    def update(
        self, open: float, high: float, low: float, close: float, volume: float, emit: bool
    ) -> tuple[float, ...] | None:
        prev = self._prev_close
        self._prev_close = close
        if prev is None:
            return None
        r = math.log(close / prev)
        r2 = r * r
        w = self._w
        rb = self._r2_buf
        rpos = self._r2_pos
        rbuf = self._r_buf
        if self._r2_count == w:
            s = self._r2_sum = self._r2_sum + (r2 - rb[rpos])
            self._r_sum += r - rbuf[rpos]
        else:
            self._r2_count += 1
            s = self._r2_sum = self._r2_sum + r2
            self._r_sum += r
        rb[rpos] = r2
        rbuf[rpos] = r
        rpos += 1
        if rpos == w:
            rpos = 0
            self._recompute()
        elif s > self._r2_peak:
            self._r2_peak = s
        self._r2_pos = rpos
        if not emit:
            return None
        s = self._r2_sum
        if s < _R2_COLLAPSE * self._r2_peak:
            self._recompute()
            s = self._r2_sum
        ms = s / w
        return (self._r_sum / w, math.sqrt(ms) if ms > 0.0 else 0.0)

    def state(self) -> dict[str, Any]:
        return {
            "prev_close": self._prev_close,
            "r_buf": list(self._r_buf),
            "r_sum": self._r_sum,
            "r2_buf": list(self._r2_buf),
            "r2_pos": self._r2_pos,
            "r2_count": self._r2_count,
            "r2_sum": self._r2_sum,
            "r2_peak": self._r2_peak,
        }

    def load_state(self, state: dict[str, Any], n: int) -> None:
        w = self._w
        prev = state["prev_close"]
        if (prev is None) != (n == 0):
            raise ValueError(f"state['prev_close'] is {prev!r} but n={n}")
        self._prev_close = None if prev is None else _float(state, "prev_close")
        self._r_buf = _buf(state, "r_buf", w)
        self._r_sum = _float(state, "r_sum")
        self._r2_buf = _buf(state, "r2_buf", w)
        self._r2_pos = _int(state, "r2_pos", 0, w - 1)
        self._r2_count = _int(state, "r2_count", 0, w)
        self._r2_sum = _float(state, "r2_sum")
        self._r2_peak = _float(state, "r2_peak")
        if self._r2_count != min(max(n - 1, 0), w):
            raise ValueError(f"state counts inconsistent with n={n}")


class BarRange(FeatureFamily):
    """``norm_range``: the bar's own log range, no window and no state."""

    names = ("norm_range",)
    roles = ("",)
    __slots__ = ()

    @staticmethod
    def batch(spec: FeatureSpec) -> list[pl.Expr]:
        return [
            (pl.col("high").cast(pl.Float64) / pl.col("low").cast(pl.Float64))
            .log()
            .alias("norm_range")
        ]

    def update(
        self, open: float, high: float, low: float, close: float, volume: float, emit: bool
    ) -> tuple[float, ...] | None:
        return (math.log(high / low),) if emit else None


class VolumeZ(FeatureFamily):
    """``volume_z`` of ``u = ln(1 + v)`` over the last ``volume_window`` bars.

    A ring of ``u`` with running sums kept relative to a shift (the window value nearest its
    mean), so the variance ``E[d^2] - E[d]^2`` is well conditioned and exactly 0 for constant
    volume; exact recomputes when the ring wraps and when the variance collapses.
    """

    names = ("volume_z",)
    roles = ("",)
    state_keys = ("u_buf", "u_pos", "u_count", "u_shift", "u_s1", "u_s2", "u_peak")
    __slots__ = (
        "_m", "_u", "_u_buf", "_u_pos", "_u_count", "_u_shift", "_u_s1", "_u_s2",
        "_u_peak",
    )

    @staticmethod
    def warmup(spec: FeatureSpec) -> int:
        return spec.volume_window - 1  # needs m bars: 0..m-1

    @staticmethod
    def batch(spec: FeatureSpec) -> list[pl.Expr]:
        m = spec.volume_window
        u = pl.col("volume").cast(pl.Float64).log1p()
        u_mean = u.rolling_mean(m, min_samples=m)
        u_std = u.rolling_std(m, min_samples=m, ddof=0)
        return [
            pl.when(u_std < STD_FLOOR)
            .then(pl.lit(0.0))
            .otherwise((u - u_mean) / u_std)
            .alias("volume_z")
        ]

    def reset(self) -> None:
        m = self._m = self.spec.volume_window
        self._u = 0.0  # the current bar's u
        self._u_buf = [0.0] * m
        self._u_pos = 0
        self._u_count = 0
        self._u_shift = 0.0
        self._u_s1 = 0.0  # sum(u - shift) over the window
        self._u_s2 = 0.0  # sum((u - shift)^2) over the window
        self._u_peak = 0.0  # max running s2 since the last exact recompute

    def _recompute(self) -> None:
        """Exact sums of the (full) window around the window value nearest its mean."""
        ub = self._u_buf
        mean = math.fsum(ub) / self._m
        # the first value nearest the mean (``min`` with a key, without a call per value)
        dist = [abs(x - mean) for x in ub]
        k = self._u_shift = ub[dist.index(min(dist))]
        self._u_s1 = math.fsum([x - k for x in ub])
        self._u_s2 = self._u_peak = math.fsum([(x - k) * (x - k) for x in ub])

    def update(
        self, open: float, high: float, low: float, close: float, volume: float, emit: bool
    ) -> tuple[float, ...] | None:
        m = self._m
        u = math.log1p(volume)
        ub = self._u_buf
        pos = self._u_pos
        if self._u_count == m:
            k = self._u_shift
            d = u - k
            od = ub[pos] - k
            self._u_s1 += d - od
            s2 = self._u_s2 = self._u_s2 + (d * d - od * od)
        else:
            if self._u_count == 0:
                self._u_shift = u
            d = u - self._u_shift
            self._u_count += 1
            self._u_s1 += d
            s2 = self._u_s2 = self._u_s2 + d * d
        if s2 > self._u_peak:
            self._u_peak = s2
        ub[pos] = u
        pos += 1
        if pos == m:  # buffer wrapped (always full here): exact recompute
            pos = 0
            self._recompute()
        self._u_pos = pos
        if not emit:
            return None
        mean_d = self._u_s1 / m
        var = self._u_s2 / m - mean_d * mean_d
        if var * m < _VAR_COLLAPSE * self._u_peak:
            self._recompute()
            mean_d = self._u_s1 / m
            var = self._u_s2 / m - mean_d * mean_d
        std = math.sqrt(var) if var > 0.0 else 0.0
        return (0.0 if std < STD_FLOOR else (u - self._u_shift - mean_d) / std,)

    def state(self) -> dict[str, Any]:
        return {
            "u_buf": list(self._u_buf),
            "u_pos": self._u_pos,
            "u_count": self._u_count,
            "u_shift": self._u_shift,
            "u_s1": self._u_s1,
            "u_s2": self._u_s2,
            "u_peak": self._u_peak,
        }

    def load_state(self, state: dict[str, Any], n: int) -> None:
        m = self._m
        self._u_buf = _buf(state, "u_buf", m)
        self._u_pos = _int(state, "u_pos", 0, m - 1)
        self._u_count = _int(state, "u_count", 0, m)
        self._u_shift = _float(state, "u_shift")
        self._u_s1 = _float(state, "u_s1")
        self._u_s2 = _float(state, "u_s2")
        self._u_peak = _float(state, "u_peak")
        if self._u_count != min(n, m):
            raise ValueError(f"state counts inconsistent with n={n}")


FAMILIES: tuple[type[FeatureFamily], ...] = (ReturnWindow, BarRange, VolumeZ)
FEATURE_NAMES: tuple[str, ...] = tuple(name for f in FAMILIES for name in f.names)
FEATURE_ROLES: dict[str, str] = {
    name: role for f in FAMILIES for name, role in zip(f.names, f.roles, strict=True) if role
}


def column_of(names: tuple[str, ...] | list[str], role: str) -> int:
    """Index of the column with ``role`` among ``names`` (ValueError naming the role if none)."""
    for i, name in enumerate(names):
        if FEATURE_ROLES.get(name) == role:
            return i
    raise ValueError(f"no feature with role {role!r} among {list(names)}")


def order_columns(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """The columns the model's canonical state order sorts by: trend, then volatility."""
    return tuple(
        column_of(names, role)
        for role in ("trend", "volatility")
        if any(FEATURE_ROLES.get(n) == role for n in names)
    )


def _int(state: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = state[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"state[{key!r}] must be an int in [{lo}, {hi}], got {v!r}")
    return v


def _float(state: dict[str, Any], key: str, v: Any = None) -> float:
    v = state[key] if v is None else v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"state[{key!r}] must hold finite numbers, got {v!r}")
    return float(v)


def _buf(state: dict[str, Any], key: str, size: int) -> list[float]:
    v = state[key]
    if not isinstance(v, list) or len(v) != size:
        raise ValueError(f"state[{key!r}] must be a list of {size} floats")
    return [_float(state, key, x) for x in v]


# --------------------------------------------------------------------------------------------
# Batch (polars)
# --------------------------------------------------------------------------------------------


def _validate_frame(bars: pl.DataFrame) -> None:
    if not isinstance(bars, pl.DataFrame):
        raise ValueError(f"bars must be a polars DataFrame, got {type(bars).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars is missing column(s) {missing}; required {list(REQUIRED_COLUMNS)}")
    clash = [c for c in FEATURE_NAMES if c in bars.columns]
    if clash:
        raise ValueError(f"bars already has feature column(s) {clash}; drop them first")
    for c in REQUIRED_COLUMNS:
        if not bars.schema[c].is_numeric():
            raise ValueError(f"column {c!r} must be numeric, got {bars.schema[c]}")
    if bars.height == 0:
        return
    f64 = {c: pl.col(c).cast(pl.Float64) for c in REQUIRED_COLUMNS}
    checks: list[tuple[str, pl.Expr]] = [
        (
            f"{c} must be a positive finite price",
            f64[c].is_null() | ~f64[c].is_finite() | (f64[c] <= 0),
        )
        for c in PRICE_COLUMNS
    ]
    checks.append(
        (
            "volume must be finite and >= 0",
            f64["volume"].is_null() | ~f64["volume"].is_finite() | (f64["volume"] < 0),
        )
    )
    checks.append(("high must be >= low", f64["high"] < f64["low"]))
    bad = bars.select(
        [expr.arg_true().first().alias(str(i)) for i, (_, expr) in enumerate(checks)]
    ).row(0)
    for (message, _), row in zip(checks, bad, strict=True):
        if row is not None:
            values = bars.row(row, named=True)
            shown = {c: values[c] for c in REQUIRED_COLUMNS}
            raise ValueError(f"bad bar at row {row}: {message}; got {shown}")


def batch_features(bars: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """All input columns plus the features (``FEATURE_NAMES``), warm-up rows dropped.

    ``bars`` needs numeric ``open, high, low, close, volume`` columns in time order; any other
    column (e.g. ``ts_event``) is passed through untouched.
    """
    if not isinstance(spec, FeatureSpec):
        raise ValueError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
    _validate_frame(bars)
    out = bars.with_columns([expr for family in FAMILIES for expr in family.batch(spec)])
    return out.slice(spec.warmup_bars)


def feature_matrix(bars: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Features as a C-contiguous float64 array of shape (n_rows_after_warmup, n_features)."""
    feats = batch_features(bars, spec).select(FEATURE_NAMES)
    return np.ascontiguousarray(feats.to_numpy(), dtype=np.float64).reshape(-1, len(FEATURE_NAMES))


def aggregate_bars(bars: pl.DataFrame, bars_per_bar: int) -> pl.DataFrame:
    """Coarse bars from every ``bars_per_bar`` consecutive rows (batch twin of BarAggregator).

    open of the first, max high, min low, close and ``ts_event`` (if present) of the last, summed
    volume. An incomplete last group is dropped: a coarse bar exists only once it has closed.
    """
    _validate_frame(bars)
    n = int(bars_per_bar)
    if n < 2:
        raise ValueError(f"bars_per_bar must be >= 2, got {bars_per_bar}")
    complete = bars.height - bars.height % n
    aggs = [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").cast(pl.Float64).cum_sum().last(),  # running sum, as streamed
    ]
    if "ts_event" in bars.columns:
        aggs.insert(0, pl.col("ts_event").last())
    return (
        bars.slice(0, complete)
        .with_columns((pl.int_range(pl.len()) // n).alias("_group"))
        .group_by("_group", maintain_order=True)
        .agg(aggs)
        .drop("_group")
    )


class BarAggregator:
    """Streaming twin of :func:`aggregate_bars`: one coarse bar per ``bars_per_bar`` bars, O(1).

    ``update`` returns the coarse bar on the call that closes it and None otherwise, so a coarse
    bar is only ever seen after its last constituent bar closed (no look-ahead).
    """

    __slots__ = ("n", "_count", "_open", "_high", "_low", "_close", "_volume")

    def __init__(self, bars_per_bar: int) -> None:
        if isinstance(bars_per_bar, bool) or not isinstance(bars_per_bar, int) or bars_per_bar < 2:
            raise ValueError(f"bars_per_bar must be an int >= 2, got {bars_per_bar!r}")
        self.n = bars_per_bar
        self._count = 0
        self._open = self._high = self._low = self._close = self._volume = 0.0

    def update(
        self, open: float, high: float, low: float, close: float, volume: float
    ) -> tuple[float, float, float, float, float] | None:
        """Add one (validated) bar; the coarse bar ``(o, h, l, c, v)`` when it closes."""
        if self._count == 0:
            self._open, self._high, self._low, self._volume = open, high, low, volume
        else:
            if high > self._high:
                self._high = high
            if low < self._low:
                self._low = low
            self._volume += volume
        self._close = close
        self._count += 1
        if self._count < self.n:
            return None
        self._count = 0
        return (self._open, self._high, self._low, self._close, self._volume)

    def state(self) -> dict[str, Any]:
        """Plain JSON data; :meth:`from_state` resumes bit-identically."""
        return {
            "bars_per_bar": self.n,
            "count": self._count,
            "ohlcv": [self._open, self._high, self._low, self._close, self._volume],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BarAggregator:
        obj = cls(state["bars_per_bar"])
        count = state["count"]
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < obj.n:
            raise ValueError(f"aggregator count must be an int in [0, {obj.n}), got {count!r}")
        values = [float(v) for v in state["ohlcv"]]
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"aggregator ohlcv must be 5 finite numbers, got {state['ohlcv']!r}")
        obj._count = count
        obj._open, obj._high, obj._low, obj._close, obj._volume = values
        return obj


# --------------------------------------------------------------------------------------------
# Streaming (O(1) per bar)
# --------------------------------------------------------------------------------------------


class StreamingFeatures:
    """Bar-by-bar twin of :func:`batch_features`: O(1) per bar, checkpointable.

    Validates each bar once, then hands it to every family of ``FAMILIES``; the vector is the
    families' values in column order once every window is full (``bars_seen > warmup_bars``).
    """

    __slots__ = ("spec", "_n", "_warmup", "_families", "_updates")

    def __init__(self, spec: FeatureSpec) -> None:
        if not isinstance(spec, FeatureSpec):
            raise ValueError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
        self.spec = spec
        self._warmup = spec.warmup_bars
        self._families = tuple(family(spec) for family in FAMILIES)
        self._updates = tuple(family.update for family in self._families)
        self.reset()

    def reset(self) -> None:
        """Forget all history (back to the start of warm-up)."""
        self._n = 0  # bars seen
        for family in self._families:
            family.reset()

    @property
    def bars_seen(self) -> int:
        return self._n

    @property
    def ready(self) -> bool:
        """True once ``update`` returns feature vectors."""
        return self._n > self._warmup

    def update(
        self, open: float, high: float, low: float, close: float, volume: float
    ) -> np.ndarray | None:
        """Ingest one closed bar; return its feature vector (new float64 array), None in warm-up."""
        row = self.update_tuple(open, high, low, close, volume)
        return None if row is None else np.array(row)

    def update_tuple(
        self, open: float, high: float, low: float, close: float, volume: float
    ) -> tuple[float, ...] | None:
        """:meth:`update` returning a tuple of Python floats (no array allocation: the engine's
        per-bar path hands it straight to ``ForwardFilter.update_tuple``)."""
        if not (
            0.0 < open < _INF and 0.0 < high < _INF and 0.0 < low < _INF and 0.0 < close < _INF
        ):
            raise ValueError(
                "prices must be positive and finite, got "
                f"open={open!r} high={high!r} low={low!r} close={close!r}"
            )
        if not 0.0 <= volume < _INF:
            raise ValueError(f"volume must be finite and >= 0, got {volume!r}")
        if high < low:
            raise ValueError(f"high must be >= low, got high={high!r} low={low!r}")
        if not high / low < _INF:
            raise ValueError(f"high/low overflows: high={high!r} low={low!r}")
        n = self._n = self._n + 1
        emit = n > self._warmup
        if len(self._updates) == 3:  # the shipped registry, unrolled: this is the per-bar path
            a, b, c = self._updates
            va, vb, vc = (
                a(open, high, low, close, volume, emit),
                b(open, high, low, close, volume, emit),
                c(open, high, low, close, volume, emit),
            )
            return va + vb + vc if emit else None  # type: ignore[operator]
        values = [update(open, high, low, close, volume, emit) for update in self._updates]
        return sum(values, ()) if emit else None  # type: ignore[arg-type]

    # ------------------------------------------------------------------ checkpointing

    def state(self) -> dict[str, Any]:
        """Plain JSON-serialisable snapshot; ``from_state`` resumes bit-identically."""
        out: dict[str, Any] = {
            "version": STATE_VERSION,
            "vol_window": self.spec.vol_window,
            "volume_window": self.spec.volume_window,
            "n": self._n,
        }
        for family in self._families:
            out.update(family.state())
        return out

    @classmethod
    def from_state(cls, spec: FeatureSpec, state: dict[str, Any]) -> StreamingFeatures:
        """Rebuild an instance from :meth:`state` output (e.g. after a JSON round-trip)."""
        obj = cls(spec)
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict, got {type(state).__name__}")
        expected = set(obj.state())
        if set(state) != expected:
            raise ValueError(
                f"state keys mismatch: missing {sorted(expected - set(state))}, "
                f"unexpected {sorted(set(state) - expected)}"
            )
        if state["version"] != STATE_VERSION:
            raise ValueError(f"state version {state['version']!r} != {STATE_VERSION}")
        if (state["vol_window"], state["volume_window"]) != (spec.vol_window, spec.volume_window):
            raise ValueError(
                f"state windows (vol_window={state['vol_window']}, "
                f"volume_window={state['volume_window']}) do not match {spec}"
            )
        n = _int(state, "n", 0, 2**63)
        obj._n = n
        for family in obj._families:
            family.load_state(state, n)
        return obj
