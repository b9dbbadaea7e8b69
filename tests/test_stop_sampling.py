"""A SIGTERM that arrives while a model samples (a diffusion sampler's steps, the images for FID) stops it at the next
step, instead of after minutes of sampling: the loops ask `genlab.interrupts.stop_if_requested`."""

from __future__ import annotations

import pytest
import torch

from genlab.interrupts import Terminated, stop_if_requested, stop_on_sigterm
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule
from genlab.models.diffusion_samplers import DDIM, Euler


def test_a_pending_sigterm_stops_the_samplers_at_their_next_step() -> None:
    """During `fit` Lightning's handler takes the first SIGTERM and genlab's only records it (Lightning would stop
    after the current training step, but sampling for FID is not one): recorded during the third step here."""
    steps_done = []

    for sampler in (DDIM(NoiseSchedule("linear", 100)), Euler(LinearPath())):
        steps_done.clear()
        with stop_on_sigterm() as signals, pytest.raises(Terminated):

            def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
                steps_done.append(t)
                signals.terminated = int(len(steps_done) >= 3)
                return torch.zeros_like(x), x

            for _ in sampler.trajectory(denoise, torch.randn(2, 1, 4, 4), 50):
                pass
        assert len(steps_done) == 3, type(sampler).__name__
    stop_if_requested()  # outside a job nothing is pending
