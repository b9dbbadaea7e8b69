"""torch's intra-op threads, one setting (`threads=`) for every command: torch starts one per core, and on a machine
whose cores are busy with other work those threads wait on each other (the digits quickstart ran 5x slower with two
threads than with one on a loaded 2-core machine: docs/configuration.md#threads)."""

from __future__ import annotations

from typing import Any

from genlab.settings import PositiveInt

#: The type of `threads` in every command's config: a count, or null for torch's own default (one per core).
THREADS: Any = PositiveInt | None


def use_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count for this process (null: leave torch's default)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
