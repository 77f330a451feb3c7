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
    malformed JSON, or pixels not 28x28 in [0, 1]     422 invalid_request
    a malformed multipart body                        400 bad_request
    a model name the run does not have                404 unknown_model

Networks load once, when the server starts; a request only names a model, looked up in that table,
so nothing a client sends reaches the filesystem.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from mnist_study.serving.classifier import DigitClassifier, best_experiment, classifier_from_run
from mnist_study.serving.preprocess import SIZE, ImageError, ImageTooLargeError, NoDigitError, preprocess
from mnist_study.results import load_run

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 4096 * 4096  # largest upload decoded: 16.7 megapixels, 64 MiB as float32
# Requests classified at once. Preprocessing holds the GIL much of the time, so more threads only
# take turns: on 2 cores, 2 threads served 50 clients ~40% faster than Starlette's default of 40.
INFERENCE_THREADS = 2
UPLOAD_TYPES = ("image/", "application/octet-stream")  # part types accepted for the "image" field

Pixel = Annotated[float, Field(ge=0, le=1)]
Row = Annotated[list[Pixel], Field(min_length=SIZE, max_length=SIZE)]


class PixelsRequest(BaseModel):
    """A digit as 28x28 grey levels, 0 = background and 1 = full ink (or the reverse: see preprocess)."""

    model_config = ConfigDict(extra="forbid")

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


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, before anything parses them.

    A declared Content-Length is checked first; a body sent without one (chunked) is read up to the
    limit and replayed to the app.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

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
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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


PREDICT_BODY = {  # documents the two request bodies /api/predict reads by hand
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary",
                                         "description": "PNG, JPEG, ... any size, either polarity"},
                               "model": {"type": "string", "description": "experiment name"}}}},
            "application/json": {"schema": PixelsRequest.model_json_schema()},
        },
    }
}


def create_app(run_dir: str | Path) -> FastAPI:
    """The FastAPI app for the networks of `run_dir`; they are loaded at startup (lifespan).

    Raises RunError at once if `run_dir` is not a run directory or holds no trained network.
    """
    run = load_run(run_dir)
    default = best_experiment(run)  # raises when there is nothing to serve
    page = resources.files("mnist_study.serving").joinpath("static/draw.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.classifiers = {e.name: classifier_from_run(run, e.name) for e in run.experiments if run.results(e.name)}
        app.state.default = default
        app.state.limiter = CapacityLimiter(INFERENCE_THREADS)
        yield
        app.state.classifiers = {}

    app = FastAPI(title="mnist-study", version="1", lifespan=lifespan,
                  description=f"Digit classification with the networks of run `{Path(run_dir).name}`. "
                              "Errors answer `{\"detail\": ..., \"code\": ...}`.")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    error_responses = {status: {"model": ErrorResponse} for status in (404, 413, 415, 422)}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return _error(error.status, error.code, error.detail)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/health", response_model=HealthResponse)
    async def health(request: Request) -> HealthResponse:
        return HealthResponse(status="ok", models=len(request.app.state.classifiers))

    @app.get("/api/models", response_model=ModelsResponse)
    async def models(request: Request) -> ModelsResponse:
        return ModelsResponse(default=request.app.state.default,
                              models=[_model_info(c) for c in request.app.state.classifiers.values()])

    @app.post("/api/predict", response_model=PredictionResponse, responses=error_responses,
              openapi_extra=PREDICT_BODY)
    async def predict(request: Request,
                      model: str | None = Query(None, description="experiment name; default: the best on validation")
                      ) -> PredictionResponse:
        """Classify one digit: an image upload (multipart field `image`) or JSON `{"pixels": [[...]]}`."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        run_preprocess = True
        if content_type == "application/json":
            try:
                body = PixelsRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise ApiError(422, "invalid_request", _validation_message(error)) from None
            source, name, run_preprocess = np.asarray(body.pixels, dtype=np.float32), body.model or model, body.preprocess
        elif content_type == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_BODY_BYTES)
            except HTTPException as error:  # a malformed multipart body
                raise ApiError(400, "bad_request", f"malformed multipart body: {error.detail}") from None
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "invalid_request", "send the image as a file in the multipart field 'image'")
            part_type = (upload.content_type or "application/octet-stream").lower()
            if not part_type.startswith(UPLOAD_TYPES):
                raise ApiError(415, "unsupported_media_type",
                               f"the uploaded part is {part_type}; send an image (image/png, image/jpeg, ...)")
            source = await upload.read()
            field = form.get("model")
            name = field if isinstance(field, str) and field else model
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"send multipart/form-data (an image in field 'image') or application/json "
                           f"(pixels), not {content_type or 'a body without a content type'}")

        classifiers = request.app.state.classifiers
        name = name or request.app.state.default
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


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve the drawing page and the API until interrupted (Ctrl-C).

    Each request is one image: too small for torch's intra-op threads, which only contend with the
    threads serving other requests, so this process uses one.
    """
    import torch
    import uvicorn

    app = create_app(run_dir)
    torch.set_num_threads(1)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
