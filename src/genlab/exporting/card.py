"""The model card (`README.md`) of an exported folder: what the model is, what it was trained on and how, and its
numbers, as the Hub shows a card (YAML metadata, then Markdown)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

#: Data settings worth naming on the card (the rest are in the run's config).
DATA_KEYS = ("path", "name", "text_column", "tokenizer", "tokenizer_path", "block_size")


def model_card(
    config: DictConfig, metrics: dict[str, Any] | None, manifest: dict[str, Any] | None, base: str | None
) -> str:
    """The card's text: the run's metrics, data and command; `base` is the pretrained model it was tuned from."""
    data = config.data
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [genlab]",
        *([f"base_model: {base}"] if base else []),
        "---",
        "",
        "# A genlab language model",
        "",
        f"Trained with genlab (`{config.model._target_}`, net `{config.model.net._target_}`)"
        + (f", fine-tuned from `{base}`." if base else ", from scratch."),
        "",
        "## Data",
        "",
        f"`{data._target_}`" + "".join(f", {key}=`{data[key]}`" for key in DATA_KEYS if data.get(key) is not None),
        "",
    ]
    numbers = {key: value for key, value in (metrics or {}).items() if "/" in key}
    if numbers:
        judged = (metrics or {}).get("judged_metric")
        lines += ["## Metrics", "", f"Of the checkpoint judged best by `{judged}` (loss in nats per token).", ""]
        lines += ["| metric | value |", "| --- | --- |", *(f"| {k} | {v:.4f} |" for k, v in sorted(numbers.items()))]
        lines.append("")
    if manifest:
        lines += ["## Command", "", "```", manifest.get("command", ""), "```", ""]
        lines.append(f"genlab commit `{manifest.get('git_commit')}`, seed {manifest.get('seed')}.")
        lines.append("")
    return "\n".join(lines)
