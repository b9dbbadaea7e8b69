"""`genlab-export run=RUN_DIR out=DIR [ckpt=best] [adapter=false]`: a language-model run as a Hugging Face model
folder (config.json, model.safetensors, tokenizer, model card), for `transformers`, vLLM, TGI and the Hub."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from genlab.commands import run_command
from genlab.errors import check
from genlab.extras import import_extra
from genlab.run.layout import check_run_dir

#: The types of genlab-export's own settings (conf/export.yaml).
SETTINGS = {"run": str | None, "ckpt": str, "out": str | None, "adapter": bool}


def export(cfg: DictConfig, overrides: list[str]) -> Path:
    """Checked before torch and transformers are imported: the folder to write, and that `run` is a run folder."""
    check(cfg.out is not None, "give the folder to write: out=DIR (new or empty)")
    check_run_dir(cfg.run)
    import_extra("transformers", "hf", "genlab-export")
    from genlab.exporting.folder import export_run
    from genlab.run.loading import load_run

    run = load_run(cfg.run, cfg.ckpt, overrides=overrides)
    out = export_run(run, Path(cfg.out), cfg.adapter)
    Console(soft_wrap=True).print(f"wrote {out}")
    return out


def main() -> None:
    """The `genlab-export` console script."""
    run_command("genlab-export", "export", SETTINGS, export)


if __name__ == "__main__":
    main()
