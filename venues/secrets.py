"""Venue secrets and connection details, read ONLY from the environment.

Nothing here is ever stored in :class:`~venues.settings.VenueSettings`. Keys handed to the
adapters' configs are wrapped in :class:`Secret`, a ``str`` whose ``repr`` is masked, so
printing a ``TradingNodeConfig`` (or logging it) never shows them.

What each venue needs
---------------------
- binance_spot: paper needs nothing (public market data); live needs BINANCE_API_KEY and
  BINANCE_API_SECRET.
- binance_futures: paper needs nothing; live needs BINANCE_FUTURES_API_KEY and
  BINANCE_FUTURES_API_SECRET, falling back to BINANCE_API_KEY / BINANCE_API_SECRET when the
  futures pair is unset.
- bybit_linear: paper needs nothing; live needs BYBIT_API_KEY and BYBIT_API_SECRET.
- ib: both modes need a running, logged-in IB Gateway or TWS (IBKR_HOST, IBKR_PORT,
  IBKR_CLIENT_ID override the settings); live also needs IBKR_ACCOUNT_ID.
- replay: nothing (paper only).

With ``testnet=True`` put the testnet (or demo) keys in the same variables. IB in Docker
(``ib.gateway="docker"``) also needs TWS_USERNAME and TWS_PASSWORD.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from nautilus_trader.common.config import register_config_encoding

from venues.errors import VenueConfigError
from venues.settings import VenueSettings

IB_PORTS: dict[tuple[str, bool], int] = {
    ("gateway", True): 4002,  # IB Gateway, paper account
    ("gateway", False): 4001,  # IB Gateway, live account
    ("tws", True): 7497,  # Trader Workstation, paper account
    ("tws", False): 7496,  # Trader Workstation, live account
}


class Secret(str):
    """A string that never shows its value in ``repr`` (so not in config reprs or logs)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


# NautilusTrader JSON-encodes client configs (Component keeps `config.json_primitives()`, the
# streaming writer saves config.json); encode a Secret masked there too. No adapter reads a key
# back from that JSON (checked for Binance, Bybit, IB, sandbox in 1.231.0).
register_config_encoding(Secret, lambda _: "***")


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _required(name: str, why: str) -> Secret:
    value = _env(name)
    if value is None:
        raise VenueConfigError(f"environment variable {name} is not set ({why})")
    return Secret(value)


@dataclass(frozen=True, repr=False)
class ApiCredentials:
    """An API key pair; ``repr`` shows neither part."""

    api_key: Secret
    api_secret: Secret

    def __repr__(self) -> str:
        return "ApiCredentials(api_key='***', api_secret='***')"


def binance_credentials(futures: bool) -> ApiCredentials:
    """Binance keys for live execution; futures keys fall back to the spot variables."""
    why = "needed for live Binance execution"
    if futures:
        key = _env("BINANCE_FUTURES_API_KEY")
        secret = _env("BINANCE_FUTURES_API_SECRET")
        if key is None and secret is None:  # no futures pair at all: use the spot pair
            return ApiCredentials(
                _required("BINANCE_API_KEY", why + " (BINANCE_FUTURES_API_KEY unset)"),
                _required("BINANCE_API_SECRET", why + " (BINANCE_FUTURES_API_SECRET unset)"),
            )
        return ApiCredentials(
            _required("BINANCE_FUTURES_API_KEY", why),
            _required("BINANCE_FUTURES_API_SECRET", why),
        )
    return ApiCredentials(_required("BINANCE_API_KEY", why), _required("BINANCE_API_SECRET", why))


def bybit_credentials() -> ApiCredentials:
    """Bybit keys for live execution."""
    why = "needed for live Bybit execution"
    return ApiCredentials(_required("BYBIT_API_KEY", why), _required("BYBIT_API_SECRET", why))


@dataclass(frozen=True)
class IBConnection:
    """Where the IB Gateway/TWS listens, which API client id to use, and the account (live)."""

    host: str
    port: int | None  # None only for the dockerized gateway (the adapter picks the port)
    client_id: int
    account_id: str | None


def _int_env(name: str) -> int | None:
    raw = _env(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise VenueConfigError(
            f"environment variable {name} must be an integer, was {raw!r}"
        ) from None


def ib_connection(settings: VenueSettings) -> IBConnection:
    """IB host/port/client id (environment first, then settings) and, in live mode, the account."""
    ib = settings.ib
    host = _env("IBKR_HOST") or ib.host
    port = _int_env("IBKR_PORT") or ib.port
    client_id = _int_env("IBKR_CLIENT_ID")
    if client_id is None:
        client_id = ib.client_id
    if ib.gateway == "docker":
        port = None
        host = "127.0.0.1"
    elif port is None:
        port = IB_PORTS[(ib.gateway, settings.testnet)]
    account_id = None
    if settings.mode == "live":
        account_id = str(_required("IBKR_ACCOUNT_ID", "needed for live IB execution"))  # not secret
    return IBConnection(host=host, port=port, client_id=client_id, account_id=account_id)


def tws_login() -> tuple[Secret, Secret]:
    """TWS_USERNAME / TWS_PASSWORD for the dockerized IB Gateway."""
    why = "needed to log the dockerized IB Gateway in"
    return _required("TWS_USERNAME", why), _required("TWS_PASSWORD", why)


def _ib_secrets(settings: VenueSettings) -> None:
    ib_connection(settings)  # paper too: the gateway's host/port/client id
    if settings.ib.gateway == "docker":
        tws_login()


# What each venue kind needs from the environment before it may connect: (paper, live) checks.
SECRETS_BY_KIND: dict[str, tuple[Callable[[VenueSettings], object] | None, ...]] = {
    "replay": (None, None),
    "binance_spot": (None, lambda s: binance_credentials(futures=False)),
    "binance_futures": (None, lambda s: binance_credentials(futures=True)),
    "bybit_linear": (None, lambda s: bybit_credentials()),
    "ib": (_ib_secrets, _ib_secrets),
}


def require_secrets(settings: VenueSettings) -> None:
    """Fail fast (before any connection) if a secret the settings need is missing."""
    paper, live = SECRETS_BY_KIND[settings.kind]
    check = live if settings.mode == "live" else paper
    if check is not None:
        check(settings)


# ---------------------------------------------------------------------- API keys in the logs
MASKED_KEY = "***"


class MaskedKeyHttpClient:
    """Wraps an adapter's HTTP client so ``api_key_masked`` shows no character of the key.

    NautilusTrader 1.231.0's Bybit (and Binance) clients log ``REST API key SNTL...eyQ7`` at
    start: 8 of the key's characters in every log file. Everything else is delegated.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: object) -> None:
        self._inner = inner

    @property
    def api_key_masked(self) -> str | None:
        return MASKED_KEY if getattr(self._inner, "api_key_masked", None) else None

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def _plain_keys(config):
    """``config`` with its keys as plain ``str``: the clients get them from here, and Binance's
    WebSocket API client JSON-encodes the API key into ``session.logon`` with msgspec, which
    refuses a ``str`` subclass (``Secret``), so the user-data stream never started."""
    import msgspec

    keys = {
        name: str.__str__(value)
        for name in ("api_key", "api_secret")
        if isinstance(value := getattr(config, name, None), Secret)
    }
    return msgspec.structs.replace(config, **keys) if keys else config


def masked_key_factory(factory: type, module: str, getter: str) -> type:
    """A subclass of an adapter client factory whose clients get a :class:`MaskedKeyHttpClient`.

    The factory looks up ``module.getter`` (the cached HTTP client constructor) at call time; it
    is swapped only for the duration of ``create`` (node builds run in one thread).
    """
    import importlib

    mod = importlib.import_module(module)

    def create(*args, **kwargs):
        config = kwargs.get("config")
        if config is not None:  # the adapter sends the key itself: a plain str (_plain_keys)
            kwargs["config"] = _plain_keys(config)
        original = getattr(mod, getter)
        setattr(mod, getter, lambda *a, **k: MaskedKeyHttpClient(original(*a, **k)))
        try:
            return factory.create(*args, **kwargs)
        finally:
            setattr(mod, getter, original)

    return type(factory.__name__, (factory,), {"create": staticmethod(create)})
