"""The operator's request folder, written once for every actor that takes requests.

A CLI drops one JSON file per request (atomically, so a poller never reads half a file), named
by creation time so a sorted listing is oldest first; the actor reads the pending ones at its
next poll and moves each into ``applied/`` or ``rejected/``. The model lifecycle (promote,
reject, rollback) and governance overrides (pause, throttle, ...) both use it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import msgspec

from hmm_strategy.atomic import atomic_write


class Request(Protocol):
    id: str
    created_utc: str


def submit(directory: str | os.PathLike[str], request: Request) -> Path:
    """Write the request file atomically; its name sorts by creation time."""
    stamp = request.created_utc.replace(":", "").replace("-", "") or "0"
    path = Path(directory) / f"{stamp}-{request.id}.json"
    atomic_write(path, msgspec.json.encode(request))
    return path


def pending[R: msgspec.Struct](
    directory: str | os.PathLike[str], kind: type[R]
) -> list[tuple[Path, R | Exception]]:
    """Request files waiting in ``directory``, oldest first; an invalid one as its exception."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out: list[tuple[Path, R | Exception]] = []
    for path in sorted(directory.glob("*.json")):
        try:
            out.append((path, msgspec.json.decode(path.read_bytes(), type=kind)))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            out.append((path, exc))
    return out


def archive(path: Path, applied: bool) -> Path:
    """Move a handled request into ``applied/`` or ``rejected/`` beside it."""
    target = path.parent / ("applied" if applied else "rejected") / path.name
    target.parent.mkdir(exist_ok=True)
    os.replace(path, target)
    return target


class FolderWatch:
    """Says whether a request folder may hold something new, from one ``stat`` of the folder.

    Adding, renaming or removing a file changes the folder's mtime, so an unchanged
    ``(mtime, inode)`` means no new request: the poller skips the listing and the reads (a
    backtest polls at every sample). A folder modified within the last ``settle_secs`` (wall
    clock) is always listed again, because a change within the file system's timestamp
    granularity could leave the mtime as it was. The folder is looked at most once per
    ``min_interval_secs`` of wall-clock time (an operator's request does not need to be seen
    within the millisecond; the first call always looks, so a request written before a run
    starts is applied at its first sample).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        settle_secs: float = 2.0,
        min_interval_secs: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.settle_ns = int(settle_secs * 1e9)
        self.min_interval = min_interval_secs
        self._seen: tuple[int, int] | None = None
        self._looked: float | None = None  # time.monotonic() of the last stat
        self.listings = 0  # how often changed() said yes (tests count it)

    def changed(self) -> bool:
        now = time.monotonic()
        if self._looked is not None and now - self._looked < self.min_interval:
            return False
        self._looked = now
        try:
            st = os.stat(self.directory)
        except OSError:  # no folder: nothing pending
            self._seen = None
            return False
        key = (st.st_mtime_ns, st.st_ino)
        if key == self._seen:
            return False
        # a settled mtime is remembered; a fresh one is listed again at the next poll
        self._seen = key if time.time_ns() - st.st_mtime_ns > self.settle_ns else None
        self.listings += 1
        return True
