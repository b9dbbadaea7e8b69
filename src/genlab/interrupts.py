"""SIGTERM (a scheduler's or `kill`'s stop) ends a job cleanly wherever it arrives, and a second one at once.

During `fit`, Lightning's own handler finishes the current step and stops (genlab then saves `last.ckpt`); this
handler, which Lightning calls after its own, lets that first signal be. Before or after `fit` (reading and
tokenizing data, the final evaluation) nothing else listens, so the signal raises `Terminated` here and the run is
recorded as interrupted instead of vanishing. A second SIGTERM raises at once, also in the middle of a long step.
Work that is not a training step (drawing a thousand images for FID, a sampler's hundred steps) would hold the first
signal for minutes: its loops call `stop_if_requested()`, which raises `Terminated` once a SIGTERM is pending.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

#: A process stopped by SIGTERM exits with this status, as one killed by the signal would.
SIGTERM_STATUS = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, as an interruption: the manifest says `interrupted`, Lightning saves `last.ckpt` on its way out."""


def interrupted_by(exc: BaseException) -> bool:
    """Whether `exc` is an interruption, or what a library raised while an interruption unwound through it (a signal
    raised inside OmegaConf's or Hydra's clean-up can surface as their own error, with the interruption as context)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (KeyboardInterrupt, SystemExit)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class Signals:
    terminated: int = 0


#: The signals of the `stop_on_sigterm` block running now, if any.
_active: Signals | None = None


def stop_if_requested() -> None:
    """Raise `Terminated` when a SIGTERM is pending; long loops outside a training step call it once per pass."""
    if _active is not None and _active.terminated:
        raise Terminated()


@contextmanager
def stop_on_sigterm() -> Iterator[Signals]:
    """For the block: SIGTERM handled as above; the previous SIGTERM and SIGINT handlers come back afterwards
    (Lightning ignores SIGINT for good once it has handled a Ctrl-C)."""
    global _active
    received = Signals()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.terminated += 1
        if received.terminated == 1 and signal.getsignal(signal.SIGTERM) is not on_sigterm:
            return  # Lightning's handler called this one: the fit stops after its current step
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm), signal.getsignal(signal.SIGINT), _active
    _active = received
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        _active = previous[2]
