"""The HTTP API's request and response bodies (pydantic), which are also its OpenAPI schema at /docs.

Request models are built for the served model and the server's limits: a field exists only where the model takes it
(a label only for a model whose `sample` takes labels), and its bounds are the configured ones, so a bad request is
refused by validation (HTTP 400) with a message naming the field, and /docs shows exactly what this server accepts.
Completions follow the OpenAI completions API; `top_k` is an addition.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from genlab.serving.settings import ServeSettings

MAX_SEED = 2**63 - 1
#: OpenAI's default completion length.
DEFAULT_MAX_TOKENS = 16
MAX_STOP_SEQUENCES = 4

STRICT = ConfigDict(extra="forbid", strict=True)

Seed = Annotated[
    int | None, Field(None, ge=0, le=MAX_SEED, description="random seed; the same seed gives the same output")
]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error answer (4xx and 5xx), in the OpenAI API's shape."""

    error: ErrorDetail


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


# -- images -------------------------------------------------------------------------------------------------------


def images_request_model(settings: ServeSettings, options: list[str], num_classes: int | None) -> type[BaseModel]:
    """POST /v1/images's body for a model whose `sample` takes `options` (of label, steps, guidance, temperature)."""
    optional: dict[str, Any] = {
        "label": (
            int | None,
            Field(None, ge=0, le=None if num_classes is None else num_classes - 1, description="class to draw"),
        ),
        "steps": (int | None, Field(None, ge=1, le=settings.max_steps, description="sampler steps")),
        "guidance": (float | None, Field(None, ge=0, description="classifier-free guidance scale")),
        "temperature": (float | None, Field(None, ge=0, description="sampling temperature")),
    }
    return create_model(
        "ImagesRequest",
        __config__=STRICT,
        __doc__="Draw n images; the options beyond n, seed and response_format are those the model takes.",
        n=(int, Field(1, ge=1, le=settings.max_n, description="number of images")),
        seed=Seed,
        response_format=(
            Literal["b64_json", "png"],
            Field("b64_json", description="b64_json: one PNG per image in JSON; png: one image/png, a grid of all"),
        ),
        **{name: optional[name] for name in options},
    )


class ImageData(BaseModel):
    b64_json: str = Field(description="a PNG, base64-encoded")


class ImagesResponse(BaseModel):
    created: int
    model: str
    seed: int
    data: list[ImageData]


# -- completions --------------------------------------------------------------------------------------------------

StopSequence = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


def completions_request_model(settings: ServeSettings) -> type[BaseModel]:
    """POST /v1/completions's body (the OpenAI completions API's fields genlab supports, and top_k)."""

    class CompletionRequest(BaseModel):
        """Complete the prompt (or each of a list of prompts) n times; the OpenAI completions API."""

        model_config = STRICT

        model: str | None = Field(None, description="any name: this server serves one model")
        prompt: str | list[str] = Field("", description="text to continue, or a list of them")
        max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1, le=settings.max_tokens)
        temperature: float = Field(1.0, ge=0, le=2, description="0: always the most likely token")
        top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the smallest set reaching top_p")
        top_k: int | None = Field(None, ge=1, description="only the k most likely tokens (not in OpenAI's API)")
        n: int = Field(1, ge=1, le=settings.max_n, description="completions per prompt")
        seed: int | None = Field(None, ge=0, le=MAX_SEED, description="completion i is drawn from seed + i")
        stop: StopSequence | list[StopSequence] | None = Field(None, description="up to 4 sequences that end it")
        stream: bool = Field(False, description="send the text as server-sent events as it is generated")
        stream_options: StreamOptions | None = None
        echo: bool = Field(False, description="put the prompt before each completion")
        user: str | None = Field(None, description="accepted and ignored")

        @model_validator(mode="after")
        def within_limits(self) -> CompletionRequest:
            prompts = self.prompts
            if not prompts:
                raise ValueError("prompt: give a string or a non-empty list of strings")
            if len(prompts) * self.n > settings.max_n:
                raise ValueError(
                    f"n x prompts = {self.n} x {len(prompts)} completions; at most max_n={settings.max_n} per request"
                )
            if len(self.stop_sequences) > MAX_STOP_SEQUENCES:
                raise ValueError(f"stop: at most {MAX_STOP_SEQUENCES} sequences")
            return self

        @property
        def prompts(self) -> list[str]:
            return [self.prompt] if isinstance(self.prompt, str) else self.prompt

        @property
        def stop_sequences(self) -> list[str]:
            return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else self.stop

    return CompletionRequest


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """The answer, and with stream=true each event's data (with only that event's text in its choice)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    seed: int = Field(description="the seed used (drawn at random when the request gave none)")
