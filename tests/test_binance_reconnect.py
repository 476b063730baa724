"""The Binance client's reconciliation after a user-data reconnect (``venues.binance_spot``): it
waits until no order is in flight, then reconciles orders and fills only. A position report read
while an order fills can disagree with the fills the node booked, and NautilusTrader would book
a synthetic fill for the difference (seen in CI on the simulated venue: the node believed it held
BTC the account did not hold and every sell was refused); the end-to-end drills are in
``tests/test_sim_faults.py``."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace

from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.reports import (
    ExecutionMassStatus,
    FillReport,
    OrderStatusReport,
    PositionStatusReport,
)
from nautilus_trader.model.enums import (
    LiquiditySide,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    TimeInForce,
)
from nautilus_trader.model.identifiers import (
    AccountId,
    ClientId,
    ClientOrderId,
    InstrumentId,
    TradeId,
    Venue,
    VenueOrderId,
)
from nautilus_trader.model.objects import Money, Price, Quantity

from venues.binance_spot import reconcile_when_settled, without_positions

BTC = InstrumentId.from_str("BTCUSDT.BINANCE")
ACCOUNT = AccountId("BINANCE-SPOT-master")


def mass_status() -> ExecutionMassStatus:
    status = ExecutionMassStatus(ClientId("BINANCE"), ACCOUNT, Venue("BINANCE"), UUID4(), 1)
    qty = Quantity.from_str("0.5")
    status.add_order_reports([
        OrderStatusReport(
            account_id=ACCOUNT, instrument_id=BTC, venue_order_id=VenueOrderId("7"),
            order_side=OrderSide.SELL, order_type=OrderType.MARKET,
            time_in_force=TimeInForce.GTC, order_status=OrderStatus.FILLED, quantity=qty,
            filled_qty=qty, report_id=UUID4(), ts_accepted=1, ts_last=1, ts_init=1,
            client_order_id=ClientOrderId("O-1"),
        )
    ])  # fmt: skip
    status.add_fill_reports([
        FillReport(
            account_id=ACCOUNT, instrument_id=BTC, venue_order_id=VenueOrderId("7"),
            trade_id=TradeId("70"), order_side=OrderSide.SELL, last_qty=qty,
            last_px=Price.from_str("40000.00"), commission=Money.from_str("20 USDT"),
            liquidity_side=LiquiditySide.TAKER, report_id=UUID4(), ts_event=1, ts_init=1,
            client_order_id=ClientOrderId("O-1"),
        )
    ])  # fmt: skip
    status.add_position_reports([
        PositionStatusReport(
            account_id=ACCOUNT, instrument_id=BTC, position_side=PositionSide.LONG,
            quantity=Quantity.from_str("1.5"), report_id=UUID4(), ts_last=1, ts_init=1,
        )
    ])  # fmt: skip
    return status


def test_without_positions_keeps_every_order_and_fill() -> None:
    full = mass_status()
    kept = without_positions(full)
    assert kept.position_reports == {}
    assert kept.order_reports == full.order_reports
    assert kept.fill_reports == full.fill_reports
    assert (kept.id, kept.venue, kept.account_id) == (full.id, full.venue, full.account_id)


class StandInClient:
    """What ``reconcile_when_settled`` touches of NautilusTrader's Binance execution client."""

    def __init__(self, inflight: int) -> None:
        self.venue = Venue("BINANCE")
        self.inflight = inflight
        self.sent: list[ExecutionMassStatus] = []
        self._ws_client = SimpleNamespace(_on_resubscribe=None)
        self._cache = SimpleNamespace(orders_inflight=self.orders_inflight)
        self._log = SimpleNamespace(warning=lambda msg: None)

    def orders_inflight(self, venue: Venue) -> list[str]:
        self.inflight = max(0, self.inflight - 1)  # the in-flight check resolves one per poll
        return ["order"] * self.inflight

    async def generate_mass_status(self, lookback_mins=None) -> ExecutionMassStatus:
        assert self.inflight == 0, "reconciled while an order was still in flight"
        return mass_status()

    def _send_mass_status_report(self, report: ExecutionMassStatus) -> None:
        self.sent.append(report)


def test_after_a_reconnect_orders_settle_then_orders_and_fills_reconcile_not_positions() -> None:
    client = StandInClient(inflight=3)
    reconcile_when_settled(client)
    assert client._ws_client._on_resubscribe is client._reconcile_after_resubscribe
    asyncio.run(client._ws_client._on_resubscribe())
    [sent] = client.sent
    assert sent.position_reports == {}
    assert [r.client_order_id for r in sent.order_reports.values()] == [ClientOrderId("O-1")]
    assert Decimal(str(sum(f.last_qty for fs in sent.fill_reports.values() for f in fs))) == (
        Decimal("0.5")
    )
