"""Actor work per bar, counted (never timed), so it cannot grow back silently.

The shipped node's actors used to work on every bar and, on sparse calendars, through every
closed hour: governance and the allocator sampled on a repeating timer (a 23-year hourly equity
series fired ~800k samples each for 40k bars), governance listed the overrides folder at every
sample, the metrics exporter refreshed the portfolio on every event. Now they act on what
changed (see ``actors.performance.DataTimeSampler``); these tests run real backtests through
the user's path (``backtests.run.run_backtest``: BacktestNode + catalog) and count the calls.

Skipping the sample periods without data must not change what governance measures: the idle
periods are recorded as the zero returns a sample would have taken, which the first tests prove
against sampling every period.
"""

from __future__ import annotations

import math
import random
from collections import deque
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from actors import operator_queue
from actors.capital_allocator import CapitalAllocator
from actors.governance import GovernanceActor, PolicyEngine
from actors.metrics import MetricsExporter
from actors.performance import (
    METRICS,
    WINDOWED_METRICS,
    DataTimeSampler,
    PerformanceBook,
    RollingStats,
    StrategyPerformance,
)
from backtests.run import run_backtest
from hmm_strategy.config import DEFAULT_CONFIG, load_node_settings

MINUTE = 60 * 10**9
SAMPLE = 15 * MINUTE  # configs/governance.yaml and the allocator's sample_interval


# -- idle periods are zero returns, at O(1) ------------------------------------------------------


def test_push_zeros_equals_pushing_zeros_one_by_one() -> None:
    rng = random.Random(3)
    a, b = RollingStats(12), RollingStats(12)
    for step in range(400):
        if step % 7 == 3:
            k = rng.choice([1, 2, 5, 11, 12, 13, 40])
            a.push_zeros(k)
            for _ in range(k):
                b.push(0.0)
        else:
            r = rng.gauss(0.0, 0.01)
            a.push(r)
            b.push(r)
        assert len(a) == len(b)
        for got, want in [
            (a.mean(), b.mean()),
            (a.std(), b.std()),
            (a.downside_deviation(), b.downside_deviation()),
            (a.total_return(), b.total_return()),
        ]:
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9)  # sums drift ~1e-20


class _EveryValue:
    """The rolling window kept the plain way, as a reference: every sample period's value
    stored (zeros too), added to the sums when pushed, taken away when it leaves (oldest
    first), the sums zeroed once only zeros are left and re-summed exactly every ``n`` pushes.
    ``RollingStats`` stores only the non-zero values and skips zeros' no-op additions."""

    def __init__(self, n: int) -> None:
        self.n, self.values, self.pushes, self.nonzero = n, deque(), 0, 0
        self.sums = [0.0, 0.0, 0.0, 0.0]  # sum, sum of squares, downside squares, log1p

    def _add(self, r: float, sign: float) -> None:
        lg = math.log1p(-0.999999 if r < -0.999999 else r)
        for i, x in enumerate((r, r * r, r * r if r < 0 else 0.0, lg)):
            self.sums[i] = self.sums[i] + x if sign > 0 else self.sums[i] - x

    def _settle(self, before: int) -> None:
        evicted = False
        while len(self.values) > self.n:
            v = self.values.popleft()
            self._add(v, -1.0)
            self.nonzero -= v != 0.0
            evicted = True
        if evicted and not self.nonzero:
            self.sums = [0.0, 0.0, 0.0, 0.0]
        if self.pushes // self.n != before // self.n:
            nz = [v for v in self.values if v != 0.0]
            lgs = [math.log1p(-0.999999 if v < -0.999999 else v) for v in nz]
            self.sums = [math.fsum(nz), math.fsum(v * v for v in nz),
                         math.fsum(v * v for v in nz if v < 0), math.fsum(lgs)]  # fmt: skip

    def push(self, r: float) -> None:
        self.values.append(r)
        self._add(r, 1.0)
        self.nonzero += r != 0.0
        self.pushes += 1
        self._settle(self.pushes - 1)

    def push_zeros(self, k: int) -> None:
        self.values.extend([0.0] * k)
        self.pushes += k
        self._settle(self.pushes - k)


def test_rolling_stats_store_only_non_zero_values_with_the_same_bits() -> None:
    """Random streams with runs of zeros (longer than the window too), 0.0, -0.0, NaN and
    returns below -100%: after every push, the sums and every statistic are the reference's
    to the bit (``repr``), for window lengths from 2 to a week of 15-minute samples."""
    for seed in range(60):
        rng = random.Random(seed)
        n = rng.choice([2, 3, 5, 12, 50, 672])
        fast, ref = RollingStats(n), _EveryValue(n)
        for _ in range(rng.choice([300, 1_500])):
            u = rng.random()
            if u < 0.25:
                k = rng.choice([1, 2, 3, n - 1, n, n + 1, 3 * n, 71])
                fast.push_zeros(k)
                ref.push_zeros(k)
            else:
                r = (0.0 if u < 0.3 else -0.0 if u < 0.32 else math.nan if u < 0.322
                     else -1.5 if u < 0.33 else rng.gauss(0.0, 0.01))  # fmt: skip
                fast.push(r)
                ref.push(r)
            got = [fast._sum, fast._sumsq, fast._downsq, fast._log]
            assert repr(got) == repr(ref.sums), (seed, n)
            assert len(fast) == min(ref.pushes, n)  # the statistics read the sums and this


class _ZerosAtHandOver(StrategyPerformance):
    """The idle periods' zeros pushed into the windows when handed over (the slow path)."""

    def idle(self, k: int) -> None:
        super().idle(k)
        self._flush()


def test_idle_zeros_pushed_with_the_next_sample_give_the_same_bits() -> None:
    """``StrategyPerformance.idle`` leaves the zeros pending and the next sample pushes them
    with its return (one call per window); against pushing them at the hand-over: every
    metric the same to the bit after every sample, and when read between a hand-over and the
    next sample (a closure's evaluation, a rebalance), through pauses, budgets, two hand-overs
    in a row and samples that push no return."""
    rng = random.Random(5)
    labels = {8: "2h", 30: "7h30m"}
    fast = StrategyPerformance("S", 10_000.0, [8, 30], 35_040, min_fill=0.5, fee_rate=0.001)
    slow = _ZerosAtHandOver("S", 10_000.0, [8, 30], 35_040, min_fill=0.5, fee_rate=0.001)
    getters = [(p.getter("sharpe", 30), p.getter("shadow_sharpe", 8)) for p in (fast, slow)]
    pnl, close = 0.0, 100.0
    for period in range(3_000):
        if rng.random() < 0.6:
            k = rng.choice([1, 3, 3, 3, 71, 200])
            for perf in (fast, slow):
                perf.idle(k)
            if rng.random() < 0.1:  # read before the next sample
                assert repr([g() for g in getters[0]]) == repr([g() for g in getters[1]])
            if rng.random() < 0.05:
                assert repr(fast.snapshot(labels)) == repr(slow.snapshot(labels)), period
            if rng.random() < 0.05:
                continue  # another hand-over before any sample
        if period > 40:
            close *= math.exp(rng.gauss(0.0, 0.003))
            target = rng.choice([-1.0, 0.0, 1.0])
            for perf in (fast, slow):
                perf.on_decision(close, target)
        if rng.random() < 0.2:
            pnl += rng.gauss(0.0, 40.0)  # else flat: a zero return (or none while paused)
        if period % 97 == 60:
            for perf in (fast, slow):
                perf.set_scale(0.0 if perf.scale else 1.0)
        if period % 89 == 0:
            capital = rng.choice([5_000.0, 10_000.0, 20_000.0])
            for perf in (fast, slow):
                perf.set_capital(capital)
        for perf in (fast, slow):
            perf.sample(period, pnl)
        assert repr(fast.snapshot(labels)) == repr(slow.snapshot(labels)), period
    assert fast.samples == slow.samples > 1_000


def test_bound_metric_getters_read_what_metric_reads() -> None:
    """Governance and the allocator bind each metric once (``StrategyPerformance.getter``); the
    bound getters must give ``metric(name, window)`` at every sample, before and after the
    windows fill, through pauses and idle periods."""
    rng = random.Random(11)
    perf = StrategyPerformance("S", 10_000.0, [8, 30], 35_040, min_fill=0.5, fee_rate=0.001)
    windows = {m: (8, 30) if m in WINDOWED_METRICS else (None,) for m in METRICS}
    getters = {(m, n): perf.getter(m, n) for m in sorted(METRICS) for n in windows[m]}
    pnl, close = 0.0, 100.0
    for period in range(600):
        if period % 50 == 49:
            perf.idle(rng.choice([1, 3, 40]))
        close *= math.exp(rng.gauss(0.0, 0.003))
        pnl += rng.gauss(0.0, 40.0)
        perf.on_decision(close, rng.choice([-1.0, 0.0, 1.0]))
        if period % 97 == 60:
            perf.set_scale(0.0 if perf.scale else 1.0)
        perf.sample(period, pnl)
        for (m, n), get in getters.items():
            assert repr(get()) == repr(perf.metric(m, n)), (period, m, n)


def test_idle_periods_give_the_metrics_of_sampling_every_period() -> None:
    """One strategy sampled at every 15-minute period (the old timer, zero returns through the
    closures) and the same strategy sampled only where data arrived, the closures handed over as
    idle periods: every metric agrees at every sample the second one takes, across warm-up,
    pauses (nothing deployed), budget changes and closures longer than a window."""
    rng = random.Random(7)
    windows = [8, 30]
    every = StrategyPerformance("S", 10_000.0, windows, 35_040, min_fill=0.5, fee_rate=0.001)
    sparse = StrategyPerformance("S", 10_000.0, windows, 35_040, min_fill=0.5, fee_rate=0.001)
    labels = {8: "2h", 30: "7h30m"}
    pnl, close, idle, compared = 0.0, 100.0, 0, 0
    for period in range(3_000):
        open_market = (period // 40) % 3 != 2 and rng.random() > 0.15  # closures and holes
        if not open_market:
            every.sample(period, pnl)
            idle += 1
            continue
        sparse.idle(idle)  # data resumed: before it is handled
        idle = 0
        if period > 60:  # warm-up: no decision before
            close *= math.exp(rng.gauss(0.0, 0.003))
            target = rng.choice([-1.0, 0.0, 0.5, 1.0])
            pnl += rng.gauss(0.0, 40.0)
            for perf in (every, sparse):
                perf.on_decision(close, target)
        if period % 97 == 0:  # a budget
            capital = rng.choice([5_000.0, 10_000.0, 20_000.0])
            for perf in (every, sparse):
                perf.set_capital(capital)
        every.sample(period, pnl)
        sparse.sample(period, pnl)
        _same(sparse.snapshot(labels), every.snapshot(labels), period)
        compared += 1
        if period % 211 == 0:  # governance pauses (scale 0) and resumes at a sample
            scale = 0.0 if every.scale else 1.0
            for perf in (every, sparse):
                perf.set_scale(scale)
    sparse.idle(idle)  # the closure the run ended in
    assert compared > 1_500 and sparse.samples == every.samples > 1_500
    _same(sparse.snapshot(labels), every.snapshot(labels), -1)


def test_policy_skips_rederiving_the_state_only_when_that_changes_nothing() -> None:
    """Governance re-derives a strategy's effective state only when a rule changed status or
    something else touched its record (a decision, an override); an engine that re-derives it at
    every sample decides the same transitions, across fires, releases, probations, overrides."""
    from actors.governance import load_policy
    from actors.registry import Override, StrategyRecord

    policy = load_policy(Path(DEFAULT_CONFIG).parent / "governance.yaml")
    fast, full = PolicyEngine(policy, ["S"]), PolicyEngine(policy, ["S"])
    rng = random.Random(11)
    m = {"drawdown": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "shadow_sharpe": 0.0}

    def metric(_sid: str, name: str, _window: str | None) -> float | None:
        return None if rng_none else m[name]

    decided = 0
    for step in range(20_000):
        m["drawdown"] = min(max(m["drawdown"] + rng.gauss(0.0, 0.004), 0.0), 0.2)
        m["sharpe"] += rng.gauss(0.0, 0.05) - 0.002 * m["sharpe"]
        m["shadow_sharpe"] = rng.gauss(0.0, 1.0)
        m["max_drawdown"] = max(m["max_drawdown"], m["drawdown"]) if step < 19_000 else 0.3
        rng_none = rng.random() < 0.02  # a metric not available yet
        full._settled.clear()  # the reference: re-derive at every sample
        now = step * SAMPLE
        got, want = fast.evaluate("S", now, metric), full.evaluate("S", now, metric)
        assert got == want, step
        if got is not None:
            fast.commit(got)
            full.commit(want)
            decided += 1
        if step % 5_000 == 2_500:  # a restart restores a record the policy then re-evaluates
            for engine in (fast, full):
                engine.attach("S", StrategyRecord(state="paused", scale=0.0))
        if step % 1_500 == 700:  # an operator
            action = rng.choice(["pause", "throttle", "resume"])
            override = Override(id=f"op-{step}", strategy_id="S", action=action, reason="t",
                                created_utc="2024-01-01T00:00:00Z",
                                scale=0.5 if action == "throttle" else 1.0)
            got, want = fast.apply_override(override, now), full.apply_override(override, now)
            assert got == want
            fast.commit(got)
            full.commit(want)
    assert decided > 20 and fast.records["S"] == full.records["S"]


def _same(got: dict, want: dict, where: int) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert (got[key] is None) == (value is None), (where, key, got[key], value)
        if value is not None:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (where, key)


# -- counts in real backtests --------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record every call of the actors' per-period work (arguments kept, nothing timed)."""
    calls: dict[str, list] = {}

    def count(owner, name: str, key: str, keep_self: bool = False) -> None:
        original = getattr(owner, name)
        calls[key] = []

        def wrapper(*args, **kwargs):
            calls[key].append(args if keep_self else args[1:])
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    count(GovernanceActor, "sample", "governance")
    count(CapitalAllocator, "sample", "allocator")
    count(PerformanceBook, "sample", "book")
    count(GovernanceActor, "_on_idle", "governance_idle")
    count(CapitalAllocator, "_on_idle", "allocator_idle")
    count(DataTimeSampler, "_on_alert", "alerts")
    count(MetricsExporter, "refresh", "refresh")
    count(MetricsExporter, "on_bar_data", "exporter_bars")
    count(operator_queue, "pending", "listings")
    count(RollingStats, "push", "pushes")
    count(PolicyEngine, "_transition", "transitions")
    count(PolicyEngine, "commit", "commits")
    count(MetricWrapperBase, "labels", "labels", keep_self=True)
    return calls


def _run(tmp_path: Path, override: dict, start: str, end: str) -> int:
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [tmp_path / "o.yaml"])
    run = run_backtest(
        settings, tmp_path / "run", start=start, end=end, tearsheet=False, baselines=False
    )
    stats = yaml.safe_load((run / "stats.json").read_text())
    return int(stats["bars"])


def _check_schedule(samples: list, idle: list, bars: int) -> None:
    """At most one sample per bar; every 15-minute period from the first sample to the last is
    either sampled or handed over as idle (nothing skipped silently, nothing sampled twice)."""
    times = [now for (now,) in samples]
    assert len(times) <= bars and times == sorted(set(times))
    periods = (times[-1] - times[0]) // SAMPLE + 1
    assert len(times) + sum(k for k, _last in idle) == periods
    assert not {last for _k, last in idle} & set(times)  # an idle period is never sampled


def test_shipped_node_actors_work_once_per_bar_on_dense_data(
    tmp_path: Path, counted: dict[str, list]
) -> None:
    """configs/node.yaml on real BTCUSDT 15-minute bars: one governance and one allocator
    sample per bar, no listing of the (absent) overrides folder, no portfolio refresh until
    the exporter stops, no bar handled by the exporter."""
    override = {
        "backtest": {"catalog_path": str(tmp_path / "catalog")},
        "strategies": [{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}}}],
    }
    bars = _run(tmp_path, override, "2024-02-01", "2024-02-15")
    assert bars > 1_300
    gov, alloc = counted["governance"], counted["allocator"]
    assert len(gov) == len(alloc) == bars  # no gap in the data: every period holds one bar
    assert counted["governance_idle"] == counted["allocator_idle"] == []
    _check_schedule(gov, [], bars)
    assert len(counted["book"]) == 2 * bars
    assert len(counted["alerts"]) <= 2 * bars + 2
    assert counted["listings"] == []
    assert len(counted["refresh"]) <= 1  # at stop
    # rolling windows: governance 2 windows x (actual, shadow), the allocator 1 window (30d vol
    # and Sharpe) of actual returns only: it reads no shadow metric
    assert 2 * bars < len(counted["pushes"]) <= 5 * bars
    # the effective state is re-derived only when a rule changed status or after a decision
    # was committed, not at every sample (that was one per sample)
    assert len(counted["transitions"]) <= 2 * len(counted["commits"]) + bars // 100
    # the staleness gauge's labelled child is looked up once per bar type, not once per bar
    last_bar = [c for c in counted["labels"] if c[0]._name == "market_data_last_bar_epoch"]
    assert len(last_bar) <= 3
    # an unserved backtest's exporter takes no bar: its staleness gauges come from the cache
    assert counted["exporter_bars"] == []


def test_sparse_calendar_costs_per_bar_not_per_closed_hour(
    tmp_path: Path, data_dir: Path, counted: dict[str, list]
) -> None:
    """A year of real SPY hourly bars (XNYS: nights, weekends, holidays): a timer would sample
    every 15 minutes of the year (~35k times for ~1.8k bars); now at most one sample and two
    alerts per bar, and the closed periods are handed over as idle ones."""
    iid, bar_type = "SPY.ARCA", "SPY.ARCA-1-HOUR-LAST-EXTERNAL"
    override = {
        "backtest": {
            "catalog_path": str(tmp_path / "catalog"),
            "data": [{"source": str(data_dir / "fx_or_equity/lean/equity/usa/hour/spy.zip"),
                      "instrument_id": iid, "bar_type": bar_type}],
            "venues": [{"name": "ARCA", "oms_type": "NETTING", "account_type": "MARGIN",
                        "starting_balances": ["1000000 USD"]}],
        },
        "strategies": [{"name": "hmm_btc", "config": {
            "instrument_id": iid, "bar_type": bar_type, "fit": {"warmup_bars": 500},
            "breakers": {"calendar": "XNYS"},
        }}],
        "actors": [
            {"name": "metrics", "config": {"venue": "ARCA"}},
            {"name": "allocator", "config": {"venue": "ARCA", "currency": "USD"}},
            {"name": "governance", "config": {"currency": "USD"}},
        ],
        "risk": {"max_notional_per_order": {iid: 1_000_000}},
    }  # fmt: skip
    bars = _run(tmp_path, override, "2019-01-01", "2020-01-01")
    assert 1_500 < bars < 2_000
    for key in ("governance", "allocator"):
        samples, idle = counted[key], counted[f"{key}_idle"]
        _check_schedule(samples, idle, bars)
        assert len(samples) >= bars - 5  # hourly bars: (nearly) every bar closes a period
        assert len(idle) <= len(samples)  # handed over once per resumption, not per period
        assert sum(k for k, _last in idle) > 30_000  # the year's closed quarter hours
    assert len(counted["alerts"]) <= 2 * (2 * bars + 2)  # two samplers, <= 2 alerts per bar
    assert len(counted["pushes"]) <= 5 * bars  # idle periods are pushed as runs of zeros
    assert len(counted["transitions"]) <= 2 * len(counted["commits"]) + bars // 100
    assert counted["listings"] == []
    assert len(counted["refresh"]) <= 1


def test_overrides_folder_is_listed_only_when_it_changed(tmp_path: Path) -> None:
    """The governance actor lists its overrides folder when the folder's mtime moved (a request
    file was added, renamed or removed), not at every sample; a folder changed within the last
    seconds is listed again (a second change inside the file system's timestamp granularity
    could leave the mtime as it was)."""
    import os
    import time

    from actors.registry import Override, submit_override

    def settle() -> None:  # as if the last change were a minute old
        old = time.time_ns() - 60 * 10**9
        os.utime(folder, ns=(old, old))

    folder = tmp_path / "overrides"
    watch = operator_queue.FolderWatch(folder, min_interval_secs=0.0)
    assert watch.changed() is False  # no folder: nothing pending
    folder.mkdir()
    assert watch.changed() is True  # fresh: listed, and listed again until it settles
    assert watch.changed() is True
    settle()
    assert watch.changed() is True  # settled: listed once more, then remembered
    assert [watch.changed() for _ in range(5)] == [False] * 5
    submit_override(folder, Override(id="op-1", strategy_id="S-1", action="pause",
                                     reason="test", created_utc="2024-01-01T00:00:00Z"))
    assert watch.changed() is True
    settle()
    assert watch.changed() is True and watch.changed() is False
    throttled = operator_queue.FolderWatch(folder, min_interval_secs=3600.0)
    assert throttled.changed() is True  # the first call always looks
    (folder / "op-2.json").write_text("{}")
    assert throttled.changed() is False  # looked less than min_interval_secs ago
    assert watch.changed() is True
