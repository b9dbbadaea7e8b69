"""HTTP plumbing of the server: the request-size limit, counting answers, and every error as one JSON body.

Every error answer has the OpenAI API's shape, `{"error": {"message", "type", "param", "code"}}`: a message that
says what is wrong in the request (400), that the body is too large (413), that there is no such route (404/405), or
that the model failed (500, a short message; the traceback goes to the server's log).
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genlab.errors import GenlabError
from genlab.serving.batching import log
from genlab.serving.schemas import error_body

#: Request fields that only some models take: refused with a message saying so.
MODEL_OPTIONS = ("label", "steps", "guidance", "temperature")


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> Any:
    return JSONResponse(error_body(message, kind, param), status_code=status)


def model_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """A request the model refused (its input: 400) or failed on (500, a short message): status and body."""
    if isinstance(exc, GenlabError):
        return 400, error_body(str(exc))
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return 500, error_body(f"the model failed on this request: {type(exc).__name__}: {first_line}", "server_error")


def model_error_response(exc: BaseException) -> Any:
    status, body = model_error(exc)
    return JSONResponse(body, status_code=status)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than max_request_bytes={limit} bytes")


class RequestLimits:
    """ASGI middleware: refuses bodies over `max_bytes` (declared or streamed) and counts answers by status."""

    def __init__(self, app: ASGIApp, max_bytes: int, counts: Counter) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counts[f"{message['status'] // 100}xx"] += 1
            await send(message)

        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, BodyTooLarge(self.max_bytes).detail)
            await response(scope, receive, counting_send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, counting_send)


def validation_message(errors: Sequence[dict[str, Any]], fields: Sequence[str]) -> tuple[str, str | None]:
    """Pydantic's errors as one message (one clause per field) and the first field named."""
    clauses: dict[str, list[str]] = {}
    for error in errors:
        kind = error["type"]
        loc = [str(part) for part in error["loc"] if part != "body"] if kind != "json_invalid" else []
        field = loc[0] if loc else ""
        if kind == "json_invalid":
            text = f"the body is not valid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
        elif kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
            text = "the body must be a JSON object"
        elif kind == "missing" and not loc:
            text = "the body must be a JSON object (send {} for the defaults)"
        elif kind == "extra_forbidden" and field in MODEL_OPTIONS:
            text = f"this model's sample() takes no {field}"
        elif kind == "extra_forbidden":
            text = f"unknown field; this endpoint takes {', '.join(fields)}"
        else:
            text = error["msg"].removeprefix("Value error, ")
        clauses.setdefault(field, [])
        if text not in clauses[field]:
            clauses[field].append(text)
    message = "; ".join(
        f"{field}: {' or '.join(texts)}" if field else " or ".join(texts) for field, texts in clauses.items()
    )
    return message, next((field for field in clauses if field), None)


def install_error_handlers(app: FastAPI, fields_of: dict[str, Sequence[str]], routes: str) -> None:
    """JSON error bodies for invalid requests (400 instead of FastAPI's 422), HTTP errors and bugs (500)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        message, param = validation_message(exc.errors(), fields_of.get(request.url.path, ()))
        return error_response(400, message, param=param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            message = f"no route {request.method} {request.url.path}; this server has {routes}"
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Any:
        log.exception("an error in the server while answering %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")
