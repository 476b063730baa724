"""The decision file holds exactly what the strategies published, in order, in a real engine.

A backtest's recorder writes its rows in polars batches (``BATCH_ROWS``), a live one row by row
with the csv module; either way the file must read back to the very floats published, across
batch boundaries, with 2..8 probabilities padded to the ``p0..p7`` columns.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import polars as pl
import pytest
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.trading.strategy import Strategy

from actors.decision_recorder import BATCH_ROWS, COLUMNS, DecisionRecorder, DecisionRecorderConfig
from bench.backtest import make_engine
from bench.data import BAR_TYPE, benchmark_frame, to_bars
from hmm_strategy.messages import MAX_STATES, REGIME_TOPIC, RegimeUpdate, topic_for

# floats the csv module and polars write differently (exponents, subnormals, 17 digits)
AWKWARD = (1e-05, 2.5e-07, 5e-324, 0.30000000000000004, 1.2345678901234568e17, -0.0, 1.0)
ODD_SCORES = {7: math.nan, 9: -math.inf, 11: math.inf}  # log-likelihoods the writers spell apart


def published(n: int) -> list[RegimeUpdate]:
    out = []
    for i in range(n):
        k = 2 + i % (MAX_STATES - 1)  # 2..8 states
        tiny = AWKWARD[i % len(AWKWARD)]
        probs = (tiny, *(1.0 / 3.0 + i * 1e-9 for _ in range(k - 2)), 1.0 - tiny)
        out.append(
            RegimeUpdate(
                ts_event=1_700_000_000_000_000_000 + i,
                strategy_id="HMMRegimeStrategy-001",
                instrument_id="BTCUSDT.BINANCE",
                close=60_000.0 + i / 7.0,
                probs=probs,
                state=k - 1,
                target_exposure=(-1.0, 0.0, 0.5, 1.0)[i % 4],
                model_version=f"v{i // 1000}",
                log_likelihood=ODD_SCORES.get(i % 40, -math.pi * i),
            )
        )
    return out


class PublisherConfig(StrategyConfig, frozen=True):
    bar_type: str = BAR_TYPE


class Publisher(Strategy):
    """Publishes one prepared decision per bar, as the HMM strategy does."""

    def __init__(self, config: PublisherConfig, updates: list[RegimeUpdate]) -> None:
        super().__init__(config)
        self.updates = iter(updates)

    def on_start(self) -> None:
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        update = next(self.updates, None)
        if update is not None:
            self.msgbus.publish(topic_for(REGIME_TOPIC, update.strategy_id), update)


def expected_row(u: RegimeUpdate) -> dict:
    probs = list(u.probs) + [None] * (MAX_STATES - len(u.probs))
    return {
        "ts_event": u.ts_event,
        "strategy_id": u.strategy_id,
        "instrument_id": u.instrument_id,
        "close": u.close,
        "state": u.state,
        "target_exposure": u.target_exposure,
        "model_version": u.model_version,
        "log_likelihood": u.log_likelihood,
        **{f"p{k}": p for k, p in enumerate(probs)},
    }


def nan_as_text(row: dict) -> dict:
    """NaN != NaN: compare it as a word."""
    return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


@pytest.mark.parametrize("n", [0, 3, BATCH_ROWS, 2 * BATCH_ROWS + 5])
def test_a_backtest_writes_every_decision_as_published(tmp_path: Path, n: int) -> None:
    updates = published(n)
    out = tmp_path / "decisions.csv"
    recorder = DecisionRecorder(
        DecisionRecorderConfig(output_path=str(out), events_path=str(tmp_path / "events.csv"))
    )
    bars = to_bars(benchmark_frame(n + 10))
    engine = make_engine(bars, [Publisher(PublisherConfig(), updates)], actors=[recorder])
    engine.run()
    engine.dispose()

    text = out.read_text()
    assert "\r" not in text  # one line ending, the header's as the rows'
    assert text.splitlines()[0] == ",".join(COLUMNS)
    frame = pl.read_csv(out, schema=COLUMNS)
    assert frame.height == n
    rows = frame.to_dicts()
    for got, update in zip(rows, updates, strict=True):
        want = expected_row(update)
        assert nan_as_text(got) == nan_as_text(want), (got, want)
        assert math.copysign(1.0, got["p0"]) == math.copysign(1.0, want["p0"])  # -0.0 stays
    with out.open(newline="") as f:  # the csv module reads the same floats back
        for got, update in zip(list(csv.DictReader(f)), updates, strict=True):
            assert float(got["close"]) == update.close
            assert nan_as_text({"x": float(got["log_likelihood"])}) == nan_as_text(
                {"x": update.log_likelihood}
            )
            assert [float(got[f"p{k}"]) for k in range(len(update.probs))] == list(update.probs)
            assert all(got[f"p{k}"] == "" for k in range(len(update.probs), MAX_STATES))
