"""`genlab-sample run=RUN_DIR [n=64] [out=DIR] [seed=0]`: draw images or text from a trained run, reproducibly."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig
from rich.console import Console

from genlab.commands import run_command
from genlab.errors import ConfigError, check

if TYPE_CHECKING:
    from genlab.runs import Run


#: Settings of a model's sampler (e.g. a diffusion model's), passed to the model's `sample` and `image_grids` when
#: given; a model whose methods do not take one refuses it.
SAMPLER_OPTIONS = ("steps", "sampler")


def sampler_options(cfg: DictConfig, model: Any, methods: list[Callable[..., Any]]) -> dict[str, Any]:
    """The sampler settings given (not null), checked against the signatures of the model's `methods`."""
    given = {name: cfg[name] for name in SAMPLER_OPTIONS if cfg.get(name) is not None}
    for name, value in given.items():
        check(
            all(name in inspect.signature(method).parameters for method in methods),
            f"{name}={value} does not apply to {type(model).__name__}, whose sampling takes no {name}; leave it out",
        )
    return given


def write_images(run: Run, n: int, seed: int, out: Path, options: dict[str, Any]) -> list[Path]:
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
        grids.update(model.image_grids(batch, torch.Generator().manual_seed(seed), **options))
    grids["samples"] = (model.sample(n, torch.Generator().manual_seed(seed), **options), math.ceil(math.sqrt(n)))
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
    model = run.model
    if hasattr(model, "generate_text"):
        sampler_options(cfg, model, [model.generate_text])
        written = write_texts(run, cfg, cfg.n or 1, out)
    elif hasattr(model, "sample"):
        methods = [model.sample, *([model.image_grids] if hasattr(model, "image_grids") else [])]
        written = write_images(run, cfg.n or 64, cfg.seed, out, sampler_options(cfg, model, methods))
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
