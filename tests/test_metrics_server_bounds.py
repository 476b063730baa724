"""The metrics HTTP server lives in the trading process, so stalled clients must not grow it.

Issue 11: 300 stalled connections once made 318 threads in the trading process (a thread per
connection, no timeout). The server now runs requests on a fixed pool with a bounded queue and a
socket timeout; these tests open the stalled connections for real and count the threads.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from actors.metrics_server import MAX_QUEUED, WORKERS, MetricsHTTPServer

STALLED = 300


def _server(timeout: float = 60.0) -> MetricsHTTPServer:
    return MetricsHTTPServer(
        "127.0.0.1",
        0,
        render=lambda: b"# TYPE up gauge\nup 1\n",
        ready=lambda: (True, "ready"),
        client_timeout_secs=timeout,
    )


def _wait_for(predicate, what: str, limit_secs: float = 120.0) -> None:
    """Poll until ``predicate()`` holds; the limit only stops a broken build from hanging."""
    deadline = time.monotonic() + limit_secs
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def _get(port: int, path: str = "/metrics") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as resp:
        return resp.status, resp.read()


def test_stalled_connections_do_not_grow_threads_and_scrapes_recover() -> None:
    server = _server()
    port = server.start()
    before = threading.active_count()
    clients: list[socket.socket] = []
    try:
        for _ in range(STALLED):  # connect and send nothing: a stalled client
            clients.append(socket.create_connection(("127.0.0.1", port)))
        _wait_for(lambda: sum(server.connections) == STALLED, "the server to see every client")
        accepted, refused = server.connections
        assert accepted <= WORKERS + MAX_QUEUED
        assert refused == STALLED - accepted > 0
        # the pool, not a thread per connection: at most WORKERS more threads than before
        assert threading.active_count() <= before + WORKERS
    finally:
        for c in clients:
            c.close()
    # once the stalled clients are gone the pool serves scrapes again
    status, body = _get(port)
    assert status == 200 and b"up 1" in body
    assert threading.active_count() <= before + WORKERS
    server.stop()


def test_a_client_that_never_sends_is_cut_off_by_the_server() -> None:
    server = _server(timeout=0.5)
    port = server.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.settimeout(60)  # only to stop a broken build from hanging
            assert stalled.recv(1024) == b"", "the server must close a silent connection"
        status, _ = _get(port, "/health")
        assert status == 200
    finally:
        server.stop()
