"""The README is the user's manual: every `genlab-train` command in it must compose as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("genlab-train")]


def test_readme_has_the_quickstart() -> None:
    text = README.read_text()
    for command in ('pip install -e ".[dev]"', "genlab-train", "pytest"):
        assert re.search(rf"^{re.escape(command)}( |$)", text, flags=re.M), command
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_composes(compose_config, command: str) -> None:
    words = shlex.split(command)[1:]
    overrides = [word for word in words if "=" in word and not word.startswith("-")]
    flags = [word for word in words if word not in overrides]
    assert set(flags) <= {"--help", "--cfg", "job"}, f"README uses an untested flag: {flags}"
    cfg = compose_config(*overrides)
    choices = cfg.hydra.runtime.choices
    for override in overrides:
        key, value = override.split("=", 1)
        chosen = choices[key] if key in choices else OmegaConf.select(cfg, key)
        assert str(chosen) == value, override
