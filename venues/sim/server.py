"""The simulated venue's network side: Binance spot REST, market streams and the WebSocket API.

One aiohttp application on 127.0.0.1 serves what NautilusTrader 1.231.0's Binance spot adapter
calls (found by reading ``nautilus_trader/adapters/binance`` and by running it against this):

* REST ``/api/v3/``: ``ping``, ``time``, ``exchangeInfo``, ``klines``, ``ticker/bookTicker``,
  signed ``account``, ``order`` (POST new, GET query, DELETE cancel), ``openOrders`` (GET, DELETE),
  ``allOrders``, ``myTrades``, and ``/sapi/v1/asset/tradeFee`` (instrument fees, live env only).
* market streams ``/stream?streams=...`` (+ ``SUBSCRIBE``/``UNSUBSCRIBE``): ``<sym>@kline_<i>``,
  ``<sym>@trade``, ``<sym>@aggTrade``, ``<sym>@bookTicker``, wrapped as ``{"stream", "data"}``.
* the WebSocket API ``/ws-api/v3`` that the adapter uses for user data instead of listen keys:
  ``session.logon`` (HMAC-signed), ``userDataStream.subscribe``/``unsubscribe``; events
  (``executionReport``, ``outboundAccountPosition``) arrive as ``{"subscriptionId", "event"}``.
* ``/sim/state`` and ``/sim/faults``: the operator's (and tests') view and fault switch.

Signed requests are checked like Binance does: API key header, HMAC-SHA256 of the query string,
``timestamp`` within ``recvWindow`` of the simulator's clock (-1021 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from venues.sim.exchange import FAULT_KINDS, Exchange, Symbol, VenueError, bad_counts, now_ms
from venues.sim.feed import Timeline, load_series

log = logging.getLogger("venues.sim")


@dataclass
class SimConfig:
    """What the simulated venue serves, and the keys it accepts."""

    api_key: str
    api_secret: str
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (tests); see SimVenue.port
    source: str = "synthetic"  # synthetic | csv
    path: str | None = None
    format: str | None = None
    n_bars: int = 2_000
    seed: int = 7
    interval: str = "1s"
    history_bars: int = 500
    speed: float = 0.0  # bars per second; 0 = real time
    # publish the first live bar once a kline stream is open and, when history bars are served,
    # once the klines (history) requests have gone quiet for 0.5 s (at most 10 s): a node's warm
    # start then gets the same history on every run, whatever order its requests go out in
    wait_for_subscriber: bool = True
    balances: dict[str, str] = field(default_factory=lambda: {"USDT": "100000"})
    state_path: str | None = None
    faults: dict[str, int] = field(default_factory=dict)
    retry_after_secs: int = 1
    symbol: Symbol = field(default_factory=Symbol)


class SimVenue:
    """Start with ``await venue.start()`` (or ``python -m venues.sim``), stop with ``stop()``."""

    def __init__(self, config: SimConfig) -> None:
        if config.host != "127.0.0.1":
            raise ValueError("the simulated venue listens on 127.0.0.1 only")
        self.config = config
        self.exchange = Exchange(config.symbol, config.balances, config.state_path)
        self.set_faults(config.faults, config.retry_after_secs)
        rows = load_series(config.source, path=config.path, n_bars=config.n_bars,
                           seed=config.seed, fmt=config.format)
        self.timeline = Timeline(rows, interval=config.interval, history_bars=config.history_bars,
                                 speed=config.speed, tick=config.symbol.tick_size)
        self.exchange.bid, self.exchange.ask = self._quote(
            self.timeline.bars[self.timeline.published - 1]
        )
        self.requests: Counter[str] = Counter()
        self._streams: dict[web.WebSocketResponse, set[str]] = {}
        self._sessions: dict[web.WebSocketResponse, dict[str, Any]] = {}
        self._subscribed = asyncio.Event()
        self._last_history_request: float | None = None  # loop time of the last klines request
        self._runner: web.AppRunner | None = None
        self._feed: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = config.port

    # -- lifecycle ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/ticker/bookTicker", self._book_ticker)
        r.add_get("/api/v3/account", self._account)
        r.add_post("/api/v3/order", self._new_order)
        r.add_get("/api/v3/order", self._query_order)
        r.add_delete("/api/v3/order", self._cancel_order)
        r.add_get("/api/v3/openOrders", self._open_orders)
        r.add_delete("/api/v3/openOrders", self._cancel_open_orders)
        r.add_get("/api/v3/allOrders", self._all_orders)
        r.add_get("/api/v3/myTrades", self._my_trades)
        r.add_get("/sapi/v1/asset/tradeFee", self._trade_fee)
        r.add_get("/stream", self._market_ws)
        r.add_get("/ws-api/v3", self._ws_api)
        r.add_get("/sim/state", self._state)
        r.add_post("/sim/faults", self._faults)
        r.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # other threads schedule work on it
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._feed = asyncio.create_task(self._run_feed())
        log.info("simulated Binance spot venue on http://127.0.0.1:%s", self.port)

    async def stop(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
        for ws in [*self._streams, *self._sessions]:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def urls(self) -> dict[str, str]:
        """The adapter settings that point a node here."""
        base = f"127.0.0.1:{self.port}"
        return {"base_url_http": f"http://{base}", "base_url_ws": f"ws://{base}",
                "base_url_ws_api": f"ws://{base}/ws-api/v3"}

    def set_faults(self, faults: dict[str, int], retry_after_secs: int | None = None) -> None:
        if not isinstance(faults, dict):
            raise ValueError(f"faults must be an object of counts, got {type(faults).__name__}")
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)} (known: {FAULT_KINDS})")
        retry = {} if retry_after_secs is None else {"retry_after_secs": retry_after_secs}
        bad = bad_counts(faults) or bad_counts(retry)
        if bad:
            raise ValueError(
                f"fault counts and retry_after_secs must be whole numbers >= 0, got {bad}"
            )
        for kind, count in faults.items():
            self.exchange.faults.pending[kind] = count
        if retry_after_secs is not None:
            self.exchange.faults.retry_after_secs = retry_after_secs

    async def drop_connections(self) -> int:
        """Close every WebSocket (market streams and user-data sessions), as a venue drop does."""
        sockets = [*self._streams, *self._sessions]
        for ws in sockets:
            await ws.close(code=1011, message=b"simulated drop")
        self.exchange.faults.injected["ws_drop"] = (
            self.exchange.faults.injected.get("ws_drop", 0) + 1
        )
        return len(sockets)

    # -- the feed -----------------------------------------------------------------------------

    def _quote(self, bar) -> tuple[Decimal, Decimal]:
        """Bid and ask one tick around the bar's close."""
        tick = Decimal(self.config.symbol.tick_size)
        close = Decimal(bar.close)
        return close - tick, close + tick

    async def _run_feed(self) -> None:
        tl = self.timeline
        loop = asyncio.get_running_loop()
        if self.config.wait_for_subscriber:
            await self._subscribed.wait()
            give_up = loop.time() + 10.0
            while tl.published and loop.time() < give_up and (
                self._last_history_request is None
                or loop.time() - self._last_history_request < 0.5
            ):
                await asyncio.sleep(0.05)
        next_at = loop.time()
        while not tl.finished:
            next_at += 1.0 / tl.speed
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.publish_next()
        log.info("simulated venue: all %d bars published", len(tl.bars))

    async def publish_next(self) -> None:
        """Publish the next bar: its close as a trade and a book ticker, then the closed kline;
        resting limit orders it crosses fill first."""
        tl = self.timeline
        bar = tl.bars[tl.published]
        tl.published += 1
        bid, ask = self._quote(bar)
        t = tl.close_ms(bar)
        events = self.exchange.on_price(bid, ask, Decimal(bar.low), Decimal(bar.high), now_ms())
        await self._send_user_events(events)
        sym = self.config.symbol.symbol
        lower = sym.lower()
        n = tl.published
        trade = {"e": "trade", "E": t, "s": sym, "t": n, "p": bar.close, "q": bar.volume,
                 "T": t, "m": False, "M": True}
        agg = {"e": "aggTrade", "E": t, "s": sym, "a": n, "p": bar.close, "q": bar.volume,
               "f": n, "l": n, "T": t, "m": False, "M": True}
        size = self.config.symbol.qty(Decimal(10))
        book = {"u": n, "s": sym, "b": str(bid), "B": size, "a": str(ask), "A": size}
        k = {"t": bar.open_ms, "T": t, "s": sym, "i": tl.interval, "f": n, "L": n, "o": bar.open,
             "c": bar.close, "h": bar.high, "l": bar.low, "v": bar.volume, "n": 1, "x": True,
             "q": "0", "V": "0", "Q": "0", "B": "0"}
        kline = {"e": "kline", "E": t, "s": sym, "k": k}
        for name, data in ((f"{lower}@trade", trade), (f"{lower}@aggTrade", agg),
                           (f"{lower}@bookTicker", book), (f"{lower}@kline_{tl.interval}", kline)):
            await self._broadcast(name, data)

    async def _broadcast(self, stream: str, data: dict) -> None:
        payload = json.dumps({"stream": stream, "data": data})
        for ws, subs in list(self._streams.items()):
            if stream in subs and not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(payload)

    async def _send_user_events(self, events: list[dict]) -> None:
        for ws, session in list(self._sessions.items()):
            sub = session.get("subscription")
            if sub is None or ws.closed:
                continue
            for event in events:
                try:
                    await ws.send_str(json.dumps({"subscriptionId": sub, "event": event}))
                except ConnectionError:
                    break

    # -- request checks -----------------------------------------------------------------------

    def _count(self, request: web.Request) -> None:
        self.requests[f"{request.method} {request.path}"] += 1

    def _signed(self, request: web.Request) -> dict[str, str]:
        """The request's parameters once key, HMAC signature and timestamp are checked."""
        self._count(request)
        if request.headers.get("X-MBX-APIKEY") != self.config.api_key:
            raise VenueError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        raw = request.query_string
        payload, sep, signature = raw.rpartition("&signature=")
        if not sep:
            raise VenueError(400, -1102, "Mandatory parameter 'signature' was not sent.")
        expected = hmac.new(self.config.api_secret.encode(), payload.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise VenueError(400, -1022, "Signature for this request is not valid.")
        params = dict(request.query)
        self._check_timestamp(params)
        return params

    @staticmethod
    def _check_timestamp(params: dict[str, Any]) -> None:
        try:
            ts = int(params["timestamp"])
            window = int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'timestamp' was not sent.") from None
        now = now_ms()
        if ts > now + 1000 or now - ts > window:
            raise VenueError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    # -- REST ---------------------------------------------------------------------------------

    @staticmethod
    def _error(exc: VenueError) -> web.Response:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)

    async def _ping(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.json_response({"serverTime": now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.json_response(self.config.symbol.exchange_info(now_ms()))

    async def _klines(self, request: web.Request) -> web.Response:
        self._count(request)
        self._last_history_request = asyncio.get_running_loop().time()
        q = request.query
        if q.get("symbol") != self.config.symbol.symbol:
            return self._error(VenueError(400, -1121, "Invalid symbol."))
        if q.get("interval") != self.timeline.interval:
            return self._error(VenueError(400, -1120, "Invalid interval."))
        try:
            limit = min(int(q.get("limit", 500)), 1000)
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._error(VenueError(400, -1100, "Illegal characters found in parameter."))
        return web.json_response(self.timeline.klines(start, end, limit))

    async def _book_ticker(self, request: web.Request) -> web.Response:
        self._count(request)
        size = self.config.symbol.qty(Decimal(10))
        return web.json_response({"symbol": self.config.symbol.symbol,
                                  "bidPrice": str(self.exchange.bid), "bidQty": size,
                                  "askPrice": str(self.exchange.ask), "askQty": size})

    async def _account(self, request: web.Request) -> web.Response:
        try:
            self._signed(request)
        except VenueError as exc:
            return self._error(exc)
        return web.json_response(self.exchange.account(now_ms()))

    async def _trade_fee(self, request: web.Request) -> web.Response:
        try:
            self._signed(request)
        except VenueError as exc:
            return self._error(exc)
        return web.json_response(self.exchange.trade_fee())

    async def _new_order(self, request: web.Request) -> web.Response:
        try:
            params = self._signed(request)
            body, events = self.exchange.new_order(params, now_ms())
        except VenueError as exc:
            log.info("order refused: %s", exc)
            return self._error(exc)
        if events and params.get("side") == "BUY" and self.exchange.faults.take("lost_report"):
            await self.drop_connections()  # its user-data events are lost with the connection
        else:
            await self._send_user_events(events)
        return web.json_response(body)

    async def _query_order(self, request: web.Request) -> web.Response:
        try:
            p = self._signed(request)
            order = self.exchange.find(p.get("orderId"), p.get("origClientOrderId"))
        except VenueError as exc:
            return self._error(exc)
        return web.json_response(order.view())

    async def _cancel_order(self, request: web.Request) -> web.Response:
        return await self._book_command(request, self.exchange.cancel)

    async def _cancel_open_orders(self, request: web.Request) -> web.Response:
        return await self._book_command(request, self.exchange.cancel_all)

    async def _book_command(self, request: web.Request, command) -> web.Response:
        """A signed request that changes the book: the exchange's answer, its user-data events
        sent first."""
        try:
            body, events = command(self._signed(request), now_ms())
        except VenueError as exc:
            return self._error(exc)
        await self._send_user_events(events)
        return web.json_response(body)

    async def _open_orders(self, request: web.Request) -> web.Response:
        try:
            self._signed(request)
        except VenueError as exc:
            return self._error(exc)
        return web.json_response([o.view() for o in self.exchange.open_orders()])

    async def _all_orders(self, request: web.Request) -> web.Response:
        try:
            p = self._signed(request)
        except VenueError as exc:
            return self._error(exc)
        orders = sorted(self.exchange.orders.values(), key=lambda o: o.orderId)
        if "startTime" in p:
            orders = [o for o in orders if o.time >= int(p["startTime"])]
        if "endTime" in p:
            orders = [o for o in orders if o.time <= int(p["endTime"])]
        limit = min(int(p.get("limit", 500)), 1000)
        return web.json_response([o.view() for o in orders[-limit:]])

    async def _my_trades(self, request: web.Request) -> web.Response:
        try:
            p = self._signed(request)
        except VenueError as exc:
            return self._error(exc)
        trades = self.exchange.trades
        if "orderId" in p:
            trades = [t for t in trades if t["orderId"] == int(p["orderId"])]
        if "startTime" in p:
            trades = [t for t in trades if t["time"] >= int(p["startTime"])]
        if "endTime" in p:
            trades = [t for t in trades if t["time"] <= int(p["endTime"])]
        limit = min(int(p.get("limit", 500)), 1000)
        return web.json_response(trades[-limit:])

    async def _unknown(self, request: web.Request) -> web.Response:
        self._count(request)
        log.warning("simulated venue: no endpoint %s %s", request.method, request.path)
        return web.json_response({"code": -1000, "msg": "not simulated"}, status=404)

    # -- admin --------------------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        ex = self.exchange
        return web.json_response({
            "balances": ex.balances(),
            "open_orders": [o.view() for o in ex.open_orders()],
            "orders": len(ex.orders),
            "trades": len(ex.trades),
            "bars_published": self.timeline.published,
            "bars_total": len(self.timeline.bars),
            "faults_pending": ex.faults.pending,
            "faults_injected": ex.faults.injected,
            "requests": dict(self.requests),
            "sessions": sum(1 for s in self._sessions.values() if s["subscription"] is not None),
            "stream_sockets": len(self._streams),
        })

    async def _faults(self, request: web.Request) -> web.Response:
        """``{"<kind>": count, ..., "retry_after_secs": n, "ws_drop": true, "release": true}``:
        queue faults for the next orders, drop every WebSocket now, match held orders now."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError(f"the body must be a JSON object, got {type(body).__name__}")
            drop = bool(body.pop("ws_drop", False))
            release = bool(body.pop("release", False))
            retry_after = body.pop("retry_after_secs", None)
            self.set_faults(body, retry_after)
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if release:
            await self._send_user_events(self.exchange.release(now_ms()))
        dropped = await self.drop_connections() if drop else 0
        return web.json_response({"pending": self.exchange.faults.pending, "dropped": dropped})

    # -- WebSockets ---------------------------------------------------------------------------

    async def _market_ws(self, request: web.Request) -> web.WebSocketResponse:
        self._count(request)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        subs = {s for s in request.query.get("streams", "").split("/") if s}
        self._streams[ws] = subs
        self._note_subscriptions(subs)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                streams = set(req.get("params") or [])
                if req.get("method") == "SUBSCRIBE":
                    subs |= streams
                    self._note_subscriptions(streams)
                elif req.get("method") == "UNSUBSCRIBE":
                    subs -= streams
                await ws.send_str(json.dumps({"result": None, "id": req.get("id")}))
        finally:
            self._streams.pop(ws, None)
        return ws

    def _note_subscriptions(self, streams: set[str]) -> None:
        if any("@kline_" in s for s in streams):
            self._subscribed.set()

    async def _ws_api(self, request: web.Request) -> web.WebSocketResponse:
        self._count(request)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session: dict[str, Any] = {"authenticated": False, "subscription": None}
        self._sessions[ws] = session
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                reply = self._ws_api_call(session, req.get("method"), req.get("params") or {})
                self.requests[f"WS {req.get('method')}"] += 1
                await ws.send_str(json.dumps({"id": req.get("id"), **reply}))
        finally:
            self._sessions.pop(ws, None)
        return ws

    def _ws_api_call(self, session: dict, method: str | None, params: dict) -> dict[str, Any]:
        def error(status: int, code: int, msg: str) -> dict[str, Any]:
            return {"status": status, "error": {"code": code, "msg": msg}}

        if method == "session.logon":
            if params.get("apiKey") != self.config.api_key:
                return error(401, -2015, "Invalid API-key, IP, or permissions for action.")
            signed = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
            expected = hmac.new(self.config.api_secret.encode(), signed.encode(),
                                hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, str(params.get("signature", ""))):
                return error(400, -1022, "Signature for this request is not valid.")
            try:
                self._check_timestamp(params)
            except VenueError as exc:
                return error(exc.status, exc.code, exc.msg)
            session["authenticated"] = True
            return {"status": 200, "result": {"apiKey": self.config.api_key,
                                              "authorizedSince": now_ms(),
                                              "serverTime": now_ms()}}
        if method == "session.status":
            return {"status": 200, "result": {"apiKey": self.config.api_key
                                              if session["authenticated"] else None}}
        if not session["authenticated"]:
            return error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if method == "userDataStream.subscribe":
            session["subscription"] = 0
            return {"status": 200, "result": {"subscriptionId": 0}}
        if method == "userDataStream.unsubscribe":
            session["subscription"] = None
            return {"status": 200, "result": {}}
        if method == "session.logout":
            session.update(authenticated=False, subscription=None)
            return {"status": 200, "result": {}}
        return error(400, -1000, f"method {method!r} is not simulated")


def write_urls(venue: SimVenue, path: str | Path) -> None:
    """Where the running venue listens, for scripts that started it on a free port."""
    Path(path).write_text(json.dumps(venue.urls) + "\n")


class BackgroundVenue:
    """The venue on its own event loop in a daemon thread (tests, ``bench``): ``with
    BackgroundVenue(config) as venue: venue.urls``; talk to it over HTTP (``/sim/...``)."""

    def __init__(self, config: SimConfig) -> None:
        import threading

        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.venue: SimVenue | None = None

    def __enter__(self) -> SimVenue:
        self._thread.start()
        self.venue = SimVenue(self.config)
        asyncio.run_coroutine_threadsafe(self.venue.start(), self._loop).result(timeout=30)
        return self.venue

    def __exit__(self, *exc: object) -> None:
        if self.venue is not None:
            asyncio.run_coroutine_threadsafe(self.venue.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
