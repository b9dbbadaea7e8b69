"""What each command in the docs does when the docs test runs it: the rules, one function per command.

- `genlab-train|eval|sample|compare`: the real entrypoint, in this process, with the line's own arguments;
  `genlab-train` gets TINY appended (each setting that its composed config has, TINY_IF_SET's where it sets
  them, TINY_NETS' for its model/net; none on `resume=`, `--help`, `--cfg`, nor over a key the line sweeps), so
  a 20-epoch recipe runs 2 epochs of 2 batches of a small net with small sample counts.
- `genlab-serve`: the real entrypoint up to the server (settings checked, run loaded, app built); uvicorn is not
  started: `curl` lines are then sent to that app in this process (FastAPI's TestClient). Serving over a socket is
  tests/test_serve.py's.
- `python -c CODE`: CODE runs in this process. `python benchmarks/NAME.py ARGS`: the script runs up to its
  argument parsing (the numbers come from real runs, recorded with their dates in docs/benchmarks.md), except the
  TOOLS, which run whole (benchmarks/tiny_hf_model.py writes the docs' stand-in for a downloaded model).
- Commands that this test does not run, each with its check: `pip install -e ".[EXTRAS]"` (every extra exists in
  pyproject.toml), `pytest [-n 0] [FILES] [-k WORDS]` (the files exist: this is the runner), `bash .ci/run` (it
  exists: CI runs it), `pre-commit install` (.pre-commit-config.yaml exists), `mkdocs build --strict` (run by
  test_the_docs_site_builds_strictly), `tensorboard --logdir DIR` (DIR holds TensorBoard event files).
- Anything else fails the page, naming the command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import runpy
import shlex
import sys
import time
import traceback
from pathlib import Path
from unittest import mock

import tomllib
import torch
from docs_shell import REPO, UNKNOWN
from hydra import compose, initialize_config_dir
from inprocess import Result, call_entrypoint, process_state
from omegaconf import OmegaConf

from genlab.config import config_dir

#: Appended to a `genlab-train` line, each only where the composed config has that key (the last value wins).
TINY = [
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=64",
    # image models: small nets, few sampler steps, small sample sets
    "model.eval_iwae_k=2",
    "model.timesteps=50",
    "model.sample_steps=4",
    "model.eval_steps=2",
    "model.bpd_timesteps=3",
    "metrics.num_real=32",
    "metrics.num_fake=32",
    "metrics.kid_subset_size=16",
    "callbacks.inpainting.num_images=16",
    # language models
    "data.block_size=16",
    "data.val_batches=2",
    "data.max_chars=50000",
    "data.max_train=400",
    "metrics.num_molecules=16",
    "metrics.num_val_molecules=8",
    "metrics.num_reference=32",
    "metrics.num_samples=4",
    "metrics.num_val_samples=2",
    "model.sample_sequences=2",
]
#: Appended only where the composed config sets the key (a step-based recipe): an epoch-based run keeps its epochs.
TINY_IF_SET = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=1"]
#: Appended for the chosen model/net (the same key means different things in different nets).
TINY_NETS = {
    "dcgan": ["model.net.width=8"],
    "unet": ["model.net.channels=8", "model.net.num_res_blocks=1"],
    "gpt": ["model.net.n_layer=1", "model.net.n_head=2", "model.net.n_embd=16"],
    "bert": ["model.net.n_layer=1", "model.net.n_head=2", "model.net.n_embd=16"],
}
GENLAB = ("genlab-train", "genlab-eval", "genlab-sample", "genlab-compare", "genlab-export")
#: Scripts under benchmarks/ that the docs use as tools (quick, no numbers): they run whole.
TOOLS = ("benchmarks/tiny_hf_model.py",)
NOT_RUN = ("pip", "pytest", "bash", "pre-commit", "mkdocs", "tensorboard")
PROGRAMS = (*GENLAB, "genlab-serve", "curl", "python", "python3", *NOT_RUN)


class Page:
    """The commands of one page, answered in order; remembers the app of its latest `genlab-serve`."""

    def __init__(self, base_env: dict[str, str]) -> None:
        self.base_env = base_env
        self.app = None
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Result:
        start, threads = time.process_time(), torch.get_num_threads()
        torch.set_num_threads(1)  # as under pytest-xdist: one thread per test
        try:
            return self.answer(argv, cwd, env)
        finally:
            torch.set_num_threads(threads)
            self.calls.append((argv, time.process_time() - start))

    def answer(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Result:
        program, args = argv[0], argv[1:]
        env = {**env, "PATH": self.base_env["PATH"]}
        env.pop("DOCS_IPC", None)
        try:
            if program == UNKNOWN:
                return fail(f"the docs use a command the docs test has no rule for: {shlex.join(args)}")
            if program in GENLAB:
                extra = tiny(args) if program == "genlab-train" else []
                return call_entrypoint(program, [*args, *extra], cwd=cwd, env=env)
            if program == "genlab-serve":
                return self.serve(args, cwd, env)
            if program == "curl":
                return self.curl(args, cwd)
            if program in ("python", "python3"):
                return python(args, cwd, env)
            return not_run(program, args, cwd)
        except Exception:
            return Result(1, "", traceback.format_exc())

    def serve(self, args: list[str], cwd: Path, env: dict[str, str]) -> Result:
        served = {}
        with mock.patch("uvicorn.run", lambda app, **options: served.update(app=app, **options)):
            result = call_entrypoint("genlab-serve", args, cwd=cwd, env=env)
        if result.returncode == 0:
            assert served, f"genlab-serve built no app:\n{result.stderr[-2000:]}"
            self.app = served["app"]
        return result

    def curl(self, args: list[str], cwd: Path) -> Result:
        from fastapi.testclient import TestClient

        parser = argparse.ArgumentParser(prog="curl", exit_on_error=False)
        parser.add_argument("-s", action="store_true")
        parser.add_argument("-H", action="append", default=[])
        parser.add_argument("-d")
        parser.add_argument("-F", action="append", default=[])  # multipart: name=value, or name=@file to upload
        parser.add_argument("-o")
        parser.add_argument("url")
        options = parser.parse_args(args)
        if self.app is None:
            return fail("curl: no genlab-serve earlier on this page")
        headers = dict(header.split(": ", 1) for header in options.H)
        path = "/" + options.url.split("/", 1)[1] if "/" in options.url else "/"
        with TestClient(self.app) as client:
            if options.F:
                fields = dict(field.split("=", 1) for field in options.F)
                files = {k: (v[1:], (cwd / v[1:]).read_bytes()) for k, v in fields.items() if v.startswith("@")}
                data = {k: v for k, v in fields.items() if not v.startswith("@")}
                response = client.post(path, headers=headers, files=files, data=data)
            elif options.d is None:
                response = client.get(path, headers=headers)
            else:
                response = client.post(path, headers=headers, content=options.d)
        if response.status_code >= 400:
            return fail(f"curl {options.url}: HTTP {response.status_code} {response.text[:500]}")
        if options.o:
            (cwd / options.o).write_bytes(response.content)
            return Result(0, "", "")
        return Result(0, response.text, "")


def fail(message: str) -> Result:
    return Result(127, "", message + "\n")


def tiny(args: list[str]) -> list[str]:
    """TINY's settings that the composed config of `genlab-train args` has, unless the line swept them."""
    if any(a.startswith(("resume=", "--help", "--cfg", "-h")) and a != "resume=true" for a in args):
        return []
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    swept = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "," in o.split("=", 1)[1] and "-m" in args}
    sweep = "-m" in args  # only a sweep's commas separate values (a dict or list value has its own)
    first = [o.split("=", 1)[0] + "=" + o.split("=", 1)[1].split(",")[0] if sweep else o for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", first, return_hydra_config=True)
    except Exception:  # a line the docs show being refused: it runs as written, and genlab says why
        return []
    missing = object()

    def value(setting: str) -> object:
        return OmegaConf.select(cfg, setting.split("=")[0], default=missing)

    chosen = [s for s in TINY if value(s) is not missing] + [
        s for s in TINY_IF_SET if value(s) not in (missing, None, -1)
    ]
    chosen += TINY_NETS.get(cfg.hydra.runtime.choices.get("model/net"), [])
    return [setting for setting in chosen if setting.split("=")[0] not in swept]


def python(args: list[str], cwd: Path, env: dict[str, str]) -> Result:
    if args[:1] == ["-c"] and len(args) == 2:
        return in_process(["-c"], cwd, env, lambda: exec(compile(args[1], "<docs>", "exec"), {"__name__": "__main__"}))
    if args[:1] == ["-m"] and args[1:2] == ["pytest"]:
        return not_run("pytest", args[2:], cwd)
    if args and args[0] in TOOLS:
        script = REPO / args[0]
        return in_process([str(script), *args[1:]], cwd, env, lambda: runpy.run_path(str(script), run_name="__main__"))
    if args and args[0].startswith("benchmarks/") and args[0].endswith(".py"):
        return parse_only(REPO / args[0], args[1:], cwd, env)
    return fail(f"the docs use a python command the docs test has no rule for: python {shlex.join(args)}")


class Parsed(Exception):
    """A benchmark script got as far as its parsed arguments."""


def parse_only(script: Path, args: list[str], cwd: Path, env: dict[str, str]) -> Result:
    if not script.is_file():
        return fail(f"no such benchmark script: {script.relative_to(REPO)}")
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, *positional, **named):
        real(self, *positional, **named)
        raise Parsed

    def body() -> None:
        sys.path.insert(0, str(script.parent))
        with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop), contextlib.suppress(Parsed):
            runpy.run_path(str(script), run_name="__main__")

    return in_process([str(script), *args], cwd, env, body)


def in_process(argv: list[str], cwd: Path, env: dict[str, str], body) -> Result:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with process_state(argv, cwd, env), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            body()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    return Result(code, stdout.getvalue(), stderr.getvalue())


def not_run(program: str, args: list[str], cwd: Path) -> Result:
    """The commands the docs test does not execute, each checked as far as it can be without running it."""
    line = shlex.join([program, *args])
    if program == "pip" and len(args) == 3 and args[:2] == ["install", "-e"] and args[2].startswith(".["):
        extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
        asked = set(args[2][2:-1].split(","))
        return Result(0, "", "") if asked <= extras else fail(f"{line}: no such extra {sorted(asked - extras)}")
    if program == "pytest":
        files = [a.split("::")[0] for a in args if a.startswith("tests/")]
        missing = [f for f in files if not (REPO / f).is_file()]
        return fail(f"{line}: no such test file {missing}") if missing else Result(0, "", "")
    checks = {
        ("bash", ".ci/run"): lambda: (REPO / ".ci" / "run").is_file(),
        ("pre-commit", "install"): lambda: (REPO / ".pre-commit-config.yaml").is_file(),
        ("mkdocs", "build --strict"): lambda: (REPO / "mkdocs.yml").is_file(),
        ("tensorboard", "--logdir"): lambda: any((cwd / args[-1]).rglob("events.out.tfevents.*")),
    }
    key = (program, " ".join(args) if program != "tensorboard" else args[0] if args else "")
    if key in checks:
        return Result(0, "", "") if checks[key]() else fail(f"{line}: its check failed")
    return fail(f"the docs use a command the docs test has no rule for: {line}")
