"""``python -m hmm_strategy.live``: run the node config as a NautilusTrader ``TradingNode``.

With no arguments and no keys it runs a paper node offline: synthetic regime bars replayed into the
node, NautilusTrader's sandbox execution client filling the orders, the HMM strategy and every actor
of ``configs/node.yaml`` (decision recorder, Prometheus exporter, ...). It runs until Ctrl-C or
``--duration`` seconds, then stops cleanly and writes orders, fills and positions into its run
folder. Real money needs BOTH ``--mode live`` and ``TRADING_ENABLED=true``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _interrupted_while_loading(_signum, _frame) -> None:
    print("error: interrupted", file=sys.stderr, flush=True)
    os._exit(130)  # cli.EXIT_INTERRUPTED, before cli can be imported


if __name__ == "__main__":  # Ctrl-C or SIGTERM while the imports below load (~2 s): one line
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    signal.signal(signal.SIGTERM, _interrupted_while_loading)

import msgspec
from nautilus_trader.common.config import resolve_config_path

from hmm_strategy import cli
from hmm_strategy.atomic import atomic_write
from hmm_strategy.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, set_aside
from hmm_strategy.config import (
    ConfigError,
    NodeSettings,
    _fill_dirs,
    add_config_arguments,
    apply_env_overrides,
    check_written_files,
    load_node_settings,
    strategy_id_of,
    traded_instruments,
    trading_node_config,
    venue_settings,
)
from hmm_strategy.flags import FlagError, trading_enabled
from hmm_strategy.messages import WARM_START_TOPIC, WarmStartReport
from hmm_strategy.warm_start import bars_needed

EXIT_CONFIG = 2
EXIT_START = 3
EXIT_RUN = 4
EXIT_STATE = 5  # stopped (positions closed) but state or the run's reports could not be saved
EXIT_OPEN = 6  # stopped, but a position its strategy should have closed is still open
METRICS_ACTOR = "actors.metrics:MetricsExporter"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python -m hmm_strategy.live",
        description="Run the HMM regime node: paper (default, offline replay) or live.",
        epilog="Environment: TRADING_ENABLED, TRADE_SYMBOLS, MAX_POSITION_NOTIONAL, "
        "MAX_ORDER_NOTIONAL and venue keys (see .env.example).",
    )
    add_config_arguments(parser, strategy=False)
    parser.add_argument(
        "--venue",
        help="venue profile of live.venues: replay (offline, default), binance_spot, "
        "binance_futures, bybit_linear, ib",
    )
    parser.add_argument(
        "--mode",
        choices=["paper", "live"],
        help="paper = simulated fills (default); live = real orders, also needs "
        "TRADING_ENABLED=true",
    )
    parser.add_argument(
        "--duration",
        type=cli.positive_float,
        help="stop after this many seconds of trading (counted from the trader's start: after "
        "connecting, reconciling and any warm start), closing positions first",
    )
    parser.add_argument(
        "--exit-when-replayed",
        action="store_true",
        help="replay venue: stop once the feed has replayed every bar",
    )
    parser.add_argument("--metrics-port", type=cli.port, help="Prometheus exporter port (0 = off)")
    parser.add_argument(
        "--log-level", type=cli.log_level, help="console log level (DEBUG, INFO, WARNING, ERROR)"
    )
    parser.add_argument("--run-dir", help="run folder (default: <live.output_dir>/live-<UTC>)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start the strategies fresh: set their checkpoints aside (renamed, kept) instead of "
        "resuming them",
    )
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace, environ: dict[str, str]) -> tuple[NodeSettings, str]:
    """Node config + the venue's override file + the user's overrides + environment."""
    base = load_node_settings(args.config, args.override)
    if base.live is None:
        raise ConfigError(f"{args.config}: no 'live' section")
    venue = args.venue or base.live.venue
    venue_file = Path(args.config).parent / "venues" / f"{venue}.yaml"
    if venue_file.exists():
        base = load_node_settings(args.config, [venue_file, *args.override])
    settings = apply_env_overrides(base, environ)
    if args.metrics_port is not None:
        settings = with_metrics_port(settings, args.metrics_port)
    return with_metrics_endpoint(settings), venue


def with_metrics_port(settings: NodeSettings, port: int) -> NodeSettings:
    live = msgspec.structs.replace(
        settings.live, metrics=msgspec.structs.replace(settings.live.metrics, port=port)
    )
    actors = [
        msgspec.structs.replace(a, config={**a.config, "port": port})
        if a.path == METRICS_ACTOR
        else a
        for a in settings.actors
    ]
    return msgspec.structs.replace(settings, live=live, actors=actors)


def with_metrics_endpoint(settings: NodeSettings) -> NodeSettings:
    """``live.metrics`` is the ONE source of where the exporter listens: its host, port and
    ``allow_remote`` go into the exporter actor's config (what the banner shows is what binds).
    An actor config that names another host or port is refused rather than silently overridden.
    """
    metrics = settings.live.metrics
    wanted = {"host": metrics.host, "port": metrics.port, "allow_remote": metrics.allow_remote}
    actors = []
    for i, actor in enumerate(settings.actors):
        if actor.path == METRICS_ACTOR:
            for key, value in wanted.items():
                if key in actor.config and actor.config[key] != value:
                    raise ConfigError(
                        f"actors[{i}].config.{key} is {actor.config[key]!r} but live.metrics.{key} "
                        f"is {value!r}: set it once, in live.metrics"
                    )
            actor = msgspec.structs.replace(actor, config={**actor.config, **wanted})
        actors.append(actor)
    return msgspec.structs.replace(settings, actors=actors)


def check_trading_enabled(mode: str, environ: dict[str, str]) -> None:
    """Real orders need two explicit opt-ins: ``--mode live`` and ``TRADING_ENABLED=true``."""
    if mode == "live" and trading_enabled(environ) is not True:
        raise ConfigError(
            "refusing live order routing: --mode live also needs TRADING_ENABLED=true in the "
            "environment (it is not set to true); use --mode paper to simulate fills"
        )


def with_data_source(settings: NodeSettings, source: str) -> NodeSettings:
    """Tell each strategy that keeps checkpoints which data it runs on (state is keyed to it)."""
    strategies = [
        msgspec.structs.replace(s, config={**s.config, "data_source": source})
        if "data_source"
        in getattr(resolve_config_path(s.resolved_config_path), "__struct_fields__", ())
        else s
        for s in settings.strategies
    ]
    return msgspec.structs.replace(settings, strategies=strategies)


def strategy_checkpoints(settings: NodeSettings) -> list[tuple[str, Path]]:
    """``(strategy id, checkpoint file)`` of every strategy that keeps checkpoints."""
    out = []
    for spec in settings.strategies:
        config = spec.parsed("run", settings.live.state_dir)
        directory = getattr(config, "checkpoint_dir", None)
        if not directory:
            continue
        sid = strategy_id_of(spec, config)
        out.append((sid, checkpoint_path(directory, settings.trader_id, sid)))
    return out


SOURCE_FILE = "DATA_SOURCE"  # in live.state_dir: the data source its saved state belongs to


def kill_switch_files(settings: NodeSettings) -> set[Path]:
    """The kill switch files the node watches (``--fresh`` never moves them)."""
    return {
        Path(_fill_dirs(a.config, "run", settings.live.state_dir).get("path", "")).resolve()
        for a in settings.actors
        if a.path == "actors.kill_switch:KillSwitchActor" and "path" in a.config
    }


def prepare_state(settings: NodeSettings, source: str, *, fresh: bool) -> list[str]:
    """Key the saved state to its data source, read-only: refuse a state folder (strategy
    checkpoints, governance registry, model lifecycle) written on other data unless ``--fresh``
    will move it aside. Nothing is moved or written here (``apply_state`` does that once every
    other start-up check passed). Returns the banner's state lines."""
    state_dir = Path(settings.live.state_dir)
    lines = []
    if fresh and _state_entries(settings):
        lines.append(f"--fresh: earlier state in {state_dir}/ is moved to old-<UTC>/ (kept)")
    marker = state_dir / SOURCE_FILE
    recorded = marker.read_text().strip() if marker.is_file() and not fresh else None
    if recorded is not None and recorded != source:
        raise ConfigError(
            f"{state_dir}/ holds saved state (checkpoints, governance registry) of data source "
            f"{recorded!r}, but this node reads {source!r}: start with --fresh to move it aside "
            "(it is kept), or use another live.state_dir"
        )
    for sid, path in strategy_checkpoints(settings):
        if not path.exists():
            lines.append(f"{sid}: fresh (no checkpoint)")
            continue
        if fresh:
            lines.append(f"{sid}: fresh (--fresh; the old checkpoint is kept)")
            continue
        try:
            state = load_checkpoint(path)  # the file exists: a dict, or CheckpointError
        except CheckpointError:
            lines.append(f"{sid}: fresh (checkpoint unreadable, it will be set aside)")
            continue
        if state.get("data_source") != source:
            raise ConfigError(
                f"{path} holds {sid}'s state on data source {state.get('data_source')!r}, but "
                f"this node reads {source!r}: start with --fresh to set it aside (it is kept), "
                "or use another live.state_dir"
            )
        engine = state.get("engine")
        bars = engine.get("bars_seen", "?") if isinstance(engine, dict) else "?"
        lines.append(
            f"{sid}: resumes {path} (after bar {bars}; replayed bars up to it are skipped)"
        )
    cli.ensure_writable_dir(state_dir, "live.state_dir")  # an empty folder changes nothing
    return lines


def _state_entries(settings: NodeSettings) -> list[Path]:
    """What ``--fresh`` moves: the state folder's entries but the kill switch and earlier
    ``old-*`` folders."""
    state_dir = Path(settings.live.state_dir)
    if not state_dir.is_dir():
        return []
    keep = kill_switch_files(settings)
    return [
        e for e in state_dir.iterdir() if e.resolve() not in keep and not e.name.startswith("old-")
    ]


def apply_state(settings: NodeSettings, *, fresh: bool) -> None:
    """``--fresh``: move the earlier state aside (kept) and set aside checkpoints kept outside
    the state folder. Called once every start-up check passed, before the node starts, so a
    start refused on a flag or a setting moves nothing."""
    if not fresh:
        return
    state_dir = Path(settings.live.state_dir)
    moved = _state_entries(settings)
    if moved:
        aside = state_dir / f"old-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        aside.mkdir()
        for entry in moved:
            entry.rename(aside / entry.name)
    for _, path in strategy_checkpoints(settings):
        if path.exists():  # a checkpoint folder outside live.state_dir
            set_aside(path, "old")


def record_data_source(settings: NodeSettings, source: str) -> None:
    """Stamp the state folder with its data source once the node has started (a start that
    failed, e.g. on an empty bar file, leaves no stamp that would refuse the next start)."""
    state_dir = Path(settings.live.state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(state_dir / SOURCE_FILE, f"{source}\n".encode())
    except OSError as exc:  # advisory: each checkpoint also records its data source
        print(cli.one_line(f"warning: {state_dir}/{SOURCE_FILE} not written: {exc}"), flush=True)


def model_line(config: Any) -> str:
    """The banner's model: the artifact, or when the in-run fit happens (the feature windows
    fill first, so the fit comes ``features.warmup_bars`` bars after its rows begin)."""
    if getattr(config, "model_path", None):
        return str(config.model_path)
    if not hasattr(config, "bars_to_first_decision"):
        return "its own"
    fit = bars_needed(config.features, config.fit, None, has_model=False)  # the fast level's
    line = f"fit in-run on {config.fit.warmup_bars} feature rows once {fit} bars are in"
    first = config.bars_to_first_decision()
    if first != fit:  # a slow level fits later, on coarse bars, and decides with it
        line += f"; the slow level's by bar {first}, the first decision after it"
    return line


def warm_start_plan(settings: NodeSettings, venue):
    """The history each strategy requests at start (banner lines), and the venue with the
    replay's ``history_bars: auto`` resolved to the most any strategy requests."""
    lines, wanted = [], 0
    for spec in settings.strategies:
        config = spec.parsed("run", "state")
        if not hasattr(config, "warm_start_bars"):
            continue
        sid, n = strategy_id_of(spec, config), config.warm_start_bars()
        if n == 0:
            need = config.bars_to_first_decision()
            lines.append(f"{sid}: warm start off: first decision after {need} live bars")
            continue
        wanted = max(wanted, n)
        lines.append(
            f"{sid}: requests {n} bars of {config.bar_type} from the {venue.kind} data client at "
            "start unless it resumes state (a line below says what was used)"
        )
    if venue.kind == "replay":
        replay = venue.replay
        n = wanted if replay.history_bars == "auto" else replay.history_bars
        venue = msgspec.structs.replace(
            venue, replay=msgspec.structs.replace(replay, history_bars=n)
        )
        lines.append(
            f"replay: the first {n} bars of its source are history, the live feed follows them"
            if n
            else "replay: no history (replay.history_bars: 0), every bar is replayed live"
        )
    return venue, lines


def banner(settings: NodeSettings, venue_name: str, venue, run_dir: Path) -> list[str]:
    ids, bar_types = traded_instruments(settings)
    models = [model_line(s.parsed("run", "state")) for s in settings.strategies]
    metrics = settings.live.metrics
    serving = f"http://{metrics.host}:{metrics.port}/metrics" if metrics.port else "off"
    if metrics.port and metrics.allow_remote:
        serving += "  ** reachable from other machines (allow_remote) **"
    if venue.kind == "replay":
        where = "offline, no network"
    elif venue.urls_overridden and venue.base_url_http:
        where = f"endpoints {venue.base_url_http}"
    else:
        where = "testnet" if venue.testnet else "mainnet"
    return [
        "Nautilus HMM node",
        f"  venue       {venue_name} ({venue.kind}, {where})",
        f"  mode        {venue.mode}" + ("  ** REAL ORDERS **" if venue.mode == "live" else ""),
        f"  instruments {', '.join(ids)}  bars {', '.join(bar_types)}",
        f"  model       {'; '.join(map(str, models))}",
        f"  metrics     {serving}",
        f"  run folder  {run_dir}  logs {settings.live.log_dir}/",
        "  stop        Ctrl-C" + ("" if venue.kind != "replay" else " (offline replay feed)"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    environ = dict(os.environ)
    from venues.errors import NodeInterrupted, NodeRunError, NodeStartError, VenueConfigError

    try:
        enabled = trading_enabled(environ)  # refuses a value that is not a boolean
        settings, venue_name = resolve_settings(args, environ)
        venue = venue_settings(settings, venue_name)
        mode = args.mode or settings.live.mode
        check_trading_enabled(mode, environ)
        venue = msgspec.structs.replace(venue, mode=mode)
        settings = with_data_source(settings, venue.data_source_id)
        state_lines = prepare_state(settings, venue.data_source_id, fresh=args.fresh)
        venue, history_lines = warm_start_plan(settings, venue)
        from venues.secrets import require_secrets

        require_secrets(venue)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = Path(args.run_dir or Path(settings.live.output_dir) / f"live-{stamp}")
        cli.ensure_new_run_dir(run_dir)
        cli.ensure_writable_dir(settings.live.log_dir, "live.log_dir")
        check_written_files(settings, run_dir, settings.live.state_dir)
        config = trading_node_config(settings, venue, run_dir, log_level=args.log_level)
        from venues.builders import build_trading_node

        node = build_trading_node(config, venue)
        apply_state(settings, fresh=args.fresh)
    except (ConfigError, VenueConfigError, FlagError, cli.CLIError, OSError) as exc:
        print(cli.one_line(f"error: {exc}"), file=sys.stderr)
        return EXIT_CONFIG

    lines = banner(settings, venue_name, venue, run_dir)
    lines[-1:-1] = [f"  state       {line}" for line in state_lines]
    lines[-1:-1] = [f"  history     {line}" for line in history_lines]
    lines[-1:-1] = [
        f"  KILL SWITCH ON ({path} exists): no new risk until it is removed"
        for path in sorted(kill_switch_files(settings))
        if path.exists()
    ]
    if args.duration is not None:
        lines[-1] = f"  stop        after {args.duration:g} s, or Ctrl-C"
    print("\n".join(lines), flush=True)
    for line in lines:
        node.kernel.logger.info(line)
    metrics = settings.live.metrics
    if metrics.port and metrics.allow_remote:
        warning = (
            f"warning: metrics served on {metrics.host}, reachable from other machines "
            "(live.metrics.allow_remote is true)"
        )
        print(warning, file=sys.stderr, flush=True)
        node.kernel.logger.warning(warning)
    if enabled is False:
        from nautilus_trader.model.enums import TradingState

        node.kernel.risk_engine.set_trading_state(TradingState.HALTED)
        print("TRADING_ENABLED is off: the RiskEngine is HALTED, no new orders", flush=True)

    def print_warm_start(report: WarmStartReport) -> None:  # completes the banner
        print(f"  history     {report.strategy_id}: {report.detail}", flush=True)

    node.kernel.msgbus.subscribe(f"{WARM_START_TOPIC}.*", print_warm_start)

    from hmm_strategy.trade_reports import write_trade_reports
    from venues.replay import replay_finished
    from venues.runtime import run_node

    unsaved: list[str] = []
    still_open: list[str] = []
    any_open: list[str] = []
    working: list[str] = []
    unwritten: list[str] = []

    def write_reports() -> None:
        unsaved.extend(
            str(s.id) for s in node.trader.strategies() if getattr(s, "checkpoint_failed", False)
        )
        still_open.extend(positions_left_open(node))
        any_open.extend(positions_left_open(node, closing_only=False))
        working.extend(orders_left_working(node))
        venues = sorted({a.id.get_issuer() for a in node.cache.accounts()})
        from nautilus_trader.model.identifiers import Venue

        try:
            write_trade_reports(node.trader, [Venue(v) for v in venues], run_dir)
        except OSError as exc:  # the stop's own checks still count: an open position first
            unwritten.append(str(exc))

    try:
        run_node(
            node,
            stop_when=(lambda: replay_finished(node)) if args.exit_when_replayed else None,
            max_runtime_secs=args.duration,
            before_dispose=write_reports,
            on_started=lambda: record_data_source(settings, venue.data_source_id),
        )
    except NodeInterrupted as exc:
        print(cli.one_line(f"error: {exc}"), file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    except NodeStartError as exc:
        print(cli.one_line(f"error: {exc}"), file=sys.stderr)
        return EXIT_START
    except NodeRunError as exc:  # what the operator must act on first (the line is cut at 400)
        left = [f"positions still open: {'; '.join(any_open)}"] if any_open else []
        left += [f"orders still working: {'; '.join(working)}"] if working else []
        print(cli.one_line("error: " + "; ".join([*left, str(exc)])), file=sys.stderr)
        return EXIT_RUN
    reports = f"reports in {run_dir}/" if not unwritten else f"reports NOT written ({unwritten[0]})"
    if still_open:
        orders = (
            f"; orders still working at the venue: {'; '.join(working)} (cancel them first, or "
            "they may fill after you close)"
            if working
            else ""
        )
        print(
            f"error: stopped, but positions its strategies should have closed are still open: "
            f"{'; '.join(still_open)} (the closing order did not fill in full, see orders.csv; "
            f"close them at the venue){orders}; {reports}",
            file=sys.stderr,
        )
        return EXIT_OPEN
    if unwritten:
        print(
            f"error: stopped with positions closed, but the run's reports could not be written: "
            f"{unwritten[0]}",
            file=sys.stderr,
        )
        return EXIT_STATE
    if unsaved:
        print(
            f"error: stopped with positions closed, but the state of {', '.join(unsaved)} could "
            f"not be saved (checkpoint writes failed, see the log); reports in {run_dir}/",
            file=sys.stderr,
        )
        return EXIT_STATE
    print(f"stopped cleanly; reports in {run_dir}/", flush=True)
    return 0


def positions_left_open(node, closing_only: bool = True) -> list[str]:
    """``"SHORT 33.28 BTCUSDT.BINANCE (HMMRegimeStrategy-001)"`` for every position still open
    after the stop whose strategy closes its positions on stop (``close_positions_on_stop``), or
    of any strategy (``closing_only=False``: after a failure)."""
    strategies = node.trader.strategies()
    closing = {s.id for s in strategies if getattr(s.config, "close_positions_on_stop", False)}
    return [
        f"{p.side.name} {p.quantity} {p.instrument_id} ({p.strategy_id})"
        for p in node.cache.positions_open()
        if p.strategy_id in closing or not closing_only
    ]


def orders_left_working(node) -> list[str]:
    """``"SELL 0.88 BTCUSDT.BINANCE O-...-7 (ACCEPTED)"`` for every order still open after the
    stop (the venue may still fill it)."""
    return [
        f"{o.side.name} {o.leaves_qty} {o.instrument_id} {o.client_order_id} ({o.status.name})"
        for o in node.cache.orders_open()
    ]


def exit_process(code: int) -> None:
    """Exit with ``code``. After a node that failed to start or run, the adapters' Rust worker
    threads may still be alive and panic (abort, exit 134) while the interpreter finalizes, which
    would replace the honest exit code: leave without finalizing, streams flushed."""
    if code in (EXIT_START, EXIT_RUN):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _terminated(_signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGTERM before the node handles signals: the same boundary


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: the usual boundary
    signal.signal(signal.SIGTERM, _terminated)  # the node's own handler replaces both at start
    exit_process(cli.run_cli(main))
