"""``CapitalAllocator``: splits the account's equity across the strategies and publishes budgets.

The rule, applied every ``rebalance_interval`` (checked at each sample, every ``sample_interval``
of the data's time in backtest and live alike, not through closed markets, see
``actors.performance.DataTimeSampler``) and at once whenever governance changes a strategy's
state:

1. ``investable = equity x (1 - cash_buffer)``; equity is the venue account's total balance plus
   the unrealized PnL of open positions (margin accounts), in ``currency``.
2. Paused and retired strategies get 0: their capital goes to the others.
3. Each active strategy's raw weight is ``tilt / max(vol, vol_floor)``: inverse volatility
   (annualised volatility of its returns over ``vol_window``, see ``actors.performance``) with a
   Sharpe tilt ``tilt = clip(1 + sharpe_tilt x sharpe, tilt_min, tilt_max)`` (Sharpe over
   ``sharpe_window``). A strategy without enough history yet takes the median volatility of
   the others (equal weights when nobody has history) and no tilt.
4. Weights are normalised, then bounded by each strategy's floor and cap (``min_weight`` /
   ``max_weight`` or its entry in ``limits``), redistributing the excess proportionally; capital
   that no strategy may take (all at their caps) stays in cash.
5. Moves are damped: an increase is at most ``max_change x investable`` per rebalance (and only
   out of capital actually free); a cut takes effect at once (falling equity or a pause must
   not wait); a change smaller than ``dead_band`` of the current budget is not sent, so small
   equity moves do not make every strategy re-trade.

The budget is the capital a strategy trades at full scale: a governance throttle is applied by
the strategy itself (it sizes ``budget x scale``), so throttled capital stays in cash rather
than levering the others. Budgets go out as ``Budget`` on ``hmm.budget.<strategy_id>``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import msgspec
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.identifiers import Venue

from actors.governance import governed_strategy_ids
from actors.performance import (
    SECONDS_PER_YEAR,
    DataTimeSampler,
    PerformanceBook,
    parse_duration,
    window_samples,
)
from hmm_strategy.messages import BUDGET_TOPIC, GOVERNANCE_TOPIC, REGIME_TOPIC, Budget, topic_for

_SAMPLE_TIMER = "allocator-sample"


class WeightLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Floor and cap of one strategy's weight, as fractions of the investable equity."""

    min_weight: float = 0.0
    max_weight: float = 1.0


class CapitalAllocatorConfig(ActorConfig, frozen=True):
    """
    Configuration for ``CapitalAllocator`` (see the module docstring for the rule).

    Parameters
    ----------
    venue : str
        The venue whose account equity is split.
    currency : str
        The account currency budgets are expressed in.
    strategy_ids : list[str], optional
        The strategies to fund (default: every strategy of the node); each must exist.
    sample_interval, rebalance_interval : str
        How often returns are sampled and how often weights are recomputed ("15m", "1d").
    vol_window, sharpe_window : str
        Windows of the volatility and of the Sharpe tilt.
    min_fill : float
        Share of a window that must hold samples before its statistic is used.
    vol_floor : float
        Lowest annualised volatility used (a flat strategy does not take everything).
    sharpe_tilt, tilt_min, tilt_max : float
        Weight multiplier ``clip(1 + sharpe_tilt x sharpe, tilt_min, tilt_max)``.
    cash_buffer : float
        Share of equity never allocated.
    min_weight, max_weight : float
        Default floor and cap per strategy (fractions of the investable equity).
    limits : dict[str, WeightLimits]
        Per-strategy floor/cap overriding the defaults.
    max_change : float
        Largest increase of one budget per rebalance, as a fraction of investable equity.
    dead_band : float
        Relative change of a budget below which it is not re-sent.

    """

    venue: str = "BINANCE"
    currency: str = "USDT"
    strategy_ids: list[str] | None = None
    sample_interval: str = "15m"
    rebalance_interval: str = "1d"
    vol_window: str = "30d"
    sharpe_window: str = "30d"
    min_fill: float = 0.5
    vol_floor: float = 0.05
    sharpe_tilt: float = 0.25
    tilt_min: float = 0.5
    tilt_max: float = 1.5
    cash_buffer: float = 0.1
    min_weight: float = 0.0
    max_weight: float = 1.0
    limits: dict[str, WeightLimits] = {}
    max_change: float = 0.25
    dead_band: float = 0.02

    def __post_init__(self) -> None:
        validate_allocation(self)


def validate_allocation(cfg: CapitalAllocatorConfig) -> None:
    """Every setting in range; raises ValueError naming the field."""

    def fail(field: str, msg: str) -> None:
        raise ValueError(f"allocator.{field}: {msg}")

    durations = {}
    for field in ("sample_interval", "rebalance_interval", "vol_window", "sharpe_window"):
        try:
            durations[field] = parse_duration(getattr(cfg, field))
        except ValueError as exc:
            fail(field, str(exc))
    for field in ("vol_window", "sharpe_window"):
        try:
            window_samples(getattr(cfg, field), durations["sample_interval"])
        except ValueError as exc:
            fail(field, str(exc))
    if not 0.0 < cfg.min_fill <= 1.0:
        fail("min_fill", f"must be in (0, 1], was {cfg.min_fill}")
    if not cfg.vol_floor > 0:
        fail("vol_floor", f"must be > 0, was {cfg.vol_floor}")
    if cfg.sharpe_tilt < 0:
        fail("sharpe_tilt", f"must be >= 0, was {cfg.sharpe_tilt}")
    if not 0.0 < cfg.tilt_min <= 1.0 <= cfg.tilt_max:
        fail("tilt_min", f"need 0 < tilt_min <= 1 <= tilt_max, got {cfg.tilt_min}, {cfg.tilt_max}")
    if not 0.0 <= cfg.cash_buffer < 1.0:
        fail("cash_buffer", f"must be in [0, 1), was {cfg.cash_buffer}")
    for key, lim in [("", WeightLimits(cfg.min_weight, cfg.max_weight)), *cfg.limits.items()]:
        where = f"limits.{key}." if key else ""
        if not 0.0 <= lim.min_weight <= 1.0:
            fail(f"{where}min_weight", f"must be in [0, 1], was {lim.min_weight}")
        if not 0.0 < lim.max_weight <= 1.0:
            fail(f"{where}max_weight", f"must be in (0, 1], was {lim.max_weight}")
        if lim.min_weight > lim.max_weight:
            fail(f"{where}min_weight", f"{lim.min_weight} exceeds max_weight {lim.max_weight}")
    if not 0.0 < cfg.max_change <= 1.0:
        fail("max_change", f"must be in (0, 1], was {cfg.max_change}")
    if not 0.0 <= cfg.dead_band < 1.0:
        fail("dead_band", f"must be in [0, 1), was {cfg.dead_band}")
    if cfg.strategy_ids is not None and len(set(cfg.strategy_ids)) != len(cfg.strategy_ids):
        fail("strategy_ids", "duplicate strategy id")


@dataclass(frozen=True)
class Candidate:
    """One strategy as the allocator sees it at a rebalance."""

    strategy_id: str
    active: bool
    volatility: float | None = None
    sharpe: float | None = None


def target_weights(candidates: list[Candidate], cfg: CapitalAllocatorConfig) -> dict[str, float]:
    """Fractions of the investable equity per strategy (inactive ones 0); sum <= 1."""
    weights = {c.strategy_id: 0.0 for c in candidates}
    active = [c for c in candidates if c.active]
    if not active:
        return weights
    known = [c.volatility for c in active if c.volatility is not None]
    fallback = statistics.median(known) if known else 1.0
    raw = {}
    for c in active:
        vol = max(c.volatility if c.volatility is not None else fallback, cfg.vol_floor)
        tilt = 1.0
        if c.sharpe is not None:
            tilt = min(max(1.0 + cfg.sharpe_tilt * c.sharpe, cfg.tilt_min), cfg.tilt_max)
        raw[c.strategy_id] = tilt / vol
    total = sum(raw.values())
    proportional = {k: v / total for k, v in raw.items()}
    lo = {k: _limits(cfg, k).min_weight for k in raw}
    hi = {k: _limits(cfg, k).max_weight for k in raw}
    floors = sum(lo.values())
    if floors > 1.0:  # more active strategies than the floors allow: scale the floors down
        lo = {k: v / floors for k, v in lo.items()}
    weights.update(bounded(proportional, lo, hi))
    return weights


def _limits(cfg: CapitalAllocatorConfig, sid: str) -> WeightLimits:
    return cfg.limits.get(sid) or WeightLimits(cfg.min_weight, cfg.max_weight)


def bounded(w: dict[str, float], lo: dict[str, float], hi: dict[str, float]) -> dict[str, float]:
    """Weights proportional to ``w`` within [lo, hi], summing to 1 unless the caps forbid it."""
    fixed: dict[str, float] = {}
    free = set(w)
    while free:
        remaining = 1.0 - sum(fixed.values())
        s = sum(w[k] for k in free)
        cand = {k: remaining * (w[k] / s if s > 0 else 1.0 / len(free)) for k in free}
        over = {k for k in free if cand[k] > hi[k] + 1e-12}
        under = {k for k in free if cand[k] < lo[k] - 1e-12}
        if not over and not under:
            return {**fixed, **cand}
        for k in over or under:
            fixed[k] = hi[k] if over else lo[k]
            free.discard(k)
    return fixed


def plan_budgets(
    equity: float,
    candidates: list[Candidate],
    previous: dict[str, float] | None,
    cfg: CapitalAllocatorConfig,
) -> dict[str, float]:
    """New budgets from the target weights, with the rate limit and dead band of the config."""
    investable = max(equity, 0.0) * (1.0 - cfg.cash_buffer)
    target = {k: w * investable for k, w in target_weights(candidates, cfg).items()}
    if previous is None:
        return target
    new: dict[str, float] = {}
    increases: dict[str, float] = {}
    for sid, goal in target.items():
        old = previous.get(sid, 0.0)
        if goal <= old:
            new[sid] = goal  # cuts are immediate
        else:
            new[sid] = old
            increases[sid] = min(goal - old, cfg.max_change * investable)
    room = max(investable - sum(new.values()), 0.0)
    wanted = sum(increases.values())
    factor = min(1.0, room / wanted) if wanted > 0 else 0.0
    for sid, inc in increases.items():
        new[sid] += inc * factor
    for sid, value in new.items():
        old = previous.get(sid, 0.0)
        if value > 0 and old > 0 and abs(value - old) < cfg.dead_band * old:
            new[sid] = old
    return new


class CapitalAllocator(Actor):
    """Publish each strategy's ``Budget`` from the account equity and the allocation rule."""

    def __init__(self, config: CapitalAllocatorConfig) -> None:
        super().__init__(config)
        self.book: PerformanceBook | None = None
        self.budgets: dict[str, float] | None = None  # last published
        self.active: dict[str, bool] = {}
        self.last_rebalance_ns = 0
        self.rebalances = 0
        interval = parse_duration(config.sample_interval)
        self._interval = interval
        self._rebalance_ns = parse_duration(config.rebalance_interval).total_seconds() * 1e9
        self._vol_n = window_samples(config.vol_window, interval)
        self._sharpe_n = window_samples(config.sharpe_window, interval)
        self._dirty = False
        self._undelivered: set[str] = set()  # strategies that were not listening yet
        self._sampler: DataTimeSampler | None = None  # samples on the data's time
        self._venue = Venue(config.venue)
        self._getters: dict[str, tuple] = {}  # strategy id -> (volatility, Sharpe) getters

    def on_start(self) -> None:
        cfg = self.config
        sids = governed_strategy_ids(self, cfg.strategy_ids, set(cfg.limits), "allocator")
        floors = sum(_limits(cfg, sid).min_weight for sid in sids)
        if floors > 1.0:
            raise ValueError(f"allocator: the floors of {sids} add up to {floors:g} > 1")
        self.active = dict.fromkeys(sids, True)
        self.book = PerformanceBook(
            self,
            sids,
            cfg.currency,
            [self._vol_n, self._sharpe_n],
            SECONDS_PER_YEAR / self._interval.total_seconds(),
            default_capital=0.0,  # no return is measured before the first budget
            min_fill=cfg.min_fill,
            shadow=False,  # volatility and Sharpe of actual returns only
        )
        self._getters = {}
        self.book.subscribe()
        self.msgbus.subscribe(f"{GOVERNANCE_TOPIC}.*", self.on_governance)
        self.msgbus.subscribe(f"{REGIME_TOPIC}.*", self._on_regime_update)
        # data time in backtest and live alike, never through a closed market
        self._sampler = DataTimeSampler(
            self, self._interval, self.sample, self._on_idle, _SAMPLE_TIMER
        )
        self._sampler.subscribe()

    def on_stop(self) -> None:
        if self._sampler is not None:
            self._sampler.unsubscribe()
        if self.book is not None:
            self.book.unsubscribe()
        for topic, handler in (
            (f"{GOVERNANCE_TOPIC}.*", self.on_governance),
            (f"{REGIME_TOPIC}.*", self._on_regime_update),
        ):
            if self.msgbus.is_subscribed(topic, handler):
                self.msgbus.unsubscribe(topic, handler)

    def on_reset(self) -> None:
        self.book, self.budgets, self.last_rebalance_ns = None, None, 0

    # -- handlers --------------------------------------------------------------------------------

    def on_governance(self, command) -> None:
        if command.strategy_id not in self.active:
            return
        active = command.action != "pause"
        if self.active[command.strategy_id] != active:
            self.active[command.strategy_id] = active
            self.log.info(f"{command.strategy_id} is now {'active' if active else 'paused'}")
            self.rebalance(command.ts_event)

    def _on_regime_update(self, update) -> None:
        # A strategy publishes its decision before sizing it: the last moment to fund it.
        if update.strategy_id in self._undelivered:
            self._deliver_pending(update.ts_event)

    def _deliver_pending(self, now: int) -> None:
        """Re-send budgets that were published before their strategy was listening."""
        for sid in sorted(self._undelivered):
            if self.budgets is not None and self.msgbus.has_subscribers(
                topic_for(BUDGET_TOPIC, sid)
            ):
                self._undelivered.discard(sid)
                self._publish(sid, self.budgets[sid], now)

    def _publish(self, sid: str, notional: float, now: int) -> None:
        if not self.msgbus.has_subscribers(topic_for(BUDGET_TOPIC, sid)):
            self._undelivered.add(sid)
        self.msgbus.publish(
            topic_for(BUDGET_TOPIC, sid), Budget(ts_event=now, strategy_id=sid, notional=notional)
        )

    def sample(self, now: int) -> None:
        """One sample period ends at ``now`` (data time): sample returns, rebalance when due."""
        if self._undelivered:
            self._deliver_pending(now)
        self.book.sample(now)
        if self._due(now):
            self.rebalance(now)

    def _due(self, now: int) -> bool:
        due = now - self.last_rebalance_ns >= self._rebalance_ns
        return self.budgets is None or due or self._dirty

    def _on_idle(self, periods: int, closure: int | None) -> None:
        """Data resumes after ``periods`` sample periods without any: their zero returns, and
        after a closure (ending at ``closure``) the rebalance a sample there would do."""
        self.book.idle(periods)
        if closure is None:
            return
        if self._undelivered:
            self._deliver_pending(closure)
        if self._due(closure):
            self.rebalance(closure)

    # -- allocation ------------------------------------------------------------------------------

    def account_equity(self) -> float | None:
        return self.book.account_equity(self._venue)

    def candidates(self) -> list[Candidate]:
        getters = self._getters
        if not getters:  # bound once per run (a daily rebalance reads the same two metrics)
            for sid, perf in self.book.perf.items():
                getters[sid] = (
                    perf.getter("volatility", self._vol_n),
                    perf.getter("sharpe", self._sharpe_n),
                )
        out = []
        for sid, active in self.active.items():
            vol, sharpe = getters[sid]
            out.append(Candidate(sid, active, _finite(vol()), _finite(sharpe())))
        return out

    def rebalance(self, now: int) -> dict[str, float] | None:
        """Recompute and publish the budgets now (None when the account is not known yet)."""
        equity = self.account_equity()
        if equity is None:
            self._dirty = True
            return None
        candidates = self.candidates()
        budgets = plan_budgets(equity, candidates, self.budgets, self.config)
        changed = {
            sid: value
            for sid, value in budgets.items()
            if self.budgets is None or not math.isclose(value, self.budgets.get(sid, -1.0))
        }
        for sid, value in changed.items():
            self._publish(sid, value, now)
        if changed:
            detail = ", ".join(
                f"{c.strategy_id}={budgets[c.strategy_id]:.2f}"
                f"{'' if c.active else ' (paused)'} vol={_fmt(c.volatility)} "
                f"sharpe={_fmt(c.sharpe)}"
                for c in candidates
            )
            self.log.info(f"Allocation of equity {equity:.2f} {self.config.currency}: {detail}")
        self.budgets = budgets
        self.last_rebalance_ns = now
        self.rebalances += 1
        self._dirty = False
        return budgets


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
