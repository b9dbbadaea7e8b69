"""What the image models that work in [-1, 1] share (the GAN's tanh outputs, the diffusion model's noise scale): the
data's values mapped there and back, and spherical interpolation of Gaussian latents for their pictures."""

from __future__ import annotations

import torch

from genlab.data.spec import DataSpec


class SignedImageRange:
    """A mixin for a LightningModule: `register_data_range(spec)` in `__init__`, then `to_model_range` maps data
    values (the spec's value_range) to [-1, 1]; the range moves with the module's device (non-persistent buffers)."""

    data_low: torch.Tensor
    data_span: torch.Tensor

    def register_data_range(self, spec: DataSpec) -> None:
        low, high = spec.value_range
        self.register_buffer("data_low", torch.tensor(float(low)), persistent=False)
        self.register_buffer("data_span", torch.tensor(float(high - low)), persistent=False)

    def to_model_range(self, images: torch.Tensor) -> torch.Tensor:
        """Data values to [-1, 1]."""
        return (images - self.data_low) / self.data_span * 2 - 1


def slerp(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White, 2016): Gaussian latents keep their typical norm along the path.

    start, end: (P, L); t: (S,). Returns (P, S, L).
    """
    cos = torch.nn.functional.cosine_similarity(start, end, dim=1).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos).view(-1, 1, 1)
    t = t.view(1, -1, 1)
    weight_start = torch.sin((1 - t) * angle) / torch.sin(angle)
    weight_end = torch.sin(t * angle) / torch.sin(angle)
    return weight_start * start.unsqueeze(1) + weight_end * end.unsqueeze(1)
