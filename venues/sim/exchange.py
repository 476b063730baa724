"""The simulated exchange's book-keeping: one spot symbol, balances, orders, trades, faults.

No networking here (that is :mod:`venues.sim.server`); every method is synchronous and returns
the JSON bodies and user-data events the server sends. Binance semantics kept: error codes and
messages, order statuses, ``cummulativeQuoteQty``, taker fee on market orders, maker fee on
resting limit orders. One deliberate simplification: the fee is charged in the quote asset (as
when Binance fees are paid in BNB), so the base quantity a node holds equals what it bought.
State (balances, orders, trades, ids) is written to a small JSON file after every change so a
restarted simulator, like a real venue, still holds the position of a node that crashed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from hmm_strategy.atomic import atomic_write


class VenueError(Exception):
    """A Binance error answer: HTTP status, Binance code and message (and extra headers)."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code} {msg}")
        self.status, self.code, self.msg = status, code, msg
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


INSUFFICIENT = (400, -2010, "Account has insufficient balance for requested action.")
NO_SUCH_ORDER = (400, -2013, "Order does not exist.")
UNKNOWN_ORDER = (400, -2011, "Unknown order sent.")

FAULT_KINDS = (
    "insufficient_balance", "filter_failure", "timestamp", "rate_limit", "unanswered", "held",
    "lost_report",
)


def bad_counts(counts: dict[str, object]) -> dict[str, object]:
    """The entries of ``counts`` that are not whole numbers >= 0 (fault counts, Retry-After)."""
    return {k: v for k, v in counts.items() if type(v) is not int or v < 0}


@dataclass
class Symbol:
    """The one traded spot symbol and its exchange filters."""

    symbol: str = "BTCUSDT"
    base: str = "BTC"
    quote: str = "USDT"
    tick_size: str = "0.01"
    step_size: str = "0.00001"
    min_qty: str = "0.00001"
    max_qty: str = "9000.00000"
    min_notional: str = "5.00"
    maker_fee: str = "0.001"  # Binance spot's default 0.1% (VIP 0, no BNB discount)
    taker_fee: str = "0.001"

    def qty(self, value: Decimal) -> str:
        """A quantity as Binance writes it for this symbol (the step size's decimals)."""
        return str(value.quantize(Decimal(self.step_size)))

    def px(self, value: Decimal) -> str:
        return str(value.quantize(Decimal(self.tick_size)))

    def exchange_info(self, server_time: int) -> dict[str, Any]:
        """``GET /api/v3/exchangeInfo`` as Binance sends it (the fields the adapter decodes)."""
        return {
            "timezone": "UTC",
            "serverTime": server_time,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": self.symbol,
                    "status": "TRADING",
                    "baseAsset": self.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": self.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": False,
                    "ocoAllowed": False,
                    "quoteOrderQtyMarketAllowed": False,
                    "allowTrailingStop": False,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": self.tick_size,
                         "maxPrice": "1000000.00", "tickSize": self.tick_size},
                        {"filterType": "LOT_SIZE", "minQty": self.min_qty, "maxQty": self.max_qty,
                         "stepSize": self.step_size},
                        {"filterType": "NOTIONAL", "minNotional": self.min_notional,
                         "applyMinToMarket": True, "maxNotional": "9000000.00",
                         "applyMaxToMarket": False, "avgPriceMins": 5},
                    ],
                    "permissions": ["SPOT"],
                }
            ],
        }


@dataclass
class Order:
    orderId: int
    clientOrderId: str
    symbol: str
    side: str
    type: str
    timeInForce: str
    price: str
    origQty: str
    executedQty: str = "0.00000"
    cummulativeQuoteQty: str = "0"
    status: str = "NEW"
    time: int = 0
    updateTime: int = 0
    reserve_px: str = "0"  # the price its locked balance was reserved at (not shown)
    held: bool = False  # a "held" fault: accepted, matched only on release

    def view(self) -> dict[str, Any]:
        """The order as ``GET /api/v3/order`` returns it."""
        out = asdict(self)
        del out["reserve_px"], out["held"]
        out.update(
            stopPrice="0.00000000",
            icebergQty="0.00000000",
            isWorking=self.status in ("NEW", "PARTIALLY_FILLED"),
            workingTime=self.time,
            origQuoteOrderQty="0.00000000",
            orderListId=-1,
            selfTradePreventionMode="NONE",
        )
        return out


@dataclass
class Faults:
    """Faults queued for the next order requests (counts), and what has been injected."""

    pending: dict[str, int] = field(default_factory=dict)
    retry_after_secs: int = 1
    injected: dict[str, int] = field(default_factory=dict)

    def take(self, kind: str) -> bool:
        if self.pending.get(kind, 0) <= 0:
            return False
        self.pending[kind] -= 1
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return True


def _d(text: str | Decimal) -> Decimal:
    return Decimal(str(text))


def _s(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


class Exchange:
    """Balances, orders and trades of one account on one symbol (see module)."""

    def __init__(
        self,
        symbol: Symbol | None = None,
        balances: dict[str, str] | None = None,
        state_path: str | Path | None = None,
    ) -> None:
        self.symbol = symbol or Symbol()
        self.state_path = Path(state_path) if state_path else None
        self.free: dict[str, Decimal] = {}
        self.locked: dict[str, Decimal] = {}
        self.orders: dict[int, Order] = {}
        self.trades: list[dict[str, Any]] = []
        self.next_order_id = 1
        self.next_trade_id = 1
        self.faults = Faults()
        self.bid = self.ask = Decimal(0)  # no price before the first bar
        if self.state_path is not None and self.state_path.exists():
            self._load()
        else:
            for asset, amount in (balances or {"USDT": "100000"}).items():
                self.free[asset] = _d(amount)
            self.free.setdefault(self.symbol.base, Decimal(0))
            self.free.setdefault(self.symbol.quote, Decimal(0))
            self._save()

    # -- persistence --------------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_path is None:
            return
        state = {
            "free": {k: str(v) for k, v in self.free.items()},
            "locked": {k: str(v) for k, v in self.locked.items()},
            "orders": [asdict(o) for o in self.orders.values()],
            "trades": self.trades,
            "next_order_id": self.next_order_id,
            "next_trade_id": self.next_trade_id,
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_path, json.dumps(state, indent=1).encode())

    def _load(self) -> None:
        assert self.state_path is not None
        try:
            state = json.loads(self.state_path.read_text())
            self.free = {k: _d(v) for k, v in state["free"].items()}
            self.locked = {k: _d(v) for k, v in state["locked"].items()}
            self.orders = {o["orderId"]: Order(**o) for o in state["orders"]}
            self.trades = list(state["trades"])
            self.next_order_id = int(state["next_order_id"])
            self.next_trade_id = int(state["next_trade_id"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"simulator state {self.state_path} is unreadable: {exc}") from None

    # -- account ------------------------------------------------------------------------------

    def balances(self) -> list[dict[str, str]]:
        assets = sorted(set(self.free) | set(self.locked))
        return [
            {"asset": a, "free": _s(self.free.get(a, Decimal(0))),
             "locked": _s(self.locked.get(a, Decimal(0)))}
            for a in assets
        ]

    def account(self, now_ms: int) -> dict[str, Any]:
        """``GET /api/v3/account``."""
        fee_bp = int(_d(self.symbol.taker_fee) * 10_000)
        return {
            "makerCommission": fee_bp, "takerCommission": fee_bp, "buyerCommission": 0,
            "sellerCommission": 0, "canTrade": True, "canWithdraw": False, "canDeposit": False,
            "updateTime": now_ms, "accountType": "SPOT", "balances": self.balances(),
            "permissions": ["SPOT"],
        }

    def account_event(self, now_ms: int) -> dict[str, Any]:
        """The ``outboundAccountPosition`` user-data event (balances after a change)."""
        return {
            "e": "outboundAccountPosition", "E": now_ms, "u": now_ms,
            "B": [{"a": b["asset"], "f": b["free"], "l": b["locked"]} for b in self.balances()],
        }

    def trade_fee(self) -> list[dict[str, str]]:
        s = self.symbol
        return [{"symbol": s.symbol, "makerCommission": s.maker_fee,
                 "takerCommission": s.taker_fee}]

    # -- orders -------------------------------------------------------------------------------

    def find(self, order_id: str | None, client_id: str | None) -> Order:
        if order_id:
            order = self.orders.get(int(order_id))
        else:
            order = next((o for o in self.orders.values() if o.clientOrderId == client_id), None)
        if order is None:
            raise VenueError(*NO_SUCH_ORDER)
        return order

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")]

    def _check_filters(self, qty: Decimal, price: Decimal | None) -> None:
        s = self.symbol
        if qty < _d(s.min_qty) or qty > _d(s.max_qty) or qty % _d(s.step_size) != 0:
            raise VenueError(400, -1013, "Filter failure: LOT_SIZE")
        if price is not None and (price <= 0 or price % _d(s.tick_size) != 0):
            raise VenueError(400, -1013, "Filter failure: PRICE_FILTER")
        ref = price if price is not None else self.ask
        if ref > 0 and qty * ref < _d(s.min_notional):
            raise VenueError(400, -1013, "Filter failure: NOTIONAL")

    def new_order(self, p: dict[str, str], now_ms: int) -> tuple[dict[str, Any], list[dict]]:
        """``POST /api/v3/order``: the response and the user-data events it causes.

        An ``unanswered`` fault returns an ack for an order the venue then forgets: no event,
        and queries answer "Order does not exist", as after a lost request.
        """
        f = self.faults
        if f.take("rate_limit"):
            raise VenueError(
                429, -1003, "Too many requests; current limit is 100 orders per 10 SECOND.",
                {"Retry-After": str(f.retry_after_secs)},
            )
        if f.take("timestamp"):
            raise VenueError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if f.take("filter_failure"):
            raise VenueError(400, -1013, "Filter failure: NOTIONAL")
        if f.take("insufficient_balance"):
            raise VenueError(*INSUFFICIENT)
        if p.get("symbol") != self.symbol.symbol:
            raise VenueError(400, -1121, "Invalid symbol.")
        side, otype = p.get("side"), p.get("type")
        if side not in ("BUY", "SELL") or otype not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise VenueError(400, -1116, "Invalid orderType.")
        client_id = p.get("newClientOrderId") or f"sim-{self.next_order_id}"
        if any(o.clientOrderId == client_id for o in self.open_orders()):
            raise VenueError(400, -2010, "Duplicate order sent.")
        try:
            qty = _d(p["quantity"])
            price = _d(p["price"]) if otype != "MARKET" else None
        except (KeyError, ArithmeticError):
            raise VenueError(400, -1102, "Mandatory parameter 'quantity' was not sent.") from None
        if self.ask <= 0:
            raise VenueError(400, -1013, "Market is closed.")
        self._check_filters(qty, price)
        s = self.symbol
        order = Order(
            orderId=self.next_order_id, clientOrderId=client_id, symbol=self.symbol.symbol,
            side=side, type=otype, timeInForce=p.get("timeInForce", "GTC") if price else "GTC",
            price=s.px(price) if price else s.px(Decimal(0)), origQty=s.qty(qty), time=now_ms,
            updateTime=now_ms,
        )
        if f.take("unanswered"):
            self.next_order_id += 1
            return self._ack(order, now_ms), []
        marketable = price is None or (
            side == "BUY" and price >= self.ask or side == "SELL" and price <= self.bid
        )
        if otype == "LIMIT_MAKER" and marketable:
            raise VenueError(400, -2010, "Order would immediately match and take.")
        fill_px = (self.ask if side == "BUY" else self.bid) if marketable else price
        assert fill_px is not None
        reserve_px = fill_px if price is None else price
        self._reserve(side, qty, reserve_px)
        order.reserve_px = str(reserve_px)
        order.held = f.take("held")
        self.next_order_id += 1
        self.orders[order.orderId] = order
        events = [self._report(order, "NEW", now_ms)]
        if marketable and not order.held:
            events += self._fill(order, qty, fill_px, now_ms, maker=False)
        self._save()
        events.append(self.account_event(now_ms))
        return self._ack(order, now_ms), events

    def _ack(self, order: Order, now_ms: int) -> dict[str, Any]:
        """Binance's ACK response (the adapter acts on the user-data events, not on this)."""
        return {"symbol": order.symbol, "orderId": order.orderId, "orderListId": -1,
                "clientOrderId": order.clientOrderId, "transactTime": now_ms}

    def _reserve(self, side: str, qty: Decimal, price: Decimal) -> None:
        """Lock what the order may spend, or -2010 when the free balance is short."""
        s = self.symbol
        asset, amount = (s.quote, qty * price * (1 + _d(s.taker_fee))) if side == "BUY" else (
            s.base, qty)
        if self.free.get(asset, Decimal(0)) < amount:
            raise VenueError(*INSUFFICIENT)
        self.free[asset] -= amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount

    def _release(self, order: Order, qty: Decimal) -> None:
        """Unlock the reservation of ``qty`` unfilled units."""
        s = self.symbol
        if order.side == "BUY":
            asset, amount = s.quote, qty * _d(order.reserve_px) * (1 + _d(s.taker_fee))
        else:
            asset, amount = s.base, qty
        amount = min(amount, self.locked.get(asset, Decimal(0)))
        self.locked[asset] -= amount
        self.free[asset] = self.free.get(asset, Decimal(0)) + amount

    def _fill(
        self, order: Order, qty: Decimal, px: Decimal, now_ms: int, *, maker: bool
    ) -> list[dict]:
        s = self.symbol
        fee_rate = _d(s.maker_fee if maker else s.taker_fee)
        notional = qty * px
        fee = (notional * fee_rate).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
        self._release(order, qty)  # settle from free balances
        if order.side == "BUY":
            self.free[s.quote] -= notional + fee
            self.free[s.base] = self.free.get(s.base, Decimal(0)) + qty
        else:
            self.free[s.base] -= qty
            self.free[s.quote] = self.free.get(s.quote, Decimal(0)) + notional - fee
        order.executedQty = s.qty(_d(order.executedQty) + qty)
        order.cummulativeQuoteQty = _s(_d(order.cummulativeQuoteQty) + notional)
        order.status = "FILLED" if _d(order.executedQty) >= _d(order.origQty) else (
            "PARTIALLY_FILLED")
        order.updateTime = now_ms
        trade = {
            "symbol": s.symbol, "id": self.next_trade_id, "orderId": order.orderId,
            "orderListId": -1, "price": s.px(px), "qty": s.qty(qty), "quoteQty": _s(notional),
            "commission": _s(fee), "commissionAsset": s.quote, "time": now_ms,
            "isBuyer": order.side == "BUY", "isMaker": maker, "isBestMatch": True,
        }
        self.next_trade_id += 1
        self.trades.append(trade)
        return [self._report(order, "TRADE", now_ms, trade)]

    def cancel(self, p: dict[str, str], now_ms: int) -> tuple[dict[str, Any], list[dict]]:
        """``DELETE /api/v3/order``."""
        try:
            order = self.find(p.get("orderId"), p.get("origClientOrderId"))
        except VenueError:
            raise VenueError(*UNKNOWN_ORDER) from None
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise VenueError(*UNKNOWN_ORDER)
        events = [self._cancel(order, now_ms)]
        self._save()
        return order.view(), [*events, self.account_event(now_ms)]

    def cancel_all(self, p: dict[str, str], now_ms: int) -> tuple[list[dict], list[dict]]:
        """``DELETE /api/v3/openOrders``: every open order of the symbol cancelled (-2011 when
        there is none, as Binance answers)."""
        if p.get("symbol") != self.symbol.symbol:
            raise VenueError(400, -1121, "Invalid symbol.")
        orders = self.open_orders()
        if not orders:
            raise VenueError(*UNKNOWN_ORDER)
        events = [self._cancel(order, now_ms) for order in orders]
        self._save()
        return [o.view() for o in orders], [*events, self.account_event(now_ms)]

    def _cancel(self, order: Order, now_ms: int) -> dict[str, Any]:
        """Cancel an open order: its reservation released; its ``executionReport``."""
        self._release(order, _d(order.origQty) - _d(order.executedQty))
        order.status, order.updateTime = "CANCELED", now_ms
        return self._report(order, "CANCELED", now_ms)

    def release(self, now_ms: int) -> list[dict]:
        """End a "held" fault: held orders match now, at the current price (market orders) or
        as limit orders from the next bar on."""
        events: list[dict] = []
        for order in self.open_orders():
            if not order.held:
                continue
            order.held = False
            if order.type == "MARKET":
                remaining = _d(order.origQty) - _d(order.executedQty)
                px = self.ask if order.side == "BUY" else self.bid
                events += self._fill(order, remaining, px, now_ms, maker=False)
        self._save()
        if events:
            events.append(self.account_event(now_ms))
        return events

    def on_price(self, bid: Decimal, ask: Decimal, low: Decimal, high: Decimal, now_ms: int):
        """A new bar: resting limit orders the bar traded through fill at their price (maker)."""
        self.bid, self.ask = bid, ask
        events: list[dict] = []
        for order in self.open_orders():
            if order.held or order.type == "MARKET":
                continue
            px = _d(order.price)
            if order.side == "BUY" and low < px or order.side == "SELL" and high > px:
                remaining = _d(order.origQty) - _d(order.executedQty)
                events += self._fill(order, remaining, px, now_ms, maker=True)
        if events:
            self._save()
            events.append(self.account_event(now_ms))
        return events

    def _report(
        self, order: Order, exec_type: str, now_ms: int, trade: dict | None = None
    ) -> dict[str, Any]:
        """The ``executionReport`` user-data event."""
        return {
            "e": "executionReport", "E": now_ms, "s": order.symbol,
            "c": order.clientOrderId if exec_type != "CANCELED" else f"cancel-{order.orderId}",
            "S": order.side, "o": order.type, "f": order.timeInForce, "q": order.origQty,
            "p": order.price, "P": "0", "F": "0", "g": -1,
            "C": order.clientOrderId if exec_type == "CANCELED" else "",
            "x": exec_type, "X": order.status, "r": "NONE", "i": order.orderId,
            "l": trade["qty"] if trade else "0", "z": order.executedQty,
            "L": trade["price"] if trade else "0",
            "n": trade["commission"] if trade else "0",
            "N": trade["commissionAsset"] if trade else None,
            "T": now_ms, "t": trade["id"] if trade else -1, "I": now_ms,
            "w": order.status in ("NEW", "PARTIALLY_FILLED"),
            "m": bool(trade and trade["isMaker"]), "M": False, "O": order.time,
            "Z": order.cummulativeQuoteQty,
            "Y": _s(_d(trade["quoteQty"])) if trade else "0", "Q": "0",
            "W": order.time, "V": "NONE",
        }


def now_ms() -> int:
    return int(time.time() * 1000)
