"""`genlab-sample run=RUN_DIR [n=64] [out=DIR] [seed=0]`: draw images, text or whole sequences (molecules) from a
trained run, reproducibly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig
from rich.console import Console

from genlab.commands import run_command
from genlab.errors import ConfigError, check

if TYPE_CHECKING:
    from genlab.runs import Run


def write_images(run: Run, n: int, seed: int, out: Path) -> list[Path]:
    """samples.png (n samples) and the model's other pictures of a test batch (e.g. reconstructions)."""
    import torch

    from genlab.callbacks.media import save_grid

    model = run.model
    grids = {}
    if hasattr(model, "image_grids"):
        datamodule = run.datamodule
        datamodule.prepare_data()
        datamodule.setup("test")
        batch = next(iter(datamodule.test_dataloader()))[0]
        grids.update(model.image_grids(batch, torch.Generator().manual_seed(seed)))
    grids["samples"] = (model.sample(n, torch.Generator().manual_seed(seed)), math.ceil(math.sqrt(n)))
    written = []
    for name, (images, nrow) in grids.items():
        path = out / f"{name}.png"
        save_grid(images, nrow, path)
        written.append(path)
    return written


def temperature_of(run: Run, cfg: DictConfig) -> float:
    """The sampling temperature asked for, else the run's own (`model.sample_temperature`)."""
    return cfg.temperature if cfg.temperature is not None else run.model.sample_temperature


def write_texts(run: Run, cfg: DictConfig, n: int, out: Path) -> list[Path]:
    """text_000.txt, ...: the prompt and a continuation, the i-th drawn from seed + i."""
    import torch

    written = []
    for i in range(n):
        generator = torch.Generator(device=run.model.device).manual_seed(cfg.seed + i)
        text = run.model.generate_text(
            cfg.prompt, cfg.max_new_tokens, temperature_of(run, cfg), cfg.top_k, cfg.top_p, generator=generator
        )
        path = out / f"text_{i:03d}.txt"
        path.write_text(cfg.prompt + text, encoding="utf-8")
        written.append(path)
    return written


def write_sequences(run: Run, cfg: DictConfig, n: int, out: Path) -> list[Path]:
    """n whole sequences from seed, written as the data's domain writes them (molecules: .smi and a picture)."""
    import torch
    from hydra.utils import get_class

    generator = torch.Generator(device=run.model.device).manual_seed(cfg.seed)
    texts = run.model.generate_sequences(n, temperature_of(run, cfg), cfg.top_k, cfg.top_p, generator=generator)
    return get_class(run.config.data._target_).write_samples(texts, run.model.tokenizer, out)


def sample(cfg: DictConfig, overrides: list[str]) -> list[Path]:
    check(cfg.n is None or cfg.n > 0, f"n={cfg.n}: give a positive number of samples")
    check(cfg.max_new_tokens > 0, f"max_new_tokens={cfg.max_new_tokens} must be positive")
    from genlab.runs import load_run

    run = load_run(cfg.run, cfg.ckpt, device=cfg.device, overrides=overrides)
    out = Path(cfg.out) if cfg.out else run.dir / "generated"
    out.mkdir(parents=True, exist_ok=True)
    if getattr(run.model, "whole_sequences", False):
        written = write_sequences(run, cfg, cfg.n or 100, out)
    elif hasattr(run.model, "generate_text"):
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
    run_command("genlab-sample", "sample", sample)


if __name__ == "__main__":
    main()
