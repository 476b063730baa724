"""A tiny HTTP server for the metrics exporter: ``/metrics``, ``/health`` and ``/readyz``.

It lives in its own module so the actor holds only the trading-side logic. The server runs
``serve_forever`` in a daemon thread, so a hung scrape never blocks the event loop of the node and
the process can always exit. ``stop()`` shuts it down and closes the socket, so the port is free
again as soon as it returns.

The server lives inside the trading process, so it is bounded: a small fixed pool of worker
threads (not a thread per connection, as ``ThreadingHTTPServer`` and prometheus-client's own
server do), a cap on connections waiting for a worker (extra ones are closed at once; a scraper
retries) and a socket timeout, so stalled or slow clients can neither pile up threads nor hold a
worker for long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

WORKERS = 2  # scrapes are cheap and rare; two let /health answer during a slow /metrics
MAX_QUEUED = 8  # connections accepted but waiting for a worker; more are closed at once
CLIENT_TIMEOUT_SECS = 5.0  # a client that sends nothing (or reads nothing) for this long is cut


class BoundedHTTPServer(HTTPServer):
    """``HTTPServer`` whose requests run on a fixed thread pool with a bounded backlog."""

    def __init__(self, address, handler, *, workers: int, max_queued: int) -> None:
        # before binding: a failed bind calls server_close(), which shuts the pool down
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metrics-http")
        self._slots = threading.BoundedSemaphore(workers + max_queued)
        super().__init__(address, handler)
        self.accepted = 0  # connections handed to the pool (written by the serving thread only)
        self.refused = 0  # connections closed at once because the pool and queue were full

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):  # saturated: refuse rather than grow
            self.refused += 1
            self.shutdown_request(request)
            return
        self.accepted += 1
        try:
            self._pool.submit(self._work, request, client_address)
        except RuntimeError:  # pool shut down (stopping)
            self._slots.release()
            self.shutdown_request(request)

    def _work(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken client must not print a traceback
            pass
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        return  # a reset or timed-out client is routine, not an error to print

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class MetricsHTTPServer:
    """Serve ``render()`` on ``/metrics``, 200 on ``/health``, and ``ready()`` on ``/readyz``.

    ``ready`` returns ``(is_ready, reason)``; the reason is a short fixed text (never data).
    """

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], bytes],
        ready: Callable[[], tuple[bool, str]],
        *,
        workers: int = WORKERS,
        max_queued: int = MAX_QUEUED,
        client_timeout_secs: float = CLIENT_TIMEOUT_SECS,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, was {port}")
        self._host = host
        self._port = port
        self._render = render
        self._ready = ready
        self._workers = workers
        self._max_queued = max_queued
        self._client_timeout = client_timeout_secs
        self._httpd: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return self._httpd.server_address[1]

    @property
    def connections(self) -> tuple[int, int]:
        """(accepted, refused) connections since start."""
        if self._httpd is None:
            return (0, 0)
        return (self._httpd.accepted, self._httpd.refused)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> int:
        """Bind and start serving in a daemon thread; return the bound port."""
        if self._httpd is not None:
            return self.port
        render, ready = self._render, self._ready

        class Handler(BaseHTTPRequestHandler):
            timeout = self._client_timeout  # StreamRequestHandler applies it to the socket

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body = render()
                    except Exception as exc:  # a scrape must never kill the thread
                        self._send(500, f"render failed: {type(exc).__name__}\n".encode())
                        return
                    self._send(200, body, CONTENT_TYPE_LATEST)
                elif path == "/health":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok, reason = ready()
                    self._send(200 if ok else 503, f"{reason}\n".encode())
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:
                return  # scrapes every few seconds would flood the node's log

        try:
            httpd = BoundedHTTPServer(
                (self._host, self._port),
                Handler,
                workers=self._workers,
                max_queued=self._max_queued,
            )
        except OSError as exc:  # port taken, address not local, no permission
            raise OSError(
                f"metrics server cannot listen on {self._host}:{self._port}: {exc.strerror or exc} "
                "(another process on that port? set live.metrics.port or --metrics-port)"
            ) from None
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name=f"metrics-http-{self.port}", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
