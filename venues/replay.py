"""Offline replay feed: a NautilusTrader live data client that replays historical bars.

With it a whole ``TradingNode`` (strategies, actors, risk engine, sandbox execution) runs with
no network. Bars come from a synthetic generator, a CSV (``marketdata.bars.load_bars``) or a
``ParquetDataCatalog`` and are published at ``speed`` bars per second (0 = as fast as possible).

Design notes (verified against nautilus_trader 1.231.0):

* The sandbox execution client only listens on ``data.*.{venue}.*`` (quotes, trades, ...);
  bar topics are ``data.bars.{bar_type}`` and never reach it. So at each bar close the client
  first publishes a trade tick at the close (same ``ts_event``), then the bar: a market order
  sent from ``on_bar`` fills at that bar's close. The trade size is the sandbox's liquidity: a
  market order larger than it fills in part and the rest waits for the next ticks (so a stop's
  close can stay open: the node then exits 6, naming the position). For real data (``csv``,
  ``catalog``) it is the bar's volume; synthetic volumes are a feature of the generator, not
  liquidity (a random price path that falls 20-fold would leave 50k USDT orders unfillable),
  so synthetic bars, like bars with unknown or zero volume, trade a large size.
* Bars keep the data's ``ts_event``/``ts_init`` (bar close), so strategies see historical time
  in the data, and sandbox fills carry the bar's time. Timers and ``clock.utc_now()`` still run
  on the wall clock in a live node, also during accelerated replay: a 1-minute timer fires once
  per wall-clock minute, not once per replayed minute. So the data's time is published too:
  before the first bar of each new timestamp the client publishes ``DataTime(ts)`` on
  ``hmm.clock`` and settles the node, and after the last bar ``DataTime(ts_last, closed=True)``.
  The governance and allocator actors sample on it (``actors.performance.DataTimeSampler``),
  which is where a backtest's timers fire: before the data at ``ts``, with the orders they cause
  filled at the previous close, as in the backtest.
* A live node hands data, commands and events through asyncio queues. Before publishing the next
  bar the client waits until those queues are drained (``wire_replay_clients``), so an order
  sent on bar *t* is filled at bar *t*'s close even at ``speed=0``.
* The sandbox loads instruments from the cache when it connects, so the client adds its
  instruments to the cache when it is constructed (during ``node.build()``).
* History (warm start): with ``history_bars = N`` the first N bars of each replayed bar type are
  history: never published live, served to ``request_bars`` (NautilusTrader's historical data
  path) with the bars already replayed, never a bar after the last one published (no
  look-ahead). The live feed starts with bar N+1 and, before its first bar, waits until the
  node's request and response queues are drained, so a strategy that requested history in
  ``on_start`` has it before its first live bar.
* The feed starts once every replayed bar type has been subscribed (strategies subscribe in
  ``on_start``), after ``start_delay_secs``. When it ends the client logs it, sets ``finished``,
  publishes :class:`ReplayDone` on ``hmm.replay.done`` and publishes nothing more; the node
  keeps running until stopped.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import LiveDataClientConfig
from nautilus_trader.data.messages import (
    RequestBars,
    RequestInstrument,
    RequestInstruments,
    SubscribeBars,
    SubscribeData,
    SubscribeInstrument,
    SubscribeInstruments,
    SubscribeQuoteTicks,
    SubscribeTradeTicks,
    UnsubscribeBars,
    UnsubscribeData,
    UnsubscribeInstrument,
    UnsubscribeInstruments,
    UnsubscribeQuoteTicks,
    UnsubscribeTradeTicks,
)
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.model.data import Bar, BarType, TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import ClientId, InstrumentId, TradeId, Venue
from nautilus_trader.model.instruments import Instrument

from hmm_strategy.messages import DATA_CLOCK_TOPIC, DataTime
from venues.errors import VenueConfigError

if TYPE_CHECKING:
    import polars as pl
    from nautilus_trader.live.node import TradingNode

REPLAY_CLIENT_NAME = "REPLAY"
REPLAY_DONE_TOPIC = "hmm.replay.done"
FRAME_COLUMNS = ("ts_event", "open", "high", "low", "close", "volume")
UNKNOWN_VOLUME_SIZE = 1e9  # trade size when a bar has no volume: liquidity treated as unlimited
_SETTLE_QUIET_CHECKS = 3  # consecutive empty-queue observations that count as "settled"
_SETTLE_MAX_SPINS = 100_000


class ReplayDone(msgspec.Struct, frozen=True):
    """Published once on ``hmm.replay.done`` when a replay feed has sent its last bar."""

    client_id: str
    n_bars: int
    ts_first: int  # ts_event of the first replayed bar (UNIX ns), 0 if none
    ts_last: int  # ts_event of the last replayed bar (UNIX ns), 0 if none


class ReplayDataClientConfig(LiveDataClientConfig, frozen=True):
    """Configuration of :class:`ReplayDataClient` (built by ``venues.builders`` from settings).

    Fields mirror :class:`venues.settings.ReplaySettings`; ``instrument_ids`` and ``bar_types``
    are the instruments to serve and the EXTERNAL bar types to replay.
    """

    instrument_ids: tuple[str, ...] = ()
    bar_types: tuple[str, ...] = ()
    source: str = "synthetic"
    path: str | None = None
    format: str | None = None
    generator: str = "hmm_strategy.synthetic:generate_regime_bars"
    seed: int = 7
    n_bars: int = 2_000
    max_bars: int | None = None
    history_bars: int = 0  # the first N bars of each bar type: history, not replayed live
    speed: float = 0.0
    start_delay_secs: float = 0.0
    trade_ticks: bool = True
    outages: tuple[tuple[int, int], ...] = ()  # (after_bars, bars): fault drill, bars lost
    unanswered_history: bool = False  # fault drill: bar requests are never answered


# -- instruments ----------------------------------------------------------------------------------


def _test_kit_templates() -> dict[str, Callable[[], Instrument]]:
    from nautilus_trader.test_kit.providers import TestInstrumentProvider as TIP

    return {
        "BTCUSDT.BINANCE": TIP.btcusdt_binance,
        "ETHUSDT.BINANCE": TIP.ethusdt_binance,
        "ADAUSDT.BINANCE": TIP.adausdt_binance,
        "ADABTC.BINANCE": TIP.adabtc_binance,
        "BTCUSDT-PERP.BINANCE": TIP.btcusdt_perp_binance,
        "ETHUSDT-PERP.BINANCE": TIP.ethusdt_perp_binance,
        "XRPUSDT-LINEAR.BYBIT": TIP.xrpusdt_linear_bybit,
    }


def _with_id(instrument: Instrument, instrument_id: InstrumentId) -> Instrument:
    """The same definition under another id (venue); the venue's raw symbol is kept."""
    cls = type(instrument)
    return cls.from_dict({**cls.to_dict(instrument), "id": instrument_id.value})


def test_kit_instrument(instrument_id: str) -> Instrument:
    """Instrument from NautilusTrader's test kit, re-identified to the requested venue if needed.

    Matches the exact id first (``BTCUSDT.BINANCE``), then the same symbol on any venue
    (``BTCUSDT.BYBIT`` copies the Binance definition), then FX pairs (``EUR/USD.SIM``).
    """
    iid = InstrumentId.from_str(instrument_id)
    templates = _test_kit_templates()
    if instrument_id in templates:
        return templates[instrument_id]()
    for known, make in templates.items():
        if InstrumentId.from_str(known).symbol == iid.symbol:
            return _with_id(make(), iid)
    symbol = iid.symbol.value
    if "/" in symbol and len(symbol) == 7:
        from nautilus_trader.test_kit.providers import TestInstrumentProvider as TIP

        return TIP.default_fx_ccy(symbol, iid.venue)
    raise VenueConfigError(
        f"no instrument definition for {instrument_id}: marketdata.catalog.instrument_for does "
        f"not know it and the test kit has none (known: {sorted(templates)}, FX 'AAA/BBB.VENUE')",
    )


def resolve_instrument(instrument_id: str) -> Instrument:
    """Instrument definition: ``marketdata.catalog.instrument_for`` first, else the test kit."""
    from marketdata.catalog import instrument_for

    try:
        instrument = instrument_for(instrument_id)
    except Exception:  # unknown to the catalog helper: fall back to the test kit
        return test_kit_instrument(instrument_id)
    if not isinstance(instrument, Instrument):
        raise VenueConfigError(
            f"marketdata.catalog.instrument_for({instrument_id!r}) returned "
            f"{type(instrument).__name__}, not an Instrument",
        )
    if instrument.id.value != instrument_id:
        instrument = _with_id(instrument, InstrumentId.from_str(instrument_id))
    return instrument


# -- bar sources ----------------------------------------------------------------------------------


def import_callable(dotted: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``."""
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise VenueConfigError(f"cannot import replay generator module {module_name!r}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise VenueConfigError(f"replay generator {dotted!r} is not a callable")
    return fn


def frame_to_bars(frame: pl.DataFrame, bar_type: BarType, instrument: Instrument) -> list[Bar]:
    """Convert a polars OHLCV frame (``ts_event`` = bar close, ns or Datetime) into Bars.

    Prices and volumes are rounded to the instrument's precisions; ``ts_init = ts_event``.
    Timestamps must be strictly increasing (no sorting here: out-of-order data is a data bug).
    """
    import polars as pl

    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise VenueConfigError(f"bar frame for {bar_type} misses columns {missing}")
    if frame.height == 0:
        raise VenueConfigError(f"bar frame for {bar_type} is empty")
    ts_col = pl.col("ts_event")
    if isinstance(frame.schema["ts_event"], pl.Datetime):
        ts_col = ts_col.dt.epoch("ns")
    frame = frame.select(
        ts_col.cast(pl.Int64).alias("ts_event"),
        *(pl.col(c).cast(pl.Float64) for c in FRAME_COLUMNS[1:]),
    )
    nulls = {c: n for c, n in zip(frame.columns, frame.null_count().row(0), strict=True) if n}
    if nulls:
        raise VenueConfigError(f"bar frame for {bar_type} has nulls: {nulls}")
    ts = frame["ts_event"]
    if ts.min() < 0:
        raise VenueConfigError(f"bar frame for {bar_type} has negative timestamps")
    if frame.height > 1 and not (ts.diff().drop_nulls() > 0).all():
        raise VenueConfigError(f"bar frame for {bar_type}: ts_event is not strictly increasing")
    _check_spacing(ts.to_numpy(), bar_type)

    make_price, make_qty = instrument.make_price, instrument.make_qty
    bars: list[Bar] = []
    for i, (t, o, h, lo, c, v) in enumerate(frame.iter_rows()):
        try:
            bars.append(
                Bar(
                    bar_type,
                    make_price(o),
                    make_price(h),
                    make_price(lo),
                    make_price(c),
                    make_qty(v),
                    t,
                    t,
                ),
            )
        except ValueError as e:
            raise VenueConfigError(f"bar {i} (ts_event={t}) of {bar_type} is invalid: {e}") from e
    return bars


def _check_spacing(ts: np.ndarray, bar_type: BarType) -> None:
    """The usual bar spacing must match a time bar type's step (15-minute data replayed as
    1-MINUTE bars is a configuration error). Gaps (weekends, halts) are allowed."""
    if len(ts) < 3 or not bar_type.spec.is_time_aggregated():
        return
    step = int(bar_type.spec.timedelta.total_seconds() * 1e9)
    diffs, counts = np.unique(np.diff(ts), return_counts=True)
    usual = int(diffs[np.argmax(counts)])
    if usual != step:
        raise VenueConfigError(
            f"bars replayed as {bar_type} are usually {usual / 1e9:g} s apart, "
            f"but the bar type's step is {step / 1e9:g} s",
        )


def _load_frame_bars(
    config: ReplayDataClientConfig,
    bar_types: list[BarType],
    instruments: dict[InstrumentId, Instrument],
) -> dict[BarType, list[Bar]]:
    series: dict[BarType, list[Bar]] = {}
    if config.source == "synthetic":
        generate = import_callable(config.generator)
        for i, bar_type in enumerate(bar_types):
            frame = generate(n_bars=config.n_bars, seed=config.seed + i)
            series[bar_type] = frame_to_bars(frame, bar_type, instruments[bar_type.instrument_id])
    elif config.source == "csv":
        if len(bar_types) != 1:
            raise VenueConfigError(
                f"replay source 'csv' replays one bar type, got {[str(b) for b in bar_types]}",
            )
        path = Path(config.path or "")
        if not path.is_file():
            raise VenueConfigError(f"replay CSV not found: {path}")
        from marketdata.bars import load_bars  # imported when used: polars only for CSV replays

        frame = load_bars(path, fmt=config.format).frame
        series[bar_types[0]] = frame_to_bars(
            frame, bar_types[0], instruments[bar_types[0].instrument_id]
        )
    else:
        raise VenueConfigError(f"unknown replay source {config.source!r}")
    return series


def _load_catalog_bars(
    config: ReplayDataClientConfig,
    bar_types: list[BarType],
) -> tuple[dict[BarType, list[Bar]], dict[InstrumentId, Instrument]]:
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    path = Path(config.path or "")
    if not path.is_dir():
        raise VenueConfigError(f"replay catalog directory not found: {path}")
    catalog = ParquetDataCatalog(str(path))
    series = {}
    for bar_type in bar_types:
        bars = catalog.bars(bar_types=[str(bar_type)])
        if not bars:
            raise VenueConfigError(f"catalog {path} has no bars for {bar_type}")
        series[bar_type] = sorted(bars, key=lambda b: b.ts_init)
    ids = sorted({str(b.instrument_id) for b in bar_types})
    instruments = {i.id: i for i in catalog.instruments(instrument_ids=ids)}
    return series, instruments


def _paired_tick(
    bar: Bar, instrument: Instrument, seq: int, volume_is_liquidity: bool = True
) -> TradeTick:
    volume = bar.volume.as_double() if volume_is_liquidity else 0.0
    size = instrument.make_qty(volume if volume > 0 else UNKNOWN_VOLUME_SIZE)
    if size.as_double() <= 0:  # volume rounded away at the instrument's size precision
        size = instrument.size_increment
    return TradeTick(
        instrument.id,
        bar.close,
        size,
        AggressorSide.NO_AGGRESSOR,
        TradeId(f"REPLAY-{seq}"),
        bar.ts_event,
        bar.ts_init,
    )


def _to_ns(value: object) -> int | None:
    if value is None:
        return None
    import pandas as pd

    return int(pd.Timestamp(value).value)


# -- the client -----------------------------------------------------------------------------------


class ReplayDataClient(LiveMarketDataClient):
    """Live data client that replays historical bars (and close-price trades) offline."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_id: ClientId,
        venue: Venue | None,
        config: ReplayDataClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> None:
        super().__init__(
            loop=loop,
            client_id=client_id,
            venue=venue,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=InstrumentProvider(),
            config=config,
        )
        self._replay_config = config
        if config.speed < 0 or config.start_delay_secs < 0:
            raise VenueConfigError("replay speed and start_delay_secs must be >= 0")
        bar_types = [BarType.from_str(b) for b in config.bar_types]
        if not bar_types:
            raise VenueConfigError("replay needs at least one bar type")
        for bar_type in bar_types:
            if not bar_type.is_externally_aggregated():
                raise VenueConfigError(f"replayed bar types must be EXTERNAL, got {bar_type}")
        ids = list(
            dict.fromkeys([*config.instrument_ids, *(str(b.instrument_id) for b in bar_types)])
        )

        instruments: dict[InstrumentId, Instrument] = {}
        if config.source == "catalog":
            series, instruments = _load_catalog_bars(config, bar_types)
        for iid in ids:
            if InstrumentId.from_str(iid) not in instruments:
                instrument = resolve_instrument(iid)
                instruments[instrument.id] = instrument
        if config.source != "catalog":
            series = _load_frame_bars(config, bar_types, instruments)

        # Instruments go into the cache now: the sandbox execution client loads them on connect.
        for instrument in instruments.values():
            cache.add_instrument(instrument)
            self._instrument_provider.add(instrument)
        self._instruments = instruments

        if config.max_bars is not None:
            series = {bt: bars[: config.max_bars] for bt, bars in series.items()}
        self._history: dict[str, list[Bar]] = {}
        for bar_type, bars in series.items():
            n = config.history_bars
            if n and n >= len(bars):
                self._log.warning(
                    f"Replay history_bars={n} would leave none of the {len(bars)} bars of "
                    f"{bar_type} live: no history, all of them are replayed live"
                )
                n = 0
            self._history[str(bar_type)] = bars[:n]
            series[bar_type] = bars[n:]
        merged = sorted(
            (
                (bar.ts_event, k, n, bar)
                for k, bars in enumerate(series.values())
                for n, bar in enumerate(bars)
            ),
            key=lambda x: (x[0], x[1], x[2]),
        )
        self._bars: list[Bar] = [x[3] for x in merged]
        self._bar_types = {str(b) for b in series}
        self._subscribed: set[str] = set()
        self._queue_probes: list[Callable[[], int]] = []
        self._feed_task: asyncio.Task | None = None
        self._n_emitted = 0
        self._n_lost = 0
        self._finished = False

    # -- public state -----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the last bar has been published."""
        return self._finished

    @property
    def n_bars(self) -> int:
        """Bars this feed will publish in total."""
        return len(self._bars)

    @property
    def n_history(self) -> int:
        """History bars served to requests (never published live), all bar types."""
        return sum(map(len, self._history.values()))

    @property
    def n_emitted(self) -> int:
        """Bars published so far."""
        return self._n_emitted

    def set_queue_probes(self, probes: Iterable[Callable[[], int]]) -> None:
        """Queue-size callables (the node's engine queues) to drain before each next bar."""
        self._queue_probes = list(probes)

    # -- connection -------------------------------------------------------------------------------

    async def _connect(self) -> None:
        for instrument in self._instruments.values():
            self._handle_data(instrument)
        history = f" after {self.n_history} history bars" if self.n_history else ""
        self._log.info(
            f"Replay ready: {len(self._bars)} bars of {sorted(self._bar_types)}{history}; "
            "starts when all are subscribed",
        )

    async def _disconnect(self) -> None:
        if self._feed_task is not None and not self._feed_task.done():
            self._feed_task.cancel()
            self._log.info(f"Replay stopped after {self.n_emitted}/{self.n_bars} bars")

    # -- subscriptions ----------------------------------------------------------------------------

    async def _subscribe_bars(self, command: SubscribeBars) -> None:
        key = str(command.bar_type)
        if key not in self._bar_types:
            self._log.warning(f"No replay data for {key} (replaying {sorted(self._bar_types)})")
            return
        self._subscribed.add(key)
        if self._feed_task is None and self._bar_types <= self._subscribed:
            self._feed_task = self.create_task(self._run_feed(), log_msg="replay_feed")

    async def _subscribe_trade_ticks(self, command: SubscribeTradeTicks) -> None:
        pass  # close-price trades are published with every bar anyway

    async def _subscribe_quote_ticks(self, command: SubscribeQuoteTicks) -> None:
        self._log.warning(f"Replay has no quotes for {command.instrument_id}; it publishes trades")

    async def _subscribe_instrument(self, command: SubscribeInstrument) -> None:
        pass

    async def _subscribe_instruments(self, command: SubscribeInstruments) -> None:
        pass

    async def _subscribe(self, command: SubscribeData) -> None:
        self._log.warning(f"Replay cannot serve {command.data_type}")

    async def _unsubscribe_bars(self, command: UnsubscribeBars) -> None:
        self._subscribed.discard(str(command.bar_type))

    async def _unsubscribe_trade_ticks(self, command: UnsubscribeTradeTicks) -> None:
        pass

    async def _unsubscribe_quote_ticks(self, command: UnsubscribeQuoteTicks) -> None:
        pass

    async def _unsubscribe_instrument(self, command: UnsubscribeInstrument) -> None:
        pass

    async def _unsubscribe_instruments(self, command: UnsubscribeInstruments) -> None:
        pass

    async def _unsubscribe(self, command: UnsubscribeData) -> None:
        pass

    # -- requests ---------------------------------------------------------------------------------

    async def _request_instrument(self, request: RequestInstrument) -> None:
        instrument = self._instruments.get(request.instrument_id)
        if instrument is None:
            self._log.error(f"Replay has no instrument {request.instrument_id}")
            return
        self._handle_instrument(instrument, request.id, request.start, request.end, request.params)

    async def _request_instruments(self, request: RequestInstruments) -> None:
        instruments = [i for i in self._instruments.values() if i.venue == request.venue]
        self._handle_instruments(
            request.venue,
            instruments,
            request.id,
            request.start,
            request.end,
            request.params,
        )

    async def _request_bars(self, request: RequestBars) -> None:
        """History and bars already replayed (never future ones: no look-ahead), newest
        ``limit`` of them.

        Strategies build request windows from the wall clock; a window lying entirely after
        the replayed bars' historical times means "the latest bars". A window overlapping the
        replayed history filters by it.
        """
        if self._replay_config.unanswered_history:
            self._log.warning(f"Fault drill: bars request {request.id} is never answered")
            return
        key = str(request.bar_type)
        bars = self._history.get(key, []) + [
            b for b in self._bars[: self._n_emitted] if str(b.bar_type) == key
        ]
        start = _to_ns(request.start)
        if bars and start is not None and start <= bars[-1].ts_event:
            end = _to_ns(request.end)
            bars = [b for b in bars if b.ts_event >= start and (end is None or b.ts_event <= end)]
        if request.limit and request.limit > 0:
            bars = bars[-request.limit :]
        self._handle_bars(
            request.bar_type, bars, request.id, request.start, request.end, request.params
        )

    # -- the feed ---------------------------------------------------------------------------------

    async def _settle(self) -> None:
        """Yield until the node's queues are drained, so the last bar is fully handled."""
        await asyncio.sleep(0)  # let the enqueue callbacks of the data just sent run
        if not self._queue_probes:
            for _ in range(8):
                await asyncio.sleep(0)
            return
        quiet = spins = 0
        while quiet < _SETTLE_QUIET_CHECKS and spins < _SETTLE_MAX_SPINS:
            await asyncio.sleep(0)
            spins += 1
            quiet = 0 if any(probe() for probe in self._queue_probes) else quiet + 1

    async def _run_feed(self) -> None:
        config = self._replay_config
        if config.start_delay_secs:
            await asyncio.sleep(config.start_delay_secs)
        await self._settle()  # history requested in on_start is answered before the first bar
        self._log.info(f"Replay started: {self.n_bars} bars at speed={config.speed or 'max'}")
        interval = 1.0 / config.speed if config.speed > 0 else 0.0
        t0 = self._loop.time()
        lost = {
            seq: (start, n)
            for start, n in config.outages
            for seq in range(start, min(start + n, len(self._bars)))
        }
        data_time = 0
        for seq, bar in enumerate(self._bars):
            if interval:
                delay = t0 + seq * interval - self._loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if seq in lost:
                self._drop(seq, *lost[seq])
                continue
            if not self.is_connected:
                self._set_connected(True)
                self._log.warning(f"Fault drill: feed reconnected at bar {seq}")
            if bar.ts_event > data_time:  # time moves on: samples due before it, then settle
                data_time = bar.ts_event
                self._msgbus.publish(DATA_CLOCK_TOPIC, DataTime(data_time))
                await self._settle()
            if config.trade_ticks:
                instrument = self._instruments[bar.bar_type.instrument_id]
                volume_is_liquidity = config.source != "synthetic"
                self._handle_data(_paired_tick(bar, instrument, seq, volume_is_liquidity))
            self._handle_data(bar)
            self._n_emitted += 1
            await self._settle()
        if data_time:  # everything up to the last bar is handled: samples due at its time
            self._msgbus.publish(DATA_CLOCK_TOPIC, DataTime(data_time, closed=True))
            await self._settle()
        self._finish()

    def _drop(self, seq: int, start: int, n: int) -> None:
        """Fault drill: the feed is down; this bar never reaches the node."""
        if seq == start:
            self._set_connected(False)
            self._log.warning(f"Fault drill: feed disconnected after {start} bars ({n} bars lost)")
        self._n_lost += 1

    def _finish(self) -> None:
        self._finished = True
        first = self._bars[0].ts_event if self._bars else 0
        last = self._bars[-1].ts_event if self._bars else 0
        self._log.info(f"Replay finished: {self.n_bars} bars published; no more data will follow")
        self._msgbus.publish(
            REPLAY_DONE_TOPIC,
            ReplayDone(client_id=self.id.value, n_bars=self.n_bars, ts_first=first, ts_last=last),
        )


class ReplayLiveDataClientFactory(LiveDataClientFactory):
    """Creates :class:`ReplayDataClient` instances for a ``TradingNode``."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: ReplayDataClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> ReplayDataClient:
        ids = [InstrumentId.from_str(i) for i in config.instrument_ids]
        ids += [BarType.from_str(b).instrument_id for b in config.bar_types]
        venues = {i.venue for i in ids}
        # One venue: route by it. Several: no venue, the client serves as the default route.
        venue = next(iter(venues)) if len(venues) == 1 else None
        return ReplayDataClient(
            loop=loop,
            client_id=ClientId(name or REPLAY_CLIENT_NAME),
            venue=venue,
            config=config,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
        )


# -- node helpers ---------------------------------------------------------------------------------


def replay_clients(node: TradingNode) -> list[ReplayDataClient]:
    """The replay data clients registered on a built node."""
    clients = node.kernel.data_engine._clients.values()  # readonly in 1.231.0
    return [c for c in clients if isinstance(c, ReplayDataClient)]


def wire_replay_clients(node: TradingNode) -> None:
    """Let replay clients wait for the node's engine queues before each next bar."""
    kernel = node.kernel
    probes: list[Callable[[], int]] = [
        kernel.data_engine.data_qsize,
        kernel.data_engine.cmd_qsize,
        kernel.data_engine.req_qsize,
        kernel.data_engine.res_qsize,
        kernel.risk_engine.cmd_qsize,
        kernel.risk_engine.evt_qsize,
        kernel.exec_engine.cmd_qsize,
        kernel.exec_engine.evt_qsize,
    ]
    for client in replay_clients(node):
        client.set_queue_probes(probes)


def replay_finished(node: TradingNode) -> bool:
    """True when the node has replay clients and all of them have published their last bar."""
    clients = replay_clients(node)
    return bool(clients) and all(c.finished for c in clients)
