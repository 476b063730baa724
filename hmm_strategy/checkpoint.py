"""Strategy checkpoints: our own crash-safe state files beside NautilusTrader's save/load.

NautilusTrader persists strategy state only through a Redis cache database and only on a clean
stop. A checkpoint written atomically on a timer means a crash (SIGKILL) loses at most one
interval, with or without Redis. A checkpoint that cannot be read is set aside (never deleted) and
the strategy starts fresh, flat, and says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hmm_strategy.atomic import atomic_write

SCHEMA_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used; the message says why."""


def checkpoint_path(directory: str | Path, trader_id: str, strategy_id: str) -> Path:
    safe = f"{trader_id}-{strategy_id}".replace("/", "_")
    return Path(directory) / f"{safe}.checkpoint.json"


def ensure_checkpoint_dir(path: Path) -> None:
    """Create the checkpoint folder; ``CheckpointError`` if it cannot hold files, so a node with a
    misconfigured state folder fails at start instead of trading without saved state."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"checkpoint folder {folder} cannot be created: {exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(f"checkpoint folder {folder} is not writable")


def encode_checkpoint(state: dict) -> bytes:
    """The checkpoint file's bytes (``ValueError`` for a non-finite number in ``state``)."""
    doc = {"schema_version": SCHEMA_VERSION, "saved_at": time.time(), "state": state}
    return json.dumps(doc, allow_nan=False).encode()


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, encode_checkpoint(state))


def load_checkpoint(path: Path) -> dict | None:
    """The saved state, None when there is no checkpoint; ``CheckpointError`` when unusable."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # nothing saved there (yet)
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        version = doc.get("schema_version") if isinstance(doc, dict) else None
        raise CheckpointError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}")
    if not isinstance(doc.get("state"), dict):
        raise CheckpointError(f"{path}: missing 'state'")
    return doc["state"]


def set_aside(path: Path, tag: str = "bad") -> Path:
    """Rename a checkpoint (unusable, or not wanted: ``--fresh``) so it is kept for inspection
    and not read again."""
    stamp = time.time_ns()
    target = path.with_name(f"{path.name}.{tag}-{stamp}")
    path.rename(target)
    model = path.with_suffix(".model.json")  # the active model saved beside it
    if model.exists():
        model.rename(model.with_name(f"{model.name}.{tag}-{stamp}"))
    return target
