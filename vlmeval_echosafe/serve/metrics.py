"""The guard's Prometheus metrics, in a registry of its own (one per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a millisecond (retrieval on a small bank) to minutes (a long upstream answer).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GuardMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "guard_requests", "Chat requests by tenant and HTTP status", ["tenant", "status"], registry=r
        )
        self.latency = Histogram(
            "guard_latency_seconds",
            "Latency by stage: retrieval, upstream, total",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("guard_reflection_queue_depth", "Reflections waiting for a worker", registry=r)
        self.dropped = Counter(
            "guard_reflections_dropped", "Reflections not queued because the queue was full", ["tenant"], registry=r
        )
        self.insights = Counter(
            "guard_insights",
            "Reflected requests by outcome: stored, or rejected with the method's reason code",
            ["tenant", "outcome", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "guard_upstream_errors", "Upstream calls that failed, by kind", ["kind"], registry=r
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)
