"""Honest exit codes: every CLI answers bad input with ONE line naming the problem, non-zero.

The adversarial cases of issue 11 as a table over the ``python -m`` entry points and the files
they read. Each runs the CLI's ``main`` behind the same error boundary as ``python -m`` does
(``hmm_strategy.cli.run_cli``) and must: exit non-zero, print exactly one line on stderr that
starts with ``error:`` and matches the case's pattern (the cause, not just "error"), and print no
traceback anywhere. A handful of cases also run as real ``python -m`` subprocesses, so the
``__main__`` wiring is proven and a Rust abort (exit 134) would show.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hmm_strategy.cli import run_cli
from hmm_strategy.config import REPO_ROOT

BTC_15M = "binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"
BTC_1M = "binance/privet1x_crypto-trading-bot/BTCUSDT_1m.csv"
NODE_CONFIG_CLIS = (
    "backtests.run",
    "backtests.sweep",
    "backtests.walk_forward",
    "hmm_strategy.train",
)


def _mains() -> dict[str, Callable[[list[str] | None], int]]:
    from actors.kill_switch import main as kill_switch
    from actors.promote import main as promote
    from actors.registry import main as registry
    from backtests.ingest import main as ingest
    from backtests.run import main as run
    from backtests.sweep import main as sweep
    from backtests.walk_forward import main as walk_forward
    from hmm_strategy.live import main as live
    from hmm_strategy.train import main as train
    from ops.__main__ import main as ops
    from venues.sim.__main__ import main as sim

    return {
        "backtests.run": run,
        "backtests.ingest": ingest,
        "backtests.sweep": sweep,
        "backtests.walk_forward": walk_forward,
        "hmm_strategy.train": train,
        "actors.promote": promote,
        "hmm_strategy.live": live,
        "actors.registry": registry,
        "actors.kill_switch": kill_switch,
        "ops": ops,
        "venues.sim": sim,
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_dir: Path) -> dict[str, str]:
    """Bad files and override files the cases point at (real data read from ../shared/data)."""
    d = tmp_path_factory.mktemp("bad_inputs")
    out: dict[str, str] = {"dir": str(d)}

    def text(name: str, body: str | bytes) -> str:
        path = d / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        out[name] = str(path)
        return str(path)

    def override(name: str, doc: dict) -> str:
        # every backtest case gets its own catalog/output under tmp, never the repo's
        doc = {**doc}
        bt = doc.setdefault("backtest", {})
        bt.setdefault("catalog_path", str(d / "catalog"))
        bt.setdefault("output_dir", str(d / "runs"))
        live = doc.setdefault("live", {})
        for key in ("output_dir", "log_dir", "state_dir"):
            live.setdefault(key, str(d / key))
        return text(name, yaml.safe_dump(doc))

    header = "timestamp,open,high,low,close,volume\n"
    text("header_only.csv", header)
    text("garbage.csv.gz", bytes(range(256)) * 8)  # not gzip at all
    rows = (header + "2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n" * 50).encode()
    text("truncated.csv.gz", gzip.compress(rows)[:60])
    text("registry_list.json", "[1, 2, 3]\n")
    text("deep.json", "[" * 200_000 + "]" * 200_000)
    text("a_file", "not a folder\n")
    text("a_readme.md", "# A document\n\nmore than\n\ntwo lines\n")
    src15 = str(data_dir / BTC_15M)
    src1 = str(data_dir / BTC_1M)
    data15 = {"source": src15, "format": "privet_csv", "instrument_id": "BTCUSDT.BINANCE",
              "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"}  # fmt: skip
    override("base.yaml", {"backtest": {"data": [data15]}})
    override("one_minute_as_15.yaml", {"backtest": {"data": [{**data15, "source": src1}]}})
    override(
        "tick_bar_type.yaml",
        {"backtest": {"data": [{**data15, "bar_type": "BTCUSDT.BINANCE-100-TICK-LAST-EXTERNAL"}]}},
    )
    header_only = {**data15, "source": out["header_only.csv"], "format": "ohlcv_csv"}
    override("header_only.yaml", {"backtest": {"data": [header_only]}})
    venue = {"name": "BINANCE", "oms_type": "NETTING", "account_type": "MARGIN"}
    for name, balance in (("usdtt.yaml", "100000 USDTT"), ("huge_balance.yaml", "1e999 USDT")):
        override(name, {"backtest": {"venues": [{**venue, "starting_balances": [balance]}]}})
    override("trader_id.yaml", {"trader_id": "bad"})
    override("bt_log_level.yaml", {"backtest": {"log_level": "LOUD"}})
    override("live_log_level.yaml", {"live": {"log_level": "LOUD"}})
    override("metrics_any_host.yaml", {"live": {"metrics": {"host": "0.0.0.0"}}})
    metrics_actor = {"name": "metrics", "config": {"host": "127.0.0.2"}}
    override("metrics_two_hosts.yaml", {"actors": [metrics_actor]})
    override("metrics_port.yaml", {"live": {"metrics": {"port": 70000}}})
    replay = {"starting_balances": ["5 USDTT"]}
    override("live_usdtt.yaml", {"live": {"venues": {"replay": replay}}})
    policy = yaml.safe_load((REPO_ROOT / "configs" / "governance.yaml").read_text())
    for rule in policy["rules"]:
        if rule.get("window"):
            rule["window"] = "100000000d"
    text("huge_window_policy.yaml", yaml.safe_dump(policy))
    governance = {"name": "governance", "config": {"policy_path": out["huge_window_policy.yaml"]}}
    override("huge_window.yaml", {"actors": [governance]})
    notional = {"name": "hmm_btc", "config": {"max_notional": -5.0}}
    override("negative_notional.yaml", {"backtest": {"data": [data15]}, "strategies": [notional]})
    text("grid_typo.yaml", yaml.safe_dump({"fit.n_statez": [2, 3]}))
    return out


# (id, entry point, argv with {name} placeholders for `files`, pattern the one line must match)
CASES: list = [
    # ---- backtests.run
    ("run-start-banana", "backtests.run", ["--start", "banana"], r"banana.*not an ISO"),
    ("run-end-before-start", "backtests.run",
     ["--start", "2024-06-01", "--end", "2024-05-01"], r"--end .* is not after --start"),
    ("run-start-2030", "backtests.run",
     ["--override", "{base.yaml}", "--start", "2030-01-01"], r"holds no bars: the data covers"),
    ("run-one-minute-as-15", "backtests.run",
     ["--override", "{one_minute_as_15.yaml}"], r"1m apart .* says 15m|1 ?min.*15"),
    ("run-tick-bar-type", "backtests.run",
     ["--override", "{tick_bar_type.yaml}"], r"100-TICK.* not a time bar"),
    ("run-header-only-csv", "backtests.run",
     ["--override", "{header_only.yaml}"], r"header_only\.csv"),
    ("run-usdtt", "backtests.run", ["--override", "{usdtt.yaml}"], r"unknown currency 'USDTT'"),
    ("run-1e999-balance", "backtests.run",
     ["--override", "{huge_balance.yaml}"], r"1e999 USDT.*above"),
    ("run-trader-id", "backtests.run", ["--override", "{trader_id.yaml}"], r"trader_id 'bad'"),
    ("run-log-level", "backtests.run",
     ["--override", "{bt_log_level.yaml}"], r"backtest\.log_level 'LOUD'"),
    ("run-run-dir-under-file", "backtests.run",
     ["--run-dir", "{a_file}/run"], r"--run-dir .*a_file/run is not a writable folder"),
    ("run-missing-config", "backtests.run",
     ["--config", "{dir}/nope.yaml"], r"nope\.yaml: file not found"),
    ("run-unknown-flag", "backtests.run",
     ["--frobnicate"], r"unrecognized arguments: --frobnicate"),
    ("run-governance-window", "backtests.run", ["--override", "{huge_window.yaml}"],
     r"window: duration '100000000d' must be > 0 and at most 100 years"),
    # ---- backtests.ingest
    ("ingest-garbage-gz", "backtests.ingest",
     ["--source", "{garbage.csv.gz}", "--instrument", "BTCUSDT.BINANCE", "--bar-type",
      "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL", "--catalog", "{dir}/cat_i"], r"garbage\.csv\.gz"),
    ("ingest-truncated-gz", "backtests.ingest",
     ["--source", "{truncated.csv.gz}", "--instrument", "BTCUSDT.BINANCE", "--bar-type",
      "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL", "--catalog", "{dir}/cat_i"],
     r"truncated\.csv\.gz"),
    ("ingest-header-only", "backtests.ingest",
     ["--source", "{header_only.csv}", "--format", "ohlcv_csv", "--instrument", "BTCUSDT.BINANCE",
      "--bar-type", "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL", "--catalog", "{dir}/cat_i"],
     r"header_only\.csv"),
    ("ingest-tick-bar-type", "backtests.ingest",
     ["--source", "{data}/" + BTC_15M, "--instrument", "BTCUSDT.BINANCE", "--bar-type",
      "BTCUSDT.BINANCE-100-TICK-LAST-EXTERNAL", "--catalog", "{dir}/cat_i"], r"not a time bar"),
    ("ingest-bad-bar-type", "backtests.ingest",
     ["--source", "{header_only.csv}", "--instrument", "BTCUSDT.BINANCE", "--bar-type", "nope",
      "--catalog", "{dir}/cat_i"], r"nope"),
    ("ingest-price-scale-nan", "backtests.ingest",
     ["--source", "x", "--instrument", "X.Y", "--bar-type", "b", "--catalog", "c",
      "--price-scale", "nan"], r"'nan' must be a finite number > 0"),
    ("ingest-missing-file", "backtests.ingest",
     ["--source", "{dir}/missing.csv", "--instrument", "BTCUSDT.BINANCE", "--bar-type",
      "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL", "--catalog", "{dir}/cat_i"], r"missing\.csv"),
    # ---- hmm_strategy.train
    ("train-out-is-a-file", "hmm_strategy.train",
     ["--start", "2024-01-01", "--end", "2024-02-01", "--out", "{a_file}"],
     r"--out .*a_file is not a writable folder"),
    ("train-start-banana", "hmm_strategy.train",
     ["--start", "banana", "--end", "2024-02-01"], r"banana.*not an ISO"),
    ("train-end-before-start", "hmm_strategy.train",
     ["--start", "2024-03-01", "--end", "2024-02-01", "--out", "{dir}/models"], r"not after"),
    # ---- actors.promote
    ("promote-deep-json", "actors.promote",
     ["promote", "--model", "{deep.json}", "--reason", "x", "--requests-dir", "{dir}/req",
      "--log", "{dir}/lifecycle.jsonl"], r"deep\.json: nested too deeply"),
    ("promote-no-reason", "actors.promote",
     ["promote", "--model", "{deep.json}", "--requests-dir", "{dir}/req"], r"needs --reason"),
    # ---- actors.registry
    ("registry-json-list", "actors.registry", ["--registry", "{registry_list.json}", "show"],
     r"registry_list\.json: must hold a JSON object, not a list"),
    ("registry-missing", "actors.registry", ["--registry", "{dir}/none.json", "show"],
     r"no governance registry at .*none\.json"),
    ("registry-deep-json", "actors.registry", ["--registry", "{deep.json}", "show"],
     r"deep\.json: not a valid registry JSON \(RecursionError\)"),
    ("registry-scale-nan", "actors.registry",
     ["--registry", "{registry_list.json}", "throttle", "s", "--reason", "x", "--scale", "nan"],
     r"'nan' must be a finite number > 0"),
    # ---- backtests.sweep / walk_forward
    ("sweep-grid-typo", "backtests.sweep",
     ["--override", "{base.yaml}", "--grid-file", "{grid_typo.yaml}", "--out", "{dir}/sweep"],
     r"fit\.n_statez=2 is not a valid strategy config.*n_statez"),
    ("sweep-grid-bad-value", "backtests.sweep",
     ["--override", "{base.yaml}", "--grid", "fit.n_states=banana", "--out", "{dir}/sweep"],
     r"fit\.n_states='banana'"),
    ("sweep-workers-zero", "backtests.sweep", ["--grid", "fit.seed=1", "--workers", "0"],
     r"'0' must be > 0"),
    ("walk-forward-start-banana", "backtests.walk_forward", ["--start", "banana"],
     r"banana.*not an ISO"),
    ("walk-forward-max-folds-negative", "backtests.walk_forward", ["--max-folds", "-3"],
     r"'-3' must be > 0"),
    ("walk-forward-out-under-file", "backtests.walk_forward",
     ["--override", "{base.yaml}", "--out", "{a_file}/wf"], r"--out .* is not a writable folder"),
    # ---- hmm_strategy.live (all fail before any node is built)
    ("live-duration-nan", "hmm_strategy.live", ["--duration", "nan"], r"'nan' must be a finite"),
    ("live-duration-negative", "hmm_strategy.live", ["--duration", "-5"], r"'-5' must be a finite"),
    ("live-duration-inf", "hmm_strategy.live", ["--duration", "inf"], r"'inf' must be a finite"),
    ("live-metrics-port-70000", "hmm_strategy.live", ["--metrics-port", "70000"],
     r"port 70000 is outside 0\.\.65535"),
    ("live-log-level-loud", "hmm_strategy.live", ["--log-level", "LOUD"],
     r"--log-level: 'LOUD' is not a log level"),
    ("live-trader-id", "hmm_strategy.live", ["--override", "{trader_id.yaml}"], r"trader_id 'bad'"),
    ("live-config-log-level", "hmm_strategy.live", ["--override", "{live_log_level.yaml}"],
     r"live\.log_level 'LOUD'"),
    ("live-run-dir-under-file", "hmm_strategy.live",
     ["--override", "{base.yaml}", "--run-dir", "{a_file}/run"], r"a_file/run is not a writable"),
    ("live-metrics-any-host", "hmm_strategy.live", ["--override", "{metrics_any_host.yaml}"],
     r"0\.0\.0\.0.*allow_remote"),
    ("live-metrics-two-hosts", "hmm_strategy.live", ["--override", "{metrics_two_hosts.yaml}"],
     r"127\.0\.0\.2.*set it once, in live\.metrics"),
    ("live-metrics-config-port", "hmm_strategy.live", ["--override", "{metrics_port.yaml}"],
     r"port 70000 is outside"),
    ("live-usdtt", "hmm_strategy.live", ["--override", "{live_usdtt.yaml}"],
     r"unknown currency 'USDTT'"),
    ("live-unknown-venue", "hmm_strategy.live", ["--venue", "nasdaq"], r"nasdaq"),
    ("ops-public-host", "ops", ["--host", "0.0.0.0"], r"not loopback.*--allow-remote"),
    ("ops-bad-scrape", "ops", ["--scrape", "nourl"], r"expected NAME=http"),
    ("ops-fleet-missing", "ops", ["--fleet", "{dir}/none.yaml"], r"fleet file .*none\.yaml"),
    ("ops-fleet-and-venue", "ops", ["--fleet", "{dir}/none.yaml", "--venue", "ib"],
     r"--fleet lists the nodes"),
    ("ops-trader-id", "ops", ["--override", "{trader_id.yaml}"], r"trader_id 'bad'"),
    ("ops-unknown-venue", "ops", ["--venue", "nasdaq"], r"nasdaq"),
    ("kill-switch-no-reason", "actors.kill_switch", ["on", "--path", "{dir}/KS"],
     r"one-line --reason"),
    ("kill-switch-under-file", "actors.kill_switch",
     ["on", "--reason", "x", "--path", "{a_file}/KS"], r"a_file"),
    ("sim-port-too-large", "venues.sim", ["--port", "99999"], r"--port"),
    ("sim-balance-not-a-number", "venues.sim", ["--balance", "USDT=abc"], r"ASSET=AMOUNT"),
    ("sim-balance-no-amount", "venues.sim", ["--balance", "USDT"], r"ASSET=AMOUNT"),
    ("sim-negative-bars", "venues.sim", ["--bars", "-5"], r"--bars"),
    ("sim-faults-not-json", "venues.sim", ["--faults", "{bad"], r"--faults is not JSON"),
    ("sim-faults-negative", "venues.sim", ["--faults", '{"rate_limit": -3}'],
     r"--faults counts must be whole numbers >= 0, got \{'rate_limit': -3\}"),
    ("sim-urls-file-unwritable", "venues.sim", ["--urls-file", "{a_file}/u.json"],
     r"--urls-file folder .*a_file is not a writable folder"),
    ("registry-multiline-reason", "actors.registry",
     ["--registry", "{dir}/registry.json", "pause", "HMMRegimeStrategy-001", "--reason",
      "a\nforged line", "--force"], r"one non-empty line"),
    ("kill-switch-off-not-a-switch-file", "actors.kill_switch",
     ["off", "--path", "{a_readme.md}"], r"does not look like a kill switch file"),
    ("kill-switch-off-a-folder", "actors.kill_switch", ["off", "--path", "{dir}"],
     r"not a kill switch file"),
    ("live-run-dir-of-another-run", "hmm_strategy.live",
     ["--override", "{base.yaml}", "--run-dir", "{dir}"], r"already holds files of another run"),
    ("run-run-dir-of-another-run", "backtests.run", ["--run-dir", "{dir}"],
     r"already holds files of another run"),
    ("run-negative-max-notional", "backtests.run",
     ["--override", "{negative_notional.yaml}", "--start", "2024-12-20", "--end", "2024-12-21"],
     r"max_notional must be > 0"),
]  # fmt: skip


def _expand(argv: list[str], files: dict[str, str], data_dir: Path) -> list[str]:
    table = {**files, "data": str(data_dir)}
    return [re.sub(r"\{([\w.]+)\}", lambda m: table[m.group(1)], a) for a in argv]


def check_one_line(code: int, out: str, err: str, pattern: str) -> None:
    assert code not in (0, 134), f"exit {code}"
    assert "Traceback" not in out + err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {lines[:5]}"
    assert lines[0].startswith("error: "), lines[0]
    assert not lines[0].startswith("error: unexpected"), f"a user error reported as a bug: {lines}"
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize(
    ("case", "entry", "argv", "pattern"), CASES, ids=[_case_id(c) for c in CASES]
)
def test_bad_input_gives_one_line_and_a_nonzero_exit(
    case, entry, argv, pattern, files, data_dir, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(files["dir"])  # relative defaults (catalog, runs, models) land in tmp
    monkeypatch.delenv("TRADING_ENABLED", raising=False)
    argv = _expand(argv, files, data_dir)
    if entry in NODE_CONFIG_CLIS and "--override" not in argv and "--config" not in argv:
        argv = ["--override", files["base.yaml"], *argv]  # tmp catalog and output folders
    main = _mains()[entry]
    try:
        code = run_cli(main, argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    check_one_line(code, captured.out, captured.err, pattern)


# A few of the table's cases as real processes: the `python -m` wiring, and no Rust abort.
SUBPROCESS_CASES = [
    "run-start-banana", "run-trader-id", "ingest-garbage-gz", "train-out-is-a-file",
    "promote-deep-json", "registry-json-list", "sweep-workers-zero",
    "walk-forward-max-folds-negative", "live-log-level-loud", "live-trader-id",
    "live-duration-nan", "ops-public-host", "kill-switch-no-reason",
]  # fmt: skip


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_python_m_entry_points_exit_with_one_line(case, files, data_dir) -> None:
    _, entry, argv, pattern = next(c for c in CASES if _case_id(c) == case)
    argv = _expand(argv, files, data_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TRADING_ENABLED", None)
    proc = subprocess.run(
        [sys.executable, "-m", entry, *argv],
        cwd=files["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    check_one_line(proc.returncode, proc.stdout, proc.stderr, pattern)


def test_unexpected_exception_is_one_line_naming_its_type(capsys) -> None:
    """A bug (not a user error) still gives one line, naming the exception type, and exit 1."""

    def broken(argv: list[str] | None) -> int:
        raise KeyError("boom")

    assert run_cli(broken, []) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: unexpected KeyError: 'boom'"
