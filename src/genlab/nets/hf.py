"""Any Hugging Face `transformers` causal LM (`HFCausalLM`) or masked LM (`HFMaskedLM`, BERT-like) as genlab's
language-model net: pretrained from a folder (or Hub id), or built from a config class; optionally with LoRA adapters
(`peft`), only they trained.

Both speak the GPT net's interface (`forward(idx, targets) -> (logits, loss)`, `configure_param_groups`,
`block_size`, `vocab_size`; the causal one also `generate`), so `model=transformer` and `model=masked_lm` train,
evaluate and sample them as they do genlab's nets: the same losses, `val/bpc` and perplexity. `transformers` and
`peft` are imported here only.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError, check
from genlab.extras import import_extra

# peft 0.21 asks transformers 5 for `is_gradient_checkpointing` on every LoRA step; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*is deprecated.*")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def base_fingerprint(folder: Path) -> str:
    """A hash of a model folder: every file's name and size, and the content of the small ones (config, tokenizer),
    so a base model that was replaced or retrained since a run is noticed without reading gigabytes of weights."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder)}:{size}\n".encode())
        if size < 1 << 20:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def local_folder(pretrained: str) -> Path | None:
    """The model folder `pretrained` names on this machine, or None for a Hub id."""
    path = Path(pretrained).expanduser()
    return path.resolve() if path.exists() or pretrained.startswith((".", "/", "~")) else None


def missing_model(pretrained: str, exc: Exception) -> ConfigError:
    """The one line for a model that cannot be found (offline, a wrong path, a folder without config.json)."""
    return ConfigError(
        f"model.net.pretrained={pretrained}: no transformers model found there ({str(exc).splitlines()[0][:160]}); "
        f"give a folder written by save_pretrained (config.json, weights, tokenizer), or, offline "
        f"(HF_HUB_OFFLINE=1, model.net.local_files_only=true), put the Hub model into the cache under HF_HOME first"
    )


def load_model(
    auto_class: str,
    pretrained: str | None,
    config: Mapping[str, Any] | None,
    vocab_size: int,
    dtype: str,
    attn_implementation: str | None,
    local_files_only: bool,
) -> nn.Module:
    """The transformers model of `auto_class` (AutoModelForCausalLM, AutoModelForMaskedLM): `from_pretrained`, or
    `from_config` of `config` (`model_type` and the config class's fields; the vocabulary follows the data unless
    given)."""
    transformers = import_extra("transformers", "hf", "model/net=hf")
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars for a few-megabyte model
    check(dtype in DTYPES, f"model.net.dtype={dtype} is not one of {', '.join(DTYPES)}")
    check(
        (pretrained is None) != (config is None),
        "model/net=hf needs exactly one of model.net.pretrained=FOLDER_OR_HUB_ID (a trained model) and "
        "model.net.config={model_type: gpt2, ...} (a new one from a transformers config class)",
    )
    options: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    if pretrained is not None:
        try:
            return getattr(transformers, auto_class).from_pretrained(
                pretrained, local_files_only=local_files_only, **options
            )
        except (OSError, ValueError) as exc:
            if "Unrecognized configuration class" in str(exc):  # a causal LM's folder for a masked LM, or back
                raise ConfigError(
                    f"model.net.pretrained={pretrained} is not a model {auto_class} loads; model/net=hf takes causal "
                    f"LMs (GPT-2, Llama, ...), model/net=hf_masked masked ones (BERT, RoBERTa, ...)"
                ) from None
            raise missing_model(pretrained, exc) from None
    fields = dict(config or {})
    model_type = fields.pop("model_type", None)
    check(model_type is not None, "model.net.config needs a model_type (gpt2, llama, qwen2, ...) naming its class")
    fields.setdefault("vocab_size", vocab_size)
    fields.setdefault("bos_token_id", None)
    fields.setdefault("eos_token_id", None)
    try:
        built = transformers.AutoConfig.for_model(model_type, **fields)
        return getattr(transformers, auto_class).from_config(built, **options)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"model.net.config does not build a {auto_class}: {str(exc).splitlines()[0][:200]}") from None


def context_length(config: Any, fallback: int) -> int:
    """The longest context the model's positions allow (learned positions end there; rotary ones are nominal)."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return fallback


class HFNet(nn.Module):
    """A `transformers` model (`.model`, of `auto_class`) behind the GPT net's interface.

    The tokenizer the data uses must fit the model's embedding (ids below `config.vocab_size`), checked here before
    any training. With `lora` of rank `r` > 0 (peft's LoraConfig fields, e.g. `{r: 8, alpha: 16}`; target modules
    default to peft's per architecture) only the adapters train, and only they go into checkpoints (the base weights
    are the pretrained folder's, checked by its fingerprint on load).
    """

    data_kind = "text"
    auto_class = "AutoModelForCausalLM"
    #: peft's task type for the adapters (None: a plain PeftModel around the model).
    lora_task: str | None = "CAUSAL_LM"

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None,
        gradient_checkpointing: bool = False,
        local_files_only: bool = False,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pretrained = pretrained
        folder = local_folder(pretrained) if pretrained is not None else None
        self.fingerprint = base_fingerprint(folder) if folder is not None and folder.is_dir() else None
        model = load_model(
            self.auto_class,
            str(folder) if folder is not None else pretrained,
            config,
            vocab_size,
            dtype,
            attn_implementation,
            local_files_only,
        )
        self.vocab_size = model.config.vocab_size
        vocab_size = self.tokens_to_embed(vocab_size)
        check(
            vocab_size <= self.vocab_size,
            f"the data's tokenizer has {vocab_size} tokens but the net {pretrained or 'model.net.config'} embeds "
            f"only {self.vocab_size}; use the model's own tokenizer (data.tokenizer=hf) or a smaller vocabulary",
        )
        self.block_size = context_length(model.config, block_size)
        check(
            block_size <= self.block_size,
            f"data.block_size={block_size} is longer than the net's {self.block_size} positions; lower data.block_size",
        )
        model.train()  # from_pretrained returns it in eval mode: fine-tuning would run without its dropout
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.lora = dict(lora) if lora and lora.get("r") else None  # r=0: full fine-tuning
        if self.lora is not None:
            model = with_lora(model, self.lora, self.lora_task)
        self.model = model
        self.register_load_state_dict_post_hook(self._frozen_weights_not_missing)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, vocab_size) and, given `targets`, the mean cross-entropy in nats (-1 ignored), in float32
        whatever the model's dtype, as genlab's GPT computes it."""
        logits = self.model(input_ids=idx, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def tokens_to_embed(self, vocab_size: int) -> int:
        """How many of the data's token ids the model must embed."""
        return vocab_size

    def configure_param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups over the trainable parameters: decay on matrices and embeddings, none on biases and norms."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
        ]

    def num_parameters(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)

    # -- checkpoints: what was trained, and the base it was trained on --------------------------------------------

    def trainable_names(self, prefix: str = "") -> set[str]:
        return {prefix + name for name, p in self.named_parameters() if p.requires_grad}

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """With LoRA, only the trainable tensors (the adapters): the base weights are the pretrained folder's."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if self.lora is None:
            return state
        kept = self.trainable_names(prefix) | {prefix + "_extra_state"}
        for key in [key for key in state if key.startswith(prefix) and key not in kept]:
            del state[key]
        return state

    @staticmethod
    def _frozen_weights_not_missing(module: HFNet, incompatible: Any) -> None:
        """Loading a LoRA checkpoint: the base weights it leaves out are not missing (they are the folder's)."""
        if module.lora is None:
            return
        trainable = module.trainable_names()
        incompatible.missing_keys[:] = [
            key
            for key in incompatible.missing_keys
            if ".model." not in f".{key}" or any(key.endswith(f".{name}") for name in trainable)
        ]

    def get_extra_state(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained, "fingerprint": self.fingerprint}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        """A checkpoint trained on a base folder whose content has changed since is refused: its weights (all of
        them, or the adapters) no longer describe the model that would be built."""
        saved = state.get("fingerprint")
        check(
            saved is None or self.fingerprint is None or saved == self.fingerprint,
            f"the base model {self.pretrained} has changed since this run was trained (fingerprint {saved}, now "
            f"{self.fingerprint}); put the original model back there, or train again",
        )


class HFCausalLM(HFNet):
    """A `transformers` causal LM for `model=transformer`: it also generates, through the model's own KV cache."""

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
    ) -> Tensor:
        """Append `max_new_tokens` tokens to `idx` (B, T), drawn as genlab's GPT draws them, through the model's
        own KV cache; past `block_size` the context is recomputed on its last `block_size` tokens."""
        from genlab.nets.transformer import GPT

        cache, fed = None, 0
        stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) < self.block_size:
                out = self.model(input_ids=idx[:, fed:], cache=cache, use_cache=True)
            else:
                out = self.model(input_ids=idx[:, -self.block_size :], use_cache=idx.size(1) < self.block_size)
            cache, fed = out.cache, idx.size(1)
            next_token = GPT._sample(out.logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_token), dim=1)
            if stop_token is not None:
                stopped |= next_token[:, 0] == stop_token
                if bool(stopped.all()):
                    break
        return idx


class HFMaskedLM(HFNet):
    """A `transformers` masked LM (BERT, RoBERTa, ModernBERT, ...) for `model=masked_lm`: bidirectional, and with
    the mask token of its own tokenizer where it is pretrained (built from a config, it embeds genlab's [MASK], one
    past the data's tokens)."""

    auto_class = "AutoModelForMaskedLM"
    lora_task = None
    causal = False

    def tokens_to_embed(self, vocab_size: int) -> int:
        """model=masked_lm asks for the data's tokens plus its [MASK]; a pretrained model's tokenizer has its own."""
        self.mask_token_id = self.pretrained_mask_id() if self.pretrained is not None else None
        return vocab_size - 1 if self.mask_token_id is not None else vocab_size

    def pretrained_mask_id(self) -> int:
        transformers = import_extra("transformers", "hf", "model/net=hf_masked")
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.pretrained)
        except (OSError, ValueError) as exc:
            raise missing_model(self.pretrained, exc) from None
        check(
            tokenizer.mask_token_id is not None,
            f"model.net.pretrained={self.pretrained}: its tokenizer has no mask token, so it is not a masked LM; "
            f"give a BERT-like model (or model.net.config to build one)",
        )
        return int(tokenizer.mask_token_id)


def with_lora(model: nn.Module, lora: Mapping[str, Any], task_type: str | None) -> nn.Module:
    """The model with LoRA adapters (peft), only they trainable. `alpha` and `dropout` are peft's `lora_alpha` and
    `lora_dropout`; other keys go to `LoraConfig` as they are."""
    peft = import_extra("peft", "hf", "model.net.lora")
    options = {key: value for key, value in lora.items() if value is not None}
    for short in ("alpha", "dropout"):
        if short in options:
            options[f"lora_{short}"] = options.pop(short)
    try:
        config = peft.LoraConfig(task_type=task_type, **options)
        with warnings.catch_warnings():  # GPT-2's Conv1D layers: peft says it transposes them; its own deprecations
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(model, config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model.net.lora={dict(lora)} is not a LoRA config: {str(exc).splitlines()[0][:200]}"
        ) from None
