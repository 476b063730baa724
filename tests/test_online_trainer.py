"""Online retraining, shadow, promotion/rejection, rollback: in the real node and in isolation."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
import yaml

from actors.model_lifecycle import (
    FitJob,
    FitRunner,
    LifecycleLog,
    LifecycleSettings,
    ModelLifecycle,
    fit_candidate,
    match_states,
    new_request,
    pending_requests,
    permute_states,
    read_lifecycle,
    submit_request,
)
from actors.promote import main as promote_main
from actors.registry import MODEL_EVENTS, Registry
from backtests.run import run_backtest
from hmm_strategy.artifacts import save_model
from hmm_strategy.config import DEFAULT_CONFIG, REPO_ROOT, ComponentSpec
from hmm_strategy.engine import FitSettings, RegimeEngine
from hmm_strategy.features import FeatureSpec, feature_matrix
from hmm_strategy.messages import ModelUpdate, RegimeUpdate
from hmm_strategy.policy import PolicyConfig
from hmm_strategy.synthetic import RegimeProcess, generate_regime_bars
from hmm_strategy.train import fit_model, iso, model_version, strategy_target, train
from tests.test_train import BAR_TYPE, FAST_FIT, POLICY, settings_for, write_csv

SID = "HMMRegimeStrategy-001"
INSTRUMENT = "BTCUSDT.BINANCE"
FIT = {**FAST_FIT, "warmup_bars": 500, "history_bars": 300}
DECISIONS = ("promoted", "rejected")
# after the change: twice the drift, 2.5x the volatility, more volume
AFTER = RegimeProcess(
    drift=(-0.003, 0.0, 0.002), volatility=(0.03, 0.015, 0.008), log_volume=(5.0, 4.2, 3.6)
)


def regime_change(n_before: int, n_after: int) -> pl.DataFrame:
    """Synthetic bars whose generating process changes after ``n_before`` bars."""
    a = generate_regime_bars(n_before, seed=3)
    b = generate_regime_bars(
        n_after,
        seed=4,
        start_ns=int(a["ts_event"][-1]),
        process=msgspec.structs.replace(AFTER, start_price=float(a["close"][-1])),
    )
    return pl.concat([a, b]).drop("state")


def follows_rule(e) -> bool:
    """The configured rule, recomputed from a decision's recorded evidence."""
    ev = e.evidence
    improvement = ev["shadow_score"] - ev["champion_score"]
    assert improvement == pytest.approx(ev["improvement"])
    ok = improvement > ev["margin"] and ev["shadow"]["max_drawdown"] <= ev["max_drawdown_limit"]
    return ok == (e.event == "promoted")


# ------------------------------------------------------------------------- the real node
@pytest.fixture(scope="module")
def node_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("online")
    bars = regime_change(2500, 2500)
    source = write_csv(bars, tmp / "synthetic.csv")
    settings = settings_for(tmp, source, {"fit": FIT})
    champion = train(strategy_target(settings), bars.head(1500), tmp / "models", write_report=False)
    corrupt = tmp / "corrupt.json"
    doc = json.loads(champion.artifact.read_text())
    doc["params"]["means"][0][0] += 0.5  # edited after saving: the checksum no longer matches
    corrupt.write_text(json.dumps(doc))

    trainer = ComponentSpec(
        name="trainer",
        path="actors.online_trainer:OnlineTrainer",
        config={
            "strategy_id": SID,
            "instrument_id": INSTRUMENT,
            "bar_type": BAR_TYPE,
            "champion_path": str(champion.artifact),
            "fit": FIT,
            "policy": POLICY,
            "model_dir": "{run_dir}/models",
            "shadow_decisions_path": "{run_dir}/shadow.csv",
            "lifecycle": {
                "history_bars": 1000,
                "min_train_bars": 700,
                "retrain_every_bars": 700,
                "drift_window": None,
                "eval_bars": 250,
                "metric": "log_likelihood",
                "margin": 0.0,
                "max_drawdown": 0.5,
            },
        },
    )
    strategy = msgspec.structs.replace(
        settings.strategies[0],
        config={**settings.strategies[0].config, "model_path": str(champion.artifact)},
    )
    recorder, governance = (
        next(a for a in settings.actors if a.name == name) for name in ("decisions", "governance")
    )
    settings = msgspec.structs.replace(
        settings, strategies=[strategy], actors=[recorder, governance, trainer]
    )
    start = iso(int(bars["ts_event"][1500]))
    runs = {}
    for name in ("a", "b"):
        request = new_request(SID, "promote", "try this one", model_path=str(corrupt))
        submit_request(tmp / name / "models" / "requests", request)
        runs[name] = run_backtest(settings, tmp / name, start=start, tearsheet=False)
    return {"runs": runs, "champion": champion, "bars": bars}


def test_online_trainer_shadows_candidates_and_promotes_by_the_rule(node_runs: dict) -> None:
    run = node_runs["runs"]["a"]
    events = read_lifecycle(run / "models" / "lifecycle.jsonl")
    kinds = [e.event for e in events]
    assert kinds[0] == "champion" and events[0].version == node_runs["champion"].version
    assert kinds.count("fit_started") >= 3
    assert kinds.count("candidate") == kinds.count("shadow_started") == kinds.count("fit_started")
    decisions = [e for e in events if e.event in DECISIONS and e.source == "policy"]
    assert len(decisions) >= 3
    for e in decisions:
        assert follows_rule(e), e
        assert e.evidence["shadow"]["bars"] == e.evidence["champion"]["bars"] == 250
        # scored out of sample: every evaluated bar closed after the candidate's training data
        assert e.evidence["shadow"]["first_ts"] >= e.evidence["candidate"]["data_range"][1]
    promoted = [e for e in decisions if e.event == "promoted"]
    assert promoted, "the regime change should get a candidate promoted"
    first_after = next(e for e in promoted if e.ts_event > int(node_runs["bars"]["ts_event"][2500]))
    assert first_after.evidence["improvement"] > 0

    # the strategy obeyed: its decisions switch to each promoted version right after promotion
    dec = pl.read_csv(run / "decisions.csv")
    for e in promoted:
        later = dec.filter(pl.col("ts_event") > e.ts_event)
        assert later["model_version"][0] == e.version
    champion_rows = dec.filter(pl.col("ts_event") <= promoted[0].ts_event)
    assert (champion_rows["model_version"] == node_runs["champion"].version).all()

    # the shadow's decisions are recorded (and it never traded: only the strategy has orders)
    shadow = pl.read_csv(run / "shadow.csv")
    versions = {e.version for e in events if e.event == "shadow_started"}
    assert set(shadow["model_version"].unique()) == versions
    assert shadow.height >= 250 * len(decisions)
    orders = pl.read_csv(run / "orders.csv")
    assert set(orders["strategy_id"].unique()) == {SID}


def test_every_model_decision_is_in_the_strategy_registry(node_runs: dict) -> None:
    run = node_runs["runs"]["a"]
    events = read_lifecycle(run / "models" / "lifecycle.jsonl")
    logged = [e for e in events if e.event in MODEL_EVENTS]
    registry = Registry.open(run / "governance" / "registry.json", "HMM-001")
    recorded = registry.model_decisions(SID)
    assert len(recorded) == len(logged) >= 3
    for d, e in zip(recorded, logged, strict=True):
        assert (d.event, d.version, d.source, d.reason, d.log_seq) == (
            e.event, e.version, e.source, e.reason, e.seq,
        )  # fmt: skip
        assert d.ts_event == e.ts_event and d.model_path == e.path
        assert d.evidence == json.loads(json.dumps(e.evidence))  # the evidence, whole
        if d.event == "promoted":
            assert d.previous_version == e.evidence["previous_version"]
        if d.event == "rejected" and d.source == "policy":
            assert d.previous_version == e.evidence["champion_version"]
    promoted = [d for d in recorded if d.event in ("promoted", "rolled_back")]
    assert registry.strategy(SID).model_version == promoted[-1].version
    # one timeline with governance's own decisions: sequence numbers are unique and increasing
    seqs = sorted([d.seq for d in recorded] + [d.seq for d in registry.decisions(SID)])
    assert len(set(seqs)) == len(seqs)

    # the operator's view: `python -m actors.registry models <strategy>` shows them with evidence
    out = subprocess.run(
        [sys.executable, "-m", "actors.registry", "--registry", str(registry.path), "models", SID],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.count(" model ") == len(recorded)
    assert f"model promoted {promoted[-1].version}" in out and "improvement=" in out


def test_corrupted_candidate_is_refused_and_the_champion_keeps_trading(node_runs: dict) -> None:
    run = node_runs["runs"]["a"]
    events = read_lifecycle(run / "models" / "lifecycle.jsonl")
    refused = [e for e in events if e.event == "request_rejected"]
    assert len(refused) == 1 and "checksum mismatch" in refused[0].reason
    assert list((run / "models" / "requests" / "rejected").glob("*.json"))
    dec = pl.read_csv(run / "decisions.csv")
    assert dec["model_version"][0] == node_runs["champion"].version


def test_a_backtest_with_online_training_is_reproducible(node_runs: dict) -> None:
    a, b = (node_runs["runs"][k] for k in ("a", "b"))

    def plain(run: Path) -> list[dict]:
        out = []
        for e in read_lifecycle(run / "models" / "lifecycle.jsonl"):
            d = msgspec.to_builtins(e)
            d["path"] = d["path"] and Path(d["path"]).name
            d["evidence"] = json.loads(json.dumps(d["evidence"]).replace(str(run), "RUN"))
            d["evidence"].pop("request_id", None)  # a random id given by the operator's CLI
            out.append(d)
        return out

    assert plain(a) == plain(b)
    assert (a / "decisions.csv").read_bytes() == (b / "decisions.csv").read_bytes()


# ------------------------------------------------------------------ the lifecycle alone
@pytest.fixture(scope="module")
def synthetic() -> dict:
    bars = regime_change(1500, 1500)
    spec = FeatureSpec()
    fit = FitSettings(**FIT)
    model = fit_model(bars.head(1000), spec, fit)
    return {"bars": bars, "model": model, "spec": spec, "fit": fit}


def make_lifecycle(
    tmp: Path, synthetic: dict, policy: dict | None = None, **settings
) -> tuple[ModelLifecycle, str]:
    model = synthetic["model"]
    ts = synthetic["bars"]["ts_event"]
    version = model_version("champ", int(ts[999]), model)
    path = tmp / f"{version}.json"
    save_model(
        model,
        path,
        feature_spec=synthetic["spec"],
        data_range=(int(ts[0]), int(ts[999])),
        instrument_id=INSTRUMENT,
        bar_type=BAR_TYPE,
        version=version,
    )
    lc = ModelLifecycle(
        strategy_id=SID,
        instrument_id=INSTRUMENT,
        bar_type=BAR_TYPE,
        features=synthetic["spec"],
        policy=PolicyConfig(**(policy or POLICY)),
        fit=synthetic["fit"],
        settings=LifecycleSettings(
            **{
                "history_bars": 800,
                "min_train_bars": 600,
                "retrain_every_bars": 500,
                "drift_window": None,
                "eval_bars": 150,
                "metric": "log_likelihood",
                "max_drawdown": 0.5,
                **settings,
            }
        ),
        model_dir=tmp / "models",
        log=LifecycleLog(tmp / "lifecycle.jsonl"),
    )
    lc.start(int(ts[999]), str(path))
    return lc, str(path)


class Simulated:
    """The strategy without a node: a RegimeEngine that obeys (or ignores) ModelUpdate."""

    def __init__(self, lc: ModelLifecycle, champion: str, obey: bool = True) -> None:
        from hmm_strategy.artifacts import load_model

        self.load = load_model
        self.lc, self.obey = lc, obey
        model, meta = load_model(champion)
        self.engine = RegimeEngine(
            lc.features_spec, lc.policy_config, lc.fit, model, meta.model_version
        )
        self.published: list[ModelUpdate] = []

    def act(self, ts: int, actions: list) -> None:
        for action in actions:
            if isinstance(action, FitJob):
                self.act(ts, self.lc.on_fit_result(ts, fit_candidate(action.payload)))
            elif isinstance(action, ModelUpdate):
                self.published.append(action)
                if self.obey:
                    model, meta = self.load(action.model_path)
                    self.engine.set_model(model, meta.model_version)

    def run(self, bars: pl.DataFrame) -> None:
        for ts, o, h, lo, c, v in bars.select(
            "ts_event", "open", "high", "low", "close", "volume"
        ).iter_rows():
            self.act(ts, self.lc.on_bar(ts, o, h, lo, c, v))
            d = self.engine.update(o, h, lo, c, v)
            if d is not None:
                update = RegimeUpdate(
                    ts,
                    SID,
                    INSTRUMENT,
                    c,
                    d.probs,
                    d.state,
                    d.target_exposure,
                    self.engine.model_version,
                    d.log_likelihood,
                )
                self.act(ts, self.lc.on_regime_update(update))


def test_rollback_reject_and_bad_requests(tmp_path: Path, synthetic: dict) -> None:
    lc, champion = make_lifecycle(tmp_path, synthetic)
    sim = Simulated(lc, champion)
    sim.run(synthetic["bars"].slice(1000, 150))
    assert lc.shadow is None and not sim.published
    sim.run(synthetic["bars"].slice(1150, 500))  # a fit at 600 bars: its shadow is running
    assert lc.shadow is not None
    ts = int(synthetic["bars"]["ts_event"][1649])

    applied, _, actions = lc.on_request(ts, new_request(SID, "reject", "looks odd"))
    assert applied and not actions and lc.shadow is None
    applied, why, _ = lc.on_request(ts, new_request(SID, "reject", "again"))
    assert not applied and "no candidate" in why

    bad = tmp_path / "bad.json"
    bad.write_text(Path(champion).read_text()[:-200])
    applied, why, _ = lc.on_request(ts, new_request(SID, "promote", "x", model_path=str(bad)))
    assert not applied and "not valid JSON" in why
    other = tmp_path / "other.json"
    save_model(
        synthetic["model"],
        other,
        feature_spec=synthetic["spec"],
        data_range=(0, 1),
        instrument_id="ETHUSDT.BINANCE",
        bar_type=BAR_TYPE,
    )
    applied, why, _ = lc.on_request(ts, new_request(SID, "promote", "x", model_path=str(other)))
    assert not applied and "instrument_id is ETHUSDT.BINANCE, expected BTCUSDT.BINANCE" in why

    sim.run(synthetic["bars"].slice(1650, 1350))
    promoted = [e for e in read_lifecycle(tmp_path / "lifecycle.jsonl") if e.event == "promoted"]
    assert promoted and sim.engine.model_version == promoted[-1].version
    champ_version = read_lifecycle(tmp_path / "lifecycle.jsonl")[0].version
    applied, _, actions = lc.on_request(
        ts, new_request(SID, "rollback", "bad promotion", version=champ_version)
    )
    assert applied and actions[0].model_path == champion
    sim.act(ts, actions)
    assert sim.engine.model_version == champ_version
    last = read_lifecycle(tmp_path / "lifecycle.jsonl")[-1]
    assert last.event == "rolled_back" and last.source == "operator"
    assert last.evidence["previous_version"] == promoted[-1].version
    applied, why, _ = lc.on_request(ts, new_request(SID, "rollback", "x", version="nope"))
    assert not applied and "not recorded" in why


def test_promotion_failed_when_the_strategy_keeps_its_champion(tmp_path, synthetic) -> None:
    lc, champion = make_lifecycle(tmp_path, synthetic, margin=-1e9)  # always promote
    sim = Simulated(lc, champion, obey=False)
    sim.run(synthetic["bars"].slice(1000, 800))
    assert sim.published
    events = read_lifecycle(tmp_path / "lifecycle.jsonl")
    failed = [e for e in events if e.event == "promotion_failed"]
    assert failed and failed[0].version == sim.published[0].model_version
    assert lc.champion.version == sim.engine.model_version  # back to the real champion


def test_corrupt_or_failed_candidates_are_rejected(tmp_path: Path, synthetic: dict) -> None:
    lc, champion = make_lifecycle(tmp_path, synthetic)
    corrupt = tmp_path / "cand.json"
    corrupt.write_text(
        Path(champion)
        .read_text()
        .replace('"covariance_type": "full"', '"covariance_type": "weird"')
    )
    assert lc.on_fit_result(1, {"ok": True, "version": "v1", "path": str(corrupt)}) == []
    assert lc.on_fit_result(2, {"ok": False, "error": "ValueError: too few rows"}) == []
    events = read_lifecycle(tmp_path / "lifecycle.jsonl")
    assert [e.event for e in events[-3:]] == ["candidate", "rejected", "fit_failed"]
    assert "checksum mismatch" in events[-2].reason and lc.shadow is None


def test_the_shadow_decides_as_the_strategy_would_in_every_policy_mode(
    tmp_path: Path, synthetic: dict
) -> None:
    """The shadow is a RegimeEngine, not a copy of one: in vol_target mode it sizes by the
    candidate's volatility forecast (a filter + policy copy had none and crashed), and its
    decisions equal those of an engine that switched to the candidate at the shadow's start."""
    policy = {**POLICY, "mode": "vol_target", "target_vol": 0.002}
    lc, champion = make_lifecycle(tmp_path, synthetic, policy=policy, metric="pnl")
    shadow_rows: list[tuple] = []
    lc.on_shadow_decision = lambda ts, version, probs, state, target, ll: shadow_rows.append(
        (ts, version, tuple(float(p) for p in probs), state, target)
    )
    sim = Simulated(lc, champion)
    sim.run(synthetic["bars"].slice(1000, 800))
    assert shadow_rows, "no shadow ran"
    targets = np.array([row[4] for row in shadow_rows])
    assert np.isfinite(targets).all() and (np.abs(targets) <= 1.0).all()
    assert ((np.abs(targets) > 0) & (np.abs(targets) < 1)).any(), "no volatility sizing"
    # the same candidate in the strategy's engine, switched in where the shadow started
    started = next(
        e for e in read_lifecycle(tmp_path / "lifecycle.jsonl") if e.event == "shadow_started"
    )
    from hmm_strategy.artifacts import load_model

    model, _ = load_model(started.path)
    twin = Simulated(lc, champion)  # only its engine is used
    expected = {}
    for ts, o, h, lo, c, v in (
        synthetic["bars"]
        .slice(1000, 800)
        .select("ts_event", "open", "high", "low", "close", "volume")
        .iter_rows()
    ):
        d = twin.engine.update(o, h, lo, c, v)
        if ts == started.ts_event:  # the fit landed on this bar: the shadow starts after it
            twin.engine.set_model(model, started.version, replay_policy=True)
        elif d is not None and twin.engine.model_version == started.version:
            expected[ts] = (d.state, d.target_exposure)
    got = {row[0]: (row[3], row[4]) for row in shadow_rows if row[1] == started.version}
    assert got and got == {ts: expected[ts] for ts in got}


def test_drift_triggers_a_refit_only_after_the_change(tmp_path: Path, synthetic: dict) -> None:
    lc, champion = make_lifecycle(
        tmp_path,
        synthetic,
        retrain_every_bars=None,
        drift_window=300,
        drift_threshold=2.0,
        min_bars_between_fits=0,
        eval_bars=2000,
    )
    # from bar 200 (inside the champion's own training data) to 500 bars after the change
    Simulated(lc, champion).run(synthetic["bars"].slice(200, 1800))
    fits = [e for e in read_lifecycle(tmp_path / "lifecycle.jsonl") if e.event == "fit_started"]
    change = int(synthetic["bars"]["ts_event"][1500])
    assert len(fits) == 1 and fits[0].reason.startswith("drift:")
    assert change < fits[0].ts_event


def test_state_matching_and_async_fits(tmp_path: Path, synthetic: dict) -> None:
    model = synthetic["model"]
    perm = [2, 0, 1]
    shuffled = permute_states(model, perm)
    X = feature_matrix(synthetic["bars"].slice(1000, 300), synthetic["spec"])
    assert shuffled.score(X) == pytest.approx(model.score(X), rel=1e-9)
    assert np.allclose(shuffled.filter_proba(X), model.filter_proba(X)[:, perm])
    scale = model.scaler_std_
    back = match_states(model.means_raw() / scale, shuffled.means_raw() / scale)
    assert back == perm  # candidate state perm[i] is the champion's state i

    bars = synthetic["bars"].slice(1000, 600)
    job = {
        "bars": {
            c: bars[c].to_list() for c in ("ts_event", "open", "high", "low", "close", "volume")
        },
        "features": msgspec.to_builtins(synthetic["spec"]),
        "fit": msgspec.to_builtins(synthetic["fit"]),
        "name": SID,
        "instrument_id": INSTRUMENT,
        "bar_type": BAR_TYPE,
        "model_dir": str(tmp_path / "async"),
        "match_states": False,
    }
    sync = FitRunner("sync").submit(job)
    runner = FitRunner("thread")
    assert runner.submit(job) is None and runner.busy
    deadline = time.monotonic() + 30
    while (outcome := runner.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.shutdown()
    assert outcome["ok"] and outcome["version"] == sync["version"]
    assert fit_candidate({**job, "fit": {"n_states": 1}})["ok"] is False


def test_promote_cli_writes_requests_the_node_applies(tmp_path: Path, synthetic, capsys) -> None:
    lc, champion = make_lifecycle(tmp_path, synthetic)
    requests = tmp_path / "requests"
    common = [
        "--strategy",
        SID,
        "--requests-dir",
        str(requests),
        "--log",
        str(tmp_path / "lifecycle.jsonl"),
    ]
    version = read_lifecycle(tmp_path / "lifecycle.jsonl")[0].version
    assert promote_main(["rollback", *common, "--to", version, "--reason", "bad model"]) == 0
    # the follow-up it prints reads the same node: run as printed, it shows the request's effect
    hint = capsys.readouterr().out.split("follow it with: ")[1].strip()
    assert shlex.split(hint)[:4] == ["python", "-m", "actors.promote", "status"]
    assert shlex.split(hint)[4:] == ["--strategy", SID, *common[2:]]
    assert promote_main(["rollback", *common, "--to", "v-unknown", "--reason", "x"]) == 2
    assert "not in" in capsys.readouterr().err
    assert promote_main(["promote", *common, "--reason", ""]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert promote_main(["promote", *common, "--model", str(bad), "--reason", "x"]) == 2
    assert "schema_version" in capsys.readouterr().err
    ((path, request),) = pending_requests(requests, SID)
    assert request.action == "rollback" and request.model_path == champion
    applied, _, actions = lc.on_request(123, request)
    assert applied and actions[0].model_version == version
    assert promote_main(["status", *common]) == 0
    assert f"champion: {version}" in capsys.readouterr().out


@pytest.fixture()
def two_hmm_strategies(tmp_path: Path) -> str:
    """An override adding a second HMM strategy (``hmm_btc_2`` = ``HMMRegimeStrategy-002``)."""
    first = yaml.safe_load(DEFAULT_CONFIG.read_text())["strategies"][0]
    second = {**first, "name": "hmm_btc_2", "config": {**first["config"], "order_id_tag": "002"}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"strategies": [second]}))
    return str(path)


# --strategy takes the config name or the strategy id (what status, the lifecycle log and the
# request files show); an error names what was typed and lists both forms of every strategy.
TRAIN_YAML = "configs/train.yaml"
UNKNOWN_STRATEGY_CASES = [
    (["status", "--override", TRAIN_YAML, "--strategy", "Nope"],
     r"no strategy 'Nope' in the node config; known by name or id: "
     r"hmm_btc = HMMRegimeStrategy-001$"),
    (["promote", "--override", TRAIN_YAML, "--strategy", "Nope", "--reason", "x"],
     r"no strategy 'Nope' .*hmm_btc = HMMRegimeStrategy-001"),
    (["reject", "--override", TRAIN_YAML, "--strategy", "nope", "--reason", "x"],
     r"no strategy 'nope' .*hmm_btc = HMMRegimeStrategy-001"),
    (["rollback", "--override", TRAIN_YAML, "--strategy", "HMMRegimeStrategy-002", "--to", "v",
      "--reason", "x"], r"no strategy 'HMMRegimeStrategy-002' .*hmm_btc = HMMRegimeStrategy-001"),
    # the shipped node.yaml has no trainer: the error echoes the name typed, and its id
    (["status", "--strategy", "hmm_btc"],
     r"no actors\.online_trainer:OnlineTrainer for strategy 'hmm_btc' \(HMMRegimeStrategy-001\)"),
    (["status", "--strategy", "HMMRegimeStrategy-001"],
     r"OnlineTrainer for strategy 'HMMRegimeStrategy-001' in the node config"),
    (["status", "--override", "{two}"],
     r"^error: pass --strategy NAME or ID: the node config has several HMM strategies: "
     r"hmm_btc = HMMRegimeStrategy-001, hmm_btc_2 = HMMRegimeStrategy-002$"),
    # a node run elsewhere (--requests-dir): only a strategy id may be outside the config; a
    # typo or no --strategy gets the same error as without it (no request the node ignores)
    (["reject", "--override", TRAIN_YAML, "--strategy", "hmm_btcc", "--requests-dir", "q",
      "--reason", "x"], r"no strategy 'hmm_btcc' .*hmm_btc = HMMRegimeStrategy-001"),
    (["reject", "--override", "{two}", "--requests-dir", "q", "--reason", "x"],
     r"^error: pass --strategy NAME or ID: the node config has several HMM strategies"),
    (["status", "--override", TRAIN_YAML, "--strategy", "../../etc", "--requests-dir", "q"],
     r"no strategy '\.\./\.\./etc' in the node config"),
    # a huge argument: the cause and what to type stay on the line (the echo is cut, not them)
    (["status", "--override", TRAIN_YAML, "--strategy", "x" * 10_000],
     r"no strategy 'x{60}\.\.\.' in the node config; known by name or id: "
     r"hmm_btc = HMMRegimeStrategy-001$"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "pattern"), UNKNOWN_STRATEGY_CASES)
def test_promote_cli_names_an_unknown_strategy_as_the_user_can_type_it(
    argv: list[str], pattern: str, two_hmm_strategies: str, tmp_path, monkeypatch, capsys
) -> None:
    argv = [a.replace("{two}", two_hmm_strategies) for a in argv]
    argv = [str(REPO_ROOT / a) if a == TRAIN_YAML else a for a in argv]
    monkeypatch.chdir(tmp_path)  # the trainer's relative model_dir resolves under tmp
    assert promote_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert re.search(pattern, lines[0]), lines[0]
    assert captured.out == ""


def test_a_strategy_id_outside_the_config_may_name_a_node_run_elsewhere(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """``--requests-dir``: the node may run a strategy this config lacks, named by its id; the
    request is written for that id (what that node's trainer picks up)."""
    monkeypatch.chdir(tmp_path)
    argv = ["reject", "--override", str(REPO_ROOT / TRAIN_YAML), "--strategy",
            "HMMRegimeStrategy-007", "--requests-dir", "q", "--reason", "x"]  # fmt: skip
    assert promote_main(argv) == 0, capsys.readouterr().err
    ((_, request),) = pending_requests(tmp_path / "q", "HMMRegimeStrategy-007")
    assert request.action == "reject"


@pytest.mark.parametrize("strategy", ["hmm_btc", "HMMRegimeStrategy-001"])
def test_promote_status_takes_the_name_or_the_id(strategy, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["status", "--override", str(REPO_ROOT / TRAIN_YAML), "--strategy", strategy]
    assert promote_main(argv) == 0
    assert capsys.readouterr().out.startswith(f"strategy {SID} (models/online/hmm_btc/")
