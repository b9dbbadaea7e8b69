"""Masked language models (model=masked_lm): MDLM's objective against closed forms, SUBS, BERT's corruption, the
unmasking sampler, and runs through the real entrypoints (train, resume, eval, sample, serve)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, TINY_LM_NET, train_env
from inprocess import Result, call_entrypoint
from requires import extra_hint, require_data

from genlab.comparison.tables import load_sweep
from genlab.models.masked_diffusion import (
    MIN_TIME,
    LogLinearSchedule,
    antithetic_times,
    bert_corruption,
    mask_tokens,
    mdlm_nats,
    subs_log_probs,
)
from genlab.models.unmasking import unmask

MASK = 5  # a vocabulary of 5 tokens, [MASK] the sixth
SCHEDULE = LogLinearSchedule()


def test_tokens_are_masked_at_the_schedules_rate() -> None:
    generator = torch.Generator().manual_seed(0)
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    xt, masked = mask_tokens(torch.zeros(4, 20_000, dtype=torch.long), SCHEDULE.mask_rate(t), MASK, generator)
    assert torch.equal(xt == MASK, masked)
    assert masked.float().mean(dim=1).tolist() == pytest.approx(((1 - SCHEDULE.eps) * t).tolist(), abs=0.01)


def test_subs_never_predicts_mask_and_copies_revealed_tokens() -> None:
    logits = torch.randn(2, 6, MASK + 1, generator=torch.Generator().manual_seed(0))
    xt = torch.tensor([[0, MASK, 3, MASK, 4, 1], [MASK] * 6])
    log_probs = subs_log_probs(logits, xt, MASK)
    assert torch.all(log_probs[..., MASK] == float("-inf"))
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 6))
    revealed = xt != MASK
    assert torch.all(log_probs[revealed].gather(-1, xt[revealed][:, None]) == 0)
    assert torch.allclose(log_probs[xt == MASK][:, :MASK], logits[xt == MASK][:, :MASK].log_softmax(-1))


def test_the_elbo_of_known_models_is_its_closed_form() -> None:
    """A perfect model's bound is 0; a uniform one's is w(t) log V per masked token, whose mean over t and the masks
    is E_t[w(t) mask_rate(t)] log V = (1 - eps) log V per token."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randint(MASK, (8, 5000), generator=generator)
    t = antithetic_times(8, generator)
    xt, masked = mask_tokens(x0, SCHEDULE.mask_rate(t), MASK, generator)
    uniform = mdlm_nats(subs_log_probs(torch.zeros(8, 5000, MASK + 1), xt, MASK), x0, masked, t, SCHEDULE)
    exact = masked.float().mean(dim=1) / t * math.log(MASK)  # w(t) = 1 / t times the masked tokens' log V
    assert uniform.mean(dim=1).tolist() == pytest.approx(exact.tolist(), rel=1e-5)
    assert float(uniform.mean()) == pytest.approx((1 - SCHEDULE.eps) * math.log(MASK), rel=0.03)
    perfect = mdlm_nats(
        subs_log_probs(torch.nn.functional.one_hot(x0, MASK + 1) * 50.0, xt, MASK), x0, masked, t, SCHEDULE
    )
    assert float(perfect.max()) < 1e-10 * 1000


def test_antithetic_times_cover_the_unit_interval() -> None:
    t = antithetic_times(16, torch.Generator().manual_seed(3))
    assert float(t.min()) >= MIN_TIME and float(t.max()) <= 1
    strata = torch.floor((t - MIN_TIME) / (1 - MIN_TIME) * 16).long()
    assert sorted(strata.tolist()) == list(range(16))


def test_bert_corruption_chooses_15_percent_and_splits_them_80_10_10() -> None:
    x0 = torch.randint(MASK, (4, 50_000), generator=torch.Generator().manual_seed(0))
    inputs, chosen = bert_corruption(x0, MASK, MASK, 0.15, torch.Generator().manual_seed(1))
    assert float(chosen.float().mean()) == pytest.approx(0.15, abs=0.005)
    assert torch.equal(inputs[~chosen], x0[~chosen])
    picked, original = inputs[chosen], x0[chosen]
    assert float((picked == MASK).float().mean()) == pytest.approx(0.8, abs=0.01)
    # 10% random tokens (a fifth of them the same token again) and 10% kept
    assert float((picked == original).float().mean()) == pytest.approx(0.1 + 0.1 / MASK, abs=0.01)


class Oracle:
    """A denoiser that knows the answer, counting its calls."""

    def __init__(self, answer: torch.Tensor) -> None:
        self.answer, self.calls = answer, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return subs_log_probs(torch.nn.functional.one_hot(self.answer, MASK + 1).float() * 20, x, MASK)


@pytest.mark.parametrize("order", ["ancestral", "confidence"])
def test_the_sampler_reveals_every_position_and_keeps_the_prompt(order: str) -> None:
    answer = torch.randint(MASK, (3, 12), generator=torch.Generator().manual_seed(0))
    start = torch.full_like(answer, MASK)
    start[:, :4] = (answer[:, :4] + 1) % MASK  # a prompt that is not the answer's start
    start[:, 8] = 0  # and a kept position further on (infilling)
    for steps in (12, 3, 1000):
        oracle = Oracle(answer)
        out = unmask(oracle, start, MASK, steps, order, generator=torch.Generator().manual_seed(1))
        kept = start != MASK
        assert torch.equal(out[kept], start[kept]) and torch.equal(out[~kept], answer[~kept]), (order, steps)
        assert oracle.calls <= min(steps, 7 * 3), "the net was called again for a step that changed nothing"
    oracle = Oracle(answer)
    unmask(oracle, start, MASK, 7, "confidence")
    assert oracle.calls == 7  # one position per row per step


def test_masked_lm_model_learns_both_objectives(compose_config) -> None:
    """Both objectives' losses are finite and fall on a batch; mlm reports the masked tokens' accuracy."""
    from genlab.data.spec import DataSpec
    from genlab.data.tokenizers import CharTokenizer
    from genlab.run.loading import build_model

    spec = DataSpec.of_text("tiny", CharTokenizer.from_text("abc\n"), 16, None)
    targets = (torch.arange(16) % 4).repeat(8, 1)  # abc\n abc\n ...: each masked token follows from its neighbours
    for objective in ("mdlm", "mlm"):
        cfg = compose_config("data=shakespeare", *TINY_LM_NET, "model=masked_lm", f"model.objective={objective}")
        model = build_model(cfg, spec)
        assert model.net.vocab_size == 5 and not model.net.causal
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            loss, accuracy, _ = model.losses(*model.clean_tokens(targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        assert (accuracy is None) == (objective == "mdlm")
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], (objective, losses)


TINY = [
    *QUIET_TRAIN,
    *(o for o in TINY_LM_NET if not o.startswith("model=")),
    "model=masked_lm",
    "data=shakespeare",
    "data.steps_per_epoch=5",
    "trainer.max_epochs=2",
    "trainer.limit_test_batches=2",
    "model.sample_tokens=24",
    "model.sample_steps=8",
    "seed=0",
]


class Folder:
    """A scratch folder in which the console scripts run in this process, as a user would run them."""

    def __init__(self, root: Path) -> None:
        self.root, self.env = root, train_env(root / "outputs")

    def command(self, program: str, *arguments: str) -> Result:
        return call_entrypoint(program, arguments, cwd=self.root, env=self.env)

    def train(self, name: str, *overrides: str) -> Path:
        process = self.command("genlab-train", *TINY, *overrides, f"hydra.run.dir=outputs/{name}")
        assert process.returncode == 0, process.stderr[-3000:]
        return self.root / "outputs" / name


def numbers(run_dir: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if "/" in k}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Folder:
    require_data("shakespeare/input.txt")
    return Folder(tmp_path_factory.mktemp("masked_lm"))


@pytest.fixture(scope="module")
def mdlm_run(folder: Folder) -> Path:
    return folder.train("mdlm")


def test_mdlm_trains_evaluates_and_samples_through_the_entrypoints(folder: Folder, mdlm_run: Path) -> None:
    metrics = numbers(mdlm_run)
    assert metrics["val/bpc_bound"] == pytest.approx(metrics["val/loss"] / math.log(2), rel=1e-5)
    assert metrics["val/ppl_bound"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-5)
    assert "val/bpc" not in metrics, "a bound must not pass for a likelihood"
    assert len((mdlm_run / "samples" / "prompt_0.txt").read_text()) == 1 + 24

    evaluated = folder.command("genlab-eval", f"run={mdlm_run}", "ckpt=last")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (record,) = (mdlm_run / "evals").glob("*.json")
    assert json.loads(record.read_text())["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-6)

    sampled = folder.command("genlab-sample", f"run={mdlm_run}", "prompt=ROMEO:", "max_new_tokens=40", "steps=4")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    text = (mdlm_run / "generated" / "text_000.txt").read_text()
    assert text.startswith("ROMEO:") and len(text) == 6 + 40


def test_a_resumed_mdlm_run_ends_where_an_unbroken_one_ends(folder: Folder, mdlm_run: Path) -> None:
    part = folder.train("part", "trainer.max_epochs=1")
    resumed = folder.command("genlab-train", f"resume={part}", "trainer.max_epochs=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert numbers(part) == numbers(mdlm_run)
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 10


BAD = {
    "model.mask_rate=1.5": "model.mask_rate=1.5",
    "model.objective=foo": "model.objective='foo' is not allowed: expected one of 'mdlm', 'mlm'",
    "model.sample_steps=0": "model.sample_steps=0",
    "model/net=gpt": "use model/net=bert",
}


def test_bad_settings_are_refused_with_one_line(folder: Folder, mdlm_run: Path) -> None:
    for i, (setting, message) in enumerate(BAD.items()):
        process = folder.command("genlab-train", *TINY, setting, f"hydra.run.dir=outputs/bad_{i}")
        lines = [line for line in process.stderr.splitlines() if "error:" in line]
        assert process.returncode == 2 and "Traceback" not in process.stderr, (setting, process.stderr[-2000:])
        assert len(lines) == 1 and message in lines[0], (setting, process.stderr[-2000:])
    sampled = folder.command("genlab-sample", f"run={mdlm_run}", "sampler=foo", "overwrite=true")
    assert sampled.returncode == 2 and "sampler=foo is not a masked LM's order" in sampled.stderr


def test_genlab_serve_completes_prompts_with_a_masked_lm(folder: Folder, mdlm_run: Path) -> None:
    """genlab-serve on a masked-LM run (uvicorn.run stood in for: the app it would serve is called in process)."""
    pytest.importorskip("fastapi", reason=extra_hint("serve"))
    from unittest import mock

    from fastapi.testclient import TestClient

    served: dict = {}
    with mock.patch("uvicorn.run", lambda app, **options: served.update(app=app)):
        started = folder.command("genlab-serve", f"run={mdlm_run}")
    assert started.returncode == 0, started.stderr[-2000:]
    body = {"prompt": "ROMEO:", "max_tokens": 12, "seed": 3, "n": 2}
    with TestClient(served["app"]) as client:
        first, again = (client.post("/v1/completions", json=body) for _ in range(2))
        streamed = client.post("/v1/completions", json={**body, "stream": True})
        refused = client.post("/v1/completions", json={**body, "max_tokens": 0})
    assert first.status_code == 200, first.text
    texts = [choice["text"] for choice in first.json()["choices"]]
    assert len(texts) == 2 and all(texts) and first.json()["choices"] == again.json()["choices"]  # same seed
    assert first.json()["usage"]["completion_tokens"] == 24
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert refused.status_code == 400 and refused.json()["error"]["message"]


def test_compare_says_an_mdlm_bound_and_an_mlm_loss_are_not_one_scale(folder: Folder, mdlm_run: Path) -> None:
    mlm_run = folder.train("mlm", "model.objective=mlm")
    compared = folder.command("genlab-compare", str(mdlm_run), str(mlm_run), "--out", str(folder.root / "compared"))
    assert compared.returncode == 0, compared.stderr
    assert (
        "val/loss and test/loss differ in kind across these runs: an upper bound on it (MDLM); no likelihood (MLM: "
        "masked tokens only)" in compared.stdout
    ), compared.stdout
    table = load_sweep([mdlm_run, mlm_run])
    assert "val/loss" in table.metrics and table.judged_metric is None and not any(row.best for row in table.rows)
    assert load_sweep([mdlm_run]).judged_metric == "val/loss"  # one kind: judged as usual
