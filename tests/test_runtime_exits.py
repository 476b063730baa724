"""``venues.runtime.run_node`` reads how the node's run task ended (issue 11).

The real-node cases (a strategy or actor failing in ``on_start``) are in
``test_node_start_failures.py``; here a stand-in node drives the three endings that are hard to
provoke in a real one at a chosen moment: the run task fails while the trader is still STARTING,
fails after the trader ran, or ends normally. Only the attributes ``run_node`` uses are provided.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from nautilus_trader.common.enums import ComponentState

from venues.errors import NodeRunError, NodeStartError
from venues.runtime import run_node


class StandInNode:
    """The part of ``TradingNode`` that ``run_node`` touches; ``run_async`` follows a script."""

    def __init__(self, script: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._script = script
        self._running = False
        self.disposed = False
        engine = SimpleNamespace(_clients={}, check_connected=lambda: True)
        self.kernel = SimpleNamespace(
            trader=SimpleNamespace(state=ComponentState.READY, strategies=lambda: []),
            data_engine=engine,
            exec_engine=engine,
            portfolio=SimpleNamespace(initialized=True),
        )
        self._config = SimpleNamespace(
            timeout_connection=5.0,
            timeout_reconciliation=5.0,
            timeout_portfolio=5.0,
            timeout_shutdown=5.0,
        )
        self.bars = 0

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_running(self) -> bool:
        return self._running

    async def run_async(self) -> None:
        self._running = True
        trader = self.kernel.trader
        trader.state = ComponentState.STARTING
        await asyncio.sleep(0)
        if self._script == "fail_on_start":  # a strategy's on_start raised: trader stays STARTING
            raise FileNotFoundError("model artifact 'm.json': file not found")
        trader.state = ComponentState.RUNNING
        while self._running:
            self.bars += 1
            if self._script == "fail_later" and self.bars == 3:
                raise RuntimeError("feed handler crashed")
            await asyncio.sleep(0.01)

    async def stop_async(self) -> None:
        self._running = False
        self.kernel.trader.state = ComponentState.STOPPED

    def dispose(self) -> None:
        self.disposed = True
        self._loop.close()


def test_start_failure_names_the_cause_and_is_not_counted_as_started() -> None:
    node = StandInNode("fail_on_start")
    with pytest.raises(NodeStartError, match="FileNotFoundError: model artifact 'm.json'"):
        run_node(node, max_runtime_secs=30)
    assert node.disposed


def test_a_failure_after_start_is_a_node_run_error() -> None:
    node = StandInNode("fail_later")
    reports: list[int] = []
    with pytest.raises(NodeRunError, match="RuntimeError: feed handler crashed"):
        run_node(node, max_runtime_secs=30, before_dispose=lambda: reports.append(node.bars))
    assert reports == [3], "reports are still written after a failure"
    assert node.disposed


def test_a_normal_stop_raises_nothing() -> None:
    node = StandInNode("ok")
    run_node(node, stop_when=lambda: node.bars >= 5)
    assert node.bars >= 5 and node.disposed
