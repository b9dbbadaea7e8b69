"""Who may use the server, from where, and for how long: an API key sent as the OpenAI clients send theirs
(`Authorization: Bearer KEY`), compared in constant time; a refusal to serve other machines without one; CORS only
for the origins listed; and a time limit per request, after which its slots in the model's passes are freed.

(No `from __future__ import annotations`: the middlewares are plain ASGI callables, nothing reads their hints.)
"""

import asyncio
import hmac
import ipaddress
import json
import os

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genlab.errors import ConfigError
from genlab.serving.http import error_response
from genlab.serving.schemas import error_body

#: Where the key comes from when `api_key=` is not given (a command line is visible to every user of the machine).
KEY_VARIABLE = "GENLAB_API_KEY"
#: What anyone may read: the liveness probe, the page (which then asks for the key), and the API's schema.
OPEN_PATHS = frozenset({"/health", "/", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


def api_key_of(configured: str | None) -> str | None:
    """The key requests must bear: `api_key=`, else $GENLAB_API_KEY; None (no key) when neither is set or empty."""
    key = configured if configured is not None else os.environ.get(KEY_VARIABLE)
    return key or None


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: whatever it resolves to, other machines may reach it
        return False


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Refuse to serve other machines without a key, unless asked to in so many words."""
    if api_key is None and not is_loopback(host) and not allow_unauthenticated:
        raise ConfigError(
            f"host={host} serves other machines, and no API key is set, so anyone who reaches this port can use the "
            f"model: set {KEY_VARIABLE}=... (or api_key=...), serve host=127.0.0.1, or give "
            f"allow_unauthenticated=true if a firewall or proxy in front decides who gets in"
        )


def _bearer(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


class ApiKeyGuard:
    """ASGI middleware: every path but OPEN_PATHS needs `Authorization: Bearer KEY`; otherwise 401 in the OpenAI
    API's error shape. The comparison takes the same time whatever the key sent, so timing tells nothing."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        reason = "a wrong API key" if token else "no API key"
        body = error_body(
            f"{reason}: send the server's key as the header Authorization: Bearer KEY (the OpenAI clients do, "
            f"from api_key= or OPENAI_API_KEY)"
        )
        body["error"]["code"] = "invalid_api_key"
        await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


class TimeLimit:
    """ASGI middleware: a request still unanswered after `seconds` gets 504 and is cancelled, which frees its slots
    in the model's passes (its handler marks its job cancelled); a stream that runs over ends with an error event."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = ended = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, ended
            started = started or message["type"] == "http.response.start"
            ended = message["type"] == "http.response.body" and not message.get("more_body", False)
            await send(message)

        limit = asyncio.timeout(self.seconds)
        try:
            async with limit:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not limit.expired():  # the application's own, not the limit's
                raise
            message = (
                f"the request took longer than request_timeout={self.seconds:g} s and was stopped; ask for less "
                f"(n, max_tokens, steps) or start the server with a larger request_timeout"
            )
            if not started:
                await error_response(504, message, "server_error")(scope, receive, send)
            elif not ended:
                event = f"data: {json.dumps(error_body(message, 'server_error'))}\n\n".encode()
                await send({"type": "http.response.body", "body": event, "more_body": False})
