"""Start, watch and stop a ``TradingNode`` without hanging silently.

Trap (nautilus_trader 1.231.0): when a client cannot connect, ``run_async`` waits
``timeout_connection``, logs a warning, returns from ``kernel.start_async`` WITHOUT starting the
trader, then logs "RUNNING" and keeps the event loop alive forever. Strategies never start and
nothing fails. :func:`check_node_started` turns that state into a :class:`NodeStartError`
naming the clients that did not connect; :func:`run_node` uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable

from nautilus_trader.common.enums import ComponentState
from nautilus_trader.live.node import TradingNode

from venues.errors import NodeInterrupted, NodeRunError, NodeStartError

START_GRACE_SECS = 5.0  # beyond the node's own connection/reconciliation/portfolio timeouts


def _disconnected(engine: object) -> list[str]:
    clients = getattr(engine, "_clients", {})  # readonly attribute in 1.231.0
    return sorted(str(cid) for cid, c in clients.items() if not c.is_connected)


# A trader whose start failed (a strategy's on_start raised) stays STARTING for good: that is
# not started, whatever the node's own state says.
_NOT_STARTED = (
    ComponentState.PRE_INITIALIZED,
    ComponentState.READY,
    ComponentState.STARTING,
    ComponentState.FAULTING,
    ComponentState.FAULTED,
)


def trader_has_started(node: TradingNode) -> bool:
    """True once the trader runs (or has stopped after running); False while it is starting or
    stuck in STARTING after a strategy or actor failed to start."""
    return node.kernel.trader.state not in _NOT_STARTED


def task_failure(task: asyncio.Task | None) -> BaseException | None:
    """The exception a finished task ended with (reading it also silences asyncio's
    "exception was never retrieved")."""
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_node_started(node: TradingNode) -> None:
    """Raise :class:`NodeStartError` if the node's trader (strategies, actors) never started."""
    if trader_has_started(node):
        return
    data = _disconnected(node.kernel.data_engine)
    exe = _disconnected(node.kernel.exec_engine)
    detail = []
    if data:
        detail.append(f"data clients not connected: {data}")
    if exe:
        detail.append(f"execution clients not connected: {exe}")
    if not node.kernel.portfolio.initialized:
        detail.append("portfolio not initialized (no account state from the execution client)")
    hint = "; ".join(detail) or "execution state reconciliation failed or is still running"
    raise NodeStartError(
        f"trading node is not trading: the trader did not start ({hint}). Check network access, "
        "API keys, testnet flags and, for IB, that IB Gateway/TWS is running with the API "
        "enabled (see venues/README.md).",
    )


def start_timeout_secs(node: TradingNode) -> float:
    """How long the node may legitimately take to start (its own timeouts plus a grace period)."""
    cfg = node._config  # TradingNode keeps its config private in 1.231.0
    return (
        cfg.timeout_connection
        + cfg.timeout_reconciliation
        + cfg.timeout_portfolio
        + START_GRACE_SECS
    )


async def wait_until_started(
    node: TradingNode,
    timeout_secs: float | None = None,
    run_task: asyncio.Task | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> None:
    """Wait until the trader runs; raise :class:`NodeStartError` when it does not in time, or
    :class:`NodeInterrupted` when ``stop_requested()`` turns true first (a signal).

    Gives up early when the clients are still not connected shortly after the node's own
    ``timeout_connection`` (the kernel has given up by then too).
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    deadline = now + (timeout_secs if timeout_secs is not None else start_timeout_secs(node))
    connect_deadline = min(deadline, now + node._config.timeout_connection + 1.0)
    kernel = node.kernel
    while not trader_has_started(node):
        if run_task is not None and run_task.done():
            break
        if stop_requested is not None and stop_requested():
            raise NodeInterrupted("interrupted before the node started trading")
        now = loop.time()
        if now >= deadline:
            break
        connected = kernel.data_engine.check_connected() and kernel.exec_engine.check_connected()
        if now >= connect_deadline and not connected:
            break
        await asyncio.sleep(0.05)
    failure = task_failure(run_task)
    if failure is not None and not trader_has_started(node):
        raise NodeStartError(f"trading node failed to start: {_cause(failure)}") from failure
    check_node_started(node)


def run_node(
    node: TradingNode,
    *,
    stop_when: Callable[[], bool] | None = None,
    max_runtime_secs: float | None = None,
    start_timeout: float | None = None,
    poll_secs: float = 0.05,
    before_dispose: Callable[[], None] | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run a built node until ``stop_when()`` is true, ``max_runtime_secs`` pass, or a signal
    stops it; then stop it, call ``before_dispose()`` (e.g. to write reports) and dispose it.
    ``on_started()`` runs once the node is running (its failure stops the node and raises).
    Raises :class:`NodeStartError` if it never starts (with the cause when a strategy or actor
    raised) and :class:`NodeRunError` if the node's run task ended on an exception later.

    The node's event loop must not be running (call from synchronous code).
    """
    loop = node.get_event_loop()
    if loop is None or loop.is_running():
        raise RuntimeError("run_node needs the node's event loop to be idle")

    shutdowns = record_shutdowns(node)

    async def drive() -> None:
        run_task = loop.create_task(node.run_async(), name="node_run")
        signals = stop_on_signals(node, loop)  # before the start: one stop path for every signal
        try:
            await wait_until_started(node, start_timeout, run_task, lambda: bool(signals))
            # what the start built (instruments, components, the model) lives as long as the
            # node: out of the collector's sight, a full collection walks only what the run adds
            # (full collections paused the event loop up to 160 ms in bench section 4c)
            gc.freeze()
            if on_started is not None:
                on_started()
            started = loop.time()
            while node.is_running() and not run_task.done() and not signals and not shutdowns:
                if stop_when is not None and stop_when():
                    break
                if max_runtime_secs is not None and loop.time() - started >= max_runtime_secs:
                    break
                await asyncio.sleep(poll_secs)
        finally:
            before_stop = len(shutdowns)  # sent by a component while the node ran
            if node.is_running() and not shutdowns:
                await exit_markets(node)
            if shutdowns and not node.kernel.trader.is_running:
                await wait_for_kernel_stop(node)  # the kernel's own stop: never a second one
            if node.is_running():
                await node.stop_async()
            if not run_task.done():
                try:
                    await asyncio.wait_for(run_task, timeout=node._config.timeout_shutdown)
                except (TimeoutError, asyncio.CancelledError):
                    run_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await run_task
                except Exception:  # noqa: BLE001, S110 - read below via task_failure
                    pass
        failure = task_failure(run_task)
        if failure is not None:
            raise NodeRunError(f"trading node stopped on an error: {_cause(failure)}") from failure
        if shutdowns:
            what = "shut itself down" if before_stop else "failed while stopping"
            raise NodeRunError(f"trading node {what}: {shutdowns[0]}")

    try:
        loop.run_until_complete(drive())
    finally:
        _cancel_leftover_tasks(loop)
        try:
            if before_dispose is not None:
                before_dispose()  # the node is stopped; its cache is still readable
        finally:
            node.dispose()


def record_shutdowns(node: TradingNode) -> list[str]:
    """Every ``ShutdownSystem`` sent to this trader (an engine whose queue raised, with
    ``graceful_shutdown_on_exception``; an actor calling ``shutdown_system``), as ``"<component>:
    <reason>"``. The kernel then stops at once: the strategies send their closing orders once, in
    ``on_stop``, without :func:`exit_markets`' wait and retry. That is a failure, never a clean stop
    (:func:`run_node` raises :class:`NodeRunError`); our own stop path sends none."""
    received: list[str] = []
    trader_id = getattr(node, "trader_id", None)

    def on_shutdown(command) -> None:
        if trader_id is not None and command.trader_id != trader_id:
            return  # the kernel ignores it too
        received.append(f"{command.component_id}: {command.reason or 'no reason given'}")

    node.kernel.msgbus.subscribe("commands.system.shutdown", on_shutdown, priority=100)
    return received


async def wait_for_kernel_stop(node: TradingNode, poll_secs: float = 0.05) -> None:
    """Wait for the stop the kernel began on a ``ShutdownSystem`` (it waits for the strategies'
    closing orders, then disconnects), as long as that stop may take."""
    config, loop = node._config, asyncio.get_running_loop()
    deadline = loop.time() + config.timeout_post_stop + config.timeout_disconnection + 5.0
    while node.is_running() and loop.time() < deadline:
        await asyncio.sleep(poll_secs)


def stop_on_signals(node: TradingNode, loop: asyncio.AbstractEventLoop) -> list[str]:
    """SIGINT/SIGTERM end :func:`run_node`'s wait, so a signal stops the node on the same path
    as ``--duration``: markets exited first (:func:`exit_markets`). NautilusTrader's own handler
    would start ``stop_async`` at once, which sends one close per position and does not wait for
    it. Installed before the start (a signal then ends the wait for it, :class:`NodeInterrupted`).
    Returns the list the signal names are appended to (a second signal is only logged)."""
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        log = node.kernel.logger
        if not received:
            log.warning(f"Received {sig.name}, shutting down")
        else:
            log.warning(
                f"Received {sig.name} again: the stop closes positions first "
                f"(up to {EXIT_TIMEOUT_SECS:g} s), then saves state"
            )
        received.append(sig.name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    return received


EXIT_TIMEOUT_SECS = 10.0  # a stop waits this long for its closing orders to settle
EXIT_RETRY_SECS = 1.0  # a position open with no order working is closed again this often


async def exit_markets(node: TradingNode, timeout_secs: float = EXIT_TIMEOUT_SECS) -> None:
    """Before the kernel stops: every strategy that closes its positions on stop and can exit
    (``exit_market``/``market_exited``, the HMM strategy) stops adding risk and closes its
    position, and the stop waits until none has an order working or a position open, closing
    again what a partial or refused close left, for at most ``timeout_secs``.

    A single close sent at stop is not enough: the order of the last bar may still sit in the
    risk engine's queue and fill after it (a paper node stopped SHORT 1.44 BTC that way). This
    runs on the event loop, like the bar handlers; NautilusTrader's own managed stop
    (``manage_stop``) re-checks on the clock's timer thread, which raced the bar handler."""
    exiting = [
        s
        for s in node.kernel.trader.strategies()
        if s.is_running
        and getattr(s.config, "close_positions_on_stop", False)
        and hasattr(s, "exit_market")
    ]
    if not exiting:
        return
    for strategy in exiting:
        strategy.exit_market()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    retry = loop.time() + EXIT_RETRY_SECS
    while loop.time() < deadline:
        open_ = [s for s in exiting if not s.market_exited()]
        if not open_:
            return
        if loop.time() >= retry:
            retry = loop.time() + EXIT_RETRY_SECS
            for strategy in open_:
                if not strategy.has_pending_orders():
                    strategy.exit_market()
        await asyncio.sleep(0.02)
    node.kernel.logger.warning(
        f"Market exit not complete after {timeout_secs:g} s: "
        + ", ".join(str(s.id) for s in exiting if not s.market_exited())
    )


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel tasks still pending after the node stopped (e.g. actor executor workers), so
    closing the loop in ``dispose()`` does not destroy them mid-await."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
