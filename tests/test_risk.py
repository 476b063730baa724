"""Circuit breakers and P&L tracking: each breaker trips, blocks only new risk, and resets by rule;
and in a real backtest a tripped breaker blocks orders and is recorded."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from hmm_strategy.risk import NS_PER_DAY, BreakerConfig, CircuitBreakers, PnLTracker

MIN15 = 15 * 60 * 10**9
OFF = {"daily_loss_limit": None, "max_drawdown": None, "stale_after_bars": None, "jump_sigma": None}


def breakers(**kwargs) -> CircuitBreakers:
    return CircuitBreakers(BreakerConfig(**{**OFF, **kwargs}))


def bars(b: CircuitBreakers, n: int, *, start: int = 1, pnl: float = 0.0, capital: float = 1e4):
    tripped = []
    for i in range(start, start + n):
        tripped += b.on_bar(i * MIN15, pnl, capital)
    return tripped


def test_pnl_tracker_average_cost_and_flips() -> None:
    p = PnLTracker()
    p.on_fill(1.0, 100.0, 0.1)
    p.on_fill(1.0, 110.0, 0.1)  # avg 105
    assert p.avg_px == pytest.approx(105.0)
    p.on_fill(-3.0, 120.0, 0.2)  # close 2 at +15 each, open 1 short at 120
    assert p.realized == pytest.approx(30.0)
    assert (p.qty, p.avg_px) == (-1.0, 120.0)
    p.mark(100.0)
    assert p.equity_pnl == pytest.approx(30.0 + 20.0 - 0.4)


def test_only_risk_increasing_orders_are_blocked() -> None:
    b = breakers()
    b.set_kill_switch(True, "operator")
    assert b.check_order(1.0, 2.0, 100.0, 1e6) == "kill_switch"  # grow
    assert b.check_order(1.0, -1.0, 100.0, 1e6) == "kill_switch"  # flip
    assert b.check_order(1.0, 0.5, 100.0, 1e6) is None  # reduce
    assert b.check_order(-2.0, 0.0, 100.0, 1e6) is None  # close
    b.set_kill_switch(False)
    assert b.check_order(1.0, 2.0, 100.0, 1e6) is None


def test_position_and_total_notional_caps() -> None:
    b = breakers(max_total_notional=1_500.0)
    assert b.check_order(0.0, 11.0, 100.0, max_notional=1_000.0) == "position_notional"
    assert b.check_order(0.0, 10.0, 100.0, max_notional=1_000.0) is None
    assert b.check_order(0.0, 10.0, 100.0, 1_000.0, other_notional=600.0) == "total_notional"


def test_daily_loss_trips_and_resets_next_utc_day() -> None:
    b = breakers(daily_loss_limit=0.05)
    assert b.on_bar(MIN15, 0.0, 10_000.0) == []
    assert b.on_bar(2 * MIN15, -400.0, 10_000.0) == []
    assert b.on_bar(3 * MIN15, -600.0, 10_000.0) == ["daily_loss"]
    assert "daily_loss" in b.tripped
    assert b.on_bar(NS_PER_DAY + MIN15, -600.0, 10_000.0) == []
    assert not b.tripped


def test_drawdown_from_high_water_mark_manual_reset() -> None:
    b = breakers(max_drawdown=0.10, drawdown_reset="manual")
    b.on_bar(MIN15, 500.0, 10_000.0)  # HWM 500
    assert b.on_bar(2 * MIN15, -600.0, 10_000.0) == ["drawdown"]
    b.on_bar(NS_PER_DAY + MIN15, 0.0, 10_000.0)
    assert "drawdown" in b.tripped  # manual: survives the day change
    b.reset("drawdown")
    assert not b.tripped


def test_consecutive_rejects_reset_on_fill() -> None:
    b = breakers(max_consecutive_rejects=3)
    assert b.on_reject() == [] and b.on_reject() == []
    assert b.on_reject() == ["rejects"]
    b.on_fill()
    assert not b.tripped and b.consecutive_rejects == 0


def test_stale_data_gap_trips_then_cools_down() -> None:
    b = breakers(stale_after_bars=3, cooldown_bars=2)
    assert bars(b, 5) == [] and b.missing_bars == 0
    assert b.on_bar(10 * MIN15, 0.0, 1e4) == ["stale_data"]  # 5 intervals gap
    assert b.missing_bars == 4  # bars 6..9 never came
    bars(b, 1, start=11)
    assert b.missing_bars == 0
    assert "stale_data" in b.tripped
    bars(b, 1, start=12)
    assert not b.tripped


def test_price_jump_in_sigmas_of_a_jump_free_volatility() -> None:
    b = breakers(jump_sigma=10.0, cooldown_bars=1)
    for i in range(30):  # 1% returns: the yardstick
        assert b.observe_return(0.01 if i % 2 else -0.01) == []
    assert b.observe_return(0.05) == []  # 5 sigma
    assert b.observe_return(-4.6) == ["price_jump"]  # a x100 print
    assert b.observe_return(4.6) == []  # back: still tripped, and the yardstick is unchanged
    assert b.var_ewm < 0.01**2 * 1.5
    b.on_bar(MIN15, 0.0, 1e4)
    assert "price_jump" in b.tripped
    b.on_bar(2 * MIN15, 0.0, 1e4)
    assert not b.tripped


def test_state_round_trip() -> None:
    b = breakers(max_drawdown=0.1, drawdown_reset="manual", stale_after_bars=3)
    bars(b, 3, pnl=100.0)
    b.on_bar(4 * MIN15, -2_000.0, 1e4)
    c = breakers(max_drawdown=0.1, drawdown_reset="manual", stale_after_bars=3)
    c.restore(b.state())
    assert c.state() == b.state()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"daily_loss_limit": 5.0}, "daily_loss_limit"),
        ({"max_drawdown": 0.0}, "max_drawdown"),
        ({"jump_sigma": 0.5}, "jump_sigma"),
        ({"max_consecutive_rejects": 0}, "max_consecutive_rejects"),
        ({"cooldown_bars": -1}, "cooldown_bars"),
    ],
)
def test_bad_breaker_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**kwargs)


def test_breaker_blocks_orders_in_a_real_backtest(tmp_path: Path) -> None:
    """A daily-loss limit of 0.1% of capital trips on real BTCUSDT data: every blocked order is
    recorded in events.csv, and while tripped no fill grows the position."""
    import yaml

    from backtests.run import run_backtest
    from hmm_strategy.config import DEFAULT_CONFIG, load_node_settings

    override = {
        "backtest": {"catalog_path": str(tmp_path / "catalog"), "end": "2024-04-01"},
        "strategies": [
            {
                "name": "hmm_btc",
                "config": {
                    "fit": {"warmup_bars": 500},
                    "policy": {"min_hold_bars": 4, "min_confidence": 0.6},
                    "breakers": {"daily_loss_limit": 0.001},
                },
            }
        ],
    }
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [tmp_path / "o.yaml"])
    run = run_backtest(settings, tmp_path / "run", tearsheet=False)
    events = pl.read_csv(run / "events.csv")
    blocked = events.filter(pl.col("kind") == "BreakerRejection")
    assert blocked.height > 0
    reasons = set(blocked["detail"].str.extract(r"reason=(\w+)").to_list())
    assert "daily_loss" in reasons and reasons <= {"daily_loss", "price_jump", "stale_data"}
    fills = pl.read_csv(run / "fills.csv")
    assert fills.height > 0  # it traded before (and between) trips
    fill_times = set(pl.Series(fills["ts_last"]).str.to_datetime().dt.epoch("ns").to_list())
    # a blocked bar never trades, except to flatten on a governance pause (risk-reducing)
    flattens = events.filter(pl.col("detail").str.contains("flatten=True"))["ts_event"].to_list()
    assert not (fill_times & set(blocked["ts_event"].to_list())) - set(flattens)


# -- trading calendars: closures are not gaps, holes inside a session are ----------------------

HOUR = 3_600 * 10**9
LEAN = "fx_or_equity/lean"
SPY_HOURLY = f"{LEAN}/equity/usa/hour/spy.zip"
EURUSD_HOURLY = f"{LEAN}/forex/oanda/hour/eurusd.zip"


def ny(text: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(text, tz="America/New_York").value)


def weekday_ny(ts: int) -> int:
    import pandas as pd

    return pd.Timestamp(ts, tz="UTC").tz_convert("America/New_York").weekday()


def test_calendars_count_only_open_market_time() -> None:
    from hmm_strategy.sessions import calendar_for

    assert calendar_for("24/7") is None
    xnys = calendar_for("XNYS")
    # Friday's last hourly bar (16:00) to Monday's first (10:00, the 09:30-10:00 bar): 30 min
    assert xnys.open_ns(ny("2019-03-08 16:00"), ny("2019-03-11 10:00")) == HOUR // 2
    # Thanksgiving closed, the day after closes at 13:00: Wed 16:00 -> Fri 13:00 = 3.5 h
    assert xnys.open_ns(ny("2019-11-27 16:00"), ny("2019-11-29 13:00")) == 7 * HOUR // 2
    assert xnys.open_ns(ny("2019-11-29 13:00"), ny("2019-12-02 10:00")) == HOUR // 2
    fx = calendar_for("FX")
    # the FX week: Friday 17:00 -> Sunday 18:00 New York is one open hour, across a DST change
    assert fx.open_ns(ny("2019-03-08 17:00"), ny("2019-03-10 18:00")) == HOUR
    assert fx.open_ns(ny("2019-11-01 17:00"), ny("2019-11-03 18:00")) == HOUR
    assert fx.open_ns(ny("2019-11-05 10:00"), ny("2019-11-05 14:00")) == 4 * HOUR  # mid-week
    # Christmas: closed from 14:00 on the 24th to 17:00 on the 25th
    assert fx.open_ns(ny("2019-12-24 14:00"), ny("2019-12-25 18:00")) == HOUR
    with pytest.raises(ValueError, match="breakers.calendar"):
        CircuitBreakers(BreakerConfig(calendar="NOT-AN-EXCHANGE"))


def test_calendar_remembers_a_session_without_changing_any_answer() -> None:
    """``open_ns`` answers from the session of the previous gap when both ends lie in it; pairs
    inside, across, at the bounds of and outside sessions, in an order that keeps leaving it."""
    from hmm_strategy.sessions import SessionCalendar

    cal = SessionCalendar("toy", [100, 300, 400, 600], [200, 400, 450, 700])
    cases = [
        ((110, 150), 40), ((150, 250), 50), ((110, 200), 90), ((100, 120), 20),
        ((190, 310), 20), ((310, 320), 10), ((350, 420), 70), ((390, 400), 10),
        ((120, 130), 10), ((460, 650), 50), ((50, 150), 100), ((650, 800), 150),
        ((695, 700), 5), ((700, 705), 5), ((320, 310), 0), ((410, 449), 39),
        ((110, 120), 10), ((150, 205), 50), ((310, 320), 10), ((295, 350), 50),
    ]  # fmt: skip
    for (t0, t1), want in cases * 2:  # twice: every pair also meets a remembered session
        assert cal.open_ns(t0, t1) == want, (t0, t1)


def replay_gaps(ts: list[int], calendar: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Run real bar times through the breakers: (stale-trip times, (time, missing) gap events)."""
    b = breakers(stale_after_bars=3, cooldown_bars=0, calendar=calendar)
    trips, gaps = [], []
    for t in ts:
        if b.on_bar(t, 0.0, 1e4):
            trips.append(t)
        if b.missing_bars:
            gaps.append((t, b.missing_bars))
    return trips, gaps


@pytest.fixture(scope="module")
def spy_hourly(data_dir: Path) -> list[int]:
    from marketdata.bars import load_bars

    return load_bars(data_dir / SPY_HOURLY).frame["ts_event"].to_list()


@pytest.fixture(scope="module")
def eurusd_hourly(data_dir: Path) -> list[int]:
    from marketdata.bars import load_bars

    return load_bars(data_dir / EURUSD_HOURLY).frame["ts_event"].to_list()


def test_spy_hourly_nights_weekends_and_holidays_are_not_gaps(spy_hourly: list[int]) -> None:
    """23 years of real SPY hourly bars: on calendar time every night trips the breaker; on the
    XNYS calendar nothing does. The one gap left is real: NYSE opened at 12:00 on 2002-09-11."""
    trips, gaps = replay_gaps(spy_hourly, "24/7")
    assert len(trips) > 5_000 and len(gaps) > 5_000  # every night and weekend
    trips, gaps = replay_gaps(spy_hourly, "XNYS")
    assert trips == []
    assert gaps == [(ny("2002-09-11 12:00"), 1)]  # 09:30-11:00 never traded: a late open


def test_eurusd_hourly_weekends_are_not_gaps(eurusd_hourly: list[int]) -> None:
    """12 years of real EUR/USD hourly bars: every weekend trips on calendar time; on the FX
    calendar no weekend or Christmas/New Year closure does, only holes inside the FX week."""
    fx_week = {"24/7": 0, "FX": 0}
    for calendar in fx_week:
        trips, _ = replay_gaps(eurusd_hourly, calendar)
        before = {t: prev for prev, t in zip(eurusd_hourly, eurusd_hourly[1:], strict=False)}
        # a plain weekend: the last bar on Friday, the next on Sunday (New York), 47-51 h apart
        weekends = [
            t
            for t in trips
            if 47 * HOUR <= t - before[t] <= 51 * HOUR
            and (weekday_ny(before[t]), weekday_ny(t)) == (4, 6)
        ]
        fx_week[calendar] = len(weekends)
        if calendar == "FX":
            from hmm_strategy.sessions import calendar_for

            fx = calendar_for("FX")
            assert trips, "the data has holes inside the FX week (e.g. 2016-12-09 -> 12-16)"
            assert all(fx.open_ns(before[t], t) > 3 * HOUR for t in trips)
    assert fx_week["24/7"] > 500
    assert fx_week["FX"] == 0


@pytest.mark.parametrize(
    ("fixture", "calendar", "hole_start", "n_missing"),
    [
        ("spy_hourly", "XNYS", "2019-06-12 11:00", 4),  # a Wednesday, 11:00-14:00 lost
        ("eurusd_hourly", "FX", "2018-06-13 03:00", 5),  # a Wednesday night in New York
    ],
)
def test_a_hole_inside_a_session_still_trips(
    request: pytest.FixtureRequest, fixture: str, calendar: str, hole_start: str, n_missing: int
) -> None:
    ts = request.getfixturevalue(fixture)
    start = ts.index(ny(hole_start))
    lost = ts[start : start + n_missing]
    assert lost[-1] - lost[0] == (n_missing - 1) * HOUR  # consecutive real bars, in a session
    kept = ts[:start] + ts[start + n_missing :]
    trips, gaps = replay_gaps(kept, calendar)
    after_hole = ts[start + n_missing]
    assert after_hole in trips
    assert (after_hole, n_missing) in gaps


def test_spy_backtest_on_the_xnys_calendar_has_no_closure_gaps(
    tmp_path: Path, data_dir: Path
) -> None:
    """The calendar reaches the strategy from the node config: a real backtest of a year of SPY
    hourly bars (about 250 nights and 50 weekends) records no DataGap and blocks no order as
    stale data, and still trades. On calendar time every night would be a gap."""
    import yaml

    from backtests.run import run_backtest
    from hmm_strategy.config import DEFAULT_CONFIG, load_node_settings

    iid, bar_type = "SPY.ARCA", "SPY.ARCA-1-HOUR-LAST-EXTERNAL"
    override = {
        "backtest": {
            "catalog_path": str(tmp_path / "catalog"),
            "data": [{"source": str(data_dir / SPY_HOURLY), "instrument_id": iid,
                      "bar_type": bar_type}],
            "venues": [{"name": "ARCA", "oms_type": "NETTING", "account_type": "MARGIN",
                        "starting_balances": ["1000000 USD"]}],
        },
        "strategies": [{"name": "hmm_btc", "config": {
            "instrument_id": iid, "bar_type": bar_type, "fit": {"warmup_bars": 500},
            "policy": {"min_hold_bars": 4, "min_confidence": 0.6},
            "breakers": {"calendar": "XNYS"},
        }}],
        "actors": [
            {"name": "metrics", "config": {"venue": "ARCA"}},
            {"name": "allocator", "config": {"venue": "ARCA", "currency": "USD"}},
            {"name": "governance", "config": {"currency": "USD"}},
        ],
        "risk": {"max_notional_per_order": {iid: 1_000_000}},
    }  # fmt: skip
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(override))
    settings = load_node_settings(DEFAULT_CONFIG, [tmp_path / "o.yaml"])
    run = run_backtest(settings, tmp_path / "run", start="2019-01-01", end="2020-01-01")
    decisions = pl.read_csv(run / "decisions.csv")
    assert decisions.height > 1_000  # a year of 7 bars a day, after the warm-up
    events = pl.read_csv(run / "events.csv")
    assert events.filter(pl.col("kind") == "DataGap").height == 0
    assert not events["detail"].str.contains("reason=stale_data").any()
    assert pl.read_csv(run / "fills.csv").height > 0
