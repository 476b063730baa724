"""The benchmark result as a readable Markdown table (stdout and docs/PERFORMANCE.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.live import LATENCIES

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _f(value: Any, spec: str = ",.1f", none: str = "n/a") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def _todo(section: Any) -> str | None:
    if isinstance(section, dict) and section.get("status") == "todo":
        return f"TODO: {section.get('reason', '')}"
    return None


def _rounds_line(
    runs: list[dict[str, Any]],
    median_ratio: float | None = None,
    label: str = "run",
    ratio_name: str = "",
) -> str:
    """Empty for one round; else each run's us/bar per round (the table shows the least) and
    the median of the per-round ratio (``ratio_name``, when the runs are more than a pair)."""
    rounds = runs[0].get("rounds", 1)
    if rounds <= 1:
        return ""
    each = "; ".join(
        f"{r[label]} " + ", ".join(f"{x:.1f}" for x in r["us_per_bar_runs"]) for r in runs
    )
    line = f"Least CPU time of {rounds} interleaved rounds; each round's us/bar: {each}."
    if median_ratio is None:
        return line
    name = f"{ratio_name} " if ratio_name else ""
    return f"{line} Median of the per-round {name}ratios: {median_ratio:.3f}."


def _least(run: dict[str, Any]) -> str:
    rounds = run.get("rounds", 1)
    return f"least of {rounds} interleaved rounds" if rounds > 1 else "one run each"


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    m = result["machine"]
    add(
        f"Command: `{result['command']}` ({result['mode']} mode), {result['started_at']}, "
        f"total {result['total_seconds']:.0f} s."
    )
    add("")
    add(
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m['memory_gb']} GB, "
        f"Python {m['python']}, nautilus_trader {m['libraries'].get('nautilus_trader')}, "
        f"numpy {m['libraries'].get('numpy')}, pandas {m['libraries'].get('pandas')}, "
        f"hmmlearn {m['libraries'].get('hmmlearn')}. Load average at start "
        f"{m['load_average_at_start']}, at end {result.get('load_average_at_end')}."
    )
    add("")

    add("### Targets")
    add("")
    add("| target | goal | measured | margin | median of rounds | met |")
    add("|---|---|---|---|---|---|")
    for t in result["targets"]:
        margin = t.get("margin")
        shown = "-" if margin is None else f"{margin:+.1%}"
        if margin is not None and t["goal"].startswith("within"):
            shown = f"{margin:+.3f}"  # points of the ratio left inside the band
        add(
            f"| {t['name']} | {t['goal']} | {_f(t['measured'], '.3g')} | {shown} | "
            f"{_f(t.get('median_of_rounds'), '.3f', '-')} | {_f(t['met'])} |"
        )
    add("")
    add(
        "Margin: how far the measured value is on the good side of the goal, as a share of the "
        "goal (negative: missed by that much). Median of rounds: the median of the per-round "
        "ratios where the pair ran in interleaved rounds; the measured value is the ratio of the "
        "least CPU times."
    )
    add("")

    bt = result["backtest"]
    add(f"### 1. Backtest throughput ({bt['bars']:,} bars, one instrument, same engine settings)")
    add("")
    add("| strategy | bars/s (CPU) | bars/s (wall) | us/bar | orders | positions | peak RSS MB |")
    add("|---|---|---|---|---|---|---|")
    for r in bt["runs"]:
        add(
            f"| {r['strategy']} | {_f(r['bars_per_s'], ',.0f')} | "
            f"{_f(r['bars_per_wall_s'], ',.0f')} | {_f(1e6 / r['bars_per_s'], '.1f')} | "
            f"{r['orders']:,} | {r['positions']:,} | {_f(r['peak_rss_mb'], ',.0f')} |"
        )
    ratios = bt["ratios"]
    add("")
    median = ratios.get("hmm_vs_noop_median")
    if line := _rounds_line(bt["runs"], median, label="strategy", ratio_name="HMM / no-op"):
        add(line)
        add("")
    add(
        f"HMM / no-op = {ratios['hmm_vs_noop']:.2f}, HMM / EMA cross = "
        f"{ratios['hmm_vs_ema_cross']:.2f} (CPU time; wall: {ratios['hmm_vs_noop_wall']:.2f}, "
        f"{ratios['hmm_vs_ema_cross_wall']:.2f}). HMM model: {result['model']['source']}."
    )
    add("")

    sc = result["scaling"]
    add("Scaling (HMM strategy, linear settings, both runs in one fresh child process):")
    add("")
    add("| bars | bars/s (CPU) | orders |")
    add("|---|---|---|")
    for r in sc["runs"]:
        add(f"| {r['bars']:,} | {_f(r['bars_per_s'], ',.0f')} | {r['orders']:,} |")
    add("")
    add(f"Large / small run throughput: {sc['throughput_ratio_large_vs_small']:.3f}.")
    add("")

    trap = result["scaling_trap"]
    add(f"The quadratic trap ({trap['strategy']}, us per bar, CPU):")
    add("")
    add("| bars | positions | default settings | linear settings |")
    add("|---|---|---|---|")
    for d, f in zip(trap["default"], trap["linear"], strict=True):
        add(
            f"| {d['bars']:,} | {d['positions']:,} | {_f(1e6 / d['bars_per_s'], '.1f')} | "
            f"{_f(1e6 / f['bars_per_s'], '.1f')} |"
        )
    add("")
    add(
        f"Default settings: the longer run costs {trap['default_growth']:.2f}x more per bar; "
        f"linear settings: {trap['linear_growth']:.2f}x."
    )
    add("")

    node = result["shipped_node"]
    add(f"### 1b. What users run: the shipped node config ({node['bars']:,} bars)")
    add("")
    add(f"{node['config']}; {node['path']}. CPU time around `node.run()`.")
    add("")
    add("| run | bars/s (CPU) | us/bar | actors | orders | peak RSS MB |")
    add("|---|---|---|---|---|---|")
    for r in node["runs"]:
        add(
            f"| {r['run']} | {_f(r['bars_per_s'], ',.0f')} | {_f(r['us_per_bar'], '.1f')} | "
            f"{len(r['actors'])} | {r['orders']:,} | {_f(r['peak_rss_mb'], ',.0f')} |"
        )
    add("")
    add(f"Shipped / no-op = {node['shipped_vs_noop']:.3f} (the in-run fit is inside the run).")
    if line := _rounds_line(node["runs"], node.get("shipped_vs_noop_median")):
        add("")
        add(line)
    if costs := node.get("actor_costs"):
        add("")
        add(
            "Where it goes: the strategy with no actor, then with each shipped actor alone (each "
            "the least of the same rounds); added = over the strategy alone (over the no-op for "
            "the first row). An actor's row includes what it makes the strategy trade, so the "
            "rows do not add up to the shipped node."
        )
        add("")
        add("| run | us/bar (CPU) | added us/bar | no-op / run | orders |")
        add("|---|---|---|---|---|")
        for r in costs:
            add(
                f"| {r['run']} | {_f(r['us_per_bar'], '.1f')} | "
                f"{_f(r['added_us_per_bar'], '+.1f')} | {_f(r['vs_noop'], '.3f')} | "
                f"{r['orders']:,} |"
            )
    add("")
    sparse = result["sparse_calendar"]
    add(
        f"Sparse calendar: the shipped node on {sparse['bars']:,} XNYS hourly bars "
        f"({sparse['sparse_span_years']:.1f} years of sessions) vs the same number of dense "
        "15-minute bars:"
    )
    add("")
    add("| run | us/bar (CPU) | orders |")
    add("|---|---|---|")
    for r in sparse["runs"]:
        add(f"| {r['run']} | {_f(r['us_per_bar'], '.1f')} | {r['orders']:,} |")
    add("")
    add(f"Per-bar cost XNYS hourly / dense = {sparse['per_bar_cost_sparse_vs_dense']:.3f}.")
    if line := _rounds_line(sparse["runs"], sparse.get("per_bar_cost_sparse_vs_dense_median")):
        add("")
        add(line)
    if alone := sparse.get("strategy_alone"):
        dense_alone, sparse_alone = alone
        add("")
        add(
            f"The same pair with the strategy alone (no actor, {_least(dense_alone)}): dense "
            f"{dense_alone['us_per_bar']:.1f}, XNYS hourly {sparse_alone['us_per_bar']:.1f} us/bar "
            f"({dense_alone['orders']:,} and {sparse_alone['orders']:,} orders), ratio "
            f"{sparse['strategy_alone_sparse_vs_dense']:.3f}: the calendar's own cost per bar. "
            "The actors' daily work (allocations, governance reviews) and the orders it causes "
            f"are paid per trading day: {sparse['sparse_trading_days']:,} of them in the XNYS "
            f"span against {sparse['dense_span_days']:,.0f} days in the dense one."
        )
    add("")

    many = result["many_instruments"]
    add(f"Many instruments ({many['setup']}; {many['bars_per_instrument']:,} bars each):")
    add("")
    add("| instruments | bars | us / bar / instrument (CPU) | vs 1 | orders | peak RSS MB |")
    add("|---|---|---|---|---|---|")
    for r in many["runs"]:
        ratio = many["cost_vs_one_instrument"][str(r["instruments"])]
        add(
            f"| {r['instruments']} | {r['bars']:,} | {_f(r['us_per_bar_per_instrument'], '.1f')} "
            f"| {ratio:.2f} | {r['orders']:,} | {_f(r['peak_rss_mb'], ',.0f')} |"
        )
    add("")
    if line := _rounds_line(many["runs"]):
        medians = many.get("cost_vs_one_instrument_median", {})
        each = ", ".join(f"{n}: {x:.2f}" for n, x in medians.items() if n != "1")
        add(f"{line} Median of the per-round ratios to 1 instrument: {each}." if each else line)
        add("")

    prof = result["profile"]
    add(f"Where the HMM backtest's Python time goes (cProfile, {prof['bars']:,} bars; own time):")
    add("")
    add("| function | calls | own us/bar | share |")
    add("|---|---|---|---|")
    for row in prof["top"]:
        add(
            f"| `{row['function']}` | {row['calls']:,} | {row['own_us_per_bar']:.2f} | "
            f"{row['own_share']:.0%} |"
        )
    add("")

    inf = result["inference"]
    eng, naive = inf["engine"], inf["naive"]
    add("### 2. Per-bar online inference (RegimeEngine.update, model ready)")
    add("")
    add("| what | us/bar |")
    add("|---|---|")
    add(f"| RegimeEngine.update ({eng['n_states']} states, {eng['bars']:,} bars) | "
        f"{eng['us_per_bar']:.2f} |")  # fmt: skip
    for name, us in eng["breakdown_us"].items():
        add(f"| - {name} | {us:.2f} |")
    add(f"| naive: hmmlearn predict_proba on the trailing {naive['window']} rows | "
        f"{naive['us_per_bar']:.1f} |")  # fmt: skip
    add("")
    add(f"Speed-up vs naive: {inf['speedup_vs_naive']:.0f}x (same probabilities: max abs diff "
        f"{naive['max_abs_diff_vs_filter']:.1e}).")  # fmt: skip
    add("")
    hier = inf.get("hierarchical")
    if hier:
        add(f"Two-level model (slow level on coarse bars of {hier['bars_per_coarse_bar']}, "
            f"{hier['bars']:,} bars): {hier['us_per_bar_two_level']:.2f} us/bar against "
            f"{hier['us_per_bar_single_level']:.2f} single-level in the same run, "
            f"{hier['two_level_vs_single']:.2f}x.")  # fmt: skip
        add("")

    add("### 3. Fit and walk-forward")
    add("")
    add(
        "| states | rows | EM iterations | seconds (CPU) | ms / EM iteration | default fit <= s "
        "| plain hmmlearn ms / iteration | RegimeHMM / hmmlearn |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for r in result["fit"]["runs"]:
        plain = r.get("hmmlearn") or {}
        add(
            f"| {r['n_states']} | {r['rows']:,} | {r['em_iterations']} | "
            f"{r['cpu_seconds']:.2f} | {r['ms_per_em_iteration']:.0f} | "
            f"{r['default_fit_upper_bound_s']:.0f} | {_f(plain.get('ms_per_em_iteration'), '.0f')} "
            f"| {_f(r.get('vs_hmmlearn_per_iteration'), '.2f')} |"
        )
    add("")
    wf = result["walk_forward"]
    add(
        _todo(wf)
        or (
            f"Walk-forward, {wf['bars']:,} 15-minute bars ({wf['days']} days), train {wf['train']} "
            f"/ test {wf['test']}: {wf['folds']} folds in {wf['wall_seconds']:.1f} s "
            f"({wf['seconds_per_fold']:.2f} s per fold, catalog import included)."
        )
    )
    add("")

    dwf = result["walk_forward_dask"]
    add(
        f"Walk-forward over {dwf['series']} series ({dwf['days']} days each, train {dwf['train']}"
        f" / test {dwf['test']}, {dwf['folds']} folds in all) on a {dwf['cluster']}: "
        f"{dwf['wall_seconds']:.1f} s wall including the cluster's start, "
        f"{dwf['compute_wall_seconds']:.1f} s for the tasks whose own times add up to "
        f"{dwf['sum_of_task_wall_seconds']:.1f} s ({dwf['parallel_speedup']:.2f}x)."
    )
    add("")

    live = result["live_latency"]
    add("### 4. Live path (offline paper node)")
    add("")
    if _todo(live):
        add(_todo(live))
    else:
        add("| latency (us) | n | p50 | p99 | max |")
        add("|---|---|---|---|---|")
        for key in ("bar_to_decision_us", "bar_to_order_submitted_us"):
            s = live[key]
            add(
                f"| {key.removesuffix('_us').replace('_', ' ')} | {s['n']} | "
                f"{_f(s.get('p50'), '.0f')} | {_f(s.get('p99'), '.0f')} | "
                f"{_f(s.get('max'), '.0f')} |"
            )
        add("")
        add(f"{live['bars']:,} replayed bars in {live['wall_seconds']:.1f} s, actors: "
            f"{', '.join(a.split(':')[-1] for a in live['actors'])}.")  # fmt: skip
    add("")

    sim = result.get("sim_latency")
    if sim is not None:
        add("### 4b. Live path on the simulated Binance venue (wall clock)")
        add("")
        if _todo(sim):
            add(_todo(sim))
        elif sim.get("status") == "error":
            add(f"ERROR: the section failed ({sim['reason']}).")
        else:
            add("| latency (ms) | n | p50 | p99 | max |")
            add("|---|---|---|---|---|")
            for key in ("submit_to_ack_ms", "submit_to_fill_ms"):
                s = sim[key]
                add(
                    f"| {key.removesuffix('_ms').replace('_', ' ')} | {s['n']} | "
                    f"{_f(s.get('p50'), '.2f')} | {_f(s.get('p99'), '.2f')} | "
                    f"{_f(s.get('max'), '.2f')} |"
                )
            add("")
            add(
                "Live node, NautilusTrader's Binance adapter: signed REST order, WebSocket-API "
                f"execution reports, 127.0.0.1. {sim['bars']:,} trading bars in "
                f"{sim['wall_seconds']:.1f} s, {sim['venue_orders']} orders at the venue."
            )
        add("")

    many = result.get("live_latency_many")
    if many is not None:
        add("### 4c. Live path with many instruments (offline paper node)")
        add("")
        if _todo(many):
            add(_todo(many))
        else:
            add("| instruments | bars | latency (us) | n | p50 | p99 | max | p50 N/1 | p99 N/1 |")
            add("|---|---|---|---|---|---|---|---|---|")
            for r in many["runs"]:
                for key in LATENCIES:
                    s, name = r[key], key.removesuffix("_us")
                    ratio = many["n_vs_one"] if r is many["runs"][-1] else {}
                    add(
                        f"| {r['instruments']} | {r['bars']:,} | {name.replace('_', ' ')} | "
                        f"{s['n']} | {_f(s.get('p50'), '.0f')} | {_f(s.get('p99'), '.0f')} | "
                        f"{_f(s.get('max'), '.0f')} | {_f(ratio.get(f'{name}_p50'), '.2f', '')} "
                        f"| {_f(ratio.get(f'{name}_p99'), '.2f', '')} |"
                    )
            add("")
            walls = ", ".join(
                f"{r['instruments']} instrument(s) {r['wall_seconds']:.1f} s" for r in many["runs"]
            )
            gcs = "; ".join(
                f"{r['instruments']} instrument(s) "
                + ", ".join(
                    f"gen {g[-1]} {v['n']} x, max {v['max_ms']:.1f} ms"
                    for g, v in r["gc_pauses"].items()
                )
                for r in many["runs"]
            )
            add(f"{many['setup']}. Wall: {walls}. Garbage-collector pauses during the runs: {gcs}.")
        add("")

    scrape = result["metrics_scrape"]
    add("### 5. /metrics scrape")
    add("")
    if _todo(scrape):
        add(_todo(scrape))
    else:
        add(
            f"{scrape['families']} families, {scrape['series']:,} samples, "
            f"{scrape['bytes']:,} bytes: render p50 {scrape['render_ms']['p50']:.2f} ms, "
            f"p99 {scrape['render_ms']['p99']:.2f} ms; HTTP GET p50 "
            f"{scrape['http_get_ms']['p50']:.2f} ms, p99 {scrape['http_get_ms']['p99']:.2f} ms."
        )
    add("")

    mem = result["memory"]
    add("### 6. Memory")
    add("")
    add(
        f"Peak RSS during the {bt['bars']:,}-bar backtests: "
        + ", ".join(f"{k} {_f(v, ',.0f')} MB" for k, v in mem["backtest_peak_rss_mb"].items())
        + f" (process RSS before them {_f(mem['rss_before_backtests_mb'], ',.0f')} MB, all "
        "benchmark bars included)."
    )
    lr = mem["long_run"]
    g = lr["growth_mb_per_100k_bars"]
    add("")
    add(
        f"Long run ({lr['bars']:,} bars, HMM, fresh process): RSS "
        f"{_f(lr['rss_with_bars_mb'], ',.0f')} MB with the bars loaded, "
        f"peak {_f(lr['peak_rss_mb'], ',.0f')} MB; growth "
        f"{_f(g['first_half'], '.1f')} MB per 100k bars in the first half, "
        f"{_f(g['second_half'], '.1f')} in the second ({lr['orders']:,} orders, their fills and "
        "positions stay in the engine's cache: linear, no acceleration with run length)."
    )
    return "\n".join(lines) + "\n"


def update_doc(doc: Path, table: str) -> None:
    """Replace the generated block of ``doc`` (created with the markers if missing)."""
    block = f"{BEGIN}\n{table}{END}"
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Latest results\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    doc.write_text(pattern.sub(lambda _: block, text, count=1))
