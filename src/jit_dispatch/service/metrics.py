"""The pool's Prometheus metrics, fed by the same events the log prints.

One private registry per pool (not prometheus_client's global one), so several pools in one
process — the tests — never share counters. Label `agent` is the agent's id in dispatch.toml.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Commands run from seconds (a script) to hours (an AI agent on a large issue).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))


class PoolMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.claims = Counter("jit_dispatch_claims", "Issues claimed", ["agent"], registry=r)
        self.settled = Counter("jit_dispatch_settled", "Runs settled, by outcome", ["agent", "outcome"], registry=r)
        self.running = Gauge("jit_dispatch_running", "Commands running now", ["agent"], registry=r)
        self.capacity = Gauge("jit_dispatch_capacity", "max_concurrent of the agent", ["agent"], registry=r)
        self.ready = Gauge("jit_dispatch_ready_issues", "Dispatchable ready issues at the last cycle", registry=r)
        self.oldest = Gauge(
            "jit_dispatch_oldest_ready_age_seconds",
            "Age (since created_at) of the oldest dispatchable issue at the last cycle; 0 when none",
            registry=r,
        )
        self.duration = Histogram(
            "jit_dispatch_command_duration_seconds",
            "How long commands ran, by agent and outcome",
            ["agent", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.gate_failures = Counter(
            "jit_dispatch_gate_failures", "gate_failed events seen in the event log", ["gate"], registry=r
        )
        self.cycle_errors = Counter(
            "jit_dispatch_cycle_errors", "Fill cycles that failed, and settles that failed (each retry)", registry=r
        )

    def emit(self, event: str, fields: Mapping[str, Any]) -> None:
        """Update from one pool event (the fields engine/pool.py emits for the log)."""
        if event == "start":
            for agent in fields["agents"]:
                self.capacity.labels(agent["agent"]).set(agent["capacity"])
                self.running.labels(agent["agent"]).set(0)
                self.claims.labels(agent["agent"])  # present (at 0) before the first claim
        elif event == "claim":
            self.claims.labels(fields["agent"]).inc()
            self.running.labels(fields["agent"]).set(fields["busy"])
        elif event == "settle":
            self.settled.labels(fields["agent"], fields["outcome"]).inc()
            self.running.labels(fields["agent"]).set(fields["busy"])
            if fields["duration_seconds"] is not None:
                self.duration.labels(fields["agent"], fields["outcome"]).observe(fields["duration_seconds"])
        elif event == "settle_retry":  # a settle failed and waits for its retry: an error of the loop
            self.cycle_errors.inc()
        elif event == "cycle":
            if fields["error"] is not None:
                self.cycle_errors.inc()
            else:
                self.ready.set(fields["ready_issues"])
                self.oldest.set(fields["oldest_ready_age_seconds"] or 0)

    def store_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """New lines of a store's events.jsonl: count gate failures, whoever ran the gate."""
        for event in events:
            if event.get("type") == "gate_failed" and isinstance(event.get("gate_key"), str):
                self.gate_failures.labels(event["gate_key"]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
