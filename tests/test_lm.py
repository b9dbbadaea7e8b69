"""The language model end to end: tokenizers, text windows, the LightningModule, and genlab-train with it."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import QUIET_TRAIN, TINY_LM_NET
from requires import requires_data

from genlab.data.text import PythonSourceDataModule, TextFileDataModule, TokenWindows
from genlab.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, tokenizer_from_state
from genlab.errors import DataError
from genlab.models.lm import TransformerLM
from genlab.models.schedules import warmup_cosine
from genlab.nets.transformer import GPT

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20

TINY_LM = [
    *TINY_LM_NET,
    "data.steps_per_epoch=5",
    "trainer.max_epochs=2",
    "trainer.limit_test_batches=2",
    "model.optimizer.lr=1e-2",
    "model.scheduler.warmup_steps=0",
    "model.scheduler.decay_steps=10",
    "model.scheduler.min_lr=1e-3",
    "model.sample_tokens=20",
    *QUIET_TRAIN,
]


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_tokenizers_round_trip_and_rebuild_from_state(kind: str, tmp_path) -> None:
    tokenizer = {
        "char": lambda: CharTokenizer.from_text(TEXT),
        "byte": ByteTokenizer,
        "bpe": lambda: BPETokenizer.train(TEXT, 300, tmp_path),
    }[kind]()
    sample = "Whether 'tis nobler to be"
    ids = tokenizer.encode(sample)
    assert tokenizer.decode(ids) == sample
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer_from_state(tokenizer.state()).encode(sample) == ids


def test_bpe_is_trained_once_then_read_from_the_cache(tmp_path) -> None:
    first = BPETokenizer.train(TEXT, 300, tmp_path)
    (cached,) = (tmp_path / "bpe").glob("*.json")
    before = cached.stat().st_mtime_ns
    second = BPETokenizer.train(TEXT, 300, tmp_path)
    assert cached.stat().st_mtime_ns == before
    assert second.encode(TEXT[:50]) == first.encode(TEXT[:50])
    assert len(first.encode(TEXT)) < len(TEXT) / 2, "BPE should merge this repetitive text"


def test_prompt_outside_the_char_vocabulary_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"characters outside the char vocabulary \('é'\)"):
        CharTokenizer.from_text(TEXT).encode("the fé")


def test_windows_are_inputs_and_targets_shifted_by_one() -> None:
    tokens = torch.arange(100)
    inputs, targets = TokenWindows(tokens, block_size=8).__getitems__([0, 10, 91])
    assert inputs.shape == targets.shape == (3, 8)
    assert torch.equal(inputs[1], torch.arange(10, 18)) and torch.equal(targets[1], torch.arange(11, 19))
    assert len(TokenWindows(tokens, block_size=8)) == 92


def text_data(tmp_path, **kwargs) -> TextFileDataModule:
    (tmp_path / "corpus.txt").write_text(TEXT)
    settings = dict(path=str(tmp_path / "corpus.txt"), cache_dir=str(tmp_path / "cache"), block_size=16, batch_size=4)
    return TextFileDataModule(**{**settings, **kwargs})


def test_validation_windows_are_fixed_and_training_windows_random(tmp_path) -> None:
    data, other = text_data(tmp_path, val_batches=3), text_data(tmp_path, val_batches=3)
    data.setup()
    other.setup()
    first = torch.cat([x for x, _ in data.val_dataloader()])
    again = torch.cat([x for x, _ in other.val_dataloader()])
    assert first.shape == (12, 16) and torch.equal(first, again)
    torch.manual_seed(0)
    a = next(iter(data.train_dataloader()))[0]
    b = next(iter(data.train_dataloader()))[0]
    assert not torch.equal(a, b)
    assert len(data.train_dataloader()) == data.steps_per_epoch


def test_block_size_larger_than_the_validation_text_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match=r"data.block_size=1000 is larger than the val text \(\d+ tokens\)"):
        text_data(tmp_path, block_size=1000).setup()


def test_the_embedded_corpus_needs_no_files(tmp_path) -> None:
    data = PythonSourceDataModule(cache_dir=str(tmp_path), max_chars=50_000, block_size=32)
    spec = data.spec
    assert spec.kind == "text" and spec.vocab_size > 50 and spec.tokens_per_char == 1.0


def test_bpc_is_loss_over_ln2_for_characters(tmp_path) -> None:
    data = text_data(tmp_path)
    model = TransformerLM(
        spec=data.spec,
        net=functools.partial(GPT, n_layer=1, n_head=2, n_embd=16),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
    )
    model.mean_loss["val"].update(torch.tensor(2.0), weight=10)
    logged = {}
    model.log_dict = lambda values, **_: logged.update(values)
    model._log_split("val")
    assert logged["val/bpc"] == pytest.approx(2.0 / math.log(2))
    assert logged["val/ppl"] == pytest.approx(math.exp(2.0))


def test_warmup_cosine_schedule_matches_nanogpt() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = warmup_cosine(optimizer, warmup_steps=100, decay_steps=2000, min_lr=1e-4)
    lrs = []
    for _ in range(2100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(1e-3 / 101)
    assert lrs[100] == pytest.approx(1e-3)
    assert lrs[1050] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert lrs[2000] == pytest.approx(1e-4) and lrs[2099] == pytest.approx(1e-4)


@requires_data("shakespeare/input.txt")
def test_transformer_trains_and_samples_through_genlab_train(genlab_train) -> None:
    run = genlab_train("data=shakespeare", *TINY_LM).check()
    metrics = run.metrics
    assert metrics["judged_metric"] == "val/loss" and metrics["judged_mode"] == "min"
    assert metrics["val/bpc"] == pytest.approx(metrics["val/loss"] / math.log(2), rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-5)
    assert metrics["val/loss"] < math.log(65), "no better than uniform over the 65 characters"
    text = (run.dir / "samples" / "prompt_0.txt").read_text()
    assert len(text) > 5
    checkpoint = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["genlab_tokenizer"]["kind"] == "char"


@pytest.mark.parametrize("extra", [["trainer.precision=bf16-mixed"], ["trainer=ddp_sim"]], ids=["bf16", "ddp_sim"])
def test_transformer_bf16_and_ddp(genlab_train, extra) -> None:
    # DDP starts worker processes that re-run the command: the process is the point there.
    train = genlab_train.process if "trainer=ddp_sim" in extra else genlab_train
    run = train("data=python_source", "data.max_chars=50000", "logger=csv", *TINY_LM, *extra).check()
    assert len(run.new_dirs) == 1
    assert math.isfinite(run.metrics["val/loss"]) and math.isfinite(run.metrics["test/loss"])
    # An epoch is 5 steps of 4 windows per process, with or without DDP (batch_size is per device).
    assert torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 10


LM_BAD_INPUTS = {
    "n_embd not divisible by n_head": ([*TINY_LM, "model.net.n_embd=18", "model.net.n_head=4"], "is not divisible by"),
    "block size larger than the validation text": ([*TINY_LM, "data.block_size=200000"], "is larger than the val text"),
    "missing corpus, downloads off": (
        [*TINY_LM, "paths.data_dir=${hydra:runtime.cwd}/empty", "data.download=false"],
        "tiny Shakespeare is not at",
    ),
    "image model on text": (["model=vae"], "VAE models image data, but data=shakespeare gives text data"),
    "text model on images": (["model=transformer", "data=digits"], "TransformerLM models text data"),
    "text net in an image model": (["model=vae", "model/net=gpt", "data=digits"], "GPT (model/net) is made for text"),
}


@requires_data("shakespeare/input.txt")
def test_language_model_bad_input_is_one_clear_line(genlab_train) -> None:
    for case, (overrides, message) in LM_BAD_INPUTS.items():
        run = genlab_train("data=shakespeare", *overrides)
        assert run.returncode != 0, case
        assert "Traceback" not in run.stderr, f"{case}:\n{run.stderr}"
        assert message in run.stderr, f"{case}: {message!r} not in\n{run.stderr}"


def tiny_lm(tmp_path, **kwargs) -> TransformerLM:
    return TransformerLM(
        spec=text_data(tmp_path).spec,
        net=functools.partial(GPT, n_layer=1, n_head=2, n_embd=16),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        **kwargs,
    )


def test_compile_option_compiles_the_net_in_place(tmp_path, monkeypatch) -> None:
    model = tiny_lm(tmp_path, compile=True)
    names = [name for name, _ in model.named_parameters()]
    compiled = []
    monkeypatch.setattr(model.net, "compile", lambda: compiled.append(True))
    model.configure_model()
    assert compiled == [True]
    assert [name for name, _ in model.named_parameters()] == names, "checkpoint keys must not change"
    plain = tiny_lm(tmp_path)
    monkeypatch.setattr(plain.net, "compile", lambda: pytest.fail("compiled although compile=false"))
    plain.configure_model()


GPU_RECIPE_ON_CPU = ["experiment=gpt_shakespeare", "trainer=cpu", "debug=fdr"]


def test_gpu_recipes_compile_and_autocast_on_accelerators_only(compose_config) -> None:
    """compile=cuda, and the recipe's bf16-mixed becomes 32-true with trainer=cpu (emulated bf16 is slower than fp32
    there) while on a GPU the recipe keeps it; an explicit trainer.precision still wins."""
    for recipe in ("gpt_shakespeare", "gpt_moses", "gpt_bach"):
        cfg = compose_config(f"experiment={recipe}")
        assert cfg.model.compile == "cuda" and cfg.trainer.precision == "bf16-mixed", recipe
    assert compose_config(*GPU_RECIPE_ON_CPU).trainer.precision == "32-true"
    explicit = compose_config(*GPU_RECIPE_ON_CPU, "trainer.precision=bf16-mixed")
    assert explicit.trainer.precision == "bf16-mixed"


@requires_data("shakespeare/input.txt")
def test_gpu_recipe_runs_on_a_cpu_without_compiling(genlab_train, monkeypatch) -> None:
    """experiment=gpt_shakespeare trainer=cpu starts at once: inductor's C++ build would take minutes."""
    monkeypatch.setattr(GPT, "compile", lambda self: pytest.fail("compiled on a CPU although compile=cuda"))
    tiny = ["model.net.n_layer=1", "model.net.n_embd=24", "data.block_size=32", "data.batch_size=4"]
    debug_run = genlab_train(*GPU_RECIPE_ON_CPU, *tiny).check()
    assert "final metrics of the last weights (no checkpoint was kept)" in debug_run.stdout, debug_run.stdout
    assert "best checkpoint" not in debug_run.stdout
    invalid = genlab_train("model=transformer", "data=python_source", "model.compile=sometimes")
    assert (
        invalid.returncode == 2
        and "model.compile='sometimes' is not allowed: expected one of 'cuda' or true or false" in invalid.stderr
    ), invalid.stderr


def test_generated_text_is_reproducible_and_prompts_are_checked(tmp_path) -> None:
    model = tiny_lm(tmp_path).eval()
    first = model.generate_text("To be", 30, temperature=1.0, generator=torch.Generator().manual_seed(3))
    again = model.generate_text("To be", 30, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert first == again and len(first) == 30
    assert model.text_samples(seed=0) == model.text_samples(seed=0)
    with pytest.raises(DataError, match="outside the char vocabulary"):
        model.generate_text("To be \u20ac", 5)
