"""Venue wiring: NautilusTrader's own Binance, Bybit and IB adapters, sandbox paper trading,
and an offline replay feed, all built from one :class:`VenueSettings`.

Names are imported lazily so ``venues.settings`` stays importable without NautilusTrader.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VenueSettings": "venues.settings",
    "IBSettings": "venues.settings",
    "ReplaySettings": "venues.settings",
    "load_venue_settings": "venues.settings",
    "VenueConfigError": "venues.errors",
    "NodeStartError": "venues.errors",
    "VenueClients": "venues.builders",
    "build_venue_clients": "venues.builders",
    "build_all_venue_clients": "venues.builders",
    "build_trading_node_config": "venues.builders",
    "build_trading_node": "venues.builders",
    "venue_factories": "venues.builders",
    "check_node_started": "venues.runtime",
    "wait_until_started": "venues.runtime",
    "run_node": "venues.runtime",
    "REPLAY_DONE_TOPIC": "venues.replay",
    "ReplayDone": "venues.replay",
    "replay_finished": "venues.replay",
    "replay_clients": "venues.replay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'venues' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
