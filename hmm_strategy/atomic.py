"""Crash-safe file writes: a reader (or a restart after SIGKILL) sees the old file or the new one.

Temp file in the same directory, flush + fsync, ``os.replace``, then fsync of the directory so the
rename itself survives a power cut where the OS allows it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def leftover_temp_files(path: Path) -> list[Path]:
    """Temp files of writes to ``path`` that never reached the rename (a SIGKILL mid-write)."""
    return sorted(path.parent.glob(f".{path.name}.tmp-*")) if path.parent.exists() else []


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the target directory, fsync, then rename over: readers never see a partial."""
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
