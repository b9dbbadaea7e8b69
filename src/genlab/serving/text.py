"""Language models behind POST /v1/completions: continuous batching of decoding steps with the KV cache.

Each completion draws from its own generator (`seed + i` for the i-th choice of a request, as genlab-sample numbers
its texts). A request's prompt is prefilled once, alone; its completions then take slots in a decoding batch, one KV
cache of `max_batch_size` slots, where every unfinished completion of every request takes its next token in one pass
(over all slots and whole slots when `batch_invariant`, so a completion is the same whichever requests share its
passes; see `genlab.nets.decoding.DecodingBatch`). Requests join between two tokens and leave when they finish, so
a short request never waits for a long one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab.errors import GenlabError
from genlab.models.contracts import IncrementalDecoder, SequenceGenerator
from genlab.serving.batching import ModelThread, Reply, log

#: Characters that stand for an incomplete UTF-8 sequence when byte-level tokens are decoded one at a time.
REPLACEMENT = "\ufffd"


@dataclass
class Choice:
    """One completion being decoded: its sequence, where its prompt ends, and the text already sent."""

    index: int
    sequence: Any
    prompt_length: int
    batch: Any = None
    sent: str = ""
    tokens: int = 1  # the first token is drawn with the prefill
    finish_reason: str | None = None


@dataclass
class CompletionJob:
    """One request: `n` completions of each prompt (token ids), drawn from `seed + i`; `reply` gets the events
    ("text", index, delta), ("finish", index, reason), ("done", usage, requests in its largest pass) or an
    exception."""

    prompts: list[list[int]]
    n: int
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int
    stop: list[str]
    stream: bool
    reply: Reply
    cancelled: bool = False
    choices: list[Choice] = field(default_factory=list)
    shared_with: int = 1

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


def visible_text(text: str, stop: Sequence[str], finished: bool) -> tuple[str, bool]:
    """The part of a completion's text that can be sent, and whether a stop sequence ends it there.

    Held back until the next token: a tail that may be the start of a stop sequence, and an incomplete UTF-8
    character (byte tokens decode to U+FFFD until the character is complete).
    """
    cuts = [text.find(s) for s in stop if s in text]
    if cuts:
        return text[: min(cuts)], True
    if finished:
        return text, False
    hold = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    end = len(text) - hold
    while end > 0 and text[end - 1] == REPLACEMENT:
        end -= 1
    return text[:end], False


class TextEngine(ModelThread[CompletionJob]):
    """Continuous batching: between two decoding steps, queued requests join (while their rows fit in
    `max_batch_size`, or when nothing else runs) and finished or abandoned ones leave."""

    def __init__(
        self, model: IncrementalDecoder, max_batch_size: int, batch_timeout: float, batch_invariant: bool
    ) -> None:
        super().__init__("genlab-serve text", max_batch_size, batch_timeout)
        self.model = model
        self.pad = batch_invariant
        self.waiting: deque[CompletionJob] = deque()
        self.active: list[CompletionJob] = []
        self.batches: list[Any] = []  # the model's decoding batches of max_batch_size slots (more for a big request)

    def serve_forever(self) -> None:
        while not self.stopping:
            if not self.active and not self.waiting:
                first = self.next_job(None)
                if first is None:
                    continue
                self.waiting.extend(self.gather(first, lambda job: job.rows))
            while (job := self.next_job(0)) is not None:
                self.waiting.append(job)
            self.admit()
            self.step()

    def admit(self) -> None:
        """Prefill the waiting requests that fit, in order (each alone: its prompt is read once)."""
        rows = sum(job.rows for job in self.active)
        while self.waiting and (rows + self.waiting[0].rows <= self.max_batch_size or not self.active):
            job = self.waiting.popleft()
            if job.cancelled:
                continue
            try:
                self.prefill(job)
            except Exception as exc:
                fail(job, exc)
                continue
            self.report(job)
            if not self.finished(job):  # max_tokens=1 or a stop sequence in the first token: done already
                rows += job.rows
                self.active.append(job)
                for choice in job.choices:
                    if choice.finish_reason is None:
                        self.place(choice)

    def prefill(self, job: CompletionJob) -> None:
        from genlab.nets.decoding import Sampling

        device = self.model.device
        for p, prompt in enumerate(job.prompts):
            indices = range(p * job.n, (p + 1) * job.n)
            samplings = [
                Sampling(
                    job.temperature, job.top_k, job.top_p, torch.Generator(device=device).manual_seed(job.seed + i)
                )
                for i in indices
            ]
            sequences = self.model.start_sequences(prompt, samplings)
            job.choices += [Choice(i, s, len(prompt)) for i, s in zip(indices, sequences, strict=True)]

    def place(self, choice: Choice) -> None:
        """Put a completion into a decoding batch with a free slot (a new batch if none has one)."""
        batch = next((batch for batch in self.batches if batch.free), None)
        if batch is None:
            batch = self.model.decoding_batch(self.max_batch_size, self.pad)
            self.batches.append(batch)
        batch.add(choice.sequence)
        choice.batch = batch

    def step(self) -> None:
        """One token for every unfinished completion: one pass per decoding batch."""
        for batch in self.batches:
            members = [(job, c) for job in self.active for c in job.choices if c.batch is batch and not c.finish_reason]
            if not members:
                continue
            jobs = list({id(job): job for job, _ in members}.values())
            try:
                batch.step()
            except Exception as exc:  # a failure of the pass itself (not of one request's input): its requests fail
                for job in jobs:
                    fail(job, exc)
                continue
            self.stats.record(len(jobs), len(members))
            for job in jobs:
                job.shared_with = max(job.shared_with, len(jobs))
            for _, choice in members:
                choice.tokens += 1
        for job in self.active:
            if not job.cancelled:
                self.report(job)
        still = []
        for job in self.active:
            for choice in job.choices:
                if choice.batch is not None and (job.cancelled or choice.finish_reason):
                    choice.batch.remove(choice.sequence)
                    choice.batch = None
            if not job.cancelled and not self.finished(job):
                still.append(job)
        self.active = still
        self.batches = [batch for i, batch in enumerate(self.batches) if i == 0 or len(batch)]

    @staticmethod
    def finished(job: CompletionJob) -> bool:
        return all(c.finish_reason is not None for c in job.choices)

    def report(self, job: CompletionJob) -> None:
        """Send each completion's new text (as it comes when streaming, else once at its end); finish it at a stop
        sequence or at max_tokens; end the request when all its completions are finished."""
        decode = self.model.tokenizer.decode
        for choice in job.choices:
            if choice.finish_reason is not None:
                continue
            at_length = choice.tokens >= job.max_tokens
            if not (job.stream or job.stop or at_length):
                continue  # nothing to send or to look for before the end
            text, stopped = visible_text(decode(choice.sequence.ids[choice.prompt_length :]), job.stop, at_length)
            done = stopped or at_length
            if (job.stream or done) and len(text) > len(choice.sent):
                job.reply.send(("text", choice.index, text[len(choice.sent) :]))
                choice.sent = text
            if done:
                choice.finish_reason = "stop" if stopped else "length"
                job.reply.send(("finish", choice.index, choice.finish_reason))
        if self.finished(job):
            job.reply.send(("done", usage(job, sum(c.tokens for c in job.choices)), job.shared_with))


def usage(job: CompletionJob, completion_tokens: int) -> dict[str, int]:
    """The OpenAI API's token counts of a finished request."""
    prompt_tokens = sum(len(prompt) for prompt in job.prompts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def fail(job: CompletionJob, exc: Exception) -> None:
    """End a request with its error (a genlab error is the user's: its 4xx says why; anything else is logged)."""
    if not isinstance(exc, GenlabError):
        log.exception("the model failed on a request", exc_info=exc)
    job.cancelled = True
    job.reply.send(exc)


class WholeTextEngine(ModelThread[CompletionJob]):
    """For text models that draw a completion whole rather than token by token (a masked LM unmasks its window in
    steps): one request at a time, each completion generated whole and sent in one piece (also when streaming)."""

    def __init__(self, model: SequenceGenerator, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__("genlab-serve text", max_batch_size, batch_timeout)
        self.model = model

    def serve_forever(self) -> None:
        while not self.stopping:
            job = self.next_job(None)
            if job is None or job.cancelled:
                continue
            try:
                self.complete(job)
            except Exception as exc:
                fail(job, exc)

    def complete(self, job: CompletionJob) -> None:
        decode = self.model.tokenizer.decode
        for p, prompt in enumerate(job.prompts):
            for index in range(p * job.n, (p + 1) * job.n):
                if job.cancelled:
                    return
                generator = torch.Generator(device=self.model.device).manual_seed(job.seed + index)
                text = self.model.generate_text(
                    decode(prompt), job.max_tokens, job.temperature, job.top_k, job.top_p, generator
                )
                shown, stopped = visible_text(text, job.stop, finished=True)
                job.reply.send(("text", index, shown))
                job.reply.send(("finish", index, "stop" if stopped else "length"))
                self.stats.record(1, 1)
        job.reply.send(("done", usage(job, job.max_tokens * job.rows), 1))
