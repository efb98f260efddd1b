"""Prometheus metrics for `/metrics`, kept by ``prometheus_client``.

Request counts and latencies per route template (never per raw path, so a scan of random URLs
cannot grow the label set), errors by class, and the sizes of decoded batches, which show
whether micro-batching gathers anything.

Each app owns a ``CollectorRegistry`` (not the library's global one), so several apps in one
process do not collide. With several workers (``rlchat serve --workers N``), ``serve()`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before they start: ``prometheus_client`` then
keeps every worker's values in files there, and any worker's `/metrics` sums all of them.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_mode() -> bool:
    """Whether this process's values live in the multi-process directory's files.

    ``prometheus_client`` decides once, when first imported: files if ``PROMETHEUS_MULTIPROC_DIR``
    was set then, this process's memory otherwise. Rendering follows the same decision.
    """
    return values.ValueClass is not values.MutexValue


class Metrics:
    """The server's counters and histograms; thread-safe, rendered by ``render()``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = multiprocess_mode()
        self.requests = Counter(
            "rlchat_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "rlchat_http_errors",
            "Answers with a 4xx (client) or 5xx (server).",
            ["route", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rlchat_http_request_duration_seconds",
            "Time to answer a request.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rlchat_decode_batch_size",
            "Requests decoded together.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        if self.multiprocess:
            # The per-process values are in the files; one collector reads all workers'.
            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed)
        else:
            self._exposed = self.registry

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            kind = "server" if status >= 500 else "client"
            self.errors.labels(route=route, kind=kind).inc()

    def observe_batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model=model).observe(size)

    def render(self) -> bytes:
        """The text exposition format (``content_type``): all workers' sums in multi-process
        mode, this app's own values otherwise."""
        return generate_latest(self._exposed)

    def close(self) -> None:
        """At the worker's shutdown: ``prometheus_client``'s bookkeeping for a dead process
        (it drops live gauges; counters and histograms of a dead worker keep counting in the
        sums, as Prometheus expects of them)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            self.metrics.observe_request(
                method=scope["method"],
                route=getattr(route, "path", "unmatched"),
                status=status,
                seconds=time.perf_counter() - started,
            )
