"""Warm start: the history a strategy needs before its first decision, and how it is chosen.

A live node without a saved model used to wait ``features`` + ``fit.warmup_bars`` live bars (weeks
of 15-minute bars) before its first decision. With a warm start the strategy asks the venue's data
client for that history with NautilusTrader's ``request_bars`` when it starts, runs it through the
same engine (features, in-run fit or the saved model's filter, policy) without trading, and
decides on its first live bar. The history is strictly in the past: only bars that closed before
the first live bar are used, so every decision on live bars is the one a node that had streamed
those bars live would make.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

from hmm_strategy.engine import FitSettings, SlowLevel
from hmm_strategy.features import FeatureSpec

if TYPE_CHECKING:
    from nautilus_trader.model.data import Bar


class WarmStart(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Strategy config ``warm_start``: request history at start (live and paper nodes).

    ``bars``: how many bars to request; ``None`` = exactly what the engine needs before its first
    decision (:func:`bars_needed`). ``timeout_secs``: no complete answer by then = no history
    (the strategy warms up on live bars, as without a warm start). ``request_limit``: also pass
    the bar count as the request's ``limit``, for adapters that fetch one default page without
    one (Bybit: 200 bars); off for Binance, whose adapter pages forward from the start only while
    a page is full, so a limit above one page would stop it after the oldest page.
    """

    enabled: bool = True
    bars: int | None = None
    timeout_secs: float = 30.0
    request_limit: bool = False

    def __post_init__(self) -> None:
        if self.bars is not None and (isinstance(self.bars, bool) or self.bars < 1):
            raise ValueError(
                f"warm_start.bars must be >= 1 (or null = what the model needs), was {self.bars}"
            )
        if not (0 < self.timeout_secs < math.inf):  # also refuses NaN
            raise ValueError(f"warm_start.timeout_secs must be > 0, was {self.timeout_secs}")


def bars_needed(
    features: FeatureSpec, fit: FitSettings, slow: SlowLevel | None, has_model: bool
) -> int:
    """Bars the engine must see so that the NEXT bar yields a decision.

    Fast level: the feature windows (first complete row at index ``features.warmup_bars``), plus
    ``fit.warmup_bars`` rows to fit on when there is no saved model. Slow level: the same on
    coarse bars of ``bars_per_bar`` bars; the slow level is ready on the bar that closes its
    last needed coarse bar, and that bar is already decided on.
    """
    fast = features.warmup_bars + (0 if has_model else fit.warmup_bars)
    if slow is None:
        return fast
    coarse = slow.features.warmup_bars + (1 if has_model else slow.warmup_bars)
    return max(fast, coarse * slow.bars_per_bar - 1)


def select_history(bars: list[Bar], before_ns: int | None, limit: int) -> list[Bar]:
    """The newest ``limit`` bars, in time order, one per timestamp, all closed before
    ``before_ns`` (the first live bar, when one has arrived): nothing from the live feed's time
    on is ever used as history."""
    by_ts = {b.ts_event: b for b in bars if before_ns is None or b.ts_event < before_ns}
    return [by_ts[ts] for ts in sorted(by_ts)][-limit:]
