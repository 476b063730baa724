"""Small helpers shared by test modules."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a child to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def merged(base: dict, extra: dict) -> dict:
    """``extra`` laid over ``base``: dicts merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


def live_override(
    tmp: Path,
    *,
    replay_bars: int | None = None,
    replay: dict | None = None,
    runs: bool = False,
    state: str = "state",
    **extra: Any,
) -> dict[str, Any]:
    """An override for ``python -m hmm_strategy.live`` that keeps the node's folders under
    ``tmp`` (so a test never writes into the repository): ``live.log_dir`` tmp/logs,
    ``live.state_dir`` tmp/``state`` and, with ``runs``, ``live.output_dir`` tmp/runs.
    ``replay_bars``: the offline replay feed's ``n_bars``, at full speed (``speed: 0``);
    ``replay``: more keys of that feed (seed, speed, faults...). ``extra``: top-level keys
    (``strategies``, ``actors``, more ``live``...) merged over it with :func:`merged`."""
    live: dict[str, Any] = {"log_dir": str(tmp / "logs"), "state_dir": str(tmp / state)}
    if runs:
        live["output_dir"] = str(tmp / "runs")
    feed = {} if replay_bars is None else {"n_bars": replay_bars, "speed": 0}
    feed |= replay or {}
    if feed:
        live["venues"] = {"replay": {"replay": feed}}
    return merged({"live": live}, extra)


def override_file(tmp: Path, data: dict, name: str = "override.yaml") -> Path:
    """``data`` written as YAML to ``tmp/name``, for ``--override``."""
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path
