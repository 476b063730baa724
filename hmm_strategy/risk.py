"""Our circuit breakers, on top of NautilusTrader's RiskEngine pre-trade checks.

The RiskEngine checks each order (rate limits, max notional per order). These breakers watch the
strategy's own P&L and its market data and block NEW RISK (orders that grow the position or flip
it) while tripped; orders that reduce risk always pass. Each trip and each blocked order is
logged and published as ``BreakerRejection`` with a bounded ``reason`` label:

==================  =====================================================  ==================
reason              trips when                                             resets
==================  =====================================================  ==================
daily_loss          P&L since the UTC day began < -daily_loss_limit        next UTC day
drawdown            equity below its high-water mark by > max_drawdown     ``drawdown_reset``
position_notional   the order would exceed max_position_notional           (per order)
total_notional      all strategies' positions would exceed the total cap   (per order)
rejects             max_consecutive_rejects orders rejected/denied in a    a fill, or
                    row                                                    ``cooldown_bars``
stale_data          a gap of more than ``stale_after_bars`` intervals of   ``cooldown_bars``
                    open market between bars (``calendar``)                fresh bars later
price_jump          |log return| > jump_sigma x the volatility of the       ``cooldown_bars``
                    returns so far (an EWMA that jumps never enter)
kill_switch         the operator's kill switch (TRADING_ENABLED / file)    operator
==================  =====================================================  ==================

Gaps are measured in bar intervals of *open market* time on the strategy's trading calendar
(``calendar``: ``"24/7"`` for crypto, ``"FX"``, or an exchange such as ``"XNYS"``; see
``hmm_strategy.sessions``), so nights, weekends and holidays are neither stale data nor missing
bars, while a hole inside a session still is.

Losses are fractions of the strategy's capital (its budget), so a breaker means the same thing at
any size. Everything is plain Python state so it checkpoints with the strategy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec

from hmm_strategy.sessions import ALWAYS_OPEN, calendar_for

NS_PER_DAY = 86_400_000_000_000
JUMP_SPAN = 96  # bars in the EWMA of squared returns (a day of 15-minute bars)
JUMP_WARMUP = 20  # returns seen before jumps are judged


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds; ``None`` switches a breaker off."""

    daily_loss_limit: float | None = 0.05
    max_drawdown: float | None = 0.20
    drawdown_reset: Literal["manual", "next_day"] = "next_day"
    max_position_notional: float | None = None  # None: the strategy's max_notional
    max_total_notional: float | None = None
    max_consecutive_rejects: int | None = 5
    stale_after_bars: float | None = 3.0
    jump_sigma: float | None = 10.0
    cooldown_bars: int = 4
    flatten_on_trip: bool = False
    calendar: str = ALWAYS_OPEN  # when the market is open: "24/7", "FX" or e.g. "XNYS"

    def __post_init__(self) -> None:
        for name in ("daily_loss_limit", "max_drawdown"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] (a fraction of capital), was {value}")
        for name in ("max_position_notional", "max_total_notional", "stale_after_bars"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, was {value}")
        if self.jump_sigma is not None and not self.jump_sigma > 1.0:
            raise ValueError(f"jump_sigma must be > 1, was {self.jump_sigma}")
        if self.max_consecutive_rejects is not None and self.max_consecutive_rejects < 1:
            raise ValueError(
                f"max_consecutive_rejects must be >= 1, was {self.max_consecutive_rejects}"
            )
        for name in ("daily_loss_limit", "max_drawdown", "max_position_notional",
                     "max_total_notional", "stale_after_bars", "jump_sigma"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number or null (off), was {value}")
        if self.cooldown_bars < 0:
            raise ValueError(f"cooldown_bars must be >= 0, was {self.cooldown_bars}")
        calendar_for(self.calendar)  # an unknown calendar fails when the config loads


class PnLTracker:
    """Average-cost P&L of one strategy's net position, from its own fills (quote currency)."""

    def __init__(self) -> None:
        self.qty = 0.0
        self.avg_px = 0.0
        self.realized = 0.0
        self.fees = 0.0
        self.last_px = 0.0

    def on_fill(self, signed_qty: float, price: float, commission: float) -> None:
        self.fees += commission
        self.last_px = price
        qty = self.qty
        if qty == 0.0 or qty * signed_qty > 0.0:  # opening or adding
            total = qty + signed_qty
            self.avg_px = (self.avg_px * abs(qty) + price * abs(signed_qty)) / abs(total)
            self.qty = total
            return
        closed = min(abs(signed_qty), abs(qty))
        self.realized += closed * (price - self.avg_px) * (1.0 if qty > 0 else -1.0)
        remaining = qty + signed_qty
        if abs(remaining) < 1e-12:
            self.qty, self.avg_px = 0.0, 0.0
        elif remaining * qty < 0.0:  # flipped through zero: the rest opens at this price
            self.qty, self.avg_px = remaining, price
        else:
            self.qty = remaining

    def mark(self, price: float) -> None:
        self.last_px = price

    @property
    def equity_pnl(self) -> float:
        """Realised + unrealised P&L net of fees."""
        return self.realized + self.qty * (self.last_px - self.avg_px) - self.fees

    def state(self) -> dict:
        return dict(self.__dict__)

    def restore(self, state: dict) -> None:
        for key in ("qty", "avg_px", "realized", "fees", "last_px"):
            setattr(self, key, float(state[key]))


@dataclass(frozen=True, slots=True)
class Trip:
    """A breaker's verdict: why it trips, and after how many fresh bars it resets by itself."""

    why: str
    cooldown: int | None = None  # None: only a day roll, a fill or the operator resets it


class BarStep(msgspec.Struct, frozen=True, gc=False):
    """What one bar tells the breakers (the gate measures the gap and the day once for all).

    A msgspec struct built in C: one is built per bar, and a frozen dataclass's ``__init__``
    (one ``object.__setattr__`` per field) cost ~1 us, a NamedTuple's Python ``__new__`` ~0.5 us
    more than this; ``gc=False``: its fields are numbers, nothing for the collector to track."""

    gap_ns: int  # open-market time since the previous bar (0 on the first bar)
    interval_ns: int  # the bar interval: the smallest step seen so far
    open_market_only: bool  # gaps count only open-market time (a trading calendar is set)
    new_day: bool
    pnl: float
    capital: float


@dataclass(frozen=True, slots=True)
class OrderStep:
    """An order that would grow or flip the position, as the notional breakers see it."""

    target_notional: float
    max_notional: float  # the strategy's own cap
    other_notional: float  # every other strategy's position notional


class Breaker:
    """One circuit breaker: its ``reason`` label, its own state and the events it watches.

    A new breaker is one subclass added to ``BREAKERS``; the gate (:class:`CircuitBreakers`) keeps
    the trips, cooldowns and resets, so every breaker behaves the same way once tripped. Hooks
    return a :class:`Trip` (or True from ``blocks``) when the breaker fires, None otherwise.
    """

    reason: ClassVar[str]

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config

    def on_return(self, log_return: float) -> Trip | None:
        return None

    def on_bar(self, bar: BarStep, gate: CircuitBreakers) -> Trip | None:
        return None

    def on_reject(self) -> Trip | None:
        return None

    def on_fill(self, gate: CircuitBreakers) -> None:
        return None

    def blocks(self, order: OrderStep) -> bool:
        return False

    def state(self) -> dict[str, float | int]:
        """Plain numbers for the checkpoint (keys unique across breakers)."""
        return {}

    def restore(self, state: dict) -> None:
        return None


class StaleData(Breaker):
    reason = "stale_data"

    def on_bar(self, bar: BarStep, gate: CircuitBreakers) -> Trip | None:
        limit = self.config.stale_after_bars
        if limit is None or not bar.interval_ns or not bar.gap_ns > limit * bar.interval_ns:
            return None
        open_market = " of open market" if bar.open_market_only else ""
        return Trip(
            f"no bar for {bar.gap_ns / bar.interval_ns:.1f} intervals{open_market}",
            self.config.cooldown_bars,
        )


class DailyLoss(Breaker):
    reason = "daily_loss"

    def __init__(self, config: BreakerConfig) -> None:
        super().__init__(config)
        self.day_start_pnl = 0.0

    def on_bar(self, bar: BarStep, gate: CircuitBreakers) -> Trip | None:
        if bar.new_day:
            self.day_start_pnl = bar.pnl
            gate.reset(self.reason)
        limit = self.config.daily_loss_limit
        if bar.capital > 0.0 and limit is not None:
            loss = (self.day_start_pnl - bar.pnl) / bar.capital
            if loss > limit:
                return Trip(f"lost {loss:.1%} of capital today")
        return None

    def state(self) -> dict[str, float | int]:
        return {"day_start_pnl": self.day_start_pnl}

    def restore(self, state: dict) -> None:
        self.day_start_pnl = float(state["day_start_pnl"])


class Drawdown(Breaker):
    reason = "drawdown"

    def __init__(self, config: BreakerConfig) -> None:
        super().__init__(config)
        self.hwm = 0.0

    def on_bar(self, bar: BarStep, gate: CircuitBreakers) -> Trip | None:
        if bar.new_day and self.config.drawdown_reset == "next_day":
            gate.reset(self.reason)
            self.hwm = bar.pnl
        if bar.capital > 0.0:
            if bar.pnl > self.hwm:  # max(hwm, pnl) without a builtin call: every bar
                self.hwm = bar.pnl
            limit = self.config.max_drawdown
            if limit is not None:
                drawdown = (self.hwm - bar.pnl) / bar.capital
                if drawdown > limit:
                    return Trip(f"drawdown {drawdown:.1%} of capital")
        return None

    def state(self) -> dict[str, float | int]:
        return {"hwm": self.hwm}

    def restore(self, state: dict) -> None:
        self.hwm = float(state["hwm"])


class PriceJump(Breaker):
    """The reference volatility is an EWMA (span ``JUMP_SPAN`` bars) of the squared returns that
    were NOT jumps, so one bad print cannot inflate the yardstick for the next one."""

    reason = "price_jump"

    def __init__(self, config: BreakerConfig) -> None:
        super().__init__(config)
        self.var_ewm = 0.0  # EWMA of squared log returns, jumps excluded
        self.n_returns = 0

    def on_return(self, log_return: float) -> Trip | None:
        r2 = log_return * log_return
        ready = self.n_returns >= JUMP_WARMUP and self.var_ewm > 0.0
        sigma = self.config.jump_sigma
        if sigma is not None and ready and r2 > sigma**2 * self.var_ewm:
            sigmas = abs(log_return) / self.var_ewm**0.5
            # this bar counts down too
            return Trip(
                f"log return {log_return:.4f} = {sigmas:.1f} sigma", self.config.cooldown_bars + 1
            )
        self.n_returns += 1
        alpha = 2.0 / (JUMP_SPAN + 1.0) if ready else 1.0 / self.n_returns
        self.var_ewm += alpha * (r2 - self.var_ewm)
        return None

    def state(self) -> dict[str, float | int]:
        return {"var_ewm": self.var_ewm, "n_returns": self.n_returns}

    def restore(self, state: dict) -> None:
        self.var_ewm = float(state["var_ewm"])
        self.n_returns = int(state["n_returns"])


class Rejects(Breaker):
    reason = "rejects"

    def __init__(self, config: BreakerConfig) -> None:
        super().__init__(config)
        self.consecutive_rejects = 0

    def on_reject(self) -> Trip | None:
        self.consecutive_rejects += 1
        limit = self.config.max_consecutive_rejects
        if limit is not None and self.consecutive_rejects >= limit:
            why = f"{self.consecutive_rejects} orders rejected in a row"
            return Trip(why, self.config.cooldown_bars)
        return None

    def on_fill(self, gate: CircuitBreakers) -> None:
        self.consecutive_rejects = 0
        gate.reset(self.reason)

    def state(self) -> dict[str, float | int]:
        return {"consecutive_rejects": self.consecutive_rejects}

    def restore(self, state: dict) -> None:
        self.consecutive_rejects = int(state["consecutive_rejects"])


class PositionNotional(Breaker):
    reason = "position_notional"

    def blocks(self, order: OrderStep) -> bool:
        cap = self.config.max_position_notional or order.max_notional
        return order.target_notional > cap * (1.0 + 1e-9)


class TotalNotional(Breaker):
    reason = "total_notional"

    def blocks(self, order: OrderStep) -> bool:
        total = self.config.max_total_notional
        return total is not None and order.other_notional + order.target_notional > total


class KillSwitch(Breaker):
    """Tripped and reset by the operator only (``CircuitBreakers.set_kill_switch``)."""

    reason = "kill_switch"


# In the order they are evaluated on each event (a bar: stale data, daily loss, then drawdown).
BREAKERS: tuple[type[Breaker], ...] = (
    StaleData,
    DailyLoss,
    Drawdown,
    PriceJump,
    Rejects,
    PositionNotional,
    TotalNotional,
    KillSwitch,
)
BREAKER_REASONS = tuple(b.reason for b in BREAKERS)  # the ``reason`` labels the metrics export


def _hooks(breakers: list[Breaker], event: str) -> tuple[tuple[str, Callable], ...]:
    """``(reason, bound hook)`` of the breakers that override ``event``'s hook, in order."""
    base = getattr(Breaker, event)
    watching = [b for b in breakers if getattr(type(b), event) is not base]
    return tuple((b.reason, getattr(b, event)) for b in watching)


class CircuitBreakers:
    """The gate over the breakers of one strategy: trips, cooldowns, resets and the bar clock."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.calendar = calendar_for(config.calendar)  # None: 24/7 (ValueError if unknown)
        self.breakers = [cls(config) for cls in BREAKERS]
        self._by_reason = {b.reason: b for b in self.breakers}
        # per event, only the breakers that watch it (the base hooks never fire): a bar calls
        # 1 + 3 hooks instead of 2 x 8, in ``BREAKERS`` order
        self._return_hooks = _hooks(self.breakers, "on_return")
        self._bar_hooks = _hooks(self.breakers, "on_bar")
        self._reject_hooks = _hooks(self.breakers, "on_reject")
        self.tripped: dict[str, str] = {}  # reason -> why
        self._cooldowns: dict[str, int] = {}  # reason -> fresh bars left before reset
        self.day = -1
        self.last_ts = 0
        self.interval_ns = 0  # the smallest step between bars seen: the bar interval
        self.missing_bars = 0  # bars missing before the last bar (a gap), 0 if none

    def __getattr__(self, name: str) -> Any:
        # a breaker's own state (hwm, consecutive_rejects, var_ewm, ...) reads through the gate
        for breaker in self.__dict__.get("breakers", ()):
            if name in breaker.__dict__:
                return breaker.__dict__[name]
        raise AttributeError(name)

    # ------------------------------------------------------------------ events

    def observe_return(self, log_return: float | None) -> list[str]:
        """Check one bar's log return for a jump before its price is trusted anywhere."""
        new: list[str] = []
        if log_return is not None:
            for reason, hook in self._return_hooks:  # the loop of ``_fire``, inlined: every bar
                trip = hook(log_return)
                if trip is not None:
                    self._record(reason, trip, new)
        return new

    def on_bar(self, ts: int, pnl: float, capital: float) -> list[str]:
        """Advance one bar (after ``observe_return``); return the reasons that tripped on it."""
        if self._cooldowns:
            for reason in list(self._cooldowns):
                self._cooldowns[reason] -= 1
                if self._cooldowns[reason] <= 0:
                    self.reset(reason)
        last, calendar = self.last_ts, self.calendar
        gap = ts - last if last else 0
        if last and (self.interval_ns == 0 or 0 < gap < self.interval_ns):
            self.interval_ns = gap  # the bar interval: the smallest calendar step seen
        if gap and calendar is not None:  # only open-market time can miss bars
            gap = calendar.open_ns(last, ts)
        interval = self.interval_ns
        self.missing_bars = round(gap / interval) - 1 if interval and 2 * gap > 3 * interval else 0
        self.last_ts = ts
        day = ts // NS_PER_DAY
        new_day = day != self.day
        self.day = day
        step = BarStep(gap, interval, calendar is not None, new_day, pnl, capital)
        new: list[str] = []
        for reason, hook in self._bar_hooks:  # the loop of ``_fire``, inlined: every bar
            trip = hook(step, self)
            if trip is not None:
                self._record(reason, trip, new)
        return new

    def on_reject(self) -> list[str]:
        return self._fire(self._reject_hooks)

    def on_fill(self) -> None:
        for breaker in self.breakers:
            breaker.on_fill(self)

    def set_kill_switch(self, halted: bool, why: str = "") -> list[str]:
        if halted:
            return self._trip(KillSwitch.reason, why or "kill switch")
        self.reset(KillSwitch.reason)
        return []

    # ------------------------------------------------------------------ order gate

    def check_order(
        self,
        current_qty: float,
        target_qty: float,
        price: float,
        max_notional: float,
        other_notional: float = 0.0,
    ) -> str | None:
        """The reason to block moving from ``current_qty`` to ``target_qty``, or None."""
        increases = abs(target_qty) > abs(current_qty) or current_qty * target_qty < 0.0
        if not increases:
            return None
        if self.tripped:
            return next(iter(self.tripped))
        order = OrderStep(abs(target_qty) * price, max_notional, other_notional)
        return next((b.reason for b in self.breakers if b.blocks(order)), None)

    # ------------------------------------------------------------------ state

    def reset(self, reason: str | None = None) -> None:
        """Clear one breaker (or all): the operator's manual reset goes through here."""
        reasons = list(self.tripped) if reason is None else [reason]
        for r in reasons:
            self.tripped.pop(r, None)
            self._cooldowns.pop(r, None)

    def _fire(self, hooks: tuple[tuple[str, Callable[..., Trip | None]], ...], *args) -> list[str]:
        new: list[str] = []
        for reason, hook in hooks:
            trip = hook(*args)
            if trip is not None:
                self._record(reason, trip, new)
        return new

    def _record(self, reason: str, trip: Trip, new: list[str]) -> None:
        """A breaker fired: trip it (``new`` gets the reason unless it was already tripped)."""
        if trip.cooldown is not None:  # a trip while tripped restarts the cooldown
            self._cooldowns[reason] = trip.cooldown
        new += self._trip(reason, trip.why)

    def _trip(self, reason: str, why: str) -> list[str]:
        if reason in self.tripped:
            return []
        self.tripped[reason] = why
        return [reason]

    def state(self) -> dict:
        state: dict = {
            "tripped": dict(self.tripped),
            "cooldowns": dict(self._cooldowns),
            "day": self.day,
            "last_ts": self.last_ts,
            "interval_ns": self.interval_ns,
        }
        for breaker in self.breakers:
            state.update(breaker.state())
        return state

    def restore(self, state: dict) -> None:
        self.tripped = {str(k): str(v) for k, v in state["tripped"].items()}
        self._cooldowns = {str(k): int(v) for k, v in state["cooldowns"].items()}
        self.day = int(state["day"])
        self.last_ts = int(state["last_ts"])
        self.interval_ns = int(state["interval_ns"])
        for breaker in self.breakers:
            breaker.restore(state)
