"""`genlab-sample run=RUN_DIR [n=64] [out=DIR] [seed=0]`: draw images or text from a trained run, reproducibly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Gt, Le
from omegaconf import DictConfig
from rich.console import Console

from genlab.commands import run_command
from genlab.errors import ConfigError, check
from genlab.files import writable_folder
from genlab.settings import NonNegativeFloat, PositiveInt

if TYPE_CHECKING:
    from genlab.runs import Run


#: The types of genlab-sample's own settings (conf/sample.yaml).
SETTINGS = {
    "run": str | None,
    "ckpt": str,
    "n": PositiveInt | None,
    "out": str | None,
    "overwrite": bool,
    "seed": int,
    "device": str,
    "prompt": str,
    "max_new_tokens": PositiveInt,
    "temperature": NonNegativeFloat,
    "top_k": PositiveInt | None,
    "top_p": Annotated[float, Gt(0), Le(1)] | None,
}


def real_batch(run: Run) -> Any:
    """A test batch of the run's data for the pictures that need real images (the VAE's reconstructions), or None
    with one line when the data is not here: sampling itself needs only the checkpoint."""
    from genlab.errors import DataError

    try:
        datamodule = run.datamodule
        datamodule.prepare_data()
        datamodule.setup("test")
        return next(iter(datamodule.test_dataloader()))[0]
    except DataError as exc:
        Console(soft_wrap=True, stderr=True).print(
            f"genlab-sample: no reconstructions, the run's data is not here: {exc}"
        )
        return None


def write_images(run: Run, n: int, seed: int, out: Path) -> list[Path]:
    """samples.png (n samples) and the model's other pictures (e.g. reconstructions of a test batch)."""
    import torch

    from genlab.callbacks.media import save_grid

    model = run.model
    grids = {}
    if hasattr(model, "image_grids"):
        batch = real_batch(run) if getattr(model, "grids_use_real_images", False) else None
        grids.update(model.image_grids(batch, torch.Generator().manual_seed(seed)))
    grids["samples"] = (model.sample(n, torch.Generator().manual_seed(seed)), math.ceil(math.sqrt(n)))
    written = []
    for name, (images, nrow) in grids.items():
        path = out / f"{name}.png"
        save_grid(images, nrow, path)
        written.append(path)
    return written


def write_texts(run: Run, cfg: DictConfig, n: int, out: Path) -> list[Path]:
    """text_000.txt, ...: the prompt and a continuation, the i-th drawn from seed + i."""
    import torch

    written = []
    for i in range(n):
        generator = torch.Generator(device=run.model.device).manual_seed(cfg.seed + i)
        text = run.model.generate_text(
            cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, generator=generator
        )
        path = out / f"text_{i:03d}.txt"
        path.write_text(cfg.prompt + text, encoding="utf-8")
        written.append(path)
    return written


def output_folder(cfg: DictConfig, run_dir: Path) -> Path:
    """Where the files go: `out`, else RUN/generated; earlier output there is kept unless `overwrite=true`."""
    out = writable_folder(Path(cfg.out).expanduser() if cfg.out else run_dir / "generated")
    earlier = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    check(
        cfg.overwrite or not earlier,
        f"{out} already holds earlier samples ({', '.join(earlier[:3])}{', ...' if len(earlier) > 3 else ''}); "
        f"give another folder with out=DIR, or overwrite=true to replace them",
    )
    return out


def sample(cfg: DictConfig, overrides: list[str]) -> list[Path]:
    from genlab.runs import load_run

    run = load_run(cfg.run, cfg.ckpt, device=cfg.device, overrides=overrides)
    out = output_folder(cfg, run.dir)
    if hasattr(run.model, "generate_text"):
        written = write_texts(run, cfg, cfg.n or 1, out)
    elif hasattr(run.model, "sample"):
        written = write_images(run, cfg.n or 64, cfg.seed, out)
    else:
        raise ConfigError(f"{type(run.model).__name__} has neither sample() nor generate_text(); nothing to draw")
    console = Console(soft_wrap=True)
    for path in written:
        console.print(f"wrote {path}")
    return written


def main() -> None:
    """The `genlab-sample` console script."""
    run_command("genlab-sample", "sample", SETTINGS, sample)


if __name__ == "__main__":
    main()
