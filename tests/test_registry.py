"""Governance registry: atomic writes, crash/kill recovery without loss or duplicates, bad files,
operator overrides and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from actors import registry as reg
from actors.registry import Override, Registry, RegistryError, main

REPO_ROOT = Path(__file__).resolve().parents[1]
TRADER = "HMM-001"


def _record(r: Registry, i: int, sid: str = "S-001") -> reg.GovernanceDecision | None:
    return r.record(
        f"{sid}@{i}:policy",
        1_700_000_000_000_000_000 + i * 900_000_000_000,
        sid,
        action="pause" if i % 2 else "resume",
        state="paused" if i % 2 else "active",
        scale=0.0 if i % 2 else 1.0,
        flatten=bool(i % 2),
        reason=f"decision {i}",
        source="policy",
        rule="max_drawdown",
        metric="drawdown",
        value=0.081 + i * 1e-4,
        threshold=0.08,
    )


def test_roundtrip_sequence_and_idempotent_ids(tmp_path: Path) -> None:
    path = tmp_path / "gov" / "registry.json"
    r = Registry.open(path, TRADER)
    assert not path.exists()  # nothing is written until there is something to keep
    for i in range(5):
        assert _record(r, i) is not None
    assert _record(r, 3) is None  # same id: replay is a no-op
    again = Registry.open(path, TRADER)
    decisions = again.decisions("S-001")
    assert [d.seq for d in decisions] == [1, 2, 3, 4, 5]
    assert [d.reason for d in decisions] == [f"decision {i}" for i in range(5)]
    assert decisions[1].time_utc == "2023-11-14T22:28:20.000000Z"
    assert again.doc.strategies["S-001"].state == "active"  # the last decision's state (i=4)
    assert _record(again, 4) is None and _record(again, 5).seq == 6
    on_disk = json.loads(path.read_text())
    assert on_disk["schema"] == reg.SCHEMA and on_disk["schema_version"] == reg.SCHEMA_VERSION


def test_crash_during_write_keeps_the_previous_version(tmp_path, monkeypatch) -> None:
    path = tmp_path / "registry.json"
    r = Registry.open(path, TRADER)
    for i in range(3):
        _record(r, i)
    before = path.read_bytes()

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt("killed between fsync and rename")

    monkeypatch.setattr(reg.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _record(r, 3)
    monkeypatch.undo()
    assert path.read_bytes() == before  # old file intact
    assert not list(tmp_path.glob(".registry.json.tmp-*"))  # an exception cleans its temp up
    # a SIGKILL cannot clean up: leave a half-written temp file as it would
    (tmp_path / ".registry.json.tmp-999-1").write_bytes(b'{"schema_version": 1, "stra')
    leftovers = list(tmp_path.glob(".registry.json.tmp-*"))

    restarted = Registry.open(path, TRADER)
    assert restarted.removed_temp_files == leftovers and not leftovers[0].exists()
    assert [d.seq for d in restarted.decisions()] == [1, 2, 3]
    for i in range(5):  # replay everything after the crash: only the missing ones are added
        _record(restarted, i)
    ids = [d.id for d in Registry.open(path, TRADER).decisions()]
    assert ids == [f"S-001@{i}:policy" for i in range(5)]


WRITER = textwrap.dedent(
    """
    import sys
    from actors.registry import Registry
    path, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = Registry.open(path, "HMM-001")
    for i in range(start, stop):
        sid = "S-%03d" % (i % 3)
        r.record(f"d{i}", 1_700_000_000_000_000_000 + i, sid, action="throttle",
                 state="throttled", scale=0.5, flatten=False, reason="x" * 200, source="policy")
        print(i, flush=True)
    """
)


def test_sigkill_between_writes_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """A real process killed mid-stream; the restarted writer replays every id once."""
    path = tmp_path / "registry.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "0", "100000"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    written = 0
    deadline = time.monotonic() + 30
    while written < 60 and time.monotonic() < deadline:
        written = int(proc.stdout.readline()) + 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert written >= 60

    survived = Registry.open(path, TRADER).decisions()
    seqs = [d.seq for d in survived]
    assert seqs == list(range(1, len(seqs) + 1))  # a prefix, contiguous, never torn
    assert len(survived) >= written  # every write reported as done is on disk
    subprocess.run([sys.executable, "-c", WRITER, str(path), "0", "200"], env=env, check=True,
                   capture_output=True)
    final = Registry.open(path, TRADER).decisions()
    assert sorted(d.id for d in final) == sorted(f"d{i}" for i in range(200))
    assert [d.seq for d in final] == list(range(1, 201))


def test_corrupt_registry_is_set_aside_and_never_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    r = Registry.open(path, TRADER)
    _record(r, 0)
    path.write_text(path.read_text()[:-40])  # torn by something outside our atomic writes
    with pytest.raises(RegistryError, match="corrupt.*moved aside to .*registry.json.corrupt-1"):
        Registry.open(path, TRADER)
    assert not path.exists() and (tmp_path / "registry.json.corrupt-1").exists()
    with pytest.raises(RegistryError, match="corrupt copy was set aside"):
        Registry.open(path, TRADER)  # a restart does not quietly start empty
    (tmp_path / "registry.json.corrupt-1").unlink()  # the operator accepts a fresh start
    assert Registry.open(path, TRADER).decisions() == []


def test_invalid_structure_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    r = Registry.open(path, TRADER)
    _record(r, 0)
    doc = json.loads(path.read_text())
    doc["strategies"]["S-001"]["state"] = "sleeping"
    path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match="invalid structure.*sleeping|invalid structure"):
        Registry.open(path, TRADER)


def test_unknown_schema_version_is_refused_and_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    r = Registry.open(path, TRADER)
    _record(r, 0)
    doc = json.loads(path.read_text())
    doc["schema_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match="version 99.*left untouched"):
        Registry.open(path, TRADER)
    assert json.loads(path.read_text())["schema_version"] == 99


def test_other_traders_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    _record(Registry.open(path, TRADER), 0)
    with pytest.raises(RegistryError, match="belongs to trader 'HMM-001'"):
        Registry.open(path, "HMM-002")


def test_override_files_roundtrip_and_invalid_ones_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "overrides"
    ov = Override(id="abc", strategy_id="S-001", action="pause", reason="manual check",
                  flatten=True, created_utc="2024-01-01T00:00:00.000000Z")
    written = reg.submit_override(folder, ov)
    (folder / "zz-bad.json").write_text('{"id": "x", "strategy_id": "S", "action": "explode"}')
    pending = reg.pending_overrides(folder)
    assert pending[0] == (written, ov)
    assert pending[1][0].name == "zz-bad.json" and "explode" in pending[1][1]
    moved = reg.archive_override(written, applied=True)
    assert moved.parent.name == "applied" and not written.exists()
    with pytest.raises(ValueError, match="reason"):
        Override(id="y", strategy_id="S", action="pause", reason="  ")
    with pytest.raises(ValueError, match="throttle needs"):
        Override(id="y", strategy_id="S", action="throttle", reason="r", scale=1.0)


def test_cli_show_history_and_override(tmp_path: Path, capsys) -> None:
    path = tmp_path / "gov" / "registry.json"
    r = Registry.open(path, TRADER)
    _record(r, 1)
    r.strategy("S-001").metrics = {"drawdown": 0.0812, "equity": 9188.0}
    r.save()
    assert main(["--registry", str(path), "show"]) == 0
    out = capsys.readouterr().out
    assert "S-001" in out and "paused" in out and "0.0812" in out and "decision 1" in out
    assert main(["--registry", str(path), "history", "S-001", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["seq"] == 1 and line["rule"] == "max_drawdown"

    assert main(["--registry", str(path), "resume", "S-001", "--scale", "0.25",
                 "--reason", "reviewed the losses"]) == 0
    assert "applies it at its next poll" in capsys.readouterr().out
    ((_, ov),) = reg.pending_overrides(tmp_path / "gov" / "overrides")
    assert (ov.action, ov.scale, ov.reason) == ("resume", 0.25, "reviewed the losses")

    assert main(["--registry", str(path), "pause", "S-999", "--reason", "x"]) == 2
    assert "unknown strategy 'S-999'" in capsys.readouterr().err
    assert main(["--registry", str(tmp_path / "none.json"), "show"]) == 2
    assert "no governance registry" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--registry", str(path), "pause", "S-001"])  # --reason is required


def test_a_version_1_registry_is_read_and_upgraded_on_the_next_save(tmp_path: Path) -> None:
    """Version 1 (before model decisions) loads with its decisions intact and is saved as 2."""
    path = tmp_path / "registry.json"
    r = Registry.open(path, TRADER)
    _record(r, 0)
    doc = json.loads(path.read_text())
    for record in doc["strategies"].values():
        del record["model_decisions"]
    doc["schema_version"] = 1
    path.write_text(json.dumps(doc))
    r = Registry.open(path, TRADER)
    assert len(r.decisions()) == 1 and r.model_decisions() == []
    r.record_model(
        "m1", 2, "S-001", event="promoted", version="v2", reason="better", source="policy",
        previous_version="v1", evidence={"improvement": 0.01},
    )  # fmt: skip
    assert r.record_model("m1", 3, "S-001", event="rejected", version="v3", reason="x",
                          source="policy") is None  # fmt: skip
    on_disk = json.loads(path.read_text())
    assert on_disk["schema_version"] == reg.SCHEMA_VERSION == 2
    again = Registry.open(path, TRADER)
    (d,) = again.model_decisions("S-001")
    assert (d.event, d.version, d.previous_version, d.evidence) == (
        "promoted", "v2", "v1", {"improvement": 0.01},
    )  # fmt: skip
    assert again.strategy("S-001").model_version == "v2"
    assert d.seq > again.decisions()[0].seq  # one sequence for both kinds
