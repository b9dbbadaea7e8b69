"""genlab-serve's own settings (conf/serve.yaml), typed: the type hints are the schema `genlab-serve` checks them
against (`genlab.commands.run_command`), one line naming a bad value and what is allowed."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le

from genlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt

Port = Annotated[int, Ge(1), Le(65535)]


@dataclass(frozen=True)
class ServeSettings:
    """How the server listens, whom it lets in, how it batches and bounds requests; see conf/serve.yaml."""

    host: str = "127.0.0.1"
    port: Port = 8000
    device: str = "cpu"
    max_batch_size: PositiveInt = 32
    batch_timeout: NonNegativeFloat = 0.01
    batch_invariant: bool = True
    max_n: PositiveInt = 64
    max_tokens: PositiveInt = 1024
    max_steps: PositiveInt = 1000
    max_request_bytes: PositiveInt = 65536
    model_name: str | None = None
    api_key: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    cors_origins: list[str] = field(default_factory=list)
    request_timeout: PositiveFloat = 300.0
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @classmethod
    def types(cls) -> dict[str, Any]:
        """Each setting's type hint (ranges included)."""
        hints = typing.get_type_hints(cls, include_extras=True)
        return {field.name: hints[field.name] for field in fields(cls)}
