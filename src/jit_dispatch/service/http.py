"""The pool's HTTP endpoint: the standard library's threading server, in a daemon thread.

Routes: GET /healthz, /readyz, /metrics; POST /webhook/github, /webhook/jit (only with a secret).
Bodies must declare their length and stay under MAX_BODY; a connection idle for
REQUEST_TIMEOUT is dropped, and any connection still open REQUEST_DEADLINE after it was accepted is
cut, so a client trickling bytes cannot pin a thread; beyond MAX_CONNECTIONS at once, new ones wait
in the listen backlog, so a flood cannot grow the threads without bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from jit_dispatch.service.metrics import CONTENT_TYPE, PoolMetrics
from jit_dispatch.service.webhooks import SIGNATURE_HEADER, Receiver, Reply, signature_matches

MAX_BODY = 5 * 1024 * 1024  # GitHub push payloads stay far below; anything bigger is refused (413)
BUFFERED = 64 * 1024  # body bytes held in memory before the signature is checked; the rest is spooled
CHUNK = 64 * 1024
REQUEST_TIMEOUT = 10.0
HEADER_DEADLINE = 5.0  # seconds a new connection has to send its request line and headers
REQUEST_DEADLINE = 30.0  # seconds a connection may stay open, whatever it sends (GitHub waits 10 s)
MAX_CONNECTIONS = 64  # served at once; probes and webhook deliveries need a handful
GET_ROUTES = ("/healthz", "/readyz", "/metrics")
UNSIGNED = Reply(401, "missing or wrong signature")  # the receiver's own answer to the same


class PoolView(Protocol):
    """What the endpoint needs of the pool (engine/pool.py)."""

    def alive(self) -> tuple[bool, str]: ...
    def ready(self) -> tuple[bool, str]: ...
    def wake(self, reason: str) -> None: ...
    def emit(self, event: str, **fields: Any) -> None: ...


@dataclass
class App:
    pool: PoolView
    metrics: PoolMetrics
    receiver: Receiver | None  # None: no secret, the webhook routes are off (404)


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "jit-dispatch"

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr: the pool logs webhooks itself, probes would drown everything."""

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        self.server.headers_read(self.request)
        return parsed

    def do_GET(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/readyz"):
            ok, why = app.pool.alive() if path == "/healthz" else app.pool.ready()
            self._text(200 if ok else 503, (why + "\n").encode())
        elif path == "/metrics":
            self._send(200, app.metrics.render(), CONTENT_TYPE)
        elif path.startswith("/webhook/") and self.server.webhooks:
            self._text(405, b"POST only\n", allow="POST")
        else:
            self._text(404, b"not found\n")

    def do_POST(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        routes: dict[str, Callable[[Any, bytes], Reply]] = {}
        if app.receiver is not None and self.server.webhooks:
            routes = {"/webhook/github": app.receiver.github, "/webhook/jit": app.receiver.jit}
        if path not in routes:
            self.close_connection = True  # its body is not read
            if path in GET_ROUTES:
                self._text(405, b"GET only\n", allow="GET")
            else:
                self._text(404, b"not found\n")
            return
        assert app.receiver is not None  # there are routes
        body = self._body(app.receiver.secret)
        if body is None:
            return
        reply = body if isinstance(body, Reply) else routes[path](self.headers, body)
        if reply.wake:
            app.pool.wake("webhook")
        app.pool.emit(
            "webhook", source=path.rsplit("/", 1)[1], kind=reply.kind, action=reply.action,
            delivery=reply.delivery, status=reply.status, wake=reply.wake, reply=reply.message,
        )  # fmt: skip
        payload = json.dumps({"status": reply.message, "wake": reply.wake}).encode() + b"\n"
        self._send(reply.status, payload, "application/json")

    def _body(self, secret: bytes) -> bytes | Reply | None:
        """The request body once its signature is right; a 401 Reply when it is not; None after
        answering 411/413/400.

        The body is hashed as it arrives and spooled to a temporary file past BUFFERED bytes, so an
        unsigned or wrongly signed body never sits in memory, whatever its declared length.
        """
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._refuse(411, b"send Content-Length, not chunked\n")
            return None
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._refuse(411, b"Content-Length required\n")
            return None
        if length < 0 or length > MAX_BODY:
            self._refuse(413, f"body larger than {MAX_BODY} bytes\n".encode())
            return None
        if not self.headers.get(SIGNATURE_HEADER):
            self.close_connection = True  # refused before a byte of the body is read
            return UNSIGNED
        digest = hmac.new(secret, digestmod=hashlib.sha256)
        with tempfile.SpooledTemporaryFile(max_size=BUFFERED) as spool:
            left = length
            try:
                while left and (chunk := self.rfile.read(min(left, CHUNK))):
                    digest.update(chunk)
                    spool.write(chunk)
                    left -= len(chunk)
            except (TimeoutError, OSError):
                self.close_connection = True
                return None
            if left:
                self._refuse(400, b"body shorter than Content-Length\n")
                return None
            if not signature_matches(digest, self.headers.get(SIGNATURE_HEADER)):
                return UNSIGNED
            spool.seek(0)
            return spool.read()

    def _refuse(self, status: int, message: bytes) -> None:
        self.close_connection = True  # the unread body must not be parsed as the next request
        self._text(status, message)

    def _text(self, status: int, message: bytes, **headers: str) -> None:
        self._send(status, message, "text/plain; charset=utf-8", **headers)

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.title(), value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the listen backlog: a burst waits there for a slot (socketserver's 5 resets it)

    def __init__(self, address: tuple[str, int], app: App, *, webhooks: bool = True) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.webhooks = webhooks  # False: the probe listener (probes and metrics only)
        self._headed: dict[int, threading.Event] = {}  # connection → its request headers have arrived
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closing = False
        super().__init__(address, Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="http")

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, at most MAX_CONNECTIONS: beyond them the accept loop waits for a free
        slot (new connections queue in the kernel's backlog, delayed rather than refused)."""
        while not self._slots.acquire(timeout=0.2):
            if self._closing:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        headed = self._headed[id(request)] = threading.Event()
        cuts = [
            threading.Timer(HEADER_DEADLINE, _cut, (request, headed)),
            threading.Timer(REQUEST_DEADLINE, _cut, (request,)),
        ]
        for cut in cuts:
            cut.daemon = True
            cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            for cut in cuts:
                cut.cancel()
            self._headed.pop(id(request), None)
            self._slots.release()

    def headers_read(self, request: Any) -> None:
        """The request line and headers of the connection's first request are in: its header deadline is met."""
        if (headed := self._headed.get(id(request))) is not None:
            headed.set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr instead of socketserver's traceback; a client hanging up is not worth one."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            print(f"jit-dispatch: http: {type(error).__name__}: {error}", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"

    def start(self) -> Server:
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing = True  # an accept loop waiting for a slot gives up
        self.shutdown()
        self.server_close()


def _cut(connection: socket.socket, unless: threading.Event | None = None) -> None:
    """Past the deadline (unless `unless` is set by then): whatever the handler waits for on this
    connection ends now."""
    if unless is not None and unless.is_set():
        return
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
