"""Offline training (``python -m hmm_strategy.train``) on real BTCUSDT 15m bars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml

from backtests.metrics import METRIC_ROWS
from hmm_strategy.artifacts import load_model
from hmm_strategy.config import DEFAULT_CONFIG, NodeSettings, load_node_settings
from hmm_strategy.metric_rows import fmt
from hmm_strategy.train import load_frame, main, strategy_target, to_ns
from marketdata.bars import load_bars

BTC_FILE = "binance/privet1x_crypto-trading-bot/BTCUSDT_15m.csv"
BAR_TYPE = "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL"
FAST_FIT = {"n_states": 3, "n_restarts": 1, "n_iter": 50, "seed": 0}
POLICY = {"min_confidence": 0.7, "min_hold_bars": 8, "cooldown_bars": 4}


def real_bars(data_dir: Path, start: str, end: str) -> pl.DataFrame:
    """Real BTCUSDT 15m bars closing in [start, end] (the shared data set, never copied)."""
    frame = load_bars(data_dir / BTC_FILE).frame
    return frame.filter(pl.col("ts_event").is_between(to_ns(start), to_ns(end)))


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    frame.select("ts_event", "open", "high", "low", "close", "volume").write_csv(path)
    return path


def settings_for(tmp: Path, source: Path, strategy: dict | None = None) -> NodeSettings:
    """The shipped node config with fast fits, the bars of ``source`` and folders in ``tmp``."""
    override = {
        "strategies": [
            {
                "name": "hmm_btc",
                "path": "hmm_strategy.strategy:HMMRegimeStrategy",
                "config": {"fit": FAST_FIT, "policy": POLICY, **(strategy or {})},
            }
        ],
        "backtest": {
            "catalog_path": str(tmp / "catalog"),
            "output_dir": str(tmp / "runs"),
            "data": [
                {
                    "source": str(source),
                    "format": "ohlcv_csv",
                    "instrument_id": "BTCUSDT.BINANCE",
                    "bar_type": BAR_TYPE,
                }
            ],
        },
    }
    path = tmp / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    return load_node_settings(DEFAULT_CONFIG, [path])


@pytest.fixture(scope="module")
def jan_feb(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train_data")
    return write_csv(real_bars(data_dir, "2024-01-01", "2024-02-29"), tmp / "btc.csv")


def test_cli_trains_on_the_range_only_and_writes_artifact_and_report(
    jan_feb: Path, tmp_path: Path
) -> None:
    settings_for(tmp_path, jan_feb)
    out = tmp_path / "models"
    args = [
        "--override",
        str(tmp_path / "override.yaml"),
        "--start",
        "2024-01-10",
        "--end",
        "2024-01-31T23:59:59",
        "--out",
        str(out),
        "--bic-grid",
        "2,3",
    ]
    assert main(args) == 0
    (artifact,) = (out / "hmm_btc").glob("*[0-9a-f].json")
    model, meta = load_model(
        artifact, expected_features=("trend", "realized_vol", "norm_range", "volume_z")
    )
    bars = pl.read_csv(jan_feb)
    inside = bars.filter(
        pl.col("ts_event").is_between(to_ns("2024-01-10"), to_ns("2024-01-31T23:59:59"))
    )
    assert meta.data_range == (inside["ts_event"][0], inside["ts_event"][-1])
    assert meta.instrument_id == "BTCUSDT.BINANCE" and meta.bar_type == BAR_TYPE
    assert meta.model_version == artifact.stem and meta.model_version.startswith("hmm_btc-")

    report = json.loads(artifact.with_suffix(".report.json").read_text())
    assert report["bars"] == inside.height
    assert report["feature_rows"] == inside.height - 49  # features warm up on 49 bars
    assert [c["n_states"] for c in report["bic_by_n_states"]] == [2, 3]
    assert [c["chosen"] for c in report["bic_by_n_states"]] == [False, True]
    assert all(c["bic"] is not None for c in report["bic_by_n_states"])
    assert len(report["states"]) == 3 == model.n_states_
    assert abs(sum(s["occupancy"] for s in report["states"]) - 1.0) < 1e-6
    means = [s["feature_means"]["trend"] for s in report["states"]]
    assert means == sorted(means)  # canonical order: state 0 most bearish
    assert all(
        s["return_volatility"] > 0 and s["expected_duration_bars"] > 1 for s in report["states"]
    )
    first = report["states"][0]
    assert first["expected_duration_hours"] == pytest.approx(
        first["expected_duration_bars"] * 0.25  # 15-minute bars
    )
    assert len(report["transition_matrix"]) == 3
    md = artifact.with_suffix(".report.md").read_text()
    assert "BIC per number of states" in md and "Transition matrix" in md
    # beside the baselines, through the backtest engine, over the training window only
    section = report["in_sample_comparison"]
    assert "error" not in section, section
    runs = section["comparison"]
    assert set(runs) == {"strategy", "buy_and_hold", "ema_cross"}
    for run in runs.values():
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in run.values()), run
    assert runs["buy_and_hold"]["trades"] == 1
    stats = json.loads((Path(section["run_dir"]) / "stats.json").read_text())
    first, last = stats["comparison"]["strategy"]["first_bar"], stats["comparison"]["strategy"][
        "last_bar"
    ]
    assert to_ns("2024-01-10") <= first and last <= to_ns("2024-01-31T23:59:59")
    assert "In-sample comparison" in md and "| total return |" in md
    # each row as the backtest labels and formats that metric (backtests.metrics.METRIC_ROWS),
    # from the backtest's own stats.json
    kinds = {label: (key, kind) for key, label, kind in METRIC_ROWS}
    section_md = md.split("## In-sample comparison", 1)[1].split("\n## ", 1)[0]
    table = [line.split(" | ") for line in section_md.splitlines() if line.startswith("| ")][1:]
    assert [row[0] for row in table] == [
        "| total return", "| Sharpe", "| max drawdown", "| fees", "| turnover (x equity / yr)",
        "| trades",
    ]  # fmt: skip
    for row in table:
        key, kind = kinds[row[0][2:]]
        runs = ("strategy", "buy_and_hold", "ema_cross")
        expected = [fmt(stats["comparison"][run].get(key), kind) for run in runs]
        assert [cell.strip(" |") for cell in row[1:]] == expected, row


def test_training_ignores_data_outside_the_range(jan_feb: Path, tmp_path: Path) -> None:
    """Changing every bar before start and after end changes nothing: no look-ahead."""
    bars = pl.read_csv(jan_feb)
    lo, hi = to_ns("2024-01-10"), to_ns("2024-01-25")
    outside = ~pl.col("ts_event").is_between(lo, hi)
    noisy = bars.with_columns(
        [
            pl.when(outside).then(pl.col(c) * 1.37).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ]
    )
    versions = []
    for name, frame in (("clean", bars), ("noisy", noisy)):
        d = tmp_path / name
        d.mkdir()
        source = write_csv(frame, d / "bars.csv")
        settings_for(d, source)
        args = [
            "--override",
            str(d / "override.yaml"),
            "--data",
            str(source),
            "--start",
            "2024-01-10",
            "--end",
            "2024-01-25",
            "--out",
            str(d / "m"),
            "--bic-grid",
            "",
        ]
        assert main(args) == 0
        (artifact,) = (d / "m" / "hmm_btc").glob("*[0-9a-f].json")
        versions.append(load_model(artifact)[1].model_version)
        skipped = json.loads(artifact.with_suffix(".report.json").read_text())
        assert "--data" in skipped["in_sample_comparison"]["skipped"]
    assert versions[0] == versions[1]


def test_catalog_and_strategy_settings(jan_feb: Path, tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, jan_feb, {"features": {"vol_window": 10, "volume_window": 30}}
    )
    target = strategy_target(settings, "hmm_btc")
    assert target.strategy_id == "HMMRegimeStrategy-001"
    assert (target.features.vol_window, target.fit.n_restarts) == (10, 1)
    frame = load_frame(settings, BAR_TYPE, "2024-02-01", "2024-02-02")
    assert frame.height == 97 and frame["ts_event"][0] == to_ns("2024-02-01")
    assert strategy_target(settings, "HMMRegimeStrategy-001").name == "hmm_btc"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", "2024-02-01", "--end", "2024-01-01"], "is not after --start"),
        (["--start", "2025-01-01", "--end", "2025-02-01"], "no BTCUSDT.BINANCE-15-MINUTE"),
        (["--start", "2024-01-01", "--end", "2024-01-01T06:00"], "feature row"),
        (["--start", "2024-01-01", "--end", "2024-02-01", "--strategy", "nope"], "no strategy"),
        (["--start", "yesterday-ish", "--end", "2024-02-01"], "is not an ISO date/time"),
    ],
)
def test_cli_errors_are_clear(
    jan_feb: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, message: str
) -> None:
    settings_for(tmp_path, jan_feb)
    args = [
        "--override",
        str(tmp_path / "override.yaml"),
        "--data",
        str(jan_feb),
        "--out",
        str(tmp_path / "m"),
        "--bic-grid",
        "",
        *extra,
    ]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse rejects a malformed time before main runs
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1  # one line naming the problem


def test_hierarchical_training_saves_both_levels_for_the_strategy(
    jan_feb: Path, tmp_path: Path
) -> None:
    """A strategy with a slow level trains both levels; the artifact loads only for it."""
    from hmm_strategy.artifacts import ModelArtifactError
    from hmm_strategy.engine import RegimeEngine

    slow = {"bars_per_bar": 16, "n_states": 2, "warmup_bars": 250}
    settings = settings_for(tmp_path, jan_feb, {"slow": slow})
    out = tmp_path / "models"
    override = str(tmp_path / "override.yaml")
    assert (
        main(
            [
                "--override",
                override,
                "--start",
                "2024-01-01",
                "--end",
                "2024-03-01",
                "--out",
                str(out),
                "--no-compare",
            ]
        )
        == 0
    )
    (artifact,) = (out / "hmm_btc").glob("*[0-9a-f].json")
    target = strategy_target(settings)
    model, meta = load_model(artifact, expected=target.expected_model())
    assert meta.slow is not None and meta.slow.bars_per_bar == 16
    assert meta.slow.model.n_states_ == 2 and meta.slow.model.covariance_type == "diag"
    report = json.loads(artifact.with_suffix(".report.json").read_text())
    # complete coarse bars of the training bars, minus the slow features' warm-up (23 rows)
    assert meta.slow.model.diagnostics_["n_samples"] == report["bars"] // 16 - 23
    assert report["slow"]["bars_per_bar"] == 16
    (tmp_path / "single").mkdir()
    single = strategy_target(settings_for(tmp_path / "single", jan_feb))
    with pytest.raises(ModelArtifactError, match="the strategy is single-level"):
        load_model(artifact, expected=single.expected_model())
    engine = RegimeEngine(target.features, target.policy, target.fit, model, "v",
                          slow=target.slow, slow_model=meta.slow.model)  # fmt: skip
    assert engine.ready
