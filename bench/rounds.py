"""Interleaved rounds: the estimator every ratio of the benchmark uses on a shared machine."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any


def least_of_rounds(
    jobs: Sequence[tuple[str, Callable[[], dict[str, Any]]]], rounds: int
) -> list[dict[str, Any]]:
    """Run every ``(label, run)`` once per round, in turn, ``rounds`` times; keep each label's
    run with the least ``cpu_seconds``.

    A burst of load from another process then hits every side of a ratio alike, and the least
    of N is the run least disturbed (the same estimator for every side). Each kept run gets
    ``rounds``, every round's us/bar (``us_per_bar_runs``, in order) and their median.
    """
    rounds = max(rounds, 1)
    best: dict[str, dict[str, Any]] = {}
    per_round: dict[str, list[float]] = {label: [] for label, _ in jobs}
    for _ in range(rounds):
        for label, run in jobs:
            result = run()
            per_round[label].append(result["cpu_seconds"] / result["bars"] * 1e6)
            if label not in best or result["cpu_seconds"] < best[label]["cpu_seconds"]:
                best[label] = result
    out = [best[label] for label, _ in jobs]
    for (label, _), result in zip(jobs, out, strict=True):
        result["rounds"] = rounds
        result["us_per_bar_runs"] = per_round[label]
        result["median_us_per_bar"] = statistics.median(per_round[label])
    return out


def median_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median over the rounds of ``a``'s us/bar over ``b``'s in the same round (a round's runs
    went back to back; the least CPU times of two runs may come from different rounds)."""
    pairs = zip(a["us_per_bar_runs"], b["us_per_bar_runs"], strict=True)
    return statistics.median(x / y for x, y in pairs)
