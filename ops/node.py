"""Where one node keeps what an operator acts on, read from the node's own config.

The operations API is told the same ``--config`` / ``--venue`` / ``--override`` the node was
started with, and resolves them exactly as ``python -m hmm_strategy.live`` does (same function),
so it writes into the same governance overrides folder, kill switch file and model request folder
the node polls: no second place to configure a path.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import msgspec
import yaml
from nautilus_trader.common.config import resolve_config_path

from actors.registry import DEFAULT_REGISTRY_PATH
from hmm_strategy.config import ConfigError, strategy_id_of, venue_settings
from hmm_strategy.live import kill_switch_files, resolve_settings

GOVERNANCE_ACTOR = "actors.governance:GovernanceActor"


class NodeTarget(msgspec.Struct, frozen=True):
    """One node's identity and the files its actors poll."""

    name: str
    trader_id: str
    venue: str
    registry_path: Path | None  # the governance registry (None: no GovernanceActor)
    kill_switch_path: Path | None  # None: no KillSwitchActor
    metrics_url: str | None  # the node's own /metrics (None: exporter off)
    config: str  # for model requests: the node config and the layers on top of it
    overrides: tuple[str, ...]
    strategy_ids: tuple[str, ...]  # as NautilusTrader names them (<class or id>-<order_id_tag>)


def resolve_node(
    name: str,
    config: str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    venue: str | None = None,
    *,
    metrics_url: str | None = None,
    environ: dict[str, str] | None = None,
) -> NodeTarget:
    """The node that ``python -m hmm_strategy.live --config ... --venue ... --override ...``
    runs; ``metrics_url`` replaces ``live.metrics`` (e.g. a container's address)."""
    args = argparse.Namespace(
        config=str(config), override=list(overrides), venue=venue, metrics_port=None
    )
    settings, venue_name = resolve_settings(args, dict(os.environ if environ is None else environ))
    venue_settings(settings, venue_name)  # an unknown profile fails as it does for the node
    state_dir = settings.live.state_dir
    run_dir = "{run_dir}"  # kept as is: a path that depends on the run is not the node's state
    registries = [
        Path(a.config.get("registry_path", DEFAULT_REGISTRY_PATH))
        for a in settings.actor_configs(run_dir, state_dir)
        if a.actor_path == GOVERNANCE_ACTOR
    ]
    if any(run_dir in str(p) or not str(p) for p in registries):
        raise ConfigError("the governance registry_path must not use {run_dir} (per-run state)")
    switches = sorted(kill_switch_files(settings))
    metrics = settings.live.metrics
    if metrics_url is None and metrics.port:
        metrics_url = f"http://{metrics.host}:{metrics.port}/metrics"
    strategy_ids = []
    for spec, importable in zip(
        settings.strategies, settings.strategy_configs(run_dir, state_dir), strict=True
    ):
        cls = resolve_config_path(importable.config_path)
        strategy_ids.append(strategy_id_of(spec, cls.parse(msgspec.json.encode(importable.config))))
    venue_file = Path(config).parent / "venues" / f"{venue_name}.yaml"
    layers = ([str(venue_file)] if venue_file.exists() else []) + [str(o) for o in overrides]
    return NodeTarget(
        name=name,
        trader_id=settings.trader_id,
        venue=venue_name,
        registry_path=registries[0] if registries else None,
        kill_switch_path=switches[0] if switches else None,
        metrics_url=metrics_url,
        config=str(config),
        overrides=tuple(layers),
        strategy_ids=tuple(strategy_ids),
    )


class NodeEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One node of a fleet file: the arguments its ``python -m hmm_strategy.live`` got."""

    name: str
    config: str = "configs/node.yaml"
    venue: str | None = None
    overrides: list[str] = []
    metrics_url: str | None = None


class FleetFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    nodes: list[NodeEntry]


def load_fleet(path: str | os.PathLike[str]) -> list[NodeTarget]:
    """Every node of a fleet file (paths relative to the working directory, as for the CLIs).
    Names and trader ids must be distinct, and no strategy id may appear on two nodes."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
        fleet = msgspec.convert(raw, FleetFile)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError(f"fleet file {path}: {exc}") from None
    nodes = [
        resolve_node(n.name, n.config, n.overrides, n.venue, metrics_url=n.metrics_url)
        for n in fleet.nodes
    ]
    check_distinct(nodes)
    return nodes


def check_distinct(nodes: list[NodeTarget]) -> None:
    """Two nodes sharing a name, trader id, state file or strategy id cannot be told apart."""
    for what, values in (
        ("node name", [n.name for n in nodes]),
        ("trader_id", [n.trader_id for n in nodes]),
        ("governance registry", [str(n.registry_path) for n in nodes if n.registry_path]),
        ("kill switch file", [str(n.kill_switch_path) for n in nodes if n.kill_switch_path]),
        ("metrics url", [n.metrics_url for n in nodes if n.metrics_url]),
        ("strategy id", [s for n in nodes for s in n.strategy_ids]),
    ):
        seen = {v for v in values if values.count(v) > 1}
        if seen:
            raise ConfigError(f"{what} {sorted(seen)[0]!r} appears on two nodes: make it distinct")
