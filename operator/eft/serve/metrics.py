"""Prometheus metrics of the server (one registry per app, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = {"/v1/embeddings", "/v1/models", "/v1/health/live", "/v1/health/ready", "/metrics", "/openapi.json",
          "/docs"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def route_label(path: str) -> str:
    """The `route` label of a request path: one of `ROUTES`, else "other" (a label per unknown path would let
    any client grow the metrics without bound)."""
    return path if path in ROUTES else "other"


class ServerMetrics:
    def __init__(self, model: str, backend: str = "loading"):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("eft_requests", "HTTP requests by route and status code.", ["route", "code"],
                                registry=r)
        self.errors = Counter("eft_request_errors", "Requests answered with an error, by route and error type.",
                              ["route", "type"], registry=r)
        self.latency = Histogram("eft_request_duration_seconds", "HTTP request latency.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.inputs = Counter("eft_embedding_inputs", "Texts embedded.", registry=r)
        self.tokens = Counter("eft_embedding_tokens", "The users' tokens embedded, as counted in usage (after "
                              "truncation, without prefixes and special tokens).",
                              registry=r)
        self.batch_size = Histogram("eft_batch_size", "Inputs per model batch.", buckets=BATCH_BUCKETS, registry=r)
        self.batch_tokens = Histogram("eft_batch_tokens", "Tokens per model batch (without padding).",
                                      buckets=(16, 64, 256, 1024, 4096, 16384, 65536), registry=r)
        self.inference = Histogram("eft_inference_duration_seconds", "Model time per batch.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("eft_queue_depth", "Inputs waiting for a batch.", registry=r)
        self.ready = Gauge("eft_model_ready", "1 once the model is loaded and warmed up.", registry=r)
        self.info = Gauge("eft_model_info", "The served model and backend.", ["model", "backend"], registry=r)
        self.load_seconds = Gauge("eft_model_load_seconds", "Time to load and warm up the model.", registry=r)
        self._model = model
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        self.info.clear()
        self.info.labels(self._model, backend).set(1)

    def on_batch(self, size: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_tokens.observe(tokens)
        self.inference.observe(seconds)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request: its latency and its count by route and status code."""
        self.latency.labels(route).observe(seconds)
        self.requests.labels(route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests by route template and status, and times them."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = route_label(scope["path"])
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(route, status["code"], time.perf_counter() - started)
