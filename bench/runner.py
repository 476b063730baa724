"""Run every benchmark in one process and assemble the result document (``latest.json``)."""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

SCHEMA_VERSION = 1


class Sizes(msgspec.Struct, frozen=True):
    """How much work each section does (``full`` is the reference; ``quick`` ~2.5 minutes)."""

    main_bars: int
    rounds: int  # interleaved repeats of the throughput and node pairs (least CPU time kept)
    scaling_bars: tuple[int, int]
    trap_bars: tuple[int, int]
    profile_bars: int
    inference_bars: int
    naive_bars: int
    fit_sizes: tuple[int, ...]
    fit_em_iterations: int
    walk_forward_days: int  # of synthetic 15-minute bars
    walk_forward_train: str
    walk_forward_test: str
    walk_forward_max_folds: int | None
    paper_bars: int
    paper_many_instruments: int  # section 4c: HMM strategies / instruments in the paper node
    paper_many_bars: int  # bars per instrument (the 1-instrument run: instruments x this)
    scrape_renders: int
    scrape_requests: int
    sim_bars: int
    node_bars: int  # shipped config through BacktestNode, and the sparse-calendar comparison
    node_warmup_bars: int | None  # None: the shipped fit.warmup_bars (5,760)
    many_counts: tuple[int, ...]  # HMM strategies / instruments in one node
    many_bars: int  # bars per instrument
    dask_series: int  # walk-forward over this many series on a 2-worker Dask LocalCluster
    dask_max_folds: int


MODES: dict[str, Sizes] = {
    "full": Sizes(
        main_bars=500_000,
        rounds=3,
        scaling_bars=(100_000, 1_000_000),
        trap_bars=(15_000, 30_000),
        profile_bars=50_000,
        inference_bars=50_000,
        naive_bars=300,
        fit_sizes=(100_000, 500_000),
        fit_em_iterations=20,
        walk_forward_days=365,
        walk_forward_train="60d",
        walk_forward_test="14d",
        walk_forward_max_folds=None,
        paper_bars=12_000,
        paper_many_instruments=10,
        paper_many_bars=2_000,
        scrape_renders=200,
        scrape_requests=100,
        sim_bars=2_400,
        node_bars=40_832,  # the length of Lean's SPY hourly file (23 years of XNYS hours)
        node_warmup_bars=None,
        many_counts=(1, 10, 50),
        many_bars=4_000,
        dask_series=10,
        dask_max_folds=3,
    ),
    "quick": Sizes(
        main_bars=60_000,
        rounds=2,
        scaling_bars=(20_000, 200_000),
        trap_bars=(5_000, 10_000),
        profile_bars=20_000,
        inference_bars=20_000,
        naive_bars=200,
        fit_sizes=(100_000,),
        fit_em_iterations=10,
        walk_forward_days=365,
        walk_forward_train="60d",
        walk_forward_test="14d",
        walk_forward_max_folds=3,
        paper_bars=3_000,
        paper_many_instruments=10,
        paper_many_bars=300,
        scrape_renders=100,
        scrape_requests=50,
        sim_bars=600,
        node_bars=12_000,
        node_warmup_bars=None,
        many_counts=(1, 10, 50),
        many_bars=800,
        dask_series=10,
        dask_max_folds=1,
    ),
    "tiny": Sizes(  # the smoke test: every code path, seconds, numbers meaningless
        main_bars=3_000,
        rounds=1,
        scaling_bars=(1_500, 4_500),
        trap_bars=(600, 1_200),
        profile_bars=1_000,
        inference_bars=1_000,
        naive_bars=10,
        fit_sizes=(4_000,),
        fit_em_iterations=2,
        walk_forward_days=40,
        walk_forward_train="20d",
        walk_forward_test="7d",
        walk_forward_max_folds=1,
        paper_bars=400,
        paper_many_instruments=3,
        paper_many_bars=200,
        scrape_renders=5,
        scrape_requests=3,
        sim_bars=150,
        node_bars=1_500,
        node_warmup_bars=500,
        many_counts=(1, 3),
        many_bars=200,
        dask_series=2,
        dask_max_folds=1,
    ),
}


def _todo(module: str, exc: ImportError) -> dict[str, Any]:
    return {"status": "todo", "reason": f"{module} is not available yet ({exc})"}


def _optional(module: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a section that depends on another team's module; a TODO entry if it is missing."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return _todo(module, exc)
    return run()


def _log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def run(mode: str, command: str, work_dir: Path | None = None) -> dict[str, Any]:
    from bench import backtest as bt
    from bench.data import benchmark_frame, fit_artifact, to_bars
    from bench.fit import fit_benchmarks, walk_forward_benchmark
    from bench.inference import engine_inference, hierarchical_inference, naive_inference
    from bench.machine import load_average, machine_info
    from bench.memory import current_rss_mb
    from hmm_strategy.artifacts import load_model

    sizes = MODES[mode]
    started = time.perf_counter()
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "mode": mode,
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "settings": msgspec.to_builtins(sizes),
        "timing": "CPU seconds of this process around engine.run(); wall seconds recorded too",
    }
    work = Path(work_dir or tempfile.mkdtemp(prefix="hmm-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    _log("data: generating synthetic regime bars")
    n_data = max(sizes.main_bars, *sizes.trap_bars, sizes.profile_bars, sizes.node_bars)
    t = time.perf_counter()
    frame = benchmark_frame(n_data)
    gen_seconds = time.perf_counter() - t
    t = time.perf_counter()
    all_bars = to_bars(frame)
    result["data"] = {
        "generator": "bench.data.benchmark_frame (hmm_strategy.synthetic + mean-reverting level)",
        "bars": len(all_bars),
        "interval": "15m",
        "instrument": "BTCUSDT.BINANCE (test-kit definition)",
        "generate_seconds": gen_seconds,
        "to_nautilus_seconds": time.perf_counter() - t,
    }

    _log("model: fitting the artifact the HMM strategy loads (fit excluded from throughput)")
    t = time.perf_counter()
    model_path = fit_artifact(work / "model.json")
    model, _meta = load_model(model_path)
    result["model"] = {
        "source": "pre-fitted model artifact (JSON), fitted on a separate synthetic path",
        "n_states": int(model.n_states_),
        "train_bars": 20_000,
        "fit_seconds": time.perf_counter() - t,
    }

    # -- 1. throughput -------------------------------------------------------------------------
    main_bars = all_bars[: sizes.main_bars]
    gc.collect()
    rss_before = current_rss_mb()
    threads = threading.active_count()  # 1: a second live thread slows the runs (bench.memory)
    names = ", ".join(bt.STRATEGIES)
    _log(f"backtest: {names} over {len(main_bars):,} bars, {sizes.rounds} interleaved rounds")
    runs = bt.interleaved_runs(main_bars, model_path, sizes.rounds)
    result["backtest"] = {
        "bars": len(main_bars),
        "engine": "BacktestEngine, BINANCE NETTING margin venue, maker/taker fees, default "
        "RiskEngine, log level ERROR, backtests.scaling linear settings",
        "rounds": sizes.rounds,
        "runs": runs,
        "python_threads": threads,
        "ratios": bt.throughput_table(runs),
    }

    small, large = sizes.scaling_bars
    _log(f"scaling + memory: hmm over {large:,} then {small:,} bars in a fresh child process")
    probe_out = work / "memprobe.json"
    subprocess.run(
        [sys.executable, "-m", "bench.memprobe", "--long", str(large), "--short", str(small),
         "--model", model_path, "--output", str(probe_out)],
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )  # fmt: skip
    probe = json.loads(probe_out.read_text())
    scaling = probe["runs"]
    result["scaling"] = {
        "strategy": "hmm",
        "process": probe["process"],
        "runs": scaling,
        "throughput_ratio_large_vs_small": scaling[1]["bars_per_s"] / scaling[0]["bars_per_s"],
    }

    trap: dict[str, Any] = {"strategy": "ema_cross", "default": [], "linear": []}
    for n in sizes.trap_bars:
        for linear in (False, True):
            _log(f"scaling trap: ema_cross over {n:,} bars, linear={linear}")
            run_ = bt.run_backtest(all_bars[:n], "ema_cross", None, linear=linear)
            trap["linear" if linear else "default"].append(run_)
    for key in ("default", "linear"):
        a, b = trap[key]
        trap[f"{key}_growth"] = a["bars_per_s"] / b["bars_per_s"]  # cost per bar, long/short
    result["scaling_trap"] = trap

    _log(f"shipped node config vs no-op through BacktestNode + catalog, {sizes.node_bars:,} bars")
    from bench.node import shipped_node, sparse_calendar

    node_frame = frame.head(sizes.node_bars)
    result["shipped_node"] = shipped_node(
        work / "node", node_frame, sizes.node_warmup_bars, sizes.rounds
    )
    _log("sparse calendar: the shipped node on XNYS hourly bars vs dense 15-minute bars")
    result["sparse_calendar"] = sparse_calendar(
        work / "sparse", node_frame, sizes.node_warmup_bars, sizes.rounds
    )
    del node_frame
    _log(f"many instruments: {sizes.many_counts} HMM strategies x {sizes.many_bars:,} bars")
    from bench.node import many_instruments

    result["many_instruments"] = many_instruments(
        work / "many", frame, sizes.many_counts, sizes.many_bars, sizes.rounds
    )

    _log(f"profile: hmm over {sizes.profile_bars:,} bars under cProfile")
    result["profile"] = bt.profile_backtest(all_bars[: sizes.profile_bars], "hmm", model_path)
    del all_bars, main_bars
    gc.collect()

    # -- 2. inference ----------------------------------------------------------------------------
    _log("inference: RegimeEngine.update and the naive hmmlearn window")
    engine = engine_inference(model, frame, sizes.inference_bars)
    naive = naive_inference(model, frame, sizes.naive_bars)
    result["inference"] = {
        "engine": engine,
        "naive": naive,
        "speedup_vs_naive": naive["us_per_bar"] / engine["us_per_bar"],
        "hierarchical": hierarchical_inference(model, frame, sizes.inference_bars),
    }
    del frame
    gc.collect()

    # -- 3. fit + walk-forward -------------------------------------------------------------------
    _log(f"fit: {sizes.fit_sizes} rows x 3/4 states, {sizes.fit_em_iterations} EM iterations")
    result["fit"] = {
        "method": "RegimeHMM full covariance, 1 restart, fixed EM iterations (tol 1e-12)",
        "runs": fit_benchmarks(sizes.fit_sizes, sizes.fit_em_iterations),
    }
    _log("walk-forward")
    result["walk_forward"] = _optional(
        "backtests.walk_forward",
        lambda: walk_forward_benchmark(
            work / "walk_forward",
            days=sizes.walk_forward_days,
            train=sizes.walk_forward_train,
            test=sizes.walk_forward_test,
            max_folds=sizes.walk_forward_max_folds,
        ),
    )

    _log(f"walk-forward over {sizes.dask_series} series on a Dask LocalCluster (2 workers)")
    from bench.fit import dask_walk_forward

    result["walk_forward_dask"] = dask_walk_forward(
        work / "walk_forward_dask",
        sizes.dask_series,
        days=sizes.walk_forward_days,
        train=sizes.walk_forward_train,
        test=sizes.walk_forward_test,
        max_folds=sizes.dask_max_folds,
    )

    # -- 4. live path ----------------------------------------------------------------------------
    _log(f"live path: offline paper node over {sizes.paper_bars:,} replayed bars")

    def live() -> dict[str, Any]:
        from bench.live import paper_latency

        return paper_latency(work / "paper", model_path, sizes.paper_bars)

    result["live_latency"] = _optional("venues.replay", live)

    n_many = sizes.paper_many_instruments
    _log(
        f"live path: offline paper node, {n_many} instruments x {sizes.paper_many_bars:,} bars, "
        f"then 1 instrument x {n_many * sizes.paper_many_bars:,} bars"
    )

    def live_many() -> dict[str, Any]:
        from bench.live import paper_latency_many

        return paper_latency_many(work / "paper_many", model_path, n_many, sizes.paper_many_bars)

    result["live_latency_many"] = _optional("venues.replay", live_many)

    _log(f"live path: live node on the simulated Binance venue over {sizes.sim_bars:,} bars")

    def sim() -> dict[str, Any]:
        # a process of its own: the paper nodes above leave NautilusTrader process-wide state
        # that a live Binance node must not inherit (bench.sim)
        output = work / "sim.json"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.sim", "--bars", str(sizes.sim_bars),
                 "--work-dir", str(work / "sim"), "--output", str(output)],
                cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                timeout=900,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"status": "error", "reason": "no result in 900 s"}
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if x.strip()] or ["no output"]
            tail = " | ".join(lines[-3:])[-500:]
            return {"status": "error", "reason": f"exit {proc.returncode}: {tail}"}
        return json.loads(output.read_text())

    result["sim_latency"] = _optional("venues.sim", sim)

    # -- 5. /metrics -----------------------------------------------------------------------------
    _log("metrics scrape")

    def scrape() -> dict[str, Any]:
        from bench.scrape import scrape_benchmark

        return scrape_benchmark(sizes.scrape_renders, sizes.scrape_requests)

    result["metrics_scrape"] = _optional("actors.metrics", scrape)

    # -- 6. memory -------------------------------------------------------------------------------
    result["memory"] = {
        "method": "VmHWM/VmRSS from /proc/self/status; the peak is reset (clear_refs) after gc "
        "before each backtest. Long run: fresh child process, RSS sampled on a timer of the "
        "engine clock against bars processed (no background thread).",
        "rss_before_backtests_mb": rss_before,
        "backtest_peak_rss_mb": {r["strategy"]: r["peak_rss_mb"] for r in runs},
        "long_run": {
            "bars": scaling[1]["bars"],
            "rss_with_bars_mb": probe["rss_with_bars_mb"],
            "peak_rss_mb": probe["long_run_peak_rss_mb"],
            "rss_samples": probe["long_run_rss_samples"],
            "growth_mb_per_100k_bars": probe["long_run_growth_mb_per_100k_bars"],
            "orders": scaling[1]["orders"],
        },
    }

    result["targets"] = targets(result)
    result["load_average_at_end"] = load_average()
    result["total_seconds"] = time.perf_counter() - started
    return result


def _target(
    name: str, goal: str, measured: float, median: float | None = None
) -> dict[str, Any]:
    """One target judged from ``measured``; ``margin`` is how far it is on the good side of the
    goal, as a fraction of the goal (negative: missed by that much), and ``median`` the median of
    the per-round ratios where the target's pair ran in interleaved rounds (``bench.rounds``)."""
    op, _, bound = goal.partition(" ")
    if op == "within":  # "within 15%" of 1.0: the distance left, in points of the ratio
        limit = float(bound.rstrip("%")) / 100
        margin = limit - abs(measured - 1.0)
        met = margin >= 0
    else:
        limit = float(bound.rstrip("x"))
        margin = (measured - limit if op == ">=" else limit - measured) / limit
        met = {">=": measured >= limit, "<=": measured <= limit, "<": measured < limit}[op]
    return {
        "name": name,
        "goal": goal,
        "measured": measured,
        "met": met,
        "margin": margin,
        "median_of_rounds": median,
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each judged from the measured numbers above."""
    ratios = result["backtest"]["ratios"]
    inf = result["inference"]
    node, sparse = result["shipped_node"], result["sparse_calendar"]
    many = result["many_instruments"]
    worst = max(many["cost_vs_one_instrument"], key=many["cost_vs_one_instrument"].get)
    out = [
        _target(
            "HMM / EMA cross throughput",
            ">= 1.0",
            ratios["hmm_vs_ema_cross"],
            ratios["hmm_vs_ema_cross_median"],
        ),
        _target(
            "HMM / no-op throughput", ">= 0.5", ratios["hmm_vs_noop"], ratios["hmm_vs_noop_median"]
        ),
        _target(
            "long / short run throughput (HMM)",
            "within 15%",
            result["scaling"]["throughput_ratio_large_vs_small"],
        ),
        _target("RegimeEngine.update us/bar", "<= 5", inf["engine"]["us_per_bar"]),
        _target("speed-up vs naive hmmlearn window", ">= 100x", inf["speedup_vs_naive"]),
        _target(
            "shipped node config / no-op (BacktestNode + catalog)",
            ">= 0.5",
            node["shipped_vs_noop"],
            node["shipped_vs_noop_median"],
        ),
        _target(
            "XNYS hourly / dense 15m cost per bar (shipped node)",
            "<= 1.2",
            sparse["per_bar_cost_sparse_vs_dense"],
            sparse["per_bar_cost_sparse_vs_dense_median"],
        ),
        _target(
            "cost per bar per instrument, N instruments / 1 (worst N)",
            "<= 1.15",
            many["cost_vs_one_instrument"][worst],
            many["cost_vs_one_instrument_median"][worst],
        ),
    ]
    scrape = result["metrics_scrape"]
    if scrape.get("status") != "todo":
        out.append(_target("/metrics HTTP scrape p99 ms", "< 10", scrape["http_get_ms"]["p99"]))
    return out
