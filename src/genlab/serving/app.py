"""The FastAPI application that serves one loaded run: its routes, and the model thread that lives as long as it.

(No `from __future__ import annotations` here: FastAPI reads the request models, built per server, from the
endpoints' annotations.)
"""

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

import genlab
from genlab.errors import GenlabError, check
from genlab.models.contracts import ImageGenerator, IncrementalDecoder, Inpainter, SequenceGenerator, contracts_of
from genlab.run.loading import LoadedRun
from genlab.serving.batching import ModelThread, Reply
from genlab.serving.edits import add_edits_route
from genlab.serving.guard import ApiKeyGuard, TimeLimit, api_key_of
from genlab.serving.http import (
    RequestLimits,
    error_response,
    install_error_handlers,
    model_error,
    model_error_response,
)
from genlab.serving.images import BATCH_HEADER, SEED_HEADER, ImageEngine, ImageJob, images_answer
from genlab.serving.info import run_info
from genlab.serving.schemas import (
    DEFAULT_MAX_TOKENS,
    Completion,
    ErrorBody,
    ImagesResponse,
    completions_request_model,
    images_request_model,
)
from genlab.serving.settings import ServeSettings
from genlab.serving.text import CompletionJob, TextEngine, WholeTextEngine

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 413, 500, 503, 504)}


def random_seed() -> int:
    return secrets.randbelow(2**31)


def create_app(run: LoadedRun, settings: ServeSettings) -> FastAPI:
    """The application; the model thread starts and stops with it (FastAPI's lifespan)."""
    model = run.model
    name = settings.model_name or run.dir.name
    batching = (settings.max_batch_size, settings.batch_timeout, settings.batch_invariant)
    is_text = isinstance(model, (IncrementalDecoder, SequenceGenerator))
    check(
        is_text or isinstance(model, ImageGenerator),
        f"genlab-serve serves image and text generators; {type(model).__name__} declares "
        f"{', '.join(contracts_of(model)) or 'no contract'} (genlab.models.contracts)",
    )
    engine: ModelThread
    if isinstance(model, IncrementalDecoder):  # continuous batching, token by token
        engine = TextEngine(model, *batching)
    elif is_text:  # whole completions (a masked LM)
        engine = WholeTextEngine(model, settings.max_batch_size, settings.batch_timeout)
    else:
        engine = ImageEngine(model, *batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        await asyncio.to_thread(engine.stop)

    app = FastAPI(
        title=f"genlab-serve: {name}",
        version=genlab.__version__,
        description=f"A {type(model).__name__} trained by genlab ({model.spec.kind} model). Try it at /.",
        lifespan=lifespan,
    )
    counts: Counter = Counter()
    # The last added is the outermost: every answer is counted, a refused key costs no model time, and a browser
    # page of a listed origin can read the 401 too.
    app.add_middleware(TimeLimit, seconds=settings.request_timeout)
    if (key := api_key_of(settings.api_key)) is not None:
        app.add_middleware(ApiKeyGuard, api_key=key)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            expose_headers=[SEED_HEADER, BATCH_HEADER],
        )
    app.add_middleware(RequestLimits, max_bytes=settings.max_request_bytes, counts=counts)
    if is_text:
        request_model = completions_request_model(settings)
        endpoint = "POST /v1/completions"
        add_completions_route(app, engine, request_model, name)
    else:
        image_model = engine.image_model
        request_model = images_request_model(settings, image_model.options, image_model.num_classes)
        endpoint = "POST /v1/images"
        add_images_route(app, engine, request_model, name)
    fields = list(request_model.model_fields)
    install_error_handlers(app, {endpoint.split()[1]: fields}, f"{endpoint}, GET /, /health, /info, /docs")
    served = {
        "endpoint": endpoint,
        "request_fields": fields,
        "limits": {
            "request_timeout": settings.request_timeout,
            "max_n": settings.max_n,
            "max_tokens": settings.max_tokens,
            "max_steps": settings.max_steps,
            "max_request_bytes": settings.max_request_bytes,
        },
        "batching": {
            "max_batch_size": settings.max_batch_size,
            "batch_timeout": settings.batch_timeout,
            "batch_invariant": settings.batch_invariant,
        },
    }
    if isinstance(model, Inpainter) and not is_text:
        add_edits_route(app, model, settings, name)
        served["edits"] = "POST /v1/images/edits"
    info = run_info(run, name, served)
    page = (files("genlab.serving") / "page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", responses=ERRORS)
    async def health() -> Any:
        if engine.stopping or not engine.is_alive():
            return error_response(503, "the model thread is not running", "server_error")
        return {"status": "ok"}

    @app.get("/info")
    async def describe() -> dict[str, Any]:
        """The served model, its data, judged metric, config and manifest, the limits, and the batches so far."""
        return {**info, "answers": dict(counts), "batches": engine.stats.summary()}

    return app


def unavailable(engine: ModelThread) -> Response | None:
    if engine.stopping:
        return error_response(503, "the server is stopping", "server_error")
    return None


def add_images_route(app: FastAPI, engine: ImageEngine, request_model: type, name: str) -> None:
    options = engine.image_model.options

    @app.post(
        "/v1/images",
        response_model=ImagesResponse,
        responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "JSON, or one PNG grid"}},
    )
    async def images(body: request_model) -> Any:  # type: ignore[valid-type]
        """Draw `n` images: PNGs in JSON (base64), or with `response_format: "png"` one PNG grid of them all."""
        if (refused := unavailable(engine)) is not None:
            return refused
        seed = random_seed() if body.seed is None else body.seed
        wanted = {option: getattr(body, option) for option in options if getattr(body, option) is not None}
        future = asyncio.get_running_loop().create_future()
        job = ImageJob(body.n, seed, wanted, Reply.to_future(future))
        engine.submit(job)
        try:
            drawn, shared_with = await future
        except Exception as exc:
            return model_error_response(exc)
        finally:  # answered, or stopped by the time limit or the client: a job not drawn yet is dropped
            job.cancelled = True
        return await images_answer(drawn, seed, shared_with, body.response_format, name)


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def add_completions_route(app: FastAPI, engine: TextEngine | WholeTextEngine, request_model: type, name: str) -> None:
    model = engine.model

    @app.post(
        "/v1/completions",
        response_model=Completion,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "JSON, or with stream SSE"}},
    )
    async def completions(body: request_model) -> Any:  # type: ignore[valid-type]
        """Complete the prompt(s), as the OpenAI completions API does; with `stream: true` as server-sent events."""
        if (refused := unavailable(engine)) is not None:
            return refused
        try:
            prompts = [model.prompt_ids(prompt) for prompt in body.prompts]
        except GenlabError as exc:
            return error_response(400, str(exc), param="prompt")
        seed = random_seed() if body.seed is None else body.seed
        events: asyncio.Queue = asyncio.Queue()
        job = CompletionJob(
            prompts,
            body.n,
            body.max_tokens or DEFAULT_MAX_TOKENS,
            body.temperature,
            body.top_k,
            body.top_p if body.top_p < 1 else None,
            seed,
            body.stop_sequences,
            body.stream,
            Reply.to_queue(events),
        )
        engine.submit(job)
        streaming = False
        try:
            first = await events.get()
            if isinstance(first, BaseException):
                return model_error_response(first)
            echoes = [prompt if body.echo else "" for prompt in body.prompts for _ in range(body.n)]
            base = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time())}
            base.update(model=name, seed=seed)
            if body.stream:
                streaming = True
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                chunks = stream_chunks(job, first, events, base, echoes, include_usage)
                return StreamingResponse(chunks, media_type="text/event-stream", headers={SEED_HEADER: str(seed)})
            texts, reasons = list(echoes), [None] * len(echoes)
            event = first
            while True:
                if isinstance(event, BaseException):
                    return model_error_response(event)
                kind, *rest = event
                if kind == "text":
                    texts[rest[0]] += rest[1]
                elif kind == "finish":
                    reasons[rest[0]] = rest[1]
                else:
                    usage, shared_with = rest
                    break
                event = await events.get()
        finally:
            if not streaming:  # answered, failed or abandoned: the engine drops it (a finished one is gone already)
                job.cancelled = True
        choices = [
            {"text": text, "index": i, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
        ]
        headers = {SEED_HEADER: str(seed), BATCH_HEADER: str(shared_with)}
        return JSONResponse({**base, "choices": choices, "usage": usage}, headers=headers)


async def stream_chunks(
    job: CompletionJob,
    first: Any,
    events: asyncio.Queue,
    base: dict[str, Any],
    echoes: list[str],
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams a completion: one chunk per piece of text or finish, then [DONE]."""

    def chunk(index: int, text: str, reason: str | None = None) -> str:
        return sse({**base, "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}]})

    try:
        for index, echo in enumerate(echoes):
            if echo:
                yield chunk(index, echo)
        event = first
        while True:
            if isinstance(event, BaseException):
                yield sse(model_error(event)[1])
                return
            kind, *rest = event
            if kind == "text":
                yield chunk(*rest)
            elif kind == "finish":
                yield chunk(rest[0], "", rest[1])
            else:
                if include_usage:
                    yield sse({**base, "choices": [], "usage": rest[0]})
                break
            event = await events.get()
        yield sse("[DONE]")
    finally:  # also when the client goes away mid-stream: the engine stops decoding it
        job.cancelled = True
