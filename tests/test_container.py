"""The node's container image, built and run the way CI can without an image registry.

A Debian trixie (Python 3.13) root file system made with ``debootstrap --variant=minbase`` is
imported with ``podman import`` as the base image, ``Containerfile`` is built on it
(``--build-arg BASE=...``; dependencies from PyPI), and the offline paper node runs in the
container (``--runtime runc``, a containers.conf with ``default_ulimits = []``) while the host
scrapes its ``/metrics``; the operations API runs from the same image beside it (shared state
volume, as in docker-compose.yml) and flips the node's kill switch. Everything lives in a private
podman storage, deleted afterwards, so every run builds from nothing (CI's worst case, 3 to 5.5
minutes here: see docs/OPS_RUNBOOK.md 4.3).

Needs root, podman, runc and debootstrap (CI installs them, .ci/run); it is skipped with the
reason where they are absent, unless ``HMM_REQUIRE_CONTAINER_TEST=1`` (set by .ci/run) makes
that a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hmm_strategy.config import REPO_ROOT
from tests.helpers import free_port

pytestmark = pytest.mark.slow

MIRROR = os.environ.get("HMM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # pip behind a TLS-intercepting proxy
BASE = "localhost/hmm-ci-base:trixie"
IMAGE = "localhost/nautilus-hmm:ci"
TOKEN = secrets.token_hex(16)


def _missing() -> str | None:
    tools = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not installed (apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "needs root (debootstrap and rootful podman)"
    return None


@pytest.fixture
def podman(tmp_path: Path):
    """``podman`` with a private storage, runc and the ulimit-free containers.conf."""
    why = _missing()
    if why:
        if os.environ.get("HMM_REQUIRE_CONTAINER_TEST") == "1":
            pytest.fail(f"container test required but cannot run: {why}")
        pytest.skip(why)
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    short = Path(tempfile.mkdtemp(prefix="hmmci-"))  # podman refuses a runroot over 50 chars
    root = ["podman", "--root", str(short / "storage"), "--runroot", str(short / "run")]

    def run(
        *args: str, check: bool = True, extra_env: dict | None = None, **kw
    ) -> subprocess.CompletedProcess:
        kw.setdefault("timeout", 300)  # a hung podman fails the test instead of the CI job
        done = subprocess.run(
            [*root, *args], env={**env, **(extra_env or {})}, capture_output=True, text=True, **kw
        )
        if check and done.returncode != 0:
            pytest.fail(f"podman {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    try:
        yield run
    finally:
        run("rm", "--all", "--force", check=False)
        run("system", "reset", "--force", check=False)  # images and layers of this test
        shutil.rmtree(tmp_path / "rootfs", ignore_errors=True)
        shutil.rmtree(short, ignore_errors=True)


def _samples(url: str) -> dict[str, list] | None:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _get_json(url: str, deadline: float) -> dict:
    while True:
        try:
            return json.loads(urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(1)


def test_image_on_a_debootstrap_base_runs_the_paper_node_and_ops_api(
    podman, tmp_path: Path
) -> None:
    started = time.monotonic()
    rootfs = tmp_path / "rootfs"
    boot = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
         "trixie", str(rootfs), MIRROR],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert boot.returncode == 0, f"debootstrap failed: {boot.stdout[-1500:]}{boot.stderr[-1500:]}"
    t_boot = time.monotonic()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    podman("import", "-", BASE, stdin=tar.stdout)
    assert tar.wait() == 0
    t_import = time.monotonic()

    build = ["build", "--runtime", "runc", "--network", "host", "-f", "Containerfile"]
    build += ["--build-arg", f"BASE={BASE}", "-t", IMAGE]
    if HOST_CA.exists():
        build += [
            "-v",
            f"{HOST_CA}:/run/host-ca.crt:ro",
            "--build-arg",
            "PIP_CERT=/run/host-ca.crt",
        ]
    podman(*build, str(REPO_ROOT), timeout=1500)
    t_build = time.monotonic()
    py = podman("run", "--rm", "--runtime", "runc", "--network", "host", "--entrypoint",
                "python", IMAGE, "-c", "import sys; print(sys.version_info[:2])")  # fmt: skip
    assert py.stdout.strip() == "(3, 13)", py.stdout  # trixie's Python, not the host's

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    podman(
        "run", "-d", "--name", "hmm-node", "--runtime", "runc", "--network", "host",
        "-v", "hmm-state:/app/state", IMAGE, "hmm_strategy.live", "--metrics-port", str(port),
        "--duration", "600", "--log-level", "WARNING",
    )  # fmt: skip
    deadline = time.monotonic() + 180
    samples = None
    while time.monotonic() < deadline:
        samples = _samples(url)
        # up, and the portfolio refresh has run against the sandbox account at least once
        if samples and any(s.value > 0 for s in samples.get("portfolio_equity_usd", [])):
            break
        state = podman("inspect", "--format", "{{.State.Status}}", "hmm-node").stdout.strip()
        assert state == "running", podman("logs", "hmm-node", check=False).stdout[-3000:]
        time.sleep(1)
    assert samples, "the node's /metrics never answered from the container"
    equity = {s.labels["venue"]: s.value for s in samples.get("portfolio_equity_usd", [])}
    assert equity.get("BINANCE", 0) > 0, f"no sandbox equity on /metrics: {sorted(samples)}"
    t_scraped = time.monotonic()

    # the ops API from the same image, beside the node, sharing its state volume (as in compose)
    ops_port = free_port()
    ops = f"http://127.0.0.1:{ops_port}"
    podman(
        "run", "-d", "--name", "hmm-ops", "--runtime", "runc", "--network", "host",
        "-v", "hmm-state:/app/state", "-e", "OPS_API_TOKEN", IMAGE,
        "ops", "--port", str(ops_port), "--metrics-url", url,
        extra_env={"OPS_API_TOKEN": TOKEN},
    )  # fmt: skip
    pnl = _get_json(f"{ops}/aggregate/pnl", deadline=time.monotonic() + 60)
    assert pnl["complete"] is True and [n["node"] for n in pnl["nodes"]] == ["node"], pnl
    request = urllib.request.Request(
        f"{ops}/killswitch/on", method="POST", data=b'{"reason": "ci drill"}',
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert urllib.request.urlopen(request, timeout=10).status == 202
    halted, end = "", time.monotonic() + 30
    while "Kill switch ON: ci drill [operator ops-api]" not in halted:
        assert time.monotonic() < end, f"the node never saw the kill switch: {halted[-2000:]}"
        time.sleep(1)
        halted = podman("logs", "hmm-node", check=False).stdout
    ops_logs = podman("logs", "hmm-ops", check=False)
    assert TOKEN not in ops_logs.stdout + ops_logs.stderr
    podman("stop", "--time", "10", "hmm-ops")
    t_ops = time.monotonic()

    podman("kill", "--signal", "INT", "hmm-node")
    code = podman("wait", "hmm-node").stdout.strip()
    logs = podman("logs", "hmm-node", check=False)
    assert code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
    assert "stopped cleanly" in logs.stdout
    print(
        f"\ncontainer test wall time: debootstrap {t_boot - started:.0f}s, import "
        f"{t_import - t_boot:.0f}s, build {t_build - t_import:.0f}s, run+scrape "
        f"{t_scraped - t_build:.0f}s, ops API {t_ops - t_scraped:.0f}s, "
        f"total {time.monotonic() - started:.0f}s"
    )
