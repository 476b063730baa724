"""What users run: the shipped ``configs/node.yaml`` through ``BacktestNode`` and the catalog.

Section 1 of the bench measures the bare strategy on a ``BacktestEngine``. A user runs
``python -m backtests.run --config configs/node.yaml``: every strategy and actor of the shipped
config (decision recorder, governance, allocator, kill switch, metrics exporter), bars streamed
from the ``ParquetDataCatalog`` by a ``BacktestNode``. Here the same node runs with reports off
(no tearsheet, plots or trade reports: they are not per-bar work) on synthetic bench bars
written to a CSV and imported into a fresh catalog, against the same node with the no-op
strategy and no actor on the same bars (the floor of the same path).

The sparse-calendar case puts the same number of bars on the XNYS calendar (hourly bars of the
regular sessions: nights, weekends and holidays closed, ~7 bars a day over ~23 years, like the
Lean SPY hourly file) and compares the cost per bar with the dense 15-minute series.

Times are CPU seconds of this process around ``node.run()`` (catalog read included, node build
excluded), as in section 1.
"""

from __future__ import annotations

import gc
import itertools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import yaml

from bench.memory import peak_rss_mb, reset_peak_rss
from bench.rounds import least_of_rounds, median_ratio

INSTRUMENT_ID = "BTCUSDT.BINANCE"
DENSE_BAR_TYPE = f"{INSTRUMENT_ID}-15-MINUTE-LAST-EXTERNAL"
HOURLY_BAR_TYPE = f"{INSTRUMENT_ID}-1-HOUR-LAST-EXTERNAL"
HOUR_NS = 3_600 * 10**9


def xnys_hourly_times(n_bars: int, last_year: int = 2021) -> np.ndarray:
    """``n_bars`` bar-close times (UTC ns) of hourly bars over XNYS regular sessions, ending in
    ``last_year``, labelled like Lean's SPY hourly file: the 09:30-10:00 bar at 10:00, then every
    whole hour to the close (10:00 ... 16:00 New York), holidays and early closes from
    ``exchange_calendars``."""
    from hmm_strategy.sessions import calendar_for

    cal = calendar_for("XNYS")
    times: list[int] = []
    limit = np.datetime64(f"{last_year + 1}-01-01", "ns").astype("int64")
    for o, c in zip(reversed(cal._opens), reversed(cal._closes), strict=True):
        if c >= limit:
            continue
        first = o - o % HOUR_NS + HOUR_NS  # the first whole hour after the open (UTC hours)
        session = list(range(first, c, HOUR_NS)) + [c]
        times.extend(reversed(session))
        if len(times) >= n_bars:
            break
    if len(times) < n_bars:
        raise ValueError(f"the XNYS table holds fewer than {n_bars:,} hourly bars")
    return np.array(times[:n_bars][::-1], dtype=np.int64)


def write_bars(frame: pl.DataFrame, path: Path, ts: np.ndarray | None = None) -> Path:
    """The bench bars as an ``ohlcv_csv`` file (``timestamp`` = bar close, UTC)."""
    if ts is not None:
        frame = frame.with_columns(ts_event=pl.Series(ts))
    frame.with_columns(
        timestamp=pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC")
    ).select("timestamp", "open", "high", "low", "close", "volume").write_csv(path)
    return path


def node_settings(
    work: Path, name: str, csv: Path, bar_type: str, *, calendar: str = "24/7",
    warmup_bars: int | None = None, noop: bool = False,
):
    """The shipped node config with the data replaced by ``csv`` (and, for ``noop``, the no-op
    strategy alone: no actor)."""
    from hmm_strategy.config import DEFAULT_CONFIG, ComponentSpec, load_node_settings

    strategy: dict[str, Any] = {"bar_type": bar_type, "breakers": {"calendar": calendar}}
    if warmup_bars is not None:
        strategy["fit"] = {"warmup_bars": warmup_bars}
    override = {
        "backtest": {
            "catalog_path": str(work / f"catalog-{name}"),
            "output_dir": str(work / "runs"),
            "log_level": "ERROR",
            "data": [{"source": str(csv), "format": "ohlcv_csv", "instrument_id": INSTRUMENT_ID,
                      "bar_type": bar_type}],
        },
        "strategies": [{"name": "hmm_btc", "config": strategy}],
    }  # fmt: skip
    path = work / f"override-{name}.yaml"
    path.write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [path])
    if noop:
        spec = ComponentSpec(
            path="bench.backtest:NoOp",
            config_path="bench.backtest:NoOpConfig",
            config={"bar_type": bar_type},
        )
        settings = msgspec.structs.replace(settings, strategies=[spec], actors=[])
    return settings


def run_node(settings, run_dir: Path, label: str) -> dict[str, Any]:
    """Import the data (once per catalog), build the node, time ``node.run()``."""
    from nautilus_trader.backtest.node import BacktestNode

    from backtests.scaling import install_linear_scaling, linear_venue_config
    from hmm_strategy.config import backtest_run_config
    from marketdata.ingest import ensure_catalog

    ensure_catalog(settings.backtest)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = backtest_run_config(settings, run_dir)
    config = msgspec.structs.replace(
        config, venues=[linear_venue_config(v) for v in config.venues]
    )
    gc.collect()
    reset_peak_rss()
    node = BacktestNode(configs=[config])
    try:
        node.build()
        engine = node.get_engine(config.id)
        install_linear_scaling(engine)
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node.run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        bars = int(engine.iteration)
        result = engine.get_result()
        out = {
            "run": label,
            "bars": bars,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "bars_per_s": bars / cpu,
            "us_per_bar": cpu / bars * 1e6,
            "strategies": len(settings.strategies),
            "actors": [a.name or a.path for a in settings.actors],
            "orders": int(result.total_orders),
            "positions": int(result.total_positions),
            "peak_rss_mb": peak_rss_mb(),
        }
    finally:
        node.dispose()
    del node
    gc.collect()
    return out


def best_of(jobs: list[tuple[str, Any]], run_dir: Path, repeat: int) -> list[dict[str, Any]]:
    """Run each ``(label, settings)`` node ``repeat`` times, interleaved, and keep each label's
    least CPU time (``bench.rounds.least_of_rounds``); a fresh run folder each time (the
    governance registry)."""
    counter = itertools.count()

    def job(label: str, settings) -> Callable[[], dict[str, Any]]:
        return lambda: run_node(settings, run_dir / f"run-{label}-{next(counter)}", label)

    return least_of_rounds([(label, job(label, settings)) for label, settings in jobs], repeat)


def shipped_node(
    work: Path, frame: pl.DataFrame, warmup_bars: int | None, repeat: int = 1
) -> dict[str, Any]:
    """The shipped config (every strategy and actor) vs the no-op strategy, same bars."""
    work.mkdir(parents=True, exist_ok=True)
    csv = write_bars(frame, work / "dense.csv")
    jobs = [
        (name, node_settings(work, name, csv, DENSE_BAR_TYPE, warmup_bars=warmup_bars, noop=noop))
        for name, noop in (("noop", True), ("shipped", False))
    ]
    noop, shipped = runs = best_of(jobs, work, repeat)
    return {
        "config": "configs/node.yaml, data replaced by the bench bars"
        + ("" if warmup_bars is None else f", fit.warmup_bars {warmup_bars}"),
        "path": "BacktestNode + ParquetDataCatalog, reports off, linear settings",
        "bars": shipped["bars"],
        "runs": runs,
        "shipped_vs_noop": shipped["bars_per_s"] / noop["bars_per_s"],
        "shipped_vs_noop_median": median_ratio(noop, shipped),
        "actor_costs": actor_costs(work, jobs[1][1], noop, repeat),
    }


def actor_costs(work: Path, shipped, noop: dict[str, Any], repeat: int) -> list[dict[str, Any]]:
    """Where the shipped node's time goes: the strategy with no actor, then with each actor of
    the shipped config alone, each the least of ``repeat`` interleaved rounds like the no-op it
    is set against. An actor's cost is what it adds to the strategy alone: its own work and what
    it makes the strategy do (governance and the allocator change the orders), so the rows do
    not add up to the shipped node."""
    alone = msgspec.structs.replace(shipped, actors=[])
    variants = [("strategy alone", alone)] + [
        (f"+ {actor.name}", msgspec.structs.replace(shipped, actors=[actor]))
        for actor in shipped.actors
    ]
    runs = best_of(variants, work / "actor-costs", repeat)
    base = runs[0]["us_per_bar"]
    return [
        {
            "run": run["run"],
            "us_per_bar": run["us_per_bar"],
            "orders": run["orders"],
            "vs_noop": noop["us_per_bar"] / run["us_per_bar"],
            "added_us_per_bar": run["us_per_bar"] - (noop["us_per_bar"] if i == 0 else base),
        }
        for i, run in enumerate(runs)
    ]


def sparse_calendar(
    work: Path, frame: pl.DataFrame, warmup_bars: int | None, repeat: int = 1
) -> dict[str, Any]:
    """The shipped config on the same number of bars: dense 15-minute crypto vs XNYS hourly."""
    work.mkdir(parents=True, exist_ok=True)
    ts = xnys_hourly_times(frame.height)
    years = (ts[-1] - ts[0]) / (365.25 * 86_400 * 1e9)
    dense = write_bars(frame, work / "dense.csv")
    sparse = write_bars(frame, work / "xnys.csv", ts)
    jobs = [
        (name, node_settings(work, name, csv, bar_type, calendar=calendar, warmup_bars=warmup_bars))
        for name, csv, bar_type, calendar in (
            ("dense_15m_24x7", dense, DENSE_BAR_TYPE, "24/7"),
            ("xnys_hourly", sparse, HOURLY_BAR_TYPE, "XNYS"),
        )
    ]
    dense_run, sparse_run = runs = best_of(jobs, work, repeat)
    # the same pair with the strategy alone: the calendar's own cost per bar, without the work
    # the actors do once per trading day (allocations, governance reviews) and its orders
    alone = best_of(
        [(name, msgspec.structs.replace(settings, actors=[])) for name, settings in jobs],
        work / "alone",
        repeat,
    )
    return {
        "bars": frame.height,
        "sparse_span_years": years,
        "sparse_trading_days": len(np.unique(ts // (86_400 * 10**9))),
        "dense_span_days": float(frame["ts_event"][-1] - frame["ts_event"][0]) / (86_400 * 1e9),
        "runs": runs,
        "per_bar_cost_sparse_vs_dense": sparse_run["us_per_bar"] / dense_run["us_per_bar"],
        "per_bar_cost_sparse_vs_dense_median": median_ratio(sparse_run, dense_run),
        "strategy_alone": alone,
        "strategy_alone_sparse_vs_dense": alone[1]["us_per_bar"] / alone[0]["us_per_bar"],
    }


def many_instruments(
    work: Path,
    frame: pl.DataFrame,
    counts: tuple[int, ...],
    bars_per_instrument: int,
    repeat: int = 1,
) -> dict[str, Any]:
    """1, 10, 50 HMM strategies, one per instrument (US equities on ARCA, synthetic 15-minute
    bars, a pre-fitted model artifact each), with every actor of the shipped config, in one
    ``BacktestNode``: CPU per bar per instrument and peak RSS, against the single instrument.
    Every count runs ``repeat`` times, interleaved, and keeps its least CPU time, like every
    other ratio of the bench (``bench.rounds``)."""
    from hmm_strategy.artifacts import save_model
    from hmm_strategy.config import DEFAULT_CONFIG, load_node_settings
    from hmm_strategy.features import FeatureSpec, feature_matrix
    from hmm_strategy.model import RegimeHMM

    work.mkdir(parents=True, exist_ok=True)
    spec = FeatureSpec()
    model = RegimeHMM(3, n_restarts=1, n_iter=50, random_state=0).fit(
        feature_matrix(frame.head(20_000), spec)
    )
    n_max = max(counts)
    step = max((frame.height - bars_per_instrument) // max(n_max - 1, 1), 1)
    symbols, csvs = [], []
    for i in range(n_max):  # each instrument its own stretch of the synthetic path, ~$100
        start = min(i * step, frame.height - bars_per_instrument)
        part = frame.slice(start, bars_per_instrument).with_columns(
            ts_event=frame["ts_event"].head(bars_per_instrument),
            **{c: pl.col(c) / 300.0 for c in ("open", "high", "low", "close")},
        )
        symbol = f"S{i:02d}.ARCA"
        csvs.append(write_bars(part, work / f"{symbol}.csv"))
        bar_type = f"{symbol}-15-MINUTE-LAST-EXTERNAL"
        save_model(
            model, work / f"model-{symbol}.json", feature_spec=spec,
            data_range=(int(part["ts_event"][0]), int(part["ts_event"][-1])),
            instrument_id=symbol, bar_type=bar_type, version="bench",
        )  # fmt: skip
        symbols.append(symbol)
    jobs = []
    for n in counts:
        chosen = symbols[:n]
        override = {
            "backtest": {
                "catalog_path": str(work / "catalog"),
                "output_dir": str(work / "runs"),
                "log_level": "ERROR",
                "data": [{"source": str(work / f"{s}.csv"), "format": "ohlcv_csv",
                          "instrument_id": s, "bar_type": f"{s}-15-MINUTE-LAST-EXTERNAL"}
                         for s in chosen],
                "venues": [{"name": "ARCA", "oms_type": "NETTING", "account_type": "MARGIN",
                            "starting_balances": ["10000000 USD"]}],
            },
            "strategies": [
                {"name": f"hmm_{i:02d}", "path": "hmm_strategy.strategy:HMMRegimeStrategy",
                 "config": {"instrument_id": s, "bar_type": f"{s}-15-MINUTE-LAST-EXTERNAL",
                            "order_id_tag": f"{i:03d}", "model_path": str(work / f"model-{s}.json"),
                            "notional": 10_000.0, "max_notional": 50_000.0,
                            "checkpoint_dir": None}}
                for i, s in enumerate(chosen)
            ],
            "actors": [
                {"name": "metrics", "config": {"venue": "ARCA"}},
                {"name": "allocator", "config": {"venue": "ARCA", "currency": "USD"}},
                {"name": "governance", "config": {"currency": "USD"}},
            ],
            "risk": {"max_notional_per_order": {s: 1_000_000 for s in chosen}},
        }  # fmt: skip
        path = work / f"override-{n}.yaml"
        path.write_text(yaml.safe_dump(override))
        settings = load_node_settings(DEFAULT_CONFIG, [path])
        settings = msgspec.structs.replace(
            settings,
            strategies=[s for s in settings.strategies if s.name != "hmm_btc"],
            backtest=msgspec.structs.replace(
                settings.backtest,
                venues=[v for v in settings.backtest.venues if v.name == "ARCA"],
                data=[d for d in settings.backtest.data if d.instrument_id in chosen],
            ),
        )
        jobs.append((f"{n} instrument{'' if n == 1 else 's'}", settings))
    runs = best_of(jobs, work, repeat)
    for n, run in zip(counts, runs, strict=True):
        run["instruments"] = n
        run["us_per_bar_per_instrument"] = run["cpu_seconds"] / run["bars"] * 1e6
    one = runs[0]["us_per_bar_per_instrument"]
    return {
        "bars_per_instrument": bars_per_instrument,
        "setup": "N HMM strategies (pre-fitted artifacts), one per US-equity instrument on "
        "ARCA, 15-minute synthetic bars, actors of configs/node.yaml, one BacktestNode",
        "runs": runs,
        "cost_vs_one_instrument": {
            str(r["instruments"]): r["us_per_bar_per_instrument"] / one for r in runs
        },
        "cost_vs_one_instrument_median": {
            str(r["instruments"]): median_ratio(r, runs[0]) for r in runs
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.node``: only these sections (what users run), JSON on stdout."""
    import argparse
    import json
    import tempfile

    from bench import pin_blas_threads

    pin_blas_threads()
    from bench.data import benchmark_frame
    from bench.machine import machine_info

    parser = argparse.ArgumentParser(prog="python -m bench.node", description=main.__doc__)
    parser.add_argument("--bars", type=int, default=40_832, help="bars of the node runs")
    parser.add_argument("--many", default="1,10,50", help="instrument counts")
    parser.add_argument("--many-bars", type=int, default=4_000, help="bars per instrument")
    parser.add_argument("--skip-many", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="run the shipped/no-op and dense/XNYS pairs N times interleaved, keep each one's "
        "least CPU time (an A/B on a shared machine)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hmm-bench-node-"))
    frame = benchmark_frame(max(args.bars, 20_000))
    result: dict[str, Any] = {"machine": machine_info()}
    bars = frame.head(args.bars)
    result["shipped_node"] = shipped_node(work / "node", bars, None, args.repeat)
    result["sparse_calendar"] = sparse_calendar(work / "sparse", bars, None, args.repeat)
    if not args.skip_many:
        counts = tuple(int(x) for x in args.many.split(","))
        result["many_instruments"] = many_instruments(
            work / "many", frame, counts, args.many_bars, args.repeat
        )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
