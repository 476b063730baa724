"""Bar import: loaders against the real shared files, validation, catalog round trip, CLI."""

from __future__ import annotations

import logging
import math
import os
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from nautilus_trader.model.data import BarType

from marketdata import ingest
from marketdata.bars import (
    NS_PER_MINUTE,
    PROBLEMS,
    detect_format,
    load_bars,
    parse_interval,
    validate_bars,
)
from marketdata.catalog import (
    bars_to_nautilus,
    instrument_for,
    load_catalog_bars,
    write_catalog,
)

UTC = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
PRIV = "binance/privet1x_crypto-trading-bot"
BTC_15M = f"{PRIV}/BTCUSDT_15m.csv"


def ns(text: str, tz: ZoneInfo = UTC, plus: timedelta = timedelta(0)) -> int:
    """UNIX ns of a wall-clock time ``YYYY-MM-DD HH:MM`` in ``tz``, shifted by ``plus``."""
    dt = datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz) + plus
    return int(dt.timestamp()) * 1_000_000_000


M1, H1 = timedelta(minutes=1), timedelta(hours=1)
M15, ZERO = timedelta(minutes=15), timedelta(0)

# (path, format, rows, first bar, last bar, tz, offset to the close): the README states OPEN
# times (first/last bar) except for files whose timestamps are close times (offset ZERO).
SHARED_FILES = [
    ("binance/ADABTC-1m-2021-11-27.csv", "binance_kline", 10,
     "2021-11-27 00:00", "2021-11-27 00:09", UTC, M1),
    ("binance/ADABTC-1m-2021-11-28.csv", "binance_kline", 11,
     "2021-11-28 00:00", "2021-11-28 00:10", UTC, M1),
    (f"{PRIV}/BTCUSDT_1m.csv", "privet_csv", 41_761,
     "2024-11-30 23:00", "2024-12-29 23:00", UTC, M1),
    (BTC_15M, "privet_csv", 34_945, "2023-12-31 23:00", "2024-12-29 23:00", UTC, M15),
    ("binance/lean/crypto/hour/btcusdt_trade.zip", "lean_zip", 120,
     "2018-05-01 00:00", "2018-05-05 23:00", UTC, H1),
    ("binance/lean/crypto/minute/btcbusd/20221213_trade.zip", "lean_zip", 1_440,
     "2022-12-13 00:00", "2022-12-13 23:59", UTC, M1),
    ("bybit/lean/crypto/minute/btcusdt/20221213_trade.zip", "lean_zip", 1_440,
     "2022-12-13 00:00", "2022-12-13 23:59", UTC, M1),
    ("bybit/lean/crypto/minute/btcusdt/20221213_quote.zip", "lean_zip", 721,
     "2022-12-13 00:00", "2022-12-13 12:00", UTC, M1),
    ("bybit/lean/cryptofuture/minute/btcusdt/20221213_trade.zip", "lean_zip", 721,
     "2022-12-13 00:00", "2022-12-13 12:00", UTC, M1),
    ("bybit/lean/cryptofuture/minute/btcusdt/20221213_quote.zip", "lean_zip", 460,
     "2022-12-13 00:00", "2022-12-13 12:00", UTC, M1),
    ("ftx/btc-perp-20211231-20220201_1m.csv", "ohlcv_csv", 45_031,
     "2021-12-31 23:01", "2022-02-01 05:31", UTC, ZERO),
    ("fx_or_equity/lean/forex/oanda/hour/eurusd.zip", "lean_zip", 74_439,
     "2007-01-01 21:00", "2018-12-31 21:00", UTC, H1),
    ("fx_or_equity/lean/equity/usa/hour/spy.zip", "lean_zip", 40_832,
     "1998-01-02 09:00", "2021-03-31 15:00", NY, H1),
    ("fx_or_equity/gbpusd-m1-bid-2012.csv", "ohlcv_csv", 30_117,
     "2012-02-01 00:00", "2012-03-01 00:00", UTC, ZERO),
    ("fx_or_equity/gbpusd-m1-ask-2012.csv", "ohlcv_csv", 30_117,
     "2012-02-01 00:00", "2012-03-01 00:00", UTC, ZERO),
    ("fx_or_equity/usdjpy-m1-bid-2013.csv", "ohlcv_csv", 28_761,
     "2013-02-01 00:00", "2013-03-01 00:00", UTC, ZERO),
    ("fx_or_equity/usdjpy-m1-ask-2013.csv", "ohlcv_csv", 28_761,
     "2013-02-01 00:00", "2013-03-01 00:00", UTC, ZERO),
    ("fx_or_equity/6EH4.XCME_1min_bars_20240101_20240131.csv.gz", "ohlcv_csv", 29_996,
     "2024-01-01 23:01", "2024-01-31 23:59", UTC, ZERO),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rel", "fmt", "rows", "first", "last", "tz", "to_close"),
    SHARED_FILES,
    ids=[Path(f[0]).parent.name + "/" + Path(f[0]).name for f in SHARED_FILES],
)
def test_shared_file_loads(data_dir, rel, fmt, rows, first, last, tz, to_close):
    path = data_dir / rel
    assert detect_format(path) == fmt
    result = load_bars(path)
    bars = result.frame
    assert result.report.ok, str(result.report)
    assert bars.height == rows == result.report.rows_in
    assert bars.columns == ["ts_event", "open", "high", "low", "close", "volume"]
    assert bars["ts_event"].dtype == pl.Int64
    assert all(bars[c].dtype == pl.Float64 for c in bars.columns[1:])
    assert bars["ts_event"][0] == ns(first, tz, to_close)
    assert bars["ts_event"][-1] == ns(last, tz, to_close)
    assert bars["ts_event"].diff().drop_nulls().min() > 0
    assert (bars["high"] >= bars["low"]).all()


def test_spy_daily_closes_at_next_midnight_new_york(data_dir):
    # Lean daily bars are stamped with their start date 00:00 New York; close = start + 1 day.
    bars = load_bars(data_dir / "fx_or_equity/lean/equity/usa/daily/spy.zip").frame
    assert bars.height == 5_849
    assert bars["ts_event"][0] == ns("1998-01-03 00:00", NY)  # EST: 05:00Z
    assert bars["ts_event"][-1] == ns("2021-04-01 00:00", NY)  # EDT: 04:00Z
    assert bars["ts_event"][-1] == ns("2021-04-01 04:00")
    # deci-cents -> USD: the first row is 973100,975300,965300,973600
    assert bars.row(0)[1:5] == pytest.approx((97.31, 97.53, 96.53, 97.36))


def test_spy_hourly_prices_scaled_and_utc(data_dir):
    bars = load_bars(data_dir / "fx_or_equity/lean/equity/usa/hour/spy.zip").frame
    assert bars.row(0) == pytest.approx(
        (ns("1998-01-02 15:00"), 97.31, 97.53, 97.03, 97.03, 384500)
    )
    unscaled = load_bars(data_dir / "fx_or_equity/lean/equity/usa/hour/spy.zip", price_scale=1)
    assert unscaled.frame["open"][0] == 973100


def _lean_zip(path: Path, member: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, "\n".join(rows) + "\n")
    return path


def test_lean_equity_daily_and_minute_on_dst_days(tmp_path):
    # Daily bar starting Sunday 2024-03-10 00:00 EST (clocks jump at 02:00): it closes at the
    # next local midnight, 00:00 EDT = 04:00Z, not 24 h later (05:00Z).
    daily = _lean_zip(
        tmp_path / "equity/usa/daily/xyz.zip",
        "xyz.csv",
        ["20240310 00:00,1000000,1010000,990000,1000000,5"],
    )
    assert load_bars(daily).frame.row(0) == (ns("2024-03-11 04:00"), 100.0, 101.0, 99.0, 100.0, 5.0)
    # Minute file: ms since New York midnight, date from the file name; 09:30 EDT bar -> 13:31Z.
    minute = _lean_zip(
        tmp_path / "equity/usa/minute/xyz/20240311_trade.zip",
        "20240311_xyz_minute_trade.csv",
        ["34200000,1000000,1010000,990000,1000000,5", "34260000,1000000,1010000,990000,1000000,6"],
    )
    result = load_bars(minute)
    assert result.frame["ts_event"].to_list() == [ns("2024-03-11 13:31"), ns("2024-03-11 13:32")]
    assert result.report.interval_ns == NS_PER_MINUTE


def test_priv_15m_close_times_across_dst(data_dir):
    path = data_dir / BTC_15M
    raw = pl.read_csv(path, infer_schema=False)["close_datetime"].to_list()
    ts = load_bars(path).frame["ts_event"]
    expected = {
        # spring forward 2024-03-31 01:00Z: 02:00 CET -> 03:00 CEST
        "2024-03-31 01:59:59.999000+01:00": "2024-03-31 01:00",
        "2024-03-31 03:14:59.999000+02:00": "2024-03-31 01:15",
        # fall back 2024-10-27 01:00Z: local 02:xx occurs twice
        "2024-10-27 02:59:59.999000+02:00": "2024-10-27 01:00",
        "2024-10-27 02:14:59.999000+01:00": "2024-10-27 01:15",
        "2024-10-27 02:59:59.999000+01:00": "2024-10-27 02:00",
    }
    for local, utc in expected.items():
        assert ts[raw.index(local)] == ns(utc), local
    # Whole year in UTC: exactly one bar every 15 minutes, despite the local clock jumps.
    assert set(ts.diff().drop_nulls().unique().to_list()) == {15 * NS_PER_MINUTE}


def test_priv_1m_matches_raw_close_plus_one_ms(data_dir):
    bars = load_bars(data_dir / f"{PRIV}/BTCUSDT_1m.csv").frame
    # first row: 96466.11,96495.52,96440.0,96440.0,6.6158,...,2024-12-01 00:00:59.999000+01:00
    assert bars.row(0) == pytest.approx(
        (ns("2024-11-30 23:01"), 96466.11, 96495.52, 96440.0, 96440.0, 6.6158)
    )


def _adabtc_lines(data_dir: Path) -> list[str]:
    return (data_dir / "binance/ADABTC-1m-2021-11-27.csv").read_text().splitlines()


def test_binance_kline_header_and_microsecond_variants(data_dir, tmp_path):
    reference = load_bars(data_dir / "binance/ADABTC-1m-2021-11-27.csv").frame
    lines = _adabtc_lines(data_dir)
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore"
    )
    with_header = tmp_path / "ADABTC-1m-header.csv"
    with_header.write_text("\n".join([header, *lines]) + "\n")
    micro = tmp_path / "ADABTC-1m-us.csv"
    us_lines = []
    for line in lines:
        f = line.split(",")
        f[0] = str(int(f[0]) * 1000)  # open time in us
        f[6] = str(int(f[6]) * 1000 + 999)  # ...59.999999
        us_lines.append(",".join(f))
    micro.write_text("\n".join(us_lines) + "\n")

    for path in (with_header, micro):
        assert detect_format(path) == "binance_kline"
        result = load_bars(path)
        assert result.report.ok
        assert result.frame.equals(reference), path.name
        assert result.report.interval_ns == NS_PER_MINUTE
    # close time = open time + 1 minute: the bar is stamped when it is complete
    first_open_ms = int(lines[0].split(",")[0])
    assert reference["ts_event"][0] == (first_open_ms + 60_000) * 1_000_000


def test_lean_quote_side(data_dir):
    path = data_dir / "bybit/lean/crypto/minute/btcusdt/20221213_quote.zip"
    # first row: 0,17207.18,17211.24,17205,17205.01,0.00531,17208.86,17213,17206.29,17206.77,...
    bid = load_bars(path, quote_side="bid").frame.row(0)
    ask = load_bars(path, quote_side="ask").frame.row(0)
    mid = load_bars(path).frame.row(0)
    assert bid[1:5] == pytest.approx((17207.18, 17211.24, 17205.0, 17205.01))
    assert ask[1:5] == pytest.approx((17208.86, 17213.0, 17206.29, 17206.77))
    assert mid[1:5] == pytest.approx(
        tuple((b + a) / 2 for b, a in zip(bid[1:5], ask[1:5], strict=True))
    )
    assert mid[5] == 0.0  # quote sizes are not traded volume
    with pytest.raises(ValueError, match="quote_side"):
        load_bars(path, quote_side="last")  # type: ignore[arg-type]


def test_unsupported_files_give_clear_errors(data_dir, tmp_path):
    with pytest.raises(ValueError, match="cannot detect the bar format"):
        load_bars(data_dir / "binance/btcusdt-trades.parquet")
    with pytest.raises(ValueError, match="cannot detect the bar format"):
        load_bars(data_dir / "fx_or_equity/usdjpy-ticks.csv")
    with pytest.raises(ValueError, match="one CSV inside a Lean zip"):
        load_bars(data_dir / "bybit/xrpusdt-ob500.data.zip")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        load_bars(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="is a folder, not a bar file"):
        load_bars(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_bars(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown bar format"):
        load_bars(data_dir / BTC_15M, "csv")


def test_parse_interval():
    assert parse_interval("15m") == 15 * NS_PER_MINUTE
    assert parse_interval("15-MINUTE") == 15 * NS_PER_MINUTE
    assert parse_interval("1h") == 60 * NS_PER_MINUTE
    assert parse_interval("2 hours") == 120 * NS_PER_MINUTE
    assert parse_interval("1d") == 1440 * NS_PER_MINUTE
    with pytest.raises(ValueError, match="cannot parse interval"):
        parse_interval("1y")
    with pytest.raises(ValueError, match="interval must be positive, got '0d'"):
        parse_interval("0d")


# -- validation ----------------------------------------------------------------------------------

BAD_CSV = """timestamp,open,high,low,close,volume
2024-01-01 00:01:00,100,101,99,100.5,10
2024-01-01 00:02:00,100.5,102,100,101,11
2024-01-01 00:03:00,101,102,100,NaN,12
2024-01-01 00:04:00,101,100,102,101,13
2024-01-01 00:02:00,100.5,102,100,101,11
2024-01-01 00:05:00,101,103,100,102,14
2024-01-01 00:04:30,101,103,100,102,14
2024-01-01 00:06:00,-102,103,100,102,15
2024-01-01 00:07:00,102,103,101,,15
2024-01-01 00:08:00,102,103,101,inf,15
2024-01-01 00:09:00,104,103,101,102,15
2024-01-01 00:10:00,102,103,101,102,-1
not a time,102,103,101,102,1
2024-01-01 00:11:00,102,103,101,102.5,16
2024-01-01 00:20:00,102.5,104,102,103,17
"""
# 0-based data rows and the problem each must be reported under
BAD_ROWS = {
    2: "non_finite",  # NaN close
    3: "high_below_low",
    4: "duplicate_timestamp",  # repeats row 1
    6: "out_of_order",  # 00:04:30 after 00:05
    7: "non_positive_price",
    8: "non_finite",  # empty close
    9: "non_finite",  # inf
    10: "open_close_outside_range",  # open above high
    11: "negative_volume",
    12: "invalid_timestamp",
}


def test_bad_rows_are_counted_dropped_and_listed(tmp_path, caplog):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    with caplog.at_level(logging.WARNING, logger="marketdata.bars"):
        result = load_bars(path, max_examples=5)
    report = result.report

    expected_counts: dict[str, int] = {}
    for problem in BAD_ROWS.values():
        expected_counts[problem] = expected_counts.get(problem, 0) + 1
    assert report.dropped == expected_counts
    assert report.rows_in == 15
    assert report.rows_out == 15 - len(BAD_ROWS) == result.frame.height
    assert not report.ok
    for row, problem in BAD_ROWS.items():
        assert row in [ex["row"] for ex in report.examples[problem]], (row, problem)
    # the kept bars are exactly the good rows, first copy of the duplicate kept
    kept_minutes = [(t - ns("2024-01-01 00:00")) // NS_PER_MINUTE for t in result.frame["ts_event"]]
    assert kept_minutes == [1, 2, 5, 11, 20]
    assert result.frame["open"][1] == 100.5
    # the 00:11 -> 00:20 hole is reported, not filled
    assert report.gaps >= 1
    assert report.largest_gap_ns == 9 * NS_PER_MINUTE
    text = str(report)
    for problem in expected_counts:
        assert f"DROPPED {problem}" in text
    assert "row 3:" in text
    assert any("dropped 10" in r.getMessage() for r in caplog.records)


def test_validate_bars_frame_directly():
    t0 = ns("2024-01-01 00:00")
    df = pl.DataFrame(
        {
            "ts_event": [t0, t0 + NS_PER_MINUTE, t0 + NS_PER_MINUTE, t0 + 3 * NS_PER_MINUTE],
            "open": [1.0, 1.0, 1.0, 1.0],
            "high": [2.0, 2.0, 2.0, 0.5],
            "low": [0.5, 0.5, 0.5, 0.9],
            "close": [1.5, math.nan, 1.5, 1.0],
            "volume": [1.0, 1.0, 1.0, 1.0],
        }
    )
    result = validate_bars(df, interval_ns=NS_PER_MINUTE, max_examples=1)
    # NaN row is dropped first, so the later copy of that timestamp is the one kept
    assert result.report.dropped == {"non_finite": 1, "high_below_low": 1}
    assert result.frame["ts_event"].to_list() == [t0, t0 + NS_PER_MINUTE]
    assert set(result.report.dropped) <= set(PROBLEMS)


def test_clean_file_reports_no_problems(data_dir):
    report = load_bars(data_dir / "binance/ADABTC-1m-2021-11-28.csv").report
    assert report.ok and report.dropped == {} and report.gaps == 0
    assert "dropped 0" in str(report)


# -- instruments and conversion ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iid", "price_precision"),
    [
        ("BTCUSDT.BINANCE", 2),
        ("ETHUSDT.BINANCE", 2),
        ("BTCUSDT-PERP.BINANCE", 1),
        ("ADABTC.BINANCE", 8),
        ("EUR/USD.SIM", 5),
        ("USD/JPY.OANDA", 3),
        ("SPY.ARCA", 2),
        ("6EH4.XCME", 5),
        ("BTCUSDT.BYBIT", 2),
    ],
)
def test_instrument_for_known_ids(iid, price_precision):
    inst = instrument_for(iid)
    assert inst.id.value == iid
    assert inst.price_precision == price_precision


def test_instrument_for_unknown_lists_supported():
    with pytest.raises(ValueError, match=r"unsupported instrument id 'FOO\.BAR'.*BTCUSDT\.BINANCE"):
        instrument_for("FOO.BAR")


def test_bars_to_nautilus_rounds_to_instrument_precision():
    inst = instrument_for("BTCUSDT.BINANCE")
    bar_type = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")
    df = pl.DataFrame(
        {
            "ts_event": [ns("2024-01-01 00:01")],
            "open": [100.004],
            "high": [100.0049],
            "low": [99.996],
            "close": [100.0041],
            "volume": [1.23456789],
        }
    )
    (bar,) = bars_to_nautilus(df, bar_type, inst)
    assert str(bar.open) == "100.00" and str(bar.low) == "100.00" and str(bar.high) == "100.00"
    assert str(bar.volume) == "1.234568"
    assert bar.ts_event == bar.ts_init == ns("2024-01-01 00:01")
    assert bars_to_nautilus(df, str(bar_type), inst) == [bar]  # a bar-type string works too
    with pytest.raises(ValueError, match="is for BTCUSDT.BINANCE, not instrument ETHUSDT"):
        bars_to_nautilus(df, bar_type, instrument_for("ETHUSDT.BINANCE"))
    tiny = df.with_columns(pl.lit(0.001).alias(c) for c in ("open", "high", "low", "close"))
    with pytest.raises(ValueError, match="rounds to <= 0"):
        bars_to_nautilus(tiny, bar_type, inst)


# -- catalog -------------------------------------------------------------------------------------


def _bar_files(catalog: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, f), catalog)
        for root, _, files in os.walk(catalog)
        for f in files
    )


def test_catalog_round_trip_and_idempotent_cli(data_dir, tmp_path, capsys):
    catalog = tmp_path / "catalog"
    bar_type_str = "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"
    argv = [
        "--source", str(data_dir / BTC_15M),
        "--instrument", "BTCUSDT.BINANCE",
        "--bar-type", bar_type_str,
        "--catalog", str(catalog),
    ]  # fmt: skip
    assert ingest.main(argv) == 0
    out = capsys.readouterr().out
    assert "Data quality report: BTCUSDT_15m.csv [privet_csv]" in out
    assert f"wrote 34,945 bars of {bar_type_str}" in out

    frame = load_bars(data_dir / BTC_15M).frame
    bars = load_catalog_bars(catalog, bar_type_str)
    assert len(bars) == frame.height == 34_945
    for bar, row in ((bars[0], frame.row(0)), (bars[-1], frame.row(-1))):
        assert (bar.ts_event, bar.ts_init) == (row[0], row[0])
        got = (bar.open.as_double(), bar.high.as_double(), bar.low.as_double())
        assert got + (bar.close.as_double(), bar.volume.as_double()) == pytest.approx(row[1:])
    files = _bar_files(catalog)

    # same data again: same catalog, no duplicate bars
    assert ingest.main(argv) == 0
    assert _bar_files(catalog) == files
    assert len(load_catalog_bars(catalog, bar_type_str)) == 34_945

    # a sub-range overlapping the stored one replaces only that range
    bar_type = BarType.from_str(bar_type_str)
    inst = instrument_for("BTCUSDT.BINANCE")
    assert write_catalog(catalog, inst, bar_type, frame[1_000:2_000]) == 1_000
    again = load_catalog_bars(catalog, bar_type)
    assert [b.ts_event for b in again] == frame["ts_event"].to_list()

    window = load_catalog_bars(
        catalog, bar_type, start=ns("2024-03-31 00:00"), end=ns("2024-03-31 02:00")
    )
    assert [b.ts_event for b in window] == [ns("2024-03-31 00:00", plus=k * M15) for k in range(9)]


def test_cli_rejects_mismatched_bar_type(data_dir, tmp_path, capsys):
    base = ["--source", str(data_dir / f"{PRIV}/BTCUSDT_1m.csv"), "--catalog", str(tmp_path)]
    code = ingest.main(
        [*base, "--instrument", "BTCUSDT.BINANCE", "--bar-type",
         "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"]
    )  # fmt: skip
    assert code == 2
    assert (
        "1m apart (most common step) but the bar type BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL "
        "says 15m" in capsys.readouterr().err
    )
    code = ingest.main(
        [*base, "--instrument", "ETHUSDT.BINANCE", "--bar-type",
         "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"]
    )  # fmt: skip
    assert code == 2
    assert "but --instrument is ETHUSDT.BINANCE" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
