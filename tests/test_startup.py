"""Start-up: every console script starts as a process, and the commands that need no model answer without importing
torch or Lightning (they cost about 10 s on a 2-core machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import ENTRYPOINTS, console_script

HEAVY = (
    "torch",
    "pytorch_lightning",
    "lightning_fabric",
    "torchmetrics",
    "torchvision",
    "matplotlib",
    "wandb",
    "music21",
)

# A fresh interpreter runs the console script's main() with these arguments, then lists what it imported.
PROBE = """
import sys
from importlib import import_module
module, _, function = sys.argv[1].partition(":")
sys.argv = sys.argv[2:]
try:
    getattr(import_module(module), function)()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print("EXIT", code, "HEAVY", ",".join(heavy), file=sys.stderr)
"""


def imported_heavy(program: str, *arguments: str, cwd: Path) -> tuple[int, list[str], str]:
    process = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), ENTRYPOINTS[program], program, *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("EXIT"), process.stderr[-3000:]
    _, code, _, *heavy = last.split(" ")
    return int(code), [name for name in ",".join(heavy).split(",") if name], process.stdout + process.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ("genlab-train", "--help"),
        ("genlab-train", "--cfg", "job", "model=gan"),
        ("genlab-train", "model.latnt_dim=3"),
        ("genlab-train", "model=vea"),
        ("genlab-compare", "--help"),
        ("genlab-eval", "--help"),
        ("genlab-sample", "--help"),
        ("genlab-serve", "--help"),
        ("genlab-serve", "run=missing", "max_batch_size=0"),
        ("genlab-export", "run=missing", "out=exported"),
    ],
    ids=" ".join,
)
def test_commands_that_need_no_model_import_no_deep_learning_library(arguments, tmp_path: Path) -> None:
    code, heavy, output = imported_heavy(*arguments, cwd=tmp_path)
    assert code == (2 if "=" in arguments[-1] and "--cfg" not in arguments else 0), output[-3000:]
    assert heavy == [], f"{' '.join(arguments)} imported {heavy}"


def test_comparing_runs_imports_no_deep_learning_library(tmp_path: Path) -> None:
    """genlab-compare reads JSON and YAML: a folder without runs is answered without torch."""
    code, heavy, output = imported_heavy("genlab-compare", str(tmp_path), cwd=tmp_path)
    assert code == 2 and "no run folders" in output
    assert heavy == []


@pytest.mark.parametrize("program", sorted(ENTRYPOINTS))
def test_every_console_script_starts_as_a_process(program: str, tmp_path: Path) -> None:
    process = subprocess.run([console_script(program), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert program in process.stdout
