"""Around a running pool: the store watcher and the HTTP endpoint, started and stopped together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from jit_dispatch.errors import UsageError
from jit_dispatch.service.http import App, PoolView, Server
from jit_dispatch.service.metrics import PoolMetrics
from jit_dispatch.service.watch import StoreWatcher
from jit_dispatch.service.webhooks import Receiver


@contextmanager
def running_service(
    pool: PoolView,
    *,
    listen: tuple[str, int] | None,
    metrics: PoolMetrics | None,
    probe_listen: tuple[str, int] | None = None,
    secret: str,
    state_branch: str | None,
    watch_roots: list[Path],
) -> Iterator[Server | None]:
    """Yields the server (None without `listen`); everything stops when the block ends."""
    with ExitStack() as stack:
        if watch_roots:

            def changed(events: list[dict[str, Any]]) -> None:
                if metrics is not None:
                    metrics.store_events(events)
                pool.wake("store")

            watcher = StoreWatcher(watch_roots, changed).start()
            stack.callback(watcher.stop)
            pool.emit("watch", paths=[str(p) for p in watcher.paths])
        server = None
        if listen is not None:
            receiver = Receiver(secret.encode(), state_branch) if secret else None
            app = App(pool, metrics or PoolMetrics(), receiver)
            server = _serve(stack, "--listen", listen, app, webhooks=True)
            probes = _serve(stack, "--probe-listen", probe_listen, app, webhooks=False) if probe_listen else None
            pool.emit("listen", url=server.url, webhooks=receiver is not None, probe_url=probes and probes.url)
        yield server


def _serve(stack: ExitStack, option: str, address: tuple[str, int], app: App, *, webhooks: bool) -> Server:
    """A started server, closed when `stack` ends; a port that cannot be bound is a usage error."""
    try:
        server = Server(address, app, webhooks=webhooks).start()
    except OSError as exc:
        raise UsageError(f"{option}: cannot listen on {address[0]}:{address[1]} ({exc.strerror or exc})") from None
    stack.callback(server.close)
    return server
