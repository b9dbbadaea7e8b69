"""genlab-serve's own settings (conf/serve.yaml), typed: the type hints are the schema they are checked against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass

from genlab.errors import ConfigError
from genlab.settings import NonNegativeFloat, PositiveInt

Port = Annotated[int, Ge(1), Le(65535)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class ServeSettings:
    """How the server listens, batches and bounds requests; see conf/serve.yaml for each setting."""

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
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> ServeSettings:
        """The settings from the command's config, or one line naming the first bad value and what is allowed."""
        try:
            return cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            given = values.get(key, "?")
            raise ConfigError(f"{key}={given}: {error['msg']}") from exc
