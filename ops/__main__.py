"""``python -m ops``: serve the operations API for one node or a fleet.

    python -m ops                                   # configs/node.yaml, on 127.0.0.1:8470
    python -m ops --venue bybit_linear --override my.yaml
    python -m ops --fleet configs/fleet/fleet.yaml  # several nodes (one per venue)
    python -m ops --scrape other=http://10.0.0.5:9464/metrics   # aggregated only

The bearer token comes only from ``OPS_API_TOKEN`` (never a flag: flags show in ``ps``); without
it the state-changing routes are off. Binding a non-loopback address needs ``--allow-remote``.
"""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from hmm_strategy import cli
from hmm_strategy.config import DEFAULT_CONFIG, ConfigError, add_config_arguments
from ops.aggregate import parse_nodes
from ops.api import TOKEN_ENV, create_app
from ops.node import check_distinct, load_fleet, resolve_node

DEFAULT_PORT = 8470


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m ops", description=__doc__.split("\n")[0])
    add_config_arguments(parser, strategy=False)
    parser.add_argument("--venue", help="the node's venue profile (as for hmm_strategy.live)")
    parser.add_argument("--name", default="node", help="the node's name in answers (single node)")
    parser.add_argument("--metrics-url", help="the node's /metrics (default: from live.metrics)")
    parser.add_argument("--fleet", help="YAML file listing several nodes (replaces --config)")
    parser.add_argument(
        "--scrape", action="append", default=[], help="NAME=URL of another /metrics to aggregate"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=cli.port, default=DEFAULT_PORT)
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host on purpose"
    )
    args = parser.parse_args(argv)
    try:
        cli.check_listen_host(
            args.host, args.allow_remote, what="--host", allow="add --allow-remote"
        )
        if args.fleet:
            if args.override or args.venue or str(args.config) != str(DEFAULT_CONFIG):
                raise ConfigError("--fleet lists the nodes: drop --config/--override/--venue")
            nodes = load_fleet(args.fleet)
        else:
            nodes = [
                resolve_node(
                    args.name, args.config, args.override, args.venue, metrics_url=args.metrics_url
                )
            ]
            check_distinct(nodes)
        scrape_only = parse_nodes(args.scrape)
        clash = set(scrape_only) & {n.name for n in nodes}
        if clash:
            raise ConfigError(f"--scrape name {sorted(clash)[0]!r} is also a node's name")
    except (ConfigError, ValueError, OSError) as exc:
        print(cli.describe(exc, known=True), file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_ENV) or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(nodes, token=token, scrape_only=scrape_only)
    names = ", ".join(f"{n.name} ({n.trader_id}, {n.venue})" for n in nodes)
    print(f"ops API on http://{args.host}:{args.port}/ for {names}", flush=True)
    if token is None:
        print(f"{TOKEN_ENV} is not set: state-changing routes are off (read-only)", flush=True)
    if not cli.is_loopback(args.host):
        print(f"warning: ops API reachable from other machines on {args.host}", file=sys.stderr)
    try:
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    except OSError as exc:
        print(
            cli.one_line(f"error: ops API cannot listen on {args.host}:{args.port}: {exc}"),
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
