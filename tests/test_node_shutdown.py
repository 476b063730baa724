"""A node that shuts itself down is a failure, never "stopped cleanly".

NautilusTrader's live engines run with ``graceful_shutdown_on_exception``: an exception in an
engine's queue (e.g. ``AccountBalanceNegative`` while applying a fill) makes the engine send
``ShutdownSystem``, and the kernel stops at once. Any component may send one too
(``shutdown_system``). ``run_node`` used to see only a node that was no longer running and
return normally: ``python -m hmm_strategy.live`` then printed "stopped cleanly" and exited 0,
even with a fill the node never booked. Here an actor of the node sends ``ShutdownSystem``
after a few bars, through the real paper node (offline replay).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig

from hmm_strategy.config import REPO_ROOT
from hmm_strategy.live import EXIT_RUN
from tests.helpers import live_override, override_file


class ShutdownAfterConfig(ActorConfig, frozen=True):
    bars: int = 50
    reason: str = "risk limit breached"


class ShutdownAfter(Actor):
    """Sends ``ShutdownSystem`` once it has seen ``bars`` bars (``bars: 0``: at the first
    position opened, with a control character in the reason)."""

    def on_start(self) -> None:
        self.seen, self.sent = 0, False
        self.msgbus.subscribe("data.bars.*", self.on_any_bar)
        self.msgbus.subscribe("events.position.*", self.on_position)

    def on_any_bar(self, bar) -> None:
        self.seen += 1
        if self.seen == self.config.bars:
            self.shutdown_system(self.config.reason)

    def on_position(self, event) -> None:
        if self.config.bars == 0 and type(event).__name__ == "PositionOpened" and not self.sent:
            self.sent = True
            self.shutdown_system(f"\x1b[31m{self.config.reason}")


def _run(tmp_path: Path, bars: int, strategy: dict) -> subprocess.CompletedProcess:
    override = live_override(
        tmp_path,
        runs=True,
        replay_bars=3000,
        strategies=[{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}, **strategy}}],
        actors=[
            {
                "name": "shutdown",
                "path": "tests.test_node_shutdown:ShutdownAfter",
                "config": {"bars": bars, "reason": "risk limit breached (test)"},
            }
        ],
    )
    path = override_file(tmp_path, override)
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(path),
        "--run-dir", str(tmp_path / "run"), "--metrics-port", "0", "--duration", "120",
        "--exit-when-replayed", "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TRADING_ENABLED", None)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_RUN, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "stopped cleanly" not in proc.stdout
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    return line


def test_a_node_that_shuts_itself_down_exits_non_zero_naming_the_reason(tmp_path: Path) -> None:
    line = _error_line(_run(tmp_path, 800, {}))
    assert line.startswith("error: trading node shut itself down: ShutdownAfter"), line
    assert "risk limit breached (test)" in line, line
    # the kernel's own stop ran, and only it: not a second stop that skips its wait
    (log,) = (tmp_path / "logs").glob("*.log")
    stops = [x for x in log.read_text().splitlines() if x.endswith(".TradingNode: STOPPING")]
    assert len(stops) == 1, stops


def test_positions_left_by_a_shutdown_come_first_in_the_line(tmp_path: Path) -> None:
    """A strategy that does not close on stop keeps its position through the kernel's stop: the
    line names it before the cause, and no control character from the reason reaches it."""
    line = _error_line(_run(tmp_path, 0, {"close_positions_on_stop": False}))
    assert line.startswith("error: positions still open: "), line
    assert "BTCUSDT.BINANCE (HMMRegimeStrategy-001)" in line, line
    assert "; trading node shut itself down: ShutdownAfter: ?[31mrisk limit breached" in line, line
    assert line.isprintable()
