"""A Binance-protocol spot venue on 127.0.0.1, for proving the live path end to end.

NautilusTrader's own Binance adapter connects to it through its ``base_url_*`` settings (venue
profile ``binance_sim``): the same REST, market-stream and WebSocket-API calls it makes to
Binance, signed and checked, with market and limit orders matched on replayed bars, Binance's
fee, user-data execution reports, state that survives a node crash, and faults on demand.
See ``venues/README.md`` ("Simulated Binance venue") and ``python -m venues.sim --help``.
"""

from venues.sim.exchange import FAULT_KINDS, Exchange, Symbol, VenueError
from venues.sim.server import SimConfig, SimVenue

__all__ = ["FAULT_KINDS", "Exchange", "SimConfig", "SimVenue", "Symbol", "VenueError"]
