"""The GitHub fake on a loopback HTTP server (127.0.0.1, one thread per request), so real
`jit-dispatch` processes can share it through `--github-api-url`.

Every request waits a random latency before and after GitHub handles it (the state changes
under one lock, in between); a stall fault (`FakeGitHub.stall`) holds one request back first,
for its delay or until the test sets `unstall`.
"""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from github_fake import FakeGitHub

# The real entry point without PyGithub's pacing (1 s between writes), as the in-process tests run it,
# and with a read timeout longer than any stall a test holds a request for (a loaded machine is slow).
UNPACED = (
    "import jit_dispatch.trackers.github.api as a; a.THROTTLE = False; a.TIMEOUT = 300; "
    "from jit_dispatch.cli.main import main; main()"
)


class FakeServer:
    def __init__(self, fake: FakeGitHub, latency: tuple[float, float] = (0.0, 0.0)) -> None:
        self.fake = fake
        self.latency = latency
        self.lock = threading.Lock()
        self.closing = threading.Event()  # the test is over: stalled requests never land
        self.unstall = threading.Event()  # set by a test: stalled requests go on now
        self.arrived: list[tuple[str, str, str]] = []  # (method, path, token) of requests, stalled or not
        self.httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        fake.base = self.url
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.closing.set()
        self.unstall.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait(self) -> None:
        low, high = self.latency
        if high > 0:
            time.sleep(random.uniform(low, high) / 2)

    def serve(self, method: str, path: str, body: str | None, token: str) -> tuple[int, dict[str, str], str]:
        self.wait()
        with self.lock:
            fault = self.fake.fault_for(method, path.split("?", 1)[0], token)
            self.arrived.append((method, path, token))  # after its faults were taken
        if fault is not None and fault.delay:
            self.unstall.wait(fault.delay)
            if self.closing.is_set():
                return 503, {}, ""
        with self.lock:
            answer = self.fake.handle(method, path, body, token, fault if fault and fault.status else None)
        self.wait()
        return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (the tests SIGKILL runners) is expected, not an error."""


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else None
            token = str(self.headers.get("Authorization", "")).split(" ")[-1]
            status, headers, text = server.serve(self.command, self.path, body, token)
            data = text.encode()
            self.send_response(status)  # with the fake's own `Date` (date_time_string)
            for key, value in headers.items():
                if key != "Date":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, *_args: Any) -> None:
            pass

        def date_time_string(self, timestamp: float | None = None) -> str:
            return server.fake.date()

    return Handler
