"""A run of `model=transformer` written as a Hugging Face model folder: config.json, model.safetensors, the
tokenizer's files and a model card, which `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer` read back.

genlab's GPT becomes a GPT2LMHeadModel; a `model/net=hf` net is saved as the transformers model it is, its LoRA
adapters merged into the base weights, or (`adapter=true`) the adapters alone in peft's format.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from genlab.errors import ConfigError, check
from genlab.exporting.card import model_card
from genlab.exporting.tokenizer import hf_tokenizer
from genlab.files import writable_folder
from genlab.run.loading import LoadedRun


def empty_folder(out: Path) -> Path:
    """`out`, created if missing; a folder that already holds files is refused (an export never mixes with them)."""
    out = writable_folder(out.expanduser())
    held = sorted(p.name for p in out.iterdir())
    check(not held, f"out={out} already holds files ({', '.join(held[:3])}); give an empty or new folder")
    return out


def transformers_model(run: LoadedRun, adapter: bool) -> tuple[nn.Module, str | None]:
    """The model to save (a transformers model, or peft's adapters) and the base model it was tuned from."""
    from genlab.exporting.gpt2 import to_gpt2
    from genlab.nets.hf import HFCausalLM
    from genlab.nets.transformer import GPT

    net = getattr(run.model, "net", None)
    if isinstance(net, GPT):
        check(not adapter, "adapter=true exports LoRA adapters, and this run (genlab's GPT) has none")
        return to_gpt2(net), None
    if isinstance(net, HFCausalLM):
        if net.lora is None:
            check(not adapter, "adapter=true exports LoRA adapters, and this run has none (model.net.lora.r=0)")
            return net.model, net.pretrained
        return (net.model if adapter else net.model.merge_and_unload()), net.pretrained
    raise ConfigError(
        f"genlab-export writes language models (model=transformer); this run's model is {run.config.model._target_}"
    )


def export_run(run: LoadedRun, out: Path, adapter: bool = False) -> Path:
    """Write `run` into the empty folder `out` (see the module's docstring)."""
    out = empty_folder(out)
    model, base = transformers_model(run, adapter)
    model.save_pretrained(out)
    hf_tokenizer(run.model.tokenizer).save_pretrained(out)
    (out / "README.md").write_text(model_card(run.config, run.metrics, run.manifest, base), encoding="utf-8")
    return out
