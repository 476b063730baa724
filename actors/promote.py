"""Operator commands for a running node's model lifecycle: promote, reject, rollback, status.

    python -m actors.promote promote  --strategy hmm_btc [--model PATH] --reason "..."
    python -m actors.promote reject   --strategy hmm_btc --reason "..."
    python -m actors.promote rollback --strategy hmm_btc --to VERSION --reason "..."
    python -m actors.promote status   --strategy hmm_btc

``--strategy`` takes the strategy's name in the node config (``hmm_btc``) or its id
(``HMMRegimeStrategy-001``, what ``status`` and the lifecycle log show); without it the config's
only HMM strategy.

The command checks the request here (the artifact loads and validates, the version is recorded)
and writes it as a file into the ``OnlineTrainer``'s request folder; the running node applies it
at its next poll (``poll_interval_secs``, 5 s by default), publishes the ``ModelUpdate`` the
strategy obeys, records the outcome with its reason in ``lifecycle.jsonl`` and moves the file to
``requests/applied/`` or ``requests/rejected/``.

* ``promote`` without ``--model`` promotes the candidate currently in shadow; with ``--model``
  any valid artifact for the strategy (e.g. one made with ``python -m hmm_strategy.train``).
* ``reject`` discards the candidate in shadow.
* ``rollback --to VERSION`` reinstates a version recorded in the lifecycle log (or found as
  ``<model_dir>/VERSION.json``), e.g. the previous champion after a bad promotion.

The folders come from the strategy's ``OnlineTrainer`` entry in the node config; pass
``--requests-dir`` / ``--log`` when the config uses ``{run_dir}`` or the node runs elsewhere.
"""

from __future__ import annotations

import argparse
import getpass
import shlex
import sys
from pathlib import Path

import msgspec

from actors.model_lifecycle import (
    LifecycleEvent,
    LifecycleRequest,
    new_request,
    read_lifecycle,
    submit_request,
)
from hmm_strategy import cli
from hmm_strategy.artifacts import Expected, ModelArtifactError, load_model
from hmm_strategy.config import (
    DEFAULT_CONFIG,
    ConfigError,
    add_config_arguments,
    load_node_settings,
)

TRAINER_PATH = "actors.online_trainer:OnlineTrainer"


class Target(msgspec.Struct, frozen=True):
    strategy_id: str
    requests_dir: Path
    log_path: Path
    model_dir: Path
    expected: Expected | None  # what the strategy's artifacts must match (None: no config)


def resolve_target(args: argparse.Namespace) -> Target:
    """The strategy id and lifecycle folders, from the node config and/or the flags."""
    return target_of(args.config, args.override, args.strategy, args.requests_dir, args.log)


def target_of(
    config: str | Path | None,
    overrides: list,
    strategy: str | None,
    requests_dir: str | None = None,
    log: str | None = None,
) -> Target:
    """``resolve_target`` with plain arguments (the operations API calls it too)."""
    strategy_id = strategy
    trainer = None
    expected = None
    if config:
        from actors.online_trainer import OnlineTrainerConfig
        from hmm_strategy.train import strategy_target

        settings = load_node_settings(config, overrides)
        try:
            chosen = strategy_target(settings, strategy)
            strategy_id = chosen.strategy_id
            expected = chosen.expected_model()
        except ConfigError:
            # a node run elsewhere (--requests-dir) may run a strategy this config lacks, but
            # only its strategy id can name it there: a typo, a name or nothing is refused here
            # as it is without --requests-dir (the node would never apply the request)
            if not requests_dir or not _is_strategy_id(strategy):
                raise
        for spec in settings.actors:
            if spec.path != TRAINER_PATH:
                continue
            cfg = OnlineTrainerConfig.parse(msgspec.json.encode(spec.config))
            if cfg.strategy_id == strategy_id:
                trainer = cfg
    if not _is_strategy_id(strategy_id):  # no config: --strategy is the only source
        given = "" if strategy is None else f"; {cli.quoted(strategy)} is not one"
        raise ConfigError(
            "pass --strategy with the running node's strategy id (NAME-TAG, e.g. "
            f"HMMRegimeStrategy-001){given}"
        )
    if trainer is None and not requests_dir:
        typed = cli.quoted(strategy or strategy_id)
        typed += f" ({strategy_id})" if strategy not in (None, strategy_id) else ""
        raise ConfigError(
            f"no {TRAINER_PATH} for strategy {typed} in the node config: pass the config the "
            "node runs (e.g. --override configs/train.yaml) or --requests-dir (and --log) of it"
        )
    if expected is None and trainer is not None:
        expected = Expected(
            features=trainer.features,
            instrument_id=trainer.instrument_id,
            bar_type=trainer.bar_type,
        )
    model_dir = Path(trainer.model_dir) if trainer else Path(requests_dir).parent
    requests = requests_dir or (trainer.requests_dir if trainer else None)
    log = log or (trainer.log_path if trainer else None)
    target = Target(
        strategy_id=strategy_id,
        requests_dir=Path(requests or model_dir / "requests"),
        log_path=Path(log or model_dir / "lifecycle.jsonl"),
        model_dir=model_dir,
        expected=expected,
    )
    for name in ("requests_dir", "log_path", "model_dir"):
        if "{run_dir}" in str(getattr(target, name)):
            raise ConfigError(
                f"the trainer's {name} uses {{run_dir}}: pass --requests-dir and --log of the run"
            )
    return target


def _is_strategy_id(value: str | None) -> bool:
    """NautilusTrader's own check of a strategy id (NAME-TAG), as the node's log and metrics
    show it."""
    from nautilus_trader.model.identifiers import StrategyId

    try:
        StrategyId(value)
    except (TypeError, ValueError):
        return False
    return True


def _events(target: Target) -> list[LifecycleEvent]:
    return [e for e in read_lifecycle(target.log_path) if e.strategy_id == target.strategy_id]


def _check_artifact(path: Path, target: Target) -> str:
    """Version of a valid artifact made for the target strategy (instrument, bars, features)."""
    try:
        _, meta = load_model(path, expected=target.expected)
    except RecursionError:  # deeply nested JSON: not an artifact, and not a traceback either
        raise ValueError(f"{path}: nested too deeply to be a model artifact") from None
    return meta.model_version


def status_text(events: list[LifecycleEvent], last: int = 15) -> str:
    champion = shadow = None
    for e in events:
        if e.event in ("champion", "promoted", "rolled_back"):
            champion = e.version
        elif e.event == "promotion_failed":
            champion = None
        if e.event == "shadow_started":
            shadow = e.version
        elif e.event in ("promoted", "rejected", "rolled_back") and e.version == shadow:
            shadow = None
    lines = [f"champion: {champion or 'unknown'}", f"shadow:   {shadow or '-'}", ""]
    for e in events[-last:]:
        lines.append(f"{e.time_utc}  {e.event:<16} {e.version or '':<50} {e.reason[:100]}")
    return "\n".join(lines)


def submit_lifecycle_request(
    target: Target,
    action: str,
    reason: str,
    *,
    model: str | None = None,
    to: str | None = None,
    operator: str | None = None,
) -> tuple[LifecycleRequest, Path]:
    """Check a promote / reject / rollback request and queue it for the node's trainer: the one
    code path of this CLI and the operations API (``ops``), so both leave the same record."""
    if action not in ("promote", "reject", "rollback"):
        raise ValueError(f"unknown lifecycle action {action!r}")
    if not reason.strip():
        raise ValueError(f"{action} needs --reason")
    if "\n" in reason or "\r" in reason:
        raise ValueError("the reason must be one line (it is logged and audited)")
    model_path = str(Path(model).resolve()) if model else None
    version = None
    if action == "rollback":
        if not (to or model):
            raise ValueError("rollback needs --to VERSION (or --model PATH)")
        version = to
        if model_path is None:
            known = {e.version: e.path for e in _events(target) if e.version and e.path}
            guess = target.model_dir / f"{version}.json"
            model_path = known.get(version) or (str(guess) if guess.exists() else None)
            if model_path is None:
                raise ValueError(
                    f"version {version!r} is not in {target.log_path} nor {guess}; "
                    f"known: {sorted(known) or 'none'}"
                )
    elif action == "reject" and model_path:
        raise ValueError("reject takes no --model: it discards the candidate in shadow")
    if model_path is not None:
        found = _check_artifact(Path(model_path), target)
        if version and found != version:
            raise ValueError(f"{model_path} holds version {found}, not {version}")
    request = new_request(
        target.strategy_id,
        action,
        reason,
        model_path=model_path,
        version=version,
        operator=operator or getpass.getuser(),
    )
    path = submit_request(target.requests_dir, request)
    return request, path


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m actors.promote",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("promote", "reject", "rollback", "status"))
    add_config_arguments(parser)
    parser.add_argument("--model", help="promote/rollback: this artifact")
    parser.add_argument("--to", help="rollback: the version to reinstate")
    parser.add_argument("--reason", default="", help="why (required except for status)")
    parser.add_argument("--operator", default=None, help="who (default: the login name)")
    parser.add_argument("--requests-dir", help="the running node's request folder")
    parser.add_argument("--log", help="the running node's lifecycle.jsonl")
    args = parser.parse_args(argv)
    try:
        target = resolve_target(args)
        if args.action == "status":
            print(f"strategy {target.strategy_id} ({target.log_path})")
            print(status_text(_events(target)))
            return 0
        request, path = submit_lifecycle_request(
            target,
            args.action,
            args.reason,
            model=args.model,
            to=args.to,
            operator=args.operator,
        )
    except (ConfigError, ModelArtifactError, ValueError, OSError) as exc:
        print(cli.describe(exc, known=True), file=sys.stderr)
        return 2
    print(f"request {request.id} ({args.action}) written to {path}")
    print(f"the node applies it at its next poll; follow it with: {status_command(args, target)}")
    return 0


def status_command(args: argparse.Namespace, target) -> str:
    """The ``status`` command for the same node: the config, overrides and paths given here."""
    words = ["python", "-m", "actors.promote", "status"]
    if args.config != str(DEFAULT_CONFIG):
        words += ["--config", args.config]
    for override in args.override:
        words += ["--override", override]
    words += ["--strategy", args.strategy or target.strategy_id]
    for flag, value in (("--requests-dir", args.requests_dir), ("--log", args.log)):
        if value:
            words += [flag, value]
    return shlex.join(words)


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
