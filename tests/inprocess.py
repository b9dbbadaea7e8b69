"""Call genlab's console scripts in this process, as their own processes would run them.

Importing PyTorch Lightning costs about 10 s on a 2-core machine, so a test that starts a `genlab-*` process pays
that every time. `call_entrypoint` runs the script's `main()` here instead, with its own argv, working folder and
environment, and returns its exit status and output; the process-wide state a run changes (environment, working
folder, torch's global flags, logging handlers, warning filters, Hydra's singletons) is put back afterwards.
Tests where the process itself is the point (signals, DDP, launchers, the wheel) use `run_console_script`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

#: The console scripts of pyproject.toml and the function each one calls.
ENTRYPOINTS = {
    "genlab-train": "genlab.train:main",
    "genlab-eval": "genlab.eval:main",
    "genlab-sample": "genlab.sample:main",
    "genlab-compare": "genlab.compare:main",
    "genlab-serve": "genlab.serve:main",
    "genlab-export": "genlab.export:main",
}


@dataclass
class Result:
    """What a process would leave: its exit status and what it wrote."""

    returncode: int
    stdout: str
    stderr: str


def entrypoint(program: str) -> Callable[[], object]:
    module, _, function = ENTRYPOINTS[program].partition(":")
    return getattr(import_module(module), function)


def console_script(program: str) -> str:
    """The installed console script, as users run it."""
    return shutil.which(program) or str(Path(sys.executable).parent / program)


@contextlib.contextmanager
def process_state(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Iterator[None]:
    """argv, working folder, environment (and PYTHONPATH) as given, and everything a run changes restored afterwards."""
    import torch
    from hydra.core.global_hydra import GlobalHydra

    saved_argv, saved_cwd, saved_env, saved_path = sys.argv, Path.cwd(), dict(os.environ), list(sys.path)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_threads = torch.get_num_threads()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)
    sys.path[:0] = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    os.chdir(cwd)
    try:
        with warnings.catch_warnings():
            if env.get("PYTHONWARNINGS") == "ignore":  # what the variable does at a process's start
                warnings.simplefilter("ignore")
            yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        torch.use_deterministic_algorithms(False)  # trainer.deterministic=true sets it for the whole process
        torch.set_num_threads(saved_threads)
        GlobalHydra.instance().clear()


def call_entrypoint(program: str, arguments: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Result:
    """`program arguments...` run in this process: the exit status it would have, and its stdout and stderr.

    A bug's exception is written to stderr as its traceback with status 1, as the process would end.
    """
    main = entrypoint(program)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with (
        process_state([program, *arguments], cwd, env),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except Exception:
            traceback.print_exc()
            code = 1
    return Result(code, stdout.getvalue(), stderr.getvalue())


def run_console_script(
    program: str, arguments: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float = 300
) -> Result:
    """`program arguments...` as a process of its own (the installed console script)."""
    process = subprocess.run(
        [console_script(program), *arguments],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(process.returncode, process.stdout, process.stderr)
