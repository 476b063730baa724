"""Ingest bar files into a ParquetDataCatalog: the CLI for one file, ``ensure_catalog`` for a
node config's ``backtest.data`` (backtests, sweeps and training all import through it).

    python -m backtests.ingest --source PATH [--format F] --instrument BTCUSDT.BINANCE \
        --bar-type BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL --catalog ./catalog
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nautilus_trader.model.data import BarType
from nautilus_trader.model.enums import BarAggregation, PriceType, bar_aggregation_to_str

from hmm_strategy import cli
from hmm_strategy.config import BacktestSettings, ConfigError
from marketdata.bars import (
    FORMATS,
    NS_PER_S,
    DataQualityReport,
    QuoteSide,
    format_duration,
    load_bars,
)
from marketdata.catalog import instrument_for, with_fee_rate, write_catalog

_AGGREGATION_NS: dict[BarAggregation, int] = {
    BarAggregation.SECOND: NS_PER_S,
    BarAggregation.MINUTE: 60 * NS_PER_S,
    BarAggregation.HOUR: 3600 * NS_PER_S,
    BarAggregation.DAY: 86400 * NS_PER_S,
    BarAggregation.WEEK: 7 * 86400 * NS_PER_S,
}
_QUOTE_SIDE: dict[PriceType, QuoteSide] = {
    PriceType.BID: "bid",
    PriceType.ASK: "ask",
    PriceType.MID: "mid",
}


def bar_type_interval_ns(bar_type: BarType) -> int | None:
    """Length of a time bar in ns (None for tick/volume/value bars)."""
    spec = bar_type.spec
    unit = _AGGREGATION_NS.get(spec.aggregation)
    return spec.step * unit if unit else None


def check_bar_type(bar_type: BarType, report: DataQualityReport, source: str) -> None:
    """The file's bars must be the bar type's: time bars of the same length. Otherwise the catalog
    would hold, e.g., 1-minute bars labelled 15-minute, or time bars labelled 100-TICK."""
    if report.rows_out == 0:
        raise ValueError(f"{source}: no bars (only a header, or every row dropped)")
    bar_ns = bar_type_interval_ns(bar_type)
    if bar_ns is None:
        kind = bar_aggregation_to_str(bar_type.spec.aggregation)
        raise ValueError(
            f"bar type {bar_type} is not a time bar ({kind} bars), "
            f"but {source} holds time bars; use e.g. ...-15-MINUTE-LAST-EXTERNAL"
        )
    # The file's own bar spacing (Lean folder, kline open->close, else the most common step).
    spacing = report.interval_ns
    if spacing and spacing != bar_ns:
        raise ValueError(
            f"{source}: bars are {format_duration(spacing)} apart (most common step) but the "
            f"bar type {bar_type} says {format_duration(bar_ns)}; pick the matching bar type"
        )


def ensure_catalog(bt: BacktestSettings) -> dict[str, dict]:
    """Import each data source into the catalog unless this exact file was imported before."""
    catalog = Path(bt.catalog_path)
    marker_dir = catalog / ".imported"
    marker_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for source in bt.data:
        path = Path(source.source)
        if not path.exists():
            raise ConfigError(f"backtest.data: source file not found: {path}")
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{source.bar_type}"
        if source.fee_rate is not None:  # a fee change re-imports (the instrument changes)
            key += f"|fee={source.fee_rate}"
        marker = marker_dir / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".json")
        if marker.exists():
            summary[source.bar_type] = json.loads(marker.read_text())
            continue
        loaded = load_bars(path, source.format)
        check_bar_type(BarType.from_str(source.bar_type), loaded.report, str(path))
        instrument = with_fee_rate(instrument_for(source.instrument_id), source.fee_rate)
        written = write_catalog(catalog, instrument, source.bar_type, loaded.frame)
        ts = loaded.frame["ts_event"]
        info = {
            "source": str(path),
            "bars": written,
            "range_ns": [int(ts.min()), int(ts.max())],
            "quality": str(loaded.report),
        }
        marker.write_text(json.dumps(info, indent=2))
        summary[source.bar_type] = info
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m backtests.ingest", description=__doc__.strip())
    p.add_argument("--source", required=True, help="bar file to import")
    p.add_argument("--format", choices=FORMATS, help="file layout (detected when omitted)")
    p.add_argument("--instrument", required=True, help="instrument id, e.g. BTCUSDT.BINANCE")
    p.add_argument("--bar-type", required=True, help="e.g. BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL")
    p.add_argument("--catalog", required=True, help="ParquetDataCatalog directory")
    p.add_argument("--interval", help="bar length, e.g. 15m (default: from the file)")
    p.add_argument("--tz", help="time zone of naive timestamps (default UTC; Lean equity NY)")
    p.add_argument(
        "--price-scale",
        type=cli.positive_float,
        help="divide prices by this (Lean equity: 10000 default)",
    )
    p.add_argument(
        "--max-examples", type=cli.positive_int, default=5, help="example rows listed per problem"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        bar_type = BarType.from_str(args.bar_type)
        instrument = instrument_for(args.instrument)
        if bar_type.instrument_id != instrument.id:
            raise ValueError(
                f"--bar-type {bar_type} is for {bar_type.instrument_id}, "
                f"but --instrument is {instrument.id}"
            )
        result = load_bars(
            args.source,
            args.format,
            interval=args.interval,
            tz=args.tz,
            price_scale=args.price_scale,
            quote_side=_QUOTE_SIDE.get(bar_type.spec.price_type, "mid"),
            max_examples=args.max_examples,
        )
        print(result.report)
        check_bar_type(bar_type, result.report, args.source)
        written = write_catalog(args.catalog, instrument, bar_type, result.frame)
    except (ValueError, OSError) as e:
        print(cli.describe(e, known=True), file=sys.stderr)
        return 2
    print(f"wrote {written:,} bars of {bar_type} to {args.catalog}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_cli(main))
