"""``/metrics`` scrape time of ``actors.metrics.MetricsExporter`` with every series present.

Every metric family the exporter defines gets series for a production-sized label set (several
venues, strategies, instruments, every HMM state, breaker reason and governance state; each
histogram with observations in every bucket). Two numbers: ``render()`` alone, and a real HTTP GET
of ``/metrics`` from the exporter's own server on 127.0.0.1 (what Prometheus sees).
"""

from __future__ import annotations

import itertools
import statistics
import time
import urllib.request
from typing import Any

LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "venue": ("BINANCE", "BYBIT"),
    "strategy": tuple(f"HMMRegimeStrategy-{i:03d}" for i in range(1, 5)),
    "instrument": ("BTCUSDT.BINANCE", "ETHUSDT.BINANCE"),
    "hmm_state": ("0", "1", "2", "3"),
    "reason": ("daily_loss", "drawdown", "stale_data", "price_jump", "rejects", "kill_switch"),
    "model_version": ("20240101T000000Z-0123456789ab",),
    "kind": ("order_timeout", "order_rejected", "data_gap"),
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def populated_exporter() -> tuple[Any, int]:
    """A MetricsExporter (no node, no server) with every family filled; returns (it, series)."""
    from prometheus_client import Counter, Gauge, Histogram

    from actors.metrics import (
        GOVERNANCE_STATES,
        LATENCY_BUCKETS_MS,
        MetricsExporter,
        MetricsExporterConfig,
    )

    exporter = MetricsExporter(MetricsExporterConfig(port=0, serve="never"))
    families = [m for m in vars(exporter).values() if isinstance(m, Counter | Gauge | Histogram)]
    for metric in families:
        names = metric._labelnames
        values = [GOVERNANCE_STATES if n == "state" else LABEL_VALUES[n] for n in names]
        for combo in itertools.product(*values):
            child = metric.labels(*combo)
            if isinstance(metric, Histogram):
                for bucket in LATENCY_BUCKETS_MS:
                    child.observe(bucket * 0.9)
            elif isinstance(metric, Counter):
                child.inc(3)
            else:
                child.set(1.5)
    series = sum(len(f.samples) for f in exporter.registry.collect())
    return exporter, series


def scrape_benchmark(renders: int = 200, requests: int = 100) -> dict[str, Any]:
    from actors.metrics_server import MetricsHTTPServer

    exporter, series = populated_exporter()
    body = exporter.render()
    render_ms = []
    for _ in range(renders):
        start = time.perf_counter()
        exporter.render()
        render_ms.append((time.perf_counter() - start) * 1e3)

    server = MetricsHTTPServer("127.0.0.1", 0, exporter.render, lambda: (True, "ready"))
    port = server.start()
    http_ms = []
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # warm-up: thread, imports
            response.read()
        for _ in range(requests):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=5) as response:
                payload = response.read()
            http_ms.append((time.perf_counter() - start) * 1e3)
            if response.status != 200 or len(payload) < len(body) // 2:
                raise RuntimeError(f"bad scrape: HTTP {response.status}, {len(payload)} bytes")
    finally:
        server.stop()
    return {
        "families": len(list(exporter.registry.collect())),
        "series": series,
        "bytes": len(body),
        "render_ms": {
            "p50": statistics.median(render_ms),
            "p99": _percentile(render_ms, 0.99),
            "max": max(render_ms),
        },
        "http_get_ms": {
            "p50": statistics.median(http_ms),
            "p99": _percentile(http_ms, 0.99),
            "max": max(http_ms),
        },
        "renders": renders,
        "requests": requests,
    }
