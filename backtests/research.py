"""Out-of-sample selection protocol: ``python -m backtests.research --market spy_daily``.

For one market (``MARKETS``) it

1. runs the walk-forward sweep (``backtests.sweep``) of ``CANDIDATES`` on the SELECTION period
   only (every fold's model fitted on that fold's past), ranked by stitched out-of-sample Sharpe
   net of costs, with the deflated Sharpe ratio of each combination for the N = 16 tried;
2. freezes the top combination and runs it ONCE, as a walk-forward (refitted on each fold's
   trailing train window, so on past data only), over the HELD-OUT period, which the selection
   never saw, next to buy-and-hold and EMA cross on the same engine, bars, fees and capital.

Nothing here is tuned on the held-out period. ``research.md`` and ``research.json`` in the output
folder hold the tables that ``docs/RESEARCH.md`` quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml

from backtests.baselines import baseline_notional
from backtests.metrics import (
    METRIC_ROWS,
    NS_PER_YEAR,
    day_returns,
    probabilistic_sharpe,
    sharpe_moments,
)
from backtests.sweep import SweepSpec, markdown_table, nested, sweep
from backtests.walk_forward import WalkForwardSpec, fold_settings, stitch, walk_forward
from hmm_strategy.config import DEFAULT_CONFIG, ConfigError, NodeSettings, load_node_settings
from hmm_strategy.train import strategy_target

DATA = "${HMM_DATA_DIR}"
LEAN = f"{DATA}/fx_or_equity/lean"


class Market(msgspec.Struct, frozen=True):
    """A data set, its costs and its split: selection folds, then an untouched held-out span."""

    label: str
    source: str
    instrument_id: str
    bar_type: str
    venue: str
    currency: str
    calendar: str
    fee_rate: float | None  # None = the instrument's own fees
    cost_note: str
    train: str  # walk-forward train window (selection and held-out alike)
    test: str
    selection: tuple[str, str]  # first bar considered, last test bar of the selection
    held_out: tuple[str, str]  # first, last test bar of the held-out period
    sticky: float  # the "on" value of fit.sticky: ~ train bars / 20 (model.RegimeHMM's rule)


MARKETS: dict[str, Market] = {
    "btc_15m": Market(
        label="BTCUSDT 15m, Binance spot, 2024",
        source=f"{DATA}/binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv",
        instrument_id="BTCUSDT.BINANCE",
        bar_type="BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL",
        venue="BINANCE",
        currency="USDT",
        calendar="24/7",
        fee_rate=None,
        cost_note="the instrument's 0.1% taker fee per side (market orders)",
        train="60d",
        test="30d",
        selection=("2024-01-01", "2024-08-31"),
        held_out=("2024-09-01", "2024-12-31"),
        sticky=288.0,  # 60 d x 96 bars / 20
    ),
    "spy_daily": Market(
        label="SPY daily (Lean), US equities",
        source=f"{LEAN}/equity/usa/daily/spy.zip",
        instrument_id="SPY.ARCA",
        bar_type="SPY.ARCA-1-DAY-LAST-EXTERNAL",
        venue="ARCA",
        currency="USD",
        calendar="XNYS",
        fee_rate=0.001,
        cost_note="10 bp per side: the instrument's maker/taker fee set to 0.001 (fee_rate)",
        train="1461d",
        test="365d",
        selection=("1998-01-01", "2012-12-31"),
        held_out=("2013-01-01", "2021-03-31"),
        sticky=50.0,  # 4 y x 252 bars / 20
    ),
    "eurusd_hourly": Market(
        label="EUR/USD hourly (Lean, Oanda mid)",
        source=f"{LEAN}/forex/oanda/hour/eurusd.zip",
        instrument_id="EUR/USD.SIM",
        bar_type="EUR/USD.SIM-1-HOUR-MID-EXTERNAL",
        venue="SIM",
        currency="USD",
        calendar="FX",
        fee_rate=None,
        cost_note=(
            "the test-kit instrument's 0.002% (0.2 bp) per side, filled at the bid/ask MID: the"
            " ~1 pip Oanda spread is not charged, so costs are understated"
        ),
        train="365d",
        test="365d",
        selection=("2007-01-01", "2014-12-31"),
        held_out=("2015-01-01", "2018-12-31"),
        sticky=310.0,  # 1 y x ~6,200 bars / 20
    ),
}


def candidates(market: Market) -> dict[str, list[Any]]:
    """The 16 configurations tried per market: two model choices x two policy choices x 2 x 2.

    Why these: n_states 2 vs 3 (the literature's 2-state timing vs the shipped 3), a persistence
    prior on/off (regime flicker drives turnover), long/short vs long/flat (the regimes differ in
    volatility more than in mean, which favours a risk filter), and a 4-bar confirmation of a new
    regime (another turnover control). Everything else stays at the shipped values.
    """
    return {
        "fit.n_states": [2, 3],
        "fit.sticky": [0.0, market.sticky],
        "policy.mode": ["long_short", "long_flat"],
        "policy.min_regime_bars": [1, 4],
    }


def override(market: Market, catalog: Path) -> dict[str, Any]:
    """The node config's changes for ``market`` (data, venue, fees, calendar, currency)."""
    source: dict[str, Any] = {
        "source": market.source,
        "instrument_id": market.instrument_id,
        "bar_type": market.bar_type,
    }
    if market.fee_rate is not None:
        source["fee_rate"] = market.fee_rate
    return {
        "backtest": {
            "catalog_path": str(catalog),
            "data": [source],
            "venues": [
                {
                    "name": market.venue,
                    "oms_type": "NETTING",
                    "account_type": "MARGIN",
                    "starting_balances": [f"100000 {market.currency}"],
                    "fee_model": "maker_taker",
                }
            ],
        },
        "strategies": [
            {
                "name": "hmm_btc",
                "config": {
                    "instrument_id": market.instrument_id,
                    "bar_type": market.bar_type,
                    "breakers": {"calendar": market.calendar},
                },
            }
        ],
        "actors": [
            {"name": "metrics", "config": {"venue": market.venue}},
            {"name": "allocator", "config": {"venue": market.venue, "currency": market.currency}},
            {"name": "governance", "config": {"currency": market.currency}},
        ],
        "risk": {"max_notional_per_order": {market.instrument_id: 1_000_000}},
    }


def market_settings(override_path: Path, market: Market) -> NodeSettings:
    """The node config with ``override_path`` layered on, and ONLY the market's venue (lists of
    named entries merge by name, so the shipped BINANCE venue would otherwise stay first and set
    the capital's currency)."""
    settings = load_node_settings(DEFAULT_CONFIG, [override_path])
    venues = [v for v in settings.backtest.venues if v.name == market.venue]
    backtest = msgspec.structs.replace(settings.backtest, venues=venues)
    return msgspec.structs.replace(settings, backtest=backtest)


def _start(first_test: str, train: str) -> str:
    """First bar considered so that the first fold's test window starts at ``first_test``."""
    import pandas as pd

    days = int(train.rstrip("d"))
    return (pd.Timestamp(first_test) - pd.Timedelta(days=days)).isoformat()


def deployed_turnover(folds: list[dict[str, Any]], name: str, notional: float) -> dict[str, float]:
    """Traded notional per year in units of the deployed notional (1.0 = one full switch of the
    position a year), for the curve as if run without folds: each fold's run starts flat and
    flattens at its end, which the measured figure counts (buy-and-hold then trades twice a
    fold); here the position is carried across fold boundaries (a run flattens on its last bar,
    which is dropped; the units bought anew at a seam still count)."""
    ordered = sorted(folds, key=lambda r: r["fold"])
    pos_key = f"{name}_position"
    parts = []
    for r in ordered:
        p = np.asarray(r["curve"][pos_key], dtype=np.float64).copy()
        if p.size > 1:
            p[-1] = p[-2]  # the run's flattening on stop, on its last bar, is not a decision
        parts.append(p)
    pos = np.concatenate(parts)
    # "bridged": a fold's run starts flat and the policy holds that first flat target for
    # min_hold_bars, so a position held into a seam is sold and bought back; where the next
    # fold re-enters on the same side, its leading flat bars are filled with the held position
    # (an approximation of a continuous run: it assumes no exit inside that warm-up)
    bridged_parts = [parts[0]]
    for prev, cur in zip(parts, parts[1:], strict=False):
        cur = cur.copy()
        nz = np.flatnonzero(cur)
        if prev.size and prev[-1] != 0 and nz.size and np.sign(cur[nz[0]]) == np.sign(prev[-1]):
            cur[: nz[0]] = prev[-1]
        bridged_parts.append(cur)
    bridged = np.concatenate(bridged_parts)
    close = np.concatenate([np.asarray(r["curve"]["close"], dtype=np.float64) for r in ordered])
    ts = np.concatenate([np.asarray(r["curve"]["ts"], dtype=np.int64) for r in ordered])
    years = (ts[-1] - ts[0]) / NS_PER_YEAR if ts.size > 1 else 0.0
    if years <= 0:
        return {"continuous": float("nan"), "bridged": float("nan")}
    out = {}
    for key, p in (("continuous", pos), ("bridged", bridged)):
        traded = float((np.abs(np.diff(np.r_[0.0, p])) * close).sum())
        out[key] = traded / notional / years
    return out


def goal_check(comparison: dict[str, dict], turnover: dict[str, float]) -> dict[str, Any]:
    """Issue 12's equity-index goal, evaluated as stated (for every market, descriptive):
    Sharpe >= buy-and-hold's, max drawdown <= 0.6 x buy-and-hold's, turnover < 300% a year."""
    mine, bh = comparison["strategy"], comparison.get("buy_and_hold")
    if bh is None or mine.get("sharpe") is None or bh.get("sharpe") is None:
        return {}
    dd_ratio = mine["max_drawdown_pct"] / bh["max_drawdown_pct"] if bh["max_drawdown_pct"] else None
    return {
        "sharpe_at_least_buy_and_hold": bool(mine["sharpe"] >= bh["sharpe"]),
        "drawdown_ratio": dd_ratio,
        "drawdown_at_most_0.6x": bool(dd_ratio is not None and dd_ratio <= 0.6),
        "turnover_measured_under_3": bool(turnover.get("measured", np.inf) < 3.0),
        "turnover_continuous_under_3": bool(turnover.get("continuous", np.inf) < 3.0),
        "turnover_bridged_under_3": bool(turnover.get("bridged", np.inf) < 3.0),
    }


def _comparison_rows(comparison: dict[str, dict]) -> list[dict[str, Any]]:
    names = [n for n in ("strategy", "buy_and_hold", "ema_cross") if n in comparison]
    rows = []
    for key, label, _ in METRIC_ROWS:
        rows.append({"metric": label, **{n: comparison[n].get(key) for n in names}})
    return rows


def research(market_name: str, out_dir: Path, *, workers: int = 1) -> dict[str, Any]:
    """Selection sweep, then the frozen winner once on the held-out period; writes reports."""
    market = MARKETS[market_name]
    out_dir.mkdir(parents=True, exist_ok=True)
    over = out_dir / "override.yaml"
    over.write_text(yaml.safe_dump(override(market, out_dir / "catalog"), sort_keys=False))
    settings = market_settings(over, market)

    grid = candidates(market)
    sel = WalkForwardSpec(
        train=market.train, test=market.test, start=market.selection[0], end=market.selection[1]
    )
    swept = sweep(settings, out_dir / "selection", SweepSpec(grid=grid), sel, workers=workers)
    ranked = [r for r in swept["results"] if r.get("error") is None]
    if not ranked:
        raise RuntimeError(f"{market_name}: every combination failed: {swept['results'][0]}")
    best = ranked[0]
    chosen = best["params"]

    held = WalkForwardSpec(
        train=market.train,
        test=market.test,
        start=_start(market.held_out[0], market.train),
        end=market.held_out[1],
    )
    summary = walk_forward(settings, out_dir / "held_out", held, config_update=nested(chosen))
    folds = summary.pop("fold_results")
    comparison = summary["comparison"]
    capital = folds[0]["capital"]
    held_stats = {}
    for name in comparison:
        key = "pnl" if name == "strategy" else f"{name}_pnl"
        curve = stitch(folds, key)
        daily = day_returns(curve["ts_event"].to_numpy(), curve["pnl"].to_numpy(), capital)
        m = sharpe_moments(daily)
        held_stats[name] = {
            **m,
            "psr": probabilistic_sharpe(m["sharpe"], m["n"], m["skew"], m["kurtosis"]),
        }
    # the folds' full exposure, what the baselines trade (the folds run without the allocator)
    notional = baseline_notional(fold_settings(settings, strategy_target(settings, None), {}))
    turnover = {name: deployed_turnover(folds, name, notional) for name in comparison}
    for name, t in turnover.items():
        t["measured"] = comparison[name]["turnover_per_year"] * capital / notional
    goal = goal_check(comparison, turnover.get("strategy", {}))
    # the same folds and models as one continuous run (positions carried across the seams)
    cont = walk_forward(
        settings,
        out_dir / "held_out_continuous",
        held,
        config_update=nested(chosen),
        continuous=True,
    )
    cont.pop("fold_results")
    cont_turnover = {
        name: m["turnover_per_year"] * capital / notional for name, m in cont["comparison"].items()
    }
    cont_goal = goal_check(cont["comparison"], {"measured": cont_turnover.get("strategy", np.inf)})
    for key in ("turnover_continuous_under_3", "turnover_bridged_under_3"):
        cont_goal.pop(key, None)
    sel_best_bh = best.get("buy_and_hold_return_pct")
    doc = {
        "market": market_name,
        "label": market.label,
        "costs": market.cost_note,
        "walk_forward": {"train": market.train, "test": market.test},
        "selection": {
            "period": list(market.selection),
            "folds": len(swept["folds"]),
            "n_trials": len(swept["results"]),
            "grid": grid,
            "ranked": [
                {
                    k: r.get(k)
                    for k in (
                        "rank",
                        "params",
                        "sharpe",
                        "psr",
                        "dsr",
                        "return_pct",
                        "max_drawdown_pct",
                        "turnover_per_year",
                        "buy_and_hold_return_pct",
                        "ema_cross_return_pct",
                        "orders",
                        "error",
                    )
                }
                for r in swept["results"]
            ],
            "chosen": chosen,
            "chosen_buy_and_hold_return_pct": sel_best_bh,
        },
        "held_out": {
            "period": list(market.held_out),
            "folds": summary["folds"],
            "first_test_bar": summary["first_test_bar"],
            "last_test_bar": summary["last_test_bar"],
            "comparison": comparison,
            "daily": held_stats,
            "deployed_notional": notional,
            "turnover_per_deployed_year": turnover,
            "goal": goal,
        },
        "held_out_continuous": {
            "first_test_bar": cont["first_test_bar"],
            "last_test_bar": cont["last_test_bar"],
            "comparison": cont["comparison"],
            "turnover_per_deployed_year": cont_turnover,
            "goal": cont_goal,
        },
    }
    (out_dir / "research.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out_dir / "research.md").write_text(render(doc))
    return doc


def render(doc: dict[str, Any]) -> str:
    """The markdown that docs/RESEARCH.md quotes."""
    import polars as pl

    sel, held = doc["selection"], doc["held_out"]
    keys = list(sel["grid"])
    rows = []
    for r in sel["ranked"]:
        row = {"rank": r["rank"], **{k.split(".")[-1]: r["params"].get(k) for k in keys}}
        for k in ("sharpe", "psr", "dsr", "return_pct", "max_drawdown_pct", "turnover_per_year"):
            row[k] = r.get(k)
        row["buy_hold_return_pct"] = r.get("buy_and_hold_return_pct")
        rows.append(row)
    lines = [
        f"## {doc['label']}",
        "",
        f"Costs: {doc['costs']}. Walk-forward train {doc['walk_forward']['train']}, "
        f"test {doc['walk_forward']['test']}.",
        "",
        f"Selection {sel['period'][0]} -> {sel['period'][1]}: {sel['folds']} out-of-sample "
        f"folds, N = {sel['n_trials']} configurations, ranked by stitched OOS Sharpe (annualised)"
        "; PSR/DSR on daily returns (DSR: against the expected max Sharpe of N null trials).",
        "",
        markdown_table(pl.DataFrame(rows, infer_schema_length=None)),
        f"Chosen: `{json.dumps(sel['chosen'])}`",
        "",
        f"Held-out {held['first_test_bar']} -> {held['last_test_bar']} ({held['folds']} folds, "
        "chosen configuration frozen, models refitted on each fold's trailing train window):",
        "",
        markdown_table(pl.DataFrame(_comparison_rows(held["comparison"]))),
        "Turnover per deployed notional per year (1.0 = one full switch of the position):"
        " measured (each fold starts and ends flat) / continuous (position carried across"
        " folds) / bridged (also a fold's initial flat bars before re-entering the side held"
        " at the seam): "
        + ", ".join(
            f"{n} {t['measured']:.2f} / {t['continuous']:.2f} / {t.get('bridged', np.nan):.2f}"
            for n, t in held["turnover_per_deployed_year"].items()
        ),
        "",
        f"Goal (issue 12, stated for equity index data): `{json.dumps(held['goal'])}`",
        "",
    ]
    cont = doc.get("held_out_continuous")
    if cont:
        lines += [
            f"Held-out, continuous protocol ({cont['first_test_bar']} -> {cont['last_test_bar']}):"
            " the same folds and models as ONE backtest, each fold's model switched in just "
            "before its window (`backtests.walk_forward --continuous`), positions and policy "
            "state carried across the seams, buy-and-hold bought once:",
            "",
            markdown_table(pl.DataFrame(_comparison_rows(cont["comparison"]))),
            "Turnover per deployed notional per year: "
            + ", ".join(f"{n} {t:.2f}" for n, t in cont["turnover_per_deployed_year"].items()),
            "",
            f"Goal, continuous protocol: `{json.dumps(cont['goal'])}`",
            "",
        ]
    lines += [
        "Daily-return Sharpe (per day, not annualised) and PSR (P[true Sharpe > 0]): "
        + ", ".join(
            f"{n} {v['sharpe']:.4f} / {v['psr']:.3f} (n={v['n']})" for n, v in held["daily"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backtests.research",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--market", required=True, choices=sorted(MARKETS))
    parser.add_argument("--workers", type=int, default=1, help="local processes (default 1)")
    parser.add_argument("--out", help="output folder (default runs/research/<market>)")
    args = parser.parse_args(argv)
    out = Path(args.out or Path("runs") / "research" / args.market)
    try:
        doc = research(args.market, out, workers=args.workers)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "research.md").read_text())
    print(f"chosen on the selection period: {doc['selection']['chosen']}; reports in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
