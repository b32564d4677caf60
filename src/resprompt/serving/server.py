"""The HTTP API (FastAPI) over a ``PromptRegistry``, and ``serve`` behind ``resprompt serve``.

Routes: ``GET /healthz``; ``GET /v1/prompts``; ``POST /v1/predict`` ``{"prompt": NAME, "inputs":
[RECORD, ...]}`` -> ``{"prompt": NAME, "predictions": [...]}``; ``GET /metrics`` (Prometheus);
``POST /v1/reload`` (rescans the prompts folder). Every error is JSON ``{"detail": message}``: 400
malformed JSON, 401 no / wrong API key, 404 unknown prompt or route, 413 body too large, 422 bad
request (fields, empty or too many inputs, text too long, a record the task cannot read), 503 queue
full, 504 timed out. The API never takes a path: prompt names are looked up in the loaded set.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ..devices import resolve_device, resolve_dtype
from ..tasks.records import DataError
from ..training.runconfig import ConfigError
from ..version import __version__
from .batcher import Batcher, Busy
from .config import ServeConfig
from .metrics import ServeMetrics
from .middleware import ApiKeyAuth, BodyLimit, RequestMetrics
from .prompts import UnknownPrompt
from .registry import PromptRegistry
from .schemas import (
    Error,
    Health,
    Prediction,
    PredictRequest,
    PredictResponse,
    PromptInfo,
    PromptList,
    ReloadReport,
)

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
ERRORS = {code: {"model": Error} for code in (400, 401, 404, 413, 422, 503, 504)}


def bad_text(record: dict, limit: int) -> tuple[str, str] | None:
    """(field path, what is wrong) of the first string in ``record`` longer than ``limit`` characters or not
    valid Unicode text (a lone surrogate such as "\\ud800", which JSON allows and tokenizers refuse), or None."""
    stack = [("", record)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if len(value) > limit:
                return path.lstrip("."), f"{len(value)} characters, more than the {limit} allowed (--max-text-chars)"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return path.lstrip("."), (f"not valid Unicode text: a lone surrogate {value[e.start]!r} at "
                                          f"character {e.start}")
        if isinstance(value, dict):
            stack += [(f"{path}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return None


def _check_inputs(req: PredictRequest, cfg: ServeConfig) -> None:
    if len(req.inputs) > cfg.max_inputs:
        raise HTTPException(422, f"{len(req.inputs)} inputs: at most {cfg.max_inputs} per request (--max-inputs)")
    for i, record in enumerate(req.inputs):
        found = bad_text(record, cfg.max_text_chars)
        if found is not None:
            raise HTTPException(422, f"inputs[{i}].{found[0]}: {found[1]}")


def _predictions(results: list) -> list[Prediction]:
    """The predictions, or the HTTP error of the first input that failed."""
    for r in results:
        if isinstance(r, DataError):
            raise HTTPException(422, str(r))
        if isinstance(r, Busy):  # the server stopped before this row ran
            raise HTTPException(503, str(r))
        if isinstance(r, BaseException):
            log.error("prediction failed", exc_info=r)
            raise HTTPException(500, "internal error while predicting (logged on the server)")
    return [Prediction(**r) for r in results]


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "malformed JSON body: " + "; ".join(
            str(e.get("ctx", {}).get("error", e.get("msg"))) for e in errors)}, status_code=400)
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}" for e in errors]
    return JSONResponse({"detail": "invalid request: " + "; ".join(parts)}, status_code=422)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)


def create_app(registry: PromptRegistry, cfg: ServeConfig, api_key: str | None = None) -> FastAPI:
    """The API app; its batcher starts and stops with the app's lifespan."""
    metrics = ServeMetrics()
    batcher = Batcher(registry.predict_each, cfg.batch_policy(), on_batch=metrics.batch_size.observe)
    reloading = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        metrics.prompts.set(len(registry.names()))
        yield
        await batcher.stop()

    app = FastAPI(title="resprompt", version=__version__, lifespan=lifespan,
                  description="Many soft prompts on one backbone, batched together.")
    app.state.registry, app.state.batcher, app.state.metrics = registry, batcher, metrics

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", prompts=len(registry.names()))

    @app.get("/v1/prompts", response_model=PromptList, responses=ERRORS)
    async def prompts() -> PromptList:
        return PromptList(prompts=[PromptInfo(**p) for p in registry.info()])

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=ERRORS)
    async def predict(req: PredictRequest) -> PredictResponse:
        _check_inputs(req, cfg)
        try:
            prompt = registry.get(req.prompt)
        except UnknownPrompt as e:
            raise HTTPException(404, str(e)) from None
        payloads = [(prompt, record, f"inputs[{i}]") for i, record in enumerate(req.inputs)]
        try:
            results = await batcher.submit(payloads, cfg.timeout_s)
        except Busy as e:
            raise HTTPException(503, str(e)) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no prediction within {cfg.timeout_s} s (--timeout-s)") from None
        return PredictResponse(prompt=req.prompt, predictions=_predictions(results))

    @app.get("/metrics", responses=ERRORS)
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/reload", response_model=ReloadReport, responses=ERRORS)
    async def reload() -> ReloadReport:
        async with reloading:
            try:
                report = await batcher.run_exclusive(registry.scan)  # between batches, on the model thread
            except NotADirectoryError as e:
                raise HTTPException(503, f"cannot reload: {e}") from None
        metrics.prompts.set(len(report.served))
        return ReloadReport(**asdict(report))

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    routes = {r.path for r in app.routes}
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes, read_timeout_s=cfg.timeout_s)
    if api_key is not None:
        app.add_middleware(ApiKeyAuth, key=api_key)
    app.add_middleware(RequestMetrics, observe=metrics.observe_request, routes=routes)  # outermost
    return app


def read_api_key(path: str) -> str:
    """The key in ``path`` (surrounding whitespace removed); ConfigError if missing or empty."""
    try:
        key = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"--api-key-file {path}: {e.strerror or e}") from None
    if not key:
        raise ConfigError(f"--api-key-file {path}: the file is empty")
    if os.stat(path).st_mode & 0o077:
        log.warning("--api-key-file %s is readable by other users; chmod 600 it", path)
    return key


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port); OSError (address in use, no such host) otherwise."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(cfg: ServeConfig) -> int:
    """Loads the backbone and prompts, then serves until interrupted. Startup errors raise
    ConfigError / BackboneError (ValueError) or OSError, which the CLI turns into one line, exit 2."""
    import uvicorn

    api_key = read_api_key(cfg.api_key_file) if cfg.api_key_file else None
    folder = Path(cfg.prompts)
    if not folder.is_dir():
        raise ConfigError(f"--prompts {folder}: folder not found")
    if cfg.host not in LOOPBACK and api_key is None:
        log.warning("listening on %s without --api-key-file: anyone who reaches this address can use the API",
                    cfg.host)
    sock = bind(cfg.host, cfg.port)
    registry = PromptRegistry.load(cfg.model, folder, cfg.registry_options(), device=resolve_device(cfg.device),
                                   dtype=resolve_dtype(cfg.dtype))
    if not registry.names():
        log.warning("no prompt in %s can be served yet; add folders and POST /v1/reload", folder)
    app = create_app(registry, cfg, api_key)
    # a stop lets requests in flight finish (each waits --timeout-s at most) before uvicorn cancels them
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False,
                                           timeout_graceful_shutdown=math.ceil(cfg.timeout_s) + 5))
    log.info("serving %d prompt(s) on http://%s:%d", len(registry.names()), cfg.host, sock.getsockname()[1])
    server.run(sockets=[sock])
    return 0
