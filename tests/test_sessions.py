"""The trading calendar's shortcuts answer as its two table lookups do.

``SessionCalendar.open_ns`` remembers the session of the last gap: a gap inside it is all open
time, and a gap from inside it to inside the next session (a night, a weekend, a holiday) is the
rest of this session plus the start of that one. Both skip the bisects; the answer must be the
lookups' (``_open_before(t1) - _open_before(t0)``) for every pair.
"""

from __future__ import annotations

import random

from hmm_strategy.sessions import SessionCalendar, calendar_for


def _lookups(cal: SessionCalendar, t0: int, t1: int) -> int:
    return cal._open_before(t1) - cal._open_before(t0) if t1 > t0 else 0


def test_next_session_shortcut_answers_as_the_lookups_on_a_toy_table() -> None:
    """Pairs at, inside, between and beyond sessions, contiguous sessions included, in an order
    that keeps entering, crossing to the next and leaving the remembered one."""
    cal = SessionCalendar("toy", [100, 300, 400, 450, 600], [200, 400, 450, 500, 700])
    rng = random.Random(5)
    points = [50, 100, 101, 150, 199, 200, 250, 300, 310, 399, 400, 420, 450, 470, 500, 550,
              600, 650, 700, 750]  # fmt: skip
    shortcuts = 0
    for _ in range(5_000):
        t0 = rng.choice(points)
        t1 = rng.choice([p for p in points if p >= t0] or [t0])
        before = cal._index
        assert cal.open_ns(t0, t1) == _lookups(cal, t0, t1), (t0, t1)
        shortcuts += cal._index == before + 1
    assert shortcuts > 100  # the next-session path was taken


def test_xnys_bar_after_bar_answers_as_the_lookups() -> None:
    """Hourly bar times over 1998-2021 XNYS sessions (nights, weekends, holidays, early closes),
    each gap asked once, as the breakers do bar after bar."""
    cal = calendar_for("XNYS")
    lo = cal._opens.index(next(o for o in cal._opens if o >= 883_612_800 * 10**9))  # 1998
    hour = 3_600 * 10**9
    times = []
    for o, c in zip(cal._opens[lo : lo + 6_000], cal._closes[lo : lo + 6_000], strict=True):
        times += [*range(o - o % hour + hour, c, hour), c]
    fresh = SessionCalendar("XNYS", cal._opens, cal._closes)
    nights = 0
    for t0, t1 in zip(times, times[1:], strict=False):
        before = fresh._index
        assert fresh.open_ns(t0, t1) == _lookups(fresh, t0, t1), (t0, t1)
        nights += fresh._index == before + 1
    assert nights == 6_000 - 1  # every closure took the next-session path
