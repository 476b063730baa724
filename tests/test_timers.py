"""Timer callbacks run where the bars run (``hmm_strategy.timers``): a ``LiveClock`` calls them
on its own thread, and a kill switch, governance command, model swap or checkpoint snapshot run
there would interleave with ``on_bar`` (seen: an order sent by a bar whose strategy had just
been stopped by a timer callback)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from nautilus_trader.common.component import LiveClock, TestClock

from hmm_strategy.timers import set_loop_timer


def _threads(use_loop_timer: bool) -> set[int]:
    async def run() -> set[int]:
        clock, seen = LiveClock(), set()
        callback = lambda _event: seen.add(threading.get_ident())  # noqa: E731
        if use_loop_timer:
            set_loop_timer(clock, "t", timedelta(milliseconds=20), callback)
        else:
            clock.set_timer("t", timedelta(milliseconds=20), callback=callback)
        await asyncio.sleep(0.2)
        clock.cancel_timers()
        return seen

    return asyncio.run(run())


def test_a_live_clock_calls_timers_on_another_thread() -> None:
    """What the module exists for (nautilus_trader 1.231.0): if this fails, NautilusTrader
    now delivers timer events on the loop and ``set_loop_timer`` can go."""
    seen = _threads(use_loop_timer=False)
    assert seen and threading.get_ident() not in seen


def test_loop_timers_run_on_the_event_loop_thread() -> None:
    assert _threads(use_loop_timer=True) == {threading.get_ident()}


def test_a_backtest_clock_fires_in_line() -> None:
    clock, fired = TestClock(), []
    set_loop_timer(clock, "t", timedelta(seconds=1), fired.append)
    for handler in clock.advance_time(3_000_000_000):  # the engine calls them, in line
        handler.handle()
    assert len(fired) == 3  # no loop in between
