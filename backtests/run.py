"""Backtest runner: ``python -m backtests.run --config configs/node.yaml``.

Imports the config's data files into the ParquetDataCatalog (once), runs NautilusTrader's
``BacktestNode`` with the node config's strategies and actors, and writes a run folder with the
statistics, orders/fills/positions, the tearsheet and the regime plot.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
from nautilus_trader.analysis import MaxDrawdown
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.common.config import ImportableActorConfig

from backtests.baselines import BASELINES, baseline_notional, baseline_run_configs
from backtests.metrics import (
    daily_returns,
    evaluate,
    regime_diagnostics,
    starting_balance,
    state_labels,
)
from backtests.report import (
    comparison_table,
    period_lines,
    read_events,
    regime_lines,
    traded_period,
    write_comparison_plot,
    write_equity,
    write_regime_plot,
    write_stats,
    write_tearsheet,
)
from backtests.scaling import install_linear_scaling, linear_venue_config
from hmm_strategy import cli
from hmm_strategy.config import (
    BacktestSettings,
    ConfigError,
    NodeSettings,
    add_config_arguments,
    backtest_run_config,
    check_written_files,
    load_node_settings,
)
from hmm_strategy.trade_reports import write_trade_reports
from hmm_strategy.train import load_frame, strategy_target
from marketdata.bars import typical_spacing
from marketdata.ingest import ensure_catalog


def check_period_has_data(imported: dict[str, dict], start: str | None, end: str | None) -> None:
    """Refuse a period that holds none of the data (the engine would otherwise run on nothing,
    or sample governance metrics across years of empty time)."""
    lo = min(info["range_ns"][0] for info in imported.values())
    hi = max(info["range_ns"][1] for info in imported.values())
    start_ns = _ns(start, "start") if start else lo
    end_ns = _ns(end, "end") if end else hi
    if start_ns > hi or end_ns < lo:
        raise ConfigError(
            f"backtest period {start or 'data start'} .. {end or 'data end'} holds no bars: the "
            f"data covers {_iso(lo)} .. {_iso(hi)}"
        )
    if end_ns <= start_ns:
        raise ConfigError(f"backtest end {_iso(end_ns)} is not after start {_iso(start_ns)}")


def _ns(text: str, what: str) -> int:
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"backtest {what} {text!r} is not an ISO date/time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1e9)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _progress_actor(bt: BacktestSettings, imported: dict[str, dict]) -> ImportableActorConfig:
    bar_type = bt.data[0].bar_type
    frame_range = imported[bar_type].get("range_ns") or [0, 1]
    return ImportableActorConfig(
        actor_path="backtests.progress:BacktestProgress",
        config_path="backtests.progress:BacktestProgressConfig",
        config={"bar_type": bar_type, "start_ns": frame_range[0], "end_ns": frame_range[1]},
    )


def run_backtest(
    settings: NodeSettings,
    run_dir: str | Path | None = None,
    *,
    start: str | None = None,
    end: str | None = None,
    progress: bool = False,
    tearsheet: bool = True,
    baselines: bool = True,
    measure_from: int | None = None,
) -> Path:
    """Run one backtest of the node config; returns the run folder holding every report.

    With ``baselines`` the config's ``backtest.baselines`` run beside it in the same node (same
    bars, venue, fees, capital) and ``stats.json`` holds the comparison. ``measure_from`` (ns)
    restricts the metrics (not the run) to bars from then on, e.g. after a fold's warm-up.
    """
    bt = settings.backtest
    if bt is None:
        raise ConfigError("the node config has no 'backtest' section")
    names = list(bt.baselines) if baselines else []
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ConfigError(f"backtest.baselines: unknown {unknown}; known: {list(BASELINES)}")
    if run_dir is None:
        run_dir = Path(bt.output_dir) / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_written_files(settings, run_dir)  # a bad output path: one line, before anything runs
    imported = ensure_catalog(bt)
    check_period_has_data(imported, start or bt.start, end or bt.end)
    (run_dir / "data_quality.json").write_text(json.dumps(imported, indent=2))

    extra = [_progress_actor(bt, imported)] if progress else []
    run_config = backtest_run_config(settings, run_dir, start=start, end=end, extra_actors=extra)
    # Linear cost in the number of positions (docs/PERFORMANCE.md): venue flag + analyzer swap.
    venues = [linear_venue_config(v) for v in run_config.venues]
    run_config = msgspec.structs.replace(run_config, venues=venues)
    target = strategy_target(settings, None, first=True)  # the one the report compares
    bars = load_frame(settings, target.bar_type, start or bt.start, end or bt.end)
    if bars.height == 0:
        raise ConfigError(f"no {target.bar_type} bars between {start} and {end}")
    bar_ts, close = bars["ts_event"].to_numpy(), bars["close"].to_numpy()
    i0 = 0 if measure_from is None else int(np.searchsorted(bar_ts, measure_from))
    configs = {"strategy": run_config}
    if names and i0 < len(bar_ts):
        plain = msgspec.structs.replace(
            run_config,
            engine=msgspec.structs.replace(
                run_config.engine,
                actors=[a for a in run_config.engine.actors if a not in extra],
            ),
        )
        configs |= baseline_run_configs(
            plain,
            names,
            instrument_id=target.instrument_id,
            bar_type=target.bar_type,
            notional=baseline_notional(settings, target.index),
            first_close=float(close[i0]),
            trade_from_ns=measure_from,
        )
    capital, _ = starting_balance(settings)
    node = BacktestNode(configs=list(configs.values()))
    wall = time.perf_counter()
    try:
        node.build()
        for config in configs.values():
            engine = node.get_engine(config.id)
            install_linear_scaling(engine)
            engine.portfolio.analyzer.register_statistic(MaxDrawdown())
        results = node.run()  # run() builds only engines that do not exist yet
        wall = time.perf_counter() - wall
        engine = node.get_engine(run_config.id)
        write_trade_reports(engine.trader, engine.list_venues(), run_dir)
        comparison, curves = {}, {}
        for name, config in configs.items():
            trader = node.get_engine(config.id).trader
            fills, positions = (
                trader.generate_order_fills_report(),
                trader.generate_positions_report(),
            )
            if name != "strategy":
                fills.to_csv(run_dir / f"{name}_fills.csv")
                positions.to_csv(run_dir / f"{name}_positions.csv")
            comparison[name], curves[name] = evaluate(
                fills,
                positions,
                target.instrument_id,
                bar_ts,
                close,
                capital,
                measure_from=measure_from,
            )
        write_equity(curves, close[i0:], run_dir / "equity.csv")
        events = read_events(run_dir / "events.csv")
        extra_stats = {
            "wall_seconds": wall,
            "bars": engine.iteration,
            "comparison": comparison,
            "baseline_notional": baseline_notional(settings, target.index) if names else None,
            "period": traded_period(bar_ts[i0:], curves["strategy"], events),
            "events": events,
            "regime_diagnostics": regime_report(engine, run_dir, target),
        }
        write_stats(results[0], run_dir, extra_stats)
        if tearsheet:
            benchmark = None
            if "buy_and_hold" in curves:
                c = curves["buy_and_hold"]
                benchmark = daily_returns(c["ts"], c["pnl"], capital)
            write_tearsheet(node, run_config.id, run_dir, benchmark)
        write_comparison_plot(curves, events, run_dir / "comparison.html")
        write_regime_plot(
            run_dir / "decisions.csv",
            run_dir / "regimes.html",
            fills_csv=run_dir / "fills.csv",
            events=events,
        )
    except BaseException:  # failed or interrupted (Ctrl-C) mid-run: keep what was decided
        for config in configs.values():
            _stop_trader(node.get_engine(config.id))
        raise
    finally:
        node.dispose()
    return run_dir


def _stop_trader(engine) -> None:
    """Stop a run's strategies and actors after a failure, as the end of a run does: the
    decision recorder writes the rows it holds (up to ``BATCH_ROWS``) and ``events.csv``, and
    the node can be disposed. A second error here must not hide the first, which is re-raised."""
    if engine is None or not engine.trader.is_running:
        return
    with contextlib.suppress(Exception):  # the run's own error is the one to report
        engine.trader.stop()


def regime_report(engine, run_dir: Path, target) -> dict | None:
    """Out-of-sample regime diagnostics of the target strategy (None without decisions)."""
    path = run_dir / "decisions.csv"
    if not path.exists() or path.stat().st_size == 0:
        return None
    decisions = pl.read_csv(path, infer_schema_length=10_000)
    decisions = decisions.filter(pl.col("strategy_id") == target.strategy_id)
    strategy = next(
        (s for s in engine.trader.strategies() if str(s.id) == target.strategy_id), None
    )
    model = getattr(getattr(strategy, "engine", None), "model", None)
    n_states = sum(
        1
        for c in decisions.columns
        if c[:1] == "p" and c[1:].isdigit() and decisions[c].null_count() < decisions.height
    )
    transmat = None if model is None else model.transmat_
    if model is not None:
        n_states = int(model.n_states_)
    spacing = typical_spacing(decisions["ts_event"]) if decisions.height > 1 else None
    return regime_diagnostics(decisions, transmat, state_labels(n_states), spacing)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m backtests.run", description=__doc__)
    add_config_arguments(parser, strategy=False)
    parser.add_argument("--run-dir", help="output folder (default: <output_dir>/<UTC time>)")
    parser.add_argument("--start", type=cli.iso_time, help="ISO start time (default: the config's)")
    parser.add_argument("--end", type=cli.iso_time, help="ISO end time (default: the config's)")
    parser.add_argument("--no-tearsheet", action="store_true", help="skip the HTML tearsheet")
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the buy-and-hold and EMA-cross comparison runs (backtest.baselines)",
    )
    args = parser.parse_args(argv)
    try:
        cli.check_time_order(args.start, args.end)
        if args.run_dir:
            cli.ensure_new_run_dir(args.run_dir)
        settings = load_node_settings(args.config, args.override)
        run_dir = run_backtest(
            settings,
            args.run_dir,
            start=args.start,
            end=args.end,
            progress=sys.stderr.isatty(),
            tearsheet=not args.no_tearsheet,
            baselines=not args.no_baselines,
        )
    except (ConfigError, cli.CLIError) as exc:
        print(cli.one_line(f"error: {exc}"), file=sys.stderr)
        return 2
    stats = json.loads((run_dir / "stats.json").read_text())
    print(
        f"\nbacktest finished: {stats['bars']:,} bars, {stats['total_orders']:,} orders, "
        f"{stats['total_positions']:,} positions in {stats['wall_seconds']:.1f}s"
    )
    print(comparison_table(stats["comparison"], stats.get("baseline_notional")))
    print(
        "  (mark-to-market at every bar close; NautilusTrader's tearsheet computes its ratios "
        "from account balance changes, so its figures differ)"
    )
    if stats["total_orders"] == 0:
        print(
            "  !! the strategy placed no order: is the period shorter than its warm-up "
            "(fit.warmup_bars), or did a breaker or governance block it? see events.csv"
        )
    for line in [
        *period_lines(stats["period"], stats["events"]),
        *regime_lines(stats.get("regime_diagnostics")),
    ]:
        print(line)
    reports = [
        f for f in ("tearsheet.html", "comparison.html", "regimes.html") if (run_dir / f).exists()
    ]
    print(f"reports in {run_dir}/ ({', '.join([*reports, 'stats.json', 'equity.csv', '*.csv'])})")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
