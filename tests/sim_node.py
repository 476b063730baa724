"""Helpers to run ``python -m hmm_strategy.live --venue binance_sim`` against the simulated venue
(:mod:`venues.sim`): small synthetic 1-second bars replayed fast, a node in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from hmm_strategy.config import REPO_ROOT
from tests.helpers import live_override, override_file
from venues.sim import SimConfig

KEYS = {"BINANCE_API_KEY": "sim-test-key", "BINANCE_API_SECRET": "sim-test-secret"}


def sim_config(**overrides: Any) -> SimConfig:
    """500 bars of history, then 600 live 1-second bars at 40 bars/s (15 s)."""
    base: dict[str, Any] = dict(
        api_key=KEYS["BINANCE_API_KEY"], api_secret=KEYS["BINANCE_API_SECRET"],
        source="synthetic", n_bars=1_100, seed=3, interval="1s", history_bars=500, speed=40.0,
    )  # fmt: skip
    return SimConfig(**{**base, **overrides})


def node_override(
    tmp: Path,
    urls: dict[str, str],
    name: str = "node.yaml",
    *,
    live: dict[str, Any] | None = None,
    strategy: dict[str, Any] | None = None,
) -> Path:
    """The shipped config on the sim: its URLs, 1-second bars, a short in-run fit."""
    data = live_override(
        tmp,
        live={"timeout_connection": 20.0, "venues": {"binance_sim": urls}, **(live or {})},
        strategies=[{"name": "hmm_btc", "config": {
            "bar_type": "BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL",
            "features": {"vol_window": 5, "volume_window": 10},
            "fit": {"warmup_bars": 310, "n_restarts": 1, "n_iter": 30, "sticky": 0.0},
            "policy": {"min_confidence": 0.5, "min_hold_bars": 2, "cooldown_bars": 1},
            "checkpoint_interval_secs": 0.5,
            **(strategy or {}),
        }}],
    )  # fmt: skip
    return override_file(tmp, data, name)


def adapter_urls(venue) -> dict[str, str]:
    return dict(venue.urls)


def start_node(
    tmp: Path, override: Path, run_dir: Path, *, mode: str, metrics_port: int
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--venue", "binance_sim", "--mode", mode,
        "--override", str(override), "--run-dir", str(run_dir),
        "--metrics-port", str(metrics_port), "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, **KEYS, "PYTHONPATH": str(REPO_ROOT), "TRADING_ENABLED": "true"}
    return subprocess.Popen(
        cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def get_json(url: str) -> Any:
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def post_json(url: str, body: dict) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(req, timeout=5).read())


def sim_state(venue) -> dict[str, Any]:
    return get_json(f"{venue.urls['base_url_http']}/sim/state")


def balance(state: dict[str, Any], asset: str) -> float:
    row = next((b for b in state["balances"] if b["asset"] == asset), None)
    return float(row["free"]) + float(row["locked"]) if row else 0.0


def wait_until(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; the node must stay alive meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"node exited ({proc.returncode}) before {what}:\n" + proc.stdout.read()[-3000:]
            )
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    last = ""
    try:
        last = f" (last check: {predicate()!r})"
    except OSError as exc:
        last = f" (last check failed: {exc})"
    proc.kill()  # the node's output says why; without it a CI failure cannot be diagnosed
    raise AssertionError(
        f"timed out waiting for {what}{last}; node output:\n{digest(proc.stdout.read())}"
    )


def digest(output: str, first: int = 30, tail: int = 1500) -> str:
    """The node's first warnings and errors (where things went wrong; a CI log keeps only the
    end of a failure) and the tail of its output, without colour codes."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    alerts = [line[:400] for line in plain.splitlines() if "[WARN]" in line or "[ERROR]" in line]
    return (
        f"first {min(first, len(alerts))} of {len(alerts)} warnings/errors:\n"
        + "\n".join(alerts[:first])
        + "\n...\n"
        + plain[-tail:]
    )


def scrape(port: int) -> dict[str, float]:
    """Prometheus samples as ``{"name{labels}": value}``."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of ``name`` samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in samples.items()
        if k.split("{", 1)[0] == name and all(w in k for w in want)
    )  # fmt: skip


CHECKPOINT = "HMM-001-HMMRegimeStrategy-001.checkpoint.json"


def handled_last_bar(tmp: Path, venue) -> bool:
    """The strategy's checkpoint (written every 0.5 s) records the venue's last bar."""
    last = venue.timeline.close_ms(venue.timeline.bars[-1]) * 1_000_000
    try:
        state = json.loads((tmp / "state" / CHECKPOINT).read_text())["state"]
    except (OSError, ValueError, KeyError):
        return False
    return (state.get("last_bar_ts") or 0) >= last


def stop_node(proc: subprocess.Popen, timeout: float = 60) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=timeout)
    return out
