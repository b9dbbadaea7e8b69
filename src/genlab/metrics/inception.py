"""Inception-v3 pool features (the FID of papers) from a local weights file: no download, so it works offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.upstream import fid_inception_v3

WEIGHTS_HINT = (
    "give the local file of torch-fidelity's Inception weights (weights-inception-2015-12-05-6726825d.pth) as "
    "metrics.inception_weights=PATH (offline there is no download), or use metrics.features=classifier"
)


class InceptionFeatures(nn.Module):
    """2048-d pool features of torchmetrics' FID Inception-v3 for float images in [0, 1], (N, C, H, W).

    Images go in as uint8, grey ones repeated to 3 channels; the net resizes them to 299x299 itself, exactly as
    torchmetrics' FrechetInceptionDistance does with its default feature extractor.
    """

    num_features = 2048

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        if weights is None:
            raise ConfigError(f"metrics.features=inception needs weights: {WEIGHTS_HINT}")
        if not Path(weights).is_file():
            raise ConfigError(f"metrics.inception_weights={weights} is not a file: {WEIGHTS_HINT}")
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ConfigError(
                "metrics.features=inception needs the torch-fidelity package: pip install torch-fidelity "
                "(or use metrics.features=classifier)"
            )
        try:
            self.net = fid_inception_v3(str(weights))
        except Exception as exc:  # torch.load or load_state_dict on a file that is not these weights
            raise ConfigError(
                f"metrics.inception_weights={weights} could not be loaded ({exc}): {WEIGHTS_HINT}"
            ) from exc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.net(images)
