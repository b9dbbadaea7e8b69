"""Image editing: inpainting (every image family keeps the known pixels; RePaint's last step reaches them exactly)
and SDEdit's image-to-image; the standard masks and the refusals of masks, images and strengths that do not fit."""

from __future__ import annotations

import base64
import functools
import io
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_env
from inprocess import Result, call_entrypoint
from omegaconf import open_dict
from PIL import Image
from test_diffusion import TINY_DIFFUSION

from genlab.data.digits import DigitsDataModule
from genlab.data.image_files import decode_mask, read_images, read_mask
from genlab.data.masks import STANDARD_MASKS, bottom_half, centre_square, check_strength, standard_mask
from genlab.errors import GenlabError, InputError
from genlab.models.contracts import Editor, Inpainter
from genlab.models.diffusion import Diffusion
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule
from genlab.models.diffusion_samplers import DDIM, Euler
from genlab.models.inpainting import repaint, repaint_schedule, sdedit
from genlab.nets.unet import UNet
from genlab.run.loading import build_model

SPEC = DigitsDataModule().spec
IMAGES = torch.rand(3, *SPEC.shape, generator=torch.Generator().manual_seed(0))
MASK = centre_square(1, 8, 8)


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def tiny_diffusion(objective: str = "eps", **kwargs) -> Diffusion:
    net = functools.partial(UNet, channels=8, num_res_blocks=1)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
    with torch.random.fork_rng():  # the same init whatever ran before in this worker
        torch.manual_seed(0)
        settings = {"objective": objective, "timesteps": 20, "sample_steps": 4, "ema_decay": 0.0}
        model = Diffusion(SPEC, net, optimizer, **settings, **kwargs)
    with torch.no_grad():  # an untrained UNet's zero output layer would predict the same for every label
        for parameter in model.net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=seeded()))
    return model.eval()


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_latent_families_keep_the_known_pixels_and_fill_the_rest(compose_config, name: str) -> None:
    cfg = compose_config(f"model={name}", "data=digits")
    model = build_model(cfg, SPEC).eval()
    options = {"steps": 3}
    out = model.inpaint(IMAGES, MASK, seeded(), **options)
    known = MASK.expand_as(IMAGES).bool()
    assert torch.equal(out[known], IMAGES[known])
    assert not torch.equal(out[~known], IMAGES[~known])
    assert torch.equal(out, model.inpaint(IMAGES, MASK, seeded(), **options))  # a seed fixes the completion
    assert isinstance(model, Inpainter) and not isinstance(model, Editor)


@pytest.mark.parametrize("objective", ["eps", "flow"])
def test_diffusion_inpaints_and_edits_with_its_sampler(objective: str) -> None:
    model = tiny_diffusion(objective).eval()
    out = model.inpaint(IMAGES, bottom_half(3, 8, 8), seeded(), jump_length=2, resamplings=2)
    known = bottom_half(3, 8, 8).bool().expand_as(IMAGES)
    assert torch.equal(out[known], IMAGES[known]) and out.shape == IMAGES.shape
    assert torch.equal(model.edit(IMAGES, 0.0, seeded()), IMAGES)
    edited = model.edit(IMAGES, 0.5, seeded())
    assert edited.shape == IMAGES.shape and edited.min() >= 0 and edited.max() <= 1
    assert torch.equal(edited, model.edit(IMAGES, 0.5, seeded()))


@pytest.mark.parametrize("path", [NoiseSchedule("linear", 20), LinearPath()], ids=["ddpm", "flow"])
def test_repaint_keeps_the_known_pixels_exactly_and_a_model_that_knows_the_data_completes_it(path) -> None:
    """Whatever the denoiser says, the known region after the last reverse step is the original itself; a denoiser
    that knows the data (one pattern) fills the rest with the pattern."""
    sampler = Euler(path) if isinstance(path, LinearPath) else DDIM(path, eta=1.0)
    known = IMAGES * 2 - 1

    def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(x), x  # a poor denoiser: x_0 = 0 everywhere

    x = repaint(path, sampler.step, denoise, known, MASK, 4, seeded(), jump_length=2, resamplings=3)
    assert torch.equal(x[MASK.expand_as(x).bool()], known[MASK.expand_as(known).bool()])
    assert torch.equal(sdedit(path, sampler.step, denoise, known, 0.0, 4, seeded()), known)  # strength 0: the image

    pattern = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).expand_as(known)  # what a model that knows the data draws

    def oracle(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = path.scalars(t)
        return pattern, (x - a * pattern) / s

    completed = repaint(path, sampler.step, oracle, torch.where(MASK.bool(), pattern, known), MASK, 4, seeded(), 2, 2)
    assert torch.allclose(completed, pattern, atol=1e-5)


def test_repaints_schedule_goes_back_up_each_jump_resamplings_minus_one_times() -> None:
    assert repaint_schedule(4, 2, 1) == [0, 1, 2, 3, 4]
    assert repaint_schedule(4, 2, 2) == [0, 1, 2, 1, 0, 1, 2, 3, 4]  # the last stretch is not resampled
    visits = repaint_schedule(10, 5, 3)
    assert visits[-1] == 10 and sum(b > a for a, b in pairwise(visits)) == 10 + 2 * 5


def test_the_standard_masks() -> None:
    assert set(STANDARD_MASKS) == {"centre", "bottom", "boxes"}
    assert centre_square(1, 8, 8).mean() == 0.75 and bottom_half(2, 8, 8)[:, :, :4].all()
    boxes = standard_mask("boxes", 4, 28, 28, seeded())
    assert boxes.shape == (4, 1, 28, 28) and 0 < boxes.mean() < 1
    assert torch.equal(boxes, standard_mask("boxes", 4, 28, 28, seeded()))


@pytest.mark.parametrize(
    ("mask", "line"),
    [
        (torch.ones(1, 1, 7, 7), "the mask is 7x7 pixels and the images 8x8"),
        (torch.ones(2, 1, 8, 8), "give (N or 1, 1 or 1, 8, 8)"),
        (torch.ones(1, 1, 8, 8), "nothing to fill"),
        (torch.zeros(1, 1, 8, 8), "nothing is known"),
        (torch.full((1, 1, 8, 8), 0.5), "values other than 0 and 1"),
    ],
)
def test_masks_that_do_not_fit_are_one_line(mask: torch.Tensor, line: str) -> None:
    with pytest.raises(InputError, match=line.replace("(", r"\(").replace(")", r"\)")):
        tiny_diffusion().inpaint(IMAGES, mask)


def test_strengths_outside_the_unit_interval_and_misfit_images_are_one_line() -> None:
    model = tiny_diffusion()
    for strength in (-0.1, 1.5):
        with pytest.raises(InputError, match=r"outside \[0, 1\]"):
            model.edit(IMAGES, strength)
    assert check_strength(1) == 1.0
    with pytest.raises(InputError, match="this model edits"):
        model.edit(torch.rand(2, 3, 8, 8), 0.5)
    with pytest.raises(GenlabError, match="unconditional"):
        model.inpaint(IMAGES, MASK, labels=3)


def test_a_conditional_model_is_steered_by_labels_and_guidance(compose_config) -> None:
    model = tiny_diffusion(conditional=True, guidance=1.0).eval()
    plain = model.edit(IMAGES, 0.75, seeded())
    assert not torch.equal(plain, model.edit(IMAGES, 0.75, seeded(), labels=8, guidance=3.0))
    cfg = compose_config("model=vae", "data=digits")
    with open_dict(cfg):
        cfg.model.conditional = True
    vae = build_model(cfg, SPEC).eval()
    with pytest.raises(InputError, match="give the images' labels"):
        vae.inpaint(IMAGES, MASK)
    assert vae.inpaint(IMAGES, MASK, labels=[1, 2, 3], steps=2).shape == IMAGES.shape


# -- through genlab-train and genlab-sample --------------------------------------------------------------------------


def png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    Image.fromarray(pixels.astype(np.uint8), mode).save(path)
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder with a tiny conditional diffusion run on the digits (run/), two 8x8 digits to edit (inputs/) and
    mask files."""
    root = tmp_path_factory.mktemp("editing")
    env = train_env(root / "outputs")
    trained = call_entrypoint(
        "genlab-train",
        [
            *TINY_DIFFUSION,
            "trainer.max_epochs=1",
            "model.conditional=true",
            "callbacks.inpainting.enabled=true",
            "callbacks.inpainting.num_images=16",
            "callbacks.inpainting.masks=[centre]",
            "callbacks.inpainting.options={steps: 2, resamplings: 2, jump_length: 1}",
            f"hydra.run.dir={root / 'run'}",
        ],
        cwd=root,
        env=env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (root / "inputs").mkdir()
    digits = DigitsDataModule()
    digits.setup("test")
    for i, (image, _) in enumerate(list(digits.test_dataloader().dataset)[:2]):
        png(root / "inputs" / f"digit{i}.png", image[0].numpy() * 255)
    png(root / "mask.png", np.where(np.arange(8)[:, None] < 4, 255, 0).repeat(8, 1))
    png(root / "small_mask.png", np.full((4, 4), 255))
    (root / "notes.png").write_text("not a picture")
    return root


def test_the_inpainting_metrics_score_the_test_images_when_enabled(scratch: Path) -> None:
    metrics = json.loads((scratch / "run" / "metrics.json").read_text())
    assert 0 < metrics["test/inpaint_centre_mse"] < 1 and 0 <= metrics["test/inpaint_centre_label_acc"] <= 1
    assert metrics["test/inpaint_centre_fid"] > 0 and metrics["test/inpaint_centre_seconds"] > 0
    assert (scratch / "run" / "samples" / "inpainting_centre.png").is_file()


def sample(root: Path, *arguments: str) -> Result:
    return call_entrypoint("genlab-sample", [f"run={root / 'run'}", *arguments], cwd=root, env=train_env(root))


def test_genlab_sample_inpaints_and_edits_a_folder_of_images(scratch: Path) -> None:
    inpainted = sample(scratch, f"inpaint={scratch / 'inputs'}", f"mask={scratch / 'mask.png'}", "steps=3")
    assert inpainted.returncode == 0, inpainted.stderr[-3000:]
    generated = scratch / "run" / "generated"
    assert sorted(p.name for p in generated.iterdir()) == [
        "digit0_inpainted.png",
        "digit1_inpainted.png",
        "inpainting.png",
    ]
    original = np.asarray(Image.open(scratch / "inputs" / "digit0.png"))
    completed = np.asarray(Image.open(generated / "digit0_inpainted.png").convert("L"))  # one image: no grid border
    assert np.array_equal(completed[:4], original[:4])  # the known top half, to the byte
    edited = sample(scratch, f"edit={scratch / 'inputs' / 'digit1.png'}", "strength=0.6", "label=8", "out=edits")
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert sorted(p.name for p in (scratch / "edits").iterdir()) == ["digit1_edited.png", "editing.png"]


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["inpaint=inputs", "mask=small_mask.png"], "the mask is 4x4 pixels and the image 8x8"),
        (["inpaint=notes.png", "mask=centre"], "is not an image genlab can read"),
        (["edit=inputs", "strength=1.5"], "strength"),
        (["strength=0.5"], "strength= with edit="),
    ],
)
def test_bad_editing_requests_are_one_line(scratch: Path, arguments: list[str], line: str) -> None:
    process = sample(scratch, *arguments, "out=refused")
    assert process.returncode == 2, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    (message,) = [text for text in process.stderr.splitlines() if text.strip()]
    assert message.startswith("genlab-sample: error: ") and line in message, message


def test_files_and_mask_names_that_do_not_fit_are_one_line(scratch: Path) -> None:
    with pytest.raises(InputError, match="mask='middle' is not a standard mask"):
        read_mask("middle", {(8, 8)}, SPEC.shape, 1)
    with pytest.raises(InputError, match="the images have 2 sizes and one mask file fits one"):
        read_mask(str(scratch / "mask.png"), {(8, 8), (9, 9)}, SPEC.shape, 2)
    with pytest.raises(InputError, match="the mask has no transparency"):
        decode_mask(scratch / "mask.png", (8, 8), 8, 8, alpha=True)
    with pytest.raises(InputError, match="holds no image"):
        read_images(scratch / "run" / "checkpoints", SPEC.shape)


def test_the_server_inpaints_an_upload_and_answers_a_bad_one_with_a_400(scratch: Path) -> None:
    from fastapi.testclient import TestClient

    from genlab.run.loading import load_run
    from genlab.serving.app import create_app
    from genlab.serving.settings import ServeSettings

    digit = np.asarray(Image.open(scratch / "inputs" / "digit0.png"))
    mask = io.BytesIO()
    alpha = np.where(np.arange(8)[:, None] < 4, 255, 0).repeat(8, 1)  # OpenAI's way: transparent = fill
    Image.fromarray(np.stack([digit] * 3 + [alpha], -1).astype(np.uint8), "RGBA").save(mask, "png")
    upload = {"image": ("digit.png", (scratch / "inputs" / "digit0.png").read_bytes(), "image/png")}
    with TestClient(create_app(load_run(scratch / "run"), ServeSettings(max_n=4))) as client:
        answer = client.post(
            "/v1/images/edits",
            files={**upload, "mask": ("mask.png", mask.getvalue(), "image/png")},
            data={"n": "2", "seed": "3", "prompt": "a digit"},
        )
        assert answer.status_code == 200, answer.text
        (first, second) = [base64.b64decode(item["b64_json"]) for item in answer.json()["data"]]
        completed = np.asarray(Image.open(io.BytesIO(first)).convert("L"))
        assert np.array_equal(completed[:4], digit[:4])  # the opaque, known top half
        assert first != second  # n completions, each its own draw
        assert client.post("/v1/images/edits", files=upload, data={"n": "5"}).status_code == 400  # over max_n
        refused = client.post("/v1/images/edits", files=upload, data={"strength": "2"})
        assert refused.status_code == 400 and "outside [0, 1]" in refused.json()["error"]["message"]
