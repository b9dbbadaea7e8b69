"""What a model can do, declared: the contracts that commands, callbacks and the server use instead of guessing
from method names.

A model family declares each capability by inheriting its contract, e.g.
`class Diffusion(GenerativeModel, ImageGenerator, ConditionalModel)`; Python then refuses to build a model that
misses one of the contract's abstract methods, and tests/test_contracts.py checks every configured model's
signatures against its contracts. A consumer asks `isinstance(model, ImageGenerator)`. A new capability (a masked LM's
unmasking) is one more contract here and an `isinstance` test in the consumers that use it; the
families that lack it, and the other consumers, stay as they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch

from genlab.models.conditioning import UNCONDITIONAL, ClassConditioning

if TYPE_CHECKING:
    from genlab.data.spec import DataSpec
    from genlab.nets.decoding import DecodingBatch, DecodingSequence, Sampling


class Grid(NamedTuple):
    """One picture: images in [0, 1], images per row, and a label per row where the rows are classes."""

    images: torch.Tensor
    nrow: int
    row_labels: list[str] | None = None


#: A model's pictures: name -> Grid, or (images in [0, 1], images per grid row).
Grids = dict[str, Grid | tuple[torch.Tensor, int]]

#: The sampler options an image generator's `sample` may take, beside `labels` (see `ConditionalModel`); the commands
#: and the server offer an option only to a model whose `sample` names it.
SAMPLER_OPTIONS = ("steps", "sampler", "guidance")


class ImageGenerator(ABC):
    """Draws images of its data's shape (`spec.shape`), values in [0, 1].

    The options a family takes (a diffusion model's `steps`, `sampler`, `guidance`; a conditional model's `labels`)
    are keyword parameters of its `sample` (and of `image_grids`, where they apply), each with a default:
    `genlab-sample` and the server read them from the signature, so a family's options are declared once.
    """

    spec: DataSpec
    device: torch.device
    #: Whether `image_grids` wants a real batch (a VAE's reconstructions); genlab-sample loads one when set.
    grids_use_real_images: ClassVar[bool] = False

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """n images, shape (n, *spec.shape); the same `generator` seed gives the same images."""

    def image_grids(self, batch: torch.Tensor | None, generator: torch.Generator, **options: Any) -> Grids:
        """The family's pictures over training and in genlab-sample (samples, interpolations, reconstructions of
        `batch` when given); none by default."""
        return {}


class LatentImageGenerator(ImageGenerator):
    """An image generator whose `sample` is `generate(noise(n, generator))`: the server draws each request's noise
    from its own seed and shares the network's passes between requests."""

    @abstractmethod
    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent points, drawn on the CPU (the same noise on every device)."""

    @abstractmethod
    def generate(self, z: torch.Tensor, **options: Any) -> torch.Tensor:
        """The images of latent points `z` (options: those of `sample` that apply per image, e.g. `labels`)."""


class Inpainter(ABC):
    """Fills the unknown pixels of images (inpainting), keeping the known ones exactly.

    `images` (N, *spec.shape) in [0, 1]; `mask` (N or 1, 1 or C, H, W) of 0 and 1, where **1 marks a known pixel
    and 0 one to fill** (`genlab.data.masks`; the OpenAI edits API's "transparent = edit" is converted at the server's
    edge). A conditional model completes for `labels` when given. A family's own settings (a diffusion model's
    resampling, a GAN's optimizer steps) are keyword parameters with defaults.
    """

    @abstractmethod
    def inpaint(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: Any = None,
        **options: Any,
    ) -> torch.Tensor:
        """The completed images in [0, 1], equal to `images` where `mask` is 1."""


class Editor(ABC):
    """Image-to-image (SDEdit, Meng et al., 2022): noise `images` to `strength` in [0, 1] (0: unchanged, 1: pure
    noise) and denoise; a conditional model can be steered to `labels` (with `guidance`), e.g. a 3 into an 8."""

    @abstractmethod
    def edit(
        self,
        images: torch.Tensor,
        strength: float,
        generator: torch.Generator | None = None,
        labels: Any = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """The edited images in [0, 1]."""


class ConditionalModel(ABC):
    """A family that can learn to generate a requested class; `conditioning` says whether this instance does
    (`model.conditional=true`) and which classes it knows. Its `sample` takes `labels` (one class, or one per
    sample) and `image_grids` the batch's `labels`."""

    conditioning: ClassConditioning


class SequenceGenerator(ABC):
    """Generates token sequences: continuations of a prompt (text), or whole sequences from a begin token to an end
    token (molecules, music), as the data says (`whole_sequences`)."""

    tokenizer: Any
    device: torch.device
    #: The sampling temperature the run was configured with (genlab-sample's default).
    sample_temperature: float
    #: Whether the data is separate sequences with begin/end tokens (else one running text).
    whole_sequences: bool = False

    @abstractmethod
    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        """The prompt's continuation, without the prompt."""

    @abstractmethod
    def generate_sequences(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """n whole sequences as text."""

    @abstractmethod
    def text_samples(self, seed: int) -> dict[str, str]:
        """The family's text samples over training (name -> text), reproducible from `seed`."""


class IncrementalDecoder(ABC):
    """Decodes token by token with a cache, many sequences in one batch: what genlab-serve's completions need."""

    tokenizer: Any
    device: torch.device

    @abstractmethod
    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids."""

    @abstractmethod
    def start_sequences(self, prompt_ids: Sequence[int], samplings: Sequence[Sampling]) -> list[DecodingSequence]:
        """Continuations of one prompt, one per `Sampling`, each with its first token drawn."""

    @abstractmethod
    def decoding_batch(self, rows: int, pad: bool = True) -> DecodingBatch:
        """An empty batch of `rows` slots in which started sequences take their next tokens together."""


#: Every contract, by name (for messages and for the contract test).
CONTRACTS: tuple[type, ...] = (
    ImageGenerator,
    LatentImageGenerator,
    ConditionalModel,
    Inpainter,
    Editor,
    SequenceGenerator,
    IncrementalDecoder,
)


def contracts_of(model: Any) -> list[str]:
    """The names of the contracts a model declares."""
    return [contract.__name__ for contract in CONTRACTS if isinstance(model, contract)]


def conditioning_of(model: Any) -> ClassConditioning:
    """A model's class conditioning; models that declare none (e.g. the language model) are unconditional."""
    return model.conditioning if isinstance(model, ConditionalModel) else UNCONDITIONAL


def image_grids_of(
    model: ImageGenerator, batch: tuple[torch.Tensor, torch.Tensor] | None, generator: torch.Generator, **options: Any
) -> Grids:
    """The model's pictures of a data batch (images, labels), or of none (sampling without the data): a conditional
    model gets the batch's labels too (a conditional VAE reconstructs with them); an unconditional one is called as
    before, with the images only. `options` are the model's sampler settings (a diffusion model's steps)."""
    images, labels = batch if batch is not None else (None, None)
    if conditioning_of(model).enabled:
        return model.image_grids(images, generator, labels=labels, **options)
    return model.image_grids(images, generator, **options)
