"""Fault drills for the replay venue: an order path that times out or rejects on purpose.

``FaultySandboxExecutionClient`` is NautilusTrader's ``SandboxExecutionClient`` with two faults
it can inject by order number (1 = the first order the client receives in this run):

* unanswered: the order is marked submitted (it left the node) and then nothing comes back, as
  when a venue or the connection to it hangs. NautilusTrader's live execution engine notices the
  order in flight after ``inflight_check_threshold_ms``, queries the venue (the sandbox knows
  nothing, like a venue that lost it) and after ``inflight_check_retries`` resolves it as
  REJECTED with reason ``UNKNOWN`` (``live.exec_engine`` in the node config);
* rejected: the venue rejects the order at once.

Only the replay venue uses it, when ``replay.faults`` asks for order faults; nothing here can
reach a real venue.
"""

from __future__ import annotations

import asyncio

from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.live.factories import LiveExecClientFactory
from nautilus_trader.portfolio import PortfolioFacade

REJECT_REASON = "fault drill: rejected by the replay venue"


class FaultySandboxConfig(SandboxExecutionClientConfig, frozen=True, kw_only=True):
    """The sandbox's settings plus the order numbers to leave unanswered or to reject."""

    unanswered_orders: tuple[int, ...] = ()
    rejected_orders: tuple[int, ...] = ()


class FaultySandboxExecutionClient(SandboxExecutionClient):
    """``SandboxExecutionClient`` that drops or rejects chosen orders (see module)."""

    def __init__(self, *args, config: FaultySandboxConfig, **kwargs) -> None:
        super().__init__(*args, config=config, **kwargs)
        self._unanswered = set(config.unanswered_orders)
        self._rejected = set(config.rejected_orders)
        self._n_orders = 0

    def submit_order(self, command):
        self._n_orders += 1
        n, order = self._n_orders, command.order
        if n not in self._unanswered and n not in self._rejected:
            return super().submit_order(command)
        ts = self._clock.timestamp_ns()
        self.generate_order_submitted(
            order.strategy_id, order.instrument_id, order.client_order_id, ts
        )
        if n in self._rejected:
            self._log.warning(f"Fault drill: rejecting order #{n} {order.client_order_id}")
            self.generate_order_rejected(
                order.strategy_id, order.instrument_id, order.client_order_id, REJECT_REASON, ts
            )
        else:
            self._log.warning(f"Fault drill: order #{n} {order.client_order_id} gets no answer")
        return None


class FaultySandboxFactory(LiveExecClientFactory):
    """Creates :class:`FaultySandboxExecutionClient` instances for a ``TradingNode``."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: FaultySandboxConfig,
        portfolio: PortfolioFacade,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> FaultySandboxExecutionClient:
        return FaultySandboxExecutionClient(
            loop=loop, portfolio=portfolio, msgbus=msgbus, cache=cache, clock=clock, config=config
        )


# NautilusTrader's node builder passes the portfolio only to a factory *named*
# "SandboxLiveExecClientFactory" (live/node_builder.py, 1.231.0); this one needs it too.
FaultySandboxFactory.__name__ = "SandboxLiveExecClientFactory"
