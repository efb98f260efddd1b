"""Prometheus metrics in the text exposition format, without a client library.

Request counts and latencies per route template (never per raw path, so a scan of random URLs
cannot grow the label set), errors by class, and the sizes of decoded batches, which show
whether micro-batching gathers anything. Each worker process counts its own requests.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative-bucket histogram, one series per label set."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts: dict[Labels, list[int]] = defaultdict(lambda: [0] * (len(self.buckets) + 1))
        self.sums: dict[Labels, float] = defaultdict(float)

    def observe(self, labels: Labels, value: float) -> None:
        self.counts[labels][bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def lines(self, name: str) -> Iterable[str]:
        for labels, counts in sorted(self.counts.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                yield f"{name}_bucket{_labels((*labels, ('le', le)))} {cumulative}"
            yield f"{name}_sum{_labels(labels)} {self.sums[labels]:.6f}"
            yield f"{name}_count{_labels(labels)} {cumulative}"


class Metrics:
    """The server's counters and histograms; thread-safe, rendered by ``render()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[Labels, int] = defaultdict(int)
        self.errors: dict[Labels, int] = defaultdict(int)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("method", method), ("route", route), ("status", str(status)))] += 1
            self.latency.observe((("route", route),), seconds)
            if status >= 400:
                kind = "server" if status >= 500 else "client"
                self.errors[(("route", route), ("kind", kind))] += 1

    def observe_batch(self, model: str, size: int) -> None:
        with self._lock:
            self.batch_size.observe((("model", model),), size)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP rlchat_http_requests_total HTTP requests answered.",
                "# TYPE rlchat_http_requests_total counter",
                *_series("rlchat_http_requests_total", self.requests),
                "# HELP rlchat_http_errors_total Answers with a 4xx (client) or 5xx (server).",
                "# TYPE rlchat_http_errors_total counter",
                *_series("rlchat_http_errors_total", self.errors),
                "# HELP rlchat_http_request_duration_seconds Time to answer a request.",
                "# TYPE rlchat_http_request_duration_seconds histogram",
                *self.latency.lines("rlchat_http_request_duration_seconds"),
                "# HELP rlchat_decode_batch_size Requests decoded together.",
                "# TYPE rlchat_decode_batch_size histogram",
                *self.batch_size.lines("rlchat_decode_batch_size"),
            ]
        return "\n".join(lines) + "\n"


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


def _series(name: str, values: dict[Labels, int]) -> Iterable[str]:
    for labels, value in sorted(values.items()):
        yield f"{name}{_labels(labels)} {value}"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"') for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"
