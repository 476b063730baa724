"""No character of a venue API key reaches our logs (issue 11: Bybit logged ``SNTL...eyQ7``).

NautilusTrader 1.231.0's Bybit clients log ``REST API key <first 4>...<last 4>`` at start. The
node is started for real (``--venue bybit_linear --mode live`` with a sentinel key, offline, so
the connection fails and the node exits 3); the key must not appear in any form in stdout, stderr
or the log files, and the masked line must still be there (proof that it was reached).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hmm_strategy.config import REPO_ROOT
from hmm_strategy.live import EXIT_START
from tests.helpers import live_override, override_file
from venues.secrets import MASKED_KEY, MaskedKeyHttpClient

KEY = "SNTLk3y5ecretMIDDLEpartQ7zz"
SECRET = "SNTLs3cr3tDONOTPRINTxyzw"


def test_bybit_api_key_is_fully_masked_in_node_output_and_logs(tmp_path: Path) -> None:
    data = live_override(tmp_path, live={"timeout_connection": 2.0})
    override = override_file(tmp_path, data, "fast.yaml")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "BYBIT_API_KEY": KEY,
        "BYBIT_API_SECRET": SECRET,
        "TRADING_ENABLED": "true",
    }
    cmd = [
        sys.executable, "-m", "hmm_strategy.live", "--override", str(override),
        "--venue", "bybit_linear", "--mode", "live", "--duration", "5", "--metrics-port", "0",
        "--run-dir", str(tmp_path / "run"), "--log-level", "INFO",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*"))
    everything = proc.stdout + proc.stderr + logs
    assert f"REST API key {MASKED_KEY}" in everything, "the adapter's key line was not reached"
    for fragment in (KEY[:4], KEY[-4:], KEY[4:12], SECRET[:6], SECRET[-4:]):
        assert fragment not in everything, f"{fragment!r} of a secret leaked"
    # offline the node cannot connect: the start error (3), not a Rust abort (134)
    assert proc.returncode == EXIT_START, proc.stderr[-2000:]


def test_masked_client_delegates_everything_but_the_masked_key() -> None:
    class Inner:
        api_key_masked = "SNTL...eyQ7"

        def request_instruments(self, x: int) -> int:
            return x + 1

    client = MaskedKeyHttpClient(Inner())
    assert client.api_key_masked == MASKED_KEY
    assert client.request_instruments(1) == 2
    assert MaskedKeyHttpClient(type("NoKey", (), {"api_key_masked": None})()).api_key_masked is None
