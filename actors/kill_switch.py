"""``KillSwitch``: the operator's global stop, flipped without a restart.

Two inputs, either one halts every strategy at once (no new risk; with ``flatten`` also close):

* ``TRADING_ENABLED`` false (``false``/``0``/``no``/``off``) in the node's environment, read at
  start; a value that is not a boolean halts too (fail safe) and says why;
* a watched file (default ``state/KILL_SWITCH``): create it to halt (its first line is logged as
  the reason; a line ``flatten`` also closes positions), delete it to resume.

Changing state needs write access to the state folder (``python -m actors.kill_switch on --reason
... [--flatten]`` / ``off`` / ``status`` writes or removes the file; the operations API, ``ops``,
calls the same ``switch_on``/``switch_off`` behind its bearer token). The switch is broadcast
as ``KillSwitch`` on ``hmm.killswitch`` and its current state is kept in the cache under
``KILL_SWITCH_CACHE_KEY``: a strategy that starts after this actor reads it there, one that
starts before gets the broadcast, so the halt holds from the first bar whatever the start order.
Strategies obey it through their breakers. Backtests never poll the file (live clock only).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import timedelta
from pathlib import Path

import msgspec
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import LiveClock
from nautilus_trader.config import ActorConfig

from hmm_strategy import cli
from hmm_strategy.atomic import atomic_write
from hmm_strategy.flags import FlagError, trading_enabled
from hmm_strategy.messages import KILL_SWITCH_CACHE_KEY, KILL_SWITCH_TOPIC, KillSwitch
from hmm_strategy.timers import set_loop_timer

POLL_TIMER = "kill-switch-poll"


class KillSwitchActorConfig(ActorConfig, frozen=True):
    """
    Configuration for ``KillSwitchActor``.

    Parameters
    ----------
    path : str
        The file whose existence halts trading.
    poll_secs : float
        How often the file is checked.

    """

    path: str = "state/KILL_SWITCH"
    poll_secs: float = 1.0

    def __post_init__(self) -> None:  # when the node config loads, not when the node starts
        if not self.poll_secs > 0:
            raise ValueError(f"poll_secs must be > 0, was {self.poll_secs}")


class KillSwitchActor(Actor):
    """Broadcasts the kill switch from ``TRADING_ENABLED`` and a watched file."""

    def __init__(self, config: KillSwitchActorConfig) -> None:
        super().__init__(config)
        self.halted = False
        self._env_halt = False

    def on_start(self) -> None:
        if not isinstance(self.clock, LiveClock):
            return
        try:
            enabled = trading_enabled(os.environ)
        except FlagError as exc:
            enabled = False
            self.log.error(f"{exc}: halting (fail safe)")
        if enabled is False:
            self._env_halt = True
            self._broadcast(True, "TRADING_ENABLED is off", flatten=False)
        poll = timedelta(seconds=self.config.poll_secs)
        set_loop_timer(self.clock, POLL_TIMER, poll, self.on_poll)
        self.on_poll(None)
        if not self.halted:  # "off" is state, not an event: kept in the cache, not broadcast
            self._record(False, "off", flatten=False)

    def on_poll(self, _event) -> None:
        path = Path(self.config.path)
        if path.exists():
            try:
                text = path.read_text(errors="replace").strip()
            except OSError as exc:
                text = f"unreadable kill switch file ({exc})"
            if not self.halted:
                reason = text.splitlines()[0] if text else f"{path} exists"
                flatten = any(line.strip().lower() == "flatten" for line in text.splitlines())
                self._broadcast(True, reason, flatten)
        elif self.halted and not self._env_halt:
            self._broadcast(False, f"{path} removed", flatten=False)

    def _broadcast(self, halted: bool, reason: str, flatten: bool) -> None:
        (self.log.warning if halted else self.log.info)(
            f"Kill switch {'ON' if halted else 'off'}: {reason}"
        )
        self.msgbus.publish(KILL_SWITCH_TOPIC, self._record(halted, reason, flatten))

    def _record(self, halted: bool, reason: str, flatten: bool) -> KillSwitch:
        """The switch's current state, kept in the cache for strategies that start later."""
        self.halted = halted
        switch = KillSwitch(
            ts_event=self.clock.timestamp_ns(), halted=halted, reason=reason, flatten=flatten
        )
        self.cache.add(KILL_SWITCH_CACHE_KEY, msgspec.json.encode(switch))
        return switch

    def on_stop(self) -> None:
        if POLL_TIMER in self.clock.timer_names:
            self.clock.cancel_timer(POLL_TIMER)


# -- operator side: the file the actor watches ----------------------------------------------------


def switch_on(
    path: str | os.PathLike[str], reason: str, *, flatten: bool = False, operator: str | None = None
) -> Path:
    """Halt trading: write the switch file (atomically). Its first line, the logged reason, says
    who and why; a ``flatten`` line also closes positions. Overwrites an earlier reason."""
    if not reason.strip() or "\n" in reason:
        raise ValueError("the kill switch needs a one-line --reason")
    path = Path(path)
    text = f"{reason.strip()} [operator {operator or getpass.getuser()}]\n"
    atomic_write(path, (text + ("flatten\n" if flatten else "")).encode())
    return path


MAX_SWITCH_BYTES = 4096  # a switch file is a reason line and maybe "flatten"; nothing larger


def switch_off(path: str | os.PathLike[str]) -> bool:
    """Resume trading: remove the switch file; False if it was not there. A path that does not
    hold a switch file (a folder, a large or many-line file: a mistyped --path) is refused, never
    deleted."""
    path = Path(path)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"{path} is not a kill switch file (not a regular file): not removed")
    lines = [] if info.st_size > MAX_SWITCH_BYTES else path.read_bytes().splitlines()
    if info.st_size > MAX_SWITCH_BYTES or len([x for x in lines if x.strip()]) > 2:
        raise ValueError(
            f"{path} does not look like a kill switch file (a reason line and 'flatten' at most, "
            f"{info.st_size:,} bytes): not removed; check --path"
        )
    path.unlink()
    return True


def switch_state(path: str | os.PathLike[str]) -> dict[str, object]:
    """What the actor will read at its next poll: on/off, the reason line and flatten."""
    path = Path(path)
    if not path.exists():
        return {"on": False, "path": str(path), "reason": None, "flatten": False}
    lines = path.read_text(errors="replace").strip().splitlines()
    return {
        "on": True,
        "path": str(path),
        "reason": lines[0] if lines else f"{path} exists",
        "flatten": any(line.strip().lower() == "flatten" for line in lines),
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m actors.kill_switch",
        description="Flip the running node's kill switch file (the KillSwitchActor polls it).",
    )
    parser.add_argument("command", choices=("on", "off", "status"))
    parser.add_argument(
        "--path",
        default=os.environ.get("HMM_KILL_SWITCH", "state/KILL_SWITCH"),
        help="the node's kill switch file (default: $HMM_KILL_SWITCH or %(default)s)",
    )
    parser.add_argument("--reason", default="", help="on: why (the logged reason)")
    parser.add_argument("--flatten", action="store_true", help="on: also close positions")
    args: argparse.Namespace = parser.parse_args(argv)
    try:
        if args.command == "on":
            print(f"kill switch ON: {switch_on(args.path, args.reason, flatten=args.flatten)}")
        elif args.command == "off":
            gone = switch_off(args.path)
            print(f"kill switch off: {args.path} {'removed' if gone else 'was not there'}")
        else:
            print(msgspec.json.encode(switch_state(args.path)).decode())
    except (ValueError, OSError) as exc:
        print(cli.describe(exc, known=True), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
