"""Turn validated bar frames into NautilusTrader objects and keep them in a ParquetDataCatalog.

The catalog is what backtests read, so writes must be repeatable: re-importing a file replaces
the time range it covers instead of duplicating bars or failing on overlapping intervals.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.instruments import CryptoPerpetual, CurrencyPair, Instrument
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog
from nautilus_trader.test_kit.providers import TestInstrumentProvider as TIP

from marketdata.bars import BAR_COLUMNS, PRICE_COLUMNS


def _bybit_spot_btcusdt() -> CurrencyPair:
    # The test kit has no Bybit spot pair; Binance's BTCUSDT has the same precisions.
    inst = TIP.btcusdt_binance()
    return CurrencyPair.from_dict({**CurrencyPair.to_dict(inst), "id": "BTCUSDT.BYBIT"})


def _bybit_linear_btcusdt() -> CryptoPerpetual:
    inst = TIP.btcusdt_perp_binance()
    return CryptoPerpetual.from_dict(
        {**CryptoPerpetual.to_dict(inst), "id": "BTCUSDT-LINEAR.BYBIT", "raw_symbol": "BTCUSDT"}
    )


_KNOWN: dict[str, Callable[[], Instrument]] = {
    "BTCUSDT.BINANCE": TIP.btcusdt_binance,
    "ETHUSDT.BINANCE": TIP.ethusdt_binance,
    "ADABTC.BINANCE": TIP.adabtc_binance,
    "BTCUSDT-PERP.BINANCE": TIP.btcusdt_perp_binance,
    "ETHUSDT-PERP.BINANCE": TIP.ethusdt_perp_binance,
    "BTCUSDT.BYBIT": _bybit_spot_btcusdt,
    "BTCUSDT-LINEAR.BYBIT": _bybit_linear_btcusdt,
    "XRPUSDT-LINEAR.BYBIT": TIP.xrpusdt_linear_bybit,
    "6EH4.XCME": lambda: TIP.eurusd_future(2024, 3),
}
_EQUITY_VENUES = ("ARCA", "XNAS", "XNYS")
_FX_RE = re.compile(r"^([A-Z]{3}/[A-Z]{3})\.([A-Z0-9_]+)$")
_EQUITY_RE = re.compile(rf"^([A-Z][A-Z0-9.]{{0,9}})\.({'|'.join(_EQUITY_VENUES)})$")


def supported_instrument_ids() -> list[str]:
    return [
        *_KNOWN,
        "XXX/YYY.VENUE (any FX pair, e.g. EUR/USD.SIM)",
        f"SYMBOL.{{{','.join(_EQUITY_VENUES)}}} (US equity, e.g. SPY.ARCA)",
    ]


def instrument_for(instrument_id: str) -> Instrument:
    """The NautilusTrader instrument definition for ``instrument_id`` (test-kit based)."""
    if instrument_id in _KNOWN:
        return _KNOWN[instrument_id]()
    if m := _FX_RE.match(instrument_id):
        return TIP.default_fx_ccy(m.group(1), Venue(m.group(2)))
    if m := _EQUITY_RE.match(instrument_id):
        return TIP.equity(m.group(1), m.group(2))
    raise ValueError(
        f"unsupported instrument id {instrument_id!r}; supported: "
        + "; ".join(supported_instrument_ids())
    )


def with_fee_rate(instrument: Instrument, rate: float | None) -> Instrument:
    """``instrument`` with maker and taker fee ``rate`` (None: unchanged), so that costs a test-kit
    definition lacks (e.g. 10 bp on US equities) are paid by the strategy and its baselines."""
    if rate is None:
        return instrument
    cls = type(instrument)
    return cls.from_dict(
        {**cls.to_dict(instrument), "maker_fee": str(rate), "taker_fee": str(rate)}
    )


def _contiguous(values: np.ndarray, dtype: type) -> np.ndarray:
    # Own, writable, C-contiguous buffers: typed memoryviews reject read-only arrow-backed views.
    return np.array(values, dtype=dtype, copy=True, order="C")


def bars_to_nautilus(
    df: pl.DataFrame, bar_type: BarType | str, instrument: Instrument
) -> list[Bar]:
    """Build `Bar` objects from a validated frame, at the instrument's precisions.

    Prices are rounded to the price precision; high/low are then widened to cover the rounded
    open/close so that rounding can never produce a bar Nautilus rejects. ``ts_init = ts_event``
    (the bar is known at its close).
    """
    if isinstance(bar_type, str):
        bar_type = BarType.from_str(bar_type)
    if bar_type.instrument_id != instrument.id:
        raise ValueError(
            f"bar type {bar_type} is for {bar_type.instrument_id}, not instrument {instrument.id}"
        )
    missing = set(BAR_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"bar frame lacks columns {sorted(missing)}")
    if df.height == 0:
        return []
    pp, sp = instrument.price_precision, instrument.size_precision
    o, h, lo, c = (np.round(_contiguous(df[x].to_numpy(), np.float64), pp) for x in PRICE_COLUMNS)
    h = np.maximum(h, np.maximum(o, c))
    lo = np.minimum(lo, np.minimum(o, c))
    if (lo <= 0).any():
        row = int(np.argmax(lo <= 0))
        raise ValueError(
            f"row {row}: price {df['low'][row]} rounds to <= 0 at {instrument.id}'s price "
            f"precision {pp}; wrong instrument or price scale?"
        )
    vol = np.round(_contiguous(df["volume"].to_numpy(), np.float64), sp)
    ts = _contiguous(df["ts_event"].to_numpy(), np.uint64)
    return Bar.from_raw_arrays_to_list(
        bar_type,
        pp,
        sp,
        _contiguous(o, np.float64),
        _contiguous(h, np.float64),
        _contiguous(lo, np.float64),
        _contiguous(c, np.float64),
        _contiguous(vol, np.float64),
        ts,
        ts.copy(),
    )


def _write_instrument(catalog: ParquetDataCatalog, instrument: Instrument) -> None:
    """Write the definition once; replace it only if it changed (same ts_init -> same file)."""
    existing = catalog.instruments(instrument_ids=[instrument.id.value])
    cls = type(instrument)
    if existing and all(
        type(e) is cls and cls.to_dict(e) == cls.to_dict(instrument) for e in existing
    ):
        return
    if existing:
        catalog.delete_data_range(type(existing[0]), instrument.id.value)
    catalog.write_data([instrument])


def write_catalog(
    catalog_path: str | Path,
    instrument: Instrument,
    bar_type: BarType | str,
    df: pl.DataFrame,
) -> int:
    """Write ``instrument`` and the bars of ``df`` to the catalog; returns the bars written.

    Idempotent: the catalog refuses overlapping files (and silently skips a file whose name,
    i.e. time range, already exists), so the stored bars of ``bar_type`` inside
    [first ts, last ts] of ``df`` are deleted first (files straddling the range are split by
    the catalog). Re-importing the same data therefore yields the same catalog, and importing
    a corrected file replaces the old bars of that range while other ranges are kept.
    """
    bars = bars_to_nautilus(df, bar_type, instrument)
    catalog = ParquetDataCatalog(str(catalog_path))
    _write_instrument(catalog, instrument)
    if not bars:
        return 0
    start, end = bars[0].ts_init, bars[-1].ts_init
    catalog.delete_data_range(Bar, str(bar_type), start=start, end=end)
    catalog.write_data(bars)
    return len(bars)


def load_catalog_bars(
    catalog_path: str | Path,
    bar_type: BarType | str,
    start: int | str | None = None,
    end: int | str | None = None,
) -> list[Bar]:
    """Bars of one bar type from the catalog, optionally within [start, end] (ns or ISO)."""
    catalog = ParquetDataCatalog(str(catalog_path))
    return catalog.bars(bar_types=[str(bar_type)], start=start, end=end)
