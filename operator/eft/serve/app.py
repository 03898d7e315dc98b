"""The HTTP API: OpenAI/NIM-compatible embeddings, models, health, metrics.

`create_app(settings)` returns an ASGI app. The model loads (and warms up) in a background thread after start-up:
`/v1/health/live` answers at once, `/v1/health/ready` only once the model is ready, and `/v1/embeddings` answers
503 until then. Client mistakes get an OpenAI-style 4xx error body and never a 5xx.

`POST /v1/embeddings`, the one route on the hot path, is answered by the app before FastAPI's middleware and
routing (`EmbeddingServer.__call__`; the route stays registered for the OpenAPI schema and answers the same):
on the benchmark's 2-core CPU the event loop spent about a third of its time per request in that stack, time
the model's threads share the cores with. Its metrics are recorded there as `MetricsMiddleware` does for the
other routes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Callable

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from eft.api.serving import ServingSettings
from eft.export.artifact import InputTooLong, ModelMetadata
from eft.serve.backends import ModelSource, locate
from eft.serve.batcher import DynamicBatcher
from eft.serve.metrics import MetricsMiddleware, ServerMetrics, route_label
from eft.serve.schemas import (ApiError, EmbeddingRequest, EmbeddingResponse, ErrorResponse, HealthResponse,
                               ModelCard, ModelList, unknown_model, validate)

log = logging.getLogger("eft.serve")

#: A request of more texts than this, or of more characters than `TOKENIZE_OFFLOAD_CHARS` in all, is tokenised in
#: a worker thread instead of on the event loop. Tokenising costs about 1 ms per 1,000 characters on one core and
#: runs over the whole text before any truncation, so one long text (the body limit allows 16 MiB) would otherwise
#: hold the event loop, and with it every other request and the health probes, for seconds.
TOKENIZE_OFFLOAD = 32
TOKENIZE_OFFLOAD_CHARS = 16_384


def _error(err: ApiError, metrics: ServerMetrics, path: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer to an error on `path`, counted in the error metrics; `headers` go with it (a 405's
    Allow)."""
    metrics.errors.labels(route_label(path), err.type).inc()
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _server_fault(err: Exception, path: str) -> ApiError:
    """The 500 answer to an unexpected exception on `path`, logged with its traceback."""
    log.exception("unexpected error on %s", path)
    return ApiError(500, f"internal server error: {type(err).__name__}", None, "internal_error", "server_error")


class ServerState:
    def __init__(self, settings: ServingSettings, source: ModelSource | None, meta: ModelMetadata,
                 loader: Callable[[], Any]):
        self.settings = settings
        self.source = source
        self.meta = meta
        self.loader = loader
        self.names = list(settings.served_model_names) or [meta.name]
        self.backend = None
        self.batcher: DynamicBatcher | None = None
        self.ready = False
        self.load_error: str | None = None
        self.created = int(time.time())
        self.metrics = ServerMetrics(self.names[0])
        #: tokenises large requests (`TOKENIZE_OFFLOAD`); started and shut down with the app (lifespan)
        self.tokenize_pool: ThreadPoolExecutor | None = None

    def load(self) -> None:
        started = time.monotonic()
        try:
            backend = self.loader()
            self.meta = backend.meta
            batcher = DynamicBatcher(backend.run_batch, backend.tokenizer.pad, backend.meta.dimension,
                                     max_batch=min(self.settings.max_batch_size, getattr(backend, "max_batch", 10**9)),
                                     max_wait_ms=self.settings.max_wait_ms,
                                     max_tokens=getattr(backend, "batch_tokens", None), on_batch=self.metrics.on_batch,
                                     rows_per_call=getattr(backend, "rows_per_call", None),
                                     run_lane=getattr(backend, "run_lane", None), lanes=getattr(backend, "lanes", 1))
            if self.settings.warmup:
                warm(backend)
            self.backend, self.batcher = backend, batcher
            self.metrics.set_backend(backend.name)
            self.metrics.load_seconds.set(time.monotonic() - started)
            self.ready = True
            self.metrics.ready.set(1)
            log.info("model '%s' ready (%s on %s) in %.1fs", self.names[0], backend.name,
                     ",".join(backend.providers), time.monotonic() - started)
        except Exception as err:  # noqa: BLE001 - reported by the health endpoints
            self.load_error = f"{type(err).__name__}: {err}"
            log.exception("model failed to load")


def warm(backend) -> None:
    """Run a few shapes once so the first real requests do not pay for allocations and kernel selection."""
    tok = backend.tokenizer
    runs = [backend.run_batch] + ([backend.run_lane] if getattr(backend, "lanes", 1) > 1 else [])
    for n, words in ((1, 4), (8, 24), (32, 60)):
        seqs = tok.encode(["warm up " * words] * n, truncate="END")
        for run in runs:
            run(tok.pad(seqs))


EMBEDDINGS = "/v1/embeddings"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class EmbeddingServer(FastAPI):
    """FastAPI, with `POST /v1/embeddings` answered by `embeddings_asgi` (a bare ASGI callable set by
    `create_app`) before the middleware stack; every other request goes through FastAPI."""

    embeddings_asgi: Callable[..., Any] | None = None

    async def __call__(self, scope, receive, send) -> None:
        if (self.embeddings_asgi is not None and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in (EMBEDDINGS, scope.get("root_path", "") + EMBEDDINGS)):
            await self.embeddings_asgi(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: ServingSettings, loader: Callable[[], Any] | None = None,
               meta: ModelMetadata | None = None) -> FastAPI:
    """The server app. `loader` (tests) replaces loading the model from `settings.model_dir`."""
    source = None
    if loader is None or meta is None:
        source = locate(settings.model_dir, settings.backend)
        meta = meta or source.describe()
    if loader is None:
        loader = lambda: source.load(settings.threads)  # noqa: E731
    state = ServerState(settings, source, meta, loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.tokenize_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eft-tokenize")
        thread = threading.Thread(target=state.load, name="eft-model-load", daemon=True)
        thread.start()
        yield
        state.ready = False  # an app started again loads its model again (and is not ready until then)
        state.metrics.ready.set(0)
        if state.batcher is not None:
            await state.batcher.close()
        state.tokenize_pool.shutdown(wait=False, cancel_futures=True)

    app = EmbeddingServer(title="embedding-finetune-operator server", version="0.1.0", lifespan=lifespan,
                          description="OpenAI-compatible embeddings (with NVIDIA NIM's input_type and truncate).")
    app.state.eft = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    metrics = state.metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return _error(err, metrics, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return _error(ApiError(err.status_code, str(err.detail), None, code), metrics, request.url.path,
                      getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        first = (err.errors() or [{}])[0]
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(ApiError(400, first.get("msg", "invalid request"), param, "invalid_value"), metrics,
                      request.url.path)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, err: Exception):
        return _error(_server_fault(err, request.url.path), metrics, request.url.path)

    request_schema = EmbeddingRequest.model_json_schema()
    props = request_schema["properties"]
    props["model"]["enum"] = state.names
    props["input"]["anyOf"] = [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
         "maxItems": settings.max_inputs_per_request},
    ]
    props["dimensions"]["anyOf"] = [{"type": "integer", "enum": list(meta.supported_dimensions)}, {"type": "null"}]
    error_responses = {code: {"model": ErrorResponse, "description": why} for code, why in (
        (400, "Invalid request"), (404, "Unknown model"), (413, "Request body too large"),
        (415, "Content type is not JSON"), (503, "Model not loaded yet"))}

    async def embed(content_type: str | None, content_length: str | None, receive) -> bytes:
        """The response body of one embeddings request (headers as sent, `receive` the ASGI channel of its
        body); raises ApiError for what the client must fix or wait for."""
        if not state.ready:
            raise ApiError(503, "the model is still loading" if state.load_error is None
                           else f"the model failed to load: {state.load_error}", None, "model_not_ready",
                           "service_unavailable")
        batcher = state.batcher
        batcher.arriving()
        try:
            if content_type is not None:
                media = content_type.split(";")[0].strip().lower()
                if media != "application/json" and not media.endswith("+json"):
                    raise ApiError(415, f"Content-Type must be application/json, got {content_type[:100]!r}", None,
                                   "unsupported_media_type")
            body = await _read_body(receive, content_length, settings.max_request_bytes)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as err:
                raise ApiError(400, f"the request body is not valid JSON: {err}", None, "invalid_json") from None
            meta = state.meta
            req = validate(payload, set(state.names), settings.max_inputs_per_request, meta.supported_dimensions,
                           meta.asymmetric, settings.default_input_type)
            prefix = meta.prefix_for(req.input_type)
            tokenizer = state.backend.tokenizer
            try:
                if len(req.texts) > TOKENIZE_OFFLOAD or sum(map(len, req.texts)) > TOKENIZE_OFFLOAD_CHARS:
                    seqs, counts = await asyncio.get_running_loop().run_in_executor(
                        state.tokenize_pool, tokenizer.encode_counted, req.texts, req.truncate, prefix)
                else:
                    seqs, counts = tokenizer.encode_counted(req.texts, req.truncate, prefix)
            except InputTooLong as err:
                param = "input" if isinstance(payload.get("input"), str) else f"input[{err.index}]"
                raise ApiError(400, str(err).replace(f"input[{err.index}]", param), param,
                               "input_too_long") from None
        finally:
            batcher.arrived()
        emb = await batcher.embed(seqs)
        if req.dimensions is not None and req.dimensions < emb.shape[1]:
            emb = emb[:, : req.dimensions]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        n_tokens = sum(counts)  # the user's tokens: never the prefix or special tokens the model format adds
        metrics.inputs.inc(len(seqs))
        metrics.tokens.inc(n_tokens)
        if req.encoding_format == "base64":
            data = [{"object": "embedding", "index": i,
                     "embedding": base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")}
                    for i, row in enumerate(emb)]
        else:
            data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(emb)]
        out = {"object": "list", "data": data, "model": req.model,
               "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

    async def respond(content_type: str | None, content_length: str | None, receive) -> tuple[int, bytes]:
        """(status, JSON body) of one embeddings request, errors included (counted in the error metrics)."""
        try:
            return 200, await embed(content_type, content_length, receive)
        except Exception as err:  # noqa: BLE001 - ApiError: the client's to fix; anything else: a server fault
            api = err if isinstance(err, ApiError) else _server_fault(err, EMBEDDINGS)
            metrics.errors.labels(EMBEDDINGS, api.type).inc()
            return api.status, orjson.dumps(api.body())

    async def embeddings_asgi(scope, receive, send) -> None:
        started = time.perf_counter()
        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        status = 500
        try:
            status, body = await respond(content_type, content_length, receive)
            await send({"type": "http.response.start", "status": status,
                        "headers": _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.observe_request(EMBEDDINGS, status, time.perf_counter() - started)

    app.embeddings_asgi = embeddings_asgi

    @app.post(EMBEDDINGS, response_model=EmbeddingResponse, responses=error_responses,
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": request_schema}}}})
    async def embeddings(request: Request):
        """The same answer through FastAPI (the app answers this route before FastAPI; see the module)."""
        status, body = await respond(request.headers.get("content-type"), request.headers.get("content-length"),
                                     request.receive)
        return Response(body, status_code=status, media_type="application/json")

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": state.created, "owned_by": "embedding-finetune-operator",
                "root": state.names[0], "max_model_len": state.meta.max_seq_length,
                "dimensions": state.meta.dimension, "supported_dimensions": list(state.meta.supported_dimensions),
                "input_type_required": state.meta.asymmetric and settings.default_input_type is None,
                "default_input_type": settings.default_input_type}

    @app.get("/v1/models", response_model=ModelList)
    async def models():
        return {"object": "list", "data": [model_card(name) for name in state.names]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard,
             responses={404: {"model": ErrorResponse, "description": "no model of that name is served"}})
    async def model(model_id: str):
        """One served model (OpenAI's `GET /v1/models/{model}`; a name may hold '/', as "org/model" does)."""
        if model_id not in state.names:
            raise unknown_model(model_id, state.names)
        return model_card(model_id)

    @app.get("/v1/health/live", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def live():
        if state.load_error is not None:
            return JSONResponse({"object": "health.response", "status": "failed",
                                 "message": f"model failed to load: {state.load_error}"}, status_code=503)
        return {"object": "health.response", "status": "live", "message": "Service is live."}

    @app.get("/v1/health/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def ready():
        if state.ready:
            return {"object": "health.response", "status": "ready", "message": "Service is ready."}
        status, message = ("failed", f"model failed to load: {state.load_error}") if state.load_error else (
            "loading", "The model is loading.")
        return JSONResponse({"object": "health.response", "status": status, "message": message}, status_code=503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus():
        if state.batcher is not None:
            metrics.queue_depth.set(state.batcher.queue_depth)
        payload, ctype = metrics.render()
        return Response(payload, media_type=ctype)

    return app


async def _read_body(receive, declared: str | None, limit: int) -> bytes:
    """The request body from the ASGI `receive` channel, at most `limit` bytes (413 beyond it, also for chunked
    bodies without a Content-Length), never empty (400)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes, more than the limit of {limit}", None,
                       "request_too_large")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client disconnected before sending the whole body", None, "client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is larger than the limit of {limit} bytes", None,
                           "request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", None, "invalid_body")
    return body
