"""The docs are the user's manual: every ```bash block in README.md and docs/**/*.md runs as written (with tiny
settings; the rules are in docs_commands.py), or is marked `<!-- gpu-only -->` on the line directly before it; the
site builds with `mkdocs build --strict` (broken links and anchors fail it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_env
from docs_commands import PROGRAMS, Page
from docs_shell import REPO, bash_blocks, logical_lines, pages, run_script, stray_gpu_markers
from requires import requires_data, requires_extra

PAGES = pages()
#: What a page needs when its commands (outside gpu-only blocks) mention a setting: `data=`, `experiment=`,
#: `metrics=` values containing the word, or the program.
NEEDS = {
    "mnist": requires_data("MNIST/raw"),
    "shakespeare": requires_data("shakespeare/input.txt"),
    "moses": requires_data("moses/train.csv.gz"),
    "moses|smiles|molecules": requires_extra("chem"),
    "bach|music": requires_extra("music"),
}
#: A line `COMMAND || echo "exit status $?"` shows a refusal: the command must exit with status 2 (genlab's refusals).
REFUSAL = '|| echo "exit status $?"'


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def page_param(page: Path):
    """The page, skipped (naming what to install or set) when its commands need an extra or a dataset."""
    text = "\n".join(block.text for block in bash_blocks(page) if not block.gpu_only)
    needs = [need for words, need in NEEDS.items() if re.search(rf"\b(?:data|experiment|metrics)=\S*(?:{words})", text)]
    if re.search(r"\bgenlab-serve\b", text):
        needs.append(requires_extra("serve"))
    return pytest.param(page, marks=needs, id=page_id(page))


def test_every_page_is_found_and_the_readme_keeps_its_set_up_commands() -> None:
    assert REPO / "README.md" in PAGES and len(PAGES) > 10
    readme = [line for block in bash_blocks(REPO / "README.md") for line in logical_lines(block.text)]
    commands = [line.split("#", 1)[0].strip() for line in readme]
    for command in ('pip install -e ".[dev]"', "genlab-train", "pytest"):
        assert command in commands, f"README.md lost its command {command!r}"


@pytest.mark.parametrize("page", [page_param(page) for page in PAGES])
def test_the_commands_of_the_page_run_as_written(page: Path, tmp_path: Path) -> None:
    """The page's non-GPU blocks, in order, as one bash script in a fresh folder (variables carry over)."""
    assert not stray_gpu_markers(page), f"{page_id(page)}: a gpu-only marker not directly before a ```bash block"
    blocks = [block for block in bash_blocks(page) if not block.gpu_only]
    if not blocks:
        assert bash_blocks(page) or "```bash" not in page.read_text()
        return
    script = "\n".join(f"# {page_id(page)}:{block.line}\n{block.text}" for block in blocks)
    folder = tmp_path / "reader"
    folder.mkdir()
    env = {k: v for k, v in train_env(tmp_path / "unused").items() if k != "GENLAB_LOG_DIR"}  # the docs' outputs/
    handler = Page(env)
    result = run_script(script, folder, env, handler, PROGRAMS, timeout=300)
    assert result.returncode == 0, f"{page_id(page)}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert handler.calls, f"{page_id(page)}: its blocks ran no command"
    refusals = sum(line.count(REFUSAL) for block in blocks for line in block.text.splitlines())
    refused = result.stdout.splitlines().count("exit status 2")
    assert refused == refusals, f"{page_id(page)}: {refusals} lines show a refusal, {refused} exited with status 2"
    if page_id(page) in PROMISES:
        PROMISES[page_id(page)](folder, result.stdout)


def walkthrough_promises(folder: Path, stdout: str) -> None:
    """docs/run-folders.md: a completed, resumed run with two evaluations, its samples, and the LM's text."""
    (run,) = (folder / "outputs" / "train" / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["resumes"]) == 1
    assert json.loads((run / "metrics.json").read_text())["epoch"] >= 3
    assert (run / "eval.json").is_file() and len(list((run / "evals").glob("*.json"))) == 2
    for name in ("samples", "reconstructions", "interpolation"):
        assert (run / "generated" / f"{name}.png").is_file(), name
    assert (folder / "outputs" / "lm" / "generated" / "text_000.txt").read_text().startswith("def ")
    assert re.search(r"^-?\d+\.\d+ torch.Size\(\[16, 1, 8, 8\]\)$", stdout, flags=re.M), stdout[-2000:]


#: What a page's commands must leave behind, beyond exiting 0.
PROMISES = {"docs/run-folders.md": walkthrough_promises}


def test_an_unknown_command_fails_the_page(tmp_path: Path) -> None:
    folder = tmp_path / "reader"
    folder.mkdir()
    env = dict(train_env(tmp_path / "unused"))
    result = run_script('RUN=x\nwget "http://example.org/$RUN"\n', folder, env, Page(env), PROGRAMS, timeout=60)
    assert result.returncode != 0
    assert "no rule for: wget http://example.org/x" in result.stderr


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, anchor or a page missing from the nav fails it."""
    process = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert process.returncode == 0, process.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_the_readme_links_point_at_pages_and_headings_that_exist() -> None:
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]*))?\)", text)
    assert links, "README.md links into docs/"
    for target, anchor in links:
        assert (REPO / target).is_file(), target
        if anchor:  # as mkdocs makes a heading's id: lower case, punctuation dropped, spaces to hyphens
            headings = re.findall(r"^#+ (.+)$", (REPO / target).read_text(), flags=re.MULTILINE)
            ids = {re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower()) for heading in headings}
            assert anchor in ids, f"{target}#{anchor}"
