"""Hugging Face models: a tiny transformers GPT-2 (saved here, nothing downloaded) fine-tuned through genlab-train
with model/net=hf, fully and with LoRA, then sampled, served, exported and read back with transformers."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, REPO, TINY_LM_NET
from requires import extra_hint
from test_run_folder import Folder, error_line

import genlab
from genlab.errors import ConfigError
from genlab.validation import validate_train_config

for module in ("transformers", "peft", "datasets", "safetensors"):
    pytest.importorskip(module, reason=extra_hint("hf"))
spec = importlib.util.spec_from_file_location("tiny_hf_model", REPO / "benchmarks" / "tiny_hf_model.py")
tiny_hf_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny_hf_model)

TINY = [
    "model=transformer",
    "model/net=hf",
    "data=text_file",
    "data.block_size=16",
    "data.batch_size=4",
    "data.val_batches=2",
    "data.steps_per_epoch=3",
    "trainer.max_epochs=1",
    *QUIET_TRAIN,
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Folder:
    root = tmp_path_factory.mktemp("hf")
    tiny_hf_model.save_tiny_model(root / "gpt2")
    (root / "corpus.txt").write_text(tiny_hf_model.TEXT * 3, encoding="utf-8")
    return Folder(root)


def train(folder: Folder, name: str, *overrides: str) -> Path:
    return folder.train(name, *TINY, f"data.path={folder.root / 'corpus.txt'}", *overrides)


@pytest.fixture(scope="module")
def full_run(folder: Folder) -> Path:
    return train(folder, "full", f"model.net.pretrained={folder.root / 'gpt2'}")


@pytest.fixture(scope="module")
def lora_run(folder: Folder) -> Path:
    base = folder.root / "gpt2_for_lora"  # its own copy: a test changes it afterwards
    shutil.copytree(folder.root / "gpt2", base)
    return train(folder, "lora", f"model.net.pretrained={base}", "model.net.lora.r=2", "model.net.lora.alpha=4")


def checkpoint(run_dir: Path) -> Path:
    return run_dir / json.loads((run_dir / "metrics.json").read_text())["checkpoint"]


def test_pretrained_net_trains_evaluates_samples_and_serves_with_its_own_tokenizer(
    folder: Folder, full_run: Path
) -> None:
    metrics = json.loads((full_run / "metrics.json").read_text())
    assert {"val/loss", "val/bpc", "val/ppl", "test/bpc"} <= metrics.keys()

    run = genlab.load_run(full_run)
    assert run.model.tokenizer.kind == "hf"
    ids = run.model.tokenizer.encode("To be, or not")
    assert len(ids) < len("To be, or not")  # the model folder's BPE, not characters
    folder.command("genlab-sample", f"run={full_run}", "n=2", "prompt='To be'", "max_new_tokens=8")
    texts = [(full_run / "generated" / f"text_{i:03d}.txt").read_text() for i in range(2)]
    assert all(text.startswith("To be") and len(text) > len("To be") for text in texts) and texts[0] != texts[1]

    # Serving's step-by-step decoding draws what generate_text draws from the same seed.
    from genlab.nets.decoding import Sampling

    prompt = run.model.prompt_ids("To be")
    (sequence,) = run.model.start_sequences(prompt, [Sampling(0.8, None, None, torch.Generator().manual_seed(3))])
    batch = run.model.decoding_batch(4)
    batch.add(sequence)
    for _ in range(5):
        batch.step()
    direct = run.model.generate_text("To be", 6, 0.8, generator=torch.Generator().manual_seed(3))
    assert run.model.tokenizer.decode(sequence.ids[len(prompt) :]) == direct


def test_export_opens_with_transformers_and_gives_genlab_logits(folder: Folder, full_run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = folder.root / "export_full"
    folder.command("genlab-export", f"run={full_run}", f"out={out}")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert "val/bpc" in (out / "README.md").read_text()
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = AutoTokenizer.from_pretrained(out)("To be, or not", add_special_tokens=False).input_ids
    model = genlab.load_run(full_run).model
    assert ids == model.tokenizer.encode("To be, or not")
    net = model.net
    tokens = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(exported(tokens).logits, net(tokens)[0], rtol=0, atol=1e-5)

    again = folder.command("genlab-export", f"run={full_run}", f"out={out}", check=False)
    assert "already holds files" in error_line(again, "genlab-export")


def test_lora_trains_adapters_only_and_exports_merged_or_alone(folder: Folder, lora_run: Path, full_run: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    state = torch.load(checkpoint(lora_run), weights_only=True)["state_dict"]
    assert state and all("lora_" in key or key.endswith("_extra_state") for key in state)
    assert checkpoint(lora_run).stat().st_size < checkpoint(full_run).stat().st_size / 2

    run = genlab.load_run(lora_run)
    trainable = run.model.net.num_parameters(trainable=True)
    assert 0 < trainable < run.model.net.num_parameters() / 5
    counts = json.loads((lora_run / "metrics.json").read_text())
    assert (counts["trainable_parameters"], counts["parameters"]) == (trainable, run.model.net.num_parameters())
    merged, alone = folder.root / "export_merged", folder.root / "export_adapter"
    folder.command("genlab-export", f"run={lora_run}", f"out={merged}")
    folder.command("genlab-export", f"run={lora_run}", f"out={alone}", "adapter=true")
    assert (alone / "adapter_config.json").is_file() and not (merged / "adapter_config.json").exists()
    tokens = torch.tensor([run.model.tokenizer.encode("Whether 'tis nobler")])
    base = AutoModelForCausalLM.from_pretrained(run.model.net.pretrained)
    with torch.no_grad():
        expected = run.model.net(tokens)[0]
        torch.testing.assert_close(
            AutoModelForCausalLM.from_pretrained(merged)(tokens).logits, expected, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(PeftModel.from_pretrained(base, alone)(tokens).logits, expected, atol=1e-5, rtol=0)

    # Resumed (adapters and their optimizer state) and evaluated as any run.
    folder.command("genlab-train", f"resume={lora_run}", "trainer.max_epochs=2")
    assert torch.load(lora_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    resumed = json.loads((lora_run / "metrics.json").read_text())
    folder.command("genlab-eval", f"run={lora_run}")
    evaluated = json.loads((lora_run / "eval.json").read_text())
    assert evaluated["val/loss"] == pytest.approx(resumed["val/loss"], abs=1e-6)

    # A base folder changed since the run: one line, not a model built on other weights.
    config = Path(run.model.net.pretrained) / "config.json"
    config.write_text(config.read_text().replace("}", ', "note": "retrained"}', 1))
    with pytest.raises(ConfigError, match="has changed since this run"):
        genlab.load_run(lora_run)


def test_genlab_gpt_exports_as_gpt2_with_its_char_and_byte_tokenizers(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    from genlab.data.tokenizers import ByteTokenizer, CharTokenizer
    from genlab.exporting.gpt2 import to_gpt2
    from genlab.exporting.tokenizer import hf_tokenizer
    from genlab.nets.transformer import GPT

    torch.manual_seed(0)
    net = GPT(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=False).eval()
    to_gpt2(net).save_pretrained(tmp_path)
    tokens = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(
            GPT2LMHeadModel.from_pretrained(tmp_path)(tokens).logits, net(tokens)[0], atol=1e-5, rtol=0
        )

    text = "Héllo,  wörld!\n\tsaid 'the' tokenizer"
    for tokenizer in (CharTokenizer.from_text(text), ByteTokenizer()):
        converted = hf_tokenizer(tokenizer)
        ids = converted(text, add_special_tokens=False).input_ids
        assert ids == tokenizer.encode(text) and converted.decode(ids) == text


def test_a_llama_style_config_builds_trains_and_generates() -> None:
    from genlab.nets.hf import HFCausalLM

    config = {
        "model_type": "llama",
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "hidden_size": 16,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
    }
    net = HFCausalLM(vocab_size=50, block_size=16, config=config, lora={"r": 2})
    tokens = torch.randint(0, 50, (2, 16))
    _, loss = net(tokens, tokens)
    loss.backward()
    assert all((p.grad is not None) == ("lora_" in name) for name, p in net.named_parameters())
    out = net.generate(tokens[:, :4], 20, temperature=0.0)
    assert out.shape == (2, 24)  # past the 16-token context: recomputed on its last block_size tokens


#: model=masked_lm with a transformers masked LM (model/net=hf_masked) on the same corpus.
MASKED = ["model=masked_lm", "model/net=hf_masked", "model.sample_steps=4", *TINY[2:]]


def test_a_pretrained_masked_lm_trains_and_samples_with_its_own_mask_token(folder: Folder) -> None:
    from transformers import AutoTokenizer

    from genlab.nets.hf import HFMaskedLM

    tiny_hf_model.save_tiny_model(folder.root / "bert", arch="bert")
    run_dir = folder.train(
        "masked", *MASKED, f"data.path={folder.root / 'corpus.txt'}", f"model.net.pretrained={folder.root / 'bert'}"
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["judged_metric"] == "val/loss" and {"val/bpc_bound", "test/bpc_bound"} <= metrics.keys()
    model = genlab.load_run(run_dir).model
    assert isinstance(model.net, HFMaskedLM) and model.net.model.training is False  # loaded for sampling: eval
    assert model.mask_id == AutoTokenizer.from_pretrained(folder.root / "bert").mask_token_id == 1
    assert HFMaskedLM(vocab_size=301, block_size=16, pretrained=str(folder.root / "bert")).model.training
    adapted = HFMaskedLM(vocab_size=301, block_size=16, pretrained=str(folder.root / "bert"), lora={"r": 2, "alpha": 4})
    adapted(torch.zeros(1, 16, dtype=torch.long))[0].sum().backward()
    assert all((p.grad is not None) == ("lora_" in name) for name, p in adapted.named_parameters())
    folder.command("genlab-sample", f"run={run_dir}", "n=2", "prompt='To be'")
    texts = [(run_dir / "generated" / f"text_{i:03d}.txt").read_text() for i in range(2)]
    assert all(text.startswith("To be") and len(text) > len("To be") and "[MASK]" not in text for text in texts)


def test_a_masked_lm_built_from_a_config_embeds_genlabs_mask_after_the_data_tokens(folder: Folder) -> None:
    bert = "{model_type: bert, num_hidden_layers: 1, num_attention_heads: 2, hidden_size: 16, intermediate_size: 32}"
    run_dir = folder.train(
        "masked_config", *MASKED, f"data.path={folder.root / 'corpus.txt'}", f"model.net.config={bert}",
        "data.tokenizer=char", "model.objective=mlm",
    )  # fmt: skip
    model = genlab.load_run(run_dir).model
    vocabulary = model.tokenizer.vocab_size
    assert model.mask_id == vocabulary and model.net.vocab_size == vocabulary + 1
    assert "val/masked_accuracy" in json.loads((run_dir / "metrics.json").read_text())


def test_a_causal_model_is_not_a_masked_lm(folder: Folder) -> None:
    process = folder.command(
        "genlab-train", *MASKED, f"data.path={folder.root / 'corpus.txt'}",
        f"model.net.pretrained={folder.root / 'gpt2'}", "hydra.run.dir=outputs/not_masked", check=False,
    )  # fmt: skip
    assert "is not a model AutoModelForMaskedLM loads; model/net=hf takes causal LMs" in error_line(
        process, "genlab-train"
    )
    assert not (folder.root / "outputs" / "not_masked" / "checkpoints").exists()


def test_refusals_are_one_line(folder: Folder, compose_config, tmp_path: Path) -> None:
    from genlab.nets.hf import HFCausalLM

    with pytest.raises(ConfigError, match="HF_HOME"):
        HFCausalLM(vocab_size=50, block_size=16, pretrained=str(tmp_path / "nowhere"), local_files_only=True)
    with pytest.raises(ConfigError, match="embeds only"):
        HFCausalLM(vocab_size=10_000, block_size=16, pretrained=str(folder.root / "gpt2"))
    with pytest.raises(ConfigError, match="exactly one of"):
        HFCausalLM(vocab_size=50, block_size=16)
    cfg = compose_config(*TINY, "data.path=x", "model.net.pretrained=x", "model.net.dtype=float64")
    with pytest.raises(ConfigError, match=r"model\.net\.dtype"):
        validate_train_config(cfg, {"model": ("spec",), "model.net": ("vocab_size", "block_size")})


def test_a_net_from_a_config_without_a_tokenizer_is_refused_before_training(folder: Folder) -> None:
    process = folder.command(
        "genlab-train",
        *TINY,
        f"data.path={folder.root / 'corpus.txt'}",
        "model.net.config={model_type: gpt2}",
        "hydra.run.dir=outputs/refused",
        check=False,
    )
    assert "data.tokenizer=hf reads a model folder" in error_line(process, "genlab-train")
    assert not (folder.root / "outputs" / "refused" / "checkpoints").exists()


@pytest.fixture(scope="module")
def documents(folder: Folder) -> list[str]:
    return [line for line in (tiny_hf_model.TEXT * 3).splitlines() if line] + ["Ünïcode, too."]


def test_hf_dataset_trains_genlab_gpt_and_the_run_exports_as_gpt2(folder: Folder, documents: list[str]) -> None:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = folder.root / "saved_dataset"
    datasets.Dataset.from_dict({"body": documents}).save_to_disk(saved)
    run_dir = folder.train(
        "gpt_on_dataset", *TINY_LM_NET, "data=hf_dataset", f"data.path={saved}", "data.text_column=body",
        "data.steps_per_epoch=3", "trainer.max_epochs=1", *QUIET_TRAIN,
    )  # fmt: skip
    assert "val/bpc" in json.loads((run_dir / "metrics.json").read_text())
    assert {p.name for p in saved.iterdir()} == {"data-00000-of-00001.arrow", "dataset_info.json", "state.json"}

    out = folder.root / "export_gpt"
    folder.command("genlab-export", f"run={run_dir}", f"out={out}")
    model = genlab.load_run(run_dir).model
    ids = AutoTokenizer.from_pretrained(out)("Whether Ünïcode", add_special_tokens=False).input_ids
    assert ids == model.tokenizer.encode("Whether Ünïcode")
    tokens = torch.tensor([ids])
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(out).eval()(tokens).logits
        torch.testing.assert_close(exported, model.net(tokens)[0], atol=1e-5, rtol=0)


def test_hf_dataset_reads_files_by_split_and_caches_tokens(tmp_path: Path, documents: list[str]) -> None:
    import datasets

    from genlab.data.hf_dataset import HFDatasetDataModule
    from genlab.errors import DataError

    files = tmp_path / "files"
    files.mkdir()
    table = datasets.Dataset.from_dict({"text": documents})
    table.select(range(40)).to_parquet(files / "train-00000.parquet")
    table.select(range(40, len(documents))).to_parquet(files / "validation.parquet")
    settings = {"path": str(files), "cache_dir": str(tmp_path / "cache"), "block_size": 8, "tokenizer": "byte"}
    first = HFDatasetDataModule(**settings)
    first.setup()
    assert set(first.tokens) == {"train", "val"} and first.tokens["train"].dtype == torch.int32
    held_out = "".join(f"{document}\n\n" for document in documents[40:])
    assert first.tokenizer.decode(first.tokens["val"].tolist()) == held_out
    assert first.spec.tokens_per_char == pytest.approx(len(held_out.encode()) / len(held_out))
    second = HFDatasetDataModule(**settings)
    second.setup()
    assert torch.equal(first.tokens["train"], second.tokens["train"])
    assert len(list((tmp_path / "cache" / "hf_dataset_tokens").glob("*.int32"))) == 2

    with pytest.raises(DataError, match="text_column=body is not a column"):
        HFDatasetDataModule(**{**settings, "text_column": "body"}).setup()
