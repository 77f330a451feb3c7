"""A web page to draw digits for a run's networks, and the JSON API behind it.

    mnist-study serve runs/paper-20260101-120000            # then open http://127.0.0.1:8000

    GET  /               the drawing page (mnist_study/static/draw.html, one self-contained file)
    GET  /api/models     the run's experiments that have a trained network, and the default one
    POST /api/predict    an image upload (multipart field "image") or JSON {"pixels": 28x28 floats}
                         -> predicted digit, ten class probabilities, every hidden node's activation
    GET  /health         liveness and the number of loaded networks
    GET  /docs           OpenAPI documentation

    curl -F image=@seven.png 'http://127.0.0.1:8000/api/predict?model=exp6'

Limits, and the answers to bad input (the body is {"detail": "...", "code": "..."}):

    body over 2 MiB                                   413 too_large
    content type not multipart/form-data or JSON,
      or an uploaded part that is not an image type   415 unsupported_media_type
    an upload that is not a readable image            422 not_an_image
    more than 16.7 megapixels (decompression bombs)   422 too_many_pixels
    a blank image or canvas                           422 no_digit   (never a guess on no ink)
    malformed JSON, pixels not 28x28 in [0, 1], an
      unknown field, or two different models named    422 invalid_request
    a malformed multipart body                        400 bad_request
    a model name the run does not have                404 unknown_model
    over 1,200 requests a minute from one client      429 rate_limited (with Retry-After)
    a body that takes over 30 s to arrive             408 request_timeout (and the connection closes)
    headers not finished within 10 s of connecting
      (or of the previous answer)                     the connection is closed
    unfinished headers over 16 KiB (h11's limit)      400, and the connection is closed

Slow clients hold only their own connection: every connection is a coroutine on one event loop,
and classification runs on two worker threads. The timeouts above keep one that trickles its
bytes from holding even that for long (`Limits`; `serve --max-requests-per-minute` sets the rate).

Networks load once, when the server starts; a request only names a model, looked up in that table,
so nothing a client sends reaches the filesystem.
"""

from __future__ import annotations

import ipaddress
import math
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from anyio import CapacityLimiter, fail_after, to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnist_study.serving.classifier import DigitClassifier, best_experiment, classifier_from_run
from mnist_study.serving.preprocess import SIZE, ImageError, ImageTooLargeError, NoDigitError, preprocess
from mnist_study.results import load_run

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 4096 * 4096  # largest upload decoded: 16.7 megapixels, 64 MiB as float32
# Requests classified at once. Preprocessing holds the GIL much of the time, so more threads only
# take turns: on 2 cores, 2 threads served 50 clients ~40% faster than Starlette's default of 40.
INFERENCE_THREADS = 2
UPLOAD_TYPES = ("image/", "application/octet-stream")  # part types accepted for the "image" field
# The drawing page sends at most one request per 70 ms while a stroke goes on (~860 a minute), so
# one person drawing non-stop stays under the limit; ten seconds' worth may come at once.
REQUESTS_PER_MINUTE = 1200
BURST_S = 10.0  # a client may send this many seconds' worth of its rate at once
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0  # 2 MiB in 30 s is ~0.6 Mbit/s: slower than that is a client holding a connection
UNLIMITED_PATHS = ("/health",)  # monitors poll it; it costs nothing


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server. The defaults are what `mnist-study serve` uses.

    max_body_bytes : larger request bodies are refused (413).
    requests_per_minute : per client address, on average, with bursts of up to BURST_S seconds'
        worth; beyond it 429. 0 turns the limit off (load tests from one address).
    header_timeout_s : a connection must finish a request's line and headers this long after it
        opens, or after the previous answer, or it is closed.
    body_timeout_s : a request's body must arrive this long after its headers, or 408.
    """

    max_body_bytes: int = MAX_BODY_BYTES
    requests_per_minute: int = REQUESTS_PER_MINUTE
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S


Pixel = Annotated[float, Field(ge=0, le=1)]
Row = Annotated[list[Pixel], Field(min_length=SIZE, max_length=SIZE)]


class PixelsRequest(BaseModel):
    """A digit as 28x28 grey levels, 0 = background and 1 = full ink (or the reverse: see preprocess)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # as the schema says: no "0.5" for 0.5, no 1 for true

    pixels: Annotated[list[Row], Field(min_length=SIZE, max_length=SIZE, description="28 rows of 28 values in [0, 1]")]
    model: str | None = Field(None, description="experiment name; default: the best on validation")
    preprocess: bool = Field(True, description="crop, scale and centre the digit as MNIST does; "
                                               "false when the pixels are MNIST-ready already")


class PredictionResponse(BaseModel):
    model: str = Field(description="the experiment whose network answered")
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(description="probability of the predicted digit")
    probabilities: list[float] = Field(description="10 class probabilities, digits 0-9")
    hidden: list[float] = Field(description="activation of every hidden ReLU node (>= 0), in node order")
    input: list[list[float]] = Field(description="the 28x28 image the network saw, values in [0, 1]")


class ModelInfo(BaseModel):
    name: str
    title: str
    hidden: int = Field(description="hidden-layer width")
    frontend: str = Field(description="raw, pca or forest_pixels")
    inputs: int = Field(description="features the network reads after the front-end")
    seed: int
    validation_accuracy: float = Field(description="fraction in [0, 1]")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: str
    models: int


class ErrorResponse(BaseModel):
    detail: str
    code: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        self.status, self.code, self.detail = status, code, detail


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _status_code(status: int) -> str:
    """405 -> 'method_not_allowed': the code of an error the framework raises (unknown path, method)."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, before anything parses them,
    and bodies that take over `timeout_s` to arrive with 408 (closing the connection).

    A declared Content-Length is checked first; the body is then read up to the limit and replayed
    to the app, so a client trickling its body waits here, never in the app's handlers.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, timeout_s: float = BODY_TIMEOUT_S):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_large = _error(413, "too_large", f"the request body is over the limit of {self.max_bytes:,} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await too_large(scope, receive, send)
            except ValueError:
                return await _error(400, "bad_request", "invalid Content-Length")(scope, receive, send)
        chunks, total = [], 0
        try:
            with fail_after(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > self.max_bytes:
                        return await too_large(scope, receive, send)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            slow = _error(408, "request_timeout", f"the request body did not arrive within {self.timeout_s:g} s "
                          f"({total:,} bytes came)", headers={"Connection": "close"})
            return await slow(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RateLimit:
    """ASGI middleware: a token bucket per client address; 429 rate_limited, with Retry-After, beyond it.

    A client may send `per_minute` requests a minute on average, and `burst_s` seconds' worth at
    once. Paths in UNLIMITED_PATHS are not counted. The client is the connection's address (behind
    a reverse proxy on 127.0.0.1, uvicorn takes it from X-Forwarded-For). Buckets that have filled
    up again are forgotten once there are many, so the table stays as small as the set of busy clients.
    """

    def __init__(self, app, per_minute: int = REQUESTS_PER_MINUTE, burst_s: float = BURST_S,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000):
        self.app, self.per_minute, self.clock = app, per_minute, clock
        self.rate = per_minute / 60  # tokens a second
        self.capacity = max(1.0, self.rate * burst_s)
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)
        self.prune_at = max_clients

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.per_minute <= 0 or scope["path"] in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        client = scope["client"][0] if scope.get("client") else "unknown"
        now = self.clock()
        tokens, then = self.buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            retry = math.ceil((1 - tokens) / self.rate)
            refused = _error(429, "rate_limited", f"over {self.per_minute:,} requests a minute from {client}; "
                             f"retry in {retry} s", headers={"Retry-After": str(retry)})
            return await refused(scope, receive, send)
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > self.prune_at:
            self.forget_idle(now)
        await self.app(scope, receive, send)

    def forget_idle(self, now: float) -> None:
        """Drop the buckets that are full again: a full bucket and no bucket are the same."""
        self.buckets = {c: (t, then) for c, (t, then) in self.buckets.items()
                        if t + (now - then) * self.rate < self.capacity}
        self.prune_at = max(self.prune_at, 2 * len(self.buckets))


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), closing connections that do not finish a request's headers.

    uvicorn closes an idle keep-alive connection `timeout_keep_alive` seconds after an answer, but a
    connection that has never had one has no timer, and any byte received cancels it: a client that
    connects and sends nothing, or trickles its headers a byte at a time, would hold its connection
    for ever. Here each wait for a request (from the connection's opening, and from each answer)
    lasts at most `header_timeout_s`; while the app handles a request, BodyLimit bounds the body.
    """

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_request()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._close_if_waiting)

    def _close_if_waiting(self) -> None:
        self._header_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()  # no request under way: headers unfinished, or nothing sent


def protocol_with(limits: Limits) -> type[H11Protocol]:
    """The uvicorn `http` protocol class that applies `limits.header_timeout_s`."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": limits.header_timeout_s})


def classify(classifier: DigitClassifier, source, run_preprocess: bool = True) -> PredictionResponse:
    """Preprocess (optionally) and classify one image; raises ImageError for unusable input."""
    if run_preprocess:
        x = preprocess(source, max_pixels=MAX_PIXELS)
    else:
        x = np.asarray(source, dtype=np.float32)
        if x.max() <= 0.05:
            raise NoDigitError("no digit found: the pixels are blank")
    hidden, proba = classifier.hidden_and_proba(x.reshape(1, -1))
    digit = int(proba[0].argmax())
    return PredictionResponse(model=classifier.name, digit=digit, confidence=float(proba[0, digit]),
                              probabilities=[float(p) for p in proba[0]],
                              hidden=[round(float(h), 5) for h in hidden[0]],
                              input=np.round(x, 3).tolist())


def _model_info(c: DigitClassifier) -> ModelInfo:
    return ModelInfo(name=c.name, title=c.title, hidden=c.hidden_width, frontend=c.experiment.frontend.kind,
                     inputs=c.model.n_inputs, seed=c.seed, validation_accuracy=c.validation_accuracy)


def _validation_message(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "; ".join(parts) + more


MULTIPART_FIELDS = ("image", "model")


def predict_body(models: list[str]) -> dict:
    """OpenAPI for the two request bodies /api/predict reads by hand; `models` are the names it knows."""
    name = {"type": "string", "enum": models, "description": "experiment name; default: the best on validation"}
    pixels = PixelsRequest.model_json_schema()
    pixels["properties"]["model"] = {"anyOf": [name, {"type": "null"}], "default": None}
    field = {**name, "enum": [*models, ""], "description": "experiment name; empty, as a form's unset field, "
                                                          "or absent: the best on validation"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"], "additionalProperties": False,
                    "properties": {"image": {"type": "string", "format": "binary",
                                             "description": "PNG, JPEG, ... any size, either polarity"},
                                   "model": field}}},
                "application/json": {"schema": pixels},
            },
        }
    }


def _documented(codes: dict[int, str], limits: Limits) -> dict[int, dict]:
    """OpenAPI `responses` for these error statuses, each {"detail", "code"}; 429 with its Retry-After."""
    out = {status: {"model": ErrorResponse, "description": text} for status, text in codes.items()}
    if limits.requests_per_minute > 0:
        out[429] = {"model": ErrorResponse, "description": f"rate_limited: over {limits.requests_per_minute:,} "
                    "requests a minute from this client",
                    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}}
    return out


PREDICT_ERRORS = {
    400: "bad_request: a malformed multipart body",
    404: "unknown_model: the run has no such experiment",
    408: "request_timeout: the body did not arrive in time",
    413: "too_large: the body is over the size limit",
    415: "unsupported_media_type: neither multipart/form-data nor JSON, or an upload that is not an image",
    422: "invalid_request, not_an_image, too_many_pixels or no_digit",
}


def create_app(run_dir: str | Path, limits: Limits = Limits()) -> FastAPI:
    """The FastAPI app for the networks of `run_dir`; they are loaded at startup (lifespan).

    Raises RunError at once if `run_dir` is not a run directory or holds no trained network.
    """
    run = load_run(run_dir)
    default = best_experiment(run)  # raises when there is nothing to serve
    names = [e.name for e in run.experiments if run.results(e.name)]
    page = resources.files("mnist_study.serving").joinpath("static/draw.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.classifiers = {name: classifier_from_run(run, name) for name in names}
        app.state.default = default
        app.state.limiter = CapacityLimiter(INFERENCE_THREADS)
        yield
        app.state.classifiers = {}

    app = FastAPI(title="mnist-study", version="1", lifespan=lifespan,
                  description=f"Digit classification with the networks of run `{Path(run_dir).name}`. "
                              "Errors answer `{\"detail\": ..., \"code\": ...}`.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.add_middleware(RateLimit, per_minute=limits.requests_per_minute)  # the outer one: refuses before reading

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return _error(error.status, error.code, error.detail)

    @app.exception_handler(HTTPException)  # unknown paths, wrong methods: the same shape as ours
    async def _http_error(request: Request, error: HTTPException):
        return _error(error.status_code, _status_code(error.status_code), str(error.detail), headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3]]
        return _error(422, "invalid_request", "; ".join(parts))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/health", response_model=HealthResponse)
    async def health(request: Request) -> HealthResponse:
        return HealthResponse(status="ok", models=len(request.app.state.classifiers))

    @app.get("/api/models", response_model=ModelsResponse, responses=_documented({}, limits))
    async def models(request: Request) -> ModelsResponse:
        return ModelsResponse(default=request.app.state.default,
                              models=[_model_info(c) for c in request.app.state.classifiers.values()])

    @app.post("/api/predict", response_model=PredictionResponse, responses=_documented(PREDICT_ERRORS, limits),
              openapi_extra=predict_body(names))
    async def predict(request: Request,
                      model: str | None = Query(None, description="experiment name; default: the best on validation",
                                                json_schema_extra={"enum": names})
                      ) -> PredictionResponse:
        """Classify one digit: an image upload (multipart field `image`) or JSON `{"pixels": [[...]]}`."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        run_preprocess = True
        if content_type == "application/json":
            try:
                body = PixelsRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise ApiError(422, "invalid_request", _validation_message(error)) from None
            source, named, run_preprocess = np.asarray(body.pixels, dtype=np.float32), body.model, body.preprocess
        elif content_type == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=4, max_part_size=limits.max_body_bytes)
            except HTTPException as error:  # a malformed multipart body (Starlette's, not FastAPI's subclass)
                raise ApiError(400, "bad_request", f"malformed multipart body: {error.detail}") from None
            unknown = sorted(set(form.keys()) - set(MULTIPART_FIELDS))
            if unknown:
                raise ApiError(422, "invalid_request", f"unknown multipart field {unknown[0][:64]!r}: send 'image' "
                                                       "(the file) and optionally 'model'")
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "invalid_request", "send the image as a file in the multipart field 'image'")
            part_type = (upload.content_type or "application/octet-stream").lower()
            if not part_type.startswith(UPLOAD_TYPES):
                raise ApiError(415, "unsupported_media_type",
                               f"the uploaded part is {part_type}; send an image (image/png, image/jpeg, ...)")
            source = await upload.read()
            field = form.get("model")  # text: the one file allowed is the image
            named = field if isinstance(field, str) and field else None  # a form's unset field comes empty
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"send multipart/form-data (an image in field 'image') or application/json "
                           f"(pixels), not {content_type or 'a body without a content type'}")

        if named is not None and model is not None and named != model:
            raise ApiError(422, "invalid_request", f"two models named, {model[:64]!r} in the query and "
                                                   f"{named[:64]!r} in the body: name one")
        classifiers = request.app.state.classifiers
        name = next((n for n in (named, model) if n is not None), request.app.state.default)
        if name not in classifiers:
            raise ApiError(404, "unknown_model", f"no model {name[:64]!r}; this run has: {', '.join(classifiers)}")
        try:
            return await to_thread.run_sync(classify, classifiers[name], source, run_preprocess,
                                         limiter=request.app.state.limiter)
        except NoDigitError as error:
            raise ApiError(422, "no_digit", str(error)) from None
        except ImageTooLargeError as error:
            raise ApiError(422, "too_many_pixels", str(error)) from None
        except ImageError as error:
            raise ApiError(422, "not_an_image", str(error)) from None

    return app


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name, or "" (every interface): assume it is reachable
        return False


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
                  log_level: str = "info"):
    """uvicorn's settings for `serve`: its h11 protocol with the header timeout of `limits`, whatever
    else is installed, and idle keep-alive connections closed after 5 s."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol_with(limits),
                          timeout_keep_alive=5)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          limits: Limits = Limits()) -> None:
    """Serve the drawing page and the API until interrupted (Ctrl-C).

    Each request is one image: too small for torch's intra-op threads, which only contend with the
    threads serving other requests, so this process uses one. A host other than loopback prints a
    warning: the server has no authentication.
    """
    import torch
    import uvicorn

    app = create_app(run_dir, limits)
    torch.set_num_threads(1)
    if not is_loopback(host):
        print(f"WARNING:  listening on {host}: the page and the API are reachable from the network, by anyone "
              f"who can reach port {port} of this machine, with no authentication. Use --host 127.0.0.1 "
              "to keep them to this machine.", file=sys.stderr, flush=True)
    uvicorn.Server(server_config(app, host, port, limits, log_level)).run()
