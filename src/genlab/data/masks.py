"""Inpainting masks: the standard ones that tests, metrics and commands share, and the checks on a given one.

Convention everywhere in genlab: a mask is (N or 1, 1 or C, H, W) of 0 and 1, **1 = a known pixel, 0 = a pixel to
fill**. (The OpenAI edits API marks the pixels to edit as transparent; the server converts at its edge.)
Plain torch, pure functions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from genlab.errors import InputError

#: The standard masks by name: (n, height, width, generator) -> (n, 1, H, W).
MaskMaker = Callable[[int, int, int, torch.Generator | None], torch.Tensor]


def centre_square(n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The centre square of half the side unknown (a quarter of the image)."""
    mask = torch.ones(n, 1, height, width)
    mask[..., height // 4 : height - height // 4, width // 4 : width - width // 4] = 0
    return mask


def bottom_half(n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The bottom half unknown: the model must draw it from the top half."""
    mask = torch.ones(n, 1, height, width)
    mask[..., height // 2 :, :] = 0
    return mask


def random_boxes(
    n: int, height: int, width: int, generator: torch.Generator | None = None, boxes: int = 3
) -> torch.Tensor:
    """`boxes` boxes per image, each a quarter of the side, at places drawn from `generator`."""
    mask = torch.ones(n, 1, height, width)
    box_h, box_w = max(1, height // 4), max(1, width // 4)
    tops = torch.randint(0, height - box_h + 1, (n, boxes), generator=generator)
    lefts = torch.randint(0, width - box_w + 1, (n, boxes), generator=generator)
    for i in range(n):
        for top, left in zip(tops[i].tolist(), lefts[i].tolist(), strict=True):
            mask[i, :, top : top + box_h, left : left + box_w] = 0
    return mask


STANDARD_MASKS: dict[str, MaskMaker] = {"centre": centre_square, "bottom": bottom_half, "boxes": random_boxes}


def standard_mask(name: str, n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard mask called `name` for n images of height x width."""
    if name not in STANDARD_MASKS:
        raise InputError(f"mask={name!r} is not a standard mask; give one of {sorted(STANDARD_MASKS)} or a PNG file")
    return STANDARD_MASKS[name](n, height, width, generator)


def check_images(images: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Images to edit, (N, *shape) in [0, 1], as float32 on `device`; refused with one line otherwise."""
    if images.dim() != len(shape) + 1 or tuple(images.shape[1:]) != tuple(shape) or len(images) == 0:
        raise InputError(f"the images are {tuple(images.shape)}; this model edits (N, {', '.join(map(str, shape))})")
    if images.min() < 0 or images.max() > 1:
        raise InputError("the images hold values outside [0, 1]; give them as the models draw them, in [0, 1]")
    return images.to(device, torch.float32)


def check_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`mask` as a float tensor on the images' device, refused with one line if it does not fit `images` (N, C, H,
    W): wrong size, values other than 0 and 1, or nothing to fill / nothing known."""
    n, channels, height, width = images.shape
    if mask.dim() != 4 or mask.shape[0] not in (1, n) or mask.shape[1] not in (1, channels):
        raise InputError(
            f"the mask is {tuple(mask.shape)}; give (N or 1, 1 or {channels}, {height}, {width}) for images of "
            f"{tuple(images.shape)}"
        )
    if tuple(mask.shape[2:]) != (height, width):
        raise InputError(
            f"the mask is {mask.shape[-1]}x{mask.shape[-2]} pixels and the images {width}x{height}; give a mask of "
            f"the images' size"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError("the mask holds values other than 0 and 1; give 1 for known pixels and 0 for those to fill")
    if bool((mask == 1).all()):
        raise InputError("the mask marks every pixel as known (all 1): nothing to fill; mark the pixels to fill with 0")
    if bool((mask == 0).all()):
        raise InputError(
            "the mask marks every pixel to fill (all 0): nothing is known, that is sampling; use genlab-sample "
            "without inpaint=, or keep some pixels (1)"
        )
    return mask.to(images.device, torch.float32)


def check_strength(strength: float) -> float:
    """An edit's strength, in [0, 1]."""
    if not 0 <= strength <= 1:
        raise InputError(f"strength={strength} is outside [0, 1]; 0 keeps the image, 1 redraws it from noise (try 0.5)")
    return float(strength)


def paste(images: torch.Tensor, mask: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    """`images` where the mask is 1, `completion` elsewhere: the known pixels come back exactly."""
    return torch.where(mask.bool(), images, completion.to(images.dtype))


def masked_view(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What a model is given to complete, for pictures: the known pixels, grey where it must fill."""
    return paste(images, mask.to(images.device), torch.full_like(images, 0.5))
