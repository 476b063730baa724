"""Orders, fills, positions and account CSVs of a run: one writer for backtests and live nodes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.trading.trader import Trader


def write_trade_reports(trader: Trader, venues: list[Venue], run_dir: Path) -> None:
    """Orders, fills, positions and account CSVs from a backtest engine's or live node's trader."""
    trader.generate_orders_report().to_csv(run_dir / "orders.csv")
    trader.generate_order_fills_report().to_csv(run_dir / "fills.csv")
    trader.generate_positions_report().to_csv(run_dir / "positions.csv")
    frames = [trader.generate_account_report(venue) for venue in venues]
    frames = [f for f in frames if not f.empty]
    if frames:
        pd.concat(frames).to_csv(run_dir / "account.csv")
