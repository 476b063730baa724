"""``python -m bench [--quick]``: every benchmark in one process; JSON + Markdown table.

BLAS threads are pinned to one before numpy loads: the benchmarks measure single-threaded code
paths, and idle BLAS worker threads spinning on a shared 2-core machine only add noise.
"""

from __future__ import annotations

from bench import pin_blas_threads

pin_blas_threads()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    from bench.report import markdown, update_doc
    from bench.runner import MODES, run

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="~2.5-minute version (smaller sizes)")
    size.add_argument("--mode", choices=sorted(MODES), help="full (default), quick or tiny")
    parser.add_argument(
        "--output",
        help="result JSON (default: bench/results/latest.json for a full run, "
        "bench/results/<mode>.json otherwise)",
    )
    parser.add_argument(
        "--doc",
        help="Markdown file whose results block is replaced (default: docs/PERFORMANCE.md for a "
        "full run only: the figures in the docs come from full runs, never --quick; '' to skip)",
    )
    parser.add_argument("--work-dir", help="scratch folder (default: a new temp folder)")
    args = parser.parse_args(argv)
    mode = args.mode or ("quick" if args.quick else "full")
    command = "python -m bench" + {"full": "", "quick": " --quick"}.get(mode, f" --mode {mode}")

    full = mode == "full"
    results = root / "bench" / "results"
    if args.output is None:
        args.output = str(results / ("latest.json" if full else f"{mode}.json"))
    if args.doc is None:
        args.doc = str(root / "docs" / "PERFORMANCE.md") if full else ""
    result = run(mode, command, Path(args.work_dir) if args.work_dir else None)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    table = markdown(result)
    print("\n" + table)
    if args.doc:
        update_doc(Path(args.doc), table)
    print(f"results: {output}" + (f", table in {args.doc}" if args.doc else ""))
    return 0


if __name__ == "__main__":
    import sys

    from hmm_strategy.cli import run_cli

    sys.exit(run_cli(main))
