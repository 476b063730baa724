"""Per-strategy performance: rolling Sharpe/Sortino, drawdown, win rate, turnover, fees.

Two layers, so the maths is testable without a node:

* ``RollingStats`` and ``StrategyPerformance`` are plain Python. A strategy's return over one
  sample period is ``(PnL_t - PnL_{t-1}) / deployed capital_{t-1}``, where PnL is realized
  (net of commissions) + unrealized and deployed capital is the allocator's budget times the
  governance scale. Returns are therefore per unit of capital actually at risk: throttling a
  strategy does not make it look better or worse. They compound into a NAV index (start 1.0),
  from which drawdowns are measured. ``equity`` = allocated capital + realized + unrealized PnL.
* ``PerformanceBook`` feeds them from a NautilusTrader node: position events
  (``events.position.*``: realized PnL per position cycle, closed trades), order events
  (``events.order.*``: fills, commissions, traded notional), the strategies' ``RegimeUpdate``
  (model version, and the "shadow" return of the published target), ``Budget`` and
  ``GovernanceCommand`` messages; unrealized PnL is read from the cache when the owning actor
  samples.
* ``DataTimeSampler`` says *when* to sample in a live node: every ``interval`` of the data's time
  (bar timestamps and the replay feed's ``DataTime``), not of the wall clock. A backtest samples
  on a node-clock timer, which is the data's time already; sampling on data time in a live node
  makes an accelerated replay sample exactly where the backtest does (same samples, same
  governance decisions, same budgets), and a closed market is sampled when its data resumes.

Samples taken before the strategy's first decision (warm-up), or while it has no capital
deployed and its PnL did not move (paused and flat), are skipped, so neither a warm-up nor a
pause dilutes volatility or flatters the Sharpe ratio. The
*shadow* return is what the strategy's published target would have earned (target_{t-1} x
price return, minus ``fee_rate`` x |target change|); it keeps running while the strategy is
paused, which is what a resume condition needs.
"""

from __future__ import annotations

import functools
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SECONDS_PER_YEAR = 365 * 86400  # crypto trades every day; annualisation uses calendar time

WINDOWED_METRICS = frozenset(
    {"sharpe", "sortino", "volatility", "return", "shadow_sharpe", "shadow_return"}
)
SCALAR_METRICS = frozenset(
    {
        "drawdown",
        "max_drawdown",
        "win_rate",
        "trade_count",
        "turnover",
        "fees",
        "pnl",
        "equity",
        "nav",
    }
)
METRICS = WINDOWED_METRICS | SCALAR_METRICS
PERSISTED_STATE = (
    "nav",
    "peak",
    "hwm",
    "max_drawdown",
    "realized_pnl",
    "fees",
    "traded_notional",
    "capital_sum",
    "samples",
    "trades",
    "wins",
    "fills",
)


MAX_DURATION_SECS = 100 * 366 * 86_400  # beyond this a duration is a typo (and overflows)
MAX_WINDOW_SAMPLES = 1_000_000  # ~28 years of 15-minute samples


def parse_duration(text: str) -> timedelta:
    """``"15m"``, ``"24h"``, ``"30d"``, ``"1w"``, ``"90s"`` -> timedelta (must be > 0)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number and s|m|h|d|w, e.g. '30d'")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_SECS:
        raise ValueError(f"duration {text!r} must be > 0 and at most 100 years")
    return timedelta(seconds=seconds)


def window_samples(window: str, sample_interval: timedelta) -> int:
    """Number of sample periods in ``window`` (at least 2, else a clear error)."""
    n = round(parse_duration(window) / sample_interval)
    if n < 2:
        raise ValueError(
            f"window {window!r} holds fewer than 2 samples of {sample_interval} (lengthen it)"
        )
    if n > MAX_WINDOW_SAMPLES:  # each sample is kept in memory: refuse rather than exhaust it
        raise ValueError(
            f"window {window!r} holds {n:,} samples of {sample_interval}; at most "
            f"{MAX_WINDOW_SAMPLES:,} (shorten it or sample less often)"
        )
    return n


class RollingStats:
    """Mean, standard deviation and downside deviation of the last ``n`` returns, O(1) per push.

    Running sums drift; they are recomputed exactly every ``n`` pushes, and are exactly zero
    once the window holds only zeros (a drift of 1e-20 would otherwise make a Sharpe or
    Sortino ratio of a flat window a huge number instead of undefined). Only the non-zero
    values are stored, each with its sample index: a zero adds nothing to any sum, so
    ``push_zeros(k)`` (the sample periods of a closed market, see
    ``StrategyPerformance.sample``) only advances the index and lets the values that fell out
    of the window leave; its cost does not depend on ``k`` nor on how many zeros the window
    holds. The sums are the same, to the bit, as pushing every zero alone and keeping zeros
    (values are added and taken away in the same order).
    """

    __slots__ = ("n", "_vals", "_len", "_pushes", "_sum", "_sumsq", "_downsq", "_log")

    def __init__(self, n: int) -> None:
        if n < 2:
            raise ValueError(f"a rolling window needs n >= 2, got {n}")
        self.n = n
        # (sample index, value, log1p(value)) of the non-zero values in the window, oldest first
        self._vals: deque[tuple[int, float, float]] = deque()
        self._len = 0  # sample periods in the window: min(pushes, n)
        self._pushes = 0  # sample periods pushed so far (the index of the next one)
        self._sum = 0.0
        self._sumsq = 0.0
        self._downsq = 0.0
        self._log = 0.0

    def __len__(self) -> int:
        return self._len

    def push(self, r: float, zeros: int = 0) -> None:
        """Push ``r``; with ``zeros``, after that many zero returns: ``push_zeros(zeros)`` then
        ``push(r)``, the same operations in one call (the idle periods of an hourly bar)."""
        index = self._pushes
        n = self.n
        if zeros > 0:  # push_zeros(zeros), written out
            before, index = index, index + zeros
            self._pushes = index
            if index > n:
                self._len = n
                vals = self._vals
                if vals and vals[0][0] < index - n:
                    self._evict(index - n)
            else:
                self._len = index
            if index // n != before // n:
                self._recompute()
        self._pushes = pushes = index + 1
        if r != 0.0:  # a zero (or -0.0) adds nothing: not stored (NaN is stored)
            rr = r * r
            lg = math.log1p(-0.999999 if r < -0.999999 else r)  # = max(r, -0.999999)
            self._vals.append((index, r, lg))
            self._sum += r
            self._sumsq += rr
            if r < 0:
                self._downsq += rr
            self._log += lg
        if pushes > n:
            vals = self._vals
            if vals and vals[0][0] < pushes - n:
                self._evict(pushes - n)
        else:
            self._len = pushes
        if pushes % n == 0:
            self._recompute()

    def push_zeros(self, k: int) -> None:
        """``k`` zero returns at once (they add nothing to the sums; old values leave)."""
        if k <= 0:
            return
        before = self._pushes
        self._pushes = pushes = before + k
        n = self.n
        if pushes > n:
            self._len = n
            vals = self._vals
            if vals and vals[0][0] < pushes - n:
                self._evict(pushes - n)
        else:
            self._len = pushes
        if pushes // n != before // n:
            self._recompute()

    def _evict(self, first: int) -> None:
        """The values of sample indices before ``first`` leave the window, oldest first."""
        vals = self._vals
        while vals and vals[0][0] < first:
            _, v, lg = vals.popleft()
            vv = v * v
            self._sum -= v
            self._sumsq -= vv
            if v < 0:
                self._downsq -= vv
            self._log -= lg
        if not vals:
            self._sum = self._sumsq = self._downsq = self._log = 0.0

    def _recompute(self) -> None:
        """The sums, exactly (``math.fsum``) over the non-zero values: O(non-zero values), not
        O(window) of a mostly idle one."""
        vals = self._vals
        if not vals:
            self._sum = self._sumsq = self._downsq = self._log = 0.0
            return
        xs, sq, down, logs = [], [], [], []
        for _, v, lg in vals:
            xs.append(v)
            q = v * v
            sq.append(q)
            if v < 0:
                down.append(q)
            logs.append(lg)
        fsum = math.fsum
        self._sum, self._sumsq, self._downsq, self._log = fsum(xs), fsum(sq), fsum(down), fsum(logs)

    def mean(self) -> float | None:
        return self._sum / self._len if self._len else None

    def std(self) -> float | None:
        """Sample standard deviation (ddof=1)."""
        k = self._len
        if k < 2:
            return None
        var = (self._sumsq - self._sum * self._sum / k) / (k - 1)
        return math.sqrt(var) if var > 1e-30 else 0.0

    def downside_deviation(self) -> float | None:
        """sqrt(mean(min(r, 0)^2)): the Sortino denominator with a zero target."""
        k = self._len
        return math.sqrt(max(self._downsq, 0.0) / k) if k else None

    def sharpe(self, periods_per_year: float) -> float | None:
        """Annualised mean/std; None when undefined (fewer than 2 returns or no variation)."""
        mean, std = self.mean(), self.std()
        if mean is None or not std:
            return None
        return mean / std * math.sqrt(periods_per_year)

    def sortino(self, periods_per_year: float) -> float | None:
        """Annualised mean/downside deviation; None when no return in the window was negative."""
        mean, down = self.mean(), self.downside_deviation()
        if mean is None or self._len < 2 or not down or down < 1e-15:
            return None
        return mean / down * math.sqrt(periods_per_year)

    def volatility(self, periods_per_year: float) -> float | None:
        std = self.std()
        return None if std is None else std * math.sqrt(periods_per_year)

    def total_return(self) -> float | None:
        """Compounded return over the window."""
        return math.expm1(self._log) if self._len else None


class StrategyPerformance:
    """One strategy's running performance; fed with PnL, fills and decisions, sampled on a clock.

    ``windows`` are rolling-window lengths in samples (one ``RollingStats`` each, for the actual
    and, unless ``shadow`` is False, for the shadow returns); ``min_fill`` is the fraction of a
    window that must hold returns before its windowed metrics are reported (otherwise None: a
    rule on them does not fire).
    """

    def __init__(
        self,
        strategy_id: str,
        capital: float,
        windows: Iterable[int],
        periods_per_year: float,
        min_fill: float = 0.5,
        fee_rate: float = 0.0,
        shadow: bool = True,
    ) -> None:
        if not 0.0 < min_fill <= 1.0:
            raise ValueError(f"min_fill must be in (0, 1], was {min_fill}")
        self.strategy_id = strategy_id
        self.periods_per_year = periods_per_year
        self.min_fill = min_fill
        self.fee_rate = fee_rate
        self.capital = float(capital)  # allocated (the last Budget)
        self.scale = 1.0  # governance scale (0 while paused)
        self.model_version = ""
        self.realized_pnl = 0.0
        self.unrealized_pnl = 0.0
        self.fees = 0.0
        self.traded_notional = 0.0
        self.fills = 0
        self.trades = 0
        self.wins = 0
        self.samples = 0
        self.capital_sum = 0.0
        self.nav = 1.0
        self.peak = 1.0  # drawdown reference (reset on reinstatement)
        self.hwm = 1.0  # all-time high-water mark (max_drawdown)
        self.max_drawdown = 0.0
        self.last_ts = 0
        self._last_pnl: float | None = None
        self._base = 0.0  # deployed capital during the current sample period
        self._last_base = 0.0  # last non-zero deployed capital
        self._stats = {n: RollingStats(n) for n in sorted(set(windows))}
        # shadow windows only for an owner that reads shadow metrics (the allocator does not)
        self._shadow = {n: RollingStats(n) for n in self._stats} if shadow else {}
        self._stats_all = tuple(self._stats.values())  # pushed at every sample, in this order
        self._shadow_all = tuple(self._shadow.values())
        # zero returns of idle periods not pushed into the windows yet (``idle``): the next
        # sample pushes them with its return, in one call per window; a read flushes them
        self._zeros_shadow = 0
        self._zeros_actual = 0
        self._shadow_acc = 0.0
        self._shadow_seen = False
        self._seen_at_sample = False  # a decision had been seen when the last sample was taken
        self._last_close: float | None = None
        self._last_target = 0.0

    # -- inputs ----------------------------------------------------------------------------------

    @property
    def deployed(self) -> float:
        return self.capital * self.scale

    def set_capital(self, notional: float) -> None:
        self.capital = max(float(notional), 0.0)

    def set_scale(self, scale: float) -> None:
        self.scale = max(float(scale), 0.0)

    def add_realized(self, delta: float) -> None:
        self.realized_pnl += delta

    def add_fill(self, notional: float, fee: float) -> None:
        self.fills += 1
        self.traded_notional += abs(notional)
        self.fees += fee

    def close_trade(self, cycle_pnl: float) -> None:
        """A position cycle closed with ``cycle_pnl`` (net of commissions)."""
        self.trades += 1
        if cycle_pnl > 0:
            self.wins += 1

    def on_decision(self, close: float, target: float) -> None:
        """A published decision: accrue the shadow return of the previous target."""
        if self._last_close is not None and self._last_close > 0:
            r = self._last_target * (close / self._last_close - 1.0)
            self._shadow_acc = (1.0 + self._shadow_acc) * (1.0 + r) - 1.0
        self._shadow_acc -= self.fee_rate * abs(target - self._last_target)
        self._shadow_seen = True
        self._last_close, self._last_target = close, target

    def rebase(self) -> None:
        """Start drawdown afresh from the current NAV (on reinstatement after a pause)."""
        self.peak = self.nav

    # -- sampling --------------------------------------------------------------------------------

    def sample(self, ts: int, unrealized: float) -> float | None:
        """Close one sample period at ``ts``; returns the period's return (None if skipped)."""
        self.unrealized_pnl = unrealized
        self.last_ts = ts
        pnl = self.realized_pnl + unrealized
        if self._shadow_seen:
            zeros, self._zeros_shadow = self._zeros_shadow, 0
            for stats in self._shadow_all:
                stats.push(self._shadow_acc, zeros)
            self._shadow_acc = 0.0
        r = None
        # Before its first decision a strategy is warming up: no performance to measure yet
        # (counting its flat samples would fill the windows with zeros).
        if self._last_pnl is not None and self._shadow_seen:
            delta = pnl - self._last_pnl
            base = self._base or (self._last_base if delta else 0.0)
            if base > 0:
                r = delta / base
                zeros, self._zeros_actual = self._zeros_actual, 0
                for stats in self._stats_all:
                    stats.push(r, zeros)
                self.nav = max(self.nav * (1.0 + r), 1e-12)
                self.peak = max(self.peak, self.nav)
                self.hwm = max(self.hwm, self.nav)
                self.max_drawdown = max(self.max_drawdown, 1.0 - self.nav / self.hwm)
                self.samples += 1
                self.capital_sum += self.capital
        if self._zeros_shadow or self._zeros_actual:  # no return pushed them at this sample
            self._flush()
        self._last_pnl = pnl
        self._base = self.deployed
        if self._base > 0:
            self._last_base = self._base
        self._seen_at_sample = self._shadow_seen
        return r

    def idle(self, k: int) -> None:
        """``k`` sample periods passed without data (a closed market, a feed gap) and were not
        sampled (``DataTimeSampler``); called when data resumes, before it is handled. Nothing
        moved in them, so each counts as the zero return (and zero shadow return) a sample
        would have recorded: every statistic is what sampling through them gives, at O(1). The
        zeros enter the windows with the next sample's return (or at the first read before)."""
        if k <= 0 or not self._seen_at_sample:  # still warming up then: nothing was measured
            return
        if self._zeros_shadow or self._zeros_actual:  # two hand-overs without a sample between
            self._flush()
        if self._shadow_all:  # the shadow return accrues on decisions: none while idle
            self._zeros_shadow = k
        # the first idle period began with the capital deployed at the last sample, the others
        # with the capital deployed since (a pause taken at that sample leaves nothing deployed)
        deployed = self.capital * self.scale  # the ``deployed`` property, once
        zeros = (self._base > 0) + (k - 1) * (deployed > 0)
        if zeros:
            self._zeros_actual = zeros  # pushed with the next sample's return (or flushed)
            self.samples += zeros
            self.capital_sum += zeros * self.capital
        self._base = deployed
        if deployed > 0:
            self._last_base = deployed

    def _flush(self) -> None:
        """Push the pending idle zeros into the windows (before anything reads them)."""
        zeros, self._zeros_shadow = self._zeros_shadow, 0
        if zeros:
            for stats in self._shadow_all:
                stats.push_zeros(zeros)
        zeros, self._zeros_actual = self._zeros_actual, 0
        if zeros:
            for stats in self._stats_all:
                stats.push_zeros(zeros)

    # -- outputs ---------------------------------------------------------------------------------

    @property
    def drawdown(self) -> float:
        return 1.0 - self.nav / self.peak if self.peak > 0 else 0.0

    def _ready(self, stats: RollingStats) -> bool:
        return len(stats) >= max(2, math.ceil(self.min_fill * stats.n))

    def metric(self, name: str, window: int | None = None) -> float | None:
        """The value of ``name`` (over ``window`` samples for windowed metrics), or None."""
        if self._zeros_shadow or self._zeros_actual:
            self._flush()
        if name in WINDOWED_METRICS:
            shadow = name.startswith("shadow_")
            stats = (self._shadow if shadow else self._stats).get(window)
            if stats is None:
                raise KeyError(f"window of {window} samples is not tracked")
            if not self._ready(stats):
                return None
            kind = name.removeprefix("shadow_")
            ppy = self.periods_per_year
            if kind == "sharpe":
                return stats.sharpe(ppy)
            if kind == "sortino":
                return stats.sortino(ppy)
            if kind == "volatility":
                return stats.volatility(ppy)
            return stats.total_return()
        if name == "drawdown":
            return self.drawdown
        if name == "max_drawdown":
            return self.max_drawdown
        if name == "win_rate":
            return self.wins / self.trades if self.trades else None
        if name == "trade_count":
            return float(self.trades)
        if name == "turnover":
            mean_capital = self.capital_sum / self.samples if self.samples else 0.0
            return self.traded_notional / mean_capital if mean_capital > 0 else None
        if name == "fees":
            return self.fees
        if name == "pnl":
            return self.realized_pnl + self.unrealized_pnl
        if name == "equity":
            return self.capital + self.realized_pnl + self.unrealized_pnl
        if name == "nav":
            return self.nav
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")

    def getter(self, name: str, window: int | None = None) -> Callable[[], float | None]:
        """A function of no argument returning ``metric(name, window)``, bound once (a policy
        reads the same few metrics at every sample)."""
        if name in ("sharpe", "shadow_sharpe", "volatility"):
            stats = (self._shadow if name == "shadow_sharpe" else self._stats).get(window)
            if stats is None:
                raise KeyError(f"window of {window} samples is not tracked")
            need, ppy = max(2, math.ceil(self.min_fill * stats.n)), self.periods_per_year
            read = stats.volatility if name == "volatility" else stats.sharpe

            def get() -> float | None:
                if self._zeros_shadow or self._zeros_actual:
                    self._flush()
                return read(ppy) if stats._len >= need else None

            return get
        if name == "drawdown":
            return lambda: 1.0 - self.nav / self.peak if self.peak > 0 else 0.0
        if name == "max_drawdown":
            return lambda: self.max_drawdown
        self.metric(name, window)  # unknown name or window: the same error now
        return functools.partial(self.metric, name, window)

    def snapshot(self, window_labels: dict[int, str]) -> dict[str, float | int | None]:
        """Every metric, windowed ones as ``<metric>_<label>`` (e.g. ``sharpe_30d``)."""
        out: dict[str, float | int | None] = {
            "capital": self.capital,
            "scale": self.scale,
            "deployed": self.deployed,
            "realized_pnl": self.realized_pnl,
            "unrealized_pnl": self.unrealized_pnl,
            "fill_count": self.fills,
            "traded_notional": self.traded_notional,
            "samples": self.samples,
        }
        for name in sorted(SCALAR_METRICS):
            out[name] = self.metric(name)
        for n, label in sorted(window_labels.items()):
            for name in sorted(WINDOWED_METRICS):
                out[f"{name}_{label}"] = self.metric(name, n)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()
        }

    def state(self) -> dict[str, float]:
        """Scalars a restart restores (rolling windows restart empty)."""
        return {key: float(getattr(self, key)) for key in PERSISTED_STATE}

    def restore(self, state: dict[str, float]) -> None:
        for key in PERSISTED_STATE:
            if key in state and state[key] is not None:
                value = state[key]
                setattr(self, key, int(value) if isinstance(getattr(self, key), int) else value)


class PerformanceBook:
    """Feeds one ``StrategyPerformance`` per strategy from a NautilusTrader node's bus and cache.

    The owning actor calls ``subscribe()`` in ``on_start`` and ``sample(ts)`` on its timer.
    Amounts are converted to ``currency`` (an amount in another currency is priced through an
    instrument quoting it in ``currency``; with none, it is left out and logged once).
    """

    def __init__(
        self,
        actor,
        strategy_ids: Iterable[str],
        currency: str,
        windows: Iterable[int],
        periods_per_year: float,
        default_capital: float,
        min_fill: float = 0.5,
        fee_rate: float = 0.0,
        shadow: bool = True,
    ) -> None:
        self._actor = actor
        self.currency = currency
        windows = list(windows)
        self.perf: dict[str, StrategyPerformance] = {
            sid: StrategyPerformance(
                sid, default_capital, windows, periods_per_year, min_fill, fee_rate, shadow
            )
            for sid in strategy_ids
        }
        from actors.valuation import PositionCycles, Prices

        self._prices = Prices(actor.cache)
        self._cycles = PositionCycles()  # realized PnL per position cycle
        self._warned: set[str] = set()

    def subscribe(self) -> None:
        from hmm_strategy.messages import BUDGET_TOPIC, GOVERNANCE_TOPIC, REGIME_TOPIC

        bus = self._actor.msgbus
        bus.subscribe("events.position.*", self.on_position_event)
        bus.subscribe("events.order.*", self.on_order_event)
        bus.subscribe(f"{REGIME_TOPIC}.*", self.on_regime_update)
        bus.subscribe(f"{BUDGET_TOPIC}.*", self.on_budget)
        bus.subscribe(f"{GOVERNANCE_TOPIC}.*", self.on_governance)
        self._seed_open_cycles()

    def unsubscribe(self) -> None:
        from hmm_strategy.messages import BUDGET_TOPIC, GOVERNANCE_TOPIC, REGIME_TOPIC

        bus = self._actor.msgbus
        for topic, handler in (
            ("events.position.*", self.on_position_event),
            ("events.order.*", self.on_order_event),
            (f"{REGIME_TOPIC}.*", self.on_regime_update),
            (f"{BUDGET_TOPIC}.*", self.on_budget),
            (f"{GOVERNANCE_TOPIC}.*", self.on_governance),
        ):
            if bus.is_subscribed(topic, handler):
                bus.unsubscribe(topic, handler)

    def _seed_open_cycles(self) -> None:
        """After a restart, positions already open carry realized PnL from before: not new."""
        from nautilus_trader.model.identifiers import StrategyId

        for sid in self.perf:
            for position in self._actor.cache.positions_open(strategy_id=StrategyId(sid)):
                self._cycles.seed(position.id.value, self.to_currency(position.realized_pnl) or 0.0)

    # -- handlers --------------------------------------------------------------------------------

    def on_position_event(self, event) -> None:
        from nautilus_trader.model.events import PositionClosed, PositionOpened

        perf = self.perf.get(event.strategy_id.value)
        if perf is None:
            return
        realized = self.to_currency(event.realized_pnl)
        if realized is None:
            return
        pid = event.position_id.value
        perf.add_realized(
            self._cycles.increment(pid, realized, opened=isinstance(event, PositionOpened))
        )
        if isinstance(event, PositionClosed):
            perf.close_trade(realized)

    def on_order_event(self, event) -> None:
        from nautilus_trader.model.events import OrderFilled

        if not isinstance(event, OrderFilled):
            return
        perf = self.perf.get(event.strategy_id.value)
        if perf is None:
            return
        instrument = self._actor.cache.instrument(event.instrument_id)
        if instrument is not None:
            notional = self.to_currency(instrument.notional_value(event.last_qty, event.last_px))
        else:
            notional = event.last_qty.as_double() * event.last_px.as_double()
        fee = self.to_currency(event.commission) or 0.0
        perf.add_fill(notional or 0.0, fee)

    def on_regime_update(self, update) -> None:
        perf = self.perf.get(update.strategy_id)
        if perf is not None:
            perf.model_version = update.model_version
            perf.on_decision(update.close, update.target_exposure)

    def on_budget(self, budget) -> None:
        perf = self.perf.get(budget.strategy_id)
        if perf is not None:
            perf.set_capital(budget.notional)

    def on_governance(self, command) -> None:
        perf = self.perf.get(command.strategy_id)
        if perf is not None:
            perf.set_scale(0.0 if command.action == "pause" else command.scale)

    # -- sampling --------------------------------------------------------------------------------

    def idle(self, k: int) -> None:
        """``k`` sample periods without data passed (see ``StrategyPerformance.idle``)."""
        for perf in self.perf.values():
            perf.idle(k)

    def sample(self, ts: int) -> None:
        """Close a sample period for every strategy at node time ``ts``."""
        cache = self._actor.cache
        open_positions: dict[str, list] = {}  # one pass over the open positions, not one a strategy
        for position in cache.positions_open():
            open_positions.setdefault(position.strategy_id.value, []).append(position)
        for sid, perf in self.perf.items():
            unrealized = 0.0
            for position in open_positions.get(sid, ()):
                price = self._prices.last(position.instrument_id)
                if price is None:
                    self._warn_once(f"px:{position.instrument_id}", "No price for open position")
                    continue
                unrealized += self.to_currency(position.unrealized_pnl(price)) or 0.0
            perf.sample(ts, unrealized)

    def to_currency(self, money) -> float | None:
        """Money -> float in ``currency``; None when no conversion exists."""
        from actors.valuation import convert

        value = convert(self._actor.cache, money, (self.currency,))
        if value is None and money is not None:
            code = money.currency.code
            self._warn_once(f"ccy:{code}", f"No {self.currency} price for {code}; amount left out")
        return value

    def account_equity(self, venue) -> float | None:
        """The venue account's equity in ``currency`` (None without an account)."""
        from actors.valuation import account_equity

        actor = self._actor
        return account_equity(actor.portfolio, actor.cache, venue, self.to_currency, self._prices)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._actor.log.warning(message)


class DataTimeSampler:
    """Calls ``callback(ts)`` at ``start, start + interval, ...`` of the data's time.

    One schedule for backtests and live nodes, so an accelerated replay samples exactly where
    the backtest does (same samples, same governance decisions, same budgets). ``start`` is the
    first data time seen; a sample at ``t`` closes the period ``(t - interval, t]`` once the
    data at ``t`` has been handled.

    A period in which no data arrived (a closed market: nights, weekends, holidays; a feed gap)
    is not sampled: nothing in it could change, so instead of firing through it the sampler
    counts it, and when data resumes (before that data is handled) calls
    ``on_idle(k, closure)`` with the number of such periods. The actor records their zero
    returns in O(1) (``StrategyPerformance.idle``: the statistics are those of sampling every
    period). When the stretch is longer than the data's own spacing (a closure or a feed gap,
    not hourly bars sampled every 15 minutes), ``closure`` is the last of its sample times and
    the actor evaluates once, as of then, what a sample there would have decided (a rule's
    cooldown ending over a weekend, a daily rebalance), so the strategies hear it before they
    handle the data; otherwise ``closure`` is None and what fell due waits for the sample that
    closes the next bar's period. The cost per bar does not depend on the calendar (``bench``,
    "sparse calendar").

    * Backtest (``TestClock``): one time alert per sampled period, armed by the period's first
      bar at the first sample time at or after it (so it fires once that data is handled); the
      sample times passed since the last sample without a bar are the idle ones. A repeating
      timer would fire through every closed hour, which is where the time of sparse calendars
      went.
    * Live: data time comes from ``DataTime`` messages (the replay feed sends one before each
      bar time and one once that time is handled and the node settled: ``closed``) and from
      bars themselves (``data.bars.*``, for venues without such a message).
    """

    def __init__(
        self,
        actor,
        interval: timedelta,
        callback: Callable[[int], None],
        on_idle: Callable[[int, int | None], None] | None = None,
        name: str = "data-time-sample",
    ) -> None:
        self._actor = actor
        self.interval_ns = round(interval.total_seconds() * 1e9)
        if self.interval_ns <= 0:
            raise ValueError(f"sample interval must be > 0, was {interval}")
        self._callback = callback
        self._on_idle = on_idle
        self._name = name
        self.next_ns: int | None = None  # the next sample time not yet handled
        self.now_ns = 0  # the latest data time seen
        self.samples = 0  # periods sampled (callbacks)
        self.idle_periods = 0  # periods without data, handed to on_idle
        self._idle = 0  # periods without data not handed over yet
        self._last_idle_ns = 0  # the last of their sample times
        self._last_data_ns = 0  # the latest data time seen (not a closed DataTime)
        self._step_ns = 0  # the smallest step between data times: the data's own spacing
        self._has_data = False  # data arrived in the period ending at next_ns
        self._parked = True  # backtest: no alert pending (the next bar arms one)

    def subscribe(self) -> None:
        from nautilus_trader.common.component import LiveClock

        from hmm_strategy.messages import DATA_CLOCK_TOPIC

        bus = self._actor.msgbus
        if isinstance(self._actor.clock, LiveClock):
            bus.subscribe(DATA_CLOCK_TOPIC, self.on_data_time)
            bus.subscribe("data.bars.*", self.on_bar)
        else:
            bus.subscribe("data.bars.*", self.on_bar_simulated)

    def unsubscribe(self) -> None:
        from hmm_strategy.messages import DATA_CLOCK_TOPIC

        bus = self._actor.msgbus
        for topic, handler in (
            (DATA_CLOCK_TOPIC, self.on_data_time),
            ("data.bars.*", self.on_bar),
            ("data.bars.*", self.on_bar_simulated),
        ):
            if bus.is_subscribed(topic, handler):
                bus.unsubscribe(topic, handler)
        clock = self._actor.clock
        if self._name in clock.timer_names:
            clock.cancel_timer(self._name)
        self._parked = True

    def _resume(self) -> None:
        """Data arrived after idle periods: hand them over before the data is handled."""
        k, self._idle = self._idle, 0
        self.idle_periods += k
        closure = k * self.interval_ns > self._step_ns > 0
        if self._on_idle is not None:
            self._on_idle(k, self._last_idle_ns if closure else None)

    def _data_at(self, ts: int) -> None:
        if ts > self._last_data_ns:
            step = ts - self._last_data_ns
            if self._last_data_ns and (not self._step_ns or step < self._step_ns):
                self._step_ns = step
            self._last_data_ns = ts

    def _fire(self, due: int) -> None:
        self.samples += 1
        self._callback(due)

    # -- backtest: time alerts on the simulated clock -------------------------------------------

    def on_bar_simulated(self, bar) -> None:
        self._has_data = True
        ts = bar.ts_event
        if ts > self._last_data_ns:
            self._data_at(ts)
        if not self._parked:
            return
        self.now_ns = max(self.now_ns, ts)
        if self.next_ns is None:
            self.next_ns = ts
        elif self.next_ns < ts:  # the sample times of the closure: idle periods
            n = -(-(ts - self.next_ns) // self.interval_ns)
            self._idle += n
            self.next_ns += n * self.interval_ns
            self._last_idle_ns = self.next_ns - self.interval_ns
        if self._idle:
            self._resume()
        self._parked = False
        self._actor.clock.set_time_alert_ns(self._name, self.next_ns, self._on_alert, True)

    def _on_alert(self, event) -> None:
        # armed by a bar of this period: sample, then wait for the next bar to arm the next
        due = event.ts_event
        self.now_ns = max(self.now_ns, due)
        self.next_ns = due + self.interval_ns
        self._parked = True
        if self._has_data:
            self._has_data = False
            self._fire(due)

    # -- live: data time from messages ----------------------------------------------------------

    def on_data_time(self, message) -> None:
        self.advance(message.ts_event, closed=message.closed)

    def on_bar(self, bar) -> None:
        self.advance(bar.ts_event)

    def advance(self, ts: int, closed: bool = False) -> None:
        """Data time reached ``ts``: take the samples due before it (and at it once ``closed``,
        i.e. the data at ``ts`` has been handled); data at ``ts`` (not ``closed``) belongs to
        the period that ends at the next sample time."""
        if self.next_ns is None:
            self.next_ns = ts
        self.now_ns = max(self.now_ns, ts)
        last = ts if closed else ts - 1  # the last sample time due now
        if self.next_ns <= last:
            due = (last - self.next_ns) // self.interval_ns + 1
            first = self.next_ns
            self.next_ns += due * self.interval_ns
            if self._has_data:
                self._has_data = False
                due -= 1
                self._fire(first)
            if due:
                self._idle += due
                self._last_idle_ns = self.next_ns - self.interval_ns
        if not closed and ts >= self.now_ns:
            self._has_data = True
            self._data_at(ts)
            if self._idle:
                self._resume()
