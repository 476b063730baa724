"""Boolean switches from the environment, parsed one way everywhere.

``TRADING_ENABLED`` decides whether orders can reach a venue, so a typo must never read as "on":
the accepted spellings are listed here and anything else is refused with the variable's name.
An unset or empty variable means "not given" (``None``), and each caller decides its default.
"""

from __future__ import annotations

from collections.abc import Mapping

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


class FlagError(ValueError):
    """An environment variable meant as a boolean holds something else."""


def parse_bool(value: str, name: str) -> bool:
    """``true/1/yes/on`` or ``false/0/no/off`` (any case, surrounding spaces ignored)."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise FlagError(
        f"{name}={value!r} is not a boolean (use one of: "
        f"{', '.join(sorted(TRUE_WORDS))} / {', '.join(sorted(FALSE_WORDS))})"
    )


def env_bool(environ: Mapping[str, str], name: str) -> bool | None:
    """The boolean in ``environ[name]``; ``None`` when unset or empty; ``FlagError`` otherwise."""
    value = environ.get(name, "")
    if not value.strip():
        return None
    return parse_bool(value, name)


def trading_enabled(environ: Mapping[str, str]) -> bool | None:
    """``TRADING_ENABLED``: True (opt-in to real orders), False (halt everything), None (unset)."""
    return env_bool(environ, "TRADING_ENABLED")
