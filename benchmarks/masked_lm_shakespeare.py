"""Benchmark: the causal GPT against masked LMs (MDLM, BERT's MLM) on character-level Shakespeare, same net size,
same steps.

Each is one genlab-train run of the GPT's CPU recipe (experiment=gpt_shakespeare_cpu; experiment=mdlm_shakespeare_cpu,
with model.objective=mlm for BERT), `--steps` steps with the cosine decay ending there, from the same seed. Then, from
each run's last checkpoint:

- val bpc: the GPT's val/bpc, MDLM's val/bpc_bound (an upper bound on its bits per character); MLM has none (its
  objective is not a likelihood), its masked-token accuracy is shown instead.
- sample quality: `--samples` texts of 256 characters from a newline (temperature 1), scored by the fraction of
  their words (runs of letters) that occur in the training text.
- sampling time per 256 characters: the GPT with its KV cache, the masked LMs with `--sample-steps` unmasking steps
  (all 256 positions do not fit the 64-character context, so they generate a window at a time); and the masked
  LM's time at each of --speed-steps (tokens per second).

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/masked_lm_shakespeare.py --steps 500
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import torch
from rich.table import Table

from genlab.run.loading import load_run

CONTENDERS = {
    "GPT": ["experiment=gpt_shakespeare_cpu"],
    "MDLM": ["experiment=mdlm_shakespeare_cpu"],
    "MLM": ["experiment=mdlm_shakespeare_cpu", "model.objective=mlm"],
}
METRICS = ("val/loss", "val/bpc", "val/bpc_bound", "val/masked_accuracy")
LENGTH = 256
WORD = re.compile(r"[A-Za-z]+")


def known_word_fraction(texts: list[str], vocabulary: set[str]) -> float:
    """The fraction of the texts' words that are words of the training text."""
    words = [word for text in texts for word in WORD.findall(text)]
    return sum(word in vocabulary for word in words) / max(1, len(words))


def seconds_per_text(model: Any, samples: int, **options: Any) -> tuple[list[str], float]:
    """`samples` texts of LENGTH tokens from a newline, and the mean seconds each took."""
    texts, start = [], time.perf_counter()
    for i in range(samples):
        generator = torch.Generator().manual_seed(i)
        texts.append(model.generate_text("\n", LENGTH, 1.0, generator=generator, **options))
    return texts, (time.perf_counter() - start) / samples


def run(steps: int, seed: int, samples: int, sample_steps: int, speed_steps: list[int]) -> dict[str, Any]:
    numbers: dict[str, Any] = {"steps": steps, "samples": samples, "sample_steps": sample_steps}
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        for name, overrides in CONTENDERS.items():
            schedule = [
                f"trainer.max_steps={steps}",
                f"model.scheduler.decay_steps={steps}",
                f"model.scheduler.warmup_steps={min(100, steps // 5)}",
            ]
            record = harness.train_run(Path(tmp) / name, [*overrides, *schedule], seed, None, METRICS)
            loaded = load_run(Path(tmp) / name, "last")
            model = loaded.model.eval()
            datamodule = loaded.datamodule
            datamodule.prepare_data()
            datamodule.setup("fit")
            vocabulary = set(WORD.findall(datamodule.tokenizer.decode(datamodule.tokens["train"].tolist())))
            options = {} if name == "GPT" else {"steps": sample_steps}
            texts, seconds = seconds_per_text(model, samples, **options)
            record.update(known_words=known_word_fraction(texts, vocabulary), seconds_per_256=seconds, text=texts[0])
            if name == "MDLM":
                record["speed"] = {n: LENGTH / seconds_per_text(model, 1, steps=n)[1] for n in speed_steps}
            numbers[name] = record
    return numbers


def report(numbers: dict[str, Any]) -> None:
    out = harness.console()
    table = Table(title=f"tiny Shakespeare, {numbers['steps']} steps, {numbers['samples']} samples of {LENGTH} chars")
    for column in ("model", "val bpc", "masked acc.", "known words", "s / 256 chars"):
        table.add_column(column)
    for name in CONTENDERS:
        r = numbers[name]
        bpc = r["val/bpc"] if r["val/bpc"] is not None else r["val/bpc_bound"]
        shown = "-" if bpc is None else f"{bpc:.3f}" + (" (bound)" if r["val/bpc_bound"] is not None else "")
        accuracy = "-" if r["val/masked_accuracy"] is None else f"{r['val/masked_accuracy']:.3f}"
        table.add_row(name, shown, accuracy, f"{r['known_words']:.3f}", f"{r['seconds_per_256']:.3f}")
    out.print(table)
    for steps, rate in numbers["MDLM"]["speed"].items():
        out.print(f"MDLM, {steps} unmasking steps: {rate:.0f} tokens/s")
    for name in CONTENDERS:
        out.print(f"--- {name} sample ---\n{numbers[name]['text'][:200]}")


def main(argv: list[str] | None = None) -> None:
    extra = {
        "--samples": {"type": int, "default": 8, "help": "texts per model for the sample quality"},
        "--sample-steps": {"type": int, "default": 64, "help": "the masked LMs' unmasking steps per window"},
        "--speed-steps": {"type": int, "nargs": "+", "default": [64, 256, 1024], "help": "MDLM steps to time"},
    }
    args = harness.parse_args(__doc__, "--steps", 500, argv, extra=extra)
    harness.execute(args, lambda: run(args.steps, args.seed, args.samples, args.sample_steps, args.speed_steps), report)


if __name__ == "__main__":
    main()
