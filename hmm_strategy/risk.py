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
from typing import Literal

import msgspec

from hmm_strategy.sessions import ALWAYS_OPEN, calendar_for

BREAKER_REASONS = (  # the ``reason`` labels, defined once (the metrics export each by name)
    "daily_loss",
    "drawdown",
    "position_notional",
    "total_notional",
    "rejects",
    "stale_data",
    "price_jump",
    "kill_switch",
)
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


class CircuitBreakers:
    """Trip/reset state machine of the breakers for one strategy."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.calendar = calendar_for(config.calendar)  # None: 24/7 (ValueError if unknown)
        self.tripped: dict[str, str] = {}  # reason -> why
        self._cooldowns: dict[str, int] = {}  # reason -> fresh bars left before reset
        self.hwm = 0.0
        self.day = -1
        self.day_start_pnl = 0.0
        self.last_ts = 0
        self.interval_ns = 0  # the smallest step between bars seen: the bar interval
        self.missing_bars = 0  # bars missing before the last bar (a gap), 0 if none
        self.consecutive_rejects = 0
        self.var_ewm = 0.0  # EWMA of squared log returns, jumps excluded
        self.n_returns = 0

    # ------------------------------------------------------------------ events

    def observe_return(self, log_return: float | None) -> list[str]:
        """Check one bar's log return for a jump before its price is trusted anywhere.

        The reference volatility is an EWMA (span ``JUMP_SPAN`` bars) of the squared returns that
        were NOT jumps, so one bad print cannot inflate the yardstick for the next one.
        """
        cfg = self.config
        if log_return is None:
            return []
        r2 = log_return * log_return
        ready = self.n_returns >= JUMP_WARMUP and self.var_ewm > 0.0
        if cfg.jump_sigma is not None and ready and r2 > cfg.jump_sigma**2 * self.var_ewm:
            sigmas = abs(log_return) / self.var_ewm**0.5
            self._cooldowns["price_jump"] = cfg.cooldown_bars + 1  # this bar counts down too
            return self._trip("price_jump", f"log return {log_return:.4f} = {sigmas:.1f} sigma")
        self.n_returns += 1
        alpha = 2.0 / (JUMP_SPAN + 1.0) if ready else 1.0 / self.n_returns
        self.var_ewm += alpha * (r2 - self.var_ewm)
        return []

    def on_bar(self, ts: int, pnl: float, capital: float) -> list[str]:
        """Advance one bar (after ``observe_return``); return the reasons that tripped on it."""
        cfg = self.config
        new: list[str] = []
        if self._cooldowns:
            for reason in list(self._cooldowns):
                self._cooldowns[reason] -= 1
                if self._cooldowns[reason] <= 0:
                    self.reset(reason)
        gap = ts - self.last_ts if self.last_ts else 0
        if self.last_ts and (self.interval_ns == 0 or 0 < gap < self.interval_ns):
            self.interval_ns = gap  # the bar interval: the smallest calendar step seen
        if gap and self.calendar is not None:  # only open-market time can miss bars
            gap = self.calendar.open_ns(self.last_ts, ts)
        interval = self.interval_ns
        self.missing_bars = round(gap / interval) - 1 if interval and 2 * gap > 3 * interval else 0
        if (
            cfg.stale_after_bars is not None
            and self.interval_ns
            and gap > (cfg.stale_after_bars * self.interval_ns)
        ):
            open_market = " of open market" if self.calendar is not None else ""
            new += self._trip(
                "stale_data", f"no bar for {gap / self.interval_ns:.1f} intervals{open_market}"
            )
            self._cooldowns["stale_data"] = cfg.cooldown_bars
        self.last_ts = ts

        day = ts // NS_PER_DAY
        if day != self.day:
            self.day, self.day_start_pnl = day, pnl
            self.reset("daily_loss")
            if cfg.drawdown_reset == "next_day":
                self.reset("drawdown")
                self.hwm = pnl
        if capital > 0.0:
            if cfg.daily_loss_limit is not None:
                loss = (self.day_start_pnl - pnl) / capital
                if loss > cfg.daily_loss_limit:
                    new += self._trip("daily_loss", f"lost {loss:.1%} of capital today")
            self.hwm = max(self.hwm, pnl)
            if cfg.max_drawdown is not None:
                drawdown = (self.hwm - pnl) / capital
                if drawdown > cfg.max_drawdown:
                    new += self._trip("drawdown", f"drawdown {drawdown:.1%} of capital")
        return new

    def on_reject(self) -> list[str]:
        self.consecutive_rejects += 1
        limit = self.config.max_consecutive_rejects
        if limit is not None and self.consecutive_rejects >= limit:
            self._cooldowns["rejects"] = self.config.cooldown_bars
            return self._trip("rejects", f"{self.consecutive_rejects} orders rejected in a row")
        return []

    def on_fill(self) -> None:
        self.consecutive_rejects = 0
        self.reset("rejects")

    def set_kill_switch(self, halted: bool, why: str = "") -> list[str]:
        if halted:
            return self._trip("kill_switch", why or "kill switch")
        self.reset("kill_switch")
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
        cap = self.config.max_position_notional or max_notional
        if abs(target_qty) * price > cap * (1.0 + 1e-9):
            return "position_notional"
        total = self.config.max_total_notional
        if total is not None and other_notional + abs(target_qty) * price > total:
            return "total_notional"
        return None

    # ------------------------------------------------------------------ state

    def reset(self, reason: str | None = None) -> None:
        """Clear one breaker (or all): the operator's manual reset goes through here."""
        reasons = list(self.tripped) if reason is None else [reason]
        for r in reasons:
            self.tripped.pop(r, None)
            self._cooldowns.pop(r, None)

    def _trip(self, reason: str, why: str) -> list[str]:
        if reason in self.tripped:
            return []
        self.tripped[reason] = why
        return [reason]

    def state(self) -> dict:
        return {
            "tripped": dict(self.tripped),
            "cooldowns": dict(self._cooldowns),
            "hwm": self.hwm,
            "day": self.day,
            "day_start_pnl": self.day_start_pnl,
            "last_ts": self.last_ts,
            "interval_ns": self.interval_ns,
            "consecutive_rejects": self.consecutive_rejects,
            "var_ewm": self.var_ewm,
            "n_returns": self.n_returns,
        }

    def restore(self, state: dict) -> None:
        self.tripped = {str(k): str(v) for k, v in state["tripped"].items()}
        self._cooldowns = {str(k): int(v) for k, v in state["cooldowns"].items()}
        self.hwm = float(state["hwm"])
        self.day = int(state["day"])
        self.day_start_pnl = float(state["day_start_pnl"])
        self.last_ts = int(state["last_ts"])
        self.interval_ns = int(state["interval_ns"])
        self.consecutive_rejects = int(state["consecutive_rejects"])
        self.var_ewm = float(state["var_ewm"])
        self.n_returns = int(state["n_returns"])
