"""``MetricsExporter``: a NautilusTrader actor that exports Prometheus metrics of a trading node.

It listens on the message bus only (order and position events, the strategy's ``RegimeUpdate``,
the allocator's ``Budget``, governance commands and circuit-breaker rejections) and reads the
portfolio on a timer, so it works the same in a backtest and in a live node and never touches
the strategies. Metrics go to the exporter's OWN ``CollectorRegistry`` (several exporters, or
tests, can share one process); ``render()`` returns the exposition text and, when ``port`` is not
0, a small HTTP server serves ``/metrics``, ``/health`` and ``/readyz`` (see ``metrics_server``).

Label values are venue names, strategy ids, instrument ids, HMM state indices, governance states
and breaker reasons only: never client order ids, account ids or anything from the environment.
Each label is capped at ``max_label_values`` distinct values (extra ones become ``"other"``).

Multiprocess mode (``multiprocess_dir`` or ``$PROMETHEUS_MULTIPROC_DIR``) uses prometheus_client's
mmap shards, so one ``/metrics`` shows the aggregate of every process writing to that directory:
counters and histograms are summed; gauges use ``livemostrecent`` (the value most recently set by
any live process wins, which is right both for per-strategy series that one process owns and for
a venue's equity that two processes might both report), except the ``ops_*_last_refresh_epoch``
gauges, which use ``livemin`` so that one process whose refresh loop stalled still trips the
stale-refresh alert. Counter and histogram shards of a process that died (even by ``kill -9``)
STAY, so the summed counters never go down and ``increase()`` stays true across a restart; its
live-gauge shards go (prometheus_client's ``mark_process_dead``) on every scrape and start, and a
stopping exporter marks itself dead, so a dead process's gauges never linger in the totals.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import LiveClock
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionOpened,
)
from nautilus_trader.model.identifiers import Venue
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import values as prom_values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from actors.metrics_server import MetricsHTTPServer
from actors.valuation import PositionCycles, account_equity, convert, last_price
from hmm_strategy.cli import check_listen_host, is_loopback
from hmm_strategy.messages import (
    BREAKER_TOPIC,
    BREAKER_TRIP_TOPIC,
    BUDGET_TOPIC,
    FEED_TOPIC,
    GOVERNANCE_TOPIC,
    MAX_STATES,
    REGIME_TOPIC,
    STATE_TOPIC,
    BreakerRejection,
    BreakerTrip,
    Budget,
    CheckpointWrite,
    DataGap,
    GovernanceCommand,
    RegimeUpdate,
)
from hmm_strategy.risk import BREAKER_REASONS
from hmm_strategy.timers import set_loop_timer

# No `<counter>_created` / `<histogram>_created` series: a quarter of every scrape's samples
# (156 of 606 in bench section 5), read by no dashboard, alert or rule here, and rendered on the
# node's GIL. Process-wide in prometheus_client (the node's process is ours).
disable_created_metrics()

FAULT_KINDS = ("order_timeout", "order_rejected", "data_gap")
TIMEOUT_REASON = "UNKNOWN"  # the reason NautilusTrader gives an in-flight order it resolves
# orders_rejected_total{reason}: a fixed set (every one zero-initialised, so increase() counts the
# first of each), classified from the venue's free-text reason by rejection_reason()
REJECT_REASONS = (
    "timeout",  # never answered; NautilusTrader's in-flight check resolved it
    "insufficient_balance",
    "filter",  # price/quantity/notional filters, precision
    "rate_limit",
    "clock",  # request timestamp outside the venue's receive window
    "post_only",
    "reduce_only",
    "other",
)
_VENUE_CODE = re.compile(r"""code["']?\s*[:=]\s*(-?\d+)""", re.IGNORECASE)
_CODE_REASONS = {  # Binance spot/futures error codes (Bybit and others fall back to keywords)
    -2010: "insufficient_balance",
    -2018: "insufficient_balance",
    -2019: "insufficient_balance",
    -1013: "filter",
    -1111: "filter",
    -1112: "filter",
    -4164: "filter",
    -1003: "rate_limit",
    -1015: "rate_limit",
    -1021: "clock",
}
_REASON_WORDS = (
    ("insufficient", "insufficient_balance"),
    ("post_only", "post_only"),
    ("post-only", "post_only"),
    ("reduce_only", "reduce_only"),
    ("reduce-only", "reduce_only"),
    ("too many", "rate_limit"),
    ("rate limit", "rate_limit"),
    ("recvwindow", "clock"),
    ("filter", "filter"),
    ("precision", "filter"),
    ("notional", "filter"),
)
_HTTP_429 = re.compile(r"\b(?:http|status)\D{0,3}429\b", re.IGNORECASE)
USD_LIKE = frozenset({"USD", "USDT", "USDC"})
GOVERNANCE_STATES = ("active", "throttled", "paused")
ACTION_TO_STATE = {"resume": "active", "throttle": "throttled", "pause": "paused"}
BREAKER_LABELS = (*BREAKER_REASONS, "other")  # every reason the breakers emit, by its own name
# Submit -> ack in ms: sub-ms colocated acks up to a minute (a bar-driven backtest with a latency
# model acks at the next bar).
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
# the time in a model version: an artifact's creation (``20241101T000000Z-<checksum>``), the last
# bar of a trained model (``hmm_btc-20240430T0000-<hash>``) or of an in-run fit
# (``inrun-20240301T121500Z-5809``)
_VERSION_TS = re.compile(r"(?:^|-)(\d{8}T\d{4}(?:\d{2})?)Z?(?=-|$)")
_REFRESH_TIMER = "metrics-refresh"
_LIVE_GAUGE_SHARD = re.compile(r"^gauge_live\w*?_(\d+)\.db$")  # gauge_<live mode>_<pid>.db


def version_time(version: str) -> float | None:
    """UNIX seconds of the time a model version names (see ``_VERSION_TS``), None without one."""
    match = _VERSION_TS.search(version)
    if match is None:
        return None
    stamp = match.group(1)
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%S" if len(stamp) == 15 else "%Y%m%dT%H%M")
    except ValueError:  # digits in the shape of a time that is none (month 13)
        return None
    return when.replace(tzinfo=UTC).timestamp()


class MetricsExporterConfig(ActorConfig, frozen=True):
    """
    Configuration for ``MetricsExporter``.

    Parameters
    ----------
    host : str
        Interface the HTTP server binds to (loopback by default: put a proxy in front to expose).
        Anything but a loopback address needs ``allow_remote=True`` and logs a warning.
    allow_remote : bool
        Explicit opt-in to bind a non-loopback interface (metrics reveal positions and PnL).
    port : int
        HTTP port; 0 serves nothing (backtests: use ``render()``).
    venue : str
        The venue whose account and positions the portfolio gauges report; also their label.
    stale_after_secs : float
        ``/readyz`` answers 503 when no ``RegimeUpdate`` arrived for this long (wall clock).
    refresh_interval_secs : float
        Period of the portfolio/exposure refresh timer (node clock: simulated in a backtest).
    multiprocess_dir : str, optional
        prometheus_client multiprocess directory; else ``$PROMETHEUS_MULTIPROC_DIR``; else off.
    max_pending_orders : int
        Bound of the submitted-but-not-acknowledged order table used for the latency histogram.
    max_label_values : int
        Distinct values allowed per label (strategy, instrument, ...); extra ones map to "other".

    """

    host: str = "127.0.0.1"
    port: int = 9464
    allow_remote: bool = False
    serve: str = "auto"  # auto: serve HTTP only in a live/paper node (not in a backtest)
    venue: str = "BINANCE"
    stale_after_secs: float = 300.0
    refresh_interval_secs: float = 5.0
    multiprocess_dir: str | None = None
    max_pending_orders: int = 10_000
    max_label_values: int = 64

    def __post_init__(self) -> None:  # when the node config loads, not when the node starts
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, was {self.port}")
        check_listen_host(self.host, self.allow_remote, what="host", allow="set allow_remote: true")
        if self.serve not in ("auto", "always", "never"):
            raise ValueError(f"serve must be auto, always or never, was {self.serve!r}")
        if not self.stale_after_secs > 0:
            raise ValueError(f"stale_after_secs must be > 0, was {self.stale_after_secs}")
        if not self.refresh_interval_secs > 0:
            raise ValueError(f"refresh_interval_secs must be > 0, was {self.refresh_interval_secs}")
        if self.max_pending_orders < 1 or self.max_label_values < 1:
            raise ValueError("max_pending_orders and max_label_values must be >= 1")
        if not _SAFE_LABEL.match(self.venue):
            raise ValueError(f"venue must match {_SAFE_LABEL.pattern}, was {self.venue!r}")


def rejection_reason(text: str) -> str:
    """The ``orders_rejected_total`` reason class of a venue's free-text rejection reason."""
    if text == TIMEOUT_REASON:
        return "timeout"
    match = _VENUE_CODE.search(text)
    if match and int(match.group(1)) in _CODE_REASONS:
        return _CODE_REASONS[int(match.group(1))]
    if _HTTP_429.search(text):
        return "rate_limit"
    lower = text.lower()
    return next((reason for word, reason in _REASON_WORDS if word in lower), "other")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retire_dead_processes(path: str | os.PathLike[str]) -> list[int]:
    """``mark_process_dead`` every process that left live-gauge shards and is gone; their pids.

    Only live-gauge shards go: counter and histogram shards of dead processes stay, so the sums
    never drop (a drop would read as a counter reset and inflate ``increase()``). This process's
    own pid is kept. Two processes may retire the same pid at once: a file already gone is fine.
    """
    dead: set[int] = set()
    for name in os.listdir(path):
        match = _LIVE_GAUGE_SHARD.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            dead.add(pid)
    for pid in sorted(dead):
        _mark_dead(pid, os.fspath(path))
    return sorted(dead)


def _mark_dead(pid: int, path: str) -> None:
    for _ in range(3):  # mark_process_dead globs then removes: another process may be faster
        try:
            mark_process_dead(pid, path)
            return
        except FileNotFoundError:
            continue


def _enable_multiprocess(path: str) -> None:
    """Switch prometheus_client to mmap-backed values for this process (process-wide)."""
    if not Path(path).is_dir():
        raise ValueError(f"multiprocess_dir {path!r} is not an existing directory")
    if getattr(prom_values.ValueClass, "_multiprocess", False):
        active = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        if active and Path(active).resolve() != Path(path).resolve():
            raise ValueError(
                f"multiprocess_dir {path!r} differs from PROMETHEUS_MULTIPROC_DIR {active!r} "
                "already in use by this process"
            )
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # No value of this process exists yet, so live-gauge shards under our pid are a previous
    # process's (pid reuse, e.g. pid 1 in a container): they must not pass for ours.
    _mark_dead(os.getpid(), path)
    prom_values.ValueClass = prom_values.MultiProcessValue()


class _LabelCap:
    """Caps the distinct values of one label so a bug upstream cannot explode the series count."""

    def __init__(self, limit: int, on_overflow: Callable[[str], None]) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._on_overflow = on_overflow

    def __call__(self, value: object) -> str:
        text = str(value)
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit or not _SAFE_LABEL.match(text):
            self._on_overflow(text)
            return "other"
        self._seen.add(text)
        return text


class MetricsExporter(Actor):
    """Export order flow, latency, PnL, exposure, equity, regime and governance metrics."""

    def __init__(self, config: MetricsExporterConfig | None = None) -> None:
        config = config or MetricsExporterConfig()
        super().__init__(config)

        self._mp_dir = config.multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self._mp_dir:
            _enable_multiprocess(self._mp_dir)
        self._registry = CollectorRegistry(auto_describe=False)
        if self._mp_dir:
            MultiProcessCollector(self._registry, path=self._mp_dir)
        self._build_metrics(None if self._mp_dir else self._registry)

        self._venue = config.venue
        self._strategy_label = _LabelCap(config.max_label_values, self._label_overflow)
        self._instrument_label = _LabelCap(config.max_label_values, self._label_overflow)
        self._pending: OrderedDict[str, int] = OrderedDict()  # client order id -> submit ts (ns)
        self._order_keys: set[tuple[str, str]] = set()
        self._hmm_strategies: set[str] = set()
        self._n_states: dict[tuple[str, str], int] = {}
        self._model: dict[tuple[str, str], tuple[str, float]] = {}  # -> (version, created s)
        self._cycles = PositionCycles()  # realized USD per position cycle
        self._realized: dict[tuple[str, str, str], float] = {}  # (venue, strategy, instr) -> USD
        self._exposure_keys: set[tuple[str, str]] = set()
        self._last_update_mono: float | None = None
        self._unsaved: dict[str, str] = {}  # strategy -> error of its failing checkpoint writes
        self._warned: set[str] = set()
        self._server: MetricsHTTPServer | None = None
        self._live = True  # on start: is the node clock live (until then, no backtest refresh)
        self._marked_dead = False  # multiprocess: on_stop removed this process's gauge shards
        self._bar_watchers: dict[str, list[tuple[str, str]]] = {}  # bar type -> (strategy, instr)
        self._bar_gauges: dict = {}  # a bar's BarType -> the last_bar children it updates
        # backtest without a server: RegimeUpdates per strategy/instrument, written into the
        # gauges when read (render, stop) instead of on every bar; None: written at once
        self._deferred: dict[tuple[str, str], list[RegimeUpdate]] | None = None
        self._started_ns = 0  # clock time at start: the staleness gauges' zero

    # -- metrics ---------------------------------------------------------------------------------

    def _build_metrics(self, registry: CollectorRegistry | None) -> None:
        def gauge(name: str, doc: str, labels: tuple[str, ...], mode: str = "livemostrecent"):
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        vs = ("venue", "strategy")
        vsi = ("venue", "strategy", "instrument")
        si = ("strategy", "instrument")
        self.orders_submitted = Counter(
            "orders_submitted_total", "Orders submitted to the venue.", vs, registry=registry
        )
        self.orders_rejected = Counter(
            "orders_rejected_total",
            "Orders rejected by the venue, by reason class (see REJECT_REASONS).",
            (*vs, "reason"),
            registry=registry,
        )
        self.orders_denied = Counter(
            "orders_denied_total",
            "Orders denied before submission (risk engine).",
            vs,
            registry=registry,
        )
        self.order_fills = Counter(
            "order_fills_total",
            "Order fill events (partial fills count each).",
            vs,
            registry=registry,
        )
        self.venue_faults = Counter(
            "venue_faults_total",
            "Venue faults survived: order_timeout (no answer, resolved by the in-flight check), "
            "order_rejected, data_gap (bars that never arrived).",
            ("venue", "strategy", "kind"),
            registry=registry,
        )
        self.breaker_rejections = Counter(
            "breaker_rejections_total",
            "Orders (or moves) a tripped or per-order circuit breaker blocked.",
            ("strategy", "reason"),
            registry=registry,
        )
        self.breaker_trips = Counter(
            "breaker_trips_total",
            "Circuit-breaker trips (one per trip, however many orders it then blocks).",
            ("strategy", "reason"),
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "checkpoint_write_failures_total",
            "Strategy checkpoint writes that failed (full or read-only state folder); /readyz "
            "fails until a write succeeds again.",
            ("strategy",),
            registry=registry,
        )
        self.submit_to_ack = Histogram(
            "submit_to_ack_ms",
            "Order submitted -> first venue acknowledgement (accepted, else first fill), ms, "
            "as the node saw them (wall clock live; node clock in a backtest).",
            vs,
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.pnl_realized = gauge(
            "pnl_realized_total", "Realized PnL incl. commissions since exporter start, USD.", vsi
        )
        self.pnl_unrealized = gauge(
            "pnl_unrealized_total", "Unrealized PnL of open positions, USD.", vsi
        )
        self.exposure = gauge("exposure_usd", "Signed net position notional, USD.", vsi)
        self.equity = gauge(
            "portfolio_equity_usd",
            "Account equity, USD: balances (+ unrealized PnL for margin accounts).",
            ("venue",),
        )
        self.exposure_refresh = gauge(
            "ops_exposure_last_refresh_epoch",
            "Node-clock UNIX seconds of the last successful PnL/exposure refresh.",
            ("venue",),
            mode="livemin",
        )
        self.portfolio_refresh = gauge(
            "ops_portfolio_last_refresh_epoch",
            "Node-clock UNIX seconds of the last successful equity refresh.",
            ("venue",),
            mode="livemin",
        )
        self.regime_probability = gauge(
            "regime_probability",
            "Filtered HMM state probability at the last bar.",
            (*si, "hmm_state"),
        )
        self.regime_state = gauge("regime_state", "Most likely HMM state at the last bar.", si)
        self.target_exposure = gauge(
            "target_exposure", "Policy target exposure in [-1, 1] at the last bar.", si
        )
        self.model_info = gauge(
            "model_info", "Model version in use (value 1).", (*si, "model_version")
        )
        self.model_age = gauge(
            "model_age_seconds",
            "Event time minus the time in the model's version (else when first seen).",
            si,
        )
        self.bar_interval = gauge(
            "strategy_bar_interval_seconds",
            "The bar interval of the strategy's bar type (what 'stale' is measured in).",
            si,
        )
        self.last_bar = gauge(
            "market_data_last_bar_epoch",
            "Node-clock UNIX seconds when the strategy's last bar arrived (start time until the "
            "first one).",
            si,
        )
        self.last_regime = gauge(
            "regime_last_update_epoch",
            "Node-clock UNIX seconds of the strategy's last RegimeUpdate (none during warm-up).",
            si,
        )
        self.governance_state = gauge(
            "strategy_governance_state",
            "Governance state (active/throttled/paused), one-hot.",
            ("strategy", "state"),
        )
        self.allocation = gauge(
            "strategy_allocation_notional", "Allocator budget, quote currency.", ("strategy",)
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric of this exporter.

        Multiprocess mode: another process starting may delete a dead process's shard between
        the collector's listing and its read (prometheus_client then raises); read again.
        """
        if self._mp_dir:
            retire_dead_processes(self._mp_dir)  # a process killed -9 never marked itself dead
        if self._refresh_on_read():
            self._flush_regime_updates()
            self.refresh()
        for _ in range(3):
            try:
                return generate_latest(self._registry)
            except FileNotFoundError:
                continue
        return generate_latest(self._registry)

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``: running and a ``RegimeUpdate`` within ``stale_after_secs``."""
        if not self.is_running:
            return False, "not running"
        if self._unsaved:
            return False, "checkpoint writes failing"
        last = self._last_update_mono
        if last is None:
            return False, "no data yet"
        age = time.monotonic() - last
        if age > self.config.stale_after_secs:
            return False, f"stale: last update {age:.1f}s ago"
        return True, "ready"

    # -- lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        if self._mp_dir:
            if self._marked_dead:  # restarted in this process: our gauge shards were removed
                self._reopen_shards()
            dead = retire_dead_processes(self._mp_dir)
            if dead:
                self.log.info(f"Dropped the gauges of {len(dead)} dead process(es)")
        self._live = isinstance(self.clock, LiveClock)
        self._started_ns = self.clock.timestamp_ns()
        self._zero_initialise()
        self.msgbus.subscribe("events.order.*", self.on_order_event)
        self.msgbus.subscribe("events.position.*", self.on_position_event)
        self.msgbus.subscribe(f"{REGIME_TOPIC}.*", self.on_regime_update)
        self.msgbus.subscribe(f"{BUDGET_TOPIC}.*", self.on_budget)
        self.msgbus.subscribe(f"{GOVERNANCE_TOPIC}.*", self.on_governance)
        self.msgbus.subscribe(f"{BREAKER_TOPIC}.*", self.on_breaker_rejection)
        self.msgbus.subscribe(f"{BREAKER_TRIP_TOPIC}.*", self.on_breaker_trip)
        self.msgbus.subscribe(f"{FEED_TOPIC}.*", self.on_data_gap)
        self.msgbus.subscribe(f"{STATE_TOPIC}.*", self.on_checkpoint_write)
        self._last_refresh_ns = 0
        if self._live:  # a backtest refreshes from its data instead (see _maybe_refresh)
            set_loop_timer(
                self.clock,
                _REFRESH_TIMER,
                timedelta(seconds=self.config.refresh_interval_secs),
                self._on_refresh_timer,
            )
        if self._should_serve():
            self._server = MetricsHTTPServer(
                self.config.host, self.config.port, self.render, self.readiness
            )
            port = self._server.start()
            self.log.info(f"Serving metrics on http://{self.config.host}:{port}/metrics")
            if not is_loopback(self.config.host):
                self.log.warning(
                    f"Metrics are served on a non-loopback interface ({self.config.host}): "
                    "reachable from other machines (allow_remote is set)"
                )
        if not self._live and self._server is None:
            self._deferred = {}  # and the last-bar gauges come from the cache when read
        else:
            self.msgbus.subscribe("data.bars.*", self.on_bar_data)  # passive: requests nothing

    def _should_serve(self) -> bool:
        """The same actor config serves backtest and live: only a live clock serves HTTP."""
        if not self.config.port or self.config.serve == "never":
            return False
        return self.config.serve == "always" or isinstance(self.clock, LiveClock)

    def on_stop(self) -> None:
        if _REFRESH_TIMER in self.clock.timer_names:
            self.clock.cancel_timer(_REFRESH_TIMER)
        if self.msgbus.is_subscribed("data.bars.*", self.on_bar_data):
            self.msgbus.unsubscribe("data.bars.*", self.on_bar_data)
        self._flush_regime_updates()
        self._deferred = None
        self.refresh()
        self._stop_server()
        if self._mp_dir:  # a stopped node's gauges leave the totals; its counters stay
            _mark_dead(os.getpid(), self._mp_dir)
            self._marked_dead = True

    def _reopen_shards(self) -> None:
        """Start again after ``on_stop`` marked this process dead: fresh gauge shards (counter
        values are read back from their shards, so they continue)."""
        prom_values.ValueClass = prom_values.MultiProcessValue()
        self._build_metrics(None)
        for keys in (self._order_keys, self._hmm_strategies, self._exposure_keys):
            keys.clear()
        self._bar_watchers.clear()
        self._bar_gauges.clear()
        self._n_states.clear()
        self._model.clear()
        self._marked_dead = False

    def _zero_initialise(self) -> None:
        """Every series of the strategies registered on this node exists from the first scrape
        (0, or "active"), so dashboards and ``rate()``/``absent()`` work before any event."""
        self._bar_watchers.clear()
        self._bar_gauges.clear()
        for strategy in self._registered_strategies():
            sid = self._strategy_label(strategy.id.value)
            if hasattr(strategy, "breakers"):  # ours: governed and guarded by breakers
                self._seen_hmm_strategy(sid)
            self._watch_bars(sid, getattr(strategy, "config", None))
            instrument = getattr(getattr(strategy, "config", None), "instrument_id", None)
            if instrument is None:
                self._order_labels_for(self._venue, sid)
                continue
            self._order_labels_for(self._venue_label(str(instrument).rsplit(".", 1)[-1]), sid)
            key = (sid, self._instrument_label(str(instrument)))
            self._realized.setdefault((self._venue, *key), 0.0)
            self.pnl_realized.labels(self._venue, *key).set(self._realized[(self._venue, *key)])
            self.pnl_unrealized.labels(self._venue, *key).set(0.0)
            self.exposure.labels(self._venue, *key).set(0.0)
            self._exposure_keys.add(key)

    def _watch_bars(self, strategy: str, config) -> None:
        """Staleness series for the strategy's bar type: its interval, and the last bar's arrival
        starting at the start time (so "no bar since start" goes stale too)."""
        bar_type = getattr(config, "bar_type", None)
        if bar_type is None or not hasattr(bar_type, "spec"):
            return
        key = (strategy, self._instrument_label(str(bar_type.instrument_id)))
        topic_type = str(bar_type.standard())  # what the data engine publishes under
        self._bar_watchers.setdefault(topic_type, []).append(key)
        self.bar_interval.labels(*key).set(bar_type.spec.timedelta.total_seconds())
        self.last_bar.labels(*key).set(self.clock.timestamp())

    def _registered_strategies(self) -> list:
        """The node's strategies: each subscribes its own ``events.order.<id>`` at registration,
        which happens before any component starts."""
        found = {}
        for sub in self.msgbus.subscriptions("events.order.*"):
            owner = getattr(sub.handler, "__self__", None)
            if owner is not None and owner is not self and "*" not in sub.topic:
                found[sub.topic] = owner
        return [found[t] for t in sorted(found)]

    def on_reset(self) -> None:
        self._pending.clear()
        self._last_update_mono = None

    def on_dispose(self) -> None:
        self._stop_server()

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- order and position events ---------------------------------------------------------------

    def _order_labels(self, event) -> tuple[str, str]:
        venue = self._venue_label(event.instrument_id.venue.value)
        return self._order_labels_for(venue, self._strategy_label(event.strategy_id.value))

    def _order_labels_for(self, venue: str, strategy: str) -> tuple[str, str]:
        key = (venue, strategy)
        if key not in self._order_keys:  # zero-initialise so rate() works before the first event
            self._order_keys.add(key)
            for counter in (self.orders_submitted, self.orders_denied, self.order_fills):
                counter.labels(*key)
            for reason in REJECT_REASONS:
                self.orders_rejected.labels(*key, reason)
            for kind in FAULT_KINDS:
                self.venue_faults.labels(*key, kind)
            self.submit_to_ack.labels(*key)
        return key

    def _venue_label(self, venue: str) -> str:
        return venue if _SAFE_LABEL.match(venue) else "other"

    def on_order_event(self, event) -> None:
        labels = self._order_labels(event)
        coid = event.client_order_id.value
        if isinstance(event, OrderSubmitted):
            self.orders_submitted.labels(*labels).inc()
            self._pending[coid] = self._now_ns()
            while len(self._pending) > self.config.max_pending_orders:
                self._pending.popitem(last=False)
        elif isinstance(event, OrderAccepted | OrderFilled):
            submitted = self._pending.pop(coid, None)
            if submitted is not None:
                elapsed_ms = max(0, self._now_ns() - submitted) / 1e6
                self.submit_to_ack.labels(*labels).observe(elapsed_ms)
            if isinstance(event, OrderFilled):
                self.order_fills.labels(*labels).inc()
        elif isinstance(event, OrderRejected):
            self.orders_rejected.labels(*labels, rejection_reason(event.reason)).inc()
            # NautilusTrader resolves an order the venue never answered as rejected "UNKNOWN"
            kind = "order_timeout" if event.reason == TIMEOUT_REASON else "order_rejected"
            self.venue_faults.labels(*labels, kind).inc()
            self._pending.pop(coid, None)
        elif isinstance(event, OrderDenied):
            self.orders_denied.labels(*labels).inc()
        elif isinstance(event, OrderCanceled | OrderExpired):
            self._pending.pop(coid, None)

    def _now_ns(self) -> int:
        """When the node sees an event: the monotonic wall clock live (event timestamps of a
        replay feed carry bar time), the simulated clock in a backtest (its latency model)."""
        return time.monotonic_ns() if self._live else self.clock.timestamp_ns()

    def on_data_gap(self, gap: DataGap) -> None:
        venue = self._venue_label(gap.instrument_id.rsplit(".", 1)[-1])
        self.venue_faults.labels(venue, self._strategy_label(gap.strategy_id), "data_gap").inc()

    def on_position_event(self, event) -> None:
        """Realized PnL from position events (NETTING positions reopen under the same id)."""
        self._maybe_refresh()
        usd = 0.0 if event.realized_pnl is None else self._to_usd(event.realized_pnl)
        if usd is None:
            return
        pid = event.position_id.value
        key = (
            self._venue_label(event.instrument_id.venue.value),
            self._strategy_label(event.strategy_id.value),
            self._instrument_label(event.instrument_id.value),
        )
        delta = self._cycles.increment(pid, usd, opened=isinstance(event, PositionOpened))
        self._realized[key] = self._realized.get(key, 0.0) + delta
        self.pnl_realized.labels(*key).set(self._realized[key])

    # -- strategy / governance messages ----------------------------------------------------------

    def _seen_hmm_strategy(self, strategy: str) -> None:
        if strategy in self._hmm_strategies:
            return
        self._hmm_strategies.add(strategy)
        for state in GOVERNANCE_STATES:  # a strategy starts active until governance says otherwise
            self.governance_state.labels(strategy, state).set(1.0 if state == "active" else 0.0)
        for reason in BREAKER_LABELS:
            self.breaker_rejections.labels(strategy, reason)
            self.breaker_trips.labels(strategy, reason)
        self.checkpoint_failures.labels(strategy)

    def on_regime_update(self, update: RegimeUpdate) -> None:
        if self._deferred is not None:  # backtest without a server: written when read
            runs = self._deferred.setdefault((update.strategy_id, update.instrument_id), [])
            same = [u.model_version == update.model_version for u in runs[-2:]]
            if same == [True, True]:
                runs[-1] = update  # the last of this model version so far
            else:
                runs.append(update)  # the first (model age) or the last of a model version
            return
        self._maybe_refresh()
        strategy = self._strategy_label(update.strategy_id)
        instrument = self._instrument_label(update.instrument_id)
        self._seen_hmm_strategy(strategy)
        key = (strategy, instrument)
        probs = update.probs[:MAX_STATES]
        for k, p in enumerate(probs):
            self.regime_probability.labels(strategy, instrument, str(k)).set(p)
        for k in range(len(probs), self._n_states.get(key, 0)):  # a smaller model replaced it
            self._drop(self.regime_probability, (strategy, instrument, str(k)))
        self._n_states[key] = len(probs)
        self.regime_state.labels(*key).set(update.state)
        self.last_regime.labels(*key).set(self.clock.timestamp())
        self.target_exposure.labels(*key).set(update.target_exposure)
        self._update_model(key, update)
        self._last_update_mono = time.monotonic()

    def on_bar_data(self, bar) -> None:
        # a live node or a served backtest, every bar: the labelled children are looked up once
        # per bar type, not per bar (an unserved backtest reads the cache instead)
        gauges = self._bar_gauges.get(bar.bar_type)
        if gauges is None:
            watchers = self._bar_watchers.get(str(bar.bar_type.standard()), ())
            gauges = self._bar_gauges[bar.bar_type] = [self.last_bar.labels(*k) for k in watchers]
        if gauges:
            now = self.clock.timestamp()
            for gauge in gauges:
                gauge.set(now)

    def _update_model(self, key: tuple[str, str], update: RegimeUpdate) -> None:
        version = (update.model_version or "none")[:64]
        now = update.ts_event / 1e9
        current = self._model.get(key)
        if current is None or current[0] != version:
            if current is not None:
                self._drop(self.model_info, (*key, current[0]))
            created = version_time(version)
            current = self._model[key] = (version, now if created is None else created)
            self.model_info.labels(*key, version).set(1.0)
        self.model_age.labels(*key).set(max(0.0, now - current[1]))

    def _drop(self, metric: Gauge, labels: tuple[str, ...]) -> None:
        # In multiprocess mode the shard keeps the series, so zero it before forgetting it.
        try:
            metric.labels(*labels).set(0.0)
            metric.remove(*labels)
        except KeyError:
            pass

    def on_budget(self, budget: Budget) -> None:
        strategy = self._strategy_label(budget.strategy_id)
        self._seen_hmm_strategy(strategy)
        self.allocation.labels(strategy).set(budget.notional)

    def on_governance(self, command: GovernanceCommand) -> None:
        strategy = self._strategy_label(command.strategy_id)
        self._seen_hmm_strategy(strategy)
        state = ACTION_TO_STATE.get(command.action)
        if state is None:
            self._warn_once(f"gov:{command.action}", f"Unknown governance {command.action!r}")
            return
        for s in GOVERNANCE_STATES:
            self.governance_state.labels(strategy, s).set(1.0 if s == state else 0.0)

    def on_breaker_rejection(self, rejection: BreakerRejection) -> None:
        strategy = self._strategy_label(rejection.strategy_id)
        self._seen_hmm_strategy(strategy)
        reason = rejection.reason if rejection.reason in BREAKER_LABELS else "other"
        self.breaker_rejections.labels(strategy, reason).inc()

    def on_breaker_trip(self, trip: BreakerTrip) -> None:
        strategy = self._strategy_label(trip.strategy_id)
        self._seen_hmm_strategy(strategy)
        reason = trip.reason if trip.reason in BREAKER_LABELS else "other"
        self.breaker_trips.labels(strategy, reason).inc()

    def on_checkpoint_write(self, result: CheckpointWrite) -> None:
        strategy = self._strategy_label(result.strategy_id)
        self._seen_hmm_strategy(strategy)
        if result.ok:
            self._unsaved.pop(strategy, None)
            return
        self.checkpoint_failures.labels(strategy).inc()
        self._unsaved[strategy] = result.error

    # -- portfolio refresh -----------------------------------------------------------------------

    def _on_refresh_timer(self, _event) -> None:
        self.refresh()

    def _flush_regime_updates(self) -> None:
        """Write the deferred ``RegimeUpdate``s into the gauges: per strategy/instrument the
        first and last of each model version (the gauges hold the last values, the model age
        counts from a version's first update), not every bar's."""
        pending, self._deferred = self._deferred, None
        for runs in (pending or {}).values():
            for update in runs:
                self.on_regime_update(update)
        self._deferred = {} if pending is not None else None
        if pending is not None:
            self._flush_last_bars()

    def _flush_last_bars(self) -> None:
        """Backtest without a server: each staleness gauge is the arrival of its bar type's newest
        bar since the start, read from the cache when the metrics are read (a simulated clock
        handles a bar at its ``ts_init``: the value a write per bar leaves), not a gauge write per
        bar. The newest, not ``cache.bar()``: that is the last one *added*, and the bars of a
        history request are added too (older ones, never published on the live topic)."""
        last: dict[str, int] = {}
        for bar_type in self.cache.bar_types():
            key = str(bar_type.standard())  # what the data engine publishes under
            if key not in self._bar_watchers:
                continue
            for bar in self.cache.bars(bar_type):
                if bar.ts_init >= self._started_ns and bar.ts_init > last.get(key, -1):
                    last[key] = bar.ts_init
        for key, ts in last.items():
            for labels in self._bar_watchers[key]:
                self.last_bar.labels(*labels).set(ts / 1e9)

    def _refresh_on_read(self) -> bool:
        """A backtest without an HTTP server refreshes when ``render()`` reads the metrics (and
        at stop): the values are recomputed from the cache, not accumulated, so a reader sees
        what a refresh on every bar would have shown, at none of its cost per bar."""
        return not getattr(self, "_live", True) and self._server is None and self.is_running

    def _maybe_refresh(self) -> None:
        """Backtest served over HTTP: refresh at most once per ``refresh_interval_secs`` of
        simulated time, driven by events, because a timer would fire hundreds of times per bar on
        a simulated clock. Without a server a backtest refreshes when read instead."""
        if getattr(self, "_live", True) or self._server is None:
            return
        now = self.clock.timestamp_ns()
        if now - self._last_refresh_ns >= self.config.refresh_interval_secs * 1e9:
            self._last_refresh_ns = now
            self.refresh()

    def refresh(self) -> None:
        """Recompute unrealized PnL, exposure and equity from the cache/portfolio now."""
        now = self.clock.timestamp()
        venue = Venue(self._venue)
        try:
            self._refresh_positions(venue)
        except Exception as exc:
            self.log.error(f"Exposure refresh failed: {type(exc).__name__}: {exc}")
        else:
            self.exposure_refresh.labels(self._venue).set(now)
        try:
            refreshed = self._refresh_equity(venue)
        except Exception as exc:
            self.log.error(f"Portfolio refresh failed: {type(exc).__name__}: {exc}")
        else:
            if refreshed:
                self.portfolio_refresh.labels(self._venue).set(now)

    def _to_usd(self, money) -> float | None:
        """Money -> USD float; USD/USDT/USDC are USD, others priced against a USD-like quote."""
        usd = convert(self.cache, money, USD_LIKE, Venue(self._venue))
        if usd is None and money is not None:
            code = money.currency.code
            self._warn_once(f"ccy:{code}", f"No USD price for {code}; its amounts are left out")
        return usd

    def _refresh_positions(self, venue: Venue) -> None:
        totals: dict[tuple[str, str], list[float]] = {}  # -> [unrealized, exposure]
        for position in self.cache.positions_open(venue=venue):
            key = (
                self._strategy_label(position.strategy_id.value),
                self._instrument_label(position.instrument_id.value),
            )
            acc = totals.setdefault(key, [0.0, 0.0])
            price = last_price(self.cache, position.instrument_id)
            if price is None:
                self._warn_once(f"px:{position.instrument_id}", "No price for open position")
                continue
            unrealized = self._to_usd(position.unrealized_pnl(price))
            notional = self._to_usd(position.notional_value(price))
            if unrealized is not None:
                acc[0] += unrealized
            if notional is not None:
                acc[1] += notional if position.signed_qty >= 0 else -notional
        for key in self._exposure_keys - totals.keys():  # flat now
            totals[key] = [0.0, 0.0]
        for key, (unrealized, exposure) in totals.items():
            self.pnl_unrealized.labels(self._venue, *key).set(unrealized)
            self.exposure.labels(self._venue, *key).set(exposure)
        self._exposure_keys |= totals.keys()

    def _refresh_equity(self, venue: Venue) -> bool:
        equity = account_equity(self.portfolio, self.cache, venue, self._to_usd)
        if equity is None:
            return False
        self.equity.labels(self._venue).set(equity)
        return True

    def _label_overflow(self, _value: str) -> None:
        self._warn_once("labels", "Label value not allowed or over max_label_values: 'other'")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(message)
