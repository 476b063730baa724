"""Message-bus contracts between the strategy and the actors.

Strategies and actors never reach into each other: they exchange these plain msgspec structs on
the NautilusTrader message bus (``msgbus.publish(topic, msg)`` / ``msgbus.subscribe(topic, fn)``),
which works identically in a backtest and in a live node.
"""

from __future__ import annotations

import msgspec

REGIME_TOPIC = "hmm.regime"
BUDGET_TOPIC = "hmm.budget"
GOVERNANCE_TOPIC = "hmm.governance"
MAX_STATES = 8  # regime probabilities the decision file and the metrics carry (p0..p7)


def topic_for(prefix: str, strategy_id: str) -> str:
    """Per-strategy topic, e.g. ``hmm.regime.HMMRegimeStrategy-001``; subscribe to ``prefix.*``."""
    return f"{prefix}.{strategy_id}"


class RegimeUpdate(msgspec.Struct, frozen=True):
    """One decision of the strategy at a bar close (published once per bar after warm-up)."""

    ts_event: int  # bar close, UNIX ns
    strategy_id: str
    instrument_id: str
    close: float
    probs: tuple[float, ...]  # filtered P(state_t | x_1..t), canonical state order
    state: int  # argmax of probs
    target_exposure: float  # policy output in [-1, 1]
    model_version: str
    log_likelihood: float  # log p(x_t | x_1..t-1), the one-step predictive score (drift signal)


class Budget(msgspec.Struct, frozen=True):
    """Capital budget of one strategy in the account's quote currency (from the allocator)."""

    ts_event: int
    strategy_id: str
    notional: float


class GovernanceCommand(msgspec.Struct, frozen=True):
    """Governance action the strategy obeys: it keeps its data and state, only changes risk."""

    ts_event: int
    strategy_id: str
    action: str  # "pause" | "throttle" | "resume"
    scale: float = 1.0  # allocation multiplier for "throttle"/"resume"
    flatten: bool = False  # close the open position when pausing
    reason: str = ""


WARM_START_TOPIC = "hmm.warm_start"


class WarmStartReport(msgspec.Struct, frozen=True):
    """Which history a strategy's warm start used, or why none (once, at start, live nodes);
    ``python -m hmm_strategy.live`` prints it under the start banner."""

    strategy_id: str
    bars: int  # history bars run through the engine (0 = none)
    first_ts: int  # their first and last bar close, UNIX ns (0 = none)
    last_ts: int
    detail: str  # one line: source, count, first/last time and outcome, or why none


BREAKER_TOPIC = "hmm.breaker"


class BreakerRejection(msgspec.Struct, frozen=True):
    """A circuit breaker blocked (or flattened) risk; ``reason`` is a bounded label value."""

    ts_event: int
    strategy_id: str
    instrument_id: str
    # "daily_loss" | "drawdown" | "position_notional" | "rejects" | "stale_data" | "price_jump"
    reason: str


BREAKER_TRIP_TOPIC = "hmm.trip"  # not under hmm.breaker: ``hmm.breaker.*`` would match it


class BreakerTrip(msgspec.Struct, frozen=True):
    """A circuit breaker tripped (once per trip; the orders it then blocks are
    ``BreakerRejection``s). ``reason`` is one of ``hmm_strategy.risk.BREAKER_REASONS``."""

    ts_event: int
    strategy_id: str
    instrument_id: str
    reason: str


MODEL_TOPIC = "hmm.model"


class ModelUpdate(msgspec.Struct, frozen=True):
    """Swap the strategy's model for the artifact at ``model_path`` (promotion or rollback)."""

    ts_event: int
    strategy_id: str
    model_path: str
    model_version: str
    reason: str = ""


KILL_SWITCH_TOPIC = "hmm.killswitch"
KILL_SWITCH_CACHE_KEY = "hmm.killswitch.state"  # the current KillSwitch, JSON, in the node cache


class KillSwitch(msgspec.Struct, frozen=True):
    """The operator's global switch: while ``halted`` no strategy adds risk."""

    ts_event: int
    halted: bool
    reason: str = ""
    flatten: bool = False


LIFECYCLE_TOPIC = "hmm.lifecycle"


class LifecycleDecision(msgspec.Struct, frozen=True):
    """A model promotion, rejection, rollback or failed promotion, for the strategy registry.

    The ``OnlineTrainer`` publishes it; the governance actor (the registry's single writer)
    records it with its evidence. ``log_seq`` is the event's number in ``lifecycle.jsonl``.
    """

    ts_event: int
    strategy_id: str
    event: str  # "promoted" | "rejected" | "rolled_back" | "promotion_failed"
    version: str
    previous_version: str | None
    model_path: str | None
    source: str  # "policy" | "operator"
    reason: str
    evidence: dict
    log_seq: int


FEED_TOPIC = "hmm.feed"


class DataGap(msgspec.Struct, frozen=True):
    """Bars that never arrived between two consecutive bars (a disconnect, a halt, a closure)."""

    ts_event: int  # the bar after the gap
    strategy_id: str
    instrument_id: str
    missing_bars: int
    last_ts: int  # the bar before the gap


STATE_TOPIC = "hmm.state"


class CheckpointWrite(msgspec.Struct, frozen=True):
    """The outcome of a checkpoint write: published on every failure and on the first success
    after one, so the exporter can count failures and hold ``/readyz`` while state is not saved."""

    ts_event: int
    strategy_id: str
    ok: bool
    error: str = ""  # the OS error's text (e.g. "[Errno 28] No space left on device"), never data


DATA_CLOCK_TOPIC = "hmm.clock"


class DataTime(msgspec.Struct, frozen=True):
    """The data's time reached ``ts_event`` (published by the replay feed before each bar time).

    Live actors sample on data time, not on wall-clock timers, so an accelerated replay samples
    exactly where a backtest's simulated clock does. ``closed=False``: data at ``ts_event`` is
    about to be published, everything before it is handled; ``closed=True``: everything at
    ``ts_event`` is handled too (the end of a replay).
    """

    ts_event: int
    closed: bool = False
