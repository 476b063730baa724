"""Multiprocess mode across process death: counters never go down, dead gauges leave the totals.

Issue 15: two nodes shared ``PROMETHEUS_MULTIPROC_DIR``; one was killed (``kill -9``) and
restarted, the restart deleted the dead process's counter shards, the summed
``orders_submitted_total`` fell from 12 to 7, and Prometheus read a reset:
``increase(orders_submitted_total[2m])`` gave 12.46 where the truth was 5.

Here real child processes run real BacktestEngines with the exporter in multiprocess mode,
driven chunk by chunk over stdin (each reports its own true event counts from its engine's
cache), and a real Prometheus scrapes the serving one. One child is killed with SIGKILL and
restarted; ``increase()`` of every counter over the whole window must equal the true count.
The window is chosen to start and end exactly on scrape timestamps (Prometheus 2.x range
selectors include both ends), so ``increase()`` does no extrapolation and the comparison is
exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from nautilus_trader.model.data import BarType
from nautilus_trader.model.events import (
    OrderAccepted,
    OrderDenied,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)

from actors.metrics import MetricsExporter, MetricsExporterConfig, retire_dead_processes
from tests.helpers import free_port
from tests.test_metrics import REPO_ROOT, build_engine, http_get, make_bars, parse, total
from tests.test_observability import NODE_JOB, require_tools, start_prometheus

BAR_TYPE = "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL"
CHUNK_BARS = 120
# counter (or histogram count) -> the child's report key
COUNTERS = {
    "orders_submitted_total": "submitted",
    "order_fills_total": "fills",
    "orders_rejected_total": "rejected",
    "orders_denied_total": "denied",
    "submit_to_ack_ms_count": "acked",
}


# -- the child: one node process --------------------------------------------------------------


def _counts(engine) -> dict[str, int]:
    """This process's true event counts, from its engine's own order histories."""
    events = [e for o in engine.cache.orders() for e in o.events]
    acked = 0
    for o in engine.cache.orders():
        kinds = [type(e) for e in o.events]
        if OrderSubmitted in kinds and (OrderAccepted in kinds or OrderFilled in kinds):
            acked += 1
    return {
        "pid": os.getpid(),
        "submitted": sum(isinstance(e, OrderSubmitted) for e in events),
        "fills": sum(isinstance(e, OrderFilled) for e in events),
        "rejected": sum(isinstance(e, OrderRejected) for e in events),
        "denied": sum(isinstance(e, OrderDenied) for e in events),
        "acked": acked,
    }


def node_child(mp_dir: str, port: int) -> None:
    """A node: each ``run`` line feeds the next chunk of bars and prints the counts so far; EOF
    or ``stop`` stops the engine (the exporter's on_stop; EMACross closes its position, one more
    order) and prints the final counts."""
    bar_type = BarType.from_str(BAR_TYPE)
    engine, exporter, _, _ = build_engine(
        MetricsExporterConfig(serve="always" if port else "never", port=port,
                              multiprocess_dir=mp_dir),
        bars=make_bars(bar_type, CHUNK_BARS),
    )  # fmt: skip
    for chunk, line in enumerate(sys.stdin):
        if line.strip() != "run":
            break
        if chunk:
            engine.clear_data()
            engine.add_data(make_bars(bar_type, CHUNK_BARS, first=chunk * CHUNK_BARS))
        engine.run(streaming=True)
        if not port:  # a backtest exporter without a server refreshes when read: read it, as a
            exporter.render()  # scrape of its shards would, so its gauges carry its epoch
        print(json.dumps(_counts(engine)), flush=True)
    engine.end()
    print(json.dumps(_counts(engine)), flush=True)
    engine.dispose()


class Node:
    def __init__(self, mp_dir: Path, port: int = 0) -> None:
        code = (
            "from tests.test_metrics_multiprocess import node_child; "
            f"node_child({str(mp_dir)!r}, {port})"
        )
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env["PYTHONPATH"] = str(REPO_ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.last: dict[str, int] = {"submitted": 0, "fills": 0, "rejected": 0, "denied": 0,
                                     "acked": 0}  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, chunks: int = 1) -> dict[str, int]:
        for _ in range(chunks):
            self.proc.stdin.write("run\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                self.proc.kill()
                raise AssertionError(f"node child failed: {self.proc.stderr.read()[-3000:]}")
            self.last = json.loads(line)
        return self.last

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: no on_stop, no cleanup of any kind
        self.proc.wait(timeout=30)  # reaped, so its pid is really gone

    def stop(self) -> int:
        """Stop the node; ``last`` becomes its final counts."""
        try:
            out, _ = self.proc.communicate(input="stop\n", timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1
        lines = out.strip().splitlines()
        if lines:
            self.last = json.loads(lines[-1])
        return self.proc.returncode


# -- Prometheus helpers -------------------------------------------------------------------------


def _api(base: str, expr: str, at: float | None = None) -> list[dict]:
    params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    status, body = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode(params))
    data = json.loads(body)
    assert status == 200 and data["status"] == "success", f"{expr!r}: {body[:500]!r}"
    return data["data"]["result"]


def _scrape_after(base: str, wall: float, limit: float = 60.0) -> float:
    """The timestamp of the first scrape of the node that STARTED after ``wall``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = _api(base, f'up{{job="{NODE_JOB}"}}[2m]')
        stamps = [float(ts) for r in result for ts, v in r["values"] if v == "1"]
        later = [ts for ts in stamps if ts > wall]
        if later:
            return min(later)
        time.sleep(0.3)
    raise AssertionError(f"no scrape of the node after {wall}")


def _value_at(base: str, expr: str, at: float) -> float:
    result = _api(base, expr, at)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


# -- tests ----------------------------------------------------------------------------------------


def test_increase_is_true_across_kill_9_and_restart(tmp_path):
    require_tools()
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    port = free_port()
    prom, base, log = start_prometheus(tmp_path, port)
    serving = Node(mp_dir, port)
    other = Node(mp_dir)
    restarted = None
    try:
        serving.run(2)  # always ahead of the other in bar time (see the gauge check below)
        other.run(1)
        start_counts = {"a": dict(serving.last), "b": dict(other.last)}
        t_start = _scrape_after(base, time.time())

        serving.run(1)
        b_at_kill = other.run(1)
        gauge = f'ops_exposure_last_refresh_epoch{{job="{NODE_JOB}"}}'
        t_before_kill = _scrape_after(base, time.time())
        epoch_with_b = _value_at(base, gauge, t_before_kill)
        dead_pid = other.pid
        other.kill9()
        assert list(mp_dir.glob(f"gauge_live*_{dead_pid}.db")), "the killed node left no gauges?"

        # the dead node's gauges leave the totals at the next scrape (livemin showed ITS refresh
        # epoch, the older one); its counter and histogram shards stay
        t_after_kill = _scrape_after(base, time.time())
        assert _value_at(base, gauge, t_after_kill) > epoch_with_b
        assert not list(mp_dir.glob(f"gauge_live*_{dead_pid}.db"))
        assert list(mp_dir.glob(f"counter_{dead_pid}.db"))
        assert list(mp_dir.glob(f"histogram_{dead_pid}.db"))

        restarted = Node(mp_dir)  # a new process (new pid) in the same directory
        restarted.run(1)
        serving.run(1)
        t_end = _scrape_after(base, time.time())

        window_ms = round((t_end - t_start) * 1000)
        for name, key in COUNTERS.items():
            truth = (
                serving.last[key] - start_counts["a"][key]
                + b_at_kill[key] - start_counts["b"][key]
                + restarted.last[key]
            )  # fmt: skip
            series = f'{name}{{job="{NODE_JOB}"}}[{window_ms}ms]'
            resets = _api(base, f"resets({series})", t_end)
            assert resets and all(r["value"][1] == "0" for r in resets), (name, resets)
            got = _value_at(base, f"sum(increase({series}))", t_end)
            assert got == pytest.approx(truth, abs=1e-9), (name, got, truth)
            print(f"\nINCREASE {name}[{window_ms}ms] = {got:g}, true count {truth}")
        assert (
            serving.last["submitted"] - start_counts["a"]["submitted"] > 0
            and restarted.last["submitted"] > 0
        ), "the window must contain orders of both the survivor and the restarted node"
    finally:
        for node in (serving, other, restarted):
            if node is not None and node.proc.poll() is None:
                node.stop()
        prom.terminate()
        try:
            prom.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prom.kill()


def test_a_stopped_node_keeps_its_counters_and_drops_its_gauges(tmp_path):
    """A node that stops cleanly marks itself dead (its gauges go); its counts stay in the sum,
    and a live node's scrape shows the sum of both."""
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    port = free_port()
    first = Node(mp_dir)
    first.run(1)
    first_pid = first.pid
    assert first.stop() == 0
    a = first.last
    assert not list(mp_dir.glob(f"gauge_live*_{first_pid}.db"))
    assert list(mp_dir.glob(f"counter_{first_pid}.db"))

    serving = Node(mp_dir, port)
    other = Node(mp_dir)
    try:
        b, c = serving.run(3), other.run(2)
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        s = parse(body)
        assert len({a["submitted"], b["submitted"], c["submitted"]}) == 3  # distinct, so ...
        # ... the sum can only be right if every process, the stopped one too, is in it
        want = a["submitted"] + b["submitted"] + c["submitted"]
        assert total(s, "orders_submitted_total") == want
        assert total(s, "order_fills_total") == a["fills"] + b["fills"] + c["fills"]
        # gauges are collapsed across processes (no pid label), one series per label set
        gauges = [k for k in s if k[0] in ("portfolio_equity_usd", "regime_probability")]
        assert gauges and all("pid" not in dict(lab) for _, lab in gauges)
        assert len([k for k in s if k[0] == "portfolio_equity_usd"]) == 1
    finally:
        assert serving.stop() == 0 and other.stop() == 0


def test_retire_dead_processes_removes_only_dead_live_gauges(tmp_path):
    gone = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    files = [
        f"gauge_livemostrecent_{gone}.db",  # removed
        f"gauge_livemin_{gone}.db",  # removed
        f"counter_{gone}.db",
        f"histogram_{gone}.db",
        f"gauge_livemostrecent_{os.getpid()}.db",  # ours
        "gauge_livemostrecent_1.db",  # pid 1 is alive (init)
    ]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert retire_dead_processes(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[2:])


def test_retiring_and_scraping_survive_a_concurrent_cleaner(tmp_path, monkeypatch) -> None:
    """Two exporters retire the same dead pid at once, and a scrape may list a shard another
    process deletes before it is read. Neither is an error."""
    import prometheus_client.multiprocess as mp

    import actors.metrics as m

    dead_pid = 2**22 + 12345  # beyond pid_max: never alive
    shard = tmp_path / f"gauge_livemostrecent_{dead_pid}.db"
    shard.write_bytes(b"")
    real_glob = mp.glob.glob

    def racing_glob(pattern):
        found = real_glob(pattern)
        for f in found:  # the other process removes it between the listing and the removal
            Path(f).unlink(missing_ok=True)
        return found

    monkeypatch.setattr(mp.glob, "glob", racing_glob)
    assert m.retire_dead_processes(tmp_path) == [dead_pid]
    monkeypatch.setattr(mp.glob, "glob", real_glob)

    exporter = MetricsExporter(MetricsExporterConfig(port=0, serve="never"))
    calls = []
    real = m.generate_latest

    def flaky(registry):
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("shard deleted between listing and reading")
        return real(registry)

    monkeypatch.setattr(m, "generate_latest", flaky)
    assert b"orders_submitted_total" in exporter.render() and len(calls) == 2


_REUSED_PID_CHILD = """
import os, sys
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from nautilus_trader.model.data import BarType
from tests.test_metrics import build_engine, make_bars, parse, value
from actors.metrics import MetricsExporterConfig

mp_dir = sys.argv[1]
pid = os.getpid()
# shards a dead process with THIS pid left behind (pid 1 in a container: every restart)
gauges = MmapedDict(os.path.join(mp_dir, f"gauge_livemostrecent_{pid}.db"))
gauges.write_value(mmap_key("portfolio_equity_usd", "portfolio_equity_usd", ["venue"], ["GHOST"],
                            "x"), 123.0, 1.0)
gauges.close()
help_text = "Orders submitted to the venue."
key = mmap_key("orders_submitted", "orders_submitted_total", ["venue", "strategy"],
               ["BINANCE", "EMACross-000"], help_text)
counters = MmapedDict(os.path.join(mp_dir, f"counter_{pid}.db"))
counters.write_value(key, 1000.0, 0.0)
counters.close()

bar_type = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")
engine, exporter, _, _ = build_engine(
    MetricsExporterConfig(port=0, multiprocess_dir=mp_dir), bars=make_bars(bar_type, 120))
engine.run(streaming=True)
s = parse(exporter.render())
assert "GHOST" not in exporter.render().decode(), "a dead process's gauge passed for ours"
submitted = sum(1 for o in engine.cache.orders() for e in o.events
                if type(e).__name__ == "OrderSubmitted" and o.strategy_id.value == "EMACross-000")
got = value(s, "orders_submitted_total", venue="BINANCE", strategy="EMACross-000")
assert got == 1000 + submitted, (got, submitted)  # the counter continues, never drops

# stop (the exporter marks this process dead: its gauges go) and start again in this process
engine.end()
assert not [f for f in os.listdir(mp_dir) if f.startswith("gauge_live")], os.listdir(mp_dir)
engine.reset()
engine.add_data(make_bars(bar_type, 120, first=120))
engine.run(streaming=True)
s = parse(exporter.render())
assert ("portfolio_equity_usd", frozenset({("venue", "BINANCE")})) in s, "gauges gone after restart"
assert value(s, "orders_submitted_total", venue="BINANCE", strategy="EMACross-000") > got
engine.end()
engine.dispose()
print("OK")
"""


def test_a_reused_pid_and_a_restart_in_process_keep_the_books_straight(tmp_path):
    """A new process with a dead one's pid drops that pid's gauges and continues its counters;
    an exporter stopped (marked dead) and started again in one process exports its gauges again."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    res = subprocess.run(
        [sys.executable, "-c", _REUSED_PID_CHILD, str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]
