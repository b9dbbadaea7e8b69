"""Benchmark: genlab's GPT against a transformers GPT-2 of the same size, built from a config through model/net=hf.

Both train with nanoGPT's CPU recipe for character-level Shakespeare (experiment=gpt_shakespeare_cpu: block 64,
batch 12, 4 layers, 4 heads, n_embd 128, dropout 0; AdamW lr 1e-3, warm-up then cosine, gradients clipped to 1) for
the same steps from the same seed, on the same char tokens, through genlab's Trainer. genlab's GPT runs with biases
(GPT-2 always has them) and the GPT-2 with exact GELU, 64 positions and no dropout (its default is 0.1), so the two
nets have the same parameters and compute the same function; only their initialisation draws and kernels differ.

Each net trains `--repeats` times, in alternating order (A B B A), so that the load of a shared machine hits both
alike. Reported per run: median (and mean) milliseconds per training step (validation excluded) and the final
validation loss and bits per character on genlab's fixed validation windows. They should agree within noise.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/hf_vs_gpt_shakespeare.py --steps 300
"""

from __future__ import annotations

import math
import time
from typing import Any

import harness

from genlab.run.loading import build_model

MILLISECONDS = harness.Unit(key="ms", label="ms/step", digits=1)
#: The GPT-2 config equal to the experiment's genlab GPT (its vocabulary follows the data).
GPT2 = (
    "{model_type: gpt2, n_layer: 4, n_head: 4, n_embd: 128, n_positions: 64, activation_function: gelu,"
    " resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"  # GPT-2's default dropout is 0.1; the recipe has none
)
CONTENDERS = {
    "genlab GPT": ["model.net.bias=true"],
    "HF GPT-2": [
        "model/net=hf",
        *(f"~model.net.{key}" for key in ("n_layer", "n_head", "n_embd", "dropout", "bias")),
        f"model.net.config={GPT2}",
        "data.tokenizer=char",
    ],
}


def train_one(overrides: list[str], steps: int, seed: int) -> dict[str, Any]:
    with harness.genlab_setup(
        ["experiment=gpt_shakespeare_cpu", f"trainer.max_steps={steps}", *overrides], seed, "none"
    ) as (cfg, datamodule):
        cfg.trainer.max_epochs = max(int(cfg.trainer.max_epochs), math.ceil(steps / int(cfg.data.steps_per_epoch)))
        model = build_model(cfg, datamodule.spec)
        timer = harness.TrainStepTimer()
        trainer = harness.build_trainer(cfg, timer, model, datamodule)
        trainer.fit(model, datamodule=datamodule)
        val = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    ms = [s * 1000 for s in timer.step_seconds[5:]]  # the first steps pay first-use costs
    return {
        "parameters": sum(p.numel() for p in model.net.parameters()),
        **MILLISECONDS.stats(ms),
        "val_loss": float(val["val/loss"]),
        "val_bpc": float(val["val/bpc"]),
    }


def run(steps: int, seed: int, repeats: int) -> dict[str, Any]:
    """Each contender `repeats` times, in the order A B B A A B ..., so a change of the machine's load over the
    benchmark hits both alike; the table shows each run."""
    start = time.perf_counter()
    names = list(CONTENDERS)
    order = [name for i in range(repeats) for name in (names if i % 2 == 0 else names[::-1])]
    results = [{"net": name, **train_one(CONTENDERS[name], steps, seed)} for name in order]
    return {"steps": steps, "seed": seed, "runs": results, "wall_seconds": time.perf_counter() - start}


def report(numbers: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"tiny Shakespeare, char, {numbers['steps']} steps, seed {numbers['seed']}")
    for column in ("net", "parameters", "median ms/step", "mean ms/step", "val loss", "val bpc"):
        table.add_column(column, justify="left" if column == "net" else "right")
    for r in numbers["runs"]:
        name = r["net"]
        cells = [f"{r['parameters']:,}", f"{r['median_ms']:.1f}", f"{r['mean_ms']:.1f}"]
        table.add_row(name, *cells, f"{r['val_loss']:.4f}", f"{r['val_bpc']:.4f}")
    harness.console().print(table)
    harness.console().print(f"total wall time: {numbers['wall_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    repeats = {"--repeats": {"type": int, "default": 2, "help": "runs of each net, in alternating order"}}
    args = harness.parse_args(__doc__, "--steps", 300, argv, extra=repeats)
    harness.execute(args, lambda: run(args.steps, args.seed, args.repeats), report)


if __name__ == "__main__":
    main()
