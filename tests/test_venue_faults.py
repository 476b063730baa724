"""Venue faults in the paper node: a feed outage, an order the venue never answers and a venue
reject are survived, counted in /metrics and logged, and trading goes on afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from hmm_strategy.config import ConfigError, load_node_settings
from tests.helpers import free_port, live_override, override_file

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTAGE = {"after_bars": 1_200, "bars": 30}


def drill_override(tmp: Path) -> Path:
    data = live_override(
        tmp,
        runs=True,
        replay_bars=3_000,
        replay={
            "speed": 200,  # 15 s: the in-flight check runs on the wall clock
            "faults": {
                "data_outages": [OUTAGE],
                "unanswered_orders": [2],
                "rejected_orders": [4],
            },
        },
        # fast in-flight checks: an unanswered order is resolved within about a second
        live={
            "exec_engine": {
                "inflight_check_interval_ms": 100,
                "inflight_check_threshold_ms": 300,
                "inflight_check_retries": 2,
                "reconciliation_startup_delay_secs": 0.5,
            }
        },
        strategies=[{"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}}}],
    )
    return override_file(tmp, data, "drill.yaml")


def metric(body: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_paper_node_survives_and_counts_venue_faults(tmp_path: Path) -> None:
    port = free_port()
    run_dir = tmp_path / "run"
    out_path = tmp_path / "node.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hmm_strategy.live", "--override", str(drill_override(tmp_path)),
             "--run-dir", str(run_dir), "--metrics-port", str(port), "--log-level", "WARNING"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        body = ""
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.5)
                assert proc.poll() is None, out_path.read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        body = r.read().decode()
                except OSError:
                    continue
                faults = {
                    k: metric(body, "venue_faults_total", kind=k)
                    for k in ("order_timeout", "order_rejected", "data_gap")
                }
                # every fault happened, and the strategy traded again after the last one
                if min(faults.values()) >= 1 and metric(body, "order_fills_total") >= 4:
                    break
            else:
                raise AssertionError(f"faults or fills missing: {faults}\n{body[-2000:]}")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = out_path.read_text()
    assert proc.returncode == 0, log[-3000:]  # survived: a clean stop, not a crash

    # counted exactly once each
    assert faults == {"order_timeout": 1.0, "order_rejected": 1.0, "data_gap": 1.0}, faults
    assert metric(body, "orders_rejected_total") == 2

    # logged with what happened
    assert f"feed disconnected after {OUTAGE['after_bars']} bars" in log
    assert re.search(rf"Data gap: {OUTAGE['bars']} bar\(s\) missing", log)
    assert "Breaker stale_data tripped" in log
    assert "gets no answer" in log and "exceeded max inflight retries" in log

    # the orders: #2 resolved as rejected UNKNOWN (timeout), #4 rejected by the venue, the rest
    # filled; trading went on after both
    orders = pl.read_csv(run_dir / "orders.csv").sort("ts_init")
    status = orders["status"].to_list()
    assert status[1] == "REJECTED" and status[3] == "REJECTED", status
    assert status.count("REJECTED") == 2
    assert "FILLED" in status[4:], status
    events = pl.read_csv(run_dir / "events.csv")  # the audit trail has the gap too
    (gap,) = events.filter(pl.col("kind") == "DataGap")["detail"].to_list()
    assert f"missing_bars={OUTAGE['bars']}" in gap
    decisions = pl.read_csv(run_dir / "decisions.csv")
    ts = decisions["ts_event"]
    gaps = (ts.diff().drop_nulls() // (15 * 60 * 10**9)).value_counts()
    assert gaps.filter(pl.col("ts_event") == OUTAGE["bars"] + 1).height == 1


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ({"unanswered_orders": [0]}, "order numbers >= 1"),
        ({"data_outages": [{"after_bars": 5, "bars": 0}]}, "bars > 0"),
        ({"drop": [1]}, "drop"),
    ],
)
def test_bad_fault_drill_names_the_key(tmp_path: Path, fragment: dict, message: str) -> None:
    from hmm_strategy.live import parse_args, resolve_settings

    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump({"live": {"venues": {"replay": {"replay": {"faults": fragment}}}}})
    )
    with pytest.raises(ConfigError, match=message):
        resolve_settings(parse_args(["--override", str(path)]), {})


def test_bad_exec_engine_setting_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"live": {"exec_engine": {"inflight_check_retries": -1}}}))
    with pytest.raises(ConfigError, match="inflight_check_retries"):
        load_node_settings(REPO_ROOT / "configs" / "node.yaml", [path])
