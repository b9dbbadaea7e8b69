"""POST /v1/images/edits in the OpenAI images API's shape: a multipart form with the `image` and an optional `mask`
(transparent pixels are the ones to fill, as OpenAI has it; converted here to genlab's 1 = known), `n` and
`response_format`, plus genlab's `seed`, `label` and `strength`. With a mask (or an image whose own transparency
marks the pixels to fill) the model inpaints; with `strength` and no mask a diffusion model edits the whole image
(SDEdit). The n results are drawn from one generator seeded with `seed`. Edits run one at a time beside the
sampling thread (not batched with other requests); the form's fields are bounded by the server's limits.

(No `from __future__ import annotations`: FastAPI reads the form fields from the endpoint's annotations.)
"""

import secrets
import threading
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from genlab.data.image_files import decode_image, decode_mask
from genlab.errors import InputError
from genlab.models.contracts import Editor, ImageGenerator, Inpainter
from genlab.serving.http import model_error_response
from genlab.serving.images import images_answer
from genlab.serving.schemas import MAX_SEED, ImagesResponse
from genlab.serving.settings import ServeSettings

ROUTE = "/v1/images/edits"


def edited(
    model: ImageGenerator,
    image: bytes,
    mask: bytes | None,
    n: int,
    seed: int,
    strength: float | None,
    label: int | None,
) -> torch.Tensor:
    """The n completions (or edits) of one uploaded image."""
    pixels, size = decode_image(image, model.spec.shape)
    images = pixels[None].expand(n, *pixels.shape)
    generator = torch.Generator().manual_seed(seed)
    if strength is not None:
        if mask is not None:
            raise InputError("give a mask (inpainting) or strength (image-to-image), not both")
        if not isinstance(model, Editor):
            raise InputError(f"{type(model).__name__} does not edit with strength; send a mask to inpaint")
        return model.edit(images, strength, generator, label)
    known = decode_mask(mask if mask is not None else image, size, *model.spec.shape[1:], alpha=True)
    return model.inpaint(images, known, generator, label)


def add_edits_route(app: FastAPI, model: Inpainter, settings: ServeSettings, name: str) -> None:
    lock = threading.Lock()

    def locked(*arguments: Any) -> torch.Tensor:
        with lock:
            return edited(*arguments)

    @app.post(ROUTE, response_model=ImagesResponse, responses={code: {} for code in (400, 413, 500)})
    async def edits(
        image: Annotated[UploadFile, File(description="the image to edit (PNG)")],
        mask: Annotated[UploadFile | None, File(description="PNG of the image's size: transparent = fill")] = None,
        n: Annotated[int, Form(ge=1, le=settings.max_n)] = 1,
        response_format: Annotated[Literal["b64_json", "png"], Form()] = "b64_json",
        seed: Annotated[int | None, Form(ge=0, le=MAX_SEED)] = None,
        label: Annotated[int | None, Form(ge=0, description="class to complete or edit towards")] = None,
        strength: Annotated[float | None, Form(description="image-to-image without a mask: 0 keeps, 1 redraws")] = None,
        prompt: Annotated[str, Form(description="accepted for OpenAI clients; genlab's models take no text")] = "",
    ) -> Any:
        """Inpaint (or, with `strength`, edit) the uploaded image n times."""
        seed = secrets.randbelow(2**31) if seed is None else seed
        image_bytes = await image.read()
        mask_bytes = None if mask is None else await mask.read()
        try:
            drawn = await run_in_threadpool(locked, model, image_bytes, mask_bytes, n, seed, strength, label)
        except Exception as exc:
            return model_error_response(exc)
        return await images_answer(drawn, seed, 1, response_format, name)
