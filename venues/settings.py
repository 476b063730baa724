"""One settings object that selects and configures a venue (no secrets in here, ever).

Secrets are read from the environment by :mod:`venues.secrets` at build time, so a
``VenueSettings`` can be logged, printed and committed to a YAML file safely.

Build from plain data (YAML/JSON) with :func:`load_venue_settings`, which reports unknown
fields and bad values as :class:`~venues.errors.VenueConfigError`. Direct construction runs
the same semantic checks in ``__post_init__``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec

from venues.errors import VenueConfigError

VenueKind = Literal["replay", "binance_spot", "binance_futures", "bybit_linear", "ib"]
Mode = Literal["paper", "live"]
ReplaySource = Literal["synthetic", "csv", "catalog"]
IBGateway = Literal["gateway", "tws", "docker"]
IBMarketData = Literal["realtime", "frozen", "delayed", "delayed_frozen"]

# Venue identifiers per kind. Spot and USDT-M futures need distinct venues in one node: the
# execution engine routes by venue and refuses two clients for Venue("BINANCE"). The Binance
# adapter (1.231.0) takes any `venue` in its configs, so futures live on BINANCE_FUTURES
# (instrument ids like BTCUSDT-PERP.BINANCE_FUTURES), the name NautilusTrader users commonly use.
DEFAULT_VENUES: dict[str, str | None] = {
    "binance_spot": "BINANCE",
    "binance_futures": "BINANCE_FUTURES",
    "bybit_linear": "BYBIT",
    "ib": None,  # IB is multi-venue: instruments keep their exchange venue (SPY.ARCA, ...)
    "replay": None,  # replay serves whatever venues its instrument ids name
}

_VENUE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # no '-': the node builder splits client names on it
_BALANCE = re.compile(r"^(?P<amount>\S+) (?P<ccy>[A-Z][A-Z0-9]{1,9})$")
_DOTTED_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _check_literal(value: object, literal: Any, field: str) -> None:
    allowed = get_args(literal)
    if value not in allowed:
        raise VenueConfigError(f"{field} must be one of {list(allowed)}, was {value!r}")


def parse_balance(text: str) -> tuple[Decimal, str]:
    """Parse ``"<amount> <CURRENCY>"`` (e.g. ``"100000 USDT"``) into a positive amount and code."""
    match = _BALANCE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise VenueConfigError(
            f"starting balance {text!r} is malformed: expected '<amount> <CURRENCY>', "
            "e.g. '100000 USDT'",
        )
    try:
        amount = Decimal(match["amount"])
    except InvalidOperation:
        raise VenueConfigError(f"starting balance {text!r}: amount is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise VenueConfigError(f"starting balance {text!r}: amount must be positive")
    from nautilus_trader.model.objects import MONEY_MAX, Currency

    if amount > Decimal(str(MONEY_MAX)):  # NautilusTrader's Money cannot hold more
        raise VenueConfigError(f"starting balance {text!r}: amount is above {MONEY_MAX:,.0f}")

    if Currency.from_str(match["ccy"], strict=True) is None:  # else a new, empty currency
        raise VenueConfigError(f"starting balance {text!r}: unknown currency {match['ccy']!r}")
    return amount, match["ccy"]


class IBSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Interactive Brokers connection options.

    ``IBKR_HOST`` / ``IBKR_PORT`` / ``IBKR_CLIENT_ID`` in the environment override ``host`` /
    ``port`` / ``client_id``. With ``port=None`` the port follows ``gateway`` and the venue's
    ``testnet`` flag: IB Gateway 4002 (paper) / 4001 (live), TWS 7497 (paper) / 7496 (live).
    ``gateway="docker"`` lets NautilusTrader start IB Gateway in Docker (needs the ``docker``
    Python package, a Docker daemon, and ``TWS_USERNAME`` / ``TWS_PASSWORD``).
    """

    host: str = "127.0.0.1"
    port: int | None = None
    client_id: int = 1
    gateway: IBGateway = "gateway"
    market_data_type: IBMarketData = "realtime"  # "delayed" works without data subscriptions
    use_regular_trading_hours: bool = True
    # The adapter's client retries the initial connection forever inside `node.build()` unless
    # IB_MAX_CONNECTION_ATTEMPTS is set; this value is applied to it during the build.
    max_connection_attempts: int = 1
    # Applied to the client after the build: 0 = keep reconnecting forever (adapter default).
    max_reconnect_attempts: int = 0
    connection_timeout_secs: int = 60
    request_timeout_secs: int = 60

    def __post_init__(self) -> None:
        _check_literal(self.gateway, IBGateway, "ib.gateway")
        _check_literal(self.market_data_type, IBMarketData, "ib.market_data_type")
        if self.port is not None and not 0 < self.port < 65536:
            raise VenueConfigError(f"ib.port must be in 1..65535, was {self.port}")
        if self.client_id < 0:
            raise VenueConfigError(f"ib.client_id must be >= 0, was {self.client_id}")
        if self.max_connection_attempts < 0 or self.max_reconnect_attempts < 0:
            raise VenueConfigError("ib.max_connection_attempts/max_reconnect_attempts must be >= 0")
        if self.connection_timeout_secs <= 0 or self.request_timeout_secs <= 0:
            raise VenueConfigError("ib timeouts must be positive")
        if self.gateway == "docker" and (self.host != "127.0.0.1" or self.port is not None):
            raise VenueConfigError("ib.gateway='docker' needs host='127.0.0.1' and port unset")


class Outage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The feed drops after ``after_bars`` published bars; the next ``bars`` bars are lost."""

    after_bars: int
    bars: int

    def __post_init__(self) -> None:
        if self.after_bars < 0 or self.bars <= 0:
            raise VenueConfigError(
                f"replay.faults.data_outages: after_bars must be >= 0 and bars > 0, was "
                f"after_bars={self.after_bars}, bars={self.bars}"
            )


class FaultDrill(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Venue faults the replay venue injects, to rehearse (and test) what the node does.

    ``data_outages``: the data feed disconnects and reconnects; bars published meanwhile are lost,
    as after a real websocket reconnect. ``unanswered_orders``: these submits (1 = the first order
    of the run) are acknowledged as sent but the venue never answers, a timeout that
    NautilusTrader's in-flight check resolves (``live.exec_engine``). ``rejected_orders``: these
    submits are rejected by the venue. ``unanswered_history``: history requests (a strategy's warm
    start) are never answered, as when a venue's kline request fails.
    """

    data_outages: list[Outage] = []
    unanswered_orders: list[int] = []
    rejected_orders: list[int] = []
    unanswered_history: bool = False

    def __post_init__(self) -> None:
        for name in ("unanswered_orders", "rejected_orders"):
            bad = [n for n in getattr(self, name) if n < 1]
            if bad:
                raise VenueConfigError(f"replay.faults.{name} are order numbers >= 1, got {bad}")


class ReplaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Offline bar replay options (``kind="replay"``).

    ``source``: ``synthetic`` calls ``generator`` (``"module:function"``, called as
    ``fn(n_bars=..., seed=...)`` and returning a polars frame with ``ts_event`` (bar close, ns),
    open, high, low, close, volume); ``csv`` reads ``path`` with ``marketdata.bars.load_bars``
    (``format`` is passed as ``fmt``); ``catalog`` reads the bar type from the ParquetDataCatalog
    at ``path``. ``bar_type`` names the replayed bar type when the caller passes none.
    ``speed`` is bars per second (0 = as fast as the event loop allows; every bar still waits
    until the engines have handled the previous one). ``trade_ticks`` publishes a trade at each
    bar close (same ts, before the bar) so the sandbox execution client, which ignores bars,
    fills at the close. ``history_bars``: the first N bars of each bar type are history, served
    to ``request_bars`` (a strategy's warm start) and never replayed live; ``"auto"`` = the most
    any strategy's warm start requests (``python -m hmm_strategy.live`` resolves it; 0 when no
    strategy warm-starts). More history than bars leaves all of them live (logged).
    """

    source: ReplaySource = "synthetic"
    path: str | None = None
    format: str | None = None
    bar_type: str | None = None
    generator: str = "hmm_strategy.synthetic:generate_regime_bars"
    seed: int = 7
    n_bars: int = 2_000
    max_bars: int | None = None
    history_bars: int | Literal["auto"] = 0
    speed: float = 0.0
    start_delay_secs: float = 0.0
    trade_ticks: bool = True
    faults: FaultDrill | None = None  # fault drills: outages, unanswered and rejected orders

    def __post_init__(self) -> None:
        _check_literal(self.source, ReplaySource, "replay.source")
        if self.source in ("csv", "catalog") and not self.path:
            raise VenueConfigError(f"replay.source={self.source!r} needs replay.path")
        if self.source == "synthetic" and not _DOTTED_CALLABLE.match(self.generator):
            raise VenueConfigError(
                "replay.generator must look like 'package.module:function', "
                f"was {self.generator!r}",
            )
        if self.n_bars <= 0:
            raise VenueConfigError(f"replay.n_bars must be positive, was {self.n_bars}")
        if isinstance(self.history_bars, bool) or (
            self.history_bars != "auto" and not self.history_bars >= 0
        ):
            raise VenueConfigError(
                f"replay.history_bars must be >= 0 or 'auto', was {self.history_bars!r}"
            )
        if self.max_bars is not None and self.max_bars <= 0:
            raise VenueConfigError(f"replay.max_bars must be positive, was {self.max_bars}")
        if not self.speed >= 0:  # also rejects NaN
            raise VenueConfigError(f"replay.speed must be >= 0 (bars per second), was {self.speed}")
        if not self.start_delay_secs >= 0:
            raise VenueConfigError(
                f"replay.start_delay_secs must be >= 0, was {self.start_delay_secs}",
            )


class VenueSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which venue to trade, in which mode; everything except secrets.

    ``mode="paper"``: the venue's own live data client + NautilusTrader's sandbox execution
    client (simulated fills against the venue's prices, ``starting_balances``); no orders ever
    reach the venue. ``mode="live"``: the venue's own execution client (needs API secrets).
    ``testnet=True`` points every connection at the test environment: Binance testnet,
    Bybit testnet (or each venue's demo-trading environment with ``demo=True``), the IB paper
    account port. ``account_type`` / ``oms_type`` / ``default_leverage`` configure the sandbox
    account (default account type: CASH for Binance spot, MARGIN otherwise).
    """

    kind: VenueKind = "replay"
    mode: Mode = "paper"
    testnet: bool = True
    demo: bool = False
    venue_name: str | None = None
    starting_balances: list[str] = msgspec.field(default_factory=lambda: ["100000 USDT"])
    account_type: Literal["CASH", "MARGIN"] | None = None
    oms_type: Literal["NETTING", "HEDGING"] = "NETTING"
    default_leverage: float = 1.0
    # Paper on a real venue: what the sandbox matches against (it ignores bars).
    paper_price_feed: Literal["quotes", "trades"] = "quotes"
    ib: IBSettings = msgspec.field(default_factory=IBSettings)
    replay: ReplaySettings = msgspec.field(default_factory=ReplaySettings)
    # Endpoint overrides, passed to the adapters' own settings of the same name (e.g. to run on
    # the simulated venue, venues/sim). Binance: base_url_http (REST), base_url_ws (market-data
    # streams), base_url_ws_api (the WebSocket API for orders/user data: the execution client's
    # `base_url_ws`), base_url_ws_stream (futures user-data stream). Bybit: base_url_http,
    # base_url_ws_private, base_url_ws_trade (its public market-data WebSocket has no override).
    base_url_http: str | None = None
    base_url_ws: str | None = None
    base_url_ws_api: str | None = None
    base_url_ws_stream: str | None = None
    base_url_ws_private: str | None = None
    base_url_ws_trade: str | None = None

    def __post_init__(self) -> None:
        _check_literal(self.kind, VenueKind, "kind")
        _check_literal(self.mode, Mode, "mode")
        _check_literal(self.account_type, Literal["CASH", "MARGIN", None], "account_type")
        _check_literal(self.oms_type, Literal["NETTING", "HEDGING"], "oms_type")
        _check_literal(self.paper_price_feed, Literal["quotes", "trades"], "paper_price_feed")
        if self.kind == "replay" and self.mode == "live":
            raise VenueConfigError("kind='replay' has no live execution: use mode='paper'")
        if self.demo and not self.testnet:
            raise VenueConfigError("demo=True selects a test environment: also set testnet=True")
        if self.demo and self.kind not in ("binance_spot", "binance_futures", "bybit_linear"):
            raise VenueConfigError(
                f"demo=True is only available for Binance and Bybit, not {self.kind}"
            )
        if self.venue_name is not None:
            if self.kind not in ("binance_spot", "binance_futures"):
                raise VenueConfigError(
                    f"venue_name can only be changed for Binance kinds, not {self.kind!r}",
                )
            if not _VENUE_NAME.match(self.venue_name):
                raise VenueConfigError(
                    "venue_name must be upper-case letters, digits and '_', "
                    f"was {self.venue_name!r}",
                )
        if not isinstance(self.starting_balances, list) or not self.starting_balances:
            raise VenueConfigError("starting_balances needs at least one '<amount> <CURRENCY>'")
        codes = [parse_balance(b)[1] for b in self.starting_balances]
        if len(set(codes)) != len(codes):
            raise VenueConfigError(f"starting_balances lists a currency twice: {codes}")
        if not self.default_leverage > 0:
            raise VenueConfigError(
                f"default_leverage must be positive, was {self.default_leverage}"
            )
        if not isinstance(self.ib, IBSettings) or not isinstance(self.replay, ReplaySettings):
            raise VenueConfigError("ib/replay must be IBSettings/ReplaySettings")
        self._check_urls()

    def _check_urls(self) -> None:
        binance = ("base_url_ws", "base_url_ws_api", "base_url_ws_stream")
        bybit = ("base_url_ws_private", "base_url_ws_trade")
        allowed = {
            "binance_spot": ("base_url_http", *binance),
            "binance_futures": ("base_url_http", *binance),
            "bybit_linear": ("base_url_http", *bybit),
        }.get(self.kind, ())
        for name in ("base_url_http", *binance, *bybit):
            url = getattr(self, name)
            if url is None:
                continue
            if name not in allowed:
                raise VenueConfigError(f"{name} cannot be set for kind={self.kind!r}")
            schemes = ("http://", "https://") if name == "base_url_http" else ("ws://", "wss://")
            if not isinstance(url, str) or not url.startswith(schemes) or " " in url:
                allowed_schemes = " or ".join(schemes)
                raise VenueConfigError(f"{name} must start with {allowed_schemes}, was {url!r}")

    @property
    def urls_overridden(self) -> bool:
        """True when any endpoint is overridden (the banner and the data source say so)."""
        return any(
            getattr(self, n) is not None
            for n in ("base_url_http", "base_url_ws", "base_url_ws_api", "base_url_ws_stream",
                      "base_url_ws_private", "base_url_ws_trade")
        )

    @property
    def venue(self) -> str | None:
        """The venue this settings object trades (``None``: the instrument ids' venues)."""
        return self.venue_name or DEFAULT_VENUES[self.kind]

    @property
    def data_source_id(self) -> str:
        """What a strategy's saved state belongs to: venue kind, environment, paper or live and,
        for the replay venue, which bars (pacing and drills are left out: a restart may change
        them). A checkpoint written under another id is never resumed."""
        env = "demo" if self.demo else ("testnet" if self.testnet else "mainnet")
        parts = [self.kind, self.venue or "", env, self.mode]
        if self.base_url_http is not None:  # another venue behind the same adapter (e.g. sim)
            parts.append(self.base_url_http)
        if self.kind == "replay":
            r = self.replay
            where = str(Path(r.path).resolve()) if r.path else r.generator
            parts += [r.source, where, r.format or "", r.bar_type or "", f"seed={r.seed}"]
        return ":".join(parts)

    @property
    def sandbox_account_type(self) -> str:
        """Account type of the sandbox (paper) account."""
        return self.account_type or ("CASH" if self.kind == "binance_spot" else "MARGIN")


def load_venue_settings(data: Mapping[str, Any] | VenueSettings) -> VenueSettings:
    """Build ``VenueSettings`` from plain data (e.g. a parsed YAML mapping), strictly.

    Unknown fields, wrong types and bad values all raise ``VenueConfigError`` naming the field.
    """
    if isinstance(data, VenueSettings):
        return data
    if not isinstance(data, Mapping):
        raise VenueConfigError(f"venue settings must be a mapping, was {type(data).__name__}")
    try:
        return msgspec.convert(dict(data), VenueSettings)
    except msgspec.ValidationError as e:
        raise VenueConfigError(f"invalid venue settings: {e}") from None
