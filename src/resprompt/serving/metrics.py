"""Prometheus metrics of one server (its own registry, so several apps in a process never clash)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Requests by route and status, request latency by route, rows per backbone forward."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("resprompt_requests", "HTTP requests by route and status code.",
                                ("route", "status"), registry=self.registry)
        self.latency = Histogram("resprompt_request_seconds", "HTTP request latency by route.", ("route",),
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("resprompt_batch_rows", "Rows per batch run by the model worker.",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.prompts = Gauge("resprompt_prompts", "Prompts being served.", registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
