"""Timers whose callbacks run where the bars run.

In a live node (nautilus_trader 1.231.0) a ``LiveClock`` calls timer callbacks on its own Rust
thread, while bars, order events and message-bus handlers run on the node's event loop. A timer
callback that changes a strategy's state (a kill switch or governance command that flattens, a
model swap, a checkpoint snapshot) would then interleave with ``on_bar`` halfway through it: seen
as an order sent by a bar whose strategy had just been stopped. ``set_loop_timer`` hands each
tick to the event loop instead; a backtest's ``TestClock`` fires timers in line, on the one
thread there is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from nautilus_trader.common.component import LiveClock


def set_loop_timer(
    clock: Any, name: str, interval: timedelta, callback: Callable[[Any], None]
) -> None:
    """``clock.set_timer(name, interval, callback=...)``, the callback run on the event loop
    that is running now (call from ``on_start``, which a live node runs on its loop)."""
    if isinstance(clock, LiveClock):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a component driven by hand): nowhere else to run it
            loop = None
        if loop is not None:
            callback = on_loop(loop, callback)
    clock.set_timer(name, interval, callback=callback)


def on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None]):
    """``callback`` scheduled on ``loop`` from whatever thread calls the result (dropped once
    the loop is closed)."""

    def hop(event: Any) -> None:
        with contextlib.suppress(RuntimeError):  # closed: the node has stopped
            loop.call_soon_threadsafe(callback, event)

    return hop
