"""``python -m venues.sim``: run the simulated Binance spot venue on 127.0.0.1 until Ctrl-C.

Keys come from the environment, as for the node: BINANCE_API_KEY / BINANCE_API_SECRET (any
values; the node must use the same pair). Point a node at it with ``--venue binance_sim``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from hmm_strategy import cli
from venues.sim.exchange import FAULT_KINDS, bad_counts
from venues.sim.feed import INTERVALS
from venues.sim.server import SimConfig, SimVenue, write_urls

CSV = "binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"  # in ${HMM_DATA_DIR}


def _balance(text: str) -> tuple[str, str]:
    """``ASSET=AMOUNT`` with a positive finite amount."""
    asset, sep, amount = text.partition("=")
    try:
        ok = bool(sep and asset.strip()) and 0 < float(amount) < float("inf")
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"--balance must be ASSET=AMOUNT (> 0), got {text!r}")
    return asset.strip().upper(), amount.strip()


def _faults(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--faults is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--faults must be a JSON object of counts, got {text!r}")
    bad = bad_counts(value)
    if bad:
        raise argparse.ArgumentTypeError(f"--faults counts must be whole numbers >= 0, got {bad}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m venues.sim", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=cli.port, default=8765,
                   help="TCP port on 127.0.0.1 (0 = any free)")
    p.add_argument("--source", choices=["csv", "synthetic"], default="csv")
    p.add_argument("--path", default=None,
                   help=f"bar file for --source csv (default: $HMM_DATA_DIR/{CSV})")
    p.add_argument("--format", default=None, help="bar file format (detected when omitted)")
    p.add_argument("--bars", type=cli.positive_int, default=20_000,
                   help="bars to serve (the file's last N)")
    p.add_argument("--seed", type=int, default=7, help="synthetic bars: random seed")
    p.add_argument("--interval", choices=list(INTERVALS), default="15m", help="kline interval")
    p.add_argument("--history-bars", type=cli.non_negative_int, default=6_000,
                   help="bars served as history")
    p.add_argument("--speed", type=cli.non_negative_float, default=1.0,
                   help="live bars per second (0 = real time)")
    p.add_argument("--no-wait", action="store_true", help="publish before a node subscribes")
    p.add_argument("--balance", action="append", type=_balance, default=None,
                   metavar="ASSET=AMOUNT",
                   help="starting balance (repeatable; default USDT=100000)")
    p.add_argument("--state", default="state/sim/binance_sim.json",
                   help="JSON file with balances, orders, trades (kept across restarts)")
    p.add_argument("--faults", type=_faults, default={},
                   help=f"JSON counts of faults, kinds {FAULT_KINDS}")
    p.add_argument("--urls-file", default=None, help="write the adapter URLs there as JSON")
    return p.parse_args(argv)


async def serve(config: SimConfig, urls_file: str | None) -> None:
    venue = SimVenue(config)
    await venue.start()
    if urls_file:
        write_urls(venue, urls_file)
    print(f"simulated Binance spot venue: {json.dumps(venue.urls)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await venue.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.urls_file:
        try:
            cli.ensure_writable_dir(Path(args.urls_file).parent, "--urls-file folder")
        except cli.CLIError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    key, secret = os.environ.get("BINANCE_API_KEY"), os.environ.get("BINANCE_API_SECRET")
    if not key or not secret:
        print("error: set BINANCE_API_KEY and BINANCE_API_SECRET (the pair the node will use)",
              file=sys.stderr)
        return 2
    try:
        balances = dict(args.balance or [("USDT", "100000")])
        path = args.path
        if args.source == "csv" and path is None:
            from hmm_strategy.config import default_data_dir

            path = str(Path(default_data_dir()) / CSV)
        config = SimConfig(
            api_key=key, api_secret=secret, port=args.port, source=args.source, path=path,
            format=args.format, n_bars=args.bars, seed=args.seed, interval=args.interval,
            history_bars=args.history_bars, speed=args.speed, wait_for_subscriber=not args.no_wait,
            balances=balances, state_path=args.state, faults=args.faults,
        )
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        asyncio.run(serve(config, args.urls_file))
    except KeyboardInterrupt:
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
