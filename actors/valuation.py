"""Prices, currency conversion and account equity from the node's cache, written once.

The metrics exporter (in USD), the performance book and the capital allocator (in the
allocator's currency) value positions and balances the same way: the last trade, else the mid,
else the mark price; an amount in another currency is converted through the first instrument
quoting that currency (as base) in one of the target currencies that has a price.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from nautilus_trader.model.enums import AccountType, AggregationSource, PriceType
from nautilus_trader.model.identifiers import Venue

PRICE_TYPES = (PriceType.LAST, PriceType.MID, PriceType.MARK)


def last_price(cache: Any, instrument_id: Any) -> Any:
    """The instrument's latest price (last, else mid, else mark), or None."""
    for price_type in PRICE_TYPES:
        price = cache.price(instrument_id, price_type)
        if price is not None:
            return price
    return None


class Prices:
    """``last_price`` for a caller that prices the same instruments at every sample.

    Without ticks NautilusTrader's ``cache.price`` falls back to the close of the instrument's
    external bars of that price type (LAST, else MID: ``last_price``'s order) with the smallest
    step, looking those bar types up on every call (~8 us each, most of a sample's cost). The
    bar type it settles on is remembered per instrument; a trade tick (or, for MID bars, a quote
    tick), when there is one, still wins as in ``last_price``.
    """

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._bars: dict[Any, tuple[Any, Any]] = {}  # instrument id -> (price type, bar type)

    def last(self, instrument_id: Any) -> Any:
        cache = self._cache
        memo = self._bars.get(instrument_id)
        if (
            memo is not None
            and cache.trade_tick(instrument_id) is None
            and (memo[0] == PriceType.LAST or cache.quote_tick(instrument_id) is None)
        ):
            bar = cache.bar(memo[1])
            if bar is not None:
                return bar.close
        price = last_price(cache, instrument_id)
        if price is not None and cache.trade_tick(instrument_id) is None:
            for price_type in (PriceType.LAST, PriceType.MID):
                if price_type == PriceType.MID and cache.quote_tick(instrument_id) is not None:
                    break
                types = cache.bar_types(instrument_id, price_type, AggregationSource.EXTERNAL)
                if types:
                    self._bars[instrument_id] = (price_type, types[0])
                    break
        return price


def convert(
    cache: Any, money: Any, targets: Collection[str], venue: Venue | None = None
) -> float | None:
    """``money`` as a float in one of ``targets`` (currency codes taken as equal); None when
    no priced instrument (of ``venue``, if given) converts it."""
    if money is None:
        return None
    code = money.currency.code
    if code in targets:
        return money.as_double()
    instruments = cache.instruments() if venue is None else cache.instruments(venue=venue)
    for instrument in instruments:
        base = getattr(instrument, "base_currency", None)
        if base is not None and base.code == code and instrument.quote_currency.code in targets:
            price = last_price(cache, instrument.id)
            if price is not None:
                return money.as_double() * price.as_double()
    return None


def account_equity(
    portfolio: Any, cache: Any, venue: Venue, to_float: Any, prices: Prices | None = None
) -> float | None:
    """Total balances plus, on a margin account, the open positions' unrealized PnL, each
    amount through ``to_float`` (None: left out); None without an account. ``prices``: a
    caller's ``Prices`` (the same prices as ``last_price``, without its bar-type lookups)."""
    account = portfolio.account(venue)
    if account is None:
        return None
    equity = 0.0
    for money in account.balances_total().values():
        equity += to_float(money) or 0.0
    if account.type == AccountType.MARGIN:
        for position in cache.positions_open(venue=venue):
            if prices is not None:
                price = prices.last(position.instrument_id)
            else:
                price = last_price(cache, position.instrument_id)
            if price is not None:
                equity += to_float(position.unrealized_pnl(price)) or 0.0
    return equity


class PositionCycles:
    """Realized PnL per position cycle, as increments.

    A position event carries the realized PnL of the position's current cycle so far, and a
    NETTING position reopens under the same id (``PositionOpened`` starts a new cycle from
    zero); ``increment`` turns those running totals into what each event adds.
    """

    def __init__(self) -> None:
        self._realized: dict[str, float] = {}  # position id -> realized PnL of its current cycle

    def seed(self, position_id: str, realized: float) -> None:
        """A position already open at start: what it realized before is not new."""
        self._realized[position_id] = realized

    def increment(self, position_id: str, realized: float, opened: bool) -> float:
        if opened:
            self._realized[position_id] = 0.0  # the previous cycle stays banked in the totals
        delta = realized - self._realized.get(position_id, 0.0)
        self._realized[position_id] = realized
        return delta
