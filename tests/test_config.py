"""The one node config: validation errors name the file and the key, before anything starts."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import yaml

from hmm_strategy.config import DEFAULT_CONFIG, ConfigError, load_node_settings


def write(tmp: Path, data: dict | str, name: str = "override.yaml") -> Path:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def strategy(**config) -> dict:
    base = {
        "instrument_id": "BTCUSDT.BINANCE",
        "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL",
    }
    return {
        "strategies": [
            {"path": "hmm_strategy.strategy:HMMRegimeStrategy", "config": {**base, **config}}
        ]
    }


def test_shipped_config_loads() -> None:
    settings = load_node_settings(DEFAULT_CONFIG)
    assert settings.trader_id == "HMM-001"
    assert settings.strategies[0].path == "hmm_strategy.strategy:HMMRegimeStrategy"
    assert settings.backtest is not None and settings.backtest.data


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"tradr_id": "X"}, "tradr_id"),
        ({"backtest": {"catalog_pth": "x"}}, "catalog_pth"),
        ({"risk": {"bypass": "maybe"}}, "$.risk.bypass"),
        (
            {
                "backtest": {
                    "venues": [
                        {"name": "SIM", "starting_balances": ["1 USD"], "oms_type": "NETTINGX"}
                    ]
                }
            },
            "oms_type",
        ),
        (strategy(policy={"min_confidence": "high"}), "strategies[0].config.policy.min_confidence"),
        (strategy(policy={"min_confidence": 3.0}), "min_confidence"),
        (strategy(fit={"warmup_bars": 10}), "warmup_bars"),
        (strategy(fit={"n_states": 9}), "n_states must be 2..8, was 9"),  # p0..p7 in decisions
        (strategy(features={"vol_window": 1}), "vol_window"),
        (strategy(unknown_knob=1), "unknown_knob"),
        ({"strategies": [{"path": "no_such_module:Strategy"}]}, "strategies[0].path"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, override: dict, expected: str) -> None:
    path = write(tmp_path, override)
    with pytest.raises(ConfigError) as info:
        load_node_settings(DEFAULT_CONFIG, [path])
    assert expected in str(info.value)
    assert "override.yaml" in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_node_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_node_settings(write(tmp_path, "a: [1, 2"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_node_settings(write(tmp_path, "- 1\n- 2\n"))


def test_env_substitution_and_unset_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HMM_TEST_TRADER", "TRADER-777")
    settings = load_node_settings(
        DEFAULT_CONFIG, [write(tmp_path, {"trader_id": "${HMM_TEST_TRADER}"})]
    )
    assert settings.trader_id == "TRADER-777"
    monkeypatch.delenv("HMM_TEST_TRADER")
    with pytest.raises(ConfigError, match=r"\$\.trader_id uses \$\{HMM_TEST_TRADER\}"):
        load_node_settings(DEFAULT_CONFIG, [write(tmp_path, {"trader_id": "${HMM_TEST_TRADER}"})])


def test_overrides_layer_deeply(tmp_path: Path) -> None:
    path = write(tmp_path, {"backtest": {"start": "2024-03-01"}})
    settings = load_node_settings(DEFAULT_CONFIG, [path])
    assert settings.backtest.start == "2024-03-01"
    assert settings.backtest.catalog_path == "catalog"  # untouched keys survive the layering


def test_risk_settings_reach_both_nodes_and_live_keeps_graceful_shutdown(tmp_path: Path) -> None:
    """One conversion of ``risk:`` for the backtest and the live node; the live RiskEngine stops
    the node on an exception in its queue like the data and execution engines do."""
    from hmm_strategy.config import backtest_run_config, trading_node_config, venue_settings

    settings = load_node_settings(DEFAULT_CONFIG)
    live = trading_node_config(settings, venue_settings(settings, "replay"), tmp_path / "run")
    backtest = backtest_run_config(settings, tmp_path / "bt")
    for risk in (live.risk_engine, backtest.engine.risk_engine):
        assert risk.bypass == settings.risk.bypass
        assert risk.max_order_submit_rate == settings.risk.max_order_submit_rate
        assert risk.max_order_modify_rate == settings.risk.max_order_modify_rate
        assert risk.max_notional_per_order == settings.risk.max_notional_per_order
    assert live.risk_engine.graceful_shutdown_on_exception is True
    assert live.data_engine.graceful_shutdown_on_exception is True
    assert live.exec_engine.graceful_shutdown_on_exception is True


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("metrics", {"venue": "BINANCE", "stale_after_secs": 0}, "stale_after_secs must be > 0"),
        ("metrics", {"venue": "bad venue{}"}, "venue must match"),
        ("kill_switch", {"poll_secs": 0}, "poll_secs must be > 0"),
    ],
)
def test_actor_configs_are_validated_when_the_config_loads(
    tmp_path: Path, name: str, config: dict, expected: str
) -> None:
    override = write(tmp_path, {"actors": [{"name": name, "config": config}]})
    with pytest.raises(ConfigError, match=rf"actors\[\d+\]\.config: {expected}"):
        load_node_settings(DEFAULT_CONFIG, [override])


TRAIN_YAML = DEFAULT_CONFIG.parent / "train.yaml"


def _trainer(settings) -> dict:
    (spec,) = [a for a in settings.actors if a.name == "online_trainer"]
    return spec.config


def test_the_trainer_takes_its_strategys_settings_by_name() -> None:
    from actors.online_trainer import OnlineTrainerConfig
    from hmm_strategy.train import strategy_target

    settings = load_node_settings(DEFAULT_CONFIG, [TRAIN_YAML])
    cfg = OnlineTrainerConfig.parse(msgspec.json.encode(_trainer(settings)))
    target = strategy_target(settings, "hmm_btc")
    assert (cfg.strategy_id, cfg.instrument_id, cfg.bar_type) == (
        target.strategy_id,
        target.instrument_id,
        target.bar_type,
    )
    assert (cfg.features, cfg.fit, cfg.policy) == (target.features, target.fit, target.policy)


def test_a_strategy_setting_changed_in_one_place_reaches_the_trainer(tmp_path: Path) -> None:
    changed = write(
        tmp_path, {"strategies": [{"name": "hmm_btc", "config": {"features": {"vol_window": 30}}}]}
    )
    settings = load_node_settings(DEFAULT_CONFIG, [TRAIN_YAML, changed])
    assert _trainer(settings)["features"]["vol_window"] == 30


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ({"features": {"vol_window": 30}}, r"config\.features differs from strategy 'hmm_btc'"),
        (
            {"strategy": "nope"},
            r"config\.strategy: no strategy 'nope' in the node config; "
            r"known by name or id: hmm_btc = HMMRegimeStrategy-001",
        ),
    ],
)
def test_a_trainer_that_disagrees_with_its_strategy_fails_the_load(
    tmp_path: Path, trainer: dict, expected: str
) -> None:
    override = write(tmp_path, {"actors": [{"name": "online_trainer", "config": trainer}]})
    with pytest.raises(ConfigError, match=expected):
        load_node_settings(DEFAULT_CONFIG, [TRAIN_YAML, override])


def test_a_name_that_is_another_strategys_id_says_to_pass_an_id(tmp_path: Path) -> None:
    from hmm_strategy.train import strategy_target

    second = {
        "name": "HMMRegimeStrategy-001",  # the id of the shipped hmm_btc
        "path": "hmm_strategy.strategy:HMMRegimeStrategy",
        "config": {"instrument_id": "BTCUSDT.BINANCE",
                   "bar_type": "BTCUSDT.BINANCE-15-MINUTE-LAST-EXTERNAL", "order_id_tag": "002"},
    }  # fmt: skip
    settings = load_node_settings(DEFAULT_CONFIG, [write(tmp_path, {"strategies": [second]})])
    with pytest.raises(ConfigError) as info:
        strategy_target(settings, "HMMRegimeStrategy-001")
    assert str(info.value) == (
        "pass 'hmm_btc' or 'HMMRegimeStrategy-002': 'HMMRegimeStrategy-001' is one strategy's "
        "name and another's id (hmm_btc = HMMRegimeStrategy-001, "
        "HMMRegimeStrategy-001 = HMMRegimeStrategy-002)"
    )
    # each handle the error offers picks one strategy
    assert strategy_target(settings, "hmm_btc").strategy_id == "HMMRegimeStrategy-001"
    assert strategy_target(settings, "HMMRegimeStrategy-002").name == "HMMRegimeStrategy-001"
