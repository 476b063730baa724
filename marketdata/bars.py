"""Load bar files of several real-world layouts into one normalized, validated polars frame.

Every loader returns the same shape: ``ts_event`` (Int64 UNIX ns of the bar CLOSE, UTC) and
``open, high, low, close, volume`` (Float64). Stamping bars at their close is what keeps a
backtest free of look-ahead: a bar is only known once it has closed. Each layout stores time
differently (open vs close, ms vs us epochs, local offsets, Lean's bar starts), so each loader
converts explicitly; see /work/shared/data/README.md for the conventions.

Nothing is silently repaired: `validate_bars` drops rows that are unusable and lists them in a
`DataQualityReport`, so a user sees exactly what was removed and why.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import polars as pl

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("binance_kline", "privet_csv", "ohlcv_csv", "lean_zip")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = ("ts_event", *PRICE_COLUMNS, "volume")

QuoteSide = Literal["mid", "bid", "ask"]

# Problems in the order they are checked; a dropped row is counted under the FIRST that applies,
# so the per-problem counts add up to the number of dropped rows.
PROBLEMS: tuple[str, ...] = (
    "invalid_timestamp",
    "non_finite",
    "non_positive_price",
    "high_below_low",
    "open_close_outside_range",
    "negative_volume",
    "duplicate_timestamp",
    "out_of_order",
)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR

_INTERVAL_UNITS_NS: dict[str, int] = {
    "ms": NS_PER_MS,
    "millisecond": NS_PER_MS,
    "s": NS_PER_S,
    "sec": NS_PER_S,
    "second": NS_PER_S,
    "m": NS_PER_MINUTE,
    "min": NS_PER_MINUTE,
    "minute": NS_PER_MINUTE,
    "h": NS_PER_HOUR,
    "hour": NS_PER_HOUR,
    "d": NS_PER_DAY,
    "day": NS_PER_DAY,
    "daily": NS_PER_DAY,
    "w": 7 * NS_PER_DAY,
    "week": 7 * NS_PER_DAY,
}
_LEAN_RESOLUTION_DIRS: dict[str, int] = {
    "second": NS_PER_S,
    "minute": NS_PER_MINUTE,
    "hour": NS_PER_HOUR,
    "daily": NS_PER_DAY,
}
_OFFSET_RE = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_LEAN_DATE_RE = re.compile(r"(\d{8})_")
_LEAN_START_RE = re.compile(r"^\d{8} \d{2}:\d{2}$")
_BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)


class DataQualityReport(msgspec.Struct, kw_only=True):
    """What validation found: dropped rows per problem (with examples) and kept-data gaps."""

    source: str
    fmt: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int]  # problem -> rows dropped for it (zero counts omitted)
    examples: dict[str, list[dict[str, Any]]]  # problem -> up to N offending rows
    interval_ns: int | None  # expected bar spacing used for gap detection
    gaps: int  # consecutive kept bars further apart than interval_ns
    largest_gap_ns: int  # 0 if no gap
    largest_gap_end_ns: int | None  # ts_event of the bar after the largest gap
    first_ts: int | None
    last_ts: int | None

    @property
    def n_dropped(self) -> int:
        return self.rows_in - self.rows_out

    @property
    def ok(self) -> bool:
        """True if no row had to be dropped (gaps alone do not make data bad)."""
        return self.n_dropped == 0

    def summary(self) -> str:
        """One line, for logs."""
        parts = ", ".join(f"{k}={v}" for k, v in self.dropped.items()) or "none"
        return (
            f"{self.source} [{self.fmt}]: kept {self.rows_out:,} of {self.rows_in:,} rows, "
            f"dropped {self.n_dropped:,} ({parts}); gaps {self.gaps:,}"
            + (f" (largest {format_duration(self.largest_gap_ns)})" if self.gaps else "")
        )

    def __str__(self) -> str:
        lines = [f"Data quality report: {self.source} [{self.fmt}]"]
        lines.append(
            f"  rows read {self.rows_in:,}, kept {self.rows_out:,}, dropped {self.n_dropped:,}"
        )
        if self.first_ts is not None and self.last_ts is not None:
            lines.append(f"  bar closes {format_ts(self.first_ts)} -> {format_ts(self.last_ts)}")
        interval = format_duration(self.interval_ns) if self.interval_ns else "unknown"
        gap_line = f"  interval {interval}; gaps {self.gaps:,}"
        if self.gaps and self.largest_gap_end_ns is not None:
            gap_line += (
                f" (largest {format_duration(self.largest_gap_ns)},"
                f" ending at {format_ts(self.largest_gap_end_ns)})"
            )
        lines.append(gap_line)
        for problem, count in self.dropped.items():
            lines.append(f"  DROPPED {problem}: {count:,}")
            for ex in self.examples.get(problem, []):
                values = ", ".join(f"{k}={v}" for k, v in ex.items() if k != "row")
                lines.append(f"    row {ex['row']}: {values}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LoadResult:
    """The clean bars (sorted, unique, strictly increasing ``ts_event``) and what was removed."""

    frame: pl.DataFrame
    report: DataQualityReport


# -- helpers -------------------------------------------------------------------------------------


def format_ts(ts_ns: int) -> str:
    """ISO-8601 UTC rendering of a UNIX-ns timestamp (for reports)."""
    secs, ns = divmod(int(ts_ns), NS_PER_S)
    text = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ns:
        text += f".{ns:09d}".rstrip("0")
    return text + "Z"


def format_duration(ns: int | None) -> str:
    if not ns:
        return "0s"
    for unit, size in (("d", NS_PER_DAY), ("h", NS_PER_HOUR), ("m", NS_PER_MINUTE)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns / NS_PER_S:g}s"


def parse_interval(text: str | int) -> int:
    """Bar interval in ns from ``"15m"``, ``"1h"``, ``"1d"``, ``"30s"``, ``"15-MINUTE"``, or ns."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"interval must be positive, got {text}")
        return text
    m = re.fullmatch(r"\s*(\d+)\s*[-_ ]?\s*([A-Za-z]+)\s*", text)
    unit = m.group(2).lower() if m else ""
    if unit not in _INTERVAL_UNITS_NS and unit.endswith("s"):
        unit = unit[:-1]  # plural: "minutes", "HOURS"
    if m and unit in _INTERVAL_UNITS_NS and int(m.group(1)) <= 0:
        raise ValueError(f"interval must be positive, got {text!r}")
    if not m or unit not in _INTERVAL_UNITS_NS:
        raise ValueError(
            f"cannot parse interval {text!r}: use e.g. '1m', '15m', '1h', '1d', '30s' or "
            "'15-MINUTE'"
        )
    return int(m.group(1)) * _INTERVAL_UNITS_NS[unit]


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def _first_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv_strings(data: bytes, *, has_header: bool) -> pl.DataFrame:
    """Read every column as text so that a malformed cell becomes a reportable null, not a crash."""
    return pl.read_csv(io.BytesIO(data), has_header=has_header, infer_schema=False)


def _floats(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def _epoch_to_ns(expr: pl.Expr, *, plus_one_unit: bool = False) -> pl.Expr:
    """Integer epochs of unknown unit -> ns, by magnitude (s < 1e11 <= ms < 1e14 <= us < 1e17).

    Binance moved spot klines from ms to us in 2025, so the unit is decided per value. With
    ``plus_one_unit`` the value is first advanced by one of its own units (inclusive close
    ``...59.999`` -> the exclusive boundary).
    """
    v = expr.cast(pl.Int64, strict=False)
    unit = (
        pl.when(v < 10**11)
        .then(pl.lit(NS_PER_S))
        .when(v < 10**14)
        .then(pl.lit(NS_PER_MS))
        .when(v < 10**17)
        .then(pl.lit(1_000))
        .otherwise(pl.lit(1))
    )
    return ((v + 1) * unit) if plus_one_unit else v * unit


def _parse_time_strings(s: pl.Series, tz: str | None) -> pl.Series:
    """Timestamp text -> Int64 UTC ns (null where unparseable).

    Strings carrying an offset (``+01:00``, ``Z``) are converted to UTC per value, which is what
    mixed-offset files (CET/CEST) need; naive strings are wall-clock times in ``tz`` (UTC default).
    Pure digits are treated as epochs and their unit inferred from magnitude.
    """
    s = s.str.strip_chars()
    sample = s.drop_nulls().head(1_000)
    if sample.len() == 0:
        return pl.Series(s.name, [None] * s.len(), dtype=pl.Int64)
    # The layout is what most values look like, so one garbled cell in the first row is dropped
    # as an invalid timestamp instead of turning every other row into one.
    if sample.str.contains(r"^[0-9]+$").sum() * 2 > sample.len():
        return pl.select(_epoch_to_ns(pl.lit(s))).to_series()
    if sample.str.contains(_OFFSET_RE.pattern).sum() * 2 > sample.len():
        parsed = s.str.to_datetime(time_unit="ns", time_zone="UTC", strict=False)
    else:
        parsed = s.str.to_datetime(time_unit="ns", strict=False).dt.replace_time_zone(
            tz or "UTC", ambiguous="null", non_existent="null"
        )
    return parsed.dt.epoch("ns").cast(pl.Int64)


def _snap_inclusive_close(expr: pl.Expr) -> pl.Expr:
    """``hh:mm:59.999`` (last ms inside the bar) -> the close boundary ``hh:mm+1:00``."""
    return pl.when(expr % NS_PER_S == 999 * NS_PER_MS).then(expr + NS_PER_MS).otherwise(expr)


def _normalized(df: pl.DataFrame, ts: pl.Expr | pl.Series, *, volume: str | None) -> pl.DataFrame:
    cols: list[pl.Expr] = [
        (pl.lit(ts) if isinstance(ts, pl.Series) else ts).cast(pl.Int64).alias("ts_event")
    ]
    cols += [_floats(c).alias(c) for c in PRICE_COLUMNS]
    cols.append(_floats(volume).alias("volume") if volume else pl.lit(0.0).alias("volume"))
    return df.select(cols)


def typical_spacing(ts: pl.Series) -> int | None:
    """Most common positive step between timestamps (the smallest on ties), None if unknown.

    The mode, unlike the median, is not pulled off the bar length by weekends, holidays or a
    handful of dropped rows.
    """
    diffs = ts.drop_nulls().diff().drop_nulls()
    diffs = diffs.filter(diffs > 0)
    if not diffs.len():
        return None
    counts = diffs.value_counts(name="n").sort(["n", diffs.name], descending=[True, False])
    return int(counts[diffs.name][0])


# -- format detection ----------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Guess the layout from the file name and, for CSVs, the first line."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".zip"):
        return "lean_zip"
    if not (name.endswith(".csv") or name.endswith(".csv.gz") or name.endswith(".txt")):
        raise ValueError(
            f"cannot detect the bar format of {p} (supported: {', '.join(FORMATS)}; "
            "tick/quote parquet and order-book files are not bar files)"
        )
    with gzip.open(p, "rb") if name.endswith(".gz") else p.open("rb") as fh:
        head = fh.readline().decode("utf-8", errors="replace").strip()
    if not head:
        raise ValueError(f"bar file {p} is empty (its first line is blank)")
    fields = [f.strip().lower() for f in head.split(",")]
    if "close_datetime" in fields:
        return "privet_csv"
    if len(fields) == 12 and (
        fields[0] in ("open_time", "open time", "opentime") or all(_is_number(f) for f in fields)
    ):
        return "binance_kline"
    if {"open", "high", "low", "close"} <= set(fields):
        return "ohlcv_csv"
    raise ValueError(
        f"cannot detect the bar format of {p} from its first line {head[:120]!r}; "
        f"name it (the data entry's format: key, or --format) as one of {', '.join(FORMATS)}"
    )


# -- loaders (raw -> normalized, unvalidated) ----------------------------------------------------


def _load_binance_kline(path: Path) -> tuple[pl.DataFrame, int | None]:
    data = _read_bytes(path)
    has_header = not _is_number(_first_line(data).split(",")[0])
    raw = _read_csv_strings(data, has_header=has_header)
    if raw.width != 12:
        raise ValueError(f"{path}: a Binance kline file has 12 columns, found {raw.width}")
    raw.columns = list(_BINANCE_KLINE_COLUMNS)
    open_ns = _epoch_to_ns(pl.col("open_time").str.strip_chars())
    close_ns = _epoch_to_ns(pl.col("close_time").str.strip_chars(), plus_one_unit=True)
    intervals = raw.select((close_ns - open_ns).alias("d")).to_series()
    interval = intervals.drop_nulls().median()
    return _normalized(raw, close_ns, volume="volume"), (
        int(interval) if interval else None  # type: ignore[arg-type]
    )


def _load_privet_csv(path: Path) -> tuple[pl.DataFrame, int | None]:
    raw = _read_csv_strings(_read_bytes(path), has_header=True)
    missing = {"open", "high", "low", "close", "volume", "close_datetime"} - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: privet_csv needs columns {sorted(missing)}")
    ts = _parse_time_strings(raw["close_datetime"], None)
    ts = pl.select(_snap_inclusive_close(pl.lit(ts))).to_series()
    return _normalized(raw, ts, volume="volume"), None


def _load_ohlcv_csv(path: Path, tz: str | None) -> tuple[pl.DataFrame, int | None]:
    raw = _read_csv_strings(_read_bytes(path), has_header=True)
    raw.columns = [c.strip().lower() for c in raw.columns]
    missing = {"open", "high", "low", "close"} - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: ohlcv_csv needs columns {sorted(missing)}, has {raw.columns}")
    candidates = ("timestamp", "timestamp_utc", "ts_event", "time", "datetime", "date")
    ts_col = next((c for c in candidates if c in raw.columns), raw.columns[0])
    ts = _parse_time_strings(raw[ts_col], tz)
    ts = pl.select(_snap_inclusive_close(pl.lit(ts))).to_series()
    return _normalized(raw, ts, volume="volume" if "volume" in raw.columns else None), None


def _lean_member(zf: zipfile.ZipFile, path: Path) -> str:
    members = [n for n in zf.namelist() if n.lower().endswith(".csv")]
    if len(members) != 1:
        raise ValueError(f"{path}: expected one CSV inside a Lean zip, found {zf.namelist()}")
    return members[0]


def _load_lean_zip(
    path: Path,
    interval_ns: int | None,
    tz: str | None,
    price_scale: float | None,
    quote_side: QuoteSide,
) -> tuple[pl.DataFrame, int | None]:
    with zipfile.ZipFile(path) as zf:
        member = _lean_member(zf, path)
        raw = _read_csv_strings(zf.read(member), has_header=False)
    parts = [x.lower() for x in path.parts]
    if interval_ns is None:
        # the nearest resolution folder above the file (Lean: <type>/<market>/<resolution>/...)
        interval_ns = next(
            (_LEAN_RESOLUTION_DIRS[d] for d in reversed(parts) if d in _LEAN_RESOLUTION_DIRS), None
        )
        if interval_ns is None:
            raise ValueError(
                f"{path}: cannot tell the Lean resolution from the path (no minute/hour/daily "
                "folder); pass interval="
            )
    is_equity = "equity" in parts
    tz = tz or ("America/New_York" if is_equity else "UTC")
    scale = price_scale if price_scale is not None else (10_000.0 if is_equity else 1.0)
    if scale <= 0:
        raise ValueError(f"price_scale must be positive, got {scale}")
    if raw.width not in (5, 6, 11):
        raise ValueError(
            f"{path}: a Lean bar file has 6 (trade) or 11 (quote) columns, found {raw.width}"
        )
    time_col = raw.columns[0]
    present = raw[time_col].drop_nulls()
    first = present[0].strip() if present.len() else ""
    if _LEAN_START_RE.match(first):
        start_local = (
            raw[time_col]
            .str.strip_chars()
            .str.to_datetime("%Y%m%d %H:%M", time_unit="ns", strict=False)
        )
    else:  # minute/second files: ms since midnight, the date lives only in the file name
        m = _LEAN_DATE_RE.search(path.name) or _LEAN_DATE_RE.search(member)
        if not m:
            raise ValueError(f"{path}: Lean intraday file name must start with YYYYMMDD_")
        day = datetime.strptime(m.group(1), "%Y%m%d")
        ms = raw[time_col].str.strip_chars().cast(pl.Int64, strict=False)
        start_local = pl.select(pl.lit(day) + pl.duration(milliseconds=pl.lit(ms))).to_series()
        start_local = start_local.cast(pl.Datetime("ns"))

    step = pl.duration(nanoseconds=interval_ns)
    if interval_ns >= NS_PER_DAY:  # calendar bars: add in wall-clock time, then localize
        close = (pl.lit(start_local) + step).dt.replace_time_zone(
            tz, ambiguous="earliest", non_existent="null"
        )
    else:
        close = (
            pl.lit(start_local).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
            + step
        )
    ts = pl.select(close.dt.epoch("ns")).to_series()

    if raw.width == 11:  # quote bars: bid o,h,l,c,size, ask o,h,l,c,size
        c = raw.columns
        bid = {p: _floats(c[1 + i]) for i, p in enumerate(PRICE_COLUMNS)}
        ask = {p: _floats(c[6 + i]) for i, p in enumerate(PRICE_COLUMNS)}
        if quote_side == "mid":
            prices = {p: (bid[p] + ask[p]) / 2.0 for p in PRICE_COLUMNS}
        else:
            prices = bid if quote_side == "bid" else ask
        # Quote sizes are resting size at the bar's end, not traded volume.
        df = raw.select(
            pl.lit(ts).cast(pl.Int64).alias("ts_event"),
            *[(prices[p] / scale).alias(p) for p in PRICE_COLUMNS],
            pl.lit(0.0).alias("volume"),
        )
    else:
        c = raw.columns
        df = raw.select(
            pl.lit(ts).cast(pl.Int64).alias("ts_event"),
            *[(_floats(c[1 + i]) / scale).alias(p) for i, p in enumerate(PRICE_COLUMNS)],
            (_floats(c[5]) if raw.width == 6 else pl.lit(0.0)).alias("volume"),
        )
    return df, interval_ns


# -- validation ----------------------------------------------------------------------------------


def _problem_expr() -> pl.Expr:
    o, h, lo, c, v = (pl.col(x) for x in ("open", "high", "low", "close", "volume"))
    values = [o, h, lo, c, v]
    non_finite = pl.any_horizontal([x.is_null() | ~x.is_finite() for x in values])
    return (
        pl.when(pl.col("ts_event").is_null())
        .then(pl.lit("invalid_timestamp"))
        .when(non_finite)
        .then(pl.lit("non_finite"))
        .when(pl.any_horizontal([x <= 0 for x in (o, h, lo, c)]))
        .then(pl.lit("non_positive_price"))
        .when(h < lo)
        .then(pl.lit("high_below_low"))
        .when((o < lo) | (o > h) | (c < lo) | (c > h))
        .then(pl.lit("open_close_outside_range"))
        .when(v < 0)
        .then(pl.lit("negative_volume"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def _example(row: dict[str, Any]) -> dict[str, Any]:
    ex: dict[str, Any] = {"row": row["row"]}
    ts = row["ts_event"]
    ex["ts_event"] = format_ts(ts) if ts is not None else None
    for c in ("open", "high", "low", "close", "volume"):
        ex[c] = row[c]
    return ex


def validate_bars(
    df: pl.DataFrame,
    *,
    interval_ns: int | None = None,
    source: str = "<frame>",
    fmt: str = "frame",
    max_examples: int = 5,
) -> LoadResult:
    """Drop and report unusable rows; report (but keep) gaps.

    Value checks run first, then ordering: a row is kept only if its ``ts_event`` is greater than
    the last kept row's (the running max), so a repeated timestamp keeps its first occurrence and
    a row stepping back in time is dropped rather than reordered (reordering would hide a broken
    feed). ``interval_ns`` (else the most common step) defines a gap.
    """
    missing = set(BAR_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"validate_bars needs columns {list(BAR_COLUMNS)}; missing {missing}")
    work = df.select(
        pl.col("ts_event").cast(pl.Int64, strict=False),
        *[pl.col(c).cast(pl.Float64, strict=False) for c in BAR_COLUMNS[1:]],
    ).with_row_index("row")
    work = work.with_columns(_problem_expr().alias("problem"))

    valid = work.filter(pl.col("problem").is_null())
    prev_max = pl.col("ts_event").cum_max().shift(1)
    valid = valid.with_columns(
        keep=prev_max.is_null() | (pl.col("ts_event") > prev_max),
    )
    kept_ts = valid.filter("keep")["ts_event"]
    valid = valid.with_columns(
        problem=pl.when(pl.col("keep"))
        .then(pl.lit(None, dtype=pl.String))
        .when(pl.col("ts_event").is_in(kept_ts.implode()))
        .then(pl.lit("duplicate_timestamp"))
        .otherwise(pl.lit("out_of_order"))
    ).drop("keep")
    bad = pl.concat([work.filter(pl.col("problem").is_not_null()), valid]).filter(
        pl.col("problem").is_not_null()
    )
    bad = bad.sort("row")
    clean = valid.filter(pl.col("problem").is_null()).select(BAR_COLUMNS)

    dropped: dict[str, int] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    for problem in PROBLEMS:
        rows = bad.filter(pl.col("problem") == problem)
        if rows.height:
            dropped[problem] = rows.height
            examples[problem] = [_example(r) for r in rows.head(max_examples).iter_rows(named=True)]

    ts = clean["ts_event"]
    expected = interval_ns or typical_spacing(ts)
    gaps, largest, largest_end = 0, 0, None
    if expected and ts.len() > 1:
        diffs = ts.diff()
        is_gap = diffs > expected
        gaps = int(is_gap.sum())
        if gaps:
            i = int(diffs.arg_max())  # type: ignore[arg-type]
            largest, largest_end = int(diffs[i]), int(ts[i])

    report = DataQualityReport(
        source=source,
        fmt=fmt,
        rows_in=df.height,
        rows_out=clean.height,
        dropped=dropped,
        examples=examples,
        interval_ns=expected,
        gaps=gaps,
        largest_gap_ns=largest,
        largest_gap_end_ns=largest_end,
        first_ts=int(ts[0]) if ts.len() else None,
        last_ts=int(ts[-1]) if ts.len() else None,
    )
    if report.n_dropped:
        logger.warning("bar data quality: %s", report.summary())
    else:
        logger.info("bar data quality: %s", report.summary())
    return LoadResult(frame=clean, report=report)


# -- entry point ---------------------------------------------------------------------------------


def load_bars(
    path: str | Path,
    fmt: str | None = None,
    *,
    interval: str | int | None = None,
    tz: str | None = None,
    price_scale: float | None = None,
    quote_side: QuoteSide = "mid",
    max_examples: int = 5,
) -> LoadResult:
    """Load one bar file into the normalized frame, validated.

    fmt: one of `FORMATS`, detected from the path and first line when None.
    interval: bar length (``"1m"``, ``"1h"``, ``"1d"``...). Lean files need it to turn bar starts
        into closes (taken from the minute/hour/daily folder when None); for all formats it is the
        spacing beyond which a gap is reported.
    tz: zone of naive wall-clock times (ohlcv_csv; Lean: default America/New_York for equities,
        else UTC). Offsets written in the file always win.
    price_scale: the factor the file's prices were multiplied by; they are divided by it (Lean
        equities: 10,000 by default, since they store deci-cents).
    quote_side: for Lean quote (bid/ask) bars, which price to use; "mid" averages bid and ask.
    """
    p = Path(path)
    if p.is_dir():
        raise FileNotFoundError(f"{p} is a folder, not a bar file")
    if not p.is_file():
        raise FileNotFoundError(f"bar file not found: {p}")
    if quote_side not in ("mid", "bid", "ask"):
        raise ValueError(f"quote_side must be 'mid', 'bid' or 'ask', got {quote_side!r}")
    interval_ns = parse_interval(interval) if interval is not None else None
    try:
        fmt = fmt or detect_format(p)
        if fmt == "binance_kline":
            df, native = _load_binance_kline(p)
        elif fmt == "privet_csv":
            df, native = _load_privet_csv(p)
        elif fmt == "ohlcv_csv":
            df, native = _load_ohlcv_csv(p, tz)
        elif fmt == "lean_zip":
            df, native = _load_lean_zip(p, interval_ns, tz, price_scale, quote_side)
        else:
            raise ValueError(f"unknown bar format {fmt!r}; supported: {', '.join(FORMATS)}")
    except pl.exceptions.PolarsError as exc:  # e.g. a ragged line or an unclosed quote
        raise ValueError(f"{p}: cannot read as {fmt} (malformed file): {exc}") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:  # corrupt .gz / .zip
        raise ValueError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from None
    if price_scale is not None and fmt != "lean_zip":
        if price_scale <= 0:
            raise ValueError(f"price_scale must be positive, got {price_scale}")
        df = df.with_columns([pl.col(c) / price_scale for c in PRICE_COLUMNS])

    result = validate_bars(
        df, interval_ns=interval_ns or native, source=p.name, fmt=fmt, max_examples=max_examples
    )
    if result.report.rows_in and not result.report.rows_out:
        raise ValueError(f"no usable bars in {p} (wrong format or tz?)\n{result.report}")
    return result
