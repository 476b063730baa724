"""Entry point kept where users find it: ``python -m backtests.ingest`` (``marketdata.ingest``)."""

from __future__ import annotations

from hmm_strategy import cli
from marketdata.ingest import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(cli.run_cli(main))
