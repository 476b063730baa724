"""``python -m bench`` smoke test: the tiny mode runs every section in seconds.

Checks the result document's shape, that every ratio and target verdict is computed from the
measured numbers (recomputed here, and changed when the numbers change), and that the Markdown
table lands between the markers of the doc. No timing assertions: the numbers of a tiny run mean
nothing.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.backtest import STRATEGIES, throughput_table
from bench.report import BEGIN, END, markdown, update_doc
from bench.runner import SCHEMA_VERSION, _optional, targets

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (
    "machine",
    "settings",
    "data",
    "model",
    "backtest",
    "scaling",
    "scaling_trap",
    "profile",
    "inference",
    "fit",
    "walk_forward",
    "live_latency",
    "live_latency_many",
    "sim_latency",
    "metrics_scrape",
    "memory",
    "shipped_node",
    "sparse_calendar",
    "many_instruments",
    "walk_forward_dask",
    "targets",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    tmp = tmp_path_factory.mktemp("bench")
    doc = tmp / "PERFORMANCE.md"
    doc.write_text(
        f"# Performance\n\nhand-written intro\n\n{BEGIN}\nSTALE-TABLE-PLACEHOLDER\n{END}\n\nafter\n"
    )
    out = tmp / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--mode", "tiny", "--output", str(out), "--doc", str(doc),
         "--work-dir", str(tmp / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), doc, proc.stdout


def test_result_document_has_every_section(tiny) -> None:
    result, _, _ = tiny
    assert result["schema_version"] == SCHEMA_VERSION
    assert result["command"] == "python -m bench --mode tiny" and result["mode"] == "tiny"
    assert set(SECTIONS) <= set(result)
    machine = result["machine"]
    assert machine["logical_cores"] >= 1 and machine["python"].count(".") == 2
    assert machine["libraries"]["nautilus_trader"] == "1.231.0"
    assert [r["strategy"] for r in result["backtest"]["runs"]] == list(STRATEGIES)
    for run in result["backtest"]["runs"]:
        assert run["bars"] == result["settings"]["main_bars"] == run["iterations"]
        assert math.isclose(run["bars_per_s"], run["bars"] / run["cpu_seconds"])
        assert run["linear_settings"] is True and run["peak_rss_mb"] > 0
    assert result["backtest"]["python_threads"] == 1
    hmm = result["backtest"]["runs"][2]
    assert hmm["orders"] > 0, "the HMM strategy should trade on the synthetic regimes"
    assert [r["bars"] for r in result["scaling"]["runs"]] == result["settings"]["scaling_bars"]
    assert all(not r["linear_settings"] for r in result["scaling_trap"]["default"])
    assert result["profile"]["top"] and result["model"]["source"].startswith("pre-fitted")
    inference = result["inference"]
    assert inference["naive"]["max_abs_diff_vs_filter"] < 1e-8  # same numbers, fair comparison
    assert set(inference["engine"]["breakdown_us"]) >= {"features", "filter", "policy"}
    hier = inference["hierarchical"]  # the two-level model's per-bar cost, same run
    assert hier["bars"] > 0 and hier["us_per_bar_two_level"] > 0
    assert math.isclose(
        hier["two_level_vs_single"], hier["us_per_bar_two_level"] / hier["us_per_bar_single_level"]
    )
    assert len(result["fit"]["runs"]) == 2 * len(result["settings"]["fit_sizes"])
    for run in result["fit"]["runs"]:
        plain = run["hmmlearn"]
        assert math.isclose(
            run["vs_hmmlearn_per_iteration"],
            run["ms_per_em_iteration"] / plain["ms_per_em_iteration"],
        )
    for key in ("walk_forward", "live_latency", "live_latency_many", "sim_latency",
                "metrics_scrape"):  # fmt: skip
        assert result[key].get("status") != "todo", f"{key}: its module exists in this repo"
    assert result["walk_forward"]["folds"] >= 1
    assert result["live_latency"]["bar_to_decision_us"]["n"] > 0
    sim = result["sim_latency"]  # every order the venue took was acknowledged and filled
    assert sim.get("status") != "error", sim
    assert sim["submit_to_ack_ms"]["n"] == sim["submit_to_fill_ms"]["n"] == sim["venue_orders"] > 0
    assert result["metrics_scrape"]["series"] > 100
    many_live = result["live_latency_many"]
    one, n = many_live["runs"]
    settings = result["settings"]
    assert (one["instruments"], n["instruments"]) == (1, settings["paper_many_instruments"])
    assert one["bars"] == n["bars"] == n["instruments"] * settings["paper_many_bars"]
    for run in (one, n):  # every instrument's strategy decides; an order counted is a real one
        assert run["strategies"] == run["instruments_deciding"] == run["instruments"]
        assert len(run["actors"]) == 5
        assert 0 < run["bar_to_decision_us"]["n"] <= run["bars"]
        assert run["bar_to_order_submitted_us"]["n"] <= run["orders_submitted"]
        assert set(run["gc_pauses"]) == {"gen0", "gen1", "gen2"}
        for key in ("decision", "order_submitted"):
            bar, close = run[f"bar_to_{key}_us"], run[f"close_to_{key}_us"]
            assert bar["n"] == close["n"]
            if bar["n"]:  # the first bar of a close is stamped at or before the bar itself
                assert 0 < bar["p50"] <= bar["p99"] <= bar["max"] <= close["max"]
    assert one["close_to_decision_us"] == one["bar_to_decision_us"]  # one bar per close
    for name, ratio in many_live["n_vs_one"].items():
        key, q = name.rsplit("_", 1)
        a, b = n[f"{key}_us"].get(q), one[f"{key}_us"].get(q)
        assert ratio == (a / b if a and b else None)
    node = result["shipped_node"]
    noop, shipped = node["runs"]
    assert (noop["run"], noop["actors"], shipped["run"]) == ("noop", [], "shipped")
    assert len(shipped["actors"]) == 5 and noop["bars"] == shipped["bars"] == node["bars"] > 0
    assert math.isclose(node["shipped_vs_noop"], shipped["bars_per_s"] / noop["bars_per_s"])
    pairs = zip(noop["us_per_bar_runs"], shipped["us_per_bar_runs"], strict=True)
    assert math.isclose(node["shipped_vs_noop_median"], statistics.median(n / x for n, x in pairs))
    alone, *each = node["actor_costs"]  # the strategy alone, then with each shipped actor
    assert [r["run"] for r in each] == [f"+ {name}" for name in shipped["actors"]]
    assert math.isclose(alone["added_us_per_bar"], alone["us_per_bar"] - noop["us_per_bar"])
    for r in each:
        assert math.isclose(r["added_us_per_bar"], r["us_per_bar"] - alone["us_per_bar"])
        assert math.isclose(r["vs_noop"], noop["us_per_bar"] / r["us_per_bar"])
    dense, xnys = result["sparse_calendar"]["runs"]
    dense_alone, xnys_alone = result["sparse_calendar"]["strategy_alone"]
    assert 0 < result["sparse_calendar"]["dense_span_days"] < result["sparse_calendar"][
        "sparse_trading_days"
    ]  # the same bars: 15-minute bars every day against an hourly session a trading day
    assert dense_alone["actors"] == xnys_alone["actors"] == []
    assert xnys_alone["bars"] == xnys["bars"]
    assert math.isclose(
        result["sparse_calendar"]["strategy_alone_sparse_vs_dense"],
        xnys_alone["us_per_bar"] / dense_alone["us_per_bar"],
    )
    assert dense["bars"] == xnys["bars"] == result["settings"]["node_bars"]
    assert math.isclose(
        result["sparse_calendar"]["per_bar_cost_sparse_vs_dense"],
        xnys["us_per_bar"] / dense["us_per_bar"],
    )
    many = result["many_instruments"]
    assert [r["instruments"] for r in many["runs"]] == result["settings"]["many_counts"]
    for r in many["runs"]:
        assert r["bars"] == r["instruments"] * many["bars_per_instrument"]
        assert r["strategies"] == r["instruments"] and r["peak_rss_mb"] > 0
        assert math.isclose(
            many["cost_vs_one_instrument"][str(r["instruments"])],
            r["us_per_bar_per_instrument"] / many["runs"][0]["us_per_bar_per_instrument"],
        )
        assert r["rounds"] == result["settings"]["rounds"] == len(r["us_per_bar_runs"])
    assert set(many["cost_vs_one_instrument_median"]) == set(many["cost_vs_one_instrument"])
    dwf = result["walk_forward_dask"]
    assert dwf["series"] == len(dwf["tasks"]) == result["settings"]["dask_series"]
    assert dwf["folds"] >= dwf["series"] and dwf["wall_seconds"] >= dwf["compute_wall_seconds"]
    long_run = result["memory"]["long_run"]
    assert long_run["bars"] == result["settings"]["scaling_bars"][1]
    assert long_run["rss_samples"] and long_run["peak_rss_mb"] >= long_run["rss_with_bars_mb"]


def test_ratios_and_verdicts_come_from_the_measured_numbers(tiny) -> None:
    result, _, _ = tiny
    runs = result["backtest"]["runs"]
    by = {r["strategy"]: r for r in runs}
    ratios = result["backtest"]["ratios"]
    assert math.isclose(ratios["hmm_vs_noop"], by["hmm"]["bars_per_s"] / by["noop"]["bars_per_s"])
    assert math.isclose(
        ratios["hmm_vs_ema_cross"], by["hmm"]["bars_per_s"] / by["ema_cross"]["bars_per_s"]
    )
    small, large = result["scaling"]["runs"]
    assert math.isclose(
        result["scaling"]["throughput_ratio_large_vs_small"],
        large["bars_per_s"] / small["bars_per_s"],
    )
    inference = result["inference"]
    assert math.isclose(
        inference["speedup_vs_naive"],
        inference["naive"]["us_per_bar"] / inference["engine"]["us_per_bar"],
    )
    assert targets(result) == result["targets"]
    for t in result["targets"]:
        assert isinstance(t["met"], bool) and isinstance(t["measured"], float)

    # Change the measurements: the ratios and verdicts follow.
    changed = copy.deepcopy(result)
    for run in changed["backtest"]["runs"]:
        if run["strategy"] == "hmm":
            run["bars_per_s"] = 10.0 * by["noop"]["bars_per_s"]
    changed["backtest"]["ratios"] = throughput_table(changed["backtest"]["runs"])
    changed["inference"]["engine"]["us_per_bar"] = 1.0
    changed["inference"]["speedup_vs_naive"] = inference["naive"]["us_per_bar"]
    verdicts = {t["name"]: t for t in targets(changed)}
    assert math.isclose(verdicts["HMM / no-op throughput"]["measured"], 10.0)
    assert verdicts["HMM / no-op throughput"]["met"] is True
    assert verdicts["RegimeEngine.update us/bar"]["met"] is True
    assert math.isclose(verdicts["HMM / no-op throughput"]["margin"], (10.0 - 0.5) / 0.5)
    assert verdicts["HMM / no-op throughput"]["median_of_rounds"] == ratios["hmm_vs_noop_median"]
    changed["inference"]["engine"]["us_per_bar"] = 50.0
    engine = {t["name"]: t for t in targets(changed)}["RegimeEngine.update us/bar"]
    assert engine["met"] is False and math.isclose(engine["margin"], (5.0 - 50.0) / 5.0)


@pytest.mark.parametrize(
    ("goal", "measured", "met", "margin"),
    [
        (">= 0.5", 0.512, True, 0.024),  # 2.4% above the goal: at the line, and the table says so
        (">= 0.5", 0.45, False, -0.1),
        ("<= 1.2", 1.172, True, 0.028 / 1.2),
        ("<= 1.2", 1.2, True, 0.0),  # on the goal: met, no margin
        ("< 10", 10.0, False, 0.0),  # strictly below: on the goal is not met
        ("< 10", 9.13, True, 0.087),
        (">= 100x", 141.0, True, 0.41),
        ("within 15%", 0.923, True, 0.073),  # points of the ratio left inside the band
        ("within 15%", 1.2, False, -0.05),
    ],
)
def test_a_target_says_its_margin(goal: str, measured: float, met: bool, margin: float) -> None:
    from bench.runner import _target

    t = _target("x", goal, measured)
    assert t["met"] is met and math.isclose(t["margin"], margin, abs_tol=1e-9)


def test_table_goes_to_stdout_and_between_the_doc_markers(tiny) -> None:
    result, doc, stdout = tiny
    text = doc.read_text()
    assert text.startswith("# Performance\n\nhand-written intro") and text.endswith("after\n")
    assert "STALE-TABLE-PLACEHOLDER" not in text and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "`python -m bench --mode tiny`" in text
    table = markdown(result)
    assert table in text and table in stdout
    assert f"{result['backtest']['ratios']['hmm_vs_noop']:.2f}" in table
    many = result["live_latency_many"]["runs"][-1]
    assert f"| {many['instruments']} | {many['bars']:,} | bar to decision | " in table


def test_missing_module_gives_a_todo_entry_and_the_table_says_so(tiny, tmp_path: Path) -> None:
    entry = _optional("backtests.no_such_module", lambda: pytest.fail("must not run"))
    assert entry["status"] == "todo" and "backtests.no_such_module" in entry["reason"]
    result = copy.deepcopy(tiny[0])
    for key in ("walk_forward", "live_latency", "live_latency_many", "metrics_scrape"):
        result[key] = entry
    result["targets"] = targets(result)
    assert "/metrics HTTP scrape p99 ms" not in {t["name"] for t in result["targets"]}
    table = markdown(result)
    assert table.count("TODO: backtests.no_such_module") == 4
    doc = tmp_path / "new.md"
    update_doc(doc, table)  # a doc without markers gets them
    assert BEGIN in doc.read_text() and table in doc.read_text()


def test_pin_blas_threads_limits_a_pool_loaded_before_it(monkeypatch) -> None:
    """``python -m bench.node`` imports numpy before its ``main`` pins: the pool numpy loaded
    must still be limited, not only the environment of what loads later."""
    import numpy  # noqa: F401  (the pool to limit is numpy's, loaded before the pin)
    from threadpoolctl import threadpool_info, threadpool_limits

    from bench import BLAS_THREAD_VARS, pin_blas_threads

    for var in BLAS_THREAD_VARS:  # unset, and unset again after the test (setenv records it)
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    original = threadpool_limits(limits=2, user_api="blas")  # a pool of 2 before the pin
    try:
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}
        pin_blas_threads()
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}
    finally:
        original.restore_original_limits()
