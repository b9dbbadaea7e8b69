"""`genlab-sample run=RUN_DIR [n=64] [out=DIR] [seed=0] [label=K | labels=all]`: draw images or text from a trained
run, reproducibly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig
from rich.console import Console

from genlab.commands import run_command
from genlab.errors import ConfigError, check

if TYPE_CHECKING:
    import torch

    from genlab.runs import Run


def class_request(model: Any, cfg: DictConfig) -> tuple[torch.Tensor | None, int, int]:
    """The labels asked for, the number of samples and the images per grid row: `label=K` gives n (default 64)
    samples of class K, `labels=all` (or a list of classes) one row of n (default 8) samples per class; neither
    gives None, and a conditional model spreads its samples over the classes itself."""
    import torch

    from genlab.models.conditioning import conditioning_of

    label, labels = cfg.label, cfg.labels
    check(label is None or labels is None, "give label=K (one class) or labels=all (a row per class), not both")
    conditioning = conditioning_of(model)
    if labels is None:
        n = cfg.n or 64
        check(label is None or isinstance(label, int), f"label={label}: give a class number, e.g. label=3")
        requested = None if label is None else conditioning.for_sampling(n, label, "cpu")
        return requested, n, math.ceil(math.sqrt(n))
    classes = conditioning.all_classes() if labels == "all" else labels
    check(
        isinstance(classes, Sequence) and len(classes) > 0 and all(isinstance(c, int) for c in classes),
        f"labels={labels}: give labels=all or a list of class numbers, e.g. labels=[0,3]",
    )
    per_class = cfg.n or 8
    requested = torch.tensor(list(classes), dtype=torch.long).repeat_interleave(per_class)
    return conditioning.for_sampling(len(requested), requested, "cpu"), len(requested), per_class


def write_images(run: Run, cfg: DictConfig, out: Path) -> list[Path]:
    """samples.png (of the classes asked for, if any) and the model's other pictures of a test batch (e.g.
    reconstructions)."""
    import torch

    from genlab.callbacks.media import save_grid
    from genlab.models.conditioning import image_grids_of

    model = run.model
    labels, n, nrow = class_request(model, cfg)
    grids = {}
    if hasattr(model, "image_grids"):
        datamodule = run.datamodule
        datamodule.prepare_data()
        datamodule.setup("test")
        batch = next(iter(datamodule.test_dataloader()))
        grids.update(image_grids_of(model, batch, torch.Generator().manual_seed(cfg.seed)))
    generator = torch.Generator().manual_seed(cfg.seed)
    samples = model.sample(n, generator) if labels is None else model.sample(n, generator, labels=labels)
    grids["samples"] = (samples, nrow)
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


def sample(cfg: DictConfig, overrides: list[str]) -> list[Path]:
    check(cfg.n is None or cfg.n > 0, f"n={cfg.n}: give a positive number of samples")
    check(cfg.max_new_tokens > 0, f"max_new_tokens={cfg.max_new_tokens} must be positive")
    from genlab.runs import load_run

    run = load_run(cfg.run, cfg.ckpt, device=cfg.device, overrides=overrides)
    out = Path(cfg.out) if cfg.out else run.dir / "generated"
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(run.model, "generate_text"):
        check(cfg.label is None and cfg.labels is None, "label= and labels= are for class-conditional image models")
        written = write_texts(run, cfg, cfg.n or 1, out)
    elif hasattr(run.model, "sample"):
        written = write_images(run, cfg, out)
    else:
        raise ConfigError(f"{type(run.model).__name__} has neither sample() nor generate_text(); nothing to draw")
    console = Console(soft_wrap=True)
    for path in written:
        console.print(f"wrote {path}")
    return written


def main() -> None:
    """The `genlab-sample` console script."""
    run_command("genlab-sample", "sample", sample)


if __name__ == "__main__":
    main()
