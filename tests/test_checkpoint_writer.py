"""Timer checkpoints leave the event loop: encoded on the loop, written and fsynced on a worker.

Driven through ``StrategyPersistence``'s own methods with a stand-in for the strategy's state, so
the thread that writes, the coalescing of ticks and the order of the final write are observable.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from hmm_strategy import persistence
from hmm_strategy.persistence import StrategyPersistence


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def error(self, msg: str) -> None:
        self.lines.append(msg)

    warning = error


class _Strategy(StrategyPersistence):
    """The attributes the persistence mixin reads from HMMRegimeStrategy, and a counter state."""

    def __init__(self, path: Path) -> None:
        self._checkpoint = path
        self.engine = object()
        self._checkpoint_failures = 0
        self._checkpoint_writer = None
        self._checkpoint_future = None
        self.log = _Log()
        self.published: list[bool] = []
        self.bars = 0

    def snapshot(self, *, embed_model: bool = False) -> dict:
        return {"bars": self.bars}

    def _publish_checkpoint_write(self, ok: bool, error: str) -> None:
        self.published.append(ok)


def _saved_bars(path: Path) -> int:
    return json.loads(path.read_text())["state"]["bars"]


def test_timer_writes_run_on_a_worker_coalesce_and_stop_writes_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.checkpoint.json"
    release = threading.Event()
    threads: list[str] = []
    real_write = persistence.atomic_write

    def slow_write(p: Path, data: bytes) -> None:
        threads.append(threading.current_thread().name)
        release.wait(10)  # a disk that takes its time
        real_write(p, data)

    monkeypatch.setattr(persistence, "atomic_write", slow_write)
    s = _Strategy(path)
    s.bars = 1
    s.write_checkpoint_in_background()  # returns at once, the write is in flight
    assert s._checkpoint_future is not None and not s._checkpoint_future.done()
    s.bars = 2
    s.write_checkpoint_in_background()  # a tick while writing: no second write queued
    assert len(threads) == 1
    release.set()
    s._checkpoint_future.result(timeout=10)
    assert _saved_bars(path) == 1
    s.bars = 3
    s.write_checkpoint_in_background()
    s.bars = 4
    s.write_checkpoint()  # the stop: waits for the one in flight, then writes the newest state
    s.stop_checkpoint_writer()
    assert _saved_bars(path) == 4
    assert threads[0].startswith("checkpoint") and threads[1].startswith("checkpoint")
    assert threading.main_thread().name not in threads[:2]
    assert s._checkpoint_writer is None and s.published == [] and s._checkpoint_failures == 0


def test_a_failed_background_write_is_counted_at_the_next_tick(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    s = _Strategy(blocker / "s.checkpoint.json")
    s.write_checkpoint_in_background()
    s._checkpoint_future.result(timeout=10)
    assert s._checkpoint_failures == 0  # not yet seen by the loop
    s.write_checkpoint_in_background()  # the next tick accounts for it (and tries again)
    assert s._checkpoint_failures == 1 and s.checkpoint_failed and s.published == [False]
    assert "Checkpoint write failed (1x)" in s.log.lines[0]
    s.stop_checkpoint_writer()
    assert s._checkpoint_failures == 2  # the retry failed too, accounted at stop
    blocker.unlink()
    s.write_checkpoint()  # the folder is back: writes work again
    assert _saved_bars(blocker / "s.checkpoint.json") == 0
    assert s._checkpoint_failures == 0 and s.published == [False, False, True]
