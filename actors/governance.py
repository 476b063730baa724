"""``GovernanceActor``: tracks every strategy's performance and applies the governance policy.

The same actor runs in a backtest (where the registry shows what governance *would* have done,
on the simulated clock) and in a live node. It observes the node only through the message bus
and the cache (see ``actors.performance``), samples every ``sample_interval`` of the data's
time in a backtest and a live node alike, so an accelerated replay decides where the backtest
does, and not through closed markets (``actors.performance.DataTimeSampler``), evaluates the YAML
policy (``configs/governance.yaml``), and acts only by publishing ``GovernanceCommand`` on
``hmm.governance.<strategy_id>``; the strategy obeys (pause stops adding risk and optionally
flattens; throttle/resume set its allocation scale). Every decision is logged, published and
recorded in the registry (``actors.registry``) with its reason, the metric value and the time.

Policy rules (validated at config load; errors name the rule and the field)
--------------------------------------------------------------------------
Each rule watches one metric (``drawdown``, ``sharpe`` over a ``window``, ...) and fires when
``metric <op> threshold`` at a sample. A fired rule is *triggered* and contributes its action:

* ``pause`` (optionally ``flatten``): the strategy's scale is 0;
* ``throttle`` to ``scale``;
* ``retire``: a permanent pause that only an operator can lift.

A triggered rule is *released* once ``cooldown`` has elapsed and either ``resume_when`` holds
(a condition on any metric, e.g. the shadow Sharpe of what the paused strategy would have
traded) or, without ``resume_when``, the trigger metric has moved back past the threshold by
``hysteresis`` (``sharpe < 0`` with hysteresis 0.25 releases at ``sharpe >= 0.25``). With
``resume_scale`` < 1 the release starts a *probation* at that scale for ``probation``; firing
again during probation re-triggers the rule. ``release: manual`` leaves release to an operator.
The strategy's state is the most severe over its rules and any operator override (retired >
paused > throttled > active); its scale is the minimum. A transition out of a pause restarts the
``drawdown`` metric from the current NAV (new high-water mark); ``max_drawdown`` keeps history.

Which strategies
----------------
The actor discovers the strategies of its node at start (each NautilusTrader ``Strategy``
subscribes to ``events.order.<strategy_id>`` when it is registered). ``strategy_ids`` in the
config restricts governance to some of them; a strategy id in the config or in a rule's
``strategies`` that is not in the node is an error at start, never silently ignored.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal

import msgspec
import yaml
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig

from actors.operator_queue import FolderWatch
from actors.performance import (
    METRICS,
    SECONDS_PER_YEAR,
    WINDOWED_METRICS,
    DataTimeSampler,
    PerformanceBook,
    parse_duration,
    window_samples,
)
from actors.registry import (
    DEFAULT_REGISTRY_PATH,
    ManualState,
    Override,
    Registry,
    RuleStatus,
    StrategyRecord,
    archive_override,
    iso_utc,
    overrides_dir_for,
    pending_overrides,
)
from hmm_strategy.config import first_non_finite
from hmm_strategy.messages import (
    GOVERNANCE_TOPIC,
    LIFECYCLE_TOPIC,
    REGIME_TOPIC,
    GovernanceCommand,
    LifecycleDecision,
    topic_for,
)
from hmm_strategy.timers import set_loop_timer

POLICY_SCHEMA_VERSION = 1
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_SEVERITY = {"active": 0, "throttled": 1, "paused": 2, "retired": 3}
_SAMPLE_TIMER = "governance-sample"
_POLL_TIMER = "governance-overrides"


class PolicyError(ValueError):
    """The governance policy file is invalid; the message names the file, rule and field."""


# -- policy schema --------------------------------------------------------------------------------


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``metric <op> threshold`` (over ``window`` for windowed metrics)."""

    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    window: str | None = None


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One governance rule; see the module docstring for the trigger/release semantics."""

    name: str
    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    action: Literal["pause", "throttle", "retire"]
    window: str | None = None
    scale: float | None = None  # throttle only, in (0, 1)
    flatten: bool = False  # pause/retire: close the position
    hysteresis: float = 0.0
    cooldown: str | None = None  # minimum time triggered before a release is considered
    resume_when: Condition | None = None
    resume_scale: float = 1.0
    probation: str | None = None
    release: Literal["auto", "manual"] = "auto"
    strategies: list[str] | None = None  # default: every governed strategy

    @property
    def trigger(self) -> Condition:
        return Condition(self.metric, self.op, self.threshold, self.window)


class GovernancePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The policy file: sampling of the metrics and the rules."""

    schema_version: int
    sample_interval: str = "15m"
    min_fill: float = 0.5  # share of a window that must hold samples before its metric counts
    shadow_fee_rate: float = 0.001  # cost per unit of target change in the shadow return
    rules: list[Rule] = []

    @property
    def interval(self) -> timedelta:
        return parse_duration(self.sample_interval)

    @property
    def periods_per_year(self) -> float:
        return SECONDS_PER_YEAR / self.interval.total_seconds()

    def windows(self) -> dict[str, int]:
        """Every window the rules use: label -> samples."""
        out: dict[str, int] = {}
        for rule in self.rules:
            for cond in (rule.trigger, rule.resume_when):
                if cond is not None and cond.window is not None:
                    out[cond.window] = window_samples(cond.window, self.interval)
        return out

    def strategy_ids(self) -> set[str]:
        return {sid for rule in self.rules for sid in (rule.strategies or [])}


def load_policy(path: str | Path) -> GovernancePolicy:
    """Read and validate a policy file; a ``PolicyError`` names the file, rule and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{path}: governance policy file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise PolicyError(f"{path}: not valid YAML: nested too deeply") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: top level must be a mapping")
    try:
        bad = first_non_finite(raw)
    except RecursionError:
        raise PolicyError(f"{path}: not valid YAML: nested too deeply") from None
    if bad is not None:
        raise PolicyError(f"{path}: {bad[2:]} must be a finite number")
    try:
        policy = msgspec.convert(raw, GovernancePolicy)
    except msgspec.ValidationError as exc:
        raise PolicyError(f"{path}: {_name_rule(str(exc), raw)}") from None
    _validate(policy, path)
    return policy


def _name_rule(message: str, raw: dict) -> str:
    """Turn msgspec's ``$.rules[2].x`` into ``rules[2] ('name').x``."""
    import re

    def repl(match: re.Match) -> str:
        i = int(match.group(1))
        rules = raw.get("rules") or []
        name = rules[i].get("name") if i < len(rules) and isinstance(rules[i], dict) else None
        return f"rules[{i}]" + (f" ({name!r})" if name else "")

    return re.sub(r"\$\.rules\[(\d+)\]", repl, message).replace("`$.", "`")


def _validate(policy: GovernancePolicy, path: Path) -> None:
    def fail(where: str, msg: str) -> None:
        raise PolicyError(f"{path}: {where}: {msg}")

    if policy.schema_version != POLICY_SCHEMA_VERSION:
        fail("schema_version", f"must be {POLICY_SCHEMA_VERSION}, was {policy.schema_version}")
    try:
        interval = policy.interval
    except ValueError as exc:
        fail("sample_interval", str(exc))
    if not 0.0 < policy.min_fill <= 1.0:
        fail("min_fill", f"must be in (0, 1], was {policy.min_fill}")
    if not 0.0 <= policy.shadow_fee_rate < 0.1:
        fail("shadow_fee_rate", f"must be in [0, 0.1), was {policy.shadow_fee_rate}")
    seen: set[str] = set()
    for i, rule in enumerate(policy.rules):
        where = f"rules[{i}] ({rule.name!r})"
        if not rule.name.strip():
            fail(f"rules[{i}].name", "must not be empty")
        if rule.name in seen:
            fail(f"{where}.name", "duplicate rule name")
        seen.add(rule.name)
        for field, cond in (("", rule.trigger), (".resume_when", rule.resume_when)):
            if cond is None:
                continue
            if cond.metric not in METRICS:
                fail(
                    f"{where}{field}.metric",
                    f"unknown metric {cond.metric!r}; known: {', '.join(sorted(METRICS))}",
                )
            if cond.metric in WINDOWED_METRICS and cond.window is None:
                fail(f"{where}{field}.window", f"required for metric {cond.metric!r}")
            if cond.metric not in WINDOWED_METRICS and cond.window is not None:
                fail(f"{where}{field}.window", f"metric {cond.metric!r} takes no window")
            if cond.window is not None:
                try:
                    window_samples(cond.window, interval)
                except ValueError as exc:
                    fail(f"{where}{field}.window", str(exc))
            if not math.isfinite(cond.threshold):
                fail(f"{where}{field}.threshold", "must be a finite number")
        if rule.action == "throttle":
            if rule.scale is None or not 0.0 < rule.scale < 1.0:
                fail(f"{where}.scale", f"throttle needs a scale in (0, 1), was {rule.scale}")
            if rule.flatten:
                fail(f"{where}.flatten", "only pause/retire can flatten")
        elif rule.scale is not None:
            fail(f"{where}.scale", f"only throttle takes a scale (action is {rule.action!r})")
        if rule.hysteresis < 0 or not math.isfinite(rule.hysteresis):
            fail(f"{where}.hysteresis", f"must be >= 0, was {rule.hysteresis}")
        for field in ("cooldown", "probation"):
            value = getattr(rule, field)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    fail(f"{where}.{field}", str(exc))
        if not 0.0 < rule.resume_scale <= 1.0:
            fail(f"{where}.resume_scale", f"must be in (0, 1], was {rule.resume_scale}")
        if rule.resume_scale < 1.0 and rule.probation is None:
            fail(f"{where}.probation", "resume_scale < 1 needs a probation period")
        if rule.action == "retire" or rule.release == "manual":
            for field in ("resume_when", "cooldown", "probation"):
                if getattr(rule, field) is not None:
                    fail(
                        f"{where}.{field}",
                        "a rule released only by an operator "
                        f"(action retire or release manual) takes no {field}",
                    )
        if rule.strategies is not None:
            if not rule.strategies:
                fail(f"{where}.strategies", "empty list (omit it to apply to every strategy)")
            if len(set(rule.strategies)) != len(rule.strategies):
                fail(f"{where}.strategies", "duplicate strategy id")


# -- policy engine (no NautilusTrader types: unit-testable) --------------------------------------


class Transition(msgspec.Struct, frozen=True):
    """A change of a strategy's effective governance state, with its cause."""

    strategy_id: str
    state: str
    scale: float
    flatten: bool
    reason: str
    rule: str | None = None
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    window: str | None = None

    @property
    def action(self) -> str:
        if self.state in ("paused", "retired"):
            return "pause" if self.state == "paused" else "retire"
        return "throttle" if self.scale < 1.0 else "resume"


class PolicyEngine:
    """Evaluates the rules per strategy and keeps each rule's armed/triggered/probation status.

    ``metric(strategy_id, name, window_label)`` supplies values (None = not available yet: a
    rule on it neither fires nor releases).
    """

    def __init__(self, policy: GovernancePolicy, strategy_ids: list[str]) -> None:
        self.policy = policy
        self.strategy_ids = list(strategy_ids)
        self.records: dict[str, StrategyRecord] = {sid: StrategyRecord() for sid in strategy_ids}
        self._rules = {
            sid: [r for r in policy.rules if r.strategies is None or sid in r.strategies]
            for sid in strategy_ids
        }
        # strategies whose last evaluation left their state as the rules and override say: an
        # evaluation in which no rule changed status then changes nothing either (no need to
        # recompute the effective state); anything else that touches a record clears this
        self._settled: set[str] = set()

    def attach(self, strategy_id: str, record: StrategyRecord) -> None:
        """Use ``record`` (from the registry) as the live state of ``strategy_id``."""
        known = {r.name for r in self._rules[strategy_id]}
        for name in list(record.rules):
            if name not in known:  # the policy changed since: a removed rule holds nothing
                del record.rules[name]
        self.records[strategy_id] = record
        self._settled.discard(strategy_id)

    def _status(self, record: StrategyRecord, rule: Rule) -> RuleStatus:
        status = record.rules.get(rule.name)
        if status is None:
            status = record.rules[rule.name] = RuleStatus()
        return status

    def evaluate(self, strategy_id: str, now_ns: int, metric) -> Transition | None:
        """Advance the rules of ``strategy_id`` at ``now_ns``; a Transition if the state changed."""
        record = self.records[strategy_id]
        statuses = record.rules
        events: list[_Event] = []
        for rule in self._rules[strategy_id]:
            status = statuses.get(rule.name)
            if status is None:
                status = statuses[rule.name] = RuleStatus()
            value = metric(strategy_id, rule.metric, rule.window)
            fired = value is not None and _OPS[rule.op](value, rule.threshold)
            if status.status in ("armed", "probation"):
                if fired:
                    status.status, status.since_ns = "triggered", now_ns
                    events.append(_Event(rule, "fired", rule.trigger, value))
                elif status.status == "probation" and _elapsed(status, rule.probation, now_ns):
                    status.status, status.since_ns = "armed", now_ns
                    events.append(_Event(rule, "probation over", rule.trigger, value))
            elif rule.action != "retire" and rule.release == "auto":
                if not _elapsed(status, rule.cooldown, now_ns):
                    continue
                cond = rule.resume_when
                if cond is not None:
                    rvalue = metric(strategy_id, cond.metric, cond.window)
                    released = rvalue is not None and _OPS[cond.op](rvalue, cond.threshold)
                else:
                    cond, rvalue = _release_condition(rule), value
                    released = rvalue is not None and _OPS[cond.op](rvalue, cond.threshold)
                if released:
                    status.status = "probation" if rule.resume_scale < 1.0 else "armed"
                    status.since_ns = now_ns
                    events.append(_Event(rule, "released", cond, rvalue))
        if not events and strategy_id in self._settled:
            return None  # no rule changed status: the effective state is the recorded one
        transition = self._transition(strategy_id, record, events)
        if transition is None:
            self._settled.add(strategy_id)
        return transition

    def _transition(self, strategy_id, record, events: list[_Event]) -> Transition | None:
        state, scale, flatten = self.effective(strategy_id)
        changed = (state, scale) != (record.state, record.scale)
        needs_flatten = flatten and not record.flattened
        if not changed and not needs_flatten:
            return None
        if not events:  # a rule was removed from the policy since its state was recorded
            return Transition(strategy_id, state, scale, flatten, "policy re-evaluated")
        worse = (_SEVERITY[state], -scale) > (_SEVERITY[record.state], -record.scale)
        fired = [e for e in events if e.what == "fired"]
        if (worse or needs_flatten) and fired:  # the most severe rule that fired explains it
            primary = max(
                fired, key=lambda e: (_ACTION_SEVERITY[e.rule.action], -(e.rule.scale or 0.0))
            )
        else:
            primary = next((e for e in events if e.what != "fired"), events[0])
        reason = "; ".join(e.text() for e in sorted(events, key=lambda e: e is not primary))
        cond = primary.condition
        return Transition(
            strategy_id,
            state,
            scale,
            flatten,
            reason,
            primary.rule.name,
            cond.metric,
            primary.value,
            cond.threshold,
            cond.window,
        )

    def effective(self, strategy_id: str) -> tuple[str, float, bool]:
        """(state, scale, flatten) from the rules' statuses and the operator override."""
        record = self.records[strategy_id]
        state, scale, flatten = "active", 1.0, False
        for rule in self._rules[strategy_id]:
            status = self._status(record, rule).status
            if status == "triggered":
                if rule.action == "throttle":
                    scale = min(scale, rule.scale)
                else:
                    kind = "retired" if rule.action == "retire" else "paused"
                    if _SEVERITY[kind] > _SEVERITY[state]:
                        state = kind
                    flatten = flatten or rule.flatten
            elif status == "probation":
                scale = min(scale, rule.resume_scale)
        manual = record.manual
        if manual is not None:
            if manual.state == "throttled":
                scale = min(scale, manual.scale)
            elif _SEVERITY[manual.state] > _SEVERITY[state]:
                state = manual.state
            if manual.state in ("paused", "retired"):
                flatten = flatten or manual.flatten
        if state in ("paused", "retired"):
            return state, 0.0, flatten
        return ("throttled" if scale < 1.0 else "active"), scale, False

    def apply_override(self, override: Override, now_ns: int) -> Transition:
        """An operator request: pause/throttle/retire are sticky; resume clears everything."""
        record = self.records[override.strategy_id]
        self._settled.discard(override.strategy_id)
        if override.action == "resume":
            record.manual = None
            for status in record.rules.values():
                status.status, status.since_ns = "armed", now_ns
            if override.scale < 1.0:
                record.manual = ManualState(
                    "throttled", override.scale, False, override.reason, override.id, now_ns
                )
        else:
            state = {"pause": "paused", "throttle": "throttled", "retire": "retired"}
            record.manual = ManualState(
                state[override.action],
                override.scale if override.action == "throttle" else 0.0,
                override.flatten or override.action == "retire",
                override.reason,
                override.id,
                now_ns,
            )
        state, scale, flatten = self.effective(override.strategy_id)
        reason = f"operator {override.operator or '?'} {override.action}: {override.reason}"
        return Transition(override.strategy_id, state, scale, flatten, reason)

    def commit(self, transition: Transition) -> None:
        """The transition was recorded and published: it is now the strategy's state."""
        record = self.records[transition.strategy_id]
        self._settled.discard(transition.strategy_id)
        if transition.state in ("paused", "retired"):
            record.flattened = record.flattened or transition.flatten
        else:
            record.flattened = False
        record.state, record.scale = transition.state, transition.scale


_ACTION_SEVERITY = {"throttle": 1, "pause": 2, "retire": 3}


class _Event(msgspec.Struct, frozen=True):
    """What happened to one rule at one evaluation."""

    rule: Rule
    what: str  # "fired" | "released" | "probation over"
    condition: Condition
    value: float | None

    def text(self) -> str:
        cond, rule = self.condition, self.rule
        label = f"{cond.metric}[{cond.window}]" if cond.window else cond.metric
        shown = "n/a" if self.value is None else f"{self.value:.6g}"
        check = f"{label}={shown} {cond.op} {cond.threshold:g}"
        if self.what == "fired":
            verb = f"throttle to {rule.scale:g}" if rule.action == "throttle" else rule.action
            return f"rule {rule.name!r} fired ({verb}): {check}"
        if self.what == "released":
            text = f"rule {rule.name!r} released after cooldown {rule.cooldown or '0s'}: {check}"
            if rule.resume_scale < 1.0:
                text += f"; probation at {rule.resume_scale:g} for {rule.probation}"
            return text
        return f"rule {rule.name!r} probation of {rule.probation} completed"


def _release_condition(rule: Rule) -> Condition:
    """The trigger metric back past the threshold by the hysteresis margin."""
    if rule.op in (">", ">="):
        return Condition(rule.metric, "<=", rule.threshold - rule.hysteresis, rule.window)
    return Condition(rule.metric, ">=", rule.threshold + rule.hysteresis, rule.window)


def _elapsed(status: RuleStatus, duration: str | None, now_ns: int) -> bool:
    if duration is None:
        return True
    return now_ns - status.since_ns >= _duration_ns(duration)


@functools.lru_cache(maxsize=64)
def _duration_ns(duration: str) -> float:
    """A rule's duration in ns, parsed once (rules are evaluated at every sample)."""
    return parse_duration(duration).total_seconds() * 1e9


# -- the actor ------------------------------------------------------------------------------------


class GovernanceActorConfig(ActorConfig, frozen=True):
    """
    Configuration for ``GovernanceActor``.

    Parameters
    ----------
    policy_path : str
        The governance policy (YAML, see ``configs/governance.yaml``); validated when the node
        config is loaded.
    registry_path : str
        The registry JSON. Backtests: put it in the run folder (``{run_dir}/...``) so each run
        starts fresh; live: a persistent path, reloaded on restart.
    overrides_dir : str, optional
        Where operator override files are picked up (default: ``<registry dir>/overrides``).
    strategy_ids : list[str], optional
        The strategies to govern (default: every strategy of the node); each must exist.
    currency : str
        The account currency amounts are reported in.
    default_capital : float
        Capital assumed for a strategy until its first ``Budget`` arrives (set it to the
        strategy's ``notional`` when no allocator runs).
    metrics_write_interval : str
        How often a live node saves the metrics snapshot to the registry. A live node saves
        decisions at once, with the snapshot of their strategy; a backtest saves the registry at
        stop (and when it applies an operator override).
    override_poll_interval : str
        How often a live node polls the overrides folder (a backtest reads it at each sample).

    """

    WRITES: ClassVar[tuple[str, ...]] = ("registry_path",)  # checked before the node starts

    policy_path: str = "configs/governance.yaml"
    registry_path: str = DEFAULT_REGISTRY_PATH
    overrides_dir: str | None = None
    strategy_ids: list[str] | None = None
    currency: str = "USDT"
    default_capital: float = 10_000.0
    metrics_write_interval: str = "1h"
    override_poll_interval: str = "10s"

    def __post_init__(self) -> None:
        load_policy(self.policy_path)
        for field in ("metrics_write_interval", "override_poll_interval"):
            parse_duration(getattr(self, field))
        if not self.default_capital > 0:
            raise ValueError(f"default_capital must be > 0, was {self.default_capital}")
        if self.strategy_ids is not None and len(set(self.strategy_ids)) != len(self.strategy_ids):
            raise ValueError("strategy_ids has duplicates")


def node_strategy_ids(actor: Actor) -> list[str]:
    """Ids of the strategies registered in the actor's node (from their order-event topics)."""
    prefix = "events.order."
    topics = {s.topic for s in actor.msgbus.subscriptions(f"{prefix}*")}
    return sorted(t[len(prefix) :] for t in topics if "*" not in t and "?" not in t)


def governed_strategy_ids(
    actor: Actor, configured: list[str] | None, required: set[str], what: str
) -> list[str]:
    """The strategies to act on; an id that is not in the node is an error naming it."""
    in_node = node_strategy_ids(actor)
    wanted = list(configured) if configured is not None else in_node
    missing = sorted((set(wanted) | required) - set(in_node))
    if missing:
        raise ValueError(
            f"{what}: strategy id(s) {missing} are not in this node; its strategies are "
            f"{in_node} (ids are <StrategyClass>-<order_id_tag>)"
        )
    unlisted = sorted(required - set(wanted))
    if unlisted:
        raise ValueError(f"{what}: strategy id(s) {unlisted} are not in strategy_ids {wanted}")
    return wanted


class GovernanceActor(Actor):
    """Per-strategy metrics, the governance policy, the registry, and operator overrides."""

    def __init__(self, config: GovernanceActorConfig) -> None:
        super().__init__(config)
        self.policy = load_policy(config.policy_path)
        self.registry: Registry | None = None
        self.engine: PolicyEngine | None = None
        self.book: PerformanceBook | None = None
        self._getters: dict[tuple, Callable[[], float | None]] = {}  # (sid, metric, window)
        self._window_labels = {n: label for label, n in self.policy.windows().items()}
        self._windows = {label: n for label, n in self.policy.windows().items()}
        self._undelivered: set[str] = set()  # strategies not yet listening to their state
        self._last_metrics_write = 0
        self._live = False
        self._sampler: DataTimeSampler | None = None  # samples on the data's time
        self._overrides_dir = Path(config.overrides_dir or overrides_dir_for(config.registry_path))
        # the folder is listed when it changed (new request files), not at every sample
        self._overrides = FolderWatch(self._overrides_dir)
        self._metrics_write_ns = parse_duration(config.metrics_write_interval).total_seconds() * 1e9

    # -- lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        cfg = self.config
        sids = governed_strategy_ids(
            self, cfg.strategy_ids, self.policy.strategy_ids(), f"governance ({cfg.policy_path})"
        )
        self.registry = Registry.open(cfg.registry_path, self.trader_id.value)
        self._live = self._is_live()
        # a live node saves the registry with every decision (a restart resumes from it); a
        # backtest saves it at stop and when an operator override is applied (nothing resumes
        # mid-run, and a save re-encodes the whole history: O(decisions) per decision)
        self.registry.autosave = self._live
        now = self.clock.timestamp_ns()
        if self.registry.doc.updated_ns > now:
            raise ValueError(
                f"governance registry {cfg.registry_path} was last updated at "
                f"{iso_utc(self.registry.doc.updated_ns)}, after this node's time {iso_utc(now)}: "
                "it belongs to another run (a backtest needs a fresh registry_path per run, "
                "e.g. under {run_dir})"
            )
        for tmp in self.registry.removed_temp_files:
            self.log.warning(f"Removed an interrupted registry write: {tmp}")
        self.engine = PolicyEngine(self.policy, sids)
        self.book = PerformanceBook(
            self,
            sids,
            cfg.currency,
            self._windows.values(),
            self.policy.periods_per_year,
            cfg.default_capital,
            self.policy.min_fill,
            self.policy.shadow_fee_rate,
        )
        for sid in sids:
            record = self.registry.strategy(sid)
            self.engine.attach(sid, record)
            self.book.perf[sid].restore(record.perf)
            if record.state != "active":
                self.book.perf[sid].set_scale(record.scale)
        self._getters = {}
        self.book.subscribe()
        self.msgbus.subscribe(f"{REGIME_TOPIC}.*", self._on_regime_update)
        self.msgbus.subscribe(f"{LIFECYCLE_TOPIC}.*", self._on_lifecycle_decision)
        # After a restart every strategy starts active: re-send each recorded state as soon as
        # the strategy listens (strategies start after actors).
        self._undelivered = {
            sid
            for sid in sids
            if (self.engine.records[sid].state, self.engine.records[sid].scale) != ("active", 1)
        }
        # Samples on the data's time in backtest and live alike (a wall-clock timer would not
        # follow an accelerated replay), and never through a closed market.
        self._sampler = DataTimeSampler(
            self, self.policy.interval, self.sample, self._on_idle, _SAMPLE_TIMER
        )
        self._sampler.subscribe()
        if self._live:
            set_loop_timer(
                self.clock, _POLL_TIMER, parse_duration(cfg.override_poll_interval), self._on_poll
            )
        self.log.info(
            f"Governing {sids} with {len(self.policy.rules)} rule(s) from {cfg.policy_path}; "
            f"registry {cfg.registry_path} ({len(self.registry.decisions())} decisions)"
        )

    def on_stop(self) -> None:
        for name in (_POLL_TIMER,):
            if name in self.clock.timer_names:
                self.clock.cancel_timer(name)
        if self._sampler is not None:
            self._sampler.unsubscribe()
        if self.book is not None:
            self.book.unsubscribe()
        if self.msgbus.is_subscribed(f"{REGIME_TOPIC}.*", self._on_regime_update):
            self.msgbus.unsubscribe(f"{REGIME_TOPIC}.*", self._on_regime_update)
        if self.msgbus.is_subscribed(f"{LIFECYCLE_TOPIC}.*", self._on_lifecycle_decision):
            self.msgbus.unsubscribe(f"{LIFECYCLE_TOPIC}.*", self._on_lifecycle_decision)
        if self.registry is not None:
            self._write_metrics(self.clock.timestamp_ns())

    def on_reset(self) -> None:
        self.registry = self.engine = self.book = None
        self._getters = {}

    def _is_live(self) -> bool:
        from nautilus_trader.common.component import LiveClock

        return isinstance(self.clock, LiveClock)

    # -- timers ----------------------------------------------------------------------------------

    def sample(self, now: int) -> None:
        """One sample period ends at ``now`` (data time): metrics, then the policy."""
        self.book.sample(now)
        self._evaluate(now)

    def _on_idle(self, periods: int, closure: int | None) -> None:
        """Data resumes after ``periods`` sample periods without any: their zero returns, and
        after a closure (ending at ``closure``) what a sample there would have decided."""
        self.book.idle(periods)
        if closure is not None:
            self._evaluate(closure)

    def _evaluate(self, now: int) -> None:
        if self._undelivered:
            self._deliver_pending(now)
        if self._overrides.changed():
            self._apply_overrides(now)
        for sid in self.engine.strategy_ids:
            transition = self.engine.evaluate(sid, now, self._metric)
            if transition is not None:
                self._decide(transition, now, source="policy")
        # Live: persist the metrics snapshot periodically for operators. A backtest writes the
        # registry at stop (an fsync per simulated hour would dominate its run time).
        if self._live and now - self._last_metrics_write >= self._metrics_write_ns:
            self._write_metrics(now)

    def _on_poll(self, event) -> None:
        # Wall-clock poll (an operator's override must not wait for data), stamped with the
        # data's time once there is some, so the registry keeps one time line.
        now = self._sampler.now_ns if self._sampler is not None and self._sampler.now_ns else 0
        now = now or event.ts_event
        self._deliver_pending(now)
        if self._overrides.changed():
            self._apply_overrides(now)

    def _on_regime_update(self, update) -> None:
        # A strategy publishes its decision before acting on it: the last moment to tell it.
        if update.strategy_id in self._undelivered:
            self._deliver_pending(update.ts_event)

    def _on_lifecycle_decision(self, msg: LifecycleDecision) -> None:
        """The registry's single writer records the trainer's promotions/rejections/rollbacks."""
        decision = self.registry.record_model(
            f"model-{msg.strategy_id}-{msg.log_seq}-{msg.ts_event}",
            msg.ts_event,
            msg.strategy_id,
            event=msg.event,
            version=msg.version,
            reason=msg.reason,
            source="operator" if msg.source == "operator" else "policy",
            previous_version=msg.previous_version,
            model_path=msg.model_path,
            log_seq=msg.log_seq,
            evidence=msg.evidence,
        )
        if decision is not None:
            self.log.info(
                f"Registry #{decision.seq}: {msg.strategy_id} model {msg.event} {msg.version}"
            )

    def _metric(self, sid: str, name: str, window: str | None) -> float | None:
        getter = self._getters.get((sid, name, window))
        if getter is None:
            n = self._windows[window] if window else None
            getter = self._getters[(sid, name, window)] = self.book.perf[sid].getter(name, n)
        value = getter()
        return None if value is None or not math.isfinite(value) else value

    # -- decisions -------------------------------------------------------------------------------

    def _listening(self, sid: str) -> bool:
        """The strategy subscribed to its own governance topic (it has started)."""
        return self.msgbus.has_subscribers(topic_for(GOVERNANCE_TOPIC, sid))

    def _deliver_pending(self, now: int) -> None:
        """Send the current state to strategies that missed it (restart, or not started yet)."""
        for sid in sorted(self._undelivered):
            if not self._listening(sid):
                continue
            self._undelivered.discard(sid)
            record = self.engine.records[sid]
            action = {"paused": "pause", "retired": "pause"}.get(
                record.state, "throttle" if record.scale < 1.0 else "resume"
            )
            reason = f"restored from registry: {record.state}"
            if record.decisions:
                reason += f" (decision #{record.decisions[-1].seq}: {record.decisions[-1].reason})"
            self.log.warning(f"{sid}: {reason}")
            self._publish(sid, action, record.scale, record.flattened, reason, now)

    def _decide(
        self,
        t: Transition,
        now: int,
        source: str,
        decision_id: str | None = None,
        operator_name: str | None = None,
    ) -> None:
        was_paused = self.engine.records[t.strategy_id].state in ("paused", "retired")
        self.engine.commit(t)  # before record(): it saves the strategy's record with the decision
        if self.registry.autosave:  # else the registry is saved at stop, with fresh snapshots
            self._snapshot(t.strategy_id, now)
        decision = self.registry.record(
            decision_id or f"{t.strategy_id}@{now}:{source}",
            now,
            t.strategy_id,
            action=t.action,
            state=t.state,
            scale=t.scale,
            flatten=t.flatten,
            reason=t.reason,
            source=source,
            rule=t.rule,
            metric=t.metric,
            value=t.value,
            threshold=t.threshold,
            window=t.window,
            operator=operator_name,
        )
        if decision is None:  # already recorded before a crash: state is in place, re-publish
            self.log.warning(f"{t.strategy_id}: decision {decision_id} was already recorded")
        else:
            self.log.warning(
                f"Governance #{decision.seq} {t.strategy_id}: {t.action} -> {t.state} "
                f"(scale {t.scale:g}{', flatten' if t.flatten else ''}): {t.reason}"
            )
        if was_paused and t.state not in ("paused", "retired"):
            self.book.perf[t.strategy_id].rebase()
        action = "pause" if t.state in ("paused", "retired") else t.action
        reason = f"retired: {t.reason}" if t.state == "retired" else t.reason
        self._publish(t.strategy_id, action, t.scale, t.flatten, reason, now)

    def _publish(
        self, sid: str, action: str, scale: float, flatten: bool, reason: str, now: int
    ) -> None:
        if not self._listening(sid):
            self._undelivered.add(sid)  # re-sent when the strategy starts listening
        self.msgbus.publish(
            topic_for(GOVERNANCE_TOPIC, sid),
            GovernanceCommand(
                ts_event=now,
                strategy_id=sid,
                action=action,
                scale=scale if action != "pause" else 0.0,
                flatten=flatten,
                reason=reason,
            ),
        )

    def _apply_overrides(self, now: int) -> None:
        for path, override in pending_overrides(self._overrides_dir):
            if isinstance(override, str):
                self.log.error(f"Rejected operator override {path.name}: {override}")
                archive_override(path, applied=False)
                continue
            if override.strategy_id not in self.engine.records:
                self.log.error(
                    f"Rejected operator override {path.name}: strategy "
                    f"{override.strategy_id!r} is not governed here ({self.engine.strategy_ids})"
                )
                archive_override(path, applied=False)
                continue
            if self.registry.override_applied(override.id):  # crash after recording it
                archive_override(path, applied=True)
                continue
            transition = self.engine.apply_override(override, now)
            self.registry.mark_override_applied(override.id)
            self._decide(
                transition, now, "operator", f"override:{override.id}", override.operator or None
            )
            if not self.registry.autosave:  # the override file is archived next: record it first
                self._snapshot(override.strategy_id, now)
                self.registry.save(now)
            archive_override(path, applied=True)

    def _snapshot(self, sid: str, now: int) -> None:
        perf, record = self.book.perf[sid], self.registry.strategy(sid)
        record.metrics = perf.snapshot(self._window_labels)
        record.metrics_ts = now
        record.perf = perf.state()
        if perf.model_version:
            record.model_version = perf.model_version

    def _write_metrics(self, now: int) -> None:
        self._last_metrics_write = now
        for sid in self.book.perf:
            self._snapshot(sid, now)
        self.registry.save(now)
