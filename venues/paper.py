"""Price feed for paper trading on a real venue.

NautilusTrader's sandbox execution client matches orders only against quotes/trades it sees on
``data.*.{venue}.*``; it ignores bars. A bar-driven strategy subscribes to bars only, so nothing
would ever reach the sandbox and its market orders would be rejected ("no market"). This actor
subscribes to the venue's quotes (or trades) for each traded instrument; the data engine then
publishes them on the topics the sandbox listens to. It needs no handlers of its own.
``venues.builders`` adds it automatically in paper mode on a real venue.
"""

from __future__ import annotations

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig, ImportableActorConfig
from nautilus_trader.model.identifiers import InstrumentId


class PaperPriceFeedConfig(ActorConfig, frozen=True):
    """Instruments whose prices the sandbox must see, and whether to use quotes or trades."""

    instrument_ids: tuple[str, ...] = ()
    feed: str = "quotes"  # "quotes" | "trades"


class PaperPriceFeed(Actor):
    """Subscribes to quotes or trades so the sandbox execution client has a market to fill in."""

    def __init__(self, config: PaperPriceFeedConfig) -> None:
        super().__init__(config)
        if config.feed not in ("quotes", "trades"):
            raise ValueError(
                f"PaperPriceFeedConfig.feed must be 'quotes' or 'trades', was {config.feed!r}"
            )
        self._ids = [InstrumentId.from_str(i) for i in config.instrument_ids]
        self._feed = config.feed

    def on_start(self) -> None:
        for instrument_id in self._ids:
            if self._feed == "quotes":
                self.subscribe_quote_ticks(instrument_id)
            else:
                self.subscribe_trade_ticks(instrument_id)


def paper_price_feed_actor(
    instrument_ids: list[str],
    feed: str,
    name: str,
) -> ImportableActorConfig:
    """Importable config of the paper price feed actor (id ``PaperPriceFeed-<name>``)."""
    return ImportableActorConfig(
        actor_path="venues.paper:PaperPriceFeed",
        config_path="venues.paper:PaperPriceFeedConfig",
        config={
            "instrument_ids": list(instrument_ids),
            "feed": feed,
            "component_id": f"PaperPriceFeed-{name}",
        },
    )
