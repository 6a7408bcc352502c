"""Prometheus metrics of one server: its own registry, so two apps in one process never collide.

Tokens per second is `rate(q3embed_tokens_total[1m])`; the gauge q3embed_batch_tokens_per_second
gives the speed of the latest batch for dashboards without PromQL.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("q3embed_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("q3embed_request_duration_seconds", "Time to answer a request", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_requests = Gauge("q3embed_queue_requests", "Requests waiting for the model", registry=r)
        self.queue_tokens = Gauge("q3embed_queue_tokens", "Tokens waiting for the model", registry=r)
        self.batch_sequences = Histogram("q3embed_batch_sequences", "Sequences per model batch",
                                         buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram("q3embed_batch_tokens", "Tokens per model batch",
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.batch_seconds = Histogram("q3embed_batch_duration_seconds", "Model time per batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("q3embed_tokens", "Tokens run through the models", registry=r)
        self.tokens_per_second = Gauge("q3embed_batch_tokens_per_second", "Speed of the latest batch", registry=r)
        self.rejected = Counter("q3embed_rejected_requests", "Requests refused because the queue was full",
                                registry=r)
        self.disconnects = Counter("q3embed_client_disconnects", "Clients that left before their answer",
                                   registry=r)

    def watch_queue(self, requests: Callable[[], int], tokens: Callable[[], int]) -> None:
        self.queue_requests.set_function(requests)
        self.queue_tokens.set_function(tokens)

    # BatchObserver: called on the engine's worker thread (prometheus_client is thread-safe).
    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None:
        self.batch_sequences.observe(sequences)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.tokens.inc(tokens)
        if seconds > 0:
            self.tokens_per_second.set(tokens / seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
