"""Backtest runner: ``python -m backtests.run --config configs/node.yaml``.

Imports the config's data files into the ParquetDataCatalog (once), runs NautilusTrader's
``BacktestNode`` with the node config's strategies and actors, and writes a run folder with the
statistics, orders/fills/positions, the tearsheet and the regime plot.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.common.config import ImportableActorConfig
from nautilus_trader.model.data import BarType

from backtests.catalog import instrument_for, write_catalog
from backtests.data import load_bars
from backtests.ingest import check_bar_type
from backtests.report import write_regime_plot, write_stats, write_tearsheet, write_trade_reports
from backtests.scaling import install_linear_scaling, linear_venue_config
from hmm_strategy import cli
from hmm_strategy.config import (
    BacktestSettings,
    ConfigError,
    NodeSettings,
    add_config_arguments,
    backtest_run_config,
    load_node_settings,
)


def ensure_catalog(bt: BacktestSettings) -> dict[str, dict]:
    """Import each data source into the catalog unless this exact file was imported before."""
    catalog = Path(bt.catalog_path)
    marker_dir = catalog / ".imported"
    marker_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for source in bt.data:
        path = Path(source.source)
        if not path.exists():
            raise ConfigError(f"backtest.data: source file not found: {path}")
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{source.bar_type}"
        marker = marker_dir / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".json")
        if marker.exists():
            summary[source.bar_type] = json.loads(marker.read_text())
            continue
        loaded = load_bars(path, source.format)
        check_bar_type(BarType.from_str(source.bar_type), loaded.report, str(path))
        instrument = instrument_for(source.instrument_id)
        written = write_catalog(catalog, instrument, source.bar_type, loaded.frame)
        ts = loaded.frame["ts_event"]
        info = {
            "source": str(path),
            "bars": written,
            "range_ns": [int(ts.min()), int(ts.max())],
            "quality": str(loaded.report),
        }
        marker.write_text(json.dumps(info, indent=2))
        summary[source.bar_type] = info
    return summary


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
) -> Path:
    """Run one backtest of the node config; returns the run folder holding every report."""
    bt = settings.backtest
    if bt is None:
        raise ConfigError("the node config has no 'backtest' section")
    if run_dir is None:
        run_dir = Path(bt.output_dir) / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    imported = ensure_catalog(bt)
    check_period_has_data(imported, start or bt.start, end or bt.end)
    (run_dir / "data_quality.json").write_text(json.dumps(imported, indent=2))

    extra = [_progress_actor(bt, imported)] if progress else []
    run_config = backtest_run_config(settings, run_dir, start=start, end=end, extra_actors=extra)
    # Linear cost in the number of positions (docs/PERFORMANCE.md): venue flag + analyzer swap.
    venues = [linear_venue_config(v) for v in run_config.venues]
    run_config = msgspec.structs.replace(run_config, venues=venues)
    node = BacktestNode(configs=[run_config])
    wall = time.perf_counter()
    try:
        node.build()
        install_linear_scaling(node.get_engine(run_config.id))
        (result,) = node.run()  # run() builds only engines that do not exist yet
        engine = node.get_engine(run_config.id)
        write_trade_reports(engine.trader, engine.list_venues(), run_dir)
        write_stats(
            result,
            run_dir,
            {"wall_seconds": time.perf_counter() - wall, "bars": engine.iteration},
        )
        if tearsheet:
            write_tearsheet(node, run_config.id, run_dir)
        write_regime_plot(run_dir / "decisions.csv", run_dir / "regimes.html")
    finally:
        node.dispose()
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m backtests.run", description=__doc__)
    add_config_arguments(parser, strategy=False)
    parser.add_argument("--run-dir", help="output folder (default: <output_dir>/<UTC time>)")
    parser.add_argument("--start", type=cli.iso_time, help="ISO start time (default: the config's)")
    parser.add_argument("--end", type=cli.iso_time, help="ISO end time (default: the config's)")
    parser.add_argument("--no-tearsheet", action="store_true", help="skip the HTML tearsheet")
    args = parser.parse_args(argv)
    try:
        cli.check_time_order(args.start, args.end)
        if args.run_dir:
            cli.ensure_writable_dir(args.run_dir, "--run-dir")
        settings = load_node_settings(args.config, args.override)
        run_dir = run_backtest(
            settings,
            args.run_dir,
            start=args.start,
            end=args.end,
            progress=sys.stderr.isatty(),
            tearsheet=not args.no_tearsheet,
        )
    except (ConfigError, cli.CLIError) as exc:
        print(cli.one_line(f"error: {exc}"), file=sys.stderr)
        return 2
    stats = json.loads((run_dir / "stats.json").read_text())
    print(
        f"\nbacktest finished: {stats['bars']} bars, {stats['total_orders']} orders, "
        f"{stats['total_positions']} positions in {stats['wall_seconds']:.1f}s"
    )
    for currency, pnl in stats["stats_pnls"].items():
        print(
            f"  PnL ({currency}): total {pnl.get('PnL (total)')}, "
            f"{pnl.get('PnL% (total)')}% of start"
        )
    print(f"reports in {run_dir}/ (tearsheet.html, regimes.html, stats.json, *.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
