"""Two fixes to NautilusTrader's Binance execution client, applied by ``binance_factories``.

1. Reconciliation after a user-data reconnect waits for orders in flight (all account types).
   After a WebSocket reconnect the client asks the venue for a mass status at once. An order
   submitted just before, whose ``executionReport`` was lost with the connection, is then still
   SUBMITTED in the cache with no venue order id: the mass status takes its fill for an unknown
   order and books it, and the in-flight check books the same fill again when it asks about the
   order (found on the simulated venue: a node holding 3.72 BTC believed it held 7.44 and sent
   sells the venue refused until the end of the run). Here the mass status waits until no order
   of the client's venue is in flight (the in-flight check resolves them one by one, as known
   orders), for at most ``SETTLE_TIMEOUT_SECS``. And it reconciles orders and fills only, not
   positions: the venue's balances are read apart from its orders, so an order that fills while
   the mass status is gathered can make the position report disagree with the fills the node
   has booked, and position reconciliation would then book a synthetic fill for the difference
   (found in CI: the node believed it held BTC the account did not, and every sell was refused
   for insufficient balance). Orders and fills reconcile by client order id and trade id, which
   is idempotent; the position follows from them. Start-up reconciliation keeps the positions.

2. Binance spot positions after a restart: the held base asset is the position.

NautilusTrader 1.231.0's Binance spot execution client reports no positions at all ("never cash
positions"). At start-up reconciliation rebuilds a strategy's position from the venue's order
history, then asks for position reports, gets none, takes the venue to be flat and books an
inferred closing fill: a node restarted after a crash believes it is flat while the account
still holds the coins (found on the simulated venue, ``tests/test_sim_restart.py``). Here the
client reports, for every loaded spot instrument, a LONG position of the base asset it holds
(free + locked, rounded down to the instrument's size increment; below the minimum size it is
flat). That assumes the account trades each base asset through one instrument only and holds
no other coins of it; the venue profile docs say so.
"""

from __future__ import annotations

import asyncio
import time
import types
from decimal import ROUND_DOWN, Decimal

from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.reports import ExecutionMassStatus, PositionStatusReport
from nautilus_trader.model.enums import PositionSide
from nautilus_trader.model.objects import Quantity


async def _held(client) -> dict[str, Decimal]:
    info = await client._spot_http_account.query_spot_account_info(recv_window="5000")
    return {b.asset: Decimal(b.free) + Decimal(b.locked) for b in info.balances}


def _position_qty(instrument, held: Decimal) -> Decimal:
    step = instrument.size_increment.as_decimal()
    qty = (held / step).to_integral_value(rounding=ROUND_DOWN) * step
    minimum = instrument.min_quantity.as_decimal() if instrument.min_quantity else step
    return qty if qty >= minimum else Decimal(0)


async def _position_reports(self, symbol: str | None = None) -> list[PositionStatusReport]:
    held = await _held(self)
    now = self._clock.timestamp_ns()
    reports = []
    for instrument in self._instrument_provider.list_all():
        if symbol is not None and instrument.id.symbol.value != symbol:
            continue
        qty = _position_qty(instrument, held.get(instrument.base_currency.code, Decimal(0)))
        if qty == 0:
            continue
        reports.append(
            PositionStatusReport(
                account_id=self.account_id,
                instrument_id=instrument.id,
                position_side=PositionSide.LONG,
                quantity=Quantity(qty, instrument.size_precision),
                report_id=UUID4(),
                ts_last=now,
                ts_init=now,
            )
        )
    return reports


async def _active_symbols(self, symbol: str | None = None) -> set[str]:
    return {r.instrument_id.symbol.value for r in await _position_reports(self, symbol)}


def report_held_assets_as_positions(client) -> None:
    """Give a Binance spot execution client the position reports described in the module."""
    from nautilus_trader.adapters.binance.spot.execution import BinanceSpotExecutionClient

    if isinstance(client, BinanceSpotExecutionClient) and client._binance_account_type.is_spot:
        client._get_binance_position_status_reports = types.MethodType(_position_reports, client)
        client._get_binance_active_position_symbols = types.MethodType(_active_symbols, client)


SETTLE_TIMEOUT_SECS = 60.0  # longer than NautilusTrader's in-flight check takes to resolve


def without_positions(mass_status: ExecutionMassStatus) -> ExecutionMassStatus:
    """The same mass status with its orders and fills only (see module, point 1)."""
    out = ExecutionMassStatus(
        client_id=mass_status.client_id,
        account_id=mass_status.account_id,
        venue=mass_status.venue,
        report_id=mass_status.id,
        ts_init=mass_status.ts_init,
    )
    out.add_order_reports(list(mass_status.order_reports.values()))
    out.add_fill_reports([f for fills in mass_status.fill_reports.values() for f in fills])
    return out


def reconcile_when_settled(client, timeout_secs: float = SETTLE_TIMEOUT_SECS) -> None:
    """Make the client's post-reconnect mass status wait for its orders in flight and reconcile
    orders and fills only (see module)."""

    async def _reconcile_after_resubscribe() -> None:
        deadline = time.monotonic() + timeout_secs
        while client._cache.orders_inflight(venue=client.venue):
            if time.monotonic() > deadline:
                client._log.warning(
                    f"Reconciling after the reconnect with orders still in flight after "
                    f"{timeout_secs:.0f} s"
                )
                break
            await asyncio.sleep(0.1)
        # NautilusTrader's own ``_reconcile_after_resubscribe``, less the position reports
        mass_status = await client.generate_mass_status(lookback_mins=None)
        if mass_status is not None:
            client._send_mass_status_report(without_positions(mass_status))

    client._reconcile_after_resubscribe = _reconcile_after_resubscribe
    client._ws_client._on_resubscribe = _reconcile_after_resubscribe  # bound at construction


def with_spot_positions(factory: type) -> type:
    """A subclass of a Binance exec client factory whose clients reconcile after a reconnect
    once their orders settled, and whose spot clients report positions (see module)."""

    def create(*args, **kwargs):
        client = factory.create(*args, **kwargs)
        reconcile_when_settled(client)
        report_held_assets_as_positions(client)
        return client

    return type(factory.__name__, (factory,), {"create": staticmethod(create)})
