"""Classifier-free guidance (Ho & Salimans, 2022): one net learns both the class-conditional denoiser and the
unconditional one, because during training each label is replaced by a "null" label with some probability; at
sampling time the prediction is pushed away from the unconditional one, past the conditional one:

    prediction = (1 + w) net(x_t, t, y) - w net(x_t, t, null)

with the guidance scale w as Ho & Salimans write it: w = 0 is the conditional model alone (one net evaluation per
step), w > 0 trades the variety of the samples (FID) for samples that look more like their class (`cond_acc`), and
w = -1 is the unconditional model. Written for eps, the rule applies unchanged to v-prediction and flow matching:
their estimates of x_0 and eps are affine in the prediction (for a given x_t and t), so mixing predictions with weights
that sum to 1 mixes the eps estimates the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: (x_t, time, labels) -> the net's prediction; labels may hold the null label.
LabelledNet = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def drop_labels(labels: torch.Tensor, probability: float, null: int) -> torch.Tensor:
    """`labels` with each replaced by the `null` label with `probability`, drawn from the global random stream."""
    if probability == 0:
        return labels
    dropped = torch.rand(labels.shape, device=labels.device) < probability
    return labels.masked_fill(dropped, null)


def guided_prediction(
    net: LabelledNet, x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor, guidance: float, null: int
) -> torch.Tensor:
    """The guided prediction at (x_t, time) for `labels` (see the module docstring). w = 0 costs one net evaluation;
    otherwise the conditional and unconditional predictions come from one forward pass of 2N images."""
    if guidance == 0:
        return net(x, time, labels)
    both = net(torch.cat([x, x]), torch.cat([time, time]), torch.cat([labels, torch.full_like(labels, null)]))
    conditional, unconditional = both.float().chunk(2)
    return conditional + guidance * (conditional - unconditional)
