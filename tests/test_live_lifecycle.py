"""The model lifecycle in the user's paper node: worker-process fits, the poll timer, the
operator's rollback command, and the strategy registry recording every model decision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from actors.model_lifecycle import read_lifecycle
from actors.registry import read_registry
from tests.helpers import live_override, override_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SID = "HMMRegimeStrategy-001"
FIT = {"warmup_bars": 500, "n_restarts": 1}


def override(tmp: Path) -> Path:
    """configs/train.yaml's trainer, made small: a refit every 300 bars, a 120-bar shadow and a
    margin no candidate can miss, so promotions come quickly; fits in a worker process."""
    data = live_override(
        tmp,
        runs=True,
        # long enough never to run out while the test acts; the test stops the node
        replay_bars=20_000,
        replay={"seed": 7, "speed": 150},
        strategies=[{"name": "hmm_btc", "config": {"fit": FIT}}],
        actors=[
            {
                "name": "online_trainer",
                "config": {  # fit settings come from the strategy (hmm_btc)
                    "model_dir": str(tmp / "models"),
                    "fit_mode": "process",
                    "poll_interval_secs": 0.2,
                    "lifecycle": {
                        "history_bars": 800,
                        "min_train_bars": 700,
                        "retrain_every_bars": 300,
                        "drift_window": None,
                        "eval_bars": 120,
                        "metric": "pnl",
                        "margin": -1.0,  # every candidate within the drawdown limit wins
                        "max_drawdown": 1.0,
                    },
                },
            }
        ],
    )
    return override_file(tmp, data, "lifecycle.yaml")


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the node exited while waiting for {what}"
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_paper_node_promotes_in_a_worker_process_and_obeys_a_rollback(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    models = tmp_path / "models"
    registry_path = tmp_path / "state" / "governance" / "registry.json"
    layers = ["--override", "configs/train.yaml", "--override", str(override(tmp_path))]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = (tmp_path / "node.out").open("w")  # a file: a pipe nobody reads would block the node
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmm_strategy.live", *layers, "--run-dir", str(run_dir),
         "--metrics-port", "0", "--log-level", "WARNING"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def promoted() -> list:
        events = read_lifecycle(models / "lifecycle.jsonl")
        done = [e for e in events if e.event == "promoted"]
        return done if len(done) >= 2 else []

    def in_registry(event: str, version: str):
        def check():
            if not registry_path.exists():
                return None
            record = read_registry(registry_path).strategies.get(SID)
            found = [
                d
                for d in (record.model_decisions if record else [])
                if (d.event, d.version) == (event, version)
            ]
            return found[0] if found else None

        return check

    try:
        first, second = wait_for(promoted, proc, "two promotions", timeout=180)[:2]
        # the fits ran in a worker process, not on the event loop
        fits = [e for e in read_lifecycle(models / "lifecycle.jsonl") if e.event == "candidate"]
        assert fits and all(e.evidence["fit_pid"] != proc.pid for e in fits)
        decision = wait_for(in_registry("promoted", second.version), proc, "the registry")
        assert decision.previous_version == first.version
        assert decision.evidence["improvement"] > -1.0

        # the operator rolls back to the first promoted version, through the documented command
        cli = subprocess.run(
            [sys.executable, "-m", "actors.promote", "rollback", "--strategy", "hmm_btc",
             "--to", first.version, "--reason", "test rollback", *layers],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        rolled = wait_for(in_registry("rolled_back", first.version), proc, "the rollback")
        assert rolled.source == "operator" and "test rollback" in rolled.reason
        # the strategy obeys: the first version trades again after later ones (the replay's
        # bars carry historical times while the poll runs on the wall clock: compare by order)
        def obeyed() -> bool:
            versions = pl.read_csv(run_dir / "decisions.csv")["model_version"]
            runs = versions.filter(versions != versions.shift(1))  # one entry per stretch
            return runs.to_list().count(first.version) >= 2

        wait_for(obeyed, proc, "the strategy to trade the rolled-back model")
        assert list((models / "requests" / "applied").glob("*.json"))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "node.out").read_text()[-3000:]
    assert read_registry(registry_path).strategies[SID].model_version == first.version


CHILD = """
import sys, time
from actors.model_lifecycle import FitRunner
runner = FitRunner("process")
runner.submit({})  # an invalid payload: comes back as a failed fit
while runner.poll() is None:
    time.sleep(0.05)
print(*runner._pool._processes, flush=True)
time.sleep(600)
"""


def test_a_killed_node_leaves_no_fit_worker_behind() -> None:
    """SIGKILL the process that owns the fit pool: its worker process exits on its own."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and all(Path(f"/proc/{p}").exists() for p in workers)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()]
    assert not alive, f"orphaned fit workers: {alive}"
