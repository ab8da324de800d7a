"""The explore page's HTTP API as a Starlette app: JSON in and out, bad requests answered with 4xx JSON.

Request bodies are capped before they are read in full; model work runs in a worker thread so the server keeps
answering while a large network computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnkit.core.errors import CnnkitError
from cnnkit.explore.learn import training_routes
from cnnkit.explore.playground import MAX_INPUT, window_example
from cnnkit.explore.respond import ApiError, reply, whole_number
from cnnkit.explore.session import MAX_SIDE, MAX_UPLOAD_BYTES, PAGE_SIZE, Explorer

STATIC = Path(__file__).parent / "static"
MAX_JSON_BYTES = 8 * 1024**2  # a 224x224 RGB image as JSON numbers is about 1 MB
# Everything the page loads comes from this server: no CDN, no other origin.
POLICY = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"


class Strict(BaseModel):
    """Request bodies refuse fields they do not know and values of the wrong JSON type ("0", true or 0.5 for an
    int); a JSON int still passes for a float (pixels 0..255)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ImageInput(Strict):
    """An image: display pixels (C*H*W values in 0..255, row-major) or an index into the held-out strip."""

    pixels: list[float] | None = None
    heldout: int | None = None


class PredictRequest(Strict):
    """Top-k classes and one page of maps per named unit."""

    image: ImageInput
    layers: dict[str, int] = Field(default_factory=dict)  # unit id -> page
    activation: Literal["post", "pre"] = "post"
    top_k: int = Field(5, ge=1, le=1000)
    page_size: int = Field(PAGE_SIZE, ge=1, le=PAGE_SIZE)  # maps per layer (the overview asks for a few)
    max_side: int = Field(MAX_SIDE, ge=4, le=MAX_SIDE)  # cells a side before a map is averaged down


class CellRequest(Strict):
    """One cell of a conv or pool unit's output."""

    image: ImageInput
    layer: str
    channel: int
    y: int
    x: int


class ScanRequest(Strict):
    """A whole map of a conv or pool unit and the input plane its window slides over."""

    image: ImageInput
    layer: str
    channel: int
    input_channel: int | None = None


class DenseRequest(Strict):
    """One output of a dense layer as weighted inputs."""

    image: ImageInput
    layer: str
    output: int


class WindowRequest(Strict):
    """The playground: one window on an example input (no model involved)."""

    kind: Literal["conv", "max", "avg"] = "conv"
    height: int = Field(ge=1, le=MAX_INPUT)
    width: int = Field(ge=1, le=MAX_INPUT)
    kernel: int = Field(ge=1, le=11)
    stride: int = Field(1, ge=1, le=8)
    dilation: int = Field(1, ge=1, le=4)
    padding: Literal["same", "valid"] | Annotated[int, Field(ge=0, le=8)] = "valid"


class WhyRequest(Strict):
    """Saliency and Grad-CAM for a class (default: the predicted one)."""

    image: ImageInput
    class_index: int | None = None
    layer: str | None = None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = whole_number(declared.strip(), "Content-Length", 2**62)
        except CnnkitError as error:
            raise ApiError(400, str(error)) from None
        if size > limit:
            raise ApiError(413, f"the request body has {size:,} bytes; the limit is {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is over the limit of {limit:,} bytes")
    return bytes(body)


async def parse(request: Request, model: type[Strict]) -> Strict:
    """The JSON body validated against `model`; malformed or mistyped bodies are refused with 400."""
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}") from None


def create_app(explorer: Explorer) -> Starlette:
    """The page and its API for one opened model; every JSON answer goes through `reply` (strict JSON)."""

    def image_of(body: PredictRequest | CellRequest | ScanRequest | DenseRequest | WhyRequest):
        return explorer.image(body.image.pixels, body.image.heldout)

    async def index(_request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": POLICY,
                                                            "Cache-Control": "no-cache"})

    async def model(_request: Request) -> Response:
        return reply(explorer.describe())

    async def heldout(_request: Request) -> Response:
        return reply(await run_in_threadpool(explorer.heldout))

    async def predict(request: Request) -> Response:
        body = await parse(request, PredictRequest)
        return reply(await run_in_threadpool(
            lambda: explorer.predict(image_of(body), body.layers, body.activation, body.top_k,
                                     body.page_size, body.max_side)))

    async def cell(request: Request) -> Response:
        body = await parse(request, CellRequest)
        return reply(await run_in_threadpool(
            lambda: explorer.cell(image_of(body), body.layer, body.channel, body.y, body.x)))

    async def scan(request: Request) -> Response:
        body = await parse(request, ScanRequest)
        return reply(await run_in_threadpool(
            lambda: explorer.scan(image_of(body), body.layer, body.channel, body.input_channel)))

    async def dense(request: Request) -> Response:
        body = await parse(request, DenseRequest)
        return reply(await run_in_threadpool(
            lambda: explorer.dense(image_of(body), body.layer, body.output)))

    async def window(request: Request) -> Response:
        body = await parse(request, WindowRequest)
        return reply(await run_in_threadpool(
            lambda: window_example(body.kind, (body.height, body.width), body.kernel, body.stride, body.padding,
                                   body.dilation)))

    async def why(request: Request) -> Response:
        body = await parse(request, WhyRequest)
        return reply(await run_in_threadpool(
            lambda: explorer.why(image_of(body), body.class_index, body.layer)))

    async def upload(request: Request) -> Response:
        kind = request.headers.get("content-type", "")
        if not (kind.startswith("image/") or kind == "application/octet-stream"):
            raise ApiError(415, f"upload an image file (Content-Type image/*); received {kind or 'no type'!r}")
        data = await read_body(request, MAX_UPLOAD_BYTES)
        return reply(await run_in_threadpool(explorer.decode_upload, data))

    def refused(status: int, message: str) -> Response:
        return reply({"error": message}, status)

    async def api_error(_request: Request, error: Exception) -> Response:
        return refused(error.status, str(error))

    async def bad_input(_request: Request, error: Exception) -> Response:
        return refused(400, str(error))

    async def http_error(_request: Request, error: Exception) -> Response:
        return refused(error.status_code, str(error.detail))

    async def crashed(_request: Request, error: Exception) -> Response:
        return refused(500, f"internal error: {type(error).__name__}: {error}")

    from cnnkit.explore.compare import compare_routes  # here: compare.py imports this module's request types

    routes = [
        Route("/", index), Route("/api/model", model), Route("/api/heldout", heldout),
        Route("/api/predict", predict, methods=["POST"]), Route("/api/cell", cell, methods=["POST"]),
        Route("/api/why", why, methods=["POST"]), Route("/api/scan", scan, methods=["POST"]),
        Route("/api/dense", dense, methods=["POST"]), Route("/api/window", window, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        *compare_routes(explorer),
        *training_routes(explorer, parse),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {ApiError: api_error, CnnkitError: bad_input, HTTPException: http_error, Exception: crashed}
    return Starlette(routes=routes, exception_handlers=handlers)
