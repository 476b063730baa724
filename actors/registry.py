"""The governance registry: one JSON file holding every strategy's state, metrics and decisions.

Why a file: an operator must be able to read (and audit) what governance did and why, and a
restarted node must resume exactly where it stopped. The document is schema-versioned, validated
with msgspec on load, and written atomically (temp file in the same folder, flush, fsync,
``os.replace``, fsync of the folder), so a crash at any moment leaves either the previous or the
new version on disk, never a torn file. Every decision carries a sequence number and an id;
recording an id that is already present is a no-op, so a replay after a crash never duplicates.

Load failures are never papered over: an unreadable or structurally invalid file is moved aside
to ``<name>.corrupt-<n>`` and opening fails with an error naming both paths (and keeps failing
while that file is there, so a restart cannot silently begin from an empty registry); a file
with an unknown schema or version is left in place and refused.

Operators act through override files (``python -m actors.registry pause <strategy> --reason``):
the CLI writes one JSON file per request into the overrides folder (atomically), the governance
actor applies it on its next poll, records the decision, and moves the file to ``applied/``
(or ``rejected/``, with the reason logged). See docs/OPS_RUNBOOK.md.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from actors import operator_queue
from hmm_strategy import cli
from hmm_strategy.atomic import atomic_write, leftover_temp_files

SCHEMA = "nautilus-hmm/governance-registry"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1 had no model decisions; it is read as 2 and saved as 2
DEFAULT_REGISTRY_PATH = "state/governance/registry.json"
STATES = ("active", "throttled", "paused", "retired")
ACTIONS = ("pause", "throttle", "resume", "retire")
MODEL_EVENTS = ("promoted", "rejected", "rolled_back", "promotion_failed")

State = Literal["active", "throttled", "paused", "retired"]
Action = Literal["pause", "throttle", "resume", "retire"]


class RegistryError(RuntimeError):
    """The registry cannot be used as it is; the message says what to do."""


class GovernanceDecision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One governance decision: what changed, why, when (node clock) and who (policy/operator)."""

    seq: int
    id: str
    ts_event: int  # node clock, UNIX ns (simulated time in a backtest)
    time_utc: str
    strategy_id: str
    action: Action
    state: State
    scale: float
    flatten: bool
    reason: str
    source: Literal["policy", "operator"]
    rule: str | None = None
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    window: str | None = None
    operator: str | None = None


class ModelDecision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model-lifecycle decision (from the ``OnlineTrainer``) with its evidence.

    ``event``: ``promoted`` / ``rolled_back`` (the strategy now trades ``version``), ``rejected``
    (the candidate ``version`` was discarded), ``promotion_failed`` (the strategy refused
    ``version`` and kept ``previous_version``). ``log_seq`` points at the same event in the
    trainer's ``lifecycle.jsonl``.
    """

    seq: int
    id: str
    ts_event: int
    time_utc: str
    strategy_id: str
    event: Literal["promoted", "rejected", "rolled_back", "promotion_failed"]
    version: str
    reason: str
    source: Literal["policy", "operator"]
    previous_version: str | None = None
    model_path: str | None = None
    log_seq: int | None = None
    evidence: dict[str, Any] = {}


class RuleStatus(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["armed", "triggered", "probation"] = "armed"
    since_ns: int = 0


class ManualState(msgspec.Struct, forbid_unknown_fields=True):
    """A sticky operator override (cleared by an operator ``resume``)."""

    state: Literal["throttled", "paused", "retired"]
    scale: float
    flatten: bool
    reason: str
    override_id: str
    since_ns: int


class StrategyRecord(msgspec.Struct, forbid_unknown_fields=True):
    state: State = "active"
    scale: float = 1.0
    flattened: bool = False
    model_version: str = ""
    metrics_ts: int = 0
    metrics: dict[str, float | int | None] = {}
    perf: dict[str, float] = {}
    rules: dict[str, RuleStatus] = {}
    manual: ManualState | None = None
    decisions: list[GovernanceDecision] = []
    model_decisions: list[ModelDecision] = []


class RegistryDocument(msgspec.Struct, forbid_unknown_fields=True):
    schema: str
    schema_version: int
    trader_id: str
    next_seq: int = 1
    updated_ns: int = 0
    strategies: dict[str, StrategyRecord] = {}
    applied_overrides: list[str] = []


def iso_utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Registry:
    """The registry document plus its path; ``open`` loads (or starts) it, ``save`` persists."""

    def __init__(self, path: Path, doc: RegistryDocument, removed_temp_files: list[Path]):
        self.path = path
        self.doc = doc
        self.removed_temp_files = removed_temp_files
        # save at every decision (crash safety of a live node); a backtest's owner turns it off
        # and saves at stop: each save re-encodes the whole history, O(decisions) a decision
        self.autosave = True
        self._ids = {
            d.id for rec in doc.strategies.values() for d in [*rec.decisions, *rec.model_decisions]
        }
        self._applied = set(doc.applied_overrides)

    @classmethod
    def open(cls, path: str | os.PathLike[str], trader_id: str) -> Registry:
        """Load the registry at ``path`` (or start an empty one); fail loudly on a bad file."""
        path = Path(path)
        removed = leftover_temp_files(path)
        for tmp in removed:  # an interrupted write: os.replace never ran, so it is incomplete
            tmp.unlink(missing_ok=True)
        if not path.exists():
            aside = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
            if aside:
                raise RegistryError(
                    f"governance registry {path} is missing and a corrupt copy was set aside at "
                    f"{aside[-1]}: restore a good copy to {path}, or move/delete "
                    f"{', '.join(map(str, aside))} to accept starting from an empty registry"
                )
            doc = RegistryDocument(SCHEMA, SCHEMA_VERSION, trader_id)
            return cls(path, doc, removed)
        doc = cls._load(path)
        if doc.trader_id != trader_id:
            raise RegistryError(
                f"governance registry {path} belongs to trader {doc.trader_id!r}, not "
                f"{trader_id!r}: point registry_path at this trader's registry"
            )
        return cls(path, doc, removed)

    @staticmethod
    def _load(path: Path) -> RegistryDocument:
        raw_bytes = path.read_bytes()
        try:
            raw = json.loads(raw_bytes)
        except ValueError as exc:
            _set_aside(path, f"not valid JSON ({exc})")
        if not isinstance(raw, dict):
            _set_aside(path, f"top level is {type(raw).__name__}, not an object")
        schema, version = raw.get("schema"), raw.get("schema_version")
        if schema != SCHEMA or version not in READABLE_VERSIONS:
            raise RegistryError(
                f"governance registry {path} has schema {schema!r} version {version!r}; this "
                f"build reads {SCHEMA!r} versions {READABLE_VERSIONS}. The file was left "
                "untouched: run the matching build, or migrate the file"
            )
        try:
            return msgspec.convert({**raw, "schema_version": SCHEMA_VERSION}, RegistryDocument)
        except msgspec.ValidationError as exc:
            _set_aside(path, f"invalid structure: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- access ----------------------------------------------------------------------------------

    def strategy(self, strategy_id: str) -> StrategyRecord:
        record = self.doc.strategies.get(strategy_id)
        if record is None:
            record = self.doc.strategies[strategy_id] = StrategyRecord()
        return record

    def decisions(self, strategy_id: str | None = None) -> list[GovernanceDecision]:
        if strategy_id is not None:
            return list(self.doc.strategies.get(strategy_id, StrategyRecord()).decisions)
        out = [d for rec in self.doc.strategies.values() for d in rec.decisions]
        return sorted(out, key=lambda d: d.seq)

    def model_decisions(self, strategy_id: str | None = None) -> list[ModelDecision]:
        records = (
            [self.doc.strategies.get(strategy_id, StrategyRecord())]
            if strategy_id is not None
            else self.doc.strategies.values()
        )
        return sorted((d for rec in records for d in rec.model_decisions), key=lambda d: d.seq)

    def override_applied(self, override_id: str) -> bool:
        return override_id in self._applied

    # -- updates ---------------------------------------------------------------------------------

    def record(
        self, decision_id: str, ts_event: int, strategy_id: str, **fields
    ) -> GovernanceDecision | None:
        """Append a decision and save (``autosave``); a known ``decision_id`` is ignored (returns
        None)."""
        decision = self._append(GovernanceDecision, decision_id, ts_event, strategy_id, fields)
        if decision is not None:
            record = self.doc.strategies[strategy_id]
            record.state, record.scale = decision.state, decision.scale
            if self.autosave:
                self.save(ts_event)
        return decision

    def record_model(
        self, decision_id: str, ts_event: int, strategy_id: str, **fields
    ) -> ModelDecision | None:
        """Append a model-lifecycle decision and save (``autosave``); a known ``decision_id`` is
        ignored."""
        decision = self._append(ModelDecision, decision_id, ts_event, strategy_id, fields)
        if decision is not None:
            record = self.doc.strategies[strategy_id]
            if decision.event in ("promoted", "rolled_back"):
                record.model_version = decision.version
            elif decision.event == "promotion_failed" and decision.previous_version:
                record.model_version = decision.previous_version
            if self.autosave:
                self.save(ts_event)
        return decision

    def _append(self, kind: type, decision_id: str, ts_event: int, strategy_id: str, fields):
        """Number and append a governance or model decision (one sequence for both)."""
        if decision_id in self._ids:
            return None
        decision = kind(
            seq=self.doc.next_seq,
            id=decision_id,
            ts_event=ts_event,
            time_utc=iso_utc(ts_event),
            strategy_id=strategy_id,
            **fields,
        )
        record = self.strategy(strategy_id)
        (record.decisions if kind is GovernanceDecision else record.model_decisions).append(
            decision
        )
        self.doc.next_seq += 1
        self._ids.add(decision_id)
        return decision

    def mark_override_applied(self, override_id: str) -> None:
        if override_id not in self._applied:
            self._applied.add(override_id)
            self.doc.applied_overrides.append(override_id)

    def save(self, ts_ns: int | None = None) -> None:
        if ts_ns is not None:
            self.doc.updated_ns = max(self.doc.updated_ns, ts_ns)
        atomic_write(self.path, msgspec.json.format(msgspec.json.encode(self.doc), indent=2))


def _set_aside(path: Path, why: str) -> None:
    n = 1
    while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, aside)
    raise RegistryError(
        f"governance registry {path} is corrupt: {why}. It was moved aside to {aside} (not "
        f"overwritten). Restore a good copy to {path}, or delete {aside} to accept starting "
        "from an empty registry"
    )


# -- operator overrides ---------------------------------------------------------------------------


class Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operator request; the governance actor applies it at its next poll."""

    id: str
    strategy_id: str
    action: Action
    reason: str
    scale: float = 1.0
    flatten: bool = False
    operator: str = ""
    created_utc: str = ""

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("an override needs a reason")
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], was {self.scale}")
        if self.action == "throttle" and self.scale >= 1.0:
            raise ValueError("throttle needs --scale below 1")


def overrides_dir_for(registry_path: str | os.PathLike[str]) -> Path:
    return Path(registry_path).parent / "overrides"


submit_override = operator_queue.submit
archive_override = operator_queue.archive


def pending_overrides(directory: str | os.PathLike[str]) -> list[tuple[Path, Override | str]]:
    """Override files waiting in ``directory`` (oldest first); an invalid one comes as its error."""
    return [
        (path, f"{type(o).__name__}: {o}" if isinstance(o, Exception) else o)
        for path, o in operator_queue.pending(directory, Override)
    ]


# -- CLI -------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def read_registry(path: str | os.PathLike[str]) -> RegistryDocument:
    """The registry as it is on disk, for readers (never moves, repairs or writes anything)."""
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"no governance registry at {path} (wrong --registry?)")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deeply
        raise RegistryError(f"{path}: not a valid registry JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: must hold a JSON object, not a {type(raw).__name__}")
    if raw.get("schema") != SCHEMA or raw.get("schema_version") not in READABLE_VERSIONS:
        raise RegistryError(
            f"{path}: unknown schema {raw.get('schema')!r} version {raw.get('schema_version')!r}"
        )
    try:
        return msgspec.convert({**raw, "schema_version": SCHEMA_VERSION}, RegistryDocument)
    except msgspec.ValidationError as exc:
        raise RegistryError(f"{path}: {exc}") from None


def _show(doc: RegistryDocument) -> str:
    cols = (
        "strategy",
        "state",
        "scale",
        "capital",
        "equity",
        "drawdown",
        "max_dd",
        "trades",
        "model",
        "last decision",
    )
    rows = []
    for sid, rec in sorted(doc.strategies.items()):
        m = rec.metrics
        last = rec.decisions[-1] if rec.decisions else None
        rows.append(
            (
                sid,
                rec.state + (" (manual)" if rec.manual else ""),
                _fmt(rec.scale),
                _fmt(m.get("capital")),
                _fmt(m.get("equity")),
                _fmt(m.get("drawdown")),
                _fmt(m.get("max_drawdown")),
                _fmt(m.get("trade_count")),
                rec.model_version or "-",
                f"#{last.seq} {last.time_utc} {last.action}: {last.reason}" if last else "-",
            )
        )
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(
        f"(trader {doc.trader_id}, {
            sum(len(r.decisions) for r in doc.strategies.values())
        } decisions)"
    )
    return "\n".join(lines)


def _history_line(d: GovernanceDecision | ModelDecision, evidence: bool = False) -> str:
    if isinstance(d, GovernanceDecision):
        return (
            f"#{d.seq} {d.time_utc} {d.strategy_id} {d.action} -> {d.state} "
            f"scale={d.scale:g}{' flatten' if d.flatten else ''} [{d.source}] {d.reason}"
        )
    head = f"#{d.seq} {d.time_utc} {d.strategy_id} model {d.event} {d.version}"
    line = f"{head} [{d.source}] {d.reason}"
    if evidence and d.evidence:
        ev = d.evidence
        keys = ("metric", "shadow_score", "champion_score", "improvement", "margin")
        shown = {k: ev[k] for k in keys if ev.get(k) is not None}
        if shown:
            line += "\n    evidence: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        if d.previous_version:
            line += f"\n    previous: {d.previous_version}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m actors.registry",
        description="Read the governance registry and submit operator overrides.",
    )
    parser.add_argument(
        "--registry",
        default=os.environ.get("HMM_GOVERNANCE_REGISTRY", DEFAULT_REGISTRY_PATH),
        help="registry file (default: $HMM_GOVERNANCE_REGISTRY or %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="state and headline metrics of every strategy")
    p = sub.add_parser("history", help="governance and model decisions of one strategy (or all)")
    p.add_argument("strategy", nargs="?")
    p.add_argument("--json", action="store_true", help="print the records as JSON lines")
    p = sub.add_parser("models", help="model promotions, rejections and rollbacks, with evidence")
    p.add_argument("strategy", nargs="?")
    p.add_argument("--json", action="store_true", help="print the records as JSON lines")
    p = sub.add_parser("metrics", help="every metric of one strategy as JSON")
    p.add_argument("strategy")
    for action in ACTIONS:
        p = sub.add_parser(action, help=f"operator override: {action} a strategy")
        p.add_argument("strategy")
        p.add_argument("--reason", required=True, help="why (recorded in the registry)")
        if action in ("throttle", "resume"):
            p.add_argument(
                "--scale", type=cli.positive_float, default=0.5 if action == "throttle" else 1.0
            )
        if action == "pause":
            p.add_argument("--flatten", action="store_true", help="also close the position")
        p.add_argument(
            "--force", action="store_true", help="accept a strategy the registry does not know yet"
        )
    args = parser.parse_args(argv)
    path = Path(args.registry)
    try:
        if args.command in ACTIONS:
            return _submit(args, path)
        doc = read_registry(path)
    except (RegistryError, ValueError, OSError, msgspec.ValidationError) as exc:
        print(cli.describe(exc, known=True), file=sys.stderr)
        return 2
    if args.command == "show":
        print(_show(doc))
    elif args.command in ("history", "models"):
        records = [
            d
            for rec in doc.strategies.values()
            for d in (
                rec.model_decisions
                if args.command == "models"
                else [*rec.decisions, *rec.model_decisions]
            )
            if args.strategy in (None, d.strategy_id)
        ]
        for d in sorted(records, key=lambda d: d.seq):
            if args.json:
                print(msgspec.json.encode(d).decode())
            else:
                print(_history_line(d, evidence=args.command == "models"))
    elif args.command == "metrics":
        rec = doc.strategies.get(args.strategy)
        if rec is None:
            print(
                f"error: unknown strategy {args.strategy!r}; known: {sorted(doc.strategies)}",
                file=sys.stderr,
            )
            return 2
        print(json.dumps({"metrics_time_utc": iso_utc(rec.metrics_ts), **rec.metrics}, indent=2))
    return 0


def submit_operator_override(
    path: str | os.PathLike[str],
    strategy_id: str,
    action: str,
    reason: str,
    *,
    scale: float | None = None,
    flatten: bool = False,
    force: bool = False,
    operator: str | None = None,
) -> tuple[Override, Path]:
    """Check and queue one operator override for the registry at ``path``: the one code path of
    the CLI and the operations API (``ops``), so both leave the same file and audit record."""
    path = Path(path)
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {ACTIONS}")
    if not reason.strip() or "\n" in reason or "\r" in reason:
        raise ValueError("the reason must be one non-empty line (it is logged and audited)")
    if path.exists():
        known = read_registry(path).strategies
        if strategy_id not in known and not force:
            raise RegistryError(
                f"unknown strategy {strategy_id!r}; the registry knows {sorted(known)} "
                "(use --force for a strategy that has not run yet)"
            )
    elif not force:
        raise RegistryError(f"no governance registry at {path} (wrong --registry? or --force)")
    if scale is None:
        scale = 0.5 if action == "throttle" else 1.0
    override = Override(
        id=uuid.uuid4().hex,
        strategy_id=strategy_id,
        action=action,  # type: ignore[arg-type]
        reason=reason,
        scale=scale,
        flatten=flatten or action == "retire",
        operator=operator or getpass.getuser(),
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    return override, submit_override(overrides_dir_for(path), override)


def _submit(args: argparse.Namespace, path: Path) -> int:
    override, written = submit_operator_override(
        path,
        args.strategy,
        args.command,
        args.reason,
        scale=getattr(args, "scale", 1.0),
        flatten=getattr(args, "flatten", False),
        force=args.force,
    )
    print(
        f"override {override.id} written to {written}; the governance actor applies it at its "
        "next poll and records it (check with: history "
        f"{args.strategy})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
