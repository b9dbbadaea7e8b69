"""Benchmark: genlab's GPT training (experiment=gpt_shakespeare_cpu) against a plain PyTorch loop.

Both train genlab's `GPT` net with nanoGPT's CPU recipe for character-level Shakespeare (block 64, batch 12, 4 layers,
4 heads, n_embd 128, dropout 0, no bias; AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices only;
warm-up 100 steps then cosine to 1e-4 at step 2000; gradients clipped to norm 1) in one process, for the same number
of steps from the same seed and initial weights, on the same training tokens.

- genlab: `TransformerLM` + `ShakespeareDataModule` through a Lightning Trainer built from the composed config, as
  `genlab.train` builds it (minus progress bar, checkpoints, text samples and, without a logger, the LR monitor).
- plain: the textbook loop (draw 12 random windows of 65 tokens, forward, backward, clip, AdamW step, LambdaLR step).

Reported: milliseconds per training iteration (validation excluded; mean, median, min), their ratio genlab / plain
(the target applies to the median, which a few disturbed steps cannot move), and the final validation loss of both
on genlab's validation windows (20 fixed, seeded batches of 12 windows from the last 10% of the text; nats per
token, weighted by tokens). nanoGPT reports val loss 1.88 after 2000 iterations.

By default the two alternate in chunks of `--chunk` steps (the plain loop runs a chunk right after each chunk of
genlab steps, with its own random stream), so load from other processes on the machine hits both alike;
`--schedule sequential` trains genlab fully, then the plain loop.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/gpt_shakespeare_cpu.py --steps 2000
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import harness
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from genlab.data.text import ShakespeareDataModule
from genlab.models.lm import TransformerLM
from genlab.models.schedules import warmup_cosine
from genlab.nets.transformer import GPT
from genlab.run.loading import build_model

RATIO_TARGET = 1.10
VAL_LOSS_TARGET = 1.89

MILLISECONDS = harness.Unit(key="ms", label="ms/iter", digits=2)


def overrides(steps: int) -> list[str]:
    """genlab's own config for nanoGPT's CPU recipe (harness.compose_config leaves out what a plain loop does not do
    either)."""
    return ["experiment=gpt_shakespeare_cpu", f"trainer.max_steps={steps}"]


class PlainLoop:
    """nanoGPT's loop on genlab's net: random windows, forward, backward, clip, AdamW step, LambdaLR step.

    Batches come from a generator of its own, so its steps can run between genlab's without changing the random
    stream genlab's sampler draws from.
    """

    def __init__(self, net: GPT, tokens: torch.Tensor, cfg: DictConfig, seed: int) -> None:
        self.net = net
        self.tokens = tokens
        self.block_size = int(cfg.data.block_size)
        self.batch_size = int(cfg.data.batch_size)
        self.num_windows = len(tokens) - self.block_size  # as genlab's TokenWindows and nanoGPT's get_batch
        self.span = torch.arange(self.block_size + 1)
        self.clip = float(cfg.trainer.gradient_clip_val)
        opt, sched = cfg.model.optimizer, cfg.model.scheduler
        self.optimizer = torch.optim.AdamW(
            net.configure_param_groups(float(cfg.model.weight_decay)),
            lr=float(opt.lr),
            betas=(float(opt.betas[0]), float(opt.betas[1])),
            fused=opt.get("fused"),
        )
        self.scheduler = warmup_cosine(
            self.optimizer, int(sched.warmup_steps), int(sched.decay_steps), float(sched.min_lr)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.step_seconds: list[float] = []

    def steps(self, n: int) -> None:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            self.net.train()
            for _ in range(n):
                start = time.perf_counter()
                starts = torch.randint(self.num_windows, (self.batch_size,), generator=self.generator)
                windows = self.tokens[starts.unsqueeze(1) + self.span]
                _, loss = self.net(windows[:, :-1], windows[:, 1:])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step_seconds.append(time.perf_counter() - start)

    @torch.no_grad()
    def validate(self, loader: DataLoader) -> float:
        """Mean cross-entropy (nats per token) over the loader's windows, weighted by tokens."""
        self.net.eval()
        total, count = 0.0, 0
        for inputs, targets in loader:
            _, loss = self.net(inputs, targets)
            total += loss.item() * targets.numel()
            count += targets.numel()
        self.net.train()
        return total / count


def warm_up(net: GPT, tokens: torch.Tensor, cfg: DictConfig, steps: int = 20) -> None:
    """Untimed steps on a throwaway copy, so neither contender pays first-use costs (allocator, kernels)."""
    PlainLoop(copy.deepcopy(net), tokens, cfg, seed=12345).steps(steps)


def summary(step_seconds: list[float], val_loss: float) -> dict[str, Any]:
    ms = [s * 1000 for s in step_seconds]
    return {
        "steps": len(ms),
        **MILLISECONDS.stats(ms),
        "train_seconds": sum(step_seconds),
        "val_loss": val_loss,
        "step_ms": [round(m, 3) for m in ms],
    }


def run(steps: int, seed: int, logger: str, schedule: str, chunk: int) -> dict[str, Any]:
    wall_start = time.perf_counter()
    datamodule: ShakespeareDataModule
    with harness.genlab_setup(overrides(steps), seed, logger) as (cfg, datamodule):
        # max_steps ends the run; enough epochs that max_epochs never ends it first (more than 2000 steps).
        cfg.trainer.max_epochs = max(int(cfg.trainer.max_epochs), math.ceil(steps / int(cfg.data.steps_per_epoch)))

        # genlab's own code path, as in genlab.training.train.
        model: TransformerLM = build_model(cfg, datamodule.spec)

        # The plain loop starts from the very same weights and reads the very same tokens.
        datamodule.setup("fit")
        train_tokens = datamodule.tokens["train"]
        plain = PlainLoop(copy.deepcopy(model.net), train_tokens, cfg, cfg.seed)
        warm_up(plain.net, train_tokens, cfg)

        timer = harness.TrainStepTimer(then=plain.steps if schedule == "interleaved" else None, chunk=chunk)
        trainer = harness.build_trainer(cfg, timer, model, datamodule)
        trainer.fit(model, datamodule=datamodule)
        genlab_val = float(trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/loss"])

        plain.steps(len(timer.step_seconds) - len(plain.step_seconds))
        plain_val = plain.validate(datamodule.val_dataloader())

    genlab, baseline = summary(timer.step_seconds, genlab_val), summary(plain.step_seconds, plain_val)
    return harness.comparison(
        MILLISECONDS,
        genlab,
        baseline,
        trainer,
        timer,
        steps=steps,
        seed=seed,
        schedule=schedule,
        chunk=chunk,
        logger=logger,
        train_tokens=len(train_tokens),
        parameters=model.net.num_parameters(),
        val_loss_gap=genlab_val - plain_val,
        wall_seconds=time.perf_counter() - wall_start,
    )


def report(numbers: dict[str, Any]) -> None:
    harness.report_steps(
        numbers,
        MILLISECONDS,
        f"GPT on tiny Shakespeare: {numbers['steps']} steps",
        ("val loss", "val_loss", "val_loss_gap", 4),
        notes=[f"total wall time: {numbers['wall_seconds']:.1f} s, torch threads: {numbers['torch_threads']}"],
        ratio_target=RATIO_TARGET,
        checks=[
            (
                f"genlab val loss target <= {VAL_LOSS_TARGET} (nanoGPT: 1.88)",
                numbers["genlab"]["val_loss"] <= VAL_LOSS_TARGET,
            )
        ],
    )


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__, "--steps", 2000, argv, extra=harness.CHUNK_OPTION)
    harness.execute(args, lambda: run(args.steps, args.seed, args.logger, args.schedule, args.chunk), report)


if __name__ == "__main__":
    main()
