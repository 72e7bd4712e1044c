"""Prometheus metrics of the service (``GET /metrics``): requests, latency, faces, errors, batch sizes.

Each app has its own registry (tests build many apps in one process). With several workers,
``facetorch serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a folder before the workers start, and
``/metrics`` then adds up every worker's numbers (prometheus-client's multiprocess mode), whichever
worker answers the scrape. Routes are labelled by their template (``/v1/people/{name}``), never by
a name or anything a client sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class Metrics:
    """The service's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("facetorch_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("facetorch_request_seconds", "Time from request to the end of the answer", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.errors = Counter("facetorch_errors", "Answers with a 4xx or 5xx status", ["route", "status"],
                              registry=self.registry)  # fmt: skip
        self.faces = Counter("facetorch_faces", "Faces found by recognize, by result", ["result"], registry=self.registry)
        self.batch = Histogram("facetorch_batch_images", "Images per model batch", buckets=BATCH_BUCKETS,
                               registry=self.registry)  # fmt: skip

    def count_faces(self, names: Iterable[str], unknown: str) -> None:
        """Count a recognition's faces as ``known`` or ``unknown``."""
        names = list(names)
        strangers = sum(name == unknown for name in names)
        if strangers:
            self.faces.labels("unknown").inc(strangers)
        if len(names) > strangers:
            self.faces.labels("known").inc(len(names) - strangers)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text (every worker's, in multiprocess mode) and its content type."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: time every HTTP request and count its status (outermost, so it sees every refusal).

    Args:
        app: The application.
        metrics: Where to count.
        paths: The app's fixed paths: a request that never reached a route (refused before) is
            labelled with its path when it is one of these, else ``other``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: Sequence[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = set(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        counted = False

        def count() -> None:
            nonlocal counted
            if counted:
                return
            counted = True
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Count before the last byte leaves: a client that reads its answer and then
                # scrapes /metrics must find its own request counted.
                count()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            count()  # a request that failed before its last byte is still counted
