"""Resident memory of this process from /proc (Linux): current RSS and a resettable peak.

Writing ``5`` to ``/proc/self/clear_refs`` resets the peak (``VmHWM``) to the current RSS, so one
process can measure the peak of each benchmark phase separately. Where /proc is missing (not
Linux) the functions return ``None`` and the report says so.

No background sampling thread: measured here, merely having a second Python thread alive (even
one sleeping in ``Event.wait(0.25)``) slowed the HMM backtest by 10-30% on this machine, so the
peak of each run is read after the run instead.
"""

from __future__ import annotations

import re
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset the peak to the current RSS; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
