"""What both engines share: one thread that owns the model and takes requests from a queue, the replies it sends
back to the event loop, and the batch statistics the server reports.

The model runs on a single thread (one forward pass at a time, as a GPU or a CPU serves best), so the HTTP event loop
never waits on it: a request is queued with a way to reply, and the thread gathers what is queued into batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger("genlab.serve")

Job = TypeVar("Job")


class Reply:
    """Delivers what the model thread produced for one request to the asyncio side, safely from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]) -> None:
        self.loop = loop
        self.deliver = deliver

    @classmethod
    def to_future(cls, future: asyncio.Future) -> Reply:
        """Replies that settle `future` once (a request whose client went away has a cancelled future: ignored)."""

        def settle(value: Any) -> None:
            if future.done():
                return
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)

        return cls(future.get_loop(), settle)

    @classmethod
    def to_queue(cls, events: asyncio.Queue) -> Reply:
        """Replies that are events of a stream, read in order by the request's handler."""
        return cls(asyncio.get_running_loop(), events.put_nowait)

    def send(self, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.deliver, value)


class BatchStats:
    """How the forward passes went: their number, their rows, and how many requests shared each (for /info)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passes = 0
        self.rows = 0
        self.requests_per_pass: Counter[int] = Counter()

    def record(self, requests: int, rows: int) -> None:
        with self.lock:
            self.passes += 1
            self.rows += rows
            self.requests_per_pass[requests] += 1

    def summary(self) -> dict[str, Any]:
        with self.lock:
            histogram = dict(sorted(self.requests_per_pass.items()))
            return {
                "passes": self.passes,
                "rows": self.rows,
                "requests_per_pass": {str(k): v for k, v in histogram.items()},
                "max_requests_per_pass": max(histogram, default=0),
            }


_STOP = object()


class ModelThread(threading.Thread, Generic[Job]):
    """The thread that owns the model: `submit` queues a job from the event loop, `serve_forever` (the engine's)
    takes them with `next_job`; `stop` ends it after the current pass."""

    def __init__(self, name: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(name=name, daemon=True)
        self.inbox: queue.Queue = queue.Queue()
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.stats = BatchStats()
        self.stopping = False
        self.held: Job | None = None  # taken from the queue by `gather` but left for the next batch

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        self.inbox.put(_STOP)
        if self.is_alive():
            self.join(timeout)

    def next_job(self, timeout: float | None) -> Job | None:
        """The next queued job: wait at most `timeout` seconds (None: until one comes, 0: only one already
        queued); None when there is none or the server is stopping."""
        if self.held is not None:
            job, self.held = self.held, None
            return job
        try:
            job = self.inbox.get(timeout=timeout) if timeout != 0 else self.inbox.get_nowait()
        except queue.Empty:
            return None
        return None if job is _STOP else job

    def gather(self, first: Job, rows: Callable[[Job], int]) -> list[Job]:
        """`first` and the jobs queued within `batch_timeout` of it, while they fit in `max_batch_size` rows (a job
        that does not fit is held for the next batch)."""
        jobs, total = [first], rows(first)
        deadline = time.monotonic() + self.batch_timeout
        while total < self.max_batch_size and not self.stopping:
            job = self.next_job(max(0.0, deadline - time.monotonic()))
            if job is None:
                break
            if total + rows(job) > self.max_batch_size:
                self.held = job
                break
            jobs.append(job)
            total += rows(job)
        return jobs

    def run(self) -> None:
        import torch

        with torch.inference_mode():  # grad mode is per thread
            try:
                self.serve_forever()
            except Exception:  # a bug in the engine itself: say so loudly; requests then fail with 503
                log.exception("the model thread stopped")
                self.stopping = True

    def serve_forever(self) -> None:
        raise NotImplementedError
