"""Warm start: a fresh paper node fills its windows and fits on history it requests with
``request_bars`` and decides on its first live bar; without history it warms up on live bars;
its decisions on live bars are those of a node that streamed the same bars live."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from actors.model_lifecycle import read_lifecycle
from hmm_strategy.config import REPO_ROOT, ConfigError, load_node_settings
from hmm_strategy.engine import FitSettings, RegimeEngine, SlowLevel
from hmm_strategy.features import FeatureSpec
from hmm_strategy.live import main
from hmm_strategy.policy import PolicyConfig
from hmm_strategy.synthetic import generate_regime_bars
from hmm_strategy.warm_start import bars_needed
from tests.helpers import live_override, merged, override_file

# A node built in-process leaves adapter coroutines un-awaited (NautilusTrader's own).
pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")

N_BARS, SEED = 1_200, 7  # the replay profile's generator and seed
WARMUP = 400  # fit.warmup_bars; the default features need 49 bars first
NEED = 49 + WARMUP
FILLS = ["ts_last", "side", "filled_qty", "avg_px"]
BARS = generate_regime_bars(N_BARS, seed=SEED)
TS = BARS["ts_event"].to_list()


def override(tmp: Path, name: str, replay: dict | None = None, warm: dict | None = None,
             extra: dict | None = None) -> Path:  # fmt: skip
    data = live_override(
        tmp, state=f"state-{name}", replay_bars=N_BARS, replay={"seed": SEED, **(replay or {})},
        strategies=[{"name": "hmm_btc", "config": {"fit": {"warmup_bars": WARMUP},
                                                   "warm_start": warm or {}}}],
    )  # fmt: skip
    return override_file(tmp, merged(data, extra or {}), f"{name}.yaml")


def run_cli(tmp: Path, name: str, run: str = "", **kw) -> tuple[str, pl.DataFrame]:
    """The user's command, in a subprocess: its console output and its decisions."""
    run_dir = tmp / (run or name)
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(override(tmp, name, **kw)),
        "--run-dir", str(run_dir), "--metrics-port", "0", "--exit-when-replayed",
        "--log-level", "INFO",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, pl.read_csv(run_dir / "decisions.csv")


def run_in_process(tmp: Path, name: str, **kw) -> pl.DataFrame:
    run_dir = tmp / name
    args = ["--override", str(override(tmp, name, **kw)), "--run-dir", str(run_dir)]
    assert main([*args, "--metrics-port", "0", "--exit-when-replayed", "--log-level", "ERROR"]) == 0
    return pl.read_csv(run_dir / "decisions.csv")


def lines_with(out: str, text: str) -> list[str]:
    return [line for line in out.splitlines() if text in line]


@pytest.mark.parametrize(
    ("has_model", "slow"),
    [(False, None), (True, None), (False, SlowLevel(bars_per_bar=2, warmup_bars=190)),
     (True, SlowLevel(bars_per_bar=3, warmup_bars=190))],
)  # fmt: skip
def test_bars_needed_is_exactly_what_the_engine_needs(has_model: bool, slow) -> None:
    """After ``bars_needed`` bars the next bar is decided on; one bar fewer is not enough."""
    features, fit = (
        FeatureSpec(vol_window=10, volume_window=12),
        FitSettings(warmup_bars=320, n_states=2, n_restarts=1, n_iter=20),
    )
    need = bars_needed(features, fit, slow, has_model)
    rows = list(generate_regime_bars(need + 1, seed=3).select(
        "open", "high", "low", "close", "volume").iter_rows())  # fmt: skip

    def engine() -> RegimeEngine:
        if not has_model:
            return RegimeEngine(features, PolicyConfig(), fit, slow=slow)
        trained = RegimeEngine(features, PolicyConfig(), fit, slow=slow)
        for row in generate_regime_bars(800, seed=4).select(
            "open", "high", "low", "close", "volume").iter_rows():  # fmt: skip
            trained.update(*row)
        return RegimeEngine(features, PolicyConfig(), fit, trained.model, "m", slow=slow,
                            slow_model=trained.slow_model)  # fmt: skip

    full = engine()
    assert [full.update(*row) for row in rows[:need]] == [None] * need
    assert full.update(*rows[need]) is not None
    short = engine()
    for row in rows[: need - 1]:
        short.update(*row)
    assert short.update(*rows[need - 1]) is None


def test_in_run_version_names_the_last_bar_fitted() -> None:
    """``inrun-<time of the bar that completed the warm-up>-<usable bars up to it>``: a rejected
    bar is not counted, later bars change nothing, and the time is rounded to the nearest second
    (Binance stamps a kline ``...59.999``; the backtest's bar closes on the second)."""
    fit = FitSettings(warmup_bars=320, n_states=2, n_restarts=1, n_iter=20)
    rows = list(generate_regime_bars(400, seed=3).select(
        "open", "high", "low", "close", "volume").iter_rows())  # fmt: skip
    start = 1_709_294_400_000_000_000 - 1_000_000  # 1-second bars closing at ...59.999
    engine = RegimeEngine(FeatureSpec(vol_window=10, volume_window=12), PolicyConfig(), fit)
    with pytest.raises(ValueError):
        engine.update(1.0, 0.5, 2.0, 1.0, 1.0, start - 10**9)  # high < low: rejected
    fitted_at = None
    for i, row in enumerate(rows):
        engine.update(*row, start + (i + 1) * 10**9)  # bar i closes 12:00:(i+1) - 1 ms
        if fitted_at is None and engine.ready:
            fitted_at = i
    assert fitted_at is not None
    hh, mm, ss = 12, *divmod(fitted_at + 1, 60)
    assert engine.model_version == f"inrun-20240301T{hh}{mm:02d}{ss:02d}Z-{fitted_at + 1}"


@pytest.mark.parametrize(
    ("warm", "fragment"),
    [({"bars": 0}, "warm_start.bars"), ({"timeout_secs": -1}, "warm_start.timeout_secs"),
     ({"bars": "many"}, "warm_start.bars"), ({"enabled": "yes"}, "warm_start.enabled"),
     ({"bars": 10, "history": 3}, "history")],
)  # fmt: skip
def test_bad_warm_start_settings_name_the_file_and_key(tmp_path, warm, fragment) -> None:
    path = override(tmp_path, "bad", warm=warm)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_node_settings(REPO_ROOT / "configs" / "node.yaml", [path])
    assert str(path) in str(info.value)


def test_paper_node_decides_on_its_first_live_bar(tmp_path: Path) -> None:
    """The shipped replay profile (history_bars: auto): the first NEED bars are history."""
    out, decisions = run_cli(tmp_path, "warm")
    assert lines_with(out, f"history     replay: the first {NEED} bars of its source are history")
    (used,) = lines_with(out, "Warm start: ")[-1:]
    assert f"Warm start: {NEED} history bars of BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL" in used
    assert "(2024-01-01 00:15 UTC .. 2024-01-05 16:15 UTC)" in used  # TS[0] .. TS[NEED - 1]
    # the model is named after the last bar it was fitted on: TS[NEED - 1], bar NEED
    assert f"model inrun-20240105T161500Z-{NEED}; first decision on the first live bar" in used
    # the banner's last line says the same, whatever the log level
    detail = used.split("Warm start: ", 1)[1].split("\x1b")[0]  # no colour codes
    assert lines_with(out, f"  history     HMMRegimeStrategy-001: {detail}")
    # one decision per live bar, from the first one on
    assert decisions["ts_event"].to_list() == TS[NEED:]

    # restarted on its checkpoint: the restored engine needs no history, nothing is requested
    out, decisions = run_cli(tmp_path, "warm", run="resumed")
    assert lines_with(out, f"history     HMMRegimeStrategy-001: not needed (state resumed at bar "
                           f"{N_BARS})")  # fmt: skip
    assert not lines_with(out, "Warm start: requested")
    assert decisions.height == 0  # every replayed bar is at or before the checkpoint's last bar


def test_short_or_unanswered_history_falls_back_to_live_bars(tmp_path: Path) -> None:
    out, decisions = run_cli(tmp_path, "short", replay={"history_bars": 100})
    (line,) = lines_with(out, "Warm start: 100 history bars")
    assert f"fewer than the {NEED} the model needs; warming up on the next {NEED - 100}" in line
    assert decisions["ts_event"].to_list() == TS[NEED:]  # 100 history + 349 live bars first

    # the venue never answers: after the timeout the live bars that waited are used
    out, decisions = run_cli(
        tmp_path, "unanswered", replay={"history_bars": 100, "speed": 300,
                                        "faults": {"unanswered_history": True}},
        warm={"timeout_secs": 0.5},
    )  # fmt: skip
    (line,) = lines_with(out, "Warm start: no history used")
    assert f"no complete answer within 0.5 s); warming up on the next {NEED} live bars" in line
    assert decisions["ts_event"].to_list() == TS[100 + NEED :]


def test_warm_decisions_equal_those_of_a_node_that_streamed_the_history(tmp_path: Path) -> None:
    """Truncation: history through request_bars or streamed live, the same decisions and the
    same events. The feed misses 5 bars right after the history: a data gap either way."""
    csv = tmp_path / "bars.csv"
    gapped = pl.concat([BARS.slice(0, NEED), BARS.slice(NEED + 5)])
    gapped.with_columns(
        timestamp=pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC")
    ).select("timestamp", "open", "high", "low", "close", "volume").write_csv(csv)
    replay = {"source": "csv", "path": str(csv),
              "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"}  # fmt: skip
    warm = run_in_process(tmp_path, "warm", replay=replay)
    # warm start off: 'auto' serves no history, every bar is live and the model waits for them
    streamed = run_in_process(tmp_path, "streamed", replay=replay, warm={"enabled": False})
    assert streamed["ts_event"][0] == warm["ts_event"][0] == TS[NEED + 5]
    assert warm.height == N_BARS - NEED - 5
    assert warm.equals(streamed)  # bit for bit: probabilities, states, targets, model version
    events = [pl.read_csv(tmp_path / run / "events.csv") for run in ("warm", "streamed")]
    gaps = [e.filter(pl.col("kind") == "DataGap") for e in events]
    assert gaps[0].height == 1 and gaps[0].equals(gaps[1])  # found across history -> live
    # the same breaker trips and governance actions at the same bars (governance samples from
    # the first live bar on, so the drawdown it quotes differs in the 5th digit)
    same = ["ts_event", "kind", "strategy_id"]
    assert events[0].select(same).equals(events[1].select(same))
    assert pl.read_csv(tmp_path / "warm" / "fills.csv").select(FILLS).equals(
        pl.read_csv(tmp_path / "streamed" / "fills.csv").select(FILLS)
    )


def test_online_trainer_refits_on_history_at_the_first_live_bars(tmp_path: Path) -> None:
    """The online trainer requests its history too: its first refit comes with the strategy's
    first decisions instead of min_train_bars live bars later."""
    models = tmp_path / "models"
    trainer = {"name": "online_trainer", "path": "actors.online_trainer:OnlineTrainer",
               "config": {"strategy": "hmm_btc", "model_dir": str(models), "fit_mode": "sync",
                          "lifecycle": {"history_bars": NEED, "min_train_bars": 400,
                                        "retrain_every_bars": 400, "drift_window": None,
                                        "eval_bars": 50}}}  # fmt: skip
    run_in_process(tmp_path, "trainer", extra={"actors": [trainer]})
    fits = [e for e in read_lifecycle(models / "lifecycle.jsonl") if e.event == "fit_started"]
    assert fits, "the trainer never refitted"
    first = fits[0]
    assert first.ts_event in (TS[NEED], TS[NEED + 1])  # the first live bars, not 400 later
    assert first.evidence["bars"] == NEED  # all of them history (only the deque's newest kept)
    assert first.evidence["data_range"][1] == first.ts_event


def test_saved_model_is_checked_on_the_history(tmp_path: Path) -> None:
    """With a model artifact the history fills the feature windows and the filter, and the log
    reports the model's mean log-likelihood on it; decisions start on the first live bar."""
    from hmm_strategy.artifacts import save_model

    train = RegimeEngine(FeatureSpec(), PolicyConfig(), FitSettings(warmup_bars=600, n_states=2))
    for row in generate_regime_bars(700, seed=99).select(
        "open", "high", "low", "close", "volume").iter_rows():  # fmt: skip
        train.update(*row)
    path = tmp_path / "model.json"
    save_model(train.model, path, feature_spec=FeatureSpec(), data_range=(1, 2), version="m1",
               instrument_id="BTCUSDT.BINANCE",
               bar_type="BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL")  # fmt: skip
    extra = {"strategies": [{"name": "hmm_btc", "config": {
        "model_path": str(path), "fit": {"warmup_bars": WARMUP}, "warm_start": {"bars": 300}}}]}
    out, decisions = run_cli(tmp_path, "model", extra=extra)  # fmt: skip
    (line,) = lines_with(out, "Warm start: 300 history bars")
    assert "model m1; mean log-likelihood " in line  # 300 - 49 history bars decided on
    assert decisions["ts_event"].to_list() == TS[300:]
