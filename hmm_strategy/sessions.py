"""Trading calendars: how much *open market* time lies between two bar timestamps.

The stale-data breaker and the missing-bar count (``hmm_strategy.risk``) measure gaps between
bars. Crypto trades 24/7, so calendar time is the right yardstick there; equities and FX close
every night/weekend and on holidays, and counting those closures as missing bars would trip the
breaker on every regular closure. A calendar answers ``open_ns(t0, t1)``: the nanoseconds of open
market in ``(t0, t1]``, so a gap is judged in bar intervals of *open* market.

Calendars (``breakers.calendar`` in a strategy's config):

* ``"24/7"`` (default): always open; ``open_ns(t0, t1) == t1 - t0`` (crypto).
* ``"FX"``: the spot FX week, Sunday 17:00 to Friday 17:00 New York time (DST-aware), closed
  for Christmas and New Year from 14:00 New York on Dec 24 / Dec 31 (the early close of the
  interbank market) until 17:00 on Dec 25 / Jan 1.
* an ``exchange_calendars`` code, e.g. ``"XNYS"`` (NYSE: regular sessions 09:30-16:00 New York,
  holidays and early closes) or ``"XNAS"``, ``"XLON"``, ``"CMES"``. Lunch breaks are closed time.
  The rules are code in the package, so nothing is downloaded at run time.

Outside the span a table covers (before its first session or after its last, about a year
ahead for exchange calendars), time counts as open: the breaker then behaves as on 24/7 data
and fails safe (trips on a long gap) rather than ignoring one.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

ALWAYS_OPEN = "24/7"
FX = "FX"
_TABLE_START = "1990-01-01"  # oldest data we replay: SPY hourly starts in 1998
_FX_LAST_YEAR = 2100
_NY = ZoneInfo("America/New_York")


class SessionCalendar:
    """Open-market time from a sorted table of non-overlapping ``[open, close)`` sessions (ns)."""

    def __init__(self, name: str, opens: list[int], closes: list[int]) -> None:
        if not opens or len(opens) != len(closes):
            raise ValueError(f"calendar {name!r}: no sessions")
        cum = [0]
        for i, (o, c) in enumerate(zip(opens, closes, strict=True)):
            if c <= o or (i and o < closes[i - 1]):
                raise ValueError(f"calendar {name!r}: sessions must be sorted and not overlap")
            cum.append(cum[-1] + c - o)
        self.name = name
        self._opens = opens
        self._closes = closes
        self._cum = cum  # open ns before session i
        # (open, close) of the session the last gap ended in and its index: bar after bar falls
        # in the same one (a gap inside one session is all open time), and a closure ends in
        # the next one (the close of this one to the open of that), without bisects
        self._session = (0, -1)
        self._index = -1

    @property
    def first_open_ns(self) -> int:
        return self._opens[0]

    @property
    def last_close_ns(self) -> int:
        return self._closes[-1]

    def _open_before(self, t: int) -> int:
        """Open ns in (-inf, t), relative to the first open (outside the table: all open)."""
        opens, closes = self._opens, self._closes
        if t <= opens[0]:
            return t - opens[0]
        if t >= closes[-1]:
            return self._cum[-1] + (t - closes[-1])
        i = bisect.bisect_right(opens, t) - 1
        return self._cum[i] + min(t, closes[i]) - opens[i]

    def open_ns(self, t0: int, t1: int) -> int:
        """Nanoseconds of open market in ``(t0, t1]`` (0 if ``t1 <= t0``)."""
        if t1 <= t0:
            return 0
        lo, hi = self._session
        if lo <= t0 and t1 <= hi:  # both inside one session: what the two lookups would give
            return t1 - t0
        opens, closes = self._opens, self._closes
        j = self._index + 1
        if lo <= t0 <= hi and j < len(opens) and opens[j] <= t1 <= closes[j]:
            # from inside the remembered session to inside the next one (a night, a weekend,
            # a holiday): the rest of this session plus the start of that one
            self._session, self._index = (opens[j], closes[j]), j
            return hi - t0 + t1 - opens[j]
        i = bisect.bisect_right(opens, t1) - 1  # the session t1 falls in or follows
        if i >= 0:
            self._session, self._index = (opens[i], closes[i]), i
        return self._open_before(t1) - self._open_before(t0)

    def is_open(self, t: int) -> bool:
        """Whether ``t`` lies inside a session (outside the table: open)."""
        if t < self._opens[0] or t >= self._closes[-1]:
            return True
        i = bisect.bisect_right(self._opens, t) - 1
        return i >= 0 and t < self._closes[i]


def _ns(dt: datetime) -> int:
    """An aware datetime (whole seconds) as UNIX ns."""
    return int(dt.timestamp()) * 1_000_000_000


def fx_week_sessions(first_year: int = 1990, last_year: int = _FX_LAST_YEAR) -> SessionCalendar:
    """Sunday 17:00 to Friday 17:00 New York every week, minus the Christmas/New Year closures."""
    day = datetime(first_year, 1, 1)
    day += timedelta(days=(6 - day.weekday()) % 7)  # first Sunday
    sessions: list[tuple[int, int]] = []
    while day.year <= last_year:
        sunday = day.replace(hour=17, tzinfo=_NY)
        friday = (day + timedelta(days=5)).replace(hour=17, tzinfo=_NY)
        sessions.append((_ns(sunday), _ns(friday)))
        day += timedelta(days=7)
    holidays = []  # Dec 24/31 14:00 -> Dec 25/Jan 1 17:00 New York
    for year in range(first_year - 1, last_year + 1):
        for eve in (24, 31):
            start = datetime(year, 12, eve, 14, tzinfo=_NY)
            end = datetime(year, 12, eve, 17, tzinfo=_NY) + timedelta(days=1)
            holidays.append((_ns(start), _ns(end)))
    opens, closes = _subtract(sessions, holidays)
    return SessionCalendar(FX, opens, closes)


def _subtract(sessions: list[tuple[int, int]], gaps: list[tuple[int, int]]):
    """Sorted sessions minus sorted closures, as (opens, closes)."""
    opens: list[int] = []
    closes: list[int] = []
    j = 0
    for o, c in sessions:
        while j < len(gaps) and gaps[j][1] <= o:
            j += 1
        k = j
        while k < len(gaps) and gaps[k][0] < c:
            g0, g1 = gaps[k]
            if g0 > o:
                opens.append(o)
                closes.append(g0)
            o = max(o, g1)
            k += 1
        if o < c:
            opens.append(o)
            closes.append(c)
    return opens, closes


def exchange_sessions(code: str) -> SessionCalendar:
    """Regular sessions of an ``exchange_calendars`` exchange (holidays, early closes, breaks)."""
    import exchange_calendars as xcals

    try:
        cal = xcals.get_calendar(code, start=_TABLE_START)
    except xcals.errors.InvalidCalendarName:
        raise
    except ValueError:  # the calendar's history starts later: use its own first session
        cal = xcals.get_calendar(code)
    sched = cal.schedule
    opens, closes = [], []
    cols = [sched[c].to_numpy(dtype="datetime64[ns]").astype("int64") for c in sched.columns]
    has = {c: i for i, c in enumerate(sched.columns)}
    nat = -(2**63)
    for row in zip(*cols, strict=True):
        o, c = row[has["open"]], row[has["close"]]
        b0 = row[has["break_start"]] if "break_start" in has else nat
        b1 = row[has["break_end"]] if "break_end" in has else nat
        if b0 != nat and b1 != nat and o < b0 < b1 < c:
            opens += [int(o), int(b1)]
            closes += [int(b0), int(c)]
        else:
            opens.append(int(o))
            closes.append(int(c))
    return SessionCalendar(code, opens, closes)


@lru_cache(maxsize=16)
def calendar_for(name: str) -> SessionCalendar | None:
    """The calendar called ``name``; None for ``"24/7"`` (calendar time). Built once per process.

    Raises ValueError naming the setting for an unknown name.
    """
    if name == ALWAYS_OPEN:
        return None
    if name == FX:
        return fx_week_sessions()
    try:
        import exchange_calendars as xcals
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ValueError(f"breakers.calendar {name!r} needs exchange_calendars: {exc}") from None
    try:
        return exchange_sessions(name)
    except xcals.errors.InvalidCalendarName:
        raise ValueError(
            f"breakers.calendar: unknown calendar {name!r}; use {ALWAYS_OPEN!r}, {FX!r} or an "
            "exchange_calendars code such as 'XNYS'"
        ) from None
