"""The README is the user's manual: every `genlab-train` command in it must compose as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import train_env
from omegaconf import OmegaConf

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
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
    assert set(flags) <= {"--help", "--cfg", "job", "-m"}, f"README uses an untested flag: {flags}"
    if "-m" in flags:  # a sweep composes as its first job
        overrides = [re.sub(r"=([^,(]+),.*$", r"=\1", o) for o in overrides]
    cfg = compose_config(*overrides)
    choices = cfg.hydra.runtime.choices
    for override in overrides:
        key, value = override.split("=", 1)
        chosen = choices[key] if key in choices else OmegaConf.select(cfg, key)
        assert (str(chosen).lower() if isinstance(chosen, bool) else str(chosen)) == value, override


def test_the_run_folder_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's resume / eval / sample / load_run block, executed line by line in a fresh folder."""
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S) if "resume=$RUN" in b]
    env = {k: v for k, v in train_env(tmp_path / "unused").items() if k != "GENLAB_LOG_DIR"}  # README's outputs/
    # A session of its own, so that a timeout stops the commands the shell started, not only the shell.
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, f"{stdout[-2000:]}\n{stderr[-3000:]}"
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    assert (run / "eval.json").is_file()
    for name in ("samples", "reconstructions", "interpolation"):
        assert (run / "generated" / f"{name}.png").is_file(), name
    assert (tmp_path / "outputs" / "lm" / "generated" / "text_000.txt").read_text().startswith("def ")
