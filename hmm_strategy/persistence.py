"""The strategy's state, beside the checkpoint files: snapshot, restore and the writes.

``StrategyPersistence`` is mixed into ``HMMRegimeStrategy``: everything needed to resume (engine,
breakers, P&L, allocation, the last plan) as plain JSON data, restored all or nothing; the
crash-safe checkpoint written on a timer (live; encoded on the event loop, written and fsynced
on a worker thread) and NautilusTrader's ``on_save``/``on_load``
(Redis cache database, on a clean stop) carry the same document.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from hmm_strategy.artifacts import load_model, save_model
from hmm_strategy.atomic import atomic_write
from hmm_strategy.checkpoint import (
    CheckpointError,
    encode_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_aside,
)
from hmm_strategy.messages import STATE_TOPIC, CheckpointWrite, topic_for
from hmm_strategy.risk import CircuitBreakers, PnLTracker


class StrategyPersistence:
    """Snapshot/restore and checkpoint writes of ``HMMRegimeStrategy`` (a mixin: it uses the
    strategy's engine, breakers, P&L, config and checkpoint path)."""

    def on_save(self) -> dict[str, bytes]:
        """NautilusTrader's own persistence (Redis cache database, on a clean stop)."""
        if self.engine is None:
            return {}
        return {"hmm": json.dumps(self.snapshot(embed_model=True), allow_nan=False).encode()}

    def on_load(self, state: dict[str, bytes]) -> None:
        if "hmm" not in state:
            return
        self.restore(json.loads(state["hmm"]))
        self.log.info(f"Restored from the cache database at bar {self.engine.bars_seen}")

    def snapshot(self, *, embed_model: bool = False) -> dict:
        """All state needed to resume: engine, breakers, P&L, allocation, the last plan."""
        engine = self.engine
        model_file = None
        if engine.model is not None and not embed_model and self._checkpoint is not None:
            model_file = str(self._checkpoint.with_suffix(".model.json"))
            if self._saved_model_version != engine.model_version:
                self._save_model(model_file)
        model_doc = slow_doc = None
        if engine.model is not None and embed_model:
            model_doc = engine.model.fitted_params()
        if engine.slow_model is not None and embed_model:
            slow_doc = engine.slow_model.fitted_params()
        return {
            "instrument_id": str(self.config.instrument_id),
            "bar_type": str(self.config.bar_type),
            "data_source": self.config.data_source,
            "engine": engine.state(),
            "model_file": model_file,
            "model": model_doc,
            "slow_model": slow_doc,
            "breakers": self.breakers.state(),
            "pnl": self.pnl.state(),
            "budget": self.budget,
            "scale": self.scale,
            "paused": self.paused,
            "last_plan": self._last_plan,
            "last_bar_ts": self._last_bar_ts,
            "prev_close": self._prev_close,
        }

    def restore(self, state: dict) -> None:
        """All or nothing: every field is parsed into new objects first, and the strategy's state
        changes only once the whole checkpoint is known good."""
        cfg = self.config
        if (state["instrument_id"], state["bar_type"]) != (
            str(cfg.instrument_id),
            str(cfg.bar_type),
        ):
            raise CheckpointError(
                f"checkpoint is for {state['instrument_id']} {state['bar_type']}, "
                f"not {cfg.instrument_id} {cfg.bar_type}"
            )
        if state.get("data_source") != cfg.data_source:
            raise CheckpointError(
                f"checkpoint was written on data source {state.get('data_source')!r}, "
                f"this node reads {cfg.data_source!r}"
            )
        model = slow_model = None
        saved_version = ""
        if state.get("model_file"):
            expected = self.expected_model()
            slow_state = state["engine"].get("slow") or {}
            if expected.slow is not None and slow_state.get("filter") is None:
                expected = msgspec.structs.replace(expected, slow=None)  # slow level warming up
            model, meta = load_model(state["model_file"], expected=expected)
            slow_model = meta.slow.model if meta.slow is not None else None
            saved_version = state["engine"]["model_version"]
        elif state.get("model"):
            from hmm_strategy.model import RegimeHMM

            model = RegimeHMM.from_params(**state["model"])
            if state.get("slow_model"):
                slow_model = RegimeHMM.from_params(**state["slow_model"])
        engine = self._new_engine()
        engine.restore(state["engine"], model, slow_model)
        breakers = CircuitBreakers(cfg.breakers)
        breakers.restore(state["breakers"])
        pnl = PnLTracker()
        pnl.restore(state["pnl"])
        budget, scale = float(state["budget"]), float(state["scale"])
        paused = bool(state["paused"])
        plan = state["last_plan"]
        last_plan = (float(plan[0]), float(plan[1])) if plan is not None else None
        last_bar_ts, prev_close = int(state["last_bar_ts"]), float(state["prev_close"])
        if not all(map(math.isfinite, (budget, scale, prev_close))):
            raise CheckpointError("checkpoint holds a non-finite budget, scale or price")
        self.engine, self.breakers, self.pnl = engine, breakers, pnl
        self.budget, self.scale, self.paused, self._last_plan = budget, scale, paused, last_plan
        self._last_bar_ts, self._prev_close = last_bar_ts, prev_close
        self._saved_model_version = saved_version

    @property
    def checkpoint_failed(self) -> bool:
        """The last checkpoint write failed: the state is not saved."""
        return self._checkpoint_failures > 0

    def write_checkpoint(self) -> None:
        """Save the state now (stop, tests), after any write still in flight; a failure (full
        disk, read-only folder) is logged, counted and published (the exporter fails
        ``/readyz``), never raised into the trading path."""
        self._collect_checkpoint_write(wait=True)
        if self._checkpoint is None or self.engine is None:
            return
        try:
            save_checkpoint(self._checkpoint, self.snapshot())
        except (OSError, ValueError) as exc:
            self._account_checkpoint_write(exc)
        else:
            self._account_checkpoint_write(None)

    def write_checkpoint_in_background(self) -> None:
        """The timer's write: the state is captured and encoded here, on the event loop (so it
        is consistent), and written + fsynced on a worker thread (so a slow disk never delays a
        bar). A write still in flight makes this tick a no-op: the next one carries newer state.
        Its outcome is accounted for at the next tick or at stop."""
        if not self._collect_checkpoint_write(wait=False):
            return
        if self._checkpoint is None or self.engine is None:
            return
        try:
            data = encode_checkpoint(self.snapshot())
        except ValueError as exc:
            self._account_checkpoint_write(exc)
            return
        if self._checkpoint_writer is None:
            self._checkpoint_writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._checkpoint_future = self._checkpoint_writer.submit(
            _write_or_error, self._checkpoint, data
        )

    def stop_checkpoint_writer(self) -> None:
        """Account for the write in flight and end the worker thread (after the final write)."""
        self._collect_checkpoint_write(wait=True)
        if self._checkpoint_writer is not None:
            self._checkpoint_writer.shutdown(wait=True)
            self._checkpoint_writer = None

    def _collect_checkpoint_write(self, *, wait: bool) -> bool:
        """Account for a finished background write; False while one is still running."""
        future = self._checkpoint_future
        if future is None:
            return True
        if not wait and not future.done():
            return False
        self._checkpoint_future = None
        self._account_checkpoint_write(future.result())
        return True

    def _account_checkpoint_write(self, exc: Exception | None) -> None:
        if exc is not None:
            self._checkpoint_failures += 1  # failures in a row
            n = self._checkpoint_failures
            if n & (n - 1) == 0:
                self.log.error(f"Checkpoint write failed ({n}x): {self._checkpoint}: {exc}")
            self._publish_checkpoint_write(False, str(exc))
            return
        if self.checkpoint_failed:
            self.log.warning(f"Checkpoint writes work again ({self._checkpoint})")
            self._checkpoint_failures = 0
            self._publish_checkpoint_write(True, "")

    def _publish_checkpoint_write(self, ok: bool, error: str) -> None:
        self.msgbus.publish(
            topic_for(STATE_TOPIC, self._sid),
            CheckpointWrite(self.clock.timestamp_ns(), self._sid, ok, error[:200]),
        )

    def _save_model(self, path: str) -> None:
        engine = self.engine
        save_model(
            engine.model,
            path,
            feature_spec=self.config.features,
            data_range=(0, max(self._last_bar_ts, 1)),
            instrument_id=str(self.config.instrument_id),
            bar_type=str(self.config.bar_type),
            version=engine.model_version,
            slow=None
            if engine.slow_model is None
            else (engine.slow_model, self.config.slow.bars_per_bar, self.config.slow.features),
        )
        self._saved_model_version = engine.model_version

    def _resume_from_checkpoint(self) -> None:
        try:
            state = load_checkpoint(self._checkpoint)
            if state is None:
                return
            self.restore(state)  # all or nothing: a rejected checkpoint leaves no field behind
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            aside = set_aside(self._checkpoint) if self._checkpoint.exists() else None
            self.log.error(f"Checkpoint unusable ({exc}); kept as {aside}; starting fresh")
            return
        self.log.warning(
            f"Resumed from checkpoint {self._checkpoint} at bar {self.engine.bars_seen} "
            f"(model {self.engine.model_version or 'warming up'})"
        )


def _write_or_error(path: Path, data: bytes) -> OSError | None:
    """Worker-thread body of a background checkpoint write: the error instead of a raise."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        return exc
    return None
