"""Make NautilusTrader 1.231.0 backtests cost O(bars + positions) instead of O(positions^2).

Two costs grow with the square of the number of closed positions under default settings:

1. The portfolio analyzer. The ``Portfolio`` calls ``PortfolioAnalyzer.record_trade`` for every
   closed position during the run; at the end, ``calculate_statistics`` calls ``add_trade`` and
   ``add_position_return`` for every position (NETTING snapshots included). Upstream each call
   grows a ``pd.Series`` by one element with ``pd.concat`` (or ``.loc`` enlargement), copying all
   that was recorded before; with pandas 3's Arrow-backed string index one ``record_trade`` costs
   about 0.85 us per position already recorded.
   Fix: :class:`LinearPortfolioAnalyzer` appends those records to lists and builds the very same
   ``pd.Series`` in one construction the first time anything reads them. The record dicts are
   properties, so every reader (upstream's methods, statistics, the tearsheet, user code) sees
   settled data; the statistics are identical to upstream's (``tests/test_scaling.py``).
   ``Portfolio.analyzer`` is a read-only Cython attribute, so :func:`install_linear_analyzer`
   swaps the class of the existing analyzer object in place.

2. NETTING position ids are reused: every order ever sent for an instrument/strategy stays indexed
   under the one position id, and after EVERY fill the ``OrderMatchingEngine`` walks
   ``cache.orders_for_position(position.id)`` to re-size passive reduce-only orders (bracket
   children) -- O(orders so far) per fill. (Snapshot pickling on a flip/reopen is O(size of the
   one closed position), i.e. linear over a run.) The walk sits behind the venue's
   ``support_contingent_orders`` flag, so a venue configured with
   ``support_contingent_orders=False`` (:data:`VENUE_SETTINGS`) skips it. That is exact for
   strategies that send no contingent (OTO/OCO/OUO) and no passive reduce-only orders -- the HMM
   strategy and NautilusTrader's EMACross send market orders only -- and
   :func:`install_contingency_guard` makes a run fail loudly if any such order appears.

No file of the installed ``nautilus_trader`` package is changed.

Usage::

    engine.add_venue(..., **VENUE_SETTINGS)          # or linear_venue_config(BacktestVenueConfig)
    ...
    install_linear_scaling(engine)                   # before engine.run()

With a ``BacktestNode``: ``node.build()``, ``install_linear_scaling(node.get_engine(cfg.id))``,
then ``node.run()`` (``run`` builds only engines that do not exist yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import pandas as pd
from nautilus_trader.analysis.analyzer import PortfolioAnalyzer
from nautilus_trader.core.datetime import unix_nanos_to_dt
from nautilus_trader.model.enums import ContingencyType, OrderType
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.objects import Currency, Money
from nautilus_trader.model.position import Position
from numpy import float64

if TYPE_CHECKING:
    from nautilus_trader.backtest.config import BacktestVenueConfig
    from nautilus_trader.backtest.engine import BacktestEngine

# Venue settings (``BacktestEngine.add_venue`` keywords / ``BacktestVenueConfig`` fields) that
# skip the per-fill walk over every order of a reused NETTING position id (see the module doc).
VENUE_SETTINGS: dict[str, Any] = {"support_contingent_orders": False}

_REALIZED = "realized"  # add_trade: statistics over the positions handed to calculate_statistics
_RECORDED = "recorded"  # record_trade: PnL observed by the Portfolio while the run is going
_PNL_ATTRS = {_REALIZED: "_realized_pnls", _RECORDED: "_recorded_realized_pnls"}
_TS_ATTRS = {_REALIZED: "_realized_pnl_timestamps", _RECORDED: "_recorded_realized_pnl_timestamps"}
_STORE = "_linear_store"  # instance-dict key holding the settled values behind the properties
_PENDING = "_linear_pending"  # kind -> currency -> ([position id], [pnl], [ts or None])


def _pending(self: PortfolioAnalyzer) -> dict[str, dict[Currency, tuple[list, list, list]]]:
    return self.__dict__.setdefault(_PENDING, {_REALIZED: {}, _RECORDED: {}})


def _store(self: PortfolioAnalyzer) -> dict[str, Any]:
    return self.__dict__.setdefault(_STORE, {})


def _settle(self: PortfolioAnalyzer, kind: str) -> None:
    """Append the buffered records of ``kind`` to its Series, exactly as N concats would."""
    pending = _pending(self)[kind]
    if not pending:
        return
    store = _store(self)
    pnls = store.setdefault(_PNL_ATTRS[kind], {})
    stamps = store.setdefault(_TS_ATTRS[kind], {})
    for currency, (ids, values, ts) in pending.items():
        # The same constructors as upstream's per-record Series, so dtypes match exactly.
        batch = pd.Series(values, index=ids, dtype=float64)
        batch_ts = pd.Series(ts, index=ids, dtype=object)
        old, old_ts = pnls.get(currency), stamps.get(currency)
        pnls[currency] = batch if old is None else pd.concat([old, batch])
        stamps[currency] = batch_ts if old_ts is None else pd.concat([old_ts, batch_ts])
    pending.clear()


def _record_property(attr: str, kind: str) -> property:
    def get(self: PortfolioAnalyzer) -> dict[Currency, pd.Series]:
        _settle(self, kind)
        return _store(self).setdefault(attr, {})

    def set_(self: PortfolioAnalyzer, value: dict[Currency, pd.Series]) -> None:
        _settle(self, kind)  # records made before a reassignment belonged to the old dict
        _store(self)[attr] = value

    return property(get, set_, doc=f"``{attr}``, settled from the append buffer on read.")


class LinearPortfolioAnalyzer(PortfolioAnalyzer):
    """``PortfolioAnalyzer`` with O(1) amortised ``record_trade``/``add_trade`` and a batched
    ``add_positions``; every read returns exactly what upstream would have built."""

    _realized_pnls = _record_property("_realized_pnls", _REALIZED)
    _realized_pnl_timestamps = _record_property("_realized_pnl_timestamps", _REALIZED)
    _recorded_realized_pnls = _record_property("_recorded_realized_pnls", _RECORDED)
    _recorded_realized_pnl_timestamps = _record_property(
        "_recorded_realized_pnl_timestamps", _RECORDED
    )

    def _buffer(
        self, kind: str, position_id: PositionId, realized_pnl: Money, ts_event: int | None
    ) -> None:
        buf = _pending(self)[kind].get(realized_pnl.currency)
        if buf is None:
            buf = _pending(self)[kind][realized_pnl.currency] = ([], [], [])
        buf[0].append(position_id.value)
        buf[1].append(realized_pnl.as_double())
        buf[2].append(int(ts_event) if ts_event is not None else None)

    def add_trade(
        self, position_id: PositionId, realized_pnl: Money, ts_event: int | None = None
    ) -> None:
        self._buffer(_REALIZED, position_id, realized_pnl, ts_event)

    def record_trade(
        self, position_id: PositionId, realized_pnl: Money, ts_event: int | None = None
    ) -> None:
        self._buffer(_RECORDED, position_id, realized_pnl, ts_event)

    def _calculate_returns_stats(self, returns: pd.Series) -> dict[str, Any]:
        """Upstream's, with ``returns`` turned into the ``{ns: float}`` the Rust statistics take
        once per call rather than once per statistic (17 Python loops over every daily return of
        the run: 20 years of days on a sparse calendar)."""
        vars(self)["_linear_returns"] = (returns, None)
        try:
            return super()._calculate_returns_stats(returns)
        finally:
            vars(self).pop("_linear_returns", None)

    def _returns_to_dict(self, returns: pd.Series) -> dict[int, float]:
        memo = vars(self).get("_linear_returns")
        dated = isinstance(returns.index, pd.DatetimeIndex)
        if memo is None or memo[0] is not returns or not dated:
            return super()._returns_to_dict(returns)
        if memo[1] is None:  # upstream's loop in two vector steps: ns keys, float values
            keys = returns.index.as_unit("ns").asi8.tolist()
            memo = (returns, dict(zip(keys, returns.to_numpy(dtype=float64).tolist(), strict=True)))
            vars(self)["_linear_returns"] = memo
        return dict(memo[1])  # each statistic its own copy, as upstream

    def add_positions(self, positions: list[Position]) -> None:
        """Upstream's loop with the position returns summed per close time in one pass.

        Upstream adds each return with ``.loc`` enlargement (a copy per position); here returns
        are summed in the same order (0.0 + r1 + r2 ...) and the Series is built once, with the
        index in first-seen order like upstream's. With returns already present (not the case
        in ``calculate_statistics``, which clears them first) it defers to upstream.
        """
        if not self._position_returns.empty:
            super().add_positions(positions)
            return
        self._positions += positions
        sums: dict[Any, float] = {}
        for position in positions:
            if position.realized_pnl is None:
                continue  # Skip empty shell positions
            self.add_trade(position.id, position.realized_pnl, position.ts_last)
            if position.ts_closed > 0:
                ts = unix_nanos_to_dt(position.ts_closed)
                sums[ts] = sums.get(ts, 0.0) + float(position.realized_return)
        if sums:
            # Upstream enlarges an empty Series with datetime keys -> the same DatetimeIndex.
            index = pd.DatetimeIndex(list(sums))
            self._position_returns = pd.Series(list(sums.values()), index=index, dtype=float64)
        self._sync_returns_alias()


def install_linear_analyzer(target: Any) -> LinearPortfolioAnalyzer:
    """Make ``target``'s portfolio analyzer linear-cost; returns the analyzer.

    ``target`` is a ``BacktestEngine`` (or anything with ``.portfolio``), a ``Portfolio``, or a
    ``PortfolioAnalyzer``. Call it before the run; calling it again is a no-op. Data already
    recorded is kept.
    """
    analyzer = _analyzer_of(target)
    if isinstance(analyzer, LinearPortfolioAnalyzer):
        return analyzer
    if type(analyzer) is not PortfolioAnalyzer:
        raise TypeError(
            f"expected a plain nautilus_trader PortfolioAnalyzer, got {type(analyzer).__name__}; "
            "a customised analyzer would lose its overrides"
        )
    state = vars(analyzer)
    # Move the plain attributes behind the properties before the class changes.
    moved = {attr: state.pop(attr, {}) for attr in (*_PNL_ATTRS.values(), *_TS_ATTRS.values())}
    analyzer.__class__ = LinearPortfolioAnalyzer
    _store(analyzer).update(moved)
    _pending(analyzer)
    return analyzer


def _analyzer_of(target: Any) -> PortfolioAnalyzer:
    if isinstance(target, PortfolioAnalyzer):
        return target
    portfolio = getattr(target, "portfolio", target)
    analyzer = getattr(portfolio, "analyzer", None)
    if not isinstance(analyzer, PortfolioAnalyzer):
        raise TypeError(
            f"{type(target).__name__} has no portfolio analyzer; pass a BacktestEngine, "
            "a Portfolio or a PortfolioAnalyzer"
        )
    return analyzer


class ContingentOrderError(RuntimeError):
    """An order the linear venue settings would not handle like the default venue."""


def linear_venue_config(venue: BacktestVenueConfig) -> BacktestVenueConfig:
    """``venue`` with :data:`VENUE_SETTINGS` applied (a copy; the config is frozen)."""
    return msgspec.structs.replace(venue, **VENUE_SETTINGS)


def install_contingency_guard(engine: BacktestEngine) -> None:
    """Fail the run on the first contingent or passive reduce-only order.

    With ``support_contingent_orders=False`` the simulated venue neither triggers OTO children nor
    cancels OCO/OUO siblings nor re-sizes passive reduce-only orders; a strategy sending such
    orders would silently get different fills, so the run stops with
    :class:`ContingentOrderError` instead (raised from the message bus into ``engine.run``).
    """
    cache = engine.cache
    checked: set = set()

    def check(event: Any) -> None:
        client_order_id = event.client_order_id
        if client_order_id in checked:
            return
        order = cache.order(client_order_id)
        if order is None:
            return  # OrderInitialized is published before the order is cached
        checked.add(client_order_id)
        contingent = order.contingency_type != ContingencyType.NO_CONTINGENCY
        passive_reduce_only = order.is_reduce_only and order.order_type != OrderType.MARKET
        if contingent or passive_reduce_only:
            kind = "contingent" if contingent else "passive reduce-only"
            raise ContingentOrderError(
                f"{kind} order {client_order_id} ({order}) on a venue configured with "
                f"{VENUE_SETTINGS}: this strategy needs the default venue settings "
                "(support_contingent_orders=True); do not apply backtests.scaling.VENUE_SETTINGS"
            )

    engine.kernel.msgbus.subscribe(topic="events.order.*", handler=check, priority=100)


def install_linear_scaling(engine: BacktestEngine, *, guard: bool = True) -> None:
    """Everything a runner calls before ``engine.run()`` (venues built with VENUE_SETTINGS).

    Installs :class:`LinearPortfolioAnalyzer` and, with ``guard``, the contingency guard.
    """
    install_linear_analyzer(engine)
    if guard:
        install_contingency_guard(engine)


def pending_records(analyzer: PortfolioAnalyzer) -> int:
    """How many records wait in the append buffer (0 for a plain analyzer); for tests."""
    if not isinstance(analyzer, LinearPortfolioAnalyzer):
        return 0
    return sum(len(buf[0]) for kind in _pending(analyzer).values() for buf in kind.values())


__all__: Iterable[str] = (
    "VENUE_SETTINGS",
    "ContingentOrderError",
    "LinearPortfolioAnalyzer",
    "install_contingency_guard",
    "install_linear_analyzer",
    "install_linear_scaling",
    "linear_venue_config",
    "pending_records",
)
