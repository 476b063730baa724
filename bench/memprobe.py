"""Scaling and memory of the HMM backtest, in a fresh child process.

``python -m bench.memprobe --long N --short M --model PATH --output JSON`` (run by ``python -m
bench``). Why a child: in the parent, memory freed by the earlier backtests stays mapped and is
reused, so RSS would hide what a run allocates. Here the long run goes first in a clean process;
an ``RssProbe`` actor samples RSS on a timer of the engine's (simulated) clock -- no background
thread (see ``bench.memory``) and no per-bar work -- so RSS is known against bars processed.
The short run follows in the same process, giving the long/short throughput ratio from one
process as well.
"""

from __future__ import annotations

from bench import pin_blas_threads

pin_blas_threads()

from datetime import timedelta  # noqa: E402

from nautilus_trader.common.actor import Actor  # noqa: E402
from nautilus_trader.config import ActorConfig  # noqa: E402

from bench.memory import current_rss_mb  # noqa: E402

BAR_NS = 15 * 60 * 1_000_000_000


class RssProbeConfig(ActorConfig, frozen=True):
    interval_bars: int = 50_000


class RssProbe(Actor):
    """Records ``(bars since start, RSS MB)`` every ``interval_bars`` bars of simulated time."""

    def __init__(self, config: RssProbeConfig) -> None:
        super().__init__(config)
        self.samples: list[tuple[int, float]] = []
        self._start_ns = 0

    def on_start(self) -> None:
        self._start_ns = self.clock.timestamp_ns()
        self.clock.set_timer(
            "rss-probe",
            timedelta(seconds=self.config.interval_bars * BAR_NS / 1e9),
            callback=self._sample,
        )

    def _sample(self, event) -> None:
        rss = current_rss_mb()
        if rss is not None:
            self.samples.append((round((event.ts_event - self._start_ns) / BAR_NS), rss))


def growth_per_100k(samples: list[tuple[int, float]]) -> dict[str, float | None]:
    """Least-squares RSS slope, MB per 100k bars, over the first and the second half."""
    if len(samples) < 6:
        return {"first_half": None, "second_half": None}
    last = samples[-1][0]

    def slope(part: list[tuple[int, float]]) -> float | None:
        n = len(part)
        if n < 3:
            return None
        mx = sum(p[0] for p in part) / n
        my = sum(p[1] for p in part) / n
        var = sum((p[0] - mx) ** 2 for p in part)
        cov = sum((p[0] - mx) * (p[1] - my) for p in part)
        return cov / var * 100_000 if var else None

    return {
        "first_half": slope([p for p in samples if p[0] <= last / 2]),
        "second_half": slope([p for p in samples if p[0] > last / 2]),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse
    import gc
    import json
    from pathlib import Path

    from bench import backtest as bt
    from bench.data import benchmark_frame, to_bars
    from bench.memory import peak_rss_mb, reset_peak_rss

    parser = argparse.ArgumentParser(prog="python -m bench.memprobe", description=__doc__)
    parser.add_argument("--long", type=int, required=True, help="bars of the long run")
    parser.add_argument("--short", type=int, required=True, help="bars of the short run")
    parser.add_argument("--model", required=True, help="model artifact for the HMM strategy")
    parser.add_argument("--output", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)

    rss_start = current_rss_mb()
    bars = to_bars(benchmark_frame(args.long))
    gc.collect()
    rss_data = current_rss_mb()
    reset_peak_rss()
    probe = RssProbe(RssProbeConfig(interval_bars=max(args.long // 20, 1)))
    long_run = bt.run_backtest(bars, "hmm", args.model, extra_actors=[probe])
    samples = probe.samples
    short_run = bt.run_backtest(bars[: args.short], "hmm", args.model, extra_actors=[])
    result = {
        "process": "fresh child process (python -m bench.memprobe)",
        "rss_after_imports_mb": rss_start,
        "rss_with_bars_mb": rss_data,
        "runs": [short_run, long_run],
        "long_run_rss_samples": [[n, round(r, 1)] for n, r in samples],
        "long_run_growth_mb_per_100k_bars": growth_per_100k(samples),
        "long_run_peak_rss_mb": long_run["peak_rss_mb"],
        "peak_rss_mb": peak_rss_mb(),
    }
    Path(args.output).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
