"""A node that fails to start exits non-zero and names the cause (issue 11).

It used to print "stopped cleanly" and exit 0: ``runtime.py`` counted a trader stuck in STARTING
(a strategy's or actor's ``on_start`` raised) as started and never read the run task's exception.
Each case starts the real paper node (``python -m hmm_strategy.live``, offline replay) with one
thing broken and checks the exit code, the last stderr line and the absence of "stopped cleanly".
Also: the metrics address shown in the banner is the one the exporter binds (one source).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import yaml

from hmm_strategy.config import REPO_ROOT
from hmm_strategy.live import EXIT_START, banner, parse_args, resolve_settings
from tests.helpers import live_override, override_file


def _override(tmp: Path, strategy: dict | None = None, actors: list | None = None) -> Path:
    doc = live_override(
        tmp,
        runs=True,
        replay_bars=600,
        strategies=[
            {"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500}, **(strategy or {})}}
        ],
    )
    if actors:
        doc["actors"] = actors
    return override_file(tmp, doc, "broken.yaml")


def _broken(tmp: Path, case: str) -> Path:
    a_file = tmp / "a_file"
    a_file.write_text("not a folder\n")
    if case == "missing-model":
        return _override(tmp, strategy={"model_path": str(tmp / "missing.json")})
    if case == "checkpoint-dir-is-a-file":
        return _override(tmp, strategy={"checkpoint_dir": str(a_file / "state")})
    if case in WRITTEN:
        name, key = WRITTEN[case]
        return _override(tmp, actors=[{"name": name, "config": {key: str(a_file / "x")}}])
    if case == "corrupt-registry":
        registry = tmp / "registry.json"
        registry.write_text('{"schema": ')  # truncated JSON
        governance = {"name": "governance", "config": {"registry_path": str(registry)}}
        return _override(tmp, actors=[governance])
    raise AssertionError(case)


# case -> what the error line must name
CASES = {
    "checkpoint-dir-is-a-file": r"a_file",
    "corrupt-registry": r"registry",
}


# a file an actor writes, under a path that is a file: refused before the node is built
WRITTEN = {
    "decisions-csv-under-a-file": ("decisions", "output_path"),
    "events-csv-under-a-file": ("decisions", "events_path"),
    "registry-under-a-file": ("governance", "registry_path"),
}


@pytest.mark.parametrize("case", list(WRITTEN))
@pytest.mark.parametrize("entry", ["hmm_strategy.live", "backtests.run"])
def test_a_file_an_actor_cannot_write_is_one_line_before_the_node_starts(
    case: str, entry: str, tmp_path: Path
) -> None:
    """Not NautilusTrader's traceback of a component that failed to start: the path, the key
    and why, exit 2, before anything is built or run (the backtest stops before its catalog)."""
    name, key = WRITTEN[case]
    cmd = [sys.executable, "-m", entry, "--override", str(_broken(tmp_path, case)),
           "--run-dir", str(tmp_path / "run")]  # fmt: skip
    if entry == "hmm_strategy.live":
        cmd += ["--metrics-port", "0", "--duration", "60", "--exit-when-replayed"]
    else:
        cmd += ["--no-tearsheet", "--no-baselines"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TRADING_ENABLED", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.splitlines() == [
        f"error: actors[{name}].config.{key} ({tmp_path}/a_file/x): its folder "
        f"{tmp_path}/a_file is not a writable folder (File exists)"
    ]
    assert not (tmp_path / "catalog").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_a_node_that_fails_to_start_exits_non_zero_with_the_cause(case: str, tmp_path: Path):
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(_broken(tmp_path, case)),
        "--run-dir", str(tmp_path / "run"), "--metrics-port", "0", "--duration", "60",
        "--exit-when-replayed", "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TRADING_ENABLED", None)
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )  # fmt: skip
    assert proc.returncode == EXIT_START, (proc.returncode, proc.stderr[-3000:])
    assert "stopped cleanly" not in proc.stdout
    # NautilusTrader's own log lines (written by its Rust logger) may interleave; ours is the one
    # line that starts with "error:"
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: trading node failed to start: "), line
    assert re.search(CASES[case], line), line
    assert "never retrieved" not in proc.stderr  # the run task's exception was read


def _settings(tmp_path: Path, metrics: dict, argv: tuple[str, ...] = ()):
    path = tmp_path / "metrics.yaml"
    path.write_text(yaml.safe_dump({"live": {"metrics": metrics}}))
    args = parse_args(["--override", str(path), *argv])
    return resolve_settings(args, {})


def _exporter_config(settings) -> dict:
    (spec,) = [
        a for a in settings.actor_configs("run") if a.actor_path.startswith("actors.metrics")
    ]
    return spec.config


def test_banner_shows_what_the_exporter_binds(tmp_path: Path) -> None:
    settings, venue_name = _settings(tmp_path, {"host": "127.0.0.5", "port": 9999})
    exporter = _exporter_config(settings)
    assert (exporter["host"], exporter["port"]) == ("127.0.0.5", 9999)
    from hmm_strategy.config import venue_settings

    lines = banner(settings, venue_name, venue_settings(settings, venue_name), tmp_path)
    assert any("http://127.0.0.5:9999/metrics" in line for line in lines)
    # --metrics-port moves both
    settings, _ = _settings(tmp_path, {"host": "127.0.0.5"}, ("--metrics-port", "9100"))
    assert _exporter_config(settings)["port"] == settings.live.metrics.port == 9100


def test_non_loopback_metrics_need_an_opt_in_and_are_flagged(tmp_path: Path) -> None:
    from hmm_strategy.config import ConfigError, venue_settings

    with pytest.raises(ConfigError, match="allow_remote"):
        _settings(tmp_path, {"host": "0.0.0.0"})
    settings, venue_name = _settings(tmp_path, {"host": "0.0.0.0", "allow_remote": True})
    assert _exporter_config(settings)["allow_remote"] is True
    lines = banner(settings, venue_name, venue_settings(settings, venue_name), tmp_path)
    assert any("0.0.0.0" in line and "other machines" in line for line in lines)
    # the exporter itself refuses a non-loopback host without the opt-in
    from actors.metrics import MetricsExporter, MetricsExporterConfig

    with pytest.raises(ValueError, match="allow_remote"):
        MetricsExporter(MetricsExporterConfig(host="0.0.0.0"))
    MetricsExporter(MetricsExporterConfig(host="0.0.0.0", allow_remote=True, port=0))


def test_a_missing_model_fails_when_the_config_loads(tmp_path: Path) -> None:
    """A bad ``model_path`` is found when the node config loads, before any node is built."""
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override",
        str(_broken(tmp_path, "missing-model")), "--run-dir", str(tmp_path / "run"),
        "--metrics-port", "0", "--duration", "60",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Nautilus HMM node" not in proc.stdout  # refused before the banner
    (line,) = proc.stderr.strip().splitlines()
    assert re.search(r"model_path.*missing\.json.*file not found", line), line


def test_banner_says_where_the_venue_is(tmp_path: Path) -> None:
    """The replay feed is offline (it has no testnet); a real venue says testnet or mainnet."""
    from hmm_strategy.config import venue_settings

    settings, _ = _settings(tmp_path, {})
    replay = banner(settings, "replay", venue_settings(settings, "replay"), tmp_path)
    assert "  venue       replay (replay, offline, no network)" in replay
    spot = venue_settings(settings, "binance_spot")
    assert "(binance_spot, testnet)" in banner(settings, "binance_spot", spot, tmp_path)[1]
    main = msgspec.structs.replace(spot, testnet=False)
    assert "(binance_spot, mainnet)" in banner(settings, "binance_spot", main, tmp_path)[1]


def test_banner_says_when_the_in_run_fit_happens(tmp_path: Path) -> None:
    """The fit's rows (fit.warmup_bars) come after the feature windows: the bars it waits for
    are the number the warm start requests and the in-run model version carries."""
    from hmm_strategy.config import venue_settings

    settings, _ = _settings(tmp_path, {})
    lines = banner(settings, "replay", venue_settings(settings, "replay"), tmp_path)
    assert "  model       fit in-run on 5760 feature rows once 5809 bars are in" in lines
    # a slow level (400 coarse rows of 16 bars after its 24-bar feature window) fits later
    slow = {"slow": {"warmup_bars": 400}}
    path = override_file(tmp_path, {"strategies": [{"name": "hmm_btc", "config": slow}]}, "s.yaml")
    settings, _ = resolve_settings(parse_args(["--override", str(path)]), {})
    lines = banner(settings, "replay", venue_settings(settings, "replay"), tmp_path)
    assert (
        "  model       fit in-run on 5760 feature rows once 5809 bars are in; the slow level's "
        "by bar 6767, the first decision after it"
    ) in lines


SLOW_IMPORT = """
import os, pathlib, sys, time

class SlowMsgspec:  # the entry point's first heavy import takes long enough to be interrupted
    def find_spec(self, name, path=None, target=None):
        if name == "msgspec":
            pathlib.Path(os.environ["LOADING_FLAG"]).write_text("loading")
            time.sleep(30)
        return None

sys.meta_path.insert(0, SlowMsgspec())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_while_the_entry_point_loads_is_one_line(tmp_path: Path, sig: int) -> None:
    """Ctrl-C (or a SIGTERM) while Python still imports NautilusTrader (the first ~1-2 s): exit
    130 with the CLI's one ``error: interrupted`` line, as during the node's start; never a
    ``KeyboardInterrupt`` traceback, never a silent exit 143."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_IMPORT)
    flag = tmp_path / "loading"
    env = {**os.environ, "PYTHONPATH": f"{site}:{REPO_ROOT}", "LOADING_FLAG": str(flag)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmm_strategy.live"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert flag.exists(), proc.communicate(timeout=60)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert err.strip() == "error: interrupted", err[-2000:]
