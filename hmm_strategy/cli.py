"""The one error boundary and the argparse types shared by every ``python -m ...`` entry point.

A user who mistypes a flag or points at a bad file must see ONE line naming the problem and get a
non-zero exit code, never a traceback (and never a Rust abort: values NautilusTrader's Rust core
would ``panic`` on are validated here, before they reach it). ``run_cli(main)`` wraps a CLI's
``main``: known errors print ``error: <cause>`` and exit 2; anything unexpected prints one line
naming the exception type and exits 1. ``ArgumentParser`` makes argparse's own errors one line too.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import msgspec

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MAX_LINE = 400  # a message longer than this is cut (a config dump is not a cause)

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "OFF")
# NautilusTrader's TraderId is NAME-TAG (both non-empty, no spaces); Rust panics otherwise.
_TRADER_ID = re.compile(r"^[^\s-][^\s]*-[^\s-]+$")


class CLIError(Exception):
    """A user error with a message fit to print as is (one line)."""


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """Collapse a message to one line (an operator reads it in a terminal or a log line)."""
    line = " ".join(str(text).split())
    if not line.isprintable():  # control characters from a venue or a component (ESC, ...)
        line = "".join(c if c.isprintable() else "?" for c in line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def quoted(value: str, limit: int = 60) -> str:
    """``repr`` of what a user typed, cut to ``limit`` characters: an error line that echoes a
    huge argument must still show its cause and what to type (``one_line`` cuts the end)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user (imported lazily: CLIs start fast)."""
    from hmm_strategy.config import ConfigError
    from venues.errors import NodeRunError, NodeStartError, VenueConfigError

    return (
        CLIError,
        ConfigError,
        VenueConfigError,
        NodeStartError,
        NodeRunError,
        msgspec.ValidationError,
        msgspec.DecodeError,
        ValueError,
        OSError,
    )


def describe(exc: BaseException, *, known: bool = False) -> str:
    """``error: <cause>`` for a known error (``known``: the caller says so, e.g. its own error
    class); the exception type first for an unexpected one."""
    if isinstance(exc, RecursionError):
        return "error: input nested too deeply (RecursionError)"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return one_line(f"error: {exc.filename}: {exc.strerror}")
    if known or isinstance(exc, _known_errors()):
        return one_line(f"error: {exc}")
    return one_line(f"error: unexpected {type(exc).__name__}: {exc}")


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, RecursionError):
        return EXIT_USAGE
    return EXIT_USAGE if isinstance(exc, _known_errors()) else EXIT_UNEXPECTED


def run_cli(main: Callable[[list[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` behind the error boundary and return its exit code."""
    try:
        return main(None if argv is None else list(argv))
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:  # noqa: BLE001 - the boundary: one line, never a traceback
        print(describe(exc), file=sys.stderr)
        return exit_code(exc)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage block otherwise)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------ argparse types
def iso_time(text: str) -> str:
    """An ISO-8601 date/time (naive = UTC); returned normalized so every consumer parses it."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date/time (e.g. 2024-06-01 or 2024-06-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_time_order(start: str | None, end: str | None) -> None:
    """Refuse an end that is not after the start (both already ``iso_time``)."""
    if start and end and datetime.fromisoformat(end) <= datetime.fromisoformat(start):
        raise CLIError(f"--end {end} is not after --start {start}")


def _number(text: str, kind: type, minimum: float, strict: bool) -> float | int:
    """``text`` as ``kind`` (int or float), finite and above ``minimum`` (``strict``) or at
    least it; ``nan`` and ``inf`` are refused (they would mean "never" or "at once")."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {'whole number' if kind is int else 'number'}"
        ) from None
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        what = "" if kind is int else "a finite number "
        raise argparse.ArgumentTypeError(f"{text!r} must be {what}{bound}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return float(_number(text, float, 0, strict=True))


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return float(_number(text, float, 0, strict=False))


def positive_int(text: str) -> int:
    return int(_number(text, int, 0, strict=True))


def non_negative_int(text: str) -> int:
    return int(_number(text, int, 0, strict=False))


def port(text: str) -> int:
    """A TCP port, 0..65535 (0 = off / any free port, as the flag documents)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0..65535")
    return value


def log_level(text: str) -> str:
    """A NautilusTrader log level (an unknown one aborts the process inside Rust)."""
    check_log_level(text)
    return text.strip().upper()


def check_log_level(value: object, key: str | None = None) -> None:
    if not isinstance(value, str) or value.strip().upper() not in LOG_LEVELS:
        what = f"{key} {value!r}" if key else repr(value)  # argparse names the flag itself
        raise argparse.ArgumentTypeError(f"{what} is not a log level ({', '.join(LOG_LEVELS)})")


def check_trader_id(value: object, key: str = "trader_id") -> None:
    """``TraderId`` must be ``NAME-TAG`` (e.g. HMM-001): Rust aborts the process otherwise."""
    if not isinstance(value, str) or not _TRADER_ID.match(value):
        raise ValueError(f"{key} {value!r} must look like NAME-TAG, e.g. HMM-001")


def ensure_new_run_dir(path: str | Path, what: str = "--run-dir") -> Path:
    """A run folder must be new or empty: reports of two runs in one folder contradict each
    other (one run's fills beside another's statistics)."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()):
        raise CLIError(f"{what} {path} already holds files of another run: pick a new folder")
    return ensure_writable_dir(path, what)


def ensure_writable_dir(path: str | Path, what: str = "folder") -> Path:
    """Create ``path`` and prove it writable now (not when the first report is due)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CLIError(f"{what} {path} is not a writable folder ({reason})") from None
    return path


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip()).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_listen_host(host: str, allow_remote: bool, *, what: str, allow: str) -> None:
    """Refuse a non-loopback listen address unless it was opened on purpose: the metrics and
    the operations API reveal positions and PnL (the API can also steer). ``what`` names the
    setting, ``allow`` says how to open it up; ``ValueError`` otherwise."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"{what} {host!r} is not loopback: it would be reachable from other machines; "
            f"{allow} to do that on purpose"
        )
