"""``venues.runtime.run_node`` reads how the node's run task ended (issue 11).

The real-node cases (a strategy or actor failing in ``on_start``) are in
``test_node_start_failures.py``; here a stand-in node drives the three endings that are hard to
provoke in a real one at a chosen moment: the run task fails while the trader is still STARTING,
fails after the trader ran, or ends normally. Only the attributes ``run_node`` uses are provided.
"""

from __future__ import annotations

import asyncio
import os
import signal
from types import SimpleNamespace

import pytest
from nautilus_trader.common.enums import ComponentState

from venues.errors import NodeInterrupted, NodeRunError, NodeStartError
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
            msgbus=SimpleNamespace(subscribe=lambda *args, **kwargs: None),
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
        if self._script == "slow_start":  # connecting, reconciling, warming up
            await asyncio.sleep(30)
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


def test_a_signal_during_the_start_stops_the_node_on_the_same_path() -> None:
    """Ctrl-C while the node still starts: the wait for the start ends at once, the node is
    stopped and disposed, and the caller learns it was interrupted (exit 130 in the CLI)."""
    node = StandInNode("slow_start")
    node.kernel.logger = SimpleNamespace(warning=lambda msg: None)
    node._loop.call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
    with pytest.raises(NodeInterrupted, match="before the node started trading"):
        run_node(node, max_runtime_secs=30)
    assert node.disposed and not node.is_running()


def test_a_signal_while_running_stops_like_the_duration() -> None:
    node = StandInNode("ok")
    node.kernel.logger = SimpleNamespace(warning=lambda msg: None)
    node._loop.call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)
    run_node(node, max_runtime_secs=30)
    assert node.bars > 0 and node.disposed
