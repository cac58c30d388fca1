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
            try:
                server = Server(listen, App(pool, metrics or PoolMetrics(), receiver)).start()
            except OSError as exc:
                raise UsageError(
                    f"--listen: cannot listen on {listen[0]}:{listen[1]} ({exc.strerror or exc})"
                ) from None
            stack.callback(server.close)
            pool.emit("listen", url=server.url, webhooks=receiver is not None)
        yield server
