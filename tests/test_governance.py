"""Governance: metrics maths, the policy engine, policy validation, and real backtests on
BTCUSDT 15m where a deliberately wrong-way strategy is paused, its capital moved, and the
registry survives a restart with an operator override."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
import yaml
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig

from actors.governance import (
    GovernancePolicy,
    PolicyEngine,
    PolicyError,
    load_policy,
)
from actors.performance import DataTimeSampler, RollingStats, StrategyPerformance, parse_duration
from actors.registry import Override, Registry, submit_override
from backtests.run import run_backtest
from hmm_strategy.config import DEFAULT_CONFIG, REPO_ROOT, ConfigError, load_node_settings

GOOD, BAD = "HMMRegimeStrategy-GOOD", "HMMRegimeStrategy-BAD"
DATA = "${HMM_DATA_DIR}/binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"
# Two instruments so each strategy owns its net position: HMMRegimeStrategy sizes orders from
# portfolio.net_position(instrument), which sums every strategy on that instrument. The perp
# replays the same real Binance BTCUSDT bars (the stand-in NautilusTrader's own examples use).
INSTRUMENTS = {GOOD: "BTCUSDT.BINANCE", BAD: "BTCUSDT-PERP.BINANCE"}
BUDGET = 45_000.0  # 100k USDT, 10% cash buffer, two strategies

POLICY = {
    "schema_version": 1,
    "sample_interval": "15m",
    "rules": [
        {
            "name": "bad_drawdown",
            "metric": "drawdown",
            "op": ">",
            "threshold": 0.05,
            "action": "pause",
            "flatten": True,
            "cooldown": "7d",
            "resume_when": {"metric": "shadow_sharpe", "window": "7d", "op": ">",
                            "threshold": 3.0},
            "resume_scale": 0.25,
            "probation": "7d",
            "strategies": [BAD],
        },
        {"name": "deep_drawdown", "metric": "drawdown", "op": ">", "threshold": 0.2,
         "action": "pause", "flatten": True, "release": "manual"},
        {"name": "negative_sharpe", "metric": "sharpe", "window": "14d", "op": "<",
         "threshold": -3.0, "action": "throttle", "scale": 0.5, "hysteresis": 1.0,
         "cooldown": "2d"},
    ],
}


class BusRecorderConfig(ActorConfig, frozen=True):
    output_path: str = "bus.jsonl"


class BusRecorder(Actor):
    """Test probe: every Budget and GovernanceCommand on the bus, in order, as JSON lines."""

    def on_start(self) -> None:
        self._file = open(self.config.output_path, "w", buffering=1)  # noqa: SIM115
        self.msgbus.subscribe("hmm.budget.*", self._record)
        self.msgbus.subscribe("hmm.governance.*", self._record)

    def _record(self, msg) -> None:
        self._file.write(json.dumps({"type": type(msg).__name__, **msgspec.to_builtins(msg)}))
        self._file.write("\n")

    def on_stop(self) -> None:
        self._file.close()


def _strategy(sid: str) -> dict:
    instrument = INSTRUMENTS[sid]
    return {
        "path": "hmm_strategy.strategy:HMMRegimeStrategy",
        "config": {
            "instrument_id": instrument,
            "bar_type": f"{instrument}-15-MINUTE-LAST-EXTERNAL",
            "order_id_tag": sid.rsplit("-", 1)[1],
            "notional": BUDGET,
            "max_notional": 70_000.0,
            "fit": {"warmup_bars": 500, "n_states": 3, "n_restarts": 2, "n_iter": 50, "seed": 0},
            # BAD trades against its regimes (bull short, bear long): wrong-way by configuration
            "policy": {"min_confidence": 0.8, "min_hold_bars": 8, "cooldown_bars": 4,
                       "state_exposures": [1.0, 0.0, -1.0] if sid == BAD else None},
        },
    }


def node_settings(
    tmp: Path,
    *,
    policy: dict | None = None,
    governance: dict | None = None,
    allocator: dict | None = None,
    catalog: Path | None = None,
):
    """Two strategies (one inverted), governance, allocator and the bus probe on real data."""
    policy_path = tmp / "governance.yaml"
    policy_path.write_text(yaml.safe_dump(policy or POLICY, sort_keys=False))
    actors = [
        {"path": "actors.decision_recorder:DecisionRecorder",
         "config": {"output_path": "{run_dir}/decisions.csv",
                    "events_path": "{run_dir}/events.csv"}},
        {"path": "tests.test_governance:BusRecorder",
         "config": {"output_path": "{run_dir}/bus.jsonl"}},
    ]
    if governance is not None:
        actors.append({"path": "actors.governance:GovernanceActor", "config": {
            "policy_path": str(policy_path),
            "registry_path": "{run_dir}/governance/registry.json",
            "default_capital": BUDGET,
            **governance,
        }})
    if allocator is not None:
        actors.append({"path": "actors.capital_allocator:CapitalAllocator", "config": {
            "vol_window": "14d", "sharpe_window": "14d", "max_weight": 0.7, **allocator,
        }})
    override = {
        "strategies": [_strategy(GOOD), _strategy(BAD)],
        "actors": actors,
        "risk": {"max_notional_per_order": {}},
        "backtest": {
            "catalog_path": str(catalog or tmp / "catalog"),
            "output_dir": str(tmp),
            "data": [
                {"source": DATA, "format": "privet_csv", "instrument_id": inst,
                 "bar_type": f"{inst}-15-MINUTE-LAST-EXTERNAL"}
                for inst in INSTRUMENTS.values()
            ],
        },
    }
    path = tmp / "override.yaml"
    path.write_text(yaml.safe_dump(override, sort_keys=False))
    return load_node_settings(DEFAULT_CONFIG, [path])


def read_bus(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "bus.jsonl").read_text().splitlines()]


def ns(text: str) -> int:
    import pandas as pd

    return pd.Timestamp(text, tz="UTC").value


# -- metrics maths ---------------------------------------------------------------------------------


def test_rolling_stats_match_numpy_over_a_sliding_window() -> None:
    rng = np.random.default_rng(7)
    returns = rng.normal(0.0002, 0.01, 1_000)
    stats = RollingStats(200)
    for r in returns:
        stats.push(float(r))
    window = returns[-200:]
    ppy = 35_040
    assert len(stats) == 200
    assert stats.sharpe(ppy) == pytest.approx(window.mean() / window.std(ddof=1) * math.sqrt(ppy))
    downside = math.sqrt(np.mean(np.minimum(window, 0) ** 2))
    assert stats.sortino(ppy) == pytest.approx(window.mean() / downside * math.sqrt(ppy))
    assert stats.volatility(ppy) == pytest.approx(window.std(ddof=1) * math.sqrt(ppy))
    assert stats.total_return() == pytest.approx(np.prod(1 + window) - 1)
    flat = RollingStats(5)
    for _ in range(5):
        flat.push(0.0)
    assert flat.sharpe(ppy) is None and flat.sortino(ppy) is None  # undefined, not 0 or inf


def test_strategy_performance_drawdown_capital_and_pauses() -> None:
    perf = StrategyPerformance("S", capital=10_000, windows=[4], periods_per_year=100, min_fill=1)
    perf.sample(0, 0.0)  # warming up: no decision yet, nothing measured
    assert perf.samples == 0
    perf.on_decision(100.0, 1.0)
    perf.sample(1, 0.0)  # flat: a zero return
    perf.sample(2, 500.0)  # +5% of 10k
    assert perf.nav == pytest.approx(1.05) and perf.drawdown == 0
    perf.set_capital(20_000)  # a bigger budget: returns are per deployed capital from now on
    perf.sample(3, 500.0)
    perf.sample(4, -1_600.0)  # -2100 on 20k = -10.5%
    assert perf.nav == pytest.approx(1.05 * 0.895)
    assert perf.drawdown == pytest.approx(0.105) and perf.max_drawdown == pytest.approx(0.105)
    assert perf.metric("equity") == pytest.approx(20_000 - 1_600)
    assert perf.metric("sharpe", 4) is not None  # 4 returns: the window is full
    perf.set_scale(0.0)  # paused (the position closes at the same price)
    perf.add_realized(-1_600.0)
    perf.sample(5, 0.0)  # the period began with capital deployed: it counts (a zero return)
    perf.sample(6, 0.0)  # paused and flat: skipped
    assert perf.samples == 5
    perf.add_realized(-40.0)  # a fee after the pause: measured against the last capital
    perf.sample(7, 0.0)
    assert perf.samples == 6 and perf.nav == pytest.approx(1.05 * 0.895 * 0.998)
    perf.rebase()
    assert perf.drawdown == 0 and perf.max_drawdown > 0.1
    perf.close_trade(10.0)
    perf.close_trade(-5.0)
    assert perf.metric("win_rate") == 0.5 and perf.metric("trade_count") == 2
    perf.add_fill(30_000, 30.0)
    mean_capital = (10_000 * 2 + 20_000 * 4) / 6  # capital at each measured sample
    assert perf.metric("fees") == 30
    assert perf.metric("turnover") == pytest.approx(30_000 / mean_capital)
    state = perf.state()
    fresh = StrategyPerformance("S", 1, [4], 100)
    fresh.restore(state)
    assert fresh.state() == state


def test_shadow_return_follows_the_published_target() -> None:
    perf = StrategyPerformance("S", 1_000, [2], 100, min_fill=1, fee_rate=0.001)
    perf.on_decision(100.0, 1.0)  # go long: pays 0.1%
    perf.sample(0, 0.0)
    perf.on_decision(110.0, -1.0)  # +10% long, then flip: pays 0.2%
    perf.sample(1, 0.0)
    perf.on_decision(99.0, -1.0)  # -10% price, short: +10%
    perf.sample(2, 0.0)
    # the window of 2 holds the last two periods: +10% minus the flip's fee, then +10%
    assert perf.metric("shadow_return", 2) == pytest.approx((1 + 0.1 - 0.002) * 1.10 - 1)


# -- policy engine --------------------------------------------------------------------------------

H = 3_600 * 10**9


def engine_for(*rules: dict) -> tuple[PolicyEngine, dict]:
    policy = msgspec.convert({"schema_version": 1, "rules": list(rules)}, GovernancePolicy)
    values: dict = {}
    engine = PolicyEngine(policy, ["S"])
    return engine, values


def step(engine: PolicyEngine, values: dict, t: int, **metrics):
    values.update(metrics)
    transition = engine.evaluate("S", t, lambda _sid, name, _w: values.get(name))
    if transition is not None:
        engine.commit(transition)
    return transition


def test_throttle_with_hysteresis_and_cooldown() -> None:
    engine, v = engine_for({"name": "sr", "metric": "sharpe", "window": "30d", "op": "<",
                            "threshold": 0.0, "action": "throttle", "scale": 0.5,
                            "hysteresis": 0.25, "cooldown": "24h"})
    assert step(engine, v, 0, sharpe=None) is None  # not available yet: no decision
    t = step(engine, v, 1 * H, sharpe=-0.1)
    assert (t.action, t.state, t.scale, t.rule, t.value) == ("throttle", "throttled", 0.5, "sr",
                                                              -0.1)
    assert "rule 'sr' fired (throttle to 0.5): sharpe[30d]=-0.1 < 0" in t.reason
    assert step(engine, v, 2 * H, sharpe=0.5) is None  # cooldown not over
    assert step(engine, v, 30 * H, sharpe=0.2) is None  # inside the hysteresis band
    t = step(engine, v, 31 * H, sharpe=0.3)
    assert (t.action, t.state, t.scale, t.threshold) == ("resume", "active", 1.0, 0.25)
    assert "released after cooldown 24h: sharpe[30d]=0.3 >= 0.25" in t.reason


def test_pause_release_probation_and_retrigger() -> None:
    engine, v = engine_for({"name": "dd", "metric": "drawdown", "op": ">", "threshold": 0.08,
                            "action": "pause", "flatten": True, "cooldown": "24h",
                            "resume_when": {"metric": "shadow_sharpe", "window": "7d",
                                            "op": ">", "threshold": 0.0},
                            "resume_scale": 0.25, "probation": "48h"})
    t = step(engine, v, 0, drawdown=0.09, shadow_sharpe=-1.0)
    assert (t.action, t.state, t.scale, t.flatten) == ("pause", "paused", 0.0, True)
    assert step(engine, v, 25 * H, drawdown=0.09, shadow_sharpe=-0.5) is None  # condition fails
    t = step(engine, v, 26 * H, drawdown=0.09, shadow_sharpe=0.4)
    assert "released" in t.reason
    assert (t.action, t.state, t.scale) == ("throttle", "throttled", 0.25)
    # drawdown is rebased by the actor on release; a new loss during probation pauses again
    t = step(engine, v, 27 * H, drawdown=0.085)
    assert (t.state, t.flatten) == ("paused", True)
    step(engine, v, 60 * H, drawdown=0.0, shadow_sharpe=1.0)
    t = step(engine, v, 108 * H, drawdown=0.0)
    assert (t.state, t.scale) == ("active", 1.0) and "probation of 48h completed" in t.reason


def test_operator_overrides_dominate_and_resume_clears_rules() -> None:
    engine, v = engine_for(
        {"name": "sr", "metric": "sharpe", "window": "30d", "op": "<", "threshold": 0.0,
         "action": "throttle", "scale": 0.5},
        {"name": "gone", "metric": "max_drawdown", "op": ">", "threshold": 0.3,
         "action": "retire", "flatten": True},
    )
    step(engine, v, 0, sharpe=-1.0, max_drawdown=0.1)
    pause = Override(id="o1", strategy_id="S", action="pause", reason="venue incident",
                     operator="alice")
    t = engine.apply_override(pause, H)
    engine.commit(t)
    assert (t.state, t.flatten) == ("paused", False) and "alice pause: venue incident" in t.reason
    assert step(engine, v, 2 * H, sharpe=1.0) is None  # manual pause is sticky
    t = engine.apply_override(Override(id="o2", strategy_id="S", action="resume", reason="ok",
                                       scale=0.5), 3 * H)
    engine.commit(t)
    assert (t.state, t.scale) == ("throttled", 0.5)
    t = step(engine, v, 4 * H, max_drawdown=0.31)
    assert (t.action, t.state, t.flatten) == ("retire", "retired", True)
    assert step(engine, v, 900 * H, max_drawdown=0.0, sharpe=3.0) is None  # only an operator
    t = engine.apply_override(Override(id="o3", strategy_id="S", action="resume",
                                       reason="new model"), 901 * H)
    assert (t.state, t.scale) == ("active", 1.0)


# -- policy validation -----------------------------------------------------------------------------


def test_the_shipped_policy_is_valid() -> None:
    policy = load_policy(REPO_ROOT / "configs" / "governance.yaml")
    assert {r.name for r in policy.rules} >= {"max_drawdown", "negative_sharpe"}
    assert parse_duration(policy.sample_interval).total_seconds() == 900


def _rule(**kw) -> dict:
    return {"name": "r", "metric": "drawdown", "op": ">", "threshold": 0.1, "action": "pause",
            **kw}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([_rule(name="dd", treshold=1)], r"unknown field `treshold`.*rules\[0\] \('dd'\)"),
        ([_rule(), _rule(name="sr", metric="sharp", window="30d")],
         r"rules\[1\] \('sr'\)\.metric: unknown metric 'sharp'"),
        ([_rule(metric="sharpe")], r"rules\[0\] \('r'\)\.window: required for metric 'sharpe'"),
        ([_rule(window="3d")], r"\.window: metric 'drawdown' takes no window"),
        ([_rule(action="throttle")], r"\('r'\)\.scale: throttle needs a scale in \(0, 1\)"),
        ([_rule(scale=0.5)], r"\.scale: only throttle takes a scale"),
        ([_rule(), _rule()], r"rules\[1\] \('r'\)\.name: duplicate rule name"),
        ([_rule(cooldown="1 day")], r"\.cooldown: invalid duration '1 day'"),
        ([_rule(resume_scale=0.25)], r"\.probation: resume_scale < 1 needs a probation"),
        ([_rule(action="retire", cooldown="1d")], r"\.cooldown: a rule released only by"),
        ([_rule(op="=>")], r"rules\[0\] \('r'\)\.op"),
        ([_rule(strategies=[])], r"\.strategies: empty list"),
    ],
)
def test_bad_policies_fail_naming_the_rule_and_field(tmp_path, rules, expected) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "rules": rules}))
    with pytest.raises(PolicyError, match=expected):
        load_policy(path)


def test_bad_policy_files(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    with pytest.raises(PolicyError, match="not found"):
        load_policy(path)
    path.write_text("schema_version: 2\n")
    with pytest.raises(PolicyError, match="schema_version: must be 1"):
        load_policy(path)
    path.write_text("schema_version: 1\nrules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(path)


def test_node_config_with_a_bad_policy_fails_at_load(tmp_path: Path) -> None:
    policy = {"schema_version": 1, "rules": [_rule(name="dd", threshold="high")]}
    settings_path = tmp_path / "override.yaml"
    (tmp_path / "gov.yaml").write_text(yaml.safe_dump(policy))
    settings_path.write_text(yaml.safe_dump({"actors": [{
        "path": "actors.governance:GovernanceActor",
        "config": {"policy_path": str(tmp_path / "gov.yaml")},
    }]}))
    with pytest.raises(ConfigError, match=r"actors\[0\]\.config.*rules\[0\] \('dd'\).threshold"):
        load_node_settings(DEFAULT_CONFIG, [settings_path])


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    """The in-run HMM fits are tiny: BLAS/OpenMP threads only add contention (measured: a
    3-week backtest takes ~1 s single-threaded, 4-8 s with 2 threads on a busy 2-core box)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One catalog of the real bars for every backtest of this module."""
    return tmp_path_factory.mktemp("catalog")


def test_unknown_strategy_in_policy_is_an_error_at_start(tmp_path: Path, catalog: Path) -> None:
    policy = {**POLICY, "rules": [{**POLICY["rules"][0], "strategies": ["HMMRegimeStrategy-XYZ"]}]}
    settings = node_settings(tmp_path, policy=policy, governance={}, allocator=None,
                             catalog=catalog)
    with pytest.raises(ValueError, match=r"\['HMMRegimeStrategy-XYZ'\] are not in this node; "
                                         r"its strategies are \['HMMRegimeStrategy-BAD', "):
        run_backtest(settings, tmp_path / "run", start="2024-01-01", end="2024-01-02",
                     tearsheet=False)
    settings = node_settings(tmp_path, governance={"strategy_ids": [GOOD, "Nope-1"]},
                             catalog=catalog)
    with pytest.raises(ValueError, match=r"\['Nope-1'\] are not in this node"):
        run_backtest(settings, tmp_path / "run2", start="2024-01-01", end="2024-01-02",
                     tearsheet=False)


# -- real backtests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, catalog: Path) -> dict:
    """Run A (Jan 1-24), then a restart (run B, Jan 24 - Feb 14) on the same registry with an
    interrupted registry write left behind and an operator override waiting."""
    tmp = tmp_path_factory.mktemp("governance")
    registry = tmp / "state" / "registry.json"
    settings = node_settings(tmp, governance={"registry_path": str(registry)}, allocator={},
                             catalog=catalog)
    run_a = run_backtest(settings, tmp / "a", start="2024-01-01", end="2024-01-24",
                         tearsheet=False)
    after_a = registry.read_bytes()
    stale = registry.with_name(f".{registry.name}.tmp-99999")
    stale.write_text('{"schema": "nautilus-hmm/governance-registry", "next_seq"')  # torn write
    override = Override(id="op-1", strategy_id=BAD, action="resume", scale=0.5,
                        reason="reviewed: resume at half size", operator="alice",
                        created_utc="2024-01-24T00:00:00Z")
    submit_override(registry.parent / "overrides", override)
    run_b = run_backtest(settings, tmp / "b", start="2024-01-24", end="2024-02-14",
                         tearsheet=False)
    return {"a": run_a, "b": run_b, "registry": registry, "after_a": after_a, "stale": stale}


def test_wrong_way_strategy_is_paused_at_the_configured_drawdown(runs: dict) -> None:
    after_a = msgspec.json.decode(runs["after_a"])
    bad = after_a["strategies"][BAD]
    first = bad["decisions"][0]
    assert (first["action"], first["rule"], first["metric"]) == ("pause", "bad_drawdown",
                                                                  "drawdown")
    assert first["value"] > 0.05 and first["flatten"] and "drawdown=" in first["reason"]
    start, end = ns("2024-01-01"), ns("2024-01-24")
    assert start < first["ts_event"] < end
    assert first["time_utc"].startswith("2024-01-")
    # cross-check against the venue's own record: BAD's realized losses through the flatten,
    # from its running peak, relative to the capital it traded (its first budget)
    positions = pl.read_csv(runs["a"] / "positions.csv").filter(pl.col("strategy_id") == BAD)
    ts_closed = positions["ts_closed"].str.to_datetime(time_zone="UTC").dt.epoch("ns")
    pnl = positions["realized_pnl"].str.split(" ").list.first().cast(pl.Float64)
    closed = pnl.filter(ts_closed <= first["ts_event"]).to_list()
    cumulative = np.cumsum([0.0, *closed])
    loss_from_peak = (cumulative.max() - cumulative[-1]) / BUDGET
    assert 0.04 < loss_from_peak <= first["value"] + 0.005
    # the flatten happened at the pause and BAD did not trade again until a release
    fills = pl.read_csv(runs["a"] / "fills.csv").filter(pl.col("strategy_id") == BAD)
    fill_ts = fills["ts_last"].str.to_datetime(time_zone="UTC").dt.epoch("ns").to_list()
    later = [d["ts_event"] for d in bad["decisions"][1:]]
    resumed = later[0] if later else end
    assert max(t for t in ts_closed.to_list() if t and t <= first["ts_event"]) == first[
        "ts_event"
    ]
    assert not [t for t in fill_ts if first["ts_event"] < t <= resumed]
    # GOOD was never paused
    good = after_a["strategies"][GOOD]["decisions"]
    assert all(d["action"] != "pause" for d in good)


def test_allocator_moves_the_paused_strategys_capital_to_the_other(runs: dict) -> None:
    bus = read_bus(runs["a"])
    budgets = [m for m in bus if m["type"] == "Budget"]
    assert {m["strategy_id"]: m["notional"] for m in budgets[:2]} == pytest.approx(
        {GOOD: BUDGET, BAD: BUDGET}, rel=1e-6
    )
    pause = next(m for m in bus if m["type"] == "GovernanceCommand" and m["action"] == "pause")
    assert pause["strategy_id"] == BAD and pause["flatten"]
    at_pause = {m["strategy_id"]: m["notional"] for m in budgets if m["ts_event"] ==
                pause["ts_event"]}
    before = {m["strategy_id"]: m["notional"] for m in budgets if m["ts_event"] <
              pause["ts_event"]}
    assert at_pause[BAD] == 0.0
    assert at_pause[GOOD] > before[GOOD] * 1.2  # capped at max_weight 0.7 of investable
    assert at_pause[GOOD] == pytest.approx(0.7 * 0.9 * 100_000, rel=0.05)
    # while BAD is paused it never gets a budget above zero
    resume = next((m["ts_event"] for m in bus if m["type"] == "GovernanceCommand" and
                   m["strategy_id"] == BAD and m["action"] != "pause"), None)
    paused_budgets = [m["notional"] for m in budgets if m["strategy_id"] == BAD and
                      pause["ts_event"] <= m["ts_event"] < (resume or 2**63)]
    assert paused_budgets == [0.0]
    # the registry shows the capital governance saw
    registry = msgspec.json.decode(runs["after_a"])
    assert registry["strategies"][GOOD]["metrics"]["capital"] > BUDGET


def test_restart_keeps_every_decision_restores_state_and_applies_the_override(runs) -> None:
    before = msgspec.json.decode(runs["after_a"])
    final = Registry.open(runs["registry"], "HMM-001")
    assert not runs["stale"].exists() and final.removed_temp_files == []
    old = [d for rec in before["strategies"].values() for d in rec["decisions"]]
    old.sort(key=lambda d: d["seq"])
    new = [msgspec.to_builtins(d) for d in final.decisions()]
    assert new[: len(old)] == old  # nothing lost or rewritten
    assert [d["seq"] for d in new] == list(range(1, len(new) + 1))
    assert len({d["id"] for d in new}) == len(new)
    assert old[-1]["ts_event"] < ns("2024-01-24") <= new[len(old)]["ts_event"]
    assert before["strategies"][BAD]["state"] == "paused"  # run A ended with BAD paused

    bus = read_bus(runs["b"])
    commands = [m for m in bus if m["type"] == "GovernanceCommand" and m["strategy_id"] == BAD]
    assert commands[0]["action"] == "pause"
    assert commands[0]["reason"].startswith("restored from registry: paused")
    assert (commands[1]["action"], commands[1]["scale"]) == ("throttle", 0.5)
    assert "alice resume: reviewed" in commands[1]["reason"]
    operator = new[len(old)]
    assert (operator["source"], operator["id"], operator["operator"]) == (
        "operator", "override:op-1", "alice")
    overrides = runs["registry"].parent / "overrides"
    assert [p.name for p in (overrides / "applied").iterdir()] and not list(
        overrides.glob("*.json"))
    # BAD, funded again, trades in run B
    fills = pl.read_csv(runs["b"] / "fills.csv")
    assert fills.filter(pl.col("strategy_id") == BAD).height > 0
    budgets = [m for m in bus if m["type"] == "Budget" and m["strategy_id"] == BAD]
    assert budgets[-1]["notional"] > 0 or final.doc.strategies[BAD].state == "paused"


def test_a_backtest_refuses_a_registry_from_a_later_run(runs, tmp_path, catalog) -> None:
    settings = node_settings(tmp_path, governance={"registry_path": str(runs["registry"])},
                             catalog=catalog)
    with pytest.raises(ValueError, match="belongs to another run"):
        run_backtest(settings, tmp_path / "old", start="2024-01-01", end="2024-01-02",
                     tearsheet=False)


def test_data_time_sampler_fires_where_a_backtest_timer_does() -> None:
    """Live sampling follows the data's time: the first sample is at the first data time, a
    sample time before the data's time fires before that data is handled, one at it fires once
    that data is handled (closed). A closed market is not sampled through: its sample times are
    handed over as idle periods when data resumes, before that data is handled. No wall clock is
    involved, so an accelerated replay samples like the backtest."""
    minute = 60 * 10**9
    fired: list = []
    sampler = DataTimeSampler(
        None, parse_duration("15m"), fired.append, lambda k, last: fired.append(("idle", k, last))
    )
    t0 = 1_700_000_100 * 10**9
    sampler.advance(t0)  # the first bar is about to be handled: nothing due before it
    assert fired == []
    sampler.advance(t0 + 15 * minute)  # the next bar comes: t0 is due, t0 + 15m not yet
    assert fired == [t0]
    sampler.advance(t0 + 15 * minute, closed=True)  # that bar is handled (end of the data)
    assert fired == [t0, t0 + 15 * minute]
    sampler.advance(t0 + 20 * minute)
    sampler.advance(t0 + 30 * minute)  # t0 + 30m fires only once the bar at it is handled
    assert len(fired) == 2
    sampler.advance(t0 + 90 * minute)  # data resumed after a closure: t0 + 30m had data (20m),
    # 45m, 60m and 75m had none: handed over as idle before the data at 90m is handled
    assert fired[2:] == [t0 + 30 * minute, ("idle", 3, t0 + 75 * minute)]
    sampler.advance(t0 + 90 * minute, closed=True)
    assert fired[4:] == [t0 + 90 * minute]
    assert sampler.now_ns == t0 + 90 * minute
    assert (sampler.samples, sampler.idle_periods) == (4, 3)
    sampler.advance(t0)  # late data cannot move time back or sample twice
    assert sampler.now_ns == t0 + 90 * minute and len(fired) == 5
