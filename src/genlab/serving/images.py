"""Image models behind POST /v1/images: which options a model takes, and many requests drawn in shared passes.

The contract for seeds: a request's random draws come from its own generator, `torch.Generator().manual_seed(seed)`,
exactly as `model.sample(n, generator)` would draw them (the noise is drawn per request, on the CPU), and only the
network's pass is shared. With `batch_invariant` every pass has `max_batch_size` rows (padded), and since a batched
pass then computes each row the same whatever the other rows hold, a request's images are the same bytes whether it
was alone or shared its passes with any others.
"""

from __future__ import annotations

import inspect
import io
import math
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import torch
from torch import Tensor

from genlab.errors import GenlabError
from genlab.models.contracts import ConditionalModel, ImageGenerator, LatentImageGenerator, conditioning_of
from genlab.serving.batching import ModelThread, Reply, log

#: Request fields that exist only where the model's `sample` takes them, and the parameter each one is passed as.
#: A label is passed as `labels` (one per image) when `sample` takes labels, as `label` when it takes one label.
OPTIONS = ("label", "steps", "guidance", "temperature")


def parameters(function: Any) -> set[str]:
    return set(inspect.signature(function).parameters)


class ImageModel:
    """An image model as the server uses it: `sample(n, generator, **options)`, or, when the model splits it into
    `noise(n, generator)` and `generate(z, **options)` (VAE, GAN), noise drawn per request and passes shared."""

    def __init__(self, model: ImageGenerator) -> None:
        self.model = model
        taken = parameters(model.sample)
        # A label for a model whose `sample` takes one, unless it says it was trained unconditionally (genlab's
        # VAE and GAN take `labels` either way; their conditioning says whether they follow them).
        conditional = not isinstance(model, ConditionalModel) or model.conditioning.enabled
        self.label_parameter = next((name for name in ("labels", "label") if name in taken and conditional), None)
        self.options = [name for name in OPTIONS if (name == "label" and self.label_parameter) or name in taken]
        self.options = [name for name in self.options if name != "labels"]
        self.generate_options = parameters(model.generate) if isinstance(model, LatentImageGenerator) else None
        self.num_classes: int | None = conditioning_of(model).num_classes or model.spec.num_classes

    def shares_passes(self, options: dict[str, Any]) -> bool:
        """Whether requests with these options can share passes: `generate` takes them all, and labels one per
        image (a pass mixes the labels of several requests)."""
        if "label" in options and self.label_parameter != "labels":
            return False
        wanted = {self.label_parameter if name == "label" else name for name in options}
        return self.generate_options is not None and wanted <= self.generate_options

    def keywords(self, options: dict[str, Any], n: int) -> dict[str, Any]:
        """The model's keyword arguments for one request's options."""
        keywords = {name: value for name, value in options.items() if name != "label"}
        if "label" in options:
            label = options["label"]
            keywords[self.label_parameter] = (
                torch.full((n,), label, dtype=torch.long, device=self.model.device)
                if self.label_parameter == "labels"
                else label
            )
        return keywords

    def sample(self, n: int, seed: int, options: dict[str, Any]) -> Tensor:
        return self.model.sample(n, torch.Generator().manual_seed(seed), **self.keywords(options, n))


@dataclass
class ImageJob:
    """One request: n images from `seed` with the model's options; `reply` gets (images, requests in its largest
    pass) or the exception that stopped it."""

    n: int
    seed: int
    options: dict[str, Any]
    reply: Reply
    shared_with: int = field(default=1, init=False)
    #: Its request is gone (answered, timed out, or its client left): not drawn if it is still waiting.
    cancelled: bool = field(default=False, init=False)


class ImageEngine(ModelThread[ImageJob]):
    """Gathers requests (up to `max_batch_size` images within `batch_timeout`) and draws them in passes of
    `max_batch_size` rows: padded to that size when `batch_invariant`, so outputs never depend on the batch."""

    def __init__(self, model: ImageGenerator, max_batch_size: int, batch_timeout: float, batch_invariant: bool) -> None:
        super().__init__("genlab-serve images", max_batch_size, batch_timeout)
        self.image_model = ImageModel(model)
        self.pad = batch_invariant

    def serve_forever(self) -> None:
        while not self.stopping:
            first = self.next_job(None)
            if first is None:
                continue
            groups: dict[tuple, list[ImageJob]] = {}
            for job in self.gather(first, lambda job: job.n):
                if job.cancelled:
                    continue
                scalars = tuple(sorted((k, v) for k, v in job.options.items() if k != "label"))
                groups.setdefault((scalars, "label" in job.options), []).append(job)
            for group in groups.values():
                self.serve_group(group)

    def serve_group(self, jobs: list[ImageJob]) -> None:
        """Requests with the same options but labels: in shared passes when the model allows it. A shared pass that
        fails is retried request by request, so a request that makes the model fail fails alone (and the others,
        batch-invariant, get what the shared pass would have given them)."""
        if len(jobs) > 1 and self.image_model.shares_passes(jobs[0].options):
            try:
                results = self.draw_together(jobs)
            except Exception:
                log.warning("a pass shared by %d requests failed; retrying them one by one", len(jobs), exc_info=True)
            else:
                for job, images in zip(jobs, results, strict=True):
                    job.reply.send((images, job.shared_with))
                return
        for job in jobs:
            self.serve_alone(job)

    def serve_alone(self, job: ImageJob) -> None:
        try:
            if self.image_model.shares_passes(job.options):
                (images,) = self.draw_together([job])
            else:
                self.stats.record(1, job.n)
                images = self.image_model.sample(job.n, job.seed, job.options)
        except Exception as exc:
            if not isinstance(exc, GenlabError):
                log.exception("the model failed on a request")
            job.reply.send(exc)
        else:
            job.reply.send((images, job.shared_with))

    def draw_together(self, jobs: list[ImageJob]) -> list[Tensor]:
        """Each request's noise from its own generator, then `generate` over all of them in passes of
        `max_batch_size` rows."""
        model = self.image_model.model
        z = torch.cat([model.noise(job.n, torch.Generator().manual_seed(job.seed)) for job in jobs])
        labels = None
        if "label" in jobs[0].options:
            labels = torch.cat([torch.full((job.n,), job.options["label"], dtype=torch.long) for job in jobs])
        scalars = {name: value for name, value in jobs[0].options.items() if name != "label"}
        ends = list(accumulate(job.n for job in jobs))
        starts = [end - job.n for end, job in zip(ends, jobs, strict=True)]
        for job in jobs:
            job.shared_with = 1
        outputs = []
        for first in range(0, len(z), self.max_batch_size):
            rows = min(self.max_batch_size, len(z) - first)
            sharing = [job for job, a, b in zip(jobs, starts, ends, strict=True) if a < first + rows and b > first]
            for job in sharing:
                job.shared_with = max(job.shared_with, len(sharing))
            size = self.max_batch_size if self.pad else rows
            keywords = dict(scalars)
            if labels is not None:
                keywords[self.image_model.label_parameter] = pad_rows(labels[first : first + rows], size).to(z.device)
            outputs.append(model.generate(pad_rows(z[first : first + rows], size), **keywords)[:rows])
            self.stats.record(len(sharing), rows)
        return list(torch.cat(outputs).split([job.n for job in jobs]))


def pad_rows(rows: Tensor, size: int) -> Tensor:
    """`rows` followed by zero rows up to `size` rows."""
    missing = size - len(rows)
    return rows if missing <= 0 else torch.cat([rows, rows.new_zeros((missing, *rows.shape[1:]))])


def png_bytes(images: Tensor) -> bytes:
    """One PNG of images in [0, 1] (several: a grid, in genlab-sample's layout)."""
    from genlab.callbacks.media import save_grid

    buffer = io.BytesIO()
    save_grid(images, math.ceil(math.sqrt(len(images))), buffer)
    return buffer.getvalue()
