"""PnL and exposure of many nodes as one: scrape each node's ``/metrics``, sum by venue/strategy.

Each node's ``MetricsExporter`` already reports ``pnl_realized_total``, ``pnl_unrealized_total``
and ``exposure_usd`` per ``(venue, strategy, instrument)`` in USD, so the fleet view is a sum over
those series; nothing is recomputed here. The text is parsed with prometheus_client's own parser.
A node that cannot be scraped is listed with its error and the totals say ``complete: false``
(partial sums are never passed off as the whole).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_SECS = 5.0
MAX_BODY_BYTES = 8 * 1024 * 1024  # a /metrics page larger than this is not a node's
NODE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
PNL = {"pnl_realized_total": "realized", "pnl_unrealized_total": "unrealized"}
EXPOSURE = "exposure_usd"


def parse_nodes(specs: Iterable[str]) -> dict[str, str]:
    """``NAME=URL`` items (``--node``) as ``{name: metrics url}``; a bad one raises ValueError."""
    nodes: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not NODE_NAME.match(name) or not url.startswith(("http://", "https://")):
            raise ValueError(f"--node {spec!r}: expected NAME=http://host:port/metrics")
        if name in nodes:
            raise ValueError(f"--node {name!r} given twice")
        nodes[name] = url
    return nodes


async def scrape(session: aiohttp.ClientSession, url: str) -> list[tuple[str, dict, float]]:
    """``(sample name, labels, value)`` of every sample on one ``/metrics`` page."""
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECS)
    async with session.get(url, timeout=timeout) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        body = await response.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise RuntimeError(f"/metrics larger than {MAX_BODY_BYTES} bytes")
    text = body.decode("utf-8", errors="replace")
    try:
        return [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except ValueError as exc:
        raise RuntimeError(f"not a Prometheus text page ({exc})") from None


async def scrape_all(nodes: Mapping[str, str]) -> dict[str, list[tuple[str, dict, float]] | str]:
    """Every node at once; a failed node maps to its one-line error instead of samples."""
    async with aiohttp.ClientSession() as session:

        async def one(url: str):
            try:
                return await scrape(session, url)
            except (aiohttp.ClientError, TimeoutError, RuntimeError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}".strip().rstrip(":")

        results = await asyncio.gather(*(one(url) for url in nodes.values()))
    return dict(zip(nodes, results, strict=True))


def _node_status(nodes: Mapping[str, str], scraped: Mapping[str, object]) -> list[dict]:
    return [
        {"node": name, "url": url, "ok": not isinstance(scraped[name], str)}
        | ({"error": scraped[name]} if isinstance(scraped[name], str) else {})
        for name, url in nodes.items()
    ]


def pnl(nodes: Mapping[str, str], scraped: Mapping[str, object]) -> dict:
    """Realized, unrealized and total PnL (USD) per series, by venue, by strategy and overall."""
    rows: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(
        lambda: {"realized": 0.0, "unrealized": 0.0}
    )
    for node, samples in scraped.items():
        if isinstance(samples, str):
            continue
        for name, labels, value in samples:
            if name in PNL:
                key = (
                    node,
                    labels.get("venue", ""),
                    labels.get("strategy", ""),
                    labels.get("instrument", ""),
                )
                rows[key][PNL[name]] += value
    out_rows = [
        {
            "node": n,
            "venue": v,
            "strategy": s,
            "instrument": i,
            **r,
            "total": r["realized"] + r["unrealized"],
        }
        for (n, v, s, i), r in sorted(rows.items())
    ]
    return {
        "nodes": _node_status(nodes, scraped),
        "complete": all(not isinstance(s, str) for s in scraped.values()),
        "currency": "USD",
        "rows": out_rows,
        "by_venue": _sum_by(out_rows, "venue", ("realized", "unrealized", "total")),
        "by_strategy": _sum_by(out_rows, "strategy", ("realized", "unrealized", "total")),
        "total": _sum(out_rows, ("realized", "unrealized", "total")),
    }


def exposure(nodes: Mapping[str, str], scraped: Mapping[str, object]) -> dict:
    """Signed net and gross (absolute) position notional (USD) by venue, strategy and overall."""
    rows = []
    for node, samples in scraped.items():
        if isinstance(samples, str):
            continue
        for name, labels, value in samples:
            if name == EXPOSURE:
                rows.append(
                    {
                        "node": node,
                        "venue": labels.get("venue", ""),
                        "strategy": labels.get("strategy", ""),
                        "instrument": labels.get("instrument", ""),
                        "net": value,
                        "gross": abs(value),
                    }
                )
    rows.sort(key=lambda r: (r["node"], r["venue"], r["strategy"], r["instrument"]))
    return {
        "nodes": _node_status(nodes, scraped),
        "complete": all(not isinstance(s, str) for s in scraped.values()),
        "currency": "USD",
        "rows": rows,
        "by_venue": _sum_by(rows, "venue", ("net", "gross")),
        "by_strategy": _sum_by(rows, "strategy", ("net", "gross")),
        "total": _sum(rows, ("net", "gross")),
    }


def _sum(rows: list[dict], fields: tuple[str, ...]) -> dict[str, float]:
    return {f: sum(r[f] for r in rows) for f in fields}


def _sum_by(rows: list[dict], key: str, fields: tuple[str, ...]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r[key]].append(r)
    return {k: _sum(v, fields) for k, v in sorted(groups.items())}
