"""`genlab-sample run=RUN_DIR [n=64] [out=DIR] [seed=0] [label=K | labels=all] [guidance=W]`: draw images, text
or whole sequences (molecules, music) from a trained run, reproducibly; with `inpaint=IMAGES mask=MASK` or
`edit=IMAGES strength=S`, edit given images instead (docs/image-editing.md)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Gt, Le
from omegaconf import DictConfig
from rich.console import Console

from genlab.commands import run_command
from genlab.errors import ConfigError, check
from genlab.files import writable_folder, write_text_atomically
from genlab.run.layout import GENERATED_DIR
from genlab.settings import GuidanceScale, NonNegativeFloat, PositiveInt, UnitFraction

if TYPE_CHECKING:
    import torch

    from genlab.run.loading import LoadedRun


#: The types of genlab-sample's own settings (conf/sample.yaml).
SETTINGS = {
    "run": str | None,
    "ckpt": str,
    "n": PositiveInt | None,
    "min_image_size": PositiveInt,
    "out": str | None,
    "overwrite": bool,
    "seed": int,
    "device": str,
    "label": int | None,
    "labels": Literal["all"] | list[int] | None,
    "steps": PositiveInt | None,
    "sampler": str | None,
    "guidance": GuidanceScale | None,
    "prompt": str,
    "max_new_tokens": PositiveInt,
    "temperature": NonNegativeFloat | None,
    "top_k": PositiveInt | None,
    "top_p": Annotated[float, Gt(0), Le(1)] | None,
    "inpaint": str | None,
    "mask": str | None,
    "edit": str | None,
    "strength": UnitFraction | None,
}


def takes(method: Callable[..., Any], name: str) -> bool:
    """Whether `method` takes the keyword `name` (a `**options` catch-all, as the contract's default pictures
    have, takes any)."""
    parameters = inspect.signature(method).parameters
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def sampler_options(cfg: DictConfig, model: Any, methods: list[Callable[..., Any]]) -> dict[str, Any]:
    """The sampler settings given (not null; a diffusion model's steps, sampler and guidance scale, passed to the
    model's `sample` and `image_grids`), checked against the signatures of the model's `methods`: a model whose
    methods do not take one refuses it."""
    from genlab.models.contracts import SAMPLER_OPTIONS

    given = {name: cfg[name] for name in SAMPLER_OPTIONS if cfg.get(name) is not None}
    for name, value in given.items():
        check(
            all(takes(method, name) for method in methods),
            f"{name}={value} does not apply to {type(model).__name__}, whose sampling takes no {name}; leave it out",
        )
    return given


def real_batch(run: LoadedRun) -> Any:
    """A test batch (images, labels) of the run's data for the pictures that need real images (the VAE's
    reconstructions), or None with one line when the data is not here: sampling itself needs only the checkpoint."""
    from genlab.errors import DataError

    try:
        datamodule = run.datamodule
        datamodule.prepare_data()
        datamodule.setup("test")
        return next(iter(datamodule.test_dataloader()))
    except DataError as exc:
        Console(soft_wrap=True, stderr=True).print(
            f"genlab-sample: no reconstructions, the run's data is not here: {exc}"
        )
        return None


def class_request(model: Any, cfg: DictConfig) -> tuple[torch.Tensor | None, int, int]:
    """The labels asked for, the number of samples and the images per grid row: `label=K` gives n (default 64)
    samples of class K, `labels=all` (or a list of classes) one row of n (default 8) samples per class; neither
    gives None, and a conditional model spreads its samples over the classes itself."""
    import torch

    from genlab.models.contracts import conditioning_of

    label, labels = cfg.label, cfg.labels
    check(label is None or labels is None, "give label=K (one class) or labels=all (a row per class), not both")
    conditioning = conditioning_of(model)
    if labels is None:
        n = cfg.n or 64
        requested = None if label is None else conditioning.for_sampling(n, label, "cpu")
        return requested, n, math.ceil(math.sqrt(n))
    classes = conditioning.all_classes() if labels == "all" else list(labels)
    check(len(classes) > 0, "labels=[] asks for no class; give labels=all or a list of classes, e.g. labels=[0,3]")
    per_class = cfg.n or 8
    requested = torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class)
    return conditioning.for_sampling(len(requested), requested, "cpu"), len(requested), per_class


def write_images(run: LoadedRun, cfg: DictConfig, out: Path, options: dict[str, Any]) -> list[Path]:
    """samples.png (of the classes asked for, if any) and the model's other pictures of a test batch (e.g.
    reconstructions)."""
    import torch

    from genlab.callbacks.media import save_grid
    from genlab.models.contracts import Grid, image_grids_of

    model = run.model
    labels, n, nrow = class_request(model, cfg)
    batch = real_batch(run) if model.grids_use_real_images else None
    grids = dict(image_grids_of(model, batch, torch.Generator().manual_seed(cfg.seed), **options))
    generator = torch.Generator().manual_seed(cfg.seed)
    if labels is not None:
        options = {**options, "labels": labels}
    samples = model.sample(n, generator, **options)
    rows = None if cfg.labels is None else [str(k) for k in labels.view(-1, nrow)[:, 0].tolist()]
    grids["samples"] = Grid(samples, nrow, rows)
    written = []
    for name, grid in grids.items():
        path = out / f"{name}.png"
        images, nrow, rows = Grid(*grid)
        save_grid(images, nrow, path, rows, cfg.min_image_size)
        written.append(path)
    return written


def write_edits(run: LoadedRun, cfg: DictConfig, out: Path) -> list[Path]:
    """inpaint=IMAGES mask=MASK or edit=IMAGES strength=S: each image completed (edited) as NAME_inpainted.png
    (NAME_edited.png), and one picture of them all: inpainting.png (rows of masked input, completion, original) or
    editing.png (original, edited)."""
    import torch

    from genlab.callbacks.media import save_grid
    from genlab.data.image_files import read_images, read_mask
    from genlab.data.masks import masked_view
    from genlab.models.contracts import Editor, Inpainter

    model = run.model
    check(cfg.inpaint is None or cfg.edit is None, "give inpaint=IMAGES or edit=IMAGES, not both")
    check(cfg.labels is None, "labels= is for drawing samples; give label=K to complete or edit towards class K")
    inpainting = cfg.inpaint is not None
    contract, method = (Inpainter, "inpaint") if inpainting else (Editor, "edit")
    check(isinstance(model, contract), f"{type(model).__name__} does not {method} images; the diffusion model does")
    options = sampler_options(cfg, model, [getattr(model, method)])
    if cfg.label is not None:
        options["labels"] = cfg.label
    generator = torch.Generator().manual_seed(cfg.seed)
    images, names, sizes = read_images(Path(cfg.inpaint or cfg.edit).expanduser(), model.spec.shape)
    if inpainting:
        check(
            cfg.mask is not None,
            "inpaint= needs mask=: a mask image (white = keep, black = fill) or centre, bottom, boxes",
        )
        mask = read_mask(cfg.mask, sizes, model.spec.shape, len(images), generator)
        done = model.inpaint(images, mask, generator, **options).cpu()
        columns, suffix, picture = [masked_view(images, mask), done, images], "inpainted", "inpainting"
    else:
        check(cfg.strength is not None, "edit= needs strength=S in [0, 1] (0 keeps the image, 1 redraws it; try 0.5)")
        done = model.edit(images, cfg.strength, generator, **options).cpu()
        columns, suffix, picture = [images, done], "edited", "editing"
    written = []
    for name, image in zip(names, done, strict=True):
        save_grid(image[None], 1, out / f"{name}_{suffix}.png")
        written.append(out / f"{name}_{suffix}.png")
    save_grid(torch.stack(columns, 1).flatten(0, 1), len(columns), out / f"{picture}.png")
    return [*written, out / f"{picture}.png"]


def temperature_of(run: LoadedRun, cfg: DictConfig) -> float:
    """The sampling temperature asked for, else the run's own (`model.sample_temperature`)."""
    return cfg.temperature if cfg.temperature is not None else run.model.sample_temperature


def write_texts(run: LoadedRun, cfg: DictConfig, n: int, out: Path, options: dict[str, Any]) -> list[Path]:
    """text_000.txt, ...: the prompt and a continuation, the i-th drawn from seed + i (`options`: the sampler
    settings the model takes, e.g. a masked LM's steps)."""
    import torch

    written = []
    for i in range(n):
        generator = torch.Generator(device=run.model.device).manual_seed(cfg.seed + i)
        text = run.model.generate_text(
            cfg.prompt,
            cfg.max_new_tokens,
            temperature_of(run, cfg),
            cfg.top_k,
            cfg.top_p,
            generator=generator,
            **options,
        )
        path = out / f"text_{i:03d}.txt"
        write_text_atomically(path, cfg.prompt + text)
        written.append(path)
    return written


def output_folder(cfg: DictConfig, run_dir: Path) -> Path:
    """Where the files go: `out`, else RUN/generated; earlier output there is kept unless `overwrite=true`."""
    out = writable_folder(Path(cfg.out).expanduser() if cfg.out else run_dir / GENERATED_DIR)
    earlier = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    check(
        cfg.overwrite or not earlier,
        f"{out} already holds earlier samples ({', '.join(earlier[:3])}{', ...' if len(earlier) > 3 else ''}); "
        f"give another folder with out=DIR, or overwrite=true to replace them",
    )
    return out


def write_sequences(run: LoadedRun, cfg: DictConfig, n: int, out: Path, options: dict[str, Any]) -> list[Path]:
    """n whole sequences from seed, written as the data's domain writes them (molecules: .smi and a picture)."""
    import torch
    from hydra.utils import get_class

    generator = torch.Generator(device=run.model.device).manual_seed(cfg.seed)
    texts = run.model.generate_sequences(
        n, temperature_of(run, cfg), cfg.top_k, cfg.top_p, generator=generator, **options
    )
    return get_class(run.config.data._target_).write_samples(texts, run.model.tokenizer, out)


def sample(cfg: DictConfig, overrides: list[str]) -> list[Path]:
    from genlab.models.contracts import ImageGenerator, SequenceGenerator
    from genlab.run.loading import load_run

    run = load_run(cfg.run, cfg.ckpt, device=cfg.device, overrides=overrides)
    model = run.model
    editing = cfg.inpaint is not None or cfg.edit is not None
    check(editing or (cfg.mask is None and cfg.strength is None), "mask= goes with inpaint=, strength= with edit=")
    if editing:
        written = write_edits(run, cfg, output_folder(cfg, run.dir))
    elif isinstance(model, SequenceGenerator):
        check(cfg.label is None and cfg.labels is None, "label= and labels= are for image models")
        options = sampler_options(cfg, model, [model.generate_text, model.generate_sequences])
        out = output_folder(cfg, run.dir)
        if model.whole_sequences:
            written = write_sequences(run, cfg, cfg.n or 100, out, options)
        else:
            written = write_texts(run, cfg, cfg.n or 1, out, options)
    elif isinstance(model, ImageGenerator):
        options = sampler_options(cfg, model, [model.sample, model.image_grids])
        written = write_images(run, cfg, output_folder(cfg, run.dir), options)
    else:
        raise ConfigError(
            f"{type(model).__name__} is neither an ImageGenerator nor a SequenceGenerator "
            f"(genlab.models.contracts); nothing to draw"
        )
    console = Console(soft_wrap=True)
    for path in written:
        console.print(f"wrote {path}")
    return written


def main() -> None:
    """The `genlab-sample` console script."""
    run_command("genlab-sample", "sample", SETTINGS, sample)


if __name__ == "__main__":
    main()
