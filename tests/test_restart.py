"""Restart safety: SIGKILL mid-run then restart resumes the same regime state (our checkpoints),
and a clean stop/start through NautilusTrader's Redis cache database does the same."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from actors.registry import read_registry
from hmm_strategy.config import REPO_ROOT
from hmm_strategy.live import main
from tests.helpers import free_port, live_override, override_file

N_BARS = 2_500
SID = "HMMRegimeStrategy-001"


def override(tmp: Path, name: str, *, speed: float = 0, max_bars: int | None = None,
             live: dict | None = None, state: str = "state",
             checkpoint: bool = True) -> Path:  # fmt: skip
    data = live_override(
        tmp,
        state=state,
        replay_bars=N_BARS,
        replay={"seed": 5, "speed": speed, "max_bars": max_bars},
        live=live or {},
        strategies=[
            {
                "name": "hmm_btc",
                "config": {
                    "fit": {"warmup_bars": 500},
                    "checkpoint_dir": "{state_dir}" if checkpoint else None,
                    "checkpoint_interval_secs": 0.3,
                },
            }
        ],
    )
    return override_file(tmp, data, f"{name}.yaml")


def run_main(tmp: Path, cfg: Path, run: str) -> Path:
    run_dir = tmp / run
    args = ["--override", str(cfg), "--run-dir", str(run_dir), "--metrics-port", "0"]
    assert main([*args, "--exit-when-replayed", "--log-level", "ERROR"]) == 0
    return run_dir


def decisions(run_dir: Path) -> pl.DataFrame:
    return pl.read_csv(run_dir / "decisions.csv")


def test_sigkill_then_restart_resumes_the_same_regime_state(tmp_path: Path) -> None:
    reference = decisions(
        run_main(tmp_path, override(tmp_path, "ref", state="ref-state"), "reference")
    )
    state = tmp_path / "state"
    cmd = [
        sys.executable, "-m", "hmm_strategy.live",
        "--override", str(override(tmp_path, "slow", speed=250)),
        "--run-dir", str(tmp_path / "crashed"), "--metrics-port", "0", "--log-level", "ERROR",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        checkpoints: list[Path] = []
        while time.monotonic() < deadline:
            time.sleep(0.3)
            assert proc.poll() is None, proc.stdout.read().decode()
            checkpoints = list(state.glob("*.checkpoint.json"))
            crashed = tmp_path / "crashed" / "decisions.csv"
            if checkpoints and crashed.exists() and len(crashed.read_text().splitlines()) > 600:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert checkpoints, "no checkpoint was written before the crash"
    # the registry the crash left behind is whole (atomic writes), and the restart keeps it
    registry_path = state / "governance" / "registry.json"
    at_crash = read_registry(registry_path)
    assert SID in at_crash.strategies
    saved = json.loads(checkpoints[0].read_text())["state"]
    last_ts = saved["last_bar_ts"]
    assert saved["engine"]["model_version"], "the checkpoint should hold the fitted model"

    resumed_dir = run_main(tmp_path, override(tmp_path, "resume"), "resumed")
    resumed = decisions(resumed_dir)
    assert resumed.height > 0
    assert resumed["ts_event"].min() > last_ts  # replayed bars before the checkpoint are skipped
    expected = reference.filter(pl.col("ts_event") > last_ts)
    assert resumed.equals(expected), "the resumed node decided differently from an unbroken run"
    # no duplicate orders: every resumed fill happens on a bar where the unbroken run traded too
    ref_fills = pl.read_csv(tmp_path / "reference" / "fills.csv")["ts_last"].to_list()
    res_fills = pl.read_csv(resumed_dir / "fills.csv")["ts_last"].to_list()
    assert set(res_fills[:-1]) <= set(ref_fills)
    after = read_registry(registry_path)
    assert after.trader_id == at_crash.trader_id and after.updated_ns >= at_crash.updated_ns
    for sid, record in at_crash.strategies.items():
        kept = after.strategies[sid]
        assert kept.decisions[: len(record.decisions)] == record.decisions
        assert kept.model_decisions[: len(record.model_decisions)] == record.model_decisions
        assert len({d.id for d in kept.decisions}) == len(kept.decisions)  # no duplicates


@pytest.fixture()
def redis_port(tmp_path: Path):
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI (.ci/run installs it)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_clean_stop_and_restart_through_redis_cache_database(tmp_path: Path, redis_port: int):
    reference = decisions(
        run_main(tmp_path, override(tmp_path, "ref", state="ref-state"), "reference")
    )
    db = {"cache_database": {"host": "127.0.0.1", "port": redis_port}}
    first = run_main(
        tmp_path, override(tmp_path, "first", max_bars=1_200, live=db, checkpoint=False), "first"
    )
    assert decisions(first).equals(reference.head(decisions(first).height))
    second = decisions(
        run_main(tmp_path, override(tmp_path, "second", live=db, checkpoint=False), "second")
    )
    last_first = decisions(first)["ts_event"].max()
    assert second["ts_event"].min() > last_first  # state came back from Redis: no re-warm-up
    assert second.equals(reference.filter(pl.col("ts_event") > last_first))
