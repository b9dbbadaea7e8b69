"""Images and masks that users hand in to edit (genlab-sample inpaint=/edit=, the server's /v1/images/edits): read
from PNG/JPEG files or bytes, resized to the model's (C, H, W), values in [0, 1]. Masks follow genlab's convention
(`genlab.data.masks`: 1 = known): a mask file is white where the pixel is known and black where it is to be filled;
with `alpha=True` (the OpenAI edits API) a transparent pixel is one to fill.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from genlab.data.masks import standard_mask
from genlab.errors import InputError

#: The file endings read from a folder of images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _open(source: Path | bytes, what: str):  # -> PIL.Image.Image
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        name = "the upload" if isinstance(source, bytes) else str(source)
        raise InputError(f"{what} {name} is not an image genlab can read (PNG or JPEG): {exc}") from None
    return image


def decode_image(source: Path | bytes, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image as (C, H, W) in [0, 1], resized to `shape` (grey for one channel, RGB for three), and its own
    size (width, height), which its mask must have."""
    from PIL import Image

    channels, height, width = shape
    image = _open(source, "the image")
    size = image.size
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    return torch.from_numpy(pixels.reshape(height, width, -1)).permute(2, 0, 1).contiguous(), size


def decode_mask(
    source: Path | bytes, size: tuple[int, int], height: int, width: int, alpha: bool = False
) -> torch.Tensor:
    """A (1, 1, H, W) mask of 0 and 1 (1 = known) for images of `size` (width, height), resized with them to the
    model's H x W: white pixels known, or with `alpha` opaque ones known."""
    from PIL import Image

    image = _open(source, "the mask")
    if image.size != size:
        raise InputError(
            f"the mask is {image.size[0]}x{image.size[1]} pixels and the image {size[0]}x{size[1]}; give a mask of "
            f"the image's size"
        )
    if alpha:
        if "A" not in image.getbands():
            raise InputError("the mask has no transparency; mark the pixels to edit as transparent (alpha 0)")
        image = image.getchannel("A")
    resized = image.convert("L").resize((width, height), Image.Resampling.NEAREST)
    known = np.asarray(resized) >= 128 if not alpha else np.asarray(resized) > 0
    return torch.from_numpy(known.astype(np.float32)).view(1, 1, height, width)


def image_paths(path: Path) -> list[Path]:
    """`path` itself, or the images in the folder `path` (sorted)."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)}); give an image or a folder of them")
        return found
    if not path.is_file():
        raise InputError(f"{path} is neither an image nor a folder of images")
    return [path]


def read_images(path: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor, list[str], set[tuple[int, int]]]:
    """The image at `path` or those in the folder, (N, *shape) in [0, 1], their file names' stems and their sizes."""
    paths = image_paths(path)
    images, sizes = zip(*(decode_image(p, shape) for p in paths), strict=True)
    return torch.stack(images), [p.stem for p in paths], set(sizes)


def read_mask(
    value: str, sizes: set[tuple[int, int]], shape: tuple[int, ...], n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A standard mask's name (centre, bottom, boxes; made at the model's size) or the path of a mask file, which
    must have the images' size (`sizes`: the sizes of the images, one size when a file is given)."""
    height, width = shape[-2:]
    path = Path(value).expanduser()
    if not path.suffix:
        return standard_mask(value, n, height, width, generator)
    if not path.is_file():
        raise InputError(f"mask={value}: no such file; give a mask image or one of centre, bottom, boxes")
    if len(sizes) > 1:
        raise InputError(f"the images have {len(sizes)} sizes and one mask file fits one; give images of one size")
    return decode_mask(path, next(iter(sizes)), height, width)
