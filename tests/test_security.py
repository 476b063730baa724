"""Secrets never leave the environment, and HTTP endpoints listen on loopback only by default.

The offline paper node runs as the user runs it (``python -m hmm_strategy.live`` in a
subprocess, DEBUG logs) with a unique sentinel value in every secret variable of .env.example
(and the ones NautilusTrader's adapters read on their own). While it runs, /metrics, /health and
/readyz are scraped and its listening sockets are inspected; after it stops, every byte it wrote
(run folder, log folder, state folder, anything else under its working directory), its
stdout/stderr and the scraped bodies are searched for every sentinel. None may appear.

The Binance profile is then built (not run) in paper and live mode with sentinel keys: the
``TradingNodeConfig`` repr/str and NautilusTrader's own JSON of it must not contain them either,
while the live execution client still receives the real key.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from hmm_strategy.config import (
    REPO_ROOT,
    MetricsSettings,
    load_node_settings,
    trading_node_config,
    venue_settings,
)
from hmm_strategy.live import parse_args, resolve_settings
from tests.helpers import free_port, live_override, override_file

pytestmark = [
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning"),
]

ENV_EXAMPLE = REPO_ROOT / ".env.example"
# Keys of .env.example that are settings, not secrets (their values may be shown): every other
# key there is treated as a secret. A new key must be classified here, or the test fails.
NOT_SECRET = {
    "TRADING_ENABLED",
    "TRADE_SYMBOLS",
    "MAX_POSITION_NOTIONAL",
    "MAX_ORDER_NOTIONAL",
    "HMM_DATA_DIR",
    "IBKR_HOST",
    "IBKR_PORT",
    "IBKR_CLIENT_ID",
    "PROMETHEUS_MULTIPROC_DIR",
}
MUST_BE_SECRET = {
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "BINANCE_FUTURES_API_KEY",
    "BINANCE_FUTURES_API_SECRET",
    "BYBIT_API_KEY",
    "BYBIT_API_SECRET",
    "IBKR_ACCOUNT_ID",
    "TWS_USERNAME",
    "TWS_PASSWORD",
}
# Variables NautilusTrader's adapters read by themselves (testnet/demo keys): also never shown.
ADAPTER_SECRETS = {
    "BINANCE_TESTNET_API_KEY",
    "BINANCE_TESTNET_API_SECRET",
    "BINANCE_FUTURES_TESTNET_API_KEY",
    "BINANCE_FUTURES_TESTNET_API_SECRET",
    "BINANCE_DEMO_API_KEY",
    "BINANCE_DEMO_API_SECRET",
    "BYBIT_TESTNET_API_KEY",
    "BYBIT_TESTNET_API_SECRET",
    "BYBIT_DEMO_API_KEY",
    "BYBIT_DEMO_API_SECRET",
}
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1 in /proc/net/tcp*


def env_example_keys() -> list[str]:
    keys = re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    assert keys, f"no variables found in {ENV_EXAMPLE}"
    return keys


@pytest.fixture(scope="module")
def sentinels() -> dict[str, str]:
    """A unique, unguessable value per secret variable."""
    keys = env_example_keys()
    secret_keys = set(keys) - NOT_SECRET
    assert secret_keys >= MUST_BE_SECRET, f"{ENV_EXAMPLE} lost {MUST_BE_SECRET - secret_keys}"
    keys = sorted(secret_keys | ADAPTER_SECRETS)
    return {key: f"SENTINEL-{key}-{secrets.token_hex(8)}" for key in keys}


def leaks(sentinels: dict[str, str], where: str, data: bytes) -> list[str]:
    """The variables whose sentinel (or its random part) appears in ``data``."""
    found = []
    for key, value in sentinels.items():
        token = value.rsplit("-", 1)[1]
        if value.encode() in data or token.encode() in data:
            found.append(f"{key} in {where}")
    return found


def fast_override(tmp: Path) -> Path:
    """Everything the node writes goes under ``tmp``; a small replay and a quick in-run fit."""
    data = live_override(
        tmp,
        runs=True,
        replay_bars=2_000,
        strategies=[
            {"name": "hmm_btc", "config": {"fit": {"warmup_bars": 500, "n_restarts": 1}}}
        ],
    )
    return override_file(tmp, data, "fast.yaml")


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(hex local address, port) of every TCP socket ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                addr, port = local.split(":")
                out.append((addr, int(port, 16)))
    return out


def wait_for_environ(pid: int, values, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        if all(v.encode() in environ for v in values):
            return True
        time.sleep(0.02)
    return False


def scrape(port: int, path: str) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.read()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 until the first decision
        return exc.read()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_paper_node_never_writes_serves_or_prints_a_secret(
    tmp_path: Path, sentinels: dict[str, str]
) -> None:
    port = free_port()
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(fast_override(tmp_path)),
        "--run-dir", str(run_dir), "--metrics-port", str(port), "--log-level", "DEBUG",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in NOT_SECRET | set(sentinels)}
    env.update(sentinels, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    bodies: dict[str, bytes] = {}
    try:
        # the secrets really are in the node's environment (else this test proves nothing)
        # (poll: right after fork, /proc shows the parent's environ until the child execs)
        assert wait_for_environ(proc.pid, sentinels.values()), "secrets not in the node's env"
        deadline = time.monotonic() + 120
        decided = False
        while time.monotonic() < deadline and not decided:
            time.sleep(0.5)
            assert proc.poll() is None, proc.communicate()
            try:
                body = scrape(port, "/metrics")
            except OSError:
                continue
            bodies["/metrics"] = body
            decided = b"\nregime_probability{" in body
        assert decided, "the node never produced a decision"
        for path in ("/metrics", "/health", "/readyz"):
            bodies[path] = scrape(port, path)
        listeners = listening_addresses(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]

    # loopback only: the metrics port, and any other socket the node listens on
    assert ("0100007F", port) in listeners, f"metrics not on 127.0.0.1:{port}: {listeners}"
    exposed = [(a, p) for a, p in listeners if a not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"

    # the search covers real output (not an empty folder)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"decisions.csv", "fills.csv"} <= names, sorted(names)
    assert list((tmp_path / "logs").glob("*")), "no log file written"
    assert list((tmp_path / "state").rglob("*.checkpoint.json")), "no checkpoint written"

    found = leaks(sentinels, "stdout", out) + leaks(sentinels, "stderr", err)
    for path, body in bodies.items():
        found += leaks(sentinels, path, body)
    for file in written:
        found += leaks(sentinels, str(file.relative_to(tmp_path)), file.read_bytes())
    assert not found, f"secrets leaked: {found}"


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_binance_profile_config_never_shows_the_keys(
    mode: str, tmp_path: Path, sentinels: dict[str, str], monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    for key, value in sentinels.items():
        monkeypatch.setenv(key, value)
    from venues.builders import build_trading_node
    from venues.secrets import require_secrets

    args = parse_args(["--venue", "binance_spot", "--override", str(fast_override(tmp_path))])
    settings, name = resolve_settings(args, dict(os.environ))
    venue = msgspec.structs.replace(venue_settings(settings, name), mode=mode)
    require_secrets(venue)
    config = trading_node_config(settings, venue, tmp_path / "run", log_level="DEBUG")
    node = build_trading_node(config, venue)  # node.build(): clients created, nothing connects
    try:
        texts = {
            "repr(config)": repr(config),
            "str(config)": str(config),
            "config.json()": config.json().decode(),
            "node config json": node._config.json().decode(),
            "exec clients": repr(list(node.kernel.exec_engine._clients.values())),
        }
        if mode == "live":  # the adapter itself still gets the real key (masked only in text)
            exec_config = config.exec_clients["BINANCE"]
            assert exec_config.api_key == sentinels["BINANCE_API_KEY"]
            assert exec_config.api_secret == sentinels["BINANCE_API_SECRET"]
    finally:
        node.dispose()
    captured = capfd.readouterr()
    texts["build output"] = captured.out + captured.err
    found = []
    for where, text in texts.items():
        found += leaks(sentinels, where, text.encode())
    assert not found, f"secrets shown: {found}"


def test_http_endpoints_default_to_loopback() -> None:
    """Defaults in code and in the shipped config: nothing listens beyond 127.0.0.1 unasked."""
    from actors.metrics import MetricsExporterConfig

    assert MetricsSettings().host == "127.0.0.1"
    assert MetricsExporterConfig().host == "127.0.0.1"
    settings = load_node_settings()
    assert settings.live is not None and settings.live.metrics.host == "127.0.0.1"
    exporters = [a for a in settings.actors if a.path == "actors.metrics:MetricsExporter"]
    assert exporters, "the shipped node config has no metrics exporter"
    for actor in exporters:
        assert actor.config.get("host", MetricsExporterConfig().host) == "127.0.0.1"
    for name, profile in settings.live.venues.items():
        ib = venue_settings(settings, name).ib
        assert ib.host == "127.0.0.1", f"{name}: IB gateway host {ib.host}"
        assert profile.get("ib", {}).get("host", "127.0.0.1") == "127.0.0.1"
