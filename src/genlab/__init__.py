"""genlab: train, sweep and compare generative models with PyTorch Lightning and Hydra."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_run"]


def __getattr__(name: str) -> Any:
    """`genlab.load_run`, imported on first use so that `import genlab` stays light."""
    if name == "load_run":
        from genlab.run.loading import load_run

        return load_run
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")
