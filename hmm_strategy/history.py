"""``HistoryRequester``: the warm start's request/answer flow, for a strategy or an actor.

At start the component asks the venue's data client for its history with NautilusTrader's
``request_bars``; the bars arrive through ``on_historical_data`` (never ``on_bar``) and the
request's callback fires once the answer is complete. Live bars that arrive meanwhile wait and go
after the history, which is cut at the first of them (only bars that closed before the first live
bar are history). No complete answer within ``timeout_secs``, or a refused request: the component
goes on with the live bars alone (on the first live bar after the deadline: the deadline's time
alert may fire on the clock's own thread, so it only raises a flag and the bars are handled on
the event loop's thread, in order). Verified against nautilus_trader 1.231.0
(``Actor.request_bars``, ``handle_historical_data`` in STARTING and RUNNING states,
``_finish_response`` -> callback).
"""

from __future__ import annotations

from datetime import timedelta

from nautilus_trader.model.data import Bar, BarType

from hmm_strategy.warm_start import select_history

WARM_START_TIMER = "hmm-warm-start"


class HistoryRequester:
    """Mixin for a NautilusTrader ``Actor``/``Strategy`` whose ``on_bar`` starts with
    ``if self.waiting_for_history(bar): return``; it implements ``warm_up(bars)`` (the history,
    in time order) and ``no_history(why)``."""

    _history_request = None  # the pending request's id
    _history_bars: list[Bar]
    _waiting_bars: list[Bar]
    _history_limit = 0
    _history_timeout = 0.0
    _history_late = False
    _history_bar_type: BarType | None = None

    def request_history(
        self, bar_type: BarType, n: int, timeout_secs: float, *, limit: bool = False
    ) -> None:
        """Request the newest ``n`` bars before now. ``limit``: pass the count as the request's
        limit (adapters that fetch one default page without one); without it the request names
        only a start, ``n + 2`` steps back (slack for the bar still forming, adapters drop it)."""
        self._history_bars, self._waiting_bars = [], []
        self._history_limit, self._history_bar_type = n, bar_type
        self._history_timeout, self._history_late = timeout_secs, False
        now = self.clock.utc_now()
        try:
            self._history_request = self.request_bars(
                bar_type,
                start=now - bar_type.spec.timedelta * (n + 2),
                limit=n + 2 if limit else 0,
                callback=self._on_history_answer,
            )
        except Exception as exc:  # any refusal: go on without history rather than not at all
            self._history_request = None
            self.no_history(f"the history request failed ({type(exc).__name__}: {exc})")
            return
        self.clock.set_time_alert(
            WARM_START_TIMER, now + timedelta(seconds=timeout_secs), callback=self._on_history_late
        )
        self.log.info(
            f"Warm start: requested {n} bars of {bar_type} from the "
            f"{bar_type.instrument_id.venue} data client (timeout {timeout_secs:g} s)"
        )

    @property
    def history_pending(self) -> bool:
        return self._history_request is not None

    def waiting_for_history(self, bar: Bar) -> bool:
        """True (the bar is kept for later) while the history is still to come."""
        if self._history_request is None:
            return False
        if self._history_late:  # the deadline passed: the waiting bars first, then this one
            self._finish_history([], f"no complete answer within {self._history_timeout:g} s")
            return False
        self._waiting_bars.append(bar)
        return True

    def on_historical_data(self, data) -> None:
        wanted = self._history_request is not None and isinstance(data, Bar)
        if wanted and data.bar_type == self._history_bar_type:
            self._history_bars.append(data)

    def cancel_history(self) -> None:
        """On stop: no answer is waited for any more."""
        if WARM_START_TIMER in self.clock.timer_names:
            self.clock.cancel_timer(WARM_START_TIMER)
        self._history_request, self._history_bars, self._waiting_bars = None, [], []

    def _on_history_answer(self, request_id) -> None:
        if self._history_request is None or request_id != self._history_request:
            return  # answered after the timeout: the component already went on without it
        if WARM_START_TIMER in self.clock.timer_names:
            self.clock.cancel_timer(WARM_START_TIMER)
        self._finish_history(self._history_bars, "")

    def _on_history_late(self, _event) -> None:
        self._history_late = True  # only a flag: this may run on the clock's thread

    def _finish_history(self, bars: list[Bar], failure: str) -> None:
        """The history (strictly before the first waiting live bar) first, then the live bars."""
        self._history_request, self._history_bars = None, []
        waiting, self._waiting_bars = self._waiting_bars, []
        first_live = waiting[0].ts_event if waiting else None
        history = [] if failure else select_history(bars, first_live, self._history_limit)
        if history:
            self.warm_up(history)
        else:
            self.no_history(failure or "the venue returned no bars before the first live bar")
        for bar in waiting:  # as NautilusTrader hands live bars to on_bar: an error is logged
            try:
                self.on_bar(bar)
            except Exception as exc:
                self.log.exception(f"Error on handling {bar!r}", exc)
