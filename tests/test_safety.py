"""Safety rails that hold whatever happens: the kill switch from the first bar, a stop that closes
positions before it persists anything, one boolean parser, no non-finite limits, one fit minimum,
all-or-nothing checkpoint restores and state keyed to its data source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import polars as pl
import pytest
import yaml

from hmm_strategy.checkpoint import checkpoint_path, save_checkpoint
from hmm_strategy.config import DEFAULT_CONFIG, REPO_ROOT, ConfigError, load_node_settings
from hmm_strategy.flags import FlagError, parse_bool, trading_enabled
from hmm_strategy.live import apply_state, main, prepare_state, record_data_source
from tests.helpers import free_port, live_override, override_file

SID = "HMMRegimeStrategy-001"
N_BARS = 2_500


def write_override(tmp: Path, name: str = "o", *, speed: float = 0, n_bars: int = N_BARS,
                   checkpoint_dir: str | None = "{state_dir}", strategy: dict | None = None,
                   replay: dict | None = None, governed: bool = True) -> Path:  # fmt: skip
    """A fast paper node: a short synthetic replay, a 500-bar in-run fit, loose guardrails
    (``governed=False``: a governance policy without rules, so nothing pauses the strategy)."""
    data = live_override(
        tmp,
        replay_bars=n_bars,
        replay={"seed": 5, "speed": speed, **(replay or {})},
        strategies=[
            {
                "name": "hmm_btc",
                "config": {
                    "fit": {"warmup_bars": 500},
                    "policy": {"min_confidence": 0.5, "min_hold_bars": 4, "cooldown_bars": 2},
                    "checkpoint_dir": checkpoint_dir,
                    "checkpoint_interval_secs": 0.3,
                    **(strategy or {}),
                },
            }
        ],
    )
    if not governed:
        (tmp / "no-rules.yaml").write_text(yaml.safe_dump({"schema_version": 1, "rules": []}))
        policy = {"policy_path": str(tmp / "no-rules.yaml")}
        data["actors"] = [{"name": "governance", "config": policy}]
    return override_file(tmp, data, f"{name}.yaml")


def run_paper(tmp: Path, override: Path, run: str, *extra: str) -> tuple[int, Path]:
    run_dir = tmp / run
    args = ["--override", str(override), "--run-dir", str(run_dir), "--metrics-port", "0"]
    code = main([*args, "--exit-when-replayed", "--log-level", "ERROR", *extra])
    return code, run_dir


def kill_switch_blocks(run_dir: Path) -> int:
    events = pl.read_csv(run_dir / "events.csv")
    blocked = events.filter(
        (pl.col("kind") == "BreakerRejection") & pl.col("detail").str.contains("kill_switch")
    )
    return blocked.height


def n_fills(run_dir: Path) -> int:
    path = run_dir / "fills.csv"
    return pl.read_csv(path).height if path.exists() and path.stat().st_size else 0


# -- the kill switch holds from the first bar ---------------------------------------------------


@pytest.mark.parametrize("how", ["file", "env"])
def test_kill_switch_present_at_start_blocks_the_first_order(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The switch was on before the node started (file created while it was down, or
    TRADING_ENABLED=off): not one order, while the strategy keeps deciding and every order it
    wanted is recorded as blocked by the kill switch."""
    override = write_override(tmp_path)
    if how == "file":
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "KILL_SWITCH").write_text("maintenance window\n")
    else:
        monkeypatch.setenv("TRADING_ENABLED", "off")
    code, run_dir = run_paper(tmp_path, override, "run")
    assert code == 0
    if how == "file":  # the banner says so before anything trades
        assert "KILL SWITCH ON" in capsys.readouterr().out
    assert pl.read_csv(run_dir / "decisions.csv").height > 1_000
    assert n_fills(run_dir) == 0
    assert kill_switch_blocks(run_dir) > 0


def test_the_switch_now_wins_over_a_halt_restored_from_a_checkpoint(tmp_path: Path) -> None:
    """Halted in the first run (its checkpoint records the halt); the operator deletes the file
    while the node is down: the restarted node trades, and says the old halt was dropped."""
    override = write_override(tmp_path, replay={"max_bars": 1_500})
    (tmp_path / "state").mkdir()
    switch = tmp_path / "state" / "KILL_SWITCH"
    switch.write_text("halt\n")
    code, first = run_paper(tmp_path, override, "first")
    assert code == 0 and n_fills(first) == 0
    saved = json.loads(checkpoint_path(tmp_path / "state", "HMM-001", SID).read_text())
    assert "kill_switch" in saved["state"]["breakers"]["tripped"]

    switch.unlink()
    code, second = run_paper(tmp_path, write_override(tmp_path, "o2"), "second")
    assert code == 0
    assert n_fills(second) > 0
    assert kill_switch_blocks(second) == 0


# -- a stop closes positions first, then persists -------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _metric(body: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_stop_with_an_unwritable_state_folder_closes_the_position(tmp_path: Path) -> None:
    """The checkpoint folder becomes unwritable while the node runs (replaced by a regular file,
    which even root cannot write into): the node keeps trading, counts the failures, fails
    /readyz; Ctrl-C still closes the position, then exits 5 naming the unsaved state."""
    folder = tmp_path / "ckpt"
    override = write_override(
        tmp_path, speed=200, n_bars=20_000, checkpoint_dir=str(folder), governed=False
    )
    port = free_port()
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(override),
        "--run-dir", str(run_dir), "--metrics-port", str(port), "--log-level", "ERROR",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        failures, fills, exposure, ready, broken = 0.0, 0.0, 0.0, None, False
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not (failures >= 1 and fills >= 1 and exposure):
            time.sleep(0.5)
            assert proc.poll() is None, proc.stdout.read()
            if not broken and list(folder.glob("*.checkpoint.json")):
                shutil.move(folder, tmp_path / "ckpt-moved")  # the disk "goes away"
                folder.write_text("not a folder any more")
                broken = True
            try:
                _, body = _get(f"http://127.0.0.1:{port}/metrics")
                ready, _ = _get(f"http://127.0.0.1:{port}/readyz")
            except OSError:
                continue
            failures = _metric(body, "checkpoint_write_failures_total")
            fills = _metric(body, "order_fills_total")
            exposure = _metric(body, "exposure_usd")
        assert broken, "no checkpoint was ever written"
        assert failures >= 1, "checkpoint failures were not counted"
        assert fills >= 1, "the strategy never traded"
        assert exposure, "no open position to close at the stop"
        assert ready == 503
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, out
    assert "could not be saved" in out and "Traceback" not in out
    fills_df = pl.read_csv(run_dir / "fills.csv")
    signed = fills_df.select(
        (
            pl.col("filled_qty").cast(pl.Float64)
            * pl.when(pl.col("side") == "BUY").then(1.0).otherwise(-1.0)
        ).sum()
    ).item()
    assert abs(signed) < 1e-9, f"position left open at stop: {signed}"


# -- one boolean parser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [("true", True), ("TRUE", True), (" 1 ", True), ("yes", True), ("on", True),
     ("false", False), ("0", False), ("No", False), ("off", False)],
)  # fmt: skip
def test_booleans_parse_one_way(value: str, expected: bool) -> None:
    assert parse_bool(value, "X") is expected
    assert trading_enabled({"TRADING_ENABLED": value}) is expected


@pytest.mark.parametrize("value", ["maybe", "flase", "2", "tru e", "enabled", "-1"])
def test_a_non_boolean_trading_enabled_is_refused(value: str, capsys, monkeypatch) -> None:
    with pytest.raises(FlagError, match="TRADING_ENABLED"):
        trading_enabled({"TRADING_ENABLED": value})
    monkeypatch.setenv("TRADING_ENABLED", value)
    assert main(["--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TRADING_ENABLED" in err[0] and "not a boolean" in err[0]


def test_unset_or_empty_trading_enabled_is_not_an_opt_in() -> None:
    assert trading_enabled({}) is None and trading_enabled({"TRADING_ENABLED": " "}) is None


# -- no non-finite number in any config; one fit minimum -----------------------------------------


@pytest.mark.parametrize(
    "strategy_config,key",
    [
        ({"breakers": {"daily_loss_limit": float("nan")}}, "breakers.daily_loss_limit"),
        ({"breakers": {"max_drawdown": float("inf")}}, "breakers.max_drawdown"),
        ({"notional": float("-inf")}, "notional"),
        ({"policy": {"min_confidence": float("nan")}}, "policy.min_confidence"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(
    tmp_path: Path, strategy_config: dict, key: str
) -> None:
    path = tmp_path / "o.yaml"
    strategies = [{"name": "hmm_btc", "config": strategy_config}]
    path.write_text(yaml.safe_dump({"strategies": strategies}))
    assert ".nan" in path.read_text() or ".inf" in path.read_text()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*finite"):
        load_node_settings(DEFAULT_CONFIG, [path])


def test_non_finite_number_in_the_governance_policy_is_refused(tmp_path: Path) -> None:
    from actors.governance import PolicyError, load_policy

    policy = yaml.safe_load((REPO_ROOT / "configs" / "governance.yaml").read_text())
    policy["rules"][0]["resume_when"]["threshold"] = float("nan")
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(policy))
    with pytest.raises(PolicyError, match=r"rules\[0\]\.resume_when\.threshold.*finite"):
        load_policy(path)


@pytest.mark.parametrize(
    "fit,ok",
    [
        ({"warmup_bars": 499, "n_states": 3}, False),
        ({"warmup_bars": 500, "n_states": 3}, True),
        ({"warmup_bars": 309, "n_states": 2}, False),
        ({"warmup_bars": 310, "n_states": 2}, True),
        ({"warmup_bars": 939, "select_states_by_bic": True}, False),
        ({"warmup_bars": 940, "select_states_by_bic": True}, True),
    ],
)
def test_warmup_validation_and_the_fit_agree_on_one_minimum(fit: dict, ok: bool) -> None:
    """The config accepts exactly the warm-up lengths the fit accepts."""
    import numpy as np

    from hmm_strategy.engine import FitSettings
    from hmm_strategy.model import BIC_STATES_GRID, RegimeHMM
    from hmm_strategy.strategy import HMMRegimeStrategyConfig

    raw = {
        "instrument_id": "BTCUSDT.BINANCE",
        "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL",
        "fit": fit,
    }
    settings = msgspec.convert(fit, FitSettings)
    n_states = "bic" if settings.select_states_by_bic else settings.n_states
    rows = np.random.default_rng(0).normal(size=(settings.warmup_bars, 4))
    model = RegimeHMM(n_states=n_states, n_states_grid=BIC_STATES_GRID, n_restarts=1, n_iter=5)
    if ok:
        HMMRegimeStrategyConfig.parse(json.dumps(raw))
        model.fit(rows)
    else:
        with pytest.raises(msgspec.ValidationError, match="warmup_bars must be >="):
            HMMRegimeStrategyConfig.parse(json.dumps(raw))
        with pytest.raises(ValueError, match="too few rows"):
            model.fit(rows)


# -- checkpoints: all or nothing, keyed to their data source -------------------------------------


def _strategy(**config):
    from hmm_strategy.strategy import HMMRegimeStrategy, HMMRegimeStrategyConfig

    return HMMRegimeStrategy(
        HMMRegimeStrategyConfig.parse(
            json.dumps(
                {
                    "instrument_id": "BTCUSDT.BINANCE",
                    "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL",
                    "fit": {"warmup_bars": 500},
                    **config,
                }
            )
        )
    )


def _saved_state() -> dict:
    donor = _strategy()
    donor.engine = donor._new_engine()
    donor.pnl.on_fill(0.5, 40_000.0, 20.0)
    donor.budget, donor.scale, donor.paused = 7_777.0, 0.5, True
    donor.breakers.set_kill_switch(True, "x")
    donor._last_bar_ts = 123
    return json.loads(json.dumps(donor.snapshot()))


@pytest.mark.parametrize("field", ["prev_close", "last_bar_ts", "scale", "last_plan", "engine"])
def test_a_rejected_checkpoint_leaks_nothing_into_the_fresh_start(field: str) -> None:
    state = _saved_state()
    state[field] = "garbage" if field != "last_plan" else [1.0]
    strategy = _strategy()
    strategy.engine = strategy._new_engine()
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError, IndexError)):
        strategy.restore(state)
    fresh = _strategy()
    assert strategy.pnl.state() == fresh.pnl.state()
    assert strategy.breakers.state() == fresh.breakers.state()
    assert (strategy.budget, strategy.scale, strategy.paused) == (fresh.budget, 1.0, False)
    assert strategy._last_bar_ts == 0 and strategy._last_plan is None
    assert strategy.engine.bars_seen == 0


def test_a_good_checkpoint_restores_every_field() -> None:
    strategy = _strategy()
    strategy.restore(_saved_state())
    assert strategy.pnl.qty == 0.5 and strategy.budget == 7_777.0 and strategy.paused
    assert strategy._last_bar_ts == 123


def test_state_of_another_data_source_is_refused_and_fresh_sets_it_aside(tmp_path: Path) -> None:
    """`make run` then a replay of your own CSV: the synthetic run's checkpoint is not silently
    resumed (which would skip every older bar); the node refuses, --fresh sets it aside."""
    override = write_override(tmp_path)
    settings = load_node_settings(DEFAULT_CONFIG, [override])
    path = checkpoint_path(tmp_path / "state", settings.trader_id, SID)
    state = _saved_state()
    state["data_source"] = "replay:REPLAY:testnet:paper:synthetic:gen:::seed=7"
    save_checkpoint(path, state)
    with pytest.raises(ConfigError, match="--fresh"):
        prepare_state(settings, "replay:REPLAY:testnet:paper:csv:/bars.csv:::seed=7", fresh=False)
    assert path.exists()
    lines = prepare_state(settings, state["data_source"], fresh=False)
    assert lines == [f"{SID}: resumes {path} (after bar 0; replayed bars up to it are skipped)"]
    lines = prepare_state(settings, "anything", fresh=True)
    assert path.exists() and "--fresh" in lines[0]  # the check alone moves nothing
    apply_state(settings, fresh=True)
    assert not path.exists()
    assert len(list(path.parent.glob(f"old-*/{path.name}"))) == 1


def test_the_state_check_looks_at_the_file_the_strategy_writes(tmp_path: Path) -> None:
    """With ``strategy_id`` set, NautilusTrader names the strategy ``<strategy_id>-<tag>``: the
    start-up check must read that strategy's checkpoint, not another name's."""
    from hmm_strategy.live import strategy_checkpoints

    override = write_override(tmp_path, strategy={"strategy_id": "Alpha-X"})
    settings = load_node_settings(DEFAULT_CONFIG, [override])
    ((sid, path),) = strategy_checkpoints(settings)
    assert sid == "Alpha-X-001"
    assert path == checkpoint_path(tmp_path / "state", settings.trader_id, "Alpha-X-001")


def test_fresh_moves_every_saved_state_aside_but_keeps_the_kill_switch(tmp_path: Path) -> None:
    """The governance registry is keyed to the data source like the checkpoints: a state folder
    of other data is refused as a whole; --fresh moves it aside, the kill switch file stays."""
    settings = load_node_settings(DEFAULT_CONFIG, [write_override(tmp_path)])
    state = tmp_path / "state"
    (state / "governance").mkdir(parents=True)
    (state / "governance" / "registry.json").write_text('{"nav": 4.03}')
    (state / "KILL_SWITCH").write_text("halt\n")
    (state / "DATA_SOURCE").write_text("replay:REPLAY:testnet:paper:synthetic:gen:::seed=7\n")
    with pytest.raises(ConfigError, match="governance registry.*--fresh"):
        prepare_state(settings, "binance_spot:BINANCE:testnet:live", fresh=False)
    lines = prepare_state(settings, "binance_spot:BINANCE:testnet:live", fresh=True)
    assert "--fresh" in lines[0]
    apply_state(settings, fresh=True)
    record_data_source(settings, "binance_spot:BINANCE:testnet:live")  # once the node runs
    assert (state / "KILL_SWITCH").read_text() == "halt\n"
    assert not (state / "governance").exists()
    (aside,) = state.glob("old-*")
    assert (aside / "governance" / "registry.json").read_text() == '{"nav": 4.03}'
    assert (state / "DATA_SOURCE").read_text().strip() == "binance_spot:BINANCE:testnet:live"
    prepare_state(settings, "binance_spot:BINANCE:testnet:live", fresh=False)  # same source: ok


@pytest.mark.parametrize("fresh", [False, True])
def test_a_start_refused_on_a_flag_or_its_data_moves_and_stamps_nothing(
    tmp_path: Path, capsys, fresh: bool
) -> None:
    """A node that never starts (a bad --run-dir; a bar file with no bars) leaves the state
    folder as it was: no data-source stamp that would refuse the next start, and --fresh moves
    nothing until every start-up check passed."""
    override = write_override(tmp_path)
    state = tmp_path / "state"
    (state / "governance").mkdir(parents=True)
    (state / "governance" / "registry.json").write_text('{"nav": 4.03}')
    before = sorted(p.relative_to(state) for p in state.rglob("*"))
    flags = ["--fresh"] if fresh else []
    code = main(["--override", str(override), "--run-dir", "/proc/no/such", *flags])
    assert code == 2 and "--run-dir" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("ts_event,open,high,low,close,volume\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"live": {"venues": {"replay": {"replay": {"source": "csv", "path": str(empty)}}}}}
        )
    )
    code = main(["--override", str(override), "--override", str(bad), *flags,
                 "--run-dir", str(tmp_path / "run"), "--duration", "5"])  # fmt: skip
    assert code != 0
    assert sorted(p.relative_to(state) for p in state.rglob("*")) == before
    assert not (state / "DATA_SOURCE").exists()


def test_the_node_refuses_foreign_state_with_one_line(tmp_path: Path, capsys) -> None:
    override = write_override(tmp_path)
    code, _ = run_paper(tmp_path, override, "first")
    assert code == 0
    other = write_override(tmp_path, "o2", replay={"seed": 99})
    code, _ = run_paper(tmp_path, other, "second")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fresh" in err[0] and "seed=99" in err[0]
    code, third = run_paper(tmp_path, other, "third", "--fresh")
    assert code == 0 and n_fills(third) > 0


# -- breakers: the total cap sees the other strategies; every reason exported by name ------------


def test_total_notional_cap_counts_the_other_strategies_positions(tmp_path: Path) -> None:
    """A buy-and-hold strategy holds ~40k of BTC beside the HMM strategy; with a 45k node-wide
    cap the HMM strategy may add at most ~5k, so its larger targets are blocked as
    ``total_notional`` (the cap used to compare the strategy's own position only)."""
    from backtests.run import run_backtest

    def run(cap: float | None, name: str) -> pl.DataFrame:
        override = {
            "backtest": {"catalog_path": str(tmp_path / "catalog"), "end": "2024-02-15",
                         "baselines": []},
            "strategies": [
                {"name": "hmm_btc", "config": {
                    "fit": {"warmup_bars": 500},
                    "policy": {"min_hold_bars": 4, "min_confidence": 0.6},
                    "breakers": {"max_total_notional": cap, "daily_loss_limit": None,
                                 "max_drawdown": None},
                }},
                {"name": "holder", "path": "backtests.baselines:BuyAndHold", "config": {
                    "instrument_id": "BTCUSDT.BINANCE",
                    "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL",
                    "notional": 40_000.0, "order_id_tag": "002",
                }},
            ],
        }  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(override))
        settings = load_node_settings(DEFAULT_CONFIG, [path])
        run_dir = run_backtest(settings, tmp_path / name, tearsheet=False)
        events = pl.read_csv(run_dir / "events.csv")
        return events.filter(pl.col("kind") == "BreakerRejection")

    capped = run(45_000.0, "capped")
    assert capped.filter(pl.col("detail").str.contains("reason=total_notional")).height > 0
    free = run(None, "free")
    assert free.filter(pl.col("detail").str.contains("reason=total_notional")).height == 0


def test_every_breaker_reason_is_exported_under_its_own_name() -> None:
    from actors.metrics import MetricsExporter, MetricsExporterConfig
    from hmm_strategy.messages import BreakerRejection
    from hmm_strategy.risk import BREAKER_REASONS

    exporter = MetricsExporter(MetricsExporterConfig(port=0))
    for reason in BREAKER_REASONS:
        exporter.on_breaker_rejection(BreakerRejection(0, SID, "BTCUSDT.BINANCE", reason))
    exporter.on_breaker_rejection(BreakerRejection(0, SID, "BTCUSDT.BINANCE", "made_up"))
    counts = {
        s.labels["reason"]: s.value
        for family in exporter.registry.collect()
        if family.name == "breaker_rejections"
        for s in family.samples
        if s.name == "breaker_rejections_total"
    }
    assert {r: counts[r] for r in BREAKER_REASONS} == dict.fromkeys(BREAKER_REASONS, 1.0)
    assert counts["other"] == 1.0


def test_the_env_example_as_documented_leaves_the_defaults_alone(monkeypatch) -> None:
    """`set -a; . ./.env.example`: its empty values mean "unset", not "" (an empty data folder or
    a notional cap of '')."""
    from hmm_strategy.config import apply_env_overrides

    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            monkeypatch.setenv(key.strip(), value.strip())
    settings = apply_env_overrides(load_node_settings(DEFAULT_CONFIG), dict(os.environ))
    assert Path(settings.backtest.data[0].source).exists()
    default = load_node_settings(DEFAULT_CONFIG)
    assert settings.strategies[0].config["max_notional"] == default.strategies[0].config[
        "max_notional"
    ]
    assert trading_enabled(os.environ) is False  # the example ships with trading off


def test_a_flood_of_unusable_bars_cannot_flood_the_log(monkeypatch) -> None:
    """Every bar the engine rejects is counted and never traded on; the warning is logged at
    the 1st, 2nd, 4th, 8th, ... (the issue saw 114k lines, 65 MB of log in a minute)."""
    from hmm_strategy.engine import RegimeEngine
    from hmm_strategy.synthetic import generate_regime_bars
    from marketdata.catalog import bars_to_nautilus, instrument_for
    from tests.test_bad_input import BAR_TYPE, INSTRUMENT_ID, run_strategy

    def unusable(self, *bar) -> None:
        raise ValueError("volume must be finite and >= 0, got nan")

    monkeypatch.setattr(RegimeEngine, "update", unusable)
    frame = generate_regime_bars(3_000, seed=1)
    bars = bars_to_nautilus(frame, BAR_TYPE, instrument_for(INSTRUMENT_ID))
    strategy, orders = run_strategy(bars, model_path=None)
    assert strategy.engine.rejected_bars == 3_000 and not orders
    assert strategy.skip_warnings == 12  # 1, 2, 4, ..., 2048


# -- a stop that could not close everything says so ----------------------------------------------


def thin_last_bar_csv(path: Path, n_bars: int = N_BARS, seed: int = 5) -> Path:
    """Bars whose last one has almost no volume, as a CSV (a real-data replay source, where the
    bar volume is the sandbox's liquidity): the stop's close fills only in part."""
    from hmm_strategy.synthetic import generate_regime_bars

    frame = generate_regime_bars(n_bars, seed)
    last = pl.int_range(pl.len()) == pl.len() - 1
    frame = frame.with_columns(volume=pl.when(last).then(0.001).otherwise(pl.col("volume")))
    frame.select("ts_event", "open", "high", "low", "close", "volume").write_csv(path)
    return path


def test_a_stop_that_leaves_a_position_open_exits_non_zero_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv = thin_last_bar_csv(tmp_path / "bars.csv")
    replay = {"source": "csv", "path": str(csv), "format": "ohlcv_csv"}
    override = write_override(tmp_path, replay=replay, governed=False)
    code, run_dir = run_paper(tmp_path, override, "run")
    out = capsys.readouterr()
    positions = pl.read_csv(run_dir / "positions.csv").filter(pl.col("side") != "FLAT")
    assert positions.height >= 1  # the close filled in part: the position is still open
    assert code == 6, out
    assert "stopped cleanly" not in out.out
    (line,) = out.err.strip().splitlines()
    side, qty = positions["side"][0], positions["quantity"][0]
    assert line.startswith("error: stopped, but positions its strategies should have closed")
    assert f"{side} {qty:f}".rstrip("0") in line and SID in line
