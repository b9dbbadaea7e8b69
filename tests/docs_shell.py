"""Run the ```bash blocks of a documentation page with bash, serving its commands from this process.

A page's blocks run in order as one bash script in one scratch folder, so `RUN=$(...)`, loops, pipes and quoting
behave exactly as for a reader. Every command a page may use is a bash function that hands its argv, working folder
and environment to this process (docs_commands.py decides what each does, e.g. `genlab-train` in-process with tiny
settings); PATH holds only a few plain tools, so any other command reaches bash's command_not_found_handle and fails
the page. Importing torch and Lightning once here, not in each command, is what keeps the docs test fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inprocess import Result

REPO = Path(__file__).resolve().parents[1]
GPU_ONLY = "<!-- gpu-only -->"
#: Plain tools a page may use besides the commands served from this process (for `$(ls -d ... | tail -1)`).
TOOLS = ("ls", "head", "tail", "cat", "mkdir", "sort", "wc", "grep", "cp", "rm")
UNKNOWN = "__unknown_command__"


@dataclass(frozen=True)
class Block:
    """One ```bash block of a page: where it starts, its text, and whether it is marked as needing a GPU."""

    page: Path
    line: int
    text: str
    gpu_only: bool


def pages() -> list[Path]:
    """README.md and every page under docs/: new pages are picked up without being listed anywhere."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def bash_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines):
        if start is None and line.strip() == "```bash":
            start = number
        elif start is not None and line.strip() == "```":
            gpu = start > 0 and lines[start - 1].strip() == GPU_ONLY
            blocks.append(Block(page, start + 1, "\n".join(lines[start + 1 : number]), gpu))
            start = None
    assert start is None, f"{page}:{start + 1}: a ```bash block is never closed"
    return blocks


def stray_gpu_markers(page: Path) -> list[int]:
    """Lines holding the GPU-only marker that is not directly followed by a ```bash block."""
    lines = page.read_text().splitlines()
    return [
        n + 1
        for n, line in enumerate(lines)
        if line.strip() == GPU_ONLY and (n + 1 >= len(lines) or lines[n + 1].strip() != "```bash")
    ]


def prelude(programs: Sequence[str], ipc: Path) -> str:
    """Bash functions that forward each program's argv, folder and exported environment to this process."""
    forward = "\n".join(f'{name}() {{ __docs_call {name} "$@"; }}' for name in programs)
    return f"""set -Eeuo pipefail
trap 'echo "docs: the command that failed: $BASH_COMMAND" >&2' ERR
__docs_call() {{
  local name code ipc={ipc}
  {{ printf '%s\\0' "$PWD" "$@"; }} > "$ipc/argv.tmp"
  {{ for name in $(compgen -e); do printf '%s=%s\\0' "$name" "${{!name}}"; done; }} > "$ipc/env"
  /bin/mv "$ipc/argv.tmp" "$ipc/request"
  until read -r code < "$ipc/reply"; do :; done  # an empty open of the FIFO is not this command's status
  /bin/cat "$ipc/stdout"
  /bin/cat "$ipc/stderr" >&2
  return "$code"
}}
command_not_found_handle() {{ __docs_call {UNKNOWN} "$@"; }}
{forward}
"""


def tool_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        path = next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists())
        (folder / tool).symlink_to(path)
    return folder


Handler = Callable[[list[str], Path, dict[str, str]], Result]


def _split(raw: bytes) -> list[str]:
    return raw.decode().split("\0")[:-1]


def _reply(ipc: Path, result: Result, process: subprocess.Popen) -> None:
    (ipc / "stdout").write_text(result.stdout)
    (ipc / "stderr").write_text(result.stderr)
    while True:  # the FIFO opens once bash reads it; give up if bash has gone
        try:
            descriptor = os.open(ipc / "reply", os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            if process.poll() is not None:
                return
            time.sleep(0.005)
    with os.fdopen(descriptor, "w") as reply:
        reply.write(f"{result.returncode}\n")


@contextlib.contextmanager
def _session(process: subprocess.Popen) -> Iterator[None]:
    try:
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_script(
    script: str, cwd: Path, env: Mapping[str, str], handler: Handler, programs: Sequence[str], timeout: float
) -> Result:
    """Run `script` with bash in `cwd`; each of `programs` (and any unknown command) is answered by `handler`."""
    ipc = cwd.parent / f"{cwd.name}.ipc"
    ipc.mkdir()
    os.mkfifo(ipc / "reply")
    bin_dir = tool_folder(ipc / "bin")
    out, err = ipc / "bash.out", ipc / "bash.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", prelude(programs, ipc) + script],
            cwd=cwd,
            env={**env, "PATH": str(bin_dir)},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    with _session(process):
        while process.poll() is None or (ipc / "request").exists():
            request = ipc / "request"
            if request.exists():
                folder, *argv = _split(request.read_bytes())
                request.unlink()
                pairs = (item.partition("=") for item in _split((ipc / "env").read_bytes()))
                called_env = {key: value for key, _, value in pairs}
                _reply(ipc, handler(argv, Path(folder), called_env), process)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"the page's commands ran longer than {timeout} s")
            else:
                time.sleep(0.005)
    return Result(process.returncode, out.read_text(), err.read_text())


def logical_lines(text: str) -> list[str]:
    """A block's commands: continuation lines joined, comments and blank lines dropped (for static checks)."""
    joined = re.sub(r"\\\n", " ", text)
    return [line for line in (raw.strip() for raw in joined.splitlines()) if line and not line.startswith("#")]
