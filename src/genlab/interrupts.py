"""SIGTERM (a scheduler's or `kill`'s stop) ends a job cleanly wherever it arrives, and a second one at once.

During `fit`, Lightning's own handler finishes the current step and stops (genlab then saves `last.ckpt`); this
handler, which Lightning calls after its own, lets that first signal be. Before or after `fit` (reading and
tokenizing data, the final evaluation) nothing else listens, so the signal raises `Terminated` here and the run is
recorded as interrupted instead of vanishing. A second SIGTERM raises at once, also in the middle of a long step.
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


@dataclass
class Signals:
    terminated: int = 0


@contextmanager
def stop_on_sigterm() -> Iterator[Signals]:
    """For the block: SIGTERM handled as above; the previous SIGTERM and SIGINT handlers come back afterwards
    (Lightning ignores SIGINT for good once it has handled a Ctrl-C)."""
    received = Signals()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.terminated += 1
        if received.terminated == 1 and signal.getsignal(signal.SIGTERM) is not on_sigterm:
            return  # Lightning's handler called this one: the fit stops after its current step
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm), signal.getsignal(signal.SIGINT)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
